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
        ("active_power", 1500.0, None), ("active_power", -5.0, "for active power channels"),
        ("energy_kwh", -1.0, "for energy meter channels"), ("voltage", 5000.0, "max_value=1000.0"),
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
    assert validator.descriptions[failed[0]].endswith("for temperature channels")


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


def _refusal(tmp_path, suite) -> str:
    path = tmp_path / "mine.json"
    path.write_text(suite if isinstance(suite, str) else json.dumps(suite))
    with pytest.raises(SuiteError) as caught:
        load_suite_dict(str(path))
    message = str(caught.value)
    assert message.startswith(f"suite file {path}: ") and "\n" not in message
    return message


@pytest.mark.parametrize("expectation, phrase", [
    ({"type": "expect_column_value_lengths_to_be_between",
      "kwargs": {"column": "channel", "min_value": {"$PARAMETER": "shortest"}}},
     "expectation 1 (expect_column_value_lengths_to_be_between on 'channel') of suite 'mine' takes min_value from "
     "the suite parameter 'shortest', and seqwatch has no suite parameters to supply"),
    ({"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "channel", "value_set": {"$PARAMETER": "c"}}},
     "expectation 1 (expect_column_values_to_be_in_set on 'channel') of suite 'mine' takes value_set from the suite "
     "parameter 'c'"),
])
def test_a_suite_parameter_is_refused_when_the_suite_loads(tmp_path, expectation, phrase):
    """A GX suite parameter (``{"$PARAMETER": ...}``) was accepted: through GX it failed every batch with a
    50-line SuiteParameterError traceback, and in seqwatch's pandas engine the dict's keys became the value set,
    quarantining every reading. seqwatch supplies no parameters, so the suite is refused in one sentence."""
    assert phrase in _refusal(tmp_path, {"name": "mine", "expectations": [expectation]})


def test_an_error_gx_raises_while_validating_is_one_sentence(monkeypatch):
    """An error GX raised while validating a batch (its SuiteParameterError, say) escaped ``failures`` as a
    traceback; GX's own errors are the suite's fault and become a ``SuiteError``."""
    import seqwatch.schemas.validation as validation

    monkeypatch.setattr(validation, "_check_suite_content", lambda suite, name=None: None, raising=False)
    validator = SuiteValidator({"name": "p", "expectations": [{"type": "expect_column_value_lengths_to_be_between",
                                                               "kwargs": {"column": "channel",
                                                                          "min_value": {"$PARAMETER": "n"}}}]})
    with pytest.raises(SuiteError, match=r"^suite 'p' could not run through great-expectations: .*\$PARAMETER n"):
        validator.failures(readings(("flow", 1.0)))


@pytest.mark.parametrize("suite, phrase", [
    ({"name": "m", "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "value"},
                                     "meta": "value is required"}]},
     "expectation 1 (expect_column_values_to_not_be_null on 'value') of suite 'm': its 'meta' must be a JSON "
     "object, got 'value is required'"),
    ({"name": "m", "expectations": [], "meta": "pumps of site A"},
     "suite 'm': its 'meta' must be a JSON object, got 'pumps of site A'"),
])
def test_a_meta_that_is_not_an_object_is_refused(tmp_path, suite, phrase):
    """A string ``meta`` on an expectation raised ``TypeError: 'str' object is not a mapping``, on the suite an
    ``AttributeError``, each with a traceback."""
    assert phrase in _refusal(tmp_path, suite)


@pytest.mark.parametrize("kind, kwargs", [
    ("expect_column_values_to_be_increasing", {"column": "timestamp"}),
    ("expect_column_values_to_be_decreasing", {"column": "value"}),
    ("expect_column_values_to_be_unique", {"column": "timestamp"}),
    ("expect_compound_columns_to_be_unique", {"column_list": ["entity_id", "channel", "timestamp"]}),
    ("expect_column_value_z_scores_to_be_less_than", {"column": "value", "threshold": 3, "double_sided": True}),
])
def test_expectations_that_compare_a_reading_with_others_are_refused(tmp_path, kind, kwargs):
    """Expectations judging a reading against the rest of its batch (order, repeats, batch statistics) were
    accepted, so what was quarantined depended on how readings were batched (a reading of one file passed alone
    and failed beside another file). They are refused, pointing at the checks seqwatch does itself."""
    message = _refusal(tmp_path, {"name": "mine", "expectations": [{"type": kind, "kwargs": kwargs}]})
    assert f"judge a reading against the other readings of its batch: ['{kind}']" in message
    assert "as duplicate" in message and "monotonic_channels" in message


def test_row_independent_map_expectations_are_still_accepted(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps({"name": "ok", "expectations": [
        {"type": "expect_select_column_values_to_be_unique_within_record",
         "kwargs": {"column_list": ["entity_id", "channel"]}},
        {"type": "expect_column_pair_values_a_to_be_greater_than_b",
         "kwargs": {"column_A": "timestamp", "column_B": "value"}}]}))
    assert [e["type"] for e in load_suite_dict(str(path))["expectations"]][0].endswith("_within_record")


def test_a_nan_bound_is_refused_and_infinite_bounds_are_no_bound(tmp_path):
    """``"min_value": NaN`` (Python's json reads it) was ignored by the pandas engine while GX failed every
    reading. It is refused; ±Infinity, on which GX and the pandas engine agree (no bound), is kept."""
    nan = ('{"name": "nan", "expectations": [{"type": "expect_column_values_to_be_between", "kwargs": '
           '{"column": "value", "min_value": NaN, "max_value": 52}}]}')
    assert ("expectation 1 (expect_column_values_to_be_between on 'value') of suite 'nan' has NaN as min_value"
            in _refusal(tmp_path, nan))
    path = tmp_path / "inf.json"
    path.write_text(nan.replace("NaN", "-Infinity"))
    suite = load_suite_dict(str(path))
    frame = readings(("flow", -1e300), ("flow", 60.0), ("flow", 5.0))
    for engine in ("auto", "gx"):
        assert SuiteValidator(suite, engine=engine).failures(frame).tolist() == [-1, 0, -1]


def test_errors_of_the_stateful_section_name_the_suite_file(tmp_path):
    """An error in ``meta.seqwatch_stateful`` did not say which file it was in."""
    assert "meta.seqwatch_stateful must be an object" in _refusal(
        tmp_path, {"name": "m", "expectations": [], "meta": {"seqwatch_stateful": "x"}})


def test_a_gx_0_suite_is_refused_saying_what_to_change(tmp_path):
    """A suite exported by GX 0.x was refused as "has an invalid expectation: ... unexpected keyword argument
    'expectation_suite_name'", which does not say that the format is the problem or how to convert it."""
    message = _refusal(tmp_path, {
        "expectation_suite_name": "old", "ge_cloud_id": None, "data_asset_type": None,
        "expectations": [{"expectation_type": "expect_column_values_to_be_between",
                          "kwargs": {"column": "value", "min_value": 0}, "meta": {}}],
        "meta": {"great_expectations_version": "0.18.8"}})
    assert "suite 'old' is in the format of great-expectations 0.x (top-level 'expectation_suite_name'" in message
    assert "rename 'expectation_suite_name' to 'name' and each expectation's 'expectation_type' to 'type'" in message


# family -> (channels each bounded rule is meant for, channels it once caught by mistake) by the rule's meta "why"
MEANT = {
    "sensor": {
        "pressures in bar": (["pressure", "pressure_bar", "inlet_pressure", "PRESSURE", "Pressure [bar]", "press",
                              "inletPressure", "InletPressureBar"],
                             ["compressor_speed", "decompression_count", "COMPRESSOR_SPEED"]),
        "vibration": (["vibration", "vibration_rms", "Vib_RMS", "accel_rms", "Accelerometer1RMS", "rms", "motorVibration"],
                      ["accel_x", "accel_z", "terms_accepted"]),
        "temperatures": (["temperature", "Temp_2", "ambient_temp", "thermocouple_1", "OilTemp", "outdoor_thermometer",
                          "oiltemp", "bearingtemp"],
                         ["connection_attempts", "contemporary_index"]),
        "flow": (["flow", "inlet_flow", "flowRate", "Volume Flow RateRMS", "airflow", "outflow", "Inflow_m3h"],
                 ["overflow_count", "workflow_runs", "cashflow"]),
    },
    "energy": {
        "energy meter": (["energy_wh", "energy_meter", "meter_kwh", "energy_kwh", "Meter_Counter", "kWh_import", "ActiveEnergy"],
                         ["outdoor_thermometer", "parameter_x"]),
        "currents": (["current", "current_a", "Amps", "amp_l1", "PhaseCurrent"], ["ramp_rate", "damper_position"]),
        "active power": (["active_power", "watts", "kw", "ActivePower", "power_w", "kW"],
                         ["energy_kwh", "power_factor", "reactive_power", "PowerFactor"]),
        "voltages": (["voltage", "Volt_L1", "busVoltage"], ["revolt_count"]),
    },
    "health": {
        "body temperature": (["body_temp", "body_temperature", "BodyTemp", "temperature", "temperature_c",
                              "skin_temp", "core_temperature", "oral_temperature", "patientTemperature"],
                             ["room_temperature", "ambient_temp", "temp_room"]),
        "respiration": (["resp_rate", "respiration", "respiratory_rate", "RESP", "resp.rate", "respRate",
                         "respiratoryRate"],
                        ["response_time_ms", "correspondence"]),
        "heart rate": (["heart_rate", "hr", "pulse", "bpm", "PulseRate", "HR", "maxHR"],
                       ["heart_rate_variability", "thr", "impulse_count"]),
        "ECG amplitude": (["ecg", "ecg_mlii", "ECG_lead_II", "MLII", "LeadII", "lead"], ["leader_id", "mislead_count"]),
        "oxygen saturation": (["spo2", "SpO2", "oxygen_saturation", "oxygen", "SaO2"],
                              ["oxygen_flow", "oxygen_fraction", "fio2"]),
    },
}


@pytest.mark.parametrize("family", sorted(MEANT))
def test_bundled_channel_rules_catch_the_channels_they_are_meant_for_only(validators, family):
    """The bundled suites' channel patterns were plain substrings: "press" bounded compressor_speed (rpm) as a
    pressure, "accel" held a signed acceleration (accel_x) to >= 0, "meter" took outdoor_thermometer for an
    energy meter, "temperature" judged room_temperature as a body temperature and "resp" response_time_ms as a
    respiration rate, quarantining their normal readings (and training left such a channel out of the model).
    Each rule now matches whole words of the name (split on ``_``, ``-``, ``.``, spaces; any case)."""
    from seqwatch.schemas.validation import _condition_mask

    suite = load_suite_dict(family, check=False)
    for topic, (meant, not_meant) in MEANT[family].items():
        rules = [e for e in suite["expectations"] if topic in e["meta"]["why"] and "row_condition" in e["kwargs"]]
        assert len(rules) == 1, topic
        condition = rules[0]["kwargs"]["row_condition"]
        frame = readings(*[(c, 0.0) for c in meant + not_meant])
        frame["channel"] = frame["channel"].astype("category")
        hit = _condition_mask(frame, condition).tolist()
        assert hit == [True] * len(meant) + [False] * len(not_meant), (topic, condition, hit)
        assert frame.query(condition)["channel"].tolist() == meant, topic  # as GX evaluates it


def test_normal_readings_of_channels_the_rules_are_not_meant_for_pass(validators):
    """The hunt's readings: each is normal for its channel and had been quarantined by a bundled suite."""
    for family, rows in {"sensor": [("compressor_speed", 2950.0), ("accel_x", -0.31)],
                         "energy": [("outdoor_thermometer", -5.0), ("ramp_rate", -3.0)],
                         "health": [("room_temperature", 21.0), ("response_time_ms", 250.0)]}.items():
        assert validators[family].failures(readings(*rows)).tolist() == [-1] * len(rows), family


def test_a_rule_names_its_channels_by_its_meta_label_else_by_its_row_condition():
    """Quarantine reasons quoted a bundled rule's row condition, a regex of some 90 characters; a rule whose meta
    has a ``seqwatch_channels`` label is named by it, others (a user's suite) by their condition as before."""
    condition = 'channel.str.contains("speed", case=False, regex=True)'
    rule = {"type": "expect_column_values_to_be_between",
            "kwargs": {"column": "value", "max_value": 1000, "row_condition": condition, "condition_parser": "pandas"}}
    suite = {"name": "speeds", "expectations": [{**rule, "meta": {"seqwatch_channels": "motor speed"}},
                                                {**rule, "meta": {"seqwatch_channels": 7}}, dict(rule)]}
    validator = SuiteValidator(suite)
    assert validator.descriptions == [
        "expect_column_values_to_be_between(value, max_value=1000.0) for motor speed channels",
        f"expect_column_values_to_be_between(value, max_value=1000.0) where {condition}",
        f"expect_column_values_to_be_between(value, max_value=1000.0) where {condition}"]
    assert validator.failures(readings(("compressor_speed", 2950.0))).tolist() == [0]
