"""Throughput benchmark (issue 6): the bare model, the seqwatch batch pipeline and Beam's ZScore detector on the
same generated readings and the same model artifact, in one run.

    .venv/bin/python benchmarks/speed.py            # what `make bench-speed` runs
    .venv/bin/python benchmarks/speed.py --quick    # a smaller smoke run (not for BENCHMARKS.md)

Measures (a) the bare model: windows cut in numpy, ``Seq2SeqDetector.score_windows`` in a loop (network,
scaling and Mahalanobis scoring), the steady-state reference; (b) ``seqwatch run`` end to end on the
DirectRunner, Parquet in, Parquet out, at three input sizes (1/10, 1x and 10x the reference size; each run in
a fresh process, the median of repeated runs), with 1 worker and, at 1x and 10x, with 2 workers (what
``seqwatch run`` chooses by itself from 8M readings), with the pipeline's own per-stage timers; (c) ``apache_beam.ml.anomaly`` ZScore on a slice of the same readings (one reading per
element, keyed by entity and channel). The fixed cost per run (imports, model load, planning) and the
marginal rate (extra readings over extra seconds between two sizes, so fixed costs cancel) are reported
apart, and so is a fleet: the 1x readings spread over 100 times as many entities, each with a short history,
in one file (the cost per entity); so is the first run on a machine, which also compiles the model and checks the validation suite with
great_expectations (empty caches). Peak RSS is measured at every size. Results replace the speed section of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import log  # noqa: E402
from sections import replace_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "speed"
WINDOW, STRIDE, UNITS = 64, 16, 64


def make_readings(n_readings: int, n_entities: int, seed: int = 0) -> pd.DataFrame:
    """Long-format readings with 8 channels per entity (two independent 4-channel pumps side by side)."""
    from seqwatch.models.synthetic import generate_sensor_data

    steps = n_readings // (n_entities * 8)
    first, _ = generate_sensor_data(n_entities, steps, 1, seed=seed)
    second, _ = generate_sensor_data(n_entities, steps, 1, seed=seed + 1)
    second["channel"] = second["channel"] + "_b"
    frame = pd.concat([first, second], ignore_index=True)
    frame["timestamp"] = frame["timestamp"].dt.as_unit("us")
    return frame


def write_inputs(frame: pd.DataFrame, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for entity, part in frame.groupby("entity_id"):
        part.sort_values(["timestamp", "channel"]).to_parquet(folder / f"{entity}.parquet", index=False)


def train_model(frame: pd.DataFrame, model_dir: Path):
    from seqwatch.models.artifact import save_artifact
    from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
    from seqwatch.models.detector import Seq2SeqDetector

    entities = sorted(frame["entity_id"].unique())[:4]
    part = frame[frame["entity_id"].isin(entities)]
    part = part[part["timestamp"] < part["timestamp"].min() + pd.Timedelta(seconds=2000)]
    config = DetectorConfig(ArchitectureConfig(cell="lstm", units=UNITS), WindowConfig(WINDOW, STRIDE, 3),
                            TrainingConfig(epochs=2, batch_size=256, training_stride=8))
    detector = Seq2SeqDetector(config, model_id="speed").fit(part, progress=False)
    save_artifact(detector, model_dir)
    return detector


def bench_bare_model(detector, frame: pd.DataFrame) -> dict:
    """(a): cut every entity's windows in numpy (not timed), then score them in a loop (timed)."""
    from seqwatch.models import windowing
    from seqwatch.models.detector import PREDICT_BATCH, entity_grids

    grids = entity_grids(frame, detector.channels, detector.step_us, detector.config.window.max_gap,
                         detector.grid_offset_us)
    windows = np.concatenate([windowing.sliding_windows(g.values, WINDOW, STRIDE) for g in grids.values()])
    detector.score_windows(windows[:PREDICT_BATCH])  # compile once, as a worker does on its first batch
    start = time.perf_counter()
    for i in range(0, len(windows), 4096):
        detector.score_windows(windows[i:i + 4096])
    seconds = time.perf_counter() - start
    scaled = detector.scaler.transform(windows[: 40 * PREDICT_BATCH])
    start = time.perf_counter()
    detector._predict_scaled(scaled)
    predict_only = (time.perf_counter() - start) / len(scaled)
    return {"windows": int(len(windows)), "seconds": seconds, "windows_per_s": len(windows) / seconds,
            "readings_per_s": len(frame) / seconds, "predict_only_windows_per_s": 1 / predict_only}


PIPELINE_SCRIPT = """
import json, resource, sys, time
start = time.perf_counter()
from seqwatch.pipelines.batch import run_batch
from seqwatch.pipelines.config import RunConfig
inputs, output, model, workers, local = sys.argv[1:6]
manifest = run_batch(RunConfig(inputs=(inputs,), output=output, model_dir=model, local_panes=local == "1",
                               workers=int(workers)), ["--runner=DirectRunner"])
seconds = time.perf_counter() - start
# Peak RSS of this process since it started (VmHWM: ru_maxrss would also count the benchmark's own pages,
# which the fork before exec shares); with 2 workers, the largest worker too (an upper bound: ru_maxrss).
with open("/proc/self/status") as f:
    rss = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
if int(workers) > 1:
    rss = max(rss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"seconds": seconds, "records_in": manifest["records_in"], "records_scored": manifest["records_scored"],
                  "windows": manifest["stages"].get("windows_scored", 0), "peak_rss_mb": rss / 1024,
                  "stage_seconds": manifest["stage_seconds"],
                  "panes_cut_here": manifest["stages"].get("panes_cut_here", 0)}))
"""

def bench_pipeline(inputs: Path, output: Path, model_dir: Path, workers: int, repeats: int = 1,
                   env: dict | None = None, local: bool = True) -> dict:
    """(b): ``run_batch`` in a fresh process, ``repeats`` times; the run with the median wall time (the time
    includes the process's imports), with the largest peak RSS of all runs (of the process and its workers)."""
    runs = []
    for _ in range(repeats):
        result = subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT, str(inputs / "*.parquet"), str(output),
                                 str(model_dir), str(workers), str(int(local))], capture_output=True, text=True,
                                env={**os.environ, "GX_ANALYTICS_ENABLED": "false", **(env or {})})
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-3000:])
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    runs.sort(key=lambda r: r["seconds"])
    data = dict(runs[len(runs) // 2])
    data["all_seconds"] = [round(r["seconds"], 2) for r in runs]
    data["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    data["readings_per_s"] = data["records_in"] / data["seconds"]
    data["windows_per_s"] = data["windows"] / data["seconds"]
    return data


ZSCORE_SCRIPT = """
import json, sys, time
import apache_beam as beam
import pandas as pd
from apache_beam.ml.anomaly.detectors.zscore import ZScore
from apache_beam.ml.anomaly.transforms import AnomalyDetection
from apache_beam.options.pipeline_options import PipelineOptions
frame = pd.read_parquet(sys.argv[1])
n = int(sys.argv[2])
frame = frame.head(n)
rows = [((e, c), beam.Row(value=float(v))) for e, c, v in zip(frame.entity_id, frame.channel, frame.value)]
start = time.perf_counter()
with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
    (p | beam.Create(rows, reshuffle=False) | AnomalyDetection(ZScore(features=["value"]))
       | beam.combiners.Count.Globally() | beam.Map(lambda n: print("results", n, file=sys.stderr)))
seconds = time.perf_counter() - start
print(json.dumps({"readings": len(rows), "seconds": seconds, "readings_per_s": len(rows) / seconds}))
"""


def bench_zscore(frame: pd.DataFrame, n: int, work: Path) -> dict:
    """(c): Beam's ZScore on the first ``n`` readings (the same data, one reading per element)."""
    path = work / "zscore_input.parquet"
    frame.sort_values(["timestamp", "entity_id", "channel"]).head(n).to_parquet(path, index=False)
    result = subprocess.run([sys.executable, "-c", ZSCORE_SCRIPT, str(path), str(n)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def marginal_rate(small: dict, large: dict) -> tuple[float, float]:
    """``(readings/s, fixed seconds)`` from two runs of different sizes: the extra readings over the extra
    seconds (fixed costs cancel), and the seconds the larger run took beyond its readings at that rate."""
    rate = (large["records_in"] - small["records_in"]) / max(1e-9, large["seconds"] - small["seconds"])
    return rate, large["seconds"] - large["records_in"] / rate


def fleet_note(one: dict, fleet: dict, entities: int, fleet_entities: int, fleet_steps: int) -> str:
    """What the fleet row says: the cost of an entity, at the same number of readings as the 1x row."""
    extra = max(1, fleet_entities - entities)
    per_entity_ms = (fleet["seconds"] - one["seconds"]) / extra * 1e3
    stages = ", ".join(f"{name} {fleet['stage_seconds'].get(name, 0):.1f} s (1x: {one['stage_seconds'].get(name, 0):.1f})"
                       for name in ("window_cut", "window_key", "write", "score"))
    return f"""- A fleet (the last row): the same {one['records_in']:,} readings as the 1x row, but over {fleet_entities:,}
  entities of {fleet_steps} steps each, in one file sorted by time, as a fleet's export comes. Each entity is at
  least one pane to cut (its scores are gathered into the run's one scores file, which until 2026-12-04 had been
  a file per entity pane), so the time grows with the entities:
  {fleet['seconds']:.1f} s against {one['seconds']:.1f} s, about {per_entity_ms:.1f} ms per extra entity; by stage: {stages}.
  The cost is per entity and pane, not per reading: a run over more of each entity's history (a day rather than
  an hour) spreads it over more readings.
"""


def notes(one: dict, ten: dict, grouped: dict) -> str:
    """What the memory and 2-worker rows mean (text that does not change from run to run but for the numbers)."""
    per_reading = (ten["peak_rss_mb"] - one["peak_rss_mb"]) * 2**20 / max(1, ten["records_in"] - one["records_in"])
    grouped_per_reading = ((grouped["peak_rss_mb"] - one["peak_rss_mb"]) * 2**20
                           / max(1, grouped["records_in"] - one["records_in"]))
    return f"""
- Memory: each input file here holds one entity, so every pane is cut where its file is read
  ({ten['panes_cut_here']:,} panes at 10x; `seqwatch.pipelines.locality`) and no reading waits in the
  DirectRunner's in-memory GroupByKey; about {per_reading:.0f} bytes per extra reading remain, most of them the run's score
  tables, which meet in one GroupByKey to be written as one file: at 10x 875 MB against 767 MB with a file per
  entity pane (one run each by hand, 2026-12-04), 108 MB for a table of 29.5 MB (190 bytes per window), so it is
  held more than once on its way (its pickled and its read-back copies; not traced further). Before that change
  about 8 bytes per reading remained. The last row sends every pane through the GroupByKey (`GroupPanes`), as the panes of
  files that share an entity's time still go: {grouped['peak_rss_mb']:,.0f} MB at 10x, about
  {grouped_per_reading:.0f} bytes per extra reading, and {grouped['seconds'] / ten['seconds']:.2f}x the time. Runners that spill their shuffle
  to disk (Dataflow, Flink, Spark) do not hold it all. (Earlier versions of this table showed a flat 1.0x: they
  read `ru_maxrss`, which in a process forked from the benchmark counts the benchmark's own pages.)
- 2 workers (`multi_processing`): each worker process imports Beam and Keras and loads the model
  (a few seconds each, before any reading), then reads, cuts and scores its own files; only scores, counts and
  quarantined records cross the runner's gRPC data plane. The model alone keeps about 1.5 of the 2 cores busy,
  so the second process gains from the rest and from the Python stages: a loss at {one['records_in']:,} readings, a gain at
  {ten['records_in']:,}. `seqwatch run` starts one worker per core (at most one per file) from 8,000,000 readings
  (`--workers` or Beam's own flags override it).
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=2_000_000, help="the reference size (1x)")
    parser.add_argument("--entities", type=int, default=20)
    parser.add_argument("--fleet-entities", type=int, default=2000,
                        help="the fleet row: the 1x readings over this many entities, in one file")
    parser.add_argument("--zscore-readings", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs per pipeline row (the median is reported)")
    parser.add_argument("--quick", action="store_true", help="200k readings; does not write BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.readings, args.zscore_readings, args.repeats = 200_000, 20_000, 1
    started = time.time()
    OUT.mkdir(parents=True, exist_ok=True)
    sizes = {"tenth": args.readings // 10, "one": args.readings, "ten": args.readings * 10}

    log(f"generating {sizes['ten']:,} + {sizes['one']:,} + {sizes['tenth']:,} readings ({args.entities} entities x "
        f"8 channels, 1 s interval)")
    frame = make_readings(args.readings, args.entities)
    write_inputs(frame, OUT / "large")
    write_inputs(make_readings(sizes["tenth"], args.entities, seed=100), OUT / "small")
    write_inputs(make_readings(sizes["ten"], args.entities, seed=200), OUT / "huge")
    fleet = make_readings(args.readings, args.fleet_entities, seed=300)
    (OUT / "fleet").mkdir(parents=True, exist_ok=True)
    fleet.sort_values(["timestamp", "entity_id", "channel"]).to_parquet(OUT / "fleet" / "fleet.parquet", index=False)
    fleet_steps = len(fleet) // (args.fleet_entities * 8)
    log("training the model artifact (LSTM 64 units, window 64, stride 16; 2 epochs: speed, not accuracy)")
    detector = train_model(frame, OUT / "model")

    log("(a) bare model")
    bare = bench_bare_model(detector, frame)
    log(f"    {bare['windows_per_s']:,.0f} windows/s, {bare['readings_per_s']:,.0f} readings/s")

    # A machine keeps the model's compiled code (seqwatch.models.compile_cache) and the checked validation suite
    # (seqwatch.schemas.validation): the first run of a new model compiles it and imports GX to check the
    # suite, later runs load both. Measured apart, with empty caches of the benchmark's own.
    caches = OUT / "caches"
    shutil.rmtree(caches, ignore_errors=True)
    env = {"SEQWATCH_COMPILE_CACHE": str(caches / "jax"), "SEQWATCH_SUITE_CACHE": str(caches / "suites")}
    runs = {}
    plan = (("first run on a machine (empty caches), 1/10 input", OUT / "small", 1, 1),
            ("1 worker, 1/10 input", OUT / "small", 1, args.repeats),
            ("1 worker", OUT / "large", 1, args.repeats),
            ("1 worker, 10x input", OUT / "huge", 1, max(1, args.repeats - 1)),
            ("2 workers", OUT / "large", 2, max(1, args.repeats - 1)),
            ("2 workers, 10x input", OUT / "huge", 2, max(1, args.repeats - 1)),
            ("1 worker, 10x input, every pane through the GroupByKey", OUT / "huge", 1, 1),
            ("1 worker, fleet", OUT / "fleet", 1, args.repeats))
    for label, inputs, workers, repeats in plan:
        log(f"(b) seqwatch pipeline, {label}")
        runs[label] = bench_pipeline(inputs, OUT / f"run-{workers}-{inputs.name}", OUT / "model", workers, repeats,
                                     env, local="GroupByKey" not in label)
        r = runs[label]
        log(f"    {r['readings_per_s']:,.0f} readings/s in {r['seconds']:.1f}s (runs: {r['all_seconds']}), "
            f"peak RSS {r['peak_rss_mb']:,.0f} MB")
    log(f"(c) Beam ZScore on {args.zscore_readings:,} readings")
    zscore = bench_zscore(frame, args.zscore_readings, OUT)
    log(f"    {zscore['readings_per_s']:,.0f} readings/s")

    cold, tenth, one = runs[plan[0][0]], runs["1 worker, 1/10 input"], runs["1 worker"]
    ten, two, two_ten = runs["1 worker, 10x input"], runs["2 workers"], runs["2 workers, 10x input"]
    grouped, fleet_run = runs[plan[-2][0]], runs["1 worker, fleet"]
    bare_rate = bare["readings_per_s"]
    marginal, fixed = marginal_rate(one, ten)
    marginal_small, fixed_small = marginal_rate(tenth, one)

    def row(label, r):
        return (f"| {label} | {r['records_in']:,} | {r['readings_per_s']:,.0f} | {r['windows_per_s']:,.0f} | "
                f"{r['seconds']:.1f} | {r['readings_per_s'] / bare_rate:.2f} | {r['peak_rss_mb']:,.0f} |")

    stage_names = sorted(set(one["stage_seconds"]) | set(ten["stage_seconds"]))
    stage_rows = "\n".join(
        f"| {name} | {one['stage_seconds'].get(name, 0):.2f} | {ten['stage_seconds'].get(name, 0):.2f} | "
        f"{ten['stage_seconds'].get(name, 0) / ten['records_in'] * 1e6:.2f} |" for name in stage_names)
    timed_one, timed_ten = sum(one["stage_seconds"].values()), sum(ten["stage_seconds"].values())
    model_share = ten["stage_seconds"].get("score", 0.0)
    text = f"""## Speed

Command: `make bench-speed` (= `.venv/bin/python benchmarks/speed.py`), run {time.strftime('%Y-%m-%d')} on
{os.cpu_count()} cores ({platform.processor() or platform.machine()}), Python {platform.python_version()}, Keras backend
{os.environ.get('KERAS_BACKEND', 'jax')}; whole benchmark {time.time() - started:.0f} s. Data: {sizes['tenth']:,}, {sizes['one']:,} and
{sizes['ten']:,} readings, {args.entities} entities x 8 channels, 1 s interval, long-format Parquet (one file per entity).
Model: LSTM autoencoder, {UNITS} units, window {WINDOW}, stride {STRIDE}, the same artifact for every row. Each pipeline
row is the median of {args.repeats} runs ({max(1, args.repeats - 1)} for the 10x and 2-worker rows), each in a fresh process
(wall time includes its imports); the machine is shared and noisy: read the ratios, not the last digit.

| what | readings | readings/s | windows/s | wall s | / bare model | peak RSS MB |
|---|---|---|---|---|---|---|
| (a) bare model: numpy windows, `score_windows` loop | {len(frame):,} | {bare_rate:,.0f} | {bare['windows_per_s']:,.0f} | {bare['seconds']:.1f} | 1.00 | — |
{row("(b) pipeline, 1 worker, 1/10 input", tenth)}
{row("(b) pipeline, 1 worker", one)}
{row("(b) pipeline, 1 worker, 10x input", ten)}
{row("(b) pipeline, 2 workers (multi_processing)", two)}
{row("(b) pipeline, 2 workers, 10x input (the default from 8M readings)", two_ten)}
{row("(b) first run on a machine (empty compilation and suite caches), 1/10 input", cold)}
{row("(b) pipeline, 1 worker, 10x input, every pane through the GroupByKey (`local_panes=False`)", grouped)}
{row(f"(b) pipeline, 1 worker, a fleet: {args.fleet_entities:,} entities x {fleet_steps} steps, one file", fleet_run)}
| (c) Beam `ZScore` (apache_beam.ml.anomaly) | {zscore['readings']:,} | {zscore['readings_per_s']:,.0f} | — | {zscore['seconds']:.1f} | {zscore['readings_per_s'] / bare_rate:.3f} | — |

- End to end, pipeline / bare model: **{one['readings_per_s'] / bare_rate:.2f} at {sizes['one']:,} readings**, **{ten['readings_per_s'] / bare_rate:.2f} at
  {sizes['ten']:,}** (1 worker; the network alone, `predict` without scoring, runs at
  {bare['predict_only_windows_per_s']:,.0f} windows/s).
- Marginal rate (extra readings over extra seconds, so fixed costs cancel): **{marginal:,.0f} readings/s = {marginal / bare_rate:.2f} of
  the bare model** between {sizes['one']:,} and {sizes['ten']:,} readings ({marginal_small:,.0f} = {marginal_small / bare_rate:.2f} between
  {sizes['tenth']:,} and {sizes['one']:,}).
- Fixed cost per run (imports of Beam and Keras/JAX, model load and tracing, planning, Beam's
  start-up): about {fixed:.1f} s ({fixed_small:.1f} s from the smaller pair). The first run on a machine also compiles the
  model and imports great_expectations to check the suite: {cold['seconds'] - tenth['seconds']:+.1f} s against a run with both caches filled.
- Pipeline / Beam ZScore: **{one['readings_per_s'] / zscore['readings_per_s']:.0f}x** at {sizes['one']:,} readings.
- 2 workers / 1 worker: {two['readings_per_s'] / one['readings_per_s']:.2f}x at {sizes['one']:,} readings,
  **{two_ten['readings_per_s'] / ten['readings_per_s']:.2f}x at {sizes['ten']:,}**; as `seqwatch run` runs by default
  (2 workers from 8M readings), end to end / bare model is **{two_ten['readings_per_s'] / bare_rate:.2f} at {sizes['ten']:,} readings**.
- Memory (1 worker: the pipeline process; 2 workers: its largest process): 10x the input took
  {ten['peak_rss_mb'] / one['peak_rss_mb']:.2f}x the peak RSS
  ({tenth['peak_rss_mb']:,.0f} MB at {sizes['tenth']:,}, {one['peak_rss_mb']:,.0f} MB at {sizes['one']:,}, {ten['peak_rss_mb']:,.0f} MB at {sizes['ten']:,}).

Where the 1-worker pipeline's time goes (its own `stage_ms.*` counters; the rest of the wall time, {one['seconds'] - timed_one:.1f} s
of {one['seconds']:.1f} s at 1x and {ten['seconds'] - timed_ten:.1f} s of {ten['seconds']:.1f} s at 10x, is imports, planning, model
load and Beam's own work: start-up, encoding and shuffling elements, stages without a timer). `score` is the
model call; at 10x it took {model_share:.1f} s, against {ten['windows'] / bare['windows_per_s']:.1f} s for the same windows in the bare loop.

| stage | seconds at 1x | seconds at 10x | µs per reading at 10x |
|---|---|---|---|
{stage_rows}
| (timed stages together) | {timed_one:.2f} | {timed_ten:.2f} | {timed_ten / ten['records_in'] * 1e6:.2f} |
""" + notes(one, ten, grouped) + fleet_note(one, fleet_run, args.entities, args.fleet_entities, fleet_steps)
    (OUT / "results.json").write_text(json.dumps({"bare": bare, "pipeline": runs, "zscore": zscore}, indent=1))
    print(text)
    if not args.quick:
        replace_section("speed", text)
        log("wrote the speed section of BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
