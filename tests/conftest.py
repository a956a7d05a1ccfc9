"""Shared fixtures: a small real model artifact trained once per session, and paths to the shared data."""
from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PRISM = REPO / ".tools" / "bin" / "prism"  # built by `make prism` (run by `make test`)

STEP_SECONDS = 10
SMALL_WINDOW = 16
SMALL_STRIDE = 4


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``make test``: ``TEST_WORKERS`` workers, ``--dist worksteal``) the tests are split
    between the workers and a worker that is done takes tests from the other's queue; the streaming tests are
    collected first, because they are the longest (about 11 of the 24 minutes the tests take in all; the longest
    first packs the workers best). Every worker process starts its own
    brokers and job servers (session fixtures). Grouping the streaming tests on one worker (``--dist loadgroup``)
    had been meant, and never worked: pytest 9.2 ignores the node ids pytest-xdist 3.8 rewrites for it
    (pytest-dev/pytest-xdist#1386), and measured, one worker would have had 19 of the 32 minutes. Without xdist
    nothing changes."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    streaming = [item for item in items if item.nodeid.startswith("tests/streaming/")]
    rest = [item for item in items if not item.nodeid.startswith("tests/streaming/")]
    items[:] = streaming + rest


def _shared_data(name: str) -> Path:
    """``../shared/data/<name>``, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"shared data set {name!r} is not present at {path}")
    return path


def _wide_csv(readings: pd.DataFrame, path: Path) -> Path:
    """Write long readings of one entity as a wide CSV (ISO timestamps, one column per channel)."""
    wide = readings.pivot(index="timestamp", columns="channel", values="value").reset_index()
    wide["timestamp"] = wide["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    path.parent.mkdir(parents=True, exist_ok=True)
    wide.to_csv(path, index=False, float_format="%.4f")
    return path


@pytest.fixture(scope="session")
def shared_data():
    """``shared_data(name)`` -> ``../shared/data/<name>``, skipping the test with the reason when absent.
    (Fixtures, not imports: pytest runs with --import-mode=importlib, so conftest is not importable.)"""
    return _shared_data


@pytest.fixture(scope="session")
def wide_csv():
    """``wide_csv(readings, path)`` writes long readings of one entity as a wide CSV."""
    return _wide_csv


def _model_windows(model_dir, n: int = 12):
    """``n`` windows of one synthetic pump's readings, cut for the model in ``model_dir`` (a ``WindowBatch``)."""
    import numpy as np

    from seqwatch.models.artifact import read_metadata
    from seqwatch.models.synthetic import generate_sensor_data
    from seqwatch.schemas.elements import WindowBatch

    meta = read_metadata(model_dir)
    readings, _ = generate_sensor_data(n_entities=1, n_steps=200, step_seconds=10, seed=3)
    wide = readings.pivot_table(index="timestamp", columns="channel", values="value")[list(meta["channels"])]
    length = meta["config"]["window"]["length"]
    values = np.lib.stride_tricks.sliding_window_view(wide.to_numpy(np.float32), length, axis=0)
    values = np.ascontiguousarray(values.transpose(0, 2, 1)[:n])
    ends = np.arange(n, dtype=np.int64) * meta["step_us"]
    return WindowBatch("pump-0", 0, tuple(meta["channels"]), meta["step_us"], ends, values,
                       np.ones(values.shape, bool), n)


@pytest.fixture(scope="session")
def model_windows():
    """``model_windows(model_dir, n=12)``: windows to score with the model in ``model_dir`` (``_model_windows``)."""
    return _model_windows


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory) -> Path:
    """A real, small LSTM artifact (window 16, stride 4, forecast horizon 4) on the synthetic pump channels."""
    from seqwatch.models.artifact import save_artifact
    from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
    from seqwatch.models.detector import Seq2SeqDetector
    from seqwatch.models.synthetic import generate_sensor_data

    train, _ = generate_sensor_data(n_entities=2, n_steps=1500, step_seconds=STEP_SECONDS, seed=101)
    config = DetectorConfig(ArchitectureConfig(units=16, forecast_horizon=4),
                            WindowConfig(length=SMALL_WINDOW, stride=SMALL_STRIDE, max_gap=2),
                            TrainingConfig(epochs=6, batch_size=128, patience=3))
    detector = Seq2SeqDetector(config, model_id="test-pumps").fit(train, progress=False)
    return save_artifact(detector, tmp_path_factory.mktemp("model") / "small")


@pytest.fixture(scope="session")
def prism_location() -> str:
    """Path of the locally built Prism binary; skips when it is not built."""
    if not os.access(PRISM, os.X_OK):
        pytest.skip(f"Prism is not built at {PRISM.relative_to(REPO)}: run `make prism` (needs Go and the Go "
                    f"module proxy)")
    return str(PRISM)


@pytest.fixture(scope="session")
def prism_endpoint(prism_location):
    """``host:port`` of one Prism for the test process's pipelines, started as ``seqwatch stream`` starts its own
    (``runners.job_server_of_its_own``: under the guard, which stops it when this process ends however it ends).
    Started by Beam per pipeline instead, each TestPipeline left a Prism running until the process exited, and a
    pytest-xdist worker's exit once orphaned one."""
    from seqwatch.pipelines import runners

    with runners.job_server_of_its_own(["--runner=PrismRunner", f"--prism_location={prism_location}",
                                        "--prism_log_level=warn"], prism_idle_shutdown="0s") as args:
        # not one of the job servers of this process's streams, which a test's stream stops (stop_own_job_servers)
        # and tests count: the block's end stops it
        runners._OWN_JOB_SERVERS.pop()
        yield next(a.split("=", 1)[1] for a in args if a.startswith("--job_endpoint="))


@pytest.fixture(scope="session")
def prism_options(prism_endpoint):
    """``prism_options(*extra)`` -> ``PipelineOptions`` for real streaming on the local Prism binary (one per test
    process, ``prism_endpoint``), with the settings ``seqwatch stream`` gives Prism
    (``seqwatch.pipelines.runners``)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from seqwatch.pipelines.runners import apply_runner_fixes

    def options(*extra: str) -> PipelineOptions:
        return apply_runner_fixes(PipelineOptions([
            "--runner=PrismRunner", f"--job_endpoint={prism_endpoint}", "--streaming", *extra]))

    return options


# Runs ``seqwatch.pipelines.cli.main`` once per argument list in one fresh interpreter (a process per case would
# spend ~2 s on each import of Beam and Keras): prints, per case, a JSON line of its exit code and stderr, with the
# traceback when ``main`` raised.
_MANY_CLI = """
import contextlib, io, json, sys, traceback
from seqwatch.pipelines.cli import main
for argv in json.loads(sys.stdin.read()):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except BaseException:
            code, _ = None, err.write(traceback.format_exc())
    print(json.dumps({"code": code, "stderr": err.getvalue()}))
"""


def _cli_cases(argvs: list) -> list:
    """``(exit code, stderr)`` of the CLI for each argument list, run in one child process."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _MANY_CLI], input=json.dumps(argvs), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [(r["code"], r["stderr"]) for r in map(json.loads, done.stdout.splitlines())]


@pytest.fixture(scope="session")
def cli_cases():
    """``cli_cases(argvs)``: ``[(exit code, stderr)]`` of ``seqwatch`` for each argument list, in one child
    process (as the user runs it, but importing Beam and Keras once)."""
    return _cli_cases


class Processes:
    """The processes a test's command started, read from ``/proc``."""

    @staticmethod
    def children(pid: int) -> dict:
        """``{pid: command name}`` of the processes whose parent is ``pid``."""
        found = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = open(f"/proc/{entry}/stat").read()
                except OSError:
                    continue
                name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
                if int(rest[1]) == pid:
                    found[int(entry)] = name
        return found

    @classmethod
    def descendants(cls, pid: int) -> dict:
        """``{pid: command name}`` of the processes under ``pid``: its children, theirs, and so on (a stream's job
        server runs under a guard, ``seqwatch.pipelines.job_server_guard``)."""
        found, parents = {}, [pid]
        while parents:
            children = cls.children(parents.pop())
            found.update(children)
            parents.extend(children)
        return found

    @staticmethod
    def alive(pid: int) -> bool:
        """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    @classmethod
    def kill(cls, pids) -> None:
        """SIGKILL each of ``pids`` that still runs (a test's cleanup)."""
        import signal

        for pid in pids:
            if cls.alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture(scope="session")
def processes() -> type[Processes]:
    return Processes


class S3Store:
    """An S3 server (moto's) on 127.0.0.1 with one bucket, ``bucket``: the flags and environment that reach it,
    a boto3 client to put and list objects, and a pyarrow file system to read the Parquet back."""

    BUCKET = "seqwatch-test"

    def __init__(self, endpoint: str):
        import boto3
        import pyarrow.fs

        self.endpoint = endpoint
        self.env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"}
        self.beam_flags = [f"--s3_endpoint_url={endpoint}", "--s3_access_key_id=testing",
                           "--s3_secret_access_key=testing", "--s3_region_name=us-east-1"]
        self.client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                                   aws_secret_access_key="testing", region_name="us-east-1")
        self.client.create_bucket(Bucket=self.BUCKET)
        self.fs = pyarrow.fs.S3FileSystem(endpoint_override=endpoint.split("://", 1)[1], scheme="http",
                                          access_key="testing", secret_key="testing", region="us-east-1")

    def url(self, key: str) -> str:
        return f"s3://{self.BUCKET}/{key}"

    def put_folder(self, folder: Path, prefix: str) -> str:
        """Upload the files of ``folder`` under ``prefix``; returns the prefix's URL."""
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                self.client.upload_file(str(path), self.BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")
        return self.url(prefix)

    def keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix/``, relative to it."""
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.BUCKET, Prefix=prefix + "/"):
            found += [item["Key"][len(prefix) + 1:] for item in page.get("Contents", [])]
        return sorted(found)

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.BUCKET, Key=key)["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.BUCKET, Key=key, Body=data)

    def updated(self, key: str):
        """When the object ``key`` was last written, by the store."""
        return self.client.head_object(Bucket=self.BUCKET, Key=key)["LastModified"]


@pytest.fixture(scope="session")
def s3_store():
    """``S3Store`` on a moto S3 server this session starts on 127.0.0.1 (a thread of the test process)."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Store(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


class _MetadataHandler(BaseHTTPRequestHandler):
    """What Google's auth library asks a Compute Engine metadata server: whether it is one, the project and a
    service account's access token (which the storage emulator takes without checking)."""

    ANSWERS = {"/computeMetadata/v1/project/project-id": ("text/plain", b"seqwatch-test"),
               "/computeMetadata/v1/instance/service-accounts/default/": (
                   "application/json", json.dumps({"email": "tests@seqwatch-test.iam.gserviceaccount.com",
                                                   "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                                                   "aliases": ["default"]}).encode()),
               "/computeMetadata/v1/instance/service-accounts/default/token": (
                   "application/json", json.dumps({"access_token": "emulator", "expires_in": 3600,
                                                   "token_type": "Bearer"}).encode()),
               "/": ("text/plain", b"")}

    def do_GET(self):  # noqa: N802 - http.server's name
        answer = self.ANSWERS.get(self.path.split("?", 1)[0])
        self.send_response(200 if answer else 404)
        self.send_header("Metadata-Flavor", "Google")  # what the library's probe looks for
        content_type, body = answer or ("text/plain", b"")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class GcsStore:
    """A Google Cloud Storage emulator on 127.0.0.1 with one bucket, ``BUCKET``, and a stand-in for a Compute Engine
    metadata server that hands out credentials: the environment that reaches both (Beam's GCS file system and
    Google's storage client read ``STORAGE_EMULATOR_HOST``; without credentials Beam's lookup of Application Default
    Credentials retries for 21 s in each process before it goes on anonymously), a storage client to put and list
    objects, and a pyarrow file system to read the Parquet back."""

    BUCKET = "seqwatch-test"

    def __init__(self, storage_port: int, metadata_port: int):
        import datetime

        import pyarrow.fs
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        self.endpoint = f"http://127.0.0.1:{storage_port}"
        self.variables = {"STORAGE_EMULATOR_HOST": self.endpoint, "GCE_METADATA_HOST": f"127.0.0.1:{metadata_port}",
                          "GCE_METADATA_IP": f"127.0.0.1:{metadata_port}", "GOOGLE_CLOUD_PROJECT": "seqwatch-test"}
        self.env = {**{k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"},
                    **self.variables}
        self.client = storage.Client(project="seqwatch-test", credentials=AnonymousCredentials(),
                                     client_options={"api_endpoint": self.endpoint})
        self.client.create_bucket(self.BUCKET)
        self.bucket = self.client.bucket(self.BUCKET)
        # (a failed request is retried for 15 minutes by default; pyarrow's read_schema of an object there hangs)
        self.fs = pyarrow.fs.GcsFileSystem(anonymous=True, endpoint_override=f"127.0.0.1:{storage_port}",
                                           scheme="http", retry_time_limit=datetime.timedelta(seconds=20))

    def use_here(self, monkeypatch) -> None:
        """Reach this store from the test's own process too (``monkeypatch``: for the test)."""
        for name, value in self.variables.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)

    def url(self, key: str) -> str:
        return f"gs://{self.BUCKET}/{key}"

    def put_folder(self, folder: Path, prefix: str) -> str:
        """Upload the files of ``folder`` under ``prefix``; returns the prefix's URL."""
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                self.bucket.blob(f"{prefix}/{path.relative_to(folder).as_posix()}").upload_from_filename(str(path))
        return self.url(prefix)

    def keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix/``, relative to it."""
        return sorted(blob.name[len(prefix) + 1:] for blob in self.client.list_blobs(self.BUCKET, prefix=prefix + "/"))

    def read(self, key: str) -> bytes:
        return self.bucket.blob(key).download_as_bytes()

    def write(self, key: str, data: bytes) -> None:
        self.bucket.blob(key).upload_from_string(data)

    def updated(self, key: str):
        """When the object ``key`` was last written, by the store."""
        return self.bucket.get_blob(key).updated


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def gce_metadata():
    """The port of a stand-in for a Compute Engine metadata server on 127.0.0.1 (a thread of the test process)."""
    import threading

    server = ThreadingHTTPServer(("127.0.0.1", _free_port()), _MetadataHandler)
    threading.Thread(target=server.serve_forever, daemon=True, name="gce-metadata").start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def gcs_store(gce_metadata):
    """``GcsStore`` on a gcp-storage-emulator this session starts on 127.0.0.1 (threads of the test process).
    gcp-storage-emulator rather than fake-gcs-server: Beam renames objects with the storage client's batch requests,
    whose parts fake-gcs-server (1.56) skips (they carry no Content-ID). It does not hold a write to its
    ``ifGenerationMatch`` condition, which the output lock's tests need (``fake_gcs_store``)."""
    import logging

    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)  # a warning per object read otherwise
    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield GcsStore(port, gce_metadata)
    finally:
        server.stop()


FAKE_GCS = REPO / ".tools" / "bin" / "fake-gcs-server"  # built by `make fake-gcs-server` (run by `make test`)


@pytest.fixture(scope="session")
def fake_gcs_store(gce_metadata, tmp_path_factory):
    """``GcsStore`` on fake-gcs-server (in memory, a process this session starts on 127.0.0.1), which holds writes to
    their ``ifGenerationMatch`` conditions (not deletes: 1.56 deletes whatever the condition)."""
    import subprocess
    import time
    import urllib.request

    if not FAKE_GCS.exists():
        pytest.skip("fake-gcs-server is not built (make fake-gcs-server: Go and the Go module proxy)")
    port = _free_port()
    log = (tmp_path_factory.mktemp("fake-gcs") / "server.log").open("w")
    server = subprocess.Popen([str(FAKE_GCS), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                               "-backend", "memory", "-external-url", f"http://127.0.0.1:{port}", "-log-level",
                               "warn"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/storage/v1/b", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"fake-gcs-server did not start on port {port}") from None
                time.sleep(0.1)
        yield GcsStore(port, gce_metadata)
    finally:
        server.terminate()
        server.wait(10)
        log.close()


@pytest.fixture(scope="session")
def store_inputs(tmp_path_factory, wide_csv):
    """The inputs of the runs on object stores (S3, GCS): two pumps' wide CSVs (900 steps each, two anomalies each),
    with a bad line in pump-01's (4 readings quarantined)."""
    from seqwatch.models.synthetic import generate_sensor_data

    folder = tmp_path_factory.mktemp("store-inputs")
    readings, _ = generate_sensor_data(n_entities=2, n_steps=900, seed=7, anomalies_per_entity=2,
                                       kinds=("level_shift", "broken_channel"))
    for entity, part in readings.groupby("entity_id"):
        wide_csv(part, folder / f"{entity}.csv")
    path = folder / "pump-01.csv"
    lines = path.read_text().splitlines()
    lines[40] = "2026-01-05T99:00:00Z,1,2,3,4"  # a timestamp that is no time: 4 readings quarantined
    path.write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def store_inputs_run_here(store_inputs, small_model_dir, tmp_path_factory) -> Path:
    """The output folder of the run of ``store_inputs`` into a local folder, which each store's run is held to."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("store-inputs-run-here")
    done = subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "run", "--input", str(store_inputs),
                           "--format", "wide", "--output", str(out), "--model-dir", str(small_model_dir),
                           "--pane-steps", "256"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def same_sinks():
    """``same_sinks(table, local_out)``: each sink's rows, read on a store by ``table(sink)``, are those of the local
    output folder ``local_out``, in an order that its key columns make unique (the run ids aside)."""
    import pyarrow.dataset as ds

    def check(table, local_out: Path) -> None:
        for sink, keys in (("scores", ["entity_id", "window_end"]), ("alerts", ["entity_id", "start"]),
                           ("forecasts", ["entity_id", "issued_at", "target_time", "channel"])):
            remote = table(sink).drop_columns(["run_id"]).to_pandas()
            local = ds.dataset(local_out / sink, format="parquet").to_table().drop_columns(["run_id"]).to_pandas()
            assert not local.duplicated(keys).any(), sink
            assert len(remote) == len(local) > 0, sink
            assert remote.sort_values(keys).reset_index(drop=True).equals(
                local.sort_values(keys).reset_index(drop=True)), sink

    return check
