"""The pandas engine for common expectations gives exactly GX's answer, row by row, on random readings."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqwatch.schemas.validation import FAMILIES, SuiteValidator, load_suite_dict

HORIZON, END = 946_684_800_000_000, 4_102_444_800_000_000
CHANNELS = ["temperature", "Temp_2", "pressure", "vibration", "flow", "active_power", "energy_kwh", "kw", "voltage",
            "current", "heart_rate", "ecg_mlii", "spo2", "body_temperature", "resp_rate", "other",
            # names the bundled patterns once caught by mistake, and intended ones in other spellings
            "compressor_speed", "accel_x", "outdoor_thermometer", "room_temperature", "response_time_ms",
            "Inlet_PRESSURE", "meter_kwh", "temperature_c", "connection_attempts", "overflow_count", "power_factor",
            "heart_rate_variability", "leader_id", "oxygen_flow", "maxHR", "busVoltage"]
EDGES = [-1e9, -60.0, -10.0, -1.0, 0.0, 10.0, 20.0, 25.0, 45.0, 50.0, 80.0, 100.0, 300.0, 1000.0, 1500.0, 1e4, 1e6,
         1e7, 1e9, 1e12]
EXTRA = [  # a user's suite: the other expectation types and arguments the pandas engine covers
    {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "channel", "value_set": CHANNELS[:8]}},
    {"type": "expect_column_values_to_not_be_in_set", "kwargs": {"column": "entity_id", "value_set": ["bad"]}},
    {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "entity_id", "regex": "^pump-\\d+$"}},
    {"type": "expect_column_values_to_be_between",
     "kwargs": {"column": "value", "min_value": 0, "max_value": 100, "strict_min": True, "strict_max": True,
                "row_condition": "value > -5", "condition_parser": "pandas"}},
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "value", "min_value": 10, "mostly": 0.5}},
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "timestamp", "max_value": END - 1}},
]


@pytest.fixture(scope="module")
def engines():
    expectations = [e for family in FAMILIES for e in load_suite_dict(family, check=False)["expectations"]] + EXTRA
    suite = {"name": "everything", "expectations": expectations}
    fast, gx = SuiteValidator(suite), SuiteValidator(suite, engine="gx")
    assert fast.gx_positions == [] and len(gx.gx_positions) == len(expectations)
    return fast, gx


values = st.one_of(st.sampled_from(EDGES), st.floats(-2e9, 2e9, allow_nan=False), st.just(float("nan")),
                   st.sampled_from(EDGES).map(lambda v: np.nextafter(v, np.inf)))
stamps = st.one_of(st.sampled_from([HORIZON - 1, HORIZON, END - 1, END, END + 1]), st.integers(0, 5 * END))
rows = st.tuples(st.sampled_from(["pump-1", "pump-22", "bad", "Pump-3", None]), st.sampled_from(CHANNELS), stamps,
                 values)


# GX takes about 1 s per call on this 37-expectation suite: few examples of many rows. Set
# SEQWATCH_PROPERTY_EXAMPLES=150 to explore fresh random examples.
@settings(max_examples=int(os.environ.get("SEQWATCH_PROPERTY_EXAMPLES", 12)), deadline=None,
          derandomize="SEQWATCH_PROPERTY_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(rows, min_size=1, max_size=300))
def test_pandas_engine_agrees_with_gx_row_by_row(engines, data):
    fast, gx = engines
    frame = pd.DataFrame(data, columns=["entity_id", "channel", "timestamp", "value"])
    frame["entity_id"] = frame["entity_id"].astype(object)
    frame["timestamp"] = frame["timestamp"].astype(np.int64)
    assert fast.failures(frame).tolist() == gx.failures(frame).tolist()


def test_unsupported_expectations_still_run_through_gx():
    suite = {"name": "mixed", "expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "value", "max_value": 10}},
        {"type": "expect_column_values_to_not_match_regex", "kwargs": {"column": "channel", "regex": "^p"}},
        {"type": "expect_column_value_lengths_to_be_between", "kwargs": {"column": "channel", "max_value": 5}},
    ]}
    validator = SuiteValidator(suite)
    assert validator.gx_positions == [1, 2]
    frame = pd.DataFrame({"entity_id": ["e"] * 4, "channel": ["flow", "flow", "pressure", "flow"],
                          "timestamp": np.array([1, 2, 2, 3], dtype=np.int64), "value": [1.0, 20.0, 1.0, 1.0]})
    assert validator.failures(frame).tolist() == [-1, 0, 1, -1]


def test_row_conditions_compare_the_ids_as_the_plain_strings_they_were_written_for(tmp_path):
    """Bug hunt of user suites: the validator makes the ids categorical (a condition on them runs once per
    category), and an unordered categorical refused ``channel > "m"``, a condition plain pandas answers; so did the
    GX engine and the path for conditions on other columns too."""
    from seqwatch.schemas.validation import channel_value_bounds

    rule = {"type": "expect_column_values_to_be_between",
            "kwargs": {"column": "value", "max_value": 100, "row_condition": 'channel > "m"',
                       "condition_parser": "pandas"}}
    mixed = dict(rule, kwargs=dict(rule["kwargs"], row_condition='channel > "m" and value > -1'))
    path = tmp_path / "ordered.json"
    import json
    path.write_text(json.dumps({"name": "ordered", "expectations": [rule, mixed]}))
    suite = load_suite_dict(str(path))
    frame = pd.DataFrame({"entity_id": ["e"] * 4, "channel": ["flow", "pressure", "flow", "pressure"],
                          "timestamp": np.array([1, 2, 3, 4], dtype=np.int64), "value": [500.0, 500.0, 1.0, 1.0]})
    expected = [-1, 0, -1, -1]  # only pressure ("pressure" > "m") is held to 100
    assert frame.query('channel > "m"')["channel"].unique().tolist() == ["pressure"]
    assert SuiteValidator(suite).failures(frame).tolist() == expected
    assert SuiteValidator(suite, engine="gx").failures(frame).tolist() == expected
    only_mixed = {"name": "mixed", "expectations": [mixed]}
    assert SuiteValidator(only_mixed).failures(frame).tolist() == [-1, 0, -1, -1]
    assert channel_value_bounds(suite, ["flow", "pressure"]) == {"pressure": (None, 100.0)}


def test_a_suite_file_saved_with_a_byte_order_mark_is_read(tmp_path):
    """Bug hunt of user suites: mapping files were read past a BOM (Notepad saves one), suite files refused."""
    import json
    path = tmp_path / "notepad.json"
    path.write_text(json.dumps({"name": "notepad", "expectations": []}), encoding="utf-8-sig")
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert load_suite_dict(str(path))["expectations"] == []


def test_a_timestamp_bound_written_as_a_date_is_refused_saying_what_to_write(tmp_path):
    """Bug hunt of user suites: the refusal had quoted Python ('<' not supported between instances of 'float' and
    'datetime.date')."""
    import json

    from seqwatch.schemas.validation import SuiteError
    path = tmp_path / "dated.json"
    path.write_text(json.dumps({"name": "dated", "expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "timestamp", "min_value": "2026-01-01"}}]}))
    with pytest.raises(SuiteError, match=r"bounds the timestamp by the text '2026-01-01', but a reading's timestamp "
                                         r"is an integer of microseconds since 1970-01-01 UTC: write min_value as "
                                         r"such a number \(1767225600000000 for 2026-01-01\)$"):
        load_suite_dict(str(path))
    path.write_text(path.read_text().replace("2026-01-01", "1970-01-01"))
    with pytest.raises(SuiteError, match=r"\(0 for 1970-01-01\)$"):  # the review: 0 was left out as no number
        load_suite_dict(str(path))


def test_an_expectation_of_severity_warning_is_refused_not_enforced_as_critical(tmp_path):
    """Bug hunt of user suites: GX 1.x marks an expectation "severity": "warning" (its failures do not stop a
    checkpoint); seqwatch had quarantined what failed it without a word."""
    import json

    from seqwatch.schemas.validation import SuiteError
    rule = {"type": "expect_column_values_to_be_between", "kwargs": {"column": "value", "max_value": 10}}
    path = tmp_path / "levels.json"
    path.write_text(json.dumps({"name": "levels", "expectations": [dict(rule, severity="critical"),
                                                                   dict(rule, severity="warning")]}))
    with pytest.raises(SuiteError, match=r"has severity 'warning', and seqwatch quarantines every reading that fails "
                                         r"an expectation .*: make it 'critical' to quarantine what fails it, or leave "
                                         r"it out of the suite$"):
        load_suite_dict(str(path))
    path.write_text(json.dumps({"name": "levels", "expectations": [dict(rule, severity="critical")]}))
    assert SuiteValidator(load_suite_dict(str(path))).failures(pd.DataFrame(
        {"entity_id": ["e"], "channel": ["c"], "timestamp": [1], "value": [11.0]})).tolist() == [0]
