"""Alert merging and forecast rows, by hand; the incident merge in streaming with TestStream."""
import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from seqwatch.pipelines.alerts import (BuildAlerts, alert_id, continues, describe_incident, forecast_rows, merge_alerts,
                                      track_incident)
from seqwatch.schemas.elements import Score, ScoredWindows, WindowBatch

CHANNELS = ("a", "b", "c")


def _score(start, end, score, contributions, severity="info"):
    return Score("m1", start, end, score, 2.0, True, severity, 1e-3, "a", contributions, "mid", "v1", "run")


def test_overlapping_and_touching_windows_merge_and_gaps_split():
    windows = [
        _score(0, 3, 3.0, (1.0, 0.5, 0.0)),
        _score(2, 5, 5.0, (0.0, 4.0, -1.0), severity="warning"),
        _score(6, 9, 2.5, (0.0, 0.0, 2.0)),  # starts one step after 5: same incident
        _score(12, 15, 4.0, (0.0, 0.0, 3.0), severity="critical"),  # gap: a new incident
    ]
    alerts = merge_alerts("m1", list(reversed(windows)), CHANNELS, step_us=1, run_id="run")
    assert [(a.start, a.end, a.windows, a.peak_score, a.severity) for a in alerts] == [
        (0, 9, 3, 5.0, "warning"), (12, 15, 1, 4.0, "critical")]
    # blame over the first incident: a = 1, b = 4.5, c = 2 (negative parts ignored)
    assert alerts[0].top_channels == ("b", "c", "a")
    assert alerts[1].top_channels == ("c",)
    assert alerts[0].alert_id == alert_id("m1", 0, "mid") != alerts[1].alert_id
    assert len(alerts[0].alert_id) == 20


def test_forecast_rows_come_from_the_last_window_of_the_pane():
    wb = WindowBatch("m1", 0, ("a", "b"), 10, np.array([100, 50]), np.zeros((2, 4, 2), np.float32),
                     np.ones((2, 4, 2), bool), 8)
    forecast = np.arange(8, dtype=float).reshape(2, 2, 2)
    scored = ScoredWindows(wb, np.zeros(2), 1.0, np.zeros(2, bool), np.array(["normal"] * 2), np.ones(2),
                           np.zeros((2, 2)), forecast, forecast - 1, forecast + 1, 0.9, 4, "mid", "v1")
    rows = forecast_rows(scored, "run")
    assert [(r.issued_at, r.target_time, r.step, r.channel, r.yhat, r.yhat_lower, r.yhat_upper) for r in rows] == [
        (100, 110, 1, "a", 0.0, -1.0, 1.0), (100, 110, 1, "b", 1.0, 0.0, 2.0),
        (100, 120, 2, "a", 2.0, 1.0, 3.0), (100, 120, 2, "b", 3.0, 2.0, 4.0)]


def test_forecasts_are_issued_from_the_last_window_whose_last_step_was_observed():
    """Found by the bug hunt of forecasts: a meter replaced at a pane's last step had that step filled half-way
    between the old count and the new, and the pane's forecasts were issued from it (60 million Wh off). A window
    whose last step lacks a channel's reading issues none; a pane without such a window issues no forecast."""
    observed = np.ones((3, 1, 2), bool)  # after scoring, the windows' last steps
    observed[2, 0, 1] = False  # the last window's last step was filled in channel b
    wb = WindowBatch("m1", 0, ("a", "b"), 10, np.array([60, 80, 100]), np.zeros((3, 0, 2), np.float32), observed, 8)
    forecast = np.arange(12, dtype=float).reshape(3, 2, 2)
    scored = ScoredWindows(wb, np.zeros(3), 1.0, np.zeros(3, bool), np.array(["normal"] * 3), np.ones(3),
                           np.zeros((3, 2)), forecast, forecast - 1, forecast + 1, 0.9, 4, "mid", "v1")
    rows = forecast_rows(scored, "run")
    assert {r.issued_at for r in rows} == {80} and [r.yhat for r in rows] == [4.0, 5.0, 6.0, 7.0]
    none = scored._replace(windows=wb._replace(observed=np.zeros((3, 1, 2), bool)))
    assert forecast_rows(none, "run") == []


def test_a_cooldown_merges_windows_separated_by_a_quiet_spell_no_longer_than_it():
    windows = [_score(0, 3, 3.0, (1.0, 0.0, 0.0)),
               _score(12, 15, 4.0, (0.0, 1.0, 0.0)),  # starts 9 steps after 3: 8 quiet steps (4..11)
               _score(30, 33, 2.0, (0.0, 0.0, 1.0))]  # starts 15 steps after 15
    spans = {c: [(a.start, a.end, a.windows) for a in merge_alerts("m1", windows, CHANNELS, 1, "run", cooldown_us=c)]
             for c in (0, 7, 8, 13, 14)}
    assert spans[0] == spans[7] == [(0, 3, 1), (12, 15, 1), (30, 33, 1)]
    assert spans[8] == spans[13] == [(0, 15, 2), (30, 33, 1)]  # 12 <= 3 + 1 + 8
    assert spans[14] == [(0, 33, 3)]  # 30 <= 15 + 1 + 14
    assert continues(12, 3, 1, 8) and not continues(12, 3, 1, 7)
    # the merged alert keeps the id of its first window, as the incident would have without the cooldown
    assert merge_alerts("m1", windows, CHANNELS, 1, "run", cooldown_us=8)[0].alert_id == alert_id("m1", 0, "mid")


def _pane(pane, ends_s, length=4):
    """ScoredWindows of entity m1 (1-second steps): every window anomalous, one per end time in seconds."""
    ends = np.asarray(ends_s, dtype=np.int64) * 1_000_000
    n = len(ends)
    wb = WindowBatch("m1", pane, ("a",), 1_000_000, ends, np.zeros((n, 0, 1), np.float32), np.ones((n, 0, 1), bool),
                     n)
    return ScoredWindows(wb, np.full(n, 5.0), 2.0, np.ones(n, bool), np.array(["warning"] * n), np.full(n, 1e-4),
                         np.ones((n, 1)), None, None, None, 0.9, length, "mid", "v1")


@pytest.mark.parametrize("announce", [False, True])  # the batch timer (latest settling) and the stream's (earliest)
def test_an_incident_is_not_cut_when_a_later_pane_reaches_the_merge_before_an_earlier_one(announce):
    """Streaming, panes out of order: pane 2 (windows ending at 100-103 s) arrives before pane 1 (50-53 s). The
    incident of pane 2 must stay open until the watermark has passed *its* windows by the settle time, so that
    pane 3 (104-106 s, continuing it) joins it instead of opening a second alert."""
    settle = 10_000_000
    stream = (TestStream()
              .add_elements([TimestampedValue(_pane(2, range(100, 104)), Timestamp(100))])
              .add_elements([TimestampedValue(_pane(1, range(50, 54)), Timestamp(100))])
              .advance_watermark_to(Timestamp(70))  # past pane 1's incident by the settle time, not pane 2's
              .add_elements([TimestampedValue(_pane(3, range(104, 107)), Timestamp(106))])
              .advance_watermark_to(Timestamp(200))  # every timer fires before the end (assert_that's last pane)
              .advance_watermark_to_infinity())
    with beam.Pipeline(options=PipelineOptions(["--streaming", "--runner=DirectRunner"])) as p:
        built = p | stream | BuildAlerts("run", settle, announce=announce)
        alerts = built.closed | beam.Map(lambda a: (a.start // 1_000_000, a.end // 1_000_000, a.windows))
        assert_that(alerts, equal_to([(47, 53, 4), (97, 106, 7)]))


def test_a_stream_closes_each_incident_once_it_has_settled_though_later_incidents_keep_coming():
    """Streaming: three incidents of one entity 20 s apart, each settling (10 s after its last window) after the
    next has begun. Each alert must come when its own incident has settled (the timer fires at 63, 83 and 93 s).
    The one timer per entity had only moved later, to the latest window's settling, so the first two alerts
    waited until the entity had been quiet for a settle time, and came at 93 s with the third (bug hunt of
    alerts: 50 minutes late on a pump whose flow spiked every 25 minutes)."""
    stream = (TestStream()
              .add_elements([TimestampedValue(_pane(1, range(50, 54)), Timestamp(53))])
              .advance_watermark_to(Timestamp(60))
              .add_elements([TimestampedValue(_pane(2, range(70, 74)), Timestamp(73))])
              .advance_watermark_to(Timestamp(65))  # past the first incident's settling (63 s)
              .add_elements([TimestampedValue(_pane(3, range(80, 84)), Timestamp(83))])
              .advance_watermark_to(Timestamp(85))  # past the second's (83 s)
              .advance_watermark_to(Timestamp(200))
              .advance_watermark_to_infinity())
    with beam.Pipeline(options=PipelineOptions(["--streaming", "--runner=DirectRunner"])) as p:
        built = p | stream | BuildAlerts("run", 10_000_000, announce=True)
        emitted = built.closed | beam.Map(lambda a, t=beam.DoFn.TimestampParam: (
            a.start // 1_000_000, a.end // 1_000_000, a.windows, t.micros // 1_000_000))
        assert_that(emitted, equal_to([(47, 53, 4, 63), (67, 73, 4, 83), (77, 83, 4, 93)]))


def test_track_incident_opens_an_incident_only_for_a_window_that_continues_none_in_any_arrival_order():
    spans, opens = track_incident([], 0, 3, 1)
    assert (spans, opens) == ([(0, 3)], True)
    assert track_incident(spans, 2, 5, 1) == ([(0, 5)], False)  # overlaps
    assert track_incident([(0, 5)], 6, 9, 1) == ([(0, 9)], False)  # touches (starts one step after the end)
    assert track_incident([(0, 5)], 7, 10, 1) == ([(0, 5), (7, 10)], True)  # a quiet step between them
    assert track_incident([(0, 5)], 7, 10, 1, cooldown_us=1) == ([(0, 10)], False)
    assert track_incident([(97, 103)], 47, 53, 1) == ([(47, 53), (97, 103)], True)  # arrived after a later incident
    assert track_incident([(97, 103)], 90, 96, 1) == ([(90, 103)], False)  # ends one step before it starts
    assert track_incident([(0, 5), (10, 15)], 6, 9, 1) == ([(0, 15)], False)  # bridges two: one incident


def test_each_incident_is_announced_though_a_later_panes_windows_arrive_first():
    stream = (TestStream()
              .add_elements([TimestampedValue(_pane(2, range(100, 104)), Timestamp(100))])
              .add_elements([TimestampedValue(_pane(1, range(50, 54)), Timestamp(100))])
              .advance_watermark_to(Timestamp(200))
              .advance_watermark_to_infinity())
    with beam.Pipeline(options=PipelineOptions(["--streaming", "--runner=DirectRunner"])) as p:
        built = p | stream | BuildAlerts("run", 10_000_000, announce=True)
        assert_that(built.opened | beam.Map(lambda a: (a.start // 1_000_000, a.alert_id)),
                    equal_to([(47, alert_id("m1", 47_000_000, "mid")), (97, alert_id("m1", 97_000_000, "mid"))]),
                    label="OneNoticePerIncident")
        assert_that(built.closed | beam.Map(lambda a: (a.start // 1_000_000, a.end // 1_000_000)),
                    equal_to([(47, 53), (97, 103)]), label="TwoAlerts")


def test_an_incident_is_described_in_one_line_as_a_stream_logs_it():
    from datetime import datetime, timezone

    row = {"alert_id": "ab12", "entity_id": "pump-7", "start": datetime(2026, 1, 5, 6, 24, tzinfo=timezone.utc),
           "end": datetime(2026, 1, 5, 6, 37, 10, tzinfo=timezone.utc), "peak_score": 12.6437, "threshold": 4.70561,
           "severity": "critical", "windows": 3, "top_channels": ["flow", "pressure"]}
    assert describe_incident(row, opened=True) == (
        "incident opened on pump-7 at 2026-01-05T06:24:00Z: critical, score 12.64 (threshold 4.706), top channels "
        "flow, pressure [ab12]")
    assert describe_incident({**row, "top_channels": []}, opened=False) == (
        "incident settled on pump-7, 2026-01-05T06:24:00Z to 2026-01-05T06:37:10Z: critical, peak score 12.64 "
        "(threshold 4.706), 3 window(s), top channels - [ab12]")


MERGE_OFF_THE_MILLISECOND = '''
import apache_beam as beam, numpy as np, sys
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from seqwatch.pipelines.alerts import BuildAlerts
from seqwatch.schemas.elements import ScoredWindows, WindowBatch

def pane(ends_us):  # 100 Hz windows whose ends lie 0.5 ms past a millisecond, every one anomalous
    ends = np.asarray(ends_us, dtype=np.int64)
    n = len(ends)
    wb = WindowBatch("m1", 0, ("a",), 10_000, ends, np.zeros((n, 0, 1), np.float32), np.ones((n, 0, 1), bool), n)
    return ScoredWindows(wb, np.full(n, 5.0), 2.0, np.ones(n, bool), np.array(["warning"] * n), np.full(n, 1e-4),
                         np.ones((n, 1)), None, None, None, 0.9, 4, "mid", "v1")

ends = [1_000_000_500 + 10_000 * i for i in range(5)]
streaming = sys.argv[1] == "stream"
runner = (["--runner=PrismRunner", f"--prism_location={sys.argv[2]}", "--streaming"] if streaming
          else ["--runner=DirectRunner"])
with beam.Pipeline(options=PipelineOptions(runner)) as p:
    if streaming:
        scored = p | (TestStream().add_elements([TimestampedValue(pane(ends), Timestamp(micros=ends[-1]))])
                      .advance_watermark_to(Timestamp(2000)).advance_watermark_to_infinity())
    else:
        scored = p | beam.Create([pane(ends)]) | beam.Map(lambda s: TimestampedValue(s, Timestamp(micros=ends[-1])))
    alerts = (scored | BuildAlerts("run", 2_000_000, announce=streaming)).closed
    assert_that(alerts | beam.Map(lambda a: (a.start, a.end, a.windows)),
                equal_to([(ends[0] - 30_000, ends[-1], 5)]))
'''


@pytest.mark.parametrize("mode", ["batch", "stream"])
def test_an_incident_whose_settling_time_is_not_a_whole_millisecond_is_closed(mode, tmp_path, request):
    """Found by the bug hunt of real data: runners keep timers in whole milliseconds, so the merge's timer, set for
    an incident that settles 0.5 ms past a millisecond (360 Hz ECG, 100 Hz readings off the millisecond), fired
    before that time, found the incident unsettled and set itself again for the same time, without end: a run
    never finished (batch, and a stream on Prism; both hung on the old code). Run in a process of its own, which
    a hang cannot take down with the tests."""
    import subprocess
    import sys

    script = tmp_path / "merge.py"
    script.write_text(MERGE_OFF_THE_MILLISECOND)
    extra = [request.getfixturevalue("prism_location")] if mode == "stream" else []
    result = subprocess.run([sys.executable, str(script), mode, *extra], capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_batch_run_merges_each_entitys_windows_at_the_end_into_the_alerts_the_timer_gives():
    """``BuildAlerts(at_end=True)`` (batch runs): one GroupByKey per entity instead of the stateful merge, whose
    state a batch run's SDK weighs at every access. The same alerts as the timer's merge for panes given out of
    order, with an incident across panes, a cooldown that joins two, and a second entity; nothing opened."""
    def pane(entity, number, ends_s):
        scored = _pane(number, ends_s)
        return scored._replace(windows=scored.windows._replace(entity_id=entity))

    panes = [pane("m1", 3, range(104, 107)), pane("m1", 1, range(50, 54)), pane("m1", 2, range(100, 104)),
             pane("m2", 1, range(60, 62)), pane("m2", 2, range(70, 72))]
    for at_end in (False, True):
        with beam.Pipeline() as p:
            built = (p | f"Panes{at_end}" >> beam.Create(panes)
                     | BuildAlerts("run", 10_000_000, cooldown_us=6_000_000, at_end=at_end))
            closed = built.closed | beam.Map(lambda a: (a.entity_id, a.start // 1_000_000, a.end // 1_000_000,
                                                        a.windows, a.alert_id))
            assert_that(closed, equal_to([("m1", 47, 53, 4, alert_id("m1", 47_000_000, "mid")),
                                          ("m1", 97, 106, 7, alert_id("m1", 97_000_000, "mid")),
                                          ("m2", 57, 71, 4, alert_id("m2", 57_000_000, "mid"))]), label="closed")
            assert_that(built.opened, equal_to([]), label="opened")
    with pytest.raises(ValueError, match="announced as they open in streaming runs only"):
        BuildAlerts("run", 1, announce=True, at_end=True)
