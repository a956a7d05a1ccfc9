"""``seqwatch train`` from files: a model artifact that loads, and the training report beside it."""
import json
import subprocess
import sys

import pytest

from seqwatch.models.artifact import load_artifact
from seqwatch.models.synthetic import generate_sensor_data


@pytest.mark.slow
def test_train_writes_artifact_loss_curves_and_metrics(tmp_path, wide_csv):
    readings, _ = generate_sensor_data(n_entities=2, n_steps=700, seed=3)
    for entity, part in readings.groupby("entity_id"):
        wide_csv(part, tmp_path / "history" / f"{entity}.csv")
    model_dir = tmp_path / "model"
    result = subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "train", "--input",
                             str(tmp_path / "history" / "*.csv"), "--format", "wide", "--model-dir", str(model_dir),
                             "--window", "16", "--stride", "4", "--units", "8", "--epochs", "3", "--horizon", "2"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "epoch   1" in result.stderr  # progress while it trains
    summary = json.loads(result.stdout)
    detector = load_artifact(model_dir)
    assert summary["model_version"] == detector.model_version
    assert detector.channels == ("flow", "pressure", "temperature", "vibration") and detector.step_us == 10_000_000
    png = (model_dir / "loss_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    report = json.loads((model_dir / "training_report.json").read_text())
    assert len(report["history"]["loss"]) == 3 == len(report["history"]["val_loss"])
    assert report["metrics"]["threshold"] == pytest.approx(detector.threshold)
