"""A quoted CSV field that holds line breaks (a two-line note): the lines of its record are read as one row,
in bulk and line by line, through a run and a replay (``pipelines/csv_records.py``)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from seqwatch.pipelines.csv_records import MAX_RECORD_LINES, ends_in_quotes, join_records, record_spans
from seqwatch.pipelines.parsing import FileLayout
from seqwatch.pipelines.sources import FileReader, read_header
from seqwatch.schemas.mapping import InputMapping

NOTES = InputMapping(format="wide", entity={"value": "pump-1"}, ignore=("note",))


def test_a_line_ends_inside_quotes_where_the_csv_module_reads_on():
    assert ends_in_quotes('a,"b', ",") and ends_in_quotes(b'a,"b', ",")
    assert not ends_in_quotes('a,"b"', ",")
    assert ends_in_quotes('a,"b""c', ",")  # "" inside a quoted field is a quote: still open
    assert not ends_in_quotes('a,5"x,b', ",")  # a quote inside an unquoted field is text
    assert not ends_in_quotes('a,"b"c', ",")  # text after the closing quote, up to the separator
    assert not ends_in_quotes('x"', ",", inside=True) and ends_in_quotes('x""y', ",", inside=True)
    assert ends_in_quotes('a;"b', ";") and not ends_in_quotes('a,"b;c";d', ";")
    rng = np.random.default_rng(0)
    for _ in range(3000):  # the csv module reads the next line into the record exactly when the line ends open
        line = "".join(rng.choice(list('a,"'), size=int(rng.integers(0, 12))))
        records = list(csv.reader([line + "\n", "next\n"], strict=False))
        assert ends_in_quotes(line, ",") == (len(records) == 1), line


def test_record_spans_join_what_a_quote_holds_open_and_leave_stray_quotes_alone():
    lines = ['1,2,"first', "second", 'third"', "3,4,x", '5,6,"a""', '""b"', '7,8,"stray', "9,10,y"]
    assert record_spans(lines, ",", 3) == ([(0, 3), (4, 2)], None)
    # a chunk's end may yet close the stray quote: its lines go on with the next chunk
    assert record_spans(lines, ",", 3, final=False) == ([(0, 3), (4, 2)], 6)
    assert record_spans(lines, ",", 3, quoted=[0, 2, 4, 5, 6]) == ([(0, 3), (4, 2)], None)
    # joined, these lines would make 5 fields where the header has 3: a stray quote, each line its own row
    assert record_spans(['1,2,"a', 'b",9,9'], ",", 3) == ([], None)
    assert record_spans(['1,2,"a', 'b",9,9'], ",", None) == ([(0, 2)], None)
    # at most MAX_RECORD_LINES lines to a record
    filler = ["x"] * (MAX_RECORD_LINES - 2)
    assert record_spans(['1,2,"a', *filler, 'b"'], ",", 3) == ([(0, MAX_RECORD_LINES)], None)
    assert record_spans(['1,2,"a', *filler, "x", 'b"'], ",", 3) == ([], None)
    # bytes with their line ends, as the bulk reader hands them
    assert record_spans([b'1,2,"a\r\n', b'b"\r\n', b"3,4,5\r\n"], ",", 3) == ([(0, 2)], None)


def test_join_records_numbers_a_record_by_its_first_line():
    numbered = list(enumerate(['1,2,"a\n', "\n", 'b"\n', '3,4,"c\n', "5,6,7\n", '8,9,"d"\n'], start=2))
    assert list(join_records(numbered, ",", 3)) == [(2, '1,2,"a\n\nb"\n'), (5, '3,4,"c\n'), (6, "5,6,7\n"),
                                                    (7, '8,9,"d"\n')]


def _rows(n: int, start: int = 0) -> list[str]:
    return [f"2026-01-05T00:{(start + i) // 60:02d}:{(start + i) % 60:02d}Z,{i * 1.5:g},{-i},ok" for i in range(n)]


def _file(tmp_path, newline: str = "\n", prefix: bytes = b"") -> tuple[str, list[int]]:
    """A wide CSV with a note column: 30 rows, five of whose notes hold line breaks (one a blank line, one
    CRLF inside LF, one 'quotes' and a separator), and one row with a stray quote. Returns the path and the
    first line number of every row."""
    rows = _rows(30)
    rows[3] = rows[3].replace(",ok", ',"pump noisy,\nchecked"')
    rows[7] = rows[7].replace(",ok", ',"line one\n\nline three"')
    rows[12] = rows[12].replace(",ok", ',"said ""stop""\nthen ""go"""')
    rows[20] = rows[20].replace(",ok", ',"a\r\nb"')
    rows[29] = rows[29].replace(",ok", ',"last\nrow"')
    rows[25] = rows[25].replace(",ok", ',"stray quote')
    text = newline.join(["timestamp,flow,temp,note", *rows]) + newline
    path = tmp_path / "pump-1.csv"
    path.write_bytes(prefix + text.encode())
    firsts, number = [], 2
    for row in rows:
        firsts.append(number)
        number += row.count("\n") + 1  # "\n" and "\r\n" each end a line
    return str(path), firsts


def _read_with(mapping, path: str, chunk_rows: int, line_by_line: bool):
    reader = FileReader(mapping, "run", chunk_rows=chunk_rows)
    header, sep = read_header(path, mapping.sep)
    layout = FileLayout.resolve(header, mapping, path)
    chunks = (reader._csv_line_chunks(path, layout, sep) if line_by_line else reader._csv_chunks(path, layout, sep))
    frames, quarantine, count = [], [], 0
    for batch, bad, n in chunks:
        frames.append(batch.frame)
        quarantine += [tuple(q) for q in bad]
        count += n
    readings = pd.concat(frames, ignore_index=True).astype({"entity_id": object, "channel": object, "source": object})
    return readings.sort_values(["line", "channel"]).reset_index(drop=True), sorted(quarantine), count


def _read(path: str, chunk_rows: int, line_by_line: bool):
    return _read_with(NOTES, path, chunk_rows, line_by_line)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 7, 1000])
def test_notes_with_line_breaks_are_one_row_in_bulk_and_line_by_line(tmp_path, newline, chunk_rows):
    path, firsts = _file(tmp_path, newline)
    bulk, line = _read(path, chunk_rows, False), _read(path, chunk_rows, True)
    pd.testing.assert_frame_equal(bulk[0], line[0])
    assert bulk[1:] == line[1:]
    readings, quarantine, count = bulk
    # every row but the stray quote's is two readings at its first line; the stray quote's row alone is malformed
    assert sorted(set(readings["line"])) == [n for i, n in enumerate(firsts) if i != 25]
    assert len(readings) == 58 and count == 60
    (record,) = quarantine
    assert (record[2], record[6], record[4]) == (firsts[25], "malformed_row", 2)
    assert record[0].endswith('"stray quote') and "unexpected end of data" in record[7]
    assert readings.loc[readings["line"] == firsts[13], "value"].tolist() == [19.5, -13.0]  # after the notes


def test_a_file_with_a_byte_order_mark_joins_the_same_records(tmp_path):
    """A BOM sends the file to the line reader (``_csv_line_chunks``) in ``_csv_chunks`` itself."""
    plain, firsts = _file(tmp_path)
    readings, quarantine, count = _read(plain, 1000, False)
    marked = tmp_path / "bom" / "pump-1.csv"
    marked.parent.mkdir()
    marked.write_bytes(b"\xef\xbb\xbf" + open(plain, "rb").read())
    with_bom = _read(str(marked), 1000, False)
    pd.testing.assert_frame_equal(readings.drop(columns="source"), with_bom[0].drop(columns="source"))
    assert count == with_bom[2] and [q[2] for q in quarantine] == [q[2] for q in with_bom[1]]


def test_a_malformed_multi_line_record_is_quarantined_whole(tmp_path):
    path = tmp_path / "pump-1.csv"
    path.write_text('timestamp,flow,temp,note\n2026-01-05T00:00:00Z,1.5 bar,2,"two\nlines"\n'
                    "2026-01-05T00:00:10Z,1,2,ok\n")
    readings, quarantine, count = _read(str(path), 1000, False)
    assert readings["line"].tolist() == [2, 4, 4] and count == 4  # the row's temperature is read
    (record,) = quarantine
    assert (record[0], record[2], record[3], record[6]) == (
        '2026-01-05T00:00:00Z,1.5 bar,2,"two\nlines"', 2, "flow", "parse_value")


def test_a_run_scores_rows_with_multi_line_notes_and_replays_a_fixed_one(tmp_path, small_model_dir):
    from seqwatch.models.synthetic import generate_sensor_data
    from seqwatch.pipelines.batch import run_batch
    from seqwatch.pipelines.config import RunConfig
    from seqwatch.pipelines.replay import ReplayConfig, run_replay

    readings, _ = generate_sensor_data(n_entities=1, n_steps=60, seed=3)
    wide = readings.pivot(index="timestamp", columns="channel", values="value").reset_index()
    wide["timestamp"] = wide["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    wide = wide.astype({"flow": object})
    wide["note"] = ""
    wide.loc[10, "note"] = "valve swapped,\nsee ticket 12"
    wide.loc[20, "note"] = "reading by hand:\n\n102 l/min"
    wide.loc[20, "flow"] = "102 l/min"  # a unit in the cell: quarantined with its note
    source = tmp_path / "inputs" / "pump-07.csv"
    source.parent.mkdir()
    wide.to_csv(source, index=False, float_format="%.3f")
    assert source.read_text().count("\n") == 60 + 1 + 3
    mapping = InputMapping(format="wide", ignore=("note",))
    out = tmp_path / "run"
    manifest = run_batch(RunConfig(inputs=(str(source),), output=str(out), model_dir=str(small_model_dir),
                                   mapping=mapping), ["--runner=DirectRunner"])
    per_row = len(wide.columns) - 2
    assert manifest["records_in"] == 60 * per_row == manifest["records_scored"] + manifest["records_quarantined"]
    quarantine = ds.dataset(out / "quarantine", format="parquet").to_table().to_pandas()
    (record,) = quarantine.itertuples()
    assert (record.line, record.column, record.reason_code) == (23, "flow", "parse_value")
    assert record.raw.endswith('"reading by hand:\n\n102 l/min"')
    scores = ds.dataset(out / "scores", format="parquet").to_table().to_pandas()
    assert len(scores) > 0

    fixed = record.raw.replace("102 l/min,", "102,", 1).replace('"reading by hand:\n\n102 l/min"', '"by hand"')
    export = tmp_path / "fixed.jsonl"
    export.write_text(json.dumps({**{k: getattr(record, k) for k in (
        "source", "column", "stage", "reason_code", "reason", "run_id")}, "raw": fixed, "line": 23,
        "records": 1}) + "\n")
    replay = run_replay(ReplayConfig(quarantine=str(export), output=str(tmp_path / "replay"),
                                     model_dir=str(small_model_dir), mapping=mapping), ["--runner=DirectRunner"])
    assert replay["records_in"] == 60 * per_row and replay["records_quarantined"] == 0
    assert replay["replay"]["scored_now"] == 1


def test_a_replayed_multi_line_record_keeps_every_later_line_number(tmp_path):
    from seqwatch.pipelines.replay import ReplayError, prepare_inputs

    source = tmp_path / "in" / "pump-1.csv"
    source.parent.mkdir()
    source.write_bytes(b'timestamp,flow,note\r\n2026-01-05T00:00:00Z,x,"one\r\ntwo\r\nthree"\r\n'
                       b"2026-01-05T00:00:10Z,2,ok\r\n")

    def record(raw):
        return {"raw": raw, "source": str(source), "line": 2, "column": "flow", "records": 1, "stage": "parse",
                "reason_code": "parse_value", "reason": "", "run_id": "r"}

    fixed = '2026-01-05T00:00:00Z,1,"one\r\ntwo"'  # one line fewer: a blank line keeps the next row on line 5
    (copy, _), = prepare_inputs(pd.DataFrame([record(fixed)]), tmp_path / "w1").items()
    assert open(copy, "rb").read() == (b'timestamp,flow,note\r\n2026-01-05T00:00:00Z,1,"one\r\ntwo"\r\n\r\n'
                                       b"2026-01-05T00:00:10Z,2,ok\r\n")
    readings = pd.concat(b.frame for b, _, _ in FileReader(InputMapping(format="wide", entity={"value": "p"},
                                                                        ignore=("note",)), "r").read(copy))
    assert readings["line"].tolist() == [2, 5]
    with pytest.raises(ReplayError, match="spans 4 lines where the record spans 3"):
        prepare_inputs(pd.DataFrame([record('2026-01-05T00:00:00Z,1,"a\nb\nc\nd"')]), tmp_path / "w2")
    with pytest.raises(ReplayError, match="holds a line break outside a quoted field"):
        prepare_inputs(pd.DataFrame([record("2026-01-05T00:00:00Z,1,a\n2026-01-05T00:00:05Z,1,b")]),
                       tmp_path / "w3")


def test_a_few_quoted_rows_do_not_stand_for_the_file_in_the_preflight(tmp_path, small_model_dir):
    """The run's preflight infers the file's interval from the reader's first output, which holds a chunk's odd
    lines (quoted ones) before its clean ones: two quoted rows 100 s apart had refused a 10 s file."""
    from seqwatch.models.synthetic import generate_sensor_data
    from seqwatch.pipelines.batch import plan_run
    from seqwatch.pipelines.config import RunConfig

    readings, _ = generate_sensor_data(n_entities=1, n_steps=60, seed=3)
    wide = readings.pivot(index="timestamp", columns="channel", values="value").reset_index()
    wide["timestamp"] = wide["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    wide["note"] = ""
    wide.loc[10, "note"], wide.loc[20, "note"] = "valve swapped, see ticket 12", "checked, fine"
    source = tmp_path / "pump-07.csv"
    wide.to_csv(source, index=False, float_format="%.3f")
    plan = plan_run(RunConfig(inputs=(str(source),), output=str(tmp_path / "out"), model_dir=str(small_model_dir),
                              mapping=InputMapping(format="wide", ignore=("note",))), now_us=None)
    assert plan is not None


# ------------------------------------------------------------- found by a review of the commit above (2026-12-02)


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 1000])
def test_a_lone_cr_chunk_that_ends_inside_a_record_reads_each_line_once(tmp_path, chunk_rows):
    """The bulk reader cut such a chunk at the open record but read all its lines, then the carried ones again."""
    path = tmp_path / "pump-1.csv"
    path.write_bytes(b'timestamp,flow,note\n2026-01-05T00:00:00Z,1,"a\rb"\n2026-01-05T00:00:10Z,2,"open\n'
                     b"2026-01-05T00:00:20Z,3,ok\n2026-01-05T00:00:30Z,4,ok\n")
    mapping = InputMapping(format="wide", entity={"value": "p"}, ignore=("note",))
    bulk, line = _read_with(mapping, str(path), chunk_rows, False), _read_with(mapping, str(path), chunk_rows, True)
    pd.testing.assert_frame_equal(bulk[0], line[0])
    assert bulk[1:] == line[1:]
    readings, quarantine, count = bulk
    assert readings["line"].tolist() == [2, 5, 6] and count == 4 and [q[2] for q in quarantine] == [4]


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252"])
def test_a_separator_beyond_ascii_joins_the_same_records_either_way(tmp_path, encoding):
    """Bulk had looked for records in the bytes, where '§' is two bytes in UTF-8 (and another byte in cp1252)."""
    path = tmp_path / "pump-1.csv"
    path.write_bytes('timestamp§flow§note\n2026-01-05T00:00:30Z§"4"§"f\ng"\n2026-01-05T00:00:40Z§5§25°C\n'
                     .encode(encoding))
    mapping = InputMapping(format="wide", entity={"value": "p"}, ignore=("note",), sep="§")
    bulk, line = _read_with(mapping, str(path), 1000, False), _read_with(mapping, str(path), 1000, True)
    pd.testing.assert_frame_equal(bulk[0], line[0])
    assert bulk[1:] == line[1:]
    assert bulk[0]["line"].tolist() == [2, 4] and bulk[1] == []


def test_replay_reads_a_sniffed_separator_and_refuses_lines_inside_a_record(tmp_path):
    from seqwatch.pipelines.replay import ReplayError, prepare_inputs

    source = tmp_path / "in" / "pump-1.csv"
    source.parent.mkdir()
    source.write_text('timestamp;flow;note\n2026-01-05T00:00:00Z;x;"one\ntwo"\n2026-01-05T00:00:10Z;2;ok\n')

    def record(line, raw):
        return {"raw": raw, "source": str(source), "line": line, "column": "flow", "records": 1, "stage": "parse",
                "reason_code": "parse_value", "reason": "", "run_id": "r"}

    (copy, _), = prepare_inputs(pd.DataFrame([record(2, '2026-01-05T00:00:00Z;1;"one\ntwo"')]),
                                tmp_path / "w1").items()  # checked with ';', as the header shows, not ','
    assert open(copy).read().splitlines()[1] == '2026-01-05T00:00:00Z;1;"one'
    # a run before such records were read as one row quarantined their lines one by one
    with pytest.raises(ReplayError, match="cannot replay line 3 of .*: it lies inside the record of line 2"):
        prepare_inputs(pd.DataFrame([record(2, '2026-01-05T00:00:00Z;1;"one'), record(3, 'two"')]),
                       tmp_path / "w2")


def test_the_preflight_of_a_cut_gzip_samples_past_its_damage_record(tmp_path, small_model_dir):
    """A damaged file's reader gives out its damaged_file record, then a chunk's odd (quoted) rows, then its clean
    ones: the first two outputs held two quoted rows 100 s apart."""
    import gzip

    from seqwatch.models.synthetic import generate_sensor_data
    from seqwatch.pipelines.batch import plan_run
    from seqwatch.pipelines.config import RunConfig

    readings, _ = generate_sensor_data(n_entities=1, n_steps=60, seed=3)
    wide = readings.pivot(index="timestamp", columns="channel", values="value").reset_index()
    wide["timestamp"] = wide["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    wide["note"] = ""
    wide.loc[10, "note"], wide.loc[20, "note"] = "checked, ok", "checked, fine"
    plain = tmp_path / "plain.csv"
    wide.to_csv(plain, index=False, float_format="%.3f")
    cut = tmp_path / "pump-07.csv.gz"
    cut.write_bytes(gzip.compress(plain.read_bytes())[:-30])
    plan = plan_run(RunConfig(inputs=(str(cut),), output=str(tmp_path / "out"), model_dir=str(small_model_dir),
                              mapping=InputMapping(format="wide", ignore=("note",))))
    assert plan.step_us == 10_000_000


def test_many_openings_find_their_closings_at_once_with_the_same_records(monkeypatch):
    """Lines that each open a quoted field no line closes (``ts,1,"a","a``) had cost a scan of the next 100 lines
    each (450 µs a line); past ``_MANY_OPENINGS`` of them the closings are found in one pass: same records."""
    from seqwatch.pipelines import csv_records

    rng = np.random.default_rng(1)
    for _ in range(60):
        lines = ["".join(rng.choice(list('a,"'), size=int(rng.integers(0, 8)))) for _ in range(int(rng.integers(1, 300)))]
        for final in (True, False):
            for n_fields in (None, 2, 3):
                at_once = record_spans(lines, ",", n_fields, final=final)
                monkeypatch.setattr(csv_records, "_MANY_OPENINGS", 10 ** 9)
                one_by_one = record_spans(lines, ",", n_fields, final=final)
                monkeypatch.setattr(csv_records, "_MANY_OPENINGS", 64)
                assert at_once == one_by_one
