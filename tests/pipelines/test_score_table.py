"""The scores sink builds its table column by column; it must equal the row-by-row ``Score`` records."""
from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
from hypothesis import assume, given, settings
from hypothesis import strategies as st

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


def test_safe_name_keeps_plain_ids_and_makes_every_other_id_one_visible_path_segment():
    import hashlib

    from seqwatch.pipelines.sinks import safe_name

    def tag(text):
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    assert safe_name("pump-01") == "pump-01"
    assert safe_name("pump_7.b") == "pump_7.b"
    assert safe_name("Pump_7.b") == f"Pump_7.b-{tag('Pump_7.b')}"
    assert safe_name("pump.") == f"pump.-{tag('pump.')}"
    assert safe_name("con") == f"con-{tag('con')}" and safe_name("NUL.txt") == f"NUL.txt-{tag('NUL.txt')}"
    assert safe_name("console") == "console"
    assert safe_name("a/b") == f"a_b-{tag('a/b')}"
    assert safe_name("..") == f"id-{tag('..')}"
    assert safe_name(".") == f"id-{tag('.')}"
    assert safe_name("") == f"id-{tag('')}"
    assert safe_name(".hidden") == f"hidden-{tag('.hidden')}"
    assert safe_name("__x") == f"x-{tag('__x')}"
    assert safe_name("x" * 81) == "x" * 80 + f"-{tag('x' * 81)}"
    assert safe_name("a b") != safe_name("a_b")


_IDS = st.text(alphabet="aAbB.-_/ éÉ", max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.tuples(_IDS, _IDS) | _IDS.map(lambda i: (i, i.swapcase())) | _IDS.map(lambda i: (i, i.upper())))
def test_distinct_ids_keep_distinct_folders_on_a_case_insensitive_file_system(ids):
    """``PumpA`` and ``pumpa`` had one folder on macOS and Windows, where the pane files of one overwrote the
    other's: two distinct ids never give names that are equal when case is ignored."""
    from seqwatch.pipelines.sinks import safe_name

    assume(ids[0] != ids[1])
    first, second = (safe_name(i) for i in ids)
    assert first.casefold() != second.casefold()
