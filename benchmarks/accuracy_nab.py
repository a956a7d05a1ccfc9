"""NAB v1.1 (58 series) scored with NAB's own rules, one small seqwatch model per file.

Protocol (what the detector sees):
- Each file is a stream of rows. The model of a file is trained on its probationary period only: the first
  ``nab_probationary_length(n)`` rows (15%, at most 750), which NAB never scores. ``fit`` cuts that period
  50/25/25 into train/validation/calibration (its minimum of 20 windows per part must hold for the shortest
  file, 168 probationary rows).
- Each row gets the one-sided score (``ScoringConfig(one_sided=True)``) of the window that ends at it (causal).
- Anomaly score in [0, 1]: the tail probability ``p`` of the row's score under the detector's
  ``OnlineTailCalibration``: a ``TailCalibration`` (empirical body + generalised Pareto tail) fitted on the
  scores seen *before* the row: first the validation/calibration windows of the probationary period, then every
  earlier row (latest 8640, refitted every 100 rows; the history length and refit period are those of Numenta's
  anomaly likelihood). The score is ``min(1, -log10(p) / 10)``. This is online recalibration of the score
  without retraining the network.
- Detections: NAB counts a detection at every row whose anomaly score is >= the threshold. seqwatch emits
  alerts, merging anomalous windows that overlap or touch (rows at most L apart); the headline numbers count a
  detection at the first row of each alert ("alert starts"). The plain per-row rule is reported beside it.
- Threshold: one per profile for the whole corpus, chosen by NAB's threshold optimisation (maximise the
  corpus' raw score), which is NAB's published protocol for every detector on the scoreboard. It is the only
  setting that sees labels.

Online fine-tuning (``fine_tune=True``; the headline since 2026-11-30): seqwatch's
``Seq2SeqDetector.fine_tune`` keeps training the file's model on the rows seen so far, the "online retraining on
past data" that NAB's protocol allows. Designed after the fixed model's result (52.3 standard) and after a
from-scratch retraining preview (51.5) were known, and written down here and committed before its first run:
- when: every P rows after the first P (rows 2P, 3P, ...; P = the probationary length), i.e. whenever as many
  new rows have arrived as the model was first trained on;
- on what: the latest 8,640 rows before that point (Numenta's history length, as for the calibration), minus
  every row covered by a window whose anomaly score reached the detector's own alert risk (tail probability
  ``ScoringConfig.pot_risk`` = 1e-3), with a training stride that keeps about 1,000 training windows; split
  50/25/25 by ``fine_tune`` as by ``fit``; a fine-tuning that cannot fill 20 windows per part is skipped;
- how: from the current weights and optimizer state, learning rate reset to 0.002, the same epochs (<= 30) and
  early stopping (patience 5); the scaler is kept; scorer and tail refitted on the new validation/calibration
  parts;
- calibration across the switch: the online calibration restarts from the new model's scores of the rows of
  that range it was not trained on (validation and calibration parts), then goes on online as before;
- reported beside the fixed model; NAB's threshold optimisation per profile, alert starts as the headline rule.
The from-scratch preview it replaces refitted at 2, 4, 8, ... times P with no warm start (51.5 / 41.7 / 58.7);
it is no longer run.

Alert cooldown chosen by cross-validation (the headline since 2026-11-30, session 5). Written down here and
committed before its first evaluation, after the fine-tuning variant's result (58.6 standard) was known; the
detections (row anomaly scores) are those of the fine-tuning variant, unchanged:
- the rule: seqwatch's alerts have a cooldown (``--alert-cooldown``): an anomalous window that starts within
  the cooldown after the open incident's end continues that incident instead of opening a new alert. In rows,
  flagged rows ``t1 < t2`` belong to one alert when ``t2 - t1 <= L + c`` (``c``: the cooldown in rows); ``c = 0``
  is the plain rule above (windows that overlap or touch);
- candidates, fixed before any evaluation: ``c`` in {0, 1, 3, 7, 15, 31} x L, i.e. merge gaps of 16, 32, 64,
  128, 256 and 512 rows;
- folds: within each of the 7 categories, the files in name order alternate between fold A and fold B (the
  first to A);
- selection, per profile and per fold: the candidate with the highest normalised score on the *other* fold's
  files, each candidate with its threshold chosen on those files by NAB's threshold optimisation; a tie goes to
  the shorter cooldown. So a file's detections use a cooldown chosen without its labels;
- the reported score: NAB's corpus-wide threshold optimisation per profile over all 58 files, each with its
  fold's cooldown, as for every other variant. The variant without a cooldown, the chosen cooldowns and every
  candidate's score on each fold are reported beside it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from accuracy_common import (LOG_SCALE_DECADES, Progress, alert_starts, anomaly_score_from_tail, benchmark_scoring_config,
                            describe_config, fit_detector, fit_parts, row_frame, row_scores)

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
CATEGORIES = ("artificialNoAnomaly", "artificialWithAnomaly", "realAdExchange", "realAWSCloudwatch",
              "realKnownCause", "realTraffic", "realTweets")
QUICK_FILES = ("artificialWithAnomaly/art_daily_jumpsup.csv", "realAWSCloudwatch/ec2_cpu_utilization_fe7f93.csv",
               "realAdExchange/exchange-2_cpc_results.csv", "realKnownCause/nyc_taxi.csv",
               "realTraffic/speed_7578.csv", "artificialNoAnomaly/art_daily_small_noise.csv")
FIGURE_FILES = ("realKnownCause/machine_temperature_system_failure.csv", "realKnownCause/nyc_taxi.csv",
                "artificialWithAnomaly/art_daily_jumpsup.csv", "realAWSCloudwatch/ec2_cpu_utilization_fe7f93.csv")
# Published scoreboard rows shown beside seqwatch (results/final_results.json of NAB's snapshot).
SCOREBOARD_NAMES = {"ARTime": "ARTime", "contextOSE": "CAD OSE (contextOSE)", "numenta": "Numenta HTM",
                    "htmjava": "HTM Java", "numentaTM": "Numenta TM", "earthgeckoSkyline": "earthgecko Skyline",
                    "knncad": "KNN-CAD", "relativeEntropy": "Relative Entropy",
                    "randomCutForest": "Random Cut Forest", "twitterADVec": "Twitter ADVec",
                    "windowedGaussian": "Windowed Gaussian", "skyline": "Etsy Skyline", "random": "Random",
                    "expose": "EXPoSE", "null": "Null"}

REFIT_EVERY = 100
MAX_HISTORY = 8640
# Alert cooldowns tried by the cross-validation, in multiples of the window length (pre-registered, see above).
COOLDOWN_CANDIDATES = (0, 1, 3, 7, 15, 31)


def online_calibration(history: np.ndarray):
    """The detector's ``OnlineTailCalibration`` (latest ``MAX_HISTORY`` scores, refit every ``REFIT_EVERY`` rows),
    started on ``history``: the scores of windows the model was not trained on."""
    from seqwatch.models.thresholds import OnlineTailCalibration

    return OnlineTailCalibration(MAX_HISTORY, REFIT_EVERY).start(history)


def nab_config(quick: bool = False):
    """Model settings for NAB, fixed before any NAB run (not tuned on NAB): a small GRU autoencoder, window 16
    (the largest power of two whose 25% parts still fill 20 windows in the shortest probationary period)."""
    from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig

    return DetectorConfig(
        ArchitectureConfig(cell="gru", layers=1, units=16),
        WindowConfig(length=16, stride=1, max_gap=0),
        TrainingConfig(epochs=5 if quick else 30, batch_size=32, patience=5, validation_fraction=0.25,
                       calibration_fraction=0.25, training_stride=1, seed=7),
        benchmark_scoring_config(),  # NAB optimises its own threshold; the detector's is unused
    )


# ------------------------------------------------------------------------------------------------------ data
@dataclass
class NabFile:
    key: str
    timestamps: np.ndarray  # datetime64, one per row
    values: np.ndarray  # float, one per row
    windows: list


def load_corpus(root: Path, keys: tuple | None = None) -> dict[str, NabFile]:
    """The NAB files (all 58, or ``keys``) with their labelled windows from ``labels/combined_windows.json``."""
    from seqwatch.models.evaluation import load_nab_windows

    windows = load_nab_windows(root / "labels" / "combined_windows.json")
    out = {}
    for key in sorted(windows):
        if keys is not None and key not in keys:
            continue
        df = pd.read_csv(root / "data" / key)
        out[key] = NabFile(key, pd.to_datetime(df["timestamp"], format="%Y-%m-%d %H:%M:%S").to_numpy(),
                           df["value"].to_numpy(dtype=np.float64), windows[key])
    return out


def training_rows(n_rows: int) -> int:
    """Rows a NAB model may train on: the probationary period, which NAB does not score."""
    from seqwatch.models.evaluation import nab_probationary_length

    return nab_probationary_length(n_rows)


def training_frame(f: NabFile) -> pd.DataFrame:
    """The readings a file's model is fitted on: its probationary rows, nothing after them."""
    return row_frame(f.values[:training_rows(len(f.values)), None], ("value",))


# ------------------------------------------------------------------------------------------------ detection
@dataclass
class NabScored:
    key: str
    probation: int
    raw: np.ndarray  # one-sided window score per row
    anomaly: np.ndarray  # NAB anomaly score in [0, 1] per row
    fit_seconds: float
    epochs: int
    detector: object = None  # the fitted detector (in memory only), for online fine-tuning
    fine_tunes: int = 0  # fine-tunings done (``score_file_fine_tuning``)
    skipped: int = 0  # fine-tunings skipped: too few windows left after leaving alerted rows out


def initial_history(raw: np.ndarray, probation: int, config, length: int) -> np.ndarray:
    """The scores the online calibration starts from: windows inside the probationary period's validation and
    calibration parts (not trained on)."""
    first = fit_parts(probation, config.training).validation[0] + length - 1
    history = raw[first:probation]
    return history[np.isfinite(history)]


def score_file(f: NabFile, config) -> NabScored:
    """Train on the probationary rows of one file, then give every row an anomaly score in [0, 1]."""
    from seqwatch.models.thresholds import TailCalibration

    n = len(f.values)
    probation = training_rows(n)
    values = f.values[:, None]
    t0 = time.perf_counter()
    detector = fit_detector(config, training_frame(f), ("value",), f"nab-{f.key}")
    fit_seconds = time.perf_counter() - t0
    raw = row_scores(detector, values)
    history = initial_history(raw, probation, config, detector.window_length)
    p = np.ones(n)
    p[:probation] = TailCalibration.fit(history).tail_probability(np.nan_to_num(raw[:probation], nan=0.0))
    p[probation:] = online_calibration(history).process(raw[probation:])
    return NabScored(f.key, probation, raw, anomaly_score_from_tail(p), fit_seconds,
                     int(detector.metrics.get("epochs_run", 0)), detector)


def fine_tuning_points(n_rows: int) -> list[int]:
    """Rows at which the model is fine-tuned: every probationary length of new rows after the first one
    (2P, 3P, ...), i.e. whenever as many new rows have arrived as the model was first trained on."""
    probation = training_rows(n_rows)
    return list(range(2 * probation, n_rows, probation))


def retraining_config(config, n_train_rows: int):
    """The NAB config with a training stride that keeps a (re)training set near 1,000 training windows."""
    import dataclasses
    import math

    t = config.training
    train_part = n_train_rows * (1 - t.validation_fraction - t.calibration_fraction)
    stride = max(1, math.ceil(train_part / 1000))
    return dataclasses.replace(config, training=dataclasses.replace(t, training_stride=stride))


def alerted_rows(anomaly: np.ndarray, level: float, length: int) -> np.ndarray:
    """Rows covered by an alerted window: row ``j`` is covered when a row ``t`` in ``[j, j + length - 1]``
    has an anomaly score >= ``level`` (the window of ``length`` rows ending at ``t`` holds ``j``)."""
    flagged = (np.asarray(anomaly) >= level).astype(np.int64)
    # the number of flagged rows in [j, j + length - 1] is entry j + length - 1 of the full convolution
    return np.convolve(flagged, np.ones(length, dtype=np.int64))[length - 1:length - 1 + len(flagged)] > 0


def score_file_fine_tuning(f: NabFile, config, first: NabScored) -> NabScored:
    """Online fine-tuning with the detector's ``Seq2SeqDetector.fine_tune`` (pre-registered; see the module
    docstring). At each of ``fine_tuning_points`` the current model (``first.detector``, changed in place) is
    trained further on the latest ``MAX_HISTORY`` rows seen, minus the rows covered by windows whose anomaly
    score reached the detector's own risk level (``pot_risk``), with a stride keeping about 1,000 training
    windows. The online calibration then restarts from the new model's scores of the rows of that range it
    was not trained on (the validation and calibration parts), and the new model scores the rows up to the
    next fine-tuning. Rows before the first fine-tuning keep ``first``'s scores. Causal: a model trained on
    rows < r scores rows >= r only, and which rows are left out depends only on scores of earlier rows."""
    from seqwatch.models.detector import InsufficientDataError

    n = len(f.values)
    values = f.values[:, None]
    detector = first.detector
    length = detector.window_length
    level = -np.log10(config.scoring.pot_risk) / LOG_SCALE_DECADES  # the anomaly score at tail probability pot_risk
    anomaly, raw = first.anomaly.copy(), first.raw.copy()
    points = fine_tuning_points(n)
    if not points:
        return first
    # The initial model's calibration, carried to the first fine-tuning (same numbers as ``first``).
    calibration = online_calibration(initial_history(raw, first.probation, config, length))
    calibration.process(raw[first.probation:points[0]])
    fit_seconds, epochs, done, skipped = first.fit_seconds, first.epochs, 0, 0
    for k, lo in enumerate(points):
        hi = points[k + 1] if k + 1 < len(points) else n
        start = max(0, lo - MAX_HISTORY)
        keep = ~alerted_rows(anomaly[start:lo], level, length)
        cfg = retraining_config(config, lo - start)
        detector.config = cfg  # the training stride only; window and scoring settings are unchanged
        t0 = time.perf_counter()
        try:
            detector.fine_tune(row_frame(values[start:lo], ("value",), first_row=start, keep=keep), progress=False)
        except InsufficientDataError:
            skipped += 1  # the current model and its calibration carry on
        else:
            done += 1
            epochs += int(detector.metrics.get("epochs_run", 0))
            kept = np.flatnonzero(keep)
            first_val = start + int(kept[0]) + fit_parts(keep[kept[0]:kept[-1] + 1], cfg.training).validation[0]
            raw[first_val:] = row_scores(detector, values, first_end=first_val + length - 1)[first_val:]
            history = raw[first_val + length - 1:lo]
            calibration = online_calibration(history[np.isfinite(history)])
        fit_seconds += time.perf_counter() - t0
        anomaly[lo:hi] = anomaly_score_from_tail(calibration.process(raw[lo:hi]))
    detector.config = config
    return NabScored(f.key, first.probation, raw, anomaly, fit_seconds, epochs, detector, done, skipped)


def _series(corpus: dict[str, NabFile], scores: dict[str, np.ndarray]):
    from seqwatch.models.evaluation import NabSeries

    return {k: NabSeries(corpus[k].timestamps, scores[k], corpus[k].windows) for k in scores}


def alert_start_scores(scored: dict[str, NabScored], threshold: float, merge_gap) -> dict[str, np.ndarray]:
    """0/1 per row: 1 at the first row of each alert at ``threshold``. ``merge_gap``: rows, for every file or
    as ``{file: rows}``."""
    gaps = merge_gap if isinstance(merge_gap, dict) else dict.fromkeys(scored, merge_gap)
    return {k: alert_starts(s.anomaly >= threshold, gaps[k]).astype(np.float64) for k, s in scored.items()}


def optimise_alert_threshold(corpus, scored: dict[str, NabScored], merge_gap, progress=None) -> dict:
    """NAB's threshold optimisation for alert-start detections: the corpus raw score is evaluated with
    ``score_nab_corpus`` at candidate thresholds (quantiles of the scored rows' anomaly scores, then a finer
    grid around the best), one threshold per profile. ``merge_gap``: as for ``alert_start_scores``. Returns
    ``{profile: (threshold, NabCorpusResult)}``."""
    from seqwatch.models.evaluation import score_nab_corpus

    pooled = np.concatenate([s.anomaly[s.probation:] for s in scored.values()])
    tail = 1.0 - np.geomspace(1e-6, 0.5, 240)
    coarse = np.unique(np.quantile(pooled, tail))
    coarse = coarse[coarse > 0]
    best: dict[str, tuple] = {}

    def evaluate(candidates):
        for theta in candidates:
            series = _series(corpus, alert_start_scores(scored, float(theta), merge_gap))
            for profile in PROFILES:
                result = score_nab_corpus(series, 0.5, profile)
                if profile not in best or result.raw_score > best[profile][1].raw_score + 1e-12:
                    best[profile] = (float(theta), result)

    evaluate(coarse)
    fine = []
    for profile, (theta, _) in list(best.items()):
        i = int(np.searchsorted(coarse, theta))
        lo, hi = coarse[max(i - 1, 0)], coarse[min(i + 1, len(coarse) - 1)]
        inside = np.unique(pooled[(pooled > lo) & (pooled < hi)])
        if inside.size > 120:
            inside = inside[np.linspace(0, inside.size - 1, 120).round().astype(int)]
        fine.append(inside)
    evaluate(np.unique(np.concatenate(fine)) if fine else [])
    if progress:
        progress(f"alert threshold sweep: {len(coarse)} + {sum(len(f) for f in fine)} candidates")
    return best


def _category(key: str) -> str:
    return key.split("/")[0]


FOLDS = ("A", "B")


def cooldown_folds(keys) -> dict[str, str]:
    """The cross-validation folds: within each category, the files in name order alternate between A and B,
    the first to A."""
    folds: dict[str, str] = {}
    for cat in sorted({_category(k) for k in keys}):
        for i, key in enumerate(sorted(k for k in keys if _category(k) == cat)):
            folds[key] = FOLDS[i % 2]
    return folds


def merge_gap_rows(cooldown_windows: int, length: int) -> int:
    """Rows between two flagged rows that still belong to one alert, for a cooldown of ``cooldown_windows``
    window lengths: ``L + c`` (flagged rows end windows that overlap or touch up to L rows apart)."""
    return length + cooldown_windows * length


def cross_validated_cooldowns(corpus, scored: dict[str, NabScored], length: int, progress=None) -> dict:
    """The pre-registered 2-fold cross-validation of the alert cooldown (module docstring). For each fold and
    profile, the candidate of ``COOLDOWN_CANDIDATES`` with the best normalised score on the other fold (threshold
    optimised there), ties to the shorter. Returns ``{"folds": {file: "A"|"B"}, "fold_scores": {fold: {candidate:
    {profile: normalised score on the other fold}}}, "chosen": {profile: {fold: candidate}}, "merge_gaps":
    {profile: {file: rows}}}``; fold keys are the fold a choice is *for* (its scores come from the other one)."""
    folds = cooldown_folds(scored)
    fold_scores: dict[str, dict[int, dict[str, float]]] = {}
    chosen: dict[str, dict[str, int]] = {p: {} for p in PROFILES}
    for fold in FOLDS:
        seen = {k: s for k, s in scored.items() if folds[k] != fold}
        fold_scores[fold] = {}
        if not seen:  # a corpus too small for two folds (the quick smoke run): no cooldown, no scores
            fold_scores[fold] = {c: dict.fromkeys(PROFILES) for c in COOLDOWN_CANDIDATES}
            for p in PROFILES:
                chosen[p][fold] = 0
            continue
        for c in COOLDOWN_CANDIDATES:
            best = optimise_alert_threshold(corpus, seen, merge_gap_rows(c, length))
            fold_scores[fold][c] = {p: float(best[p][1].normalized_score) for p in PROFILES}
            if progress:
                other = next(f for f in FOLDS if f != fold)
                progress(f"cooldown CV, for fold {fold} (scored on {other}, {len(seen)} files): "
                         f"cooldown {c} x L: " + ", ".join(f"{p} {fold_scores[fold][c][p]:.2f}" for p in PROFILES))
        for p in PROFILES:
            top = max(fold_scores[fold][c][p] for c in COOLDOWN_CANDIDATES)
            chosen[p][fold] = min(c for c in COOLDOWN_CANDIDATES if fold_scores[fold][c][p] >= top - 1e-9)
    merge_gaps = {p: {k: merge_gap_rows(chosen[p][folds[k]], length) for k in scored} for p in PROFILES}
    return {"folds": folds, "fold_scores": fold_scores, "chosen": chosen, "merge_gaps": merge_gaps}


def per_category(result, profile_name: str) -> dict:
    """Normalised score per category from a NabCorpusResult's per-file results (raw, null, perfect summed over
    the category's files). Categories without windows report their raw score (FP cost) instead."""
    from seqwatch.models.evaluation import NAB_PROFILES

    prof = NAB_PROFILES[profile_name]
    out = {}
    for cat in CATEGORIES:
        files = [r for k, r in result.files.items() if _category(k) == cat]
        if not files:
            continue
        raw = sum(r.raw_score for r in files)
        null = -prof.fn_weight * sum(r.n_scored_windows for r in files)
        perfect = prof.tp_weight * sum(r.n_windows for r in files)
        detected = sum(r.n_detected_windows for r in files)
        windows = sum(r.n_scored_windows for r in files)
        out[cat] = {"normalized": 100 * (raw - null) / (perfect - null) if perfect != null else None,
                    "raw": raw, "files": len(files), "windows": windows, "detected": detected,
                    "fp_rows": sum(r.fp for r in files)}
    return out


def published_per_category(root: Path, detector: str, corpus_keys) -> dict:
    """Per-category normalised scores (standard profile) of a published detector's anomaly scores at its
    published threshold."""
    from seqwatch.models.evaluation import NabSeries, load_nab_windows, score_nab_corpus

    windows = load_nab_windows(root / "labels" / "combined_windows.json")
    thresholds = json.loads((root / "config" / "thresholds.json").read_text())
    files = {}
    for key in corpus_keys:
        folder, name = key.split("/")
        df = pd.read_csv(root / "results" / detector / folder / f"{detector}_{name}")
        files[key] = NabSeries(pd.to_datetime(df["timestamp"], format="%Y-%m-%d %H:%M:%S").to_numpy(),
                               df["anomaly_score"].to_numpy(dtype=float), windows[key])
    profile = "standard"
    result = score_nab_corpus(files, thresholds[detector][profile]["threshold"], profile)
    return {profile: {"normalized": result.normalized_score, "categories": per_category(result, profile)}}


# ------------------------------------------------------------------------------------------------------- run
def run(quick: bool = False, progress: Progress | None = None, figures_dir: Path | None = None,
        root: Path | None = None, fine_tune: bool = True) -> dict:
    """Run the NAB benchmark; returns a JSON-ready dict of results and settings. ``fine_tune`` adds the
    online fine-tuning variant (the headline) beside the model trained on the probationary period only."""
    from seqwatch.models.evaluation import optimize_nab_threshold

    from accuracy_common import data_root

    progress = progress or Progress("nab")
    root = root or data_root() / "nab"
    started = time.perf_counter()
    corpus = load_corpus(root, QUICK_FILES if quick else None)
    config = nab_config(quick)
    merge_gap = config.window.length
    scored: dict[str, NabScored] = {}
    tuned: dict[str, NabScored] = {}
    for i, (key, f) in enumerate(corpus.items(), 1):
        s = score_file(f, config)
        scored[key] = s
        line = (f"{i}/{len(corpus)} {key}: {len(f.values)} rows, trained on {s.probation} "
                f"({s.epochs} epochs, {s.fit_seconds:.1f}s)")
        if fine_tune:
            r = score_file_fine_tuning(f, config, s)
            tuned[key] = r
            line += (f"; fine-tuned {r.fine_tunes} times, {r.skipped} skipped, every {s.probation} rows "
                     f"({r.fit_seconds - s.fit_seconds:.1f}s)")
        s.detector = None  # free the model (the fine-tuned variant holds the same object)
        if fine_tune:
            r.detector = None
        progress(line)

    if not quick:
        save_row_scores(scored, tuned)

    def summarise(result) -> dict:
        return {"threshold": result.threshold, "normalized": result.normalized_score, "raw": result.raw_score,
                "detected_windows": sum(r.n_detected_windows for r in result.files.values()),
                "scored_windows": sum(r.n_scored_windows for r in result.files.values()),
                "fp_rows": result.fp}

    variants = {"alert_starts": scored, "per_row": scored}
    if fine_tune:
        variants.update({"fine_tuning_alert_starts": tuned, "fine_tuning_per_row": tuned})
    results = {name: {} for name in variants}
    best_alerts = {}
    for name, which in variants.items():
        if name.endswith("alert_starts"):
            best = optimise_alert_threshold(corpus, which, merge_gap, progress)
            best_alerts[name] = best
            chosen = {p: best[p][1] for p in PROFILES}
            thresholds = {p: best[p][0] for p in PROFILES}  # the result's own threshold is the 0/1 cut
        else:
            series = _series(corpus, {k: s.anomaly for k, s in which.items()})
            chosen = {p: optimize_nab_threshold(series, p) for p in PROFILES}
            thresholds = {p: chosen[p].threshold for p in PROFILES}
        for profile in PROFILES:
            results[name][profile] = summarise(chosen[profile])
            results[name][profile]["threshold"] = thresholds[profile]
            # Only what the report shows is kept (it is stored in BENCHMARKS.md): categories of the standard
            # profile, and per-file rows of the alert-start variants.
            if profile == "standard":
                results[name][profile]["categories"] = per_category(chosen[profile], profile)
            if profile == "standard" and name.endswith("alert_starts"):
                results[name][profile]["files"] = {
                    k: {"windows": r.n_scored_windows, "detected": r.n_detected_windows, "fp_rows": r.fp,
                        "raw": r.raw_score} for k, r in chosen[profile].files.items()}
        progress(f"{name}: " + ", ".join(f"{p} {results[name][p]['normalized']:.1f} "
                                          f"(threshold {results[name][p]['threshold']:.4f})" for p in PROFILES))

    cooldown = None
    if fine_tune:
        # The headline: the fine-tuning detections with the alert cooldown chosen by cross-validation.
        cv = cross_validated_cooldowns(corpus, tuned, merge_gap, progress)
        name, by_gaps = "fine_tuning_cooldown_cv", {}
        results[name] = {}
        best_alerts[name] = {}
        for profile in PROFILES:
            gaps = cv["merge_gaps"][profile]
            signature = tuple(sorted(gaps.items()))
            if signature not in by_gaps:  # profiles whose folds chose the same cooldowns share one optimisation
                by_gaps[signature] = optimise_alert_threshold(corpus, tuned, gaps, progress)
            theta, chosen = by_gaps[signature][profile]
            best_alerts[name][profile] = (theta, chosen)
            results[name][profile] = summarise(chosen)
            results[name][profile]["threshold"] = theta
            if profile == "standard":
                results[name][profile]["categories"] = per_category(chosen, profile)
                results[name][profile]["files"] = {
                    k: {"windows": r.n_scored_windows, "detected": r.n_detected_windows, "fp_rows": r.fp,
                        "raw": r.raw_score, "cooldown_rows": gaps[k] - merge_gap} for k, r in chosen.files.items()}
        progress(f"{name}: " + ", ".join(f"{p} {results[name][p]['normalized']:.1f} "
                                          f"(threshold {results[name][p]['threshold']:.4f})" for p in PROFILES))
        cooldown = {
            "candidates": list(COOLDOWN_CANDIDATES), "window_length": merge_gap,
            "fold_files": {f: sum(1 for v in cv["folds"].values() if v == f) for f in FOLDS},
            # fold X's row: each candidate's normalised score on the *other* fold, which chose X's cooldown
            # (candidates as strings, as they come back from the JSON stored in BENCHMARKS.md)
            "fold_scores": {f: {str(c): scores for c, scores in cv["fold_scores"][f].items()} for f in FOLDS},
            "chosen": cv["chosen"],
        }

    published = json.loads((root / "results" / "final_results.json").read_text())
    published_categories = {}
    if not quick:
        for det in ("numenta", "windowedGaussian"):
            published_categories[det] = published_per_category(root, det, corpus.keys())

    figures = []
    if figures_dir is not None:
        shown, variant = (tuned, "fine_tuning_cooldown_cv") if fine_tune else (scored, "alert_starts")
        std_theta = best_alerts[variant]["standard"][0]
        gaps = cv["merge_gaps"]["standard"] if fine_tune else dict.fromkeys(corpus, merge_gap)
        for key in FIGURE_FILES if not quick else tuple(corpus)[:2]:
            if key in corpus:
                figures.append(plot_file(corpus[key], shown[key], std_theta, gaps[key], figures_dir,
                                         fine_tuned=fine_tune,
                                         cooldown_rows=gaps[key] - merge_gap if fine_tune else None))

    return {
        "name": "nab",
        "files": len(corpus),
        "rows": int(sum(len(f.values) for f in corpus.values())),
        "training_rows": int(sum(s.probation for s in scored.values())),
        "windows": int(sum(len(f.windows) for f in corpus.values())),
        "config": describe_config(config, threshold="NAB's corpus-wide optimisation (below)"),
        "config_json": config.to_dict(),
        "results": results,
        "published": {k: published[k] for k in SCOREBOARD_NAMES if k in published},
        "published_categories": published_categories,
        "fit_seconds_total": float(sum(s.fit_seconds for s in scored.values())),
        "fine_tune_seconds_total": float(sum(r.fit_seconds - scored[k].fit_seconds for k, r in tuned.items())),
        "fine_tunes": int(sum(r.fine_tunes for r in tuned.values())),
        "fine_tunes_skipped": int(sum(r.skipped for r in tuned.values())),
        "cooldown_cv": cooldown,
        "seconds": time.perf_counter() - started,
        "figures": figures,
        "quick": quick,
    }


ROW_SCORES = Path(__file__).resolve().parent / "out" / "nab" / "row_scores.npz"


def save_row_scores(scored: dict[str, NabScored], tuned: dict[str, NabScored], path: Path = ROW_SCORES) -> Path:
    """Every row's anomaly score of both variants (and each file's probationary length) in one ``.npz``, so the
    alert rules applied after scoring can be studied without training the models again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for key, s in scored.items():
        arrays[f"probation/{key}"] = np.array(s.probation)
        arrays[f"fixed/{key}"] = s.anomaly
        if key in tuned:
            arrays[f"fine_tuning/{key}"] = tuned[key].anomaly
    np.savez_compressed(path, **arrays)
    return path


def plot_file(f: NabFile, s: NabScored, threshold: float, merge_gap: int, out_dir: Path,
              fine_tuned: bool = False, cooldown_rows: int | None = None) -> str:
    """Values with NAB windows and alert starts above, the anomaly score and threshold below; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    t = pd.to_datetime(f.timestamps)
    starts = alert_starts(s.anomaly >= threshold, merge_gap)
    starts[: s.probation] = False
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 4.6), sharex=True, height_ratios=(2, 1))
    ax1.plot(t, f.values, lw=0.6, color="#333")
    ax1.axvspan(t[0], t[s.probation - 1], color="#bbb", alpha=0.4, label="probation (training)")
    for i, (a, b) in enumerate(f.windows):
        ax1.axvspan(a, b, color="#f4a261", alpha=0.35, label="NAB window" if i == 0 else None)
    ax1.scatter(t[starts], f.values[starts], color="#d62828", zorder=3, s=22, label="alert start (detection)")
    ax1.legend(loc="upper left", fontsize=7)
    how = "with online fine-tuning" if fine_tuned else "trained on the probationary period only"
    if cooldown_rows is not None:
        how += f", alert cooldown {cooldown_rows} rows"
    ax1.set_title(f"NAB {f.key}: seqwatch ({how}), detections at the corpus-optimal standard-profile threshold",
                  fontsize=9)
    ax2.plot(t, s.anomaly, lw=0.6, color="#1d3557")
    ax2.axhline(threshold, color="#d62828", lw=0.8, ls="--", label=f"threshold {threshold:.3f}")
    ax2.set_ylabel("anomaly score", fontsize=8)
    ax2.set_ylim(0, 1.02)
    ax2.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    name = "nab_" + f.key.split("/")[1].replace(".csv", "") + ".png"
    fig.savefig(out_dir / name, dpi=90)
    plt.close(fig)
    return str((out_dir / name))
