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


def _train(*args):
    return subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "train", *args],
                          capture_output=True, text=True)


@pytest.mark.slow
def test_train_with_held_out_readings(tmp_path, wide_csv):
    """``--holdout-input``: all of ``--input`` trains the network; the held-out files set early stopping, the
    scorer and the threshold. Holdout files that do not fit end in one sentence before any training."""
    readings, _ = generate_sensor_data(n_entities=2, n_steps=400, seed=3)
    for entity, part in readings.groupby("entity_id"):
        wide_csv(part, tmp_path / "history" / f"{entity}.csv")
    held, _ = generate_sensor_data(n_entities=1, n_steps=300, seed=4)
    wide_csv(held, tmp_path / "held" / "pump-09.csv")
    wide_csv(held[held["channel"] != "vibration"], tmp_path / "held_lacking" / "pump-09.csv")
    base = ["--input", str(tmp_path / "history" / "*.csv"), "--format", "wide", "--window", "16", "--stride", "4",
            "--units", "8", "--epochs", "2", "--horizon", "2"]
    result = _train(*base, "--holdout-input", str(tmp_path / "held" / "*.csv"), "--model-dir",
                    str(tmp_path / "model"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "validation and calibration on 1200 held-out readings from 1 file(s)" in result.stderr
    assert json.loads(result.stdout)["holdout_readings"] == 1200
    report = json.loads((tmp_path / "model" / "training_report.json").read_text())
    # Windows of 16 + 2 forecast steps. Each 400-step history trains whole: (400-18)//4+1 = 96 windows each; the
    # 300-step holdout's (300-18)//4+1 = 71 windows are the validation and the calibration part.
    assert report["metrics"]["windows"] == {"train": 192, "validation": 71, "calibration": 71}
    assert report["metrics"]["holdout_readings"] == 1200
    detector = load_artifact(tmp_path / "model")
    assert detector.intervals is not None and detector.threshold > 0  # forecast intervals from the holdout too

    for holdout, message in [
        (tmp_path / "nothing" / "*.csv", "no input file matches"),
        (tmp_path / "held_lacking" / "*.csv",
         "the held-out readings lack channel(s) ['vibration'] of the training data"),
    ]:
        result = _train(*base, "--holdout-input", str(holdout), "--model-dir", str(tmp_path / "refused"))
        assert result.returncode == 2, result.stderr[-2000:]
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert message in lines[-1] and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "refused").exists()
