"""A model's grid takes the phase of its training readings (``windowing.grid_offset``): readings half a step off
the grid counted from the epoch (10 s readings at :05, hourly ones at :30, weekly ones on Mondays) each keep a step
of their own, and the windows, alerts and forecasts are stamped at the readings' own times (bug hunt of time
scales, 2026-12-02: a quarter of the steps had held two averaged readings, and weekly readings were shown on
Thursdays)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from seqwatch.models import windowing
from seqwatch.models.artifact import load_artifact, read_metadata, save_artifact
from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
from seqwatch.models.detector import Seq2SeqDetector, shared_steps
from seqwatch.pipelines.batch import run_batch
from seqwatch.pipelines.config import RunConfig
from seqwatch.schemas.mapping import InputMapping

STEP = 10_000_000
START = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z
WEEK = 7 * 86_400_000_000


def _readings(n: int, phase_us: int, step_us: int = STEP, seed: int = 0, jitter_us: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    stamps = START + t * step_us + phase_us + rng.choice([-jitter_us, jitter_us], size=n)  # a device's clock
    return pd.concat([pd.DataFrame({
        "entity_id": "pump-1", "channel": c, "timestamp": stamps,
        "value": 5 + np.sin(t / (9 + 4 * i)) + rng.normal(0, 0.05, n)}) for i, c in enumerate(("flow", "pressure"))],
        ignore_index=True)


def test_the_grid_offset_is_the_readings_common_phase():
    stamps = START + np.arange(1000) * STEP
    assert windowing.grid_offset(stamps, STEP) == 0
    assert windowing.grid_offset(stamps + 30_000, STEP) == 0  # within a hundredth of a step: the epoch's grid
    assert windowing.grid_offset(stamps + 3_000_000, STEP) == 3_000_000
    assert windowing.grid_offset(stamps + 7_000_000, STEP) == -3_000_000  # (-step/2, step/2]
    half = windowing.grid_offset(_readings(500, STEP // 2)["timestamp"].to_numpy(), STEP)
    assert abs(half) == STEP // 2  # to 10 ms, a thousandth of the step: the jitter's mean is no phase
    assert windowing.grid_offset(stamps + 1_234_567, STEP) == 1_230_000
    # at most half a step either way, also where rounding would pass it (a step of 33,333 µs: 30 Hz)
    for step, phase in ((33_333, 16_666), (1_999_999, 999_999), (33_333, 33_333 - 16_666)):
        offset = windowing.grid_offset((START // step) * step + phase + np.arange(1000) * step, step)
        assert abs(offset) <= step // 2 and abs(abs(offset) - step // 2) <= max(1, step // 1000), (step, offset)
    hourly = START + np.arange(100) * 3_600_000_000 + 1_800_000_000
    assert windowing.grid_offset(hourly, 3_600_000_000) == 1_800_000_000
    # devices at random phases keep none in common: the epoch's grid stays
    scattered = stamps + np.random.default_rng(1).integers(0, STEP, size=stamps.size)
    assert windowing.grid_offset(scattered, STEP) == 0
    mondays = pd.date_range("2019-01-07", periods=60, freq="7D", tz="UTC").as_unit("us").asi8
    assert windowing.grid_offset(mondays, WEEK) == -3 * 86_400_000_000  # 1970-01-01 was a Thursday
    assert (windowing.step_of(mondays, WEEK, -3 * 86_400_000_000) * WEEK - 3 * 86_400_000_000 == mondays).all()


def _tiny(horizon: int = 0) -> DetectorConfig:
    return DetectorConfig(ArchitectureConfig(units=4, forecast_horizon=horizon),
                          WindowConfig(length=8, stride=4, max_gap=2), TrainingConfig(epochs=1, batch_size=64,
                                                                                       patience=1))


@pytest.fixture(scope="module")
def off_grid_model(tmp_path_factory):
    """A small model trained on 10 s readings at :05 with 1 ms of jitter."""
    train = _readings(800, STEP // 2)
    detector = Seq2SeqDetector(_tiny(horizon=2)).fit(train, progress=False)
    return detector, save_artifact(detector, tmp_path_factory.mktemp("model") / "off-grid")


def test_a_model_trained_off_the_epochs_grid_keeps_each_reading_in_a_step_of_its_own(off_grid_model):
    detector, path = off_grid_model
    assert abs(detector.grid_offset_us) == STEP // 2
    assert read_metadata(path)["grid_offset_us"] == detector.grid_offset_us
    assert load_artifact(path).grid_offset_us == detector.grid_offset_us
    live = _readings(300, STEP // 2, seed=5)
    assert shared_steps(live, detector.channels, STEP, detector.grid_offset_us) == 0
    scores = detector.score_frame(live)
    # windows end at the readings' own times (to the jitter), not 5 s off them
    ends = scores["window_end"].dt.as_unit("us").astype("int64").to_numpy()
    assert len(ends) and (np.abs((ends - START - STEP // 2) % STEP - STEP // 2) >= STEP // 2 - 1000).all()


def test_the_pipeline_cuts_and_stamps_on_the_models_grid(off_grid_model, tmp_path):
    """A run of the off-grid model: its windows are the notebook's (score_frame) to the last bit, stamped at the
    readings' times; forecasts are issued at a window's end and target the next readings' times."""
    detector, path = off_grid_model
    live = _readings(300, STEP // 2, seed=5)
    wide = live.pivot_table(index="timestamp", columns="channel", values="value").reset_index()
    wide["timestamp"] = pd.to_datetime(wide["timestamp"], unit="us", utc=True).dt.strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    wide.to_csv(tmp_path / "pump-1.csv", index=False)
    out = tmp_path / "out"
    manifest = run_batch(RunConfig(inputs=(str(tmp_path / "pump-1.csv"),), output=str(out), model_dir=str(path),
                                   mapping=InputMapping(format="wide")), ["--runner=DirectRunner"])
    assert manifest["records_in"] == manifest["records_scored"] == 600
    scores = ds.dataset(out / "scores", format="parquet").to_table().to_pandas().sort_values("window_end")
    expected = detector.score_frame(live).sort_values("window_end")
    assert scores["window_end"].tolist() == expected["window_end"].tolist()
    np.testing.assert_allclose(scores["score"], expected["score"], rtol=1e-5)
    forecasts = ds.dataset(out / "forecasts", format="parquet").to_table().to_pandas()
    assert len(forecasts)
    targets = forecasts["target_time"].dt.as_unit("us").astype("int64").to_numpy()
    assert (np.abs((targets - START - STEP // 2) % STEP - STEP // 2) >= STEP // 2 - 1000).all()


def test_the_interval_of_jittered_readings_is_refined_to_what_they_keep_on_average():
    """Found by the hunt of the grid phase: with +-1 ms of jitter on every reading the median interval was
    10,000,033 µs, so the grid (and its phase) drifted a step's width off the readings in a month. The fit of
    each series' times to their step numbers gives 10 s; exact readings keep their interval; readings without a
    regular interval keep the median."""
    rng = np.random.default_rng(2)
    jittered = [START + 5_000_000 + np.arange(2400) * STEP + rng.integers(-1000, 1001, size=2400) for _ in range(2)]
    median = int(np.median(np.diff(jittered[0])))
    assert windowing.refined_step(jittered, median) == STEP
    assert windowing.refined_step([START + np.arange(500) * STEP], STEP) == STEP
    ecg = [START + np.round(np.arange(20_000) * 1e6 / 360).astype(np.int64)]  # 360 Hz, times rounded to the µs
    assert windowing.refined_step(ecg, int(np.median(np.diff(ecg[0])))) == 2778
    irregular = [START + np.cumsum(rng.integers(1, 40, size=300)) * 1_000_000]
    assert windowing.refined_step(irregular, 20_000_000) == 20_000_000
    # (found by the review) exact 5-minute readings that restart 24 s off phase after a gap keep 5 minutes; 100 Hz
    # readings with +-0.5 ms of jitter, whose median is a µs off, are refined too
    restarted = [np.concatenate([START + np.arange(4000) * 300_000_000,
                                 START + (4010 + np.arange(4000)) * 300_000_000 + 24_000_000])]
    assert windowing.refined_step(restarted, 300_000_000) == 300_000_000
    fast = [START + np.arange(50_000) * 10_000 + rng.integers(-500, 501, size=50_000)]
    assert windowing.refined_step(fast, int(np.median(np.diff(fast[0])))) == 10_000
    frame = pd.concat([pd.DataFrame({"entity_id": "p", "channel": c, "timestamp": jittered[0], "value": 5.0 + i})
                       for i, c in enumerate(("a", "b"))], ignore_index=True)
    frame["value"] += np.sin(np.arange(len(frame)) / 7)
    detector = Seq2SeqDetector(_tiny()).fit(frame, progress=False)
    assert (detector.step_us, abs(detector.grid_offset_us)) == (STEP, STEP // 2)


def test_a_new_version_of_the_same_phase_half_a_step_either_way_is_taken():
    """Found by the hunt of the grid phase: readings at :05 of 10 s round to +5 s or -5 s, one phase; the check
    of a new version's phase measures round the step."""
    from types import SimpleNamespace

    from seqwatch.pipelines.inference import _same_phase

    def model(offset):
        return SimpleNamespace(grid_offset_us=offset, step_us=STEP)

    assert _same_phase(model(-STEP // 2), model(STEP // 2))
    assert _same_phase(model(-STEP // 2 + 50_000), model(STEP // 2 - 40_000))
    assert not _same_phase(model(0), model(STEP // 2))


def test_daily_local_times_across_daylight_saving_keep_a_day_as_their_step():
    """Found by the bug hunt of time scales: local midnights (Europe/Berlin) come 23 and 25 hours apart at each
    daylight-saving change, which the fit took as steps: a day of 86,400.82 s, and windows stamped 37 minutes and
    more off the readings. A stretch now ends at an interval further off the step than the readings' jitter."""
    days = pd.date_range("2010-01-01", periods=800, freq="D", tz="Europe/Berlin")
    stamps = [days.tz_convert("UTC").as_unit("us").asi8]
    day = 86_400_000_000
    assert windowing.refined_step(stamps, day) == day
    assert windowing.refined_step([stamps[0][::7]], 7 * day) == 7 * day  # weekly, the same
