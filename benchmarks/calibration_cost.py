"""Cost of per-entity online calibration (``--online-calibration``): the batch pipeline with and without it on
the same input, and the calibration step alone.

    make bench-calibration   # = .venv/bin/python benchmarks/calibration_cost.py: 800,000 readings, BENCHMARKS.md
    .venv/bin/python benchmarks/calibration_cost.py --quick   # a smaller smoke run

(a) ``OnlineTailCalibration.process_at_risk`` alone on 20,000 window scores (what the pipeline's calibration
step computes per window; a tail refit every 100 windows). (b) ``run_batch`` on the DirectRunner, Parquet in and
out, 8 pumps x 4 channels at 10 s, with a model of window 32 and stride 8 (the demo's), alternating runs without
and with online calibration after a warm-up run; medians of the wall times. Rewrites the ``calibration``
section of BENCHMARKS.md (not with ``--quick``).
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import alternating_medians, log, train_demo_shape
from sections import replace_section


def calibration_alone(n: int = 20_000) -> float:
    """Seconds per window of the online calibration on ``n`` gamma-distributed scores."""
    from seqwatch.pipelines.calibration import HISTORY, REFIT_EVERY
    from seqwatch.models.thresholds import OnlineTailCalibration

    rng = np.random.default_rng(0)
    online = OnlineTailCalibration(HISTORY, REFIT_EVERY, 0.95).start(rng.gamma(2.0, 1.0, 2000))
    scores = rng.gamma(2.0, 1.0, n)
    started = time.perf_counter()
    online.process_at_risk(scores, 1e-3)
    return (time.perf_counter() - started) / n


def kept_state_cost(work: Path, entities: int = 1000) -> dict:
    """(c) The kept state (``--calibration-from``) of ``entities`` entities at the full history (8,640 windows
    each): its file's size, and seconds to write it, to check it before a run, and for a worker to read it and
    load every entity's calibration."""
    from seqwatch.pipelines.calibration import HISTORY, REFIT_EVERY
    from seqwatch.models.thresholds import OnlineTailCalibration
    from seqwatch.pipelines.calibration_state import STATE_FILE, check_state, read_states, state_of, write_states

    rng = np.random.default_rng(1)
    online = OnlineTailCalibration(HISTORY, REFIT_EVERY, 0.95).start(rng.gamma(2.0, 1.0, 2000))
    online.process_at_risk(rng.gamma(2.0, 1.0, HISTORY), 1e-3)
    base = online.to_dict()
    judged = [(f"pump-{i:05d}", state_of({**base, "scores": np.asarray(base["scores"]) * (1 + i * 1e-6)}, "v1",
                                         10 ** 15)) for i in range(entities)]
    folder = work / "kept-state"
    started = time.perf_counter()
    write_states(str(folder / STATE_FILE), judged)
    written = time.perf_counter() - started
    started = time.perf_counter()
    file, digest = check_state(str(folder))
    checked = time.perf_counter() - started
    started = time.perf_counter()
    loaded = [state.online() for state in read_states(file, digest).values()]
    read = time.perf_counter() - started
    assert len(loaded) == entities
    return {"entities": entities, "mb": (folder / STATE_FILE).stat().st_size / 1e6, "write": written,
            "check": checked, "read": read}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from seqwatch.models.synthetic import generate_sensor_data
    from seqwatch.pipelines.batch import run_batch
    from seqwatch.pipelines.config import RunConfig

    started = time.perf_counter()
    steps = 2_500 if args.quick else 25_000
    work = Path(tempfile.mkdtemp(prefix="seqwatch-calibration-cost-"))
    model_dir = train_demo_shape(work, "calibration-cost", 3 if args.quick else 10)
    readings, _ = generate_sensor_data(8, steps, 10, seed=3, anomalies_per_entity=2)
    (work / "in").mkdir()
    for entity, part in readings.groupby("entity_id"):
        part.to_parquet(work / "in" / f"{entity}.parquet", index=False)
    per_window = calibration_alone()
    log(f"calibration alone: {per_window * 1e6:.0f} us per window")
    kept = kept_state_cost(work, 100 if args.quick else 1000)
    log(f"kept state of {kept['entities']} entities: {kept['mb']:.1f} MB, write {kept['write']:.2f} s, check "
        f"{kept['check']:.2f} s, read {kept['read']:.2f} s")

    calibrated = {"without online calibration": False, "with online calibration": True}
    windows = []

    def run(label: str, repeat: int) -> None:
        manifest = run_batch(RunConfig(inputs=(str(work / "in" / "*.parquet"),),
                                       output=str(work / f"out-{repeat}-{calibrated[label]}"), model_dir=str(model_dir),
                                       online_calibration=calibrated[label]), ["--runner=DirectRunner"])
        windows.append(manifest["stages"]["windows_scored"])

    medians = alternating_medians(calibrated, run, args.repeats)
    plain, with_it = medians["without online calibration"], medians["with online calibration"]
    windows = windows[-1]
    text = "\n".join([
        "## Online calibration cost", "",
        f"Command: `make bench-calibration` (= `.venv/bin/python benchmarks/calibration_cost.py`), run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"on 2 shared cores ({platform.machine()}), Python {platform.python_version()}; whole benchmark "
        f"{time.perf_counter() - started:.0f} s. `run_batch` on the DirectRunner, {len(readings):,} readings (8 pumps x 4 "
        f"channels, Parquet), a model of window 32 and stride 8 ({windows:,} windows), medians of {args.repeats} runs "
        f"each after a warm-up pair.", "",
        "| what | seconds |", "|---|---|",
        f"| batch run without `--online-calibration` | {plain:.1f} |",
        f"| batch run with it | {with_it:.1f} |",
        f"| calibration step alone, per window | {per_window * 1e6:.0f} µs |", "",
        f"Ratio with/without: {with_it / plain:.2f}. Most of the cost is the tail refit (a maximum-likelihood "
        f"generalised Pareto fit on the latest 8,640 scores) every 100 windows of each entity.", "",
        f"The state a run keeps for the next (`--calibration-from`), {kept['entities']:,} entities at the full history "
        f"of 8,640 windows each (`kept_state_cost`):", "",
        "| what | value |", "|---|---|",
        f"| file | {kept['mb']:.1f} MB |",
        f"| write it (end of a run) | {kept['write']:.2f} s |",
        f"| check it (before a run) | {kept['check']:.2f} s |",
        f"| read it and load every entity's calibration (each worker) | {kept['read']:.2f} s |", "",
        "Each entity's scores are a column of float64s; until 2026-12-04 they were JSON text inside the calibration "
        "column: a state of 1,000 entities at the full history (made the same way by a script of its own, with "
        "`process` rather than `process_at_risk`) took 89.2 MB, 2.5-3.2 s to write, 3.4 s to check and 3.2 s to read "
        "and load with that code, against 66.4 MB, 0.25 s, 0.9 s and 0.9 s with the scores in their column (two runs "
        "each by hand, in a fresh process; the table's run comes after training a model in the same process, which "
        "slows it). Since 2026-12-05 the sorted scores of each entity's fit and seed (up to 2,000 each) are columns "
        "too, and the state is written without dictionary encoding: 66.5 MB, 0.72 / 0.70 s to write, 0.78 / 0.97 s to "
        "check and 0.90 / 0.63 s to read and load, against 66.4 MB, 0.93 / 0.79 s, 1.45 / 1.42 s and 1.08 / 1.17 s "
        "before (two alternating runs each by hand, fresh processes). A stream writes a file per entity "
        "(`write_entity_state`): 1,000 of them took 1.14 / 1.11 s and 105 MB, against 3.20 / 3.10 s and 165 MB "
        "before, and reading the folder and loading every entity 1.30 / 1.27 s against 1.85 / 1.86 s.",
    ])
    print(text)
    if not args.quick:
        replace_section("calibration", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
