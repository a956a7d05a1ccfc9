"""Hand-worked checks of seqwatch.models.evaluation (NAB scoring, point/event metrics, ROC/PR AUC).

NAB numbers below use the scaled sigmoid sigma(x) = 2 / (1 + exp(5x)) - 1 = -tanh(2.5 x), so
sigma(-1) = tanh(2.5) = 0.98661429815143..., and the TP weight of a detection at relative position x in a
window is sigma(x) / sigma(-1).
"""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqwatch.models import evaluation as ev
from seqwatch.models.evaluation import (
    NAB_PROFILES,
    NabProfile,
    NabSeries,
    binary_to_intervals,
    event_metrics,
    event_metrics_from_labels,
    load_nab_profiles,
    load_nab_windows,
    nab_probationary_length,
    nab_scaled_sigmoid,
    nab_threshold_curve,
    nab_windows_from_labels,
    optimize_nab_threshold,
    point_metrics,
    pr_auc,
    roc_auc,
    score_nab_corpus,
    score_nab_file,
)

# 20 rows, 5 minutes apart: row i is at 2024-01-01 00:00 + 5 i minutes.
# Probationary period: floor(0.15 * 20) = 3 rows (rows 0..2 are not scored), so 17 rows are scored.
TS = pd.date_range("2024-01-01 00:00", periods=20, freq="5min")


def rows_window(first: int, last: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    return (TS[first], TS[last])


WINDOW = [rows_window(10, 14)]  # rows 10..14, width 5 -> ["2024-01-01 00:50", "2024-01-01 01:10"]


def scores_with(detections: dict[int, float], base: float = 0.1) -> np.ndarray:
    s = np.full(20, base)
    for row, value in detections.items():
        s[row] = value
    return s


# Hand-computed weights (standard profile).
W_ROW12 = 0.9174286804284078  # x = -(14-12+1)/5 = -0.6 -> tanh(1.5)/tanh(2.5)
W_ROW11 = 0.9771068409226047  # x = -(14-11+1)/5 = -0.8 -> tanh(2.0)/tanh(2.5)
FP_ROW17 = -0.10494497861979436  # x = (17-14)/(5-1) = 0.75 -> 0.11 * sigma(0.75) = -0.11 * tanh(1.875)
FP_ROW15 = -0.06100596945843205  # x = (15-14)/(5-1) = 0.25 -> -0.11 * tanh(0.625)


# ---------------------------------------------------------------------------------------------- NAB basics


def test_profiles_constants():
    assert NAB_PROFILES["standard"] == NabProfile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0)
    assert NAB_PROFILES["reward_low_FP_rate"].fp_weight == 0.22
    assert NAB_PROFILES["reward_low_FN_rate"].fn_weight == 2.0
    assert set(NAB_PROFILES) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}


def test_probationary_length():
    assert nab_probationary_length(20) == 3  # floor(3.0)
    assert nab_probationary_length(4032) == 604  # floor(604.8)
    assert nab_probationary_length(15833) == 750  # capped at 0.15 * 5000
    assert nab_probationary_length(0) == 0
    assert nab_probationary_length(100, 0.0) == 0


def test_scaled_sigmoid_values():
    assert nab_scaled_sigmoid(0.0) == 0.0
    assert nab_scaled_sigmoid(-1.0) == pytest.approx(0.9866142981514303, abs=1e-15)
    assert nab_scaled_sigmoid(3.0) == pytest.approx(-0.9999993881955461, abs=1e-15)  # -tanh(7.5)
    assert nab_scaled_sigmoid(3.01) == -1.0
    assert nab_scaled_sigmoid(math.inf) == -1.0
    np.testing.assert_allclose(nab_scaled_sigmoid(np.array([-0.6, 0.75])), [math.tanh(1.5), -math.tanh(1.875)])


# --------------------------------------------------------------------------------------- NAB file scoring


def test_detection_inside_window_gets_sigmoid_weight():
    r = score_nab_file(TS, scores_with({12: 0.9}), WINDOW, threshold=0.5, profile="standard")
    assert r.raw_score == pytest.approx(W_ROW12, rel=1e-12)
    assert (r.tp, r.tn, r.fp, r.fn) == (1, 12, 0, 4)
    assert (r.total_count, r.probationary_length) == (20, 3)
    assert (r.n_windows, r.n_scored_windows, r.n_detected_windows) == (1, 1, 1)


def test_detection_at_first_row_of_window_earns_tp_weight():
    r = score_nab_file(TS, scores_with({10: 0.9}), WINDOW, threshold=0.5)
    assert r.raw_score == pytest.approx(1.0, abs=1e-12)


def test_only_first_detection_in_window_counts_but_all_count_as_tp_rows():
    r = score_nab_file(TS, scores_with({11: 0.9, 13: 0.9, 14: 0.9}), WINDOW, threshold=0.5)
    assert r.raw_score == pytest.approx(W_ROW11, rel=1e-12)
    assert (r.tp, r.tn, r.fp, r.fn) == (3, 12, 0, 2)


def test_false_positive_after_window_and_missed_window():
    r = score_nab_file(TS, scores_with({17: 0.9}), WINDOW, threshold=0.5)
    # Missed window (-1.0) + FP 3 rows after a width-5 window.
    assert r.raw_score == pytest.approx(-1.0 + FP_ROW17, rel=1e-12)
    assert r.raw_score == pytest.approx(-1.1049449786197945, rel=1e-12)
    assert (r.tp, r.tn, r.fp, r.fn) == (0, 11, 1, 5)
    assert r.n_detected_windows == 0


def test_false_positive_right_after_window_is_cheap():
    r = score_nab_file(TS, scores_with({10: 0.9, 15: 0.9}), WINDOW, threshold=0.5)
    assert r.raw_score == pytest.approx(1.0 + FP_ROW15, rel=1e-12)


def test_false_positive_before_any_window_costs_full_fp_weight():
    r = score_nab_file(TS, scores_with({5: 0.9, 10: 0.9}), WINDOW, threshold=0.5)
    assert r.raw_score == pytest.approx(1.0 - 0.11, rel=1e-12)
    assert (r.tp, r.fp) == (1, 1)


def test_false_positive_far_after_window_costs_full_fp_weight():
    # Window rows 4..5 (width 2): row 19 is (19-5)/(2-1) = 14 > 3 widths away -> sigma = -1.
    r = score_nab_file(TS, scores_with({4: 0.9, 19: 0.9}), [rows_window(4, 5)], threshold=0.5)
    assert r.raw_score == pytest.approx(1.0 - 0.11, rel=1e-12)


def test_width_one_window_false_positive_after_it():
    # (i - r) / (w - 1) with w = 1 is +inf -> full -fpWeight.
    r = score_nab_file(TS, scores_with({8: 0.9, 9: 0.9}), [rows_window(8, 8)], threshold=0.5)
    assert r.raw_score == pytest.approx(1.0 - 0.11, rel=1e-12)


def test_profiles_change_weights():
    missed = score_nab_file(TS, scores_with({17: 0.9}), WINDOW, 0.5, "reward_low_FN_rate")
    assert missed.raw_score == pytest.approx(-2.0 + FP_ROW17, rel=1e-12)
    fp = score_nab_file(TS, scores_with({17: 0.9}), WINDOW, 0.5, "reward_low_FP_rate")
    assert fp.raw_score == pytest.approx(-1.0 - 0.20988995723958873, rel=1e-12)
    custom = NabProfile("custom", tp_weight=2.0, fp_weight=0.5, fn_weight=3.0)
    r = score_nab_file(TS, scores_with({12: 0.9, 5: 0.9}), WINDOW, 0.5, custom)
    assert r.raw_score == pytest.approx(2.0 * W_ROW12 - 0.5, rel=1e-12)
    assert r.profile == "custom"


def test_probationary_period_is_not_scored():
    r = score_nab_file(TS, scores_with({0: 0.9, 1: 0.9, 2: 0.9}), WINDOW, threshold=0.5)
    assert r.raw_score == -1.0  # only the missed window
    assert (r.tp, r.tn, r.fp, r.fn) == (0, 12, 0, 5)
    assert r.tp + r.tn + r.fp + r.fn == 17


def test_window_inside_probationary_period_is_ignored():
    r = score_nab_file(TS, scores_with({}), [rows_window(0, 2)], threshold=0.5)
    assert r.raw_score == 0.0
    assert (r.n_windows, r.n_scored_windows) == (1, 0)
    assert (r.tp, r.tn, r.fp, r.fn) == (0, 17, 0, 0)


def test_window_straddling_probationary_period_keeps_its_full_width():
    # Window rows 1..5 (width 5); row 3 is its first scored row, x = -(5-3+1)/5 = -0.6.
    r = score_nab_file(TS, scores_with({3: 0.9}), [rows_window(1, 5)], threshold=0.5)
    assert r.raw_score == pytest.approx(W_ROW12, rel=1e-12)
    assert (r.tp, r.fn) == (1, 2)


def test_score_equal_to_threshold_is_a_detection():
    r = score_nab_file(TS, scores_with({12: 0.5}), WINDOW, threshold=0.5)
    assert r.tp == 1 and r.raw_score == pytest.approx(W_ROW12, rel=1e-12)
    below = score_nab_file(TS, scores_with({12: 0.4999}), WINDOW, threshold=0.5)
    assert below.tp == 0 and below.raw_score == -1.0


def test_two_windows_and_fp_between_them():
    windows = [rows_window(5, 7), rows_window(14, 16)]
    # Row 9 is 2 rows after window 1 (width 3): x = 2 / 2 = 1 -> 0.11 * sigma(1) = -0.11 * tanh(2.5).
    r = score_nab_file(TS, scores_with({5: 0.9, 9: 0.9}), windows, threshold=0.5)
    assert r.raw_score == pytest.approx(1.0 - 0.11 * math.tanh(2.5) - 1.0, rel=1e-12)
    assert (r.n_scored_windows, r.n_detected_windows) == (2, 1)


def test_numeric_timestamps_and_window_located_by_time():
    # Rows 0..19 at times 0, 10, ..., 190; window [95, 140] covers rows 10..14.
    t = np.arange(20) * 10
    r = score_nab_file(t, scores_with({12: 0.9}), [(95, 140)], threshold=0.5)
    assert r.raw_score == pytest.approx(W_ROW12, rel=1e-12)
    assert (r.tp, r.fn) == (1, 4)


def test_string_timestamps_and_windows():
    ts = [str(t) for t in TS]
    r = score_nab_file(ts, scores_with({12: 0.9}), [("2024-01-01 00:50:00.000000", "2024-01-01 01:10:00")], 0.5)
    assert r.raw_score == pytest.approx(W_ROW12, rel=1e-12)


def test_non_monotonic_timestamps_window_is_contiguous_block():
    # Times jump back at row 5: rows 0..4 -> 0..4, rows 5..19 -> 3..17. Window [10, 12] starts at the first
    # row with time >= 10 (row 12) and ends before the next row with time > 12 (row 15): rows 12..14.
    t = np.r_[np.arange(5), np.arange(3, 18)]
    r = score_nab_file(t, scores_with({12: 0.9}), [(10, 12)], threshold=0.5)
    assert r.raw_score == pytest.approx(1.0, abs=1e-12)
    assert (r.tp, r.fn) == (1, 2)


def test_no_windows_and_all_zero_scores():
    r = score_nab_file(TS, np.zeros(20), [], threshold=0.5)
    assert r.raw_score == 0.0
    assert (r.tp, r.tn, r.fp, r.fn) == (0, 17, 0, 0)
    assert score_nab_file(TS, np.zeros(20), None, threshold=0.5).raw_score == 0.0
    # All-zero scores never reach a threshold > 0: every window is missed.
    assert score_nab_file(TS, np.zeros(20), WINDOW, threshold=0.5).raw_score == -1.0
    # Threshold 0 fires on every row: 17 FPs before any window, -0.11 each.
    r0 = score_nab_file(TS, np.zeros(20), [], threshold=0.0)
    assert r0.raw_score == pytest.approx(-1.87, rel=1e-12)
    assert r0.fp == 17


def test_window_without_rows_is_ignored():
    r = score_nab_file(TS, scores_with({}), [("2030-01-01", "2030-01-02")], threshold=0.5)
    assert r.raw_score == 0.0 and (r.n_windows, r.n_scored_windows) == (1, 0)


# -------------------------------------------------------------------------------------- NAB corpus scoring


def small_corpus() -> dict[str, NabSeries]:
    return {
        "a.csv": NabSeries(TS, scores_with({12: 0.9}), WINDOW),  # +0.91742868...
        "b.csv": NabSeries(TS, scores_with({17: 0.9}), WINDOW),  # -1.10494497...
        "c.csv": NabSeries(TS, scores_with({}), []),  # 0
    }


def test_score_nab_corpus_normalisation():
    res = score_nab_corpus(small_corpus(), threshold=0.5, profile="standard")
    assert res.raw_score == pytest.approx(-0.1875162981913866, rel=1e-12)
    assert res.null_score == -2.0  # two windows, never detected
    assert res.perfect_score == 2.0  # two windows detected at their first row
    # 100 * (raw - null) / (perfect - null) = 100 * (-0.18751... + 2) / 4
    assert res.normalized_score == pytest.approx(45.312092545215336, rel=1e-12)
    assert (res.tp, res.tn, res.fp, res.fn) == (1, 12 + 11 + 17, 1, 4 + 5)
    assert set(res.files) == {"a.csv", "b.csv", "c.csv"}
    assert res.files["a.csv"].raw_score == pytest.approx(W_ROW12, rel=1e-12)


def test_score_nab_corpus_accepts_sequence_and_tuples():
    files = [(TS, scores_with({12: 0.9}), WINDOW), (TS, scores_with({17: 0.9}), WINDOW)]
    res = score_nab_corpus(files, 0.5, "reward_low_FN_rate")
    assert set(res.files) == {"0", "1"}
    assert res.null_score == -4.0 and res.perfect_score == 2.0
    assert res.raw_score == pytest.approx(W_ROW12 - 2.0 + FP_ROW17, rel=1e-12)


def test_corpus_without_windows_has_nan_normalised_score():
    res = score_nab_corpus({"x": NabSeries(TS, np.zeros(20), [])}, 0.5)
    assert res.raw_score == 0.0 and res.null_score == 0.0 and res.perfect_score == 0.0
    assert math.isnan(res.normalized_score)


def test_optimize_threshold_small_corpus():
    # Scores: row 5 = 0.3 (FP before the window, -0.11), row 12 = 0.8 (TP, +0.91743), row 17 = 0.9 (FP, -0.10494).
    # threshold in (0.8, 0.9]: -1 - 0.10494 ; (0.3, 0.8]: 0.91743 - 0.10494 = 0.81248 (best) ;
    # (0.1, 0.3]: 0.70248 ; <= 0.1: every row fires: window detected at its first row (+1), 7 FPs before it
    # (-0.77) and FPs at rows 15..19, x = 0.25 .. 1.25:
    # -0.11 * (tanh(0.625) + tanh(1.25) + tanh(1.875) + tanh(2.5) + tanh(3.125)) -> total -0.24736583964...
    files = {"f": NabSeries(TS, scores_with({5: 0.3, 12: 0.8, 17: 0.9}), WINDOW)}
    best = optimize_nab_threshold(files, "standard")
    assert best.threshold == 0.8  # the highest threshold reaching the best score
    assert best.raw_score == pytest.approx(0.8124837018086134, rel=1e-12)
    assert best.normalized_score == pytest.approx(100 * (0.8124837018086134 + 1) / 2, rel=1e-12)
    curve = nab_threshold_curve(files, "standard")
    assert curve["threshold"].tolist() == [0.9, 0.8, 0.3, 0.1]
    np.testing.assert_allclose(
        curve["raw_score"], [-1.1049449786197945, 0.8124837018086134, 0.7024837018086134, -0.24736583964427816], rtol=1e-12
    )
    assert curve[["tp", "fp", "fn", "tn"]].iloc[1].tolist() == [1, 1, 4, 11]
    # Without windows every detection is a FP, so firing nothing (threshold 1.0, raw 0) is best.
    only_fp = {"f": NabSeries(TS, scores_with({17: 0.9}, base=0.0), [])}
    never = optimize_nab_threshold(only_fp)
    assert (never.threshold, never.raw_score, never.fp) == (1.0, 0.0, 0)
    # When some score is exactly 1.0, "never fire" is not a threshold in [0, 1]: the best one left is taken.
    at_one = {"f": NabSeries(TS, scores_with({17: 1.0}, base=0.0), [])}
    assert optimize_nab_threshold(at_one).threshold == 1.0
    assert optimize_nab_threshold(at_one).raw_score == pytest.approx(-0.11)


def test_curve_matches_direct_scoring():
    rng = np.random.default_rng(0)
    files = {
        f"f{i}": NabSeries(TS, np.round(rng.random(20), 2), [rows_window(6, 9), rows_window(13, 16)])
        for i in range(5)
    }
    for profile in NAB_PROFILES:
        curve = nab_threshold_curve(files, profile)
        for _, row in curve.iterrows():
            direct = score_nab_corpus(files, float(row["threshold"]), profile)
            assert direct.raw_score == pytest.approx(row["raw_score"], abs=1e-12)
            assert (direct.tp, direct.tn, direct.fp, direct.fn) == tuple(int(row[c]) for c in ("tp", "tn", "fp", "fn"))
        best = optimize_nab_threshold(files, profile)
        assert best.raw_score == pytest.approx(max(curve["raw_score"].max(), best.null_score), abs=1e-12)


# ----------------------------------------------------------------------------------- windows from labels


def test_windows_from_labels():
    t = pd.date_range("2024-01-01", periods=100, freq="h")
    # One label: L = int(0.1 * 100 / 1) = 10 rows, half = 5 -> rows 45..55.
    assert nab_windows_from_labels(t, [t[50]]) == [(t[45], t[55])]
    # Two labels: L = 5, half = 2 -> rows 18..22 and 23..27 (disjoint, kept apart).
    assert nab_windows_from_labels(t, [str(t[25]), str(t[20])]) == [(t[18], t[22]), (t[23], t[27])]
    # Overlapping windows 18..22 and 20..24 are merged.
    assert nab_windows_from_labels(t, [t[20], t[22]]) == [(t[18], t[24])]
    # Clipped at the file's end.
    assert nab_windows_from_labels(t, [t[99]]) == [(t[94], t[99])]
    # As NAB's labeler: the first window is deleted when it starts inside the probationary period (15 rows
    # here), before windows are merged: a label at row 10 gives rows 5..15, deleted; labels at 15 and 17 give rows
    # 13..17, deleted, and 15..19, kept although they overlapped (found by the bug hunt of the metrics: the window
    # 5..15 had been kept, and a detection at row 15 scored 61.3 for a file NAB scores as one false positive).
    assert nab_windows_from_labels(t, [t[10]]) == []
    assert nab_windows_from_labels(t, [t[20]]) == [(t[15], t[25])]
    assert nab_windows_from_labels(t, [t[15], t[17]]) == [(t[15], t[19])]
    assert nab_windows_from_labels(t, [t[1]], probationary_fraction=0.0) == [(t[0], t[6])]
    assert nab_windows_from_labels(t, []) == []
    assert nab_windows_from_labels(np.arange(100.0), [50.0]) == [(45.0, 55.0)]


def test_windows_from_labels_rejects_unknown_label():
    t = pd.date_range("2024-01-01", periods=10, freq="h")
    with pytest.raises(ValueError, match=r"label_timestamps\[0\].*not one of the timestamps"):
        nab_windows_from_labels(t, ["2030-01-01"])


# ------------------------------------------------------------------------------------------------- loading


def test_load_profiles_and_windows(tmp_path: Path):
    profiles = {"strict": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.5, "fpWeight": 0.3, "tnWeight": 1.0}}}
    (tmp_path / "profiles.json").write_text(json.dumps(profiles))
    loaded = load_nab_profiles(tmp_path / "profiles.json")
    assert loaded == {"strict": NabProfile("strict", tp_weight=1.0, fp_weight=0.3, fn_weight=1.5, tn_weight=1.0)}
    windows = {"a/b.csv": [["2024-01-01 00:50:00.000000", "2024-01-01 01:10:00.000000"]], "a/c.csv": []}
    (tmp_path / "windows.json").write_text(json.dumps(windows))
    w = load_nab_windows(tmp_path / "windows.json")
    assert w == {"a/b.csv": [(TS[10], TS[14])], "a/c.csv": []}
    assert score_nab_file(TS, scores_with({12: 0.9}), w["a/b.csv"], 0.5).raw_score == pytest.approx(W_ROW12)

    (tmp_path / "bad.json").write_text(json.dumps({"x": {"CostMatrix": {"tpWeight": 1.0}}}))
    with pytest.raises(ValueError, match="lacks fpWeight, fnWeight"):
        load_nab_profiles(tmp_path / "bad.json")
    (tmp_path / "badw.json").write_text(json.dumps({"x": [["2024-01-01"]]}))
    with pytest.raises(ValueError, match=r"must be \[start, end\]"):
        load_nab_windows(tmp_path / "badw.json")


# ------------------------------------------------------------------------------------- NAB invalid input


@pytest.mark.filterwarnings("ignore:Could not infer format")
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 1.5}, r"threshold must be in \[0, 1\], got 1.5"),
        ({"threshold": -0.1}, r"threshold must be in \[0, 1\], got -0.1"),
        ({"threshold": float("nan")}, r"threshold must be in \[0, 1\], got nan"),
        ({"threshold": "0.5"}, r"threshold must be a number in \[0, 1\], got '0.5'"),
        ({"profile": "nope"}, r"profile must be a NabProfile or one of .*got 'nope'"),
        ({"anomaly_scores": np.zeros(19)}, r"anomaly_scores has 19 values but timestamps has 20"),
        ({"anomaly_scores": np.r_[np.zeros(19), np.nan]}, r"anomaly_scores must not contain NaN"),
        ({"anomaly_scores": np.r_[np.zeros(19), 1.2]}, r"anomaly_scores must be in \[0, 1\]"),
        ({"windows": [rows_window(10, 14), rows_window(12, 16)]}, r"windows must be sorted by start and must not overlap"),
        ({"windows": [rows_window(14, 10)]}, r"windows\[0\] ends before it starts"),
        ({"windows": [(TS[10],)]}, r"windows\[0\] must be a \(start, end\) pair"),
        ({"windows": [(10, 14)]}, r"windows\[0\] start must be a timestamp because the timestamps are datetimes"),
        ({"windows": "2024-01-01"}, r"windows must be a sequence of \(start, end\) pairs"),
        ({"probationary_fraction": 1.0}, r"probationary_fraction must be in \[0, 1\), got 1.0"),
        ({"timestamps": ["not a date"] * 20}, r"timestamps must be timestamps or numbers"),
    ],
)
def test_score_nab_file_invalid_arguments(kwargs, message):
    args = {
        "timestamps": TS,
        "anomaly_scores": scores_with({12: 0.9}),
        "windows": WINDOW,
        "threshold": 0.5,
        "profile": "standard",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        score_nab_file(**args)


def test_nab_corpus_invalid_arguments():
    with pytest.raises(ValueError, match="files must hold at least one file"):
        score_nab_corpus({}, 0.5)
    with pytest.raises(ValueError, match=r"file 'bad.csv': anomaly_scores has 3 values but timestamps has 20"):
        score_nab_corpus({"ok.csv": NabSeries(TS, np.zeros(20), []), "bad.csv": NabSeries(TS, [0, 0, 0], [])}, 0.5)
    with pytest.raises(ValueError, match=r"files\['x'\] must be a NabSeries"):
        score_nab_corpus({"x": [1, 2]}, 0.5)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\], got 2"):
        score_nab_corpus(small_corpus(), 2)
    with pytest.raises(ValueError, match="profile must be"):
        optimize_nab_threshold(small_corpus(), "fast")
    with pytest.raises(ValueError, match=r"n_rows must be an integer >= 0, got -1"):
        nab_probationary_length(-1)
    with pytest.raises(ValueError, match=r"fp_weight must be a finite number >= 0, got -0.1"):
        NabProfile("x", tp_weight=1.0, fp_weight=-0.1, fn_weight=1.0)


# ------------------------------------------------------------------------------------------- point metrics

LABELS_10 = [0, 0, 1, 1, 1, 0, 0, 1, 0, 0]
PREDS_10 = [0, 1, 1, 1, 1, 0, 0, 0, 1, 0]
# TP: rows 2, 3, 4 -> 3 ; FP: rows 1, 8 -> 2 ; FN: row 7 -> 1 ; TN: rows 0, 5, 6, 9 -> 4


def test_point_metrics_hand_example():
    m = point_metrics(LABELS_10, PREDS_10)
    assert (m.tp, m.fp, m.tn, m.fn) == (3, 2, 4, 1)
    assert m.precision == pytest.approx(0.6)  # 3 / 5
    assert m.recall == pytest.approx(0.75)  # 3 / 4
    assert m.f1 == pytest.approx(2 / 3)  # 2 * 0.6 * 0.75 / 1.35
    assert m.far == pytest.approx(1 / 3)  # FP / (FP + TN) = 2 / 6
    assert m.mar == pytest.approx(0.25)  # FN / (FN + TP) = 1 / 4
    assert point_metrics(np.array(LABELS_10, bool), np.array(PREDS_10, bool)) == m


def test_point_metrics_zero_division():
    m = point_metrics([0, 0, 1], [0, 0, 0])
    assert (m.precision, m.recall, m.f1, m.far, m.mar) == (0.0, 0.0, 0.0, 0.0, 1.0)
    n = point_metrics([0, 0, 0], [0, 0, 0], zero_division=float("nan"))
    assert math.isnan(n.precision) and math.isnan(n.recall) and math.isnan(n.f1) and math.isnan(n.mar)
    assert n.far == 0.0
    perfect = point_metrics([0, 1, 1], [0, 1, 1])
    assert (perfect.precision, perfect.recall, perfect.f1, perfect.far, perfect.mar) == (1.0, 1.0, 1.0, 0.0, 0.0)


def test_point_metrics_invalid():
    with pytest.raises(ValueError, match="labels and predictions must have the same length, got 3 and 2"):
        point_metrics([0, 1, 0], [0, 1])
    with pytest.raises(ValueError, match=r"predictions must contain only 0/1 \(or booleans\), got e.g. \[2.0\]"):
        point_metrics([0, 1, 0], [0, 2, 0])
    with pytest.raises(ValueError, match="labels must not be empty"):
        point_metrics([], [])
    with pytest.raises(ValueError, match=r"labels must be 1-D, got shape \(2, 2\)"):
        point_metrics([[0, 1], [1, 0]], [[0, 1], [1, 0]])


# ------------------------------------------------------------------------------------------- event metrics


def test_binary_to_intervals():
    assert binary_to_intervals([0, 1, 1, 0, 1]) == [(1, 2), (4, 4)]
    assert binary_to_intervals([1, 1, 1]) == [(0, 2)]
    assert binary_to_intervals([0, 0]) == []
    assert binary_to_intervals([]) == []


def test_event_metrics_three_events():
    labels = np.zeros(20, int)
    labels[2:5] = 1  # event [2, 4]
    labels[8:10] = 1  # event [8, 9]
    labels[14:18] = 1  # event [14, 17]
    preds = np.zeros(20, int)
    preds[[0, 3, 5, 12, 13, 16, 17, 18]] = 1  # alerts [0,0] [3,3] [5,5] [12,13] [16,18]
    m = event_metrics_from_labels(labels, preds)
    # [3,3] hits event [2,4]; [16,18] hits event [14,17]; [5,5] and [12,13] only touch events' neighbours.
    assert (m.n_true_events, m.n_predicted_events) == (3, 5)
    assert (m.detected_events, m.true_positive_predictions) == (2, 2)
    assert m.precision == pytest.approx(0.4)
    assert m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(0.5)  # 2 * 0.4 * 2/3 / (0.4 + 2/3)
    same = event_metrics([(2, 4), (8, 9), (14, 17)], [(0, 0), (3, 3), (5, 5), (12, 13), (16, 18)])
    assert same == m


def test_event_metrics_one_alert_spanning_two_events():
    m = event_metrics([(0, 1), (3, 4), (9, 9)], [(1, 3)])
    assert (m.detected_events, m.true_positive_predictions) == (2, 1)
    assert (m.precision, m.recall) == (1.0, pytest.approx(2 / 3))


def test_event_metrics_with_timestamps_and_empty_sides():
    t = pd.date_range("2024-01-01", periods=10, freq="h")
    m = event_metrics([(t[1], t[2]), (t[6], t[7])], [(str(t[2]), str(t[3]))])
    assert (m.detected_events, m.true_positive_predictions, m.precision, m.recall) == (1, 1, 1.0, 0.5)
    none_pred = event_metrics([(1, 2)], [])
    assert (none_pred.precision, none_pred.recall, none_pred.f1) == (0.0, 0.0, 0.0)
    no_true = event_metrics([], [(1, 2)], zero_division=float("nan"))
    # an alert where nothing happened is a measured failure: F1 0, not undefined (2TP / (2TP + FP + FN) = 0)
    assert no_true.precision == 0.0 and math.isnan(no_true.recall) and no_true.f1 == 0.0
    neither = event_metrics([], [], zero_division=float("nan"))
    assert math.isnan(neither.precision) and math.isnan(neither.recall) and math.isnan(neither.f1)


def test_event_metrics_invalid():
    with pytest.raises(ValueError, match=r"predicted_events must be sorted by start and must not overlap"):
        event_metrics([(0, 1)], [(0, 3), (2, 4)])
    with pytest.raises(ValueError, match=r"true_events\[0\] ends before it starts"):
        event_metrics([(3, 1)], [])
    with pytest.raises(ValueError, match=r"true_events\[0\] must be a \(start, end\) pair"):
        event_metrics([(1, 2, 3)], [])
    with pytest.raises(ValueError, match="same kind of bounds"):
        event_metrics([(1, 2)], [("2024-01-01", "2024-01-02")])
    with pytest.raises(ValueError, match="labels and predictions must have the same length"):
        event_metrics_from_labels([0, 1], [0, 1, 0])


# ------------------------------------------------------------------------------------------ ROC / PR AUC


def test_roc_auc_with_ties():
    labels = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.4, 0.4, 0.8, 0.4, 0.9]
    # Positives 0.4, 0.8, 0.9 vs negatives 0.1, 0.4, 0.4: the positive 0.4 beats 0.1 and ties twice
    # (1 + 0.5 + 0.5); 0.8 and 0.9 beat all three -> (2 + 3 + 3) / 9.
    assert roc_auc(labels, scores) == pytest.approx(8 / 9)
    assert roc_auc([0, 1], [0.2, 0.9]) == 1.0
    assert roc_auc([1, 0], [0.2, 0.9]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_pr_auc_with_ties():
    labels = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.4, 0.4, 0.8, 0.4, 0.9]
    # Thresholds 0.9: P=1, R=1/3 ; 0.8: P=1, R=2/3 ; 0.4 (1 pos + 2 neg enter together): P=3/5, R=1 ;
    # 0.1: R unchanged. AP = 1/3 * 1 + 1/3 * 1 + 1/3 * 3/5 = 13/15.
    assert pr_auc(labels, scores) == pytest.approx(13 / 15)
    assert pr_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all tied: precision of the whole set
    assert pr_auc([1, 0, 0], [0.9, 0.1, 0.2]) == 1.0


def test_auc_invalid():
    with pytest.raises(ValueError, match="labels must contain both classes for ROC AUC, got 2 positives and 0 negatives"):
        roc_auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="labels must contain at least one positive for PR AUC"):
        pr_auc([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="scores must not contain NaN"):
        roc_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="labels and scores must have the same length, got 2 and 3"):
        pr_auc([0, 1], [0.1, 0.2, 0.3])


# ---------------------------------------------------------------------------------------------- packaging


def test_module_imports_neither_beam_nor_keras():
    tree = ast.parse(Path(ev.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"apache_beam", "keras", "tensorflow", "jax", "torch"}
    assert imported <= {"__future__", "json", "math", "dataclasses", "pathlib", "typing", "numpy", "pandas"}


# ------------------------------------------------------------------ found by a bug hunt of this module (2026-12-02)


def test_f1_is_zero_for_a_detector_that_gets_everything_wrong_whatever_zero_division_says():
    """F1 had been ``zero_division`` (1.0 when asked) when precision and recall were both measured zeros, and NaN
    whenever either was undefined, so a file where nothing was found dropped out of a nanmean."""
    assert point_metrics([1, 0], [0, 1], zero_division=1.0).f1 == 0.0  # TP 0, FP 1, FN 1: 0 / 2
    assert point_metrics([1, 1, 0], [0, 0, 0], zero_division=float("nan")).f1 == 0.0  # missed everything
    assert point_metrics([0, 0], [1, 1], zero_division=float("nan")).f1 == 0.0  # alarms where nothing was
    assert math.isnan(point_metrics([0, 0], [0, 0], zero_division=float("nan")).f1)  # 0 / 0
    assert event_metrics([(1, 2)], [(5, 6)], zero_division=1.0).f1 == 0.0
    assert event_metrics([(1, 2)], [], zero_division=float("nan")).f1 == 0.0
    both = [point_metrics([1, 1, 0, 0], [1, 1, 0, 0], zero_division=float("nan")).f1,
            point_metrics([1, 1, 0, 0], [0, 0, 0, 0], zero_division=float("nan")).f1]
    assert np.nanmean(both) == 0.5


def test_naive_and_aware_times_are_refused_together_not_read_as_utc():
    """Aware timestamps with naive windows had been compared as if naive meant UTC: a window moved by the zone's
    offset, off the data, and its true positive became a false positive."""
    scores = scores_with({12: 0.9})
    eastern = TS.tz_localize("US/Eastern")
    with pytest.raises(ValueError, match="the timestamps carry a timezone but windows"):
        score_nab_file(eastern, scores, WINDOW, 0.5)
    with pytest.raises(ValueError, match="carry a timezone but the timestamps do not"):
        score_nab_file(TS, scores, [(eastern[10], eastern[14])], 0.5)
    aware = score_nab_file(eastern, scores, [(eastern[10], eastern[14])], 0.5)
    assert aware.raw_score == pytest.approx(W_ROW12, rel=1e-12)
    windows = nab_windows_from_labels(eastern, [eastern[12]])
    assert windows[0][0].tzinfo is not None  # aware timestamps give aware windows, usable with them
    assert score_nab_file(eastern, scores, windows, 0.5).n_scored_windows == 1
    with pytest.raises(ValueError, match="label_timestamps"):
        nab_windows_from_labels(eastern, [TS[12]])
    with pytest.raises(ValueError, match="predicted_events carry a timezone but true_events do not"):
        event_metrics([(TS[1], TS[2])], [(eastern[1], eastern[2])])
    # texts with a zone's summer and winter offsets (an aware index written to CSV) are one aware axis
    texts = ["2024-03-31T00:30:00+01:00", "2024-03-31T03:30:00+02:00"]
    assert event_metrics([(texts[0], texts[1])], [(texts[1], texts[1])]).detected_events == 1


def test_integer_times_stay_exact():
    """Epoch nanoseconds had gone through float64 (exact to 256 ns at today's epoch)."""
    tn = np.arange(20, dtype=np.int64) + 1_700_000_000_000_000_000
    r = score_nab_file(tn, scores_with({12: 0.9}), [(int(tn[10]), int(tn[14]))], 0.5)
    assert (r.tp, r.fn) == (1, 4) and r.raw_score == pytest.approx(W_ROW12, rel=1e-12)
    t = pd.Timestamp("2024-01-01")
    apart = event_metrics([(t - pd.Timedelta("1s"), t)], [(t + pd.Timedelta("100ns"), t + pd.Timedelta("1s"))])
    assert apart.detected_events == 0
    assert nab_windows_from_labels(tn, [int(tn[12])]) == [(int(tn[11]), int(tn[13]))]


def test_labels_alone_twice_and_mixed_bounds():
    assert nab_windows_from_labels(TS, TS[12]) == nab_windows_from_labels(TS, [TS[12]])
    assert nab_windows_from_labels(TS, [TS[12], TS[12]]) == nab_windows_from_labels(TS, [TS[12]])
    with pytest.raises(ValueError, match=r"bounds must be all numbers or all timestamps; true_events\[0\]"):
        event_metrics([(TS[1], 5)], [(TS[1], TS[2])])
    series = NabSeries(TS, scores_with({12: 0.9}), WINDOW)
    with pytest.raises(ValueError, match="two files named '1'"):
        score_nab_corpus({1: series, "1": series}, 0.5)
