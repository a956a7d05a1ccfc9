"""The batch and the streaming pipeline on Apache Flink (an embedded local cluster in Beam's Flink job server,
``make flink-job-server``): the same outputs as the DirectRunner and Prism give; and ``DetectAnomalies`` in a
user's own batch pipeline there. The ``seqwatch stream`` test runs as the README tells users (Beam starts the job
server jar); the others use the session's job server (``flink_job_server`` in conftest)."""
import signal
import sys

import pytest

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.batch import SINKS, run_batch
from seqwatch.pipelines.config import RunConfig
from tests.streaming.conftest import parquet_tables

# When a job ends, the job server may hang up on the in-process (LOOPBACK) worker's data channel while its reader
# thread still waits: gRPC's CANCELLED "Multiplexer hanging up", after every result is in (seen in both tests).
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")]


def test_the_batch_pipeline_on_flink_writes_what_the_direct_runner_writes(readings_csv, small_model_dir,
                                                                          flink_args, tmp_path):
    path, rows = readings_csv
    manifests = {}
    for name, args in (("direct", ["--runner=DirectRunner"]), ("flink", flink_args())):
        config = RunConfig(inputs=(str(path),), output=str(tmp_path / name), model_dir=str(small_model_dir),
                           run_id="run-flink-test", pane_steps=256)
        manifests[name] = run_batch(config, args)
    flink = manifests["flink"]
    assert flink["records_in"] == rows == flink["records_scored"] + flink["records_quarantined"]
    assert flink["stages"]["quarantined.window.duplicate"] == 1
    assert flink["stages"]["alerts"] >= 2
    assert flink["stages"] == manifests["direct"]["stages"]
    for sink in SINKS:
        direct, on_flink = parquet_tables(tmp_path / "direct", sink), parquet_tables(tmp_path / "flink", sink)
        assert direct.keys() == on_flink.keys(), sink
        for name, table in direct.items():
            if sink == "quarantine":  # one file per source; the rows' order follows the runner's bundles
                table, other = (t.sort_by([("line", "ascending"), ("column", "ascending")]) for t in
                                (table, on_flink[name]))
            else:
                other = on_flink[name]
            assert table.equals(other), name


def test_the_streaming_pipeline_on_flink_alerts_while_running_and_matches_batch(readings_csv, small_model_dir,
                                                                                 flink_args, tmp_path,
                                                                                 stream_outputs):
    path, rows = readings_csv
    out = tmp_path / "stream"
    command = [sys.executable, "-m", "seqwatch.pipelines.cli", "stream", "--model-dir", str(small_model_dir),
               "--output", str(out), "--flush-window", "600", "--source", "replay", "--input", str(path),
               "--speed", "250", *flink_args(own_job_server=True)]  # as the README says: Beam starts the jar
    returncode, log, ran_on_s = stream_outputs.run_watching_alerts(command, out, tmp_path / "stream.log")
    assert returncode == 0, log[-3000:]
    assert ran_on_s is not None and ran_on_s > 5, (
        f"alerts only appeared at the end ({ran_on_s} s before it); files written at (s after the first): "
        f"{stream_outputs.timeline(out)}")

    counts = stream_outputs.counts(out)
    assert counts["records_in"] == rows == counts["records_scored"] + counts["records_quarantined"]
    stream_outputs.assert_matches_batch(out, path, small_model_dir, tmp_path / "batch")


def test_detect_anomalies_in_a_users_own_pipeline_on_flink(small_model_dir, flink_args):
    """``DetectAnomalies`` (``pipelines/embed.py``) in a pipeline of the user's own, in batch on Flink: every
    reading is scored or quarantined with its reason, the counts reconcile and each injected level shift is
    inside an alert of its pump."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    from seqwatch.pipelines.embed import DetectAnomalies
    from seqwatch.pipelines.stage_metrics import counter_totals

    readings, labels = generate_sensor_data(n_entities=2, n_steps=600, step_seconds=10, anomalies_per_entity=1,
                                            seed=11, kinds=("level_shift",))
    rows = [{"entity_id": r.entity_id, "channel": r.channel, "timestamp": r.timestamp.isoformat(), "value": r.value}
            for r in readings.itertuples()]
    bad = ["not json", {"entity_id": "pump-01", "channel": "flow", "timestamp": "2026-01-05T00:00:00Z",
                        "value": "a lot"}]
    spans = [(lab.entity_id, lab.start.value // 1000, lab.end.value // 1000) for lab in labels.itertuples()]

    def reconcile(pairs):
        total: dict = {}
        for name, n in pairs:
            total[name] = total.get(name, 0) + n
        assert total["records_in"] == len(rows) + len(bad), total
        assert total["records_scored"] == len(rows) and total["records_quarantined"] == len(bad), total

    def cover(alerts):
        for entity, start, end in spans:
            assert any(a.entity_id == entity and a.start <= end and a.end >= start for a in alerts), (entity, alerts)

    p = beam.Pipeline(options=PipelineOptions(flink_args()))
    found = p | beam.Create(rows + bad) | DetectAnomalies(str(small_model_dir))
    assert_that(found.counts, reconcile, label="CountsReconcile")
    assert_that(found.quarantine | beam.Map(lambda q: q.reason_code),
                equal_to(["malformed_row", "parse_value"]), label="Reasons")
    assert_that(found.alerts, cover, label="AlertsCoverTheShifts")
    result = p.run()
    result.wait_until_finish()
    # The counts as Beam counters, which Flink's own metrics carry to its reporters and web UI.
    counters = counter_totals(result)
    assert counters["records_in"] == len(rows) + len(bad) and counters["records_scored"] == len(rows), counters
    assert counters["quarantined.parse.malformed_row"] == counters["quarantined.parse.parse_value"] == 1, counters


def test_a_ctrl_c_stops_a_stream_on_flink_once_it_has_written_what_it_read(readings_csv, small_model_dir, flink_args,
                                                                          tmp_path, stream_outputs, processes):
    """The graceful stop on Flink, by a terminal's Ctrl-C to seqwatch's process group: the readers end, and
    everything they read is scored or quarantined and written before the stream exits 0. Beam started Flink's job
    server in seqwatch's process group, where the Ctrl-C stopped it under the job (exit 1, what the stream held
    lost); seqwatch now starts it in a session of its own, as it starts Prism, and stops it when the stream ends."""
    path, rows = readings_csv
    out, log_path = tmp_path / "stream", tmp_path / "stream.log"
    command = [sys.executable, "-m", "seqwatch.pipelines.cli", "stream", "--model-dir", str(small_model_dir),
               "--output", str(out), "--flush-window", "600", "--source", "replay", "--input", str(path),
               "--speed", "100", *flink_args(own_job_server=True)]  # 90 s of replay
    java = []

    def note_the_job_server(process):
        java.extend(pid for pid, name in processes.descendants(process.pid).items() if name == "java")

    try:
        returncode, log = stream_outputs.stop_once_scored(command, out, log_path, how=signal.SIGINT, to_group=True,
                                                          before_signal=note_the_job_server)
        left = [pid for pid in java if processes.alive(pid)]
    finally:
        processes.kill(java)
    assert returncode == 0, log[-3000:]
    records_in, scored, quarantined = stream_outputs.stopped_totals(log, "Ctrl-C")
    assert records_in == scored + quarantined and 0 < scored and records_in < rows, log[-3000:]
    assert java and left == [], f"Flink's job server {left} outlived the stream"
