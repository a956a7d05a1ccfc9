"""Model directories on S3 (``--model-dir s3://...``), against moto's S3 server on 127.0.0.1
(``seqwatch.pipelines.model_store``): a model root there stands for its newest version, which the launcher and each
worker copy once into their local cache and load from there; a watched root switches to a version published while
the pipeline runs; ``seqwatch train`` puts a version there, its metadata last, and fine-tunes from one there."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow.dataset as ds
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from seqwatch.models.artifact import ArtifactError, load_artifact, read_metadata, save_artifact
from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.inference import Seq2SeqModelHandler
from seqwatch.pipelines.model_store import (CACHE_FOLDER, local_model_dir, model_versions_of, pinned_model_dir,
                                            publish_model)


@pytest.fixture
def store(s3_store, tmp_path, monkeypatch):
    """The S3 server, Beam's file systems pointed at it, and this test's own local cache of models."""
    FileSystems.set_options(PipelineOptions(s3_store.beam_flags))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return s3_store


def _version(small_model_dir, folder, threshold_factor: float):
    """The small model with its threshold scaled, saved in ``folder`` (a version of its own)."""
    detector = load_artifact(small_model_dir)
    detector.threshold *= threshold_factor
    return save_artifact(detector, folder), detector.model_version


def _cached(tmp_path) -> list[str]:
    cache = tmp_path / "tmp" / CACHE_FOLDER
    return sorted(os.listdir(cache)) if cache.exists() else []


def test_a_model_root_on_s3_stands_for_its_newest_version_copied_once(store, small_model_dir, tmp_path):
    root = store.put_folder(small_model_dir, "models/a/v1").rsplit("/", 1)[0]
    v1 = read_metadata(small_model_dir)["model_version"]
    assert model_versions_of(root) == [f"{root}/v1"] and pinned_model_dir(root) == f"{root}/v1"
    assert pinned_model_dir(f"{root}/v1/") == f"{root}/v1"  # an artifact stands for itself
    first = local_model_dir(root)
    assert read_metadata(first)["model_version"] == v1 and first.startswith(str(tmp_path / "tmp" / CACHE_FOLDER))
    assert local_model_dir(f"{root}/v1") == first and len(_cached(tmp_path)) == 1  # copied once
    folder, v2 = _version(small_model_dir, tmp_path / "v2", 0.5)
    publish_model(str(folder), f"{root}/v2")
    assert store.keys("models/a/v2") == ["metadata.json", "model.keras"]
    assert model_versions_of(root) == [f"{root}/v1", f"{root}/v2"] and pinned_model_dir(root) == f"{root}/v2"
    assert read_metadata(local_model_dir(root))["model_version"] == v2 != v1
    # a version put again in place, with other objects, is copied again
    folder, v3 = _version(small_model_dir, tmp_path / "v3", 0.25)
    publish_model(str(folder), f"{root}/v2")
    assert read_metadata(local_model_dir(root))["model_version"] == v3 and len(_cached(tmp_path)) == 3
    assert not [name for name in _cached(tmp_path) if ".partial-" in name]  # no copy left half written


def test_copies_no_process_took_for_a_week_are_deleted_when_another_is_made(store, small_model_dir, tmp_path):
    root = store.put_folder(small_model_dir, "models/pruned/v1").rsplit("/", 1)[0]
    cache = tmp_path / "tmp" / CACHE_FOLDER
    cache.mkdir(parents=True)
    for name, days in (("old-copy", 8), ("recent-copy", 6), ("killed.partial-x", 0.1)):
        (cache / name).mkdir()
        (cache / name / "metadata.json").write_text("{}")
        stamp = time.time() - days * 86400
        os.utime(cache / name, (stamp, stamp))
    local = local_model_dir(root)
    assert sorted(_cached(tmp_path)) == sorted([os.path.basename(local), "recent-copy"])
    stamp = time.time() - 8 * 86400  # taken again by another process: kept
    os.utime(local, (stamp, stamp))
    from seqwatch.pipelines import model_store

    model_store._COPIED.clear()  # as in another process
    assert local_model_dir(root) == local and time.time() - os.stat(local).st_mtime < 60


def test_a_model_directory_on_s3_that_is_no_model_is_one_sentence(store, small_model_dir):
    with pytest.raises(ArtifactError) as missing:
        local_model_dir(store.url("models/none"))
    assert str(missing.value) == (f"model directory {store.url('models/none')} does not exist or holds no model (no "
                                  f"model.keras and metadata.json in it or in a version folder of it)")
    store.client.upload_file(str(small_model_dir / "metadata.json"), store.BUCKET, "models/half/metadata.json")
    with pytest.raises(ArtifactError, match=r"models/half is not a seqwatch model: it needs model.keras and "):
        local_model_dir(store.url("models/half"))
    # metadata edited by hand: said of the version's URL, not of the local cache's copy
    edited = json.loads((small_model_dir / "metadata.json").read_text())
    edited["threshold"] = None
    store.client.upload_file(str(small_model_dir / "model.keras"), store.BUCKET, "models/edited/model.keras")
    store.client.put_object(Bucket=store.BUCKET, Key="models/edited/metadata.json", Body=json.dumps(edited).encode())
    with pytest.raises(ArtifactError) as invalid:
        local_model_dir(store.url("models/edited"))
    assert str(invalid.value).startswith(f"the metadata of model {store.url('models/edited')} is invalid: ")
    assert CACHE_FOLDER not in str(invalid.value)


def test_a_stream_plans_with_the_newest_version_on_s3_by_its_url(store, small_model_dir, tmp_path):
    """As a batch run does (a whole stream with its model root on S3: tests/streaming/test_stream_object_store.py)."""
    from seqwatch.pipelines.streaming import plan_stream

    root = store.put_folder(small_model_dir, "models/stream/v1").rsplit("/", 1)[0]
    local = plan_stream(str(small_model_dir), str(tmp_path / "out"), source_name="replay:x")
    remote = plan_stream(root, str(tmp_path / "out"), source_name="replay:x")
    assert remote.config.model_dir == f"{root}/v1" and remote.model_source == root
    assert (remote.run_id, remote.channels, remote.pane_steps) == (local.run_id, local.channels, local.pane_steps)


def test_a_watched_model_root_on_s3_switches_to_a_version_put_there_while_it_scores(store, small_model_dir,
                                                                                    model_windows, tmp_path):
    root = store.put_folder(small_model_dir, "models/w/v1").rsplit("/", 1)[0]
    handler = Seq2SeqModelHandler(pinned_model_dir(root), watch_interval_s=1e-6, watch_dir=root)
    model = handler.load_model()
    windows = model_windows(small_model_dir)
    first = list(handler.run_inference([windows], model))
    assert first[0].model_version == model.model_version
    folder, v2 = _version(small_model_dir, tmp_path / "v2", 0.5)
    publish_model(str(folder), f"{root}/v2")
    second = list(handler.run_inference([windows], model))
    assert second[0].model_version == v2 != model.model_version
    assert second[0].threshold == pytest.approx(model.threshold * 0.5)
    np.testing.assert_allclose(second[0].score, first[0].score, rtol=1e-5)  # the same network


def _seqwatch(store, *argv) -> subprocess.CompletedProcess:
    env = {**store.env, "AWS_ENDPOINT_URL": store.endpoint}  # for train, which takes no Beam flag
    return subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", *argv], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.slow  # two runs of some 12 s each
def test_a_run_with_a_model_on_s3_scores_as_with_the_same_model_here(store, small_model_dir, wide_csv, tmp_path):
    """Two worker processes: each copies the version from S3 itself (a Dataflow worker has no other way to it)."""
    readings, _ = generate_sensor_data(n_entities=2, n_steps=600, seed=11, anomalies_per_entity=2)
    for entity, part in readings.groupby("entity_id"):
        wide_csv(part, tmp_path / "in" / f"{entity}.csv")
    root = store.put_folder(small_model_dir, "models/run/v1").rsplit("/", 1)[0]
    outputs = {}
    for name, model in (("s3", root), ("here", str(small_model_dir))):
        done = _seqwatch(store, "run", "--input", str(tmp_path / "in"), "--format", "wide", "--output",
                         str(tmp_path / name), "--model-dir", model, "--workers", "2", *store.beam_flags)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[name] = json.loads((tmp_path / name / "manifest.json").read_text())
    assert outputs["s3"]["model"]["dir"] == f"{root}/v1"  # the version it pinned, by its URL
    assert outputs["s3"]["model"]["model_version"] == outputs["here"]["model"]["model_version"]
    assert outputs["s3"]["records_in"] == outputs["s3"]["records_scored"] == 2 * 600 * 4
    for sink, keys in (("scores", ["entity_id", "window_end"]), ("alerts", ["entity_id", "start"])):
        remote, local = (ds.dataset(tmp_path / name / sink, format="parquet").to_table().drop_columns(["run_id"])
                         .to_pandas().sort_values(keys).reset_index(drop=True) for name in ("s3", "here"))
        assert len(remote) == len(local) > 0 and remote.equals(local), sink


@pytest.mark.slow  # two trainings of some 10 s each
def test_training_puts_a_version_on_s3_and_fine_tunes_from_it(store, tmp_path):
    train, _ = generate_sensor_data(n_entities=1, n_steps=1200, seed=3)
    wide = train.pivot(index="timestamp", columns="channel", values="value").reset_index()
    wide.to_csv(tmp_path / "train.csv", index=False)
    root = store.url("models/trained")
    first = _seqwatch(store, "train", "--input", str(tmp_path / "train.csv"), "--format", "wide", "--model-dir",
                      f"{root}/v1", "--window", "16", "--epochs", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout)
    assert summary["model_dir"] == f"{root}/v1" and summary["report"] == f"{root}/v1/training_report.json"
    assert {"metadata.json", "model.keras", "training_report.json"} <= set(store.keys("models/trained/v1"))
    assert json.loads(store.read("models/trained/v1/metadata.json"))["model_version"] == summary["model_version"]
    assert not list(tmp_path.glob("s3:*")) and not os.path.exists("s3:")  # nothing written to a folder "s3:"
    tuned = _seqwatch(store, "train", "--input", str(tmp_path / "train.csv"), "--format", "wide", "--model-dir",
                      f"{root}/v2", "--warm-start", root, "--epochs", "1")
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    assert json.loads(tuned.stdout)["warm_start"] == root
    assert model_versions_of(root) == [f"{root}/v1", f"{root}/v2"]
    tuned_metadata = json.loads(store.read("models/trained/v2/metadata.json"))
    assert tuned_metadata["metrics"].get("fine_tunes") == 1
    shutil.rmtree(tmp_path / "tmp", ignore_errors=True)
    # refused before any training: the root itself, a folder inside a version, the version it continues
    for model_dir, said in (
            (root, f"--model-dir {root} is a model root (versions v1, v2); give a new version folder inside it, such "
                   f"as {root}/v3"),
            (f"{root}/v1/more", f"--model-dir {root}/v1/more lies inside the model artifact {root}/v1: a run of "
                                f"--model-dir {root}/v1 scores with that artifact and never sees a version inside it; "
                                f"keep versions side by side in a model root (move {root}/v1 to {root}/v1/v1, then "
                                f"train into {root}/v1/more)")):
        refused = _seqwatch(store, "train", "--input", str(tmp_path / "train.csv"), "--format", "wide",
                            "--model-dir", model_dir, "--epochs", "1")
        assert refused.returncode == 2 and refused.stderr.strip() == f"seqwatch train: {said}", refused.stderr
    # a bucket that is not there: its lock object cannot be made (it had been a traceback of boto3's NoSuchBucket)
    nowhere = _seqwatch(store, "train", "--input", str(tmp_path / "train.csv"), "--format", "wide", "--model-dir",
                        "s3://no-such-bucket/models/v1", "--epochs", "1")
    assert nowhere.returncode == 2 and len(nowhere.stderr.strip().splitlines()) == 1, nowhere.stderr
    assert nowhere.stderr.startswith("seqwatch train: could not take the lock on s3://no-such-bucket/models/v1: "
                                     "s3://no-such-bucket/models/v1/.seqwatch.lock: An error occurred (NoSuchBucket)")
    same = _seqwatch(store, "train", "--input", str(tmp_path / "train.csv"), "--format", "wide", "--model-dir",
                     f"{root}/v2", "--warm-start", root, "--epochs", "1")
    assert same.returncode == 2 and same.stderr.startswith(f"seqwatch train: --model-dir {root}/v2 is the version "
                                                           f"--warm-start continues"), same.stderr


def test_a_run_with_a_model_directory_on_s3_that_is_not_there_is_one_sentence(store, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("timestamp,entity_id,channel,value\n")
    refused = _seqwatch(store, "run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                        "--model-dir", store.url("models/none"), *store.beam_flags)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (f"seqwatch run: model directory {store.url('models/none')} does not exist or "
                                      f"holds no model (no model.keras and metadata.json in it or in a version "
                                      f"folder of it)")
