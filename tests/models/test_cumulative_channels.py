"""Cumulative channels (a kWh meter, a counter): the network sees a window of them as its increase per step, so
a meter is judged by its rate wherever its count has got to, and its forecasts are meter readings again."""
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from seqwatch.models.artifact import load_artifact, save_artifact
from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
from seqwatch.models.detector import Seq2SeqDetector, TrainingDataWarning
from seqwatch.models.windowing import levels_from_increments, step_increments

METER_START_WH = 1.2e8  # a household meter that has counted for years: float32 holds it to the nearest 8 Wh
FAULT = (3800, 3860)  # steps of the test part where m1 draws 2.5x its power
T0 = pd.Timestamp("2026-01-05", tz="UTC")  # step 0
RESET = 4200  # the step of the test part at which m2's meter is replaced: it counts on from 5 Wh


def meter_readings(steps: int, start: int = 0, fault: tuple | None = None, seed: int = 0,
                   reset: int | None = None) -> pd.DataFrame:
    """Two households at one reading a minute: ``energy_wh``, a meter counting up by the power drawn (a 2-hour
    cycle around 300 W, about 5 Wh a minute), and a ``temperature`` on the same cycle. Step ``start`` continues
    a history of ``start`` steps, the meter about ``5 * start`` Wh further on. ``fault``: steps ``[a, b)`` in
    which m1 draws 2.5x its power; ``reset``: the step from which m2's meter counts on from 5 Wh."""
    parts = []
    for k, entity in enumerate(("m1", "m2")):
        rng = np.random.default_rng(seed + k)
        t = np.arange(start, start + steps)
        power = 300 + 200 * np.sin(2 * np.pi * t / 120) + rng.normal(0, 10, steps)
        if fault and entity == "m1":
            power[(t >= fault[0]) & (t < fault[1])] *= 2.5
        meter = METER_START_WH + 5.0 * start + np.cumsum(power / 60)
        if reset is not None and entity == "m2":
            replaced = t >= reset
            meter[replaced] -= meter[replaced][0] - 5.0
        temperature = 40 + 5 * np.sin(2 * np.pi * t / 120 + 1) + rng.normal(0, 0.3, steps)
        stamps = T0 + pd.to_timedelta(t, unit="min")
        for channel, values in (("energy_wh", meter), ("temperature", temperature)):
            parts.append(pd.DataFrame({"entity_id": entity, "channel": channel, "timestamp": stamps, "value": values}))
    return pd.concat(parts, ignore_index=True)


def _config(cumulative: tuple, horizon: int = 0) -> DetectorConfig:
    return DetectorConfig(ArchitectureConfig(cell="gru", units=8, forecast_horizon=horizon),
                          WindowConfig(length=16, stride=4, max_gap=2, cumulative_channels=cumulative),
                          TrainingConfig(epochs=8, batch_size=64, training_stride=2, patience=2))


def _fit(config: DetectorConfig, readings: pd.DataFrame) -> tuple[Seq2SeqDetector, list]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TrainingDataWarning)
        detector = Seq2SeqDetector(config).fit(readings, progress=False)
    return detector, [str(w.message) for w in caught if issubclass(w.category, TrainingDataWarning)]


@pytest.fixture(scope="module")
def meters():
    """A model of the meter's rate (with a 4-step forecast), a model of its level, and the notes of each."""
    history = meter_readings(3000)
    rate, rate_notes = _fit(_config(("energy_wh",), horizon=4), history)
    level, level_notes = _fit(_config(()), history)
    return {"rate": rate, "rate_notes": rate_notes, "level": level, "level_notes": level_notes}


def test_step_increments_and_back_by_hand():
    windows = np.array([[[10.0, 1.0], [12.0, 2.0], [15.0, 3.0]]])
    assert step_increments(windows, [0]).tolist() == [[[0.0, 1.0], [2.0, 2.0], [3.0, 3.0]]]
    assert step_increments(windows, []).tolist() == windows.tolist()
    on_a_grid = step_increments(windows[0], [0], first=np.nan)  # [T, C], as the scaler is fitted
    assert np.isnan(on_a_grid[0, 0]) and on_a_grid[1:].tolist() == [[2.0, 2.0], [3.0, 3.0]]
    # A forecast of +2 and +3 Wh after a window ending at 15 Wh reads 17 and 20; the other channel is as forecast.
    forecast = np.array([[[2.0, 5.0], [3.0, 6.0]]])
    assert levels_from_increments(windows[:, -1], forecast, [0]).tolist() == [[[17.0, 5.0], [20.0, 6.0]]]
    # A fall (a reset) counts as the increase before it, or after it at a window's start; a NaN stays NaN.
    falls = np.array([[10.0, 1.0], [12.0, 1.0], [3.0, 1.0], [5.0, 1.0], [1.0, 1.0], [4.0, 1.0]])
    assert step_increments(falls, [0])[:, 0].tolist() == [0.0, 2.0, 2.0, 2.0, 2.0, 3.0]
    assert step_increments(falls[1:], [0])[:, 0].tolist() == [0.0, 2.0, 2.0, 2.0, 3.0]
    assert step_increments(falls[[0, 2, 4]], [0])[:, 0].tolist() == [0.0, 0.0, 0.0]  # nothing but falls
    gap = step_increments(np.array([[10.0], [np.nan], [1.0], [4.0]]), [0])[:, 0]
    assert np.isnan(gap[1:3]).all() and gap[[0, 3]].tolist() == [0.0, 3.0]
    # Round trip: the increments of a window's horizon part, summed from its last input step, are its readings.
    series = np.cumsum(np.random.default_rng(1).uniform(0, 3, size=(5, 10, 2)), axis=1) + 1e8
    back = levels_from_increments(series[:, 5], step_increments(series, [0, 1])[:, 6:], [0, 1])
    np.testing.assert_allclose(back, series[:, 6:], rtol=0, atol=1e-6)


def test_cumulative_channels_round_trip_through_json_and_are_checked():
    config = DetectorConfig(window=WindowConfig(cumulative_channels=["energy_wh", "gas_m3"]))
    assert config.window.cumulative_channels == ("energy_wh", "gas_m3")
    assert DetectorConfig.from_json(config.to_json()) == config
    # Without cumulative channels the config is written as before the setting existed, so older versions of
    # seqwatch read such artifacts, and a config from before it reads as having none.
    older = json.loads(DetectorConfig().to_json())
    assert older["window"] == {"length": 64, "stride": 16, "max_gap": 3}
    assert DetectorConfig.from_dict(older) == DetectorConfig() and DetectorConfig().window.cumulative_channels == ()
    with pytest.raises(ValueError, match=r"^cumulative_channels names a channel twice: \['a', 'a'\]$"):
        WindowConfig(cumulative_channels=("a", "a"))
    with pytest.raises(ValueError, match=r"^cumulative_channels must be a sequence of channel names, got 'kwh'$"):
        WindowConfig(cumulative_channels="kwh")


def test_a_meter_beyond_its_training_readings_is_judged_by_its_rate(meters):
    """The day after training the meter reads more than it ever did: modelled as a level, most windows alert;
    as a rate, none does, and the 60 minutes of 2.5x power do."""
    later = meter_readings(1500, start=3000, fault=FAULT, seed=5)
    judged = {}
    for name in ("rate", "level"):
        scores = meters[name].score_frame(later)
        step = lambda column: (scores[column] - T0).dt.total_seconds() // 60  # noqa: E731
        in_fault = (scores["entity_id"] == "m1") & (step("window_end") >= FAULT[0]) & (step("window_start") < FAULT[1])
        judged[name] = (scores["is_anomaly"][in_fault].mean(), scores["is_anomaly"][~in_fault].mean())
    assert judged["rate"][0] >= 0.7 and judged["rate"][1] <= 0.01, judged
    assert judged["level"][1] >= 0.5, judged  # what --cumulative is for
    assert meters["rate"].metrics["rising_channels"] == [] and meters["rate_notes"] == []
    assert meters["level"].metrics["rising_channels"] == ["energy_wh"]
    assert "if it is a meter, model its rate (--cumulative energy_wh: WindowConfig.cumulative_channels)" in \
        meters["level_notes"][0]


def test_a_meters_forecast_is_meter_readings_with_intervals(meters):
    later = meter_readings(600, start=3000, seed=5)
    detector = meters["rate"]
    wide = later.pivot_table(index=["entity_id", "timestamp"], columns="channel", values="value")
    series = wide.loc["m1"][list(detector.channels)].to_numpy()
    ends = np.arange(15, len(series) - 4, 4)
    windows = np.stack([series[e - 15:e + 1] for e in ends])
    truth = np.stack([series[e + 1:e + 5] for e in ends])
    result = detector.score_windows(windows)
    meter = detector.channels.index("energy_wh")
    error = np.abs(result.forecast[..., meter] - truth[..., meter])
    assert np.median(error) < 2  # Wh, against readings of 1.2e8 and about 5 Wh a minute
    covered = (result.lower <= truth) & (truth <= result.upper)
    assert covered[..., meter].mean() >= 0.8  # nominal 0.9, fitted on the meter's readings, not its increments
    # Found by the bug hunt of forecasts: the interval was yhat +- its half-width, and every lower bound of an idle
    # household's meter lay below its last reading, as if it could run back. Neither bound nor yhat is below it.
    last = windows[:, -1, meter][:, None]
    for array in (result.forecast, result.lower, result.upper):
        assert (array[..., meter] >= last).all()
    # The bug hunt of forecasts, again: a forecast step's increase below 0 had made the meter run back from one
    # step to the next (53% of an household's windows, by up to 3.3 Wh); each step is now at least the one before
    # (the running maximum, which keeps the network's net forecast where it rises past an earlier step)
    assert (np.diff(result.forecast[..., meter], axis=1) >= 0).all()
    falling = np.zeros((1, 4, len(detector.channels)))
    falling[0, :, meter] = [2.0, -1.0, -1.0, 3.0]  # increases as the network might forecast them
    levels = detector._forecast_readings(falling, np.array([[100.0] * len(detector.channels)]))
    assert levels[0, :, meter].tolist() == [102.0, 102.0, 102.0, 103.0]
    import copy

    from seqwatch.models.intervals import ConformalIntervals

    wide = copy.copy(detector)  # intervals as wide as an idle household's, whose meter often stands still
    wide.intervals = ConformalIntervals(0.9, tuple(tuple(w * 100 for w in row) for row in detector.intervals.half_width))
    widened = wide.score_windows(windows)
    assert (widened.lower[..., meter] >= last).all() and (widened.lower[..., meter] == last).any()
    assert (widened.lower[..., 1 - meter] < result.lower[..., 1 - meter]).all()  # the temperature's is as it was


def test_a_meter_needs_float64_windows(meters):
    """At 1.2e8 Wh a float32 reading is held to the nearest 8 Wh, more than a minute's 5 Wh: the windows of a
    model with cumulative channels are cut as float64 (``window_dtype``), in ``score_frame`` and in the pipeline."""
    detector = meters["rate"]
    assert detector.window_dtype is np.float64
    # Undeclared, the meter's level (1.2e8) is far from zero next to its spread: float64 too, by that rule.
    assert meters["level"].window_dtype is np.float64
    later = meter_readings(600, start=3000, seed=5)
    wide = later.pivot_table(index=["entity_id", "timestamp"], columns="channel", values="value")
    series = wide.loc["m1"][list(detector.channels)].to_numpy()
    windows = np.stack([series[e - 15:e + 1] for e in range(15, len(series), 4)])
    assert detector.score_windows(windows).is_anomaly.mean() == 0.0
    assert detector.score_windows(windows.astype(np.float32)).is_anomaly.mean() > 0.5


def test_a_cumulative_channel_the_data_lack_is_one_sentence():
    config = _config(("energy_kwh", "gas"))
    with pytest.raises(ValueError, match=r"^the cumulative channels 'energy_kwh', 'gas' are not among the model's "
                                         r"channels \['energy_wh', 'temperature'\]$"):
        Seq2SeqDetector(config).fit(meter_readings(400), progress=False)


def test_the_artifact_keeps_the_cumulative_channels(meters, tmp_path):
    detector = meters["rate"]
    loaded = load_artifact(save_artifact(detector, tmp_path / "model"))
    assert loaded.config.window.cumulative_channels == ("energy_wh",)
    later = meter_readings(300, start=3000, seed=5)
    pd.testing.assert_frame_equal(loaded.score_frame(later), detector.score_frame(later))


def test_a_replaced_meter_is_no_anomaly(meters):
    """m2's meter is replaced: it falls from 1.2e8 Wh to 5 Wh and counts on. The fall is no measure of the rate,
    so it counts as the minute before it, and no window of m2 alerts (with the fall as an increase, every window
    that holds it would)."""
    later = meter_readings(1500, start=3000, seed=5, reset=RESET)
    scores = meters["rate"].score_frame(later)
    m2 = scores[scores["entity_id"] == "m2"]
    steps = ((m2["window_start"] - T0).dt.total_seconds() // 60, (m2["window_end"] - T0).dt.total_seconds() // 60)
    holding_the_fall = (steps[0] < RESET) & (steps[1] >= RESET)
    assert holding_the_fall.sum() >= 3 and not m2["is_anomaly"].any()


def test_fine_tuning_a_meter_model_keeps_judging_the_rate(meters, tmp_path):
    """A fine-tuning on the next days (the meter higher again) keeps the scaler of increments and the cumulative
    channel; the model still passes later normal days and flags the hour of 2.5x power."""
    detector = load_artifact(save_artifact(meters["rate"], tmp_path / "model"))
    scaler = detector.scaler
    detector.fine_tune(meter_readings(1500, start=3000, seed=9), progress=False)
    assert detector.scaler == scaler and detector.config.window.cumulative_channels == ("energy_wh",)
    scores = detector.score_frame(meter_readings(1500, start=4500, fault=(5300, 5360), seed=5))
    step = lambda column: (scores[column] - T0).dt.total_seconds() // 60  # noqa: E731
    in_fault = (scores["entity_id"] == "m1") & (step("window_end") >= 5300) & (step("window_start") < 5360)
    assert scores["is_anomaly"][in_fault].mean() >= 0.7 and scores["is_anomaly"][~in_fault].mean() <= 0.01


def test_a_cumulative_channel_that_falls_in_training_is_noted():
    """Found by a bug hunt: ``--cumulative`` took a channel that often fell (no meter at all) without a word; the
    model counts each fall as the increase before it, so such a channel could never alert by going down. A meter
    replaced once in training is what the setting is for: no note."""
    from seqwatch.models.detector import falling_channels

    rows = [np.array([[1.0, 5.0], [3.0, 4.0], [0.5, 6.0], [np.nan, 1.0], [2.0, 0.0]]), np.array([[7.0, 1.0]])]
    # by hand: channel 0 steps +2, -2.5, +1.5 (the NaN skipped); channel 1 steps -1, +2, -5, -1 (not declared)
    assert falling_channels(rows, ("m", "t"), ("m",)) == {"m": (1, 3, 2.5)}
    assert falling_channels(rows, ("m", "t"), ("m", "t")) == {"m": (1, 3, 2.5), "t": (3, 4, 5.0)}
    assert falling_channels([rows[0][:2]], ("m", "t"), ("m",)) == {}
    training = TrainingConfig(epochs=1, batch_size=64, training_stride=4, patience=1)
    noted = {}
    for declared in ("energy_wh", "temperature"):
        config = DetectorConfig(ArchitectureConfig(cell="gru", units=4), WindowConfig(
            length=16, stride=4, max_gap=2, cumulative_channels=(declared,)), training)
        detector, notes = _fit(config, meter_readings(1500, reset=600))
        noted[declared] = [note for note in notes if note.startswith("the cumulative channel")]
        assert noted[declared] == [n for n in detector.metrics["training_notes"] if n.startswith("the cumulative")]
    assert noted["energy_wh"] == []  # m2's meter replaced at step 600: one fall in 2,000 steps
    assert len(noted["temperature"]) == 1 and noted["temperature"][0].startswith("the cumulative channel "
                                                                                 "'temperature' (")
    assert "so it will not alert on it going down; if it is not a meter, train without --cumulative temperature" \
        in noted["temperature"][0]
