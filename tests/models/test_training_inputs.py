"""What training learns from, found by a bug hunt: a sampling interval a run accepts is accepted by fine-tuning and
a holdout too; one huge reading never gives the scaler an infinite scale; readings a run quarantines as duplicates
are left out of training; a cumulative channel that only falls is noted as a constant one is."""
import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from seqwatch.models.artifact import load_artifact, read_metadata
from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
from seqwatch.models.detector import ModelMismatchError, Seq2SeqDetector, TrainingDataWarning
from seqwatch.models.scaling import ChannelScaler
from seqwatch.models.synthetic import generate_sensor_data

MINUTE_US = 60_000_000
START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def _stretched(frame: pd.DataFrame, factor: float) -> pd.DataFrame:
    """``frame`` with each entity's readings ``factor`` times as far apart (a clock that runs slow)."""
    stamps = frame["timestamp"].astype("int64")
    first = stamps.groupby(frame["entity_id"]).transform("min")
    return frame.assign(timestamp=(first + (stamps - first) * factor).round().astype("int64"))


def _sine(n_steps: int, channels=("a", "b"), entity="e1", seed=0, step_us=MINUTE_US) -> pd.DataFrame:
    """Long readings of sine plus noise, one a minute (the bug hunt's data)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_steps)
    return pd.concat([pd.DataFrame({"entity_id": entity, "channel": c, "timestamp": START_US + t * step_us,
                                    "value": np.sin(t / (10 + 3 * i)) + rng.normal(0, 0.05, n_steps)})
                      for i, c in enumerate(channels)], ignore_index=True)


def _tiny(**window) -> DetectorConfig:
    return DetectorConfig(ArchitectureConfig(units=4), WindowConfig(length=8, stride=4, max_gap=2, **window),
                          TrainingConfig(epochs=1, batch_size=64, patience=1))


# ------------------------------------------------------------------------------------------ sampling interval
# These two fail until models/detector.py compares intervals with windowing.interval_fits (as a run does) instead
# of requiring the model's exact interval (Seq2SeqDetector.check_compatible and _check_holdout).

def test_fine_tuning_accepts_a_clock_drift_that_a_run_scores(small_model_dir):
    detector = load_artifact(small_model_dir)
    detector.config = dataclasses.replace(detector.config,
                                          training=dataclasses.replace(detector.config.training, epochs=1))
    recent, _ = generate_sensor_data(n_entities=1, n_steps=1000, step_seconds=10, seed=5)
    recent = _stretched(recent, 1.0001)  # every 10.001 s against the model's 10 s: a run scores these
    detector.fine_tune(recent, progress=False)
    assert detector.metrics["fine_tunes"] == 1
    with pytest.raises(ModelMismatchError, match="sampling interval"):
        detector.fine_tune(_stretched(recent, 2.5), progress=False)  # beyond the 2x a run allows: refused


def test_a_holdout_may_drift_as_far_as_a_run_accepts():
    train = pd.concat([_sine(400, entity=e, seed=i) for i, e in enumerate(("e1", "e2"))], ignore_index=True)
    holdout = _stretched(_sine(300, entity="e3", seed=9), 60.001 / 60)  # 60.001 s against 60 s
    detector = Seq2SeqDetector(_tiny()).fit(train, holdout=holdout, progress=False)
    assert detector.metrics["holdout_readings"] == len(holdout)
    with pytest.raises(ModelMismatchError, match="held-out readings are sampled every"):
        Seq2SeqDetector(_tiny()).fit(train, holdout=_stretched(holdout, 3.0), progress=False)


# ------------------------------------------------------------------------------------------ scaler overflow
def test_one_huge_reading_gives_a_finite_scale_without_overflow():
    values = np.c_[np.sin(np.arange(2400) / 10), np.random.default_rng(1).normal(size=2400)]
    values[100, 0] = 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "overflow encountered" on the way either
        scaler = ChannelScaler.fit(values)
    assert np.isfinite(scaler.mean).all() and np.isfinite(scaler.scale).all()
    assert scaler.scale[0] == pytest.approx(1e300 * np.sqrt(2399) / 2400, rel=1e-6)  # the spread that reading gives
    ordinary = values.copy()
    ordinary[100, 0] = 0.5
    plain = ChannelScaler.fit(ordinary)  # without such a reading, numpy's own mean and spread, to the last bit
    assert plain == ChannelScaler(tuple(np.mean(ordinary, axis=0)), tuple(np.std(ordinary, axis=0)))
    assert scaler.scale[1] == plain.scale[1] and scaler.mean[1] == plain.mean[1]  # the other channel as it was
    extreme = ChannelScaler.fit(np.array([[1.7e308], [-1.7e308], [1.7e308], [-1.7e308]]))
    assert extreme.scale == (1.7e308,) and extreme.mean == (0.0,)


def test_a_channel_of_tiny_values_keeps_its_spread_and_rounding_noise_is_no_spread():
    """Found by the bug hunt of numerics: a channel measured around 1e-13 (pF, pA) had scale 1 from an absolute
    floor of 1e-12, so every scaled value was about 0 and a jump of 14 spreads raised no alert. Its spread is
    kept now; a level read back with rounding noise (101325 +- 1e-11) is still a constant channel, scale 1."""
    rng = np.random.default_rng(3)
    tiny = 1e-13 * (np.sin(np.arange(2000) / 10) + rng.normal(scale=0.1, size=2000))
    level = 101325.0 + rng.choice([-1e-11, 0.0, 1e-11], size=2000)
    scaler = ChannelScaler.fit(np.c_[tiny, level, np.full(2000, 7.0)])
    assert scaler.scale[0] == pytest.approx(np.std(tiny), rel=1e-9)
    jump = scaler.transform(np.array([[tiny.mean() + 14 * np.std(tiny), 101325.0, 7.0]]))
    assert jump[0, 0] == pytest.approx(14, rel=1e-4)
    assert scaler.scale[1:] == (1.0, 1.0)
    assert ChannelScaler.constant(np.c_[tiny, level, np.full(2000, 7.0)]) == [1, 2]  # and both get the note


def test_a_model_trained_with_a_huge_reading_is_saved_as_valid_json(tmp_path):
    from seqwatch.models.artifact import save_artifact

    frame = _sine(600)
    frame.loc[(frame["channel"] == "a").to_numpy().nonzero()[0][50], "value"] = 1e300
    detector = Seq2SeqDetector(_tiny()).fit(frame, progress=False)
    assert np.isfinite(detector.scaler.scale).all()
    saved = save_artifact(detector, tmp_path / "model")
    json.loads((saved / "metadata.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert read_metadata(saved)["scaler"]["scale"][0] > 1e290


# ------------------------------------------------------------------------------------------ duplicates
def _with_source(frame: pd.DataFrame, source: str, first_line: int = 2) -> pd.DataFrame:
    return frame.assign(source=source, line=np.arange(first_line, first_line + len(frame)))


def test_training_leaves_out_the_duplicates_a_run_quarantines_keeping_the_first_by_file_and_line():
    from seqwatch.pipelines.validate import DUPLICATE_REASON, valid_history
    from seqwatch.schemas.validation import load_suite_dict

    original = _with_source(_sine(200), "history/a.csv")
    rerun = _with_source(_sine(200).assign(value=lambda f: f["value"] + 10.0), "history/b.csv")  # conflicting
    # b.csv comes first in the frame: a run still keeps a.csv's reading (sources in order, then lines)
    frame = pd.concat([rerun, original], ignore_index=True)
    kept, left_out, first = valid_history(frame, load_suite_dict("sensor"), 0, START_US * 2)
    assert left_out == {"duplicate": 400} and first == {"duplicate": DUPLICATE_REASON}
    assert (kept["source"] == "history/a.csv").all() and len(kept) == 400
    assert kept["value"].mean() == pytest.approx(original["value"].mean())

    within = _with_source(pd.concat([_sine(10), _sine(10).iloc[[3]].assign(value=99.0)], ignore_index=True), "c.csv")
    kept, left_out, _ = valid_history(within, load_suite_dict("sensor"), 0, START_US * 2)
    assert left_out == {"duplicate": 1} and 99.0 not in kept["value"].tolist()  # the later line of one file


def test_train_counts_duplicates_and_learns_from_the_first_reading_of_each(tmp_path, cli_cases):
    frame = _sine(1200)
    history = tmp_path / "history"
    history.mkdir()
    text = lambda f: f.assign(timestamp=pd.to_datetime(f["timestamp"], unit="us", utc=True).dt.strftime(  # noqa: E731
        "%Y-%m-%dT%H:%M:%SZ"))
    text(frame).to_csv(history / "a.csv", index=False)
    text(frame.assign(value=frame["value"] + 10.0)).to_csv(history / "b.csv", index=False)  # the same times again
    [(code, stderr)] = cli_cases([["train", "--input", str(history), "--format", "long", "--model-dir",
                                   str(tmp_path / "model"), "--window", "8", "--stride", "4", "--units", "4",
                                   "--epochs", "1"]])
    assert code == 0, stderr[-3000:]
    assert ("training on 2400 readings from 2 file(s) (2400 rejected readings skipped, of which duplicates of an "
            "earlier reading: 2400)") in stderr
    assert ("seqwatch train: note: 2400 of the training input's 4800 readings (50.0%) have the entity, channel and "
            "timestamp of an earlier reading; they are left out, as a run quarantines them as duplicate") in stderr
    mean = read_metadata(tmp_path / "model")["scaler"]["mean"]
    assert all(abs(m) < 0.5 for m in mean), mean  # a sine about 0: the conflicting +10 readings had moved it to 5


# ------------------------------------------------------------------------------------------ cumulative channels
# Fails until models/detector.py's fit also looks for constant channels in what the scaler sees (a cumulative
# channel's increments), not only in the levels.

def test_a_cumulative_channel_that_only_falls_gets_the_constant_channel_note():
    frame = _sine(600, channels=("a",))
    falling = frame.assign(channel="m", value=5000.0 - 0.5 * np.arange(600))  # never rises: every increment 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector = Seq2SeqDetector(_tiny(cumulative_channels=("m",))).fit(
            pd.concat([frame, falling], ignore_index=True), progress=False)
    assert detector.metrics["constant_channels"] == ["m"]
    assert any(isinstance(w.message, TrainingDataWarning) and "'m'" in str(w.message) for w in caught)


# ------------------------------------------------------------------------------------------ grid phase
def test_readings_of_two_phases_get_a_note_that_they_share_steps():
    """Found by the bug hunt of time scales: readings half a step off the grid with 1 ms of jitter straddle the
    grid's half-way points, so a quarter of their steps held two readings, averaged, and as many were filled,
    without a word. A model now takes its grid's phase from the readings (test_grid_phase); where two devices keep
    opposite phases no grid suits both, and training says so. One phase gets no note."""
    from seqwatch.models.detector import shared_steps

    step = 10_000_000
    on_grid = _sine(600, step_us=step)
    jitter = np.random.default_rng(4).choice([-1000, 1000], size=len(on_grid))
    off_grid = on_grid.assign(entity_id="e2", timestamp=on_grid["timestamp"] + step // 2 + jitter)
    # by hand: a step holds a second reading where one reading rounds up onto a step whose own rounded down
    steps = (off_grid["timestamp"] + step // 2) // step
    by_hand = sum(len(g) - g.nunique() for _, g in steps.groupby(off_grid["channel"]))
    assert shared_steps(off_grid, ("a", "b"), step) == by_hand > 0.2 * len(off_grid)
    assert shared_steps(off_grid, ("a", "b"), step, offset_us=step // 2) == 0
    assert shared_steps(on_grid, ("a", "b"), step) == 0
    both = pd.concat([on_grid, off_grid], ignore_index=True)
    for frame, noted in ((both, True), (on_grid, False), (off_grid, False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Seq2SeqDetector(_tiny()).fit(frame, progress=False, step_us=step)
        notes = [str(w.message) for w in caught if isinstance(w.message, TrainingDataWarning)]
        assert any("at the readings' common phase" in n and "averaged" in n for n in notes) == noted, notes
