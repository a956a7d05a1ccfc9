"""The late gate of the streaming pipeline (``QuarantineLateReadings``), with TestStream on the DirectRunner, and
the broker readers' event time: a reading from a clock set days ahead neither passes nor moves event time."""
import json

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from seqwatch.pipelines.sources import QUARANTINE
from seqwatch.pipelines.streaming import QuarantineLateReadings
from seqwatch.schemas.elements import ReadingBatch

NOW_US = 1_767_600_000 * 10**6  # the gate's wall clock in these tests (2026-01-05 08:00 UTC)
DAY_US = 86_400 * 10**6


def _batch(entity: str, stamps_us: list, first_line: int) -> ReadingBatch:
    n = len(stamps_us)
    return ReadingBatch.from_columns([entity] * n, ["flow"] * n, np.asarray(stamps_us, dtype=np.int64),
                                     np.ones(n), ["stream"] * n, np.arange(first_line, first_line + n))


def _streaming() -> PipelineOptions:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return options


def _gate(p, stream: TestStream, late_after_s: float = 3600.0):
    """(entity, line) of the readings the gate passes, and (line, stage, reason code) of those it quarantines."""
    gated = (p | stream) | QuarantineLateReadings(late_after_s, "run-1", now_us=lambda: NOW_US)
    passed = gated.on_time | "Passed" >> beam.FlatMap(
        lambda b: list(zip(b.frame["entity_id"].astype(str), b.frame["line"].astype(int))))
    held = gated[QUARANTINE] | "Held" >> beam.Map(lambda q: (q.line, q.stage, q.reason_code))
    return passed, held


def test_one_clock_set_days_ahead_is_quarantined_and_leaves_the_others_on_time():
    """Found by the bug hunt of embedded transforms: one reading of a device whose clock was two days ahead (or in
    2089) made every later reading of every entity `late` (the gate compared them with the latest event time seen
    anywhere), and nothing was scored until the wall clock caught up. Now a reading more than a day ahead of the
    wall clock is quarantined as `future_timestamp` and moves nothing."""
    t0 = NOW_US - 3 * 3600 * 10**6
    for ahead_us in (2 * DAY_US, 63 * 365 * DAY_US):
        stream = (TestStream()
                  .add_elements([TimestampedValue(_batch("pump-01", [t0, t0 + 10**7], 1), Timestamp(micros=t0))])
                  # stamped at its own event time, as a pipeline that stamps elements by event time does
                  .add_elements([TimestampedValue(_batch("pump-09", [NOW_US + ahead_us], 3),
                                                  Timestamp(micros=NOW_US + ahead_us))])
                  .advance_watermark_to(Timestamp(micros=t0 + 20 * 10**6))
                  .add_elements([TimestampedValue(_batch("pump-02", [t0 + 2 * 10**7, t0 + 3 * 10**7], 4),
                                                  Timestamp(micros=t0 + 2 * 10**7))])
                  .advance_watermark_to_infinity())
        with TestPipeline(options=_streaming()) as p:
            passed, held = _gate(p, stream)
            assert_that(passed, equal_to([("pump-01", 1), ("pump-01", 2), ("pump-02", 4), ("pump-02", 5)]),
                        label="passed")
            assert_that(held, equal_to([(3, "gate", "future_timestamp")]), label="held")


def test_a_reading_far_behind_the_latest_is_still_late_and_a_clock_just_ahead_is_not_future():
    """The gate as before for readings within a day of the wall clock: 12 hours ahead passes and moves the gate,
    so a reading more than ``late_after_s`` behind it is late."""
    ahead = NOW_US + 12 * 3600 * 10**6
    stream = (TestStream()
              .add_elements([TimestampedValue(_batch("pump-01", [ahead], 1), Timestamp(micros=ahead))])
              .advance_watermark_to(Timestamp(micros=NOW_US))
              .add_elements([TimestampedValue(_batch("pump-02", [NOW_US, ahead - 10**6], 2), Timestamp(micros=NOW_US))])
              .advance_watermark_to_infinity())
    with TestPipeline(options=_streaming()) as p:
        passed, held = _gate(p, stream)
        assert_that(passed, equal_to([("pump-01", 1), ("pump-02", 3)]), label="passed")
        assert_that(held, equal_to([(2, "gate", "late")]), label="held")


def test_a_broker_readers_event_time_leaves_out_readings_days_ahead_of_the_wall_clock():
    """The reader's watermark follows the latest event time it has seen: a reading two days ahead of the wall clock
    would have moved it past every other reading; its batch is stamped no later than a day ahead."""
    import time

    from seqwatch.pipelines.broker_sources import MessageParser, _emit, _max_time_us

    now_s = int(time.time())
    payloads = [json.dumps({"entity_id": e, "channel": "flow", "timestamp": t, "value": 1}).encode()
                for e, t in (("pump-01", now_s - 60), ("pump-09", now_s + 2 * 86_400))]
    parsed = MessageParser("run-1").parse("kafka:readings/0", [1, 2], payloads)
    assert _max_time_us(parsed) == (now_s - 60) * 10**6
    stamps = [o.timestamp.micros for o in _emit(parsed, None, None) if not isinstance(o, beam.pvalue.TaggedOutput)]
    assert max(stamps) <= (time.time() + 86_400) * 1e6
