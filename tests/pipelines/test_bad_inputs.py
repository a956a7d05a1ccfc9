"""The bad-input corpus (``tests/pipelines/bad_inputs/``): every case has one defined outcome.

A case's readings are scored, quarantined with the stated stage and reason code, or the run stops with one
clear sentence. The corpus files are run in two pipeline runs (wide files, long files), and every run must
reconcile: ``records_in == records_scored + records_quarantined``. Expected counts are readings (a wide row
of 4 channels is 4 readings); the rest of a file's readings are scored.
"""
from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from seqwatch.pipelines.batch import RunError, plan_run, run_batch
from seqwatch.pipelines.config import RunConfig
from seqwatch.schemas.mapping import InputMapping

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
NOW_US = 1_796_083_200_000_000  # 2026-12-01T00:00:00Z: "the future" starts a day after this
WIDE = InputMapping(format="wide", timezone="Europe/Berlin")
LONG = InputMapping()

# file -> (readings in, {"stage.reason_code": readings quarantined}, a phrase every such reason contains)
WIDE_CASES = {
    "w01_clean.csv": (80, {}, None),
    "w02_utf8_bom.csv": (80, {}, None),
    "w03_utf16_bom.csv": (80, {}, None),
    "w04_utf16le_no_bom.csv": (80, {}, None),
    "w05_semicolon.csv": (80, {}, None),
    "w06_semicolon_decimal_comma.csv": (12, {"parse.parse_value": 12}, "set the mapping's decimal to ','"),
    "w07_tab.tsv": (80, {}, None),
    "w08_excel_sep_hint.csv": (80, {}, None),
    "w09_crlf.csv": (80, {}, None),
    "w10_cr_only.csv": (80, {}, None),
    "w11_quoted_fields.csv": (80, {"parse.parse_value": 1}, "decimal comma"),
    "w12_blank_lines.csv": (80, {}, None),
    "w13_truncated_last_line.csv": (84, {"parse.malformed_row": 4}, "the row has 3 fields, the header has 5"),
    "w14_nan_inf_empty.csv": (80, {"parse.parse_value": 4}, "column '"),
    "w15_units.csv": (80, {"parse.parse_value": 2}, "carries a unit"),
    "w16_tz_offsets.csv": (80, {}, None),
    "w17_dst_ambiguous.csv": (96, {"parse.parse_timestamp": 16}, "is ambiguous in Europe/Berlin"),
    "w18_dst_nonexistent.csv": (96, {"parse.parse_timestamp": 16}, "does not exist in Europe/Berlin"),
    "w19_epoch_seconds.csv": (80, {}, None),
    "w20_epoch_millis.csv": (80, {}, None),
    "w21_epoch_mixed_units.csv": (80, {}, None),
    "w22_duplicated_rows.csv": (88, {"window.duplicate": 8}, "came earlier"),
    "w23_out_of_order.csv": (80, {}, None),
    "w24_huge_values.csv": (80, {"parse.parse_value": 1, "validate.expectation_failed": 1}, None),
    "w25_outside_physical_bounds.csv": (80, {"validate.expectation_failed": 2}, "expect_column_values_to_be_between"),
    "w26_very_long_strings.csv": (80, {"parse.parse_value": 2}, None),
    "w27_binary_junk.csv": (88, {"parse.malformed_row": 8}, None),
    "w28_extra_column.csv": (100, {"validate.unknown_channel": 20}, "the model has no such channel"),
    "w29_bad_timestamps.csv": (100, {"parse.parse_timestamp": 20}, None),
    "w30_future_and_past.csv": (92, {"validate.future_timestamp": 4, "validate.before_horizon": 8}, None),
    "w31_repeated_header.csv": (84, {"parse.parse_timestamp": 4}, "the header line again, not a reading"),
    "w32_cp1252_unit.csv": (80, {"parse.parse_value": 1}, "carries a unit ('°C')"),
    "w33_whitespace_padding.csv": (80, {}, None),
    "w34_scientific_notation.csv": (80, {}, None),
    "w35_odd_numbers.csv": (80, {"parse.parse_value": 3, "validate.expectation_failed": 1}, None),
    "w36_parquet_naive_datetime.parquet": (80, {}, None),
    "w37_parquet_strings.parquet": (80, {"parse.parse_value": 1}, "'abc' is not a number"),
    "e01_empty.csv": (0, {}, None),
    "e02_header_only.csv": (0, {}, None),
    "e03_bom_and_blank_lines.csv": (0, {}, None),
}
LONG_CASES = {
    "l01_clean.csv": (80, {}, None),
    "l02_cp1252_entity.csv": (80, {}, None),
    "l03_mixed_encoding.csv": (80, {}, None),
    "l04_missing_entity.csv": (80, {"parse.missing_entity": 3}, "the entity id is"),
    "l05_missing_channel.csv": (80, {"parse.missing_channel": 1}, "the channel is empty"),
    "l06_unknown_channel.csv": (85, {"validate.unknown_channel": 5}, "the model has no such channel"),
    # a quoted entity id that holds a line break is one row: an entity of one reading
    "l07_quoted_newline.csv": (81, {"window.insufficient_data": 1}, "no model window covers"),
    "l08_duplicates.csv": (83, {"window.duplicate": 3}, "came earlier"),
    "l09_conflicting_duplicate.csv": (81, {"window.duplicate": 1}, "came earlier"),
    "l10_out_of_order.csv": (80, {}, None),
    "l11_channel_never_present.csv": (60, {"window.insufficient_data": 60}, "no model window covers"),
    "l12_gap_too_long.csv": (128, {"window.insufficient_data": 48}, "no model window covers"),
    "l13_padded_ids.csv": (80, {}, None),
}
# Single quarantined records, stated line by line: (file, line) -> (column, records, stage.reason_code, reason).
EXACT_RECORDS = {
    ("w13_truncated_last_line.csv", 22): ("", 4, "parse.malformed_row", "the row has 3 fields, the header has 5"),
    ("w14_nan_inf_empty.csv", 5): ("flow", 1, "parse.parse_value", "column 'flow': the value 'NaN' is missing"),
    ("w14_nan_inf_empty.csv", 9): ("pressure", 1, "parse.parse_value", "column 'pressure': the value 'inf' is not finite"),
    ("w14_nan_inf_empty.csv", 13): ("temperature", 1, "parse.parse_value",
                                    "column 'temperature': the value '-Infinity' is not finite"),
    ("w14_nan_inf_empty.csv", 17): ("vibration", 1, "parse.parse_value", "column 'vibration': the value is empty"),
    ("w24_huge_values.csv", 8): ("flow", 1, "validate.expectation_failed",
                                 "channel 'flow' value 1e+300 failed expect_column_values_to_be_between(value, "
                                 "max_value=1000000000.0, min_value=-1000000000.0)"),
    ("w24_huge_values.csv", 14): ("pressure", 1, "parse.parse_value", "column 'pressure': the value '1e400' is not finite"),
    ("w25_outside_physical_bounds.csv", 7): (
        "temperature", 1, "validate.expectation_failed", "channel 'temperature' value 2000.0 failed "
        "expect_column_values_to_be_between(value, max_value=1500.0, min_value=-60.0) for "
        "temperature channels"),
    ("w25_outside_physical_bounds.csv", 12): (
        "pressure", 1, "validate.expectation_failed", "channel 'pressure' value -5.0 failed "
        "expect_column_values_to_be_between(value, max_value=1000.0, min_value=-1.0) for "
        "pressure channels"),
    ("w26_very_long_strings.csv", 10): ("flow", 1, "parse.parse_value", "column 'flow': the value 'xxxxxxxx"),
    ("w26_very_long_strings.csv", 15): ("vibration", 1, "parse.parse_value", "is not finite"),
    ("w27_binary_junk.csv", 11): ("", 4, "parse.malformed_row", "the row holds binary data (NUL or other control bytes)"),
    ("w27_binary_junk.csv", 12): ("", 4, "parse.malformed_row", "the row has 1 fields, the header has 5"),
    ("w29_bad_timestamps.csv", 22): ("", 4, "parse.parse_timestamp", "timestamp 'not a date' has no date with a "
                                                                     "four-digit year"),
    ("w29_bad_timestamps.csv", 23): ("", 4, "parse.parse_timestamp", "timestamp '2026-13-45T00:00:00Z' could not be "
                                                                     "parsed"),
    ("w29_bad_timestamps.csv", 24): ("", 4, "parse.parse_timestamp", "timestamp '12:00:00' has no date"),
    ("w29_bad_timestamps.csv", 25): ("", 4, "parse.parse_timestamp", "timestamp '05/01/2026 00:03:20' is ambiguous "
                                                                     "(day/month order)"),
    ("w29_bad_timestamps.csv", 26): ("", 4, "parse.parse_timestamp", "the timestamp is empty"),
    ("w35_odd_numbers.csv", 4): ("flow", 1, "parse.parse_value", "has a thousands separator"),
    ("w35_odd_numbers.csv", 8): ("pressure", 1, "parse.parse_value", "'0x1A' is hexadecimal"),
    ("w35_odd_numbers.csv", 12): ("temperature", 1, "parse.parse_value", "'true' is not a number"),
    ("w35_odd_numbers.csv", 16): ("vibration", 1, "validate.expectation_failed", "channel 'vibration' value -0.5 "
                                                                                "failed"),
    ("l04_missing_entity.csv", 59): ("", 1, "parse.missing_entity", "the entity id is 304 characters long (at most "
                                                                   "256)"),
    ("l07_quoted_newline.csv", 82): ("flow", 1, "window.insufficient_data", "no model window covers"),
    ("l09_conflicting_duplicate.csv", 82): ("temperature", 1, "window.duplicate", "came earlier"),
}
# Same readings as w01_clean.csv, written differently: they must get exactly w01's scores.
SAME_AS_CLEAN = ["w02_utf8_bom", "w03_utf16_bom", "w04_utf16le_no_bom", "w05_semicolon", "w07_tab",
                 "w08_excel_sep_hint", "w09_crlf", "w10_cr_only", "w12_blank_lines", "w13_truncated_last_line",
                 "w16_tz_offsets", "w19_epoch_seconds", "w20_epoch_millis", "w21_epoch_mixed_units",
                 "w22_duplicated_rows", "w23_out_of_order", "w27_binary_junk", "w28_extra_column", "w29_bad_timestamps",
                 "w30_future_and_past", "w31_repeated_header", "w33_whitespace_padding", "w34_scientific_notation",
                 "w36_parquet_naive_datetime"]
# Runs that must stop before they start, with one sentence naming the file and what is wrong.
STOP_CASES = {
    "s01_wide_missing_channel.csv": (WIDE, "expects channels ['flow', 'pressure', 'temperature', 'vibration'], but "
                                           "s01_wide_missing_channel.csv has ['flow', 'pressure', 'temperature'] "
                                           "(missing ['vibration'])"),
    "s02_wide_duplicate_column.csv": (WIDE, "s02_wide_duplicate_column.csv has duplicate columns ['flow']"),
    "s03_long_extra_column.csv": (LONG, "s03_long_extra_column.csv has unexpected columns ['quality']; ignore them "
                                        "(--ignore, or the mapping's 'ignore' list) or set the mapping's "
                                        "'extra_columns' to 'ignore'"),
    "s04_long_renamed_column.csv": (LONG, "s04_long_renamed_column.csv lacks required columns ['timestamp'] (its "
                                          "columns are ['entity_id', 'channel', 'time', 'value']; was 'timestamp' "
                                          "renamed to 'time'? If so, a --mapping file {\"format\": \"long\", "
                                          "\"columns\": {\"timestamp\": \"time\"}} reads them)"),
    "s05_not_text.csv": (LONG, "s05_not_text.csv does not look like a CSV text file: its first line holds binary "
                               "data"),
    "s06_wide_step_1s.csv": (WIDE, "was trained on readings every 10s, but s06_wide_step_1s.csv has readings every "
                                   "1s"),
    # Another case and a unit in the column names: the refusal gives the mapping that reads them.
    "s07_wide_renamed_channels.csv": (WIDE, "(missing ['flow', 'pressure', 'vibration']); its columns look like the "
                                            "model's under other names ('Flow [l/min]' for 'flow', 'PRESSURE' for "
                                            "'pressure', 'Vibration' for 'vibration'): a --mapping file {\"channels\": "
                                            "{\"Flow [l/min]\": \"flow\", \"PRESSURE\": \"pressure\", "
                                            "\"temperature\": \"temperature\", \"Vibration\": \"vibration\"}, "
                                            "\"ignore\": [\"rssi\"]} reads them as the model's channels"),
}


def _corpus_module():
    spec = importlib.util.spec_from_file_location("seqwatch_bad_input_corpus", CORPUS / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_corpus_has_at_least_25_kinds_and_every_file_an_expected_outcome():
    on_disk = {p.name for folder in ("wide", "long", "stop", "empty") for p in (CORPUS / folder).iterdir()}
    stated = set(WIDE_CASES) | set(LONG_CASES) | set(STOP_CASES)
    assert on_disk == stated
    assert len(stated) >= 25


def test_corpus_is_reproducible():
    """``make_corpus.py`` writes exactly the committed files (Parquet compared by content)."""
    for relative, data in _corpus_module().build().items():
        path = CORPUS / relative
        if path.suffix == ".parquet":
            assert pq.read_table(io.BytesIO(data)).equals(pq.read_table(path)), relative
        else:
            assert path.read_bytes() == data, relative


@pytest.mark.parametrize("name", sorted(STOP_CASES))
def test_run_stops_with_one_clear_sentence(name, small_model_dir, tmp_path):
    mapping, message = STOP_CASES[name]
    config = RunConfig(inputs=(str(CORPUS / "stop" / name),), output=str(tmp_path / "out"),
                       model_dir=str(small_model_dir), mapping=mapping)
    with pytest.raises(RunError) as caught:
        plan_run(config, now_us=NOW_US)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_a_run_of_only_empty_files_stops_with_exit_2(small_model_dir, tmp_path, capsys):
    from seqwatch.pipelines.cli import main

    code = main(["run", "--input", str(CORPUS / "empty" / "*"), "--format", "wide", "--output", str(tmp_path / "o"),
                 "--model-dir", str(small_model_dir), "--runner=DirectRunner"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == ("seqwatch run: the input holds no records (3 file(s) are empty or have only a header)")


def _run(folder_globs, mapping, model_dir, out):
    config = RunConfig(inputs=tuple(str(CORPUS / g) for g in folder_globs), output=str(out),
                       model_dir=str(model_dir), mapping=mapping)
    manifest = run_batch(config, ["--runner=DirectRunner"], now_us=NOW_US)
    quarantine = ds.dataset(out / "quarantine", format="parquet").to_table().to_pandas()
    quarantine["file"] = quarantine["source"].map(lambda s: Path(s).name)
    scores = ds.dataset(out / "scores", format="parquet").to_table().to_pandas()
    return manifest, quarantine, scores


@pytest.fixture(scope="module")
def wide_run(small_model_dir, tmp_path_factory):
    return _run(["wide/*", "empty/*"], WIDE, small_model_dir, tmp_path_factory.mktemp("wide"))


@pytest.fixture(scope="module")
def long_run(small_model_dir, tmp_path_factory):
    return _run(["long/*"], LONG, small_model_dir, tmp_path_factory.mktemp("long"))


def _check_cases(run, cases):
    manifest, quarantine, _ = run
    assert manifest["records_in"] == sum(n for n, _, _ in cases.values())
    assert manifest["records_in"] == manifest["records_scored"] + manifest["records_quarantined"]
    assert manifest["records_quarantined"] == sum(sum(q.values()) for _, q, _ in cases.values())
    assert quarantine["records"].sum() == manifest["records_quarantined"]
    stages = {k.removeprefix("quarantined."): v for k, v in manifest["stages"].items() if k.startswith("quarantined.")}
    expected_stages: dict = {}
    for _, q, _ in cases.values():
        for key, n in q.items():
            expected_stages[key] = expected_stages.get(key, 0) + n
    assert stages == expected_stages
    for name, (_, expected, phrase) in cases.items():
        mine = quarantine[quarantine["file"] == name]
        got = (mine.assign(key=mine["stage"] + "." + mine["reason_code"]).groupby("key")["records"].sum().to_dict())
        assert got == expected, name
        if phrase:
            assert mine["reason"].str.contains(phrase, regex=False).all(), (name, mine["reason"].tolist())
        assert (mine["raw"] != "").all(), name


def test_wide_corpus_outcomes(wide_run):
    _check_cases(wide_run, WIDE_CASES)


def test_long_corpus_outcomes(long_run):
    _check_cases(long_run, LONG_CASES)


def test_single_records_are_stated_exactly(wide_run, long_run):
    quarantine = pd.concat([wide_run[1], long_run[1]], ignore_index=True).set_index(["file", "line"])
    for (name, line), (column, records, code, reason) in EXACT_RECORDS.items():
        row = quarantine.loc[(name, line)]
        assert (row["column"], row["records"], f"{row['stage']}.{row['reason_code']}") == (column, records, code), \
            (name, line)
        assert reason in row["reason"], (name, line, row["reason"])


def test_raw_text_is_kept_untouched(wide_run, long_run):
    quarantine = pd.concat([wide_run[1], long_run[1]], ignore_index=True).set_index(["file", "line"])
    assert quarantine.loc[("w27_binary_junk.csv", 11), "raw"] == "\x00\x01\x02\x03PK\x03\x04\x00\x00"
    assert quarantine.loc[("w32_cp1252_unit.csv", 6), "raw"].endswith(",56.346 °C,0.639")
    assert quarantine.loc[("w13_truncated_last_line.csv", 22), "raw"] == "2026-01-05T00:03:20Z,89.315,2."
    assert quarantine.loc[("w26_very_long_strings.csv", 10), "raw"].count("x") == 10_000
    raw = json.loads(quarantine.loc[("w37_parquet_strings.parquet", 10), "raw"])
    assert raw["pressure"] == "abc" and raw["timestamp"] == "2026-01-05T00:01:30Z"


def test_times_read_in_any_form_land_on_the_same_utc_windows(wide_run):
    _, _, scores = wide_run
    by_entity = {e: part.sort_values("window_end").reset_index(drop=True) for e, part in scores.groupby("entity_id")}
    clean = by_entity["w01_clean"]
    assert clean["window_end"].dt.strftime("%H:%M:%S").tolist() == ["00:02:30", "00:03:10"]
    for entity in SAME_AS_CLEAN:
        got = by_entity[entity]
        assert got["window_end"].tolist() == clean["window_end"].tolist(), entity
        assert got["score"].to_numpy() == pytest.approx(clean["score"].to_numpy(), rel=1e-5), entity
    # 01:56:40 local on the night summer time ends is 23:56:40 UTC (+02:00); the ambiguous 02:00 rows are refused.
    ends = by_entity["w17_dst_ambiguous"]["window_end"].dt.strftime("%Y-%m-%dT%H:%M:%S").tolist()
    assert ends == ["2026-10-24T23:59:10", "2026-10-24T23:59:50"]
    ends = by_entity["w18_dst_nonexistent"]["window_end"].dt.strftime("%Y-%m-%dT%H:%M:%S").tolist()
    assert ends == ["2026-03-29T00:59:10", "2026-03-29T00:59:50"]


def test_every_wide_file_with_scored_readings_has_scores(wide_run):
    _, _, scores = wide_run
    scored = {Path(name).stem for name, (n, q, _) in WIDE_CASES.items() if n > sum(q.values())}
    assert set(scores["entity_id"]) == scored


def test_long_entities_are_decoded_per_line(long_run):
    _, _, scores = long_run
    entities = set(scores["entity_id"])
    assert {"Kühlpumpe-Ø", "Kühl-3", "l13"} <= entities
    assert not any("Ã" in e or "\ufffd" in e for e in entities)
    assert "l11" not in entities
