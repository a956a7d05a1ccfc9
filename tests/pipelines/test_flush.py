"""FlushPerWindow: per-key event-time windows released as the watermark passes them, and late elements moved to the
next release instead of dropped; by hand, then with TestStream on the DirectRunner in streaming mode."""
import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from seqwatch.pipelines.flush import FlushPerWindow, release_window


def test_release_window_keeps_an_elements_own_window_unless_it_was_released():
    assert release_window(600, None, 600) == 600  # nothing released yet
    assert release_window(1200, 600, 600) == 1200  # a later window than the last released: its own
    assert release_window(600, 600, 600) == 1200  # its own window was the last released: the next one
    assert release_window(0, 1800, 600) == 2400  # far behind: the first window not yet released
    assert release_window(-600, None, 600) == -600


def test_flush_window_must_be_positive():
    with pytest.raises(ValueError, match="the flush window must be > 0 seconds, got 0"):
        FlushPerWindow(0)


def _assert_releases(stream, expected):
    """Windows of 10 s; each release as ``(key, window start in s, items sorted, how many were late)``."""
    with beam.Pipeline(options=PipelineOptions(["--streaming", "--runner=DirectRunner"])) as p:
        releases = (p | stream | FlushPerWindow(10)
                    | beam.Map(lambda r: (r.key, r.start_us // 1_000_000, sorted(r.items), r.late)))
        assert_that(releases, equal_to(expected))


def test_elements_are_released_per_key_and_window_and_late_ones_go_with_the_next_release():
    """Windows of 10 s. ``a`` at 3 s and 7 s and ``b`` at 5 s are released when the watermark passes 10 s. ``a``
    at 4 s then arrives after its window was released: it goes with ``a``'s next release (window 10-20 s, with
    ``a`` at 12 s), counted late. ``b`` at 15 s arrives after the watermark passed 20 s but its window was never
    released: it is released in its own window. Nothing is dropped."""
    stream = (TestStream()
              .add_elements([TimestampedValue(("a", "a3"), Timestamp(3)), TimestampedValue(("a", "a7"), Timestamp(7)),
                             TimestampedValue(("b", "b5"), Timestamp(5))])
              .advance_watermark_to(Timestamp(11))
              .add_elements([TimestampedValue(("a", "a4-late"), Timestamp(4)),
                             TimestampedValue(("a", "a12"), Timestamp(12))])
              .advance_watermark_to(Timestamp(25))
              .add_elements([TimestampedValue(("b", "b15-behind"), Timestamp(15))])
              .advance_watermark_to(Timestamp(100))  # every timer fires before the end (assert_that's last pane)
              .advance_watermark_to_infinity())
    _assert_releases(stream, [("a", 0, ["a3", "a7"], 0), ("b", 0, ["b5"], 0),
                              ("a", 10, ["a12", "a4-late"], 1), ("b", 10, ["b15-behind"], 0)])


def test_a_late_element_far_behind_goes_with_a_release_of_its_own_after_the_last():
    """``a`` released windows 0-10 s and 20-30 s; an element at 1 s arriving then is released in window 30-40 s
    (the first after the last released), once the watermark passes 40 s, and no window name repeats."""
    stream = (TestStream()
              .add_elements([TimestampedValue(("a", "a2"), Timestamp(2)), TimestampedValue(("a", "a22"), Timestamp(22))])
              .advance_watermark_to(Timestamp(31))
              .add_elements([TimestampedValue(("a", "a1-late"), Timestamp(1))])
              .advance_watermark_to(Timestamp(100))
              .advance_watermark_to_infinity())
    _assert_releases(stream, [("a", 0, ["a2"], 0), ("a", 20, ["a22"], 0), ("a", 30, ["a1-late"], 1)])


def test_the_archive_cuts_a_batch_that_spans_windows_and_stamps_each_piece_with_its_first_reading():
    """A replayed or polled batch can span archive windows; stamped as one element (its first reading's time), the
    archive filed all of it under the first window (a 05:00 file held readings up to 06:00:10)."""
    from seqwatch.pipelines.sinks import archive_pieces
    from seqwatch.schemas.elements import ReadingBatch

    hour = 3600 * 10**6
    stamps = [hour - 20 * 10**6, hour - 10 * 10**6, hour, hour + 10 * 10**6, 3 * hour]
    batch = ReadingBatch.from_columns(["p1", "p2", "p1", "p1", "p1"], ["flow"] * 5, stamps, [1.0, 2.0, 3.0, 4.0, 5.0],
                                      ["s"] * 5, [1, 2, 3, 4, 5])
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        pieces = (p | beam.Create([batch])
                  | beam.Map(lambda b: TimestampedValue(b, Timestamp(micros=hour - 20 * 10**6)))
                  | beam.FlatMap(archive_pieces, hour)
                  | beam.FlatMap(lambda kv, t=beam.DoFn.TimestampParam: [(entity, piece.value.tolist(), t.micros)
                                                                          for entity, piece in kv[1]]))
        assert_that(pieces, equal_to([("p1", [1.0], hour - 20 * 10**6), ("p1", [3.0, 4.0], hour),
                                      ("p1", [5.0], 3 * hour), ("p2", [2.0], hour - 10 * 10**6)]))
    # Never stamped before the batch's own stamp (a batch a reader stamped at its watermark): Beam forbids it.
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        pieces = (p | beam.Create([batch])
                  | beam.Map(lambda b: TimestampedValue(b, Timestamp(micros=2 * hour)))
                  | beam.FlatMap(archive_pieces, hour)
                  | beam.FlatMap(lambda kv, t=beam.DoFn.TimestampParam: [(entity, len(piece), t.micros)
                                                                          for entity, piece in kv[1]]))
        assert_that(pieces, equal_to([("p1", 1, 2 * hour), ("p1", 2, 2 * hour), ("p1", 1, 3 * hour),
                                      ("p2", 1, 2 * hour)]))


def test_archive_pieces_travel_as_one_buffer_and_make_an_entity_table_in_time_and_channel_order():
    """The archive's pieces wait in Beam state until their window is written, so each is pickled and unpickled;
    as pandas frames that was most of what --archive-readings cost a live stream. An ``ArchivePiece`` pickles as
    one buffer of its columns, and ``reading_table`` joins an entity's pieces (their channel names in any order)
    into rows ordered by time, then channel, a reading and its copy in the order they came."""
    import pickle

    import pyarrow as pa

    from seqwatch.pipelines.sinks import READING_SCHEMA, ArchivePiece, archive_pieces, reading_table
    from seqwatch.schemas.elements import ReadingBatch

    batch = ReadingBatch.from_columns(["p1", "p2", "p1", "p1"], ["temp", "flow", "flow", "temp"],
                                      [20, 10, 10, 20], [1.0, 2.0, 3.0, 1.5], ["s"] * 4, [1, 2, 3, 4])
    pieces = [pair for tv in archive_pieces(batch, 3600 * 10**6, Timestamp(micros=0)) for pair in tv.value[1]]
    assert sorted((entity, piece.timestamp.tolist(), piece.value.tolist()) for entity, piece in pieces) == [
        ("p1", [20, 10, 20], [1.0, 3.0, 1.5]), ("p2", [10], [2.0])]
    p1 = next(piece for entity, piece in pieces if entity == "p1")
    back = pickle.loads(pickle.dumps(p1))
    assert isinstance(back, ArchivePiece) and back.channels == p1.channels
    assert [back.channels[c] for c in back.codes] == ["temp", "flow", "temp"]
    assert len(pickle.dumps(p1)) < 400  # a pandas frame of three readings pickled to some 2 kB
    later = ArchivePiece(("flow", "pressure"), np.array([1, 0], dtype=np.int8), np.array([10, 5], dtype=np.int64),
                         np.array([7.0, 8.0]))
    table = reading_table("p1", [back, later])
    assert table.schema == READING_SCHEMA
    assert table.column("entity_id").to_pylist() == ["p1"] * 5
    assert list(zip(table.column("channel").to_pylist(), table.column("timestamp").cast(pa.int64()).to_pylist(),
                    table.column("value").to_pylist())) == [
        ("flow", 5, 8.0), ("flow", 10, 3.0), ("pressure", 10, 7.0), ("temp", 20, 1.0), ("temp", 20, 1.5)]


def test_a_poll_of_a_fleet_goes_to_the_archive_as_an_element_per_shard_and_comes_out_as_a_file_per_entity():
    """Each element costs the archive's flush state calls to the runner, so a poll's pieces travel as one element
    per shard of entities and window (stamped with its first reading), not one per entity; a release of a shard
    is written as a file per entity."""
    from seqwatch.pipelines.flush import Release
    from seqwatch.pipelines.sinks import ARCHIVE_SHARDS, archive_pieces, archive_shard, archive_tables
    from seqwatch.schemas.elements import ReadingBatch

    entities = [f"pump-{i:03d}" for i in range(100)]
    a = entities[0]
    b = next(e for e in entities[1:] if archive_shard(e) == archive_shard(a))
    batch = ReadingBatch.from_columns(entities + [b], ["flow"] * 101, [50] * 100 + [40], list(range(101)),
                                      ["s"] * 101, list(range(1, 102)))
    elements = list(archive_pieces(batch, 3600 * 10**6, Timestamp(micros=0)))
    assert len(elements) == len({archive_shard(e) for e in entities}) <= ARCHIVE_SHARDS
    [shared] = [tv for tv in elements if tv.value[0] == archive_shard(a)]
    assert shared.timestamp == Timestamp(micros=40)  # b's reading at 40 is the shard's first
    assert {entity for entity, _ in shared.value[1]} >= {a, b}
    assert sum(len(piece) for tv in elements for _, piece in tv.value[1]) == 101
    files = dict(archive_tables(Release(shared.value[0], 0, [shared.value[1], shared.value[1][:1]], 0), ".s1"))
    assert sorted(files) == sorted(f"readings/{e}/0.s1.parquet" for e, _ in shared.value[1])
    first_entity = shared.value[1][0][0]
    assert files[f"readings/{first_entity}/0.s1.parquet"].num_rows == 2 * len(shared.value[1][0][1])
