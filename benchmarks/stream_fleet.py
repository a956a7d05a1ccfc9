"""Streaming benchmark of many entities: the CPU a ``seqwatch stream`` on Prism spends per reading when the same
readings come from 20, 200 or 1,000 entities, and the files it writes (with and without ``--score-window-files``).

    .venv/bin/python benchmarks/stream_fleet.py            # what `make bench-stream-fleet` runs (~6 min)
    .venv/bin/python benchmarks/stream_fleet.py --quick    # a smaller smoke run (not for BENCHMARKS.md)

A live stream delivers each poll's readings as a batch, so a fleet's pane (64 steps here, plus its look-ahead
context) is gathered from a piece of nearly every batch: the more entities share the readings, the more pieces,
panes and model calls per reading. Each run replays a Parquet file of the same number of readings (4 channels,
one reading per channel per second of event time, normal pumps; ``--source replay``) at a speed that
plays it in ``PLAY_S`` seconds of wall time, and notes the job's wall time and the CPU seconds of its process and
children (the Python worker runs in the job's own process on Prism, LOOPBACK; Prism's own CPU is counted when it
exits). A job that keeps up ends about ``PLAY_S`` plus start-up after it starts; one that does not falls behind.
Results replace the ``stream-fleet`` section of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import log  # noqa: E402
from sections import replace_section  # noqa: E402
from stream_latency import PRISM, RUNNER_ARGS, STEP_S, make_readings, summed_counts, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "stream_fleet"
PLAY_S = 10.0


def run_replay(model_dir: Path, work: Path, n_entities: int, n_steps: int, repeat: int, extra: tuple = ()) -> dict:
    readings, _ = make_readings(n_entities, n_steps, seed=20 + repeat, anomalies=0)
    source = work / f"fleet-{n_entities}.parquet"
    readings.to_parquet(source, index=False)
    speed = n_steps * STEP_S / PLAY_S
    output = work / f"out-{n_entities}-{repeat}-{len(extra)}"
    command = [sys.executable, "-m", "seqwatch.pipelines.cli", "stream", "--source", "replay", "--input", str(source),
               "--model-dir", str(model_dir), "--output", str(output), "--speed", f"{speed:g}",
               "--flush-window", "300", *RUNNER_ARGS["Prism"], *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    job_log = work / f"job-{n_entities}-{repeat}-{len(extra)}.log"
    with open(job_log, "w") as log_file:
        result = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, timeout=1800)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"seqwatch stream failed (exit {result.returncode}); see {job_log}")
    counts = summed_counts(output)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    shutil.rmtree(output, ignore_errors=True)
    return {"entities": n_entities, "extra": " ".join(extra), "files_written": counts.get("files_written", 0),
            "steps": n_steps, "readings": int(len(readings)), "speed": speed, "wall_s": wall,
            "cpu_s": cpu, "records_in": counts.get("records_in", 0), "records_scored": counts.get("records_scored", 0),
            "records_quarantined": counts.get("records_quarantined", 0)}


def render(result: dict) -> str:
    runs = result["runs"]
    variants = list(dict.fromkeys((run["entities"], run["extra"]) for run in runs))
    rows = []
    for n, extra in variants:
        mine = [run for run in runs if (run["entities"], run["extra"]) == (n, extra)]
        cpu = float(np.median([run["cpu_s"] for run in mine]))
        wall = float(np.median([run["wall_s"] for run in mine]))
        readings = mine[0]["readings"]
        rows.append((n, extra, mine[0]["steps"], readings, mine[0]["speed"], wall, cpu, cpu / readings * 1e6,
                     mine[0]["files_written"]))
    base = rows[0][7]
    lines = [
        "## Streams of many entities",
        "",
        f"Command: `{result['command']}` (= `make bench-stream-fleet`), run {result['date']} on "
        f"{result['machine']}; whole benchmark {result['wall_s']:.0f} s, load average at the end "
        f"{result['load']}. `seqwatch stream --source replay` on Prism (in the job's process, LOOPBACK), the "
        f"streaming benchmark's model (LSTM autoencoder 16 units, window 16, stride 4, readings every 1 s, panes of "
        f"64 steps), `--flush-window 300`, each file replayed in {PLAY_S:g} s of wall time; variants taken in turn, "
        f"{result['repeats']} rounds, medians.",
        "",
        "| entities | flags | steps each | readings | replay speed | job wall s | job CPU s | CPU µs per reading | "
        "CPU per reading vs the first row | files written |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, extra, steps, readings, speed, wall, cpu, per, files in rows:
        lines.append(f"| {n:,} | {'`' + extra + '`' if extra else '–'} | {steps:,} | {readings:,} | {speed:g}x | "
                     f"{wall:.1f} | {cpu:.1f} | {per:.0f} | {per / base:.2f} | "
                     f"{files:,} |")
    counts = "; ".join(f"{run['entities']:,} entities{' ' + run['extra'] if run['extra'] else ''}: "
                       f"{run['records_in']:,} in = {run['records_scored']:,} scored + "
                       f"{run['records_quarantined']:,} quarantined" for run in runs[:len(variants)])
    lines += [
        "",
        f"- Counts of the first round: {counts}.",
        "- Job CPU includes start-up (imports, loading the model, Beam's planning) and Prism's own CPU. A job whose "
        f"wall time stays near the replay's {PLAY_S:g} s plus start-up kept up with the replay; one that took "
        "longer drained what the replay had offered as fast as it could, so its CPU per reading is what a stream "
        "of that fleet costs.",
        "- Files written: every Parquet file of the run (scores, alerts, notices, quarantine). By default a stream "
        "writes a score file per entity pane as the pane is scored; `--score-window-files 1` gathers a flush "
        "window's scores in one file.",
        "- Each pane of a live fleet is gathered from a piece of nearly every poll's batch. Those pieces travel as "
        "numpy columns (`pipelines/pane_pieces.py`). When they were pandas frames (commit f599ca1 and before), "
        "1,000 entities of 96 steps (384,000 readings, replayed at 9.6x) took 126.5 s of wall time and 141.6 CPU "
        "seconds, against 36.6 and 44.9 s with the numpy pieces: 3.5x and 3.2x (medians of 2, old and new "
        "alternated, by hand with this benchmark's `run_replay`, 2026-12-04). Each pane's pieces had cost 2.2 kB of "
        "pickle and 0.4 ms to unpickle apiece, and 5 ms per pane to join.",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller smoke run (does not touch BENCHMARKS.md)")
    parser.add_argument("--render-only", action="store_true", help="rewrite BENCHMARKS.md from the last result")
    args = parser.parse_args(argv)
    if args.render_only:
        replace_section("stream-fleet", render(json.loads((OUT / "result.json").read_text())))
        return 0
    if not PRISM.exists():
        print(f"stream_fleet: {PRISM.relative_to(REPO)} is missing; run `make prism` first", file=sys.stderr)
        return 2
    began = time.time()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    log("training the model")
    train(OUT / "model")
    work = Path(tempfile.mkdtemp(prefix="seqwatch-stream-fleet-"))
    total = 12_000 if args.quick else 120_000  # readings per channel, shared out among the entities
    window_files = ("--score-window-files", "1")
    variants = ([(200, ()), (200, window_files)] if args.quick
                else [(20, ()), (200, ()), (1000, ()), (1000, window_files)])
    repeats = 1 if args.quick else 2
    runs = []
    try:
        for repeat in range(repeats):
            for n, extra in variants:
                run = run_replay(OUT / "model", work, n, total // n, repeat, extra)
                log(f"{n} entities {' '.join(extra)}: {json.dumps(run)}")
                runs.append(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"runs": runs, "repeats": repeats, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "wall_s": time.time() - began, "load": f"{os.getloadavg()[0]:.1f}",
              "machine": f"{os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}",
              "command": "benchmarks/stream_fleet.py" + (" --quick" if args.quick else "")}
    (OUT / "result.json").write_text(json.dumps(result, indent=1))
    text = render(result)
    print(text)
    if not args.quick:
        replace_section("stream-fleet", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
