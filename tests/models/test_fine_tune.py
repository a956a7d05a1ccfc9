"""Online fine-tuning: ``Seq2SeqDetector.fine_tune`` continues training a fitted model on newer normal readings,
from its current weights, and recalibrates it; it refuses data that do not fit and then changes nothing."""
import numpy as np
import pandas as pd
import pytest

from seqwatch.models.artifact import load_artifact, save_artifact
from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
from seqwatch.models.detector import InsufficientDataError, ModelMismatchError, Seq2SeqDetector
from seqwatch.models.synthetic import generate_sensor_data

CHANNELS = ("flow", "temperature")
CONFIG = DetectorConfig(ArchitectureConfig(cell="gru", units=8), WindowConfig(length=8, stride=2),
                        TrainingConfig(epochs=8, batch_size=64, training_stride=2, patience=3))


def _readings(n_steps: int, seed: int) -> pd.DataFrame:
    readings, _ = generate_sensor_data(n_entities=1, n_steps=n_steps, seed=seed)
    return readings[readings["channel"].isin(CHANNELS)].reset_index(drop=True)


def _after_a_lasting_change(readings: pd.DataFrame) -> pd.DataFrame:
    """The same machine after a lasting change: its flow swings three times as far from its mean as it did in
    training (a new pump curve), which the model trained before has never seen."""
    out = readings.copy()
    flow = out["channel"] == "flow"
    out.loc[flow, "value"] = 100 + 3.0 * (out.loc[flow, "value"] - 100)
    return out


def _windows(readings: pd.DataFrame) -> np.ndarray:
    wide = readings.pivot(index="timestamp", columns="channel", values="value")[list(CHANNELS)].to_numpy()
    starts = np.arange(0, len(wide) - 8 + 1, 4)
    return np.stack([wide[s:s + 8] for s in starts])


@pytest.fixture(scope="module")
def fitted():
    return Seq2SeqDetector(CONFIG).fit(_readings(700, seed=5), channels=CHANNELS, progress=False)


def _copy(detector: Seq2SeqDetector, tmp_path) -> Seq2SeqDetector:
    return load_artifact(save_artifact(detector, tmp_path / "copy"))


def test_fine_tuning_learns_a_lasting_change_and_keeps_the_scaler(fitted, tmp_path):
    detector = _copy(fitted, tmp_path)
    normal = _readings(1400, seed=6)
    changed = _after_a_lasting_change(normal)
    times = np.sort(changed["timestamp"].unique())
    recent, later = changed[changed["timestamp"] < times[700]], changed[changed["timestamp"] >= times[700]]
    held_out = _windows(later)
    before = detector.score_windows(held_out)
    unchanged = detector.score_windows(_windows(normal[normal["timestamp"] >= times[700]]))
    scaler = detector.scaler
    weights = [w.copy() for w in detector.model.get_weights()]

    assert detector.fine_tune(recent, progress=False) is detector
    after = detector.score_windows(held_out)
    # Before: most windows of the changed machine alarm; after fine-tuning on its first 700 steps, its later
    # windows (not trained on) look normal to the recalibrated model.
    assert unchanged.is_anomaly.mean() < 0.05
    assert before.is_anomaly.mean() > 0.9
    assert after.is_anomaly.mean() < 0.05
    assert detector.scaler == scaler
    assert any(not np.array_equal(a, b) for a, b in zip(weights, detector.model.get_weights()))
    assert detector.metrics["fine_tunes"] == 1
    assert detector.fingerprint != fitted.fingerprint


def test_fine_tuning_starts_from_the_current_weights(fitted, tmp_path):
    detector = _copy(fitted, tmp_path)
    same = _readings(700, seed=5)
    # On the data it was fitted on, the first fine-tuning epoch starts near where fitting ended, far below the
    # first epoch of a model trained from scratch.
    detector.fine_tune(same, progress=False)
    assert detector.history["loss"][0] < 0.5 * fitted.history["loss"][0]
    assert detector.history["loss"][0] < 1.5 * min(fitted.history["loss"])


def test_fine_tuning_keeps_the_compiled_training_step(fitted, tmp_path):
    detector = _copy(fitted, tmp_path)
    recent = _readings(700, seed=7)
    detector.fine_tune(recent, progress=False)
    step = detector.model.train_function
    detector.fine_tune(recent, progress=False)
    assert detector.model.train_function is step  # no retrace: a fine-tuning costs its epochs only
    assert detector.metrics["fine_tunes"] == 2


def test_data_that_do_not_fit_are_refused_and_change_nothing(fitted, tmp_path):
    detector = _copy(fitted, tmp_path)
    weights = [w.copy() for w in detector.model.get_weights()]
    threshold, metrics = detector.threshold, dict(detector.metrics)
    short = _readings(60, seed=8)
    # a fine-tuning keeps the window: a shorter one is not the advice (the bug hunt of training, 2026-12-03)
    with pytest.raises(InsufficientDataError, match=r"fills only \d+ windows of 8 steps \(need >= 20\): give more "
                                                    r"readings \(a fine-tuning keeps the model's window\)$"):
        detector.fine_tune(short, progress=False)
    with pytest.raises(InsufficientDataError, match="hold no readings"):
        detector.fine_tune(short.iloc[:0], progress=False)
    other = _readings(700, seed=8)
    other = other[other["channel"] == "flow"]
    with pytest.raises(ModelMismatchError, match=r"expects channels \['flow', 'temperature'\], but the data lack "
                                                  r"\['temperature'\]"):
        detector.fine_tune(other, progress=False)
    slower, _ = generate_sensor_data(n_entities=1, n_steps=700, step_seconds=20, seed=8)
    with pytest.raises(ModelMismatchError, match=r"trained at a sampling interval of 10s, the data are at 20s"):
        detector.fine_tune(slower[slower["channel"].isin(CHANNELS)], progress=False)
    for a, b in zip(weights, detector.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert detector.threshold == threshold and detector.metrics == metrics
    # A clock 1 ms fast every 10 s is the model's interval (it was refused, while seqwatch run scored the readings).
    drifting, _ = generate_sensor_data(n_entities=1, n_steps=700, step_seconds=10.001, seed=8)
    detector.fine_tune(drifting[drifting["channel"].isin(CHANNELS)], progress=False)
    assert detector.metrics["fine_tunes"] == metrics.get("fine_tunes", 0) + 1
    with pytest.raises(RuntimeError, match="not fitted"):
        Seq2SeqDetector(CONFIG).fine_tune(short, progress=False)


def test_a_fine_tuned_model_saves_and_loads_and_fine_tunes_again(fitted, tmp_path):
    detector = _copy(fitted, tmp_path)
    detector.fine_tune(_readings(700, seed=9), progress=False)
    windows = _windows(_readings(200, seed=10))
    saved = save_artifact(detector, tmp_path / "tuned")
    loaded = load_artifact(saved)
    np.testing.assert_array_equal(detector.score_windows(windows).score, loaded.score_windows(windows).score)
    assert loaded.metrics["fine_tunes"] == 1 and loaded.model_version != fitted.model_version
    loaded.fine_tune(_readings(700, seed=11), progress=False)  # a loaded model has no optimizer yet: compiled here
    assert loaded.metrics["fine_tunes"] == 2


def test_a_model_keeps_the_span_of_time_its_trainings_read(fitted, tmp_path):
    """What ``seqwatch train --skip-stale`` compares a fine-tuning's readings with: the first and last time of the
    model's channels in the readings of the fit and of every fine-tuning after it, saved with the model. Readings of
    other channels do not count."""
    first = pd.Timestamp("2026-01-05T00:00:00Z")  # generate_sensor_data's start, a reading every 10 s

    def us(timestamp) -> int:
        return int(pd.Timestamp(timestamp).value // 1000)

    assert fitted.readings_span_us == (us(first), us(first + pd.Timedelta(seconds=10 * 699)))
    later = _readings(700, seed=9)
    later["timestamp"] = later["timestamp"] + pd.Timedelta(days=3)
    other = later[later["channel"] == "flow"].assign(channel="vibration",
                                                     timestamp=lambda f: f["timestamp"] + pd.Timedelta(days=30))
    tuned = _copy(fitted, tmp_path).fine_tune(pd.concat([later, other], ignore_index=True), progress=False)
    assert tuned.readings_span_us == (us(first), us(first + pd.Timedelta(days=3, seconds=10 * 699)))
    assert load_artifact(save_artifact(tuned, tmp_path / "tuned")).readings_span_us == tuned.readings_span_us
    earlier = _readings(700, seed=11)
    earlier["timestamp"] = earlier["timestamp"] - pd.Timedelta(days=1)
    again = _copy(tuned, tmp_path / "again").fine_tune(earlier, progress=False)
    assert again.readings_span_us == (us(first - pd.Timedelta(days=1)), tuned.readings_span_us[1])


def test_the_same_model_fine_tuned_on_the_same_readings_gives_the_same_version(fitted, tmp_path):
    # Training shuffles its windows: fine-tuning drew a new shuffle each time (two runs of `seqwatch train
    # --warm-start` on one input gave versions with thresholds 8.62 and 8.41).
    recent = _readings(700, seed=9)
    first = _copy(fitted, tmp_path / "a").fine_tune(recent, progress=False)
    second = _copy(fitted, tmp_path / "b").fine_tune(recent, progress=False)
    assert first.threshold == second.threshold and first.model_version == second.model_version
    windows = _windows(_readings(200, seed=10))
    np.testing.assert_array_equal(first.score_windows(windows).score, second.score_windows(windows).score)


def test_a_fine_tuning_notes_what_a_first_training_notes(fitted, tmp_path):
    """Found by the bug hunt of training: a fine-tuning on an idle week (every channel constant) saved a threshold
    of 0 without a word, where a first training on the same readings notes the constant channels and the threshold."""
    import warnings

    from seqwatch.models.detector import TrainingDataWarning

    detector = _copy(fitted, tmp_path)
    idle = _readings(700, seed=9).assign(value=lambda f: np.where(f["channel"] == "flow", 0.0, 21.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TrainingDataWarning)
        detector.fine_tune(idle, progress=False)
    notes = detector.metrics["fine_tune_notes"]
    assert [str(w.message) for w in caught if issubclass(w.category, TrainingDataWarning)] == notes
    assert notes[0].startswith("channels 'flow', 'temperature' held one value throughout the training readings")
    assert detector.threshold < 1e-6 and notes[1].startswith(f"the threshold is {detector.threshold:.3g}: the "
                                                              f"calibration windows")
    normal = _copy(fitted, tmp_path / "again")
    normal.fine_tune(_readings(700, seed=10), progress=False)
    assert normal.metrics["fine_tune_notes"] == []
