"""Per-entity online calibration of window scores (``--online-calibration``): each entity's windows are judged
against that entity's own recent scores instead of the model's one fixed threshold.

One model often serves many entities whose normal scores differ (a noisier pump scores higher when nothing is
wrong), and what is normal drifts. With online calibration, each entity's windows are taken in event-time order
and each window's tail probability is computed under ``models.thresholds.OnlineTailCalibration`` (the
calibration the NAB benchmark uses): a ``TailCalibration`` (empirical body, generalised Pareto tail) fitted on
the model's own calibration scores followed by the entity's earlier window scores, the latest ``HISTORY`` of
them, refitted every ``REFIT_EVERY`` windows, so a window is never judged by a fit that saw it or a later one.
A window is anomalous when its score exceeds the score at the model's risk under the fit in use (that score is
its ``threshold``); severity follows from its tail probability as usual. Every window's score joins the
history except those that continue a run of anomalous windows, up to the refit period (runs declustering: an
incident joins with its first window, so that the dozens of overlapping windows that see it do not make it the
tail of the entity's fits, which had left the entity blind to lesser incidents for a month of windows).
Scattered anomalous windows join one by one, so a noisier entity's threshold rises to its own noise, and a run
that outlasts ``REFIT_EVERY`` windows is a lasting change, whose later windows join: an entity whose operating
point differs from the model's, or a shift that stays, becomes the entity's new normal after a while.

Order: a stateful step per entity in the global window buffers each scored pane and releases the panes in
event-time order when the watermark passes them (streaming: as they are scored; batch: all at the end of the
input), so the batch and the streaming pipelines judge every window by the same history. When the model
version changes (``--watch-models``), the entity's calibration starts again from the new version's
calibration scores; a new version that online calibration cannot use (see ``model_risk``) is logged once and its
windows keep the model's own threshold.

Across batch runs: a batch run writes each entity's calibration when its input is done, and a later run can start
from it (``seqwatch.pipelines.calibration_state``, ``--calibration-from``), so a daily job judges each day as the
continuation of the day before. Across stream restarts: a stream writes each entity's calibration every few minutes
of wall clock and when its input ends (``_CalibrateEntity``), and a stream restarted into its output goes on from it.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import threading
import time
from typing import Any, NamedTuple, Tuple

import apache_beam as beam
import numpy as np
from apache_beam import coders
from apache_beam.coders import VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from pyarrow import ArrowException

from seqwatch.models.thresholds import OnlineTailCalibration, severity_of
from seqwatch.schemas.elements import ScoredWindows

HISTORY = 8640  # windows per entity the fit uses (Numenta's anomaly likelihood: 30 days at 5 minutes)
REFIT_EVERY = 100  # windows between refits (the same)


class CalibrationError(ValueError):
    """A model whose settings online calibration cannot use (one sentence)."""


def model_risk(metadata: dict) -> tuple[float, float]:
    """``(risk, initial quantile)`` of a model from its metadata: the tail probability its threshold stands for
    (``pot_risk``, or ``1 - threshold_quantile``) and where its tail fit starts."""
    scoring = metadata["config"]["scoring"]
    initial = float(scoring.get("pot_initial_quantile", 0.95))
    if scoring.get("threshold_method", "pot") == "pot":
        risk = float(scoring["pot_risk"])
    else:
        risk = 1.0 - float(scoring["threshold_quantile"])
    if not 0.0 < risk < 1.0 - initial:
        raise CalibrationError(
            f"online calibration needs a model whose threshold is rarer than its tail fit's start (risk below "
            f"{1 - initial:g}); model {metadata.get('model_version', '?')} has risk {risk:g}: train it with "
            f"--threshold pot (the default; or, in Python, ScoringConfig(threshold_quantile=) above {initial:g})")
    return risk, initial


# The seeded calibration of each model's calibration scores, fitted once per process. Every new entity of a model
# version starts from the same seed, and its tail fit (a maximum-likelihood Pareto fit, about 45 ms) had been made
# again for each: a fleet of 2,000 entities with --online-calibration took 92 s where it takes 15 s without.
# Entities get copies: a calibration never changes its arrays or fits in place, it rebinds them.
_STARTED: dict = {}
_STARTED_LOCK = threading.Lock()
_STARTED_MAX = 64  # model versions kept (a long stream that switches versions does not keep them all)


def start_calibration(metadata: dict) -> OnlineTailCalibration:
    """The online calibration of a new entity (or a new model version): seeded with the model's calibration
    scores (the quantiles its artifact keeps). The same as a fresh ``start``, which is made once per seed."""
    _, initial = model_risk(metadata)
    seed = np.asarray(metadata["tail"]["sorted_scores"], dtype=np.float64)
    key = (HISTORY, REFIT_EVERY, float(initial), hashlib.sha256(seed.tobytes()).hexdigest(), len(seed))
    with _STARTED_LOCK:
        started = _STARTED.get(key)
        if started is None:
            started = OnlineTailCalibration(HISTORY, REFIT_EVERY, initial).start(seed)
            if len(_STARTED) >= _STARTED_MAX:
                _STARTED.clear()
            _STARTED[key] = started
    return copy.copy(started)


def calibrate(sw: ScoredWindows, online: OnlineTailCalibration, risk: float,
              joined_until_us: int | None = None) -> ScoredWindows:
    """``sw`` (one pane of one entity, the next in event-time order) judged by ``online``, which then holds its
    scores: per-window thresholds, anomaly flags, tail probabilities and severities. Windows that end no later
    than ``joined_until_us`` (µs; those of a kept state's last run) are judged without joining the history again."""
    scores = np.asarray(sw.score, dtype=np.float64)
    if joined_until_us is None:
        tail, threshold = online.process_at_risk(scores, risk)
    else:
        seen = np.asarray(sw.windows.ends, dtype=np.int64) <= joined_until_us
        tail, threshold = np.ones(scores.size), np.empty(scores.size)
        if seen.any():  # the earlier windows of the pane: ends ascend
            tail[seen], threshold[seen] = online.judge_at_risk(scores[seen], risk)
        if not seen.all():
            tail[~seen], threshold[~seen] = online.process_at_risk(scores[~seen], risk)
    is_anomaly = scores > threshold
    return sw._replace(threshold=threshold, is_anomaly=is_anomaly, tail_probability=tail,
                       severity=severity_of(tail, is_anomaly))


class _ModelCalibrations:
    """The metadata of each model version the pipeline may score with, found by version: the planned artifact
    and the versions of the watched model root."""

    def __init__(self, model_dir: str, watch_dir: str):
        self.model_dir = model_dir
        self.watch_dir = watch_dir
        self._found: dict = {}

    def metadata(self, version: str) -> dict:
        if version not in self._found:
            from seqwatch.models.artifact import ArtifactError, read_metadata
            from seqwatch.pipelines.model_store import local_model_dir, model_versions_of

            try:
                watched = model_versions_of(self.watch_dir)
            except ArtifactError:  # an object store out of reach: the planned version is still looked at
                watched = []
            for directory in [self.model_dir, *reversed(watched)]:
                try:
                    metadata = read_metadata(local_model_dir(directory))
                except (ArtifactError, OSError):
                    continue
                self._found.setdefault(metadata["model_version"], metadata)
                if version in self._found:
                    break
            else:
                raise CalibrationError(f"model version {version} is neither {self.model_dir} nor a version of "
                                       f"{self.watch_dir}")
        return self._found[version]


# _CalibrateEntity's second output, once per entity (batch): (entity id, EntityState, whether it went on from the
# kept state the run started from)
STATE_TAG = "state"


class _EntityJudge:
    """Judges one entity's released panes in window order, going on from its calibration (``_judge``): shared by
    the stream's stateful step and a batch run's step after one GroupByKey."""

    lenient = False  # (a stream's: see _kept_state)
    state_dir = ""  # (a stream's own folder of entity files, which it writes and does not read: _CalibrateEntity)

    def __init__(self, model_dir: str, watch_dir: str, state_from: str = "", emit_state: bool = False,
                 state_sha256: str = "", keep_us: int = 0):
        self.model_dir = model_dir
        self.watch_dir = watch_dir
        self.state_from = state_from
        self.emit_state = emit_state
        self.state_sha256 = state_sha256
        self.keep_us = keep_us

    def setup(self):
        self.models = _ModelCalibrations(self.model_dir, self.watch_dir)
        self.refused: set = set()
        self._kept: dict | None = None

    def _kept_state(self, entity: str):
        """The entity's ``EntityState`` in the state the run started from (``--calibration-from``), or None."""
        if not self.state_from:
            return None
        if self._kept is None:
            from seqwatch.pipelines.calibration_state import read_states

            try:
                self._kept = read_states(self.state_from, self.state_sha256, skip=self.state_dir)
            except (OSError, ValueError, ArrowException) as exc:
                if not self.lenient:
                    raise
                # A stream's worker reads the state when it first needs it, which may be long after the stream
                # was planned (a restarted worker): a state replaced or removed since then should not stop the
                # stream. Its entities start from the model's calibration scores, as new ones do.
                logging.getLogger(__name__).warning(
                    "online calibration: the calibration state %s (--calibration-from) cannot be used (%s); entities "
                    "start from the model's calibration scores", self.state_from, str(exc).splitlines()[0])
                self._kept = {}
        return self._kept.get(entity)

    def _judge(self, now: list, fired: int, state) -> tuple[list, tuple | None]:
        """``(outputs, calibration state after them)``: the ``(timestamp, ScoredWindows)`` entries ``now`` (sorted by
        their first window) judged, each stamped at ``fired``; ``state``: the entity's calibration before them (the
        stream's state, or None: the kept state the run started from, if any, else afresh). With ``emit_state``,
        the outputs end with the entity's ``EntityState`` on ``STATE_TAG``."""
        outputs = []
        # latest_end: the end of the latest window judged into the history (written with a kept state); kept_until:
        # the last window end of the kept state the run started from, whose windows are judged without joining
        # again (only those: in a stream, a pane released after a later one joins as it always had)
        version, calibration, latest_end, kept_until, continued = None, None, None, None, False
        if state:  # (a state written before the ends were kept has two items)
            version, calibration = state[0], OnlineTailCalibration.from_dict(state[1])
            latest_end, kept_until, continued = state[2:5] if len(state) >= 5 else (None, None, False)
        else:
            kept = self._kept_state(now[0][1].windows.entity_id)
            if kept is not None:
                version, latest_end = kept.model_version, kept.last_window_end_us
                kept_until, continued = latest_end, True
                calibration = kept.online()
        for at, sw in now:
            if not len(sw.score):
                outputs.append(beam.window.TimestampedValue(sw, Timestamp(micros=fired)))
                continue
            try:
                metadata = self.models.metadata(sw.model_version)
                risk, _ = model_risk(metadata)
            except CalibrationError as exc:
                # A version that appeared while running (--watch-models) and cannot be calibrated: its windows
                # keep the model's own threshold rather than stop the stream.
                if sw.model_version not in self.refused:
                    self.refused.add(sw.model_version)
                    logging.getLogger(__name__).warning("online calibration skipped for model version %s: %s",
                                                        sw.model_version, exc)
                outputs.append(beam.window.TimestampedValue(sw, Timestamp(micros=fired)))
                continue
            if sw.model_version != version or (self.keep_us and latest_end is not None
                                               and _first_end(sw) - latest_end > self.keep_us):
                # a new version, or (keep_us) an entity back after a gap longer than its state is kept: afresh
                version, calibration = sw.model_version, start_calibration(metadata)
                latest_end, kept_until, continued = None, None, False
            # Stamped at the timer's time, which holds the watermark: on time for every step after this one.
            outputs.append(beam.window.TimestampedValue(calibrate(sw, calibration, risk, kept_until),
                                                        Timestamp(micros=fired)))
            end = int(np.asarray(sw.windows.ends, dtype=np.int64).max())
            latest_end = end if latest_end is None else max(end, latest_end)
        if calibration is None:
            return outputs, None
        kept_dict = calibration.to_dict()
        if self.emit_state and latest_end is not None:
            from seqwatch.pipelines.calibration_state import state_of

            outputs.append(beam.pvalue.TaggedOutput(STATE_TAG, (now[0][1].windows.entity_id,
                                                                state_of(kept_dict, version, latest_end), continued)))
        return outputs, (version, kept_dict, latest_end, kept_until, continued)


class _CalibrateEntityAtEnd(_EntityJudge, beam.DoFn):
    """Batch: ``(entity, [(timestamp us, ScoredWindows)])`` after one GroupByKey, all judged at once, as the
    stream's step releases them when the input is done. (The stateful step, in a batch run of a fleet of 2,000
    entities, went through the SDK's state cache about 18,000 times, and each time the cache weighs the value by
    scanning the globals of every loaded module: about 1 ms each in a process that has imported Keras and JAX.)"""

    def process(self, element):
        _, entries = element
        entries = list(entries)
        if not entries:
            return
        fired = max(at for at, _ in entries)
        now = sorted(entries, key=lambda e: (_first_end(e[1]), e[1].windows.pane))
        outputs, _ = self._judge(now, fired, None)
        yield from outputs


class _Saved(NamedTuple):
    """When a stream last wrote an entity's calibration (``_CalibrateEntity._save``), kept with it in its state."""

    at: float  # wall clock of the last write, or of the first release before any
    end_us: int | None  # the last window end written (None: nothing yet)
    ended: bool  # the input ended: every release writes


class _CalibrateEntity(_EntityJudge, beam.DoFn):
    """Streaming: each entity's panes held in Beam state and released in window order as the watermark passes
    them, its calibration kept in state between releases. With ``state_dir``, the calibration is also written to
    the entity's file there (``calibration_state.write_entity_state``) for a restart: after a release at most every
    ``save_every_s`` seconds of wall clock (0: after every release; wall clock, not event time, so that a replay
    through months of data writes each entity a few times, not once per hour of data), and when the input ends
    (a timer at the end of time: a replay's end, a drain), so a stream that ends leaves every entity's last state."""

    PENDING = BagStateSpec("pending", coders.PickleCoder())  # (timestamp us, ScoredWindows)
    # (model version, OnlineTailCalibration dict, latest window end judged, kept state's last end, whether the
    # calibration went on from a kept state; µs) and, with state_dir, when it was written (``_save``): in the one
    # state cell, since a portable runner's worker reads each cell from the runner (a cell of its own had cost a
    # fleet's stream 12% more CPU)
    ONLINE = ReadModifyWriteStateSpec("online", coders.PickleCoder())
    DUE = ReadModifyWriteStateSpec("due", VarIntCoder())
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)  # streaming with keep_us: when the entity's state goes
    AT_END = TimerSpec("at_end", TimeDomain.WATERMARK)  # with state_dir: the last write, when the input ends
    lenient = True  # a state file that changed since planning: a warning, not a failed stream

    def __init__(self, model_dir: str, watch_dir: str, state_from: str = "", state_sha256: str = "",
                 keep_us: int = 0, pane_wait_us: int = 0, state_dir: str = "", save_every_s: float = 300.0):
        super().__init__(model_dir, watch_dir, state_from, False, state_sha256, keep_us)
        self.pane_wait_us = pane_wait_us
        self.state_dir = state_dir
        self.save_every_s = save_every_s

    def process(self, element, timestamp=beam.DoFn.TimestampParam, pending=beam.DoFn.StateParam(PENDING),
                due=beam.DoFn.StateParam(DUE), release=beam.DoFn.TimerParam(RELEASE)):
        _, sw = element
        at = int(timestamp.micros)
        pending.add((at, sw))
        # The timer is due at the earliest pane waiting, so each goes as soon as the watermark passes it.
        current = due.read()
        if current is None or at < current:
            due.write(at)
            release.set(Timestamp(micros=at))

    @on_timer(FORGET)
    def on_forget(self, fired=beam.DoFn.TimestampParam, pending=beam.DoFn.StateParam(PENDING),
                  online=beam.DoFn.StateParam(ONLINE), key=beam.DoFn.KeyParam):
        """Streaming with ``keep_us``: the watermark passed the entity's last judged window by that long (each
        release sets this timer again): its calibration is dropped, so ids that go away do not stay in the runner's
        state for the stream's life. A pane that comes later starts afresh, as it would anyway (``on_release``
        judges by the gap, whatever order the runner fires the timers in); one waiting that goes on within
        ``keep_us`` keeps the state for its release. The timer waits ``pane_wait_us`` more: a window that ends
        within ``keep_us`` may still be held upstream until its pane closes. With ``state_dir`` the entity's file
        goes too (a restart would drop it by the same rule)."""
        state = online.read()
        if not state or len(state) < 5 or state[2] is None:
            return
        latest_end = state[2]
        if not any(_first_end(sw) - latest_end <= self.keep_us for _, sw in pending.read()):
            online.clear()
            if self.state_dir:
                from seqwatch.pipelines.calibration_state import stream_entity_file
                from seqwatch.pipelines.sinks import delete_path

                delete_path(stream_entity_file(self.state_dir, key))

    @on_timer(AT_END)
    def on_end(self, online=beam.DoFn.StateParam(ONLINE), pending=beam.DoFn.StateParam(PENDING),
               key=beam.DoFn.KeyParam):
        """The input ended (the watermark reached the end of time): the entity's calibration as it is now, unless
        its file already holds it. A runner may fire this before the releases the same watermark made due (Prism
        does): then it writes nothing, and each of those releases writes instead."""
        state = online.read()
        if not state or len(state) < 6 or state[5] is None:
            return
        if any(True for _ in pending.read()):  # releases to come
            saved = state[5]._replace(ended=True)
        else:
            saved = self._save(key, state[:5], state[5], at_end=True)
        if saved != state[5]:
            online.write(state[:5] + (saved,))

    def _save(self, entity: str, state: tuple, saved: "_Saved | None", at_end: bool = False) -> "_Saved":
        """Write ``entity``'s calibration ``state`` (the first five items of ``ONLINE``) to its file when it is
        due: at or after the end of the input, or ``save_every_s`` after the last write (counted from the first
        release, whose state is the model's seed and a pane: not worth a file), and only if it holds windows the
        file does not. ``saved``: as of the last release (None before the first); returns it as it is after."""
        now = time.time()
        ended = at_end or bool(saved and saved.ended)
        if saved is None:  # the first release
            saved = _Saved(now, None, ended)
            due = ended or self.save_every_s == 0
        else:
            saved = saved._replace(ended=ended)
            due = ended or now - saved.at >= self.save_every_s
        if not due or state[2] is None or saved.end_us == state[2]:
            return saved
        from seqwatch.pipelines.calibration_state import state_of, write_entity_state

        write_entity_state(self.state_dir, entity, state_of(state[1], state[0], state[2]))
        return _Saved(now, state[2], ended)

    @on_timer(RELEASE)
    def on_release(self, pending=beam.DoFn.StateParam(PENDING), online=beam.DoFn.StateParam(ONLINE),
                   due=beam.DoFn.StateParam(DUE), release=beam.DoFn.TimerParam(RELEASE),
                   forget=beam.DoFn.TimerParam(FORGET), end=beam.DoFn.TimerParam(AT_END), key=beam.DoFn.KeyParam):
        fired = due.read()
        due.clear()
        entries = list(pending.read())
        if fired is None or not entries:
            return
        now = sorted((e for e in entries if e[0] <= fired), key=lambda e: (_first_end(e[1]), e[1].windows.pane))
        later = [e for e in entries if e[0] > fired]
        pending.clear()
        for entry in later:
            pending.add(entry)
        if later:
            nxt = min(at for at, _ in later)
            due.write(nxt)
            release.set(Timestamp(micros=nxt))
        before = online.read()
        outputs, written = self._judge(now, fired, before)
        if written is not None:
            latest_end = written[2]
            if self.keep_us and latest_end is not None:
                forget.set(Timestamp(micros=latest_end + self.keep_us + self.pane_wait_us))
            if self.state_dir:
                saved = before[5] if before and len(before) > 5 else None
                if saved is None:  # (the first release, or the first after a forget)
                    end.set(GlobalWindow().max_timestamp())
                written = written + (self._save(key, written, saved),)
            online.write(written)
        yield from outputs


def _first_end(sw: ScoredWindows) -> int:
    return int(sw.windows.ends[0]) if len(sw.windows.ends) else -(1 << 62)


class CalibrateOnline(beam.PTransform):
    """``ScoredWindows -> ScoredWindows`` judged per entity by online calibration (see the module docstring).
    ``model_dir``: the artifact planned with; ``watch_dir``: the model root watched for new versions (or the
    same artifact)."""

    def __init__(self, model_dir: str, watch_dir: str | None = None, at_end: bool = False, state_from: str = "",
                 state_to: str = "", state_sha256: str = "", keep_us: int = 0, pane_wait_us: int = 0,
                 save_every_s: float = 300.0):
        """``at_end`` (batch): release every pane once the input is done, instead of each as the watermark
        passes it (the same order and results; the batch watermark jumps to the end anyway). ``state_from``: a
        kept state file (``seqwatch.pipelines.calibration_state``) each entity's calibration starts from;
        ``state_to`` (batch, with ``at_end``): write the run's state there, with the entities of ``state_from``
        that the run did not see; (streaming) a folder (``calibration_state.stream_state_dir``) to write each
        entity's calibration in, every ``save_every_s`` seconds of wall clock (0: each release) and when the input
        ends; ``state_sha256``: what ``state_from`` held when the run was planned (it is
        refused if it holds something else now); ``keep_us``: leave out of ``state_to`` the entities whose last
        window ended more than this long before the newest (``calibration_state.forget_stale``; 0: none); an
        entity whose next window ends more than this long after its last judged one starts afresh (batch and
        stream alike), and a stream drops an entity's calibration once the watermark passed its last window by this
        long and ``pane_wait_us`` (the longest a window waits upstream for its pane). With
        ``at_end``, ``states`` is the PCollection of ``(entity id, EntityState, went on from state_from)`` once the
        transform is applied, and with ``state_to``, ``forgotten`` the ``("calibration_entities_forgotten", n)``
        count of the state written (none without ``keep_us``)."""
        super().__init__()
        self.model_dir = model_dir
        self.watch_dir = watch_dir or model_dir
        self.at_end = at_end
        self.state_from = state_from
        self.state_to = state_to
        self.state_sha256 = state_sha256
        self.keep_us = keep_us
        self.pane_wait_us = pane_wait_us
        self.save_every_s = save_every_s
        self.states = None
        self.forgotten = None

    def expand(self, scored):
        timeline = (scored
                    | "ByEntity" >> beam.Map(lambda sw: (sw.windows.entity_id, sw))
                    | "OneTimeline" >> beam.WindowInto(beam.window.GlobalWindows()))
        if self.at_end:
            # Batch: every pane of an entity at once, after one GroupByKey (no per-entity state or timers)
            calibrated = (timeline
                          | "Stamped" >> beam.Map(lambda kv, at=beam.DoFn.TimestampParam: (kv[0],
                                                                                          (int(at.micros), kv[1])))
                          | "EntityPanes" >> beam.GroupByKey()
                          | "Calibrate" >> beam.ParDo(_CalibrateEntityAtEnd(
                              self.model_dir, self.watch_dir, self.state_from, True, self.state_sha256, self.keep_us))
                          .with_outputs(STATE_TAG, main="scored"))
        else:
            calibrated = (timeline
                          | "Calibrate" >> beam.ParDo(_CalibrateEntity(self.model_dir, self.watch_dir,
                                                                       self.state_from, self.state_sha256,
                                                                       self.keep_us, self.pane_wait_us,
                                                                       self.state_to, self.save_every_s))
                          .with_input_types(Tuple[str, Any]).with_outputs(STATE_TAG, main="scored"))
        if self.at_end:
            self.states = calibrated[STATE_TAG]
        if self.state_to and self.at_end:
            from seqwatch.pipelines.calibration_state import write_states

            state_to, state_from, sha256, keep_us = self.state_to, self.state_from, self.state_sha256, self.keep_us
            self.forgotten = (self.states
                              | "AllStates" >> beam.combiners.ToList()
                              | "WriteState" >> beam.FlatMap(lambda judged: _forgotten_count(
                                  write_states(state_to, [(e, s) for e, s, _ in judged], state_from, sha256,
                                               keep_us)[1], keep_us)))
        return calibrated.scored


def _forgotten_count(forgotten: int, keep_us: int) -> list:
    """The count of entities left out of the state written, where the run forgets any (``keep_us``)."""
    return [("calibration_entities_forgotten", forgotten)] if keep_us else []
