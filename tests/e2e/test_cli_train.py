"""``seqwatch train`` from files: a model artifact that loads, and the training report beside it."""
import json
import subprocess
import sys

import pandas as pd
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
def test_train_with_held_out_readings(tmp_path, wide_csv, cli_cases):
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

    refused = [(tmp_path / "nothing" / "*.csv", "no input file matches"),
               (tmp_path / "held_lacking" / "*.csv",
                "the held-out readings lack channel(s) ['vibration'] of the training data")]
    results = cli_cases([["train", *base, "--holdout-input", str(holdout), "--model-dir", str(tmp_path / "refused")]
                         for holdout, _ in refused])
    for (_, message), (code, stderr) in zip(refused, results, strict=True):
        assert code == 2, stderr[-2000:]
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert message in lines[-1] and "Traceback" not in stderr, stderr[-2000:]
    assert not (tmp_path / "refused").exists()


def test_train_leaves_out_what_a_run_would_quarantine_and_notes_constant_channels(tmp_path, wide_csv, cli_cases):
    """A sentinel (-9999 for "no reading") that the run's suite quarantines must not set the model's scaler:
    training on the history with sentinels gives the scaler of training on it without them, and as they are more
    than 1% of the readings a note says so. A channel that never changed in training is named in a note."""
    readings, _ = generate_sensor_data(n_entities=1, n_steps=700, seed=3)
    valve = readings[readings["channel"] == "flow"].assign(channel="valve", value=0.0)
    readings = pd.concat([readings, valve], ignore_index=True)
    sentinel = (readings["channel"] == "flow") & (readings.groupby("channel").cumcount() % 10 == 7)
    assert sentinel.sum() == 70  # of 3,500 readings: 2%
    wide_csv(readings[~sentinel], tmp_path / "clean" / "pump-01.csv")
    wide_csv(readings.assign(value=readings["value"].where(~sentinel, -9999.0)), tmp_path / "dirty" / "pump-01.csv")
    # Temperature every 4th step, as a historian exports a channel read less often: its other cells are empty,
    # which training counts apart from rejected readings (and max_gap 3 bridges).
    steps = readings.groupby("channel").cumcount()
    wide_csv(readings[(readings["channel"] != "temperature") | (steps % 4 == 0)], tmp_path / "sparse" / "pump-01.csv")
    # A channel whose every cell is empty: the model was trained without it and nothing said so.
    wide_csv(readings.assign(value=readings["value"].where(readings["channel"] != "vibration")),
             tmp_path / "blank" / "pump-01.csv")
    scalers, notes, stderr = {}, {}, {}
    names = ("clean", "dirty", "sparse", "blank")
    runs = cli_cases([["train", "--input", str(tmp_path / name), "--format", "wide", "--model-dir",
                       str(tmp_path / f"m-{name}"), "--window", "16", "--stride", "4", "--units", "4", "--epochs", "1"]
                      for name in names])
    for name, (code, stderr[name]) in zip(names, runs, strict=True):
        assert code == 0, stderr[name][-2000:]
        scalers[name] = load_artifact(tmp_path / f"m-{name}").scaler
        notes[name] = [line for line in stderr[name].splitlines() if line.startswith("seqwatch train: note:")
                       # these small trainings' thresholds are extrapolated, and say so (tested on its own)
                       and " calibration windows, fewer than the 1000 a risk of 0.001 needs " not in line]
    valve_note = ("seqwatch train: note: channel 'valve' held one value throughout the training readings, so the "
                  "model cannot tell how unusual a change of it is (it counts a change of 1 as one standard "
                  "deviation); train on history in which it varies, or leave it out (--ignore valve)")
    assert notes["clean"] == [valve_note]
    assert notes["dirty"] == [
        "seqwatch train: note: 70 of the training input's 3500 readings (2.0%) fail validation with suite 'sensor' "
        "(expectation_failed 70; the first expectation_failed: channel 'flow' value -9999.0 failed "
        "expect_column_values_to_be_between(value, max_value=1000000.0, min_value=0.0) for flow "
        "channels); they are left out, as a run quarantines them; "
        "if such readings are normal for this equipment, train and run with a suite that allows them (--suite)",
        valve_note]
    assert "training on 3430 readings from 1 file(s) (70 rejected readings skipped, of which failing validation: "\
           "expectation_failed 70)" in stderr["dirty"]
    assert "training on 2975 readings from 1 file(s) (0 rejected readings and 525 empty values skipped)" \
           in stderr["sparse"]
    assert notes["blank"] == [
        "seqwatch train: note: channel(s) ['vibration'] had no value at all in the training input (700 empty "
        "values): the model leaves them out, and runs will quarantine their readings as unknown_channel", valve_note]
    assert "vibration" not in load_artifact(tmp_path / "m-blank").channels
    assert scalers["dirty"] == scalers["clean"]
    assert load_artifact(tmp_path / "m-dirty").metrics["constant_channels"] == ["valve"]


def test_train_says_why_the_readings_it_could_not_read_were_rejected(tmp_path, wide_csv, cli_cases):
    """A European export (decimal commas) is refused with the reader's first reason, which names the setting to
    change, as a run's notice quotes it; 5% of rows with a timestamp that does not parse train on, with a note."""
    readings, _ = generate_sensor_data(n_entities=1, n_steps=800, seed=3)
    wide = readings.pivot(index="timestamp", columns="channel", values="value").reset_index()
    wide["timestamp"] = wide["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    (tmp_path / "eu").mkdir()
    wide.round(4).to_csv(tmp_path / "eu" / "pump-01.csv", sep=";", decimal=",", index=False)
    first_flow = f"{wide['flow'].round(4).iloc[0]:.4f}".rstrip("0").replace(".", ",")
    wide.loc[wide.index % 20 == 7, "timestamp"] = "n/a"
    (tmp_path / "gaps").mkdir()
    wide.to_csv(tmp_path / "gaps" / "pump-01.csv", index=False, float_format="%.4f")
    common = ["--format", "wide", "--window", "16", "--stride", "4", "--units", "4", "--epochs", "1"]
    (eu_code, eu_err), (gaps_code, gaps_err) = cli_cases(
        [["train", "--input", str(tmp_path / "eu"), "--sep", ";", "--model-dir", str(tmp_path / "m-eu"), *common],
         ["train", "--input", str(tmp_path / "gaps"), "--model-dir", str(tmp_path / "m-gaps"), *common]])
    assert eu_code == 2 and eu_err.strip().splitlines()[-1] == (
        f"seqwatch train: the training input holds no valid records (1 file(s), 3200 records, 3200 rejected: "
        f"parse_value 3200; the first parse_value: column 'flow': the value '{first_flow}' uses a decimal comma; set "
        f"the mapping's decimal to ',')")
    assert gaps_code == 0, gaps_err[-2000:]
    assert ("seqwatch train: note: 160 of the training input's 3200 readings (5.0%) could not be read "
            "(parse_timestamp 160; the first parse_timestamp: ") in gaps_err
    assert "training on 3040 readings from 1 file(s) (160 rejected readings skipped)" in gaps_err


def test_a_training_report_of_losses_of_zero_is_drawn_without_a_warning(small_model_dir, tmp_path):
    """Found by the bug hunt of training: losses of 0 (readings the model reproduces exactly) leaked matplotlib's
    "Data has no positive values, and therefore cannot be log-scaled" to the terminal."""
    import shutil
    import warnings

    from seqwatch.pipelines.report import write_training_report

    detector = load_artifact(small_model_dir)
    detector.history = {"loss": [0.0, 0.0], "val_loss": [0.0, 0.0]}
    folder = tmp_path / "model"
    shutil.copytree(small_model_dir, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_training_report(detector, folder)
    assert (folder / "loss_curves.png").stat().st_size > 0
