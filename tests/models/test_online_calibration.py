"""OnlineTailCalibration: a tail calibration refitted on the latest scores of a stream, checked on small inputs
whose empirical tail probabilities are worked out by hand.

With 20 distinct scores and ``initial_quantile`` 0.95 the fit has one score above the 0.95 quantile, too few for
a generalised Pareto tail, so below the tail start the probability is the empirical one,
``max(1 - (number of stored scores < s) / 20, 1 / 20)``, and easy to count.
"""
import numpy as np
import pytest

from seqwatch.models.thresholds import OnlineTailCalibration, TailCalibration

ONE_TO_TWENTY = np.arange(1.0, 21.0)


def test_process_judges_each_block_by_the_scores_before_it():
    online = OnlineTailCalibration(history=20, refit_every=5).start(ONE_TO_TWENTY)
    p = online.process(np.array([10.5, np.nan, 10.5, 10.5, 10.5, 10.5]))
    # Steps 0-4 under the fit on 1..20: 10 scores below 10.5 -> 1 - 10/20 = 0.5; the NaN step -> 1.
    # After 5 steps the history is the latest 20 finite scores: 5..20 and four times 10.5 (1..4 dropped); six of
    # them (5, 6, 7, 8, 9, 10) lie below 10.5 -> 1 - 6/20 = 0.7 for step 5.
    np.testing.assert_allclose(p, [0.5, 1.0, 0.5, 0.5, 0.5, 0.7])
    # the sixth step added a fifth 10.5 and pushed out 5: the latest 20 are 6..20 and five times 10.5
    np.testing.assert_array_equal(np.sort(online.scores), np.sort(np.r_[np.arange(6.0, 21.0), [10.5] * 5]))


def test_start_keeps_the_latest_history_scores():
    online = OnlineTailCalibration(history=20, refit_every=5).start(np.r_[[100.0] * 5, ONE_TO_TWENTY])
    np.testing.assert_array_equal(online.scores, ONE_TO_TWENTY)  # the five 100s are older than the last 20
    assert online.tail_probability(np.array([15.0]))[0] == pytest.approx(1 - 14 / 20)


def test_tail_probability_changes_nothing_and_update_refits_only_after_refit_every_steps():
    online = OnlineTailCalibration(history=20, refit_every=3).start(ONE_TO_TWENTY)
    assert online.tail_probability(np.array([10.5, np.nan])).tolist() == [0.5, 1.0]
    online.update(np.array([10.5, 10.5]))  # 2 of 3 steps: the fit stays
    assert online.tail_probability(np.array([10.5]))[0] == pytest.approx(0.5)
    online.update(np.array([np.nan]))  # the third step (no score) completes the refit period
    # history: 3..20 and 10.5 twice; below 10.5: 3..10 -> 8 -> 1 - 8/20
    assert online.tail_probability(np.array([10.5]))[0] == pytest.approx(1 - 8 / 20)


def test_process_is_causal_and_the_same_in_pieces_or_at_once():
    rng = np.random.default_rng(3)
    history, scores = rng.normal(size=200), rng.normal(size=600)
    p = OnlineTailCalibration(history=1000, refit_every=100).start(history).process(scores)
    changed = scores.copy()
    changed[300:] += 50.0  # a huge change from step 300 on
    q = OnlineTailCalibration(history=1000, refit_every=100).start(history).process(changed)
    np.testing.assert_array_equal(p[:300], q[:300])
    assert np.all(q[300:400] < 1e-3)  # judged by the past, the jump is rare
    assert np.all(q[500:] > 1e-3)  # two refits later the new level is part of the history

    pieces = OnlineTailCalibration(history=1000, refit_every=100).start(history)
    parts = [pieces.process(scores[a:b]) for a, b in ((0, 37), (37, 250), (250, 251), (251, 600))]
    np.testing.assert_array_equal(np.concatenate(parts), p)


def test_state_round_trips_mid_stream():
    rng = np.random.default_rng(5)
    scores = rng.exponential(size=700)
    online = OnlineTailCalibration(history=300, refit_every=50).start(scores[:100])
    first = online.process(scores[100:420])  # 320 steps: 20 into a refit period
    restored = OnlineTailCalibration.from_dict(online.to_dict())
    np.testing.assert_array_equal(restored.process(scores[420:]), online.process(scores[420:]))
    assert first.shape == (320,)


def test_matches_a_tail_calibration_refitted_by_hand():
    rng = np.random.default_rng(7)
    history, scores = rng.gamma(2.0, size=150), rng.gamma(2.0, size=25)
    p = OnlineTailCalibration(history=160, refit_every=10).start(history).process(scores)
    seen = history
    for start in (0, 10, 20):
        block = scores[start:start + 10]
        np.testing.assert_array_equal(p[start:start + 10], TailCalibration.fit(seen[-160:]).tail_probability(block))
        seen = np.r_[seen, block]


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="history must be >= 20 .* got 10"):
        OnlineTailCalibration(history=10)
    with pytest.raises(ValueError, match="refit_every must be >= 1, got 0"):
        OnlineTailCalibration(refit_every=0)
    with pytest.raises(ValueError, match=r"initial_quantile must be in \(0, 1\), got 1.0"):
        OnlineTailCalibration(initial_quantile=1.0)
    with pytest.raises(RuntimeError, match="call start"):
        OnlineTailCalibration().process(np.ones(3))
    with pytest.raises(ValueError, match="need at least 20 calibration scores, got 5"):
        OnlineTailCalibration().start(np.ones(5))


def test_process_at_risk_gives_the_threshold_of_the_fit_that_judged_each_step():
    rng = np.random.default_rng(11)
    seed, scores = rng.gamma(2.0, 1.0, 300), rng.gamma(2.0, 1.0, 12)
    plain = OnlineTailCalibration(history=300, refit_every=5).start(seed)
    at_risk = OnlineTailCalibration(history=300, refit_every=5).start(seed)
    by_hand = OnlineTailCalibration(history=300, refit_every=5).start(seed)
    p, threshold = at_risk.process_at_risk(scores, 1e-3)
    np.testing.assert_array_equal(p, plain.process(scores))  # the same tail probabilities as process()
    expected = []
    for lo in (0, 5, 10):  # blocks of 5 steps, each judged by the fit before it
        expected += [by_hand.calibration.score_at(1e-3)] * len(scores[lo:lo + 5])
        by_hand.update(scores[lo:lo + 5])
    np.testing.assert_array_equal(threshold, expected)
    assert len(set(expected)) == 3
    np.testing.assert_array_equal(at_risk.scores, plain.scores)  # and the same history afterwards


def test_a_history_whose_top_scores_tie_is_judged_by_the_seeds_fit():
    """Found by the bug hunt of suites and calibration: a pump switched off reports the same readings, its windows
    score the same, and once those tie for the top 5% of its history the refit has no score above its tail start
    (tail fraction 0), so ``score_at(risk)`` raised and the whole run with it. Such blocks are now judged by the
    seed's fit, thresholds and tail probabilities alike, and the history takes them in as before."""
    rng = np.random.default_rng(3)
    seed = rng.gamma(2.0, 1.0, 300)
    online = OnlineTailCalibration(history=300, refit_every=50).start(seed)
    seed_fit = online.calibration
    online.process_at_risk(np.full(300, 0.7), 1e-3)  # raised once the idle scores filled the top 5%
    assert online.calibration.tail_fraction == 0.0  # the history is the idle scores alone: no tail
    idle = np.full(100, 0.7)
    p, threshold = online.process_at_risk(idle, 1e-3)
    np.testing.assert_array_equal(threshold, [seed_fit.score_at(1e-3)] * 100)
    np.testing.assert_array_equal(p, seed_fit.tail_probability(idle))
    restored = OnlineTailCalibration.from_dict(online.to_dict())  # the seed's fit is part of the state
    rise = np.array([0.8, 50.0])
    np.testing.assert_array_equal(restored.process_at_risk(rise, 1e-3)[1], [seed_fit.score_at(1e-3)] * 2)
    np.testing.assert_array_equal(restored.process_at_risk(rise, 1e-3)[0], seed_fit.tail_probability(rise))


def test_without_a_seed_with_a_tail_a_tied_history_puts_the_threshold_at_its_top():
    """The last resort, for a state written before the seed's fit was kept: any score above the tied top is
    rarer than the risk under the history's own fit (the share above it is 0)."""
    online = OnlineTailCalibration(history=100, refit_every=10).start(np.full(100, 2.0))
    assert online.calibration.tail_fraction == 0.0
    p, threshold = online.process_at_risk(np.array([2.0, 2.5]), 1e-3)
    np.testing.assert_array_equal(threshold, [2.0, 2.0])
    assert p[0] == 1.0 and p[1] == 0.0


def test_process_at_risk_lets_only_the_first_step_of_a_run_above_the_threshold_into_the_history():
    """Runs declustering: of consecutive steps above the threshold that judged them, the first joins the history
    (no higher than the score at a hundredth of the risk) and the others count as steps only, also when the run
    goes on into the next call or a restored state."""
    online = OnlineTailCalibration(history=100, refit_every=100).start(ONE_TO_TWENTY)
    cap = online.calibration.score_at(1e-5)
    assert 20.0 < cap < 97.0
    p, threshold = online.process_at_risk(np.array([1.5, 100.0, 100.0, 100.0, 1.5, 100.0, 99.0]), 1e-3)
    assert np.all(threshold < 97.0) and np.all(threshold > 21.0)  # one fit (no refit yet): above it are the 9Xs
    np.testing.assert_array_equal(np.sort(online.scores), np.sort(np.r_[ONE_TO_TWENTY, 1.5, cap, 1.5, cap]))
    restored = OnlineTailCalibration.from_dict(online.to_dict())  # the run is still open at the end of the call
    restored.process_at_risk(np.array([98.0, 2.5, 21.0]), 1e-3)
    np.testing.assert_array_equal(np.sort(restored.scores),
                                  np.sort(np.r_[ONE_TO_TWENTY, 1.5, cap, 1.5, cap, 2.5, 21.0]))
    restored.update(np.ones(90))  # 100 steps in all (those left out of the history count): the refit is due
    assert restored.calibration is not online.calibration


def test_a_step_without_a_score_neither_ends_a_run_nor_continues_it():
    """The review: a gap (NaN) inside an incident had ended its run, and the incident joined twice."""
    online = OnlineTailCalibration(history=100, refit_every=100).start(ONE_TO_TWENTY)
    cap = online.calibration.score_at(1e-5)
    online.process_at_risk(np.array([1.5, 90.0, np.nan, 90.0, 90.0, 1.5]), 1e-3)
    np.testing.assert_array_equal(np.sort(online.scores), np.sort(np.r_[ONE_TO_TWENTY, 1.5, min(90.0, cap), 1.5]))


def test_a_run_above_the_threshold_that_outlasts_the_refit_period_joins_the_history_after_it():
    """A run of more than ``refit_every`` steps is a lasting change (another operating point, a shift that
    stays), not an incident: steps 2..refit_every stay out, the later ones join."""
    online = OnlineTailCalibration(history=200, refit_every=10).start(ONE_TO_TWENTY)
    first_cap = online.calibration.score_at(1e-5)
    online.process_at_risk(np.full(10, 1000.0), 1e-3)  # steps 1-10 of the run, judged by the seed's fit
    _, threshold = online.process_at_risk(np.full(3, 1000.0), 1e-3)  # steps 11-13, after a refit
    assert (threshold < 1000.0).all() and first_cap < 1000.0
    # the first step capped (an incident's peak), the lasting change's steps as they are
    np.testing.assert_array_equal(np.sort(online.scores), np.r_[ONE_TO_TWENTY, first_cap, [1000.0] * 3])


def test_one_score_far_beyond_anything_normal_does_not_blind_the_entity_for_the_history():
    """Bug hunt of online calibration: one score of 37.7 among scores of about 3 raised the threshold by half
    for as long as the history held it (a sensor's 5,000: lesser incidents missed from then on)."""
    rng = np.random.default_rng(4)
    seed = np.sort(rng.gamma(4.0, 0.5, 2000))
    scores = rng.gamma(4.0, 0.5, 3000)
    scores[250] = 5000.0
    for k in range(6):
        scores[500 + 400 * k:507 + 400 * k] = 7.5
    _, threshold = OnlineTailCalibration(8640, 100, 0.95).start(seed).process_at_risk(scores, 1e-3)
    found = [(scores[a:a + 7] > threshold[a:a + 7]).any() for a in range(500, 2900, 400)]
    assert sum(found) >= 5, (found, threshold[::100])
    assert threshold[-1] < 1.25 * threshold[0]


def test_an_entity_whose_operating_point_lies_above_the_seeds_threshold_becomes_its_normal():
    rng = np.random.default_rng(2)
    seed = np.sort(rng.gamma(4.0, 0.5, 2000))
    offset = rng.gamma(4.0, 0.5, 3000) + 8.0  # every window above the seed's threshold from the first one
    online = OnlineTailCalibration(8640, 100, 0.95).start(seed)
    _, threshold = online.process_at_risk(offset, 1e-3)
    assert (offset[:100] > threshold[:100]).all()
    assert (offset[-1000:] > threshold[-1000:]).mean() < 0.003


def test_a_long_incident_does_not_blind_the_entity_to_a_lesser_one_and_a_noisier_entity_still_adapts():
    """Found with the demo: every window of an incident had joined the history, the fit's tail was the
    incident, and ``seqwatch demo --online-calibration`` found 11 of 18 injected faults (each pump its first
    only). Declustered, the tail learns one window per incident; an entity whose normal scores are 1.5 times
    the seed's still exceeds scattered windows, each of which joins, and its threshold rises to its noise."""
    rng = np.random.default_rng(1)
    seed = np.sort(rng.gamma(4.0, 0.5, 2000))
    scores = rng.gamma(4.0, 0.5, 3000)
    scores[300:310], scores[1000:1010], scores[2000:2002] = 20.0, 8.0, 8.0  # an incident, then two lesser ones
    _, threshold = OnlineTailCalibration(8640, 100, 0.95).start(seed).process_at_risk(scores, 1e-3)
    above = scores > threshold
    assert above[300:310].all() and above[1000:1010].any() and above[2000:2002].any()
    noisy = 1.5 * rng.gamma(4.0, 0.5, 6000)
    _, threshold = OnlineTailCalibration(8640, 100, 0.95).start(seed).process_at_risk(noisy, 1e-3)
    assert (noisy[:1000] > threshold[:1000]).mean() > 0.005  # the seed's threshold: the noise alerts at first
    assert (noisy[-2000:] > threshold[-2000:]).mean() < 0.003  # then hardly more than the risk


def test_judge_at_risk_judges_by_the_fit_in_use_and_adds_nothing():
    """For the windows a kept state already holds (a batch run's inputs that repeat the day before's last steps):
    judged as the next block would be, and the history, the steps to the next refit and the run are unchanged."""
    online = OnlineTailCalibration(history=20, refit_every=5).start(ONE_TO_TWENTY)
    online.process_at_risk(np.array([10.5, 11.5]), 0.01)
    before = online.to_dict()
    p, threshold = online.judge_at_risk(np.array([10.5, 30.0, np.nan]), 0.01)
    # the fit on 1..20 (the refit is due after 5 steps; 2 taken): 10 scores below 10.5 -> 0.5, NaN -> 1
    assert p[0] == pytest.approx(0.5) and p[2] == 1.0 and p[1] < 0.05
    np.testing.assert_array_equal(threshold, [online.calibration.score_at(0.01)] * 3)
    assert online.to_dict() == before
    # and what comes next is judged as if the judged scores had never been seen
    np.testing.assert_allclose(online.process_at_risk(np.array([12.0, 13.0, 14.0]), 0.01)[1],
                               OnlineTailCalibration.from_dict(before).process_at_risk(np.array([12.0, 13.0, 14.0]),
                                                                                       0.01)[1])
