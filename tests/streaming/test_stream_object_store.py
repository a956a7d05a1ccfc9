"""A stream on Prism into an S3 output (moto's S3 server on 127.0.0.1), with its model root there too: its graceful
stop on a SIGTERM, whose request is an object there, and a restart into the same output whose files sit beside the
first stream's and whose entities' calibration goes on from the first stream's files there; the reading archive
written there too; the output's lock an object there while a stream runs. And a stream into a GCS output."""
import json
import signal
import subprocess
import sys
import time

import pyarrow.dataset as ds
import pytest

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.calibration_state import STATE_FOLDER
from seqwatch.pipelines.output_lock import LOCK_FILE
from seqwatch.pipelines.stop_request import STOP_FILE
from seqwatch.pipelines.streaming import STREAM_SETTINGS_FILE


@pytest.fixture(scope="module")
def two_parts(tmp_path_factory):
    """Two pumps' long readings (1,200 steps of 10 s), as two CSVs: the first two thirds and the rest."""
    readings, _ = generate_sensor_data(n_entities=2, n_steps=1200, seed=11, anomalies_per_entity=1)
    readings = readings.sort_values(["timestamp", "entity_id", "channel"]).reset_index(drop=True)
    readings["timestamp"] = readings["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    folder = tmp_path_factory.mktemp("s3-stream")
    cut = len(readings) * 2 // 3
    first, second = folder / "first.csv", folder / "second.csv"
    readings.iloc[:cut].to_csv(first, index=False)
    readings.iloc[cut:].to_csv(second, index=False)
    return (first, cut), (second, len(readings) - cut)


def _command(store, model_dir, prism_location, path, speed, folder="stream"):
    """The stream of ``path`` into the store's ``folder`` (the S3 store's flags; a GCS store needs none)."""
    return [sys.executable, "-m", "seqwatch.pipelines.cli", "stream", "--source", "replay", "--input", str(path),
            "--speed", str(speed), "--model-dir", str(model_dir), "--output", store.url(folder),
            "--pane-steps", "64", "--flush-window", "600", "--online-calibration", "--archive-readings", "600",
            "--runner=PrismRunner",
            f"--prism_location={prism_location}", *getattr(store, "beam_flags", [])]


def _counts(store, folder="stream") -> dict:
    """The counts of the stream in the store's ``folder``, summed over its files."""
    counts: dict = {}
    for key in store.keys(folder):
        if key.startswith("counts/") and key.endswith(".json"):
            for name, value in json.loads(store.read(f"{folder}/{key}")).items():
                counts[name] = counts.get(name, 0) + value
    return counts


@pytest.mark.slow
def test_a_stream_into_s3_stops_gracefully_on_sigterm_and_a_restart_writes_beside_it(
        s3_store, two_parts, small_model_dir, prism_location, tmp_path):
    (first, in_first), (second, in_second) = two_parts
    log_path = tmp_path / "first.log"
    model_root = s3_store.put_folder(small_model_dir, "models/stream/v1").rsplit("/", 1)[0]
    # 8,000 s of event time at 100x: 80 s of replay, stopped once its first scores are on S3
    with open(log_path, "w") as log:
        stream = subprocess.Popen(_command(s3_store, model_root, prism_location, first, 100), stdout=log,
                                  stderr=subprocess.STDOUT, env=s3_store.env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not any(k.startswith("scores/") for k in s3_store.keys("stream")) and time.monotonic() < deadline:
            assert stream.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.5)
        assert stream.poll() is None, log_path.read_text()[-3000:]
        assert LOCK_FILE in s3_store.keys("stream")  # the output held while the stream runs
        stream.send_signal(signal.SIGTERM)
        assert stream.wait(timeout=240) == 0, log_path.read_text()[-3000:]
    finally:
        if stream.poll() is None:
            stream.kill()
    log = log_path.read_text()
    assert "seqwatch stream: stopping (SIGTERM)" in log, log[-3000:]
    stopped = log.split("seqwatch stream: stopped by SIGTERM once it had written what it read; records in ", 1)
    assert len(stopped) == 2, log[-3000:]
    records_in = int(stopped[1].split(" ", 1)[0])
    counts = _counts(s3_store)
    assert 0 < counts["records_in"] == records_in < in_first  # stopped before the replay's end
    assert counts["records_in"] == counts["records_scored"] + counts.get("records_quarantined", 0)
    keys = s3_store.keys("stream")
    assert STOP_FILE not in keys and STREAM_SETTINGS_FILE in keys  # the request taken back, the start noted
    assert LOCK_FILE not in keys  # and the lock let go
    # each entity's calibration written when the stream stopped, for the restart to go on from
    assert sum(key.startswith(f"{STATE_FOLDER}/stream-") for key in keys) == 2, keys
    written = {key: s3_store.read(f"stream/{key}") for key in keys if key.startswith(("scores/", "counts/"))}

    again = subprocess.run(_command(s3_store, model_root, prism_location, second, 1000), capture_output=True,
                           text=True, env=s3_store.env, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "end in .s2 and sit beside them" in again.stderr
    assert f"records in {in_second} = " in again.stderr
    assert f"each entity's calibration going on from {s3_store.url('stream/' + STATE_FOLDER)}" in again.stderr
    assert {key: s3_store.read(f"stream/{key}") for key in written} == written  # nothing of the first replaced
    keys = s3_store.keys("stream")
    assert any(key.startswith("scores/") and key.endswith(".s2.parquet") for key in keys)
    counts = _counts(s3_store)
    assert counts["records_in"] == records_in + in_second
    assert counts["records_in"] == counts["records_scored"] + counts.get("records_quarantined", 0)
    scores = ds.dataset(f"{s3_store.BUCKET}/stream/scores", filesystem=s3_store.fs, format="parquet").to_table()
    frame = scores.to_pandas()
    assert not frame.duplicated(["entity_id", "window_end"]).any()
    model_version = json.loads((small_model_dir / "metadata.json").read_text())["model_version"]
    assert set(frame["model_version"]) == {model_version}  # the model of the root on S3
    # the reading archive (for fine-tuning) holds every reading scored, of both streams, once
    archived = ds.dataset(f"{s3_store.BUCKET}/stream/readings", filesystem=s3_store.fs, format="parquet").to_table()
    assert archived.num_rows == counts["records_scored"]
    assert any(key.startswith("readings/") and key.endswith(".s2.parquet") for key in keys)


@pytest.mark.slow
def test_a_stream_into_gcs_writes_its_sinks_calibration_and_archive_there(gcs_store, two_parts, small_model_dir,
                                                                           prism_location):
    """The same stream into a ``gs://`` output with its model root there (gcp-storage-emulator; had been run by hand
    only): a replay to its end writes scores, counts, each entity's calibration and the reading archive there, the
    counts reconcile, and no lock or stop request is left."""
    (first, in_first), _ = two_parts
    model_root = gcs_store.put_folder(small_model_dir, "models/stream/v1").rsplit("/", 1)[0]
    run = subprocess.run(_command(gcs_store, model_root, prism_location, first, 1000, folder="stream-gcs"),
                         capture_output=True, text=True, env=gcs_store.env, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"records in {in_first} = " in run.stderr, run.stderr[-3000:]
    counts = _counts(gcs_store, "stream-gcs")
    keys = gcs_store.keys("stream-gcs")
    assert counts["records_in"] == in_first == counts["records_scored"] + counts.get("records_quarantined", 0)
    assert LOCK_FILE not in keys and STOP_FILE not in keys and STREAM_SETTINGS_FILE in keys
    assert sum(key.startswith(f"{STATE_FOLDER}/stream-") for key in keys) == 2, keys
    scores = ds.dataset(f"{gcs_store.BUCKET}/stream-gcs/scores", filesystem=gcs_store.fs, format="parquet").to_table()
    assert scores.num_rows > 0 and not scores.to_pandas().duplicated(["entity_id", "window_end"]).any()
    archived = ds.dataset(f"{gcs_store.BUCKET}/stream-gcs/readings", filesystem=gcs_store.fs,
                          format="parquet").to_table()
    assert archived.num_rows == counts["records_scored"]
