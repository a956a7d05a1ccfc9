"""The protocol pieces of the accuracy benchmarks (``benchmarks/accuracy*.py``), without running them.

What is checked: each data set's train/test split keeps test rows out of training (and, for appliance power,
out of the threshold's calibration), the NAB files load with NAB's row counts, the score transform maps into
[0, 1] and is monotone, row scoring is causal, alerts merge as seqwatch's alert builder
merges windows, SKAB's changepoint scoring follows tsad's rules on hand-worked cases, and the BENCHMARKS.md
writer touches only its own section. Tests that need the shared data skip with the reason when
``../shared/data`` is absent.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
# benchmarks/ is not a package and its modules import each other by name: put it on the path only while they
# load (later imports inside them resolve from sys.modules), so no other test sees its names.
sys.path.insert(0, str(REPO / "benchmarks"))
try:
    import accuracy
    import accuracy_common as common
    import accuracy_ecg as ecg
    import accuracy_energy as energy
    import accuracy_nab as nab
    import accuracy_report as report
    import accuracy_skab as skab
finally:
    sys.path.remove(str(REPO / "benchmarks"))


def data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"shared data set {name!r} is not present at {path}")
    return path


# ------------------------------------------------------------------------------------------- score transform
def test_anomaly_score_is_in_unit_interval_and_monotone_in_tail_probability():
    p = np.r_[0.0, 1e-300, np.geomspace(1e-14, 1.0, 500), 1.0]
    s = common.anomaly_score_from_tail(p)
    assert np.all((s >= 0) & (s <= 1))
    assert np.all(np.diff(s) <= 0)  # p ascending -> score not increasing
    assert s[0] == 1.0 and s[-1] == 0.0
    assert common.anomaly_score_from_tail(np.array([1e-5]))[0] == pytest.approx(0.5)
    # undefined probabilities (no window yet) score 0, never NaN
    assert common.anomaly_score_from_tail(np.array([np.nan]))[0] == 0.0


def test_row_score_comes_from_the_window_that_ends_at_the_row(monkeypatch):
    class Stub:
        window_length = 4

    # the stub's window score is the window's last value: row t must get values[t]
    monkeypatch.setattr(common, "window_scores", lambda det, w: w[:, -1, 0])
    values = np.arange(10, dtype=float)[:, None] * 10
    scores = common.row_scores(Stub(), values)
    assert np.isnan(scores[:3]).all()
    np.testing.assert_array_equal(scores[3:], values[3:, 0])
    # rows before first_end are not scored
    assert np.isnan(common.row_scores(Stub(), values, first_end=6)[:6]).all()


def test_alert_starts_merge_rows_at_most_the_window_length_apart():
    flags = np.zeros(40, dtype=bool)
    flags[[5, 6, 7, 10, 30, 31]] = True
    starts = common.alert_starts(flags, merge_gap=4)
    assert np.flatnonzero(starts).tolist() == [5, 30]  # 10 - 7 <= 4: same alert; 30 - 10 > 4: new alert
    assert np.flatnonzero(common.alert_starts(flags, merge_gap=2)).tolist() == [5, 10, 30]
    assert common.runs(flags) == [(5, 7), (10, 10), (30, 31)]


def test_fit_parts_match_the_detector_split_arithmetic():
    from seqwatch.models.config import TrainingConfig

    parts = common.fit_parts(400, TrainingConfig(validation_fraction=0.15, calibration_fraction=0.15))
    assert (parts.train, parts.validation, parts.calibration) == ((0, 280), (280, 340), (340, 400))
    parts = common.fit_parts(168, TrainingConfig(validation_fraction=0.25, calibration_fraction=0.25))
    assert (parts.train, parts.validation, parts.calibration) == ((0, 84), (84, 126), (126, 168))


def test_row_frame_drops_rows_and_keeps_row_steps():
    values = np.arange(12, dtype=float).reshape(6, 2)
    keep = np.array([1, 1, 0, 1, 1, 1], dtype=bool)
    frame = common.row_frame(values, ("a", "b"), keep=keep)
    assert len(frame) == 10
    assert sorted(set(frame["timestamp"] // common.ROW_STEP_US)) == [0, 1, 3, 4, 5]
    with pytest.raises(ValueError, match=r"values must be \[n, 2\]"):
        common.row_frame(values[:, :1], ("a", "b"))


def test_benchmarks_use_the_detectors_one_sided_scores_and_threshold_rule():
    from seqwatch.models.config import ScoringConfig

    assert common.benchmark_scoring_config() == ScoringConfig(one_sided=True)
    assert common.calibration_threshold(np.full(50, 2.5)) == 2.5
    rng = np.random.default_rng(0)
    cal = rng.exponential(size=2000)
    assert common.calibration_threshold(cal) > np.quantile(cal, 0.99)


def test_nab_online_calibration_is_the_detectors_with_numentas_window_and_period():
    online = nab.online_calibration(np.arange(30.0))
    assert (online.history, online.refit_every) == (8640, 100)
    np.testing.assert_array_equal(online.scores, np.arange(30.0))


# ------------------------------------------------------------------------------------------------------- NAB
@pytest.fixture(scope="module")
def nab_corpus():
    return nab.load_corpus(data("nab"))


def test_nab_files_load_with_their_row_counts(nab_corpus):
    assert len(nab_corpus) == 58
    assert sum(len(f.values) for f in nab_corpus.values()) == 365_558
    rows = {k: len(f.values) for k, f in nab_corpus.items()}
    assert rows["realKnownCause/nyc_taxi.csv"] == 10_320
    assert rows["realTraffic/speed_7578.csv"] == 1_127
    assert rows["realKnownCause/machine_temperature_system_failure.csv"] == 22_695
    assert rows["artificialNoAnomaly/art_flatline.csv"] == 4_032
    assert sum(len(f.windows) for f in nab_corpus.values()) == 116
    assert all(len(f.timestamps) == len(f.values) for f in nab_corpus.values())


def test_nab_models_train_only_on_rows_nab_does_not_score(nab_corpus):
    from seqwatch.models.evaluation import nab_probationary_length

    for key, f in nab_corpus.items():
        n = len(f.values)
        frame = nab.training_frame(f)
        probation = nab_probationary_length(n)
        assert nab.training_rows(n) == probation <= 750
        rows = frame["timestamp"].to_numpy() // common.ROW_STEP_US
        assert rows.min() == 0 and rows.max() == probation - 1, key
        np.testing.assert_array_equal(frame["value"].to_numpy(), f.values[:probation])
        # no labelled window starts inside the training rows
        if f.windows:
            assert pd.Timestamp(f.timestamps[probation - 1]) < f.windows[0][0], key


def test_nab_shortest_file_fills_twenty_windows_in_each_part(nab_corpus):
    cfg = nab.nab_config()
    shortest = min(nab.training_rows(len(f.values)) for f in nab_corpus.values())
    parts = common.fit_parts(shortest, cfg.training)
    for lo, hi in (parts.train, parts.validation, parts.calibration):
        assert hi - lo - cfg.window.length + 1 >= 20


def test_nab_alert_start_detections_feed_the_nab_scorer():
    from seqwatch.models.evaluation import score_nab_corpus

    times = pd.date_range("2020-01-01", periods=100, freq="5min").to_numpy()
    corpus = {"f": nab.NabFile("f", times, np.zeros(100), [(pd.Timestamp(times[50]), pd.Timestamp(times[59]))])}
    anomaly = np.zeros(100)
    anomaly[52:58] = 0.9  # one alert inside the window
    anomaly[80] = 0.9  # one false alarm
    scored = {"f": nab.NabScored("f", 15, anomaly, anomaly, 0.0, 0)}
    binary = nab.alert_start_scores(scored, 0.5, merge_gap=4)["f"]
    assert np.flatnonzero(binary).tolist() == [52, 80]
    result = score_nab_corpus(nab._series(corpus, {"f": binary}), 0.5, "standard")
    assert result.files["f"].n_detected_windows == 1 and result.fp == 1


def test_nab_cooldown_folds_alternate_within_each_category():
    keys = ["b/x2.csv", "a/y.csv", "b/x1.csv", "b/x3.csv", "a/z.csv"]
    assert nab.cooldown_folds(keys) == {"a/y.csv": "A", "a/z.csv": "B", "b/x1.csv": "A", "b/x2.csv": "B",
                                        "b/x3.csv": "A"}
    assert [nab.merge_gap_rows(c, 16) for c in nab.COOLDOWN_CANDIDATES] == [16, 32, 64, 128, 256, 512]


def test_nab_cooldown_cross_validation_chooses_each_folds_cooldown_on_the_other_fold():
    """Fold A's files gain from a cooldown (a flapping false alarm), fold B's lose (a false alarm just before
    the window would swallow the detection in it): A gets B's choice (none), B gets A's (the shortest that
    merges the flapping)."""
    n, length = 400, 2  # merge gaps 2, 4, 8, 16, 32, 64 rows
    times = pd.date_range("2020-01-01", periods=n, freq="5min").to_numpy()
    window = [(pd.Timestamp(times[200]), pd.Timestamp(times[219]))]
    flapping, early = np.zeros(n), np.zeros(n)
    flapping[[205, 300, 304, 308, 312]] = 0.9  # a detection, then four false alarms 4 rows apart
    early[[195, 205]] = 0.9  # a false alarm 10 rows before the detection
    anomaly = {"c/f0": flapping, "c/f1": early, "c/f2": flapping, "c/f3": early}  # folds A, B, A, B
    corpus = {k: nab.NabFile(k, times, np.zeros(n), window) for k in anomaly}
    scored = {k: nab.NabScored(k, 60, a, a, 0.0, 0) for k, a in anomaly.items()}
    cv = nab.cross_validated_cooldowns(corpus, scored, length)
    assert cv["folds"] == {"c/f0": "A", "c/f1": "B", "c/f2": "A", "c/f3": "B"}
    for profile in nab.PROFILES:
        assert cv["chosen"][profile] == {"A": 0, "B": 1}  # A: none (chosen on B's files), B: 1 x L (on A's)
        assert cv["merge_gaps"][profile] == {"c/f0": 2, "c/f1": 4, "c/f2": 2, "c/f3": 4}
        # on A's files (the choice for B) every cooldown of 1 x L or more merges the flapping: the tie goes short
        on_a = cv["fold_scores"]["B"]
        assert on_a[0][profile] < on_a[1][profile] == on_a[31][profile]
        on_b = cv["fold_scores"]["A"]  # B's files: from 7 x L (16 rows) on the detection is swallowed
        assert on_b[0][profile] == on_b[3][profile] > on_b[7][profile]
    starts = nab.alert_start_scores(scored, 0.5, cv["merge_gaps"]["standard"])
    assert np.flatnonzero(starts["c/f0"]).tolist() == [205, 300, 304, 308, 312]
    assert np.flatnonzero(starts["c/f1"]).tolist() == [195, 205]


def test_nab_fine_tuning_points_and_left_out_rows_worked_by_hand():
    assert nab.training_rows(4032) == 604
    assert nab.fine_tuning_points(4032) == [1208, 1812, 2416, 3020, 3624]  # every P rows after the first P
    assert nab.fine_tuning_points(1100) == [330, 495, 660, 825, 990]  # P = 165; none at or after the last row
    anomaly = np.zeros(12)
    anomaly[5], anomaly[9], anomaly[11] = 0.3, 0.31, 0.29
    # windows of 3 rows ending at rows 5 and 9 reached the level: rows 3-5 and 7-9 are left out, not row 11's
    assert np.flatnonzero(nab.alerted_rows(anomaly, 0.3, 3)).tolist() == [3, 4, 5, 7, 8, 9]


@pytest.mark.slow
def test_nab_fine_tuning_is_causal_and_uses_the_detectors_fine_tune():
    """Changing rows from r on changes no anomaly score before r: a model fine-tuned at a point has seen only
    earlier rows, and which rows it leaves out depends only on earlier scores."""
    n = 1500
    times = pd.date_range("2020-01-01", periods=n, freq="5min").to_numpy()
    rng = np.random.default_rng(3)
    values = np.sin(np.arange(n) * 2 * np.pi / 48) + 0.1 * rng.standard_normal(n)
    changed = values.copy()
    r = 700
    changed[r:] += np.where(np.arange(n - r) % 97 < 10, 5.0, 0.0)  # bursts from row r on
    config = nab.nab_config(quick=True)
    out = []
    for v in (values, changed):
        f = nab.NabFile("f", times, v, [])
        first = nab.score_file(f, config)
        out.append((first, nab.score_file_fine_tuning(f, config, first)))
    (first_a, tuned_a), (first_b, tuned_b) = out
    points = nab.fine_tuning_points(n)
    assert points == [450, 675, 900, 1125, 1350] and tuned_a.fine_tunes == len(points) and tuned_a.skipped == 0
    np.testing.assert_array_equal(tuned_a.anomaly[:points[0]], first_a.anomaly[:points[0]])
    assert not np.array_equal(tuned_a.anomaly[points[0]:], first_a.anomaly[points[0]:])  # the models did change
    np.testing.assert_array_equal(tuned_a.anomaly[:r], tuned_b.anomaly[:r])
    assert not np.array_equal(tuned_a.anomaly[r:], tuned_b.anomaly[r:])


# ------------------------------------------------------------------------------------------------------ SKAB
def test_skab_split_keeps_test_rows_out_of_training():
    files = skab.load_files(data("skab"))
    assert len(files) == 34
    for key, f in files.items():
        train, test = skab.split_rows(len(f.values))
        assert train == range(0, 400) and test == range(400, len(f.values))
        frame = skab.training_frame(f)
        assert frame["timestamp"].max() // common.ROW_STEP_US == 399, key
        assert len(frame) == 400 * len(skab.CHANNELS)
        # the threshold's calibration windows lie inside the training rows
        assert common.fit_parts(400, skab.skab_config().training).calibration[1] == 400
    with pytest.raises(ValueError, match="more than 400 rows"):
        skab.split_rows(400)


def test_skab_changepoint_scoring_follows_tsad():
    assert skab._tsad_scale(0.0, 1.0, -0.11) == pytest.approx(1.0)
    assert skab._tsad_scale(0.9999, 1.0, -0.11) == pytest.approx(-0.11)
    assert skab._tsad_scale(0.5, 1.0, -0.11) == pytest.approx(0.445, abs=2e-3)
    np.testing.assert_array_equal(skab.predicted_changepoints(np.array([0, 1, 1, 0])), [0, 1, 0, 1])
    np.testing.assert_array_equal(skab.predicted_changepoints(np.array([1, 1, 0])), [1, 0, 1])

    times = pd.date_range("2020-01-01", periods=200, freq="1s")
    cp = np.zeros(200, dtype=bool)
    cp[[50, 150]] = True
    windows = skab.changepoint_windows(times, cp)
    assert windows == [[times[50], times[110]], [times[150], times[150] + pd.Timedelta(seconds=60)]]
    pred = np.zeros(200, dtype=bool)
    pred[[10, 50, 60]] = True  # one FP before, a hit at the window start, a second (ignored) hit
    out = skab.changepoint_file_score(times, pred, windows)
    assert (out["fp"], out["missed"], out["windows"]) == (1, 1, 2)
    score, null, perfect = out["standard"]
    assert score == pytest.approx(-0.11 + 1.0 - 1.0)
    assert (null, perfect) == (-2.0, 2.0)
    corpus = skab.changepoint_corpus_score([out])
    assert corpus["standard"] == pytest.approx(100 * (score + 2) / 4)


# ---------------------------------------------------------------------------------------------- appliances
def test_appliance_test_days_are_never_training_or_calibration_days():
    root = data("appliance_power")
    assert not set(energy.TRAIN_DAYS) & set(energy.TEST_DAYS)
    assert energy.CALIBRATION_DAY not in energy.TRAIN_DAYS + energy.TEST_DAYS
    for name in energy.APPLIANCES:
        train = energy.normal_days(root, name)
        assert sorted(train) == list(energy.TRAIN_DAYS)
        assert all(len(v) >= 1440 and np.isfinite(v).mean() > 0.99 for v in train.values())  # one NaN: a gap
        frame = energy.training_frame(train)
        assert sorted(frame["entity_id"].unique()) == [f"day{d:02d}" for d in energy.TRAIN_DAYS]
    files = energy.test_files(root, "Fridge")
    assert files and {f.day for f in files} == set(energy.TEST_DAYS)
    assert all(f.kind.lower().startswith("anomaly_") and f.label.any() for f in files)


def test_appliance_files_load_despite_their_format_quirks():
    root = data("appliance_power")
    power, label = energy.read_day(root / "Dryer/Dryer_1/Normal/dryer_1_day8.csv")  # two extra empty columns
    assert len(power) == 1440 and not label.any() and np.isfinite(power).all()
    fridge = sorted((root / "Fridge/Fridge_1/anomaly_Faulty_Compressor").glob("*.csv"))[0]  # leading index column
    power, label = energy.read_day(fridge)
    assert label.any() and np.isfinite(power).all()
    assert energy.day_of(Path("dishwasher_1_day10_ANOMALIES.csv")) == 10


# ------------------------------------------------------------------------------------------------------ ECG
def test_pvc_events_are_merged_windows_around_r_peaks():
    beats = pd.DataFrame({"sample": [1000, 1200, 5000, 9000], "is_pvc": [1, 1, 0, 1]})
    events = ecg.pvc_events(beats, 2000)
    # 360 Hz -> 45 Hz: [floor((R - 90) / 8), ceil((R + 162) / 8)]; the first two overlap and merge
    assert events == [(113, 171), (1113, 1146)]


def test_ecg_training_minutes_leave_out_pvc_rows_and_never_reach_the_test_part():
    start = ecg.train_rows()
    assert start == 300 * 45
    signal = np.sin(np.arange(start + 5000) / 7.0)
    events = [(100, 120), (start - 10, start + 20), (start + 100, start + 130)]
    train_events, test_events = ecg.split_events(events, start)
    assert train_events == [(100, 120), (start - 10, start + 20)]
    assert test_events == [(start + 100, start + 130)]
    frame, keep = ecg.training_data(signal, train_events)
    rows = frame["timestamp"].to_numpy() // common.ROW_STEP_US
    assert rows.max() < start
    assert not np.isin(np.arange(100, 121), rows).any() and not np.isin(np.arange(start - 10, start), rows).any()
    assert keep.sum() == len(rows)


def test_ecg_records_load_downsampled():
    rec = ecg.load_record(data("mitbih_ecg"), "100")
    assert len(rec.signal) == 650_000 // ecg.DOWNSAMPLE
    assert set(rec.beats.columns) >= {"sample", "is_pvc"}


# -------------------------------------------------------------------------------------------- report, CLI
def test_report_rewrites_only_its_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    report.write_section(path, "## Accuracy\n\nfirst", {"nab": {"note": "uses --only"}})
    text = path.read_text()
    assert text.startswith("# seqwatch benchmarks\n\n<!-- accuracy:start -->\n## Accuracy")
    assert report.stored_results(path) == {"nab": {"note": "uses --only"}}
    block = text[text.index(report.DATA_PREFIX) + len(report.DATA_PREFIX):text.index("\n-->\n" + report.END)]
    assert "--" not in block and block.count("\n") == 1  # one JSON line per data set
    path.write_text("# Benchmarks\n\n## Speed\n\nfast\n\n" + text[text.index(report.START):] + "\n## Later\n\nkept\n")
    report.write_section(path, "## Accuracy\n\nsecond", {"skab": {"f1": 0.5}})
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\n## Speed\n\nfast\n\n<!-- accuracy:start -->\n## Accuracy\n\nsecond")
    assert text.endswith(report.END + "\n\n## Later\n\nkept\n")
    assert "first" not in text and report.stored_results(path) == {"skab": {"f1": 0.5}}


def test_report_appends_a_section_to_a_file_without_markers(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Speed\n")
    report.write_section(path, "## Accuracy", {})
    assert path.read_text().startswith("# Benchmarks\n\n## Speed\n\n<!-- accuracy:start -->\n## Accuracy")


def test_cli_names_data_sets_and_keeps_quick_runs_out_of_benchmarks_md():
    args = accuracy.parse_args(["--only", "skab,nab", "--quick"])
    assert args.names == ["nab", "skab"] and args.output is None
    assert "out/quick" in str(args.figures)
    args = accuracy.parse_args([])
    assert args.names == ["nab", "skab", "energy", "ecg"] and args.output.name == "BENCHMARKS.md"
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--only", "yahoo"])


def test_published_references_are_the_scoreboard_values():
    published = json.loads((data("nab") / "results" / "final_results.json").read_text())
    assert round(published["numenta"]["standard"], 1) == 70.1
    assert round(published["knncad"]["standard"], 1) == 58.0
    assert round(published["earthgeckoSkyline"]["standard"], 1) == 58.2
    assert set(nab.SCOREBOARD_NAMES) <= set(published)
    assert ("LSTM-AE", 0.74, 29.96, 25.92) in skab.LEADERBOARD_OUTLIER
