"""SKAB v0.9 (34 experiments, 8 channels) with SKAB's own protocol and metrics.

Protocol (what the detector sees):
- Per file, SKAB's split: the first 400 rows train (``train_size=400``, no shuffle), the rest is the test part.
  One model per file, trained on those 400 rows only (``fit`` cuts them 70/15/15 into train, validation and
  calibration). A second setting trains one model on ``anomaly-free/anomaly-free.csv`` (no test file seen)
  and scores the same test rows.
- Each row gets the one-sided score of the window that ends at it (causal; a window may reach back into the
  training rows, which are past data).
- Threshold: the detector's own rule (peaks over threshold, risk 1e-3 above the 0.95 quantile) fitted on the
  one-sided scores of the model's calibration windows, which lie inside the training rows. No test row and
  no label is used to set it.
- Outlier detection: point-wise F1 / FAR / MAR on the ``anomaly`` column of the test rows, pooled over the
  34 files (SKAB's ``chp_score(metric="binary")`` sums TP/FP/FN over files).
- Changepoint detection: SKAB's NAB variant (``tsad``/``core/metrics.py``) as in its proposed leaderboard:
  true changepoints of the test part, each with a 60 s window to its right; predicted changepoints are the
  rows where the predicted label changes (``abs(prediction.diff())``, the first test row counting when
  flagged); a flat cost per false positive, a tanh-scaled reward for the first prediction in a window.

Third setting, per-entity online calibration (added 2026-11-30, session 6, written down before its first run;
reported beside the others, not the headline): the anomaly-free model, each file an entity judged as
``seqwatch run --online-calibration`` judges one (``seqwatch.pipelines.calibration``): every row's window, in
time order from the file's first row, gets the threshold of an ``OnlineTailCalibration`` seeded with the model's
calibration scores and refitted on the file's own earlier windows (history 8,640, refit every 100, at the
model's risk 1e-3). It uses the file's rows before each window (SKAB's training rows included, as past data),
never a label.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from accuracy_common import (Progress, benchmark_scoring_config, calibration_scores, describe_config,
                            fit_detector, calibration_threshold, row_frame, row_scores)

TRAIN_ROWS = 400
CHANNELS = ("Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature", "Thermocouple",
            "Voltage", "Volume Flow RateRMS")
FOLDERS = ("valve1", "valve2", "other")
QUICK_FILES = ("valve1/0.csv", "valve2/1.csv", "other/9.csv", "other/14.csv")
FIGURE_FILES = ("valve1/1.csv", "other/13.csv")
CP_WINDOW = pd.Timedelta(seconds=60)
# tsad's profile table: A_tp, A_fp, A_fn
SKAB_NAB_PROFILES = {"standard": (1.0, -0.11, -1.0), "low FP": (1.0, -0.22, -1.0), "low FN": (1.0, -0.11, -2.0)}

# SKAB "proposed leaderboard" (test part only), README of waico/SKAB at b2c0d46c2971dcbfe71e26087b6d231998bb91c2.
LEADERBOARD_OUTLIER = [("Conv-AE", 0.78, 13.55, 28.02), ("MSET", 0.78, 39.73, 14.13),
                       ("T-squared+Q (PCA-based)", 0.76, 26.62, 24.92), ("LSTM-AE", 0.74, 29.96, 25.92),
                       ("T-squared", 0.66, 19.21, 42.6), ("LSTM-VAE", 0.56, 9.13, 55.03),
                       ("Vanilla LSTM", 0.54, 12.54, 59.53), ("Vanilla AE", 0.39, 2.59, 75.15),
                       ("MSCRED", 0.36, 49.94, 69.88), ("Isolation forest", 0.29, 2.56, 82.89),
                       ("Null detector", 0.0, 0.0, 100.0)]
LEADERBOARD_CP = [("MSCRED", 32.42, 16.53, 40.28, 55, 342), ("Isolation forest", 26.16, 19.5, 30.82, 76, 135),
                  ("T-squared+Q (PCA-based)", 25.35, 14.51, 31.33, 72, 232),
                  ("Conv-AE", 23.61, 21.54, 27.55, 82, 23), ("LSTM-AE", 23.51, 20.11, 25.91, 88, 69),
                  ("T-squared", 19.54, 10.2, 24.31, 70, 106), ("MSET", 13.84, 10.22, 17.37, 96, 66),
                  ("Vanilla AE", 11.41, 6.53, 13.91, 103, 106), ("Vanilla LSTM", 11.31, -3.8, 17.25, 90, 342)]


def skab_config(quick: bool = False, anomaly_free: bool = False):
    """Model settings, fixed before any SKAB run (not tuned on SKAB). The per-file model trains on 280 rows,
    so it is small; the anomaly-free model has 23x more rows and trains on every second window."""
    from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig

    return DetectorConfig(
        ArchitectureConfig(cell="gru", layers=1, units=16),
        WindowConfig(length=16, stride=1, max_gap=0),
        TrainingConfig(epochs=5 if quick else 30, batch_size=64 if anomaly_free else 32, patience=5,
                       validation_fraction=0.15, calibration_fraction=0.15,
                       training_stride=2 if anomaly_free else 1, seed=7),
        benchmark_scoring_config(),
    )


# ------------------------------------------------------------------------------------------------------ data
@dataclass
class SkabFile:
    key: str
    times: pd.DatetimeIndex
    values: np.ndarray  # [n, 8]
    anomaly: np.ndarray  # [n] bool
    changepoint: np.ndarray  # [n] bool


def read_skab(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep=";", index_col="datetime", parse_dates=True)


def load_files(root: Path, keys: tuple | None = None) -> dict[str, SkabFile]:
    """The 34 labelled experiments (valve1, valve2, other), or ``keys``."""
    out = {}
    for folder in FOLDERS:
        for path in sorted((root / folder).glob("*.csv"), key=lambda p: int(p.stem)):
            key = f"{folder}/{path.name}"
            if keys is not None and key not in keys:
                continue
            df = read_skab(path)
            out[key] = SkabFile(key, df.index, df[list(CHANNELS)].to_numpy(np.float64),
                                df["anomaly"].to_numpy() > 0, df["changepoint"].to_numpy() > 0)
    return out


def split_rows(n_rows: int) -> tuple[range, range]:
    """SKAB's split of a file: (training rows, test rows)."""
    if n_rows <= TRAIN_ROWS:
        raise ValueError(f"a SKAB file needs more than {TRAIN_ROWS} rows, got {n_rows}")
    return range(0, TRAIN_ROWS), range(TRAIN_ROWS, n_rows)


def training_frame(f: SkabFile) -> pd.DataFrame:
    """The readings a per-file model is fitted on: the file's first 400 rows."""
    train, _ = split_rows(len(f.values))
    return row_frame(f.values[:train.stop], CHANNELS)


# --------------------------------------------------------------------------------------- changepoint scoring
def _tsad_scale(position: float, a_tp: float, a_fp: float) -> float:
    """tsad's ``my_scale`` ("improved" NAB scaling) at a relative position in [0, 1] of the window."""
    x = np.linspace(-np.pi / 2, np.pi / 2, 1000)
    event = min(int(position * 1000), 999)
    y = (a_tp - a_fp) / 2 * -np.tanh(x[event]) / np.tanh(np.pi / 2) + (a_tp - a_fp) / 2 + a_fp
    return float(y)


def changepoint_windows(times: pd.DatetimeIndex, changepoint: np.ndarray) -> list[list[pd.Timestamp]]:
    """``[cp, cp + 60 s]`` for each true changepoint; an overlapping next window starts where the previous
    ends (tsad's "cut right window")."""
    windows = [[t, t + CP_WINDOW] for t in times[np.asarray(changepoint, dtype=bool)]]
    for i in range(len(windows) - 1):
        if windows[i][1] >= windows[i + 1][0]:
            windows[i + 1][0] = windows[i][1]
    return windows


def changepoint_file_score(times: pd.DatetimeIndex, predicted_cp: np.ndarray, windows) -> dict:
    """Per-profile (score, null, perfect) and counts of one file, following tsad's ``single_evaluate_nab`` and
    ``extract_cp_confusion_matrix``."""
    pred_times = times[np.asarray(predicted_cp, dtype=bool)]
    fp = 0
    first_hits = []
    missed = 0
    if windows:
        fp += int((pred_times < windows[0][0]).sum())
        for i, (a, b) in enumerate(windows):
            hits = pred_times[(pred_times >= a) & (pred_times <= b)]
            if len(hits) == 0:
                missed += 1
            else:
                first_hits.append((a, hits[0], b))
            nxt = windows[i + 1][0] if i + 1 < len(windows) else None
            after = pred_times > b
            if nxt is not None:
                after &= pred_times < nxt
            fp += int(after.sum())
    else:
        fp = len(pred_times)
    out = {"fp": fp, "missed": missed, "windows": len(windows)}
    for name, (a_tp, a_fp, a_fn) in SKAB_NAB_PROFILES.items():
        score = a_fp * fp + a_fn * missed
        for a, hit, b in first_hits:
            score += _tsad_scale((hit - a) / (b - a), a_tp, a_fp)
        out[name] = (score, len(windows) * a_fn, len(windows) * a_tp)
    return out


def changepoint_corpus_score(per_file: list[dict]) -> dict:
    """tsad's normalisation: ``100 * (S - null) / (perfect - null)`` over summed file scores."""
    out = {"missed": sum(f["missed"] for f in per_file), "fp": sum(f["fp"] for f in per_file),
           "changepoints": sum(f["windows"] for f in per_file)}
    for name in SKAB_NAB_PROFILES:
        s = sum(f[name][0] for f in per_file)
        null = sum(f[name][1] for f in per_file)
        perfect = sum(f[name][2] for f in per_file)
        out[name] = 100 * (s - null) / (perfect - null) if perfect != null else float("nan")
    return out


def predicted_changepoints(prediction: np.ndarray) -> np.ndarray:
    """SKAB baselines' ``abs(prediction.diff())`` with the first row = the first prediction."""
    p = np.asarray(prediction, dtype=np.int8)
    cp = np.abs(np.diff(p, prepend=p[:1]))
    if len(p):
        cp[0] = p[0]
    return cp.astype(bool)


# ------------------------------------------------------------------------------------------------------- run
@dataclass
class SkabScored:
    key: str
    scores: np.ndarray  # one-sided score per row (all rows)
    threshold: float | np.ndarray  # the model's, or one per row (online calibration; NaN where no window ends)


def online_thresholds(detector, scores: np.ndarray) -> np.ndarray:
    """Each row's threshold under per-entity online calibration, as the pipeline computes it
    (``seqwatch.pipelines.calibration``: seeded with the model's stored calibration scores, at its risk), over
    the rows that end a window, in time order; NaN for rows that end none."""
    from seqwatch.pipelines.calibration import model_risk, start_calibration

    metadata = {"model_version": "benchmark", "tail": detector.tail.to_dict(), "config": detector.config.to_dict()}
    risk, _ = model_risk(metadata)
    finite = np.isfinite(scores)
    thresholds = np.full(scores.shape, np.nan)
    thresholds[finite] = start_calibration(metadata).process_at_risk(scores[finite], risk)[1]
    return thresholds


def _evaluate(files: dict[str, SkabFile], scored: dict[str, SkabScored]) -> dict:
    from seqwatch.models.evaluation import point_metrics, pr_auc, roc_auc

    labels, preds, ratios, per_file_cp = [], [], [], []
    for key, f in files.items():
        _, test = split_rows(len(f.values))
        s = scored[key]
        test_scores = np.nan_to_num(s.scores[test.start:], nan=0.0)
        threshold = np.broadcast_to(np.asarray(s.threshold, dtype=np.float64), s.scores.shape)[test.start:]
        pred = test_scores > np.nan_to_num(threshold, nan=np.inf)
        labels.append(f.anomaly[test.start:])
        preds.append(pred)
        ratios.append(test_scores / np.nan_to_num(threshold, nan=np.inf))
        per_file_cp.append(changepoint_file_score(f.times[test.start:], predicted_changepoints(pred),
                                                  changepoint_windows(f.times[test.start:],
                                                                      f.changepoint[test.start:])))
    y, p, r = np.concatenate(labels), np.concatenate(preds), np.concatenate(ratios)
    m = point_metrics(y, p)
    # Diagnosis only: the best F1 over one common multiple of each file's threshold (uses test labels).
    grid = np.unique(np.quantile(r, np.linspace(0.3, 0.999, 300)))
    oracle = max(((point_metrics(y, r > g).f1, g) for g in grid), key=lambda t: t[0])
    return {"f1": m.f1, "far": m.far, "mar": m.mar, "precision": m.precision, "recall": m.recall,
            "tp": m.tp, "fp": m.fp, "fn": m.fn, "tn": m.tn, "rows": int(len(y)),
            "roc_auc": roc_auc(y, r), "pr_auc": pr_auc(y, r),
            "oracle_f1": oracle[0], "oracle_multiple": float(oracle[1]),
            "changepoint": changepoint_corpus_score(per_file_cp)}


def run(quick: bool = False, progress: Progress | None = None, figures_dir: Path | None = None,
        root: Path | None = None) -> dict:
    """Run the SKAB benchmark; returns a JSON-ready dict."""
    from accuracy_common import data_root

    progress = progress or Progress("skab")
    root = root or data_root() / "skab"
    started = time.perf_counter()
    files = load_files(root, QUICK_FILES if quick else None)
    config = skab_config(quick)
    per_file: dict[str, SkabScored] = {}
    fit_seconds = 0.0
    for i, (key, f) in enumerate(files.items(), 1):
        train, _ = split_rows(len(f.values))
        t0 = time.perf_counter()
        det = fit_detector(config, training_frame(f), CHANNELS, f"skab-{key}")
        fit_seconds += time.perf_counter() - t0
        threshold = calibration_threshold(calibration_scores(det, [(f.values[:train.stop],
                                                                       np.ones(train.stop, bool))]))
        per_file[key] = SkabScored(key, row_scores(det, f.values), threshold)
        progress(f"{i}/{len(files)} {key}: trained on rows 0-{train.stop - 1} "
                 f"({det.metrics.get('epochs_run', 0)} epochs), threshold {threshold:.2f}")
    results = {"per_file_400": _evaluate(files, per_file)}
    progress(f"per-file models: F1 {results['per_file_400']['f1']:.3f}, FAR {results['per_file_400']['far']:.1%}, "
             f"MAR {results['per_file_400']['mar']:.1%}")

    free = read_skab(root / "anomaly-free" / "anomaly-free.csv")[list(CHANNELS)].to_numpy(np.float64)
    free_config = skab_config(quick, anomaly_free=True)
    t0 = time.perf_counter()
    det = fit_detector(free_config, row_frame(free, CHANNELS), CHANNELS, "skab-anomaly-free")
    fit_seconds += time.perf_counter() - t0
    threshold = calibration_threshold(calibration_scores(det, [(free, np.ones(len(free), bool))]))
    shared = {key: SkabScored(key, row_scores(det, f.values), threshold) for key, f in files.items()}
    results["anomaly_free"] = _evaluate(files, shared)
    progress(f"anomaly-free model: F1 {results['anomaly_free']['f1']:.3f}, "
             f"FAR {results['anomaly_free']['far']:.1%}, MAR {results['anomaly_free']['mar']:.1%}")
    calibrated = {key: SkabScored(key, s.scores, online_thresholds(det, s.scores)) for key, s in shared.items()}
    results["anomaly_free_online"] = _evaluate(files, calibrated)
    progress(f"anomaly-free model, online calibration per file: F1 {results['anomaly_free_online']['f1']:.3f}, "
             f"FAR {results['anomaly_free_online']['far']:.1%}, MAR {results['anomaly_free_online']['mar']:.1%}")

    figures = []
    if figures_dir is not None:
        for key in FIGURE_FILES if not quick else tuple(files)[:1]:
            if key in files:
                figures.append(plot_file(files[key], per_file[key], figures_dir))
    return {
        "name": "skab", "files": len(files), "quick": quick,
        "train_rows": int(sum(TRAIN_ROWS for _ in files)),
        "test_rows": int(sum(len(f.values) - TRAIN_ROWS for f in files.values())),
        "anomaly_free_rows": int(len(free)),
        "config": describe_config(config), "config_anomaly_free": describe_config(free_config),
        "config_json": config.to_dict(), "results": results,
        "leaderboard_outlier": LEADERBOARD_OUTLIER, "leaderboard_cp": LEADERBOARD_CP,
        "fit_seconds_total": fit_seconds, "seconds": time.perf_counter() - started, "figures": figures,
    }


def plot_file(f: SkabFile, s: SkabScored, out_dir: Path) -> str:
    """Standardised channels with the labelled anomaly, and the score against the threshold; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = np.arange(len(f.values))
    train = f.values[:TRAIN_ROWS]
    z = (f.values - train.mean(axis=0)) / np.where(train.std(axis=0) > 0, train.std(axis=0), 1.0)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 4.6), sharex=True, height_ratios=(2, 1))
    for c, name in enumerate(CHANNELS):
        ax1.plot(rows, np.clip(z[:, c], -15, 15), lw=0.6, label=name)
    ax1.axvspan(0, TRAIN_ROWS - 1, color="#bbb", alpha=0.4, label="training rows")
    for a, b in _runs(f.anomaly):
        ax1.axvspan(a, b, color="#f4a261", alpha=0.3)
    ax1.legend(loc="upper left", fontsize=6, ncol=3)
    ax1.set_title(f"SKAB {f.key}: channels (standardised on the training rows), labelled anomaly shaded",
                  fontsize=9)
    score = np.nan_to_num(s.scores, nan=0.0)
    ax2.plot(rows, score, lw=0.6, color="#1d3557", label="window score (causal)")
    ax2.axhline(s.threshold, color="#d62828", lw=0.8, ls="--", label=f"threshold {s.threshold:.2f} (training rows)")
    flagged = (score > s.threshold) & (rows >= TRAIN_ROWS)
    ax2.fill_between(rows, 0, score.max() * 1.05, where=flagged, color="#d62828", alpha=0.15, label="flagged")
    ax2.set_yscale("symlog")
    ax2.legend(loc="upper left", fontsize=7)
    ax2.set_xlabel("row (about 1 s)", fontsize=8)
    fig.tight_layout()
    name = "skab_" + f.key.replace("/", "_").replace(".csv", "") + ".png"
    fig.savefig(out_dir / name, dpi=90)
    plt.close(fig)
    return str(out_dir / name)


def _runs(flags):
    from accuracy_common import runs

    return runs(flags)
