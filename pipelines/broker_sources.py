"""Streaming sources: readings from Kafka, from Pub/Sub, or from a file replayed at N times real speed.

Each source is a PTransform ``PBegin -> {main: ReadingBatch, quarantine: Quarantined, counts: (name, n)}``,
tagged like the batch source ``seqwatch.pipelines.sources.ReadInputFiles`` (main output ``readings``), so the
streaming pipeline plugs the same downstream transforms onto any of them.

A message is one JSON object ``{"entity_id": ..., "channel": ..., "timestamp": ISO 8601 or epoch number,
"value": ...}`` (other key names through a long-format ``InputMapping``). Messages are batched where they are
read (one element per poll of the broker, not per message: Beam's per-element cost would otherwise dominate)
and parsed column-wise with the batch parser (``seqwatch.pipelines.parsing.parse_rows``), so a timestamp or a
value is accepted or refused exactly as in a file. A message that is not a JSON object with the four fields
goes to quarantine as ``malformed_row``; bad fields get the batch parser's reason codes. ``source`` is
``kafka:<topic>/<partition>``, ``pubsub:<subscription>`` or the file's path; ``line`` is the Kafka offset, the
Pub/Sub message id, or the file's line.

**Event time.** Every reading keeps its own event time in the ``timestamp`` column. A batch's element
timestamp is the *smallest* event time in it, so a batch is never later than any of its readings. With
``align_to_window_s`` a batch is also cut at fixed event-time window boundaries (aligned to the epoch), so
that all readings of a batch fall in the window of its timestamp; without it a batch spanning a window
boundary lands whole in the window of its first reading (so set it to the downstream window or pane size).
Counts go with each batch; quarantine elements carry the timestamp of the earliest batch of their poll (or, for
a poll without one good reading, the latest event time the reader has seen), never earlier than the reader's
watermark. The watermark of a reader is the largest event time it has seen minus ``max_out_of_orderness_s``
(for Kafka the smallest such value over the reader's partitions); readings older than that arrive as late
data for the windows downstream. Pub/Sub does not keep order: give it a margin.

**Readers.** ``KafkaReadings`` and ``PubSubReadings`` read with splittable DoFns over the Python clients
(``confluent-kafka``, ``google-cloud-pubsub``), which run on every portable runner (Prism, Flink, Spark,
Dataflow); ``ReplayFile`` plays a file on the wall clock. On Beam's Python DirectRunner an unbounded read runs
as a batch (apache/beam#21987): use Prism (``--runner=PrismRunner --prism_location=.tools/bin/prism
--streaming``) for real streaming. Two alternatives use Beam's own IOs and batch right after them:
``KafkaReadings(expansion_service=...)`` uses ``ReadFromKafka`` (a Java cross-language transform: it needs the
IO expansion service and a Java SDK harness, i.e. Dataflow, or Flink/Spark with Docker), and
``PubSubReadings(native=True)`` uses ``ReadFromPubSub`` (only Dataflow and the legacy DirectRunner implement it;
Prism refuses ``beam:transform:pubsub_read:v1``).

Delivery: Kafka offsets are claimed in the restriction (a retried bundle rereads exactly the same offsets) and,
with a ``group_id``, committed when the bundle is finalized; Pub/Sub messages are acknowledged when the bundle
is finalized, so a failed bundle's messages are redelivered (at least once; duplicates go to the downstream
duplicate check).

Quiet sources: a poll gathers messages for its batch time (``max_bundle_s``, ``--batch-seconds``); one that has
received nothing by then waits on in its bundle for a first message, up to ``QUIET_POLL_S`` in all, and passes it
on a batch time after it came, as at the start of a poll; a stop request, a sign of an outage, and the moment
``--stop-after-idle`` or ``--idle-watermark`` comes due end the wait. Each bundle costs the runner: a quiet stream
on Prism had spent 0.07-0.09 cores of Prism's CPU on a bundle every 0.5-0.7 s.

Stopping: a reader given ``stop`` (a ``seqwatch.pipelines.stop_request.StopRequest``) ends after the poll that
sees the request, as at its idle end: what it took is emitted (and committed or acknowledged), and its watermark
goes to the end of time, so everything downstream is written. Beam's own IOs (the two alternatives above) take no
request: their runner drains them.
"""
from __future__ import annotations

import json
import functools
import logging
import math
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.io.iobase import RestrictionTracker
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP, Duration, Timestamp

from seqwatch.pipelines.parsing import WIDE_ENTITY_COLUMN, FileLayout, parse_rows
from seqwatch.pipelines.sources import COUNTS, QUARANTINE, FileReader
from seqwatch.pipelines.stop_request import StopRequest
from seqwatch.schemas.elements import Quarantined, ReadingBatch
from seqwatch.schemas.mapping import LONG_COLUMNS, InputMapping

__all__ = ["KafkaReadings", "PubSubReadings", "ReplayFile", "MessageParser", "KAFKA_START", "DEFAULT_MAX_BATCH"]

DEFAULT_MAX_BATCH = 5_000
# A replay plays a pause between two readings that is longer than this, on the wall clock, in this time: a night
# without readings, or one timestamp years off, would otherwise hold the rest of the file back for hours.
DEFAULT_REPLAY_MAX_WAIT_S = 5.0
KAFKA_START = ("committed", "earliest", "latest")
_ENDLESS = sys.maxsize  # the stop of an unbounded offset range
QUIET_TOPIC_CHECK_S = 10.0  # a Kafka topic without messages for this long is looked up on the broker
# A poll that has received nothing by the end of its batch time waits on for a first message, up to this long in
# all, instead of ending its bundle (``_quiet_wait_s``): each bundle costs the runner, and a quiet stream on Prism
# spent 0.07-0.09 cores of Prism's CPU on its bundles of 0.5 s (BENCHMARKS.md, "A quiet stream's CPU").
QUIET_POLL_S = 5.0
_STAGE = "parse"
_ORIGIN_ENTITY = "\x00origin"  # the field a wide message's entity from its topic or key travels in (no JSON key)


# ---------------------------------------------------------------------------------------------------------
# Parsing a batch of messages (plain Python, no Beam: unit-testable and shared by every reader).


@dataclass
class ParsedMessages:
    """The outcome of parsing one batch of messages."""

    batches: list  # [(ReadingBatch, min event time µs)], one per event-time window when aligned
    quarantine: list  # [Quarantined]
    records: int  # messages in

    @property
    def min_time_us(self) -> int | None:
        return min((t for _, t in self.batches), default=None)


class MessageParser:
    """Parses JSON reading messages column-wise: ``parse(source, positions, payloads) -> ParsedMessages``.

    ``positions`` (offsets, message ids) become the readings' ``line``; ``payloads`` are ``bytes`` or ``str``.
    ``mapping`` sets the timestamp unit, zone and format, and the message's shape:

    - long (the default): one reading per message, ``{"entity_id", "channel", "timestamp", "value"}``; the
      mapping's ``columns`` rename the keys;
    - wide: one message per entity and time with a key per channel, as devices publish their state
      (``{"ts": ..., "device": "pump-01", "flow": 95.7, "pressure": 2.98}``): ``timestamp`` names the time key,
      ``entity`` the entity key (``{"column": KEY}``), a fixed id (``{"value": ID}``), a level of the
      message's MQTT topic (``{"from_topic": 1}``: ``plant/pump-01/state`` is ``pump-01``) or its Kafka key
      (``{"from_key": true}``; by default the key ``entity_id``), ``channels`` the channel keys and their names
      (default: every other key but ``ignore``). Each channel key the message has is one reading; a key it
      lacks is no reading (a message is not a row of cells), and a message with no channel key is quarantined.

    ``align_to_window_us`` cuts the readings into one batch per fixed event-time window. Never raises for a bad
    message: it is quarantined with a reason."""

    def __init__(self, run_id: str, mapping: InputMapping | None = None, align_to_window_us: int | None = None):
        mapping = mapping or InputMapping(format="long", extra_columns="ignore")
        if align_to_window_us is not None and align_to_window_us <= 0:
            raise ValueError(f"align_to_window_us must be > 0, got {align_to_window_us}")
        self.run_id = run_id
        self.mapping = mapping
        self.align_to_window_us = align_to_window_us
        self.wide = mapping.format == "wide"
        self.topic_level = mapping.entity.get("from_topic") if self.wide else None
        self.from_key = bool(mapping.entity.get("from_key")) and self.wide
        if self.wide:
            entity_key = mapping.entity.get("column")
            if mapping.entity.get("from_filename"):  # a message has no file name: it names its entity itself
                entity_key = WIDE_ENTITY_COLUMN
            self._entity_value = mapping.entity.get("value")
            self._keys = (mapping.timestamp,) + ((entity_key,) if entity_key else ())
            self._taken = {*self._keys, *mapping.ignore}
            # The entity from the message's topic or key travels as a field of its own, under a name no JSON key
            # has.
            origin = self.topic_level is not None or self.from_key
            self._entity_key = _ORIGIN_ENTITY if origin else entity_key
            self._fields = self._keys + ((_ORIGIN_ENTITY,) if origin else ())
            self._id_keys = (entity_key,) if entity_key else ()
        else:
            self._keys = tuple(mapping.long_column(role) for role in LONG_COLUMNS)
            self._value_key = mapping.long_column("value")
            self._id_keys = (mapping.long_column("entity_id"), mapping.long_column("channel"))
            self._layout = FileLayout.resolve(list(self._keys), mapping, "message")

    def parse(self, source: str, positions: Sequence[int], payloads: Sequence,
              topics: Sequence[str] | None = None, keys: Sequence | None = None) -> ParsedMessages:
        """``topics``: each message's topic (MQTT), for a mapping that takes the entity from a topic level;
        ``keys``: each message's key (Kafka), for a mapping that takes the entity from the key."""
        texts, rows, lines, quarantine = [], [], [], []
        topics = topics if topics is not None else [None] * len(payloads)
        keys = keys if keys is not None else [None] * len(payloads)
        for position, payload, topic, key in zip(positions, payloads, topics, keys):
            text, fields, why = self._decode(payload)
            if why is None and self.topic_level is not None:
                why = self._entity_from_topic(fields[0], topic)
            elif why is None and self.from_key:
                why = self._entity_from_key(fields[0], key)
            if why is not None:
                quarantine.append(Quarantined(text, source, int(position), "", 1, _STAGE, "malformed_row", why,
                                              self.run_id))
                continue
            texts.append(text)
            rows.append(fields)
            lines.append(int(position))
        batches = []
        if rows and self.wide:
            batch, bad = self._parse_wide(source, texts, rows, lines)
            quarantine.extend(bad)
            batches = self._split(batch)
        elif rows:
            columns = {key: pd.Series([r[j] for r in rows], dtype=object) for j, key in enumerate(self._keys)}
            batch, bad = parse_rows(columns, np.asarray(lines, dtype=np.int64), texts.__getitem__, source,
                                    self._layout, self.mapping, self.run_id)
            quarantine.extend(bad)
            batches = self._split(batch)
        return ParsedMessages(batches, quarantine, len(payloads))

    def _entity_from_topic(self, record: dict, topic: str | None) -> str | None:
        """Set the entity of a wide message from its topic's level; the reason when the topic has no such level."""
        if topic is None:
            return "the message came without a topic, and the mapping takes the entity from a topic level"
        levels = str(topic).split("/")
        if self.topic_level >= len(levels) or not levels[self.topic_level]:
            return f"the topic {topic!r} has no level {self.topic_level} to take the entity from"
        record[_ORIGIN_ENTITY] = levels[self.topic_level]
        return None

    @staticmethod
    def _entity_from_key(record: dict, key) -> str | None:
        """Set the entity of a wide message from its Kafka key; the reason when it has none that is text."""
        if isinstance(key, (bytes, bytearray, memoryview)):
            try:
                key = bytes(key).decode("utf-8")
            except UnicodeDecodeError:
                return "the message key is not UTF-8 text, and the mapping takes the entity from the key"
        if not key:
            return "the message has no key, and the mapping takes the entity from the message key"
        record[_ORIGIN_ENTITY] = str(key)
        return None

    def _parse_wide(self, source: str, texts: list, rows: list, lines: list) -> tuple[ReadingBatch, list]:
        """Wide messages through the batch parser's wide path, one group per set of channel keys (usually one):
        every message of a group has every key of the group, so each channel key is exactly one reading."""
        groups: dict = {}
        for i, (_, channel_keys) in enumerate(rows):
            groups.setdefault(channel_keys, []).append(i)
        parts, quarantine = [], []
        for channel_keys, members in groups.items():
            records = [rows[i][0] for i in members]
            columns = {key: pd.Series([_field_text(r.get(key)) for r in records], dtype=object)
                       for key in self._fields}
            columns.update({key: pd.Series([_value_text(r.get(key)) for r in records], dtype=object)
                            for key in channel_keys})
            names = tuple(self.mapping.channels.get(key, key) for key in channel_keys)
            layout = FileLayout(tuple(columns), self._entity_key, self._entity_value, self.mapping.timestamp,
                                channel_keys, names, {})
            batch, bad = parse_rows(columns, np.asarray([lines[i] for i in members], dtype=np.int64),
                                    lambda j, members=members: texts[members[j]], source, layout, self.mapping,
                                    self.run_id)
            parts.append(batch.frame)
            quarantine.extend(bad)
        if len(parts) == 1:
            return ReadingBatch(parts[0]), quarantine
        frame = pd.concat([p.astype({"entity_id": object, "channel": object, "source": object}) for p in parts],
                          ignore_index=True)
        return ReadingBatch.from_columns(frame["entity_id"], frame["channel"], frame["timestamp"], frame["value"],
                                         frame["source"], frame["line"]), quarantine

    def _decode(self, payload):
        """``(text, fields, None)`` or ``(text, None, reason)``: the fields in role order (long), or the message
        and its channel keys (wide)."""
        if isinstance(payload, (bytes, bytearray, memoryview)):
            try:
                text = bytes(payload).decode("utf-8")
            except UnicodeDecodeError:
                return bytes(payload).decode("utf-8", errors="replace"), None, "the message is not UTF-8 text"
        elif payload is None:
            return "", None, "the message is empty (null payload)"
        else:
            text = str(payload)
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate in a text payload: no Parquet column holds it
                return text.encode("utf-8", "backslashreplace").decode("utf-8"), None, "the message is not UTF-8 text"
        if text.count("[") + text.count("{") > MAX_NESTING and _nesting(text) > MAX_NESTING:
            # json.loads, or writing a field back as text (_field_text) deeper in the stack, would raise
            # RecursionError near Python's limit, and fail the job with the whole poll (bug hunt of brokers)
            return text, None, f"the message nests more than {MAX_NESTING} levels deep"
        try:
            record = json.loads(text)
        except RecursionError:  # only where the stack is already deep: the nesting bound above is far below it
            return text, None, f"the message nests more than {MAX_NESTING} levels deep"
        except ValueError as exc:
            return text, None, f"the message is not JSON: {getattr(exc, 'msg', exc)}"
        if not isinstance(record, dict):
            return text, None, f"the message is a JSON {type(record).__name__}, not an object"
        if _SURROGATE_ESCAPE.search(text):
            try:  # an escaped pair (an emoji) is text; a lone half decodes to a string no Parquet column holds
                json.dumps(record, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                return text, None, "the message holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is no text"
        missing = [key for key in self._keys if key not in record]
        if missing:
            return text, None, f"the message lacks fields {missing} (it has {sorted(record)[:10]})"
        for key in self._id_keys:
            if isinstance(record[key], (dict, list, bool)):
                kind = ("true or false" if isinstance(record[key], bool) else
                        "a JSON object" if isinstance(record[key], dict) else "a JSON array")
                return text, None, f"the message's {key!r} is {kind}, not an id (text or a number)"
        if not self.wide:
            return text, [(_value_text if key == self._value_key else _field_text)(record[key])
                          for key in self._keys], None
        if self.mapping.channels:
            channel_keys = tuple(key for key in self.mapping.channels if key in record)
        else:
            channel_keys = tuple(sorted(key for key in record if key not in self._taken))
        if not channel_keys:
            wanted = (f"none of the channel fields {list(self.mapping.channels)}" if self.mapping.channels else
                      f"no channel fields besides {sorted(k for k in self._taken if k in record)}")
            return text, None, f"the message has {wanted}"
        return text, (record, channel_keys), None

    def _split(self, batch: ReadingBatch) -> list:
        frame = batch.frame
        if not len(frame):
            return []
        stamps = frame["timestamp"].to_numpy()
        if self.align_to_window_us is None:
            return [(batch, int(stamps.min()))]
        window = stamps // self.align_to_window_us
        if (window == window[0]).all():
            return [(batch, int(stamps.min()))]
        out = []
        for w in np.unique(window):
            part = frame[window == w].reset_index(drop=True)
            out.append((ReadingBatch(part), int(part["timestamp"].min())))
        return out


MAX_NESTING = 100  # JSON levels of a message: far more than a device's reading has, far below the reader's limit
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _nesting(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings left out)."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # a JSON escape of a UTF-16 surrogate (half of a pair, or alone)


def _value_text(value):
    """A reading's value as the batch parser expects it: a JSON ``true``/``false`` (a relay, a valve switch) is 1 or
    0, as a boolean Parquet column is; the text "true" stays text, as in a CSV file."""
    return ("1" if value else "0") if isinstance(value, bool) else _field_text(value)


def _field_text(value):
    """A JSON field as the batch parser expects it: numbers keep full precision (epoch integers stay exact)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(value, ".6f") if math.isfinite(value) and abs(value) >= 1e15 else repr(value)
    return json.dumps(value)  # a list or an object: refused by the parser with its text in the reason


def _emit(parsed: ParsedMessages, fallback_us: int | None, watermark=None) -> Iterable:
    """The outputs for one parsed batch: readings timestamped at their batch's min event time, each with its
    count; quarantine and its count timestamped with the earliest batch (or ``fallback_us``, or now). None of
    them before the reader's ``watermark``: a record that has no valid event time must not be dropped as late,
    and a batch of readings the watermark has passed (late readings, or a backlog after the watermark followed
    the wall clock) carries it, so that the late gate downstream compares the readings with it (they keep their
    own times; the windowing stage puts them in their panes by those)."""
    from seqwatch.pipelines.config import stream_future_bound_us

    floor = watermark if watermark is not None and MAX_TIMESTAMP > watermark else MIN_TIMESTAMP
    # A batch of readings from a clock set days ahead is stamped no later than the bound the late gate quarantines
    # them at, so their quarantine records are written when the stream gets there, not days (or decades) on.
    ceiling = stream_future_bound_us()
    anchor = parsed.min_time_us
    if anchor is None:
        anchor = fallback_us if fallback_us is not None else int(time.time() * 1e6)
    side_time = max(Timestamp(micros=min(anchor, ceiling)), floor)
    for batch, t in parsed.batches:  # counted per batch, so that a window's count matches its readings
        at = max(Timestamp(micros=min(t, ceiling)), floor)
        yield beam.window.TimestampedValue(batch, at)
        yield beam.pvalue.TaggedOutput(COUNTS, beam.window.TimestampedValue(("records_in", len(batch)), at))
    for q in parsed.quarantine:
        yield beam.pvalue.TaggedOutput(QUARANTINE, beam.window.TimestampedValue(q, side_time))
    if parsed.quarantine:
        yield beam.pvalue.TaggedOutput(COUNTS, beam.window.TimestampedValue(
            ("records_in", sum(q.records for q in parsed.quarantine)), side_time))


def _max_time_us(parsed: ParsedMessages) -> int | None:
    """The latest event time of the readings of ``parsed``, leaving out readings more than a day ahead of the wall
    clock (``stream_future_bound_us``): one device with its clock set days ahead must not move the reader's
    event time and watermark past every other reading (the late gate quarantines those readings)."""
    from seqwatch.pipelines.config import stream_future_bound_us

    bound = stream_future_bound_us()
    latest = None
    for batch, _ in parsed.batches:
        stamps = batch.frame["timestamp"].to_numpy()
        stamps = stamps[stamps <= bound]
        if stamps.size and (latest is None or int(stamps.max()) > latest):
            latest = int(stamps.max())
    return latest


def _quiet_wait_s(batch_s: float, *due_in_s: float | None) -> float:
    """How long a poll may wait for its first message before its bundle ends: ``QUIET_POLL_S``, or less where the
    source will sooner have been idle long enough for what a poll's end does (``due_in_s``, seconds from now:
    ending the read after ``--stop-after-idle``, letting the watermark follow the wall clock after
    ``--idle-watermark``; None or not ahead where there is none), and never less than the batch time. A message
    that comes meanwhile is gathered until the end of that batch time, as at the start of a poll, so a reading
    waits no longer than it did with bundles of the batch time; the bundles of a quiet source are fewer."""
    return max(batch_s, min([QUIET_POLL_S, *(s for s in due_in_s if s is not None and s > 0)]))


def _quiet_wait_goes_on(until: float | None, suspect: bool, where: str, stop: StopRequest | None) -> bool:
    """Whether a poll that has received nothing waits on for a first message (``_quiet_wait_s``): not past ``until``
    (None: no quiet wait), no sign of an outage (``suspect``, or one said for ``where``), which the poll's end looks
    into, and no stop requested."""
    return (until is not None and time.monotonic() < until and not suspect and not _outage_said(where)
            and not (stop is not None and stop.requested()))


def _due_in(idle_s: float | None, idle_for_s: float) -> float | None:
    """The seconds until a source idle for ``idle_for_s`` will have been idle for ``idle_s`` (None: never)."""
    return None if idle_s is None else idle_s - idle_for_s


class _EventTimeClock:
    """Per-restriction event-time bookkeeping for a reader: the largest event time seen, when the last message
    came, and the watermark that follows from them (monotone, as Beam requires)."""

    def __init__(self, max_out_of_orderness_us: int, idle_watermark_us: int | None):
        self.max_out_of_orderness_us = max_out_of_orderness_us
        self.idle_watermark_us = idle_watermark_us
        self.max_seen_us: int | None = None
        self.last_message_at = time.monotonic()

    def saw(self, parsed: ParsedMessages) -> None:
        self.last_message_at = time.monotonic()
        latest = _max_time_us(parsed)
        if latest is not None and (self.max_seen_us is None or latest > self.max_seen_us):
            self.max_seen_us = latest

    def idle_for(self) -> float:
        return time.monotonic() - self.last_message_at

    def advance(self, estimator: ManualWatermarkEstimator, caught_up: bool) -> None:
        candidate = None
        if self.max_seen_us is not None:
            candidate = self.max_seen_us - self.max_out_of_orderness_us
        if caught_up and self.idle_watermark_us is not None and self.idle_for() * 1e6 >= self.idle_watermark_us:
            # A live feed that went quiet: let event time follow the wall clock so downstream windows close.
            wall = int(time.time() * 1e6) - self.idle_watermark_us
            candidate = wall if candidate is None else max(candidate, wall)
        if candidate is not None:
            _raise_watermark(estimator, candidate)


def _fix_the_runner(pvalue) -> None:
    """The settings seqwatch needs on the runner of ``pvalue``'s pipeline (``runners.apply_runner_fixes``), put in
    place as a source is added to it: a pipeline of the user's own on Prism had needed them passed through by hand,
    or its job failed after ``--job_server_timeout`` (300 s)."""
    from seqwatch.pipelines.runners import apply_runner_fixes

    apply_runner_fixes(pvalue.pipeline.options)


def _micros(seconds: float | None, name: str, allow_none: bool = True) -> int | None:
    if seconds is None:
        if allow_none:
            return None
        raise ValueError(f"{name} must be a number of seconds, got None")
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {seconds!r}")
    return int(round(seconds * 1e6))


def _positive(value, name: str):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


class _CheckpointOnlyTracker(OffsetRestrictionTracker):
    """An offset tracker that only self-checkpoints: a dynamic split at a fraction of an endless range would cut
    it at offset ~4.6e18, which no broker has."""

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder != 0:
            return None
        return super().try_split(0)

    def is_bounded(self):
        return self._range.stop != _ENDLESS


class _DelegatedRestrictions(RestrictionProvider):
    """Makes a splittable DoFn its own restriction provider (Beam's ``RestrictionParam()`` without an argument)
    by delegating to ``self.restrictions``."""

    def initial_restriction(self, element):
        return self.restrictions.initial_restriction(element)

    def create_tracker(self, restriction):
        return self.restrictions.create_tracker(restriction)

    def restriction_size(self, element, restriction):
        return self.restrictions.restriction_size(element, restriction)


# ---------------------------------------------------------------------------------------------------------
# Kafka


class PartitionOffsets(NamedTuple):
    """The restriction of one Kafka reader: for each of its partitions, the offsets ``[start, stop)`` to read
    (``stop`` is endless unless the read ends at the partition's end offset as of its start)."""

    partitions: tuple
    starts: tuple
    stops: tuple

    def size(self) -> int:
        if any(stop == _ENDLESS for stop in self.stops):
            return 1  # unknown backlog; a size only weighs splits, which this source does not do
        return sum(max(0, stop - start) for start, stop in zip(self.starts, self.stops))


_END = "end"  # claimed to finish a reader whose offsets are endless


class _PartitionOffsetsTracker(RestrictionTracker):
    """Tracks a reader's claims over several partitions. A claim is ``{partition: next offset}`` after a poll
    (so a gap of transaction markers can be claimed too), or ``_END`` to finish an endless read. Only
    self-checkpoints split (at the claimed positions); a split at a fraction of an endless range would cut it at
    offset ~4.6e18."""

    def __init__(self, restriction: PartitionOffsets):
        self._restriction = restriction
        self._next = dict(zip(restriction.partitions, restriction.starts))
        self._stops = dict(zip(restriction.partitions, restriction.stops))
        self._checkpointed = False
        self._ended = False

    def current_restriction(self):
        return self._restriction

    def try_claim(self, position):
        if self._checkpointed or self._ended:
            return False
        if position == _END:
            self._ended = True
            return False
        for partition, offset in position.items():
            if not self._next[partition] < offset <= self._stops[partition]:
                raise ValueError(f"claims must advance within the restriction: partition {partition} at "
                                 f"{self._next[partition]} (stop {self._stops[partition]}) cannot claim {offset}")
        self._next.update(position)
        return True

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder != 0 or self._checkpointed or self._ended:
            return None
        r = self._restriction
        claimed = tuple(self._next[p] for p in r.partitions)
        primary = PartitionOffsets(r.partitions, r.starts, claimed)
        residual = PartitionOffsets(r.partitions, claimed, r.stops)
        self._restriction = primary
        self._stops = dict(zip(r.partitions, claimed))
        self._checkpointed = True
        return primary, residual

    def check_done(self):
        if self._ended or self._checkpointed:
            return
        left = {p: (self._next[p], self._stops[p]) for p in self._next if self._next[p] < self._stops[p]}
        if left:
            raise ValueError(f"the Kafka reader stopped with offsets left to read: {left}")

    def current_progress(self):
        from apache_beam.io.iobase import RestrictionProgress

        r = self._restriction
        done = sum(self._next[p] - s for p, s in zip(r.partitions, r.starts))
        return RestrictionProgress(completed=float(done), remaining=float(r.size()))

    def is_bounded(self):
        return all(stop != _ENDLESS for stop in self._restriction.stops)


def _kafka_config(bootstrap_servers: str, group_id: str | None, extra: dict) -> dict:
    config = {"bootstrap.servers": bootstrap_servers, "enable.auto.commit": False,
              "enable.partition.eof": False, "auto.offset.reset": "earliest",
              "group.id": group_id or "seqwatch-reader"}
    config.update(extra)
    return config


class _ListKafkaPartitions(beam.DoFn):
    """``impulse -> (topic, (partitions of one reader))``: the topic's partitions dealt round-robin to
    ``readers`` readers."""

    def __init__(self, bootstrap_servers: str, topic: str, partitions, readers: int, consumer_config: dict):
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.partitions = partitions
        self.readers = readers
        self.consumer_config = consumer_config

    def process(self, _):
        partitions = self.partitions if self.partitions is not None else self._list()
        groups = min(self.readers, len(partitions))
        for g in range(groups):
            yield self.topic, tuple(partitions[g::groups])

    def _list(self) -> list:
        return kafka_partitions(self.bootstrap_servers, self.topic, self.consumer_config, timeout_s=30)


def kafka_partitions(bootstrap_servers: str, topic: str, consumer_config: dict, timeout_s: float) -> list[int]:
    """The topic's partitions, asked of the broker; raises ``ConnectionError`` when no broker answers within
    ``timeout_s`` and ``LookupError`` when the topic does not exist, each with one sentence."""
    from confluent_kafka import Consumer, KafkaException  # imported here: Beam's pickler fails on their types

    # librdkafka's own log lines (a FAIL line per connection attempt) are silenced: the exception says it.
    consumer = Consumer({**_kafka_config(bootstrap_servers, None, consumer_config), "log_level": 0})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        reason = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        raise ConnectionError(f"cannot reach the Kafka broker at {bootstrap_servers} ({reason})") from None
    finally:
        consumer.close()
    info = metadata.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        why = info.error.str() if info is not None and info.error is not None else "no partitions"
        raise LookupError(f"the Kafka topic {topic!r} does not exist on {bootstrap_servers} ({why})")
    return sorted(info.partitions)


class _KafkaOffsets(RestrictionProvider):
    def __init__(self, bootstrap_servers: str, group_id: str | None, consumer_config: dict, start: str,
                 stop_at_end: bool):
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.consumer_config = consumer_config
        self.start = start
        self.stop_at_end = stop_at_end

    def initial_restriction(self, element):
        from confluent_kafka import Consumer, TopicPartition

        topic, partitions = element
        consumer = Consumer(_kafka_config(self.bootstrap_servers, self.group_id, self.consumer_config))
        try:
            committed = {}
            if self.start == "committed" and self.group_id:
                committed = {tp.partition: tp.offset for tp in
                             consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=30)}
            starts, stops = [], []
            for p in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                start = high if self.start == "latest" else low
                if committed.get(p, -1) >= 0:
                    start = max(low, committed[p])
                starts.append(start)
                stops.append(max(start, high) if self.stop_at_end else _ENDLESS)
        finally:
            consumer.close()
        return PartitionOffsets(tuple(partitions), tuple(starts), tuple(stops))

    def create_tracker(self, restriction):
        return _PartitionOffsetsTracker(restriction)

    def restriction_size(self, element, restriction):
        return restriction.size()


class _PartitionClocks:
    """Event time of one reader's partitions. The reader's watermark is the smallest, over its unfinished
    partitions, of the largest event time seen there, minus ``max_out_of_orderness``; a partition that has
    delivered nothing yet holds the watermark until the reader has caught up (then it is taken to be empty)."""

    def __init__(self, max_out_of_orderness_us: int, idle_watermark_us: int | None):
        self.max_out_of_orderness_us = max_out_of_orderness_us
        self.idle_watermark_us = idle_watermark_us
        self.max_seen_us: dict = {}
        self.last_message_at = time.monotonic()

    def saw(self, partition: int, parsed: ParsedMessages) -> None:
        self.last_message_at = time.monotonic()
        latest = _max_time_us(parsed)
        if latest is not None and latest > self.max_seen_us.get(partition, latest - 1):
            self.max_seen_us[partition] = latest

    def latest_us(self) -> int | None:
        return max(self.max_seen_us.values(), default=None)

    def idle_for(self) -> float:
        return time.monotonic() - self.last_message_at

    def advance(self, estimator: ManualWatermarkEstimator, unfinished: list, caught_up: bool) -> None:
        seen = [self.max_seen_us[p] for p in unfinished if p in self.max_seen_us]
        candidate = None
        if seen and (caught_up or len(seen) == len(unfinished)):
            candidate = min(seen) - self.max_out_of_orderness_us
        if caught_up and self.idle_watermark_us is not None and self.idle_for() * 1e6 >= self.idle_watermark_us:
            # A live feed that went quiet: let event time follow the wall clock so downstream windows close.
            wall = int(time.time() * 1e6) - self.idle_watermark_us
            candidate = wall if candidate is None else max(candidate, wall)
        if candidate is not None:
            _raise_watermark(estimator, candidate)


def _raise_watermark(estimator: ManualWatermarkEstimator, micros: int) -> None:
    new = Timestamp(micros=micros)
    current = estimator.current_watermark()
    if current is None or new > current:
        estimator.set_watermark(new)


# What a broker's readers keep per process, not per instance of their DoFn: a runner may run a reader's bundles on
# several instances, each with its own state (an MQTT stream had said one outage twice, and that the broker answered
# again twice; CI, 2026-12-05), and the instance that saw something need not be the one that reads next.
_PROCESS_LOCK = threading.Lock()
_SAID: set = set()  # what a reader said that is said once (``_say_once``): ("outage", where), a Kafka error's kind...
_READ_HOLDS: dict = {}  # where -> _ReadHold
_READ_CLOCKS: dict = {}  # (run id, element) -> the event-time clock of a reader's element (_read_clock)
_MESSAGE_SEQUENCES: dict = {}  # (run id, source) -> the number of its last message read in this process


def _per_process(table: dict, key, make):
    """``table[key]``, made by ``make()`` the first time a reader of this process asks for it."""
    with _PROCESS_LOCK:
        value = table.get(key)
        if value is None:
            value = table[key] = make()
        return value


def _say_once(key: tuple) -> bool:
    """Whether ``key`` (what is said, and of what) has not been said by a reader of this process: then it is now."""
    with _PROCESS_LOCK:
        if key in _SAID:
            return False
        _SAID.add(key)
        return True


def _unsay(key: tuple) -> bool:
    """``key`` may be said again (what it said is over); whether it had been said."""
    with _PROCESS_LOCK:
        said = key in _SAID
        _SAID.discard(key)
        return said


def _first_to_say(where: str, down: bool) -> bool:
    """Whether this reader is the first of this process to say that the broker ``where`` is down (``down``) or
    answers again (then it had been said to be down)."""
    return _say_once(("outage", where)) if down else _unsay(("outage", where))


def _outage_said(where: str) -> bool:
    """Whether a reader of this process has said that the broker ``where`` is down, and none since that it answers:
    a reader instance that did not see the outage itself takes it for its own, and says the answer when it sees it
    (a Pub/Sub stream whose messages came back to another instance had never said that the emulator answered
    again, nor started its idle time again; CI, 2026-12-05)."""
    with _PROCESS_LOCK:
        return ("outage", where) in _SAID


class _ReadHold:
    """What the reads of one broker (``_PollingReader._where``) hold back for messages it may give again: the
    instance whose pull went unanswered need not be the one that reads when the service answers again. Held per
    instance, another instance had let the watermark pass the messages that came back (and the instance that held
    it, not used again, would have held it for good). ``unanswered``: a pull got no answer, and none has been
    answered since; ``watermark_until`` / ``idle_from``: monotonic times before which the watermark stays where
    it is and ``--stop-after-idle`` counts nothing."""

    __slots__ = ("unanswered", "watermark_until", "idle_from")

    def __init__(self):
        self.unanswered = False
        self.watermark_until = float("-inf")
        self.idle_from = float("-inf")

    def answered(self) -> bool:
        """Take back ``unanswered``: whether this call is the one that did (the caller then says it)."""
        with _PROCESS_LOCK:
            was, self.unanswered = self.unanswered, False
            return was


def _read_clock(run_id: str, element, make):
    """The event-time clock of ``element`` in the run ``run_id`` (made by ``make()`` the first time), one per process,
    not per reader instance: an instance that a runner used again after others had read the element meanwhile had
    its own clock's last message as long ago as its last bundle, and could end a live read as idle, or move the
    watermark as for a quiet feed."""
    return _per_process(_READ_CLOCKS, (run_id, element), make)


def _restart_idle_clocks(run_id: str) -> None:
    """Every clock of the run ``run_id`` counts its idle time from now (a broker answers again after an outage)."""
    now = time.monotonic()
    with _PROCESS_LOCK:
        for (run, _), clock in _READ_CLOCKS.items():
            if run == run_id:
                clock.last_message_at = now


def _next_numbers(run_id: str, source: str, n: int) -> list[int]:
    """The numbers of the next ``n`` messages of ``source`` in the run ``run_id`` that have none of their own (a
    quarantined record's and a reading's ``line``, from 1): one sequence per run and process, not per reader
    instance, whose numbers had started again at 1 in each instance, two messages of one run then sharing a line."""
    with _PROCESS_LOCK:
        last = _MESSAGE_SEQUENCES.get((run_id, source), 0)
        _MESSAGE_SEQUENCES[(run_id, source)] = last + n
    return list(range(last + 1, last + 1 + n))


class _ReadKafkaPartitions(beam.DoFn, _DelegatedRestrictions):
    """``(topic, partitions) -> batches of parsed readings``: one consumer per reader per DoFn instance, one batch
    per partition per poll."""

    stop_request: StopRequest | None = None  # a graceful stop: the read ends after the poll that sees it

    def __init__(self, bootstrap_servers: str, group_id: str | None, consumer_config: dict, offsets: _KafkaOffsets,
                 parser: MessageParser, max_batch: int, max_bundle_s: float, poll_interval_s: float,
                 max_out_of_orderness_us: int, idle_watermark_us: int | None, stop_after_idle_s: float | None):
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.consumer_config = consumer_config
        self.restrictions = offsets
        self.parser = parser
        self.max_batch = max_batch
        self.max_bundle_s = max_bundle_s
        self.poll_interval_s = poll_interval_s
        self.max_out_of_orderness_us = max_out_of_orderness_us
        self.idle_watermark_us = idle_watermark_us
        self.stop_after_idle_s = stop_after_idle_s

    # A consumer whose probes of the broker have all failed for this long is replaced by a new one (``_renew``)
    RENEW_CONSUMER_AFTER_S = 60.0

    def setup(self):
        self._consumers = {}  # (topic, partitions) -> (consumer, {partition: next offset it will deliver})
        self._suspect = False  # librdkafka reported a connection error since the last message or probe
        self._probed_at = 0.0
        self._unanswered_since = None  # monotonic time of the first failed probe since the broker last answered

    def _broker_error(self, error) -> None:
        """librdkafka's error callback (its own log lines, a FAIL line per connection attempt, are silenced). A
        connection error only makes the broker suspect, because librdkafka reports them too when a broker closes
        an idle connection; ``_broker_down`` asks the broker. Any other error (authentication, authorisation) is
        said once per kind (and process: ``_say_once``)."""
        from confluent_kafka import KafkaError

        code = error.code()
        if code in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE):
            self._suspect = True
        elif _say_once(("kafka error", self.bootstrap_servers, code)):
            logging.getLogger(__name__).warning("the Kafka consumer of %s reports: %s", self.bootstrap_servers,
                                                error.str())

    def _committed(self, error, partitions) -> None:
        """librdkafka's ``on_commit`` for the reader's asynchronous commits (``_KafkaCommit``): a failed one is
        said, once per kind of error (it had been silent: a stream started again rereads what it had read, and
        writes its scores again in its .s2 files; found by the bug hunt of delivery semantics)."""
        failed = [tp for tp in partitions or [] if tp.error is not None]
        if error is None and not failed:
            return
        reason = error.str() if error is not None else failed[0].error.str()
        kind = ("kafka commit", self.bootstrap_servers, self.group_id,
                error.code() if error is not None else failed[0].error.code())
        if _say_once(kind):
            logging.getLogger(__name__).warning(
                "the offsets this stream read up to could not be committed to the Kafka consumer group (%s): a "
                "stream started again reads those messages again", reason)

    def _waits_on(self, until: float) -> bool:
        return _quiet_wait_goes_on(until, self._suspect, self._where, self.stop_request)

    def _broker_down(self, consumer, topic: str) -> bool:
        """Whether the read must not end for idleness now: the broker does not answer (an outage: said once), or
        it has just answered again after one (said once; every partition group's idle time then starts again,
        so that what was published meanwhile is read before the read ends). Asks the broker for the topic's
        metadata, at most every 2 s. A broker down for longer than ``stop_after_idle_s`` had ended the stream as
        if its topic were quiet, and the readings published once it was back were never read (bug hunt of
        broker sources)."""
        from confluent_kafka import KafkaException

        now = time.monotonic()
        if now - self._probed_at < 2.0:
            return _outage_said(self._where)
        self._probed_at = now
        try:
            metadata = consumer.list_topics(topic, timeout=2)
        except KafkaException as exc:
            reason = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
            if _first_to_say(self._where, down=True):
                logging.getLogger(__name__).warning(
                    "cannot reach the Kafka broker at %s (%s); the read waits for it, and --stop-after-idle counts "
                    "no time meanwhile", self.bootstrap_servers, reason)
            if self._unanswered_since is None:
                self._unanswered_since = now
            elif now - self._unanswered_since >= self.RENEW_CONSUMER_AFTER_S:
                self._renew(consumer, now - self._unanswered_since, reason)
                self._unanswered_since = now
            return True
        self._unanswered_since = None
        _unsay(("kafka consumer renewed", self.bootstrap_servers))
        self._suspect = False
        self._topic_gone(topic, metadata)
        if not _outage_said(self._where):
            return False
        self._broker_back()
        return True

    def _renew(self, consumer, unanswered_s: float, reason: str) -> None:
        """Replace ``consumer``, whose probes of the broker have failed for ``unanswered_s`` seconds, by a new one at
        the next poll, at the offsets the read has claimed. Twice in some 40 runs of the outage test alone
        (2026-12-06), a stream's consumer neither read nor reached a broker that was back and that other clients
        reached (its graceful stop still ran, so the reader was being called); whether a new consumer would have
        found it is not known. The old one is closed in a thread of its own, later: a close can wait on a broker
        that does not answer, and a bundle's commit may still come through it (``_KafkaCommit``)."""
        for key, (held, _) in list(self._consumers.items()):
            if held is consumer:
                del self._consumers[key]
        if _say_once(("kafka consumer renewed", self.bootstrap_servers)):
            logging.getLogger(__name__).warning(
                "the Kafka broker at %s has not answered for %.0f s (%s): the read goes on with a new consumer, and "
                "with another each %.0f s it does not answer", self.bootstrap_servers, unanswered_s, reason,
                self.RENEW_CONSUMER_AFTER_S)
        threading.Thread(target=_close_later, args=(consumer, 30.0), daemon=True, name="kafka-consumer-close").start()

    def _topic_gone(self, topic: str, metadata) -> None:
        """Say once when the broker no longer has ``topic`` (deleted under the stream). A consumer of assigned
        partitions gets no error for that: the stream had read on as if the topic were quiet (bug hunt of delivery
        semantics). A topic created again under that name is said otherwise (``_read``: its offsets go back)."""
        from confluent_kafka import KafkaError

        found = metadata.topics.get(topic)
        gone = found is None or (found.error is not None and found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART)
        said = ("kafka topic gone", self.bootstrap_servers, topic)
        if gone and _say_once(said):
            logging.getLogger(__name__).warning(
                "the Kafka broker at %s no longer has the topic %s (deleted?): this stream reads nothing more from "
                "it%s", self.bootstrap_servers, topic,
                "" if self.stop_after_idle_s is None else f", and ends after --stop-after-idle "
                                                          f"({self.stop_after_idle_s:g} s) as for a quiet topic")
        elif not gone:
            _unsay(said)

    @property
    def _where(self) -> str:
        """The broker, as its outage is said once per process (``_first_to_say``)."""
        return f"kafka:{self.bootstrap_servers}"

    def _broker_back(self) -> None:
        if _first_to_say(self._where, down=False):
            logging.getLogger(__name__).warning("the Kafka broker at %s answers again", self.bootstrap_servers)
        _restart_idle_clocks(self.parser.run_id)

    def teardown(self):
        for consumer, _ in getattr(self, "_consumers", {}).values():
            consumer.close()
        self._consumers = {}

    def _consumer(self, topic: str, restriction: PartitionOffsets, active: list):
        from confluent_kafka import Consumer, TopicPartition

        key = (topic, restriction.partitions)
        wanted = {p: s for p, s, e in zip(restriction.partitions, restriction.starts, restriction.stops) if p in active}
        if key not in self._consumers:
            consumer = Consumer({"log_level": 0, "error_cb": self._broker_error, "on_commit": self._committed,
                                 **_kafka_config(self.bootstrap_servers, self.group_id, self.consumer_config)})
            self._consumers[key] = (consumer, {})
        consumer, positions = self._consumers[key]
        if positions != wanted:  # first use, a retry, a resumed checkpoint or a finished partition: reposition
            consumer.assign([TopicPartition(topic, p, s) for p, s in wanted.items()])
            positions.clear()
            positions.update(wanted)
        return consumer, positions

    def process(self, element, tracker=beam.DoFn.RestrictionParam(),
                estimator=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        return self._read(element, tracker, estimator, None)

    def _read(self, element, tracker, estimator, finalizer):
        topic, _ = element
        r = tracker.current_restriction()
        stops = dict(zip(r.partitions, r.stops))
        active = [p for p, s, e in zip(r.partitions, r.starts, r.stops) if s < e]
        clocks = _read_clock(self.parser.run_id, element, lambda: _PartitionClocks(self.max_out_of_orderness_us,
                                                                                   self.idle_watermark_us))
        if finalizer is not None:
            finalizer.register(_nothing)  # see _nothing
        if not active:
            tracker.try_claim(_END)
            return
        consumer, positions = self._consumer(topic, r, active)
        by_partition: dict = {p: [] for p in active}
        received = 0
        went_back = None  # (partition, the offset due, the offset that came): the partition started again
        polled_at = time.monotonic()
        deadline = polled_at + self.max_bundle_s
        idle_wm_s = None if self.idle_watermark_us is None else self.idle_watermark_us / 1e6
        quiet_until = polled_at + _quiet_wait_s(self.max_bundle_s, _due_in(self.stop_after_idle_s, clocks.idle_for()),
                                                _due_in(idle_wm_s, clocks.idle_for()))
        while received < self.max_batch and went_back is None:
            left = deadline - time.monotonic()
            if left <= 0:
                if received or not self._waits_on(quiet_until):
                    break
                deadline = time.monotonic() + self.max_bundle_s  # nothing yet: a quiet topic is waited on in this
                continue  # poll (_quiet_wait_s)
            for m in consumer.consume(num_messages=self.max_batch - received, timeout=min(left, 0.2)):
                if m.error() is not None:
                    continue
                p, taken = m.partition(), by_partition[m.partition()]
                due = taken[-1].offset() + 1 if taken else positions[p]
                if m.offset() < due:  # offsets only grow: the topic was deleted and created again (the client
                    went_back = (p, due, m.offset())  # jumped to the new one's start), and a claim would fail
                    break
                if m.offset() < stops[p]:
                    taken.append(m)
                    received += 1
            if all(positions[p] + len(by_partition[p]) >= stops[p] for p in active):
                break  # every partition reached its stop
        claim = {p: ms[-1].offset() + 1 for p, ms in by_partition.items() if ms}
        bounded = [p for p in active if stops[p] != _ENDLESS and p not in claim]
        if bounded:  # a partition may end in offsets that carry no message (transaction markers)
            for tp in consumer.position([_tp(topic, p) for p in bounded]):
                if tp.offset >= 0 and tp.offset > positions[tp.partition]:
                    claim[tp.partition] = min(tp.offset, stops[tp.partition])
        if claim and not tracker.try_claim(claim):  # checkpointed meanwhile: the residual rereads these offsets
            positions.clear()
            return
        positions.update(claim)
        for p, ms in by_partition.items():
            if not ms:
                continue
            parsed = self.parser.parse(f"kafka:{topic}/{p}", [m.offset() for m in ms], [m.value() for m in ms],
                                       keys=[m.key() for m in ms])
            clocks.saw(p, parsed)
            yield from _emit(parsed, clocks.latest_us(), estimator.current_watermark())
        if finalizer is not None and claim:
            finalizer.register(_KafkaCommit(consumer, topic, dict(claim)).run)
        if went_back is not None:
            p, due, came = went_back
            logging.getLogger(__name__).warning(
                "partition %d of the Kafka topic %s went back from offset %d to %d, as when the topic is deleted and "
                "created again: this stream stops reading the topic here, and writes what it read before; start the "
                "stream again to read the new topic", p, topic, due, came)
            tracker.try_claim(_END)
            return
        if self.stop_request is not None and self.stop_request.requested():  # this poll's messages are emitted and
            # committed
            tracker.try_claim(_END)
            return
        unfinished = [p for p in active if positions[p] < stops[p]]
        clocks.advance(estimator, unfinished, caught_up=received < self.max_batch)
        if not unfinished:
            return  # every partition reached its stop: the read is done
        if received:
            self._suspect = False
            if _outage_said(self._where):  # messages came: it answers
                self._broker_back()
        idle = self.stop_after_idle_s is not None and not received and clocks.idle_for() >= self.stop_after_idle_s
        # a topic quiet for a while is asked after too (at most every 2 s): the broker may have lost it
        quiet = not received and clocks.idle_for() >= QUIET_TOPIC_CHECK_S
        down = _outage_said(self._where)
        if not received and (idle or quiet or self._suspect or down) and self._broker_down(consumer, topic):
            idle = False
        if idle:
            tracker.try_claim(_END)
            return
        tracker.defer_remainder(Duration(seconds=0 if received else self.poll_interval_s))


class _ReadKafkaPartitionsCommitting(_ReadKafkaPartitions):
    """``_ReadKafkaPartitions`` that commits the group's offsets when a bundle is finalized. (A separate class:
    a DoFn that declares a bundle finalizer costs a FinalizeBundle round trip per bundle.)"""

    # The bundle finalizer comes first: Beam passes it positionally and the restriction/watermark by keyword.
    def process(self, element, finalizer=beam.DoFn.BundleFinalizerParam, tracker=beam.DoFn.RestrictionParam(),
                estimator=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        return self._read(element, tracker, estimator, finalizer)


def _nothing():
    """A finalization callback registered in every bundle: Prism 2.77 sends FinalizeBundle to every bundle of a
    DoFn that declares a bundle finalizer, and the Python SDK answers "Bundle is not in a finalizable state" (an
    ERROR in the log) for a bundle that registered no callback. (Prism also finalizes the bundle that pairs
    elements with their restrictions, which runs no process(): ``runners.finalize_released_bundles`` answers that
    one, as the Python SDK worker in seqwatch's own process had printed a traceback for it.)"""


def _tp(topic, partition):
    from confluent_kafka import TopicPartition

    return TopicPartition(topic, partition)


class _KafkaCommit:
    """Commits a reader's next offsets once the runner has durably taken the bundle's outputs."""

    def __init__(self, consumer, topic: str, offsets: dict):
        self.consumer, self.topic, self.offsets = consumer, topic, offsets

    def run(self):
        from confluent_kafka import TopicPartition

        try:
            self.consumer.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in self.offsets.items()],
                                 asynchronous=True)
        except RuntimeError:  # the consumer was replaced and closed (_ReadKafkaPartitions._renew): the next commit
            pass  # of the read, through its new consumer, takes the group's offsets past these


def _close_later(consumer, after_s: float) -> None:
    """Close a Kafka consumer that was replaced, ``after_s`` seconds from now (``_ReadKafkaPartitions._renew``)."""
    time.sleep(after_s)
    try:
        consumer.close()
    except Exception:  # noqa: BLE001 - closed already, or the broker it waited on: nothing more to do with it
        pass


class _ParseMessageBatches(beam.DoFn):
    """``[(source, position, payload)] -> parsed readings``: for Beam's own IOs, batched after the read. The
    outputs are re-timestamped to the readings' event times (see the module docstring)."""

    def __init__(self, parser: MessageParser):
        self.parser = parser

    def process(self, messages, timestamp=beam.DoFn.TimestampParam):
        by_source: dict = {}
        for source, position, payload in messages:
            by_source.setdefault(source, ([], []))
            by_source[source][0].append(position)
            by_source[source][1].append(payload)
        valid = MAX_TIMESTAMP > timestamp > Timestamp(0)
        fallback = int(timestamp.micros) if valid else None
        for source, (positions, payloads) in by_source.items():
            # Not before the messages' own timestamp, which the IO's watermark follows (see _emit).
            yield from _emit(self.parser.parse(source, positions, payloads), fallback, timestamp if valid else None)


class KafkaReadings(beam.PTransform):
    """``PBegin -> {readings: ReadingBatch, quarantine: Quarantined, counts: ("records_in", n)}`` from one topic.

    Reads every partition of ``topic`` (listed when the pipeline starts; partitions added later are not read)
    from ``start``: ``"committed"`` (the offsets committed by ``group_id``, else the earliest), ``"earliest"``
    or ``"latest"``. The partitions are dealt to ``readers`` readers (one consumer and one watermark each: the
    smallest over its partitions); each poll (up to ``max_batch`` messages or ``max_bundle_s`` seconds) becomes
    one batch per partition. Keep ``readers=1`` on Prism: Prism 2.77 takes a splittable DoFn's watermark from
    the last bundle that reported one, not the minimum over its restrictions, so with several readers one that
    runs ahead makes the others' readings late. With ``group_id`` the next offsets are committed after each
    finalized bundle. The read is endless
    unless ``stop_at_end`` (read up to each partition's end offset as of the read's start) or
    ``stop_after_idle_s`` (end a partition after that many seconds without a message) is given. A partition that
    receives nothing holds the watermark back; ``idle_watermark_s`` lets a caught-up, quiet partition's
    watermark follow the wall clock minus that many seconds (for live feeds, not for replays of old data).

    ``expansion_service`` (``host:port``) reads with Beam's Java ``ReadFromKafka`` instead; the start, stop and
    idle options then do not apply (use ``consumer_config``)."""

    def __init__(self, bootstrap_servers: str, topic: str, run_id: str, *, group_id: str | None = None,
                 start: str = "committed", stop_at_end: bool = False, stop_after_idle_s: float | None = None,
                 partitions: Sequence[int] | None = None, readers: int = 1, mapping: InputMapping | None = None,
                 align_to_window_s: float | None = None, max_out_of_orderness_s: float = 0.0,
                 idle_watermark_s: float | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                 max_bundle_s: float = 0.5, poll_interval_s: float = 0.2, consumer_config: dict | None = None,
                 expansion_service: str | None = None, stop: StopRequest | None = None):
        super().__init__()
        self.stop = stop
        if not bootstrap_servers:
            raise ValueError(f"bootstrap_servers must name at least one host:port, got {bootstrap_servers!r}")
        if not topic:
            raise ValueError(f"topic must be a Kafka topic name, got {topic!r}")
        if start not in KAFKA_START:
            raise ValueError(f"start must be one of {KAFKA_START}, got {start!r}")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.run_id = run_id
        self.group_id = group_id
        self.start = start
        self.stop_at_end = stop_at_end
        self.stop_after_idle_s = _positive(stop_after_idle_s, "stop_after_idle_s") if stop_after_idle_s else None
        self.partitions = None if partitions is None else [int(p) for p in partitions]
        self.readers = int(_positive(readers, "readers"))
        self.mapping = mapping
        self.align_to_window_s = align_to_window_s
        self.max_out_of_orderness_s = max_out_of_orderness_s
        self.idle_watermark_s = idle_watermark_s
        self.max_batch = int(_positive(max_batch, "max_batch"))
        self.max_bundle_s = _positive(max_bundle_s, "max_bundle_s")
        self.poll_interval_s = _positive(poll_interval_s, "poll_interval_s")
        self.consumer_config = dict(consumer_config or {})
        self.expansion_service = expansion_service
        self._parser = MessageParser(run_id, mapping, _micros(align_to_window_s, "align_to_window_s"))
        self._max_ooo_us = _micros(max_out_of_orderness_s, "max_out_of_orderness_s", allow_none=False)
        self._idle_wm_us = _micros(idle_watermark_s, "idle_watermark_s")

    def check_topic(self, timeout_s: float = 10.0) -> list[int]:
        """The topic's partitions, asked of the broker now, before a pipeline starts (``kafka_partitions``, as the
        read lists them when it starts)."""
        return kafka_partitions(self.bootstrap_servers, self.topic, self.consumer_config, timeout_s)

    def expand(self, pbegin):
        _fix_the_runner(pbegin)
        if self.expansion_service:
            return self._expand_cross_language(pbegin)
        offsets = _KafkaOffsets(self.bootstrap_servers, self.group_id, self.consumer_config, self.start,
                                self.stop_at_end)
        reader_class = _ReadKafkaPartitionsCommitting if self.group_id else _ReadKafkaPartitions
        reader = reader_class(self.bootstrap_servers, self.group_id, self.consumer_config, offsets,
                                     self._parser, self.max_batch, self.max_bundle_s, self.poll_interval_s,
                                     self._max_ooo_us, self._idle_wm_us, self.stop_after_idle_s)
        reader.stop_request = self.stop
        return (pbegin
                | "Start" >> beam.Impulse()
                | "ListPartitions" >> beam.ParDo(_ListKafkaPartitions(self.bootstrap_servers, self.topic,
                                                                      self.partitions, self.readers,
                                                                      self.consumer_config))
                | "SpreadReaders" >> beam.Reshuffle()
                | "ReadPartitions" >> beam.ParDo(reader)
                .with_outputs(QUARANTINE, COUNTS, main="readings"))

    def _expand_cross_language(self, pbegin):
        from apache_beam.io.kafka import ReadFromKafka

        config = _kafka_config(self.bootstrap_servers, self.group_id, self.consumer_config)
        config = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in config.items()}
        return (pbegin
                | "ReadFromKafka" >> ReadFromKafka(consumer_config=config, topics=[self.topic], with_metadata=True,
                                                   expansion_service=self.expansion_service)
                | "AsMessages" >> beam.Map(lambda r: (f"kafka:{r.topic}/{r.partition}", r.offset, r.msg_value))
                | "BatchMessages" >> beam.BatchElements(min_batch_size=1, max_batch_size=self.max_batch)
                | "ParseMessages" >> beam.ParDo(_ParseMessageBatches(self._parser))
                .with_outputs(QUARANTINE, COUNTS, main="readings"))


# ---------------------------------------------------------------------------------------------------------
# Pub/Sub


class _Pulls(RestrictionProvider):
    """Pub/Sub and MQTT have no offsets: a reader's restriction counts its pulls, so that it can checkpoint and
    end."""

    def initial_restriction(self, element):
        return OffsetRange(0, _ENDLESS)

    def create_tracker(self, restriction):
        return _CheckpointOnlyTracker(restriction)

    def restriction_size(self, element, restriction):
        return 1


class _PollingReader(beam.DoFn, _DelegatedRestrictions):
    """A reader of a broker without offsets (Pub/Sub, MQTT): each call collects what the broker has
    (``_receive``), parses and emits it, has it acknowledged when the runner has taken the bundle (bundle
    finalization), moves the watermark, and checkpoints; it ends after ``stop_after_idle_s`` without a message.
    Subclasses say how to receive, number, read and acknowledge their messages."""

    stop_request: StopRequest | None = None  # a graceful stop: the read ends after the poll that sees it

    def __init__(self, parser: MessageParser, max_batch: int, max_bundle_s: float, poll_interval_s: float,
                 max_out_of_orderness_us: int, idle_watermark_us: int | None, stop_after_idle_s: float | None,
                 fill_batch: bool = True):
        self.restrictions = _Pulls()
        self.fill_batch = fill_batch
        self.parser = parser
        self.max_batch = max_batch
        self.max_bundle_s = max_bundle_s
        self.poll_interval_s = poll_interval_s
        self.max_out_of_orderness_us = max_out_of_orderness_us
        self.idle_watermark_us = idle_watermark_us
        self.stop_after_idle_s = stop_after_idle_s

    def setup(self):
        self._probed_at = 0.0

    def _hold(self, element) -> _ReadHold:
        """What the reads of this broker hold back (``_ReadHold``), shared by the reader instances of the process."""
        return _per_process(_READ_HOLDS, self._where(element), _ReadHold)

    def _receive(self, element, until: float | None = None) -> list:
        """Up to ``max_batch`` messages, waiting for all of ``max_bundle_s`` (``fill_batch``), or until none is
        waiting; while none has come, waiting on until ``until`` (monotonic time; ``_waits_on``)."""
        raise NotImplementedError

    def _waits_on(self, element, until: float | None) -> bool:
        return _quiet_wait_goes_on(until, self._suspect(element), self._where(element), self.stop_request)

    def _suspect(self, element) -> bool:
        """Whether the broker may be unreachable (a sign short of a probe): then ``_unreachable`` asks."""
        return False

    def _unreachable(self, element) -> str | None:
        """Why the broker cannot be reached now, asked of it (a few seconds at most), or None when it answers."""
        return None

    def _where(self, element) -> str:
        raise NotImplementedError

    def _broker_down(self, element) -> bool:
        """Whether the read must not end for idleness now: the broker cannot be reached (an outage: said once), or
        it has just answered again after one (said once; every idle time then starts again, so that what was
        published meanwhile is read before the read ends). Asks at most every 2 s. An outage longer than
        ``stop_after_idle_s`` had ended the stream as if the broker were quiet, without a word (bug hunt of
        Pub/Sub and MQTT streams; Kafka has the same in ``_ReadKafkaPartitions``)."""
        now = time.monotonic()
        if now - self._probed_at < 2.0:
            return _outage_said(self._where(element))
        self._probed_at = now
        reason = self._unreachable(element)
        if reason is not None:
            if _first_to_say(self._where(element), down=True):
                logging.getLogger(__name__).warning(
                    "cannot reach %s (%s); the read waits for it, and --stop-after-idle counts no time meanwhile",
                    self._where(element), reason)
            return True
        if not _outage_said(self._where(element)):
            return False
        self._broker_back(element)
        return True

    def _broker_back(self, element) -> None:
        if _first_to_say(self._where(element), down=False):
            logging.getLogger(__name__).warning("%s answers again", self._where(element))
        _restart_idle_clocks(self.parser.run_id)

    def _source(self, element) -> str:
        raise NotImplementedError

    def _payloads(self, received: list) -> list:
        raise NotImplementedError

    def _topics(self, received: list) -> list | None:
        """Each message's topic, where the broker gives one per message (MQTT); None otherwise."""
        return None

    def _positions(self, element, received: list) -> list[int]:
        """Each message's number (a reading's and a quarantined record's ``line``): by default its place in the
        messages of its source read in this process (``_next_numbers``)."""
        return _next_numbers(self.parser.run_id, self._source(element), len(received))

    def _acknowledgement(self, element, received: list):
        """A callable that acknowledges ``received``, or None."""
        raise NotImplementedError

    def _copies(self, element, received: list) -> dict:
        """``{index in received: why}`` for the messages that are copies of one this reader read before (a
        broker's redelivery); none by default."""
        return {}

    def _parse(self, element, received: list) -> ParsedMessages:
        """``received`` parsed; a copy (``_copies``) quarantined whole as ``duplicate``, standing for the readings
        it holds, so that it is neither scored again nor taken for a late reading."""
        copies = self._copies(element, received)
        source, positions = self._source(element), self._positions(element, received)
        payloads, topics = self._payloads(received), self._topics(received)
        fresh = [i for i in range(len(received)) if i not in copies]
        pick = (lambda values: None if values is None else [values[i] for i in fresh]) if copies else (lambda v: v)
        parsed = self.parser.parse(source, pick(positions), pick(payloads), pick(topics))
        for i, why in copies.items():
            alone = self.parser.parse(source, [positions[i]], [payloads[i]],
                                      None if topics is None else [topics[i]])
            readings = sum(len(batch) for batch, _ in alone.batches) + sum(q.records for q in alone.quarantine)
            text = self.parser._decode(payloads[i])[0]
            parsed.quarantine.append(Quarantined(text, source, int(positions[i]), "", max(readings, 1), _STAGE,
                                                 "duplicate", why, self.parser.run_id))
        return parsed

    # The bundle finalizer comes first: Beam passes it positionally and the restriction/watermark by keyword.
    def process(self, element, finalizer=beam.DoFn.BundleFinalizerParam, tracker=beam.DoFn.RestrictionParam(),
                estimator=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        restriction = tracker.current_restriction()
        clock = _read_clock(self.parser.run_id, element, lambda: _EventTimeClock(self.max_out_of_orderness_us,
                                                                                 self.idle_watermark_us))
        if not tracker.try_claim(restriction.start):
            return
        polled_at = time.monotonic()
        idle_wm_s = None if self.idle_watermark_us is None else self.idle_watermark_us / 1e6
        idle_for = min(clock.idle_for(), polled_at - self._hold(element).idle_from)  # as the idle end counts it
        received = self._receive(element, polled_at + _quiet_wait_s(
            self.max_bundle_s, _due_in(self.stop_after_idle_s, idle_for), _due_in(idle_wm_s, clock.idle_for())))
        # a poll that waited out its batch's time (fill_batch) is followed at once; one cut short by an outage, or
        # that ended when nothing was waiting, after poll_interval_s
        waited = time.monotonic() - polled_at >= self.max_bundle_s
        if received:
            parsed = self._parse(element, received)
            clock.saw(parsed)
            yield from _emit(parsed, clock.max_seen_us, estimator.current_watermark())
            acknowledge = self._acknowledgement(element, received)
            if acknowledge is not None:
                finalizer.register(acknowledge)
        finalizer.register(_nothing)  # see _nothing
        hold = self._hold(element)
        if time.monotonic() >= hold.watermark_until:  # else messages the broker holds back are older
            clock.advance(estimator, caught_up=len(received) < self.max_batch)
        if received and _outage_said(self._where(element)):  # messages came: it answers again
            self._broker_back(element)
        if self.stop_request is not None and self.stop_request.requested():  # this poll's messages are emitted and
            # acknowledged
            tracker.try_claim(restriction.stop)
            return
        idle = (self.stop_after_idle_s is not None and not received and clock.idle_for() >= self.stop_after_idle_s
                and time.monotonic() - hold.idle_from >= self.stop_after_idle_s)
        down = _outage_said(self._where(element))
        if not received and (idle or down or self._suspect(element)) and self._broker_down(element):
            idle = False
        if idle:
            tracker.try_claim(restriction.stop)
            return
        tracker.defer_remainder(Duration(seconds=0 if received or waited else self.poll_interval_s))


_SEEN_IDS = 200_000  # message ids a Pub/Sub reader remembers to know a redelivered copy (some 20 MB)
_PUBSUB_SEEN: dict = {}  # (emulator host, subscription) -> {message id: None}, the last _SEEN_IDS read here
_PUBSUB_SEEN_LOCK = threading.Lock()
_PULL_TIMEOUT_S = 10.0  # a pull answered at once that is not answered in this long: the service does not answer


class _PullPubSub(_PollingReader):
    """``(subscription, reader index) -> batches of parsed readings``; acks when the bundle is finalized."""

    def __init__(self, parser: MessageParser, emulator_host: str | None, *args):
        super().__init__(parser, *args)
        self.emulator_host = emulator_host

    def setup(self):
        super().setup()
        self._client = _subscriber_client(self.emulator_host)
        self._refused = False  # the last pull found no server (ServiceUnavailable)
        self._ack_deadline_s: float | None = None

    def _suspect(self, element) -> bool:
        return self._refused

    def _unreachable(self, element) -> str | None:
        from google.api_core import exceptions

        try:
            found = self._client.get_subscription(request={"subscription": element[0]}, timeout=2, retry=None)
        except (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded) as exc:
            return str(getattr(exc, "message", None) or exc).splitlines()[0]
        except exceptions.GoogleAPICallError:  # an answer (e.g. PermissionDenied: a subscriber-only role may not
            pass  # read the subscription's metadata, though it pulls): the service is there
        else:
            self._ack_deadline_s = float(found.ack_deadline_seconds or 10)
        self._refused = False  # it answers: no more probes until a pull finds no server again
        return None

    def _where(self, element) -> str:
        return f"Pub/Sub for {element[0]}" + (f" (the emulator at {self.emulator_host})" if self.emulator_host else "")

    def teardown(self):
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()

    def _pull(self, subscription: str, n: int) -> list:
        """Up to ``n`` messages, answered at once (``return_immediately``): a pull that waits for messages ends,
        when none come, at its deadline, and one that ends there just as the service hands it messages loses them
        until the ack deadline; the reader then took them for idle time and ended before they came back (a Pub/Sub
        stream test ended with 4700 of 4800 readings, 2026-12-03). The flag is deprecated because such pulls
        answer empty more often; the reader polls again within ``poll_interval_s``. A pull not answered within
        ``_PULL_TIMEOUT_S`` (a service that does not answer, e.g. an outage) is counted as one that took
        messages: ``_after_unanswered`` holds the watermark and the idle time until they are due again (``_ReadHold``:
        whatever instance of the reader pulls next)."""
        import warnings

        from google.api_core import exceptions

        hold = self._hold((subscription, 0))
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "The return_immediately flag is deprecated", DeprecationWarning)
                response = self._client.pull(request={"subscription": subscription, "max_messages": n,
                                                      "return_immediately": True},
                                             timeout=_PULL_TIMEOUT_S, retry=None)
        except exceptions.ServiceUnavailable:  # no server (see _suspect), or one that could not take the request
            self._refused = True
            self._went_unanswered(hold)
            return []
        except (exceptions.DeadlineExceeded, exceptions.Cancelled, exceptions.Aborted,
                exceptions.InternalServerError, exceptions.Unknown):  # the pull's own retryable errors, and its
            self._went_unanswered(hold)  # deadline: the service may have handed out messages the reader never got
            return []
        self._refused = False
        if hold.unanswered and hold.answered():
            self._after_unanswered(subscription, hold)
        return list(response.received_messages)

    @staticmethod
    def _went_unanswered(hold: _ReadHold) -> None:
        hold.unanswered = True
        hold.watermark_until = float("inf")  # until it answers, and its ack deadline has passed after that

    def _after_unanswered(self, subscription: str, hold: _ReadHold) -> None:
        """The service answers again after a pull it did not answer: messages that pull took come back once the
        subscription's ack deadline (from now, as the service may have taken them only now) has passed. Until
        then the watermark stays where it is, so that they are not late when they come (the bug hunt of delivery
        semantics found 52 such readings quarantined as late, never scored), and ``stop_after_idle_s`` counts
        from then. The deadline is read from the subscription; 600 s (the longest Pub/Sub allows) where it cannot
        be."""
        if self._ack_deadline_s is None:
            from google.api_core import exceptions

            try:
                found = self._client.get_subscription(request={"subscription": subscription}, timeout=5,
                                                      retry=None)
                self._ack_deadline_s = float(found.ack_deadline_seconds or 10)
            except exceptions.GoogleAPICallError:
                pass
        deadline_s = self._ack_deadline_s if self._ack_deadline_s is not None else 600.0
        due = time.monotonic() + deadline_s
        hold.watermark_until = due
        logging.getLogger(__name__).warning(
            "a pull from %s went unanswered; messages it took come back after the subscription's ack deadline "
            "(%g s%s): the watermark waits for them%s", self._where((subscription, 0)), deadline_s,
            "" if self._ack_deadline_s is not None else ": it could not be read, so the longest Pub/Sub allows",
            "" if self.stop_after_idle_s is None else ", and --stop-after-idle counts from then")
        if self.stop_after_idle_s is not None:  # read not ended for idleness before stop_after_idle_s after then
            hold.idle_from = max(hold.idle_from, due)

    def _receive(self, element, until: float | None = None) -> list:
        subscription, _ = element
        received = []
        deadline = time.monotonic() + self.max_bundle_s
        while len(received) < self.max_batch:
            if time.monotonic() >= deadline:
                if received or not self._waits_on(element, until):
                    break
                deadline = time.monotonic() + self.max_bundle_s  # nothing yet: waited on in this poll
            got = self._pull(subscription, min(1000, self.max_batch - len(received)))
            received.extend(got)
            if got:
                continue
            if self._refused or self._hold(element).unanswered:  # an outage is _broker_down's to wait on
                break
            if not self.fill_batch and (received or not self._waits_on(element, until)):
                break
            time.sleep(min(self.poll_interval_s, max(0.0, deadline - time.monotonic())))
        return received

    def _source(self, element) -> str:
        return f"pubsub:{element[0]}"

    def _payloads(self, received: list) -> list:
        return [r.message.data for r in received]

    def _positions(self, element, received: list) -> list[int]:
        ids = [r.message.message_id for r in received]  # the message id where it is a number, else _next_numbers's
        numbered = [mid.isdigit() and len(mid) < 19 for mid in ids]
        others = iter(_next_numbers(self.parser.run_id, self._source(element), numbered.count(False)))
        return [int(mid) if own else next(others) for mid, own in zip(ids, numbered)]

    def _acknowledgement(self, element, received: list):
        return _PubSubAck(self._client, element[0], [r.ack_id for r in received], (self.emulator_host, element[0]),
                          [r.message.message_id for r in received]).run

    def _copies(self, element, received: list) -> dict:
        """Messages Pub/Sub delivers again, by their ids: one whose acknowledgement came after the ack deadline, or
        failed (the bug hunt of delivery semantics froze the emulator while acknowledgements were due: 300 copies
        came, and those whose panes had been scored were quarantined as late, though their first copies were
        scored). A message counts as read once its bundle is finalized (``_PubSubAck``: the runner has taken its
        outputs), so that one whose bundle failed is read again when it comes back; the ids of the last
        ``_SEEN_IDS`` of a subscription are kept per process, not per DoFn instance, as a runner may hand a
        reader's next bundle to another instance (as the hunt's copies went)."""
        with _PUBSUB_SEEN_LOCK:
            seen = _PUBSUB_SEEN.get((self.emulator_host, element[0]), {})
            return {i: f"Pub/Sub delivered message {r.message.message_id} again (its acknowledgement came late or "
                       f"failed); it was read when it first came"
                    for i, r in enumerate(received) if r.message.message_id in seen}


def _subscriber_client(emulator_host: str | None):
    """A Pub/Sub ``SubscriberClient``; with an emulator (``emulator_host`` or ``PUBSUB_EMULATOR_HOST``), on a channel
    without gRPC's 4 MB limit on a response, as the client's channel to Pub/Sub itself has: the client's own
    emulator channel kept it, so one message over 4 MB (Pub/Sub takes 10 MB) failed the job, and every restart
    with it (bug hunt of Pub/Sub and MQTT streams)."""
    import os

    if emulator_host:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator_host  # read by the client at construction
    from google.cloud import pubsub_v1

    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    if not host:
        return pubsub_v1.SubscriberClient()
    import grpc
    from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

    channel = grpc.insecure_channel(host, options=[("grpc.max_receive_message_length", -1),
                                                   ("grpc.max_send_message_length", -1)])
    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel, host=host))


class _PubSubAck:
    """A bundle's finalization: its messages noted as read (``_PullPubSub._copies``), then acknowledged."""

    def __init__(self, client, subscription: str, ack_ids: list, seen_key=None, message_ids: list = ()):
        self.client, self.subscription, self.ack_ids = client, subscription, ack_ids
        self.seen_key, self.message_ids = seen_key, list(message_ids)

    def run(self):
        from google.api_core import exceptions

        if self.seen_key is not None:
            with _PUBSUB_SEEN_LOCK:
                seen = _PUBSUB_SEEN.setdefault(self.seen_key, {})  # ids, oldest first (dicts keep order)
                seen.update(dict.fromkeys(self.message_ids))
                while len(seen) > _SEEN_IDS:
                    del seen[next(iter(seen))]
        failed, reason = 0, ""
        for i in range(0, len(self.ack_ids), 2500):  # the service caps one request's size
            part = self.ack_ids[i:i + 2500]
            try:
                self.client.acknowledge(request={"subscription": self.subscription, "ack_ids": part})
            except (exceptions.GoogleAPICallError, exceptions.RetryError) as exc:
                failed += len(part)
                reason = str(getattr(exc, "message", None) or exc).splitlines()[0]
        if failed:  # raised here, it had been swallowed by the SDK worker's bundle finalization, without a word
            logging.getLogger(__name__).warning(
                "%d message(s) of %s could not be acknowledged (%s): Pub/Sub delivers them again after the ack "
                "deadline, and the stream reads them again", failed, self.subscription, reason)


class PubSubReadings(beam.PTransform):
    """``PBegin -> {readings: ReadingBatch, quarantine: Quarantined, counts: ("records_in", n)}`` from one
    subscription (``projects/<project>/subscriptions/<name>``).

    ``readers`` pull concurrently from the same subscription (Pub/Sub spreads the messages; keep 1 on Prism, see
    ``KafkaReadings``); each poll's pulls for ``max_bundle_s`` seconds (or up to ``max_batch`` messages) become one
    batch, as Kafka's reader gathers them. A stream's CPU goes mostly to Beam's fixed cost per batch at every step,
    so a longer one costs less per reading and adds up to as much latency: 100 pumps publishing at their own phases
    (400 readings/s) cost seqwatch and Prism 0.15 + 0.12 cores at 0.5 s, 0.10 + 0.07 at 2 s, and 0.36-0.44 +
    0.33-0.41 when a poll ended as soon as a pull found nothing waiting (``fill_batch=False``: the lowest latency;
    ``benchmarks/stream_soak.py --spread``, 2026-12-05). Messages are
    acknowledged once the runner has taken the bundle (bundle finalization); a message not acknowledged within the
    subscription's ack deadline is redelivered. ``emulator_host`` (``host:port``) points the client at the Pub/Sub
    emulator (as ``PUBSUB_EMULATOR_HOST`` does). The read is endless unless ``stop_after_idle_s`` is given; see
    ``KafkaReadings`` for the watermark options. ``native=True`` reads with Beam's ``ReadFromPubSub`` (Dataflow
    only: Prism and the portable Flink/Spark runners do not implement it)."""

    def __init__(self, subscription: str, run_id: str, *, emulator_host: str | None = None, readers: int = 1,
                 stop_after_idle_s: float | None = None, mapping: InputMapping | None = None,
                 align_to_window_s: float | None = None, max_out_of_orderness_s: float = 0.0,
                 idle_watermark_s: float | None = None, max_batch: int = 1_000, max_bundle_s: float = 0.5,
                 poll_interval_s: float = 0.2, fill_batch: bool = True, native: bool = False,
                 stop: StopRequest | None = None):
        super().__init__()
        self.stop = stop
        parts = subscription.split("/") if isinstance(subscription, str) else []
        if len(parts) != 4 or parts[0] != "projects" or parts[2] != "subscriptions" or not parts[1] or not parts[3]:
            raise ValueError(f"subscription must be 'projects/<project>/subscriptions/<name>', got {subscription!r}")
        self.subscription = subscription
        self.run_id = run_id
        self.emulator_host = emulator_host
        self.readers = int(_positive(readers, "readers"))
        self.stop_after_idle_s = _positive(stop_after_idle_s, "stop_after_idle_s") if stop_after_idle_s else None
        self.mapping = mapping
        self.align_to_window_s = align_to_window_s
        self.max_out_of_orderness_s = max_out_of_orderness_s
        self.idle_watermark_s = idle_watermark_s
        self.max_batch = int(_positive(max_batch, "max_batch"))
        self.max_bundle_s = _positive(max_bundle_s, "max_bundle_s")
        self.poll_interval_s = _positive(poll_interval_s, "poll_interval_s")
        self.fill_batch = bool(fill_batch)
        self.native = native
        self._parser = MessageParser(run_id, mapping, _micros(align_to_window_s, "align_to_window_s"))
        self._max_ooo_us = _micros(max_out_of_orderness_s, "max_out_of_orderness_s", allow_none=False)
        self._idle_wm_us = _micros(idle_watermark_s, "idle_watermark_s")

    def check_subscription(self, timeout_s: float = 10.0) -> None:
        """Ask Pub/Sub (or the emulator) for the subscription now, before a pipeline starts: ``ConnectionError``
        when it does not answer or there are no credentials, ``LookupError`` when the subscription does not exist,
        each in one sentence (the job had failed with tracebacks of some 450 lines). A PermissionDenied passes: a
        subscriber-only role may pull without reading the subscription's metadata (the emulator has no roles, so
        this case is not tested)."""
        from google.api_core import exceptions
        from google.auth.exceptions import DefaultCredentialsError

        where = f"the Pub/Sub emulator at {self.emulator_host}" if self.emulator_host else "Pub/Sub"
        try:
            client = _subscriber_client(self.emulator_host)
        except DefaultCredentialsError as exc:
            raise ConnectionError(f"no credentials for Pub/Sub ({str(exc).splitlines()[0]}); give --emulator-host "
                                  f"for the emulator") from None
        try:
            client.get_subscription(request={"subscription": self.subscription}, timeout=timeout_s, retry=None)
        except exceptions.NotFound:
            raise LookupError(f"the Pub/Sub subscription {self.subscription} does not exist on {where}") from None
        except exceptions.PermissionDenied:
            return  # a subscriber-only role may pull without reading the subscription's metadata: the job will say
        except (exceptions.GoogleAPICallError, exceptions.RetryError) as exc:
            reason = getattr(exc, "message", None) or str(exc)
            raise ConnectionError(f"{where} did not answer for the subscription {self.subscription} "
                                  f"({str(reason).splitlines()[0]})") from None
        finally:
            client.close()

    def expand(self, pbegin):
        _fix_the_runner(pbegin)
        if self.native:
            return self._expand_native(pbegin)
        reader = _PullPubSub(self._parser, self.emulator_host, self.max_batch, self.max_bundle_s,
                             self.poll_interval_s, self._max_ooo_us, self._idle_wm_us, self.stop_after_idle_s,
                             self.fill_batch)
        reader.stop_request = self.stop
        return (pbegin
                | "Readers" >> beam.Create([(self.subscription, i) for i in range(self.readers)])
                | "SpreadReaders" >> beam.Reshuffle()
                | "PullMessages" >> beam.ParDo(reader)
                .with_outputs(QUARANTINE, COUNTS, main="readings"))

    def _expand_native(self, pbegin):
        from apache_beam.io.gcp.pubsub import ReadFromPubSub

        source = f"pubsub:{self.subscription}"
        return (pbegin
                | "ReadFromPubSub" >> ReadFromPubSub(subscription=self.subscription, with_attributes=True)
                | "AsMessages" >> beam.Map(lambda m: (source, _message_number(m.message_id), m.data))
                | "BatchMessages" >> beam.BatchElements(min_batch_size=1, max_batch_size=self.max_batch)
                | "ParseMessages" >> beam.ParDo(_ParseMessageBatches(self._parser))
                .with_outputs(QUARANTINE, COUNTS, main="readings"))


def _message_number(message_id) -> int:
    text = str(message_id or "")
    return int(text) if text.isdigit() and len(text) < 19 else 0


# ---------------------------------------------------------------------------------------------------------
# MQTT


_MQTT_SESSIONS: dict = {}  # (host, port, client id, topic, qos) -> (paho client, queue of received messages)
_MQTT_LOCK = threading.Lock()


class _SubscribeMqtt(_PollingReader):
    """``(topic filter, reader index) -> batches of parsed readings`` from an MQTT broker; acknowledges QoS 1
    messages when the bundle is finalized."""

    def __init__(self, parser: MessageParser, host: str, port: int, qos: int, client_id: str, *args):
        super().__init__(parser, *args)
        self.host, self.port, self.qos, self.client_id = host, port, qos, client_id

    def _session(self, topic: str):
        """``(client, queue)`` of this process's one connection for the session. One per process, not per DoFn
        instance: a runner may keep several instances of the reader, and two connections with one client id
        take the session from each other, each takeover redelivering every unacknowledged message."""
        import queue

        import paho.mqtt.client as mqtt

        key = (self.host, self.port, self.client_id, topic, self.qos)
        with _MQTT_LOCK:
            if key not in _MQTT_SESSIONS:
                messages = queue.Queue()
                client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                     clean_session=False, manual_ack=True)
                client.on_connect = lambda c, userdata, flags, reason, props: c.subscribe(topic, qos=self.qos)
                client.on_message = functools.partial(_take_mqtt_message, messages, f"{self.host}:{self.port}")
                # paho waits up to 120 s between reconnection attempts by default: a broker back after an outage
                # was found 16 s late in the hunt, and a stream with --stop-after-idle had ended meanwhile
                client.reconnect_delay_set(min_delay=1, max_delay=5)
                # a keepalive of 10 s (paho's default is 60): a broker that hangs, or a link that drops without
                # closing, is found disconnected within about 15 s, not after a stream ended as idle meanwhile
                client.connect(self.host, self.port, keepalive=10)
                client.loop_start()
                _MQTT_SESSIONS[key] = (client, messages)
            return _MQTT_SESSIONS[key]

    def _receive(self, element, until: float | None = None) -> list:
        import queue

        _, messages = self._session(element[0])
        received = []
        deadline = time.monotonic() + self.max_bundle_s
        while len(received) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                if received or not self._waits_on(element, until):
                    break
                deadline = time.monotonic() + self.max_bundle_s  # nothing yet: waited on in this poll
                continue
            try:  # with fill_batch, one wait for the rest of the batch's time
                received.append(messages.get(timeout=left if self.fill_batch else min(left, 0.05)))
            except queue.Empty:
                if received and not self.fill_batch:
                    break
        return received

    def _source(self, element) -> str:
        return f"mqtt:{element[0]}"

    def _suspect(self, element) -> bool:
        return not self._session(element[0])[0].is_connected()

    def _unreachable(self, element) -> str | None:
        connected = self._session(element[0])[0].is_connected()
        return None if connected else "disconnected; reconnecting every few seconds"

    def _where(self, element) -> str:
        return f"the MQTT broker at {self.host}:{self.port}"

    def _payloads(self, received: list) -> list:
        return [m.payload for m in received]

    def _topics(self, received: list) -> list:
        return [m.topic for m in received]

    def _acknowledgement(self, element, received: list):
        acks = [(m.mid, m.qos) for m in received if m.qos > 0]
        return _MqttAck(self._session(element[0])[0], acks).run if acks else None


_MQTT_RETAINED_SAID: set = set()  # the brokers whose retained copies were said to be skipped


def _take_mqtt_message(messages, broker: str, client, userdata, message) -> None:
    """paho's ``on_message`` of a reader's session: a message to read goes to ``messages``; a copy the broker
    sends because it retains the topic's last message (``retain`` set, as MQTT sets it only on a message sent for
    a new subscription; one forwarded to a subscription that was there when it was published has it clear) is
    acknowledged and skipped: that message was read when it was published, and the broker sends the copy again on
    every subscription (the bug hunt of delivery semantics counted each retained reading three times in a first
    run and twice in each run after, the copies quarantined as duplicates, or scored again)."""
    if not message.retain:
        messages.put(message)
        return
    if message.qos > 0:
        client.ack(message.mid, message.qos)
    if broker not in _MQTT_RETAINED_SAID:
        _MQTT_RETAINED_SAID.add(broker)
        logging.getLogger(__name__).warning(
            "the MQTT broker at %s sends retained messages (a topic's last message, again on every subscription); "
            "they are skipped, as each was read when it was published", broker)


class _MqttAck:
    def __init__(self, client, acks: list):
        self.client, self.acks = client, acks

    def run(self):
        for mid, qos in self.acks:
            self.client.ack(mid, qos)


class MqttReadings(beam.PTransform):
    """``PBegin -> {readings: ReadingBatch, quarantine: Quarantined, counts: ("records_in", n)}`` from an MQTT
    broker (mosquitto, or any MQTT 3.1.1/5 broker): the JSON readings published on ``topic`` (a topic filter:
    ``plant/+/readings`` and ``plant/#`` work), one message per reading as for Kafka and Pub/Sub.

    The reader holds a *persistent session* named ``client_id`` (default ``seqwatch-<run id>``): subscribed with
    QoS 1 (the default), the broker keeps the messages that arrive while the job is away and redelivers those it
    did not acknowledge; they are acknowledged once the runner has taken the bundle. Connect the same client id
    once before publishing (``seqwatch stream`` does it when the job starts) so that nothing published earlier
    is missed. QoS 0 is fire-and-forget. MQTT messages carry no id: a record's ``line`` is its number in the
    reader's session. One reader per topic filter (MQTT delivers every message to every subscriber); see
    ``KafkaReadings`` for the watermark options. A poll's messages of ``max_bundle_s`` seconds (or up to
    ``max_batch``) become one batch; with ``fill_batch=False`` a poll ends as soon as no message is waiting (see
    ``PubSubReadings``: the lowest latency, at 1.8 times the CPU for 100 pumps publishing at their own phases)."""

    def __init__(self, broker: str, topic: str, run_id: str, *, qos: int = 1, client_id: str | None = None,
                 stop_after_idle_s: float | None = None, mapping: InputMapping | None = None,
                 align_to_window_s: float | None = None, max_out_of_orderness_s: float = 0.0,
                 idle_watermark_s: float | None = None, max_batch: int = 1_000, max_bundle_s: float = 0.5,
                 poll_interval_s: float = 0.2, fill_batch: bool = True, stop: StopRequest | None = None):
        super().__init__()
        self.stop = stop
        host, _, port = str(broker).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"broker must be 'host:port', got {broker!r}")
        if not topic or not isinstance(topic, str):
            raise ValueError(f"topic must be an MQTT topic filter such as 'plant/+/readings', got {topic!r}")
        if qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, got {qos!r}")
        self.host, self.port, self.topic, self.qos = host, int(port), topic, qos
        self.run_id = run_id
        self.client_id = client_id or f"seqwatch-{run_id}"
        self.stop_after_idle_s = _positive(stop_after_idle_s, "stop_after_idle_s") if stop_after_idle_s else None
        self.max_batch = int(_positive(max_batch, "max_batch"))
        self.max_bundle_s = _positive(max_bundle_s, "max_bundle_s")
        self.poll_interval_s = _positive(poll_interval_s, "poll_interval_s")
        self.fill_batch = bool(fill_batch)
        self._parser = MessageParser(run_id, mapping, _micros(align_to_window_s, "align_to_window_s"))
        self._max_ooo_us = _micros(max_out_of_orderness_s, "max_out_of_orderness_s", allow_none=False)
        self._idle_wm_us = _micros(idle_watermark_s, "idle_watermark_s")

    def open_session(self, timeout_s: float = 10.0) -> None:
        """Create the broker-side session (connect, subscribe, disconnect) so that the broker keeps what is
        published from now on for this reader; raises ``ConnectionError`` with one sentence when it cannot."""
        import threading

        import paho.mqtt.client as mqtt

        answered, refused = threading.Event(), []
        # Manual acknowledgement, never given: messages the broker already holds for the session and hands to
        # this short connection stay unacknowledged, so it delivers them again to the reader.
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
                             manual_ack=True)

        def on_connect(c, userdata, flags, reason, props):
            if getattr(reason, "is_failure", False):  # e.g. "Not authorized": said now, not as a 10 s timeout
                refused.append(str(reason))
                answered.set()
            else:
                c.subscribe(self.topic, qos=self.qos)

        def on_subscribe(c, userdata, mid, reason_codes, props):
            failed = [str(code) for code in reason_codes if getattr(code, "is_failure", False)]
            if failed:  # e.g. an ACL that denies the topic (not tested: mosquitto 2.0.11 grants a denied MQTT
                # 3.1.1 subscription and delivers nothing): the stream would never receive a message
                refused.append(f"the subscription to {self.topic!r}: {', '.join(failed)}")
            answered.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        try:
            client.connect(self.host, self.port)
        except OSError as exc:
            raise ConnectionError(f"cannot reach the MQTT broker at {self.host}:{self.port} ({exc})") from None
        client.loop_start()
        try:
            if not answered.wait(timeout_s):
                raise ConnectionError(f"the MQTT broker at {self.host}:{self.port} did not confirm the subscription "
                                      f"to {self.topic!r} within {timeout_s:g} s")
            if refused and refused[0].startswith("the subscription"):
                raise ConnectionError(f"the MQTT broker at {self.host}:{self.port} refused {refused[0]}")
            if refused:
                raise ConnectionError(f"the MQTT broker at {self.host}:{self.port} refused the connection "
                                      f"({refused[0]})")
        finally:
            client.loop_stop()
            client.disconnect()

    def expand(self, pbegin):
        _fix_the_runner(pbegin)
        reader = _SubscribeMqtt(self._parser, self.host, self.port, self.qos, self.client_id, self.max_batch,
                                self.max_bundle_s, self.poll_interval_s, self._max_ooo_us, self._idle_wm_us,
                                self.stop_after_idle_s, self.fill_batch)
        reader.stop_request = self.stop
        return (pbegin
                | "Readers" >> beam.Create([(self.topic, 0)])
                | "SubscribeMqtt" >> beam.ParDo(reader)
                .with_outputs(QUARANTINE, COUNTS, main="readings"))


# ---------------------------------------------------------------------------------------------------------
# Replay


class _ReplayRows(RestrictionProvider):
    """Restriction of a replay: the rows ``[start, stop)`` of the files' readings in event-time order (one
    restriction for all files: one timeline and one watermark)."""

    def __init__(self, reader: FileReader):
        self.reader = reader
        self._rows = {}

    def initial_restriction(self, element):
        paths, _ = element
        if paths not in self._rows:
            self._rows[paths] = sum(len(b) for path in paths for b, _, _ in self.reader.read(path))
        return OffsetRange(0, self._rows[paths])

    def create_tracker(self, restriction):
        return _CheckpointOnlyTracker(restriction)

    def restriction_size(self, element, restriction):
        return restriction.size()


class _StartClock(beam.DoFn):
    """``paths -> (paths, wall-clock start in µs)``: every part of a replay plays against the same start."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s

    def process(self, paths):
        yield paths, int((time.time() + self.delay_s) * 1e6)


class _PlayFile(beam.DoFn, _DelegatedRestrictions):
    # How often the replay handed the rest of its files back to the runner (Beam metric seqwatch.replay/checkpoints):
    # about once per batch and per second of waiting for the next reading's time.
    CHECKPOINTS = beam.metrics.Metrics.counter("seqwatch.replay", "checkpoints")
    stop_request: StopRequest | None = None  # a graceful stop: the rows not yet played are not read

    def __init__(self, reader: FileReader, speed: float, rebase_to_now: bool, max_batch: int,
                 align_to_window_us: int | None, max_wait_s: float | None = None):
        self.restrictions = _ReplayRows(reader)
        self.reader = reader
        self.speed = speed
        self.max_wait_us = max_wait_s * 1e6 if max_wait_s else None
        self.rebase_to_now = rebase_to_now
        self.max_batch = max_batch
        self.align_to_window_us = align_to_window_us

    def setup(self):
        self._files = {}

    def _load(self, paths: tuple):
        """The files' readings sorted by event time, their quarantine, how many readings that stands for, and
        when each reading is due: µs of wall clock after the start (event time over the speed, each pause cut to
        the longest wait)."""
        if paths not in self._files:
            frames, quarantine, records = [], [], 0
            for batch, bad, n in (chunk for path in paths for chunk in self.reader.read(path)):
                frames.append(batch.frame)
                quarantine.extend(bad)
                records += n
            frame = (pd.concat(frames, ignore_index=True) if frames
                     else ReadingBatch.from_columns([], [], [], [], [], []).frame)
            frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
            pauses = np.diff(frame["timestamp"].to_numpy().astype(np.float64)) / self.speed
            if self.max_wait_us is not None:
                pauses = np.minimum(pauses, self.max_wait_us)
            due_us = np.concatenate([[0.0], np.cumsum(pauses)])
            self._files[paths] = (frame, quarantine, records - len(frame), due_us)
        return self._files[paths]

    def process(self, element, tracker=beam.DoFn.RestrictionParam(),
                estimator=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        paths, wall_start_us = element
        frame, quarantine, quarantined_records, due_us = self._load(paths)
        restriction = tracker.current_restriction()
        stamps = frame["timestamp"].to_numpy()
        first_us = int(stamps[0]) if len(stamps) else wall_start_us
        shift = wall_start_us - first_us if self.rebase_to_now else 0
        start, stop = restriction.start, restriction.stop
        if start < stop and self.stop_request is not None and self.stop_request.requested():
            tracker.try_claim(stop)  # as at the files' end: the watermark goes to the end of time
            return
        if start >= stop:
            if stop == 0:  # files without one good reading: their quarantine is all there is
                yield from self._quarantine(quarantine, quarantined_records, first_us + shift)
            tracker.try_claim(stop)
            return
        # Row i is due at wall_start + due_us[i]: (t_i - t_0) / speed, less the part of long pauses cut.
        elapsed_us = time.time() * 1e6 - wall_start_us
        end = min(int(np.searchsorted(due_us, elapsed_us, side="right")), stop, start + self.max_batch)
        if end > start:
            if not tracker.try_claim(end - 1):
                return
            if start == 0:  # with the first rows, so that a checkpoint before them does not repeat it
                yield from self._quarantine(quarantine, quarantined_records, first_us + shift)
            part = frame.iloc[start:end].reset_index(drop=True)
            if shift:
                part = part.assign(timestamp=part["timestamp"].to_numpy() + shift)
            for batch in self._split(part):
                at = Timestamp(micros=int(batch["timestamp"].iat[0]))
                yield beam.window.TimestampedValue(ReadingBatch(batch), at)
                yield beam.pvalue.TaggedOutput(COUNTS, beam.window.TimestampedValue(("records_in", len(batch)), at))
        if end >= stop:
            tracker.try_claim(stop)  # done; the watermark goes to the end of time
            return
        next_us = int(stamps[end])
        watermark = Timestamp(micros=next_us + shift)
        current = estimator.current_watermark()
        if current is None or watermark > current:
            estimator.set_watermark(watermark)
        wait_s = max(0.0, (due_us[end] - (time.time() * 1e6 - wall_start_us)) / 1e6)
        if end == start and wait_s > 0:
            # Nothing was due: wait here, not only in the runner. The DirectRunner's batch runner (where it cannot
            # hand a stream to Prism) re-runs a deferred remainder at once, whatever its delay: a replay at 5x real
            # speed spun through hundreds of bundles a second, its memory growing by 1 GB a minute.
            time.sleep(min(wait_s, 1.0))
            wait_s = 0.0
        self.CHECKPOINTS.inc()
        tracker.defer_remainder(Duration(seconds=min(wait_s, 1.0)))

    @staticmethod
    def _quarantine(quarantine: list, records: int, at_us: int):
        anchor = Timestamp(micros=at_us)
        for q in quarantine:
            yield beam.pvalue.TaggedOutput(QUARANTINE, beam.window.TimestampedValue(q, anchor))
        if records:
            yield beam.pvalue.TaggedOutput(COUNTS, beam.window.TimestampedValue(("records_in", records), anchor))

    def _split(self, part: pd.DataFrame) -> list:
        if self.align_to_window_us is None:
            return [part]
        window = part["timestamp"].to_numpy() // self.align_to_window_us
        cuts = np.flatnonzero(np.diff(window)) + 1  # the rows are sorted: windows are contiguous
        bounds = [0, *cuts.tolist(), len(part)]
        return [part.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds[:-1], bounds[1:])]


class ReplayFile(beam.PTransform):
    """``PBegin -> {readings: ReadingBatch, quarantine: Quarantined, counts: ("records_in", n)}``: plays input
    files on the wall clock at ``speed`` times real speed (for demos and latency measurements).

    Each file is read with the batch parser (``FileReader``: any format and mapping the batch source accepts),
    the readings of all files are merged in event-time order (one timeline), and reading *i* is released at
    ``start + (t_i - t_0) / speed``, in batches of at most ``max_batch``, except that a pause between two readings
    is played in at most ``max_wait_s`` seconds (None: in full): a night without readings, or one timestamp years
    off (which validation then quarantines), does not hold the rest back for hours. Rows that do not parse go to quarantine
    with the first readings. The watermark is
    the event time of the next reading to be released, so a replay has no late data. ``rebase_to_now`` shifts
    the event times so that the first reading happens at the replay's start (then, with speed > 1, event time
    runs ahead of the wall clock). ``start_delay_s`` waits before the first reading (e.g. for a consumer to be
    ready). The files are held in memory by the one worker that plays them."""

    def __init__(self, paths: Sequence[str] | str, mapping: InputMapping, run_id: str, *, speed: float = 1.0,
                 rebase_to_now: bool = False, max_batch: int = DEFAULT_MAX_BATCH,
                 align_to_window_s: float | None = None, start_delay_s: float = 0.0,
                 max_wait_s: float | None = DEFAULT_REPLAY_MAX_WAIT_S, stop: StopRequest | None = None):
        super().__init__()
        self.stop = stop
        self.paths = [paths] if isinstance(paths, str) else list(paths)
        if not self.paths:
            raise ValueError("paths must name at least one file, got none")
        if not isinstance(speed, (int, float)) or not math.isfinite(speed) or speed <= 0:
            raise ValueError(f"speed must be a finite number > 0, got {speed!r}")
        self.mapping = mapping
        self.run_id = run_id
        self.speed = float(speed)
        self.rebase_to_now = rebase_to_now
        self.max_batch = int(_positive(max_batch, "max_batch"))
        self.align_to_window_s = align_to_window_s
        self.start_delay_s = _micros(start_delay_s, "start_delay_s", allow_none=False) / 1e6
        if max_wait_s is not None and not (isinstance(max_wait_s, (int, float)) and max_wait_s > 0):
            raise ValueError(f"max_wait_s must be a number of seconds > 0 or None, got {max_wait_s!r}")
        self.max_wait_s = max_wait_s
        self._align_us = _micros(align_to_window_s, "align_to_window_s")
        if self._align_us == 0:
            raise ValueError(f"align_to_window_s must be > 0, got {align_to_window_s!r}")

    def expand(self, pbegin):
        _fix_the_runner(pbegin)
        reader = FileReader(self.mapping, self.run_id)
        play = _PlayFile(reader, self.speed, self.rebase_to_now, self.max_batch, self._align_us, self.max_wait_s)
        play.stop_request = self.stop
        return (pbegin
                | "Files" >> beam.Create([tuple(self.paths)])
                | "StartClock" >> beam.ParDo(_StartClock(self.start_delay_s))
                | "PlayFiles" >> beam.ParDo(play)
                .with_outputs(QUARANTINE, COUNTS, main="readings"))
