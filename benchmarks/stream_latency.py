"""Streaming benchmark (issue 7): event-to-alert latency and sustained readings/s of ``seqwatch stream`` on Prism
and on Flink, fed by a real Kafka broker on 127.0.0.1.

    .venv/bin/python benchmarks/stream_latency.py            # what `make bench-stream` runs (~10 min)
    .venv/bin/python benchmarks/stream_latency.py --quick    # a smaller smoke run (not for BENCHMARKS.md)
    .venv/bin/python benchmarks/stream_latency.py --archive-cost   # only Prism's rate without/with --archive-readings

Phase 1, latency. A publisher thread sends the readings of E pumps (4 channels, one reading per channel per
second of event time, anomalies injected) to a Kafka topic paced on the wall clock at ``--speed`` times real
time, and notes when each second of event time was sent. ``seqwatch stream`` reads the topic on Prism (and
then, from a topic of its own, on Flink); a
watcher thread notes when each output file appears (sinks write a temporary name, then rename). Latencies:
- *alert*: the alert file's appearance minus the publication of the reading that completed the incident's first
  anomalous window (the reading that caused it);
- *score*: a pane's score file's appearance minus the publication of the newest reading it scores.
Both include event-time waits the pipeline is designed to have, which shrink as ``--speed`` grows: a pane is
scored once the watermark passes its end plus the look-ahead context, and an incident is closed (one alert, with
its full extent) once the watermark passes its last window by the settle time. The table splits each latency
into that designed wait (event time / speed) and the rest (processing, polling, Prism's scheduling).

Phase 2, sustained rate. N readings are published up front; ``seqwatch stream --start earliest`` drains the
backlog. Reported: readings scored per second between the first and the last output file (steady state), and
over the job's whole wall time (with start-up).

Flink: Beam's Flink job server as ``make flink-job-server`` assembles it (Beam 2.50's Flink 1.16 runner; see
deploy/flink/pom.xml), an embedded local Flink cluster, the Python worker in the submitting process (LOOPBACK).
Without the jar the Flink rows say so. Results replace the streaming section of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import log  # noqa: E402
from sections import BENCHMARKS_MD, replace_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PRISM = REPO / ".tools" / "bin" / "prism"
FLINK_JAR = REPO / ".tools" / "flink" / "beam-flink-job-server.jar"
RUNNER_ARGS = {
    "Prism": ["--runner=PrismRunner", f"--prism_location={PRISM}", "--prism_log_level=warn"],
    "Flink": ["--runner=FlinkRunner", f"--flink_job_server_jar={FLINK_JAR}", "--flink_master=[local]",
              "--environment_type=LOOPBACK", "--parallelism=2"],
}
KAFKA_LIBS = REPO / ".tools" / "kafka" / "libs"
OUT = REPO / "benchmarks" / "out" / "stream"
WINDOW, STRIDE, UNITS, STEP_S = 16, 4, 16, 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Kafka:
    """One KRaft node started with deploy/streaming/kafka-local.sh on free ports. A port found free can be taken by
    another process before the node binds it (a soak run lost its node so: "Address already in use"): the node is
    then started again on other ports, up to three times."""

    ATTEMPTS = 3

    def __init__(self, work: Path):
        self.log_path = work / "kafka.log"
        for attempt in range(1, self.ATTEMPTS + 1):
            if self._start(work):
                return
            taken = "Address already in use" in self.log_path.read_text(errors="replace")
            self.stop()
            if not taken or attempt == self.ATTEMPTS:
                break
            shutil.rmtree(work / "node", ignore_errors=True)
        raise RuntimeError(f"Kafka did not start; see {self.log_path}")

    def _start(self, work: Path) -> bool:
        from confluent_kafka.admin import AdminClient

        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            ["bash", str(REPO / "deploy" / "streaming" / "kafka-local.sh"), "--port", str(self.port),
             "--controller-port", str(free_port()), "--dir", str(work / "node")],
            stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2).brokers:
                    return True
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if self.process.poll() is not None:
                return False
            time.sleep(1)
        return False

    def create_topic(self, name: str) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.create_topics([NewTopic(name, 1, 1)], operation_timeout=30).values():
            future.result(timeout=60)

    def producer(self):
        from confluent_kafka import Producer

        return Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, "queue.buffering.max.messages":
                         1_000_000})

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def make_readings(n_entities: int, n_steps: int, seed: int, anomalies: int):
    from seqwatch.models.synthetic import generate_sensor_data

    readings, labels = generate_sensor_data(n_entities, n_steps, STEP_S, anomalies_per_entity=anomalies, seed=seed,
                                            kinds=("level_shift", "broken_channel", "spike")
                                            if anomalies else ("level_shift",))
    readings = readings.sort_values(["timestamp", "entity_id", "channel"]).reset_index(drop=True)
    return readings, labels


def train(model_dir: Path) -> dict:
    from seqwatch.models.artifact import save_artifact
    from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
    from seqwatch.models.detector import Seq2SeqDetector

    normal, _ = make_readings(4, 3000, seed=11, anomalies=0)
    config = DetectorConfig(ArchitectureConfig(units=UNITS), WindowConfig(WINDOW, STRIDE, 2),
                            TrainingConfig(epochs=8, batch_size=128, patience=3))
    detector = Seq2SeqDetector(config, model_id="stream-bench").fit(normal, progress=False)
    save_artifact(detector, model_dir)
    return json.loads((model_dir / "metadata.json").read_text())


def messages_by_second(readings: pd.DataFrame) -> list[list[bytes]]:
    """The Kafka payloads of each second of event time, in order."""
    seconds = ((readings["timestamp"] - readings["timestamp"].min()).dt.total_seconds() // STEP_S).astype(int)
    stamps = readings["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    payloads = [json.dumps({"entity_id": e, "channel": c, "timestamp": t, "value": round(float(v), 5)}).encode()
                for e, c, t, v in zip(readings["entity_id"], readings["channel"], stamps, readings["value"])]
    out: list[list[bytes]] = [[] for _ in range(int(seconds.max()) + 1)]
    for s, payload in zip(seconds, payloads):
        out[s].append(payload)
    return out


def stream_command(model_dir: Path, output: Path, kafka: Kafka, topic: str, idle_s: float, runner: str,
                   extra: tuple = ()) -> list[str]:
    return [sys.executable, "-m", "seqwatch.pipelines.cli", "stream", "--source", "kafka", "--model-dir",
            str(model_dir), "--output", str(output), "--bootstrap-servers", kafka.bootstrap, "--topic", topic,
            "--start", "earliest", "--stop-after-idle", str(idle_s), "--flush-window", "300", *RUNNER_ARGS[runner],
            *extra]


class FileWatch(threading.Thread):
    """Notes the first time each Parquet file under ``root`` is seen (polled every 50 ms)."""

    def __init__(self, root: Path):
        super().__init__(daemon=True)
        self.root = root
        self.seen: dict[Path, float] = {}
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            if self.root.exists():
                now = time.time()
                for path in self.root.rglob("*.parquet"):
                    self.seen.setdefault(path, now)
            time.sleep(0.05)


def summed_counts(output: Path) -> dict:
    counts: dict = {}
    for f in (output / "counts").glob("*.json"):
        for key, value in json.loads(f.read_text()).items():
            counts[key] = counts.get(key, 0) + value
    return counts


def run_latency(kafka: Kafka, model_dir: Path, meta: dict, work: Path, n_entities: int, n_steps: int,
                speed: float, runner: str) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    readings, labels = make_readings(n_entities, n_steps, seed=5, anomalies=2)
    t0_event = readings["timestamp"].min()
    batches = messages_by_second(readings)
    topic, tag = f"latency-{runner.lower()}", runner.lower()
    kafka.create_topic(topic)
    output = work / f"latency-out-{tag}"
    watch = FileWatch(output)
    watch.start()
    job_log_path = work / f"latency-job-{tag}.log"
    job_log = open(job_log_path, "w")
    job = subprocess.Popen(stream_command(model_dir, output, kafka, topic, idle_s=15, runner=runner), stdout=job_log,
                           stderr=subprocess.STDOUT)
    time.sleep(20 if runner == "Flink" else 10)  # the job starts and subscribes first (start-up is not latency)
    producer = kafka.producer()
    sent_at = np.zeros(len(batches))
    start = time.time()
    log(f"latency: publishing {len(readings):,} readings of {n_entities} pumps at {speed:g}x real time "
        f"({len(batches) / speed:.0f} s)")
    for s, payloads in enumerate(batches):
        delay = start + s * STEP_S / speed - time.time()
        if delay > 0:
            time.sleep(delay)
        for payload in payloads:
            producer.produce(topic, payload)
        producer.poll(0)
        sent_at[s] = time.time()
    producer.flush(60)
    job.wait(timeout=900)
    watch.done.set()
    watch.join()
    if job.returncode != 0:
        raise RuntimeError(f"seqwatch stream on {runner} failed; see {job_log_path}")

    step_us = int(meta["step_us"])
    t0_us = int(t0_event.value // 1000)
    published_until = sent_at[-1]

    def sent(event_us: int) -> float:
        return sent_at[(event_us - t0_us) // (STEP_S * 1_000_000)]

    # Files that appeared after the last reading was published waited for the end of the stream (the watermark
    # only moves on with new readings, or when the source stops), not for the pipeline: counted apart.
    alert_rows, opened_latency, score_latency = [], [], []
    at_end = {"alerts": 0, "alerts_open": 0, "scores": 0}
    for path, seen in watch.seen.items():
        kind = path.relative_to(output).parts[0]
        if kind not in at_end:
            continue
        if seen > published_until:
            at_end[kind] += 1
            continue
        if kind == "alerts_open":
            start_us = pq.read_table(path, columns=["start"]).column("start").cast(pa.int64()).to_pylist()[0]
            opened_latency.append(seen - sent(start_us + (WINDOW - 1) * step_us))
        elif kind == "alerts":
            table = pq.read_table(path, columns=["start", "end"])
            for start_us, end_us in zip(*(table.column(c).cast(pa.int64()).to_pylist() for c in ("start", "end"))):
                cause = start_us + (WINDOW - 1) * step_us  # end of the incident's first anomalous window
                alert_rows.append({"latency_s": seen - sent(cause), "incident_s": (end_us - cause) / 1e6})
        else:  # every window's newest reading -> the score file holding it
            ends = pq.read_table(path, columns=["window_end"]).column("window_end").cast(pa.int64()).to_pylist()
            score_latency.extend(seen - sent(end) for end in ends)
    counts = summed_counts(output)
    alerts = pd.DataFrame(alert_rows)
    found = re.search(r"panes of (\d+) steps", job_log_path.read_text())
    pane_steps = int(found.group(1)) if found else None
    return {"readings": int(len(readings)), "incidents": int(len(labels)), "alerts": int(len(alerts)),
            "speed": speed, "entities": n_entities, "counts": counts,
            "alert_p50_s": float(np.median(alerts["latency_s"])) if len(alerts) else None,
            "alert_p99_s": float(np.quantile(alerts["latency_s"], 0.99)) if len(alerts) else None,
            "incident_p50_s": float(np.median(alerts["incident_s"])) if len(alerts) else None,
            "opened_p50_s": float(np.median(opened_latency)) if opened_latency else None,
            "opened_p99_s": float(np.quantile(opened_latency, 0.99)) if opened_latency else None,
            "notices": len(opened_latency),
            "score_p50_s": float(np.median(score_latency)), "score_p99_s": float(np.quantile(score_latency, 0.99)),
            "windows_timed": len(score_latency), "at_stream_end": at_end, "pane_steps": pane_steps,
            "publish_lag_max_s": float(np.max(sent_at - (start + np.arange(len(batches)) * STEP_S / speed)))}


def run_sustained(kafka: Kafka, model_dir: Path, work: Path, n_entities: int, n_steps: int, runner: str,
                  extra: tuple = (), tag: str = "") -> dict:
    readings, _ = make_readings(n_entities, n_steps, seed=6, anomalies=2)
    tag = runner.lower() + tag
    topic = f"backlog-{tag}"
    kafka.create_topic(topic)
    producer = kafka.producer()
    log(f"sustained: publishing a backlog of {len(readings):,} readings")
    for payloads in messages_by_second(readings):
        for payload in payloads:
            while True:
                try:
                    producer.produce(topic, payload)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.poll(0)
    producer.flush(120)
    output = work / f"sustained-out-{tag}"
    watch = FileWatch(output)
    watch.start()
    idle_s = 8
    started = time.time()
    job_log_path = work / f"sustained-job-{tag}.log"
    with open(job_log_path, "w") as job_log:
        result = subprocess.run(stream_command(model_dir, output, kafka, topic, idle_s=idle_s, runner=runner,
                                               extra=extra),
                                stdout=job_log, stderr=subprocess.STDOUT, timeout=1200)
    ended = time.time()
    watch.done.set()
    watch.join()
    if result.returncode != 0:
        raise RuntimeError(f"seqwatch stream on {runner} failed; see {job_log_path}")
    counts = summed_counts(output)
    scores = sorted(seen for path, seen in watch.seen.items() if path.relative_to(output).parts[0] == "scores")
    steady_s = scores[-1] - scores[0]
    return {"readings": int(len(readings)), "counts": counts, "wall_s": ended - started, "idle_wait_s": idle_s,
            "first_output_s": scores[0] - started, "steady_s": steady_s,
            "steady_readings_per_s": counts.get("records_scored", 0) / steady_s if steady_s > 0 else None,
            "overall_readings_per_s": counts.get("records_in", 0) / (ended - started - idle_s)}


def render(result: dict, command: str) -> str:
    runs = result["runs"]
    lat = runs["Prism"]["latency"]
    pane = lat["pane_steps"]
    wait_score = ((pane or 0) + WINDOW + 1) * STEP_S / lat["speed"]
    names = [name for name in RUNNER_ARGS if "latency" in runs.get(name, {})]

    def cells(key: str) -> str:
        return " | ".join(f"{_fmt(runs[n]['latency'][key + '_p50_s'])} | {_fmt(runs[n]['latency'][key + '_p99_s'])}"
                          for n in names)

    flink = runs.get("Flink", {})
    lines = [
        "## Streaming",
        "",
        f"Command: `{command}` (= `make bench-stream`), run {result['date']} on {result['machine']}; whole benchmark "
        f"{result['wall_s']:.0f} s. `seqwatch stream` with Beam {result['beam']} on Prism (built from the Beam Go "
        "module; seqwatch turns Prism's runner-initiated bundle splits off, `seqwatch.pipelines.runners`, since they "
        "let two bundles change one key's state; before that setting, 2026-11-30, the same benchmark drained the "
        "backlog on Prism at 11,588 readings/s steady, 7,146 whole job, first output after 27.9 s) and on Flink (an embedded local cluster, parallelism 2, started by the job server that `make "
        "flink-job-server` assembles: Beam 2.50's Flink 1.16 runner, the newest on the Maven mirror here; the Python "
        f"worker runs in the job's own process), Kafka {result['kafka']} (one KRaft node on 127.0.0.1), LSTM "
        f"autoencoder {UNITS} units, window {WINDOW}, stride {STRIDE}, readings every {STEP_S} s, stream panes of "
        f"{pane or 'default'} steps. Load average during the run: {result['load']}; other jobs shared the 2 cores, "
        "so read the medians, not the last digit.",
        "",
        f"**Latency** ({lat['entities']} pumps x 4 channels, {lat['readings']:,} readings played at "
        f"{lat['speed']:g}x real time, {lat['incidents']} injected incidents; alerts: "
        + ", ".join(f"{runs[n]['latency']['alerts']} on {n}" for n in names) + "):",
        "",
        "| what | " + " | ".join(f"{n} p50 s | {n} p99 s" for n in names) + " | of which designed event-time wait |",
        "|---|" + "---|---|" * len(names) + "---|",
        f"| reading -> score of the window it completes | {cells('score')} | the rest of its pane ({pane} steps) "
        f"and the look-ahead context: up to {wait_score:.2f} s at {lat['speed']:g}x |",
        f"| causing reading -> incident-opened notice, `alerts_open/` | {cells('opened')} | as for scores |",
        f"| causing reading -> alert file, `alerts/` | {cells('alert')} | the rest of the incident (median "
        f"{_fmt(lat['incident_p50_s'])} s of event time) plus the settle time, / {lat['speed']:g} |",
        "",
    ]
    for n in names:
        run = runs[n]["latency"]
        lines.append(
            f"{n}: not in the table (files that appeared after the last reading was published): "
            f"{run['at_stream_end']['scores']} score files, {run['at_stream_end']['alerts_open']} notice(s) and "
            f"{run['at_stream_end']['alerts']} alert file(s); they waited for the end of the stream (the watermark "
            "moves on only with newer readings, or when the source stops after its idle time). Counts: "
            f"{run['counts'].get('records_in', 0):,} in = {run['counts'].get('records_scored', 0):,} scored + "
            f"{run['counts'].get('records_quarantined', 0):,} quarantined; the publisher kept to its schedule "
            f"within {run['publish_lag_max_s']:.2f} s.")
        lines.append("")
    sus = runs["Prism"]["sustained"]
    lines += [
        f"**Sustained rate** (a backlog of {sus['readings']:,} readings drained with `--start earliest`):",
        "",
        "| runner | readings/s, steady | readings/s, whole job | job wall s | first output after s |",
        "|---|---|---|---|---|",
    ]
    for n in RUNNER_ARGS:
        if "sustained" in runs.get(n, {}):
            run = runs[n]["sustained"]
            lines.append(f"| {n} | {_fmt(run['steady_readings_per_s'], ',.0f')} | {run['overall_readings_per_s']:,.0f} | "
                         f"{run['wall_s']:.0f} | {run['first_output_s']:.1f} |")
        else:
            lines.append(f"| {n} | {runs.get(n, {}).get('skipped', 'not run')} | – | – | – |")
    lines += [
        "",
        "- Steady = readings scored between the first and the last score file, over that time; whole job = "
        f"readings in over the job's wall time less its {sus['idle_wait_s']} s idle stop.",
        "- Latency is dominated by design, not by processing: a pane is scored only once its look-ahead context "
        "has arrived, and the one alert per incident is written when the incident is over (so that it carries "
        "its extent and a stable id); the incident-opened notice comes with the first anomalous window's pane. "
        "At real speed (1x) these waits are the event-time seconds themselves.",
    ]
    if "skipped" in flink:
        lines.append(f"- Flink: {flink['skipped']}.")
    if "archive_cost" in result:
        lines += ["", *archive_lines(result["archive_cost"])]
    return "\n".join(lines)


ARCHIVE_OUT = REPO / "benchmarks" / "out" / "stream-archive"
ARCHIVE_WINDOW_S = 3600


def _fresh(out: Path, prefix: str) -> Path:
    """Empties the result folder ``out`` and returns a new scratch folder; the model is trained next."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    log("training the model")
    return Path(tempfile.mkdtemp(prefix=prefix))


def archive_cost(quick: bool) -> int:
    """Prism draining the sustained phase's backlog without and with ``--archive-readings``, alternated (without,
    with, without, with) in one run; the result joins the streaming section of BENCHMARKS.md."""
    stored = OUT / "result.json"
    began = time.time()
    work = _fresh(ARCHIVE_OUT, "seqwatch-archive-bench-")
    train(ARCHIVE_OUT / "model")
    kafka = Kafka(work)
    runs = {"without": [], "with": []}
    try:
        for k in range(2):
            for name, extra in (("without", ()), ("with", ("--archive-readings", str(ARCHIVE_WINDOW_S)))):
                run = run_sustained(kafka, ARCHIVE_OUT / "model", work, *((8, 1200) if quick else (20, 6000)),
                                    runner="Prism", extra=extra, tag=f"-{name}-{k}")
                log(f"archive {name} #{k + 1}: {json.dumps({a: b for a, b in run.items() if a != 'counts'})}")
                runs[name].append(run)
    finally:
        kafka.stop()
        shutil.rmtree(work, ignore_errors=True)
    result = {"runs": runs, "window_s": ARCHIVE_WINDOW_S, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "wall_s": time.time() - began, "load": f"{os.getloadavg()[0]:.1f}",
              "command": "benchmarks/stream_latency.py --archive-cost" + (" --quick" if quick else "")}
    (ARCHIVE_OUT / "result.json").write_text(json.dumps(result, indent=1, default=str))
    text = "\n".join(archive_lines(result))
    print(text)
    if quick:
        return 0
    if stored.exists():
        full = json.loads(stored.read_text())
        full["archive_cost"] = result
        replace_section("stream", render(full, "benchmarks/stream_latency.py"))
    else:  # the whole benchmark's result is not here (a fresh clone): only the archive's lines of the section
        replace_archive_lines(text)
    return 0


def replace_archive_lines(text: str) -> None:
    """Put ``text`` in place of the archive's lines at the end of BENCHMARKS.md's streaming section, the rest of the
    section as it is."""
    path = BENCHMARKS_MD
    current = path.read_text()
    begin, end = current.index("**Cost of the reading archive**"), current.index("<!-- stream:end -->")
    path.write_text(current[:begin] + text + "\n" + current[end:])


def archive_lines(result: dict) -> list[str]:
    runs = result["runs"]

    def median(name: str, key: str) -> float:
        return float(np.median([run[key] for run in runs[name]]))

    steady = {name: median(name, "steady_readings_per_s") for name in runs}
    whole = {name: median(name, "overall_readings_per_s") for name in runs}
    archived = [run["counts"].get("readings_archived", 0) for run in runs["with"]]
    scored = [run["counts"].get("records_scored", 0) for run in runs["with"]]
    each = "; ".join(f"{name}: " + ", ".join(f"{run['steady_readings_per_s']:,.0f}" for run in runs[name])
                     for name in runs)
    return [
        f"**Cost of the reading archive** (`--archive-readings {result['window_s']}`; command `{result['command']}`, "
        f"run {result['date']}, {result['wall_s']:.0f} s, load {result['load']}): Prism drained the same "
        f"{runs['with'][0]['readings']:,}-reading backlog four times, alternating without and with the archive "
        "(a run of its own: compare these rows with each other, not with the table above).",
        "",
        "| Prism | readings/s, steady (median of 2) | readings/s, whole job (median of 2) |",
        "|---|---|---|",
        f"| without the archive | {steady['without']:,.0f} | {whole['without']:,.0f} |",
        f"| with the archive | {steady['with']:,.0f} | {whole['with']:,.0f} |",
        "",
        f"With/without: {steady['with'] / steady['without']:.2f} steady, {whole['with'] / whole['without']:.2f} "
        f"whole job (each run, steady: {each}). Readings archived per run with it: "
        + ", ".join(f"{a:,}" for a in archived) + " (readings scored: " + ", ".join(f"{s:,}" for s in scored) + ").",
    ]


def _fmt(value, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller smoke run (does not touch BENCHMARKS.md)")
    parser.add_argument("--speed", type=float, default=20.0, help="replay speed of the latency phase")
    parser.add_argument("--render-only", action="store_true", help="rewrite BENCHMARKS.md from the last result")
    parser.add_argument("--archive-cost", action="store_true",
                        help="only the cost of --archive-readings: Prism's sustained rate with and without it")
    args = parser.parse_args(argv)
    if args.render_only:  # re-render BENCHMARKS.md from the stored result (after a change to the text)
        result = json.loads((OUT / "result.json").read_text())
        archive = ARCHIVE_OUT / "result.json"
        if archive.exists():
            result["archive_cost"] = json.loads(archive.read_text())
        replace_section("stream", render(result, "benchmarks/stream_latency.py"))
        return 0
    for need, how in ((PRISM, "make prism"), (KAFKA_LIBS, "make kafka-jars")):
        if not need.exists():
            print(f"stream_latency: {need.relative_to(REPO)} is missing; run `{how}` first", file=sys.stderr)
            return 2
    if args.archive_cost:
        return archive_cost(args.quick)
    began = time.time()
    work = _fresh(OUT, "seqwatch-stream-bench-")
    model_dir = OUT / "model"
    meta = train(model_dir)
    kafka = Kafka(work)
    loads, runs = [], {}
    try:
        for runner in RUNNER_ARGS:
            if runner == "Flink" and not FLINK_JAR.exists():
                runs[runner] = {"skipped": "not run: the job server is not built (`make flink-job-server`)"}
                continue
            n_latency = (8, 600) if args.quick else (16, 2400)
            latency = run_latency(kafka, model_dir, meta, work, *n_latency, speed=args.speed, runner=runner)
            loads.append(os.getloadavg()[0])
            log(f"{runner} latency: {json.dumps({k: v for k, v in latency.items() if k != 'counts'})}")
            n_sustained = (8, 1200) if args.quick else (20, 6000)
            sustained = run_sustained(kafka, model_dir, work, *n_sustained, runner=runner)
            loads.append(os.getloadavg()[0])
            log(f"{runner} sustained: {json.dumps({k: v for k, v in sustained.items() if k != 'counts'})}")
            runs[runner] = {"latency": latency, "sustained": sustained}
    finally:
        kafka.stop()
    import apache_beam

    kafka_version = next(KAFKA_LIBS.glob("kafka_*.jar")).stem.split("-", 1)[1]
    result = {"runs": runs, "wall_s": time.time() - began,
              "date": time.strftime("%Y-%m-%d"), "beam": apache_beam.__version__, "kafka": kafka_version,
              "machine": f"{os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}",
              "load": " / ".join(f"{x:.1f}" for x in loads)}
    (OUT / "result.json").write_text(json.dumps(result, indent=1, default=str))
    text = render(result, "benchmarks/stream_latency.py" + (" --quick" if args.quick else ""))
    print(text)
    if not args.quick:
        replace_section("stream", text)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
