"""Windowing maths on small inputs worked out by hand, with off-by-one checks at both ends."""
import numpy as np
import pytest

from seqwatch.models import windowing


def test_to_step_grid_averages_readings_in_a_step_and_marks_missing():
    # steps 10..13, 2 channels; step 11 channel 0 has two readings (1 and 3 -> mean 2); step 12 is empty.
    grid = windowing.to_step_grid(np.array([10, 11, 11, 13, 10]), np.array([0, 0, 0, 0, 1]),
                                  np.array([5.0, 1.0, 3.0, 7.0, 9.0]), n_channels=2, first_step=10, n_steps=4)
    expected = np.array([[5.0, 9.0], [2.0, np.nan], [np.nan, np.nan], [7.0, np.nan]])
    np.testing.assert_array_equal(grid, expected)


def test_to_step_grid_ignores_readings_outside_the_grid():
    grid = windowing.to_step_grid(np.array([9, 10, 12]), np.array([0, 0, 0]), np.array([1.0, 2.0, 3.0]), 1, 10, 2)
    np.testing.assert_array_equal(grid, [[2.0], [np.nan]])


def test_fill_short_gaps_interpolates_up_to_max_gap_only():
    series = np.array([[0.0], [np.nan], [np.nan], [6.0], [np.nan], [np.nan], [np.nan], [1.0]])
    filled, observed = windowing.fill_short_gaps(series, max_gap=2)
    np.testing.assert_allclose(filled[:4, 0], [0.0, 2.0, 4.0, 6.0])
    assert np.isnan(filled[4:7, 0]).all()  # a gap of 3 > max_gap stays open
    np.testing.assert_array_equal(observed[:, 0], [True, False, False, True, False, False, False, True])


def test_fill_short_gaps_leaves_edges_open():
    filled, _ = windowing.fill_short_gaps(np.array([[np.nan], [1.0], [np.nan]]), max_gap=5)
    assert np.isnan(filled[0, 0]) and np.isnan(filled[2, 0])


def test_stretches_finds_runs_at_both_ends():
    mask = np.array([True, True, False, True, False, False, True])
    np.testing.assert_array_equal(windowing.stretches(mask), [[0, 1], [3, 3], [6, 6]])
    assert windowing.stretches(np.array([], dtype=bool)).shape == (0, 2)


def test_window_end_steps_grid_head_and_tail():
    # Stretch [3, 20], L=4, stride=4: head ends at 6, grid ends (e % 4 == 3) at 7, 11, 15, 19, tail at 20.
    ends = windowing.window_end_steps(3, 20, length=4, stride=4)
    np.testing.assert_array_equal(ends, [6, 7, 11, 15, 19, 20])


def test_window_end_steps_exactly_one_window_and_too_short():
    np.testing.assert_array_equal(windowing.window_end_steps(0, 3, 4, 2), [3])  # 4 steps: one window
    assert windowing.window_end_steps(0, 2, 4, 2).size == 0  # 3 steps: none


def test_window_end_steps_restricted_to_own_range():
    ends = windowing.window_end_steps(0, 30, 4, 4, lo=8, hi=16)
    np.testing.assert_array_equal(ends, [11, 15])


def test_every_step_of_a_long_stretch_is_covered():
    rng = np.random.default_rng(0)
    for _ in range(200):
        length = int(rng.integers(2, 9))
        stride = int(rng.integers(1, length + 1))
        start = int(rng.integers(-20, 20))
        end = start + int(rng.integers(length - 1, 60))
        covered = np.zeros(end - start + 1, dtype=bool)
        for e in windowing.window_end_steps(start, end, length, stride):
            covered[e - length + 1 - start:e + 1 - start] = True
        assert covered.all(), (start, end, length, stride)


def test_covered_by_long_stretch():
    present = np.array([1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1], dtype=bool)
    np.testing.assert_array_equal(windowing.covered_by_long_stretch(present, 3),
                                  [1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1])


def test_cut_windows_first_and_last_positions():
    series = np.arange(10, dtype=float).reshape(5, 2)  # rows [0,1],[2,3],...,[8,9]
    windows = windowing.cut_windows(series, np.array([2, 4]), length=3)
    np.testing.assert_array_equal(windows[0], [[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(windows[1], [[4, 5], [6, 7], [8, 9]])
    with pytest.raises(ValueError, match="window end positions must lie in"):
        windowing.cut_windows(series, np.array([1]), length=3)
    with pytest.raises(ValueError):
        windowing.cut_windows(series, np.array([5]), length=3)


def test_sliding_windows_counts():
    series = np.arange(10, dtype=float)[:, None]
    assert windowing.sliding_windows(series, 4, 3).shape == (3, 4, 1)  # ends 3, 6, 9
    assert windowing.sliding_windows(series[:3], 4, 1).shape == (0, 4, 1)


def test_build_grid_marks_present_steps():
    grid = windowing.build_grid(np.array([0, 0, 1, 3, 3]), np.array([0, 1, 0, 0, 1]),
                                np.array([1.0, 2.0, 3.0, 4.0, 5.0]), n_channels=2, max_gap=1)
    # step 1 channel 1 is filled (gap of 1 between 2.0 and 5.0); step 2 is missing on channel 0 and 1 -> gap
    # of 1 on channel 0 (3.0 .. 4.0) filled, channel 1 gap of 2 (steps 1, 2) stays open.
    assert grid.first_step == 0 and len(grid) == 4
    np.testing.assert_array_equal(grid.present, [True, False, False, True])
    np.testing.assert_allclose(grid.values[2, 0], 3.5)


def test_chronological_cuts_count_present_steps_not_time():
    # No gap: the cuts are int(n * 0.7) and int(n * 0.85).
    assert windowing.chronological_cuts(np.ones(400, bool), 0.15, 0.15) == (280, 340)
    assert windowing.chronological_cuts(np.ones(168, bool), 0.25, 0.25) == (84, 126)
    # 10 present steps, a gap of 80, 10 more: 20 present steps, so 14 before the validation part and 17 before
    # the calibration part, i.e. the 5th and 8th steps after the gap (rows 94 and 97); by time the cuts (70, 85)
    # would both fall inside the gap and leave those parts empty.
    present = np.r_[np.ones(10, bool), np.zeros(80, bool), np.ones(10, bool)]
    assert windowing.chronological_cuts(present, 0.15, 0.15) == (94, 97)
    # Nothing present: every part is empty.
    assert windowing.chronological_cuts(np.zeros(5, bool), 0.15, 0.15) == (5, 5)


def test_median_interval_of_the_busiest_channel_and_whether_it_fits_the_model():
    # channel 0: 10 readings every 10 s, one repeated stamp and one 30 s gap: intervals 10 x 8, 30 (the repeat
    # adds none): median 10 s. Channel 1: 4 readings every 60 s, fewer: not the one measured.
    zero = np.array([0, 10, 20, 20, 30, 40, 50, 60, 70, 100]) * 1_000_000
    one = np.array([0, 60, 120, 180]) * 1_000_000
    stamps, channels = np.r_[zero, one], np.r_[np.zeros(10, int), np.ones(4, int)]
    order = np.random.default_rng(2).permutation(len(stamps))
    assert windowing.median_interval(stamps[order], channels[order]) == 10_000_000
    assert windowing.median_interval(zero[:8], np.zeros(8, int)) is None  # 6 distinct intervals say nothing
    assert windowing.median_interval(np.arange(9) * 60_000_000, np.full(9, 3)) == 60_000_000
    assert windowing.interval_fits(5e6, 10e6) and windowing.interval_fits(20e6, 10e6)
    assert not windowing.interval_fits(4.9e6, 10e6) and not windowing.interval_fits(21e6, 10e6)


def test_a_reading_belongs_to_the_nearest_step():
    s = 10_000_000  # 10 s
    stamps = np.array([0, 9_980_000, 10_020_000, 14_999_999, 15_000_000, -4_900_000, -5_000_000, -5_000_001])
    assert windowing.step_of(stamps, s).tolist() == [0, 1, 1, 1, 2, 0, 0, -1]


def test_sparse_channels_are_those_whose_median_spacing_leaves_more_missing_steps_than_max_gap():
    # max_gap 3 bridges 3 missing steps: readings 4 steps apart are fine, 6 apart are not.
    # 0: every step 0..29; 1: steps 0, 6, ..., 24 (spacing 6); 2: steps 0, 4, ..., 28 (spacing 4);
    # 3: every 2 steps with one 20-step outage (spacings 2 x 9, 20: median 2); 4: one reading (nothing to judge);
    # 5: readings 6 apart, each repeated in its step (distinct steps count, not readings).
    columns = [(0, np.arange(30)), (1, np.arange(0, 30, 6)), (2, np.arange(0, 30, 4)),
               (3, np.r_[np.arange(0, 20, 2), 40]), (4, np.array([7])), (5, np.repeat(np.arange(0, 30, 6), 2))]
    steps = np.concatenate([s for _, s in columns])
    channels = np.concatenate([np.full(len(s), c) for c, s in columns])
    order = np.random.default_rng(3).permutation(len(steps))
    assert windowing.sparse_channels(steps[order], channels[order], 6, max_gap=3) == {1: 6, 5: 6}
    assert windowing.sparse_channels(steps, channels, 6, max_gap=5) == {}
    assert windowing.sparse_channels(steps, channels, 6, max_gap=2) == {1: 6, 2: 4, 5: 6}
