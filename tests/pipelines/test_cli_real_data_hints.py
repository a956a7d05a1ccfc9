"""What a newcomer meets running seqwatch on the real data sets' files, found by a bug hunt with the CLI on NAB, SKAB
and the appliance data (2026-12-02): each refusal says what to do, and its advice works."""
from __future__ import annotations

import pytest

from seqwatch.pipelines.parsing import FileLayout, SchemaDriftError, explain_timestamp, partition_clash
from seqwatch.pipelines.sources import FileReader, expand_inputs
from seqwatch.schemas.mapping import InputMapping

HOUR = 3_600_000_000


def test_us_dates_get_the_format_that_reads_them():
    """'3/15/2020 21:01' was called ambiguous, with a day-first example that then failed on it."""
    assert explain_timestamp("3/15/2020 21:01", None, "UTC", None).endswith(
        "is written month first (15 cannot be a month), which is read only with its format: --timestamp-format "
        "'%m/%d/%Y %H:%M' (the mapping's timestamp_format)")
    assert "--timestamp-format '%d.%m.%Y %H:%M:%S'" in explain_timestamp("15.03.2020 21:01:05", None, "UTC", None)
    assert "'%d/%m/%Y' or '%m/%d/%Y'" in explain_timestamp("05/01/2026", None, "UTC", None)


def test_the_format_flag_reads_them(tmp_path, capsys):
    from seqwatch.pipelines.cli import _mapping_from_args, build_parser

    parser = build_parser()
    args, _ = parser.parse_known_args(["run", "--input", "x.csv", "--output", "o", "--model-dir", "m", "--format",
                                       "wide", "--timestamp-format", "%m/%d/%Y %H:%M", "--sep", "\\t"])
    mapping = _mapping_from_args(args)
    assert mapping.timestamp_format == "%m/%d/%Y %H:%M" and mapping.sep == "\t"
    path = tmp_path / "dishwasher.csv"
    path.write_text("ctime\tpower\n3/15/2020 21:01\t12.5\n3/15/2020 21:02\t13.0\n")
    mapping = InputMapping.from_dict({**mapping.to_dict(), "timestamp": "ctime", "entity": {"value": "d"}})
    readings = [b.frame for b, _, _ in FileReader(mapping, "r").read(str(path))]
    assert [len(f) for f in readings] == [2]


def test_refusals_of_a_newcomers_first_flags_say_what_to_give():
    with pytest.raises(SchemaDriftError, match="is wide: --format wide"):  # NAB's timestamp,value files
        FileLayout.resolve(["timestamp", "value"], InputMapping(), "machine_temperature.csv")
    with pytest.raises(SchemaDriftError, match="if 'datetime' holds the times, --timestamp-column datetime"):  # SKAB
        FileLayout.resolve(["datetime", "Accelerometer1RMS", "Current"], InputMapping(format="wide"), "0.csv")


def test_a_notes_advice_to_leave_a_channel_out_names_the_flag_that_does(tmp_path):
    from seqwatch.models.detector import constant_channel_note, rising_channel_note

    assert constant_channel_note(["anomaly"]).endswith("or leave it out (--ignore anomaly)")
    assert rising_channel_note({"a": (0, 1), "b": (1, 2)}).endswith("or leave them out (--ignore a --ignore b)")


def test_documentation_beside_the_data_is_not_input(tmp_path, monkeypatch):
    """NAB's folder holds LICENSE.txt: a run on the folder died on it ('lacks the timestamp column')."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nab" / "data").mkdir(parents=True)
    for name in ("LICENSE.txt", "README.txt", "readme.TXT"):
        (tmp_path / "nab" / name).write_text("Copyright\n")
    for name in ("nyc_taxi.csv", "license_plate_cam.csv", "notice_board.txt", "readme.csv"):  # data, named so
        (tmp_path / "nab" / "data" / name).write_text("timestamp,value\n")
    assert expand_inputs(["nab"]) == ["nab/data/license_plate_cam.csv", "nab/data/notice_board.txt",
                                      "nab/data/nyc_taxi.csv", "nab/data/readme.csv"]


def test_files_of_one_name_in_other_folders_over_the_same_time_are_refused():
    """The appliance data set's anomaly_*/dishwasher_1_day6_ANOMALIES.csv had become one entity: all but one folder
    quarantined as duplicates, exit 0, no note."""
    day = 24 * HOUR
    spans = {"day6": [("anomaly_Minor/day6.csv", 0, day), ("anomaly_Major_20/day6.csv", 0, day)]}
    refusal = partition_clash(spans)
    assert refusal.startswith("anomaly_Minor/day6.csv and anomaly_Major_20/day6.csv are both entity 'day6', the "
                              "name of the file, over the same time") or refusal.startswith(
        "anomaly_Major_20/day6.csv and anomaly_Minor/day6.csv are both entity 'day6'")
    # daily exports of one pump that share an hour, and one machine's files in month folders, pass
    assert partition_clash({"pump": [("2026-01-05/pump.csv", 0, day + HOUR),
                                     ("2026-01-06/pump.csv", day, 2 * day)]}) is None
    assert partition_clash({"pump": [("jan/pump.csv", 0, day), ("feb/pump.csv", 40 * day, 41 * day)]}) is None
    # found by a review: rolling 48-hour exports written daily, a stray reading from months before, a file of one
    # reading that touches the one before
    assert partition_clash({"pump": [("01/pump.csv", 0, 2 * day), ("02/pump.csv", day, 3 * day)]}) is None
    assert partition_clash({"pump": [("2024-01/pump.csv", 0, 31 * day),
                                     ("2024-02/pump.csv", -90 * day, 60 * day)]}) is None
    assert partition_clash({"pump": [("a/pump.csv", 0, day), ("b/pump.csv", day, day)]}) is None


def test_the_ambiguity_advice_calls_a_date_with_no_month_no_date():
    assert explain_timestamp("13/14/2020", None, "UTC", None).endswith(
        "is no date: neither 13 nor 14 can be a month")


def test_sparks_null_partition_is_a_missing_entity(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "entity_id=__HIVE_DEFAULT_PARTITION__"
    folder.mkdir()
    pq.write_table(pa.table({"channel": ["flow"], "timestamp": ["2026-01-05T00:00:00Z"], "value": [1.0]}),
                   folder / "part-0.parquet")
    (batch, bad, count), = FileReader(InputMapping(), "r").read(str(folder / "part-0.parquet"))
    assert len(batch) == 0 and count == 1 and [q.reason_code for q in bad] == ["missing_entity"]


def test_a_library_caller_may_still_leave_the_run_id_to_be_derived():
    from seqwatch.pipelines.config import RunConfig

    assert RunConfig(inputs=("a.csv",), output="o", model_dir="m", run_id=None).run_id == ""


def test_a_threshold_extrapolated_far_beyond_few_calibration_windows_gets_a_note():
    """NAB's machine temperature trained on its first 2,000 rows: 60 calibration windows, threshold 8.25 against a
    highest calibration score near 4, and no alert on its labelled failures, without a word."""
    from seqwatch.models.config import ScoringConfig
    from seqwatch.models.detector import extrapolated_threshold_note

    pot = ScoringConfig(threshold_method="pot", pot_risk=1e-3)
    note = extrapolated_threshold_note(8.25, 60, 4.0, pot)
    assert note.startswith("the threshold 8.25 rests on 60 calibration windows, fewer than the 1000 a risk of 0.001 "
                           "needs to be measured: the tail fit extrapolates it to 2.1 times the highest calibration "
                           "score (4)")
    assert extrapolated_threshold_note(5.0, 60, 4.0, pot) is None  # near the scores it was fitted on
    assert extrapolated_threshold_note(8.25, 5000, 4.0, pot) is None  # enough windows: measured
    assert extrapolated_threshold_note(8.25, 60, 4.0, ScoringConfig(threshold_method="quantile")) is None
