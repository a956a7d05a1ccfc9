"""``seqwatch stream`` end to end on Prism (real streaming: event time, watermarks, files while it runs):
a replayed file and a real Kafka broker on 127.0.0.1 in, Parquet out, counts reconciled, alerts equal to
the batch pipeline's on the same readings. Kafka with late readings also on Flink."""
import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from seqwatch.models.synthetic import generate_sensor_data
from tests.streaming.conftest import prism_bug


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


def _seqwatch_stream(model_dir, out, *args):
    """``seqwatch stream`` with flush windows of 10 minutes; ``args``: the source's and the runner's flags."""
    return [sys.executable, "-m", "seqwatch.pipelines.cli", "stream", "--model-dir", str(model_dir), "--output",
            str(out), "--flush-window", "600", *args]


def _run_replay(command: list, out, timeout: float = 400) -> subprocess.CompletedProcess:
    """``command``, a replayed stream into ``out``, run to its end, and run once more from an empty ``out`` when
    one of Prism's own bugs failed its job (``conftest.PRISM_BUGS``; its stuck-job check failed 3 replayed streams
    of this file in some 40 runs of the suite, README "Tests", each of which passed when run again). The rerun is a
    warning in the suite's summary; any other failure, or a bug failing the job twice, fails the test."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0 and prism_bug(result.stderr):
        import warnings

        warnings.warn(f"Prism failed a replayed stream with a bug of its own ({prism_bug(result.stderr)}); run "
                      f"again into {out}")
        shutil.rmtree(out, ignore_errors=True)
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    return result


def _runner_args(runner: str, request) -> list[str]:
    """The Beam flags for ``runner`` ("prism" or "flink"), from its fixture (which skips when it is missing)."""
    if runner == "prism":
        return ["--runner=PrismRunner", f"--prism_location={request.getfixturevalue('prism_location')}"]
    return request.getfixturevalue("flink_args")()


def _stream_command(model_dir, out, prism_location, *source_args):
    return _seqwatch_stream(model_dir, out, *source_args, "--runner=PrismRunner", f"--prism_location={prism_location}")


@pytest.mark.slow
def test_replay_on_prism_alerts_while_running_and_matches_batch(long_readings, small_model_dir, prism_location,
                                                                tmp_path, stream_outputs):
    path, readings = long_readings
    out = tmp_path / "stream"
    # 9,000 s of event time at 500x: the replay lasts ~18 s, so alerts must show up before it ends. With a
    # 10-minute alert cooldown, which merges alerts of this data that are minutes apart.
    returncode, log, ran_on_s = stream_outputs.run_watching_alerts(
        _stream_command(small_model_dir, out, prism_location, "--source", "replay", "--input", str(path),
                        "--speed", "500", "--alert-cooldown", "600"), out, tmp_path / "stream.log")
    assert returncode == 0, log[-3000:]
    assert ran_on_s is not None and ran_on_s > 5, (
        f"alerts only appeared at the end ({ran_on_s} s before it); files written at (s after the first): "
        f"{stream_outputs.timeline(out)}")

    counts = stream_outputs.counts(out)
    assert counts["records_in"] == len(readings) * 1 == counts["records_scored"] + counts.get("records_quarantined", 0)
    stream_outputs.assert_matches_batch(out, path, small_model_dir, tmp_path / "batch", alert_cooldown_us=600_000_000)
    stream = stream_outputs.alerts(out / "alerts")
    assert counts["alerts"] == len(stream)
    plain, _ = stream_outputs.batch_alerts(path, small_model_dir, tmp_path / "plain")
    assert len(stream) < len(plain), "the cooldown merged nothing: the test does not exercise it"
    # Each incident was announced (alerts_open/, same id) before its alert was settled and written, and the log
    # said so in that order, with what the alert holds; the last line sums the counts.
    lines = log.splitlines()
    for alert in stream.itertuples():
        notice, settled = (out / folder / alert.entity_id / f"{alert.alert_id}.parquet"
                           for folder in ("alerts_open", "alerts"))
        assert notice.stat().st_mtime < settled.stat().st_mtime
        opened_at = [i for i, line in enumerate(lines) if line.startswith(
            f"seqwatch stream: incident opened on {alert.entity_id} at ") and line.endswith(f"[{alert.alert_id}]")]
        settled_at = [i for i, line in enumerate(lines) if line.startswith(
            f"seqwatch stream: incident settled on {alert.entity_id}, {alert.start:%Y-%m-%dT%H:%M:%SZ} to "
            f"{alert.end:%Y-%m-%dT%H:%M:%SZ}: {alert.severity}, peak score {alert.peak_score:.4g}") and line.endswith(
            f"{alert.windows} window(s), top channels {', '.join(alert.top_channels)} [{alert.alert_id}]")]
        assert len(opened_at) == len(settled_at) == 1 and opened_at[0] < settled_at[0], (alert, log[-3000:])
    assert sum("seqwatch stream: incident opened on " in line for line in lines) == counts["alerts_opened"]
    # The last lines: the counts summed, and when readings were quarantined, how many by reason (as a run says).
    quarantined = counts.get("records_quarantined", 0)
    ended = lines[-2] if quarantined else lines[-1]
    assert ended.startswith(
        f"seqwatch stream: the source ended; records in {counts['records_in']} = scored {counts['records_scored']} + "
        f"quarantined {quarantined}, incidents {len(stream)} (counts of "), log[-3000:]
    if quarantined:
        assert lines[-1].startswith(f"seqwatch stream: {quarantined} of {counts['records_in']} readings were "
                                    f"quarantined ("), log[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["prism", "flink"])
def test_online_calibration_judges_every_window_as_batch_does(runner, long_readings, small_model_dir, tmp_path,
                                                              stream_outputs, request):
    """``--online-calibration`` depends on the order each entity's windows are judged in: on Prism and on Flink
    (panes as the watermark passes them) every window gets the tail probability, threshold and flag the batch
    run gives it (all at the end, sorted), and the alerts are the same."""
    path, readings = long_readings
    out = tmp_path / "stream"
    result = _run_replay(_seqwatch_stream(small_model_dir, out, "--source", "replay", "--input", str(path), "--speed",
                                          "4000", "--online-calibration", *_runner_args(runner, request)), out)
    assert result.returncode == 0, result.stderr[-3000:]
    stream_outputs.assert_matches_batch(out, path, small_model_dir, tmp_path / "batch", online_calibration=True)

    def scores(folder):
        table = ds.dataset(folder / "scores", format="parquet").to_table().to_pandas()
        return table.sort_values(["entity_id", "window_end"]).reset_index(drop=True)

    streamed, batch = scores(out), scores(tmp_path / "batch")
    assert len(streamed) == len(batch) and (streamed["window_end"] == batch["window_end"]).all()
    for column in ("threshold", "tail_probability"):
        assert np.allclose(streamed[column], batch[column], rtol=1e-6), column
    assert (streamed["is_anomaly"] == batch["is_anomaly"]).all() and batch["threshold"].nunique() > 2


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["prism", "flink"])
def test_an_entity_back_after_more_than_the_days_kept_starts_afresh_as_in_batch(runner, long_readings,
                                                                              small_model_dir, tmp_path, request):
    """``--calibration-keep-days 1`` on Prism and Flink: the readings' second half comes two days after the first (the
    replay plays the pause in --max-wait), so each entity's windows after the gap are judged from the model's
    calibration scores, as the batch run with the same setting judges them, and not as a continuation."""
    from seqwatch.models.artifact import read_metadata
    from seqwatch.pipelines.batch import run_batch
    from seqwatch.pipelines.calibration import model_risk, start_calibration
    from seqwatch.pipelines.config import RunConfig

    _, readings = long_readings
    stamps = pd.to_datetime(readings["timestamp"])
    cut = stamps.sort_values().iloc[len(stamps) // 2]
    gapped = readings.assign(timestamp=stamps.where(stamps < cut, stamps + pd.Timedelta(days=2))
                             .dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    path = tmp_path / "gapped.csv"
    gapped.to_csv(path, index=False)
    out = tmp_path / "stream"
    result = _run_replay(_seqwatch_stream(small_model_dir, out, "--source", "replay", "--input", str(path),
                                          "--speed", "4000", "--online-calibration", "--calibration-keep-days", "1",
                                          *_runner_args(runner, request)), out)
    assert result.returncode == 0, result.stderr[-3000:]
    run_batch(RunConfig(inputs=(str(path),), output=str(tmp_path / "batch"), model_dir=str(small_model_dir),
                        online_calibration=True, calibration_keep_days=1.0))

    def scores(folder):
        table = ds.dataset(folder / "scores", format="parquet").to_table().to_pandas()
        return table.sort_values(["entity_id", "window_end"]).reset_index(drop=True)

    streamed, batch = scores(out), scores(tmp_path / "batch")
    assert len(streamed) == len(batch) and (streamed["window_end"] == batch["window_end"]).all()
    assert np.allclose(streamed["threshold"], batch["threshold"], rtol=1e-6)
    metadata = read_metadata(str(small_model_dir))
    risk, _ = model_risk(metadata)
    for entity, part in batch.groupby("entity_id"):
        after = (part["window_end"] > cut).to_numpy()
        assert 0 < after.sum() < len(part)
        first = start_calibration(metadata)
        first.process_at_risk(part["score"].to_numpy()[~after], risk)
        afresh = start_calibration(metadata).process_at_risk(part["score"].to_numpy()[after], risk)[1]
        went_on = first.process_at_risk(part["score"].to_numpy()[after], risk)[1]
        np.testing.assert_allclose(part["threshold"].to_numpy()[after], afresh, rtol=1e-9, err_msg=entity)
        assert not np.allclose(afresh, went_on), entity  # the two ways tell apart


@pytest.mark.slow
def test_a_stream_goes_on_from_a_batch_runs_calibration_as_the_next_batch_run_does(long_readings, small_model_dir,
                                                                                  prism_location, tmp_path):
    """``seqwatch stream --online-calibration --calibration-from`` on Prism: a batch run over the first 600 steps
    writes each entity's calibration; a stream of the rest (from 40 steps before, for window context) going on from
    it judges every window as a batch run of the rest going on from it does: the windows the first run judged by
    its state without joining it again, the others as its continuation, not as a fresh start."""
    from seqwatch.pipelines.batch import run_batch
    from seqwatch.pipelines.config import RunConfig

    _, readings = long_readings
    times = np.sort(readings["timestamp"].unique())
    first, rest = readings[readings["timestamp"] < times[600]], readings[readings["timestamp"] >= times[560]]
    first.to_csv(tmp_path / "first.csv", index=False)
    rest.to_csv(tmp_path / "rest.csv", index=False)

    def batch(path, out, **settings):
        run_batch(RunConfig(inputs=(str(path),), output=str(out), model_dir=str(small_model_dir),
                            online_calibration=True, **settings))

    batch(tmp_path / "first.csv", tmp_path / "day1")
    batch(tmp_path / "rest.csv", tmp_path / "day2", calibration_from=str(tmp_path / "day1"))
    batch(tmp_path / "rest.csv", tmp_path / "day2-afresh")
    out = tmp_path / "stream"
    result = _run_replay(_stream_command(small_model_dir, out, prism_location, "--source", "replay", "--input",
                                         str(tmp_path / "rest.csv"), "--speed", "4000", "--online-calibration",
                                         "--calibration-from", str(tmp_path / "day1")), out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (f"each entity's calibration going on from {tmp_path / 'day1' / 'calibration_state.parquet'}"
            in result.stderr), result.stderr[-3000:]

    def scores(folder):
        table = ds.dataset(folder / "scores", format="parquet").to_table().to_pandas()
        return table.sort_values(["entity_id", "window_end"]).reset_index(drop=True)

    streamed, went_on, afresh = scores(out), scores(tmp_path / "day2"), scores(tmp_path / "day2-afresh")
    assert len(streamed) == len(went_on) > 0 and (streamed["window_end"] == went_on["window_end"]).all()
    for column in ("threshold", "tail_probability"):
        np.testing.assert_allclose(streamed[column], went_on[column], rtol=1e-6, err_msg=column)
    assert (streamed["is_anomaly"] == went_on["is_anomaly"]).all()
    assert not np.allclose(went_on["threshold"], afresh["threshold"])  # the state made a difference


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["prism", "flink"])
def test_a_stream_restarted_into_its_output_goes_on_from_its_own_calibration(runner, long_readings, small_model_dir,
                                                                            tmp_path, request):
    """A stream with ``--online-calibration`` on Prism and on Flink writes each entity's calibration when its input ends
    (``calibration_state/stream-<start>/``): the same state the batch run of the same readings writes. A stream
    restarted into that output (the rest of the readings, from 40 steps before for window context) goes on from it
    unasked, and judges every window as the batch run of the rest going on from the batch state does."""
    from seqwatch.pipelines.batch import run_batch
    from seqwatch.pipelines.calibration_state import STATE_FOLDER, read_states, stream_state_files
    from seqwatch.pipelines.config import RunConfig

    _, readings = long_readings
    times = np.sort(readings["timestamp"].unique())
    first, rest = readings[readings["timestamp"] < times[600]], readings[readings["timestamp"] >= times[560]]
    first.to_csv(tmp_path / "first.csv", index=False)
    rest.to_csv(tmp_path / "rest.csv", index=False)
    for path, out, settings in ((tmp_path / "first.csv", tmp_path / "day1", {}),
                                (tmp_path / "rest.csv", tmp_path / "day2", {"calibration_from": str(tmp_path / "day1")})):
        run_batch(RunConfig(inputs=(str(path),), output=str(out), model_dir=str(small_model_dir),
                            online_calibration=True, **settings))
    out = tmp_path / "stream"
    logs = []
    for part in ("first.csv", "rest.csv"):
        result = subprocess.run(_seqwatch_stream(small_model_dir, out, "--source", "replay", "--input",
                                                 str(tmp_path / part), "--speed", "4000", "--online-calibration",
                                                 *_runner_args(runner, request)),
                                capture_output=True, text=True, timeout=400)
        assert result.returncode == 0, result.stderr[-3000:]
        logs.append(result.stderr)
        if part == "first.csv":
            files = stream_state_files(str(out / STATE_FOLDER))
            streamed, batch = read_states(str(out / STATE_FOLDER)), read_states(str(tmp_path / "day1"
                                                                                    / "calibration_state.parquet"))
            assert len(files) == len(batch) == 2 and sorted(streamed) == sorted(batch)
            for entity, state in streamed.items():
                assert (state.model_version, state.last_window_end_us) == (batch[entity].model_version,
                                                                           batch[entity].last_window_end_us)
                got, want = state.online().to_dict(), batch[entity].online().to_dict()
                np.testing.assert_allclose(got.pop("scores"), want.pop("scores"), rtol=1e-9)
                assert got["since_refit"] == want["since_refit"] and got["run_steps"] == want["run_steps"]
    assert "going on from" not in logs[0]
    assert f"each entity's calibration going on from {out / STATE_FOLDER}" in logs[1], logs[1][-3000:]
    # the first start's files gathered into one file by the restart (its folder gone), beside the restart's own
    folders = sorted(p.name for p in (out / STATE_FOLDER).iterdir())
    assert len(folders) == 2 and folders[1] == folders[0] + "-carried", folders
    assert (out / STATE_FOLDER / folders[1] / "entities.parquet").exists() and len(list(
        (out / STATE_FOLDER / folders[0]).iterdir())) == 2

    def scores(folder, only=None):
        dataset = ds.dataset(folder / "scores", format="parquet")
        files = [f for f in dataset.files if only is None or only in f.rsplit("/", 1)[1]]
        table = ds.dataset(files, format="parquet").to_table().to_pandas()
        return table.sort_values(["entity_id", "window_end"]).reset_index(drop=True)

    restarted, went_on = scores(out, only=".s2."), scores(tmp_path / "day2")
    assert len(restarted) == len(went_on) > 0 and (restarted["window_end"] == went_on["window_end"]).all()
    for column in ("threshold", "tail_probability"):
        np.testing.assert_allclose(restarted[column], went_on[column], rtol=1e-6, err_msg=column)
    assert (restarted["is_anomaly"] == went_on["is_anomaly"]).all()


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["prism", "flink"])
def test_kafka_with_late_readings_reconciles_and_matches_batch(runner, long_readings, small_model_dir, kafka_broker,
                                                              tmp_path, stream_outputs, request):
    """``seqwatch stream --source kafka`` on Prism and on Flink: the readings, three malformed messages, and two
    readings sent last, once the stream has scored its first panes: one from the start of the stream (its pane
    was scored, but it is less than --late-after behind, so the gate lets it through and Beam's late firing
    brings it to the windowing stage) and one two days before the stream (beyond --late-after: the gate). Both
    are quarantined as late, nothing is lost, and the alerts equal the batch run's; with Kafka batches of 2 s
    (``--batch-seconds``, the CPU-for-latency trade of a live feed: test_brokers.py). (Sent with the backlog
    instead, the first one reached its pane before the pane fired in one Flink run, and was quarantined as a
    duplicate: not the late path this test is for.) With a consumer group named: Flink, which finalizes bundles
    only at checkpoints and takes none, commits none of its offsets, and the stream says so as it starts (it had
    committed nothing without a word, and a stream with a group on Flink was thought not to end: session 51)."""
    path, readings = long_readings
    topic = f"pumps-{runner}"
    kafka_broker.create_topic(topic, partitions=1)
    producer = kafka_broker.producer()
    for row in readings.itertuples(index=False):
        producer.produce(topic, json.dumps({"entity_id": row.entity_id, "channel": row.channel,
                                            "timestamp": row.timestamp, "value": row.value}).encode())
    for bad in (b"not json at all", b'{"entity_id": "pump-01", "channel": "flow"}',
                b'{"entity_id": "pump-01", "channel": "flow", "timestamp": "yesterday", "value": 1}'):
        producer.produce(topic, bad)
    early = readings.iloc[40]
    late = {"entity_id": early.entity_id, "channel": early.channel, "timestamp": early.timestamp,
            "value": early.value + 1.0}
    ancient = dict(late, timestamp=(pd.Timestamp(early.timestamp) - pd.Timedelta(days=2)).isoformat())
    assert producer.flush(30) == 0

    out = tmp_path / "kafka"
    log_path = tmp_path / "stream.log"
    with open(log_path, "w") as log:
        stream = subprocess.Popen(_seqwatch_stream(small_model_dir, out, "--source", "kafka", "--bootstrap-servers",
                                                   kafka_broker.bootstrap_servers, "--topic", topic, "--start",
                                                   "earliest", "--stop-after-idle", "8", "--batch-seconds", "2",
                                                   "--group-id", f"late-{runner}", *_runner_args(runner, request)),
                                  stdout=log, stderr=subprocess.STDOUT)
        # Panes fire in watermark order: once two of the entity's panes are scored, its first one (which holds
        # `early`) has been.
        panes = out / "scores" / early.entity_id
        deadline = time.monotonic() + 300
        while len(list(panes.glob("*.parquet"))) < 2 and stream.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(list(panes.glob("*.parquet"))) >= 2, log_path.read_text()[-3000:]
        for message in (late, ancient):
            producer.produce(topic, json.dumps(message).encode())
        assert producer.flush(30) == 0
        returncode = stream.wait(timeout=400)
    assert returncode == 0, log_path.read_text()[-3000:]
    counts = stream_outputs.counts(out)
    assert counts["records_in"] == len(readings) + 5
    assert counts["records_in"] == counts["records_scored"] + counts["records_quarantined"]
    quarantine = ds.dataset(out / "quarantine", format="parquet").to_table().to_pandas()
    assert counts["records_quarantined"] == quarantine["records"].sum()
    late_records = quarantine[quarantine["reason_code"] == "late"].sort_values("stage")
    assert late_records["stage"].tolist() == ["gate", "window"]
    as_parsed = [dict(m, timestamp=int(pd.Timestamp(m["timestamp"]).value // 1000)) for m in (ancient, late)]
    assert [json.loads(raw) for raw in late_records["raw"]] == as_parsed  # event time in microseconds
    assert counts["quarantined.window.late"] == 1 and counts["quarantined.gate.late"] == 1
    parse = quarantine[quarantine["stage"] == "parse"]
    assert sorted(parse["raw"]) == sorted(["not json at all", '{"entity_id": "pump-01", "channel": "flow"}',
                                           '{"entity_id": "pump-01", "channel": "flow", "timestamp": "yesterday", '
                                           '"value": 1}'])
    assert (quarantine["raw"] != "").all()  # a broker message cannot be re-read: every record keeps its text
    stream_outputs.assert_matches_batch(out, path, small_model_dir, tmp_path / "batch")
    said = (f"on Flink the reader commits the offsets of --group-id late-{runner} only when Flink finalizes a bundle "
            f"at a checkpoint")
    assert (said in log_path.read_text()) == (runner == "flink")
    if runner == "flink":
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap_servers, "group.id": f"late-{runner}"})
        try:
            assert consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset < 0  # none committed
        finally:
            consumer.close()


@pytest.mark.slow
def test_pubsub_on_prism_reconciles_and_matches_batch(long_readings, small_model_dir, prism_location,
                                                      pubsub_emulator, tmp_path, stream_outputs):
    path, readings = long_readings
    topic, subscription = pubsub_emulator.create_subscription("pumps-stream")
    publisher, _ = pubsub_emulator.clients()
    futures = [publisher.publish(topic, json.dumps({"entity_id": row.entity_id, "channel": row.channel,
                                                    "timestamp": row.timestamp, "value": row.value}).encode())
               for row in readings.itertuples(index=False)]
    futures.append(publisher.publish(topic, b"not json at all"))
    for future in futures:
        future.result(timeout=60)

    out = tmp_path / "pubsub"
    # Pub/Sub does not keep order: the watermark trails the latest event time by an hour (more than one
    # publisher's batches reorder readings), so no pane is scored before its readings are in. Its reader fills
    # batches of 1.5 s (--batch-seconds; 0.5 s by default).
    result = subprocess.run(_stream_command(small_model_dir, out, prism_location, "--source", "pubsub",
                                            "--subscription", subscription, "--emulator-host", pubsub_emulator.host,
                                            "--stop-after-idle", "6", "--max-out-of-orderness", "3600",
                                            "--batch-seconds", "1.5"),
                            capture_output=True, text=True, timeout=500)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = stream_outputs.counts(out)
    assert counts["records_in"] == len(readings) + 1
    assert counts["records_in"] == counts["records_scored"] + counts["records_quarantined"]
    quarantine = ds.dataset(out / "quarantine", format="parquet").to_table().to_pandas()
    assert quarantine.loc[quarantine["stage"] == "parse", "raw"].tolist() == ["not json at all"]
    stream_outputs.assert_matches_batch(out, path, small_model_dir, tmp_path / "batch")


@pytest.mark.slow
def test_a_new_model_version_is_picked_up_mid_stream(long_readings, small_model_dir, prism_location, tmp_path,
                                                     stream_outputs):
    """Replay for ~36 s watching a model root; once the first alert is written, a new version is published
    into the root (as a deployment would: a complete artifact directory appears); later alerts carry it."""
    from seqwatch.models.artifact import load_artifact, save_artifact

    path, readings = long_readings
    root = tmp_path / "models"
    shutil.copytree(small_model_dir, root / "2026-01")
    retrained = load_artifact(small_model_dir)
    retrained.threshold *= 0.98  # a recalibrated model: a new version that still alerts on the same incidents
    staged = save_artifact(retrained, tmp_path / "staging" / "2026-02")
    out = tmp_path / "stream"
    returncode, log, ran_on_s = stream_outputs.run_watching_alerts(
        _stream_command(root, out, prism_location, "--source", "replay", "--input", str(path), "--speed", "250",
                        "--watch-models", "1"), out, tmp_path / "stream.log",
        on_first_alert=lambda: shutil.copytree(staged, root / "2026-02"),
        undo_first_alert=lambda: shutil.rmtree(root / "2026-02"))
    assert returncode == 0, log[-3000:]
    assert ran_on_s is not None and ran_on_s > 5, (
        f"the replay ended before the swap ({ran_on_s} s after the first alert); files written at (s after the "
        f"first): {stream_outputs.timeline(out)}")

    old = load_artifact(root / "2026-01").model_version
    # The switch is said on the terminal, as the stream's other lines are (its warning was filtered out).
    assert f"seqwatch stream: scoring switched from model version {old} to {retrained.model_version} (" in log, log
    alerts = stream_outputs.alerts(out / "alerts").sort_values("start")
    assert alerts["model_version"].iloc[0] == old
    assert alerts["model_version"].iloc[-1] == retrained.model_version
    assert set(alerts["model_version"]) == {old, retrained.model_version}
    scores = ds.dataset(out / "scores", format="parquet").to_table(columns=["model_version"]).to_pandas()
    assert set(scores["model_version"]) == {old, retrained.model_version}
    counts = stream_outputs.counts(out)
    assert counts["records_in"] == len(readings) == counts["records_scored"] + counts.get("records_quarantined", 0)


@pytest.mark.slow
def test_a_stream_archives_its_readings_and_a_scheduled_job_fine_tunes_on_them(long_readings, small_model_dir,
                                                                                prism_location, tmp_path,
                                                                                stream_outputs):
    """The fine-tuning loop of a streaming deployment: ``--archive-readings`` writes every reading that passed
    validation as long-format Parquet under ``readings/``; ``seqwatch train --warm-start`` reads that archive as
    it is, leaves out the stream's alerted stretches, and publishes a new version into the model root (which a
    stream with ``--watch-models`` picks up: tested above)."""
    from seqwatch.models.artifact import load_artifact, model_versions

    path, readings = long_readings
    root = tmp_path / "models"
    shutil.copytree(small_model_dir, root / "v1")
    out = tmp_path / "stream"
    result = _run_replay(_stream_command(root, out, prism_location, "--source", "replay", "--input", str(path),
                                         "--speed", "1000", "--archive-readings", "1800"), out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "archiving readings per 1800s under readings/" in result.stderr
    files = sorted((out / "readings").rglob("*.parquet"))
    tables = {f: pd.read_parquet(f) for f in files}
    archive = pd.concat(tables.values(), ignore_index=True)
    counts = stream_outputs.counts(out)
    assert counts["readings_archived"] == len(archive) == len(readings) == counts["records_scored"]
    as_text = archive.assign(timestamp=archive["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    key = ["entity_id", "channel", "timestamp"]
    pd.testing.assert_frame_equal(as_text.sort_values(key).reset_index(drop=True)[readings.columns.tolist()],
                                  readings.sort_values(key).reset_index(drop=True), check_dtype=False)
    # 9,000 s of event time per entity in windows of 1,800 s: five or six files each (the first window may be cut).
    assert {f.parent.name for f in files} == {"pump-01", "pump-02"} and 10 <= len(files) <= 12
    # Each file holds its own window's readings only (a replayed batch that spanned two windows went whole into the
    # first one's file).
    for f, table in tables.items():
        start_us, us = int(f.stem), table["timestamp"].dt.as_unit("us").astype("int64")
        assert ((us >= start_us) & (us < start_us + 1800 * 10**6)).all(), f

    train = subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "train", "--warm-start", str(root),
                            "--input", str(out / "readings" / "*" / "*.parquet"), "--exclude-alerts", str(out),
                            "--model-dir", str(root / "v2"), "--epochs", "2"], capture_output=True, text=True)
    assert train.returncode == 0, train.stderr[-2000:]
    summary = json.loads(train.stdout)
    alerts = stream_outputs.alerts(out / "alerts")
    inside = np.zeros(len(archive), dtype=bool)  # archived readings inside an alert of their entity
    for a in alerts.itertuples():
        inside |= ((archive["entity_id"] == a.entity_id) & (archive["timestamp"] >= a.start)
                   & (archive["timestamp"] <= a.end)).to_numpy()
    assert counts["alerts"] == len(alerts) > 0 and summary["left_out_in_alerts"] == inside.sum() > 0
    assert [v.name for v in model_versions(root)] == ["v1", "v2"]
    assert load_artifact(root).metrics["fine_tunes"] == 1


@pytest.mark.slow
def test_an_idle_watermark_writes_the_last_alerts_while_a_live_feed_is_quiet(small_model_dir, prism_location,
                                                                             kafka_broker, tmp_path, stream_outputs):
    """``--idle-watermark``: a live feed (event times up to half an hour ago) goes quiet after its last reading.
    The watermark would wait for the next reading, so the last panes and alerts would wait for the job's end;
    with the option, once the caught-up reader has been idle 2 s its watermark follows the wall clock, and they
    are written while the job still runs (it stops after 30 s without a message)."""
    now = pd.Timestamp.now(tz="UTC").floor("s")
    readings, _ = generate_sensor_data(n_entities=2, n_steps=600, seed=7, anomalies_per_entity=2,
                                       kinds=("level_shift", "broken_channel"),
                                       start=now - pd.Timedelta(seconds=600 * 10) - pd.Timedelta(minutes=30))
    kafka_broker.create_topic("pumps-live", partitions=1)
    producer = kafka_broker.producer()
    for row in readings.itertuples(index=False):
        producer.produce("pumps-live", json.dumps({"entity_id": row.entity_id, "channel": row.channel,
                                                   "timestamp": row.timestamp.isoformat(),
                                                   "value": round(float(row.value), 4)}).encode())
    assert producer.flush(30) == 0
    out = tmp_path / "live"
    result = subprocess.run(_stream_command(small_model_dir, out, prism_location, "--source", "kafka",
                                            "--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic",
                                            "pumps-live", "--start", "earliest", "--idle-watermark", "2",
                                            "--stop-after-idle", "30"),
                            capture_output=True, text=True, timeout=400)
    ended = time.time()
    assert result.returncode == 0, result.stderr[-3000:]
    counts = stream_outputs.counts(out)
    assert counts["records_in"] == len(readings) == counts["records_scored"] + counts.get("records_quarantined", 0)
    alerts = list((out / "alerts").rglob("*.parquet"))
    assert counts["alerts"] == len(alerts) >= 2
    written = [p.stat().st_mtime for p in [*alerts, *(out / "scores").rglob("*.parquet")]]
    assert ended - max(written) > 15, "the last scores and alerts waited for the end of the job"


def _publish_json(broker, topic: str, frame) -> None:
    """``frame``'s readings (timestamps as text or as pandas timestamps) as JSON messages on ``topic``, each
    delivered."""
    producer = broker.producer()
    for row in frame.itertuples(index=False):
        stamp = row.timestamp if isinstance(row.timestamp, str) else row.timestamp.isoformat()
        producer.produce(topic, json.dumps({"entity_id": row.entity_id, "channel": row.channel, "timestamp": stamp,
                                            "value": round(float(row.value), 4)}).encode())
    assert producer.flush(30) == 0


def _kafka_stream_while(broker, topic: str, idle_s: int, model_dir, prism_location, tmp_path, stream_outputs,
                        meanwhile) -> tuple[int, str]:
    """``(exit code, log)`` of a stream of ``topic`` with ``--stop-after-idle idle_s``; once it has written
    scores, ``meanwhile(admin)`` runs (an ``AdminClient`` of ``broker``)."""
    from confluent_kafka.admin import AdminClient

    out, log_path = tmp_path / "out", tmp_path / "stream.log"
    with open(log_path, "w") as log:
        stream = subprocess.Popen(_stream_command(model_dir, out, prism_location, "--source", "kafka",
                                                  "--bootstrap-servers", broker.bootstrap_servers, "--topic", topic,
                                                  "--stop-after-idle", str(idle_s)),
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            stream_outputs.wait_for_scores(stream, out, log_path)
            meanwhile(AdminClient({"bootstrap.servers": broker.bootstrap_servers}))
            returncode = stream.wait(timeout=300)
        finally:
            if stream.poll() is None:
                stream.kill()
    return returncode, log_path.read_text()


def _delete_topic(admin, topic: str) -> None:
    for future in admin.delete_topics([topic], operation_timeout=30).values():
        future.result(timeout=60)


@pytest.mark.slow
def test_a_kafka_topic_deleted_and_created_again_under_a_stream_ends_it_in_one_sentence(
        small_model_dir, kafka_broker, prism_location, tmp_path, stream_outputs):
    """Bug hunt of delivery semantics: the Kafka client jumps to a recreated topic's first offset, below the
    reader's claimed position, and the claim failed the job (7 tracebacks, exit 1, no counts, what the job held
    lost). Now the reader says what happened in one sentence and ends; what it read before is written."""
    readings, _ = generate_sensor_data(n_entities=2, n_steps=200, seed=7)
    kafka_broker.create_topic("pumps-recreated", partitions=1)
    _publish_json(kafka_broker, "pumps-recreated", readings)

    def delete_and_create_again(admin):
        _delete_topic(admin, "pumps-recreated")
        deadline = time.monotonic() + 60
        while True:  # the deletion completes in the background
            try:
                kafka_broker.create_topic("pumps-recreated", partitions=1)
                break
            except Exception:  # noqa: BLE001 - TOPIC_ALREADY_EXISTS while it is being deleted
                assert time.monotonic() < deadline
                time.sleep(0.5)
        _publish_json(kafka_broker, "pumps-recreated", readings.iloc[:320])

    returncode, text = _kafka_stream_while(kafka_broker, "pumps-recreated", 60, small_model_dir, prism_location,
                                           tmp_path, stream_outputs, delete_and_create_again)
    assert returncode == 0 and "Traceback" not in text, text[-3000:]
    assert ("partition 0 of the Kafka topic pumps-recreated went back from offset 1600 to 0, as when the topic is "
            "deleted and created again: this stream stops reading the topic here") in text, text[-3000:]
    assert f"records in {len(readings)} = scored {len(readings)} + quarantined 0" in text, text[-3000:]


@pytest.mark.slow
def test_a_kafka_topic_deleted_under_a_stream_is_said_once_and_the_stream_ends_as_idle(
        small_model_dir, kafka_broker, prism_location, tmp_path, stream_outputs):
    """Bug hunt of delivery semantics: a consumer of assigned partitions gets no error when their topic is deleted,
    and the stream read on as if the topic were quiet. Now a topic quiet for 10 s is looked up on the broker, and
    its loss is said in one line; --stop-after-idle then ends the stream, with what it read written."""
    readings, _ = generate_sensor_data(n_entities=2, n_steps=200, seed=8)
    kafka_broker.create_topic("pumps-deleted", partitions=1)
    _publish_json(kafka_broker, "pumps-deleted", readings)
    returncode, text = _kafka_stream_while(kafka_broker, "pumps-deleted", 20, small_model_dir, prism_location,
                                           tmp_path, stream_outputs, lambda admin: _delete_topic(admin,
                                                                                                 "pumps-deleted"))
    assert returncode == 0 and "Traceback" not in text, text[-3000:]
    said = (f"the Kafka broker at {kafka_broker.bootstrap_servers} no longer has the topic pumps-deleted (deleted?): "
            f"this stream reads nothing more from it, and ends after --stop-after-idle (20 s) as for a quiet topic")
    assert text.count(said) == 1, text[-3000:]
    assert f"records in {len(readings)} = scored {len(readings)} + quarantined 0" in text, text[-3000:]


@pytest.mark.slow
def test_a_kafka_stream_restarted_into_its_output_resumes_and_keeps_the_first_streams_files(
        long_readings, small_model_dir, kafka_broker, prism_location, tmp_path, stream_outputs):
    """Bug hunt of broker sources: a stream restarted into its --output, without --group-id, read the whole topic
    again; with a group it resumed, but wrote the pane and flush window it resumed in over the first stream's files
    (its scores of those windows gone, and the counts no longer summed to the readings). Now the default consumer
    group is the stream into its output, and a restarted stream's files end in .s2 beside the first one's. With
    ``--online-calibration`` the first stream wrote each entity's calibration when it ended (on --stop-after-idle),
    and the restarted one judges its windows as the continuation of that state."""
    from seqwatch.models.artifact import read_metadata
    from seqwatch.pipelines.calibration import model_risk, start_calibration
    from seqwatch.pipelines.calibration_state import STATE_FOLDER, read_states

    path, readings = long_readings
    first, second = readings.iloc[:len(readings) * 3 // 5], readings.iloc[len(readings) * 3 // 5:]
    kafka_broker.create_topic("pumps-restart", partitions=1)

    out = tmp_path / "out"
    command = _stream_command(small_model_dir, out, prism_location, "--source", "kafka", "--bootstrap-servers",
                              kafka_broker.bootstrap_servers, "--topic", "pumps-restart", "--stop-after-idle", "8",
                              "--online-calibration")
    _publish_json(kafka_broker, "pumps-restart", first)
    result = subprocess.run(command, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"records in {len(first)} = " in result.stderr
    kept = read_states(str(out / STATE_FOLDER))
    assert sorted(kept) == sorted(readings["entity_id"].unique())
    written = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")
               and STATE_FOLDER not in p.parts}  # (the restart gathers the calibration files into one)
    assert any(p.parent.parent.name == "scores" for p in written)

    _publish_json(kafka_broker, "pumps-restart", second)
    result = subprocess.run(command, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"records in {len(second)} = " in result.stderr  # resumed: the first part is not read again
    assert "could not be committed" not in result.stderr  # the group's commits succeed (the warning is for failures)
    assert "end in .s2 and sit beside them" in result.stderr
    assert {p: p.read_bytes() for p in written} == written  # nothing of the first stream replaced
    assert any(p.name.endswith(".s2.parquet") for p in (out / "scores").rglob("*"))
    counts = stream_outputs.counts(out)
    assert counts["records_in"] == len(readings) == counts["records_scored"] + counts.get("records_quarantined", 0)
    scores = ds.dataset(out / "scores", format="parquet").to_table().to_pandas()
    assert not scores.duplicated(["entity_id", "window_end"]).any()
    assert f"each entity's calibration going on from {out / STATE_FOLDER}" in result.stderr
    metadata = read_metadata(str(small_model_dir))
    risk, _ = model_risk(metadata)
    files = [f for f in (out / "scores").rglob("*.s2.parquet")]
    restarted = ds.dataset(files, format="parquet").to_table().to_pandas().sort_values(["entity_id", "window_end"])
    for entity, part in restarted.groupby("entity_id"):
        online = kept[entity].online()
        ends = ((part["window_end"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)).to_numpy()
        seen = ends <= kept[entity].last_window_end_us
        score = part["score"].to_numpy()
        seen_tail, seen_threshold = online.judge_at_risk(score[seen], risk)
        _, threshold = online.process_at_risk(score[~seen], risk)
        np.testing.assert_allclose(part["threshold"], np.r_[seen_threshold, threshold], rtol=1e-9, err_msg=entity)
        afresh = start_calibration(metadata).process_at_risk(score[~seen], risk)[1]
        assert (~seen).sum() > 50 and not np.allclose(afresh, threshold), entity  # the state made a difference


@pytest.mark.slow
def test_a_kafka_stream_stopped_by_ctrl_c_writes_what_it_read_and_its_restart_reads_the_rest(
        long_readings, small_model_dir, kafka_broker, prism_location, tmp_path, stream_outputs):
    """A live stream (no --stop-after-idle) stopped by a Ctrl-C to its process group, as a terminal sends it: the
    readings it had read, whose offsets the group had committed, are all scored or quarantined and written, with
    each entity's calibration up to the last window it scored; the restart reads exactly what was published since.
    Before the graceful stop the same Ctrl-C stopped Prism under the job, and the panes it held were lost."""
    import signal

    from seqwatch.pipelines.calibration_state import STATE_FOLDER, read_states

    path, readings = long_readings
    first, second = readings.iloc[:len(readings) // 2], readings.iloc[len(readings) // 2:]
    kafka_broker.create_topic("pumps-stopped", partitions=1)

    out = tmp_path / "out"
    command = _stream_command(small_model_dir, out, prism_location, "--source", "kafka", "--bootstrap-servers",
                              kafka_broker.bootstrap_servers, "--topic", "pumps-stopped", "--online-calibration")
    _publish_json(kafka_broker, "pumps-stopped", first)
    # the rest of the first part is read meanwhile (settle_s); its last panes wait for later readings
    returncode, log = stream_outputs.stop_once_scored(command, out, tmp_path / "first.log", signal.SIGINT,
                                                      to_group=True, settle_s=3)
    assert returncode == 0, log[-3000:]
    records_in, scored, quarantined = stream_outputs.stopped_totals(log, "Ctrl-C")
    assert records_in == len(first) == scored + quarantined
    counts = stream_outputs.counts(out)
    assert counts["records_in"] == len(first) == counts["records_scored"] + counts.get("records_quarantined", 0)
    scores = ds.dataset(out / "scores", format="parquet").to_table().to_pandas()
    kept = read_states(str(out / STATE_FOLDER))
    for entity, part in scores.groupby("entity_id"):
        last = (part["window_end"].max() - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
        assert kept[entity].last_window_end_us == last, entity

    _publish_json(kafka_broker, "pumps-stopped", second)
    result = subprocess.run(command + ["--stop-after-idle", "8"], capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"records in {len(second)} = " in result.stderr  # nothing of the first part again, nothing lost
    counts = stream_outputs.counts(out)
    assert counts["records_in"] == len(readings) == counts["records_scored"] + counts.get("records_quarantined", 0)


@pytest.mark.slow
def test_a_kafka_stream_waits_out_a_broker_outage_instead_of_ending_as_idle(long_readings, small_model_dir,
                                                                          own_kafka_node, prism_location, tmp_path,
                                                                          stream_outputs):
    """Bug hunt of broker sources: with the broker down for longer than --stop-after-idle, the stream ended as if
    its topic were quiet (exit 0, "the source ended"), the readings published once the broker was back were never
    read, and librdkafka wrote a FAIL line per connection attempt (857 lines in 45 s). Now the outage is one line,
    the idle time does not count while the broker cannot be reached, and it starts again when the broker answers."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    path, readings = long_readings
    first, rest = readings.iloc[:200], readings.iloc[200:]
    broker = own_kafka_node.start()
    broker.create_topic("pumps-outage")

    def publish(part):
        producer = broker.producer()
        for row in part.itertuples(index=False):
            producer.produce("pumps-outage", json.dumps({"entity_id": row.entity_id, "channel": row.channel,
                                                         "timestamp": row.timestamp, "value": row.value}).encode())
        assert producer.flush(30) == 0

    def committed() -> int:
        consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "outage-test"})
        try:
            return consumer.committed([TopicPartition("pumps-outage", 0)], timeout=10)[0].offset
        except KafkaException:  # a fresh node's group coordinator not ready yet (NOT_COORDINATOR)
            return -1
        finally:
            consumer.close()

    publish(first)
    out, log_path = tmp_path / "out", tmp_path / "stream.log"
    command = _stream_command(small_model_dir, out, prism_location, "--source", "kafka", "--bootstrap-servers",
                              broker.bootstrap_servers, "--topic", "pumps-outage", "--group-id", "outage-test",
                              "--stop-after-idle", "15")
    with open(log_path, "w") as log:
        stream = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while committed() < len(first) and time.monotonic() < deadline:  # the reader runs, and read them
                assert stream.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.5)
            assert committed() == len(first), log_path.read_text()[-3000:]
            own_kafka_node.stop()
            time.sleep(25)  # longer than --stop-after-idle since the last message
            assert stream.poll() is None, log_path.read_text()[-3000:]
            broker = own_kafka_node.start()
            publish(rest)
            returncode = _ended_as_idle(stream, log_path, out, stream_outputs)
        finally:
            if stream.poll() is None:
                stream.kill()
    text = log_path.read_text()
    assert returncode == 0, text[-3000:]
    assert text.count("cannot reach the Kafka broker") == 1 and "|FAIL|" not in text, text[-3000:]
    assert f"records in {len(readings)} = " in text, text[-3000:]
    counts = stream_outputs.counts(out)
    assert counts["records_in"] == len(readings) == counts["records_scored"] + counts.get("records_quarantined", 0)


def _ended_as_idle(stream: subprocess.Popen, log_path, out, stream_outputs, timeout_s: float = 180) -> int:
    """The exit code of ``stream``, which read its last message and should end after its --stop-after-idle. Such a
    stream did not end twice, each time in some 12 runs of the outage test alone (2026-12-06, docs/limits.md):
    once having read every reading, once having read only those sent before the outage. A stream that does not end
    in ``timeout_s`` dumps its threads' stacks into its log (SIGUSR1), is stopped as a person would stop it (SIGTERM,
    a graceful stop), and the test fails with what it had written then, whether that stop ended it, and the
    stacks."""
    try:
        return stream.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stream.send_signal(signal.SIGUSR1)  # every thread's stack into its log: where it waits (cli)
        time.sleep(2)
        stream.terminate()
        try:
            stopped = f"it stopped on SIGTERM with exit code {stream.wait(timeout=90)}"
        except subprocess.TimeoutExpired:
            stopped = "it did not stop on SIGTERM either"
        counts = stream_outputs.counts(out) if (out / "counts").is_dir() else {}
        log = log_path.read_text()
        stacks = log.find("Thread 0x")
        pytest.fail(f"the stream did not end as idle within {timeout_s:g} s of its last message; {stopped}; its "
                    f"counts: {counts}; its threads' stacks then:\n{log[stacks:stacks + 20000] if stacks >= 0 else '-'}"
                    f"\nits log ends:\n{log[-3000:]}")


def _at_360_hz(readings: pd.DataFrame) -> pd.DataFrame:
    """``readings`` (10 s steps) restamped one step every 1/360 s, as MIT-BIH's ECG is sampled: most steps, and so
    most panes' bounds, fall between two milliseconds."""
    steps = ((readings["timestamp"] - readings["timestamp"].min()) // pd.Timedelta(seconds=10)).astype("int64")
    stamped = readings.copy()
    stamped["timestamp"] = (pd.Timestamp("2026-01-05", tz="UTC") + pd.to_timedelta(steps * 1_000_000 / 360, unit="us")
                            .dt.round("us")).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    stamped["value"] = stamped["value"].round(4)
    return stamped


@pytest.mark.slow
def test_a_360_hz_stream_scores_every_reading_and_matches_batch(prism_location, tmp_path, stream_outputs):
    """Found by the bug hunt of sub-millisecond steps: Beam hands a pane's window back in whole milliseconds, and
    the cutter dropped every pane whose window did not start on one: a 360 Hz stream on Prism scored 0 of 6000
    readings (and said so in an equation that did not hold, exit 0), and a batch run of files that share an
    entity's time (whose panes go through the GroupByKey) refused to commit counts that did not reconcile."""
    from seqwatch.models.artifact import save_artifact
    from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
    from seqwatch.models.detector import Seq2SeqDetector
    from seqwatch.pipelines.batch import run_batch
    from seqwatch.pipelines.config import RunConfig

    train, _ = generate_sensor_data(n_entities=2, n_steps=1500, seed=101)
    train = _at_360_hz(train)
    train["timestamp"] = pd.to_datetime(train["timestamp"], utc=True)
    config = DetectorConfig(ArchitectureConfig(units=16, forecast_horizon=4),
                            WindowConfig(length=16, stride=4, max_gap=2), TrainingConfig(epochs=6, batch_size=128,
                                                                                           patience=3))
    model_dir = save_artifact(Seq2SeqDetector(config, model_id="ecg-rate").fit(train, progress=False),
                              tmp_path / "model")
    assert json.loads((model_dir / "metadata.json").read_text())["step_us"] == 2778
    readings, _ = generate_sensor_data(n_entities=2, n_steps=900, seed=7, anomalies_per_entity=2,
                                       kinds=("level_shift", "broken_channel"))
    readings = _at_360_hz(readings.sort_values(["timestamp", "entity_id", "channel"]).reset_index(drop=True))
    path = tmp_path / "readings.csv"
    readings.to_csv(path, index=False)

    out = tmp_path / "stream"
    result = _run_replay(_stream_command(model_dir, out, prism_location, "--source", "replay", "--input", str(path),
                                         "--speed", "1"), out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"records in {len(readings)} = scored {len(readings)} + quarantined 0" in result.stderr, \
        result.stderr[-3000:]
    assert "Warning" not in result.stderr, result.stderr[-3000:]  # Beam's batch-size fit had warned 16 times
    stream_outputs.assert_matches_batch(out, path, model_dir, tmp_path / "batch")

    split = tmp_path / "split"  # one entity's channels in two files over the same time: panes grouped
    split.mkdir()
    one = readings[readings["entity_id"] == readings["entity_id"].iloc[0]]
    one[one["channel"].isin(["flow", "pressure"])].to_csv(split / "a.csv", index=False)
    one[~one["channel"].isin(["flow", "pressure"])].to_csv(split / "b.csv", index=False)
    manifest = run_batch(RunConfig(inputs=(str(split),), output=str(tmp_path / "split-out"), model_dir=str(model_dir)))
    assert manifest["records_in"] == len(one) == manifest["records_scored"]
