"""Headers as real exports write them, found by a bug hunt of file headers and mappings (2026-12-02): a second
header in another column order inside a file (exports joined one after another) had every later row read by the
first header, channels swapped without a word; a quoted name holding the separator blanked every name; a header's
commas inside names chose the separator; a Parquet name with a blank around it failed the run with a KeyError;
two columns mapped to one channel failed with a pandas message; a missing channel was guessed to be the
timestamp column renamed."""
import pandas as pd
import pyarrow.dataset as ds
import pytest

from seqwatch.pipelines.batch import RunError, run_batch
from seqwatch.pipelines.config import RunConfig
from seqwatch.pipelines.parsing import SchemaDriftError, sniff_separator
from seqwatch.pipelines.sources import FileReader, read_header
from seqwatch.schemas.mapping import InputMapping

WIDE = InputMapping(format="wide")


def _rows(start: int, n: int, order=("flow", "pressure")) -> list:
    """Wide rows at 10 s, flow about 50 and pressure about 3, in the columns' ``order``."""
    rows = []
    for i in range(start, start + n):
        values = {"flow": 50 + i % 7 * 0.1, "pressure": 3 + i % 5 * 0.01}
        stamp = pd.Timestamp("2026-01-05", tz="UTC") + pd.Timedelta(seconds=10 * i)
        rows.append(",".join([stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), *(f"{values[c]:.2f}" for c in order)]))
    return rows


def _read(path, mapping=WIDE):
    frames, records, total = [], [], 0
    for batch, bad, n in FileReader(mapping, "run-1").read(str(path)):
        frames.append(batch.frame)
        records += bad
        total += n
    return pd.concat(frames, ignore_index=True), records, total


def test_a_header_in_another_column_order_ends_what_the_first_header_reads(tmp_path):
    path = tmp_path / "pump-01.csv"
    path.write_text("\n".join(["timestamp,flow,pressure", *_rows(0, 200), "timestamp,pressure,flow",
                               *_rows(200, 100, order=("pressure", "flow"))]) + "\n")
    frame, records, total = _read(path)
    assert total == 2 * 301 and len(frame) == 2 * 200 and frame["line"].max() == 201
    assert frame.loc[frame["channel"] == "flow", "value"].between(49, 51).all()  # no pressure read as flow
    assert [(q.line, q.records, q.reason_code) for q in records][:2] == [(202, 2, "schema_drift"),
                                                                           (203, 2, "schema_drift")]
    assert len(records) == 101 and sum(q.records for q in records) == 2 * 101
    assert records[0].reason.startswith("line 202 is another header (['timestamp', 'pressure', 'flow']) than the "
                                        "file's first (['timestamp', 'flow', 'pressure'])")
    assert records[1].raw == ""  # a clean row's text is read at the quarantine sink


def test_a_repeated_header_of_the_same_columns_is_one_line_and_the_rows_after_it_are_read(tmp_path):
    path = tmp_path / "pump-01.csv"
    path.write_text("\n".join(["timestamp,flow,pressure", *_rows(0, 50), "timestamp, flow ,pressure",
                               *_rows(50, 50)]) + "\n")
    frame, records, total = _read(path)
    assert total == 2 * 101 and len(frame) == 2 * 100
    assert [(q.line, q.reason_code) for q in records] == [(52, "parse_timestamp")]


def test_a_run_quarantines_the_rows_after_another_header_and_scores_the_rest(small_model_dir, tmp_path):
    rows = [line.split(",") for line in _rows(0, 300)]
    header = "timestamp,flow,pressure,temperature,vibration"
    lines = [header] + [f"{t},{f},{p},{60 + i % 3},{0.2 + i % 4 * 0.01}" for i, (t, f, p) in enumerate(rows)]
    swapped = "timestamp,vibration,temperature,pressure,flow"
    lines[201:] = [swapped] + [",".join([r[0], r[4], r[3], r[2], r[1]]) for r in
                                (line.split(",") for line in lines[201:])]
    (tmp_path / "pump-01.csv").write_text("\n".join(lines) + "\n")
    manifest = run_batch(RunConfig(inputs=(str(tmp_path / "pump-01.csv"),), output=str(tmp_path / "out"),
                                   model_dir=str(small_model_dir), mapping=WIDE), ["--runner=DirectRunner"])
    assert manifest["records_in"] == 4 * 301
    assert manifest["stages"]["quarantined.parse.schema_drift"] == 4 * 101
    assert manifest["records_scored"] + manifest["records_quarantined"] == manifest["records_in"]
    quarantine = ds.dataset(tmp_path / "out" / "quarantine", format="parquet").to_table().to_pandas()
    drift = quarantine[quarantine["reason_code"] == "schema_drift"].set_index("line")
    assert drift.loc[202, "raw"] == swapped and drift.loc[203, "raw"] == lines[202]  # texts filled at the sink


def test_a_quoted_name_that_holds_the_separator_is_one_name(tmp_path):
    path = tmp_path / "pump-01.csv"
    path.write_text('timestamp,"flow, l/min",pressure\n' + "\n".join(_rows(0, 30)) + "\n")
    assert read_header(str(path)) == (["timestamp", "flow, l/min", "pressure"], ",")
    frame, records, _ = _read(path, InputMapping(format="wide", channels={"flow, l/min": "flow",
                                                                          "pressure": "pressure"}))
    assert not records and sorted(frame["channel"].unique()) == ["flow", "pressure"] and len(frame) == 60


@pytest.mark.parametrize("header, data, sep", [
    ("timestamp;flow, l/min;pressure, bar", ["2026-01-05T00:00:00Z;50,03;3,19"], ";"),  # decimal commas
    ("timestamp\tflow (l/min, avg)\tpressure (bar, avg, 1s)", ["2026-01-05T00:00:00Z\t50.03\t3.19"], "\t"),
    ("a;b;c", [], ";"), ("a\tb", [], "\t"), ("a", [], ","),  # the header alone: its commonest
    ("timestamp,flow,pressure", ["2026-01-05T00:00:00Z,50.03,3.19"], ","),
    ('timestamp,"a;b",c', ['2026-01-05T00:00:00Z,"1;2",3'], ","),  # a ';' only inside quotes
])
def test_the_separator_is_the_one_that_splits_the_header_and_the_data_alike(header, data, sep):
    assert sniff_separator(header, data) == sep


def test_a_semicolon_file_with_decimal_commas_and_commas_in_its_names_reads_without_sep(tmp_path):
    path = tmp_path / "pump-01.csv"
    rows = [line.replace(",", ";").replace(".", ",") for line in _rows(0, 30)]
    path.write_text("timestamp;flow, l/min;pressure, bar\n" + "\n".join(rows) + "\n")
    mapping = InputMapping(format="wide", decimal=",", channels={"flow, l/min": "flow", "pressure, bar": "pressure"})
    frame, records, _ = _read(path, mapping)
    assert not records and len(frame) == 60 and frame.loc[frame["channel"] == "flow", "value"].iloc[1] == 50.1


@pytest.mark.parametrize("mapping, rename", [(WIDE, {"flow": " flow", "pressure": "pressure "}),
                                             (InputMapping(), {"value": " value", "channel": "channel "})])
def test_a_parquet_name_with_blanks_around_it_is_read_as_a_csv_header_is(tmp_path, mapping, rename):
    wide = pd.DataFrame({"timestamp": pd.date_range("2026-01-05", periods=30, freq="10s", tz="UTC"),
                         "flow": 50.0, "pressure": 3.0})
    frame = wide if mapping is WIDE else wide.melt("timestamp", var_name="channel", value_name="value").assign(
        entity_id="pump-01")
    frame.rename(columns=rename).to_parquet(tmp_path / "pump-01.parquet")
    read, records, total = _read(tmp_path / "pump-01.parquet", mapping)
    assert not records and len(read) == total == 60 and set(read["value"]) == {50.0, 3.0}


def test_two_columns_of_one_channel_and_a_missing_channel_are_one_sentence(small_model_dir, tmp_path):
    path = tmp_path / "pump-01.csv"
    path.write_text("timestamp,flow,flow_b,pressure\n2026-01-05T00:00:00Z,1,2,3\n")
    same = InputMapping(format="wide", channels={"flow": "flow", "flow_b": "flow", "pressure": "pressure"})
    with pytest.raises(RunError, match=r"^the mapping names the columns \['flow', 'flow_b'\] of pump-01.csv both "
                                       r"channel 'flow'; give each column a channel of its own, or ignore all but one$"):
        run_batch(RunConfig(inputs=(str(path),), output=str(tmp_path / "out"), model_dir=str(small_model_dir),
                            mapping=same))
    from seqwatch.pipelines.parsing import FileLayout

    with pytest.raises(SchemaDriftError) as raised:
        FileLayout.resolve(["timestamp", "flow"], InputMapping(format="wide", channels={"temp": "t"}), "x.csv")
    assert str(raised.value) == "x.csv lacks channel columns ['temp'] (its columns are ['timestamp', 'flow'])"


def test_quoted_rows_after_another_header_are_not_read_by_the_first(tmp_path):
    """From a review: a chunk gives its quoted lines before its clean ones, so quoted rows after a clean second
    header had gone out, swapped, before the header was seen."""
    path = tmp_path / "pump-01.csv"
    quoted = ['"{}",{},{}'.format(*line.split(",")) for line in _rows(5, 5, order=("pressure", "flow"))]
    path.write_text("\n".join(["timestamp,flow,pressure", *_rows(0, 5), "timestamp,pressure,flow", *quoted]) + "\n")
    frame, records, total = _read(path)
    assert total == 2 * 11 and len(frame) == 2 * 5 and frame["line"].max() == 6
    assert sorted(q.line for q in records) == list(range(7, 13)) and {q.reason_code for q in records} == {"schema_drift"}


def test_a_damaged_file_after_another_header_keeps_its_damage_record_and_its_counts(tmp_path):
    """From a review: the damage record of a compressed file cut at a line end (standing for no reading) had
    become a schema_drift record of a row's readings, so the counts no longer added up."""
    import zlib

    lines = ["timestamp,flow,pressure", *_rows(0, 5), "timestamp,pressure,flow", *_rows(5, 5, ("pressure", "flow"))]
    packer = zlib.compressobj(wbits=31)
    (tmp_path / "pump-01.csv.gz").write_bytes(packer.compress(("\n".join(lines) + "\n").encode())
                                              + packer.flush(zlib.Z_FULL_FLUSH))  # no end of the gzip stream
    frame, records, total = _read(tmp_path / "pump-01.csv.gz")
    assert len(frame) + sum(q.records for q in records) == total == 2 * 11
    assert [(q.line, q.reason_code, q.records) for q in records][-1][1:] == ("damaged_file", 0)


@pytest.mark.parametrize("header, second", [
    ("timestamp,flow,pressure", "flow,timestamp,pressure"),  # the timestamp moved: no longer where it was
    ("entity_id,channel,timestamp,value", "timestamp,entity_id,channel,value"),  # a long file
])
def test_another_header_is_found_wherever_its_timestamp_column_went(tmp_path, header, second):
    """From a review: only a header with the timestamp name where the first header has it had been found."""
    names = header.split(",")
    long = "channel" in names
    rows = ([f"pump-01,flow,2026-01-05T00:00:{i:02d}Z,5{i}" for i in range(0, 50, 10)] if long else _rows(0, 5))
    moved = [",".join(dict(zip(names, row.split(",")))[name] for name in second.split(",")) for row in rows]
    path = tmp_path / "pump-01.csv"
    path.write_text("\n".join([header, *rows, second, *moved]) + "\n")
    frame, records, total = _read(path, InputMapping() if long else WIDE)
    assert len(frame) == 5 * (1 if long else 2) and {q.reason_code for q in records} == {"schema_drift"}
    assert sorted(q.line for q in records) == list(range(7, 13))
