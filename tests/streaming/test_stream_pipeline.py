"""``seqwatch stream`` end to end on Prism (real streaming: event time, watermarks, files while it runs):
a replayed file and a real Kafka broker on 127.0.0.1 in, Parquet out, counts reconciled, alerts equal to
the batch pipeline's on the same readings."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.batch import run_batch
from seqwatch.pipelines.config import RunConfig
from seqwatch.schemas.mapping import InputMapping


def _summed_counts(out: Path) -> dict:
    counts = {}
    for f in (out / "counts").glob("*.json"):
        for key, value in json.loads(f.read_text()).items():
            counts[key] = counts.get(key, 0) + value
    return counts


def _alerts(folder) -> pd.DataFrame:
    return (ds.dataset(folder, format="parquet").to_table().to_pandas()
            .sort_values("alert_id").reset_index(drop=True))


@pytest.fixture(scope="module")
def long_readings(tmp_path_factory):
    readings, _ = generate_sensor_data(n_entities=2, n_steps=900, seed=7, anomalies_per_entity=2,
                                       kinds=("level_shift", "broken_channel"))
    folder = tmp_path_factory.mktemp("stream-long")
    readings = readings.sort_values(["timestamp", "entity_id", "channel"]).reset_index(drop=True)
    readings["timestamp"] = readings["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    readings["value"] = readings["value"].round(4)
    path = folder / "readings.csv"
    readings.to_csv(path, index=False)
    return path, readings


def _batch_alerts(path, model_dir, out) -> tuple[pd.DataFrame, dict]:
    manifest = run_batch(RunConfig(inputs=(str(path),), output=str(out), model_dir=str(model_dir),
                                   mapping=InputMapping()))
    return _alerts(out / "alerts"), manifest


def _stream_command(model_dir, out, prism_location, *source_args):
    return [sys.executable, "-m", "seqwatch.pipelines.cli", "stream", "--model-dir", str(model_dir), "--output",
            str(out), "--flush-window", "600", *source_args, "--runner=PrismRunner",
            f"--prism_location={prism_location}"]


@pytest.mark.slow
def test_replay_on_prism_alerts_while_running_and_matches_batch(long_readings, small_model_dir, prism_location,
                                                                tmp_path):
    path, readings = long_readings
    out = tmp_path / "stream"
    # 9,000 s of event time at 250x: the replay lasts ~36 s, so alerts must show up before it ends.
    log_path = tmp_path / "stream.log"
    with open(log_path, "w") as log_file:  # a file, not a pipe: Prism logs more than a pipe buffer holds
        process = subprocess.Popen(_stream_command(small_model_dir, out, prism_location, "--source", "replay",
                                                   "--input", str(path), "--speed", "250"),
                                   stdout=log_file, stderr=subprocess.STDOUT, text=True)
        first_alert_at = None
        deadline = time.monotonic() + 400
        while process.poll() is None and time.monotonic() < deadline:
            if first_alert_at is None and (out / "alerts").exists() and any((out / "alerts").rglob("*.parquet")):
                first_alert_at = time.monotonic()
            time.sleep(0.5)
        finished_at = time.monotonic()
        if process.poll() is None:
            process.kill()
    log = log_path.read_text()
    assert process.returncode == 0, log[-3000:]
    assert first_alert_at is not None and finished_at - first_alert_at > 5, "alerts only appeared at the end"

    counts = _summed_counts(out)
    assert counts["records_in"] == len(readings) * 1 == counts["records_scored"] + counts.get("records_quarantined", 0)
    batch, manifest = _batch_alerts(path, small_model_dir, tmp_path / "batch")
    stream = _alerts(out / "alerts")
    assert len(batch) >= 2
    assert stream["alert_id"].tolist() == batch["alert_id"].tolist()
    assert (stream["start"] == batch["start"]).all() and (stream["end"] == batch["end"]).all()
    assert ((stream["peak_score"] - batch["peak_score"]).abs() < 1e-6 * batch["peak_score"]).all()
    assert counts["records_scored"] == manifest["records_scored"]


@pytest.mark.slow
def test_kafka_on_prism_reconciles_and_matches_batch(long_readings, small_model_dir, prism_location, kafka_broker,
                                                     tmp_path):
    path, readings = long_readings
    kafka_broker.create_topic("pumps", partitions=1)
    producer = kafka_broker.producer()
    for row in readings.itertuples(index=False):
        producer.produce("pumps", json.dumps({"entity_id": row.entity_id, "channel": row.channel,
                                              "timestamp": row.timestamp, "value": row.value}).encode())
    for bad in (b"not json at all", b'{"entity_id": "pump-01", "channel": "flow"}',
                b'{"entity_id": "pump-01", "channel": "flow", "timestamp": "yesterday", "value": 1}'):
        producer.produce("pumps", bad)
    assert producer.flush(30) == 0

    out = tmp_path / "kafka"
    result = subprocess.run(_stream_command(small_model_dir, out, prism_location, "--source", "kafka",
                                            "--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic",
                                            "pumps", "--start", "earliest", "--stop-after-idle", "8"),
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = _summed_counts(out)
    assert counts["records_in"] == len(readings) + 3
    assert counts["records_in"] == counts["records_scored"] + counts["records_quarantined"]
    quarantine = ds.dataset(out / "quarantine", format="parquet").to_table().to_pandas()
    parse = quarantine[quarantine["stage"] == "parse"]
    assert sorted(parse["raw"]) == sorted(["not json at all", '{"entity_id": "pump-01", "channel": "flow"}',
                                           '{"entity_id": "pump-01", "channel": "flow", "timestamp": "yesterday", '
                                           '"value": 1}'])
    assert (quarantine["raw"] != "").all()  # a broker message cannot be re-read: every record keeps its text
    assert "late" not in set(quarantine["reason_code"])  # the topic was read in order: nothing is late
    batch, _ = _batch_alerts(path, small_model_dir, tmp_path / "batch")
    stream = _alerts(out / "alerts")
    assert stream["alert_id"].tolist() == batch["alert_id"].tolist()
    assert (stream["end"] == batch["end"]).all()
