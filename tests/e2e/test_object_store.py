"""Inputs and outputs on S3 (``s3://``), against moto's S3 server on 127.0.0.1: the batch run by its CLI, its
commit of the staged sinks (folders are prefixes there), a second run into the same output, training from S3, and
a store's failures said in one sentence. The Parquet is read back from the server with pyarrow's S3 file system."""
import json
import subprocess
import sys

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.batch import SINKS
from seqwatch.pipelines.object_store import move_path, objects_under, path_exists, store_error, store_sentence
from seqwatch.schemas.arrow import SCHEMAS_BY_SINK

pytestmark = pytest.mark.slow  # CLI runs of about 10-15 s each


def _seqwatch(store, *argv, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", *argv], capture_output=True, text=True,
                          env=env or store.env, timeout=300)


@pytest.fixture(scope="module")
def inputs(store_inputs):
    """Two pumps' wide CSVs (900 steps each, two anomalies each), with a bad line in pump-01's."""
    return store_inputs


@pytest.fixture(scope="module")
def runs(s3_store, inputs, small_model_dir, store_inputs_run_here):
    """The same run twice: inputs and output on S3, and both local."""
    source = s3_store.put_folder(inputs, "plant/day1")
    remote = _seqwatch(s3_store, "run", "--input", source, "--format", "wide", "--output", s3_store.url("out"),
                       "--model-dir", str(small_model_dir), "--pane-steps", "256", *s3_store.beam_flags)
    assert remote.returncode == 0, remote.stderr[-3000:]
    return remote, store_inputs_run_here


def _remote_table(store, prefix: str):
    return ds.dataset(f"{store.BUCKET}/{prefix}", filesystem=store.fs, format="parquet").to_table()


def test_a_run_on_s3_writes_what_a_local_run_writes_and_its_counts_reconcile(s3_store, runs, same_sinks):
    _, local_out = runs
    manifest = json.loads(s3_store.read("out/manifest.json"))
    local_manifest = json.loads((local_out / "manifest.json").read_text())
    assert manifest["records_in"] == 2 * 900 * 4 == local_manifest["records_in"]
    assert manifest["records_in"] == manifest["records_scored"] + manifest["records_quarantined"]
    assert manifest["records_quarantined"] == local_manifest["records_quarantined"] == 4
    assert _remote_table(s3_store, "out/quarantine").column("records").to_pylist() == [4]
    assert manifest["stages"]["alerts"] == local_manifest["stages"]["alerts"] > 0
    # the files it lists are those under the output (they had been listed as none on a store)
    assert {k: v for k, v in manifest["outputs"].items() if k != "quarantine"} == \
        {k: v for k, v in local_manifest["outputs"].items() if k != "quarantine"}
    assert len(manifest["outputs"]["quarantine"]) == 1  # named by its source, which is another path here
    assert sorted(f for files in manifest["outputs"].values() for f in files) == \
        sorted(key for key in s3_store.keys("out") if key.endswith(".parquet"))
    same_sinks(lambda sink: _remote_table(s3_store, f"out/{sink}"), local_out)


def test_a_run_on_s3_that_commits_in_its_job_writes_what_a_local_run_writes(s3_store, runs, inputs, small_model_dir,
                                                                           same_sinks):
    """``--commit-in-job``: the job's last step commits into the bucket, holding the lock object there, and leaves
    neither its staging nor the lock."""
    _, local_out = runs
    source = s3_store.put_folder(inputs, "plant/by-job")
    done = _seqwatch(s3_store, "run", "--input", source, "--format", "wide", "--output", s3_store.url("job-out"),
                     "--model-dir", str(small_model_dir), "--pane-steps", "256", "--commit-in-job",
                     *s3_store.beam_flags)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads(s3_store.read("job-out/manifest.json"))
    assert manifest["committed_by"] == "job" and json.loads(done.stdout)["run_id"] == manifest["run_id"]
    assert manifest["records_quarantined"] == 4 and manifest["records_in"] == 2 * 900 * 4
    same_sinks(lambda sink: _remote_table(s3_store, f"job-out/{sink}"), local_out)
    assert not [key for key in s3_store.keys("job-out") if key.startswith(("_job-staging-", ".seqwatch.lock"))]


def test_a_fine_tuning_leaves_out_the_alerts_of_a_run_on_s3_as_of_the_same_run_here(s3_store, runs, inputs):
    """``seqwatch train --warm-start ... --exclude-alerts s3://...``: the run's alerts and the files it read are
    found on S3 as in a local folder (the folder had been "not the output folder of a seqwatch run")."""
    from seqwatch.pipelines.retraining import alert_spans, unscored_inputs

    _, local_out = runs
    FileSystems.set_options(PipelineOptions(s3_store.beam_flags))
    remote = alert_spans(s3_store.url("out")).sort_values(["entity_id", "start_us"]).reset_index(drop=True)
    local = alert_spans(str(local_out)).sort_values(["entity_id", "start_us"]).reset_index(drop=True)
    assert len(remote) > 0 and remote.equals(local)
    read = [s3_store.url(f"plant/day1/{name}") for name in ("pump-01.csv", "pump-02.csv")]
    assert unscored_inputs(read, [s3_store.url("out")]) == []  # the files the run read, as they are
    s3_store.client.put_object(Bucket=s3_store.BUCKET, Key="plant/later/pump-01.csv",
                               Body=(inputs / "pump-01.csv").read_bytes())
    assert unscored_inputs([s3_store.url("plant/later/pump-01.csv")], [s3_store.url("out")]) == [
        s3_store.url("plant/later/pump-01.csv")]  # a file the run did not read
    with pytest.raises(FileNotFoundError, match="is not the output folder of a seqwatch run"):
        alert_spans(s3_store.url("plant"))


def test_a_run_on_s3_leaves_its_sinks_only_each_file_of_its_sink_schema(s3_store, runs):
    keys = s3_store.keys("out")
    assert {key.split("/")[0] for key in keys} == {*SINKS, "manifest.json"}, keys  # no staging, probe or lock left
    for sink in SINKS:
        files = [key for key in keys if key.startswith(sink + "/")]
        assert files, sink
        # a sink that received rows holds no empty file beside them (a prefix had read as a missing folder)
        assert not any(key.endswith("/empty.parquet") for key in files), files
        for key in files:
            schema = pq.read_schema(f"{s3_store.BUCKET}/out/{key}", filesystem=s3_store.fs)
            assert schema.equals(SCHEMAS_BY_SINK[sink], check_metadata=True), key


def test_a_second_run_into_an_s3_output_replaces_the_first(s3_store, runs, inputs, small_model_dir, tmp_path):
    first = json.loads(s3_store.read("out/manifest.json"))["run_id"]
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "pump-02.csv").write_bytes((inputs / "pump-02.csv").read_bytes())
    source = s3_store.put_folder(tmp_path / "one", "plant/day2")
    # the first run's outputs copied to out2, then the second run into it, with two worker processes (which get
    # the --s3_* flags from the runner: they had read from Amazon's endpoint instead)
    for key in s3_store.keys("out"):
        s3_store.client.copy_object(Bucket=s3_store.BUCKET, Key=f"out2/{key}",
                                    CopySource={"Bucket": s3_store.BUCKET, "Key": f"out/{key}"})
    # and what a run killed there left: a run that holds the output's lock (an object there) deletes it (it had
    # stayed: no lock said that its run had ended)
    s3_store.client.put_object(Bucket=s3_store.BUCKET, Key="out2/_staging-run-0123456789ab/scores/part.parquet",
                               Body=b"x")
    again = _seqwatch(s3_store, "run", "--input", source, "--format", "wide", "--output", s3_store.url("out2"),
                      "--model-dir", str(small_model_dir), "--pane-steps", "256", "--workers", "2",
                      *s3_store.beam_flags)
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = json.loads(s3_store.read("out2/manifest.json"))
    assert manifest["run_id"] != first and manifest["records_in"] == 900 * 4 and manifest["workers"] == 2
    keys = s3_store.keys("out2")
    # nothing set aside, staged or locked is left
    assert {key.split("/")[0] for key in keys} == {*SINKS, "manifest.json"}, keys
    scores = _remote_table(s3_store, "out2/scores")
    assert set(scores.column("entity_id").to_pylist()) == {"pump-02"}  # none of the first run's stayed
    assert set(scores.column("run_id").to_pylist()) == {manifest["run_id"]}


def test_training_reads_its_files_from_s3(s3_store, inputs, tmp_path):
    train, _ = generate_sensor_data(n_entities=1, n_steps=1200, seed=3)
    folder = tmp_path / "train"
    for entity, part in train.groupby("entity_id"):
        wide = part.pivot(index="timestamp", columns="channel", values="value").reset_index()
        folder.mkdir(exist_ok=True)
        wide.to_csv(folder / f"{entity}.csv", index=False)
    source = s3_store.put_folder(folder, "train")
    # training runs no pipeline and takes no Beam flag: S3 is reached through the AWS environment
    done = _seqwatch(s3_store, "train", "--input", source, "--format", "wide", "--model-dir", str(tmp_path / "m"),
                     "--window", "16", "--epochs", "1", env={**s3_store.env, "AWS_ENDPOINT_URL": s3_store.endpoint})
    assert done.returncode == 0, done.stderr[-3000:]
    metadata = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert sorted(metadata["channels"]) == sorted(train["channel"].unique()) and metadata["threshold"] > 0


def test_a_bucket_that_is_not_there_is_one_sentence(s3_store, inputs, small_model_dir):
    source = s3_store.put_folder(inputs, "plant/day3")
    refused = _seqwatch(s3_store, "run", "--input", source, "--format", "wide", "--output",
                        "s3://no-such-bucket/out", "--model-dir", str(small_model_dir), *s3_store.beam_flags)
    assert refused.returncode == 2
    assert refused.stderr.startswith("seqwatch run: cannot write the outputs under --output s3://no-such-bucket/out")
    assert "NoSuchBucket" in refused.stderr and "--s3_endpoint_url" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    missing = _seqwatch(s3_store, "run", "--input", "s3://no-such-bucket/day", "--format", "wide", "--output",
                        s3_store.url("never"), "--model-dir", str(small_model_dir), *s3_store.beam_flags)
    assert missing.returncode == 2
    assert missing.stderr.strip() == ("seqwatch run: no input file matches 's3://no-such-bucket/day': there is no "
                                      "bucket 'no-such-bucket' at that store")
    assert s3_store.keys("never") == []


def test_a_folder_on_s3_is_its_prefix(s3_store):
    FileSystems.set_options(PipelineOptions(s3_store.beam_flags))
    for name in ("a/1.parquet", "a/b/2.parquet", "ab/3.parquet"):
        s3_store.client.put_object(Bucket=s3_store.BUCKET, Key=f"prefix/{name}", Body=b"x")
    assert path_exists(s3_store.url("prefix/a")) and path_exists(s3_store.url("prefix/a/1.parquet"))
    assert not path_exists(s3_store.url("prefix/c"))
    assert sorted(objects_under(s3_store.url("prefix/a"))) == [s3_store.url("prefix/a/1.parquet"),
                                                                 s3_store.url("prefix/a/b/2.parquet")]
    move_path(s3_store.url("prefix/a"), s3_store.url("prefix/moved"))
    assert s3_store.keys("prefix") == ["ab/3.parquet", "moved/1.parquet", "moved/b/2.parquet"]  # "ab" is not "a"
    with pytest.raises(FileNotFoundError):
        move_path(s3_store.url("prefix/a"), s3_store.url("prefix/again"))


class S3ClientError(Exception):  # named as Beam's S3 client names its error, which store_error goes by
    def __init__(self, message, code):
        super().__init__(message, code)
        self.message = message


def test_a_store_error_is_found_inside_beams_nested_errors():
    inner = S3ClientError("An error occurred (403) when calling the HeadObject operation: Forbidden", 403)
    nested = BeamIOError("Match operation failed", {"s3://b/in": BeamIOError("exists() failed", {"s3://b/in": inner})})
    assert store_error(nested) == ("s3://b/in", "An error occurred (403) when calling the HeadObject operation: "
                                                "Forbidden")
    assert store_sentence(nested).startswith("s3://b/in: An error occurred (403)")
    assert "--s3_endpoint_url" in store_sentence(nested)
    assert store_error(BeamIOError("Match operation failed", {"/x": FileNotFoundError("/x")})) is None
    assert store_error(ValueError("not a store's")) is None
    from botocore.exceptions import ClientError

    modeled = type("NoSuchBucket", (ClientError,), {})  # as boto3 makes its modeled errors: by its base's name
    assert store_error(modeled({"Error": {"Code": "NoSuchBucket", "Message": "gone"}}, "PutObject")) == (
        "", "An error occurred (NoSuchBucket) when calling the PutObject operation: gone")


def test_a_replay_reads_its_quarantine_and_sources_on_s3_and_writes_its_output_there(
        s3_store, runs, inputs, small_model_dir, tmp_path, monkeypatch):
    """A replay of a run on S3: its quarantine, its sources and its output there. Before 2026-12-05 a replay refused
    a quarantine or an output on S3 (it copies and edits the records' files), and told to replay a copy of the run's
    output made here, it called the run's sources on S3 "gone" (a replay with its output here was run by hand, and
    its local copies are those of every local replay). Since 2026-12-06 (session 48) its patched copies lie on S3
    beside its output while it runs, not on this machine."""
    monkeypatch.chdir(tmp_path)  # where an s3:// path taken for a local one would have made a folder "s3:"
    pump = s3_store.url("plant/day1/pump-01.csv")
    own = _seqwatch(s3_store, "replay", "--quarantine", s3_store.url("out"), "--output", s3_store.url("out/"),
                    "--model-dir", str(small_model_dir), *s3_store.beam_flags)
    assert own.returncode == 2 and own.stderr.strip().splitlines() == [
        f"seqwatch replay: --output {s3_store.url('out/')} is the run's own output folder: a replay is a run of the "
        f"replayed records' source files only, whose commit would replace the other files' outputs there; give the "
        f"replay a folder of its own"]
    # a fixed record: an edited JSON Lines export beside a copy of the run's quarantine on S3, as in a local folder;
    # the replay's output on S3
    for key in s3_store.keys("out"):
        s3_store.client.copy_object(Bucket=s3_store.BUCKET, Key=f"fixed/{key}",
                                    CopySource={"Bucket": s3_store.BUCKET, "Key": f"out/{key}"})
    lines = (inputs / "pump-01.csv").read_text().splitlines()
    before, after = (pd.Timestamp(lines[n].split(",", 1)[0]) for n in (39, 41))
    fixed_text = f"{(before + (after - before) / 2).strftime('%Y-%m-%dT%H:%M:%SZ')},{lines[40].split(',', 1)[1]}"
    record = {**_remote_table(s3_store, "out/quarantine").to_pylist()[0], "raw": fixed_text}
    s3_store.client.put_object(Bucket=s3_store.BUCKET, Key="fixed/quarantine/fixed.jsonl",
                               Body=json.dumps(record, default=str).encode() + b"\n")
    # Run here, in this process, to see what its batch run is given: the patched copy on S3, beside the replay's
    # output, where a runner's workers on other machines can read it (it had been a file of this machine).
    from apache_beam.io.filesystems import FileSystems

    from seqwatch.pipelines import batch
    from seqwatch.pipelines.cli import main

    given, real_run_batch = [], batch.run_batch

    def run_batch(config, *args, **kwargs):
        given.extend((path, FileSystems.exists(path)) for path in config.inputs)
        return real_run_batch(config, *args, **kwargs)

    monkeypatch.setattr(batch, "run_batch", run_batch)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, s3_store.env[name])
    assert main(["replay", "--quarantine", s3_store.url("fixed"), "--output", s3_store.url("replayed"),
                 "--model-dir", str(small_model_dir), *s3_store.beam_flags]) == 0
    assert given == [(s3_store.url("replayed/_replay_inputs/0000/pump-01.csv"), True)]
    manifest = json.loads(s3_store.read("replayed/manifest.json"))
    assert (manifest["records_in"], manifest["records_scored"], manifest["records_quarantined"]) == (3600, 3600, 0)
    assert (manifest["replay"]["scored_now"], manifest["replay"]["fixed_lines"]) == (4, 1)
    assert manifest["inputs"] == manifest["replay"]["sources"] == [pump]  # read there, not from a local copy's name
    assert json.loads(s3_store.read("replayed/replay_edits.json"))["edits"] == [
        {"source": pump, "line": 41, "raw": fixed_text}]
    scores = _remote_table(s3_store, "replayed/scores")
    assert set(scores.column("entity_id").to_pylist()) == {"pump-01"} and scores.num_rows > 0
    assert "_replay_inputs" not in {key.split("/")[0] for key in s3_store.keys("replayed")}
    assert not any(p.name.startswith("s3:") for p in tmp_path.iterdir())


def test_an_s3_output_with_a_streams_outputs_or_outputs_set_aside_is_refused(s3_store, inputs, small_model_dir):
    source = s3_store.put_folder(inputs, "plant/day4")

    def run_into(prefix):
        return _seqwatch(s3_store, "run", "--input", source, "--format", "wide", "--output", s3_store.url(prefix),
                         "--model-dir", str(small_model_dir), *s3_store.beam_flags)

    s3_store.client.put_object(Bucket=s3_store.BUCKET, Key="streamed/counts/1000.json", Body=b"{}")
    refused = run_into("streamed")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"seqwatch run: {s3_store.url('streamed')} holds a stream's outputs (counts/), which a batch run would "
        f"leave beside its own; give the run its own --output")
    # a commit that could not put the previous run's outputs back left them aside
    s3_store.client.put_object(Bucket=s3_store.BUCKET, Key="aside/_previous-run-0123456789ab/alerts/a.parquet",
                               Body=b"x")
    s3_store.client.put_object(Bucket=s3_store.BUCKET, Key="aside/manifest.json",
                               Body=json.dumps({"run_id": "run-ba9876543210", "records_in": 1}).encode())
    refused = run_into("aside")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"seqwatch run: {s3_store.url('aside/_previous-run-0123456789ab')} holds a previous run's outputs that a "
        f"failed commit could not put back; move them back into {s3_store.url('aside')} (or delete them) before "
        f"the next run")
    assert s3_store.keys("aside") == ["_previous-run-0123456789ab/alerts/a.parquet", "manifest.json"]


def test_an_s3_output_held_by_another_jobs_lock_is_refused(s3_store, inputs, small_model_dir):
    """An S3 output is held by its lock object (output_lock): a run finds a live one and is refused."""
    source = s3_store.put_folder(inputs, "plant/day5")

    def run_into(prefix):
        return _seqwatch(s3_store, "run", "--input", source, "--format", "wide", "--output", s3_store.url(prefix),
                         "--model-dir", str(small_model_dir), *s3_store.beam_flags)

    holder = {"job": "stream", "run_id": "stream-0123456789ab", "pid": 4242, "host": "elsewhere", "since": 0}
    s3_store.client.put_object(Bucket=s3_store.BUCKET, Key="held/.seqwatch.lock", Body=json.dumps(holder).encode())
    refused = run_into("held")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith(
        f"seqwatch run: another seqwatch stream stream-0123456789ab (process 4242 on elsewhere, since 1970-01-01 "
        f"00:00:00 UTC) is writing into {s3_store.url('held')}; wait for it to end, or give this run its own "
        f"--output (its lock there was written ")
    assert s3_store.keys("held") == [".seqwatch.lock"]



def test_an_s3_endpoint_that_does_not_answer_is_one_sentence_at_once(s3_store, small_model_dir, tmp_path):
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    flags = [f for f in s3_store.beam_flags if not f.startswith("--s3_endpoint_url")]
    # Beam itself retries a connection for about ten minutes; the subprocess's timeout is 300 s
    refused = _seqwatch(s3_store, "run", "--input", s3_store.url("anything"), "--format", "wide", "--output",
                        str(tmp_path / "out"), "--model-dir", str(small_model_dir),
                        f"--s3_endpoint_url=http://127.0.0.1:{port}", *flags)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f'seqwatch run: s3://{s3_store.BUCKET}: Could not connect to the endpoint URL: '
        f'"http://127.0.0.1:{port}/{s3_store.BUCKET}"; S3 is reached with Beam\'s --s3_endpoint_url, '
        f'--s3_region_name, --s3_access_key_id and --s3_secret_access_key flags, or else the AWS_* variables of the '
        f'environment']
    assert not (tmp_path / "out").exists()


def test_worker_processes_get_the_runs_s3_options_and_nothing_else():
    from seqwatch.pipelines.local_runner import store_options_json
    from seqwatch.pipelines.sdk_worker import with_store_options

    options = PipelineOptions(["--s3_endpoint_url=http://127.0.0.1:9", "--s3_region_name=eu-west-1",
                               "--direct_num_workers=2"])
    store = store_options_json(options)
    assert json.loads(store) == {"s3_endpoint_url": "http://127.0.0.1:9", "s3_region_name": "eu-west-1"}
    merged = json.loads(with_store_options(json.dumps({"options": {"s3_region_name": "us-east-1", "a": 1}}), store))
    # what the worker's own options set stays
    assert merged == {"options": {"s3_region_name": "us-east-1", "a": 1, "s3_endpoint_url": "http://127.0.0.1:9"}}
    assert with_store_options('{"options": {}}', None) == '{"options": {}}'



def test_the_staging_of_a_failed_job_on_s3_is_deleted_after_a_week_and_a_younger_one_kept(s3_store):
    """``--commit-in-job`` stages under ``_job-staging-<run id>/``; on a store a folder's age is its newest object's
    (the clock is moved on a week and a minute rather than the objects' times, which S3 sets itself)."""
    import time

    from seqwatch.pipelines import batch

    FileSystems.set_options(PipelineOptions(s3_store.beam_flags))
    for key in ("abandon/_job-staging-run-failed/scores/part.parquet", "abandon/_job-staging-run-own/scores/p.parquet",
                "abandon/_staging-run-other/scores/p.parquet", "abandon/scores/part.parquet"):
        s3_store.client.put_object(Bucket=s3_store.BUCKET, Key=key, Body=b"x")
    output = s3_store.url("abandon")
    batch._remove_abandoned_job_staging(output, "run-own", now=time.time() + 60)
    assert len(s3_store.keys("abandon")) == 4  # a minute old: kept
    batch._remove_abandoned_job_staging(output, "run-own", now=time.time() + batch.JOB_STAGING_KEPT_S + 60)
    assert s3_store.keys("abandon") == ["_job-staging-run-own/scores/p.parquet", "_staging-run-other/scores/p.parquet",
                                        "scores/part.parquet"]


def test_an_input_on_s3_is_known_by_its_etag_and_one_recorded_by_its_sha256_compares_so(s3_store, monkeypatch):
    """A run knows a remote input by the store's checksum (one request; its sha256 had meant reading the whole
    object once more before the run), and a replay compares a source a run recorded by its sha256 (before
    2026-12-06) by its sha256 again."""
    import hashlib

    from seqwatch.pipelines import batch
    from seqwatch.pipelines.replay import ReplayError, check_sources_unchanged

    FileSystems.set_options(PipelineOptions(s3_store.beam_flags))
    first, second = b"entity_id,channel,timestamp,value\npump-01,flow,2026-01-05T00:00:00Z,1.0\n", b"changed\n"
    s3_store.client.put_object(Bucket=s3_store.BUCKET, Key="digest/a.csv", Body=first)
    url = s3_store.url("digest/a.csv")
    etag = s3_store.client.head_object(Bucket=s3_store.BUCKET, Key="digest/a.csv")["ETag"]
    sha256 = batch._sha256_file

    def not_read(path):
        raise AssertionError(f"{path} was read to hash it")

    monkeypatch.setattr(batch, "_sha256_file", not_read)
    recorded = batch.input_digest(url)
    assert recorded == f"{batch.STORE_DIGEST_PREFIX}{etag}"
    check_sources_unchanged([url], {url: recorded})  # untouched: no refusal, nothing read
    monkeypatch.setattr(batch, "_sha256_file", sha256)
    legacy = hashlib.sha256(first).hexdigest()
    assert batch.input_digest(url, legacy) == legacy
    check_sources_unchanged([url], {url: legacy})
    s3_store.client.put_object(Bucket=s3_store.BUCKET, Key="digest/a.csv", Body=second)
    assert batch.input_digest(url) != recorded
    for before in (recorded, legacy):
        with pytest.raises(ReplayError, match="the file changed since the run read it"):
            check_sources_unchanged([url], {url: before})
