"""A batch run's scores and forecasts are written in a few files, not one per entity pane: a fleet's run of
2,000 entities had written 4,000 files of a few rows each (and a long history a file per 4,096 steps of every
entity). An entity's rows sit in one file, entities in order, each entity's windows by their end; a stream still
writes a file per entity and pane as each pane is scored."""
import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.batch import SCORE_ROWS_PER_FILE, score_files_for
from seqwatch.pipelines.cli import main
from seqwatch.pipelines.embed import DetectAnomalies, WriteDetections
from seqwatch.pipelines.sinks import SHARD_ROW_GROUP_ROWS, WriteOutputs, shard_of, window_file, write_parquet
from seqwatch.schemas.arrow import SCORE_SCHEMA
from seqwatch.schemas.elements import ScoredWindows, WindowBatch

STEP_SECONDS = 10  # the session model's sampling interval (tests/conftest.py)


def test_the_files_follow_the_windows_the_input_makes():
    # 2M readings of 8 channels, a window every 16 steps: 15,625 windows, one file
    assert score_files_for(2_000_000, channels=8, stride=16) == 1
    # 16M readings of one channel, a window every 8 steps: 2M windows, two files of a million
    assert score_files_for(16_000_000, channels=1, stride=8) == 2
    assert score_files_for(16_000_008, channels=1, stride=8) == 3  # 2,000,001 windows
    assert score_files_for(SCORE_ROWS_PER_FILE, channels=1, stride=1) == 1
    assert score_files_for(0, channels=4, stride=16) == 1  # nothing estimated (an empty file): still one
    assert score_files_for(10**15, channels=1, stride=1) == 4096  # at most


def test_an_entity_has_one_file_the_same_everywhere():
    entities = [f"pump-{i:04d}" for i in range(2000)]
    shards = [shard_of(e, 7) for e in entities]
    assert set(shards) == set(range(7))  # spread over all of them
    assert max(np.bincount(shards)) < 2000 / 7 * 1.3  # about evenly
    assert shards == [shard_of(e, 7) for e in entities]  # the same each time (no per-process hash seed)
    assert shard_of("pump-0001", 7) == int.from_bytes(
        __import__("hashlib").sha256(b"pump-0001").digest()[:8], "big") % 7
    assert {shard_of(e, 1) for e in entities} == {0}


def test_a_shard_file_is_cut_into_row_groups_a_reader_can_skip(tmp_path):
    rows = SHARD_ROW_GROUP_ROWS + 10
    table = pa.table({"entity_id": [f"e{i // 1000:03d}" for i in range(rows)], "score": np.arange(rows, dtype=float)})
    write_parquet(str(tmp_path / "scores" / "part-00000-of-00001.parquet"), table, SHARD_ROW_GROUP_ROWS)
    meta = pq.ParquetFile(tmp_path / "scores" / "part-00000-of-00001.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [SHARD_ROW_GROUP_ROWS, 10]
    last = meta.row_group(1).column(0).statistics
    assert (last.min, last.max) == ("e065", "e065")  # statistics on entity_id: a filter skips the other group


def _rows(n_entities: int, seed: int = 5):
    readings, _ = generate_sensor_data(n_entities=n_entities, n_steps=300, step_seconds=STEP_SECONDS,
                                       anomalies_per_entity=1, seed=seed, kinds=("spike",))
    return [{"entity_id": r.entity_id, "channel": r.channel, "timestamp": r.timestamp, "value": r.value}
            for r in readings.itertuples()]


def _run(rows, model_dir, out, score_files):
    with beam.Pipeline() as p:
        detect = DetectAnomalies(str(model_dir), run_id="shards-test")
        p | beam.Create(rows) | detect | WriteDetections(str(out), run_id=detect.run_id, score_files=score_files)
    return json.loads((out / "counts.json").read_text())


def _check_shards(folder, files):
    """Each file's entities are the ones its number says, in order, each entity's rows by window end / issue."""
    seen = {}
    for path in sorted(folder.glob("*.parquet")):
        assert path.name.startswith("part-") and path.name.endswith(f"-of-{files:05d}.parquet"), path.name
        shard = int(path.name[len("part-"):].split("-")[0])
        frame = pq.read_table(path).to_pandas()
        entities = list(dict.fromkeys(frame["entity_id"]))
        assert entities == sorted(entities), path.name
        assert all(shard_of(e, files) == shard for e in entities)
        assert not set(entities) & set(seen), "an entity in two files"
        seen.update(dict.fromkeys(entities, path.name))
    assert [p for p in folder.iterdir() if p.is_dir()] == []  # no folder per entity
    return seen


def test_a_batch_pipeline_writes_each_sink_in_the_files_asked_for(small_model_dir, tmp_path):
    rows = _rows(6)
    one = _run(rows, small_model_dir, tmp_path / "one", 1)
    three = _run(rows, small_model_dir, tmp_path / "three", 3)
    assert sorted(p.name for p in (tmp_path / "one" / "scores").iterdir()) == ["part-00000-of-00001.parquet"]
    entities = _check_shards(tmp_path / "three" / "scores", 3)
    assert len(entities) == 6 and len(set(entities.values())) > 1
    assert _check_shards(tmp_path / "three" / "forecasts", 3).keys() <= entities.keys()

    for sink, order in (("scores", ["entity_id", "window_end"]), ("forecasts", ["entity_id", "issued_at"])):
        a = pq.read_table(tmp_path / "one" / sink).to_pandas()
        b = pq.read_table(tmp_path / "three" / sink).to_pandas()
        assert len(a) > 0
        key = order[1]
        assert (a.groupby("entity_id")[key].apply(lambda s: s.is_monotonic_increasing)).all()
        b = b.sort_values(order, kind="stable").reset_index(drop=True)
        assert a.sort_values(order, kind="stable").reset_index(drop=True).equals(b)  # the same rows
    assert one["windows_scored"] == three["windows_scored"] == pq.read_table(tmp_path / "three" / "scores").num_rows
    assert three["files_written"] == sum(1 for _ in (tmp_path / "three").rglob("*.parquet"))
    assert pq.read_schema(tmp_path / "three" / "scores" / next(iter(set(entities.values())))).equals(
        SCORE_SCHEMA, check_metadata=False)


def test_write_detections_refuses_a_number_of_files_that_is_not_one(small_model_dir):
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="score_files must be a whole number of files"):
            WriteDetections("out", run_id="r", score_files=bad)


def test_write_detections_refuses_window_files_it_cannot_write():
    for bad in (-1, 4097, 2.5, True, "3"):
        with pytest.raises(ValueError, match="score_window_files must be a whole number of files from 0 to 4096"):
            WriteDetections("out", run_id="r", score_window_files=bad)


def test_seqwatch_run_writes_a_fleets_scores_in_one_file(small_model_dir, tmp_path):
    """The CLI, end to end: a fleet's long file of 40 entities gives one scores file, read back with pyarrow."""
    readings, _ = generate_sensor_data(n_entities=40, n_steps=120, step_seconds=STEP_SECONDS, seed=9)
    path = tmp_path / "fleet.csv"
    readings.sort_values(["timestamp", "entity_id", "channel"]).to_csv(path, index=False)
    out = tmp_path / "out"
    assert main(["run", "--input", str(path), "--model-dir", str(small_model_dir), "--output", str(out)]) == 0
    assert sorted(str(p.relative_to(out)) for p in (out / "scores").rglob("*")) == ["scores/part-00000-of-00001.parquet"]
    scores = pq.read_table(out / "scores").to_pandas()
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(scores) == manifest["stages"]["windows_scored"] > 0
    assert scores["entity_id"].nunique() == 40
    assert list(scores["entity_id"]) == sorted(scores["entity_id"])
    assert (scores.groupby("entity_id")["window_end"].apply(lambda s: s.is_monotonic_increasing)).all()
    forecasts = list((out / "forecasts").rglob("*.parquet"))
    assert [p.name for p in forecasts] == ["part-00000-of-00001.parquet"]


def test_a_files_rows_come_in_entity_and_pane_order_whatever_order_the_bundles_gave():
    from seqwatch.pipelines.sinks import _shard_table

    def piece(entity, pane, first, n):
        return (entity, pane, first, n), pa.table({"entity_id": [entity] * n, "end": list(range(first, first + n))})

    def part(*pieces):  # what one bundle gathers: its pieces' keys, and their rows in one table
        return [key for key, _ in pieces], pa.concat_tables([table for _, table in pieces])

    b2, a1, a0, b0 = piece("b", 2, 200, 2), piece("a", 1, 100, 3), piece("a", 0, 0, 1), piece("b", 0, 5, 1)
    a1_later = piece("a", 1, 103, 1)  # a pane given out in two pieces: by their first window
    table = _shard_table([part(b2, a1_later), part(a1, b0, a0)])
    assert table.column("entity_id").to_pylist() == ["a", "a", "a", "a", "a", "b", "b", "b"]
    assert table.column("end").to_pylist() == [0, 100, 101, 102, 103, 5, 200, 201]
    assert table.equals(_shard_table([part(a0, a1, a1_later), part(b0, b2)]))


def test_a_streams_window_files_are_named_by_window_start_and_part():
    assert window_file("scores", 1_767_571_200_000_000, 1, 4) == "scores/1767571200000000/part-1-of-4.parquet"
    assert window_file("forecasts", 0, 0, 1, ".s2") == "forecasts/0/part-0-of-1.s2.parquet"


@pytest.mark.parametrize("kwargs, message", [
    ({"score_window_files": 2}, "scores are gathered per flush window by streaming runs only"),
    ({"flush_window_s": 60.0, "score_window_files": -1}, "score_window_files must be from 0 to 4096, got -1"),
    ({"flush_window_s": 60.0, "score_window_files": 4097}, "score_window_files must be from 0 to 4096, got 4097"),
])
def test_write_outputs_refuses_window_files_it_cannot_write(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WriteOutputs("out", "run-x", **kwargs)


def _scored_pane(entity: str, pane: int, ends_s: list) -> ScoredWindows:
    """A scored pane of windows ending at ``ends_s`` (seconds), with a one-step forecast from its last window."""
    n, channels = len(ends_s), ("a", "b")
    ends = np.asarray(ends_s, dtype=np.int64) * 1_000_000
    windows = WindowBatch(entity, pane, channels, 1_000_000, ends, np.zeros((n, 0, 2), np.float32),
                          np.ones((n, 1, 2), bool), 4 * n)
    forecast = np.full((n, 1, 2), float(pane))
    return ScoredWindows(windows, np.arange(n, dtype=float), 2.0, np.zeros(n, bool), np.array(["normal"] * n),
                         np.ones(n), np.zeros((n, 2)), forecast, forecast - 1, forecast + 1, 0.9, 4, "m", "v1")


@pytest.fixture(params=["DirectRunner", "PrismRunner"])
def streaming_options(request):
    """Streaming pipeline options for each runner the TestStream test runs on."""
    from apache_beam.options.pipeline_options import PipelineOptions

    if request.param == "PrismRunner":
        return request.getfixturevalue("prism_options")()
    return PipelineOptions(["--streaming", "--runner=DirectRunner"])


def test_a_pane_scored_after_its_window_was_written_goes_with_the_next_window_and_is_counted(streaming_options,
                                                                                             tmp_path):
    """``score_window_files``: a pane's rows that reach the sink after their flush window (60 s) was written (an
    embedding pipeline's own late firing, say) are not dropped: they go into the next window's file, and the
    counts files count them as ``flushed_late.scores_panes`` / ``flushed_late.forecasts_panes``. TestStream on
    the DirectRunner in streaming mode: pane 0 of e1 (windows ending at 10 and 20 s) is written with window 0;
    the watermark passes 60 s; then pane 1 (ending at 30 and 40 s, stamped 40 s: window 0 too) arrives."""
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue
    from apache_beam.utils.timestamp import Timestamp

    from seqwatch.pipelines.graph import sum_counts, write_detections

    early, late = _scored_pane("e1", 0, [10, 20]), _scored_pane("e1", 1, [30, 40])
    stream = (TestStream()
              .add_elements([TimestampedValue(early, Timestamp(20))])
              .advance_watermark_to(Timestamp(70))
              .add_elements([TimestampedValue(late, Timestamp(40))])
              .advance_watermark_to_infinity())
    out = tmp_path / "out"
    with beam.Pipeline(options=streaming_options) as p:
        scored = p | stream
        none = scored | "Nothing" >> beam.Filter(lambda _: False)
        write_detections({"scored": scored, "alerts": none, "opened": None, "quarantine": none, "counts": none},
                         "run-x", str(out), flush_window_s=60.0, score_window_files=1)
    files = sorted(str(f.relative_to(out)) for f in out.rglob("*.parquet"))
    assert files == ["forecasts/0/part-0-of-1.parquet", "forecasts/60000000/part-0-of-1.parquet",
                     "scores/0/part-0-of-1.parquet", "scores/60000000/part-0-of-1.parquet"]
    first, then = (pq.read_table(out / "scores" / start / "part-0-of-1.parquet").to_pandas()
                   for start in ("0", "60000000"))
    assert [t.timestamp() for t in first["window_end"]] == [10, 20]
    assert [t.timestamp() for t in then["window_end"]] == [30, 40]  # in the next window's file, not lost
    forecasts = pq.read_table(out / "forecasts").to_pandas()
    assert sorted(zip([t.timestamp() for t in forecasts["issued_at"]], forecasts["yhat"])) == [
        (20, 0.0), (20, 0.0), (40, 1.0), (40, 1.0)]
    counts = sum_counts(pair for f in (out / "counts").glob("*.json") for pair in json.loads(f.read_text()).items())
    # (the counts of files written as a window closes may reach the counts' own flush late: flushed_late.counts)
    assert {name: n for name, n in counts.items() if name != "flushed_late.counts"} == {
        "files_written": 4, "flushed_late.scores_panes": 1, "flushed_late.forecasts_panes": 1}


def test_gathered_score_tables_pickle_as_one_chunk_of_their_own_rows():
    """Found by profiling a fleet's run (2,000 entities, 13 s): the tables of a bundle's panes, gathered with
    ``concat_tables``, crossed the GroupByKey as a chunk per pane, and pickling them took 3 s (1,000 panes: 214 ms
    to pickle and 108 ms to unpickle, against 7 ms and 0.4 ms in one chunk). Each gathered table, and each file's
    table after the GroupByKey, is one chunk per column; a file's table holds its own buffers, not slices of the
    gathered ones (a slice pickles the whole buffer it views: 3.8 GB for that fleet's file)."""
    import pickle

    from seqwatch.pipelines.sinks import _GatherShardPieces, _score_piece, _shard_table

    gather = _GatherShardPieces(2, _score_piece, "run-x")
    gather.start_bundle()
    for i in range(300):
        gather.process(_scored_pane(f"pump-{i:03d}", 0, [10 * (k + 1) for k in range(3)]))
    parts = {value.value[0]: value.value[1] for value in gather.finish_bundle()}
    assert sorted(parts) == [0, 1]
    for pieces, table in parts.values():
        assert {column.num_chunks for column in table.columns} == {1}
        assert table.num_rows == 3 * len(pieces)
    one_entity = [([piece], table) for pieces, table in [parts[0]] for piece in pieces[:1]]
    mine = _shard_table(one_entity)  # one pane's three rows of a gathered table of about 450
    assert mine.num_rows == 3 and {column.num_chunks for column in mine.columns} == {1}
    whole = len(pickle.dumps(parts[0][1], protocol=5))
    assert len(pickle.dumps(mine, protocol=5)) < whole / 20


def test_small_tables_are_written_uncompressed_and_larger_ones_with_zstd(tmp_path):
    """A stream's pane of scores or an alert is a few rows, where zstd made the file no smaller and cost 0.6 ms a
    file; from ``COMPRESS_FROM_ROWS`` rows on, zstd. Both read back the same rows."""
    from seqwatch.pipelines.sinks import COMPRESS_FROM_ROWS

    for rows, codec in ((1, "UNCOMPRESSED"), (COMPRESS_FROM_ROWS - 1, "UNCOMPRESSED"), (COMPRESS_FROM_ROWS, "ZSTD")):
        table = pa.table({"entity_id": [f"pump-{i % 7}" for i in range(rows)], "score": np.arange(rows) / 3})
        path = str(tmp_path / f"t{rows}.parquet")
        write_parquet(path, table)
        meta = pq.ParquetFile(path).metadata
        assert {meta.row_group(0).column(c).compression for c in range(2)} == {codec}, rows
        assert pq.read_table(path).equals(table)
