"""Validation of reading batches: cheap checks first, then the great-expectations suite, per batch.

Each failing reading (not the whole batch) leaves on the ``quarantine`` output with a reason code; the raw
line is filled in at the quarantine sink (``seqwatch.pipelines.sinks``), which re-reads it from the source
file, so batches need not carry every raw line.
"""
from __future__ import annotations

from typing import Iterator

import apache_beam as beam
import numpy as np

from seqwatch.pipelines.sources import QUARANTINE
from seqwatch.schemas.elements import Quarantined, ReadingBatch


def quarantine_rows(frame, mask, stage: str, code: str, reasons, run_id: str) -> Iterator[Quarantined]:
    """Quarantined records for the rows of a reading frame selected by ``mask`` (raw text filled in later)."""
    rows = frame[mask]
    reasons = reasons if isinstance(reasons, (list, np.ndarray)) else [reasons] * len(rows)
    for source, line, reason in zip(rows["source"], rows["line"], reasons):
        yield Quarantined("", str(source), int(line), "", 1, stage, code, reason, run_id)


class _ValidateBatch(beam.DoFn):
    def __init__(self, channels: tuple, suite: dict, run_id: str, earliest_us: int, latest_us: int):
        self.channels = channels
        self.suite = suite
        self.run_id = run_id
        self.earliest_us = earliest_us
        self.latest_us = latest_us
        self._validator = None

    def setup(self):
        from seqwatch.schemas.validation import SuiteValidator
        self._validator = SuiteValidator(self.suite)

    def process(self, batch: ReadingBatch):
        frame = batch.frame
        unknown = ~frame["channel"].isin(self.channels).to_numpy()
        future = frame["timestamp"].to_numpy() > self.latest_us
        early = frame["timestamp"].to_numpy() < self.earliest_us
        for mask, code, reason in (
                (unknown, "unknown_channel", f"the model has no such channel (it has {list(self.channels)})"),
                (future & ~unknown, "future_timestamp", "the timestamp lies too far in the future"),
                (early & ~unknown & ~future, "before_horizon", "the timestamp lies before the configured horizon")):
            for q in quarantine_rows(frame, mask, "validate", code, reason, self.run_id):
                yield beam.pvalue.TaggedOutput(QUARANTINE, q)
        cheap_ok = ~(unknown | future | early)
        frame = frame[cheap_ok]
        failed = self._validator.failures(frame[["entity_id", "channel", "timestamp", "value"]])
        bad = failed >= 0
        if bad.any():
            reasons = [f"failed {self._validator.descriptions[i]}" for i in failed[bad]]
            for q in quarantine_rows(frame, bad, "validate", "expectation_failed", reasons, self.run_id):
                yield beam.pvalue.TaggedOutput(QUARANTINE, q)
            frame = frame[~bad]
        if len(frame):
            yield ReadingBatch(frame.reset_index(drop=True))


class ValidateReadings(beam.PTransform):
    """``ReadingBatch -> {main: ReadingBatch, quarantine: Quarantined}``.

    Checks, in order: the channel is one the model knows; the timestamp is within ``[earliest_us,
    latest_us]``; the great-expectations ``suite`` (a suite dict, see ``seqwatch.schemas.validation``)."""

    def __init__(self, channels: tuple, suite: dict, run_id: str, earliest_us: int, latest_us: int):
        super().__init__()
        self._fn = _ValidateBatch(tuple(channels), suite, run_id, earliest_us, latest_us)

    def expand(self, batches):
        return batches | "CheckReadings" >> beam.ParDo(self._fn).with_outputs(QUARANTINE, main="valid")
