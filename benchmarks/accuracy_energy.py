"""Appliance power (energy): household appliances at 1 minute, simulated malfunctions inserted into real days.

Protocol (what the detector sees):
- One model per appliance, trained on the ``Normal/`` days 1-4 only (each day one entity, every minute of them
  trains the network); ``Normal/`` day 5 is held out: ``fit(..., holdout=day 5)`` takes every window of it as
  the validation part (early stopping, the scorer, the error floor) and as the calibration part (tail and
  threshold).
- Test: the anomaly files of days 6-10 of every malfunction type. The anomaly files are the *same* days as the
  Normal files with segments inserted, so testing on days 1-5 would score the model on the normal minutes it
  was trained on; days 6-10 keep every test minute unseen. (The origin publishes no protocol.)
- Rows are minutes (the Normal files' clock is unreliable, e.g. ``dishwasher_1_day8`` ends before it
  starts); each row gets the one-sided score of the window that ends at it (causal).
- Threshold: the detector's own (peaks over threshold, risk 1e-3), fitted by ``fit`` on the one-sided scores
  of the calibration part, held-out Normal day 5. Not the last 15% of each training day:
  those minutes are mostly the appliance off, so they hold few or no appliance cycles and their tail is no
  guide to how cycles score. (That was the first design; a smoke run's plot showed the problem, and the
  held-out day replaced it before the first full run. No test score was compared.) No test row and no label
  sets the threshold.
- Error floor (``ScoringConfig.error_floor_quantile=0.25``): each window's error feature is ``log(rms + floor)``
  with the floor the 0.25 quantile of the validation windows' RMS where the power is not constant. Added after
  the first full run (event F1 0.02): on held-out normal day 5 every "on" minute scored 10^4-10^5 because the
  validation windows were mostly "off" (power exactly 0, error near 0). The rule was written down in
  ``benchmarks/README.md`` (suggested change 3) before it ran and ran once as designed; no test score chose it.
- Held-out validation part (suggested change 10 in ``benchmarks/README.md``, written before it ran): until
  2026-12-01 the scorer, error floor and early stopping used the last 15% of each training day and the
  threshold the benchmark's rule on all of day 5 (event F1 0.02, PR AUC 0.056 with the floor). The floor
  changed next to nothing because those validation minutes held almost no appliance cycle; the validation part
  now comes from held-out day 5 through ``fit``'s ``holdout``. Designed from that diagnosis (on day 5 and the
  training days, no test file) and reported as it came out. Its first version cut day 5 into a validation
  and a calibration half; that run stopped before any metric (Dishwasher's threshold was 0: on day 5 it runs
  only in the first half), and the holdout is now not split (``benchmarks/README.md``, change 10).
- Event-level precision / recall / F1: true events are the runs of ``label == 1``; predicted events are the
  runs of flagged rows; an event is detected when a predicted run overlaps it. PR AUC (average precision)
  and ROC AUC are point-wise on the per-minute labels, with the score divided by the appliance's threshold.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from accuracy_common import (Progress, benchmark_scoring_config, describe_config, fit_detector,
                            row_frame, row_scores, runs)

APPLIANCES = {"Dishwasher": "Dishwasher/Dishwasher_1", "Dryer": "Dryer/Dryer_1", "Fridge": "Fridge/Fridge_1",
              "Washing machine": "Washing_Machine/Washing_machine_1", "Water heater": "Water_Heater/Water_Heater_1"}
TRAIN_DAYS = (1, 2, 3, 4)
CALIBRATION_DAY = 5
TEST_DAYS = (6, 7, 8, 9, 10)
QUICK_APPLIANCES = ("Dishwasher",)
QUICK_TEST_DAYS = (6, 7)
FIGURE = ("Dryer", "anomaly_Major_35", 7)
CHANNELS = ("activePower",)
ERROR_FLOOR_QUANTILE = 0.25  # the rule of suggested change 3 in benchmarks/README.md, written before it ran


def energy_config(quick: bool = False):
    """Model settings, fixed before any run on these data (not tuned on them): window 32 minutes. The error floor
    (``error_floor_quantile=0.25``) was added after the first full run, see the module docstring."""
    import dataclasses

    from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig

    return DetectorConfig(
        ArchitectureConfig(cell="gru", layers=1, units=16),
        WindowConfig(length=32, stride=1, max_gap=0),
        TrainingConfig(epochs=4 if quick else 25, batch_size=64, patience=5, validation_fraction=0.15,
                       calibration_fraction=0.15, training_stride=2, seed=7),
        dataclasses.replace(benchmark_scoring_config(), error_floor_quantile=ERROR_FLOOR_QUANTILE),
    )


# ------------------------------------------------------------------------------------------------------ data
def day_of(path: Path) -> int:
    """The day number in ``<device>_day<N>[_ANOMALIES].csv``."""
    m = re.search(r"_day(\d+)(?:_ANOMALIES)?\.csv$", path.name)
    if not m:
        raise ValueError(f"not an appliance day file: {path.name}")
    return int(m.group(1))


def read_day(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(power [n], label [n] bool)`` of one file; rows in file order (one per minute), missing label = 0."""
    df = pd.read_csv(path, encoding="utf-8-sig")
    df = df.loc[:, ~df.columns.str.startswith("Unnamed")]
    power = df["activePower"].to_numpy(dtype=np.float64)
    label = df["label"].fillna(0).to_numpy() > 0 if "label" in df else np.zeros(len(df), dtype=bool)
    return power, label


@dataclass
class TestFile:
    appliance: str
    kind: str
    day: int
    path: Path
    power: np.ndarray
    label: np.ndarray


def normal_days(root: Path, appliance: str, days=TRAIN_DAYS) -> dict[int, np.ndarray]:
    folder = root / APPLIANCES[appliance] / "Normal"
    return {day_of(p): read_day(p)[0] for p in sorted(folder.glob("*.csv")) if day_of(p) in days}


def test_files(root: Path, appliance: str, days=TEST_DAYS) -> list[TestFile]:
    out = []
    for folder in sorted((root / APPLIANCES[appliance]).iterdir()):
        if not folder.is_dir() or not folder.name.lower().startswith("anomaly_"):
            continue
        for p in sorted(folder.glob("*.csv"), key=day_of):
            if day_of(p) in days:
                power, label = read_day(p)
                out.append(TestFile(appliance, folder.name, day_of(p), p, power, label))
    return out


def training_frame(days: dict[int, np.ndarray]) -> pd.DataFrame:
    """Each training day is its own entity (days overlap in wall-clock time and are not consecutive)."""
    return pd.concat([row_frame(v[:, None], CHANNELS, entity=f"day{d:02d}") for d, v in sorted(days.items())],
                     ignore_index=True)


# ------------------------------------------------------------------------------------------------------- run
def _metrics(labels, flags, ratios) -> dict:
    from seqwatch.models.evaluation import event_metrics, pr_auc, roc_auc

    true_events, pred_events = [], []
    offset = 0
    for y, f in zip(labels, flags):
        true_events += [(a + offset, b + offset) for a, b in runs(y)]
        pred_events += [(a + offset, b + offset) for a, b in runs(f)]
        offset += len(y) + 1  # a gap row keeps events of different files apart
    ev = event_metrics(true_events, pred_events)
    y, r = np.concatenate(labels), np.concatenate(ratios)
    return {"event_precision": ev.precision, "event_recall": ev.recall, "event_f1": ev.f1,
            "true_events": ev.n_true_events, "predicted_events": ev.n_predicted_events,
            "detected_events": ev.detected_events, "pr_auc": pr_auc(y, r), "roc_auc": roc_auc(y, r),
            "anomaly_share": float(y.mean()), "rows": int(len(y))}


def run(quick: bool = False, progress: Progress | None = None, figures_dir: Path | None = None,
        root: Path | None = None) -> dict:
    from accuracy_common import data_root

    progress = progress or Progress("energy")
    root = root or data_root() / "appliance_power"
    started = time.perf_counter()
    config = energy_config(quick)
    appliances = QUICK_APPLIANCES if quick else tuple(APPLIANCES)
    days = QUICK_TEST_DAYS if quick else TEST_DAYS
    per_appliance, all_labels, all_flags, all_ratios = {}, [], [], []
    by_kind = {}
    train_rows = test_rows = calibration_rows = 0
    figure_data = None
    for name in appliances:
        train = normal_days(root, name)
        held_out = normal_days(root, name, (CALIBRATION_DAY,))[CALIBRATION_DAY]
        t0 = time.perf_counter()
        det = fit_detector(config, training_frame(train), CHANNELS, f"energy-{name}",
                           holdout=training_frame({CALIBRATION_DAY: held_out}))
        fit_s = time.perf_counter() - t0
        threshold = float(det.threshold)
        files = test_files(root, name, days)
        labels, flags, ratios = [], [], []
        for tf in files:
            score = np.nan_to_num(row_scores(det, tf.power[:, None]), nan=0.0)
            labels.append(tf.label)
            flags.append(score > threshold)
            ratios.append(score / threshold)
            by_kind.setdefault(f"{name}: {tf.kind}", []).append((tf.label, score > threshold, score / threshold))
            if (name, tf.kind, tf.day) == FIGURE or (quick and figure_data is None):
                figure_data = (tf, score, threshold)
        train_rows += sum(len(v) for v in train.values())
        calibration_rows += len(held_out)
        test_rows += sum(len(y) for y in labels)
        per_appliance[name] = _metrics(labels, flags, ratios)
        per_appliance[name].update({"files": len(files), "threshold": threshold, "fit_seconds": fit_s,
                                    "epochs": int(det.metrics.get("epochs_run", 0))})
        all_labels += labels
        all_flags += flags
        all_ratios += ratios
        m = per_appliance[name]
        progress(f"{name}: trained on Normal days {min(train)}-{max(train)}, threshold from day {CALIBRATION_DAY} "
                 f"({m['epochs']} epochs, {fit_s:.1f}s), "
                 f"{len(files)} test files: event F1 {m['event_f1']:.3f}, PR AUC {m['pr_auc']:.3f}")
    kinds = {}
    for k, items in sorted(by_kind.items()):
        ys = [i[0] for i in items]
        if sum(y.sum() for y in ys) and sum((~y).sum() for y in ys):
            kinds[k] = _metrics(ys, [i[1] for i in items], [i[2] for i in items])
    figures = []
    if figures_dir is not None and figure_data is not None:
        figures.append(plot_file(*figure_data, figures_dir))
    return {"name": "energy", "quick": quick, "appliances": per_appliance, "kinds": kinds,
            "overall": _metrics(all_labels, all_flags, all_ratios), "train_rows": train_rows,
            "test_rows": test_rows, "train_days": list(TRAIN_DAYS), "test_days": list(days),
            "calibration_day": CALIBRATION_DAY, "calibration_rows": calibration_rows,
            "config": describe_config(config, threshold=(
                "peaks over threshold (risk 1e-3 above the 0.95 quantile) on the one-sided scores of held-out "
                f"Normal day {CALIBRATION_DAY}, which is also the validation part (early stopping, scorer, error "
                "floor)"), split=f"none (training days whole; day {CALIBRATION_DAY} held out)"),
            "holdout": True, "config_json": config.to_dict(),
            "seconds": time.perf_counter() - started, "figures": figures}


def plot_file(tf: TestFile, score: np.ndarray, threshold: float, out_dir: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = np.arange(len(tf.power))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 4.2), sharex=True, height_ratios=(2, 1))
    ax1.plot(rows, tf.power, lw=0.6, color="#333")
    for i, (a, b) in enumerate(runs(tf.label)):
        ax1.axvspan(a, b, color="#f4a261", alpha=0.4, label="labelled malfunction" if i == 0 else None)
    flagged = score > threshold
    for i, (a, b) in enumerate(runs(flagged)):
        ax1.axvspan(a, b, ymin=0.92, ymax=1.0, color="#d62828", alpha=0.8, label="flagged" if i == 0 else None)
    ax1.set_ylabel("active power (W)", fontsize=8)
    ax1.legend(loc="upper left", fontsize=7)
    ax1.set_title(f"Appliance power: {tf.appliance}, {tf.kind}, day {tf.day} (test day, unseen in training)",
                  fontsize=9)
    ax2.plot(rows, score, lw=0.6, color="#1d3557")
    ax2.axhline(threshold, color="#d62828", lw=0.8, ls="--",
                label=f"threshold {threshold:.2f} (held-out Normal day {CALIBRATION_DAY})")
    ax2.set_yscale("symlog")
    ax2.legend(loc="upper left", fontsize=7)
    ax2.set_xlabel("minute of the day file", fontsize=8)
    fig.tight_layout()
    name = f"energy_{tf.appliance.replace(' ', '_').lower()}_{tf.kind.lower()}_day{tf.day}.png"
    fig.savefig(out_dir / name, dpi=90)
    plt.close(fig)
    return str(out_dir / name)
