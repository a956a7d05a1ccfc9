"""The scores sink builds its table column by column; it must equal the row-by-row ``Score`` records."""
from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq

from seqwatch.pipelines.alerts import score_rows
from seqwatch.pipelines.sinks import score_table
from seqwatch.schemas.arrow import SCORE_SCHEMA, to_table
from seqwatch.schemas.elements import ScoredWindows, WindowBatch


def _parquet(table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def test_score_table_equals_the_score_rows():
    rng = np.random.default_rng(1)
    n = 37
    windows = WindowBatch("pump-1", 5, ("a", "b", "c"), 1_000_000,
                          np.arange(n, dtype=np.int64) * 16_000_000 + 10**15, None, None, 100)
    severity = np.array(["normal", "info", "warning", "critical"])[rng.integers(0, 4, n)]
    scored = ScoredWindows(windows, rng.normal(size=n), 1.5, rng.random(n) > 0.5, severity, rng.random(n),
                           rng.normal(size=(n, 3)).astype(np.float32), None, None, None, 0.9, 64, "m", "v1")
    expected = to_table(score_rows(scored, "run-x"), SCORE_SCHEMA)
    got = score_table(scored, "run-x")
    assert got.equals(expected) and got.schema.equals(expected.schema)
    assert _parquet(got) == _parquet(expected)
    assert got.column("window_start").to_pylist()[0].timestamp() == (10**15 - 63_000_000) / 1e6
