"""One batch run on each runner seqwatch is tested on: ``seqwatch run`` as a user runs it, on the DirectRunner,
Prism, Flink and Spark (the job servers of ``make prism flink-job-server spark-job-server``), on one machine.

    make bench-runners   # = .venv/bin/python benchmarks/batch_runners.py: 20 and 320 pumps x 6,000 steps
    .venv/bin/python benchmarks/batch_runners.py --quick   # 4 and 8 pumps x 1,500 steps, a smoke run

Each run is the CLI in a process of its own, so its time holds what a scheduled job pays: imports, the job
server's start where Beam starts one (Flink's and Spark's JVMs, Prism), the job, the commit. Long Parquet readings
of 4 channels at 10 s, a model of the demo's shape (window 32, stride 8); the Python worker runs in the CLI's
process (LOOPBACK) on the portable runners, with parallelism 2 on Flink and ``local[2]`` on Spark for the 2 cores.
Two sizes, so that a runner's fixed cost and its rate beyond it come apart. Rounds run every run in turn after a
warm-up round; medians of wall time, and of the CPU time of the CLI and everything it started. Every run's
manifest must give the DirectRunner's counts, and its alerts the DirectRunner's alerts. Rewrites the ``batch-runners`` section of BENCHMARKS.md (not with ``--quick``).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds

from bench_common import log, train_demo_shape
from sections import replace_section

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / ".tools"
RUNNERS = {
    "DirectRunner": ["--runner=DirectRunner"],
    "Prism": ["--runner=PrismRunner", f"--prism_location={TOOLS / 'bin' / 'prism'}"],
    "Flink": ["--runner=FlinkRunner", f"--flink_job_server_jar={TOOLS / 'flink' / 'beam-flink-job-server.jar'}",
              "--flink_master=[local]", "--environment_type=LOOPBACK", "--parallelism=2"],
    "Spark": ["--runner=SparkRunner", f"--spark_job_server_jar={TOOLS / 'spark' / 'beam-spark-job-server.jar'}",
              "--spark_master_url=local[2]", "--environment_type=LOOPBACK"],
}
NEEDS = {"Prism": TOOLS / "bin" / "prism", "Flink": TOOLS / "flink" / "beam-flink-job-server.jar",
         "Spark": TOOLS / "spark" / "beam-spark-job-server.jar"}


def write_readings(path: Path, pumps: int, steps: int) -> int:
    """Long readings of ``pumps`` synthetic pumps (two anomalies each) as one Parquet file; their number."""
    from seqwatch.models.synthetic import generate_sensor_data

    readings, _ = generate_sensor_data(n_entities=pumps, n_steps=steps, step_seconds=10, seed=5,
                                       anomalies_per_entity=2)
    readings.to_parquet(path, index=False)
    return len(readings)


def run_cli(runner: str, readings: Path, model_dir: Path, out: Path) -> tuple[float, float, dict]:
    """``seqwatch run`` on ``runner``: its wall seconds, the CPU seconds of it and its children, its manifest."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "run", "--input", str(readings),
                             "--model-dir", str(model_dir), "--output", str(out), "--run-id", "bench-runners",
                             *RUNNERS[runner]], capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"batch_runners.py: the run on {runner} failed: {result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads((out / "manifest.json").read_text())


def alerts_of(out: Path) -> list:
    table = ds.dataset(out / "alerts", format="parquet").to_table(columns=["entity_id", "start", "end"])
    return sorted(zip(*(table.column(c).to_pylist() for c in ("entity_id", "start", "end"))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    missing = [f"{name} ({path.relative_to(REPO)})" for name, path in NEEDS.items() if not path.exists()]
    if missing:
        print(f"batch_runners.py: missing {', '.join(missing)}: run `make prism flink-job-server spark-job-server`",
              file=sys.stderr)
        return 2

    started = time.perf_counter()
    steps = 1500 if args.quick else 6000
    # pumps: the larger input is 16x the smaller (7.68M readings: under the 8M from which a DirectRunner run takes
    # two worker processes), 2x in a quick run
    sizes = (4, 8) if args.quick else (20, 320)
    work = Path(tempfile.mkdtemp(prefix="seqwatch-batch-runners-"))
    inputs = {pumps: (work / f"readings-{pumps}.parquet") for pumps in sizes}
    counts_in = {pumps: write_readings(path, pumps, steps) for pumps, path in inputs.items()}
    log(", ".join(f"{n:,} readings of {pumps} pumps" for pumps, n in counts_in.items()))
    model_dir = train_demo_shape(work, "batch-runners", 2 if args.quick else 5)

    runs = [(name, pumps) for pumps in sizes for name in RUNNERS]
    times: dict = {run: {"wall": [], "cpu": []} for run in runs}
    counts: dict = {}
    alerts: dict = {}
    for repeat in range(args.repeats + 1):
        for name, pumps in runs:
            out = work / f"out-{name}-{pumps}-{repeat}"
            wall, cpu, manifest = run_cli(name, inputs[pumps], model_dir, out)
            log(f"run {repeat}, {name}, {counts_in[pumps]:,} readings: {wall:.1f} s, CPU {cpu:.1f} s")
            counts.setdefault((name, pumps), {k: manifest[k] for k in ("records_in", "records_scored",
                                                                       "records_quarantined")})
            alerts.setdefault((name, pumps), alerts_of(out))
            if repeat:
                times[(name, pumps)]["wall"].append(wall)
                times[(name, pumps)]["cpu"].append(cpu)
    for name, pumps in runs:
        assert counts[(name, pumps)] == counts[("DirectRunner", pumps)], (name, pumps, counts)
        assert alerts[(name, pumps)] == alerts[("DirectRunner", pumps)], (name, pumps)
    medians = {run: {k: statistics.median(v) for k, v in t.items()} for run, t in times.items()}
    small, large = sizes
    extra = counts_in[large] - counts_in[small]
    rows = []
    for name in RUNNERS:
        a, b = medians[(name, small)], medians[(name, large)]
        ratio = b["wall"] / medians[("DirectRunner", large)]["wall"]
        if b["wall"] > a["wall"]:
            per_s = extra / (b["wall"] - a["wall"])
            line = f"{a['wall'] - counts_in[small] / per_s:.1f} | {per_s:,.0f}"
        else:  # the larger input took no longer: the difference is within the noise
            line = "— | no slope (the larger input was not slower)"
        rows.append(f"| {name} | {a['wall']:.1f} | {b['wall']:.1f} | {ratio:.2f}x | {line} | {b['cpu']:.1f} |")
    text = "\n".join([
        "## Batch runs by runner", "",
        f"Command: `make bench-runners` (= `.venv/bin/python benchmarks/batch_runners.py`), run "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on 2 shared cores ({platform.machine()}), Python "
        f"{platform.python_version()}; whole benchmark {time.perf_counter() - started:.0f} s. `seqwatch run` as a "
        f"process of its own per run (imports, the job server's start, the job, the commit), {small} and {large} "
        f"pumps x {steps:,} steps at 10 s, 4 channels ({counts_in[small]:,} and {counts_in[large]:,} readings), "
        f"each in one Parquet file, a model of the demo's shape (LSTM 32 units, window 32, stride 8). Prism built "
        f"by `make prism`; Flink 1.16 and Spark 3.2.2 embedded in the Beam 2.50 job servers of `make "
        f"flink-job-server` and `make spark-job-server`, started by Beam for each run, the Python worker in the "
        f"CLI's process (LOOPBACK), parallelism 2 and `local[2]`. Medians of {args.repeats} rounds after a warm-up "
        f"round, every run in turn; the fixed cost and the rate are the line through the two sizes' medians; CPU "
        f"is the CLI's and its children's (the JVMs, Prism).", "",
        f"| runner | s, {counts_in[small]:,} | s, {counts_in[large]:,} | vs DirectRunner | fixed s | readings/s "
        f"beyond it | CPU s, {counts_in[large]:,} |", "|---|---|---|---|---|---|---|", *rows, "",
        f"Every runner's runs gave the DirectRunner's counts ({counts_in[large]:,} in = "
        f"{counts[('DirectRunner', large)]['records_scored']:,} scored + "
        f"{counts[('DirectRunner', large)]['records_quarantined']:,} quarantined at the larger size) and its alerts "
        f"({len(alerts[('DirectRunner', small)])} and {len(alerts[('DirectRunner', large)])}). The portable "
        f"runners are here for what they do on clusters, where their job server and workers run elsewhere "
        f"(`deploy/dataflow/README.md`); on one machine this table is their cost.",
    ])
    print(text)
    if not args.quick:
        replace_section("batch-runners", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
