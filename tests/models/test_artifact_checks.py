"""A ``metadata.json`` edited by hand is refused where it is read, in one sentence, before any pipeline or training
starts (found by a bug hunt: run, replay, stream and train --warm-start had failed in a Beam worker with a
traceback, or scored with a threshold of ``null``, or fine-tuned into a model of nonsense)."""
import json
import shutil

import pytest

from seqwatch.models.artifact import ArtifactError, check_model_file, load_artifact, read_metadata, save_artifact
from seqwatch.models.synthetic import generate_sensor_data

STEP_SECONDS = 10


def _edited(model_dir, copy_to, change):
    """A copy of the artifact ``model_dir`` whose metadata ``change(metadata)`` edited in place."""
    shutil.copytree(model_dir, copy_to)
    path = copy_to / "metadata.json"
    metadata = json.loads(path.read_text())
    change(metadata)
    path.write_text(json.dumps(metadata))
    return copy_to


def _set(*keys, value):
    """A change that sets ``metadata[keys[0]][keys[1]]... = value``."""
    def change(metadata):
        node = metadata
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return change


@pytest.fixture(scope="module")
def headless_model_dir(small_model_dir, tmp_path_factory):
    """A real artifact without a forecast head (the small model's scaler and calibration, an untrained network of
    its window and channels): what the horizon checks compare a metadata's forecast_horizon with."""
    import dataclasses

    from seqwatch.models.builders import build_seq2seq

    detector = load_artifact(small_model_dir)
    detector.config = dataclasses.replace(
        detector.config, architecture=dataclasses.replace(detector.config.architecture, forecast_horizon=0))
    detector.model = build_seq2seq(detector.config.architecture, detector.window_length, len(detector.channels))
    detector.intervals = None
    return save_artifact(detector, tmp_path_factory.mktemp("headless") / "model")


@pytest.mark.parametrize("change, message", [
    (_set("threshold", value="high"), 'threshold is "high", not a finite number'),
    (_set("threshold", value=None), "threshold is null, not a finite number"),
    (_set("threshold", value=float("inf")), "threshold is Infinity, not a finite number"),
    (lambda m: m.pop("tail"), "it lacks 'tail'"),
    (_set("tail", "scale", value=0), "tail scale is 0, not > 0"),
    (_set("tail", "sorted_scores", value=[]), "tail sorted_scores must be a list of finite numbers"),
    # found by the bug hunt of suites and calibration: accepted, then --online-calibration raised mid-run
    (_set("tail", "sorted_scores", value=list(range(19))), "tail sorted_scores holds 19 scores, fewer than the 20 a "
                                                           "tail fit needs"),
    (_set("config", "window", "stride", value=99), "stride must be in [1, length=16], got 99"),
    (_set("config", "window", "stride", value=0), "stride must be in [1, length=16], got 0"),
    (_set("step_us", value=0), "step_us (the sampling interval in µs) must be a whole number > 0, got 0"),
    (_set("step_us", value=-10), "must be a whole number > 0, got -10"),
    (_set("grid_offset_us", value=6_000_000), "grid_offset_us (the phase of the model's grid in µs) must be a whole "
                                              "number of at most half the step, 5000000, either way, got 6000000"),
    (_set("grid_offset_us", value="5s"), 'either way, got "5s"'),
    (_set("config", "architecture", "forecast_horizon", value="5"), 'forecast_horizon must be a whole number, got "5"'),
    (_set("config", "architecture", "forecast_horizon", value=-1), "forecast_horizon must be >= 0, got -1"),
    (_set("scaler", "scale", value=[0, 0, 0, 0]), "scaler scale of channel 'flow' is 0, not > 0"),
    (_set("scaler", "scale", value=[1, 1, float("inf"), 1]), "scaler scale must hold finite numbers > 0 (one per "
                                                             "channel), got Infinity"),
    (_set("scaler", "mean", value=[0.0, 1.0]), "scaler mean must be a list of 4 finite numbers (one per channel), "
                                               "got a list of 2"),
    (_set("scorer", "precision", value=[1.0]), "scorer precision must be a list of 16 finite numbers"),
    (_set("intervals", value=None), "forecast_horizon is 4, but intervals is null"),
    (_set("channels", value=["flow", "flow", "pressure", "vibration"]), "channels names a channel twice"),
    (_set("value_bounds", value={"flow": [5, 1]}), "value_bounds must map channels of the model to [low, high] "
                                                   "(numbers, or null for no bound, low <= high), got [5, 1] for 'flow'"),
    (_set("value_bounds", value={"flow": [0]}), "got [0] for 'flow'"),
    (_set("value_bounds", value={"speed": [0, None]}), "value_bounds names 'speed', which is not among the channels"),
    (_set("value_bounds", value=[0, 1]), "value_bounds must map channels of the model to [low, high]"),
    (_set("training_suite", value=5), "training_suite must name a suite (a bundled family or a file's path), got 5"),
    (_set("readings_span_us", value=[20, 10]), "readings_span_us (the first and last time of the training readings, "
                                               "in µs) must be two whole numbers, the first not after the second, "
                                               "got [20, 10]"),
    (_set("readings_span_us", value=["2026-11-28"]), 'the first not after the second, got ["2026-11-28"]'),
])
def test_hand_edited_metadata_is_refused_where_it_is_read(small_model_dir, tmp_path, change, message):
    edited = _edited(small_model_dir, tmp_path / "edited", change)
    with pytest.raises(ArtifactError) as refused:
        read_metadata(edited)
    text = str(refused.value)
    assert text.startswith(f"the metadata of model {edited} is invalid: ")
    assert message in text, text
    assert text.endswith("restore the metadata.json it was saved with, or train the model again")
    with pytest.raises(ArtifactError, match="is invalid"):
        load_artifact(edited)


def test_the_network_file_is_read_without_keras_as_keras_reads_it(small_model_dir, headless_model_dir):
    from seqwatch.models.artifact import network_encoder, network_shape

    assert network_shape(small_model_dir / "model.keras") == ((16, 4), 4)
    assert network_shape(headless_model_dir / "model.keras") == ((16, 4), None)
    detector = load_artifact(small_model_dir)
    assert tuple(detector.model.inputs[0].shape)[1:] == (16, 4)
    assert tuple(detector.model.output["forecast"].shape)[1:] == (4, 4)
    assert network_shape(small_model_dir / "metadata.json") is None  # not a zip: left to Keras' load
    assert network_encoder(small_model_dir / "model.keras") == {"cell": "lstm", "units": 16, "layers": 1,
                                                                "bidirectional": False}
    assert network_encoder(small_model_dir / "metadata.json") is None


def _intervals(steps):
    return {"coverage": 0.9, "half_width": [[1.0, 1.0, 1.0, 1.0]] * steps}


@pytest.mark.parametrize("headless, change, message", [
    (False, _set("config", "window", "length", value=32),
     "its network takes windows of 16 steps of 4 channels, its metadata say 32 steps of 4 channels"),
    (False, _set("config", "architecture", "forecast_horizon", value=0),
     "its network has a forecast head of 4 steps, its metadata say forecast_horizon 0"),
    (False, lambda m: m["config"]["architecture"].update(forecast_horizon=5) or m.update(intervals=_intervals(5)),
     "its network has a forecast head of 4 steps, its metadata say forecast_horizon 5"),
    (True, lambda m: m["config"]["architecture"].update(forecast_horizon=5) or m.update(intervals=_intervals(5)),
     "its network has no forecast head, its metadata say forecast_horizon 5"),
    # found by the check of the README's claims: these ran, and a fine-tuning wrote "units": 32 into a new version
    # whose network has 16
    (False, _set("config", "architecture", "units", value=32),
     "its network's encoder has 1 LSTM layer(s) of 16 units, its metadata say 1 LSTM layer(s) of 32 units"),
    (False, lambda m: m["config"]["architecture"].update(cell="gru", layers=3, bidirectional=True),
     "its network's encoder has 1 LSTM layer(s) of 16 units, its metadata say 3 bidirectional GRU layer(s) of 16 "
     "units"),
])
def test_metadata_that_do_not_fit_the_network_are_refused_before_keras_loads_it(
        small_model_dir, headless_model_dir, tmp_path, headless, change, message):
    edited = _edited(headless_model_dir if headless else small_model_dir, tmp_path / "edited", change)
    metadata = read_metadata(edited)  # the values themselves are well-formed
    with pytest.raises(ArtifactError) as refused:
        check_model_file(edited, metadata)  # what plan_run and plan_stream call before the pipeline
    assert str(refused.value) == (f"model {edited} does not fit its metadata.json: {message}; restore the "
                                  f"metadata.json it was saved with")
    with pytest.raises(ArtifactError, match="does not fit its metadata.json"):
        load_artifact(edited)


def test_a_model_without_a_forecast_head_loads_and_scores(headless_model_dir):
    import numpy as np

    detector = load_artifact(headless_model_dir)
    assert detector.horizon == 0 and detector.intervals is None
    scores = detector.score_windows(np.ones((3, 16, 4)) * [100.0, 3.0, 60.0, 0.5])
    assert scores.forecast is None and np.isfinite(scores.score).all()


def test_run_stream_and_warm_start_refuse_hand_edited_metadata_in_one_sentence(small_model_dir, headless_model_dir,
                                                                              tmp_path, wide_csv, cli_cases):
    """Before, each of these printed ~28 lines of Beam traceback or failed in the worker (exit 1)."""
    readings, _ = generate_sensor_data(n_entities=1, n_steps=300, step_seconds=STEP_SECONDS, seed=3)
    csv = wide_csv(readings, tmp_path / "live" / "pump-01.csv")
    models = {
        "threshold": (_edited(small_model_dir, tmp_path / "threshold", _set("threshold", value="high")),
                      'threshold is "high", not a finite number'),
        "step": (_edited(small_model_dir, tmp_path / "step", _set("step_us", value=0)), "got 0"),
        "length": (_edited(small_model_dir, tmp_path / "length", _set("config", "window", "length", value=32)),
                   "its network takes windows of 16 steps of 4 channels, its metadata say 32 steps"),
        "horizon": (_edited(headless_model_dir, tmp_path / "horizon",
                            lambda m: m["config"]["architecture"].update(forecast_horizon=5)
                            or m.update(intervals=_intervals(5))),
                    "its network has no forecast head, its metadata say forecast_horizon 5"),
        "scale": (_edited(small_model_dir, tmp_path / "scale", _set("scaler", "scale", value=[0, 0, 0, 0])),
                  "scaler scale of channel 'flow' is 0, not > 0"),
    }
    cases = []
    for name, (model, message) in models.items():
        cases.append((["run", "--input", str(csv), "--format", "wide", "--output", str(tmp_path / f"out-{name}"),
                       "--model-dir", str(model)], message))
        cases.append((["train", "--input", str(csv), "--format", "wide", "--warm-start", str(model),
                       "--model-dir", str(tmp_path / f"tuned-{name}"), "--epochs", "1"], message))
    cases.append((["stream", "--source", "replay", "--input", str(csv), "--format", "wide", "--output",
                   str(tmp_path / "out-stream"), "--model-dir", str(models["threshold"][0]), "--runner=DirectRunner"],
                  models["threshold"][1]))
    for (args, message), (code, stderr) in zip(cases, cli_cases([args for args, _ in cases]), strict=True):
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code == 2, (args, stderr[-3000:])
        assert len(lines) == 1 and message in lines[0], (args, stderr[-3000:])
    assert not any((tmp_path / f"tuned-{name}").exists() for name in models)


def test_a_watched_model_root_warns_of_a_new_version_with_hand_edited_metadata(small_model_dir, tmp_path, caplog):
    """A running job with --watch-models keeps its model and says why, once, rather than skipping such a version
    without a word at every look (its metadata are complete, so it is not one being written)."""
    import logging
    import os
    import time

    import numpy as np

    from seqwatch.pipelines.inference import Seq2SeqModelHandler
    from seqwatch.schemas.elements import WindowBatch

    root = tmp_path / "models"
    shutil.copytree(small_model_dir, root / "v1")
    handler = Seq2SeqModelHandler(str(root), watch_interval_s=1e-6)
    model = handler.load_model()
    edited = _edited(small_model_dir, root / "v2", lambda m: m.update(threshold="high", model_version="v-edited"))
    later = time.time() + 10
    os.utime(edited / "metadata.json", (later, later))
    values = np.ones((2, 16, 4), dtype=np.float32) * np.float32([100.0, 3.0, 60.0, 0.5])
    windows = WindowBatch("pump-0", 0, model.channels, model.step_us, np.arange(2, dtype=np.int64) * model.step_us,
                          values, np.ones(values.shape, bool), 2)
    with caplog.at_level(logging.WARNING, logger="seqwatch.pipelines.inference"):
        for _ in range(3):
            assert list(handler.run_inference([windows], model))[0].model_version == model.model_version
    warned = [r.getMessage() for r in caplog.records if "v-edited" in r.getMessage()]
    assert len(warned) == 1 and 'threshold is "high", not a finite number' in warned[0], warned


def test_metrics_that_are_not_finite_are_saved_as_null_so_the_metadata_are_standard_json(small_model_dir, tmp_path):
    """Found by the bug hunt of model artifacts: a best_val_loss of NaN (no validation loss) was written as the
    non-standard JSON ``NaN``, which jq and JavaScript refuse."""
    detector = load_artifact(small_model_dir)
    detector.metrics = {**detector.metrics, "best_val_loss": float("nan")}
    detector.history = {**detector.history, "loss": [0.5, float("inf")]}
    saved = save_artifact(detector, tmp_path / "copy")

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    metadata = json.loads((saved / "metadata.json").read_text(), parse_constant=refuse)
    assert metadata["metrics"]["best_val_loss"] is None and metadata["history"]["loss"] == [0.5, None]
    assert load_artifact(saved).threshold == detector.threshold
