"""MIT-BIH ECG (health): premature ventricular contractions (PVC) as anomalies in lead MLII.

Protocol (what the detector sees):
- One model per record (patient-specific, as ECG beat classifiers are commonly trained), on the first
  5 minutes of the record only. The detector assumes normal training data, so the PVC beats of those
  5 minutes (their event windows, below) are left out of training: they are gaps, and no training window spans
  one. This uses the labels of the training minutes only.
- Test: the rest of the record (minute 5 to 30:05).
- The 360 Hz signal is downsampled 8x to 45 Hz (mean of each block of 8 samples, a crude low-pass), so that
  a window of 32 rows spans 0.71 s, about one beat, and six models train in minutes on two cores.
- Each row gets the one-sided score of the window that ends at it (causal).
- Threshold: the detector's own rule (peaks over threshold, risk 1e-3) on the one-sided scores of the model's
  calibration windows (the last 15% of the training minutes). No test row and no test label sets it.
- Events: each PVC beat is the window [R - 0.25 s, R + 0.45 s] (the data README's suggestion); overlapping
  windows of consecutive PVCs (couplets) merge into one event. Predicted events are the runs of flagged rows;
  an event is detected when a predicted run overlaps it. PR AUC / ROC AUC are point-wise on rows labelled by
  the event windows, with each record's score divided by its threshold.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from accuracy_common import (Progress, benchmark_scoring_config, calibration_scores, describe_config,
                            fit_detector, calibration_threshold, row_frame, row_scores, runs)

RECORDS = ("100", "105", "106", "116", "119", "200")
QUICK_RECORDS = ("119",)
FS = 360
DOWNSAMPLE = 8
TRAIN_SECONDS = 300
EVENT_BEFORE_S = 0.25
EVENT_AFTER_S = 0.45
CHANNELS = ("ecg_mv",)
FIGURE_RECORD = "119"


def ecg_config(quick: bool = False):
    """Model settings, fixed before any scored run on these data (not tuned on them): window 32 rows at 45 Hz.
    Sized by training time on this machine (about 1 s per epoch per record), not by accuracy."""
    from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig

    return DetectorConfig(
        ArchitectureConfig(cell="gru", layers=1, units=16),
        WindowConfig(length=32, stride=1, max_gap=0),
        TrainingConfig(epochs=3 if quick else 20, batch_size=64, patience=4, validation_fraction=0.15,
                       calibration_fraction=0.15, training_stride=4, seed=7),
        benchmark_scoring_config(),
    )


@dataclass
class Record:
    name: str
    signal: np.ndarray  # downsampled, [n]
    beats: pd.DataFrame  # sample (360 Hz), is_pvc


def load_record(root: Path, name: str) -> Record:
    raw = pd.read_csv(root / "ecg" / f"{name}_ecg.csv")["ecg_mv"].to_numpy(np.float64)
    usable = len(raw) // DOWNSAMPLE * DOWNSAMPLE
    signal = raw[:usable].reshape(-1, DOWNSAMPLE).mean(axis=1)
    beats = pd.read_csv(root / "labels" / f"{name}_beats.csv")
    return Record(name, signal, beats)


def train_rows() -> int:
    """Downsampled rows in the training minutes."""
    return TRAIN_SECONDS * FS // DOWNSAMPLE


def pvc_events(beats: pd.DataFrame, n_rows: int) -> list[tuple[int, int]]:
    """Inclusive downsampled row ranges ``[R - 0.25 s, R + 0.45 s]`` of the PVC beats, overlaps merged."""
    r = beats.loc[beats["is_pvc"] == 1, "sample"].to_numpy(np.int64)
    lo = np.maximum(np.floor((r - EVENT_BEFORE_S * FS) / DOWNSAMPLE).astype(np.int64), 0)
    hi = np.minimum(np.ceil((r + EVENT_AFTER_S * FS) / DOWNSAMPLE).astype(np.int64), n_rows - 1)
    merged: list[list[int]] = []
    for a, b in sorted(zip(lo.tolist(), hi.tolist())):
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged if a <= b]


def event_mask(events: list[tuple[int, int]], n_rows: int) -> np.ndarray:
    mask = np.zeros(n_rows, dtype=bool)
    for a, b in events:
        mask[a:b + 1] = True
    return mask


def split_events(events, start: int) -> tuple[list, list]:
    """(events of the training minutes, events of the test part): an event belongs to the part where it
    starts; a test event is clipped to begin at the first test row."""
    train = [(a, b) for a, b in events if a < start]
    test = [(max(a, start), b) for a, b in events if b >= start and a >= start]
    return train, test


def training_data(signal: np.ndarray, train_events: list[tuple[int, int]]) -> tuple[pd.DataFrame, np.ndarray]:
    """``(frame, keep)``: the readings a record's model is fitted on, the training minutes without their PVC
    event rows, and the mask of kept training rows."""
    start = train_rows()
    keep = ~event_mask(train_events, start)
    return row_frame(signal[:start, None], CHANNELS, keep=keep), keep


def run(quick: bool = False, progress: Progress | None = None, figures_dir: Path | None = None,
        root: Path | None = None) -> dict:
    from seqwatch.models.evaluation import event_metrics, pr_auc, roc_auc

    from accuracy_common import data_root

    progress = progress or Progress("ecg")
    root = root or data_root() / "mitbih_ecg"
    started = time.perf_counter()
    config = ecg_config(quick)
    start = train_rows()
    per_record = {}
    true_all, pred_all, labels_all, ratios_all = [], [], [], []
    offset = 0
    figures = []
    for name in QUICK_RECORDS if quick else RECORDS:
        rec = load_record(root, name)
        n = len(rec.signal) if not quick else min(len(rec.signal), start + 120 * FS // DOWNSAMPLE)
        signal = rec.signal[:n]
        events = pvc_events(rec.beats, n)
        train_events, test_events = split_events(events, start)
        frame, keep = training_data(signal, train_events)
        t0 = time.perf_counter()
        det = fit_detector(config, frame, CHANNELS, f"ecg-{name}")
        fit_s = time.perf_counter() - t0
        threshold = calibration_threshold(calibration_scores(det, [(signal[:start, None], keep)]))
        score = np.nan_to_num(row_scores(det, signal[:, None], first_end=start), nan=0.0)[start:]
        flags = score > threshold
        local_true = [(a - start, b - start) for a, b in test_events]
        local_pred = runs(flags)
        ev = event_metrics(local_true, local_pred)
        labels = event_mask(local_true, len(score))
        per_record[name] = {"test_events": ev.n_true_events, "predicted_events": ev.n_predicted_events,
                            "detected": ev.detected_events, "precision": ev.precision, "recall": ev.recall,
                            "f1": ev.f1, "threshold": threshold, "training_pvc_events_left_out": len(train_events),
                            "pr_auc": pr_auc(labels, score) if labels.any() else None,
                            "fit_seconds": fit_s, "epochs": int(det.metrics.get("epochs_run", 0))}
        true_all += [(a + offset, b + offset) for a, b in local_true]
        pred_all += [(a + offset, b + offset) for a, b in local_pred]
        labels_all.append(labels)
        ratios_all.append(score / threshold)
        offset += len(score) + 1
        progress(f"record {name}: trained on the first {TRAIN_SECONDS // 60} min ({len(train_events)} PVC left out, "
                 f"{per_record[name]['epochs']} epochs, {fit_s:.1f}s); {ev.n_true_events} test PVC events, "
                 f"F1 {ev.f1:.3f}")
        if figures_dir is not None and (name == FIGURE_RECORD or quick):
            figures.append(plot_record(rec.name, signal, score, threshold, test_events, start, figures_dir))
    ev = event_metrics(true_all, pred_all)
    y, r = np.concatenate(labels_all), np.concatenate(ratios_all)
    overall = {"precision": ev.precision, "recall": ev.recall, "f1": ev.f1, "test_events": ev.n_true_events,
               "predicted_events": ev.n_predicted_events, "detected": ev.detected_events,
               "pr_auc": pr_auc(y, r) if y.any() else None, "roc_auc": roc_auc(y, r) if y.any() else None,
               "event_row_share": float(y.mean()),
               "rows": int(len(y))}
    return {"name": "ecg", "quick": quick, "records": per_record, "overall": overall,
            "train_seconds": TRAIN_SECONDS, "sampling_hz": FS / DOWNSAMPLE, "downsample": DOWNSAMPLE,
            "config": describe_config(config), "config_json": config.to_dict(),
            "seconds": time.perf_counter() - started, "figures": figures}


def plot_record(name, signal, score, threshold, test_events, start, out_dir: Path) -> str:
    """Ten seconds of a test stretch with PVC events, flagged rows and the score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    hz = FS / DOWNSAMPLE
    span = int(10 * hz)
    # A priori choice of stretch: the first 10 s of the test part that contain at least two PVC events.
    lo = start
    for a, _ in test_events:
        if sum(1 for x, _ in test_events if a <= x < a + span) >= 2:
            lo = max(start, a - int(1 * hz))
            break
    hi = min(lo + span, len(signal))
    t = np.arange(lo, hi) / hz
    s = score[lo - start:hi - start]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 4.2), sharex=True, height_ratios=(2, 1))
    ax1.plot(t, signal[lo:hi], lw=0.7, color="#333")
    first = True
    for a, b in test_events:
        if b >= lo and a < hi:
            ax1.axvspan(max(a, lo) / hz, min(b, hi - 1) / hz, color="#f4a261", alpha=0.4,
                        label="PVC event [R-0.25 s, R+0.45 s]" if first else None)
            first = False
    first = True
    for a, b in runs(s > threshold):
        ax1.axvspan(t[a], t[b], ymin=0.92, ymax=1.0, color="#d62828", alpha=0.8, label="flagged" if first else None)
        first = False
    ax1.set_ylabel(f"MLII (mV), {hz:.0f} Hz", fontsize=8)
    ax1.legend(loc="upper left", fontsize=7)
    ax1.set_title(f"MIT-BIH record {name}: 10 s of the test part", fontsize=9)
    ax2.plot(t, s, lw=0.7, color="#1d3557")
    ax2.axhline(threshold, color="#d62828", lw=0.8, ls="--", label=f"threshold {threshold:.2f} (first 5 min)")
    ax2.legend(loc="upper left", fontsize=7)
    ax2.set_xlabel("time in record (s)", fontsize=8)
    fig.tight_layout()
    path = out_dir / f"ecg_record{name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)
