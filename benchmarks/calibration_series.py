"""Online calibration in a daily series of batch runs (``--calibration-from``): what a scheduled job finds when each
day's run goes on from the day before's calibration, against runs that start from the model's every day and one
run over all the days.

    make bench-calibration-series   # = .venv/bin/python benchmarks/calibration_series.py; BENCHMARKS.md
    .venv/bin/python benchmarks/calibration_series.py --quick   # a smaller smoke run

Synthetic pumps (``seqwatch.models.synthetic``, 4 channels at 10 s) with injected faults, several days of them (each
day's file repeats the day before's last window, so that the windows across midnight are scored), a
model of the demo's shape trained on other pumps' normal history (seed 11; the days are seed 31), and half of the
pumps noisier than the training pumps (Gaussian noise of 0.3 of each channel's own standard deviation added), as a
fleet's are. Each variant runs ``run_batch`` on the DirectRunner with ``--online-calibration``; the alerts of its
runs are compared with the injected faults as ``seqwatch demo`` does (``pipelines.demo.detection_report``: a fault
is found when an alert overlaps it; an alert that overlaps none is a false alarm). Rewrites the
``calibration-series`` section of BENCHMARKS.md (not with ``--quick``).
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench_common import log, train_demo_shape
from sections import replace_section

STEP_SECONDS = 10
DAY_STEPS = 86_400 // STEP_SECONDS
OVERLAP_STEPS = 32  # each day's file repeats the day before's last window (the model's length), for context


def _days(work: Path, pumps: int, days: int, faults_per_day: int) -> tuple[list[Path], pd.DataFrame]:
    """Wide CSVs of each day (``work/day-<n>/pump-XX.csv``; from the second, they start ``OVERLAP_STEPS`` before
    the day, as an export that gives each day its window context does) and the injected faults."""
    from seqwatch.models.synthetic import generate_sensor_data
    from seqwatch.pipelines.demo import write_wide_csvs

    readings, labels = generate_sensor_data(pumps, days * DAY_STEPS, STEP_SECONDS, seed=31,
                                            anomalies_per_entity=days * faults_per_day)
    rng = np.random.default_rng(31)
    noisy = [f"pump-{k + 1:02d}" for k in range(pumps // 2, pumps)]
    for (entity, channel), part in readings[readings["entity_id"].isin(noisy)].groupby(["entity_id", "channel"]):
        readings.loc[part.index, "value"] = part["value"] + rng.normal(0, 0.3 * part["value"].std(), len(part))
    start = readings["timestamp"].min()
    folders = []
    for day in range(days):
        begin = start + pd.Timedelta(days=day) - pd.Timedelta(seconds=STEP_SECONDS * OVERLAP_STEPS * (day > 0))
        end = start + pd.Timedelta(days=day + 1)
        part = readings[(readings["timestamp"] >= begin) & (readings["timestamp"] < end)]
        write_wide_csvs(part, work / f"day-{day + 1}")
        folders.append(work / f"day-{day + 1}")
    return folders, labels


def _alerts(out: Path) -> pd.DataFrame:
    import pyarrow.dataset as ds

    return ds.dataset(out / "alerts", format="parquet").to_table().to_pandas()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)

    from seqwatch.pipelines.batch import run_batch
    from seqwatch.pipelines.config import RunConfig
    from seqwatch.pipelines.demo import detection_report
    from seqwatch.schemas.mapping import InputMapping

    started = time.perf_counter()
    pumps, days, faults_per_day = (4, 2, 2) if args.quick else (8, 3, 3)
    work = Path(tempfile.mkdtemp(prefix="seqwatch-calibration-series-"))
    model_dir = train_demo_shape(work, "calibration-series", 3 if args.quick else 10)
    folders, labels = _days(work, pumps, days, faults_per_day)
    mapping = InputMapping(format="wide", timestamp="timestamp", entity={"from_filename": True})

    def run(inputs: list[Path], out: Path, calibration_from: Path | None = None) -> pd.DataFrame:
        run_batch(RunConfig(inputs=tuple(str(f / "*.csv") for f in inputs), output=str(out),
                            model_dir=str(model_dir), mapping=mapping, online_calibration=True,
                            calibration_from=str(calibration_from or "")), ["--runner=DirectRunner"])
        return _alerts(out)

    results = {}
    log("one run over all the days")
    results["one run over all the days"] = run(folders, work / "whole")
    for label, chained in (("a run a day, each from the model's calibration", False),
                           ("a run a day, each from the day before's (`--calibration-from`)", True)):
        alerts, previous = [], None
        for day, folder in enumerate(folders, 1):
            log(f"{label}: day {day}")
            out = work / f"{'chained' if chained else 'fresh'}-{day}"
            alerts.append(run([folder], out, previous if chained else None))
            previous = out
        results[label] = pd.concat(alerts, ignore_index=True)
    reports = {label: detection_report(alerts, labels) for label, alerts in results.items()}
    for label, report in reports.items():
        log(f"{label}: {report['found']}/{report['injected']} found, {report['alerts']} alerts, "
            f"{report['false_alarms']} false")
    if args.quick:
        return 0
    rows = [f"| {label} | {r['found']} of {r['injected']} | {r['alerts']} | {r['false_alarms']} |"
            for label, r in reports.items()]
    text = "\n".join([
        "## Online calibration across runs", "",
        f"Command: `make bench-calibration-series` (= `.venv/bin/python benchmarks/calibration_series.py`), run "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on 2 shared cores ({platform.machine()}), Python "
        f"{platform.python_version()}; whole benchmark {time.perf_counter() - started:.0f} s. {pumps} synthetic pumps "
        f"(4 channels at 10 s), {days} days of {DAY_STEPS:,} steps (each day's file from the second on repeats the day "
        f"before's last {OVERLAP_STEPS} steps, the window's length), {days * faults_per_day} injected faults per pump, "
        f"half of the pumps noisier than the model's training pumps; a model of the demo's shape (window 32, stride 8) "
        f"trained on other pumps; every run with `--online-calibration`. A fault is found when an alert overlaps it; "
        f"an alert that overlaps none is a false alarm (as `seqwatch demo` counts).", "",
        "| runs | faults found | alerts | false alarms |", "|---|---|---|---|", *rows, "",
        "Without a kept state each day's run judges every pump's first windows by the model's calibration scores, "
        "as a new entity's. The repeated steps matter for the chained runs to give one run's results: without them "
        "the windows across midnight are not scored and the refits fall at other windows (close, not the same).",
    ])
    replace_section("calibration-series", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
