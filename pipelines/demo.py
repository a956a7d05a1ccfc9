"""``seqwatch demo``: generate a plant's sensor data with injected anomalies and a few malformed rows, train a
model on normal history, run the batch pipeline, and report what was found against the injected labels."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from seqwatch.models.synthetic import CHANNELS, generate_sensor_data

STEP_SECONDS = 10


def write_wide_csvs(readings: pd.DataFrame, folder: Path) -> list[Path]:
    """One wide CSV per entity: ``timestamp`` (ISO 8601 UTC) and one column per channel."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for entity, part in readings.groupby("entity_id", sort=True):
        wide = part.pivot(index="timestamp", columns="channel", values="value")[list(CHANNELS)].reset_index()
        wide["timestamp"] = wide["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        path = folder / f"{entity}.csv"
        wide.to_csv(path, index=False, float_format="%.4f")
        paths.append(path)
    return paths


def inject_malformed_rows(path: Path) -> dict:
    """Corrupt a few rows of a wide CSV the way real feeds do; returns what was injected, by reason code."""
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    n = len(lines)
    picks = [int(n * f) for f in (0.11, 0.23, 0.37, 0.52)]
    fields = lines[picks[0]].split(",")
    fields[0] = "2026-13-45T99:00:00Z"
    lines[picks[0]] = ",".join(fields)  # unparseable timestamp: the whole row (4 readings)
    fields = lines[picks[1]].split(",")
    fields[2] = "n/a"
    lines[picks[1]] = ",".join(fields)  # one non-numeric value: one reading
    lines[picks[2]] = lines[picks[2]] + ",999"  # an extra field: the whole row
    lines.insert(picks[3], lines[picks[3]])  # a duplicated row: 4 duplicate readings
    path.write_text("\n".join(lines) + "\n")
    return {"parse_timestamp": len(header) - 1, "parse_value": 1, "malformed_row": len(header) - 1,
            "duplicate": len(header) - 1}


def detection_report(alerts: pd.DataFrame, labels: pd.DataFrame) -> dict:
    """Event-level recall (an injected anomaly is found when an alert of its entity overlaps it) and false
    alarms (alerts that overlap no injected anomaly)."""
    found, false_alarms = [], 0
    for label in labels.itertuples():
        mine = alerts[alerts["entity_id"] == label.entity_id]
        found.append(bool(((mine["start"] <= label.end) & (mine["end"] >= label.start)).any()))
    for alert in alerts.itertuples():
        mine = labels[labels["entity_id"] == alert.entity_id]
        if not ((mine["start"] <= alert.end) & (mine["end"] >= alert.start)).any():
            false_alarms += 1
    labels = labels.assign(found=found)
    by_kind = labels.groupby("kind")["found"].agg(["sum", "count"])
    return {"recall": float(np.mean(found)) if found else 0.0, "found": int(sum(found)), "injected": len(found),
            "alerts": len(alerts), "false_alarms": false_alarms,
            "by_kind": {k: f"{int(r['sum'])}/{int(r['count'])}" for k, r in by_kind.iterrows()}}


def _program() -> str:
    """How the person started seqwatch (``.venv/bin/seqwatch`` under ``make demo``), for a command to try next."""
    return sys.argv[0] if Path(sys.argv[0]).name == "seqwatch" else "seqwatch"


def run_demo(output: Path, quick: bool = False, beam_args: list[str] | None = None,
             online_calibration: bool = False) -> int:
    """Generate, train, run and report; ``online_calibration``: run with per-entity online calibration
    (``seqwatch.pipelines.calibration``) instead of the model's one threshold."""
    from seqwatch.models.artifact import save_artifact
    from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
    from seqwatch.models.detector import Seq2SeqDetector
    from seqwatch.pipelines.batch import run_batch
    from seqwatch.pipelines.config import RunConfig
    from seqwatch.pipelines.report import write_training_report
    from seqwatch.schemas.mapping import InputMapping

    started = time.time()
    entities, train_steps, live_steps = (4, 2000, 1500) if quick else (6, 4000, 2500)
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    say(f"[1/4] generating {entities} pumps x 4 channels: {train_steps} normal steps for training, "
        f"{live_steps} live steps with injected anomalies ({STEP_SECONDS}s interval)")
    train, _ = generate_sensor_data(entities, train_steps, STEP_SECONDS, seed=11)
    live_start = train["timestamp"].max() + pd.Timedelta(seconds=STEP_SECONDS)
    live, labels = generate_sensor_data(entities, live_steps, STEP_SECONDS, anomalies_per_entity=3, seed=12,
                                        start=live_start)
    data = output / "data"
    write_wide_csvs(train, data / "train")
    live_paths = write_wide_csvs(live, data / "live")
    injected = inject_malformed_rows(live_paths[0])
    labels.to_csv(data / "live_labels.csv", index=False)

    say("[2/4] training a seq2seq LSTM autoencoder with a forecasting head on the normal history")
    config = DetectorConfig(ArchitectureConfig(cell="lstm", units=32, forecast_horizon=6),
                            WindowConfig(length=32, stride=8, max_gap=3),
                            TrainingConfig(epochs=8 if quick else 40, batch_size=128, patience=6))
    detector = Seq2SeqDetector(config, model_id="demo-pumps").fit(train)
    model_dir = output / "model"
    save_artifact(detector, model_dir)
    write_training_report(detector, model_dir)

    say("[3/4] running the batch pipeline (Beam DirectRunner) on the live files")
    results = output / "results"
    mapping = InputMapping(format="wide", timestamp="timestamp", entity={"from_filename": True})
    manifest = run_batch(RunConfig(inputs=(str(data / "live" / "*.csv"),), output=str(results),
                                   model_dir=str(model_dir), mapping=mapping, online_calibration=online_calibration),
                         beam_args)

    say("[4/4] reading the alerts back and comparing them with the injected anomalies")
    alerts = ds.dataset(results / "alerts", format="parquet").to_table().to_pandas()
    quarantine = ds.dataset(results / "quarantine", format="parquet").to_table().to_pandas()
    report = detection_report(alerts, labels)
    reasons = quarantine.groupby("reason_code")["records"].sum().to_dict() if len(quarantine) else {}
    print(f"""
seqwatch demo: done in {time.time() - started:.0f}s
  records in {manifest['records_in']} = scored {manifest['records_scored']} + quarantined \
{manifest['records_quarantined']}  (run {manifest['run_id']}, model {detector.model_version})
  injected anomalies found: {report['found']}/{report['injected']} (recall {report['recall']:.2f}); by kind: \
{report['by_kind']}
  alerts: {report['alerts']}, of which false alarms (overlapping no injected anomaly): {report['false_alarms']}{'  (online calibration per entity)' if online_calibration else ''}
  quarantined readings by reason: {reasons}  (injected malformed: {injected})
  alerts:     {results / 'alerts'}
  forecasts:  {results / 'forecasts'}
  scores:     {results / 'scores'}
  quarantine: {results / 'quarantine'}
  manifest:   {results / 'manifest.json'}
  model:      {model_dir} (training report: {model_dir / 'training_report.json'}, {model_dir / 'loss_curves.png'})
  data:       {data / 'train'} (wide CSVs, one per pump), {data / 'live'}, {data / 'live_labels.csv'}
  next:       {_program()} run --input '{data / 'live'}' --format wide --model-dir {model_dir} --output my-output
  evaluate:   {_program()} evaluate --output {results} --labels {data / 'live_labels.csv'}""")
    return 0
