"""One contract every architecture variant passes: it builds, trains a few steps, saves, loads, and gives
identical outputs after loading."""
import dataclasses
import json

import numpy as np
import pytest

from seqwatch.models.artifact import ArtifactError, load_artifact, save_artifact
from seqwatch.models.builders import FORECAST, RECONSTRUCTION, build_seq2seq
from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
from seqwatch.models.detector import InsufficientDataError, ModelMismatchError, Seq2SeqDetector
from seqwatch.models.synthetic import generate_sensor_data

VARIANTS = {
    "lstm": ArchitectureConfig(cell="lstm", units=8),
    "gru": ArchitectureConfig(cell="gru", units=8),
    "bidirectional-lstm": ArchitectureConfig(cell="lstm", bidirectional=True, units=8),
    "gru-2-layers-dropout": ArchitectureConfig(cell="gru", layers=2, units=8, dropout=0.1),
    "lstm-forecast": ArchitectureConfig(cell="lstm", units=8, forecast_horizon=3),
    "bidirectional-gru-3-layers-forecast": ArchitectureConfig(cell="gru", bidirectional=True, layers=3, units=8,
                                                              forecast_horizon=2),
}


@pytest.fixture(scope="module")
def tiny_data():
    readings, _ = generate_sensor_data(n_entities=1, n_steps=700, seed=5)
    return readings[readings["channel"].isin(["flow", "temperature"])]


def test_builder_shapes_univariate_and_multivariate():
    for channels in (1, 5):
        model = build_seq2seq(ArchitectureConfig(units=4, forecast_horizon=3), window_length=10, n_channels=channels)
        out = model.predict_on_batch(np.zeros((2, 10, channels), dtype=np.float32))
        assert out[RECONSTRUCTION].shape == (2, 10, channels)
        assert out[FORECAST].shape == (2, 3, channels)
    with pytest.raises(ValueError, match="window_length must be >= 2, got 1"):
        build_seq2seq(ArchitectureConfig(), window_length=1, n_channels=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_trains_saves_loads_and_scores_identically(name, tiny_data, tmp_path):
    config = DetectorConfig(VARIANTS[name], WindowConfig(length=8, stride=2),
                            TrainingConfig(epochs=2, batch_size=64, training_stride=2))
    detector = Seq2SeqDetector(config).fit(tiny_data, progress=False)
    assert len(detector.history["loss"]) == 2
    assert np.isfinite(detector.threshold)
    windows = np.stack([np.linspace(90, 110, 8), np.linspace(55, 65, 8)], axis=1)[None].repeat(3, axis=0)
    before = detector.score_windows(windows)

    path = save_artifact(detector, tmp_path / name)
    loaded = load_artifact(path)
    after = loaded.score_windows(windows)
    assert loaded.model_version == detector.model_version and loaded.channels == ("flow", "temperature")
    np.testing.assert_array_equal(before.score, after.score)
    np.testing.assert_array_equal(before.contributions, after.contributions)
    if VARIANTS[name].forecast_horizon:
        assert after.forecast.shape == (3, VARIANTS[name].forecast_horizon, 2)
        np.testing.assert_array_equal(before.forecast, after.forecast)
        assert np.all(after.lower <= after.forecast) and np.all(after.forecast <= after.upper)
    else:
        assert after.forecast is None


def test_training_is_repeatable_with_a_fixed_seed(tiny_data):
    config = DetectorConfig(ArchitectureConfig(units=4), WindowConfig(length=8, stride=2),
                            TrainingConfig(epochs=1, batch_size=64, training_stride=2))
    first = Seq2SeqDetector(config).fit(tiny_data, progress=False)
    second = Seq2SeqDetector(config).fit(tiny_data, progress=False)
    for a, b in zip(first.model.get_weights(), second.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert first.threshold == second.threshold


def test_too_little_data_is_refused_with_a_sentence(tiny_data):
    short = tiny_data[tiny_data["timestamp"] < tiny_data["timestamp"].min() + np.timedelta64(600, "s")]
    with pytest.raises(InsufficientDataError, match=r"fills only \d+ windows of 8 steps \(need >= 20\)"):
        Seq2SeqDetector(DetectorConfig(window=WindowConfig(length=8, stride=2))).fit(short, progress=False)


def test_too_little_data_for_a_forecasting_model_names_the_horizon_in_the_steps_it_counts(tiny_data):
    """A forecasting model's training windows hold the window and the horizon: the refusal had counted "windows of
    12 steps" for a window of 8, a length the person had set nowhere, and advised only a shorter window."""
    short = tiny_data[tiny_data["timestamp"] < tiny_data["timestamp"].min() + np.timedelta64(600, "s")]
    config = DetectorConfig(ArchitectureConfig(forecast_horizon=4), WindowConfig(length=8, stride=2))
    with pytest.raises(InsufficientDataError, match=r"fills only \d+ windows of 12 steps \(the window's 8 and the "
                                                    r"forecast horizon's 4\) \(need >= 20\): supply more normal "
                                                    r"history or a shorter window or forecast horizon$"):
        Seq2SeqDetector(config).fit(short, progress=False)


def test_a_channel_sampled_more_seldom_than_gap_filling_bridges_is_named_with_the_max_gap_that_bridges_it(tiny_data):
    """Temperature every minute on 10 s readings of flow: with max_gap 3 no window ever has both channels. The
    refusal names the channel and the max_gap that fills its 5 missing steps; with it the same data train. A
    fine-tuning cannot change max_gap, so its refusal says to resample instead."""
    steps = (tiny_data["timestamp"] - tiny_data["timestamp"].min()) // np.timedelta64(10, "s")
    sparse = tiny_data[(tiny_data["channel"] == "flow") | (steps % 6 == 0)]
    config = DetectorConfig(ArchitectureConfig(units=4), WindowConfig(length=8, stride=2, max_gap=3),
                            TrainingConfig(epochs=1, batch_size=64, training_stride=2))
    with pytest.raises(InsufficientDataError) as refused:
        Seq2SeqDetector(config).fit(sparse, progress=False)
    assert str(refused.value) == (
        "the train part of the training data fills only 0 windows of 8 steps (need >= 20): the readings of "
        "'temperature' (every 6 steps of 10s) come further apart than a window bridges (at most 3 missing steps: "
        "max_gap), so no window has every channel: set max_gap to 5 or more (--max-gap 5) to bridge them, resample "
        "those readings to every 10s, or leave it out (--ignore temperature)")
    bridged = dataclasses.replace(config, window=WindowConfig(length=8, stride=2, max_gap=5))
    detector = Seq2SeqDetector(bridged).fit(sparse, progress=False)
    assert detector.metrics["windows"]["train"] >= 20
    sparser = tiny_data[(tiny_data["channel"] == "flow") | (steps % 12 == 0)]
    with pytest.raises(InsufficientDataError, match=r"'temperature' \(every 12 steps of 10s\) come further apart "
                                                    r"than a window bridges \(at most 5 missing steps: max_gap\), so "
                                                    r"no window has every channel: resample those readings to the "
                                                    r"model's interval$"):
        detector.fine_tune(sparser, progress=False)
    # A channel missing for a stretch (an outage) is not sparse: the advice stays the general one.
    outage = tiny_data[(tiny_data["channel"] == "flow") | (steps < 60)]
    with pytest.raises(InsufficientDataError, match=r"\(need >= 20\): supply more normal history or a shorter "
                                                    r"window$"):
        Seq2SeqDetector(config).fit(outage, progress=False)


def test_artifact_integrity_and_compatibility(small_model_dir, tmp_path):
    detector = load_artifact(small_model_dir)
    with pytest.raises(ModelMismatchError, match=r"expects channels .* but the data lack \['vibration'\]"):
        detector.check_compatible(["flow", "pressure", "temperature"])
    with pytest.raises(ModelMismatchError, match=r"scores windows of shape \[N, 16, 4\], got \[2, 16, 3\]"):
        detector.score_windows(np.zeros((2, 16, 3)))
    with pytest.raises(ValueError, match=r"^model test-pumps v\S+ scores windows of numbers, got <U\d+ values$"):
        detector.score_windows(np.full((2, 16, 4), "1.5"))
    as_objects = np.ones((2, 16, 4)).astype(object)  # numbers held as Python objects are scored as numbers
    assert np.array_equal(detector.score_windows(as_objects).score, detector.score_windows(np.ones((2, 16, 4))).score)

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in small_model_dir.iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    data = bytearray((corrupt / "model.keras").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupt / "model.keras").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="is corrupt: model.keras does not match the checksum"):
        load_artifact(corrupt)

    meta = json.loads((small_model_dir / "metadata.json").read_text())
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.keras").write_bytes((small_model_dir / "model.keras").read_bytes())
    (old / "metadata.json").write_text(json.dumps({**meta, "format_version": 0}))
    with pytest.raises(ArtifactError, match="has artifact format 0; this seqwatch reads format 1"):
        load_artifact(old)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "nowhere")


def test_artifact_metadata_holds_what_a_deployment_needs(small_model_dir):
    meta = json.loads((small_model_dir / "metadata.json").read_text())
    for key in ("config", "channels", "step_us", "scaler", "scorer", "tail", "threshold", "intervals",
                "fingerprint", "metrics", "library_versions", "model_sha256", "model_version"):
        assert key in meta, key
    assert meta["config"]["window"] == {"length": 16, "stride": 4, "max_gap": 2}
    assert meta["step_us"] == 10_000_000
    assert len(meta["fingerprint"]) == 64


def test_a_window_scores_the_same_whatever_batch_it_is_in(small_model_dir):
    # RunInference groups a varying number of panes per call; a window's score must not depend on that.
    detector = load_artifact(small_model_dir)
    rng = np.random.default_rng(3)
    base = np.array([100.0, 3.0, 60.0, 0.5])
    windows = base + rng.normal(0, [5, 0.3, 2, 0.05], size=(700, 16, 4))
    whole = detector.score_windows(windows)
    parts = [detector.score_windows(windows[i:i + 37]) for i in range(0, 700, 37)]
    np.testing.assert_array_equal(whole.score, np.concatenate([p.score for p in parts]))
    np.testing.assert_array_equal(whole.contributions, np.concatenate([p.contributions for p in parts]))
    np.testing.assert_array_equal(whole.forecast, np.concatenate([p.forecast for p in parts]))


def test_concurrent_scoring_from_threads_is_safe(small_model_dir):
    # Beam runs bundles on several threads that share one loaded model (RunInference's shared handle).
    from concurrent.futures import ThreadPoolExecutor

    detector = load_artifact(small_model_dir)
    rng = np.random.default_rng(4)
    windows = np.array([100.0, 3.0, 60.0, 0.5]) + rng.normal(0, [5, 0.3, 2, 0.05], size=(8, 600, 16, 4))
    expected = [detector.score_windows(w).score for w in windows]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda w: detector.score_windows(w).score, windows))
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_window_features_are_what_the_scorer_scores(small_model_dir):
    detector = load_artifact(small_model_dir)
    rng = np.random.default_rng(6)
    windows = np.array([100.0, 3.0, 60.0, 0.5]) + rng.normal(0, [5, 0.3, 2, 0.05], size=(50, 16, 4))
    features = detector.window_features(windows)
    assert features.shape == (50, 4)
    scores, contributions = detector.scorer.score(features)
    result = detector.score_windows(windows)
    np.testing.assert_array_equal(scores, result.score)
    np.testing.assert_array_equal(contributions, result.contributions)
    with pytest.raises(ModelMismatchError, match=r"scores windows of shape \[N, 16, 4\], got \[2, 16, 3\]"):
        detector.window_features(np.zeros((2, 16, 3)))
    with pytest.raises(RuntimeError, match="not fitted"):
        Seq2SeqDetector().window_features(np.zeros((1, 64, 1)))


def test_artifacts_saved_before_one_sided_and_error_floor_existed_score_as_before(small_model_dir, tmp_path):
    meta = json.loads((small_model_dir / "metadata.json").read_text())
    assert meta["config"]["scoring"]["one_sided"] is False and meta["scorer"]["one_sided"] is False
    assert meta["config"]["scoring"]["error_floor_quantile"] is None and meta["scorer"]["error_floor"] == []
    for section, key in (("config", "one_sided"), ("config", "error_floor_quantile"), ("scorer", "one_sided"),
                         ("scorer", "error_floor")):
        del (meta["config"]["scoring"] if section == "config" else meta["scorer"])[key]
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.keras").write_bytes((small_model_dir / "model.keras").read_bytes())
    (old / "metadata.json").write_text(json.dumps(meta))
    detector = load_artifact(old)
    assert detector.config.scoring.one_sided is False and detector.scorer.one_sided is False
    windows = np.array([100.0, 3.0, 60.0, 0.5]) + np.random.default_rng(8).normal(0, 1, size=(20, 16, 4))
    np.testing.assert_array_equal(detector.score_windows(windows).score,
                                  load_artifact(small_model_dir).score_windows(windows).score)


@pytest.mark.slow
def test_one_sided_scores_and_the_error_floor_are_kept_in_the_artifact(tiny_data, tmp_path):
    import dataclasses

    from seqwatch.models.config import ScoringConfig

    config = DetectorConfig(ArchitectureConfig(cell="gru", units=8), WindowConfig(length=8, stride=2),
                            TrainingConfig(epochs=2, batch_size=64, training_stride=2),
                            ScoringConfig(one_sided=True, error_floor_quantile=0.25))
    detector = Seq2SeqDetector(config).fit(tiny_data, progress=False)
    assert detector.scorer.one_sided and np.isfinite(detector.threshold)
    assert len(detector.scorer.error_floor) == 2 and min(detector.scorer.error_floor) > 1e-6
    rng = np.random.default_rng(9)
    windows = np.stack([np.linspace(90, 110, 8), np.linspace(55, 65, 8)], axis=1) + rng.normal(0, 3, (40, 8, 2))
    features = detector.window_features(windows)
    two_sided = dataclasses.replace(detector.scorer, one_sided=False)
    clipped, _ = two_sided.score(np.maximum(features, np.asarray(detector.scorer.mean)))
    np.testing.assert_array_equal(detector.score_windows(windows).score, clipped)
    loaded = load_artifact(save_artifact(detector, tmp_path / "one-sided"))
    assert loaded.config.scoring.one_sided and loaded.scorer.one_sided
    np.testing.assert_array_equal(loaded.score_windows(windows).score, clipped)
