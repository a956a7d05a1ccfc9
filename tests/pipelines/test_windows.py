"""WindowReadings on a hand-worked example: which windows end in which pane, and which readings are scored,
quarantined as duplicates, or quarantined as insufficient data."""
import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from seqwatch.pipelines.windows import PaneSpec, WindowReadings
from seqwatch.schemas.elements import ReadingBatch

SECOND = 1_000_000


def _readings(source: str = "f.csv"):
    # One entity, channels a and b, one reading per second at steps 0..24; b is missing at step 15, so the
    # complete steps form two stretches: [0, 14] and [16, 24]. Reading a@5 is repeated on a later line.
    rows = []
    line = 1
    for step in range(25):
        for channel in ("a", "b"):
            if channel == "b" and step == 15:
                continue
            rows.append(("m1", channel, step * SECOND, float(step), source, line))
            line += 1
    rows.append(("m1", "a", 5 * SECOND, 99.0, source, line))  # duplicate of a@5, later line
    entity, channel, ts, value, source, lines = zip(*rows)
    half = len(rows) // 2  # two input batches, to exercise grouping across batches
    return [ReadingBatch.from_columns(entity[:half], channel[:half], ts[:half], value[:half], source[:half],
                                      lines[:half]),
            ReadingBatch.from_columns(entity[half:], channel[half:], ts[half:], value[half:], source[half:],
                                      lines[half:])]


def test_pane_spec_refuses_panes_too_short_for_their_context():
    try:
        PaneSpec(SECOND, length=4, stride=2, max_gap=0, pane_steps=8)
    except ValueError as exc:
        assert "pane_steps must be a multiple of stride=2 and >= 10, got 8" in str(exc)
    else:
        raise AssertionError("expected ValueError")


def test_windows_end_in_their_own_pane_and_every_reading_is_accounted_for():
    # L=4, stride=2, panes of 10 steps. Stretch [0,14]: head 3, grid 3,5,7,9,11,13, tail 14.
    # Stretch [16,24]: head 19, grid 19,21,23, tail 24. Pane 0 = [0,10), pane 1 = [10,20), pane 2 = [20,30).
    with TestPipeline() as p:
        out = (p | beam.Create(_readings())
               | WindowReadings(SECOND, length=4, stride=2, max_gap=0, pane_steps=10, channels=("a", "b"),
                                run_id="t"))
        ends = out.windows | "Ends" >> beam.Map(lambda wb: (wb.pane, tuple(int(e) // SECOND for e in wb.ends)))
        assert_that(ends, equal_to([(0, (3, 5, 7, 9)), (1, (11, 13, 14, 19)), (2, (21, 23, 24))]), label="ends")

        first_window = (out.windows | beam.Filter(lambda wb: wb.pane == 0)
                        | beam.Map(lambda wb: wb.values[0].tolist()))
        assert_that(first_window, equal_to([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]]), label="values")

        reasons = out.quarantine | beam.Map(lambda q: (q.reason_code, q.line, q.records, q.stage))
        # a@15 is line 31 (steps 0..14 use 30 lines); the duplicate a@5 is the last line, 50.
        assert_that(reasons, equal_to([("insufficient_data", 31, 1, "window"), ("duplicate", 50, 1, "window")]),
                    label="quarantine")

        scored = (out.counts | beam.Filter(lambda kv: kv[0] == "records_scored") | beam.Values()
                  | beam.CombineGlobally(sum))
        windows_in_panes = out.windows | beam.Map(lambda wb, w=beam.DoFn.WindowParam: (wb.pane, w.start.micros,
                                                                                       w.end.micros))
        # pane 1 = steps [10, 20); its window adds L + max_gap + 1 = 5 steps before and L + max_gap = 4 after
        assert_that(windows_in_panes, equal_to([(0, -5 * SECOND, 14 * SECOND), (1, 5 * SECOND, 24 * SECOND),
                                                (2, 15 * SECOND, 34 * SECOND)]), label="pane windows")
        assert_that(scored, equal_to([48]), label="scored")  # 49 distinct readings - a@15


def test_a_pane_of_a_billion_steps_cuts_the_same_windows_as_a_pane_that_fits():
    """Found by the bug hunt of embedded transforms: ``DetectAnomalies(pane_steps=10**9)`` (one pane per entity)
    built each pane's grid over all its steps and stopped on a 30 GiB allocation; the grid now spans the steps
    with readings, and the windows are those of a pane of 30 steps."""
    def ends(pane_steps):
        with TestPipeline() as p:
            out = (p | beam.Create(_readings())
                   | WindowReadings(SECOND, length=4, stride=2, max_gap=0, pane_steps=pane_steps, channels=("a", "b"),
                                    run_id="t"))
            got = out.windows | beam.Map(lambda wb: (wb.pane, tuple(int(e) // SECOND for e in wb.ends),
                                                     wb.values.shape, int(wb.readings_scored)))
            assert_that(got, equal_to([(0, (3, 5, 7, 9, 11, 13, 14, 19, 21, 23, 24), (11, 4, 2), 48)]))

    ends(30)
    ends(10**9)


def test_pane_order_and_repeats_match_the_pandas_definitions():
    """The numpy row order and duplicate mask the cutter uses are pandas' ``sort_values`` (own first, then
    source and line, stable) and ``duplicated(["channel", "timestamp"])``, on frames with ties, repeats, text
    and categorical columns, and categories in an order of their own."""
    import numpy as np
    import pandas as pd

    from seqwatch.pipelines.pane_pieces import PaneRows
    from seqwatch.pipelines.windows import _own_first_in_file_order, _repeated

    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(0, 300))
        frame = pd.DataFrame({"channel": rng.choice(["x", "y", "z"], n), "timestamp": rng.integers(0, 30, n) * 1000,
                              "source": rng.choice(["b.csv", "a.csv", "c.parquet"], n),
                              "line": rng.integers(1, 50, n), "own": rng.random(n) < 0.7, "value": rng.normal(size=n)})
        if trial % 2:
            frame = frame.astype({"source": "category", "channel": "category"})
        if trial % 3 == 0:
            frame["source"] = pd.Categorical(frame["source"].astype(str), categories=["c.parquet", "b.csv", "a.csv"])
        expected = frame.sort_values(["own", "source", "line"], ascending=[False, True, True])
        rows = PaneRows.from_frame(frame)
        order = _own_first_in_file_order(rows)
        assert list(frame.index[order]) == list(expected.index), trial
        assert list(_repeated(rows.take(order))) == list(expected.duplicated(["channel", "timestamp"], keep="first")), \
            trial


def test_pane_windows_are_beams_sliding_windows_over_each_pane_and_its_margins():
    """Pane k's window is [k * pane - before, (k + 1) * pane + after + wait) steps; a piece of pane k is stamped
    in that window only, unless the margins and the wait are longer than a pane."""
    from apache_beam.transforms.window import IntervalWindow, SlidingWindows, WindowFn
    from apache_beam.utils.timestamp import Timestamp

    from seqwatch.pipelines.windows import PaneWindows

    spec = PaneSpec(step_us=10, length=4, stride=2, max_gap=1, pane_steps=20)  # before 6, after 5 steps
    for wait_us, alone in ((0, True), (30, True), (100, False)):
        windows = PaneWindows(spec, wait_us)
        fn = windows.window_fn()
        assert isinstance(fn, SlidingWindows)
        for pane in (-1, 0, 3):
            own = IntervalWindow(Timestamp(micros=(pane * 20 - 6) * 10), Timestamp(micros=((pane + 1) * 20 + 5) * 10
                                                                                      + wait_us))
            stamp = Timestamp(micros=windows.piece_timestamp_us(pane))
            assigned = fn.assign(WindowFn.AssignContext(stamp))
            assert own in assigned
            assert (assigned == [own]) is alone
            assert windows.owns(pane, own)
            assert not any(windows.owns(pane, w) for w in assigned if w != own)
            assert windows.end_us(pane) == own.end.micros


@pytest.mark.parametrize("source", ["kafka:pumps", "pubsub:projects/p/subscriptions/s", "mqtt:plant/+/readings"])
def test_a_broker_reading_quarantined_at_the_window_stage_keeps_its_whole_message(source):
    """A broker message cannot be re-read at the quarantine sink, so its record carries the reading as JSON. A
    pane's frame has no entity column (the pane's key holds the entity); the record must still name it."""
    with TestPipeline() as p:
        out = (p | beam.Create(_readings(source))
               | WindowReadings(SECOND, length=4, stride=2, max_gap=0, pane_steps=10, channels=("a", "b"),
                                run_id="t"))
        raws = out.quarantine | beam.Map(lambda q: (q.reason_code, json.loads(q.raw) if q.raw else None))
        assert_that(raws, equal_to([
            ("insufficient_data", {"entity_id": "m1", "channel": "a", "timestamp": 15 * SECOND, "value": 15.0}),
            ("duplicate", {"entity_id": "m1", "channel": "a", "timestamp": 5 * SECOND, "value": 99.0})]))


def test_a_reading_of_an_entity_that_lacks_a_channel_says_which_channel():
    """m2 reports channel a only: none of its readings can be in a window, and the reason names b. m1's one
    uncovered reading (b is missing at a single step) keeps the plain reason."""
    plain = "no model window covers this reading: fewer than 4 consecutive steps with every channel present"
    m2 = ReadingBatch.from_columns(["m2"] * 6, ["a"] * 6, [s * SECOND for s in range(6)], [1.0] * 6, ["g.csv"] * 6,
                                   list(range(2, 8)))
    with TestPipeline() as p:
        out = (p | beam.Create(_readings() + [m2])
               | WindowReadings(SECOND, length=4, stride=2, max_gap=0, pane_steps=10, channels=("a", "b"),
                                run_id="t"))
        reasons = (out.quarantine | beam.Filter(lambda q: q.reason_code == "insufficient_data")
                   | beam.Map(lambda q: (q.source, q.line, q.reason)))
        lacking = plain + " (this entity has no 'b' readings here, and every window needs all of ['a', 'b'])"
        assert_that(reasons, equal_to([("f.csv", 31, plain)] + [("g.csv", line, lacking) for line in range(2, 8)]))


def test_a_reading_of_an_entity_whose_channel_comes_too_seldom_says_which_channel_and_what_bridges_it():
    """m3 reports a every second and b every third second: with max_gap 0 no step after a b reading is complete
    and no window can be cut; the reason names b, its spacing and the max_gap that would bridge it."""
    plain = "no model window covers this reading: fewer than 4 consecutive steps with every channel present"
    rows = [(channel, step) for step in range(12) for channel in ("a", "b") if channel == "a" or step % 3 == 0]
    m3 = ReadingBatch.from_columns(["m3"] * len(rows), [c for c, _ in rows], [s * SECOND for _, s in rows],
                                   [1.0] * len(rows), ["h.csv"] * len(rows), list(range(2, 2 + len(rows))))
    with TestPipeline() as p:
        out = (p | beam.Create([m3])
               | WindowReadings(SECOND, length=4, stride=2, max_gap=0, pane_steps=10, channels=("a", "b"),
                                run_id="t"))
        reasons = (out.quarantine | beam.Filter(lambda q: q.reason_code == "insufficient_data")
                   | beam.Map(lambda q: (q.source, q.line, q.reason)))
        sparse = plain + (" (readings of 'b' every 3 steps come further apart than the model bridges: at most 0 "
                          "missing steps of 1s; resample them to every 1s, or train a model with --max-gap 2)")
        assert_that(reasons, equal_to([("h.csv", line, sparse) for line in range(2, 2 + len(rows))]))


def test_a_panes_window_is_its_own_after_beam_rounds_its_bounds_to_milliseconds():
    """Found by the bug hunt of sub-millisecond steps: Beam encodes a window's bounds in whole milliseconds, so
    after a GroupByKey on a runner a 360 Hz pane's window starts up to a millisecond before its µs bound, and the
    cutter took it for a neighbour's and dropped its readings (a stream on Prism scored 0 of 6000). The round trip
    through Beam's own coder is this pane's window; a neighbour's is not; and a pane spans at least 2 ms, so
    that no neighbour's start rounds into the same millisecond (44.1 kHz: 87 steps at least)."""
    from apache_beam.coders.coders import IntervalWindowCoder
    from apache_beam.transforms.window import IntervalWindow, WindowFn
    from apache_beam.utils.timestamp import Timestamp

    from seqwatch.pipelines.windows import MIN_PANE_US, PaneWindows, pane_floor

    coder = IntervalWindowCoder()
    for step_us, pane_steps in ((2778, 64), (3333, 64), (23, 96), (500, 48)):
        spec = PaneSpec(step_us=step_us, length=16, stride=16, max_gap=4 if step_us == 500 else 0,
                        pane_steps=pane_steps)
        windows = PaneWindows(spec, wait_us=0)
        fn = windows.window_fn()
        for pane in (9_941_792_805, 9_941_792_806, 123_457):
            assigned = fn.assign(WindowFn.AssignContext(Timestamp(micros=windows.piece_timestamp_us(pane))))
            start, end = windows.context_us(pane)
            own = IntervalWindow(Timestamp(micros=start), Timestamp(micros=end))
            assert own in assigned
            decoded = [coder.decode(coder.encode(w)) for w in assigned]  # as the runner hands them back
            assert [windows.owns(pane, w) for w in decoded] == [w == own for w in assigned], (step_us, pane)
    assert pane_floor(64, 23) == 87 and 87 * 23 >= MIN_PANE_US > 86 * 23 and pane_floor(64, 2778) == 64
