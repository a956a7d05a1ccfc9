"""Model refresh without a restart: a model root (one sub-directory per version) stands for its newest artifact,
and the RunInference handler switches to a newer version that appears while it runs, unless it does not fit."""
import logging
import os
import shutil
import time

import numpy as np
import pytest

from seqwatch.models.artifact import (ArtifactError, load_artifact, model_versions, read_metadata,
                                      resolve_model_dir, save_artifact)
from seqwatch.pipelines.inference import Seq2SeqModelHandler
from seqwatch.schemas.elements import WindowBatch


def _touch_later(path, seconds):
    """Make ``path``'s metadata look written ``seconds`` after now (file systems with coarse mtimes)."""
    stamp = time.time() + seconds
    os.utime(path / "metadata.json", (stamp, stamp))


@pytest.fixture
def model_root(small_model_dir, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(small_model_dir, root / "v1")
    return root


def _new_version(root, name, change, later_s=10):
    detector = load_artifact(root / "v1")
    change(detector)
    path = save_artifact(detector, root / name)
    _touch_later(path, later_s)
    return detector


@pytest.fixture
def windows(model_root, model_windows) -> WindowBatch:
    return model_windows(model_root / "v1")


def test_a_model_root_stands_for_its_newest_complete_artifact(model_root, tmp_path):
    v1 = read_metadata(model_root / "v1")["model_version"]
    assert resolve_model_dir(model_root) == model_root / "v1"
    assert read_metadata(model_root)["model_version"] == v1
    assert resolve_model_dir(model_root / "v1") == model_root / "v1"  # an artifact stands for itself

    v2 = _new_version(model_root, "v2", lambda d: setattr(d, "threshold", d.threshold * 0.5))
    (model_root / "v3-being-written").mkdir()  # no model.keras / metadata.json yet: not a version
    assert model_versions(model_root) == [model_root / "v1", model_root / "v2"]
    assert load_artifact(model_root).model_version == v2.model_version != v1

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactError, match="is not a seqwatch model"):
        read_metadata(empty)
    with pytest.raises(ArtifactError, match="does not exist"):
        read_metadata(tmp_path / "missing")


def test_the_handler_switches_to_a_new_version_and_every_window_says_which_scored_it(model_root, windows):
    handler = Seq2SeqModelHandler(str(model_root), watch_interval_s=1e-6)
    model = handler.load_model()
    first = list(handler.run_inference([windows], model))
    assert [s.model_version for s in first] == [model.model_version]

    new = _new_version(model_root, "v2", lambda d: setattr(d, "threshold", d.threshold * 0.5))
    second = list(handler.run_inference([windows], model))  # RunInference still hands the old model in
    assert second[0].model_version == new.model_version != model.model_version
    assert second[0].threshold == pytest.approx(model.threshold * 0.5)
    np.testing.assert_allclose(second[0].score, first[0].score, rtol=1e-5)  # same network, same scores
    np.testing.assert_array_equal(second[0].is_anomaly, second[0].score > second[0].threshold)

    shutil.rmtree(model_root / "v2")  # a version taken away: back to the newest one left
    third = list(handler.run_inference([windows], model))
    assert third[0].model_version == model.model_version


def test_a_version_that_does_not_fit_the_running_pipeline_is_refused(model_root, windows, caplog):
    handler = Seq2SeqModelHandler(str(model_root), watch_interval_s=1e-6)
    model = handler.load_model()
    _new_version(model_root, "v2", lambda d: setattr(d, "channels", tuple(reversed(d.channels))))
    with caplog.at_level(logging.WARNING, logger="seqwatch.pipelines.inference"):
        scored = list(handler.run_inference([windows], model))
        list(handler.run_inference([windows], model))
    assert scored[0].model_version == model.model_version
    refusals = [r for r in caplog.records if "refusing model version" in r.getMessage()]
    assert len(refusals) == 1  # said once, not on every batch


def test_a_version_on_another_grid_phase_is_refused_one_a_unit_apart_is_taken(model_root, windows, caplog):
    """The pipeline cuts windows on the running model's grid phase (grid_offset_us): a version whose phase is half
    a step away would score other readings than it learnt; one a hundredth of a step away (a model trained anew on
    the same devices, their phase rounded a unit apart) scores the same windows (found by the review)."""
    handler = Seq2SeqModelHandler(str(model_root), watch_interval_s=1e-6)
    model = handler.load_model()
    _new_version(model_root, "v2", lambda d: setattr(d, "grid_offset_us", d.step_us // 2))
    with caplog.at_level(logging.WARNING, logger="seqwatch.pipelines.inference"):
        assert list(handler.run_inference([windows], model))[0].model_version == model.model_version
    assert any("grid phase" in r.getMessage() for r in caplog.records)
    near = _new_version(model_root, "v3", lambda d: setattr(d, "grid_offset_us", d.step_us // 100), later_s=20)
    assert list(handler.run_inference([windows], model))[0].model_version == near.model_version


def test_a_damaged_new_version_is_skipped_until_it_loads(model_root, windows, caplog):
    handler = Seq2SeqModelHandler(str(model_root), watch_interval_s=1e-6)
    model = handler.load_model()
    new = _new_version(model_root, "v2", lambda d: setattr(d, "threshold", d.threshold * 2))
    good = (model_root / "v2" / "model.keras").read_bytes()
    (model_root / "v2" / "model.keras").write_bytes(good[: len(good) // 2])
    with caplog.at_level(logging.WARNING, logger="seqwatch.pipelines.inference"):
        assert list(handler.run_inference([windows], model))[0].model_version == model.model_version
    assert any("not usable yet" in r.getMessage() for r in caplog.records)
    (model_root / "v2" / "model.keras").write_bytes(good)
    assert list(handler.run_inference([windows], model))[0].model_version == new.model_version


def test_without_watching_or_between_looks_the_model_stays(model_root, windows):
    still = Seq2SeqModelHandler(str(model_root))
    slow = Seq2SeqModelHandler(str(model_root), watch_interval_s=3600)
    model = still.load_model()
    assert list(slow.run_inference([windows], model))[0].model_version == model.model_version  # first look
    _new_version(model_root, "v2", lambda d: setattr(d, "threshold", d.threshold * 0.5))
    assert list(still.run_inference([windows], model))[0].model_version == model.model_version
    assert list(slow.run_inference([windows], model))[0].model_version == model.model_version  # next look in 1 h


@pytest.mark.parametrize("args, message", [
    (["--watch-models", "0"], "seqwatch stream: --watch-models must be a positive number of seconds, got 0"),
    (["--model-dir", "{empty}"], "is not a seqwatch model: it needs model.keras and metadata.json"),
])
def test_stream_flags_about_models_stop_with_one_clear_sentence(args, message, small_model_dir, tmp_path, capsys):
    from seqwatch.pipelines.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "in.csv").write_text("entity_id,channel,timestamp,value\npump-0,flow,2024-01-01T00:00:00Z,1.0\n")
    args = [a.format(empty=tmp_path / "empty") for a in args]
    model = [] if "--model-dir" in args else ["--model-dir", str(small_model_dir)]
    code = main(["stream", "--source", "replay", "--input", str(tmp_path / "in.csv"), "--output",
                 str(tmp_path / "o"), *model, *args, "--runner=DirectRunner"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert message in err[-1] and len(err) == 1


def test_runs_pin_the_version_they_planned_for_and_watch_the_directory_given(model_root, tmp_path):
    from seqwatch.pipelines.batch import plan_run
    from seqwatch.pipelines.config import RunConfig
    from seqwatch.pipelines.streaming import plan_stream

    _new_version(model_root, "v2", lambda d: setattr(d, "threshold", d.threshold * 0.5))
    (tmp_path / "in.csv").write_text("entity_id,channel,timestamp,value\npump-0,flow,2024-01-01T00:00:00Z,1.0\n")
    batch = plan_run(RunConfig(inputs=(str(tmp_path / "in.csv"),), output=str(tmp_path / "o"),
                               model_dir=str(model_root)))
    stream = plan_stream(str(model_root), str(tmp_path / "s"))
    for plan in (batch, stream):
        assert plan.config.model_dir == str(model_root / "v2")
        assert plan.model_source == str(model_root)
        assert plan.model_version == read_metadata(model_root / "v2")["model_version"]


def test_a_version_of_another_model_id_is_refused_and_the_refusal_says_what_differs(model_root, windows, caplog):
    """Found by the bug hunt of model variants: a version of another model id was taken mid-stream, and an
    incident's notice and its alert came out with two ids; and a refusal printed the running model's geometry as
    a tuple instead of what differed."""
    handler = Seq2SeqModelHandler(str(model_root), watch_interval_s=1e-6)
    model = handler.load_model()
    _new_version(model_root, "v2", lambda d: setattr(d, "model_id", "another"))
    with caplog.at_level(logging.WARNING, logger="seqwatch.pipelines.inference"):
        scored = list(handler.run_inference([windows], model))
    assert scored[0].model_version == model.model_version
    (refusal,) = [r.getMessage() for r in caplog.records if "refusing model version" in r.getMessage()]
    assert f"its model id is 'another', the running model's {model.model_id!r}; still scoring with" in refusal
    shutil.rmtree(model_root / "v2")
    _new_version(model_root, "v3", lambda d: setattr(d, "channels", tuple(reversed(d.channels))))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="seqwatch.pipelines.inference"):
        list(handler.run_inference([windows], model))
    (refusal,) = [r.getMessage() for r in caplog.records if "refusing model version" in r.getMessage()]
    assert f"its channels are {list(reversed(model.channels))}, the running model's {list(model.channels)}" in refusal


def test_a_newest_version_whose_metadata_stays_unreadable_is_said_once(model_root, windows, caplog, monkeypatch):
    """Bug hunt of streams: a version folder whose metadata.json was cut short (a copy by hand) was skipped at
    every look without a word, for ever; it is now said once, after a grace period for a copy under way."""
    from seqwatch.pipelines import inference

    monkeypatch.setattr(inference, "UNREADABLE_GRACE_S", 3600.0)  # within the grace period, however slow
    handler = Seq2SeqModelHandler(str(model_root), watch_interval_s=1e-6)
    model = handler.load_model()
    new = _new_version(model_root, "v2", lambda d: setattr(d, "threshold", d.threshold * 2))
    whole = (model_root / "v2" / "metadata.json").read_text()
    (model_root / "v2" / "metadata.json").write_text(whole[:300])
    _touch_later(model_root / "v2", 10)
    with caplog.at_level(logging.WARNING, logger="seqwatch.pipelines.inference"):
        for _ in range(3):  # within the grace period: nothing said
            assert list(handler.run_inference([windows], model))[0].model_version == model.model_version
        assert not [r for r in caplog.records if "cannot be read" in r.getMessage()]
        monkeypatch.setattr(inference, "UNREADABLE_GRACE_S", 0.0)  # the grace period over
        for _ in range(3):
            assert list(handler.run_inference([windows], model))[0].model_version == model.model_version
    said = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(said) == 1 and str(model_root / "v2") in said[0] and "JSONDecodeError" in said[0], said
    (model_root / "v2" / "metadata.json").write_text(whole)
    _touch_later(model_root / "v2", 10)
    assert list(handler.run_inference([windows], model))[0].model_version == new.model_version


def test_the_scoring_steps_of_a_process_share_one_loaded_model(model_root):
    """A batch graph scores in two RunInference steps (panes cut where their file was read, and grouped panes),
    whose Shared handles are their own: each had loaded the model (0.06 s here) and traced it where both steps
    scored (0.17 s). Handlers of
    one artifact now get one detector while a step holds it; an artifact saved again in place is loaded anew."""
    first = Seq2SeqModelHandler(str(model_root / "v1")).load_model()
    second = Seq2SeqModelHandler(str(model_root / "v1")).load_model()
    assert second is first
    assert Seq2SeqModelHandler(str(model_root)).load_model() is first  # the root stands for the same version

    changed = load_artifact(model_root / "v1")
    changed.threshold = first.threshold * 0.5
    save_artifact(changed, model_root / "v1")
    _touch_later(model_root / "v1", 10)
    again = Seq2SeqModelHandler(str(model_root / "v1")).load_model()
    assert again is not first and again.threshold == pytest.approx(first.threshold * 0.5)
