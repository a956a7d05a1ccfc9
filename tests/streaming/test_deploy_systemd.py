"""The systemd unit in ``deploy/systemd`` run as systemd would run it: ``systemd-analyze verify`` on it (where
systemd's tools are installed), its ``ExecStart`` split as systemd splits it and started in its working folder,
its example paths moved to a scratch folder and its broker's address to the session's Kafka broker; then stopped as
its ``KillMode=mixed`` stops it: ``KillSignal`` to seqwatch's process alone, the rest killed after
``TimeoutStopSec``."""
from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path


from seqwatch.models.synthetic import generate_sensor_data

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "seqwatch-stream.service"
EXAMPLES = ("/srv/seqwatch", "/models/pumps", "/results")


def _unit(root: Path, bootstrap_servers: str) -> tuple[str, configparser.ConfigParser]:
    """The unit's text with its example paths under ``root`` and the broker at ``bootstrap_servers``, and its
    sections."""
    text = UNIT.read_text()
    for example in EXAMPLES:
        assert example in text
        text = text.replace(example, f"{root}{example}")
    assert "127.0.0.1:9092" in text
    text = text.replace("127.0.0.1:9092", bootstrap_servers)
    unit = configparser.ConfigParser(interpolation=None, comment_prefixes=("#",), strict=True)
    unit.optionxform = str
    unit.read_string(text)
    return text, unit


def test_the_systemd_unit_streams_and_its_stop_writes_what_the_stream_read(small_model_dir, kafka_broker, tmp_path,
                                                                           stream_outputs, processes):
    text, unit = _unit(tmp_path, kafka_broker.bootstrap_servers)
    service = unit["Service"]
    # systemd's default KillMode=control-group would send the SIGTERM to Prism as well
    assert (service["KillMode"], service["KillSignal"]) == ("mixed", "SIGTERM")
    timeout_s = float(service["TimeoutStopSec"])
    (tmp_path / "srv" / "seqwatch").mkdir(parents=True)
    (tmp_path / "srv" / "seqwatch" / ".venv").symlink_to(REPO / ".venv")
    shutil.copytree(small_model_dir, tmp_path / "models" / "pumps" / "v1")
    (tmp_path / "results").mkdir()
    if shutil.which("systemd-analyze"):
        (tmp_path / "seqwatch-stream.service").write_text(text)
        verified = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "seqwatch-stream.service")],
                                  capture_output=True, text=True, timeout=60)
        assert verified.returncode == 0 and verified.stderr == "", verified.stderr

    readings, _ = generate_sensor_data(n_entities=2, n_steps=400, seed=9)
    readings["timestamp"] = readings["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    kafka_broker.create_topic("pumps", partitions=1)
    producer = kafka_broker.producer()
    for row in readings.itertuples(index=False):
        producer.produce("pumps", json.dumps(row._asdict()).encode())
    assert producer.flush(30) == 0

    out = tmp_path / "results" / "pumps-stream"
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/root")}  # as systemd's
    log_path = tmp_path / "journal.log"
    with open(log_path, "w") as journal:
        process = subprocess.Popen(shlex.split(service["ExecStart"]), cwd=service["WorkingDirectory"], env=env,
                                   stdout=journal, stderr=subprocess.STDOUT, start_new_session=True)
        group = [process.pid]  # the service's processes: seqwatch, and its Prism once the stream runs
        try:
            stream_outputs.wait_for_scores(process, out, log_path)
            time.sleep(2)
            group += list(processes.descendants(process.pid))
            process.send_signal(getattr(signal, service["KillSignal"]))  # KillMode=mixed: the main process alone
            returncode = process.wait(timeout=timeout_s)
            left = [pid for pid in group if processes.alive(pid)]
        finally:
            processes.kill(group)  # what systemd does to what is left after TimeoutStopSec
    text = log_path.read_text()
    assert returncode == 0 and "Traceback" not in text, text[-3000:]
    records_in, scored, quarantined = stream_outputs.stopped_totals(text, "SIGTERM")
    counts = stream_outputs.counts(out)
    assert counts["records_in"] == records_in == len(readings) == scored + quarantined
    assert counts.get("records_scored", 0) == scored
    assert list((out / "calibration_state").rglob("*.parquet")), "each entity's calibration was to be kept"
    assert left == [], f"processes {left} of the service outlived its stop"
