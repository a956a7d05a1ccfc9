"""Does the detector find what it should? Trained on normal synthetic data, scored on held-out data with
injected anomalies (spikes, level shifts, frequency change, flat-lining, one broken channel)."""
import numpy as np
import pytest

from seqwatch.models import windowing
from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
from seqwatch.models.detector import Seq2SeqDetector, entity_grids
from seqwatch.models.evaluation import roc_auc
from seqwatch.models.synthetic import generate_sensor_data

LENGTH, STRIDE, HORIZON = 32, 8, 6


@pytest.fixture(scope="module")
def detector():
    train, _ = generate_sensor_data(n_entities=4, n_steps=3000, seed=1)
    config = DetectorConfig(ArchitectureConfig(units=32, forecast_horizon=HORIZON),
                            WindowConfig(length=LENGTH, stride=STRIDE),
                            TrainingConfig(epochs=40, patience=6))
    return Seq2SeqDetector(config).fit(train, progress=False)


def _windows(detector, readings):
    grids = entity_grids(readings, detector.channels, detector.step_us, 3)
    out = {}
    for entity, grid in grids.items():
        ends = np.arange(LENGTH - 1, len(grid), STRIDE)
        out[entity] = (ends, windowing.cut_windows(grid.values, ends, LENGTH), grid.values)
    return out


@pytest.mark.slow
def test_window_scores_separate_anomalies_and_blame_the_broken_channel(detector):
    test, labels = generate_sensor_data(n_entities=4, n_steps=3000, seed=2, anomalies_per_entity=10)
    all_scores, all_labels, blamed = [], [], []
    for entity, (ends, windows, _) in _windows(detector, test).items():
        result = detector.score_windows(windows)
        is_anomalous = np.zeros(len(ends), dtype=bool)
        for label in labels[labels["entity_id"] == entity].itertuples():
            overlap = (ends >= label.start_step) & (ends - LENGTH + 1 <= label.end_step)
            is_anomalous |= overlap
            if label.kind == "broken_channel":
                top = np.argmax(result.contributions[overlap], axis=1)
                blamed.extend(detector.channels[i] == label.channel for i in top)
        all_scores.append(result.score)
        all_labels.append(is_anomalous)
    auc = roc_auc(np.concatenate(all_labels), np.concatenate(all_scores))
    assert auc >= 0.95, auc
    assert len(blamed) >= 20
    assert np.mean(blamed) >= 0.9, np.mean(blamed)


@pytest.mark.slow
def test_forecast_intervals_reach_the_requested_coverage_on_held_out_normal_data(detector):
    held_out, _ = generate_sensor_data(n_entities=4, n_steps=2000, seed=3)
    inside = []
    for _, (ends, _, values) in _windows(detector, held_out).items():
        ends = ends[ends + HORIZON < len(values)]
        windows = windowing.cut_windows(values, ends, LENGTH)
        result = detector.score_windows(windows)
        truth = np.stack([values[e + 1:e + 1 + HORIZON] for e in ends])
        inside.append((truth >= result.lower) & (truth <= result.upper))
    coverage = float(np.mean(np.concatenate(inside)))
    assert abs(coverage - 0.9) <= 0.05, coverage
