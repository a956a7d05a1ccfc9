"""The graph the batch and the streaming pipelines share: validate, window, score, alert, write, count.

The pipelines differ only in their source (files, a broker, a replay), their triggering (pane windows fire
at the end of a batch run, or as the watermark passes them in streaming) and their sink settings (one
quarantine file per source and one counts file per run, or one per flush window).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from seqwatch.pipelines.alerts import BuildAlerts, forecast_window
from seqwatch.pipelines.calibration import CalibrateOnline
from seqwatch.pipelines.calibration_state import STATE_FILE
from seqwatch.pipelines.config import RunConfig
from seqwatch.pipelines.flush import FlushPerWindow
from seqwatch.pipelines.inference import ScoreWindows
from seqwatch.pipelines.sinks import WriteOutputs
from seqwatch.pipelines.stage_metrics import CountAsMetric
from seqwatch.pipelines.validate import ValidateReadings
from seqwatch.pipelines.windows import WindowReadings
from seqwatch.schemas.elements import PackedQuarantine
from seqwatch.schemas.validation import StatefulRules

COUNTS_FILE = "counts.json"
# Batch runs: reading batches smaller than this (small files') are validated together, this many at a time.
MERGE_BELOW_READINGS = 50_000


class SourceOutputs(NamedTuple):
    """What every source gives the graph: ``ReadingBatch`` elements, ``Quarantined`` records and
    ``("records_in", n)`` counts."""

    readings: beam.PCollection
    quarantine: beam.PCollection
    counts: beam.PCollection


@dataclass(frozen=True)
class RunPlan:
    """Everything the graph needs, resolved from a ``RunConfig`` and the model's metadata."""

    config: RunConfig
    paths: tuple
    run_id: str
    staging: str
    channels: tuple
    step_us: int
    window_length: int
    stride: int
    max_gap: int
    pane_steps: int
    model_id: str
    model_version: str
    suite: dict
    latest_us: int
    model_source: str = ""  # --model-dir as given (an artifact or a model root); config.model_dir is the version
    spans: object = None  # batch: a locality.FileSpans of the inputs, for panes cut without the GroupByKey
    window_dtype: type = np.float32  # what windows are cut as (models.windowing.window_dtype)
    input_digests: tuple = ()  # batch: (path, sha256 of its bytes) of each input, for replays
    grid_offset_us: int = 0  # the model's grid phase (models.windowing.grid_offset)
    # batch with --calibration-from: the kept state each entity starts from (calibration_state.py) and its digest,
    # "" where nothing was there (a series' first run: every entity starts afresh)
    calibration_state_from: str = ""
    calibration_state_sha256: str = ""
    score_files: int = 1  # batch: the files scores (and forecasts) are written in (batch.score_files_for)
    estimated_readings: int | None = None  # batch: about how many readings the inputs hold (batch.estimated_readings)
    # streams: 0, scores and forecasts in a file per entity pane as it is scored; N, gathered per flush window into
    # N files (an entity's rows in one of them)
    score_window_files: int = 0
    # streams with online calibration: the folder the stream writes each entity's calibration in for a restart
    # (calibration_state.stream_state_dir; "": none), and how often (seconds of wall clock; 0: each release)
    calibration_state_to: str = ""
    calibration_save_every_s: float = 300.0


def settle_us(plan: RunPlan) -> int:
    """Event time after an anomalous window's end by which every window that could continue its incident
    has been scored: the continuation's own span, plus a pane and its look-ahead context."""
    return (plan.window_length + 1 + plan.pane_steps + plan.window_length + plan.max_gap) * plan.step_us


class _CountPerBundle(beam.DoFn):
    """``element -> (name, n)``: the counts ``counts_of(element)`` gives, summed over each bundle and given out at its
    end in the global window (batch runs, whose counts are one total). Counted one by one, a million quarantined
    readings (a sensor that sent "n/a" for a month) went through Beam as two million counts."""

    def __init__(self, counts_of):
        self.counts_of = counts_of

    def start_bundle(self):
        self._sums: dict = {}

    def process(self, element):
        for name, n in self.counts_of(element):
            self._sums[name] = self._sums.get(name, 0) + n

    def finish_bundle(self):
        sums, self._sums = self._sums, {}
        for item in sums.items():
            yield WindowedValue(item, GlobalWindow().max_timestamp(), [GlobalWindow()])


def _quarantined_records(element) -> list:
    """A quarantine element as ``Quarantined`` records: itself, or a ``PackedQuarantine``'s records."""
    return element.records() if isinstance(element, PackedQuarantine) else [element]


def packed_quarantine_counts(table) -> list[tuple[str, int]]:
    """The counts of a ``quarantine_records_table``, as ``quarantine_counts`` gives them record by record:
    ``records_quarantined`` and ``quarantined.<stage>.<reason_code>``, summed over its rows."""
    stage, reason = (table.column(name).combine_chunks() for name in ("stage", "reason_code"))
    records = table.column("records").to_numpy()
    kinds = len(reason.dictionary)
    keys = (stage.indices.to_numpy(zero_copy_only=False).astype(np.int64) * kinds
            + reason.indices.to_numpy(zero_copy_only=False))
    sums = np.bincount(keys, weights=records, minlength=len(stage.dictionary) * kinds)
    stages, reasons = stage.dictionary.to_pylist(), reason.dictionary.to_pylist()
    counts = [("records_quarantined", int(records.sum()))] if len(records) else []
    for key in np.unique(keys).tolist():  # a kind whose records stand for 0 readings is counted as 0, as one by one
        counts.append((f"quarantined.{stages[key // kinds]}.{reasons[key % kinds]}", int(sums[key])))
    return counts


def detect(read: SourceOutputs, plan: RunPlan, streaming: bool, allowed_lateness_s: float = 0.0,
           keep_open_s: float = 0.0, watch_models_s: float | None = None, calibration_state_to: str = "",
           flatten_quarantine: bool = True, packed_quarantine: bool = False) -> dict:
    """Validate, window, score and alert: every step of the graph but the sinks. ``streaming``: panes are
    scored as their windows fire and an incident is also announced when it opens (``opened``); batch: panes
    that one file holds alone are cut where it is read (``plan.spans``) and all panes are scored together at
    the end. ``calibration_state_to`` (batch with online calibration): where to write each entity's calibration
    for a later run. Returns the PCollections by name, and under ``counts`` the ``(name, n)`` counts of every
    step, in the global window. Batch: also the quarantined records of each step apart (``quarantine_read``,
    ``quarantine_validate``, ``quarantine_window``); ``flatten_quarantine=False`` leaves out ``quarantine``, all
    of them in one PCollection, which a runner may hold whole when nothing reads it; ``packed_quarantine`` (batch):
    validation gives its quarantined records as ``PackedQuarantine`` tables (``quarantine`` holds the records)."""
    cfg = plan.config
    valid = read.readings | "ValidateReadings" >> ValidateReadings(plan.channels, plan.suite, plan.run_id,
                                                                   cfg.earliest_us, plan.latest_us,
                                                                   0 if streaming else MERGE_BELOW_READINGS,
                                                                   cfg.known_duplicates,
                                                                   packed_quarantine and not streaming)
    windows = valid.valid | "WindowReadings" >> WindowReadings(plan.step_us, plan.window_length, plan.stride,
                                                               plan.max_gap, plan.pane_steps, plan.channels,
                                                               plan.run_id, allowed_lateness_s,
                                                               StatefulRules.from_suite(plan.suite), keep_open_s,
                                                               None if streaming else plan.spans,
                                                               plan.window_dtype, plan.grid_offset_us)
    to_score = windows.windows
    if not streaming:
        # Batch: RunInference batches only elements of the same window, and each pane is a window of its own,
        # so most model calls would get one pane (a few hundred windows, padded to a full model batch). All
        # panes fire at the end of a batch run and everything after scoring re-windows, so they meet in the
        # global window to be scored many panes per call. (Streaming scores each pane as its window fires, at
        # the pane's own timestamp, which the alert timers and the per-window counts go by.)
        to_score = to_score | "ScoreInOneWindow" >> beam.WindowInto(beam.window.GlobalWindows())
    scored = to_score | "ScoreWindows" >> ScoreWindows(cfg.model_dir, watch_models_s,
                                                       plan.model_source or cfg.model_dir)
    if windows.cut_here is not None:
        # Batch with panes cut where their file was read: scored in the same fused stage (the model is loaded
        # once per process); only the scores meet the others.
        scored_here = windows.cut_here | "ScoreWindowsCutHere" >> ScoreWindows(cfg.model_dir, watch_models_s,
                                                                                plan.model_source or cfg.model_dir)
        scored = (scored, scored_here) | "AllScored" >> beam.Flatten()
    if cfg.online_calibration:
        online_step = CalibrateOnline(cfg.model_dir, plan.model_source or cfg.model_dir, at_end=not streaming,
                                      state_from=plan.calibration_state_from if plan.calibration_state_sha256
                                      else "",
                                      state_to=plan.calibration_state_to if streaming else calibration_state_to,
                                      state_sha256=plan.calibration_state_sha256,
                                      keep_us=cfg.calibration_keep_us,
                                      pane_wait_us=settle_us(plan) + int(allowed_lateness_s * 1e6),
                                      save_every_s=plan.calibration_save_every_s)
        scored = scored | "CalibrateOnline" >> online_step
    # Streaming also writes a notice when an incident opens (alerts_open/), before its alert is settled.
    built = scored | "BuildAlerts" >> BuildAlerts(plan.run_id, settle_us(plan) + int(allowed_lateness_s * 1e6),
                                                  announce=streaming, cooldown_us=cfg.alert_cooldown_us,
                                                  at_end=not streaming)
    quarantine_parts = {"read": read.quarantine, "validate": valid.quarantine, "window": windows.quarantine}
    quarantine = None
    if flatten_quarantine or streaming:
        records = dict(quarantine_parts)
        if not streaming:  # a batch source may give its records packed (ReadInputFiles(packed_quarantine=...))
            records["read"] = read.quarantine | "UnpackQuarantine" >> beam.FlatMap(_quarantined_records)
            if packed_quarantine:
                records["validate"] = valid.quarantine | "UnpackValidateQuarantine" >> beam.FlatMap(
                    _quarantined_records)
        quarantine = tuple(records.values()) | "AllQuarantine" >> beam.Flatten()

    def quarantine_counts(q):
        if isinstance(q, PackedQuarantine):
            yield from packed_quarantine_counts(q.table)
            return
        yield "records_quarantined", q.records
        yield f"quarantined.{q.stage}.{q.reason_code}", q.records

    def scored_counts(sw):
        yield "windows_scored", len(sw.score)
        yield "windows_anomalous", int(sw.is_anomaly.sum())
        if sw.forecast is not None and forecast_window(sw.windows) is not None:
            yield "forecast_rows", sw.forecast.shape[1] * sw.forecast.shape[2]

    if streaming:  # a stream's counts go by event time (its flush windows)
        quarantine_counted = {"Quarantine": quarantine | "CountQuarantine" >> beam.FlatMap(quarantine_counts)}
    else:  # a batch run's are one total: summed per bundle where the records are made, before any stage boundary
        quarantine_counted = {f"Quarantine{part.title()}": records | f"CountQuarantine{part.title()}" >> beam.ParDo(
            _CountPerBundle(quarantine_counts)) for part, records in quarantine_parts.items()}
    count_parts = {"Read": read.counts, "Window": windows.counts, **quarantine_counted,
                   "Scored": scored | "CountScored" >> beam.FlatMap(scored_counts),
                   "Alerts": built.closed | "CountAlerts" >> beam.Map(lambda a: ("alerts", 1)),
                   "Opened": built.opened | "CountOpened" >> beam.Map(lambda a: ("alerts_opened", 1))}
    if cfg.online_calibration and online_step.states is not None:  # entities that went on from a kept state or not
        count_parts["Calibration"] = online_step.states | "CountCalibrations" >> beam.Map(
            lambda state: ("calibration_entities_continued" if state[2] else "calibration_entities_started", 1))
    if cfg.online_calibration and online_step.forgotten is not None:  # left out of the state written
        count_parts["CalibrationForgotten"] = online_step.forgotten
    counts = ([pcoll | f"{name}CountsWindow" >> beam.WindowInto(beam.window.GlobalWindows())
               for name, pcoll in count_parts.items()]
              | "StepCounts" >> beam.Flatten()
              | "CountsAsMetrics" >> beam.ParDo(CountAsMetric()))
    found = {"readings": read.readings, "valid": valid.valid, "windows": windows.windows, "scored": scored,
             "alerts": built.closed, "opened": built.opened, "quarantine": quarantine, "counts": counts}
    if not streaming:  # for the batch sink, which packs each part where it is made (``WriteOutputs``)
        found |= {f"quarantine_{part}": records for part, records in quarantine_parts.items()}
    return found


def build_scoring_graph(read: SourceOutputs, plan: RunPlan, root: str, flush_window_s: float | None = None,
                        allowed_lateness_s: float = 0.0, keep_open_s: float = 0.0,
                        watch_models_s: float | None = None, archive_window_s: float | None = None,
                        file_suffix: str = "") -> dict:
    """Everything after the source (``detect``, then the sinks); outputs under ``root``. ``flush_window_s``
    (streaming): quarantine files and counts are written per event-time window of this length; ``None``
    (batch): once, at the end. ``allowed_lateness_s``: how long each pane waits before it is scored;
    ``keep_open_s``: how long Beam keeps a scored pane's window for late readings (which are then quarantined as
    late); ``watch_models_s``: look for a newer version of the model directory this often and score with it
    from then on; ``archive_window_s`` (streaming): also write the readings that passed validation under
    ``readings/``, one file per entity and event-time window of this length; ``file_suffix`` (streaming): ends
    the names of the files written per pane or flush window (a restarted stream's: ``.s2``). Returns the main
    PCollections by name (for tests; a batch run's ``quarantine`` is None: each step's records are packed apart).
    A batch run with online calibration also writes each entity's calibration (``calibration_state.STATE_FILE``)
    for a later run's ``--calibration-from``."""
    keep_state = flush_window_s is None and plan.config.writes_calibration_state
    found = detect(read, plan, flush_window_s is not None, allowed_lateness_s, keep_open_s, watch_models_s,
                   FileSystems.join(root, STATE_FILE) if keep_state else "", flatten_quarantine=False,
                   packed_quarantine=flush_window_s is None)
    counts = write_detections(found, plan.run_id, root, flush_window_s, archive_window_s, file_suffix,
                              plan.score_files, plan.score_window_files if flush_window_s is not None else 0)
    return {name: found[name] for name in ("readings", "valid", "windows", "scored", "alerts", "opened",
                                           "quarantine")} | {"counts": counts}


def write_detections(found: dict, run_id: str, root: str, flush_window_s: float | None = None,
                     archive_window_s: float | None = None, file_suffix: str = "",
                     score_files: int = 1, score_window_files: int = 0) -> beam.PCollection:
    """The sinks of ``detect``'s outputs (``scored``, ``alerts``, ``opened``, ``quarantine``, ``counts``; and
    ``valid`` with an archive) under ``root``: Parquet files, and the counts (with the sinks' own) as
    ``counts.json`` (batch) or ``counts/<window start>.json`` per flush window (streaming, ``flush_window_s``).
    Returns the counts written (a dict, or ``(window start, dict)`` pairs). ``score_files`` (batch): the files
    scores and forecasts are written in; ``score_window_files`` (streaming): see ``WriteOutputs``."""
    outputs = {name: found[name] for name in ("scored", "alerts", "opened", "quarantine") if found[name] is not None}
    outputs |= {name: pcoll for name, pcoll in found.items() if name.startswith("quarantine_")}
    if archive_window_s is not None:
        outputs["readings"] = found["valid"]
    written = outputs | "WriteOutputs" >> WriteOutputs(root, run_id, flush_window_s, archive_window_s, file_suffix,
                                                       score_files, score_window_files)
    written = written | "WrittenCountsAsMetrics" >> beam.ParDo(CountAsMetric())
    all_counts = ((found["counts"], written | "WrittenCountsWindow" >> beam.WindowInto(beam.window.GlobalWindows()))
                  | "AllCounts" >> beam.Flatten())
    if flush_window_s:
        # Per flush window; a count that arrives after its window was written goes out with the next one (never
        # dropped as late: see seqwatch.pipelines.flush), so the files always add up to the whole run.
        def window_counts(release):
            late = [("flushed_late.counts", release.late)] if release.late else []
            return release.start_us, sum_counts(release.items + late)

        counts = (all_counts
                  | "OneCountsKey" >> beam.Map(lambda kv: ("counts", kv))
                  | "FlushCounts" >> FlushPerWindow(flush_window_s)
                  | "SumCounts" >> beam.Map(window_counts))
        counts | "WriteCounts" >> beam.MapTuple(
            lambda start_us, data: write_json(data, FileSystems.join(root, "counts", f"{start_us}{file_suffix}.json")))
    else:
        # The three totals from zero, so that an empty input still writes its counts.json (records_in 0): the
        # dict below has no default (a window that saw nothing gives none).
        zero = (all_counts.pipeline | "ZeroTotals" >> beam.Create([("records_in", 0), ("records_scored", 0),
                                                                  ("records_quarantined", 0)]))
        counts = ((all_counts, zero)
                  | "AllCountsFromZero" >> beam.Flatten()
                  | "SumCounts" >> beam.CombinePerKey(sum)
                  | "CountsDict" >> beam.combiners.ToDict().without_defaults())
        # the dict once its file is written (a job that commits itself goes on from it: batch.CommitInJob)
        counts = counts | "WriteCounts" >> beam.Map(_written_json, FileSystems.join(root, COUNTS_FILE))
    return counts


def _written_json(data: dict, path: str) -> dict:
    write_json(data, path)
    return data


def sum_counts(pairs) -> dict:
    """``(name, n)`` pairs summed per name."""
    total: dict = {}
    for name, n in pairs:
        total[name] = total.get(name, 0) + n
    return total


def write_json(data: dict, path: str) -> None:
    """Write ``data`` to ``path`` under a hidden temporary name, renamed when complete: a stream's monitor that sums
    ``counts/*.json`` while the stream writes had read empty files (149 of 3.7 million reads), and a stop in the
    middle of a write would have left one. On an object store it is written in place: an object is there whole or
    not at all."""
    if "://" in path:  # an object store's object appears whole when its upload completes (sinks.write_parquet)
        with FileSystems.create(path) as f:
            f.write(json.dumps(data, sort_keys=True, indent=1).encode())
        return
    directory, name = path.rsplit("/", 1)
    if not FileSystems.exists(directory):
        FileSystems.mkdirs(directory)
    import uuid

    partial = f"{directory}/.{name}.{uuid.uuid4().hex[:12]}.partial"  # one per writer: a retried bundle's too
    with FileSystems.create(partial) as f:
        f.write(json.dumps(data, sort_keys=True, indent=1).encode())
    FileSystems.rename([partial], [path])




def read_json(path: str) -> dict:
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode())
