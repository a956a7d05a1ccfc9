"""Forecasts keep to the bounds the training's suite sets for each channel (found by a bug hunt: the intervals of an
appliance's power reached below 0 W, predicting readings the energy suite quarantines)."""
import copy
import json

import numpy as np
import pandas as pd
import pytest

from seqwatch.models.artifact import load_artifact, read_metadata, save_artifact
from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
from seqwatch.models.detector import Seq2SeqDetector
from seqwatch.schemas.validation import SuiteValidator, channel_value_bounds, load_suite_dict

T0 = pd.Timestamp("2026-01-05", tz="UTC")


def _rule(low, high, condition=None, **extra):
    kwargs = {"column": "value", "min_value": low, "max_value": high, **extra}
    if condition is not None:
        kwargs = {"row_condition": condition, "condition_parser": "pandas", **kwargs}
    return {"type": "expect_column_values_to_be_between", "kwargs": kwargs}


def test_the_bounds_of_a_channel_are_the_tightest_rules_that_hold_for_all_its_readings():
    suite = {"name": "s", "expectations": [
        _rule(-100, 100),                                            # every channel
        _rule(0, None, 'channel.str.contains("power")'),             # power >= 0, no upper bound of its own
        _rule(None, 50, 'channel == "power_b"'),                     # tighter above, for one channel
        _rule(-5, 5, 'entity_id == "e1"'),                           # one entity's: bounds no channel's forecast
        _rule(-1, 1, 'channel == "temp"', mostly=0.9),              # mostly is ignored: a run judges each reading
        _rule(None, float("inf")),                                   # infinity: no bound
        _rule(-1, 1, 'channel == "temp"', condition_parser="great_expectations"),  # GX's syntax: not read here
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "timestamp", "min_value": 0}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "value"}},
    ]}
    assert channel_value_bounds(suite, ["power_a", "power_b", "temp"]) == {
        "power_a": (0.0, 100.0), "power_b": (0.0, 50.0), "temp": (-1.0, 1.0)}
    # Bug hunt of user suites: a rule with mostly (GX exports carry it) had bounded no forecast, though a run
    # quarantines every reading outside it
    readings = pd.DataFrame({"entity_id": "e2", "channel": ["temp", "temp"], "timestamp": [T0.value // 1000] * 2,
                             "value": [0.5, 2.0]})
    mostly = {"name": "m", "expectations": [_rule(-1, 1, 'channel == "temp"', mostly=0.9)]}
    assert SuiteValidator(mostly).failures(readings).tolist() == [-1, 0]
    assert channel_value_bounds(mostly, ["temp"]) == {"temp": (-1.0, 1.0)}
    assert channel_value_bounds({"name": "none", "expectations": []}, ["temp"]) == {}
    # the bundled suites, by their rules' labels: active power and voltage >= 0, a power factor only the global range
    energy = channel_value_bounds(load_suite_dict("energy"), ["active_power", "power_factor", "voltage"])
    assert energy == {"active_power": (0.0, 1e7), "power_factor": (-1e9, 1e9), "voltage": (0.0, 1000.0)}
    assert channel_value_bounds(load_suite_dict("health"), ["heart_rate"]) == {"heart_rate": (20.0, 300.0)}


def appliance_power(steps: int, start: int = 0, seed: int = 0) -> pd.DataFrame:
    """A fridge's power once a minute: 20 minutes on at about 120 W, 25 minutes off at 0-1 W."""
    rng = np.random.default_rng(seed)
    t = np.arange(start, start + steps)
    on = (t % 45) < 20
    power = np.where(on, 120 + rng.normal(0, 8, steps), rng.uniform(0, 1, steps))
    return pd.DataFrame({"entity_id": "fridge", "channel": "power", "timestamp": T0 + pd.to_timedelta(t, unit="min"),
                         "value": power})


@pytest.fixture(scope="module")
def fridge():
    config = DetectorConfig(ArchitectureConfig(cell="gru", units=8, forecast_horizon=4),
                            WindowConfig(length=16, stride=4, max_gap=2),
                            TrainingConfig(epochs=4, batch_size=64, training_stride=2, patience=2))
    return Seq2SeqDetector(config, model_id="fridge").fit(appliance_power(3000), progress=False)


def _windows_and_truth(steps: int = 900):
    series = appliance_power(steps, start=3000, seed=5)["value"].to_numpy()
    ends = np.arange(15, steps - 4, 2)
    return (np.stack([series[e - 15:e + 1, None] for e in ends]),
            np.stack([series[e + 1:e + 5, None] for e in ends]))


def test_a_power_forecast_and_its_interval_never_go_below_zero_and_cover_no_less(fridge):
    windows, truth = _windows_and_truth()
    free = fridge.score_windows(windows)
    assert (free.lower < 0).mean() > 0.2  # what the bug hunt saw: the off spells' intervals reach below 0 W
    bounded_detector = copy.copy(fridge)
    bounded_detector.value_bounds = {"power": (0.0, 1e7)}
    bounded = bounded_detector.score_windows(windows)
    for array in (bounded.forecast, bounded.lower, bounded.upper):
        assert array.min() >= 0
    assert (bounded.lower == 0).any()
    # Every reading lies within the bounds, so clipping at them keeps each point an interval covered (it only
    # widens or keeps it) and brings each forecast no further from the reading.
    covered_free = (free.lower <= truth) & (truth <= free.upper)
    covered = (bounded.lower <= truth) & (truth <= bounded.upper)
    assert (covered >= covered_free).all()
    assert (np.abs(bounded.forecast - truth) <= np.abs(free.forecast - truth) + 1e-9).all()
    np.testing.assert_array_equal(bounded.score, free.score)  # scores are not the bounds' business
    np.testing.assert_array_equal(np.maximum(free.lower, 0), bounded.lower)


def test_the_bounds_are_kept_with_the_model(fridge, tmp_path):
    plain = save_artifact(copy.copy(fridge), tmp_path / "plain")
    assert "value_bounds" not in read_metadata(plain)  # as artifacts saved before there were bounds
    assert load_artifact(plain).value_bounds == {}
    bounded_detector = copy.copy(fridge)
    bounded_detector.value_bounds = {"power": (0.0, None)}
    bounded = save_artifact(bounded_detector, tmp_path / "bounded")
    metadata = json.loads((bounded / "metadata.json").read_text())
    assert metadata["value_bounds"] == {"power": [0.0, None]}
    assert metadata["model_version"] != read_metadata(plain)["model_version"]  # other forecasts: another version
    loaded = load_artifact(bounded)
    assert loaded.value_bounds == {"power": (0.0, None)}
    windows, _ = _windows_and_truth(200)
    assert loaded.score_windows(windows).lower.min() >= 0
