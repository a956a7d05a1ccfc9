"""Parquet inputs as Spark, pandas and Arrow write them, found by a bug hunt of Parquet inputs (2026-12-02): integer
ids with nulls, Spark's INT96 timestamps past 2262, a damaged data page, nested values in a role column."""
from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqwatch.pipelines.locality import file_spans
from seqwatch.pipelines.sources import FileReader
from seqwatch.schemas.mapping import InputMapping

LONG = InputMapping()
T0 = pd.Timestamp("2026-01-05T00:00:00Z")


def _read(path, mapping=LONG, chunk_rows=100_000):
    out = list(FileReader(mapping, "run", chunk_rows=chunk_rows).read(str(path)))
    readings = pd.concat([b.frame for b, _, _ in out], ignore_index=True)
    quarantine = [q for _, bad, _ in out for q in bad]
    return readings, quarantine, sum(n for _, _, n in out)


def test_an_integer_entity_column_with_a_null_keeps_its_ids(tmp_path):
    """Arrow hands pandas an int64 column with a null as floats: the chunk with the null named its entity '101.0'
    where the others said '101', so one machine became two, each short of windows."""
    n = 12
    entity = pa.array(np.where(np.arange(n) < 6, 101, 102), mask=np.arange(n) == 2)
    table = pa.table({"entity_id": entity, "channel": ["flow"] * n,
                      "timestamp": pa.array([T0 + pd.Timedelta(seconds=10 * i) for i in range(n)]),
                      "value": np.arange(n, dtype=float)})
    path = tmp_path / "pumps.parquet"
    pq.write_table(table, path, row_group_size=4, write_statistics=False)  # spans read from the rows, not stats
    readings, quarantine, count = _read(path, chunk_rows=4)
    assert sorted(readings["entity_id"].astype(str).unique()) == ["101", "102"]
    assert count == n and len(readings) + sum(q.records for q in quarantine) == n
    assert [(q.line, q.reason_code) for q in quarantine] == [(3, "missing_entity")]
    assert sorted(file_spans([str(path)], LONG).spans) == ["101", "102"]
    # a wide file's nullable Int64 entity column, as pandas writes it
    wide = pd.DataFrame({"timestamp": [T0 + pd.Timedelta(seconds=10 * i) for i in range(4)],
                         "machine": pd.array([7, None, 7, 8], dtype="Int64"), "flow": [1.0, 2.0, 3.0, 4.0]})
    wide.to_parquet(tmp_path / "wide.parquet")
    readings, _, _ = _read(tmp_path / "wide.parquet", InputMapping(format="wide", entity={"column": "machine"}))
    assert sorted(readings["entity_id"].astype(str).unique()) == ["7", "8"]


def test_spark_int96_timestamps_past_2262_keep_their_date(tmp_path):
    """At ns Arrow wrapped 9999-12-31 (a 'valid to' sentinel) to 1816, and 2610 to a time in 2025 that was scored."""
    times = [pd.Timestamp("2026-01-05T00:00:00Z"), pd.Timestamp("2610-06-01T00:00:00Z").to_pydatetime(),
             pd.Timestamp("9999-12-31T00:00:00Z").to_pydatetime()]
    table = pa.table({"entity_id": ["p"] * 3, "channel": ["flow"] * 3,
                      "timestamp": pa.array(times, type=pa.timestamp("us", tz="UTC")), "value": [1.0, 2.0, 3.0]})
    path = tmp_path / "spark.parquet"
    pq.write_table(table, path, use_deprecated_int96_timestamps=True)
    readings, quarantine, count = _read(path)
    micros = sorted(readings["timestamp"].tolist())
    epoch = datetime(1970, 1, 1)
    expected = [(datetime(*d) - epoch) // timedelta(microseconds=1) for d in ((2026, 1, 5), (2610, 6, 1), (9999, 12, 31))]
    assert micros == expected and not quarantine


def test_a_damaged_data_page_quarantines_the_rows_it_hides(tmp_path):
    """A corrupt page had failed the whole run with a 125-line traceback (a zstd error inside the read step)."""
    n = 3000
    table = pa.table({"entity_id": ["p"] * n, "channel": ["flow"] * n,
                      "timestamp": pa.array([T0 + pd.Timedelta(seconds=10 * i) for i in range(n)]),
                      "value": np.random.default_rng(0).normal(size=n)})
    path = tmp_path / "pumps.parquet"
    pq.write_table(table, path, row_group_size=1000, compression="zstd")
    value_chunk = pq.ParquetFile(path).metadata.row_group(2).column(3)
    data = bytearray(path.read_bytes())
    start = value_chunk.data_page_offset + 40
    data[start:start + 200] = b"\0" * 200
    path.write_bytes(bytes(data))
    readings, quarantine, count = _read(path, chunk_rows=1000)
    assert count == n and len(readings) + sum(q.records for q in quarantine) == n  # nothing lost
    (damage,) = [q for q in quarantine if q.reason_code == "damaged_file"]
    assert damage.line == 2001 and damage.records == 1000 and len(readings) == 2000
    assert damage.reason.startswith("the Parquet file is damaged from row 2001 on (") and "1000 rows" in damage.reason


@pytest.mark.parametrize("column, value", [("timestamp", {"s": 1}), ("entity_id", ["a"])])
def test_nested_values_in_a_role_column_quarantine_the_file_in_one_sentence(tmp_path, column, value):
    """A struct timestamp or a list entity had failed the run (and its planning) with 'unhashable type'."""
    rows = {"entity_id": ["p", "p"], "channel": ["flow", "flow"], "timestamp": [T0, T0 + pd.Timedelta(seconds=10)],
            "value": [1.0, 2.0]}
    rows[column] = [value, value]
    path = tmp_path / "nested.parquet"
    pq.write_table(pa.table(rows), path)
    readings, quarantine, count = _read(path)
    assert len(readings) == 0 and count == 2 == sum(q.records for q in quarantine)
    assert {q.reason_code for q in quarantine} == {"schema_drift"}
    assert quarantine[0].reason.startswith(f"column {column!r} holds ") and "not plain values" in quarantine[0].reason
    assert file_spans([str(path)], LONG).spans == {}


def test_a_long_dataset_partitioned_by_entity_takes_it_from_its_folders(tmp_path):
    """Spark's partitionBy("entity_id") leaves the column in the folder names only: such a long dataset had been
    refused for lacking it (the wide format already read it from the folders)."""
    import pyarrow.dataset as ds

    n = 8
    table = pa.table({"entity_id": ["pump-01"] * 4 + ["pump-02"] * 4, "channel": ["flow"] * n,
                      "timestamp": pa.array([T0 + pd.Timedelta(seconds=10 * (i % 4)) for i in range(n)]),
                      "value": np.arange(n, dtype=float)})
    ds.write_dataset(table, tmp_path / "history", format="parquet", partitioning=["entity_id"],
                     partitioning_flavor="hive")
    files = sorted((tmp_path / "history").rglob("*.parquet"))
    assert [f.parent.name for f in files] == ["entity_id=pump-01", "entity_id=pump-02"]
    frames = [_read(f)[0] for f in files]
    assert [sorted(f["entity_id"].astype(str).unique()) for f in frames] == [["pump-01"], ["pump-02"]]
    assert [f["value"].tolist() for f in frames] == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]
    assert sorted(file_spans([str(f) for f in files], LONG).spans) == ["pump-01", "pump-02"]
