"""The index of which panes one input file holds alone (``seqwatch.pipelines.locality``)."""
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqwatch.pipelines.locality import FileSpans, file_spans
from seqwatch.schemas.mapping import InputMapping

LONG = InputMapping()  # long format: entity_id, channel, timestamp, value
SECOND = 1_000_000
T0 = 1_767_225_600 * SECOND  # 2026-01-01T00:00:00Z


def test_a_pane_is_local_only_when_no_other_file_reaches_into_it():
    spans = FileSpans({"p1": [("a", 0, 99), ("b", 100, 199)], "p2": [("a", 50, 60), ("c", 55, 300)]})
    assert spans.is_local("a", "p1", 0, 100)  # b starts at 100: outside [0, 100)
    assert not spans.is_local("a", "p1", 0, 101)  # b's first reading at 100 falls inside
    assert spans.is_local("b", "p1", 100, 500)  # a's last reading at 99 is before 100
    assert not spans.is_local("b", "p1", 99, 500)
    assert not spans.is_local("a", "p2", 0, 1000)  # a and c overlap: nothing of p2 is local
    assert not spans.is_local("x", "p1", 0, 10)  # a file the index never saw
    assert not spans.is_local("a", "p3", 0, 10)  # an entity the index never saw


def _write(frame: pd.DataFrame, path, row_group_size=None):
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_size)
    return str(path)


def _readings(entity, start_s, n, step_s=10, channels=("a", "b")):
    rows = [(entity, c, pd.Timestamp(T0 + (start_s + i * step_s) * SECOND, unit="us"), float(i))
            for i in range(n) for c in channels]
    return pd.DataFrame(rows, columns=["entity_id", "channel", "timestamp", "value"])


def test_spans_come_from_row_group_statistics(tmp_path):
    one = _write(_readings("p1", 0, 100), tmp_path / "one.parquet", row_group_size=50)  # 4 row groups
    two = _write(_readings("p1", 1000, 10), tmp_path / "two.parquet")
    assert pq.ParquetFile(one).metadata.num_row_groups == 4
    spans = file_spans([one, two], LONG)
    assert spans.spans == {"p1": [(one, T0, T0 + 990 * SECOND), (two, T0 + 1000 * SECOND, T0 + 1090 * SECOND)]}


def test_several_entities_in_a_row_group_are_read_from_the_columns(tmp_path):
    frame = pd.concat([_readings(" p1 ", 0, 5), _readings("p2", 30, 5)]).sort_values("timestamp")
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")  # text: no usable statistics
    frame = frame.reset_index(drop=True)
    frame.loc[[0, 1], "timestamp"] = "not a time"  # rows the reader quarantines (both channels at 0 s): no span
    path = _write(frame, tmp_path / "mixed.parquet")
    spans = file_spans([path], LONG).spans
    # " p1 " is the reader's "p1" (ids are stripped); p1's first rows had bad times, so it starts at 10 s.
    assert spans == {"p1": [(path, T0 + 10 * SECOND, T0 + 40 * SECOND)],
                     "p2": [(path, T0 + 30 * SECOND, T0 + 70 * SECOND)]}


def test_local_times_are_spanned_in_utc_as_the_reader_reads_them(tmp_path):
    path = _write(_readings("p1", 0, 10), tmp_path / "local.parquet")  # naive timestamps
    spans = file_spans([path], InputMapping(timezone="Europe/Berlin")).spans
    hour = 3600 * SECOND  # Berlin is UTC+1 in January
    assert spans == {"p1": [(path, T0 - hour, T0 - hour + 90 * SECOND)]}


def test_epoch_numbers_use_the_mapping_unit_or_the_readers_guess(tmp_path):
    frame = _readings("p1", 0, 10)
    frame["timestamp"] = frame["timestamp"].astype("int64") // 1000  # epoch milliseconds
    path = _write(frame, tmp_path / "epoch.parquet")
    expected = {"p1": [(path, T0, T0 + 90 * SECOND)]}
    assert file_spans([path], LONG).spans == expected  # guessed: milliseconds
    assert file_spans([path], InputMapping(timestamp_unit="ms")).spans == expected


def test_the_entity_of_a_wide_file_comes_from_its_name(tmp_path):
    wide = _readings("x", 0, 10).pivot(index="timestamp", columns="channel", values="value").reset_index()
    path = _write(wide, tmp_path / "pump-7.parquet")
    mapping = InputMapping(format="wide", timestamp="timestamp", entity={"from_filename": True})
    assert file_spans([path], mapping).spans == {"pump-7": [(path, T0, T0 + 90 * SECOND)]}


def test_a_csv_input_turns_the_index_off(tmp_path):
    parquet = _write(_readings("p1", 0, 10), tmp_path / "one.parquet")
    csv = tmp_path / "two.csv"
    _readings("p1", 0, 10).to_csv(csv, index=False)
    assert file_spans([parquet, str(csv)], LONG) is None


def test_empty_and_drifted_files_hold_no_reading(tmp_path):
    good = _write(_readings("p1", 0, 10), tmp_path / "good.parquet")
    empty = _write(_readings("p1", 0, 0), tmp_path / "empty.parquet")
    drifted = _write(_readings("p1", 0, 10).rename(columns={"value": "reading"}), tmp_path / "drifted.parquet")
    assert file_spans([good, empty, drifted], LONG).spans == {"p1": [(good, T0, T0 + 90 * SECOND)]}
