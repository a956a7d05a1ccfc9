"""Cost of many small input files: the batch pipeline on a fleet's readings as hourly files (one per pump and
hour, as a scheduled export writes them) against the same rows in one file, and the per-file stages alone.

    make bench-small-files   # = .venv/bin/python benchmarks/small_files.py: 100 pumps x 6 hours, BENCHMARKS.md
    .venv/bin/python benchmarks/small_files.py --quick   # 20 pumps x 3 hours, a smoke run

(a) ``run_batch`` on the DirectRunner (as ``seqwatch run`` runs it, default workers), wide CSVs at 10 s of 4
channels, a model of window 32 and stride 8 (the demo's shape): the hourly files, and the same rows in one file
with an entity column, alternating after a warm-up pair; medians of the wall times. (b) The stages that each
file pays for on its own, on the hourly files: the locality index (``locality.file_spans``), reading and parsing
(``FileReader``), and validation batch by batch against the small batches judged together as a batch run judges
them (``ValidateReadings(merge_below=graph.MERGE_BELOW_READINGS)``). Rewrites the ``small-files`` section of
BENCHMARKS.md (not with ``--quick``).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench_common import alternating_medians, log, train_demo_shape
from sections import replace_section

STEP_S = 10
CHANNELS = ("flow", "pressure", "temperature", "vibration")


def write_inputs(work: Path, pumps: int, hours: int) -> tuple[list, Path, int]:
    """Hourly wide CSVs (``hourly/h<hour>/pump-<n>.csv``) and the same rows in ``one.csv`` with an entity column."""
    rng = np.random.default_rng(7)
    steps = 3600 // STEP_S
    start = pd.Timestamp("2026-01-05", tz="UTC")
    parts = []
    for pump in range(pumps):
        for hour in range(hours):
            stamps = start + pd.to_timedelta(hour * 3600 + np.arange(steps) * STEP_S, unit="s")
            t = np.arange(hour * steps, (hour + 1) * steps)
            frame = pd.DataFrame({
                "timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "flow": 95 + 5 * np.sin(2 * np.pi * t / 360) + rng.normal(0, 1, steps),
                "pressure": 3 + 0.1 * np.sin(2 * np.pi * t / 360) + rng.normal(0, 0.05, steps),
                "temperature": 58 + rng.normal(0, 0.5, steps),
                "vibration": 0.5 + rng.normal(0, 0.01, steps)})
            folder = work / "hourly" / f"h{hour:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            frame.to_csv(folder / f"pump-{pump:03d}.csv", index=False, float_format="%.4f")
            parts.append(frame.assign(entity_id=f"pump-{pump:03d}"))
    pd.concat(parts, ignore_index=True).to_csv(work / "one.csv", index=False, float_format="%.4f")
    files = sorted(str(p) for p in (work / "hourly").rglob("*.csv"))
    return files, work / "one.csv", pumps * hours * steps * len(CHANNELS)


def per_file_stages(files: list, repeats: int) -> dict:
    """Seconds for all ``files`` of each per-file stage (medians of ``repeats``)."""
    from seqwatch.pipelines.graph import MERGE_BELOW_READINGS
    from seqwatch.pipelines.locality import file_spans
    from seqwatch.pipelines.sources import FileReader
    from seqwatch.pipelines.validate import _ValidateBatch
    from seqwatch.schemas.mapping import InputMapping
    from seqwatch.schemas.validation import load_suite_dict

    mapping = InputMapping(format="wide")
    reader = FileReader(mapping, "bench")
    timings: dict = {"index": [], "read": [], "validate, batch by batch": [], "validate, small batches together": []}
    batches = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        file_spans(files, mapping)
        timings["index"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        batches = [batch for path in files for batch, _, _ in reader.read(path)]
        timings["read"].append(time.perf_counter() - t0)
        for label, merge_below in (("validate, batch by batch", 0),
                                   ("validate, small batches together", MERGE_BELOW_READINGS)):
            fn = _ValidateBatch(CHANNELS, load_suite_dict("sensor"), "bench", 0, 2 ** 62, merge_below)
            fn.setup()
            fn.start_bundle()
            t0 = time.perf_counter()
            for batch in batches:
                fn.process(batch, 0, None)
            fn.finish_bundle()
            timings[label].append(time.perf_counter() - t0)
    return {label: statistics.median(values) for label, values in timings.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from seqwatch.pipelines.batch import run_batch
    from seqwatch.pipelines.config import RunConfig
    from seqwatch.schemas.mapping import InputMapping

    started = time.perf_counter()
    pumps, hours = (20, 3) if args.quick else (100, 6)
    work = Path(tempfile.mkdtemp(prefix="seqwatch-small-files-"))
    log(f"writing {pumps} pumps x {hours} hourly files, and the same rows in one file")
    files, one, readings = write_inputs(work, pumps, hours)
    model_dir = train_demo_shape(work, "small-files", 2 if args.quick else 5)

    inputs = {"hourly files": (str(work / "hourly"), InputMapping(format="wide")),
              "one file": (str(one), InputMapping(format="wide", entity={"column": "entity_id"}))}

    def run(name: str, repeat: int) -> None:
        path, mapping = inputs[name]
        manifest = run_batch(RunConfig(inputs=(path,), output=str(work / f"out-{repeat}-{name[0]}"),
                                       model_dir=str(model_dir), mapping=mapping), ["--runner=DirectRunner"])
        assert manifest["records_in"] == readings == manifest["records_scored"], manifest

    medians = alternating_medians(inputs, run, args.repeats)
    many, single = medians["hourly files"], medians["one file"]
    log("the per-file stages alone")
    stages = per_file_stages(files, args.repeats)
    per_file = (many - single) / (len(files) - 1)
    text = "\n".join([
        "## Many small files", "",
        f"Command: `make bench-small-files` (= `.venv/bin/python benchmarks/small_files.py`), run "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on 2 shared cores ({platform.machine()}), Python "
        f"{platform.python_version()}; whole benchmark {time.perf_counter() - started:.0f} s. `run_batch` on the "
        f"DirectRunner, {pumps} pumps x {hours} hours at {STEP_S} s, 4 channels ({readings:,} readings), wide CSVs, a "
        f"model of window 32 and stride 8; medians of {args.repeats} runs each after a warm-up pair, alternating.", "",
        "| input | files | seconds |", "|---|---|---|",
        f"| hourly files (one per pump and hour) | {len(files)} | {many:.1f} |",
        f"| the same rows in one file | 1 | {single:.1f} |", "",
        f"About {per_file * 1e3:.1f} ms per extra file. The stages each file pays for on its own, for all {len(files)} "
        f"files (medians of {args.repeats}):", "",
        "| stage | seconds | per file |", "|---|---|---|",
        *[f"| {label} | {seconds:.2f} | {seconds / len(files) * 1e3:.2f} ms |" for label, seconds in stages.items()],
        "",
        "The locality index reads each file's timestamps to find which panes it holds alone (`pipelines/locality.py`); "
        "reading parses each file as its own batch; a batch run validates small batches together "
        "(`ValidateReadings(merge_below=)`), and the rest of the pipeline still sees each file's batch on its own.",
    ])
    print(text)
    if not args.quick:
        replace_section("small-files", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
