"""Great-expectations suites: the bundled families, users' own suites, row-level results in the suite's order."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from seqwatch.schemas.validation import FAMILIES, StatefulRules, SuiteError, SuiteValidator, load_suite_dict

T = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z


def readings(*rows) -> pd.DataFrame:
    """``(channel, value)`` or ``(channel, value, timestamp)`` rows of entity ``e1``."""
    rows = [r if len(r) == 3 else (*r, T) for r in rows]
    return pd.DataFrame({"entity_id": ["e1"] * len(rows), "channel": [r[0] for r in rows],
                         "timestamp": np.array([r[2] for r in rows], dtype=np.int64),
                         "value": np.array([r[1] for r in rows], dtype=np.float64)})


@pytest.fixture(scope="module")
def validators():
    return {family: SuiteValidator(load_suite_dict(family)) for family in FAMILIES}


def test_the_three_bundled_families_load():
    assert FAMILIES == ("energy", "health", "sensor")
    for family in FAMILIES:
        suite = load_suite_dict(family)
        assert suite["name"] == family and len(suite["expectations"]) >= 8
        StatefulRules.from_suite(suite)


# family -> [(channel, value, first failing expectation's description, or None when the reading is valid)]
CASES = {
    "sensor": [
        ("temperature", 65.0, None), ("temperature", 2000.0, "max_value=1500.0, min_value=-60.0"),
        ("pressure", -5.0, "max_value=1000.0, min_value=-1.0"), ("vibration", -0.1, "max_value=1000.0, min_value=0.0"),
        ("flow", 120.0, None), ("flow", -1.0, "max_value=1000000.0, min_value=0.0"),
        ("other", 1e300, "max_value=1000000000.0, min_value=-1000000000.0"),
    ],
    "energy": [
        ("active_power", 1500.0, None), ("active_power", -5.0, "where channel.str.contains(\"power|watt|kw(?!h)\""),
        ("energy_kwh", -1.0, "where channel.str.contains(\"energy|kwh|meter\""), ("voltage", 5000.0, "max_value=1000.0"),
        ("current", 20000.0, "max_value=10000.0"), ("voltage", 230.0, None),
        ("energy_kwh", 2e7, None),  # a big meter: not mistaken for a power channel by the "kw" in "kwh"
    ],
    "health": [
        ("heart_rate", 72.0, None), ("heart_rate", 400.0, "max_value=300.0, min_value=20.0"),
        ("ecg_mlii", 50.0, "max_value=10.0, min_value=-10.0"), ("spo2", 120.0, "max_value=100.0, min_value=50.0"),
        ("body_temperature", 37.0, None), ("body_temperature", 20.0, "max_value=45.0, min_value=25.0"),
        ("resp_rate", 90.0, "max_value=80.0, min_value=0.0"),
    ],
}


@pytest.mark.parametrize("family", sorted(CASES))
def test_readings_outside_physical_bounds_fail_the_named_expectation(validators, family):
    validator = validators[family]
    cases = CASES[family]
    failed = validator.failures(readings(*[(c, v) for c, v, _ in cases]))
    for (channel, value, phrase), position in zip(cases, failed):
        if phrase is None:
            assert position == -1, (channel, value)
        else:
            assert position >= 0, (channel, value)
            description = validator.descriptions[position]
            assert description.startswith("expect_column_values_to_be_between(value"), description
            assert phrase in description, (channel, value, description)


def test_only_failing_rows_are_flagged_not_the_batch(validators):
    frame = readings(*[("temperature", 60.0 + i) for i in range(1000)])
    frame.loc[[3, 500, 999], "value"] = [2000.0, -100.0, 1e12]
    failed = validators["sensor"].failures(frame)
    assert np.flatnonzero(failed >= 0).tolist() == [3, 500, 999]


def test_failures_follow_the_suite_order_not_gx_result_order(validators):
    """GX returns results in its own order (e.g. the timestamp range before ``value`` not null); each result is
    mapped back to its expectation, so a row failing only the timestamp range is blamed on that expectation."""
    validator = validators["sensor"]
    failed = validator.failures(readings(("flow", 1.0, 0), ("temperature", 5000.0, 0), ("flow", 1.0)))
    assert validator.descriptions[failed[0]] == ("expect_column_values_to_be_between(timestamp, "
                                                 "max_value=4102444800000000.0, min_value=946684800000000.0)")
    assert failed[1] == failed[0]  # fails the timestamp range (position 4) before the temperature bounds (6)
    assert failed[2] == -1
    assert failed[0] == 4


def test_a_reversed_suite_blames_the_first_expectation_in_its_own_order(tmp_path):
    suite = load_suite_dict("sensor")
    suite["expectations"] = list(reversed(suite["expectations"]))
    validator = SuiteValidator(suite)
    failed = validator.failures(readings(("temperature", 5000.0, 0)))
    assert "temp|thermo" in validator.descriptions[failed[0]]


def test_a_users_own_suite_file(tmp_path):
    path = tmp_path / "plant7.json"
    path.write_text(json.dumps({"name": "plant7", "expectations": [
        {"type": "expect_column_values_to_be_between",
         "kwargs": {"column": "value", "min_value": 0, "max_value": 10, "row_condition": 'channel == "flow"',
                    "condition_parser": "pandas"}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "channel", "value_set": ["flow", "level"]}},
    ], "meta": {"seqwatch_stateful": {"stuck_min_readings": 5}}}))
    suite = load_suite_dict(str(path))
    validator = SuiteValidator(suite)
    failed = validator.failures(readings(("flow", 5.0), ("flow", 11.0), ("level", 11.0), ("noise", 1.0)))
    assert failed.tolist() == [-1, 0, -1, 1]
    assert validator.descriptions[1] == "expect_column_values_to_be_in_set(channel, value_set=['flow', 'level'])"
    assert StatefulRules.from_suite(suite) == StatefulRules(stuck_min_readings=5)


@pytest.mark.parametrize("content, phrase", [
    ("{not json", "is not valid JSON"),
    ('{"name": "x"}', "needs a list of 'expectations'"),
    ('{"expectations": [{"type": "expect_nonsense", "kwargs": {"column": "value"}}]}',
     "has invalid expectations ['expect_nonsense']"),
    ('{"expectations": [{"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}]}',
     "do not judge each row: ['expect_table_row_count_to_be_between']"),
    ('{"expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "nosuch"}}]}',
     'could not run: Error: The column "nosuch" in BatchData does not exist'),
    ('{"expectations": [{"type": "expect_column_values_to_be_between", "kwargs": {"column": "value", "min_value": 0, '
     '"row_condition": "chanel == 1", "condition_parser": "pandas"}}]}', "could not run: name 'chanel' is not defined"),
    ('{"expectations": [], "meta": {"seqwatch_stateful": {"stuck_min_readings": 1}}}', "stuck_min_readings must be"),
    ('{"expectations": [], "meta": {"seqwatch_stateful": {"monotonic_channels": "("}}}', "not a valid regular"),
    ('{"expectations": [], "meta": {"seqwatch_stateful": {"stuck": 3}}}', "unknown keys ['stuck']"),
])
def test_a_broken_suite_file_is_refused_with_one_sentence(tmp_path, content, phrase):
    path = tmp_path / "mine.json"
    path.write_text(content)
    with pytest.raises(SuiteError) as caught:
        load_suite_dict(str(path))
    assert phrase in str(caught.value)


def test_unknown_family_names_the_families():
    with pytest.raises(SuiteError, match=r"neither a bundled family \['energy', 'health', 'sensor'\] nor a file"):
        load_suite_dict("industrial")


def test_stateful_rules_of_the_families():
    energy = StatefulRules.from_suite(load_suite_dict("energy", check=False))
    assert energy.is_monotonic("energy_kwh") and energy.is_monotonic("Meter_Counter")
    assert not energy.is_monotonic("active_power")
    assert not energy.checks_stuck("energy_kwh")  # a meter stands still when nothing is used
    assert not energy.checks_stuck("active_power") and energy.checks_stuck("voltage")
    sensor = StatefulRules.from_suite(load_suite_dict("sensor", check=False))
    assert sensor.stuck_min_readings == 60 and sensor.checks_stuck("temperature")
    assert not sensor.checks_stuck("valve_status") and not sensor.is_monotonic("flow")
    assert StatefulRules.from_suite({"expectations": []}) == StatefulRules()
