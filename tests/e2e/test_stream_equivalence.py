"""The streaming pipeline (TestStream in streaming mode: real event time, watermarks and late data) gives the
same alerts as the batch pipeline on the same data, and loses no reading. The tests of readings behind the
watermark (the sinks' late path) and of the reading archive run on the DirectRunner and on Prism (Beam's portable
local runner); the Prism runs skip, naming the make target, where Prism is not built. (Alerts and the gate on
Prism: tests/streaming, with a replay and with Kafka.)"""
import dataclasses
import json
from pathlib import Path

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.batch import plan_run, run_batch
from seqwatch.pipelines.config import RunConfig
from seqwatch.pipelines.graph import SourceOutputs
from seqwatch.pipelines.sources import FileReader
from seqwatch.pipelines.streaming import build_streaming_pipeline
from seqwatch.schemas.elements import ReadingBatch
from seqwatch.schemas.mapping import InputMapping

WIDE = InputMapping(format="wide", timestamp="timestamp", entity={"from_filename": True})
LATENESS_S = 0.0  # panes are scored as soon as the watermark passes their context
LATE_AFTER_S = 3600.0  # readings an hour behind the latest are quarantined by the late gate


@pytest.fixture(scope="module")
def same_data(tmp_path_factory, small_model_dir, wide_csv):
    folder = tmp_path_factory.mktemp("stream-in")
    readings, _ = generate_sensor_data(n_entities=2, n_steps=900, seed=7, anomalies_per_entity=2,
                                       kinds=("level_shift", "broken_channel"))
    for entity, part in readings.groupby("entity_id"):
        wide_csv(part, folder / f"{entity}.csv")
    config = RunConfig(inputs=(str(folder / "*.csv"),), output=str(tmp_path_factory.mktemp("batch-out")),
                       model_dir=str(small_model_dir), mapping=WIDE, pane_steps=256)
    return config


def _parsed(config) -> tuple:
    """``(plan, frame)``: the run's plan and every reading of its input, parsed, in event-time order."""
    plan = plan_run(config)
    frames = [batch.frame for path in plan.paths for batch, _, _ in FileReader(WIDE, plan.run_id).read(path)]
    return plan, pd.concat(frames, ignore_index=True).sort_values(["timestamp", "entity_id", "channel"])


@pytest.fixture(params=["DirectRunner", "PrismRunner"])
def runner(request) -> PipelineOptions:
    """Streaming pipeline options for each runner the TestStream tests run on."""
    if request.param == "PrismRunner":
        return request.getfixturevalue("prism_options")()
    return PipelineOptions(["--streaming", "--runner=DirectRunner"])


def _run_stream(plan, stream: TestStream, out: Path, flush_window_s: float,
                options: PipelineOptions | None = None, archive_window_s: float | None = None) -> dict:
    """The streaming pipeline fed by ``stream`` (on the DirectRunner unless ``options`` say otherwise); returns
    the ``counts/*.json`` files summed."""
    options = options or PipelineOptions(["--streaming", "--runner=DirectRunner"])
    with beam.Pipeline(options=options) as p:
        readings = p | "Replay" >> stream
        source = SourceOutputs(readings, p | "NoParseErrors" >> beam.Create([]),
                               readings | "CountIn" >> beam.Map(lambda b: ("records_in", len(b))))
        build_streaming_pipeline(source, plan, str(out), flush_window_s=flush_window_s,
                                 allowed_lateness_s=LATENESS_S, late_after_s=LATE_AFTER_S,
                                 archive_window_s=archive_window_s)
    counts: dict = {}
    for f in (out / "counts").glob("*.json"):
        for k, v in json.loads(f.read_text()).items():
            counts[k] = counts.get(k, 0) + v
    return counts


def _stream(config, out, extra_late=(), options: PipelineOptions | None = None, flush_window_s: float = 3600.0,
            **plan_changes):
    """Replay the parsed input in 10 event-time chunks of 90 steps, advancing the watermark after each (each
    256-step pane gets its readings from three or four chunks and is scored while later chunks are still to come;
    30 chunks took 14.6 s against 8.1 s, most of it the DirectRunner's cost per bundle). ``plan_changes``: fields
    of the run's plan to set."""
    plan, frame = _parsed(config)
    plan = dataclasses.replace(plan, **plan_changes)
    edges = np.linspace(frame["timestamp"].min(), frame["timestamp"].max() + 1000, 11).astype(np.int64)
    edges = edges // 1000 * 1000  # TestStream keeps event times in milliseconds
    edges[-1] = (frame["timestamp"].max() // 1000 + 1) * 1000
    stream = TestStream()
    for lo, hi in zip(edges[:-1], edges[1:]):
        part = frame[(frame["timestamp"] >= lo) & (frame["timestamp"] < hi)].reset_index(drop=True)
        stream.add_elements([TimestampedValue(ReadingBatch(part), Timestamp(micros=int(lo)))])
        stream.advance_watermark_to(Timestamp(micros=int(hi)))
    for batch in extra_late:
        stream.add_elements([TimestampedValue(batch, Timestamp(micros=int(edges[-1])))])
    stream.advance_watermark_to_infinity()
    return plan, frame, _run_stream(plan, stream, out, flush_window_s=flush_window_s, options=options)


@pytest.mark.slow
def test_streaming_and_batch_give_the_same_alerts(same_data, tmp_path):
    batch_manifest = run_batch(dataclasses.replace(same_data, output=str(tmp_path / "batch")))
    batch_alerts = ds.dataset(tmp_path / "batch" / "alerts", format="parquet").to_table().to_pandas()
    plan, frame, counts = _stream(same_data, tmp_path / "stream")
    stream_alerts = ds.dataset(tmp_path / "stream" / "alerts", format="parquet").to_table().to_pandas()

    assert len(batch_alerts) >= 2
    b = batch_alerts.sort_values("alert_id").reset_index(drop=True)
    s = stream_alerts.sort_values("alert_id").reset_index(drop=True)
    assert b["alert_id"].tolist() == s["alert_id"].tolist()
    assert (b["start"] == s["start"]).all() and (b["end"] == s["end"]).all()
    np.testing.assert_allclose(s["peak_score"], b["peak_score"], rtol=1e-6)
    assert (b["windows"] == s["windows"]).all() and (b["severity"] == s["severity"]).all()

    # Streaming also gave one notice per incident when it opened: the alert's id and start, its first window.
    opened = (ds.dataset(tmp_path / "stream" / "alerts_open", format="parquet").to_table().to_pandas()
              .sort_values("alert_id").reset_index(drop=True))
    assert opened["alert_id"].tolist() == s["alert_id"].tolist()
    assert (opened["start"] == s["start"]).all() and (opened["end"] <= s["end"]).all()
    assert (opened["windows"] == 1).all() and (opened["peak_score"] <= s["peak_score"] * (1 + 1e-9)).all()
    assert counts["alerts_opened"] == counts["alerts"] == len(s)
    assert not (tmp_path / "batch" / "alerts_open").exists()  # batch: alerts only

    assert counts["records_in"] == len(frame) == batch_manifest["records_in"]
    assert counts["records_in"] == counts["records_scored"] + counts.get("records_quarantined", 0)
    assert counts["records_scored"] == batch_manifest["records_scored"]

    # Both layouts (a batch run's part files and empty placeholders, a stream's files per entity and pane) read
    # in DuckDB as the README tells its users to read them: the rows pyarrow reads. (A stream makes a sink's folder
    # with its first file: this one quarantined nothing.)
    assert not (tmp_path / "stream" / "quarantine").exists()
    for out in ("batch", "stream"):
        for sink in ("scores", "forecasts", "alerts") + (("quarantine",) if out == "batch" else ("alerts_open",)):
            folder = tmp_path / out / sink
            by_duckdb = _read_with_duckdb(folder).to_pandas()
            by_pyarrow = ds.dataset(folder, format="parquet").to_table().to_pandas()
            assert len(by_duckdb) == len(by_pyarrow) and list(by_duckdb.columns) == list(by_pyarrow.columns), sink
            if sink == "alerts":
                assert (by_duckdb.sort_values("alert_id")["start"].tolist()
                        == by_pyarrow.sort_values("alert_id")["start"].tolist()), out
            if sink == "scores":
                assert len(by_duckdb) > 0 and np.isclose(by_duckdb["score"].sum(), by_pyarrow["score"].sum()), out

    # `seqwatch evaluate` reads both layouts alike: against the injected anomalies, the stream's folder gives the
    # batch run's numbers.
    from seqwatch.pipelines.evaluate import evaluate_run

    _, injected = generate_sensor_data(n_entities=2, n_steps=900, seed=7, anomalies_per_entity=2,
                                       kinds=("level_shift", "broken_channel"))  # same_data's
    injected[["entity_id", "start", "end"]].to_csv(tmp_path / "labels.csv", index=False)
    batch_eval, stream_eval = (evaluate_run(str(tmp_path / out), str(tmp_path / "labels.csv"))
                               for out in ("batch", "stream"))
    assert batch_eval["incidents"] == len(injected) and batch_eval["found"] >= 2
    for key in ("incidents", "found", "alerts", "true_alerts", "windows", "anomalous_windows", "missed",
                "false_alerts", "entities", "incidents_left_out"):
        assert stream_eval[key] == batch_eval[key], key
    assert stream_eval["roc_auc"] == pytest.approx(batch_eval["roc_auc"], rel=1e-6)


def _read_with_duckdb(folder: Path):
    """A sink's folder as the README's DuckDB query reads it (every Parquet file under it, at any depth)."""
    import duckdb

    return duckdb.sql(f"SELECT * FROM read_parquet('{folder}/**/*.parquet')").to_arrow_table()


@pytest.mark.slow
def test_with_online_calibration_streaming_and_batch_judge_every_window_alike(same_data, tmp_path):
    """Per-entity online calibration depends on the order windows are judged in: streaming (panes as the
    watermark passes them) and batch (all at the end, sorted) must give every window the same tail probability,
    threshold and flag. (The alerts are compared on Prism and Flink, tests/streaming: the DirectRunner's user
    timers do not hold the watermark, so in streaming a calibrated pane can reach the incident merge after the
    merge's watermark moved on, and ``seqwatch stream`` refuses online calibration there.)"""
    config = dataclasses.replace(same_data, online_calibration=True, output=str(tmp_path / "batch"))
    batch_manifest = run_batch(config)
    _, _, counts = _stream(config, tmp_path / "stream")

    def read(out):
        table = ds.dataset(out / "scores", format="parquet").to_table().to_pandas()
        return table.sort_values(["entity_id", "window_end"]).reset_index(drop=True)

    b, s = read(tmp_path / "batch"), read(tmp_path / "stream")
    assert len(b) == len(s) > 0 and (b["window_end"] == s["window_end"]).all()
    for column in ("score", "threshold", "tail_probability"):
        np.testing.assert_allclose(s[column], b[column], rtol=1e-6, err_msg=column)
    assert (b["is_anomaly"] == s["is_anomaly"]).all() and b["threshold"].nunique() > 2
    assert counts["records_scored"] == batch_manifest["records_scored"]
    assert counts["windows_anomalous"] == batch_manifest["stages"]["windows_anomalous"] == b["is_anomaly"].sum()


@pytest.mark.slow
def test_late_readings_are_quarantined_not_dropped(same_data, tmp_path):
    first = pd.Timestamp("2026-01-05T00:00:00Z").value // 1000
    # 8,985 s behind the latest event time (step 899), more than LATE_AFTER_S: the gate quarantines them, one a
    # message's reading, one a file's (a stream replaying a file; its line 2, sent again).
    path = sorted(Path(same_data.inputs[0]).parent.glob("*.csv"))[0]
    way_too_late = ReadingBatch.from_columns(["pump-01", "pump-01"], ["flow", "flow"], [first + 5_000_000] * 2,
                                             [100.0, 100.0], ["kafka:sensors/0", str(path)], [999_001, 2])
    _, frame, counts = _stream(same_data, tmp_path / "late", extra_late=[way_too_late])
    quarantine = ds.dataset(tmp_path / "late" / "quarantine", format="parquet").to_table().to_pandas()
    late = quarantine[quarantine["reason_code"] == "late"].set_index("line")
    assert (late.loc[[999_001, 2], "stage"] == "gate").all() and (late.loc[[999_001, 2], "column"] == "flow").all()
    assert "behind the latest reading" in late.loc[999_001, "reason"]
    assert json.loads(late.loc[999_001, "raw"]) == {"entity_id": "pump-01", "channel": "flow",
                                                   "timestamp": first + 5_000_000, "value": 100.0}
    # Bug hunt of streams: a file's line had been written as the reading's fields in JSON, which a replay of the
    # stream's quarantine pasted over the CSV line (and quarantined again as a timestamp it could not read)
    assert late.loc[2, "raw"] == path.read_text().splitlines()[1]
    assert counts["records_in"] == len(frame) + 2
    assert counts["records_in"] == counts["records_scored"] + counts["records_quarantined"]
    assert counts["quarantined.gate.late"] == 2



def _read_stream(plan, frame: pd.DataFrame, held: pd.Series, deliveries, out: Path, options: PipelineOptions,
                 flush_window_s: float = 600.0, archive_window_s: float | None = None):
    """Replay ``frame`` without the ``held`` readings in 15-minute chunks (10 chunks: the DirectRunner's cost is
    per bundle; 5-minute chunks took twice as long), the watermark at each chunk's end; then
    ``deliveries``: ``(watermark first, stamp, mask of held readings)``, each a batch of held readings stamped
    ``stamp`` after the watermark was moved to ``watermark first`` (event times in microseconds). Returns the
    summed counts and the quarantine read back from Parquet."""
    on_time = frame[~held]
    end = int(frame["timestamp"].max())
    stream = TestStream()
    chunk_us = 900_000_000
    for lo in range(int(frame["timestamp"].min()), end + 1, chunk_us):
        part = on_time[(on_time["timestamp"] >= lo) & (on_time["timestamp"] < lo + chunk_us)]
        if len(part):
            stream.add_elements([TimestampedValue(ReadingBatch(part.reset_index(drop=True)),
                                                  Timestamp(micros=lo // 1000 * 1000))])
        stream.advance_watermark_to(Timestamp(micros=(lo + chunk_us) // 1000 * 1000))
    for watermark_us, stamp_us, mask in deliveries:
        stream.advance_watermark_to(Timestamp(micros=watermark_us // 1000 * 1000))
        stream.add_elements([TimestampedValue(ReadingBatch(frame[mask].reset_index(drop=True)),
                                              Timestamp(micros=stamp_us // 1000 * 1000))])
    stream.advance_watermark_to_infinity()
    counts = _run_stream(plan, stream, out, flush_window_s, options, archive_window_s)
    quarantine = ds.dataset(out / "quarantine", format="parquet").to_table().to_pandas()
    return counts, quarantine


def _held_back(frame: pd.DataFrame) -> dict:
    """Two readings to hold back in transit: one 3,400 s behind the latest reading ("pane": within late_after,
    but its pane will have been scored) and one 8,000 s behind ("gate": beyond late_after)."""
    first, end = int(frame["timestamp"].min()), int(frame["timestamp"].max())
    flow = frame["channel"] == "flow"
    held = {"pane": (frame["entity_id"] == "pump-01") & flow & (frame["timestamp"] == end - 3_400_000_000),
            "gate": (frame["entity_id"] == "pump-02") & flow & (frame["timestamp"] == first + 1_000_000_000)}
    assert all(mask.sum() == 1 for mask in held.values())
    return held


def _deliveries(frame: pd.DataFrame, held: dict) -> list:
    """Each held reading in a batch of its own, stamped with its event time, a minute apart after the end."""
    end = int(frame["timestamp"].max())
    return [(end + 60_000_000 * k, int(frame[mask]["timestamp"].iloc[0]), mask)
            for k, mask in enumerate(held.values(), 1)]


@pytest.mark.slow
def test_readings_behind_the_watermark_are_quarantined_written_and_counted(same_data, runner, tmp_path):
    """Two readings held back in transit and delivered at the end, each in a batch stamped with its own event
    time, long after the watermark passed it and its 10-minute flush window closed: one 3,400 s behind the latest
    reading (within late_after: its pane has been scored, so the windowing stage quarantines it), one 8,000 s
    behind (the gate does). Both records must reach the Parquet files and both readings the counts."""
    plan, frame = _parsed(same_data)
    held = _held_back(frame)
    where = {name: (str(frame[mask]["source"].iloc[0]), int(frame[mask]["line"].iloc[0]))
             for name, mask in held.items()}
    counts, quarantine = _read_stream(plan, frame, held["pane"] | held["gate"], _deliveries(frame, held),
                                      tmp_path / "behind", runner)
    found = {(str(q.source), int(q.line)): (q.stage, q.reason_code) for q in quarantine.itertuples()}
    assert found[where["pane"]] == ("window", "late")
    assert found[where["gate"]] == ("gate", "late")
    assert counts["records_in"] == len(frame)
    assert counts["records_in"] == counts["records_scored"] + counts["records_quarantined"]
    assert counts["quarantined.gate.late"] == 1 and counts["quarantined.window.late"] == 1
    assert counts["records_quarantined"] == quarantine["records"].sum()
    # Their records_in counts (at least) went into counts files of later flush windows than their own. (Their
    # quarantine rows are the first of their sources: they go into files of their own windows, which were never
    # written before.)
    assert counts["flushed_late.counts"] >= 2 and "flushed_late.quarantine" not in counts
    # Every file written was counted, the last ones (written as the stream ended) too.
    assert counts["files_written"] == len(list((tmp_path / "behind").rglob("*.parquet")))


@pytest.mark.slow
def test_a_backlog_the_watermark_passed_while_the_source_was_idle_is_quarantined_not_dropped(same_data, runner,
                                                                                             tmp_path):
    """After an outage: the stream's last 20 minutes of readings are held back while the watermark follows the
    wall clock three hours ahead (a broker reader's ``idle_watermark``); then they arrive, stamped with that
    watermark, as the reader stamps a batch its watermark has passed. They are newer than any reading the gate
    has seen, but their panes' windows are gone (Beam would drop them at the pane grouping): the gate compares
    them with the watermark their batch carries and quarantines every one as late."""
    plan, frame = _parsed(same_data)
    end = int(frame["timestamp"].max())
    backlog = frame["timestamp"] > end - 1_200_000_000
    idle_until = end + 3 * int(LATE_AFTER_S * 1e6)
    counts, quarantine = _read_stream(plan, frame, backlog, [(idle_until, idle_until, backlog)], tmp_path / "idle",
                                      runner)
    late = quarantine[quarantine["reason_code"] == "late"]
    assert (late["stage"] == "gate").all() and late["records"].sum() == backlog.sum()
    assert set(zip(late["source"], late["line"])) == set(zip(frame[backlog]["source"], frame[backlog]["line"]))
    assert "or its reader's watermark" in late["reason"].iloc[0]
    assert counts["records_in"] == len(frame)
    assert counts["records_in"] == counts["records_scored"] + counts["records_quarantined"]
    assert counts["quarantined.gate.late"] == backlog.sum()


@pytest.mark.slow
def test_scores_gathered_per_flush_window_are_the_rows_of_the_pane_files(same_data, runner, tmp_path):
    """``--score-window-files 2``: a stream's scores and forecasts go into two files per flush window, an entity's
    rows all in the file its id hashes to, in order; together they are the rows the per-pane files hold."""
    from seqwatch.pipelines.sinks import shard_of

    _, frame, pane_counts = _stream(same_data, tmp_path / "panes", options=runner, flush_window_s=7200.0)
    _, _, counts = _stream(same_data, tmp_path / "windows", options=runner, flush_window_s=7200.0,
                           score_window_files=2)
    for sink in ("scores", "forecasts"):
        pane_files = sorted((tmp_path / "panes" / sink).rglob("*.parquet"))
        window_files = sorted((tmp_path / "windows" / sink).rglob("*.parquet"))
        if sink == "scores":
            assert 0 < len(window_files) < len(pane_files)  # windows of 2 hours hold several panes of 256 steps
        if not pane_files:
            assert not window_files
            continue
        tables = []
        for f in window_files:
            start, name = f.relative_to(tmp_path / "windows" / sink).parts
            assert int(start) % 7_200_000_000 == 0 and name in ("part-0-of-2.parquet", "part-1-of-2.parquet"), f
            table = pq.read_table(f).to_pandas()
            assert {shard_of(e, 2) for e in table["entity_id"]} == {int(name[5])}, f
            key = table["window_end"] if sink == "scores" else table["issued_at"]
            order = pd.DataFrame({"e": table["entity_id"], "k": key})
            assert order.equals(order.sort_values(["e", "k"], kind="stable")), f  # entities, then time, in order
            tables.append(table)
        by = ["entity_id", "window_end"] if sink == "scores" else ["entity_id", "issued_at", "target_time", "channel"]
        gathered = pd.concat(tables, ignore_index=True).sort_values(by).reset_index(drop=True)
        panes = (pd.concat([pq.read_table(f).to_pandas() for f in pane_files], ignore_index=True)
                 .sort_values(by).reset_index(drop=True))
        pd.testing.assert_frame_equal(gathered, panes)
    assert counts["files_written"] == len(list((tmp_path / "windows").rglob("*.parquet")))
    assert counts["records_in"] == len(frame) == pane_counts["records_in"]
    assert counts["records_scored"] == pane_counts["records_scored"]
    assert counts["records_in"] == counts["records_scored"] + counts.get("records_quarantined", 0)


def _rows(frame: pd.DataFrame) -> list:
    """Readings as sorted ``(entity, channel, timestamp µs, value)`` tuples, duplicates kept."""
    timestamps = frame["timestamp"]
    if not pd.api.types.is_integer_dtype(timestamps):
        timestamps = timestamps.astype("datetime64[us, UTC]").astype(np.int64)
    return sorted(zip(frame["entity_id"].astype(str), frame["channel"].astype(str), timestamps, frame["value"]))


@pytest.mark.slow
def test_the_reading_archive_holds_every_reading_that_passed_the_gate_once(same_data, runner, tmp_path):
    """``--archive-readings``: the readings that pass the late gate and validation are written per entity and
    archive window in the long input format. With the two held-back readings of the test above: the one the gate
    quarantines is not archived; the one that arrives after its archive window was written goes into a later file
    of its entity. Every other reading is archived exactly once, and the archive's count matches its rows."""
    from seqwatch.schemas.arrow import READING_SCHEMA

    plan, frame = _parsed(same_data)
    held = _held_back(frame)
    out = tmp_path / "archive"
    counts, _ = _read_stream(plan, frame, held["pane"] | held["gate"], _deliveries(frame, held), out, runner,
                             archive_window_s=1800.0)
    files = sorted((out / "readings").rglob("*.parquet"))
    assert {f.parent.name for f in files} == {"pump-01", "pump-02"}
    assert all(pq.read_schema(f).equals(READING_SCHEMA, check_metadata=True) for f in files)
    tables = {f: pq.read_table(f).to_pandas() for f in files}
    archive = pd.concat(tables.values(), ignore_index=True)
    assert counts["readings_archived"] == len(archive)
    assert not any(key.startswith("quarantined.validate") for key in counts)  # all valid; the gate took one
    assert _rows(archive) == _rows(frame[~held["gate"]])  # sorted lists with duplicates: each reading once
    late_us = int(frame[held["pane"]]["timestamp"].iloc[0])
    holding = [f for f, table in tables.items() if ("pump-01", "flow", late_us) in {row[:3] for row in _rows(table)}]
    assert len(holding) == 1 and int(holding[0].stem) > late_us  # in a later window's file than its own
    assert counts["flushed_late.reading_batches"] >= 1
    assert counts["records_in"] == counts["records_scored"] + counts["records_quarantined"] == len(frame)
    assert counts["files_written"] == len(list(out.rglob("*.parquet")))
