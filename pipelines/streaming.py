"""The streaming pipeline: a broker (or a replayed file) in, the shared scoring graph, windowed Parquet out.

Late data, in two layers, so that no reading is ever dropped silently:
- each pane is scored when the watermark passes its end plus its look-ahead context plus
  ``allowed_lateness_s`` (a wait: latency traded for completeness);
- a reading more than ``late_after_s`` of event time behind the latest reading seen so far, or behind the
  watermark its batch carries (a broker reader stamps a batch its watermark has passed with that watermark, as
  after an outage when the watermark followed the wall clock), is quarantined as ``late`` by the late gate,
  before windowing. Beam keeps every pane window open for that long after it fired (its allowed lateness), so
  a reading the gate lets through is not discarded by Beam: if its pane has already been scored, the late
  firing carries it to the windowing stage, which quarantines it as ``late``.
The gate compares with the latest event time it has seen, not with the order batches happen to be processed
in being the order they were read (runners reorder bundles); hence the generous default. A reading more than
``FUTURE_TOLERANCE_US`` (a day) ahead of the wall clock is quarantined by the gate as ``future_timestamp`` and
moves nothing: one device with its clock set days ahead would otherwise have made every other reading late.

The quarantine records and counts that late readings cause keep the readings' event times, which the watermark
has passed; the sinks gather them with ``seqwatch.pipelines.flush``, which never drops an element as late.
"""
from __future__ import annotations

import json
import time

import apache_beam as beam
import numpy as np
from apache_beam.coders import VarIntCoder
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP

from seqwatch.models.windowing import window_dtype
from seqwatch.pipelines.config import STREAM_FUTURE_TOLERANCE_US as FUTURE_TOLERANCE_US
from seqwatch.pipelines.config import HORIZON_US, stream_future_bound_us
from seqwatch.pipelines.graph import RunPlan, SourceOutputs, build_scoring_graph
from seqwatch.pipelines.sources import QUARANTINE
from seqwatch.pipelines.stage_metrics import StageTimer
from seqwatch.pipelines.validate import quarantine_rows
from seqwatch.pipelines.windows import pane_floor
from seqwatch.schemas.elements import ReadingBatch

DEFAULT_FLUSH_WINDOW_S = 60.0
DEFAULT_ALLOWED_LATENESS_S = 0.0
DEFAULT_LATE_AFTER_S = 86_400.0


class _LateGate(beam.DoFn):
    """One key for the whole stream: the gate compares each reading with the latest event time seen anywhere:
    the latest reading, or the latest batch timestamp (a broker reader stamps a batch its watermark has passed
    with that watermark). Batches make the single key cheap."""

    LATEST = ReadModifyWriteStateSpec("latest", VarIntCoder())

    def __init__(self, late_after_us: int, run_id: str, now_us=None):
        self.late_after_us = late_after_us
        self.run_id = run_id
        self.now_us = now_us  # a callable giving the wall clock in µs (tests); None: time.time()
        self.timer = StageTimer("late_gate")

    def process(self, element, timestamp=beam.DoFn.TimestampParam, latest=beam.DoFn.StateParam(LATEST)):
        _, batch = element
        with self.timer:
            frame = batch.frame
            seen = latest.read()
            # A batch stamped later than its readings carries its reader's watermark (broker_sources._emit): the
            # panes of readings far behind the watermark may be gone already, however new they are to the gate.
            now_us = int(self.now_us() if self.now_us is not None else time.time() * 1e6)
            ahead = stream_future_bound_us(now_us)  # later than this is a clock set wrong (a batch stamped so too)
            if MIN_TIMESTAMP < timestamp < MAX_TIMESTAMP and timestamp.micros <= ahead and \
                    (seen is None or timestamp.micros > seen):
                seen = int(timestamp.micros)
            stamps = frame["timestamp"].to_numpy()
            future = stamps > ahead
            late = ~future & (np.zeros(len(frame), dtype=bool) if seen is None else stamps < seen - self.late_after_us)
            # Records as the validation step makes them: a file's line is read again at the quarantine sink, as
            # it is (a replay of the stream's quarantine pastes it back; the fields as JSON had failed to parse as a
            # CSV line); a message's fields are kept now
            out = [beam.pvalue.TaggedOutput(QUARANTINE, q) for q in quarantine_rows(
                frame, future, "gate", "future_timestamp",
                [f"the reading is {(t - now_us) / 1e6:g}s ahead of the wall clock, more than the "
                 f"{FUTURE_TOLERANCE_US / 1e6:g}s a stream's readings may lead it (a device's clock set wrong?)"
                 for t in stamps[future]], self.run_id)]
            out += [beam.pvalue.TaggedOutput(QUARANTINE, q) for q in quarantine_rows(
                frame, late, "gate", "late",
                [f"the reading is {(seen - t) / 1e6:g}s of event time behind the latest reading (or its reader's "
                 f"watermark), more than the {self.late_after_us / 1e6:g}s a pane is kept open for late data"
                 for t in stamps[late]], self.run_id)]
            kept = ~(late | future)
            if kept.any():
                newest = int(stamps[kept].max())
                latest.write(newest if seen is None else max(newest, seen))
                out.append(ReadingBatch(frame[kept].reset_index(drop=True)))
            elif seen is not None:
                latest.write(seen)
            return out


class QuarantineLateReadings(beam.PTransform):
    """``ReadingBatch -> {main: ReadingBatch on time, quarantine: Quarantined late}``: readings more than
    ``late_after_s`` behind the latest event time seen are quarantined, and so are readings more than a day ahead
    of the wall clock (``now_us``: a callable giving it in µs, for tests)."""

    def __init__(self, late_after_s: float, run_id: str, now_us=None):
        super().__init__()
        self.late_after_us = int(late_after_s * 1e6)
        self.run_id = run_id
        self.now_us = now_us

    def expand(self, batches):
        return (batches
                | "OneKey" >> beam.Map(lambda b: ("stream", b))
                | "LateGate" >> beam.ParDo(_LateGate(self.late_after_us, self.run_id, self.now_us))
                .with_input_types(tuple[str, ReadingBatch]).with_outputs(QUARANTINE, main="on_time"))


def gate_late_readings(source: SourceOutputs, late_after_s: float, run_id: str) -> SourceOutputs:
    """``source`` with the readings more than ``late_after_s`` behind moved to its quarantine (before windowing,
    so that Beam never drops one as late)."""
    gate = source.readings | "QuarantineLate" >> QuarantineLateReadings(late_after_s, run_id)
    quarantine = (source.quarantine, gate.quarantine) | "SourceQuarantine" >> beam.Flatten()
    return SourceOutputs(gate.on_time, quarantine, source.counts)


def build_streaming_pipeline(source: SourceOutputs, plan: RunPlan, root: str,
                             flush_window_s: float = DEFAULT_FLUSH_WINDOW_S,
                             allowed_lateness_s: float = DEFAULT_ALLOWED_LATENESS_S,
                             late_after_s: float = DEFAULT_LATE_AFTER_S,
                             watch_models_s: float | None = None, archive_window_s: float | None = None,
                             file_suffix: str = "") -> dict:
    """The streaming graph after ``source``; outputs under ``root`` (no staging: files appear as panes fire).
    ``watch_models_s``: score with newer versions of the model directory as they appear, looking this often;
    ``archive_window_s``: also write the readings that pass the gate and validation under ``readings/``, one file
    per entity and event-time window of this length (the input of a scheduled ``seqwatch train --warm-start``);
    ``file_suffix``: ends the names of the files written per pane or flush window (``note_stream_start``)."""
    return build_scoring_graph(gate_late_readings(source, late_after_s, plan.run_id), plan, root,
                               flush_window_s=flush_window_s, allowed_lateness_s=allowed_lateness_s,
                               keep_open_s=late_after_s, watch_models_s=watch_models_s,
                               archive_window_s=archive_window_s, file_suffix=file_suffix)


def plan_stream(model_dir: str, output: str, suite: str = "sensor", run_id: str = "", pane_steps: int = 0,
                source_name: str = "stream", alert_cooldown_us: int = 0, online_calibration: bool = False,
                run_id_prefix: str = "stream", earliest_us: int | None = None,
                calibration_keep_days: float = 0.0, score_window_files: int = 0,
                calibration_from: str = "", calibration_save_every_s: float = 300.0) -> RunPlan:
    """A ``RunPlan`` for a stream: from the model's metadata (there are no files to check up front);
    ``model_dir`` is an artifact or a model root (its newest version at the start).

    The run id is derived from the model version and the source unless given (``run_id_prefix``-<hash>); the
    future-timestamp check is
    relative to the wall clock when the stream starts plus the configured tolerance (far future: year 2100).
    ``score_window_files``: 0 writes scores and forecasts in a file per entity pane as each pane is scored; N
    gathers them per flush window into N files (``RunPlan.score_window_files``). ``calibration_from`` (with
    ``online_calibration``): an earlier run's output folder (or its state file) whose calibration state each entity
    starts from (``calibration_state``); unlike a batch run's, a stream's is refused when there is none. A stream
    with ``online_calibration`` writes each entity's calibration under ``output`` (``calibration_state.STATE_FOLDER``,
    in a folder of its own start) every ``calibration_save_every_s`` seconds of wall clock and when its input ends,
    and one restarted into ``output`` without ``calibration_from`` goes on from what the streams before it wrote
    there."""
    import hashlib

    from seqwatch.models.artifact import ArtifactError, check_model_file, read_metadata
    from seqwatch.pipelines.batch import RunError
    from seqwatch.pipelines.calibration import CalibrationError, model_risk
    from seqwatch.pipelines.calibration_state import (CalibrationStateError, check_state, state_source,
                                                      stream_state_dir)
    from seqwatch.pipelines.config import DEFAULT_PANE_STEPS, RunConfig, check_run_id
    from seqwatch.pipelines.object_store import read_bytes
    from seqwatch.schemas.validation import SuiteError, load_suite_dict, with_earliest

    try:
        check_run_id(run_id)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    from seqwatch.pipelines.model_store import local_model_dir, pinned_model_dir

    model_source = model_dir
    try:
        model_dir = pinned_model_dir(model_dir)  # pinned: the version planned for (a URL on an object store)
        model_files = local_model_dir(model_dir)
        metadata = read_metadata(model_files)
        check_model_file(model_files, metadata)
        suite_dict = with_earliest(load_suite_dict(suite, read=read_bytes),
                                   earliest_us if earliest_us is not None else HORIZON_US)
        if online_calibration:
            model_risk(metadata)
            if not calibration_from and not state_source(output).endswith(".parquet"):
                calibration_from = output  # a restart: the earlier streams' calibration written there
        # A stream is started once, by hand or by a deployment: a state that is not there is a wrong path, not the
        # first day of a series (which a batch run's missing state stands for).
        state_from, state_sha256 = check_state(calibration_from) if calibration_from else ("", "")
    except (ArtifactError, SuiteError, CalibrationError, CalibrationStateError) as exc:
        raise RunError(str(exc)) from None
    window = metadata["config"]["window"]
    length, stride, max_gap = int(window["length"]), int(window["stride"]), int(window["max_gap"])
    step_us = int(metadata["step_us"])
    # Streaming panes are short by default (latency): 4 windows' worth, at least what the context needs.
    pane = pane_steps or max(4 * length, 2 * (length + max_gap + 1))
    pane = pane_floor(max(pane, 2 * (length + max_gap + 1)), step_us)
    pane += (-pane) % stride
    config = RunConfig(inputs=(source_name,), output=output, model_dir=model_dir, suite=suite,
                       pane_steps=pane if pane_steps else DEFAULT_PANE_STEPS, alert_cooldown_us=alert_cooldown_us,
                       online_calibration=online_calibration, calibration_keep_days=calibration_keep_days,
                       calibration_from=calibration_from,
                       **({"earliest_us": earliest_us} if earliest_us is not None else {}))
    run_id = run_id or f"{run_id_prefix}-" + hashlib.sha256(f"{metadata['model_version']}|{source_name}".encode()).hexdigest()[:12]
    return RunPlan(config, (), run_id, output, tuple(metadata["channels"]), step_us, length, stride, max_gap, pane,
                   metadata["model_id"], metadata["model_version"], suite_dict, 4_102_444_800_000_000, model_source,
                   window_dtype=window_dtype(window.get("cumulative_channels"), metadata.get("scaler")),
                   grid_offset_us=int(metadata.get("grid_offset_us", 0)), score_window_files=score_window_files,
                   calibration_state_from=state_from, calibration_state_sha256=state_sha256,
                   calibration_state_to=stream_state_dir(output, time.time()) if online_calibration else "",
                   calibration_save_every_s=calibration_save_every_s)


def run_stream(plan: RunPlan, make_source, beam_args: list[str], flush_window_s: float = DEFAULT_FLUSH_WINDOW_S,
               allowed_lateness_s: float = 0.0, late_after_s: float = DEFAULT_LATE_AFTER_S,
               watch_models_s: float | None = None, archive_window_s: float | None = None,
               file_suffix: str = "") -> None:
    """Run the streaming pipeline until its source ends (a replay, or a broker read with a stop condition) or
    the job is cancelled. ``make_source(run_id)`` returns the source PTransform; ``watch_models_s``: switch to
    newer versions of the model directory while running (see ``pipelines.inference``); ``archive_window_s`` and
    ``file_suffix``: see ``build_streaming_pipeline``."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from seqwatch.pipelines.runners import apply_runner_fixes

    options = PipelineOptions(beam_args)
    options.view_as(StandardOptions).streaming = True
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = "DirectRunner"
    apply_runner_fixes(options)
    with beam.Pipeline(options=options) as p:
        read = p | "ReadStream" >> make_source(plan.run_id)
        source = SourceOutputs(read.readings, read.quarantine, read.counts)
        build_streaming_pipeline(source, plan, plan.config.output, flush_window_s, allowed_lateness_s, late_after_s,
                                 watch_models_s, archive_window_s, file_suffix)


def written_since(folder: str, pattern: str, since_s: float | None = None) -> list:
    """The files under ``folder`` matching ``pattern`` (``sinks.files_under``: any file system Beam reads); with
    ``since_s`` (a time.time()), only those written since then, so that a stream's totals and notices leave out an
    earlier stream's into the same folder."""
    from seqwatch.pipelines.sinks import files_under

    return [path for path, written in files_under(folder, pattern) if since_s is None or written >= since_s]


STREAM_SETTINGS_FILE = ".seqwatch-stream.json"  # hidden: dataset readers skip names that start with "."
STREAM_ONLY_FOLDERS = ("counts", "alerts_open")


def _in_output(output: str, name: str) -> str:
    """The path of the file ``name`` in ``output``, a local folder or an object store's prefix."""
    import os

    return f"{output.rstrip('/')}/{name}" if "://" in output else os.path.join(output, name)


def _stream_settings(output: str):
    """The settings an earlier stream noted in ``output`` (``STREAM_SETTINGS_FILE``), or None. On an object store
    too: a restart into ``s3://`` had written over the earlier stream's files of the window it resumed in."""
    from seqwatch.pipelines.object_store import read_json_or_none

    earlier = read_json_or_none(_in_output(output, STREAM_SETTINGS_FILE))
    return earlier if isinstance(earlier, dict) else None


def check_stream_output(output: str, plan) -> None:
    """Refuse (``ValueError``, one sentence) an output folder whose files this stream would sit beside, not
    replace: a batch run's outputs (its ``manifest.json``: the stream's score files, named by pane, never replace a
    run's of other panes, so each window had two rows), or an earlier stream's of another pane length or step (the
    same, across a restart with other ``--pane-steps``). Called under the output lock."""
    from seqwatch.pipelines.sources import _is_run_manifest

    if _is_run_manifest(_in_output(output, "manifest.json")):
        raise ValueError(f"{output} holds a batch run's outputs (manifest.json): a stream writes its panes beside "
                         f"them, not over them, so each window would have two rows; give the stream its own --output")
    geometry = {"pane_steps": int(plan.pane_steps), "step_us": int(plan.step_us)}
    earlier = _stream_settings(output)
    if earlier is not None and {k: earlier.get(k) for k in geometry} != geometry:
        same_step = earlier.get("step_us") == geometry["step_us"]
        advice = (f"restart with --pane-steps {earlier.get('pane_steps')} or give the stream its own --output"
                  if same_step else "give the stream of this model its own --output")
        raise ValueError(f"{output} holds the outputs of a stream with panes of {earlier.get('pane_steps')} steps of "
                         f"{(earlier.get('step_us') or 0) / 1e6:g}s, this one's are {geometry['pane_steps']} steps of "
                         f"{geometry['step_us'] / 1e6:g}s: its score files, named by pane, would sit beside those, so "
                         f"each window would have two rows; {advice}")


def note_stream_start(output: str, plan) -> str:
    """Note this stream's pane geometry and start in ``output`` for the next stream there (once every check before
    the job has passed: a refused start is no start), and return the suffix of its file names: ``""`` for the
    first stream into the folder, ``".s2"``, ``".s3"``, ... for later ones (a restart), so that a restarted stream
    that resumes where the last one stopped (Kafka offsets committed, acknowledged messages) writes the rest of a
    pane or flush window beside the earlier stream's file instead of over it (found by the bug hunt of brokers: a
    restart had replaced the first stream's scores and counts of the window it stopped in, and the counts no
    longer reconciled). On an object store the note is an object there."""
    from seqwatch.pipelines.graph import write_json

    earlier = _stream_settings(output)
    starts = 1
    if earlier is not None:
        starts = (earlier.get("starts") if isinstance(earlier.get("starts"), int) else 1) + 1
    write_json({"pane_steps": int(plan.pane_steps), "step_us": int(plan.step_us), "run_id": plan.run_id,
                "starts": starts}, _in_output(output, STREAM_SETTINGS_FILE))
    return "" if starts == 1 else f".s{starts}"


def gather_calibration_states(output: str, plan: RunPlan) -> RunPlan:
    """``plan``, once the calibration files that earlier starts of the stream wrote in ``output`` were gathered
    into one (``calibration_state.gather_stream_states``; the plan's digest taken again), where the stream goes on
    from them; called with ``note_stream_start``, under the output lock."""
    import dataclasses

    from seqwatch.pipelines.calibration_state import STATE_FOLDER, gather_stream_states

    own = f"{output.rstrip('/')}/{STATE_FOLDER}"
    if not plan.calibration_state_to or plan.calibration_state_from.rstrip("/") != own:
        return plan
    digest = gather_stream_states(own, plan.calibration_state_to + "-carried", plan.config.calibration_keep_us)
    return dataclasses.replace(plan, calibration_state_sha256=digest) if digest else plan


def counts_files(output: str, since_s: float | None = None) -> list:
    """The ``counts/*.json`` files under ``output`` (written since ``since_s``: ``written_since``)."""
    from apache_beam.io.filesystems import FileSystems

    return written_since(FileSystems.join(output, "counts"), "*.json", since_s)


def stream_totals(output: str, since_s: float | None = None) -> tuple[dict, int]:
    """``(counts, windows)``: the ``counts_files`` (``since_s``) summed, and how many flush windows they cover."""
    from apache_beam.io.filesystems import FileSystems

    totals: dict = {}
    files = counts_files(output, since_s)
    for path in files:
        with FileSystems.open(path) as f:
            for key, value in json.loads(f.read()).items():
                totals[key] = totals.get(key, 0) + value
    return totals, len(files)
