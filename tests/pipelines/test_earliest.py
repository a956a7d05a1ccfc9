"""``--earliest``: readings older than the default horizon (2000-01-01), found by the bug hunt of time scales
(2026-12-03): hourly readings of 1995 could be neither trained on nor scored, and the reason named no setting."""
import json

import pandas as pd
import pytest

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.cli import CliError, _earliest_us, build_parser, main
from seqwatch.schemas.validation import load_suite_dict, with_earliest


def test_earliest_is_a_date_in_utc_and_opens_the_bundled_suites_timestamp_rule():
    parse = build_parser().parse_args
    assert _earliest_us(parse(["run", "--input", "x", "--model-dir", "m", "--output", "o"])) == 946_684_800_000_000
    assert _earliest_us(parse(["run", "--input", "x", "--model-dir", "m", "--output", "o", "--earliest",
                               "1965-01-01"])) == -157_766_400_000_000  # before 1970: negative µs
    assert _earliest_us(parse(["train", "--input", "x", "--model-dir", "m", "--earliest",
                               "1990-01-01T00:00:00+01:00"])) == 631_148_400_000_000
    with pytest.raises(CliError, match="^--earliest 'last year' is not a date"):
        _earliest_us(parse(["stream", "--source", "replay", "--model-dir", "m", "--output", "o", "--earliest",
                            "last year"]))
    suite = load_suite_dict("sensor")
    rule = [e for e in with_earliest(suite, 631_152_000_000_000)["expectations"]
            if e["kwargs"].get("column") == "timestamp" and e["type"] == "expect_column_values_to_be_between"]
    assert [r["kwargs"]["min_value"] for r in rule] == [631_152_000_000_000]
    assert with_earliest(suite, 946_684_800_000_000) is suite  # the default: the suite as it is
    assert [e["kwargs"].get("min_value") for e in suite["expectations"]  # the loaded suite is not changed
            if e["kwargs"].get("column") == "timestamp" and "min_value" in e["kwargs"]] == [946_684_800_000_000]


def test_readings_of_1995_are_scored_with_earliest_and_the_reason_without_it_names_it(small_model_dir, tmp_path,
                                                                                       capsys):
    readings, _ = generate_sensor_data(n_entities=1, n_steps=300, seed=3)
    readings["timestamp"] = readings["timestamp"] - pd.Timestamp("2026-01-05", tz="UTC") + pd.Timestamp(
        "1995-03-01", tz="UTC")
    path = tmp_path / "old.csv"
    readings.to_csv(path, index=False)
    base = ["run", "--input", str(path), "--model-dir", str(small_model_dir)]
    assert main(base + ["--output", str(tmp_path / "plain")]) == 3  # every reading quarantined
    reasons = pd.read_parquet(tmp_path / "plain" / "quarantine")
    assert set(reasons["reason_code"]) == {"before_horizon"}
    assert reasons["reason"].iloc[0].endswith("--earliest sets the horizon for older readings")
    assert main(base + ["--output", str(tmp_path / "older"), "--earliest", "1990-01-01"]) == 0
    manifest = json.loads((tmp_path / "older" / "manifest.json").read_text())
    assert manifest["records_in"] == manifest["records_scored"] == len(readings)
    capsys.readouterr()
