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


def test_a_csv_file_is_spanned_from_its_entity_and_timestamp_columns(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("\ufeff entity_id ,channel, timestamp ,value\n"  # a BOM and blanks around the names
                    '" p1 ",a,2026-01-01T00:00:10Z,1\n'
                    "p2,a,2026-01-01T00:00:20Z,2\n"
                    "p1,a,2026-01-01T00:00:30Z\n"  # a field short: the reader quarantines it, the index skips it
                    "p1,b,not a time,3\n"
                    "\n"
                    '"p1","a","2026-01-01T00:00:05Z","4"\n', encoding="utf-8")
    spans = file_spans([str(path)], LONG).spans
    assert spans == {"p1": [(str(path), T0 + 5 * SECOND, T0 + 10 * SECOND)],
                     "p2": [(str(path), T0 + 20 * SECOND, T0 + 20 * SECOND)]}
    wide = tmp_path / "pump-3.csv"
    wide.write_text("timestamp;a;b\n2026-01-01T00:00:00Z;1;2\n2026-01-01T00:00:50Z;1;2\n")
    mapping = InputMapping(format="wide", timestamp="timestamp", entity={"from_filename": True})
    assert file_spans([str(wide)], mapping).spans == {"pump-3": [(str(wide), T0, T0 + 50 * SECOND)]}


def test_text_files_arrow_might_read_otherwise_turn_the_index_off(tmp_path):
    good = tmp_path / "good.csv"
    _readings("p1", 0, 10).to_csv(good, index=False)
    hint = tmp_path / "hint.csv"
    hint.write_text("sep=;\nentity_id;channel;timestamp;value\np1;a;2026-01-01T00:00:00Z;1\n")
    utf16 = tmp_path / "utf16.csv"
    utf16.write_text("entity_id,channel,timestamp,value\np1,a,2026-01-01T00:00:00Z,1\n", encoding="utf-16")
    cp1252 = tmp_path / "cp1252.csv"
    cp1252.write_bytes("entity_id,channel,timestamp,value\nPumpe-\u00e4,a,2026-01-01T00:00:00Z,1\n".encode("cp1252"))
    assert file_spans([str(good)], LONG) is not None
    for other in (hint, utf16, cp1252):
        assert file_spans([str(good), str(other)], LONG) is None, other.name


def test_empty_and_drifted_files_hold_no_reading(tmp_path):
    good = _write(_readings("p1", 0, 10), tmp_path / "good.parquet")
    empty = _write(_readings("p1", 0, 0), tmp_path / "empty.parquet")
    drifted = _write(_readings("p1", 0, 10).rename(columns={"value": "reading"}), tmp_path / "drifted.parquet")
    assert file_spans([good, empty, drifted], LONG).spans == {"p1": [(good, T0, T0 + 90 * SECOND)]}


def test_files_that_share_an_entity_are_grouped_across_entities():
    """What a replay re-runs with a replayed file (by hand): a and b share e1, b and c share e2, so a, b and c are
    one group; e and f share e4; d and g hold entities of their own (g twice: one file) and are in no group."""
    from seqwatch.pipelines.locality import FileSpans

    spans = FileSpans({"e1": [("a", 0, 1), ("b", 0, 1)], "e2": [("b", 0, 1), ("c", 2, 3)], "e3": [("d", 0, 1)],
                       "e4": [("f", 0, 1), ("e", 0, 1)], "e5": [("g", 0, 1), ("g", 2, 3)]})
    assert spans.file_groups() == [["a", "b", "c"], ["e", "f"]]
    assert FileSpans({}).file_groups() == []
