"""seqwatch inside your own Beam pipeline: ``DetectAnomalies`` turns a PCollection of readings into scored
windows, alerts and quarantined records, with the same steps as ``seqwatch run`` and ``seqwatch stream``
(validation, per-entity panes, the model, alert merging) and without their sinks: what to write, and where,
is up to the pipeline around it; ``WriteDetections`` writes what the CLI writes.

    import apache_beam as beam
    from seqwatch.pipelines.embed import DetectAnomalies, WriteDetections

    with beam.Pipeline() as p:
        detect = DetectAnomalies("models/pumps", suite="sensor")
        found = p | beam.Create(readings) | detect    # dicts: entity_id, channel, timestamp, value
        found.alerts | beam.Map(print)                # seqwatch.schemas.elements.Alert
        found | WriteDetections("out/", run_id=detect.run_id)

A reading is a dict with the keys ``entity_id``, ``channel``, ``timestamp`` (ISO 8601 text, a datetime or epoch
seconds, milliseconds, microseconds or nanoseconds) and ``value``, or the JSON text of one (``str`` or ``bytes``,
as a broker delivers it), or an element with those fields: a schema'd PCollection's ``beam.Row`` (a time field may
hold Beam's ``Timestamp``), a NamedTuple, a dataclass or a pandas row; or a ``(key, reading)`` pair, as Beam's
``ReadFromKafka`` and a keyed PCollection give them (a wide mapping's ``{"from_key": true}`` takes the entity from
the key), or a Pub/Sub message with attributes (its data is the reading); a ``mapping``
(``seqwatch.schemas.mapping.InputMapping``, or a dict of its fields as a ``--mapping`` file holds them) renames
the keys (long format), or reads a dict per entity and time with a key per channel (wide format: a device's
state).
Every reading that enters leaves either in a scored window or as a ``Quarantined`` record with a reason (a
message that is not JSON, a missing key, a value that is not a number, a duplicate, a reading no window can
hold, ...), and ``counts`` carries ``(name, n)`` pairs that prove it:
``records_in == records_scored + records_quarantined`` summed over the run.

In a streaming pipeline (``StandardOptions.streaming``) panes are scored as the watermark passes them, readings
more than ``late_after_s`` behind the latest event time are quarantined as late before windowing (so Beam
never drops one), and ``opened`` carries each incident as soon as its first window is anomalous. In a batch
pipeline every pane is scored when the input is done.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from collections.abc import Mapping
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from seqwatch.pipelines.broker_sources import MessageParser, _emit, _fix_the_runner
from seqwatch.pipelines.config import MAX_SECONDS
from seqwatch.pipelines.batch import SINKS
from seqwatch.pipelines.graph import COUNTS_FILE, SourceOutputs, detect, write_detections
from seqwatch.pipelines.object_store import path_exists
from seqwatch.pipelines.sinks import MAX_SCORE_FILES, delete_path
from seqwatch.pipelines.sources import COUNTS, QUARANTINE
from seqwatch.pipelines.streaming import (DEFAULT_FLUSH_WINDOW_S, DEFAULT_LATE_AFTER_S, gate_late_readings,
                                          plan_stream)
from seqwatch.pipelines.validate import PCOLLECTION_PREFIX
from seqwatch.schemas.mapping import InputMapping


class Detections(NamedTuple):
    """The outputs of ``DetectAnomalies``."""

    scores: beam.PCollection  # ScoredWindows: the windows of one (entity, pane), their scores and verdicts
    alerts: beam.PCollection  # Alert: one per incident (anomalous windows that overlap, touch or follow
    #                            within the alert cooldown)
    quarantine: beam.PCollection  # Quarantined: raw text, stage, reason code and reason
    counts: beam.PCollection  # (name, n): records_in, records_quarantined, windows_scored, alerts, ...
    opened: beam.PCollection  # Alert, streaming only: an incident as of its first anomalous window


class WriteDetections(beam.PTransform):
    """``Detections -> counts``: write them as ``seqwatch run`` and ``seqwatch stream`` do, under ``root`` (a
    local folder or any Beam file system): scores, forecasts, alerts (and in streaming ``alerts_open``) and
    quarantined records as Parquet; the counts, the sinks' own included, as ``counts.json`` once at the end in
    batch, or as ``counts/<window start>.json`` per event-time window of ``flush_window_s`` in streaming. Batch
    outputs are written in place: unlike ``seqwatch run``, nothing is staged and swapped in. Emits the counts
    written (a dict; in streaming ``(window start, dict)`` pairs). ``run_id``: the run id the score rows carry;
    give the one of the ``DetectAnomalies`` that found them (its ``run_id``), which its quarantined records
    carry. A root that is a file raises ``RunError`` when the pipeline is built, and so, in batch, does a root
    that holds an earlier run's outputs (they would stay beside this run's, uncounted); ``replace_existing=True``
    removes those outputs then (a retry into the same root needs it). A stream restarted into its root writes on
    there, over the files of the windows it writes again. ``score_files`` (batch): scores and forecasts are
    written in that many files each, an entity's rows in one (``seqwatch run`` takes about a million score rows
    a file); a stream writes them per entity and pane, or, with ``score_window_files`` N, per flush window in N
    files (as ``seqwatch stream --score-window-files``; ignored in batch).

        detect = DetectAnomalies("models/pumps")
        readings | detect | WriteDetections("out/", run_id=detect.run_id)"""

    def __init__(self, root: str | os.PathLike, run_id: str, flush_window_s: float = DEFAULT_FLUSH_WINDOW_S,
                 replace_existing: bool = False, score_files: int = 1, score_window_files: int = 0):
        super().__init__()
        if isinstance(score_files, bool) or not isinstance(score_files, int) or score_files < 1:
            raise ValueError(f"score_files must be a whole number of files, at least 1, got {score_files!r}")
        if (isinstance(score_window_files, bool) or not isinstance(score_window_files, int)
                or not 0 <= score_window_files <= MAX_SCORE_FILES):
            raise ValueError(f"score_window_files must be a whole number of files from 0 to {MAX_SCORE_FILES}, got "
                             f"{score_window_files!r}")
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a folder's path, got {root!r}")
        if not isinstance(replace_existing, bool):
            raise TypeError(f"replace_existing must be True or False, got {replace_existing!r}")
        if not (math.isfinite(flush_window_s) and flush_window_s > 0):
            raise ValueError(f"flush_window_s must be a positive number of seconds, got {flush_window_s}")
        if not 1e-6 <= flush_window_s <= MAX_SECONDS:
            raise ValueError(f"flush_window_s must be from 1 µs to a century, got {flush_window_s}")
        if not (isinstance(run_id, str) and run_id):
            raise ValueError(f"run_id must be the run id the score rows carry (the DetectAnomalies' run_id), got "
                             f"{run_id!r}")
        self.root = os.fspath(root)
        self.run_id = run_id
        self.flush_window_s = flush_window_s
        self.replace_existing = replace_existing
        self.score_files = score_files
        self.score_window_files = score_window_files

    def expand(self, found: Detections):
        from seqwatch.pipelines.batch import RunError
        from seqwatch.pipelines.sinks import prepare_output_folder

        _fix_the_runner(found.scores)
        streaming = found.scores.pipeline.options.view_as(StandardOptions).streaming
        try:  # a file in the root's place is one sentence now, not a traceback once everything was scored
            prepare_output_folder(self.root)
        except OSError as exc:
            raise RunError(str(exc).replace("--output", "root", 1)) from None
        # A batch pipeline's outputs are one run's: an earlier run's files would stay beside them, uncounted. A
        # stream restarted into its root goes on writing there (its windows' files), as it always did.
        earlier = [] if streaming else earlier_outputs(self.root)
        if earlier and not self.replace_existing:
            raise RunError(f"root {self.root} holds the outputs of an earlier run ({', '.join(earlier)}), and "
                           f"WriteDetections writes in place: its files would stay beside this run's, which its "
                           f"counts do not count; give each run a folder of its own, or pass replace_existing=True "
                           f"(as a retry into the same folder needs) to remove them when the pipeline is built")
        for name in earlier:
            delete_path(FileSystems.join(self.root, name))  # on an object store, each object under the prefix
        return write_detections({"scored": found.scores, "alerts": found.alerts, "opened": found.opened,
                                 "quarantine": found.quarantine, "counts": found.counts}, self.run_id, self.root,
                                self.flush_window_s if streaming else None, score_files=self.score_files,
                                score_window_files=self.score_window_files if streaming else 0)


# What a batch WriteDetections writes under its root: an earlier run's would mix with this one's.
WRITTEN = (*SINKS, COUNTS_FILE)


def earlier_outputs(root: str) -> list[str]:
    """The names in ``WRITTEN`` under ``root`` that hold a file (on an object store, a prefix with objects)."""
    found = []
    for name in WRITTEN:
        path = FileSystems.join(root, name)
        if "://" not in path:
            held = os.path.isfile(path) or any(files for _, _, files in os.walk(path))
        else:  # gs://, s3://: a "folder" is a prefix, which FileSystems.exists does not see
            held = path_exists(path)
        if held:
            found.append(name)
    return found


def _is_number(value) -> bool:
    """A real number, numpy's included (a notebook's value from a frame), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _payload_and_key(element) -> tuple:
    """``(payload, key)`` of an element: a ``(key, value)`` pair (Beam's ``ReadFromKafka`` gives them, and a keyed
    PCollection's elements are such pairs) is its value with its key, for a wide mapping's ``{"from_key": true}``,
    as is a Kafka record with its metadata (``ReadFromKafka(with_metadata=True)``: a Row with ``topic``,
    ``offset``, ``key`` and ``value``); a Pub/Sub message (``ReadFromPubSub(with_attributes=True)``) is its data;
    anything else is a reading itself. A pair's value had been taken for the reading: every element of a Kafka
    read was quarantined as not JSON."""
    if type(element) is tuple and len(element) == 2:  # not a NamedTuple (a reading's fields)
        key, value = element
        return _payload(value), key
    fields = element._asdict() if callable(getattr(element, "_asdict", None)) else None
    if fields is not None and isinstance(fields.get("value"), (bytes, bytearray)) \
            and {"topic", "offset"} <= set(fields):
        return bytes(fields["value"]), fields.get("key")  # a Kafka record (a reading's value is never bytes)
    if not isinstance(element, Mapping) and isinstance(getattr(element, "data", None), (bytes, str)) \
            and hasattr(element, "attributes"):
        return element.data, None
    return _payload(element), None


def _payload(reading):
    """A reading as the message parser takes it: JSON text (a dict's datetimes as ISO text; a frame's row, as
    ``DataFrame.iterrows`` gives it, a schema'd PCollection's ``beam.Row``, a NamedTuple and a dataclass, each as
    the dict of its fields). What cannot be written as JSON (a reference cycle) becomes its ``repr``, which the
    parser quarantines as not JSON: an element never fails the pipeline."""
    if isinstance(reading, (str, bytes, bytearray, memoryview)) or reading is None:
        return reading
    try:
        if not isinstance(reading, Mapping):
            if callable(getattr(reading, "to_dict", None)):
                reading = reading.to_dict()  # a pandas Series
            elif callable(getattr(reading, "_asdict", None)):
                # a beam.Row (beam.Select, Beam SQL and DataFrames give them), or the NamedTuple a portable runner
                # decodes a Row as: json had failed on a Row and written a NamedTuple as a list (bug hunt)
                reading = reading._asdict()
            elif dataclasses.is_dataclass(reading) and not isinstance(reading, type):
                reading = {field.name: getattr(reading, field.name) for field in dataclasses.fields(reading)}
        if isinstance(reading, Mapping):
            reading = {key if isinstance(key, str) else str(key): value for key, value in reading.items()}
        return json.dumps(reading, default=_json_value)  # not a dict (a list, a number): quarantined with its text
    except (TypeError, ValueError, OverflowError, RecursionError):
        return repr(reading)


def _json_value(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, Timestamp):  # Beam's own time, as a schema'd row's time field holds it
        return value.to_rfc3339()
    if isinstance(value, np.datetime64):  # a frame's values as numpy gives them: naive, so UTC
        return np.datetime_as_string(value, unit="us")
    if hasattr(value, "item"):  # numpy scalars
        try:
            item = value.item()
        except (TypeError, ValueError):  # an array of more than one value: a list, which no value parses as
            return value.tolist() if callable(getattr(value, "tolist", None)) else str(value)
        return item if not isinstance(item, float) or math.isfinite(item) else str(item)
    return str(value)


class _ParseReadings(beam.DoFn):
    """Readings -> ``ReadingBatch`` elements at their event times, quarantined records, counts; parsed in batches
    of up to ``batch_size`` readings of one bundle (all in the global window: ``DetectAnomalies`` puts them
    there first). ``line`` numbers the readings in the order this worker saw them (there is no file to point
    into).

    Not ``BatchElements``: it stamps each batch with the end of its window, so its output holds no watermark
    back, and stamping the readings back to their event times after it is safe only while the runner fuses the
    two steps. Here the readings leave in the bundle that brought them, at or after the earliest element
    timestamp of their batch, which the watermark cannot pass before the bundle is done."""

    def __init__(self, parser: MessageParser, source: str, batch_size: int):
        self.parser = parser
        self.source = source
        self.batch_size = batch_size

    def setup(self):
        self._next = 0

    def start_bundle(self):
        self._pending: list = []  # (reading, element timestamp)

    def process(self, reading, timestamp=beam.DoFn.TimestampParam):
        self._pending.append((reading, timestamp))
        if len(self._pending) >= self.batch_size:
            items, self._pending = self._pending, []
            yield from self._parse(items)

    def finish_bundle(self):
        items, self._pending = self._pending, []
        if items:
            for out in self._parse(items):
                yield _in_global_window(out)

    def _parse(self, items):
        first, self._next = self._next, self._next + len(items)
        payloads, keys = zip(*(_payload_and_key(element) for element, _ in items))
        parsed = self.parser.parse(self.source, range(first + 1, first + 1 + len(items)), payloads, keys=keys)
        # The earliest element timestamp of the batch is the floor of its outputs' timestamps (see _emit): the
        # watermark cannot pass it while this bundle runs, so a reading stamped there is never late for its pane,
        # and a reading that arrives far behind (an element stamped on arrival) carries its arrival time to the
        # late gate. The latest timestamp would be no such bound: stamped forward to it, the earlier readings of
        # the batch let the watermark pass their panes before they reach them (on Prism they all came late).
        stamps = [t for _, t in items if MAX_TIMESTAMP > t > Timestamp(0)]
        floor = min(stamps) if stamps else None
        yield from _emit(parsed, None if floor is None else int(floor.micros), floor)


def _in_global_window(out):
    """A ``TimestampedValue`` output (or a tagged one) as the ``WindowedValue`` that ``finish_bundle`` must give."""
    if isinstance(out, beam.pvalue.TaggedOutput):
        return beam.pvalue.TaggedOutput(out.tag, _in_global_window(out.value))
    return WindowedValue(out.value, out.timestamp, (GlobalWindow(),))


class DetectAnomalies(beam.PTransform):
    """``PCollection[reading] -> Detections``: see the module docstring.

    ``model_dir``: a model artifact or a model root (its newest version); ``suite``: a bundled suite family
    (sensor, energy, health) or a suite file; ``pane_steps``: pane length in model steps (default: 4 windows
    streaming, ``seqwatch run``'s default in batch); ``alert_cooldown_s``, ``online_calibration``: as the CLI's
    flags; ``source``: quarantined records carry it as ``pcollection:<source>`` (a name no file has: their
    ``raw`` is the element's text, or the reading's fields as JSON when it was quarantined after parsing);
    ``late_after_s`` (streaming): the late gate; ``allowed_lateness_s`` (streaming): how long after the watermark
    passes a pane (and its look-ahead context) it is scored, as ``seqwatch stream --allowed-lateness`` (latency
    traded for completeness: a reading that comes after its pane was scored is quarantined as ``late``);
    ``run_id``: the run id its outputs carry (default: ``embedded-`` and a hash of the model version and
    ``source``; the
    ``run_id`` attribute holds it, for ``WriteDetections``). A model
    or suite that cannot be used raises ``seqwatch.pipelines.batch.RunError`` (one sentence) here, when the
    pipeline is built."""

    def __init__(self, model_dir: str, suite: str = "sensor", mapping=None, pane_steps: int = 0,
                 alert_cooldown_s: float = 0.0, online_calibration: bool = False, source: str = "embedded",
                 late_after_s: float = DEFAULT_LATE_AFTER_S, batch_size: int = 10_000, run_id: str = "",
                 allowed_lateness_s: float = 0.0):
        super().__init__()
        if not (_is_number(alert_cooldown_s) and math.isfinite(alert_cooldown_s) and alert_cooldown_s >= 0):
            raise ValueError(f"alert_cooldown_s must be zero or a positive number of seconds, got "
                             f"{alert_cooldown_s!r}")
        if not (_is_number(late_after_s) and math.isfinite(late_after_s) and late_after_s > 0):
            raise ValueError(f"late_after_s must be a positive number of seconds, got {late_after_s!r}")
        if not (_is_number(allowed_lateness_s) and math.isfinite(allowed_lateness_s) and allowed_lateness_s >= 0):
            raise ValueError(f"allowed_lateness_s must be zero or a positive number of seconds, got "
                             f"{allowed_lateness_s!r}")
        if max(alert_cooldown_s, late_after_s, allowed_lateness_s) > MAX_SECONDS:  # beyond Beam's int64 µs timers
            raise ValueError(f"alert_cooldown_s, late_after_s and allowed_lateness_s must be at most a century, got "
                             f"{alert_cooldown_s}, {late_after_s} and {allowed_lateness_s}")
        if not (isinstance(batch_size, numbers.Integral) and not isinstance(batch_size, bool)) or batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if not (isinstance(pane_steps, numbers.Integral) and not isinstance(pane_steps, bool) and pane_steps >= 0):
            raise ValueError(f"pane_steps must be a whole number of steps >= 1 (or 0 for the default), got "
                             f"{pane_steps!r}")
        if not isinstance(online_calibration, bool):
            raise TypeError(f"online_calibration must be True or False, got {online_calibration!r}")
        if not isinstance(model_dir, (str, os.PathLike)) or not isinstance(suite, (str, os.PathLike)):
            raise TypeError(f"model_dir and suite must be paths (or a bundled suite's name), got {model_dir!r} and "
                            f"{suite!r}")
        if isinstance(mapping, dict):  # as a --mapping file holds it
            mapping = InputMapping.from_dict(mapping)
        elif mapping is not None and not isinstance(mapping, InputMapping):
            raise TypeError(f"mapping must be an InputMapping or a dict of its fields, got {type(mapping).__name__}")
        entity_from = next(iter(mapping.entity), None) if mapping is not None and isinstance(mapping.entity, dict) \
            else None
        if entity_from == "from_topic":
            # an element of a PCollection has no topic: every reading would be quarantined
            raise ValueError("mapping entity {'from_topic': ...} takes the entity from an MQTT message's topic, "
                             "which a PCollection's element does not have; name the key that holds it "
                             "({'column': NAME}) or give one ({'value': ID})")
        model_dir, suite = os.fspath(model_dir), os.fspath(suite)
        self.options = dict(model_dir=model_dir, suite=suite, pane_steps=pane_steps, source_name=source,
                            run_id=run_id, alert_cooldown_us=int(round(alert_cooldown_s * 1e6)),
                            online_calibration=online_calibration, run_id_prefix="embedded")
        self.plan = plan_stream(output="embedded", **self.options)  # refuses a bad model or suite now
        self.run_id = self.plan.run_id  # what its quarantined records carry (given, or from model and source)
        self.parser = MessageParser(self.plan.run_id, mapping)
        self.source = source
        self.late_after_s = late_after_s
        self.allowed_lateness_s = float(allowed_lateness_s)
        self.batch_size = batch_size

    def expand(self, readings) -> Detections:
        from seqwatch.pipelines.config import DEFAULT_PANE_STEPS

        _fix_the_runner(readings)  # as a source of seqwatch's does: the user's options need not pass through it
        streaming = readings.pipeline.options.view_as(StandardOptions).streaming
        plan = self.plan
        if not streaming and not self.options["pane_steps"]:
            plan = plan_stream(output="embedded", **{**self.options, "pane_steps": DEFAULT_PANE_STEPS})
        parsed = (readings
                  # The steps after this cut their own panes by event time; whatever windows the readings came
                  # in, they start from the global window, as every side output of the graph does.
                  | "GlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
                  | "Parse" >> beam.ParDo(_ParseReadings(self.parser, PCOLLECTION_PREFIX + self.source,
                                                         self.batch_size))
                  .with_outputs(QUARANTINE, COUNTS, main="readings"))
        source = SourceOutputs(parsed.readings, parsed[QUARANTINE], parsed[COUNTS])
        if streaming:
            found = detect(gate_late_readings(source, self.late_after_s, plan.run_id), plan, True,
                           allowed_lateness_s=self.allowed_lateness_s, keep_open_s=self.late_after_s)
        else:
            found = detect(source, plan, False)
        return Detections(found["scored"], found["alerts"], found["quarantine"], found["counts"], found["opened"])
