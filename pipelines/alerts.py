"""From scored windows to score rows, alerts and forecasts.

Scoring, thresholding and alerting stay apart: the model handler gives scores and labels; here, consecutive
anomalous windows of one entity become one ``Alert`` (windows that overlap or touch merge, and so do windows
that start within the *cooldown* after the incident so far ends), with an id derived from the entity, the
incident's start and the model, so a rerun or a replay gives the same id.
"""
from __future__ import annotations

import hashlib
import pickle
from typing import Any, NamedTuple, Tuple

import apache_beam as beam
import numpy as np
from apache_beam import coders
from apache_beam.coders import VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from seqwatch.schemas.elements import Alert, Forecast, Score, ScoredWindows

OPENED = "opened"

_SEVERITY_RANK = {"normal": 0, "info": 1, "warning": 2, "critical": 3}


def score_rows(scored: ScoredWindows, run_id: str, only: np.ndarray | None = None) -> list[Score]:
    """One ``Score`` per window, or per window selected by the boolean mask ``only``."""
    wb = scored.windows
    span = (scored.window_length - 1) * wb.step_us
    pick = slice(None) if only is None else np.asarray(only, dtype=bool)
    ends = np.asarray(wb.ends, dtype=np.int64)[pick]
    contributions = np.asarray(scored.contributions)[pick]
    top = np.argmax(contributions, axis=1) if len(contributions) else np.zeros(0, dtype=np.int64)
    # tolist() gives Python ints, floats, bools and strs at once, as int()/float()/bool()/str() would one by one.
    thresholds = np.broadcast_to(np.asarray(scored.threshold, dtype=np.float64), (len(wb.ends),))[pick]
    return [Score(wb.entity_id, end - span, end, s, threshold, a, sev, p, wb.channels[t], tuple(contrib),
                  scored.model_id, scored.model_version, run_id)
            for end, s, threshold, a, sev, p, t, contrib in zip(
                ends.tolist(), np.asarray(scored.score, dtype=np.float64)[pick].tolist(), thresholds.tolist(),
                np.asarray(scored.is_anomaly, dtype=bool)[pick].tolist(), np.asarray(scored.severity)[pick].tolist(),
                np.asarray(scored.tail_probability, dtype=np.float64)[pick].tolist(), top.tolist(),
                contributions.astype(np.float64, copy=False).tolist())]


def describe_incident(alert: dict, opened: bool) -> str:
    """One log line for an incident as a stream announces it (``opened``: its first anomalous window was scored)
    or settles it; ``alert``: a row of the alerts schema (``start`` and ``end`` as UTC datetimes)."""
    def at(t):
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")

    channels = ", ".join(alert["top_channels"]) or "-"
    if opened:
        return (f"incident opened on {alert['entity_id']} at {at(alert['start'])}: {alert['severity']}, score "
                f"{alert['peak_score']:.4g} (threshold {alert['threshold']:.4g}), top channels {channels} "
                f"[{alert['alert_id']}]")
    return (f"incident settled on {alert['entity_id']}, {at(alert['start'])} to {at(alert['end'])}: "
            f"{alert['severity']}, peak score {alert['peak_score']:.4g} (threshold {alert['threshold']:.4g}), "
            f"{alert['windows']} window(s), top channels {channels} [{alert['alert_id']}]")


def alert_id(entity_id: str, start: int, model_id: str) -> str:
    return hashlib.sha256(f"{entity_id}|{start}|{model_id}".encode()).hexdigest()[:20]


def continues(window_start: int, incident_end: int, step_us: int, cooldown_us: int = 0) -> bool:
    """Whether a window starting at ``window_start`` belongs to the incident that ends at ``incident_end``: it
    starts at most one step after that end (it overlaps or touches), or within ``cooldown_us`` more."""
    return window_start <= incident_end + step_us + cooldown_us


def track_incident(spans: list, window_start: int, window_end: int, step_us: int, cooldown_us: int = 0) -> tuple:
    """``(spans, opens)``: the incidents seen so far as sorted ``(start, end)`` spans, with the window added,
    and whether the window opens a new incident (it continues none of them, in either direction: a window that
    arrives after a later incident's is still before it). Arrival order does not matter."""
    touching = [(a, b) for a, b in spans
                if continues(window_start, b, step_us, cooldown_us) and continues(a, window_end, step_us, cooldown_us)]
    start = min([window_start] + [a for a, _ in touching])
    end = max([window_end] + [b for _, b in touching])
    return sorted([s for s in spans if s not in touching] + [(start, end)]), not touching


def incident_groups(windows: list[Score], step_us: int, cooldown_us: int = 0) -> list[list[Score]]:
    """Anomalous windows of one entity grouped into incidents, in time order: a window that starts at most one
    step after the incident so far ends (its windows' latest end) continues it, and so does one that starts
    within ``cooldown_us`` more (a quiet spell shorter than the cooldown does not end an incident, so a flapping
    signal raises one alert, not many)."""
    groups: list[list[Score]] = []
    end = 0
    for w in sorted(windows, key=lambda w: (w.window_start, w.window_end)):
        if groups and continues(w.window_start, end, step_us, cooldown_us):
            groups[-1].append(w)
            end = max(end, w.window_end)
        else:
            groups.append([w])
            end = w.window_end
    return groups


def incident_alert(entity_id: str, group: list[Score], channels: tuple, run_id: str) -> Alert:
    """The alert of one incident's windows (``incident_groups``). ``top_channels`` ranks the model's ``channels``
    by their summed positive contributions over the incident's windows (at most three)."""
    blame = np.sum([np.maximum(w.channel_contributions, 0.0) for w in group], axis=0)
    ranked = tuple(channels[i] for i in np.argsort(-blame, kind="stable")[:3] if blame[i] > 0)
    start = min(w.window_start for w in group)
    peak = max(group, key=lambda w: w.score)
    severity = max((w.severity for w in group), key=_SEVERITY_RANK.get)
    return Alert(alert_id(entity_id, start, peak.model_id), entity_id, start, max(w.window_end for w in group),
                 peak.score, peak.threshold, severity, len(group), ranked or (peak.top_channel,), peak.model_id,
                 peak.model_version, run_id)


def merge_alerts(entity_id: str, windows: list[Score], channels: tuple, step_us: int, run_id: str,
                 cooldown_us: int = 0) -> list[Alert]:
    """Merge anomalous windows of one entity into alerts, one per incident (``incident_groups``)."""
    return [incident_alert(entity_id, group, channels, run_id)
            for group in incident_groups(windows, step_us, cooldown_us)]


def forecast_window(wb) -> int | None:
    """The window of a pane (``WindowBatch``) its forecasts are issued from: the last one whose last step holds a
    reading of every channel; None when there is none. A last step filled across a gap is drawn towards the next
    reading (a meter's half-way to its replacement's count): a forecast issued there would use a reading from
    after it. (After scoring, ``observed`` keeps only the windows' last steps; without it, the last window.)"""
    ends = np.asarray(wb.ends)
    if len(ends) == 0:
        return None
    if wb.observed.ndim == 3 and wb.observed.shape[1]:
        complete = wb.observed[:, -1].all(axis=-1)
        if not complete.any():
            return None
        ends = np.where(complete, ends, np.iinfo(np.int64).min)
    return int(np.argmax(ends))


def forecast_rows(scored: ScoredWindows, run_id: str) -> list[Forecast]:
    """Forecasts issued at the end of the pane's ``forecast_window`` (one set per pane), H steps x C channels."""
    last = None if scored.forecast is None else forecast_window(scored.windows)
    if last is None:
        return []
    wb = scored.windows
    issued = int(wb.ends[last])
    rows = []
    horizon = scored.forecast.shape[1]
    for h in range(horizon):
        for c, channel in enumerate(wb.channels):
            rows.append(Forecast(wb.entity_id, issued, issued + (h + 1) * wb.step_us, h + 1, channel,
                                 float(scored.forecast[last, h, c]), float(scored.lower[last, h, c]),
                                 float(scored.upper[last, h, c]), scored.coverage, scored.model_version, run_id))
    return rows


def opened_alert(entity_id: str, first: Score, run_id: str) -> Alert:
    """The notice that an incident has begun, from its first anomalous window: same id as the incident's alert
    when that window turns out to be the incident's first; ``end``, ``windows`` and the peak are as of now."""
    return Alert(alert_id(entity_id, first.window_start, first.model_id), entity_id, first.window_start,
                 first.window_end, first.score, first.threshold, first.severity, 1, (first.top_channel,),
                 first.model_id, first.model_version, run_id)


class _MergeIncidents(beam.DoFn):
    """Per entity: buffer anomalous windows (each element: one pane's, in start order); an incident is settled
    when the watermark has passed its last window by ``settle_us`` (so every window that could continue it has
    been scored), plus ``cooldown_us`` with a cooldown. When the timer fires, the buffered windows are grouped
    into incidents (``incident_groups``); the settled ones are emitted as alerts, the others stay buffered, and
    the timer is set for them again. A pane that reaches the merge after a later one (runners do not keep panes
    in order) can therefore not close an incident before a window that continues it has been scored.

    Streaming (``announce``): the timer is due at the earliest settling time of what is buffered, so each
    incident's alert comes once it has settled, although later incidents of the entity keep coming (a timer
    that only moved later, to the latest window's settling, had held every alert of an entity whose incidents
    came less than a settle time apart until it had been quiet that long: about 50 minutes late in the bug
    hunt). Batch: the watermark jumps to the end once all input is read, so one timer at the latest settling
    time fires once with everything. Either way every alert is ``incident_alert`` of the same windows.

    ``announce`` (streaming): also emit, on the ``opened`` output, a notice as soon as a window arrives that
    continues no incident seen so far (``track_incident``), without waiting for the incident to settle. Its id is the
    incident's when that window turns out to be the incident's first, as it is when windows arrive in order."""

    # One pickled blob per pane's anomalous windows, not one Score per window: the SDK's state cache weighs
    # what a bag read returns object by object (objsize), which took a third of a fleet run's time when many
    # windows were anomalous; a blob weighs in one step.
    PENDING = BagStateSpec("pending", coders.BytesCoder())
    OPEN_SPANS = ReadModifyWriteStateSpec("open_spans", coders.PickleCoder())
    CLOSE_AT = ReadModifyWriteStateSpec("close_at", VarIntCoder())
    CLOSE = TimerSpec("close", TimeDomain.WATERMARK)

    def __init__(self, run_id: str, settle_us: int, announce: bool = False, cooldown_us: int = 0):
        self.run_id = run_id
        self.settle_us = settle_us
        self.announce = announce
        self.cooldown_us = cooldown_us

    def process(self, element, pending=beam.DoFn.StateParam(PENDING), open_spans=beam.DoFn.StateParam(OPEN_SPANS),
                close_at=beam.DoFn.StateParam(CLOSE_AT), close=beam.DoFn.TimerParam(CLOSE)):
        entity, (rows, step_us, channels) = element
        pending.add(pickle.dumps((rows, step_us, channels), protocol=pickle.HIGHEST_PROTOCOL))
        self._set_close(close_at, close, max(row.window_end for row in rows) + self.settle_us + self.cooldown_us)
        if self.announce:
            spans = open_spans.read() or []
            for row in rows:
                spans, opens = track_incident(spans, row.window_start, row.window_end, step_us, self.cooldown_us)
                if opens:
                    yield beam.pvalue.TaggedOutput(OPENED, opened_alert(entity, row, self.run_id))
            open_spans.write(spans)

    def _set_close(self, close_at, close, due: int) -> None:
        """Set the one timer for ``due`` when it is later (batch) or earlier (streaming) than the one set. ``due``
        is rounded up to a whole millisecond: runners keep timers in milliseconds, and one set for 100 µs past a
        millisecond fired at the millisecond, before its incident had settled, and was set again for the same time,
        without end (a 360 Hz ECG run spun at 9 GB for 10 minutes: found by the bug hunt of real data)."""
        due = -(-due // 1000) * 1000
        current = close_at.read()
        if current is None or (due < current if self.announce else due > current):
            close_at.write(due)
            close.set(Timestamp(micros=due))

    @on_timer(CLOSE)
    def on_close(self, entity=beam.DoFn.KeyParam, pending=beam.DoFn.StateParam(PENDING),
                 open_spans=beam.DoFn.StateParam(OPEN_SPANS), close_at=beam.DoFn.StateParam(CLOSE_AT),
                 close=beam.DoFn.TimerParam(CLOSE), fired=beam.DoFn.TimestampParam):
        close_at.clear()  # the one timer has fired: windows still buffered, or the next window, set a new one
        items = [pickle.loads(blob) for blob in pending.read()]
        if not items:
            return  # nothing buffered (a firing with no window): leave the incident's state as it is
        pending.clear()
        open_spans.clear()
        _, step_us, channels = items[0]
        unsettled = []
        for group in incident_groups([row for rows, _, _ in items for row in rows], step_us, self.cooldown_us):
            due = max(w.window_end for w in group) + self.settle_us + self.cooldown_us
            if due > fired.micros:
                unsettled.append((group, due))
                continue
            # Stamped when the timer fires, not at the incident's end: an earlier stamp would be behind the
            # watermark, and windowed consumers downstream (the streaming counts) would drop it as late.
            yield beam.window.TimestampedValue(incident_alert(entity, group, channels, self.run_id), fired)
        if unsettled:
            rows = [w for group, _ in unsettled for w in group]
            pending.add(pickle.dumps((rows, step_us, channels), protocol=pickle.HIGHEST_PROTOCOL))
            open_spans.write(sorted((min(w.window_start for w in g), max(w.window_end for w in g))
                                    for g, _ in unsettled))
            for _, due in unsettled:
                self._set_close(close_at, close, due)


class AlertOutputs(NamedTuple):
    """``closed``: one ``Alert`` per incident once it is over; ``opened``: early notices (``announce`` only)."""

    closed: beam.PCollection
    opened: beam.PCollection


class BuildAlerts(beam.PTransform):
    """``ScoredWindows -> AlertOutputs``: anomalous windows of each entity merged into incidents, across panes.

    ``settle_us``: how long after an anomalous window ends (in event time) every window that could continue
    its incident has been scored; the pipelines pass ``L * step + pane length + context``. ``announce``: also
    give a notice when an incident opens (streaming: an alert within a pane of the reading that caused it).
    ``cooldown_us``: an anomalous window starting within this long after an incident's end continues it
    (0: only windows that overlap or touch do); a closed alert then waits that much longer to settle. ``at_end``
    (batch): merge each entity's anomalous windows once, after one GroupByKey, as the timer does when a batch
    input is done (the same alerts; ``opened`` is then empty). Through the stateful step, every state access of a
    batch run goes through the SDK's state cache, which weighs each value by scanning the globals of every loaded
    module (about 1 ms each where Keras and JAX are loaded): a fleet of 2,000 entities with 64 incidents weighed
    448 times, and one where every entity alerts would weigh thousands of times."""

    def __init__(self, run_id: str, settle_us: int, announce: bool = False, cooldown_us: int = 0,
                 at_end: bool = False):
        super().__init__()
        if cooldown_us < 0:
            raise ValueError(f"the alert cooldown must be >= 0, got {cooldown_us} us")
        if at_end and announce:
            raise ValueError("incidents are announced as they open in streaming runs only, not merged at the end")
        self.run_id = run_id
        self.settle_us = settle_us
        self.announce = announce
        self.cooldown_us = cooldown_us
        self.at_end = at_end

    def expand(self, scored):
        run_id = self.run_id

        def anomalous(sw: ScoredWindows):
            # A pane's anomalous windows travel as one element, so a runner cannot hand them to the merge in
            # separate bundles with a timer firing in between (seen on Prism under load: an incident was cut
            # in two and its first part lost).
            if not np.any(sw.is_anomaly):
                return
            rows = sorted(score_rows(sw, run_id, only=sw.is_anomaly), key=lambda r: r.window_start)
            yield sw.windows.entity_id, (rows, sw.windows.step_us, sw.windows.channels)

        timeline = (scored
                    | "AnomalousWindows" >> beam.FlatMap(anomalous)
                    | "OneTimeline" >> beam.WindowInto(beam.window.GlobalWindows()))
        if self.at_end:
            cooldown_us = self.cooldown_us

            def merged_at_end(entity, panes):
                panes = list(panes)
                _, step_us, channels = panes[0]
                return merge_alerts(entity, [row for rows, _, _ in panes for row in rows], channels, step_us,
                                    run_id, cooldown_us)

            closed = (timeline
                      | "GroupIncidents" >> beam.GroupByKey().with_input_types(Tuple[str, Any])
                      | "MergeIncidentsAtEnd" >> beam.FlatMapTuple(merged_at_end))
            return AlertOutputs(closed, closed | "NoneOpened" >> beam.FlatMap(lambda alert: []))
        merged = (timeline
                  | "MergeIncidents" >> beam.ParDo(_MergeIncidents(run_id, self.settle_us, self.announce,
                                                                   self.cooldown_us))
                  .with_input_types(Tuple[str, Any]).with_outputs(OPENED, main="closed"))
        return AlertOutputs(merged.closed, merged[OPENED])
