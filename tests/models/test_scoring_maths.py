"""Scaling, reconstruction error, Mahalanobis score, thresholds, tail probabilities and conformal intervals,
checked against numbers worked out by hand."""
import math

import numpy as np
import pytest

from seqwatch.models.config import ArchitectureConfig, DetectorConfig, ScoringConfig, WindowConfig
from seqwatch.models.intervals import ConformalIntervals
from seqwatch.models.scaling import ChannelScaler
from seqwatch.models.scoring import (MahalanobisScorer, causal_point_scores, error_floor, reconstruction_errors,
                                     window_error_features)
from seqwatch.models.thresholds import (PeaksOverThreshold, gpd_isf, gpd_sf, QuantileThreshold, TailCalibration, fit_threshold,
                                        severity_of)


def test_scaler_round_trip_and_constant_channel():
    values = np.array([[1.0, 5.0], [3.0, 5.0]])
    scaler = ChannelScaler.fit(values)
    assert scaler.mean == (2.0, 5.0) and scaler.scale == (1.0, 1.0)  # std of [1, 3] is 1; constant -> 1
    np.testing.assert_allclose(scaler.transform(values), [[-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(values)), values)
    assert ChannelScaler.from_dict(scaler.to_dict()) == scaler


def test_scaler_refuses_a_channel_without_values():
    with pytest.raises(ValueError, match=r"channels \[1\] have no finite value"):
        ChannelScaler.fit(np.array([[1.0, np.nan], [2.0, np.nan]]))


def test_error_features_are_log_rms_per_channel():
    windows = np.zeros((1, 4, 2))
    recon = np.array([[[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 2.0]]])
    features = window_error_features(reconstruction_errors(windows, recon))
    # channel 0: rms of (1, -1, 1, -1) = 1; channel 1: rms of (0, 0, 0, 2) = sqrt(4/4) = 1
    np.testing.assert_allclose(features, [[math.log(1 + 1e-6), math.log(1 + 1e-6)]])


def test_mahalanobis_with_identity_covariance_is_euclidean_and_contributions_sum():
    scorer = MahalanobisScorer(mean=(0.0, 0.0), precision=(1.0, 0.0, 0.0, 1.0))
    scores, contributions = scorer.score(np.array([[3.0, 4.0]]))
    assert scores[0] == pytest.approx(5.0)
    np.testing.assert_allclose(contributions, [[9.0, 16.0]])


def test_mahalanobis_accounts_for_correlation():
    # Precision of cov [[1, .9], [.9, 1]]: 1/(1-.81) * [[1, -.9], [-.9, 1]].
    det = 1 - 0.81
    scorer = MahalanobisScorer((0.0, 0.0), (1 / det, -0.9 / det, -0.9 / det, 1 / det))
    together, _ = scorer.score(np.array([[1.0, 1.0]]))
    apart, _ = scorer.score(np.array([[1.0, -1.0]]))
    # d^2 = (1 + 1 - 2 * .9) / .19 = 0.2 / .19 ; apart: (1 + 1 + 1.8) / .19 = 3.8 / .19 = 20
    assert together[0] == pytest.approx(math.sqrt(0.2 / 0.19))
    assert apart[0] == pytest.approx(math.sqrt(20.0))


def test_one_sided_mahalanobis_counts_only_errors_above_the_normal_mean():
    # mean (1, 2), identity precision; features (0, 5): differences (-1, 3)
    two = MahalanobisScorer(mean=(1.0, 2.0), precision=(1.0, 0.0, 0.0, 1.0))
    one = MahalanobisScorer(mean=(1.0, 2.0), precision=(1.0, 0.0, 0.0, 1.0), one_sided=True)
    scores, contributions = two.score(np.array([[0.0, 5.0]]))
    assert scores[0] == pytest.approx(math.sqrt(10.0))  # 1 + 9
    np.testing.assert_allclose(contributions, [[1.0, 9.0]])
    scores, contributions = one.score(np.array([[0.0, 5.0], [0.0, 1.0], [1.0, 2.0]]))
    np.testing.assert_allclose(scores, [3.0, 0.0, 0.0])  # (0, 3); both below -> 0; at the mean -> 0
    np.testing.assert_allclose(contributions, [[0.0, 9.0], [0.0, 0.0], [0.0, 0.0]])


def test_one_sided_mahalanobis_with_correlated_channels():
    # Precision of cov [[1, .9], [.9, 1]] (see above). Features (1, -1): two-sided d^2 = 3.8 / .19 = 20; one-sided
    # the second difference becomes 0: d^2 = (1, 0) P (1, 0)^T = 1 / .19.
    det = 1 - 0.81
    precision = (1 / det, -0.9 / det, -0.9 / det, 1 / det)
    one = MahalanobisScorer((0.0, 0.0), precision, one_sided=True)
    scores, contributions = one.score(np.array([[1.0, -1.0]]))
    assert scores[0] == pytest.approx(math.sqrt(1 / 0.19))
    np.testing.assert_allclose(contributions, [[1 / 0.19, 0.0]])


def test_one_sided_is_stored_and_old_scorers_load_two_sided():
    features = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    one = MahalanobisScorer.fit(features, one_sided=True)
    two = MahalanobisScorer.fit(features)
    assert one.one_sided and not two.one_sided
    assert (one.mean, one.precision) == (two.mean, two.precision) == ((2.0, 4.0), one.precision)
    assert MahalanobisScorer.from_dict(one.to_dict()) == one
    saved_before_one_sided = {"mean": [2.0, 4.0], "precision": list(two.precision)}
    assert MahalanobisScorer.from_dict(saved_before_one_sided) == two


def test_mahalanobis_fit_recovers_mean_and_needs_two_rows():
    rng = np.random.default_rng(0)
    features = rng.normal([1.0, -2.0], [1.0, 3.0], size=(5000, 2))
    scorer = MahalanobisScorer.fit(features, shrinkage=0.0)
    np.testing.assert_allclose(scorer.mean, [1.0, -2.0], atol=0.1)
    np.testing.assert_allclose(np.asarray(scorer.precision).reshape(2, 2), [[1, 0], [0, 1 / 9]], atol=0.05)
    with pytest.raises(ValueError, match="features must be"):
        MahalanobisScorer.fit(np.zeros((1, 2)))


def test_causal_point_scores_use_only_windows_that_ended():
    # Windows of length 4 end at steps 3 and 7 with scores 1 and 2.
    points = causal_point_scores(np.arange(10), np.array([7, 3]), np.array([2.0, 1.0]), window_length=4)
    np.testing.assert_array_equal(points[:3], [np.nan] * 3)  # before the first window ended
    np.testing.assert_array_equal(points[3:7], [1.0] * 4)
    np.testing.assert_array_equal(points[7:10], [2.0] * 3)
    # a step more than L-1 after the last window end gets no score
    assert np.isnan(causal_point_scores(np.array([11]), np.array([7]), np.array([2.0]), 4)[0])


def test_quantile_threshold():
    assert QuantileThreshold(0.9).fit(np.arange(1, 11, dtype=float)) == 10.0  # method="higher"
    assert QuantileThreshold(0.5).fit(np.arange(1, 11, dtype=float)) == 6.0
    with pytest.raises(ValueError, match="quantile must be in"):
        QuantileThreshold(1.5)


def test_pot_threshold_on_exponential_scores_matches_the_exponential_quantile():
    rng = np.random.default_rng(1)
    scores = rng.exponential(1.0, 200_000)
    threshold = PeaksOverThreshold(initial_quantile=0.95, risk=1e-4).fit(scores)
    assert threshold == pytest.approx(-math.log(1e-4), rel=0.05)  # 9.21


def test_pot_threshold_when_every_calibration_score_is_equal():
    # a flat-lined signal or an appliance that stayed off: no tail to fit, the threshold is the largest score
    assert PeaksOverThreshold().fit(np.full(500, 2.5)) == 2.5


def test_fit_threshold_follows_the_scoring_config():
    scores = np.arange(1, 11, dtype=float)
    assert fit_threshold(scores, ScoringConfig(threshold_method="quantile", threshold_quantile=0.9)) == 10.0
    assert fit_threshold(scores, ScoringConfig(threshold_method="quantile", threshold_quantile=0.55)) == 6.0
    assert fit_threshold(np.full(500, 2.5), ScoringConfig()) == 2.5  # pot, no tail: the largest score
    rng = np.random.default_rng(1)
    exponential = rng.exponential(1.0, 200_000)
    assert fit_threshold(exponential, ScoringConfig(pot_risk=1e-4)) == pytest.approx(-math.log(1e-4), rel=0.05)


def test_generalised_pareto_closed_forms_by_hand_and_against_scipy():
    # by hand: exponential for shape 0; shape 0.5, scale 2 at x 4: (1 + 0.5 * 4 / 2) ** -2 = 0.25; shape -0.5,
    # scale 1: the support ends at x = 2, (1 - 0.5) ** 2 = 0.25 at x = 1
    assert gpd_sf([0.0, 1.0], 0.0, 1.0).tolist() == pytest.approx([1.0, math.exp(-1.0)])
    assert gpd_sf([-3.0, 4.0], 0.5, 2.0).tolist() == pytest.approx([1.0, 0.25])
    assert gpd_sf([1.0, 2.0, 5.0], -0.5, 1.0).tolist() == pytest.approx([0.25, 0.0, 0.0])
    assert gpd_isf(0.25, 0.5, 2.0) == pytest.approx(4.0) and gpd_isf(0.25, -0.5, 1.0) == pytest.approx(1.0)
    assert gpd_isf(math.exp(-3.0), 0.0, 2.0) == pytest.approx(6.0)
    from scipy import stats

    x = np.concatenate([np.linspace(-1, 50, 400), [1e-12, 1.999999, 2.0, 2.000001, 1e6]])
    for shape in (-0.5, -0.2, -1e-9, 0.0, 1e-9, 0.1, 0.5):
        for scale in (1e-6, 0.3, 1.0, 7.5):
            np.testing.assert_allclose(gpd_sf(x * scale, shape, scale),
                                       stats.genpareto.sf(x * scale, shape, loc=0.0, scale=scale),
                                       rtol=1e-9, atol=1e-300)
            for q in (0.5, 1e-3, 1e-9):
                assert gpd_isf(q, shape, scale) == pytest.approx(stats.genpareto.isf(q, shape, scale=scale),
                                                                 rel=1e-9)


def test_a_clipped_tail_shape_gets_the_scale_that_fits_it():
    """Found by a bug hunt: the shape was clipped to [-0.5, 0.5] but the scale of the unclipped fit was kept, so a
    bounded score distribution got a threshold beyond its largest possible score (a fine-tuned model's at 7.9 for
    calibration scores up to 4.1, missing 6 of 9 anomalies)."""
    from scipy import stats

    scores = np.random.default_rng(0).uniform(1.0, 4.0, 200)  # bounded: nothing normal scores above 4
    tail = TailCalibration.fit(scores)
    excesses = np.sort(scores)[np.sort(scores) > tail.tail_start] - tail.tail_start
    assert stats.genpareto.fit(excesses, floc=0.0)[0] < -0.5  # the fit's own shape is clipped
    assert tail.shape == -0.5
    assert excesses.max() <= -tail.scale / tail.shape  # every calibration excess lies inside the tail's support
    # the scale is the maximum-likelihood one for that shape: no nearby scale fits better
    loglik = [stats.genpareto.logpdf(excesses, -0.5, 0.0, tail.scale * k).sum() for k in (0.99, 1.0, 1.01)]
    assert loglik[1] >= max(loglik[0], loglik[2]) or np.isinf(loglik[0])
    assert scores.max() < PeaksOverThreshold(risk=1e-3).fit(scores) < 4.05  # 4.14 with the unclipped fit's scale
    heavy = np.random.default_rng(1).pareto(1.2, 2000)  # shape ~0.8, clipped to 0.5 from above
    assert TailCalibration.fit(heavy).shape == 0.5


def test_tail_probability_is_monotone_and_calibrated():
    rng = np.random.default_rng(2)
    tail = TailCalibration.fit(rng.normal(size=50_000))
    p = tail.tail_probability(np.array([-1.0, 0.0, 1.0, 2.0, 3.0]))
    assert np.all(np.diff(p) <= 0)
    assert p[1] == pytest.approx(0.5, abs=0.02) and p[3] == pytest.approx(0.0228, abs=0.004)
    restored = TailCalibration.from_dict(tail.to_dict())
    np.testing.assert_allclose(restored.tail_probability(np.array([3.0])), p[4:])


def test_a_missing_score_has_tail_probability_one_as_in_online_calibration():
    """A NaN sorted past every stored score: it got the tail's smallest probability, the grade of an anomaly."""
    tail = TailCalibration((1.0, 2.0, 3.0, 4.0), tail_start=3.0, tail_fraction=0.5, shape=0.0, scale=1.0)
    np.testing.assert_array_equal(tail.tail_probability(np.array([np.nan, 0.0])), [1.0, 1.0])
    assert tail.tail_probability(np.array([4.0]))[0] == pytest.approx(0.5 * np.exp(-1.0))


def test_a_bounded_tail_goes_on_past_the_largest_calibration_score_by_hand():
    """Found by the bug hunt of outputs: a tail fitted with a negative shape ends (shape -0.5, scale 1: at an excess
    of 2), and every score past the end had tail probability 0, so `seqwatch demo --quick` graded 95 of its 97
    anomalous windows critical, a score of 4 as a score of 17. Past the largest calibration score (excess 1 here)
    the tail goes on as an exponential with the fit's slope there: scale 1 - 0.5 * 1 = 0.5, from (1 - 0.5) ** 2."""
    tail = TailCalibration(sorted_scores=(0.0, 5.0, 10.0, 11.0), tail_start=10.0, tail_fraction=0.1, shape=-0.5,
                           scale=1.0)
    scores = np.array([10.5, 11.0, 11.5, 12.0, 14.0, 30.0])
    expected = 0.1 * np.array([0.75 ** 2, 0.25, 0.25 * math.exp(-1.0), 0.25 * math.exp(-2.0),
                               0.25 * math.exp(-6.0), 0.25 * math.exp(-38.0)])
    np.testing.assert_allclose(tail.tail_probability(scores), expected, rtol=1e-12)
    assert np.all(np.diff(tail.tail_probability(np.linspace(10.0, 40.0, 3001))) < 0)  # no plateau at 0
    # the score of a tail probability inverts it on both sides of the largest calibration score
    for score, p in zip(scores, expected):
        assert tail.score_at(p) == pytest.approx(score, rel=1e-12)
    # an unbounded tail (shape >= 0), or a bounded one whose end the calibration scores reach, is the fit itself
    for shape, scale in ((0.0, 1.0), (0.2, 1.0)):
        plain = TailCalibration((0.0, 11.0), 10.0, 0.1, shape, scale)
        np.testing.assert_allclose(plain.tail_probability(scores), 0.1 * gpd_sf(scores - 10.0, shape, scale))
    # a fit whose support only just holds the largest excess (a clipped shape) still says it is the end
    tight = TailCalibration((0.0, 11.0), 10.0, 0.1, -0.5, 0.5 * (1 + 1e-9))
    assert tight.tail_probability(np.array([11.0]))[0] < 1e-15 and tight.score_at(1e-5) == pytest.approx(10.99)
    # fitted on a bounded sample of 200 (shape -0.5): the threshold at risk 1e-3 lies past the largest score, and
    # its tail probability is the risk
    scores = np.random.default_rng(0).uniform(1.0, 4.0, 200)
    fitted, threshold = TailCalibration.fit(scores), PeaksOverThreshold(risk=1e-3).fit(scores)
    assert fitted.shape < 0 and threshold > scores.max()
    assert fitted.tail_probability(np.array([threshold]))[0] == pytest.approx(1e-3, rel=1e-9)


def test_severity_grades_scores_past_a_bounded_tail():
    """The same fit as in `seqwatch demo --quick` (264 calibration scores up to 3.78, shape clipped at -0.5, end point
    3.98, threshold near 3.89): a score just past the end point is info, 4.2 a warning, 4.5 and 17 critical."""
    scores = np.random.default_rng(3).uniform(1.0, 3.78, 264)
    tail = TailCalibration(tuple(np.sort(np.r_[scores, 3.78]).tolist()), 3.159, 0.053, -0.5, 0.4095)
    assert tail.tail_start - tail.scale / tail.shape == pytest.approx(3.978, abs=1e-3)
    sev = severity_of(tail.tail_probability(np.array([3.99, 4.2, 4.5, 17.0])), np.ones(4, dtype=bool))
    assert sev.tolist() == ["info", "warning", "critical", "critical"]


def test_severity_levels():
    sev = severity_of(np.array([0.5, 1e-3, 5e-5, 1e-6, 1e-6]), np.array([True, True, True, True, False]))
    assert sev.tolist() == ["info", "info", "warning", "critical", "normal"]


def test_conformal_half_width_uses_the_finite_sample_quantile():
    residuals = np.arange(1, 10, dtype=float).reshape(9, 1, 1)  # |r| = 1..9, n = 9
    # coverage 0.8: ceil(10 * 0.8) / 9 = 8/9 quantile (method higher) = 8
    intervals = ConformalIntervals.fit(residuals, coverage=0.8)
    assert intervals.half_width == ((8.0,),)
    lower, upper = intervals.bounds(np.array([[[100.0]]]))
    assert lower[0, 0, 0] == 92.0 and upper[0, 0, 0] == 108.0
    assert intervals.coverage == 0.8


def test_conformal_intervals_say_the_coverage_so_few_residuals_can_give():
    """Found by the bug hunt of forecasts: with n = 20 calibration windows and coverage 0.99, ceil(21 * 0.99) = 21 > n,
    so the half-width is the largest residual, which covers with probability >= 20/21 = 0.952 only; the forecasts
    said 0.99 (and covered 95.5% in the hunt's simulation). The intervals now carry 20/21; with n = 99, 0.99 holds."""
    from seqwatch.models.detector import coverage_note

    residuals = np.arange(1, 21, dtype=float).reshape(20, 1, 1)
    intervals = ConformalIntervals.fit(residuals, coverage=0.99)
    assert intervals.half_width == ((20.0,),) and intervals.coverage == pytest.approx(20 / 21)
    assert ConformalIntervals.fit(np.ones((99, 1, 1)), coverage=0.99).coverage == 0.99
    assert ConformalIntervals.fit(np.ones((9, 1, 1)), coverage=0.9).coverage == 0.9
    assert coverage_note(20 / 21, 0.99, 20) == (
        "the forecast intervals are sure to cover 95.2% of new readings, not the 99.0% asked for: 20 calibration "
        "windows hold no residual that rare (that needs 99 or more), so the forecasts' coverage says 95.2%; give a "
        "longer history, or a lower --coverage")


def test_config_round_trips_and_names_bad_values():
    config = DetectorConfig(ArchitectureConfig(cell="gru", bidirectional=True, layers=2, forecast_horizon=5),
                            WindowConfig(length=20, stride=5))
    assert DetectorConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="stride must be in \\[1, length=8\\], got 9"):
        WindowConfig(length=8, stride=9)
    with pytest.raises(ValueError, match="layers must be 1, 2 or 3, got 4"):
        ArchitectureConfig(layers=4)
    with pytest.raises(ValueError, match="unknown detector config sections"):
        DetectorConfig.from_dict({"bogus": {}})


def test_one_sided_config_round_trips_and_defaults_to_two_sided_for_old_configs():
    assert ScoringConfig().one_sided is False
    config = DetectorConfig(scoring=ScoringConfig(one_sided=True))
    assert DetectorConfig.from_json(config.to_json()) == config
    old = DetectorConfig().to_dict()
    del old["scoring"]["one_sided"]  # as stored by artifacts saved before the setting existed
    assert DetectorConfig.from_dict(old).scoring.one_sided is False
    with pytest.raises(ValueError, match="one_sided must be True or False, got 'yes'"):
        ScoringConfig(one_sided="yes")


def test_error_features_with_a_floor():
    windows = np.zeros((1, 4, 2))
    recon = np.array([[[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]])  # rms 1 and 0
    features = window_error_features(reconstruction_errors(windows, recon), floor=(0.5, 0.25))
    np.testing.assert_allclose(features, [[math.log(1.5), math.log(0.25)]])


def test_error_floor_is_the_quantile_of_rms_over_windows_with_activity():
    # channel 0: windows 0 and 1 vary, window 2 is constant (off); channel 1 is constant everywhere
    windows = np.array([[[0.0, 5.0], [1.0, 5.0]], [[2.0, 5.0], [0.0, 5.0]], [[3.0, 5.0], [3.0, 5.0]]])
    errors = np.array([[[0.3, 0.0], [0.4, 0.0]],   # rms sqrt((.09 + .16) / 2) = sqrt(.125)
                       [[0.6, 0.1], [0.8, 0.1]],   # rms sqrt((.36 + .64) / 2) = sqrt(.5)
                       [[0.0, 0.0], [0.0, 0.0]]])  # constant window: left out
    floor = error_floor(windows, errors, quantile=0.5)
    # median of the two active windows' rms; channel 1 has no active window -> the default 1e-6
    assert floor[0] == pytest.approx((math.sqrt(0.125) + math.sqrt(0.5)) / 2)
    assert floor[1] == 1e-6
    with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\), got 1.5"):
        error_floor(windows, errors, 1.5)


def test_scorer_keeps_its_error_floor_and_old_scorers_have_none():
    features = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    scorer = MahalanobisScorer.fit(features, error_floor=(0.5, 0.25))
    assert scorer.error_floor == (0.5, 0.25)
    assert MahalanobisScorer.from_dict(scorer.to_dict()) == scorer
    assert MahalanobisScorer.from_dict({"mean": [2.0, 4.0], "precision": list(scorer.precision)}).error_floor == ()
    with pytest.raises(ValueError, match=r"error_floor must have one value per channel \(2\), got 1"):
        MahalanobisScorer.fit(features, error_floor=(0.5,))
    with pytest.raises(ValueError, match="error_floor_quantile must be None or in \\(0, 1\\), got 0"):
        ScoringConfig(error_floor_quantile=0)
