"""Inputs, model and outputs on Google Cloud Storage (``gs://``), against gcp-storage-emulator on 127.0.0.1 (the
``gcs_store`` fixture, with a metadata server that hands Google's auth library its credentials): a batch run by its
CLI with the model directory on GCS, its commit of the staged sinks (folders are prefixes there), a replay of its
quarantine there, and the store's failures said in one sentence. The Parquet is read back from the emulator with
pyarrow's GCS file system."""
import json
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from seqwatch.pipelines.batch import SINKS
from seqwatch.schemas.arrow import SCHEMAS_BY_SINK

pytestmark = pytest.mark.slow  # CLI runs of about 5-10 s each


def _seqwatch(store, *argv, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", *argv], capture_output=True, text=True,
                          env=env or store.env, timeout=300)


@pytest.fixture(scope="module")
def inputs(store_inputs):
    """Two pumps' wide CSVs (900 steps each, two anomalies each), with a bad line in pump-01's."""
    return store_inputs


@pytest.fixture(scope="module")
def runs(gcs_store, inputs, small_model_dir, store_inputs_run_here):
    """The same run twice: inputs (under a key with a space and an accent), model and output on GCS, and all
    local."""
    source = gcs_store.put_folder(inputs, "plant/jour 1é")
    models = gcs_store.put_folder(small_model_dir, "models/pumps/v1").rsplit("/", 1)[0]
    remote = _seqwatch(gcs_store, "run", "--input", source, "--format", "wide", "--output", gcs_store.url("out"),
                       "--model-dir", models, "--pane-steps", "256")
    assert remote.returncode == 0, remote.stderr[-3000:]
    return remote, store_inputs_run_here


def _remote_table(store, prefix: str):
    return ds.dataset(f"{store.BUCKET}/{prefix}", filesystem=store.fs, format="parquet").to_table()


def test_a_run_on_gcs_writes_what_a_local_run_writes_and_its_counts_reconcile(gcs_store, runs, same_sinks):
    remote_run, local_out = runs
    manifest = json.loads(gcs_store.read("out/manifest.json"))
    local_manifest = json.loads((local_out / "manifest.json").read_text())
    assert manifest["records_in"] == 2 * 900 * 4 == local_manifest["records_in"]
    assert manifest["records_in"] == manifest["records_scored"] + manifest["records_quarantined"]
    assert manifest["records_quarantined"] == local_manifest["records_quarantined"] == 4
    assert manifest["inputs"] == [gcs_store.url(f"plant/jour 1é/pump-0{n}.csv") for n in (1, 2)]
    assert manifest["model"]["dir"].startswith(gcs_store.url("models/pumps")), manifest["model"]
    assert _remote_table(gcs_store, "out/quarantine").column("records").to_pylist() == [4]
    # the notice reads the quarantine on GCS: its notes and where it lies
    assert f"each record and its reason is in {gcs_store.url('out/quarantine')}" in remote_run.stderr
    assert "4 of 7200 readings were quarantined (parse_timestamp 4)" in remote_run.stderr
    assert manifest["stages"]["alerts"] == local_manifest["stages"]["alerts"] > 0
    # the files it lists are those under the output (they had been listed as none on a store)
    assert {k: v for k, v in manifest["outputs"].items() if k != "quarantine"} == \
        {k: v for k, v in local_manifest["outputs"].items() if k != "quarantine"}
    assert sorted(f for files in manifest["outputs"].values() for f in files) == \
        sorted(key for key in gcs_store.keys("out") if key.endswith(".parquet"))
    assert len(manifest["outputs"]["quarantine"]) == 1 and manifest["stages"]["files_written"] == \
        sum(len(files) for files in manifest["outputs"].values())
    same_sinks(lambda sink: _remote_table(gcs_store, f"out/{sink}"), local_out)


def test_a_run_on_gcs_that_commits_in_its_job_writes_what_a_local_run_writes(gcs_store, runs, inputs,
                                                                             small_model_dir, same_sinks):
    """``--commit-in-job`` (a Flex Template's run): the job's last step commits into the bucket, under the lock
    object there, and leaves neither its staging nor the lock."""
    _, local_out = runs
    source = gcs_store.put_folder(inputs, "plant/by-job")
    done = _seqwatch(gcs_store, "run", "--input", source, "--format", "wide", "--output", gcs_store.url("job-out"),
                     "--model-dir", str(small_model_dir), "--pane-steps", "256", "--commit-in-job")
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads(gcs_store.read("job-out/manifest.json"))
    assert manifest["committed_by"] == "job" and json.loads(done.stdout)["run_id"] == manifest["run_id"]
    assert manifest["records_in"] == manifest["records_scored"] + manifest["records_quarantined"] > 0
    same_sinks(lambda sink: _remote_table(gcs_store, f"job-out/{sink}"), local_out)
    assert not [key for key in gcs_store.keys("job-out") if key.startswith(("_job-staging-", ".seqwatch.lock"))]


def test_a_run_on_gcs_leaves_its_sinks_only_each_file_of_its_sink_schema(gcs_store, runs):
    keys = gcs_store.keys("out")
    assert {key.split("/")[0] for key in keys} == {*SINKS, "manifest.json"}, keys  # no staging, probe or lock left
    for sink in SINKS:
        files = [key for key in keys if key.startswith(sink + "/")]
        assert files and not any(key.endswith("/empty.parquet") for key in files), (sink, files)
        for key in files:
            schema = pq.read_schema(pa.BufferReader(gcs_store.read(f"out/{key}")))
            assert schema.equals(SCHEMAS_BY_SINK[sink], check_metadata=True), key


def test_a_replay_on_gcs_scores_a_fixed_record_from_its_quarantine_there(gcs_store, runs, inputs, small_model_dir):
    """The record fixed in an edited JSON Lines export beside a copy of the run's quarantine on GCS; the replay's
    sources and output there too."""
    for key in gcs_store.keys("out"):
        gcs_store.bucket.copy_blob(gcs_store.bucket.blob(f"out/{key}"), gcs_store.bucket, f"fixed/{key}")
    lines = (inputs / "pump-01.csv").read_text().splitlines()
    before, after = (pd.Timestamp(lines[n].split(",", 1)[0]) for n in (39, 41))
    fixed_text = f"{(before + (after - before) / 2).strftime('%Y-%m-%dT%H:%M:%SZ')},{lines[40].split(',', 1)[1]}"
    record = {**_remote_table(gcs_store, "out/quarantine").to_pylist()[0], "raw": fixed_text}
    gcs_store.bucket.blob("fixed/quarantine/fixed.jsonl").upload_from_string(
        json.dumps(record, default=str).encode() + b"\n")
    replayed = _seqwatch(gcs_store, "replay", "--quarantine", gcs_store.url("fixed"), "--output",
                         gcs_store.url("replayed"), "--model-dir", str(small_model_dir))
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    manifest = json.loads(gcs_store.read("replayed/manifest.json"))
    assert (manifest["records_in"], manifest["records_scored"], manifest["records_quarantined"]) == (3600, 3600, 0)
    assert (manifest["replay"]["scored_now"], manifest["replay"]["fixed_lines"]) == (4, 1)
    pump = gcs_store.url("plant/jour 1é/pump-01.csv")
    assert manifest["inputs"] == manifest["replay"]["sources"] == [pump]
    assert json.loads(gcs_store.read("replayed/replay_edits.json"))["edits"] == [
        {"source": pump, "line": 41, "raw": fixed_text}]


def test_a_bucket_that_is_not_there_or_a_store_out_of_reach_is_one_sentence(gcs_store, inputs, small_model_dir,
                                                                             tmp_path):
    source = gcs_store.put_folder(inputs, "plant/day3")
    model = ["--model-dir", str(small_model_dir)]
    no_output_bucket = _seqwatch(gcs_store, "run", "--input", source, "--format", "wide", "--output",
                                 "gs://no-such-bucket/out", *model)
    assert (no_output_bucket.returncode, no_output_bucket.stderr) == (2, (
        "seqwatch run: cannot write the outputs under --output gs://no-such-bucket/out: there is no bucket "
        "'no-such-bucket' at that store\n"))
    no_input_bucket = _seqwatch(gcs_store, "run", "--input", "gs://no-such-bucket/day/*.csv", "--format", "wide",
                                "--output", gcs_store.url("never"), *model)
    assert (no_input_bucket.returncode, no_input_bucket.stderr) == (2, (
        "seqwatch run: no input file matches 'gs://no-such-bucket/day/*.csv': there is no bucket 'no-such-bucket' "
        "at that store\n"))
    assert gcs_store.keys("never") == []
    # an emulator that does not answer: said at once (Beam's own requests retry for more than 5 minutes)
    out_of_reach = _seqwatch(gcs_store, "run", "--input", source, "--format", "wide", "--output",
                             gcs_store.url("never"), *model,
                             env={**gcs_store.env, "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"})
    assert out_of_reach.returncode == 2
    assert out_of_reach.stderr.startswith(
        f"seqwatch run: gs://{gcs_store.BUCKET}: no answer from http://127.0.0.1:9 (Connection refused); Google "
        f"Cloud Storage is reached with Application Default Credentials"), out_of_reach.stderr
    assert len(out_of_reach.stderr.strip().splitlines()) == 1, out_of_reach.stderr
    # a Beam flag's bucket as well: Beam's check of Dataflow's options asks GCS about --temp_location's bucket (it had
    # retried for minutes)
    dataflow = _seqwatch(gcs_store, "run", "--input", str(inputs / "pump-02.csv"), "--format", "wide", "--output",
                         str(tmp_path / "out"), *model, "--runner=DataflowRunner", "--project=seqwatch-test",
                         "--region=us-central1", "--temp_location=gs://seqwatch-temp/tmp",
                         env={**gcs_store.env, "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"})
    assert dataflow.returncode == 2
    assert dataflow.stderr.startswith("seqwatch run: gs://seqwatch-temp: no answer from http://127.0.0.1:9 "
                                      "(Connection refused); "), dataflow.stderr


def test_an_input_on_gcs_is_known_by_its_crc32c(gcs_store, monkeypatch):
    """As on S3 (``test_object_store.py``): the store's checksum, read without the object, and a change seen."""
    from seqwatch.pipelines import batch

    gcs_store.write("digest/a.csv", b"entity_id,channel,timestamp,value\npump-01,flow,2026-01-05T00:00:00Z,1.0\n")
    url = gcs_store.url("digest/a.csv")
    crc32c = gcs_store.bucket.get_blob("digest/a.csv").crc32c
    sha256 = batch._sha256_file

    def not_read(path):
        raise AssertionError(f"{path} was read to hash it")

    gcs_store.use_here(monkeypatch)
    monkeypatch.setattr(batch, "_sha256_file", not_read)
    recorded = batch.input_digest(url)
    assert crc32c and recorded == f"{batch.STORE_DIGEST_PREFIX}{crc32c}"
    monkeypatch.setattr(batch, "_sha256_file", sha256)
    gcs_store.write("digest/a.csv", b"changed\n")
    assert batch.input_digest(url) != recorded
