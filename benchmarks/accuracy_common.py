"""Shared pieces of the accuracy benchmarks: data location, fitting, causal scoring, calibration, alerts, progress.

Every benchmark follows the same life of a detector: fit a ``Seq2SeqDetector`` on the training part of a data
set only, score every window ending at a row (stride 1), give each row the score of the window that *ends* at
it (``causal_point_scores``: no row is scored with readings that come after it), turn scores into labels with
a threshold that was set without the test part, and turn labels into alerts the way seqwatch's alert builder
does (anomalous windows that overlap or touch form one alert).

Rows are the time axis here: each data set's rows are fed as consecutive steps of a nominal interval
(``row_frame``). NAB and SKAB detectors see their records as a stream of rows; the appliance and ECG data are
regular (1 minute, 360 Hz). This keeps train/test boundaries exact row indices.

Window scores are *one-sided*: every benchmark fits its detectors with ``ScoringConfig(one_sided=True)``
(``benchmark_scoring_config``), so only worse-than-normal reconstruction raises a window's score; the detector's
default two-sided score also flags a window the model reconstructs unusually well (a quiet night). Benchmarks
that set their own threshold apply the detector's threshold rule (``fit_threshold``) to the scores of the
detector's own calibration windows or of held-out normal data, so no test row enters them.
"""
from __future__ import annotations

import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = REPO.parent / "shared" / "data"
FIGURES = REPO / "benchmarks" / "figures"

ROW_STEP_US = 1_000_000  # nominal step of one row; the grid is rows, not wall-clock time


def data_root() -> Path:
    """``../shared/data`` next to the repository, or ``$SEQWATCH_DATA`` when set."""
    return Path(os.environ.get("SEQWATCH_DATA", DATA_ROOT))


# ---------------------------------------------------------------------------------------------------- progress
class Progress:
    """One line per event on stderr, prefixed with the data set and the seconds since the run started."""

    def __init__(self, name: str, stream=sys.stderr, start: float | None = None):
        self.name = name
        self.stream = stream
        self.start = time.perf_counter() if start is None else start

    def __call__(self, message: str) -> None:
        self.stream.write(f"[{time.perf_counter() - self.start:7.1f}s] {self.name}: {message}\n")
        self.stream.flush()


# -------------------------------------------------------------------------------------------------- frames, fit
def row_frame(values: np.ndarray, channels: tuple, entity: str = "series", first_row: int = 0,
              keep: np.ndarray | None = None) -> pd.DataFrame:
    """Long-format readings of a ``[n, C]`` array whose row ``i`` is step ``first_row + i``.

    ``keep`` (bool ``[n]``) drops rows (they become gaps on the detector's grid, so no training window spans
    them). Raises ValueError when ``values`` is not 2-d with one column per channel."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(channels):
        raise ValueError(f"values must be [n, {len(channels)}] for channels {list(channels)}, got {values.shape}")
    rows = np.arange(first_row, first_row + len(values), dtype=np.int64)
    if keep is not None:
        keep = np.asarray(keep, dtype=bool)
        rows, values = rows[keep], values[keep]
    n, c = values.shape
    return pd.DataFrame({
        "entity_id": np.full(n * c, entity, dtype=object),
        "channel": np.tile(np.asarray(channels, dtype=object), n),
        "timestamp": np.repeat(rows * ROW_STEP_US, c),
        "value": values.ravel(),
    })


def fit_detector(config, frame: pd.DataFrame, channels: tuple, model_id: str, holdout: pd.DataFrame | None = None):
    """A ``Seq2SeqDetector`` fitted on ``frame`` (rows as steps), without per-epoch output; with ``holdout``, its
    validation and calibration parts come from those rows (``Seq2SeqDetector.fit``)."""
    from seqwatch.models.detector import Seq2SeqDetector

    return Seq2SeqDetector(config, model_id=model_id).fit(frame, channels=channels, step_us=ROW_STEP_US,
                                                          progress=False, holdout=holdout)


# ------------------------------------------------------------------------------------------------------ scoring
def window_scores(detector, windows: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """The detector's scores of windows ``[N, L, C]`` in original units (one-sided with the benchmarks'
    config), from its public ``window_features`` and scorer. Windows holding a NaN score NaN."""
    windows = np.asarray(windows, dtype=np.float64)
    scores = np.full(len(windows), np.nan)
    finite = np.isfinite(windows).all(axis=(1, 2))
    index = np.flatnonzero(finite)
    for start in range(0, len(index), chunk):
        part = index[start:start + chunk]
        scores[part], _ = detector.scorer.score(detector.window_features(windows[part]))
    return scores


def row_scores(detector, values: np.ndarray, first_end: int = 0, chunk: int = 65536) -> np.ndarray:
    """Causal score of each row of ``values`` ``[n, C]``: the score of the window of the detector's
    length that ends at the row (NaN for the first L-1 rows and rows before ``first_end``). Goes through
    ``seqwatch.models.scoring.causal_point_scores`` so the row/window mapping is the detector's own."""
    from seqwatch.models import windowing
    from seqwatch.models.scoring import causal_point_scores

    values = np.asarray(values, dtype=np.float64)
    length = detector.window_length
    n = len(values)
    ends = np.arange(max(length - 1, first_end), n, dtype=np.int64)
    scores = np.empty(len(ends))
    for start in range(0, len(ends), chunk):
        part = ends[start:start + chunk]
        scores[start:start + chunk] = window_scores(detector, windowing.cut_windows(values, part, length))
    if len(ends) == 0:
        return np.full(n, np.nan)
    return causal_point_scores(np.arange(n), ends, scores, length)


@dataclass(frozen=True)
class SplitParts:
    """Row ranges ``[lo, hi)`` of one entity's train/validation/calibration parts as ``fit`` cuts them."""

    train: tuple
    validation: tuple
    calibration: tuple


def fit_parts(present, training) -> SplitParts:
    """The chronological split ``Seq2SeqDetector.fit`` makes of one entity's grid: ``present`` marks its rows
    with readings (an int ``n`` stands for ``n`` rows, all present). The cuts are the detector's own
    (``seqwatch.models.windowing.chronological_cuts``)."""
    from seqwatch.models import windowing

    present = np.ones(present, dtype=bool) if isinstance(present, (int, np.integer)) else np.asarray(present, bool)
    cut_val, cut_cal = windowing.chronological_cuts(present, training.validation_fraction,
                                                    training.calibration_fraction)
    return SplitParts((0, cut_val), (cut_val, cut_cal), (cut_cal, len(present)))


def part_windows(values: np.ndarray, present: np.ndarray, lo: int, hi: int, length: int, stride: int) -> np.ndarray:
    """Windows of ``length`` rows every ``stride`` rows inside rows ``[lo, hi)`` that hold only present rows,
    as ``fit`` cuts its parts."""
    from seqwatch.models import windowing

    out = []
    for start, end in windowing.stretches(present[lo:hi]):
        if end - start + 1 >= length:
            out.append(windowing.sliding_windows(values[lo + start:lo + end + 1], length, stride))
    if not out:
        return np.zeros((0, length, values.shape[1]))
    return np.concatenate(out)


def calibration_scores(detector, segments: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Scores of the detector's own calibration windows.

    ``segments``: one ``(values [n, C], present [n])`` per training entity, rows as the detector's grid steps
    (``present`` False where rows were dropped). Uses the same split and stride as ``fit``."""
    cfg = detector.config
    out = []
    for values, present in segments:
        lo, hi = fit_parts(present, cfg.training).calibration
        windows = part_windows(values, present, lo, hi, detector.window_length, cfg.training.training_stride)
        out.append(window_scores(detector, windows))
    return np.concatenate(out)


def benchmark_scoring_config():
    """The ``ScoringConfig`` of every benchmark's detectors: the detector's defaults (threshold by peaks over
    threshold, risk 1e-3 above the 0.95 quantile) with one-sided window scores."""
    from seqwatch.models.config import ScoringConfig

    return ScoringConfig(one_sided=True)


def calibration_threshold(cal_scores: np.ndarray) -> float:
    """The detector's threshold rule (``benchmark_scoring_config``) applied to calibration scores; with every
    score equal (a constant series, an appliance off throughout) it is that score."""
    from seqwatch.models.thresholds import fit_threshold

    return fit_threshold(np.asarray(cal_scores, dtype=np.float64), benchmark_scoring_config())


# ---------------------------------------------------------------------------------------- score -> [0, 1], alerts
LOG_SCALE_DECADES = 10.0


def anomaly_score_from_tail(tail_probability: np.ndarray, decades: float = LOG_SCALE_DECADES) -> np.ndarray:
    """NAB-style anomaly score in [0, 1] from a tail probability ``p`` (P(normal score >= s)):
    ``min(1, -log10(p) / decades)``; NaN/1 -> 0, ``p <= 10**-decades`` -> 1. Monotone non-increasing in ``p``,
    so thresholding it is thresholding the tail probability; the log keeps rare levels apart (``1 - p`` rounds
    everything below 1e-16 to 1.0)."""
    p = np.asarray(tail_probability, dtype=np.float64)
    p = np.where(np.isfinite(p), np.clip(p, 0.0, 1.0), 1.0)
    with np.errstate(divide="ignore"):
        score = -np.log10(p) / decades
    return np.clip(np.nan_to_num(score, posinf=1.0), 0.0, 1.0)


def alert_starts(flags: np.ndarray, merge_gap: int) -> np.ndarray:
    """Rows where an alert starts: flagged rows with no flagged row in the ``merge_gap`` rows before them.

    seqwatch merges anomalous windows that overlap or touch into one alert; windows of length L ending at
    rows ``t1 < t2`` overlap or touch when ``t2 - t1 <= L``, so ``merge_gap = L`` reproduces the alert
    builder on row scores."""
    flagged = np.flatnonzero(np.asarray(flags, dtype=bool))
    out = np.zeros(len(flags), dtype=bool)
    if flagged.size:
        out[flagged[np.r_[True, np.diff(flagged) > merge_gap]]] = True
    return out


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive ``(first, last)`` row pairs of the runs of True."""
    f = np.asarray(flags, dtype=np.int8)
    edges = np.diff(np.r_[0, f, 0])
    return [(int(s), int(e) - 1) for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))]


# ------------------------------------------------------------------------------------------------- environment
def machine_description() -> str:
    """CPU model, cores and OS of the machine the benchmark runs on."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def library_versions() -> dict:
    """Versions of the libraries that shape the numbers."""
    import importlib.metadata as md

    out = {}
    for name in ("keras", "jax", "numpy", "scipy", "pandas"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    out["backend"] = os.environ.get("KERAS_BACKEND", "jax")
    return out


def describe_config(config, threshold: str | None = None, split: str | None = None) -> str:
    """One line with the settings that matter for accuracy; ``threshold`` describes the threshold rule (default:
    the config's rule on one-sided calibration scores), ``split`` the training split (default: the config's
    chronological train/validation/calibration fractions)."""
    a, w, t = config.architecture, config.window, config.training
    s = config.scoring
    cell = f"{'bi-' if a.bidirectional else ''}{a.cell.upper()}"
    return (f"{cell} {a.layers}x{a.units} units, window {w.length}, dropout {a.dropout}, "
            f"epochs <= {t.epochs} (patience {t.patience}), batch {t.batch_size}, lr {t.learning_rate:g}, "
            f"training stride {t.training_stride}, split "
            + (split or f"{1 - t.validation_fraction - t.calibration_fraction:.0%}/{t.validation_fraction:.0%}/"
                        f"{t.calibration_fraction:.0%}")
            + f", seed {t.seed}; "
            + (f"error floor: the {s.error_floor_quantile:g} quantile of validation RMS over windows with activity; "
               if s.error_floor_quantile is not None else "")
            + "threshold: "
            + (threshold or f"peaks over threshold (risk {s.pot_risk:g} above the {s.pot_initial_quantile:g} "
                            f"quantile) on one-sided calibration scores"))


def finite_or_none(x):
    """JSON-safe float."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None

