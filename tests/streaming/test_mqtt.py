"""``seqwatch stream --source mqtt``: readings published to a real mosquitto broker on 127.0.0.1 as devices
publish their state (wide JSON, the entity in the topic, read through the mapping flags), read on Prism, counts
reconciled, bad messages quarantined with their text, alerts equal to the batch pipeline's."""
import json
import re
import subprocess
import sys
import threading

import pyarrow.dataset as ds
import pytest

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.broker_sources import MqttReadings


def test_mqtt_source_checks_its_arguments():
    with pytest.raises(ValueError, match="host:port"):
        MqttReadings("localhost", "t", "run")
    with pytest.raises(ValueError, match="qos must be 0 or 1"):
        MqttReadings("localhost:1883", "t", "run", qos=2)
    with pytest.raises(ValueError, match="topic filter"):
        MqttReadings("localhost:1883", "", "run")
    assert MqttReadings("localhost:1883", "t", "run-1").client_id == "seqwatch-run-1"


def test_an_unreachable_broker_is_one_sentence(small_model_dir, tmp_path):
    pytest.importorskip("paho.mqtt")
    result = subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "stream", "--source", "mqtt",
                             "--mqtt-broker", "127.0.0.1:1", "--topic", "plant/#", "--model-dir",
                             str(small_model_dir), "--output", str(tmp_path / "out"), "--stop-after-idle", "5",
                             "--runner=DirectRunner"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "cannot reach the MQTT broker at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


def _publish(broker: str, messages: list[tuple[str, bytes]], retained: frozenset = frozenset()) -> None:
    """Publish with QoS 1 (the messages at the indices ``retained`` retained by the broker) and wait until the
    broker has acknowledged every message."""
    import paho.mqtt.client as mqtt

    host, port = broker.rsplit(":", 1)
    done = threading.Event()
    acked = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.on_publish = lambda c, userdata, mid, reason, props: (acked.append(mid),
                                                                 len(acked) == len(messages) and done.set())
    client.max_queued_messages_set(0)
    client.connect(host, int(port))
    client.loop_start()
    for i, (topic, payload) in enumerate(messages):
        client.publish(topic, payload, qos=1, retain=i in retained)
    assert done.wait(120), f"{len(acked)} of {len(messages)} messages acknowledged"
    client.loop_stop()
    client.disconnect()


@pytest.mark.slow
def test_mqtt_on_prism_reconciles_and_matches_batch(mqtt_broker, small_model_dir, prism_location, tmp_path,
                                                    stream_outputs):
    readings, _ = generate_sensor_data(n_entities=2, n_steps=900, seed=7, anomalies_per_entity=2,
                                       kinds=("level_shift", "broken_channel"))
    readings = readings.sort_values(["timestamp", "entity_id", "channel"]).reset_index(drop=True)
    readings["timestamp"] = readings["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    readings["value"] = readings["value"].round(4)
    path = tmp_path / "readings.csv"
    readings.to_csv(path, index=False)
    # The job's session exists before anything is published: the broker keeps every message for it.
    MqttReadings(mqtt_broker, "plant/+/readings", "test", client_id="seqwatch-mqtt-test").open_session()
    # Devices publish their state, a key per channel (wide), each to a topic of its own (the entity is the
    # topic's level 1), with their own key names and a signal-strength key to ignore; the mapping flags read them.
    state = readings.pivot(index=["timestamp", "entity_id"], columns="channel", values="value").reset_index()
    messages = [(f"plant/{row['entity_id']}/readings",
                 json.dumps({"ts": row["timestamp"], "rssi": -67,
                             **{c: row[c] for c in ("flow", "pressure", "temperature", "vibration")}}).encode())
                for row in state.to_dict("records")]
    bad = [b"not json at all", b'{"flow": 1.0}']
    messages += [("plant/pump-01/readings", payload) for payload in bad]
    messages.append(("other/topic", b'{"entity_id": "pump-01"}'))  # not under the filter: never read
    # each device's last state is retained, as devices often publish it: the broker sends it again on every
    # subscription (retain set), and the stream read it three times, then twice on each run after (bug hunt of
    # delivery semantics)
    last = {topic: i for i, (topic, _) in enumerate(messages[:len(state)])}
    _publish(mqtt_broker, messages, retained=frozenset(last.values()))

    out = tmp_path / "mqtt"
    command = [sys.executable, "-m", "seqwatch.pipelines.cli", "stream", "--source", "mqtt",
               "--mqtt-broker", mqtt_broker, "--topic", "plant/+/readings", "--client-id",
               "seqwatch-mqtt-test", "--stop-after-idle", "8", "--model-dir", str(small_model_dir),
               "--format", "wide", "--timestamp-column", "ts", "--entity-topic-level", "1",
               "--ignore", "rssi",
               "--output", str(out), "--flush-window", "600", "--runner=PrismRunner",
               f"--prism_location={prism_location}"]
    # the first run's reader fills batches of 1.5 s (--batch-seconds; 0.5 s by default)
    result = subprocess.run(command + ["--batch-seconds", "1.5"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sends retained messages (a topic's last message, again on every subscription); they are skipped" in \
        result.stderr, result.stderr[-3000:]
    counts = stream_outputs.counts(out)
    assert counts["records_in"] == len(readings) + len(bad)
    assert counts["records_in"] == counts["records_scored"] + counts["records_quarantined"]
    quarantine = ds.dataset(out / "quarantine", format="parquet").to_table().to_pandas()
    assert sorted(quarantine["raw"]) == sorted(b.decode() for b in bad)
    assert set(quarantine["source"]) == {"mqtt:plant/+/readings"}

    stream_outputs.assert_matches_batch(out, path, small_model_dir, tmp_path / "batch")

    # run again, nothing new published: the retained copies are not read again; with --qos 0, the stream says at
    # its start that the broker keeps nothing for it while it is away (the bug hunt found such messages lost
    # without a word)
    command[command.index("--stop-after-idle") + 1] = "3"
    again = subprocess.run(command + ["--qos", "0"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "records in 0 = scored 0 + quarantined 0" in again.stderr, again.stderr[-3000:]
    assert "with --qos 0 the broker keeps nothing for this stream while it is not connected" in again.stderr
    _publish(mqtt_broker, [(topic, b"") for topic in last], retained=frozenset(range(len(last))))  # cleared


@pytest.mark.slow
def test_an_mqtt_stream_waits_out_a_broker_outage_and_reads_what_came_after(small_model_dir, prism_location,
                                                                           tmp_path, stream_outputs):
    """Bug hunt of Pub/Sub and MQTT streams: with mosquitto down for longer than --stop-after-idle, the stream
    ended as if the topic were quiet, without a word, and paho's reconnection backoff (up to 120 s) found the broker
    back 16 s late. Now the outage is one line, the idle time does not count while disconnected, the client tries
    again every few seconds, and what was published after the outage is read."""
    import os
    import shutil
    import signal
    import time

    import socket

    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def _port_open(number: int) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", number)) == 0

    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(binary, os.X_OK):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto, or `make mosquitto` as root)")
    pytest.importorskip("paho.mqtt")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"  # persistence: the job's session and what is queued for it survive a restart
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n"
                    f"persistence_location {tmp_path}/\nmax_queued_messages 0\n")

    def start_broker():
        process = subprocess.Popen([binary, "-c", str(conf)], stdout=open(tmp_path / "mosquitto.log", "a"),
                                   stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not _port_open(port):
            assert process.poll() is None and time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.1)
        return process

    readings, _ = generate_sensor_data(n_entities=2, n_steps=600, seed=7, anomalies_per_entity=1)
    readings = readings.sort_values(["timestamp", "entity_id", "channel"]).reset_index(drop=True)  # as devices send
    readings["timestamp"] = readings["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    messages = [("plant/readings", json.dumps({"entity_id": r.entity_id, "channel": r.channel,
                                               "timestamp": r.timestamp, "value": round(float(r.value), 4)}).encode())
                for r in readings.itertuples(index=False)]
    first, rest = messages[:len(messages) // 2], messages[len(messages) // 2:]
    broker = start_broker()
    out, log_path = tmp_path / "out", tmp_path / "stream.log"
    try:
        MqttReadings(f"127.0.0.1:{port}", "plant/#", "test", client_id="outage-test").open_session()
        _publish(f"127.0.0.1:{port}", first)
        with open(log_path, "w") as log:
            stream = subprocess.Popen([sys.executable, "-m", "seqwatch.pipelines.cli", "stream", "--source", "mqtt",
                                       "--mqtt-broker", f"127.0.0.1:{port}", "--topic", "plant/#", "--client-id",
                                       "outage-test", "--model-dir", str(small_model_dir), "--output", str(out),
                                       "--stop-after-idle", "20", f"--prism_location={prism_location}"],
                                      stdout=log, stderr=subprocess.STDOUT)
            try:
                stream_outputs.wait_for_scores(stream, out, log_path)
                os.killpg(broker.pid, signal.SIGTERM)  # mosquitto saves the session and stops
                broker.wait(10)
                time.sleep(28)  # longer than --stop-after-idle
                assert stream.poll() is None, log_path.read_text()[-3000:]
                broker = start_broker()
                # The stream's client is back (and subscribed) before the devices publish again.
                deadline = time.monotonic() + 60
                while "answers again" not in log_path.read_text() and time.monotonic() < deadline:
                    assert stream.poll() is None, log_path.read_text()[-3000:]
                    time.sleep(0.3)
                _publish(f"127.0.0.1:{port}", rest)
                returncode = stream.wait(timeout=300)
            finally:
                if stream.poll() is None:
                    stream.kill()
    finally:
        if broker.poll() is None:
            os.killpg(broker.pid, signal.SIGTERM)
            broker.wait(10)
    text = log_path.read_text()
    assert returncode == 0, text[-3000:]
    assert text.count("cannot reach the MQTT broker") == 1, text[-3000:]
    counts = stream_outputs.counts(out)
    assert counts["records_in"] == len(messages) == counts["records_scored"] + counts.get("records_quarantined", 0)


def test_a_broker_that_refuses_the_login_is_said_at_once(tmp_path):
    """Bug hunt of Pub/Sub and MQTT streams: a mosquitto without anonymous access refused the connection at once,
    and the stream said, after 10 s, that the broker "did not confirm the subscription"."""
    import os
    import shutil
    import socket
    import time

    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(binary, os.X_OK):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto, or `make mosquitto` as root)")
    pytest.importorskip("paho.mqtt")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\n")
    broker = subprocess.Popen([binary, "-c", str(tmp_path / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(ConnectionError, match=f"^the MQTT broker at 127.0.0.1:{port} refused the connection "
                                                  f"\\(Not authorized\\)$"):
            MqttReadings(f"127.0.0.1:{port}", "plant/#", "run").open_session()
        assert time.monotonic() - started < 5
    finally:
        broker.terminate()
        broker.wait(10)


@pytest.mark.slow
def test_an_mqtt_stream_stopped_by_sigterm_writes_what_it_took_and_a_restart_takes_the_rest(
        mqtt_broker, small_model_dir, prism_location, tmp_path, stream_outputs):
    """A SIGTERM stops the stream gracefully: the messages it took (acknowledged to the broker) are all scored or
    quarantined and written, and its persistent session keeps the rest, which the restarted stream reads: every
    message once, across the two."""
    readings, _ = generate_sensor_data(n_entities=2, n_steps=600, seed=3)
    readings["timestamp"] = readings["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    messages = [(f"stopping/{r['entity_id']}", json.dumps({k: r[k] for k in ("entity_id", "channel", "timestamp",
                                                                            "value")}).encode())
                for r in readings.sort_values("timestamp", kind="stable").to_dict("records")]
    half = len(messages) // 2
    MqttReadings(mqtt_broker, "stopping/+", "test", client_id="seqwatch-mqtt-stop").open_session()
    _publish(mqtt_broker, messages[:half])
    out = tmp_path / "mqtt"
    command = [sys.executable, "-m", "seqwatch.pipelines.cli", "stream", "--source", "mqtt", "--mqtt-broker",
               mqtt_broker, "--topic", "stopping/+", "--client-id", "seqwatch-mqtt-stop", "--model-dir",
               str(small_model_dir), "--output", str(out), "--flush-window", "600", "--runner=PrismRunner",
               f"--prism_location={prism_location}"]
    # no --stop-after-idle: it ends on the SIGTERM alone
    returncode, log = stream_outputs.stop_once_scored(command, out, tmp_path / "first.log")
    assert returncode == 0, log[-3000:]
    records_in, scored, quarantined = stream_outputs.stopped_totals(log, "SIGTERM")
    first = stream_outputs.counts(out)
    assert first["records_in"] == records_in == scored + quarantined > 0

    _publish(mqtt_broker, messages[half:])  # while no stream runs: the session keeps them
    again = subprocess.run(command + ["--stop-after-idle", "4"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    found = re.search(r"records in (\d+) = scored (\d+) \+ quarantined (\d+)", again.stderr)
    assert found, again.stderr[-3000:]
    records_in, scored, quarantined = (int(g) for g in found.groups())
    assert records_in == scored + quarantined
    assert first["records_in"] + records_in == len(messages)
