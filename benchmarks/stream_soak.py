"""Long-running streams (soak): ``seqwatch stream`` on Prism, fed live by Kafka, MQTT and the Pub/Sub emulator at
once, each for ``--minutes`` of wall clock with event time = wall clock, then stopped by SIGTERM.

    .venv/bin/python benchmarks/stream_soak.py                 # what `make bench-soak` runs (~13 min)
    .venv/bin/python benchmarks/stream_soak.py --minutes 5 --sources kafka   # a smoke run of one stream (its CPU
                                                                              # alone; does not touch BENCHMARKS.md)

The suite's streams last seconds to two minutes; what only a stream that runs on shows is measured here: each
stream must live to its stop (a Prism job failed 5 minutes in, whatever it did, until 2026-12-05: Beam put
``--job_server_timeout`` on the job's state stream as its deadline), every reading published must come out
scored or quarantined (the closing line's totals against what was published), no traceback, and the resident
memory of seqwatch's process (the SDK worker runs in it) and of its job server, sampled every 30 s, should level
off rather than grow with the readings. Each source has its own broker, stream and output; the pumps publish
one reading per channel per second (4 channels) with anomalies injected, the streams run with
``--online-calibration`` (calibration written every ``--calibration-save-every`` 120 s), Kafka's with
``--archive-readings 300`` too (``--no-archive``: without, to compare its CPU with the others'). Results replace
the soak section of BENCHMARKS.md.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import log  # noqa: E402
from sections import replace_section  # noqa: E402
from stream_latency import PRISM, Kafka, free_port, make_readings, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "soak"
PUBSUB_SCRIPT = REPO / "deploy" / "streaming" / "pubsub-emulator.sh"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SAMPLE_EVERY_S = 30.0
SETTLE_S = 40.0  # after the last reading, before the SIGTERM: the last panes' look-ahead and lateness
CLOSING = re.compile(r"seqwatch stream: stopped by SIGTERM once it had written what it read; records in (\d+) = "
                     r"scored (\d+) \+ quarantined (\d+), incidents (\d+)")


def rss_mb(pid: int) -> float | None:
    try:
        return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024
    except (OSError, AttributeError):
        return None


def cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) ``pid`` has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> dict[int, str]:
    """``{pid: command name}`` of every process under ``pid`` (the job server runs under a guard)."""
    parents, found = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        parents.setdefault(int(rest[1]), []).append((int(stat.parent.name), name))
    queue = [pid]
    while queue:
        for child, name in parents.get(queue.pop(), []):
            found[child] = name
            queue.append(child)
    return found


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False


def _start_service(what: str, command: list[str], log_path: Path, port: int, timeout_s: float) -> subprocess.Popen:
    """``command`` in a session of its own, its output to ``log_path``, once it answers on ``port``."""
    process = subprocess.Popen(command, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while not _port_open(port):
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{what} did not start; see {log_path}")
        time.sleep(0.2)
    return process


class KafkaSource:
    name = "Kafka"
    archive = True  # --archive-readings 300 (the soak's default); --no-archive: none, to compare with the others

    def __init__(self, work: Path):
        self.kafka = Kafka(work)
        self.kafka.create_topic("soak")
        self.producer = self.kafka.producer()

    def args(self) -> list[str]:
        return ["--source", "kafka", "--bootstrap-servers", self.kafka.bootstrap, "--topic", "soak",
                *(["--archive-readings", "300"] if self.archive else [])]

    def publish(self, payloads: list[tuple[str, bytes]]) -> None:
        for _, payload in payloads:
            self.producer.produce("soak", payload)
        self.producer.poll(0)

    def flush(self) -> None:
        assert self.producer.flush(60) == 0

    def stop(self) -> None:
        self.kafka.stop()


class MqttSource:
    name = "MQTT"

    def __init__(self, work: Path):
        import paho.mqtt.client as mqtt

        self.port = free_port()
        (work / "mosquitto.conf").write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                                             "persistence false\nmax_queued_messages 0\n")
        self.process = _start_service("mosquitto", [MOSQUITTO, "-c", str(work / "mosquitto.conf")],
                                      work / "mosquitto.log", self.port, 30)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-publisher")
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        self.sent = []

    def args(self) -> list[str]:
        return ["--source", "mqtt", "--mqtt-broker", f"127.0.0.1:{self.port}", "--topic", "plant/#"]

    def publish(self, payloads: list[tuple[str, bytes]]) -> None:
        for entity, payload in payloads:
            self.sent.append(self.client.publish(f"plant/{entity}", payload, qos=1))

    def flush(self) -> None:
        for message in self.sent:
            message.wait_for_publish(60)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        self.process.terminate()
        self.process.wait(30)


class PubSubSource:
    name = "Pub/Sub (emulator)"

    def __init__(self, work: Path):
        self.port = free_port()
        self.process = _start_service("the Pub/Sub emulator", ["bash", str(PUBSUB_SCRIPT), "--port", str(self.port)],
                                      work / "pubsub.log", self.port, 120)
        os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{self.port}"
        from google.cloud import pubsub_v1

        self.publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        self.topic = self.publisher.topic_path("soak-project", "readings")
        self.subscription = subscriber.subscription_path("soak-project", "readings-sub")
        self.publisher.create_topic(name=self.topic)
        subscriber.create_subscription(name=self.subscription, topic=self.topic, ack_deadline_seconds=30)
        self.futures = []

    def args(self) -> list[str]:
        return ["--source", "pubsub", "--subscription", self.subscription, "--emulator-host",
                f"127.0.0.1:{self.port}"]

    def publish(self, payloads: list[tuple[str, bytes]]) -> None:
        self.futures.extend(self.publisher.publish(self.topic, payload) for _, payload in payloads)

    def flush(self) -> None:
        assert all(future.result(timeout=60) for future in self.futures)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(30)


def soak(source_class, model: Path, work: Path, minutes: float, entities: int, seed: int,
         batch_seconds: float | None = None, spread: bool = False, beam_flags: tuple = ()) -> dict:
    """One source's soak; its row of the table. ``batch_seconds``: the stream's ``--batch-seconds``; ``spread``:
    pump k of n publishes its readings of a second k/n of a second after it (a fleet of devices that keep their own
    phase), not all pumps at the top of the second."""
    import pandas as pd

    work.mkdir(parents=True, exist_ok=True)
    # the readings first: a failure there had left the source's broker running (a Kafka node, found 2 hours later)
    readings, _ = make_readings(entities, int(minutes * 60), seed=seed, anomalies=1)
    source = source_class(work)
    start = pd.Timestamp.now(tz="UTC").floor("s") + pd.Timedelta(seconds=25)  # the stream's start-up
    readings["timestamp"] = start + (readings["timestamp"] - readings["timestamp"].min())
    readings["stamp"] = readings["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    pumps = sorted(readings["entity_id"].unique())
    phases = {entity: k / len(pumps) if spread else 0.0 for k, entity in enumerate(pumps)}
    readings["publish_at"] = readings["timestamp"] + pd.to_timedelta(readings["entity_id"].map(phases), unit="s")
    out, log_path = work / "out", work / "stream.log"
    command = [sys.executable, "-m", "seqwatch.pipelines.cli", "stream", *source.args(), "--model-dir", str(model),
               "--output", str(out), "--online-calibration", "--calibration-save-every", "120",
               f"--prism_location={PRISM}", "--prism_log_level=warn",
               *([] if batch_seconds is None else ["--batch-seconds", f"{batch_seconds:g}"]), *beam_flags]
    samples, published, ended_early = [], 0, None
    with open(log_path, "w") as stream_log:
        stream = subprocess.Popen(command, stdout=stream_log, stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    try:
        next_sample = started
        for publish_at, part in readings.groupby("publish_at", sort=True):
            while (wait := (publish_at - pd.Timestamp.now(tz="UTC")).total_seconds()) > 0:
                time.sleep(min(wait, 0.05))
            source.publish([(row.entity_id, json.dumps({"entity_id": row.entity_id, "channel": row.channel,
                                                        "timestamp": row.stamp, "value": round(float(row.value), 4)})
                             .encode()) for row in part.itertuples(index=False)])
            published += len(part)
            if time.monotonic() >= next_sample:
                next_sample += SAMPLE_EVERY_S
                job_server = [pid for pid, name in descendants(stream.pid).items() if name in ("prism", "java")]
                samples.append({"s": round(time.monotonic() - started), "published": published,
                                "seqwatch_mb": rss_mb(stream.pid),
                                "job_server_mb": rss_mb(job_server[0]) if job_server else None,
                                "seqwatch_cpu_s": cpu_s(stream.pid),
                                "job_server_cpu_s": cpu_s(job_server[0]) if job_server else None})
            if stream.poll() is not None:
                ended_early = round(time.monotonic() - started)
                break
        source.flush()
        if ended_early is None:
            time.sleep(SETTLE_S)
            stream.send_signal(signal.SIGTERM)
        returncode = stream.wait(timeout=600)
    finally:
        if stream.poll() is None:
            os.killpg(stream.pid, signal.SIGKILL)
        source.stop()
    text = log_path.read_text()
    closing = CLOSING.search(text)
    records_in, scored, quarantined, incidents = map(int, closing.groups()) if closing else (None,) * 4
    return {"source": source.name, "minutes": minutes, "entities": entities, "published": published,
            "batch_seconds": batch_seconds, "spread": spread,
            "records_in": records_in, "scored": scored, "quarantined": quarantined, "incidents": incidents,
            "returncode": returncode, "ended_early_s": ended_early, "tracebacks": text.count("Traceback"),
            "lived_s": round(time.monotonic() - started), "samples": samples, "log": str(log_path)}


def _mb(value) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _cores(first: dict, last: dict, key: str) -> str:
    """Cores used on average between two samples (CPU seconds over wall seconds)."""
    if first.get(key) is None or last.get(key) is None or last["s"] <= first["s"]:
        return "–"
    return f"{(last[key] - first[key]) / (last['s'] - first['s']):.2f}"


def render(result: dict) -> str:
    rows = result["rows"]
    lines = [
        "## Long-running streams (soak)",
        "",
        f"Command: `{result['command']}` (= `make bench-soak`), run {result['date']} on {result['cores']} cores "
        f"({result['machine']}), Python {result['python']}; whole benchmark {result['seconds']:.0f} s. Three "
        f"`seqwatch stream` jobs on Prism at once, each fed live by its own broker for {result['minutes']:g} "
        f"minutes of wall clock: {result['entities']} pumps x 4 channels, one reading per channel per second, "
        "event time = wall clock, anomalies injected; `--online-calibration --calibration-save-every 120` (Kafka's "
        f"with `--archive-readings 300` too); then {SETTLE_S:.0f} s for the last panes and a SIGTERM (the graceful "
        "stop). Resident memory and CPU time sampled every 30 s: seqwatch's process (the SDK worker runs in it) and "
        "its job server (Prism, under its guard); CPU cores: CPU seconds over wall seconds from the 1-minute sample "
        "to the last (three streams share the machine's cores).",
        "",
        "| source | readings published | records in = scored + quarantined | incidents | exit | tracebacks | "
        "seqwatch MB at 1 min / half-way / end | Prism MB at 1 min / end | CPU cores, seqwatch / Prism |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        samples = [s for s in row["samples"] if s["seqwatch_mb"] is not None]
        at_one = next((s for s in samples if s["s"] >= 60), samples[0] if samples else {})
        half = samples[len(samples) // 2] if samples else {}
        end = samples[-1] if samples else {}
        reconciled = (f"{row['records_in']:,} = {row['scored']:,} + {row['quarantined']:,}"
                      if row["records_in"] is not None else "no closing line")
        if row["ended_early_s"] is not None:
            reconciled += f" (the stream ended by itself after {row['ended_early_s']} s)"
        lines.append(f"| {row['source']} | {row['published']:,} | {reconciled} | {row['incidents']} | "
                     f"{row['returncode']} | {row['tracebacks']} | {_mb(at_one.get('seqwatch_mb'))} / "
                     f"{_mb(half.get('seqwatch_mb'))} / {_mb(end.get('seqwatch_mb'))} | "
                     f"{_mb(at_one.get('job_server_mb'))} / {_mb(end.get('job_server_mb'))} | "
                     f"{_cores(at_one, end, 'seqwatch_cpu_s')} / {_cores(at_one, end, 'job_server_cpu_s')} |")
    lines += [
        "",
        "- Every row should read records in = published, exit 0 and no traceback. Before 2026-12-05 each of these "
        "streams failed 5 minutes after it started (DEADLINE_EXCEEDED: Beam 2.77 put `--job_server_timeout` on the "
        "job's state stream as its deadline; README, \"Runners\" under Streaming).",
        "- Memory: seqwatch's process holds Beam, Keras and JAX (about 200 MB before the job starts); what grows "
        "after its first minutes is what a stream keeps per entity and pane. Its resident MB every 2 minutes:",
    ]
    for row in rows:
        series = [s["seqwatch_mb"] for s in row["samples"] if s["seqwatch_mb"] is not None][::4]
        lines.append(f"  {row['source']}: {' / '.join(_mb(value) for value in series)}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock minutes each stream is fed")
    parser.add_argument("--entities", type=int, default=10, help="pumps per stream (4 readings per second each)")
    parser.add_argument("--sources", default="kafka,mqtt,pubsub",
                        help="which streams to run, comma-separated (a smoke run of one: its CPU alone)")
    parser.add_argument("--batch-seconds", type=float,
                        help="each stream's --batch-seconds (default: the stream's own, 0.5 s)")
    parser.add_argument("--spread", action="store_true",
                        help="pump k of n publishes k/n of a second after the others' second, as devices that keep "
                             "their own phase (default: every pump at the top of each second)")
    parser.add_argument("--no-archive", action="store_true",
                        help="the Kafka stream without --archive-readings 300 (its CPU beside the others')")
    parser.add_argument("--beam-flag", action="append", default=[],
                        help="a Beam pipeline option every stream is given (repeatable), e.g. "
                             "--beam-flag=--max_cache_memory_usage_mb=64")
    parser.add_argument("--render-only", action="store_true", help="rewrite BENCHMARKS.md from the last result")
    options = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if options.render_only:
        replace_section("stream-soak", render(json.loads((OUT / "result.json").read_text())))
        return 0
    if options.minutes < 5:
        parser.error(f"--minutes must be at least 5 (the pumps' injected anomalies need 300 readings each), got "
                     f"{options.minutes:g}")
    classes = {"kafka": KafkaSource, "mqtt": MqttSource, "pubsub": PubSubSource}
    KafkaSource.archive = not options.no_archive
    chosen = {name.strip().lower() for name in options.sources.split(",")}
    if not chosen <= set(classes):
        parser.error(f"--sources takes a comma-separated list of {', '.join(classes)}, got {options.sources!r}")
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="seqwatch-soak-"))
    model = work / "model"
    log("training the streaming benchmark's model")
    train(model)
    results, threads = {}, []
    for seed, (key, source_class) in enumerate(classes.items()):
        if key not in chosen:
            continue
        def run(source_class=source_class, seed=seed):
            try:
                results[source_class.name] = soak(source_class, model, work / source_class.name.split()[0].lower()
                                                  .replace("/", ""), options.minutes, options.entities, 20 + seed,
                                                  options.batch_seconds, options.spread, tuple(options.beam_flag))
            except Exception as exc:  # noqa: BLE001 - a source that cannot be had is a row that says so
                results[source_class.name] = {"source": source_class.name, "error": f"{type(exc).__name__}: {exc}"}
        threads.append(threading.Thread(target=run, name=source_class.name))
        threads[-1].start()
    log(f"{len(threads)} stream(s) fed for {options.minutes:g} minutes each")
    for thread in threads:
        thread.join()
    rows = [results[name] for name in ("Kafka", "MQTT", "Pub/Sub (emulator)") if name in results]
    for row in rows:
        log(json.dumps({key: value for key, value in row.items() if key != "samples"}))
    failed = [row for row in rows if "error" in row]
    result = {"command": " ".join(["benchmarks/stream_soak.py", *sys.argv[1:]]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
              "machine": platform.machine(), "python": platform.python_version(), "minutes": options.minutes,
              "entities": options.entities, "seconds": time.monotonic() - began, "rows": rows}
    # what BENCHMARKS.md shows; a smoke run's result is kept apart
    full = options.minutes >= 10 and len(rows) == 3 and not options.no_archive and not options.beam_flag
    (OUT / ("result.json" if full else "smoke.json")).write_text(json.dumps(result, indent=1))
    if failed:
        log(f"not written to BENCHMARKS.md: {[row['error'] for row in failed]}")
        return 1
    if full:
        replace_section("stream-soak", render(result))
        log("BENCHMARKS.md: section stream-soak written")
    else:
        print(render(result))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(row["records_in"] == row["published"] and row["returncode"] == 0 and not row["tracebacks"]
                    for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
