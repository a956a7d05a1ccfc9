"""A quiet stream's CPU: ``seqwatch stream`` left running with nothing to read, as a 24/7 deployment is through
the night or between a sparse feed's readings. Each stream runs alone: its broker is started, the stream is
started on it and left ``--settle`` seconds past its opening line (its start-up: imports, the model, the job
server), then the CPU seconds of seqwatch's process (the SDK worker runs in it) and of its job server (Prism under
its guard, or the Flink job server's JVM) are counted over ``--seconds`` of wall clock; a SIGTERM then stops it,
and it must say it read nothing (records in 0) and exit 0.

    .venv/bin/python benchmarks/stream_idle.py          # what `make bench-stream-idle` runs (~14 min)
    .venv/bin/python benchmarks/stream_idle.py --sources kafka --batch-seconds 0.5 --seconds 60   # one row

The default runs Kafka, MQTT and the Pub/Sub emulator on Prism with the default 0.5 s batches and with 5 s ones
(``--batch-seconds``: how long a reader gathers a poll's messages, and so how many bundles a quiet source makes),
and Kafka on Flink (an embedded local cluster, as `make bench-stream` runs it). Results replace the stream-idle
section of BENCHMARKS.md when every row ran; a run of some rows prints its table only.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import log  # noqa: E402
from sections import replace_section  # noqa: E402
from stream_latency import FLINK_JAR, RUNNER_ARGS, train  # noqa: E402
from stream_soak import KafkaSource, MqttSource, PubSubSource, cpu_s, descendants  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "idle"
SOURCES = {"kafka": KafkaSource, "mqtt": MqttSource, "pubsub": PubSubSource}
OPENING = re.compile(r"seqwatch stream: \S+ -> ")
CLOSING = re.compile(r"records in (\d+) = scored (\d+) \+ quarantined (\d+)")
DEFAULT_ROWS = [("kafka", "Prism", 0.5), ("mqtt", "Prism", 0.5), ("pubsub", "Prism", 0.5),
                ("kafka", "Prism", 5.0), ("mqtt", "Prism", 5.0), ("pubsub", "Prism", 5.0), ("kafka", "Flink", 0.5)]


def quiet_stream(source_key: str, runner: str, batch_seconds: float, model: Path, work: Path, settle_s: float,
                 seconds: float) -> dict:
    """One quiet stream, alone: its row of the table."""
    work.mkdir(parents=True, exist_ok=True)
    source_class = SOURCES[source_key]
    KafkaSource.archive = False  # nothing to archive; the soak's Kafka stream archives, this one reads only
    source = source_class(work)
    out, log_path = work / "out", work / "stream.log"
    command = [sys.executable, "-m", "seqwatch.pipelines.cli", "stream", *source.args(), "--model-dir", str(model),
               "--output", str(out), "--batch-seconds", f"{batch_seconds:g}", *RUNNER_ARGS[runner]]
    row = {"source": source_class.name, "runner": runner, "batch_seconds": batch_seconds}
    with open(log_path, "w") as stream_log:
        stream = subprocess.Popen(command, stdout=stream_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not OPENING.search(log_path.read_text(errors="replace")):
            if stream.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stream did not start; its log ends: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        time.sleep(settle_s)
        job_server = [pid for pid, name in descendants(stream.pid).items() if name in ("prism", "java")]
        if not job_server:
            raise RuntimeError("no job server (prism or java) under the stream's process")
        before = (time.monotonic(), cpu_s(stream.pid), cpu_s(job_server[0]))
        time.sleep(seconds)
        after = (time.monotonic(), cpu_s(stream.pid), cpu_s(job_server[0]))
        wall = after[0] - before[0]
        row.update(seconds=round(wall, 1), seqwatch_cores=(after[1] - before[1]) / wall,
                   job_server_cores=(after[2] - before[2]) / wall)
        stream.send_signal(signal.SIGTERM)
        row["returncode"] = stream.wait(timeout=120)
    finally:
        if stream.poll() is None:
            os.killpg(stream.pid, signal.SIGKILL)
        source.stop()
    text = log_path.read_text(errors="replace")
    closing = CLOSING.search(text)
    row.update(records_in=int(closing.group(1)) if closing else None, tracebacks=text.count("Traceback"))
    return row


def render(result: dict) -> str:
    lines = [
        "## A quiet stream's CPU",
        "",
        f"Command: `{result['command']}` (= `make bench-stream-idle`), run {result['date']} on {result['cores']} "
        f"cores ({result['machine']}), Python {result['python']}; whole benchmark {result['seconds']:.0f} s. Each "
        "`seqwatch stream` runs alone on its own broker with nothing published: "
        f"{result['settle_s']:.0f} s after its opening line (past its start-up), the CPU seconds of seqwatch's "
        "process (the SDK worker runs in it) and of its job server are counted over "
        f"{result['measured_s']:.0f} s of wall clock, then a SIGTERM stops it. Cores: CPU seconds over wall "
        "seconds. The brokers' own CPU is not counted.",
        "",
        "| source | runner | `--batch-seconds` | cores, seqwatch + job server | records in | exit | tracebacks |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['source']} | {row['runner']} | {row['batch_seconds']:g} | {row['error']} | | | |")
            continue
        lines.append(f"| {row['source']} | {row['runner']} | {row['batch_seconds']:g} | "
                     f"{row['seqwatch_cores']:.3f} + {row['job_server_cores']:.3f} | {row['records_in']} | "
                     f"{row['returncode']} | {row['tracebacks']} |")
    lines += [
        "",
        "- Before 2026-12-07 a poll that had received nothing ended its bundle after its batch time, and a quiet "
        "source made a bundle every 0.5-0.7 s (run of 04:56 that day, on 0bd073f, seqwatch + job server cores): "
        "Kafka 0.029 + 0.071, MQTT 0.036 + 0.090, Pub/Sub 0.044 + 0.092 at 0.5 s; 0.029 + 0.028, 0.029 + 0.037, "
        "0.033 + 0.036 at 5 s; Kafka on Flink 0.017 + 0.044. Such a poll now waits on in its bundle for a first "
        "message, up to 5 s (`broker_sources.QUIET_POLL_S`; less where --stop-after-idle or --idle-watermark is "
        "due sooner), and a message that comes meanwhile is passed on a batch time later, as before.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", help="comma-separated, of kafka, mqtt, pubsub (default: the table's rows)")
    parser.add_argument("--runner", choices=["Prism", "Flink"], default="Prism",
                        help="the runner of the rows --sources asks for (default Prism)")
    parser.add_argument("--batch-seconds", type=float, default=0.5,
                        help="the --batch-seconds of the rows --sources asks for (default 0.5)")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds after the opening line before counting")
    parser.add_argument("--seconds", type=float, default=90.0, help="seconds of wall clock counted per stream")
    parser.add_argument("--render-only", action="store_true", help="rewrite BENCHMARKS.md from the last result")
    options = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if options.render_only:
        replace_section("stream-idle", render(json.loads((OUT / "result.json").read_text())))
        return 0
    if options.sources is None:
        rows = DEFAULT_ROWS
    else:
        chosen = [name.strip().lower() for name in options.sources.split(",")]
        if not set(chosen) <= set(SOURCES):
            parser.error(f"--sources takes a comma-separated list of {', '.join(SOURCES)}, got {options.sources!r}")
        rows = [(name, options.runner, options.batch_seconds) for name in chosen]
    if options.seconds < 10 or options.settle < 0:
        parser.error("--seconds must be at least 10 and --settle zero or more")
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="seqwatch-idle-"))
    log("training the streaming benchmark's model")
    train(work / "model")
    results = []
    for n, (source, runner, batch_seconds) in enumerate(rows):
        log(f"{source} on {runner}, --batch-seconds {batch_seconds:g}: {options.settle:g} s to settle, "
            f"{options.seconds:g} s counted ({n + 1} of {len(rows)})")
        if runner == "Flink" and not FLINK_JAR.exists():
            results.append({"source": SOURCES[source].name, "runner": runner, "batch_seconds": batch_seconds,
                            "error": "not run: the Flink job server is not built (`make flink-job-server`)"})
            continue
        try:
            row = quiet_stream(source, runner, batch_seconds, work / "model", work / f"{n}-{source}",
                               options.settle, options.seconds)
        except Exception as exc:  # noqa: BLE001 - a row that could not run says why
            row = {"source": SOURCES[source].name, "runner": runner, "batch_seconds": batch_seconds,
                   "error": f"{type(exc).__name__}: {exc}"}
        log(json.dumps(row))
        results.append(row)
    result = {"command": " ".join(["benchmarks/stream_idle.py", *sys.argv[1:]]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
              "machine": platform.machine(), "python": platform.python_version(), "settle_s": options.settle,
              "measured_s": options.seconds, "seconds": time.monotonic() - began, "rows": results}
    full = options.sources is None and not any("error" in row for row in results)
    (OUT / ("result.json" if full else "smoke.json")).write_text(json.dumps(result, indent=1))
    print(render(result))
    if full:
        replace_section("stream-idle", render(result))
        log("BENCHMARKS.md: section stream-idle written")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(row.get("records_in") == 0 and row.get("returncode") == 0 and not row.get("tracebacks")
                    for row in results) else 1


if __name__ == "__main__":
    sys.exit(main())
