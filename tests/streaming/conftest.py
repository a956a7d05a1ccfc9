"""Session fixtures for the streaming tests: real brokers on 127.0.0.1 and Beam's Flink runner.

``kafka_broker`` starts one Apache Kafka node (KRaft) and ``pubsub_emulator`` the Google Cloud Pub/Sub emulator,
each on free ports, once per session, and stops them at the end (``prism_location`` and ``prism_options``, for
real streaming on Prism, are in ``tests/conftest.py``: the end-to-end TestStream tests use them too). Each
fixture skips, naming the make target, when what it needs is not there: ``make streaming-tools`` (run by
``make test``) builds Prism and fetches the Kafka jars into ``.tools/``.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools"
FLINK_JAR = TOOLS / "flink" / "beam-flink-job-server.jar"
SPARK_JAR = TOOLS / "spark" / "beam-spark-job-server.jar"
KAFKA_LIBS = TOOLS / "kafka" / "libs"
KAFKA_SCRIPT = REPO / "deploy" / "streaming" / "kafka-local.sh"
PUBSUB_SCRIPT = REPO / "deploy" / "streaming" / "pubsub-emulator.sh"
PUBSUB_EMULATOR_DIR = Path(os.environ.get("PUBSUB_EMULATOR_DIR", "/usr/lib/google-cloud-sdk/platform/pubsub-emulator"))
START_TIMEOUT_S = 90  # a cold JVM on a busy 2-core machine; Kafka usually answers in ~10 s, the emulator in ~3 s
# The JVMs of the services these fixtures start (Kafka, the Pub/Sub emulator, the session's Flink job server, which
# runs the Flink jobs) compile with C1 only: they live for a session and run small jobs, where C2's compiling costs
# more CPU than it saves. test_flink.py took 62 and 67 s of CPU against 92 and 86 s (alternating runs by hand,
# 2026-12-06), and a Kafka node's start 3.5 s against 5.6 s. Jobs whose job server Beam starts keep Java's default.
SERVICE_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Service:
    """A broker process this session started (in its own process group, so that stopping it stops its JVM)."""

    name: str
    process: subprocess.Popen
    log: Path
    started_s: float  # seconds from launch until it answered

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _launch(name: str, command: list, log: Path, ready, timeout_s: float = START_TIMEOUT_S) -> Service:
    """Start ``command`` with its output in ``log`` and wait until ``ready()`` is true; fails with the log's tail
    when the process exits or does not get ready in time."""
    started = time.monotonic()
    env = {**os.environ, "JAVA_TOOL_OPTIONS": f"{os.environ.get('JAVA_TOOL_OPTIONS', '')} {SERVICE_JAVA_OPTIONS}"}
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=REPO, start_new_session=True, env=env)
    service = Service(name, process, log, 0.0)
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with code {process.returncode} while starting; its log ends:\n{_tail(log)}")
        if ready():
            service.started_s = time.monotonic() - started
            return service
        time.sleep(0.2)
    service.stop()
    pytest.fail(f"{name} did not answer within {timeout_s} s; its log ends:\n{_tail(log)}")


@dataclass(frozen=True)
class KafkaBroker:
    bootstrap_servers: str
    log: Path
    started_s: float

    def create_topic(self, name: str, partitions: int = 1) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        for future in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                                          operation_timeout=30).values():
            future.result(timeout=60)

    def producer(self, **config):
        from confluent_kafka import Producer

        return Producer({"bootstrap.servers": self.bootstrap_servers, "linger.ms": 5, **config})


@dataclass(frozen=True)
class PubSubEmulator:
    host: str  # host:port, what PUBSUB_EMULATOR_HOST holds
    project: str
    log: Path
    started_s: float
    process_group: int = 0  # the emulator's (its JVM's) process group: a test may freeze it (SIGSTOP) for a while

    def clients(self):
        """``(publisher, subscriber)`` talking to this emulator."""
        os.environ["PUBSUB_EMULATOR_HOST"] = self.host  # read by the clients when they are built
        from google.cloud import pubsub_v1

        return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()

    def freeze(self, timeout_s: float = 10.0) -> None:
        """Stop the emulator's processes (SIGSTOP) and wait until the kernel shows each stopped: a pull sent right
        after the signal was once answered, in a run of several Pub/Sub tests (2026-12-04)."""
        os.killpg(self.process_group, signal.SIGSTOP)
        deadline = time.monotonic() + timeout_s
        while True:
            states = []
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[2]) == self.process_group:  # fields: state, ppid, pgrp, ...
                    states.append(fields[0])
            if states and all(state in "Tt" for state in states):
                return
            assert time.monotonic() < deadline, f"the emulator's processes did not stop: {states}"
            time.sleep(0.05)

    def thaw(self) -> None:
        os.killpg(self.process_group, signal.SIGCONT)

    def create_subscription(self, name: str, ack_deadline_s: int = 60) -> tuple[str, str]:
        """A new topic ``name`` and subscription ``name-sub`` (its ack deadline ``ack_deadline_s``, 10 at least);
        returns their paths."""
        publisher, subscriber = self.clients()
        topic = publisher.topic_path(self.project, name)
        subscription = subscriber.subscription_path(self.project, f"{name}-sub")
        publisher.create_topic(name=topic)
        subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=ack_deadline_s)
        return topic, subscription


def _need_module(module: str, package: str) -> None:
    if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
        pytest.skip(f"the Python package {package} is not installed (pip install {package})")


class StreamOutputs:
    """Reading back what ``seqwatch stream`` wrote, and running it while watching for its first alert."""

    @staticmethod
    def counts(out: Path) -> dict:
        """The per-window ``counts/*.json`` files summed."""
        import json

        counts: dict = {}
        for f in (out / "counts").glob("*.json"):
            for key, value in json.loads(f.read_text()).items():
                counts[key] = counts.get(key, 0) + value
        return counts

    @staticmethod
    def alerts(folder: Path):
        """Every alert under ``folder`` as a frame, by alert id."""
        import pyarrow.dataset as ds

        return (ds.dataset(folder, format="parquet").to_table().to_pandas()
                .sort_values("alert_id").reset_index(drop=True))

    @classmethod
    def batch_alerts(cls, path: Path, model_dir, out: Path, **settings):
        """``(alerts, manifest)`` of the batch pipeline on the same long-format file; ``settings``: more
        ``RunConfig`` fields (an alert cooldown, online calibration)."""
        from seqwatch.pipelines.batch import run_batch
        from seqwatch.pipelines.config import RunConfig

        manifest = run_batch(RunConfig(inputs=(str(path),), output=str(out), model_dir=str(model_dir), **settings))
        return cls.alerts(out / "alerts"), manifest

    @classmethod
    def assert_matches_batch(cls, out: Path, path: Path, model_dir, batch_out: Path, **settings) -> None:
        """What ``seqwatch stream`` wrote to ``out`` equals the batch pipeline on the same long-format file (with
        the same ``settings``: an alert cooldown, online calibration): the readings scored, and every alert (id,
        start, end, peak score); the batch run raises at least two."""
        import numpy as np

        batch, manifest = cls.batch_alerts(path, model_dir, batch_out, **settings)
        stream = cls.alerts(out / "alerts")
        assert cls.counts(out)["records_scored"] == manifest["records_scored"]
        assert len(batch) >= 2
        assert stream["alert_id"].tolist() == batch["alert_id"].tolist()
        assert stream["start"].tolist() == batch["start"].tolist()
        assert stream["end"].tolist() == batch["end"].tolist()
        assert np.allclose(stream["peak_score"], batch["peak_score"], rtol=1e-6, atol=0.0)

    @staticmethod
    def timeline(out: Path) -> str:
        """When each output folder's files were written, in seconds after the first file: for the message of a
        timing assertion (a stall in the panes shows as a gap)."""
        files = [(f.stat().st_mtime, f.relative_to(out).parts[0]) for f in out.rglob("*") if f.is_file()]
        if not files:
            return "no file written"
        first = min(t for t, _ in files)
        folders = sorted({folder for _, folder in files})
        return "; ".join(f"{folder}: " + " ".join(f"{t - first:.1f}" for t in sorted(t for t, name in files
                                                                                    if name == folder))
                         for folder in folders)

    @staticmethod
    def wait_for_scores(stream, out: Path, log_path: Path, timeout_s: float = 180) -> None:
        """Wait until the running ``stream`` (a Popen writing to ``log_path``) has written its first scores into
        ``out``; fails, with the log's end, if it ends or takes longer than ``timeout_s``."""
        import time

        deadline = time.monotonic() + timeout_s
        while not list(out.glob("scores/*/*.parquet")) and time.monotonic() < deadline:
            assert stream.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.3)
        assert stream.poll() is None, log_path.read_text()[-3000:]
        assert list(out.glob("scores/*/*.parquet")), f"no scores after {timeout_s} s: {log_path.read_text()[-3000:]}"

    @classmethod
    def stop_once_scored(cls, command: list, out: Path, log_path: Path, how: int = signal.SIGTERM,
                         to_group: bool = False, settle_s: float = 0.0, timeout_s: float = 240,
                         before_signal=None) -> tuple[int, str]:
        """Run ``command`` (a ``seqwatch stream``; its output to ``log_path``) in a session of its own, and once it
        has written its first scores into ``out`` (and ``settle_s`` more seconds have passed) send it the signal
        ``how``: to its process alone, or with ``to_group`` to its process group, as a terminal's Ctrl-C goes
        (then SIGINT as a terminal leaves it: a test started in the background has it ignored, and a child
        inherits that). ``before_signal(process)`` is called just before the signal. Returns ``(return code,
        log)``; what is left running at the end is killed."""
        with open(log_path, "w") as log:
            previous = signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True,
                                           start_new_session=True)
            finally:
                signal.signal(signal.SIGINT, previous)
            try:
                cls.wait_for_scores(process, out, log_path, timeout_s)
                time.sleep(settle_s)
                if before_signal is not None:
                    before_signal(process)
                os.killpg(process.pid, how) if to_group else process.send_signal(how)
                returncode = process.wait(timeout=timeout_s)
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
        return returncode, log_path.read_text()

    @staticmethod
    def stopped_totals(log: str, how: str) -> tuple[int, int, int]:
        """``(records in, scored, quarantined)`` of a stream's closing line after its graceful stop by ``how``
        (``"SIGTERM"``, ``"Ctrl-C"``); fails, with the log's end, where there is none."""
        import re

        found = re.search(rf"seqwatch stream: stopped by {how} once it had written what it read; records in (\d+) = "
                          rf"scored (\d+) \+ quarantined (\d+),", log)
        assert found, log[-3000:]
        return tuple(int(g) for g in found.groups())

    @staticmethod
    def run_watching_alerts(command: list, out: Path, log_path: Path, on_first_alert=None, timeout_s: float = 400,
                            undo_first_alert=None):
        """Run ``command`` (its output to ``log_path``: a pipe would fill up) until it ends; returns
        ``(return code, log, seconds it ran on after its first alert file appeared, or None)``.
        ``on_first_alert()`` is called once, when that file appears. A job that one of Prism's own bugs failed
        (``PRISM_BUGS``) runs once more into an empty ``out``, after ``undo_first_alert()`` where
        ``on_first_alert`` was called; the rerun is a warning in the suite's summary."""
        result = StreamOutputs._watching_alerts(command, out, log_path, on_first_alert, timeout_s)
        if result[0] != 0 and prism_bug(result[1]):
            import warnings

            warnings.warn(f"Prism failed a stream with a bug of its own ({prism_bug(result[1])}); run again into "
                          f"{out}")
            if result[2] is not None and undo_first_alert is not None:
                undo_first_alert()
            shutil.rmtree(out, ignore_errors=True)
            result = StreamOutputs._watching_alerts(command, out, log_path, on_first_alert, timeout_s)
        return result

    @staticmethod
    def _watching_alerts(command: list, out: Path, log_path: Path, on_first_alert, timeout_s: float):
        with open(log_path, "w") as log_file:
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, text=True)
            first_alert_at, deadline = None, time.monotonic() + timeout_s
            while process.poll() is None and time.monotonic() < deadline:
                if first_alert_at is None and (out / "alerts").exists() and any((out / "alerts").rglob("*.parquet")):
                    first_alert_at = time.monotonic()
                    if on_first_alert is not None:
                        on_first_alert()
                time.sleep(0.2)
            finished_at = time.monotonic()
            if process.poll() is None:
                process.kill()
                process.wait()
        after = None if first_alert_at is None else finished_at - first_alert_at
        return process.returncode, log_path.read_text(), after


# Prism 2.77.0's own bugs, each of which has failed a stream of the suite now and then on this 2-core machine, and
# each of whose runs passed when run again: its check for a job it no longer moves on ("a bug of Prism's", it says;
# the message it sends for it does not reach the SDK: invalid UTF-8), and a panic where a transform the runner runs
# itself (a Flatten) goes 100 ms without a CPU between its bundle and its end: the progress ticker fires, and Prism
# asks a worker the runner-side bundle does not have (stage.Execute with a nil worker; once in some 50 runs of the
# suite, 2026-12-06).
PRISM_BUGS = ("nothing in progress and no refreshes with non zero pending elements",
              "string field contains invalid UTF-8",
              "panic in stage.Execute bundle processing goroutine: runtime error: invalid memory address or nil "
              "pointer dereference")


def prism_bug(log: str) -> str | None:
    """The sign of one of ``PRISM_BUGS`` in a stream's log, or None."""
    return next((sign for sign in PRISM_BUGS if sign in log), None)


@pytest.fixture(scope="session")
def stream_outputs() -> type[StreamOutputs]:
    return StreamOutputs


def _job_server_jar(runner: str, jar: Path) -> str:
    """Path of ``runner``'s job server launcher jar (``make <runner>-job-server``); skips when Java or the jar is
    not there."""
    if shutil.which("java") is None:
        pytest.skip(f"Java 17+ is not installed (the {runner.title()} job server needs it)")
    if not jar.is_file():
        pytest.skip(f"the {runner.title()} job server is not at {jar.relative_to(REPO)}: run "
                    f"`make {runner}-job-server` (Maven)")
    return str(jar)


@pytest.fixture(scope="session")
def flink_job_server_jar() -> str:
    """Path of the Flink job server's launcher jar (``make flink-job-server``); skips when it is not there."""
    return _job_server_jar("flink", FLINK_JAR)


@pytest.fixture(scope="session")
def flink_job_server(flink_job_server_jar, tmp_path_factory):
    """One Flink job server (the jar ``make flink-job-server`` assembles, on an embedded local cluster) for the
    session; ``host:port`` of its job service. Started by Beam for each pipeline instead, it costs a JVM and
    about 5 s per job, and Beam stops the ones it starts in this process only when the process ends (they
    idled on, 700 MB each, through the rest of the suite)."""
    work = tmp_path_factory.mktemp("flink-job-server")
    port = free_port()
    service = _launch("the Flink job server", ["java", "-jar", flink_job_server_jar, "--flink-master", "[local]",
                                               "--job-port", str(port), "--artifact-port", "0", "--expansion-port",
                                               "0", "--artifacts-dir", str(work / "artifacts")],
                      work / "job-server.log", lambda: _port_open(port))
    yield f"127.0.0.1:{port}"
    service.stop()


@pytest.fixture(scope="session")
def flink_args(flink_job_server_jar, request):
    """``flink_args(*extra, own_job_server=False)`` -> the pipeline flags for Beam's Flink runner on an embedded
    local cluster: by default through the session's job server (``flink_job_server``); with ``own_job_server``,
    as the README tells users, with Beam starting the job server jar for the job."""

    def args(*extra: str, own_job_server: bool = False) -> list[str]:
        where = ([f"--flink_job_server_jar={flink_job_server_jar}", "--flink_master=[local]"] if own_job_server
                 else [f"--job_endpoint={request.getfixturevalue('flink_job_server')}"])
        return ["--runner=FlinkRunner", *where, "--environment_type=LOOPBACK", "--parallelism=2", *extra]

    return args


@pytest.fixture(scope="session")
def spark_job_server_jar() -> str:
    """Path of the Spark job server's launcher jar (``make spark-job-server``); skips when it is not there."""
    return _job_server_jar("spark", SPARK_JAR)


@pytest.fixture(scope="module")
def readings_csv(tmp_path_factory):
    """Long readings of two pumps with two anomalies each, a malformed row, a bad value and a repeated reading,
    for the runners' tests (Flink, Spark); the path and its number of records."""
    import numpy as np

    from seqwatch.models.synthetic import generate_sensor_data

    readings, _ = generate_sensor_data(n_entities=2, n_steps=900, seed=7, anomalies_per_entity=2,
                                       kinds=("level_shift", "broken_channel"))
    readings = readings.sort_values(["timestamp", "entity_id", "channel"]).reset_index(drop=True)
    readings["timestamp"] = readings["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    readings["value"] = readings["value"].round(4).astype(object)
    readings.loc[500, "value"] = "n/a"
    readings = readings.iloc[np.r_[np.arange(len(readings)), [700]]]
    path = tmp_path_factory.mktemp("runner-in") / "readings.csv"
    readings.to_csv(path, index=False)
    with open(path, "a") as f:
        f.write("pump-01,flow\n")
    return path, len(readings) + 1


def parquet_tables(root: Path, sink: str) -> dict:
    """Each Parquet file under ``root/sink``, by its path under ``root``."""
    import pyarrow.parquet as pq

    return {p.relative_to(root): pq.read_table(p) for p in sorted((root / sink).rglob("*.parquet"))}


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory) -> str:
    """A mosquitto broker on 127.0.0.1 for the whole session (Debian's package; `make mosquitto` installs it
    where it can); ``host:port``. Skips when mosquitto or paho-mqtt is missing."""
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if binary is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto, or `make mosquitto` as root)")
    _need_module("paho.mqtt", "paho-mqtt")
    work = tmp_path_factory.mktemp("mosquitto")
    port = free_port()
    # An offline persistent session keeps every queued QoS 1 message (the default keeps 1,000).
    (work / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                                         "max_queued_messages 0\n")
    log = work / "mosquitto.log"
    process = subprocess.Popen([binary, "-c", str(work / "mosquitto.conf")], stdout=open(log, "w"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while not _port_open(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"mosquitto did not start on 127.0.0.1:{port}:\n{_tail(log)}")
        time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


def _need_kafka() -> None:
    if shutil.which("java") is None:
        pytest.skip("Java 17+ is not installed (Kafka needs it)")
    if not any(KAFKA_LIBS.glob("kafka_*.jar")):
        pytest.skip(f"the Kafka jars are not in {KAFKA_LIBS.relative_to(REPO)}: run `make kafka-jars` (Maven)")
    _need_module("confluent_kafka", "confluent-kafka")


def start_kafka_node(work: Path, port: int, controller_port: int, log_name: str = "kafka.log") -> Service:
    """One Kafka node on ``port``, its data in ``work/node`` (a node started again on the same folder and ports
    keeps its topics and committed offsets)."""
    from confluent_kafka.admin import AdminClient

    bootstrap = f"127.0.0.1:{port}"

    def ready() -> bool:
        if not _port_open(port):
            return False
        try:
            return bool(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2).brokers)
        except Exception:  # noqa: BLE001 - not answering yet
            return False

    return _launch("Kafka", ["bash", str(KAFKA_SCRIPT), "--port", str(port), "--controller-port",
                             str(controller_port), "--dir", str(work / "node")], work / log_name, ready)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory) -> KafkaBroker:
    """One Kafka node (broker + KRaft controller) on 127.0.0.1, for the whole session."""
    _need_kafka()
    work = tmp_path_factory.mktemp("kafka")
    port = free_port()
    service = start_kafka_node(work, port, free_port())
    try:
        yield KafkaBroker(f"127.0.0.1:{port}", service.log, service.started_s)
    finally:
        service.stop()


@pytest.fixture
def own_kafka_node(tmp_path):
    """``start() -> KafkaBroker``: a Kafka node of the test's own, which the test may stop (``stop()``) and start
    again on the same ports and data; stopped at the end."""
    _need_kafka()
    port, controller_port = free_port(), free_port()
    services = []

    class Node:
        def start(self) -> KafkaBroker:
            service = start_kafka_node(tmp_path, port, controller_port, f"kafka-{len(services)}.log")
            services.append(service)
            return KafkaBroker(f"127.0.0.1:{port}", service.log, service.started_s)

        def stop(self) -> None:
            services[-1].stop()

    try:
        yield Node()
    finally:
        for service in services:
            service.stop()


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory) -> PubSubEmulator:
    """The Pub/Sub emulator on 127.0.0.1, for the whole session."""
    if not os.access(PUBSUB_EMULATOR_DIR / "bin" / "cloud-pubsub-emulator", os.X_OK):
        pytest.skip(f"the Pub/Sub emulator is not installed at {PUBSUB_EMULATOR_DIR} (Debian package "
                    f"google-cloud-cli-pubsub-emulator; `make pubsub-emulator` checks it)")
    _need_module("google.cloud.pubsub_v1", "google-cloud-pubsub")
    work = tmp_path_factory.mktemp("pubsub")
    port = free_port()
    service = _launch("Pub/Sub emulator", ["bash", str(PUBSUB_SCRIPT), "--port", str(port)],
                      work / "pubsub.log", lambda: _port_open(port))
    try:
        yield PubSubEmulator(f"127.0.0.1:{port}", "seqwatch-test", service.log, service.started_s,
                             service.process.pid)
    finally:
        service.stop()
