"""Scoring windows with RunInference and a Keras ``ModelHandler``.

``Seq2SeqModelHandler`` is the one seam between Beam and the model: RunInference loads the artifact once
per worker (shared across threads), batches ``WindowBatch`` elements, and records inference metrics. Each
call concatenates the windows of several panes into one model call, scored in fixed-size batches.

Model refresh without a restart: with ``watch_interval_s``, the handler looks at the model directory (an
artifact, or a model root with one sub-directory per version) at most that often, from the scoring threads
themselves, and scores with its newest artifact from then on; every scored window, alert and forecast carries
the version that scored it. A new version that does not fit the running pipeline (other channels, sampling
interval or window geometry) is refused with a warning and the current one stays. Beam's own route,
``WatchFilePattern`` as a side input of RunInference, needs a side input in the global window that a
processing-time trigger updates, which Prism does not support (apache/beam#31438), and it makes every job
unbounded; polling in the handler works on every runner and lets a replay end.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, RunInference

from seqwatch.pipelines.stage_metrics import StageTimer
from seqwatch.schemas.elements import ScoredWindows, WindowBatch


LOG = logging.getLogger(__name__)

# Versions loaded by a refresh, shared by the scoring threads of a process: {(path, model_version): detector}.
_REFRESHED: dict = {}
_REFRESH_LOCK = threading.Lock()


def _geometry(detector) -> tuple:
    """What a replacement model must share with the running one: the pipeline cuts windows for it (and their
    grid's phase, up to ``_same_phase``)."""
    window = detector.config.window
    return (tuple(detector.channels), int(detector.step_us), int(window.length), int(window.stride),
            int(window.max_gap), tuple(window.cumulative_channels))


def replacement_difference(loaded, model) -> str | None:
    """What keeps ``loaded`` from replacing the running ``model`` (``"its window length is 2, the running model's
    16"``), or None. Another model id is refused too: its alerts would continue the running model's incidents
    under other ids (found by the bug hunt of model variants: an incident's notice and its alert had two ids)."""
    names = ("channels", "sampling interval (µs)", "window length", "stride", "max gap", "cumulative channels")
    for name, new, old in zip(names, _geometry(loaded), _geometry(model)):
        if new != old:
            shown = (lambda v: list(v) if isinstance(v, tuple) else v)
            return f"its {name} {'are' if name.endswith('s') else 'is'} {shown(new)}, the running model's {shown(old)}"
    if loaded.model_id != model.model_id:
        return f"its model id is {loaded.model_id!r}, the running model's {model.model_id!r}"
    if not _same_phase(loaded, model):
        return (f"its grid phase is {int(loaded.grid_offset_us)} µs, the running model's "
                f"{int(model.grid_offset_us)} µs")
    return None


def _same_phase(loaded, model) -> bool:
    """Whether a replacement's grid phase is the running model's, up to a hundredth of a step (a model trained
    anew on the same devices may round their phase a unit apart: the pipeline's windows hold the same readings),
    measured round the step (+ and - half a step are one phase)."""
    step = int(model.step_us)
    apart = abs(int(loaded.grid_offset_us) - int(model.grid_offset_us)) % step
    return min(apart, step - apart) <= step // 100


# Detectors loaded in this process, by artifact folder and the size and time of its two files. The batch graph
# scores in two RunInference steps (panes cut where their file was read, and panes that met in the GroupByKey);
# each has a Shared handle of its own, so each had loaded the model (0.06 s for a small LSTM) and, where both
# scored, traced its predict step again (0.17 s), and held a second copy of the network. Weak values: a model
# no step holds any more is let go, as Shared lets it go.
_LOADED: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()
_LOAD_LOCK = threading.Lock()


def _artifact_key(model_dir: str) -> tuple:
    """What tells one saved artifact from another: its folder, and each file's size and modification time (a
    version saved again in place is loaded again)."""
    from seqwatch.models.artifact import METADATA_FILE, MODEL_FILE, resolve_model_dir

    directory = resolve_model_dir(model_dir)
    stats = []
    for name in (METADATA_FILE, MODEL_FILE):
        try:
            stat = (directory / name).stat()
            stats.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            stats.append(None)  # load_artifact says what is missing
    return (str(directory.absolute()), *stats)


def load_detector(model_dir: str):
    """The artifact of ``model_dir`` (an artifact, or a model root's newest version; local, or on an object store,
    whence it is copied into the local cache once per version: ``model_store``), loaded once per process while a
    scoring step holds it."""
    from seqwatch.models.artifact import load_artifact
    from seqwatch.pipelines.model_store import local_model_dir

    model_dir = local_model_dir(model_dir)
    key = _artifact_key(model_dir)
    with _LOAD_LOCK:
        detector = _LOADED.get(key)
        if detector is None:
            detector = load_artifact(model_dir)
            _LOADED[key] = detector
    return detector


UNREADABLE_GRACE_S = 60.0  # how long a newest version's metadata may stay unreadable (being copied) unsaid


class ModelVersionWatch:
    """Finds the newest artifact of a model directory, at most every ``interval_s`` seconds (one per handler,
    so per scoring thread; loaded versions are shared by the threads of a process)."""

    def __init__(self, model_dir: str, interval_s: float):
        self.model_dir = model_dir
        self.interval_s = interval_s
        self._next_look = 0.0
        self._refused: set = set()  # (path, version) that do not fit the running pipeline
        self._failed: set = set()  # (path, version) that did not load (warned once, tried again)
        self._unreadable: dict = {}  # newest version folder whose metadata could not be read -> (first seen, warned)

    def current(self, model):
        """The detector to score with: ``model`` (the one in use) or a newer version of the directory."""
        now = time.monotonic()
        if now < self._next_look:
            return model
        self._next_look = now + self.interval_s
        import json

        from seqwatch.models.artifact import METADATA_FILE, ArtifactError, load_artifact
        from seqwatch.pipelines.model_store import local_model_dir, model_versions_of, read_model_text

        try:
            versions = model_versions_of(self.model_dir)
        except ArtifactError:  # an object store out of reach for a while: look again next time
            return model
        if not versions:
            return model
        newest = versions[-1]
        try:
            # The version only: metadata that ``read_metadata`` refuses (a value edited by hand) are refused by the
            # load below, with a warning, rather than skipped without a word at every look.
            version = str(json.loads(read_model_text(newest, METADATA_FILE))["model_version"])
        except (KeyError, TypeError, ValueError, OSError) as exc:
            # being written or removed: look again next time; still so after a grace period (a copy cut short, a
            # file edited by hand), it is said once, rather than skipped without a word at every look
            first, warned = self._unreadable.setdefault(str(newest), (now, False))
            if not warned and now - first >= max(UNREADABLE_GRACE_S, 2 * self.interval_s):
                self._unreadable[str(newest)] = (first, True)
                LOG.warning("seqwatch: the newest model version in %s has a %s that cannot be read (%s), still "
                            "scoring with %s; save the version again (seqwatch train writes it whole)", newest,
                            METADATA_FILE, f"{type(exc).__name__}: {exc}"[:200], model.model_version)
            return model
        self._unreadable.pop(str(newest), None)
        key = (str(newest), version)
        if version == model.model_version or key in self._refused:
            return model
        with _REFRESH_LOCK:
            loaded = _REFRESHED.get(key)
            if loaded is None:
                try:
                    loaded = load_artifact(local_model_dir(newest))
                except ArtifactError as exc:
                    if key not in self._failed:
                        self._failed.add(key)
                        LOG.warning("seqwatch: model version %s in %s is not usable yet, still scoring with %s: %s",
                                    version, newest, model.model_version, exc)
                    return model
                difference = replacement_difference(loaded, model)
                if difference is not None:
                    self._refused.add(key)
                    LOG.warning("seqwatch: refusing model version %s in %s: %s; still scoring with %s",
                                version, newest, difference, model.model_version)
                    beam.metrics.Metrics.counter("seqwatch", "model_updates_refused").inc()
                    return model
                _REFRESHED[key] = loaded
        LOG.warning("seqwatch: scoring switched from model version %s to %s (%s)", model.model_version,
                    loaded.model_version, newest)
        beam.metrics.Metrics.counter("seqwatch", "model_updates").inc()
        return loaded


class Seq2SeqModelHandler(ModelHandler[WindowBatch, ScoredWindows, Any]):
    """Loads a seqwatch model artifact and scores ``WindowBatch`` elements into ``ScoredWindows``.
    ``model_dir``: an artifact, or a model root (its newest version); ``watch_interval_s``: when set, switch to a
    newer version of ``watch_dir`` (default ``model_dir``) that appears while the pipeline runs, looking at most
    this often. The pipelines pass the version they planned with as ``model_dir`` and the directory as given as
    ``watch_dir``, so the first model is the one the windows were cut for."""

    def __init__(self, model_dir: str, max_batch_windows: int = 4096, watch_interval_s: float | None = None,
                 watch_dir: str | None = None):
        self.model_dir = model_dir
        self.max_batch_windows = max_batch_windows
        self.watch_interval_s = watch_interval_s
        self.watch_dir = watch_dir or model_dir
        self._timer = None
        self._watch = None
        self._model = None

    def load_model(self):
        return load_detector(self.model_dir)

    def update_model_path(self, model_path: Optional[str] = None):
        if model_path:
            self.model_dir = model_path

    def run_inference(self, batch: Sequence[WindowBatch], model, inference_args=None) -> Iterable[ScoredWindows]:
        if not batch:  # Beam's BatchElements, weighing elements, flushes an empty batch before one that is too big
            return
        if self._timer is None:
            self._timer = StageTimer("score")
        if self.watch_interval_s:
            if self._watch is None:
                self._watch = ModelVersionWatch(self.watch_dir, self.watch_interval_s)
            self._model = self._watch.current(self._model or model)
            model = self._model
        sizes = [len(wb.ends) for wb in batch]
        with self._timer:
            result = model.score_windows(np.concatenate([wb.values for wb in batch]))
        coverage = model.intervals.coverage if model.intervals else 0.0
        start = 0
        for wb, size in zip(batch, sizes):
            part = slice(start, start + size)
            start += size
            # The windows' values are not needed after the model (scores, forecasts and alerts are in the
            # arrays below): dropping them keeps what later stages hold, and what crosses a shuffle, small. Which
            # channels each window's last step observed stays: a forecast is issued only from an observed step.
            wb = wb._replace(values=wb.values[:, :0], observed=wb.observed[:, -1:])
            yield ScoredWindows(
                wb, result.score[part], float(model.threshold), result.is_anomaly[part], result.severity[part],
                result.tail_probability[part], result.contributions[part],
                None if result.forecast is None else result.forecast[part],
                None if result.lower is None else result.lower[part],
                None if result.upper is None else result.upper[part],
                coverage, model.window_length, model.model_id, model.model_version)

    def get_num_bytes(self, batch: Sequence[WindowBatch]) -> int:
        return sum(wb.values.nbytes for wb in batch)

    def get_metrics_namespace(self) -> str:
        return "seqwatch"

    def batch_elements_kwargs(self):
        # Batches are weighed in windows, not panes: a fleet's panes hold a few windows each, and 16 panes a
        # call (the earlier limit) made model calls of ~64 windows, each padded to the network's batch. At least
        # one network batch (``PREDICT_BATCH`` windows): from one window, Beam's batch size estimator ramped up
        # too slowly, and a fleet's panes were scored one per call.
        from seqwatch.models.detector import PREDICT_BATCH
        return {"min_batch_size": min(PREDICT_BATCH, self.max_batch_windows), "max_batch_size": self.max_batch_windows,
                "element_size_fn": _windows_in}

    def share_model_across_processes(self) -> bool:
        return False


def _windows_in(batch: WindowBatch) -> int:
    """A pane's weight in a model call: its windows (at least 1)."""
    return max(1, len(batch.ends))


class ScoreWindows(beam.PTransform):
    """``WindowBatch -> ScoredWindows`` through RunInference with ``Seq2SeqModelHandler``; with
    ``watch_interval_s``, newer versions of ``model_dir`` are picked up while the pipeline runs."""

    def __init__(self, model_dir: str, watch_interval_s: float | None = None, watch_dir: str | None = None):
        super().__init__()
        self.model_dir = model_dir
        self.watch_interval_s = watch_interval_s
        self.watch_dir = watch_dir

    def expand(self, windows):
        return windows | "RunInference" >> RunInference(Seq2SeqModelHandler(
            self.model_dir, watch_interval_s=self.watch_interval_s, watch_dir=self.watch_dir))
