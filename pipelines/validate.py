"""Validation of reading batches: cheap checks first, then the great-expectations suite, per batch.

Each failing reading (not the whole batch) leaves on the ``quarantine`` output with a reason code; the raw
line is filled in at the quarantine sink (``seqwatch.pipelines.sinks``), which re-reads it from the source
file, so batches need not carry every raw line. Checks that need event-time order per entity (duplicates,
monotone meters, stuck channels) run where each entity's readings meet, in ``WindowReadings``.
"""
from __future__ import annotations

import datetime
import itertools
import json

from typing import Iterator

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.utils.windowed_value import WindowedValue

from seqwatch.pipelines.sinks import QuarantinePacker
from seqwatch.pipelines.sources import QUARANTINE
from seqwatch.pipelines.stage_metrics import StageTimer
from seqwatch.schemas.elements import Quarantined, ReadingBatch


# Sources whose records cannot be re-read: brokers' messages (broker_sources) and the elements of a PCollection
# (embed.DetectAnomalies names its source "pcollection:<source>"). Their quarantined readings keep their fields.
PCOLLECTION_PREFIX = "pcollection:"
MESSAGE_SOURCE_PREFIXES = ("kafka:", "pubsub:", "mqtt:", PCOLLECTION_PREFIX)


def quarantine_rows(frame, mask, stage: str, code: str, reasons, run_id: str,
                    entity: str | None = None) -> Iterator[Quarantined]:
    """Quarantined records for the rows of a reading frame selected by ``mask`` (raw text filled in later).

    ``reasons`` is one string for all rows or one per selected row. Each record's ``column`` is the reading's
    channel, so that the one bad reading of a wide row (which stands for several) can be told apart. ``entity``:
    the rows' entity when the frame has no ``entity_id`` column (a pane's frame: its key holds it)."""
    if not np.any(mask):  # the common case: nothing to quarantine, and selecting no rows still costs a copy
        return iter(())
    rows = frame[mask]
    n = len(rows)
    reasons = reasons if isinstance(reasons, (list, np.ndarray)) else itertools.repeat(reasons, n)
    sources = [str(source) for source in rows["source"]]
    lines = rows["line"].astype(np.int64).tolist()
    channels = [str(channel) for channel in rows["channel"]]
    if any(source.startswith(MESSAGE_SOURCE_PREFIXES) for source in set(sources)):
        # A file's line is re-read at the quarantine sink; a message cannot be, so keep its fields now.
        entities = rows["entity_id"] if "entity_id" in rows else itertools.repeat(entity, n)
        raws = ["" if not source.startswith(MESSAGE_SOURCE_PREFIXES) else json.dumps(
            {"entity_id": None if entity is None else str(entity), "channel": channel, "timestamp": int(stamp),
             "value": float(value)})
            for source, entity, channel, stamp, value in zip(sources, entities, channels, rows["timestamp"],
                                                            rows["value"])]
    else:
        raws = itertools.repeat("", n)
    # the records made by map rather than a loop: a wide file of 50,000 unknown tags is 800,000 of them
    return map(Quarantined, raws, sources, lines, channels, itertools.repeat(1, n), itertools.repeat(stage, n),
               itertools.repeat(code, n), reasons, itertools.repeat(run_id, n))


def quarantine_pane_rows(rows, mask, stage: str, code: str, reasons, run_id: str,
                         entity: str | None = None) -> Iterator[Quarantined]:
    """``quarantine_rows`` for the rows ``mask`` selects of a pane's ``pane_pieces.PaneRows``: a frame is built of
    those rows only."""
    if not np.any(mask):
        return iter(())
    chosen = rows.take(mask).frame()
    return quarantine_rows(chosen, np.ones(len(chosen), dtype=bool), stage, code, reasons, run_id, entity)


class _ValidateBatch(beam.DoFn):
    """Validates each batch; with ``merge_below`` (batch runs), batches of fewer readings than that (a small
    file's) are held and judged together, up to that many readings at a time: the suite's rules are row-level,
    so the verdicts are the same, at a fraction of the fixed cost of a call (600 small wide files: 1.7 s alone,
    0.5 s in calls of 70). Each batch still leaves as itself (minus its failing rows), in the order it came, so
    a file's batches stay together downstream (``windows._KeyByPane`` relies on that)."""

    def __init__(self, channels: tuple, suite: dict, run_id: str, earliest_us: int, latest_us: int,
                 merge_below: int = 0, known_duplicates: tuple = (), packed: bool = False):
        self.channels = channels
        self.packed = packed
        self.known_duplicates = frozenset((str(s), int(n), str(c)) for s, n, c in known_duplicates)
        self.suite = suite
        self.run_id = run_id
        self.earliest_us = earliest_us
        self.latest_us = latest_us
        self.merge_below = merge_below
        self._validator = None
        self.timer = StageTimer("validate")

    def setup(self):
        from seqwatch.schemas.validation import SuiteValidator
        self._validator = SuiteValidator(self.suite)

    def start_bundle(self):
        self._held: list = []  # (batch, timestamp, window) of small batches not yet judged
        self._held_readings = 0

    def process(self, batch: ReadingBatch, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        with self.timer:
            if len(batch) >= self.merge_below:
                return self._judge_held() + list(self._validate(batch))
            self._held.append((batch, timestamp, window))
            self._held_readings += len(batch)
            return self._judge_held() if self._held_readings >= self.merge_below else []

    def finish_bundle(self):
        with self.timer:
            return self._judge_held()

    def _judge_held(self) -> list:
        """The held batches judged in one call, as outputs stamped with their own batch's timestamp and window:
        each batch's kept rows, then the quarantined records."""
        held, self._held, self._held_readings = self._held, [], 0
        if not held:
            return []
        frames = [batch.frame for batch, _, _ in held]
        records, keep = self._judge(frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True))
        starts = np.cumsum([0] + [len(frame) for frame in frames])
        out = []
        for (_, timestamp, window), frame, start in zip(held, frames, starts.tolist()):
            kept = keep[start:start + len(frame)]
            if kept.any():
                out.append(WindowedValue(ReadingBatch(frame[kept].reset_index(drop=True)), timestamp, [window]))
        by_batch: dict = {}  # held batch -> its records
        for row, q in records:
            by_batch.setdefault(int(np.searchsorted(starts, row, side="right")) - 1, []).append(q)
        for k, batch_records in by_batch.items():
            _, timestamp, window = held[k]
            out += [beam.pvalue.TaggedOutput(QUARANTINE, WindowedValue(q, timestamp, [window]))
                    for q in self._given_out(batch_records)]
        return out

    def _validate(self, batch: ReadingBatch):
        records, keep = self._judge(batch.frame)
        for q in self._given_out([q for _, q in records]):
            yield beam.pvalue.TaggedOutput(QUARANTINE, q)
        if keep.any():
            yield ReadingBatch(batch.frame[keep].reset_index(drop=True))

    def _given_out(self, records: list) -> list:
        """``records`` as they leave: one by one, or (``packed``) as a ``PackedQuarantine`` per source."""
        if not self.packed or not records:
            return records
        packer = QuarantinePacker(rows=None)  # one table per source
        for q in records:
            packer.add(q)
        return packer.flush()

    def _judge(self, frame) -> tuple[list, np.ndarray]:
        """``([(row, quarantined record)], rows kept)`` of a reading frame: the known duplicates, the cheap checks,
        then the suite."""
        records = []
        checks = cheap_checks(frame, self.channels, self.earliest_us, self.latest_us)
        if self.known_duplicates:
            known = np.fromiter(((str(s), int(n), str(c)) in self.known_duplicates
                                 for s, n, c in zip(frame["source"], frame["line"], frame["channel"])),
                                dtype=bool, count=len(frame))
            checks = [(known, "duplicate", DUPLICATE_REASON)] + [(mask & ~known, code, reason)
                                                                 for mask, code, reason in checks]
        for mask, code, reason in checks:
            records += zip(np.flatnonzero(mask).tolist(),
                           quarantine_rows(frame, mask, "validate", code, reason, self.run_id))
        keep = ~np.logical_or.reduce([mask for mask, _, _ in checks])
        rest = frame[keep]
        failed = self._validator.failures(rest)
        bad = failed >= 0
        if bad.any():
            rows = rest[bad]
            reasons = [self._validator.reason(i, entity, channel, stamp, value) for entity, channel, stamp, value, i
                       in zip(rows["entity_id"], rows["channel"], rows["timestamp"], rows["value"], failed[bad])]
            failing = np.flatnonzero(keep)[bad]
            records += zip(failing.tolist(),
                           quarantine_rows(rest, bad, "validate", "expectation_failed", reasons, self.run_id))
            keep[failing] = False
        return records, keep


def cheap_checks(frame, channels: tuple, earliest_us: int, latest_us: int) -> list:
    """``[(mask, reason_code, reason)]`` of the structural checks, each mask excluding the rows of the ones
    before it: the model knows the channel; the timestamp lies in ``[earliest_us, latest_us]``."""
    unknown = ~frame["channel"].isin(channels).to_numpy()
    stamps = frame["timestamp"].to_numpy()
    future = (stamps > latest_us) & ~unknown
    early = (stamps < earliest_us) & ~unknown & ~future
    return [(unknown, "unknown_channel", f"the model has no such channel (it has {list(channels)})"),
            (future, "future_timestamp", FUTURE_REASON),
            (early, "before_horizon", horizon_reason(earliest_us))]


# The reasons name the likely causes; they hold no clock reading, so that a rerun writes the same records.
FUTURE_REASON = ("the timestamp lies too far in the future (after the run's clock and its tolerance): a clock set "
                 "wrong, or epoch numbers in a finer unit than they were read as (set the mapping's timestamp_unit)")


def horizon_reason(earliest_us: int) -> str:
    earliest = datetime.datetime.fromtimestamp(earliest_us / 1e6, datetime.timezone.utc)
    return (f"the timestamp lies before the horizon, {earliest:%Y-%m-%dT%H:%M:%SZ}: a clock that was never set, or "
            f"times counted from the start of a recording (elapsed seconds, Excel serial days) rather than dates; "
            f"--earliest sets the horizon for older readings")


class ValidateReadings(beam.PTransform):
    """``ReadingBatch -> {main: ReadingBatch, quarantine: Quarantined}``.

    Checks, in order: the channel is one the model knows; the timestamp is within ``[earliest_us,
    latest_us]``; the great-expectations ``suite`` (a suite dict, see ``seqwatch.schemas.validation``)."""

    def __init__(self, channels: tuple, suite: dict, run_id: str, earliest_us: int, latest_us: int,
                 merge_below: int = 0, known_duplicates: tuple = (), packed_quarantine: bool = False):
        """``merge_below`` (batch runs only: it holds batches until the bundle ends): batches of fewer readings are
        judged together (``_ValidateBatch``). ``known_duplicates``: ``(source, line, channel)`` of readings
        quarantined as ``duplicate`` first (``RunConfig.known_duplicates``). ``packed_quarantine`` (a batch run's):
        the quarantine output holds a ``PackedQuarantine`` per source and batch judged, not one record each (a wide
        file of 50,000 columns the model lacks is 800,000 records in 16 rows)."""
        super().__init__()
        self._fn = _ValidateBatch(tuple(channels), suite, run_id, earliest_us, latest_us, merge_below,
                                  known_duplicates, packed_quarantine)

    def expand(self, batches):
        return batches | "CheckReadings" >> beam.ParDo(self._fn).with_outputs(QUARANTINE, main="valid")


DUPLICATE_REASON = "a reading with the same entity, channel and timestamp came earlier"


def _sort_codes(column: pd.Series) -> np.ndarray:
    """Integer codes that sort as pandas sorts the column: a categorical by its categories' order, other
    columns by value."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy()
    return pd.factorize(column, sort=True)[0]


def repeated_readings(frame) -> np.ndarray:
    """The rows of a long frame that a run quarantines as ``duplicate``: those with the entity, channel and
    timestamp of an earlier row, earlier by ``source`` and ``line`` where the frame has them (the order in which
    ``windows`` keeps the first), else by row order."""
    if not len(frame):
        return np.zeros(0, dtype=bool)
    order = (np.lexsort((frame["line"].to_numpy(), _sort_codes(frame["source"])))
             if {"source", "line"} <= set(frame.columns) else np.arange(len(frame)))
    repeated = np.zeros(len(frame), dtype=bool)
    repeated[order] = frame.iloc[order].duplicated(["entity_id", "channel", "timestamp"], keep="first").to_numpy()
    return repeated


def valid_history(frame, suite: dict, earliest_us: int, latest_us: int, chunk_rows: int = 100_000):
    """The readings of a long frame of history (``entity_id, channel, timestamp, value``) that a run would let
    through validation, ``{reason_code: n}`` of the others, and ``{reason_code: reason}`` of the first of each.

    For data outside a pipeline, such as ``seqwatch train``'s input: a model learns from the readings a run
    scores, not from sentinel values (``-9999`` for "no reading") or physically impossible ones that a run
    quarantines; those would set its scaler and what it learns is normal. The checks are the run's, in its
    order, with its reasons: the timestamp lies in ``[earliest_us, latest_us]``; the suite's expectations; no
    earlier reading has the same entity, channel and timestamp (``duplicate``: a run keeps the first by source and
    line, as ``windows`` orders a pane's readings, and quarantines the others; averaged into the grid, two
    conflicting values would train a value no sensor read); a monotone meter does not go back (each entity's
    readings in event time). Stuck channels are scored by a run, so they stay. The suite judges ``chunk_rows``
    readings at a time, as a run's batches are judged (a suite's great-expectations rules would otherwise see all
    of a long history at once)."""
    from seqwatch.pipelines.stateful_checks import check_pane
    from seqwatch.schemas.validation import StatefulRules, SuiteValidator

    counts: dict = {}
    first: dict = {}

    def leave_out(data, mask, code, reason):
        if mask.any():
            counts[code] = counts.get(code, 0) + int(mask.sum())
            first.setdefault(code, reason(int(np.flatnonzero(mask)[0])) if callable(reason) else reason)
            data = data[~mask]
        return data

    # The run's cheap checks, with its reasons (every channel of a history is one its model learns: none unknown).
    checks = cheap_checks(frame, tuple(frame["channel"].unique()), earliest_us, latest_us)
    for mask, code, reason in checks:
        if mask.any():
            counts[code], first[code] = int(mask.sum()), reason
    if counts:
        frame = frame[~np.logical_or.reduce([mask for mask, _, _ in checks])]
    validator = SuiteValidator(suite)
    failed = np.concatenate([validator.failures(frame.iloc[start:start + chunk_rows])
                             for start in range(0, len(frame), chunk_rows)] or [np.zeros(0, dtype=np.int64)])

    def failure(i, judged=frame):
        return validator.reason(failed[i], judged["entity_id"].iloc[i], judged["channel"].iloc[i],
                                judged["timestamp"].iloc[i], judged["value"].iloc[i])

    frame = leave_out(frame, failed >= 0, "expectation_failed", failure)
    frame = leave_out(frame, repeated_readings(frame), "duplicate", DUPLICATE_REASON)
    rules = StatefulRules.from_suite(suite)
    if rules.monotonic_channels and len(frame):
        went_back, reasons = np.zeros(len(frame), dtype=bool), []
        for _, rows in frame.groupby("entity_id", observed=True, sort=False).indices.items():
            checks = check_pane(frame.iloc[rows][["channel", "timestamp", "value"]], rules)
            went_back[rows] = checks.decrease
            reasons += checks.reasons
        frame = leave_out(frame, went_back, "monotonic_decrease", reasons[0] if reasons else "")
    return (frame.reset_index(drop=True) if counts else frame), counts, first
