"""Parsing without a pipeline: timestamps, values, layouts, encodings and line handling, worked out by hand."""
from __future__ import annotations

import codecs
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqwatch.pipelines.parsing import (
    FileLayout,
    SchemaDriftError,
    explain_timestamp,
    explain_value,
    hive_partitions,
    parse_timestamps,
    partition_clash,
    parse_values,
    sniff_separator,
    split_lines,
)
from seqwatch.pipelines.sources import FileReader, TextLines, detect_encoding, expand_inputs, read_header
from seqwatch.schemas.mapping import InputMapping, MappingError

BAD = np.iinfo(np.int64).min
T0 = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z in µs


def stamps(*values, **kwargs):
    return parse_timestamps(pd.Series(list(values), dtype=object), **kwargs).tolist()


def test_iso_8601_with_and_without_offsets():
    assert stamps("2026-01-05T00:00:00Z", "2026-01-05T01:00:00+01:00", "2026-01-04T19:00:00-0500",
                  "2026-01-05 00:00:00", "2026-01-05T00:00:00.000001Z", " 2026-01-05T00:00:00Z ") == \
        [T0, T0, T0, T0, T0 + 1, T0]


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Berlin"])
def test_an_hour_only_offset_among_local_times_does_not_fail_the_column(timezone):
    # pandas finds the zone of "+01" that seqwatch's offset pattern does not, and refused the whole zone-less group
    # ("mixed timezones"), which crashed the read; each string now parses as it would alone
    column = ["2026-01-05T01:00:00+01", "2026-01-05 00:00:00", "Jan 5 2026 00:00", "2026-01-05"]
    local = T0 if timezone == "UTC" else T0 - 3_600_000_000
    assert stamps(*column, timezone=timezone) == [T0, local, local, local]
    assert stamps(*column, timezone=timezone) == [stamps(v, timezone=timezone)[0] for v in column]
    # pandas' ISO parse of the pair gives zoned times, its fallback for the second a zone-less one: merging the two
    # failed ("cannot convert from timezone-aware to timezone-naive"); found by tests/pipelines/test_reader_fuzz.py
    assert stamps("2026-01-05T01:00:00+01", "Jan 5 2026 00:00", timezone=timezone) == [T0, local]


def test_epoch_units_are_guessed_per_value_and_integers_stay_exact():
    assert stamps("1767571200", "1767571200000", "1767571200000000", "1767571200000000000",
                  "1767571200.5", "1767571200123456789") == \
        [T0, T0, T0, T0, T0 + 500_000, T0 + 123_457]


def test_epoch_unit_from_the_mapping_is_not_guessed():
    assert stamps("1767571200000", unit="ms") == [T0]
    assert stamps("1767571200", unit="ms") == [1_767_571_200_000]  # 1970-01-21: before_horizon later
    assert stamps("99999999999999999999999", unit="s") == [BAD]


def test_times_without_a_date_and_day_month_ambiguous_dates_are_refused():
    assert stamps("12:00:00", "05/01/2026 10:00", "not a date", "", None) == [BAD] * 5
    assert stamps("Jan 5 2026 00:00:00", "2026/01/05 00:00:00") == [T0, T0]


def test_timestamp_format_reads_day_first_dates():
    assert stamps("05/01/2026 00:00:10", fmt="%d/%m/%Y %H:%M:%S") == [T0 + 10_000_000]
    assert stamps("2026-01-05T00:00:00Z", fmt="%d/%m/%Y %H:%M:%S") == [BAD]


def test_local_times_use_the_mapping_timezone_and_refuse_dst_gaps_and_repeats():
    berlin = dict(timezone="Europe/Berlin")
    assert stamps("2026-01-05 01:00:00", **berlin) == [T0]  # CET = UTC+1
    assert stamps("2026-10-25 01:59:59", **berlin) == [pd.Timestamp("2026-10-24T23:59:59Z").value // 1000]
    assert stamps("2026-10-25 02:30:00", "2026-03-29 02:30:00", **berlin) == [BAD, BAD]
    assert stamps("2026-10-25T02:30:00+01:00", **berlin) == [pd.Timestamp("2026-10-25T01:30:00Z").value // 1000]
    assert "is ambiguous in Europe/Berlin" in explain_timestamp("2026-10-25 02:30:00", timezone="Europe/Berlin")
    # true too of rows in time order that hold the hour once (bug hunt of real data: it had said they would tell)
    assert "one that holds the hour once cannot" in explain_timestamp("2026-10-25 02:30:00", timezone="Europe/Berlin")
    assert "does not exist in Europe/Berlin" in explain_timestamp("2026-03-29 02:30:00", timezone="Europe/Berlin")


def test_the_repeated_hour_of_a_dst_change_is_told_apart_by_row_order():
    """Europe/Berlin, 2026-10-25: 02:00-02:59 local happens twice (first at UTC+2, then at UTC+1). Rows in time
    order show it: the local times run forward, jump back once, and run forward again."""
    berlin = dict(timezone="Europe/Berlin")
    local = ["2026-10-25 01:59:00", "2026-10-25 02:00:00", "2026-10-25 02:30:00", "2026-10-25 02:59:00",
             "2026-10-25 02:00:00", "2026-10-25 02:30:00", "2026-10-25 03:00:00"]
    utc = [pd.Timestamp(t).value // 1000 for t in ("2026-10-24T23:59:00Z", "2026-10-25T00:00:00Z",
                                                   "2026-10-25T00:30:00Z", "2026-10-25T00:59:00Z",
                                                   "2026-10-25T01:00:00Z", "2026-10-25T01:30:00Z",
                                                   "2026-10-25T02:00:00Z")]
    assert stamps(*local, **berlin) == utc
    long = [t for t in local for _ in range(3)]  # a long file: one row per channel
    assert stamps(*long, **berlin) == [u for u in utc for _ in range(3)]
    naive = pd.Series(pd.to_datetime(local))  # a Parquet column of naive datetimes
    assert parse_timestamps(naive, **berlin).tolist() == utc
    assert stamps("26/10/25 02:30", "26/10/25 02:00", fmt="%y/%m/%d %H:%M", **berlin) == [utc[2], utc[4]]
    # Nothing to go by: one pass only, rows out of order, or two entities' nights one after the other.
    assert stamps("2026-10-25 02:00:00", "2026-10-25 02:30:00", **berlin) == [BAD, BAD]
    assert stamps(*[local[i] for i in (0, 5, 2, 4, 3, 1, 6)], **berlin) == [utc[0], BAD, BAD, BAD, BAD, BAD, utc[6]]
    assert stamps(*local, *local, **berlin) == [utc[0]] + [BAD] * 5 + [utc[6], utc[0]] + [BAD] * 5 + [utc[6]]


def test_the_repeated_hour_is_told_apart_per_series_hourly_and_entity_by_entity(tmp_path):
    """Found by the bug hunt of time scales: a series read once an hour has the rows 02:00 and 02:00, which do not
    jump back, so both were quarantined as ambiguous (every hourly energy export in local time, every October).
    With the rows' series (their entity; in a long file their entity's channel) each series is told apart on its
    own: its one step that does not go forward starts the repeat; entities one after another are told apart so."""
    berlin = dict(timezone="Europe/Berlin")
    hourly = ["2026-10-25 01:00:00", "2026-10-25 02:00:00", "2026-10-25 02:00:00", "2026-10-25 03:00:00"]
    utc = [pd.Timestamp(t).value // 1000 for t in ("2026-10-24T23:00:00Z", "2026-10-25T00:00:00Z",
                                                   "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z")]
    assert stamps(*hourly, **berlin) == [utc[0], BAD, BAD, utc[3]]  # without the series: nothing to go by
    values = pd.Series(hourly * 2)
    assert parse_timestamps(values, groups=np.repeat([0, 1], 4), **berlin).tolist() == utc * 2
    quarter = ["2026-10-25 02:00:00", "2026-10-25 02:30:00", "2026-10-25 02:00:00", "2026-10-25 02:30:00"]
    quarter_utc = [pd.Timestamp(t).value // 1000 for t in ("2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z",
                                                           "2026-10-25T01:00:00Z", "2026-10-25T01:30:00Z")]
    one_after_another = pd.Series(quarter * 2)  # two jumps back in all: only the series tell them apart
    assert parse_timestamps(one_after_another, **berlin).tolist() == [BAD] * 8
    assert parse_timestamps(one_after_another, groups=np.repeat([5, 9], 4), **berlin).tolist() == quarter_utc * 2
    # a repeated row among a series' readings of one pass is no repeat of the hour (it had moved the row and all
    # after it an hour on, found by the review); nor are two entities' rows of one pass without their series
    one_pass = ["2026-10-25 02:00:00", "2026-10-25 02:15:00", "2026-10-25 02:15:00", "2026-10-25 02:30:00"]
    assert parse_timestamps(pd.Series(one_pass), groups=np.zeros(4, int), **berlin).tolist() == [BAD] * 4
    assert stamps(*hourly[1:3], **berlin) == [BAD, BAD]
    # a series with two passes that go forward by equal steps in neither order says nothing
    assert parse_timestamps(pd.Series(hourly[1:3] * 2), groups=np.zeros(4, int), **berlin).tolist() == [BAD] * 4
    # the reader: an hourly long file of two channels, and a wide file of two entities one after the other
    lines = "".join(f"pump-1,{ch},{t},1\n" for t in hourly for ch in ("flow", "pressure"))
    (tmp_path / "long.csv").write_text("entity_id,channel,timestamp,value\n" + lines)
    wide = "".join(f"{e},{t},1,2\n" for e in ("pump-1", "pump-2") for t in hourly)
    (tmp_path / "wide.csv").write_text("device,ts,flow,pressure\n" + wide)
    for name, mapping in (("long.csv", InputMapping(timezone="Europe/Berlin")),
                          ("wide.csv", InputMapping(format="wide", timestamp="ts", entity={"column": "device"},
                                                    timezone="Europe/Berlin"))):
        chunks = list(FileReader(mapping, "r").read(str(tmp_path / name)))
        assert not [q for _, records, _ in chunks for q in records], name  # nothing quarantined
        frame = pd.concat([batch.frame for batch, _, _ in chunks])
        assert sorted(set(frame["timestamp"])) == utc, name
        assert len(frame) == (8 if name == "long.csv" else 16), name
    # the locality index reads a long file's series as the reader does (found by the review): a file that starts
    # in the repeated hour spans from its first pass, as its readings do
    from seqwatch.pipelines.locality import file_spans

    edge = "".join(f"pump-1,{ch},{t},1\n" for t in hourly[1:] for ch in ("flow", "pressure"))
    (tmp_path / "edge.csv").write_text("entity_id,channel,timestamp,value\n" + edge)
    index = file_spans([str(tmp_path / "edge.csv")], InputMapping(timezone="Europe/Berlin"))
    assert index.spans == {"pump-1": [(str(tmp_path / "edge.csv"), utc[1], utc[3])]}


def test_datetime_columns_naive_and_aware():
    naive = pd.Series(pd.to_datetime(["2026-01-05 01:00:00"]))
    aware = pd.Series(pd.to_datetime(["2026-01-05 00:00:00"]).tz_localize("UTC"))
    assert parse_timestamps(naive, timezone="Europe/Berlin").tolist() == [T0]
    assert parse_timestamps(aware, timezone="Europe/Berlin").tolist() == [T0]


@pytest.mark.parametrize("value, phrase", [
    ("", "the timestamp is empty"),
    ("12:00", "has no date with a four-digit year"),
    ("05/01/2026", "ambiguous (day/month order)"),
    ("2026-13-45", "could not be parsed (expected ISO 8601"),
    ("1" * 30, "out of range"),
])
def test_explain_timestamp(value, phrase):
    assert phrase in explain_timestamp(value)


def test_values():
    got = parse_values(pd.Series([" 1.5 ", "-2e3", "+7", "\u22120.5", "NaN", "inf", "1e400", "", None, "12.5 kW",
                                  "1,5", "0x1A", "true"], dtype=object))
    assert got[:4].tolist() == [1.5, -2000.0, 7.0, -0.5]
    assert np.isnan(got[4:]).all()


def test_decimal_comma_reads_only_unambiguous_decimals():
    got = parse_values(pd.Series(["1,5", "-0,25", "3", "1.234,5", "1,234.5"], dtype=object), decimal=",")
    assert got[:3].tolist() == [1.5, -0.25, 3.0]
    assert np.isnan(got[3:]).all()


def test_numeric_columns_from_parquet_are_copied_not_written_in_place():
    column = pa.table({"v": [1.0, float("inf")]}).to_pandas()["v"]
    assert np.isnan(parse_values(column)[1])


@pytest.mark.parametrize("value, phrase", [
    ("", "the value is empty"),
    ("NaN", "is missing"),
    ("-inf", "is not finite"),
    ("1e400", "is not finite"),
    ("12,5", "uses a decimal comma; set the mapping's decimal to ','"),
    ("1,234.5", "has a thousands separator"),
    ("12.5 kW", "carries a unit ('kW')"),
    ("3.1bar", "carries a unit ('bar')"),
    ("0x1A", "is hexadecimal"),
    ("1_000", "groups digits with '_'"),  # the bug hunt of pathological inputs: it had "carried a unit ('_000')"
    ("abc", "is not a number"),
])
def test_explain_value(value, phrase):
    assert phrase in explain_value(value)


def test_a_cell_of_200000_digits_is_explained_at_once():
    """Found by a bug hunt: the unit pattern backtracked over every split of a long run of digits (10,000 digits:
    4 s; 200,000: the run hung past 5 minutes). Not timed here: the reason names its length instead."""
    assert explain_value("9" * 200_000 + "x").endswith("... (200,001 characters) is not a number")


def test_layout_errors_name_the_file_and_the_columns():
    wide = InputMapping(format="wide")
    with pytest.raises(SchemaDriftError, match=r"^a.csv has duplicate columns \['flow'\]"):
        FileLayout.resolve(["timestamp", "flow", "flow"], wide, "/data/a.csv")
    with pytest.raises(SchemaDriftError, match=r"lacks the timestamp column 'timestamp' .*renamed to 'Timestamp'"):
        FileLayout.resolve(["Timestamp", "flow"], wide, "/data/a.csv")
    with pytest.raises(SchemaDriftError, match=r"lacks required columns \['entity_id'\] .*renamed to 'entity'\? If so, "
                                               r"a --mapping file \{\"format\": \"long\", \"columns\": \{\"entity_id\": "
                                               r"\"entity\"\}\} reads them\)$"):
        FileLayout.resolve(["entity", "channel", "timestamp", "value"], InputMapping(), "/data/a.csv")
    for unnamed, flag in (("", "''"), ("Unnamed: 0", "'Unnamed: 0'")):  # an index written by pandas
        with pytest.raises(SchemaDriftError) as caught:
            FileLayout.resolve([unnamed, "flow"], wide, "/data/a.csv")
        assert str(caught.value).endswith(f"; its first column has no name, as pandas writes an unnamed index: if "
                                          f"it holds the times, --timestamp-column {flag} (or the mapping's "
                                          f"'timestamp') reads them")
    assert FileLayout.resolve(["", "flow"], InputMapping(format="wide", timestamp=""), "a.csv").channel_columns \
        == ("flow",)


def test_the_repeated_columns_of_a_header_of_thousands_of_tags_are_each_named_once():
    """A historian's export of thousands of tags: every repeated name once, sorted; unnamed columns are not
    repeats (each is checked as an unnamed index). Found by the bug hunt of pathological inputs, where the check
    counted each column across the whole header (50,000 tags: 31 s; not timed here)."""
    tags = [f"tag{i:05d}" for i in range(5_000)]
    header = ["timestamp", *tags, "tag04999", "tag00002", "tag04999", "flow"]
    with pytest.raises(SchemaDriftError, match=r"^a.csv has duplicate columns \['tag00002', 'tag04999'\] "):
        FileLayout.resolve(header, InputMapping(format="wide"), "/data/a.csv")
    with pytest.raises(SchemaDriftError, match=r"^the mapping names the columns \['a', 'b'\] of a.csv both channel "
                                               r"'flow'"):
        FileLayout.resolve(["timestamp", "a", "b"], InputMapping(format="wide", channels={"a": "flow", "b": "flow"}),
                           "/data/a.csv")


def test_an_error_about_a_header_of_thousands_of_columns_names_ten_and_counts_the_rest():
    """Found by the bug hunt of pathological inputs: the sentence named every column of a 50,000-tag export (600
    kB on one line)."""
    tags = [f"tag{i:05d}" for i in range(5_000)]
    long = InputMapping()
    with pytest.raises(SchemaDriftError) as caught:
        FileLayout.resolve(["entity_id", "channel", "timestamp", "value", *tags], long, "/data/a.csv")
    assert str(caught.value) == (f"a.csv has unexpected columns {tags[:10]} and 4,990 more; ignore them (--ignore, "
                                 f"or the mapping's 'ignore' list) or set the mapping's 'extra_columns' to 'ignore'")
    with pytest.raises(SchemaDriftError) as caught:
        FileLayout.resolve(["entity_id", "channel", "value", *tags], long, "/data/a.csv")
    assert str(caught.value).startswith("a.csv lacks required columns ['timestamp'] (its columns are ['entity_id', "
                                        "'channel', 'value', 'tag00000', ")
    assert "'tag00006'] and 4,993 more" in str(caught.value) and len(str(caught.value)) < 400
    with pytest.raises(SchemaDriftError) as caught:
        FileLayout.resolve(["timestamp", *tags, *tags[:12]], InputMapping(format="wide"), "/data/a.csv")
    assert str(caught.value) == (f"a.csv has duplicate columns {tags[:10]} and 2 more (its columns are "
                                 f"{['timestamp', *tags[:9]]} and 5,003 more)")
    ignore = InputMapping(extra_columns="ignore")
    layout = FileLayout.resolve(["entity_id", "channel", "timestamp", "value", "quality"], ignore, "a.csv")
    assert layout.long_columns["value"] == "value"


def test_a_wide_file_with_an_entity_id_column_names_its_entities_there(tmp_path):
    # As pandas writes a pivot of long readings: its entity_id column is the entity, not a channel of text (and
    # the file name, the default, would make both pumps one entity, every second reading a duplicate).
    path = tmp_path / "export.csv"
    path.write_text("entity_id,timestamp,flow,pressure\npump-01,2026-01-05T00:00:00Z,1,2\n"
                    "pump-02,2026-01-05T00:00:00Z,3,4\n")
    frame, quarantine, records = _read(path, InputMapping(format="wide"))
    assert records == 4 and quarantine == []
    assert sorted(frame[["entity_id", "channel", "value"]].astype({"entity_id": str}).values.tolist()) == [
        ["pump-01", "flow", 1.0], ["pump-01", "pressure", 2.0], ["pump-02", "flow", 3.0], ["pump-02", "pressure", 4.0]]
    layout = FileLayout.resolve(["entity_id", "timestamp", "flow"], InputMapping(format="wide"), "/d/export.csv")
    assert (layout.entity_column, layout.entity_value, layout.channel_columns) == ("entity_id", None, ("flow",))
    # Ignored, it is not read; with an entity given (a value or another column) the file name rule is not used.
    ignored = FileLayout.resolve(["entity_id", "timestamp", "flow"], InputMapping(format="wide", ignore=("entity_id",)),
                                 "/d/export.csv")
    assert (ignored.entity_column, ignored.entity_value, ignored.channel_columns) == (None, "export", ("flow",))
    named = FileLayout.resolve(["entity_id", "pump", "timestamp", "flow"],
                               InputMapping(format="wide", entity={"column": "pump"}), "/d/export.csv")
    assert named.entity_column == "pump" and named.channel_columns == ("entity_id", "flow")


@pytest.mark.parametrize("mapping, header, row", [
    (InputMapping(format="wide"), "timestamp,flow,pressure", "2026-01-05T00:00:{s:02d}Z,1,2"),
    (InputMapping(), "entity_id,channel,timestamp,value", "pump-01,flow,2026-01-05T00:00:{s:02d}Z,1"),
    (InputMapping(format="wide", columns={}, timestamp="time"), "time,flow", "2026-01-05T00:00:{s:02d}Z,1"),
])
def test_a_header_line_repeated_inside_a_file_says_so(tmp_path, mapping, header, row):
    """Files joined with ``cat`` keep each file's header: the repeated line was quarantined as a timestamp with
    "no date with a four-digit year", which sent people looking for a date format."""
    path = tmp_path / "joined.csv"
    path.write_text("\n".join([header, row.format(s=0), header, row.format(s=10)]) + "\n")
    frame, quarantine, _ = _read(path, mapping)
    assert frame["timestamp"].nunique() == 2
    assert [(q.line, q.reason_code, q.reason) for q in quarantine] == [
        (3, "parse_timestamp", "the header line again, not a reading (files joined one after another keep each "
                               "file's header)")]


def test_input_globs_without_a_folder_match_in_the_working_directory(tmp_path, monkeypatch):
    # `seqwatch run --input '*.csv'` in the data's folder: Beam's local file system matched nothing for it.
    (tmp_path / "sub").mkdir()
    for name in ("b.csv", "a.csv", "c.parquet", "sub/d.csv"):
        (tmp_path / name).write_text("x\n")
    monkeypatch.chdir(tmp_path)
    assert expand_inputs(["*.csv"]) == ["a.csv", "b.csv"]
    assert expand_inputs(["?.csv", "c.parquet"]) == ["a.csv", "b.csv", "c.parquet"]
    assert expand_inputs(["./*.csv"]) == ["./a.csv", "./b.csv"]
    assert expand_inputs(["sub/*.csv", str(tmp_path / "a.*")]) == [str(tmp_path / "a.csv"), "sub/d.csv"]
    with pytest.raises(FileNotFoundError, match=r"^no input file matches '\*\.json'$"):
        expand_inputs(["*.json"])


def test_a_file_named_twice_is_read_once(tmp_path, monkeypatch):
    # `--input test.csv --input /data/test.csv` read the file twice: every reading was quarantined as a duplicate.
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "latest.csv").symlink_to(tmp_path / "a.csv")
    monkeypatch.chdir(tmp_path)
    assert expand_inputs(["a.csv", "./a.csv", str(tmp_path / "a.csv"), "latest.csv", "b.csv"]) == [
        "./a.csv", "b.csv"]
    assert expand_inputs([str(tmp_path), "*.csv"]) == [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]


def test_an_input_folder_stands_for_the_files_under_it(tmp_path, monkeypatch):
    # `seqwatch run --input history` ended in IsADirectoryError: the folder itself was handed to the reader.
    for name in ("a.csv", "day=2/b.parquet", "day=3/c.csv.gz", "d.TSV", "_SUCCESS", ".a.csv.crc", "_temporary/c.csv",
                 ".cache/d.csv", "day=2/.b.parquet.crc", "notes.md", "model/metadata.json", "out/scores/s.parquet"):
        (tmp_path / "history" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "history" / name).write_text("x\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("x\n")
    monkeypatch.chdir(tmp_path)
    wanted = ["history/a.csv", "history/d.TSV", "history/day=2/b.parquet", "history/day=3/c.csv.gz",
              "history/out/scores/s.parquet"]
    assert expand_inputs(["history"]) == wanted
    assert expand_inputs(["history/"]) == wanted
    assert expand_inputs([str(tmp_path / "history")]) == [str(tmp_path / p) for p in wanted]
    assert expand_inputs(["history", "history/a.csv"]) == wanted
    # a run's output folder inside its input folder is not read back as input, however either is written
    assert expand_inputs(["history"], exclude=("history/out",)) == wanted[:-1]
    assert expand_inputs(["./history/"], exclude=(str(tmp_path / "history" / "out") + "/",)) == [
        "./" + p for p in wanted[:-1]]
    # a glob keeps everything it matches, as written
    assert expand_inputs(["history/*"]) == ["history/.a.csv.crc", "history/_SUCCESS", "history/a.csv",
                                            "history/d.TSV", "history/notes.md"]
    with pytest.raises(FileNotFoundError, match=r"^no CSV or Parquet file is in the folder 'empty'$"):
        expand_inputs(["empty"])
    with pytest.raises(FileNotFoundError, match=r"^no input file matches 'nowhere'$"):
        expand_inputs(["nowhere"])


def test_a_link_to_a_file_that_does_not_exist_is_refused_not_skipped(tmp_path, monkeypatch):
    """Beam's file system skips a dangling link, so a file whose mount was down was left out of a run unsaid."""
    (tmp_path / "plant").mkdir()
    (tmp_path / "plant" / "pump-01.csv").write_text("x\n")
    (tmp_path / "plant" / "pump-02.csv").symlink_to(tmp_path / "mnt" / "pump-02.csv")
    (tmp_path / "plant" / "_pump-03.csv").symlink_to(tmp_path / "mnt" / "pump-03.csv")  # not input in a folder
    (tmp_path / "plant" / "notes.md").symlink_to(tmp_path / "mnt" / "notes.md")
    monkeypatch.chdir(tmp_path)
    message = (f"^plant/pump-02.csv is a link to {tmp_path}/mnt/pump-02.csv, which does not exist: restore its "
               f"target \\(a mount that is down\\?\\) or remove the link; its readings cannot be read$")
    for pattern in ("plant", "plant/pump-*.csv", "plant/pump-02.csv"):  # the link named alone said "no match"
        with pytest.raises(FileNotFoundError, match=message):
            expand_inputs([pattern])
    with pytest.raises(FileNotFoundError, match=r"\(and 1 more such links\)"):
        expand_inputs(["plant/*.csv"])  # a glob keeps what it names, _pump-03.csv too
    assert expand_inputs(["plant/pump-01.csv"]) == ["plant/pump-01.csv"]
    (tmp_path / "plant" / "pump-02.csv").unlink()
    assert expand_inputs(["plant"]) == ["plant/pump-01.csv"]


def test_mapping_checks_new_options():
    assert InputMapping.from_dict(InputMapping(decimal=",", sep=";", timestamp_unit="ns").to_dict()).decimal == ","
    for bad, phrase in [(dict(decimal=",", sep=","), "needs another field separator"), (dict(timezone="CEST+2"), "IANA"),
                        (dict(timestamp_format="dd/mm/yyyy"), "strftime"), (dict(timestamp_unit="h"), "ns")]:
        with pytest.raises(MappingError, match=phrase):
            InputMapping(**bad)


def test_an_entity_from_an_mqtt_topic_level_is_a_wide_message_mapping_that_a_file_refuses_in_one_sentence():
    assert InputMapping(format="wide", entity={"from_topic": 0}).entity == {"from_topic": 0}
    for level in (-1, True, "1", 1.5):
        with pytest.raises(MappingError, match=r"\{'from_topic': LEVEL\} \(an MQTT topic level counted from 0\)"):
            InputMapping(format="wide", entity={"from_topic": level})
    with pytest.raises(SchemaDriftError) as refused:
        FileLayout.resolve(["timestamp", "flow"], InputMapping(format="wide", entity={"from_topic": 1}),
                           "/data/pump-01.csv")
    assert str(refused.value) == ("pump-01.csv: the mapping takes each entity from an MQTT topic level (from_topic), "
                                  "which a file does not have; take it from a column, a value or the file name")
    with pytest.raises(SchemaDriftError, match="from a Kafka key \\(from_key\\), which a file does not have"):
        FileLayout.resolve(["timestamp", "flow"], InputMapping(format="wide", entity={"from_key": True}), "p.csv")


def test_hive_partition_folders_and_the_entity_column_they_hold():
    assert hive_partitions("/data/site=north%2Fwest/device=pump-01/date=2026-01-05/part-0.parquet") == {
        "site": "north/west", "device": "pump-01", "date": "2026-01-05"}
    assert hive_partitions("/data/a=1/b/a=2/x.csv") == {"a": "2"} and hive_partitions("/data/pump=/x.csv") == {}
    layout = FileLayout.resolve(["timestamp", "flow"], InputMapping(format="wide", entity={"column": "device"}),
                                "/data/device=pump-01/part-0.parquet")
    assert (layout.entity_column, layout.entity_value, layout.channel_columns) == (None, "pump-01", ("flow",))
    by_default = FileLayout.resolve(["timestamp", "flow"], InputMapping(format="wide"),
                                    "/data/entity_id=pump-02/part-0.parquet")
    assert by_default.entity_value == "pump-02"
    with pytest.raises(SchemaDriftError, match="lacks the entity column 'device'"):
        FileLayout.resolve(["timestamp", "flow"], InputMapping(format="wide", entity={"column": "device"}),
                           "/data/site=north/part-0.parquet")


def test_files_of_different_partition_folders_that_are_one_entity_over_the_same_time_clash():
    part = "/d/device={}/part-0.parquet"
    # Spark's partitionBy("device"): the same file name in each folder, over the same hours.
    assert partition_clash({"part-0": [(part.format("p1"), 0, 100), (part.format("p2"), 0, 100)]}) == (
        "/d/device=p1/part-0.parquet and /d/device=p2/part-0.parquet are both entity 'part-0' over the same time, but "
        "lie in different partition folders (device=p1 and device=p2): take the entity from the folders with "
        "--entity-column device (the mapping's entity column)")
    # One pump's days in date folders cover different times; files of one folder are not partitions apart; a
    # file that overlaps an earlier one that is not its neighbour by start time is still found.
    days = {"pump-01": [("/d/date=2026-01-05/pump-01.csv", 0, 99), ("/d/date=2026-01-06/pump-01.csv", 100, 199)]}
    assert partition_clash(days) is None
    assert partition_clash({"p": [("/d/x/p.csv", 0, 100), ("/d/x/p.csv.gz", 50, 150)]}) is None
    assert partition_clash({"p": [("/d/k=1/p.csv", 0, 1000), ("/d/k=1/q/p.csv", 10, 20),
                                  ("/d/k=2/p.csv", 30, 40)]}).startswith("/d/k=1/p.csv and /d/k=2/p.csv")


def test_split_lines_marks_wrong_field_counts_nul_and_broken_quotes():
    rows, ok = split_lines(['a,b,c', 'a,"b,c",d', 'a,b', 'a,\x00,c', 'a,"b,c', '"a","b","c"'], ",", 3)
    assert ok.tolist() == [True, True, False, False, False, True]
    assert rows[1] == ["a", "b,c", "d"] and rows[5] == ["a", "b", "c"]
    assert sniff_separator("a;b;c") == ";" and sniff_separator("a\tb") == "\t" and sniff_separator("a") == ","


@pytest.mark.parametrize("data, encoding", [
    (codecs.BOM_UTF8 + b"a,b\n", "utf-8-sig"),
    ("a,b\n".encode("utf-16"), "utf-16"),
    ("a,b\n".encode("utf-32"), "utf-32"),
    ("timestamp,flow\n".encode("utf-16-le"), "utf-16-le"),
    ("timestamp,flow\n".encode("utf-16-be"), "utf-16-be"),
    ("K\u00fchl,1\n".encode("cp1252"), "auto"),
    (b"plain,ascii\n", "auto"),
])
def test_detect_encoding(data, encoding):
    assert detect_encoding(data) == encoding


def test_lines_are_decoded_one_by_one_and_numbered_like_python(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes("a\u00fc\r\n".encode() + "b\u00fc\r".encode("cp1252") + b"x\n\nc\x81\rlast")
    with TextLines(str(path)) as f:
        assert list(f) == ["a\u00fc\r\n", "b\u00fc\r", "x\n", "\n", "c\u0081\r", "last"]


def test_header_with_excel_sep_hint_and_binary_files(tmp_path):
    hint = tmp_path / "hint.csv"
    hint.write_text("sep=;\n\ntimestamp;flow\n2026-01-05T00:00:00Z;1\n")
    assert read_header(str(hint)) == (["timestamp", "flow"], ";")
    binary = tmp_path / "zip.csv"
    binary.write_bytes(b"PK\x03\x04\x00\x00\x00binary\n")
    with pytest.raises(SchemaDriftError, match="zip.csv does not look like a CSV text file"):
        read_header(str(binary))
    empty = tmp_path / "empty.csv"
    empty.write_bytes(codecs.BOM_UTF8 + b"\n \n")
    assert read_header(str(empty)) == (None, ",")


def _read(path, mapping, chunk_rows=100_000):
    batches, quarantine, records = [], [], 0
    for batch, q, n in FileReader(mapping, "test", chunk_rows).read(str(path)):
        batches.append(batch.frame)
        quarantine += q
        records += n
    frame = pd.concat(batches, ignore_index=True) if batches else pd.DataFrame()
    return frame, quarantine, records


def test_reader_counts_readings_and_skips_rows_of_only_separators(tmp_path):
    path = tmp_path / "pump.csv"
    path.write_text("sep=;\ntimestamp;flow;pressure\n2026-01-05T00:00:00Z;1;2\n;;\n \n"
                    "2026-01-05T00:00:10Z;x;3\nbroken\n")
    frame, quarantine, records = _read(path, InputMapping(format="wide"))
    assert records == 6  # 3 data rows x 2 channels; the separators-only row and blank line carry none
    assert frame[["channel", "value", "line"]].values.tolist() == [["flow", 1.0, 3], ["pressure", 2.0, 3],
                                                                   ["pressure", 3.0, 6]]
    assert [(q.line, q.column, q.records, q.reason_code, q.raw) for q in quarantine] == [
        (7, "", 2, "malformed_row", "broken"), (6, "flow", 1, "parse_value", "2026-01-05T00:00:10Z;x;3")]


def test_the_header_is_split_by_the_mappings_separator_and_a_wrong_one_is_named(tmp_path):
    # `--sep ';'` on a comma file: the header was split by the sniffed ',' and every row by ';', so every reading
    # was quarantined as "the row has 1 fields, the header has 4".
    path = tmp_path / "long.csv"
    path.write_text("entity_id,channel,timestamp,value\npump-01,flow,2026-01-05T00:00:00Z,1.5\n")
    assert read_header(str(path)) == (["entity_id", "channel", "timestamp", "value"], ",")
    assert read_header(str(path), ",") == (["entity_id", "channel", "timestamp", "value"], ",")
    with pytest.raises(SchemaDriftError, match=r"^long.csv's header is one column when split by the separator ';' "
                                               r"\(--sep, or the mapping's sep\) and looks separated by ','"):
        read_header(str(path), ";")
    eu = tmp_path / "eu.csv"
    eu.write_text("timestamp;flow;note\n2026-01-05T00:00:00Z;1,5;a,b\n")
    assert read_header(str(eu), ";") == (["timestamp", "flow", "note"], ";")


def test_a_long_rows_bad_value_is_recorded_under_its_channel(tmp_path):
    # The run's summary groups these by column: for a long file it said "by channel: '' 3".
    path = tmp_path / "long.csv"
    path.write_text("entity_id,channel,timestamp,value\npump-01,flow,2026-01-05T00:00:00Z,abc\n"
                    "pump-01,pressure,2026-01-05T00:00:00Z,\npump-01,flow,2026-01-05T00:00:10Z,1.5\n"
                    " ,flow,2026-01-05T00:00:20Z,x\n")
    frame, quarantine, records = _read(path, InputMapping(format="long"))
    assert records == 4 and frame["line"].tolist() == [4]
    assert sorted((q.line, q.column, q.reason_code) for q in quarantine) == [
        (2, "flow", "parse_value"), (3, "pressure", "parse_value"), (5, "", "missing_entity")]


def test_reader_chunks_give_the_same_result_as_one_chunk(tmp_path):
    path = tmp_path / "long.csv"
    lines = ["entity_id,channel,timestamp,value"] + [f"e{i % 3},flow,{1767571200 + 10 * i},{i}" for i in range(50)]
    lines[20] = "e1,flow,bad,1"
    path.write_text("\n".join(lines) + "\n")
    one, q_one, n_one = _read(path, InputMapping())
    many, q_many, n_many = _read(path, InputMapping(), chunk_rows=7)
    assert n_one == n_many == 50 and len(one) == 49
    as_text = {"entity_id": str, "channel": str, "source": str}
    pd.testing.assert_frame_equal(one.astype(as_text), many.astype(as_text))
    assert [q.line for q in q_one] == [q.line for q in q_many] == [21]


def test_a_long_file_whose_role_columns_go_by_other_names_gets_the_mapping_that_reads_them():
    """Found by the bug hunt of real data: a header "Device,Time,Tag,Value" had been hinted only for 'value'. Each
    role is now guessed by its common names too, and when every missing one has a guess, the mapping is given,
    with the file's other columns ignored; a mapping the reader then takes."""
    with pytest.raises(SchemaDriftError) as caught:
        FileLayout.resolve(["Device", "Time", "Tag", "Value", "unit"], InputMapping(), "/data/a.csv")
    text = str(caught.value)
    assert ("was 'entity_id' renamed to 'Device' and 'channel' renamed to 'Tag' and 'timestamp' renamed to 'Time' "
            "and 'value' renamed to 'Value'? If so, a --mapping file ") in text
    suggested = json.loads(text[text.index("--mapping file ") + 15:text.index(" reads them")])
    assert suggested == {"format": "long", "columns": {"entity_id": "Device", "channel": "Tag", "timestamp": "Time",
                                                       "value": "Value"}, "ignore": ["unit"]}
    layout = FileLayout.resolve(["Device", "Time", "Tag", "Value", "unit"], InputMapping.from_dict(suggested), "a")
    assert layout.long_columns == {"entity_id": "Device", "channel": "Tag", "timestamp": "Time", "value": "Value"}
    with pytest.raises(SchemaDriftError) as caught:  # no name for the channel: guesses, but no half a mapping
        FileLayout.resolve(["Device", "Time", "qqq", "Value"], InputMapping(), "/data/a.csv")
    assert "renamed to 'Device'" in str(caught.value) and "--mapping file" not in str(caught.value)


def test_reader_quarantines_a_whole_file_with_schema_drift(tmp_path):
    path = tmp_path / "drift.csv"
    path.write_text("time,entity_id,channel,value\n\nx,e,flow,1\ny,e,flow,2\n")
    frame, quarantine, records = _read(path, InputMapping())
    assert frame.empty and records == 2
    assert [(q.line, q.reason_code) for q in quarantine] == [(3, "schema_drift"), (4, "schema_drift")]
    assert "renamed to 'time'" in quarantine[0].reason


def test_reader_parquet_with_float_and_string_columns(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"timestamp": ["2026-01-05T00:00:00Z", "later"], "flow": [1.5, float("nan")],
                             "note": ["a", None]}), path)
    mapping = InputMapping(format="wide", ignore=("note",))
    frame, quarantine, records = _read(path, mapping)
    assert records == 2 and frame["value"].tolist() == [1.5]
    assert [(q.line, q.reason_code, q.records) for q in quarantine] == [(2, "parse_timestamp", 1)]
    assert '"timestamp": "later"' in quarantine[0].raw


def test_a_boolean_parquet_column_reads_as_1_and_0_and_text_true_stays_no_number(tmp_path):
    """A status flag (a valve open) typed boolean in Parquet is a reading; it was quarantined as "the value 'True'
    is not a number". Its nulls are empty values; the text 'true' in a CSV cell is still not a number."""
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"timestamp": ["2026-01-05T00:00:00Z", "2026-01-05T00:00:10Z", "2026-01-05T00:00:20Z"],
                             "valve": pa.array([True, None, False], pa.bool_())}), path)
    frame, quarantine, records = _read(path, InputMapping(format="wide"))
    assert records == 3 and frame["value"].tolist() == [1.0, 0.0]
    assert [(q.line, q.column, q.reason) for q in quarantine] == [(2, "valve", "column 'valve': the value is empty")]
    assert '"valve": null' in quarantine[0].raw
    assert parse_values(pd.Series([True, False])).tolist() == [1.0, 0.0]
    assert np.isnan(parse_values(pd.Series(["true"]))).all()


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Berlin"])
def test_repeated_timestamps_parse_as_each_value_alone(timezone):
    """A column with many repeats is parsed one distinct value at a time: the same result, value by value."""
    values = ["2026-01-05T10:00:00Z", "2026-01-05 10:00:00", "1767225600", "1767225600123", "", None, np.nan,
              "yesterday", "2026-03-29T02:30:00", "Jan 5 2026 10:00", " 2026-01-05T10:00:00+01:00 ", 1767225600]
    column = pd.Series(values * 20, dtype=object)
    alone = [parse_timestamps(pd.Series([v], dtype=object), timezone=timezone)[0] for v in values] * 20
    assert parse_timestamps(column, timezone=timezone).tolist() == alone
    numbers = pd.Series([1767225600, 1767225601] * 50)
    assert parse_timestamps(numbers).tolist() == [1767225600_000000, 1767225601_000000] * 50


def test_parquet_written_by_pandas_with_its_index_reads_as_without(tmp_path):
    # DataFrame.to_parquet keeps the index: a named one (the timestamps) as a column pandas restores as the
    # index, an unnamed one as '__index_level_0__'. The first lost its timestamp column, the second ended in
    # KeyError: '__index_level_0__' (a traceback from `seqwatch run`).
    times = pd.date_range("2026-01-05", periods=6, freq="10s", tz="UTC")
    wide = pd.DataFrame({"timestamp": times, "flow": np.arange(6.0), "pressure": np.arange(6.0) / 10})
    wide.to_parquet(tmp_path / "plain.parquet", index=False)
    wide.set_index("timestamp").to_parquet(tmp_path / "named.parquet")
    wide.iloc[::-1].reset_index(drop=True).iloc[::-1].to_parquet(tmp_path / "unnamed.parquet", index=True)
    mapping = InputMapping(format="wide", entity={"value": "pump-1"})
    expected, _, _ = _read(tmp_path / "plain.parquet", mapping)
    assert len(expected) == 12
    for name in ("named.parquet", "unnamed.parquet"):
        assert sorted(read_header(str(tmp_path / name))[0]) == ["flow", "pressure", "timestamp"]
        frame, quarantine, records = _read(tmp_path / name, mapping)
        assert quarantine == [] and records == 12
        pd.testing.assert_frame_equal(frame.drop(columns=["line", "source"]), expected.drop(columns=["line", "source"]),
                                      check_categorical=False)


@pytest.mark.parametrize("decimal", [".", ","])
def test_columns_of_text_parsed_together_read_as_each_column_alone(decimal, monkeypatch):
    """``parse_columns`` joins a wide file's text columns into one call of ``parse_values`` (a file of 50,000
    columns spent 18 s in per-column calls); every value must read as it reads in its own column."""
    from seqwatch.pipelines import parsing
    from seqwatch.pipelines.parsing import parse_columns, parse_values

    cells = ["1.5", "-2", "n/a", "", " 7 ", "1,5", "1.234", "3e2", "12 kPa", "inf", "\u22124", None, "0x1F", "1,200"]
    rng = np.random.default_rng(0)
    text = [pd.Series(list(rng.choice(np.array(cells, dtype=object), size=n)), dtype="string[pyarrow]")
            for n in (5, 1, 8, 0, 13)]
    chunked = pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([["4.5", "x"], ["6"]], pa.large_string())))
    numeric = pd.Series([1.0, np.nan, np.inf])
    flags = pd.Series([True, False])
    columns = [text[0], numeric, text[1], chunked, text[2], flags, text[3], text[4]]
    monkeypatch.setattr(parsing, "PARSED_TOGETHER", 10)  # a few calls, the last column of each group cut off
    calls = []
    monkeypatch.setattr(parsing, "parse_values",
                        lambda values, d: calls.append(len(values)) or parse_values(values, d))
    for parsed, values in zip(parse_columns(columns, decimal), columns):
        np.testing.assert_array_equal(parsed, parse_values(values, decimal))
    assert calls == [9, 8, 13, 3, 2]  # text columns 5+1+3, 8+0, 13 together; the numbers and the flags alone
    calls.clear()
    assert [len(p) for p in parse_columns(columns, decimal)] == [5, 3, 1, 3, 8, 2, 0, 13]
    assert parse_columns([], decimal) == []
    assert np.isnan(parse_columns(text, decimal)[0]).any() and not np.isnan(parse_columns(text, decimal)[0]).all()
