"""Validation cost (issue 4): readings per second through ``ValidateReadings``' work, and its share of the whole
batch pipeline's time at the default window size (64).

    .venv/bin/python benchmarks/validation_cost.py            # 409,600 readings, as reported in BENCHMARKS.md
    .venv/bin/python benchmarks/validation_cost.py --quick    # a smaller smoke run

(a) The validation stage alone, outside Beam: the ``ReadingBatch`` chunks exactly as the file reader yields
them go through the same DoFn the pipeline runs (cheap checks, then the great-expectations ``sensor`` suite);
its two parts are also timed apart, and the same suite run through GX itself (``engine="gx"``, what
seqwatch did before the pandas engine), on the reader's batches and on small batches (as a stream brings). (b) ``run_batch`` end to end on the DirectRunner (Parquet in, Parquet out) with a model of window
64, stride 16, 64 LSTM units; the pipeline's own stage timers (``stage_seconds`` in the manifest) give the
validation stage's seconds, compared with the run's wall time and with the sum of all stages. Target: under 15%.
Writes ``benchmarks/out/validation_cost.json`` and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

from bench_common import log

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "validation_cost"
WINDOW, STRIDE, UNITS = 64, 16, 64
NOW_US = 1_796_083_200_000_000  # 2026-12-01: fixed, so "the future" does not move between runs


def make_inputs(n_readings: int, n_entities: int, folder: Path) -> pd.DataFrame:
    """Long readings, 8 channels per entity (two 4-channel pumps side by side), 1 s apart; one Parquet per
    entity."""
    from seqwatch.models.synthetic import generate_sensor_data

    steps = n_readings // (n_entities * 8)
    first, _ = generate_sensor_data(n_entities, steps, 1, seed=0)
    second, _ = generate_sensor_data(n_entities, steps, 1, seed=1)
    second["channel"] = second["channel"] + "_b"
    frame = pd.concat([first, second], ignore_index=True)
    frame["timestamp"] = frame["timestamp"].dt.as_unit("us")
    folder.mkdir(parents=True, exist_ok=True)
    for entity, part in frame.groupby("entity_id"):
        part.sort_values(["timestamp", "channel"]).to_parquet(folder / f"{entity}.parquet", index=False)
    return frame


def train_model(frame: pd.DataFrame, model_dir: Path) -> None:
    from seqwatch.models.artifact import save_artifact
    from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
    from seqwatch.models.detector import Seq2SeqDetector

    entities = sorted(frame["entity_id"].unique())
    first = frame[frame["entity_id"].isin(entities[:2])] if frame["timestamp"].nunique() > 2000 else frame
    config = DetectorConfig(ArchitectureConfig(units=UNITS), WindowConfig(length=WINDOW, stride=STRIDE, max_gap=3),
                            TrainingConfig(epochs=1, batch_size=256, patience=1))
    detector = Seq2SeqDetector(config, model_id="validation-bench").fit(first, progress=False)
    save_artifact(detector, model_dir)


def read_batches(folder: Path, mapping) -> list:
    from seqwatch.pipelines.sources import FileReader

    reader = FileReader(mapping, "bench")
    return [batch for path in sorted(folder.glob("*.parquet")) for batch, _, _ in reader.read(str(path))]


def bench_stage(batches: list, channels: tuple, repeats: int) -> dict:
    """Seconds for all batches through the validation DoFn, its cheap checks, and its GX suite (medians)."""
    from seqwatch.pipelines.config import HORIZON_US
    from seqwatch.pipelines.validate import _ValidateBatch, cheap_checks
    from seqwatch.schemas.validation import SuiteValidator, load_suite_dict

    suite = load_suite_dict("sensor")
    started = time.perf_counter()
    fn = _ValidateBatch(channels, suite, "bench", HORIZON_US, NOW_US + 86_400_000_000)
    fn.setup()
    setup_s = time.perf_counter() - started
    readings = sum(len(b) for b in batches)

    def timed(work) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for batch in batches:
                work(batch)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    whole = timed(lambda b: list(fn.process(b)))
    cheap = timed(lambda b: cheap_checks(b.frame, channels, HORIZON_US, NOW_US))
    suite_s = timed(lambda b: fn._validator.failures(b.frame))
    gx = SuiteValidator(suite, engine="gx")
    gx_s = timed(lambda b: gx.failures(b.frame))
    size = max(1, len(batches[0]) // 50)
    small = [type(b)(b.frame.iloc[i:i + size].reset_index(drop=True)) for b in batches[:2]
             for i in range(0, len(b), size)]
    small_n = sum(len(b) for b in small)
    small_auto = statistics.median([_time_all(small, fn._validator.failures) for _ in range(repeats)])
    small_gx = _time_all(small, gx.failures)  # once: GX takes ~0.2 s per batch
    return {"readings": readings, "batches": len(batches), "expectations": len(suite["expectations"]),
            "setup_s": round(setup_s, 2), "validate_s": round(whole, 3), "cheap_checks_s": round(cheap, 3),
            "suite_s": round(suite_s, 3), "gx_engine_s": round(gx_s, 3),
            "validate_readings_per_s": round(readings / whole), "suite_readings_per_s": round(readings / suite_s),
            "gx_engine_readings_per_s": round(readings / gx_s),
            "cheap_checks_readings_per_s": round(readings / cheap),
            "small_batches": len(small), "small_batch_readings": small_n // len(small),
            "small_suite_readings_per_s": round(small_n / small_auto),
            "small_gx_engine_readings_per_s": round(small_n / small_gx)}


def _time_all(batches, work) -> float:
    start = time.perf_counter()
    for batch in batches:
        work(batch.frame)
    return time.perf_counter() - start


def bench_pipeline(inputs: Path, output: Path, model_dir: Path) -> dict:
    from seqwatch.pipelines.batch import run_batch
    from seqwatch.pipelines.config import RunConfig
    from seqwatch.schemas.mapping import InputMapping

    shutil.rmtree(output, ignore_errors=True)
    config = RunConfig(inputs=(str(inputs / "*.parquet"),), output=str(output), model_dir=str(model_dir),
                       mapping=InputMapping(), suite="sensor")
    started = time.perf_counter()
    manifest = run_batch(config, ["--runner=DirectRunner"], now_us=NOW_US)
    wall = time.perf_counter() - started
    stages = manifest.get("stage_seconds", {})
    validate = stages.get("validate")
    return {"wall_s": round(wall, 2), "records_in": manifest["records_in"],
            "records_scored": manifest["records_scored"], "records_quarantined": manifest["records_quarantined"],
            "readings_per_s": round(manifest["records_in"] / wall), "stage_seconds": stages,
            "validate_s": validate,
            "validate_share_of_wall": None if validate is None else round(validate / wall, 4),
            "validate_share_of_stages": None if validate is None else round(validate / sum(stages.values()), 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data, one repeat (a smoke run)")
    parser.add_argument("--readings", type=int, default=409_600)
    args = parser.parse_args(argv)
    n = 51_200 if args.quick else args.readings
    repeats = 1 if args.quick else 5
    OUT.mkdir(parents=True, exist_ok=True)
    inputs, model_dir = OUT / "inputs", OUT / "model"
    shutil.rmtree(inputs, ignore_errors=True)
    log(f"generating {n} readings")
    frame = make_inputs(n, 8, inputs)
    log("training a window-64 model (1 epoch; its accuracy does not matter here)")
    train_model(frame, model_dir)
    from seqwatch.schemas.mapping import InputMapping
    channels = tuple(sorted(frame["channel"].unique()))
    batches = read_batches(inputs, InputMapping())
    log(f"validation stage alone: {len(batches)} batches, {repeats} repeats")
    stage = bench_stage(batches, channels, repeats)
    log("pipeline end to end (DirectRunner)")
    pipeline = bench_pipeline(inputs, OUT / "run", model_dir)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "window": WINDOW, "stride": STRIDE, "units": UNITS, "stage": stage, "pipeline": pipeline}
    (REPO / "benchmarks" / "out" / "validation_cost.json").write_text(json.dumps(result, indent=1))
    share = pipeline["validate_share_of_wall"]
    print(f"""
### Validation cost ({stage['readings']:,} readings, {stage['expectations']} expectations, sensor suite; {result['machine']})
| | readings/s | seconds |
|---|---|---|
| ValidateReadings' work (cheap checks + suite, per batch of {stage['readings'] // stage['batches']:,}) | {stage['validate_readings_per_s']:,} | {stage['validate_s']} |
| of which cheap checks (channel, time horizon) | {stage['cheap_checks_readings_per_s']:,} | {stage['cheap_checks_s']} |
| of which the suite (pandas engine for its {stage['expectations']} row-level expectations) | {stage['suite_readings_per_s']:,} | {stage['suite_s']} |
| the same suite through GX itself (`engine="gx"`, as before) | {stage['gx_engine_readings_per_s']:,} | {stage['gx_engine_s']} |
| suite, {stage['small_batches']} small batches of {stage['small_batch_readings']:,} readings: pandas engine | {stage['small_suite_readings_per_s']:,} | |
| suite, {stage['small_batches']} small batches of {stage['small_batch_readings']:,} readings: GX | {stage['small_gx_engine_readings_per_s']:,} | |
| validator start-up per worker (suite compiled; GX already imported) | | {stage['setup_s']} |

Whole pipeline (window {WINDOW}, stride {STRIDE}, {UNITS} units, DirectRunner): {pipeline['wall_s']} s,
{pipeline['readings_per_s']:,} readings/s; validation stage {pipeline['validate_s']} s =
{'n/a' if share is None else f'{100 * share:.1f}%'} of the wall time
({'n/a' if share is None else f"{100 * pipeline['validate_share_of_stages']:.1f}%"} of the summed stage timers).
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
