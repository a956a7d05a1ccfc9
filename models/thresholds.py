"""Thresholds calibrated on held-out normal scores, and the tail probability behind a severity.

A threshold turns a score into a label; it knows nothing about models or alerts. ``TailCalibration`` maps a
score to the probability that a normal window scores at least as high: empirical in the body, a generalised
Pareto tail (peaks over threshold, Pickands-Balkema-de Haan) beyond. Severity is read off that probability,
so "critical" means the same rarity whatever the model.

A tail fitted with a negative shape has an end point, past which every score would have probability 0. No
calibration score speaks for an end point beyond the largest of them, so past the largest the tail goes on as
an exponential with the fitted tail's slope there (of log-probability; by the GPD's threshold stability, the
excesses over a level u have scale ``scale + shape * u``): scores past the end point keep their order, and
severity tells a score just past it from one ten times as high.

``OnlineTailCalibration`` keeps that calibration current on a stream: it refits on the latest scores seen, so
that a lasting change of level after training (a drift) stops looking rare after a while, and a score is judged
only by scores that came before it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from seqwatch.models.config import ScoringConfig

SEVERITY_LEVELS = (("critical", 1e-5), ("warning", 1e-4), ("info", 1.0))


def _check_scores(scores: np.ndarray, minimum: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size < minimum:
        raise ValueError(f"need at least {minimum} calibration scores, got {scores.size}")
    if not np.isfinite(scores).all():
        raise ValueError("calibration scores must be finite")
    return scores


@dataclass(frozen=True)
class QuantileThreshold:
    """The ``quantile`` of normal scores."""

    quantile: float = 0.995

    def __post_init__(self):
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {self.quantile}")

    def fit(self, scores: np.ndarray) -> float:
        return float(np.quantile(_check_scores(scores, 2), self.quantile, method="higher"))


def gpd_sf(x, shape: float, scale: float) -> np.ndarray:
    """P(X > x) of the generalised Pareto distribution with location 0 (``scipy.stats.genpareto.sf``):
    ``(1 + shape x / scale) ** (-1 / shape)``, ``exp(-x / scale)`` for shape 0; 1 below 0, 0 past the end of the
    support (``x >= -scale / shape`` when shape < 0)."""
    z = np.maximum(np.asarray(x, dtype=np.float64), 0.0) / scale
    if shape == 0.0:
        return np.exp(-z)
    t = shape * z
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > -1.0, np.exp(-np.log1p(np.maximum(t, -1.0)) / shape), 0.0)


def gpd_isf(q: float, shape: float, scale: float) -> float:
    """The x with ``gpd_sf(x) == q`` for q in (0, 1] (``scipy.stats.genpareto.isf``)."""
    if shape == 0.0:
        return float(-scale * np.log(q))
    return float(scale * np.expm1(-shape * np.log(q)) / shape)


# The GPD shapes a tail fit keeps (see TailCalibration.fit).
SHAPE_LIMIT = 0.5


def _scale_for_shape(stats, excesses: np.ndarray, shape: float) -> float:
    """The maximum-likelihood GPD scale of ``excesses`` with the shape fixed at ``shape``; no smaller than a
    negative shape's support needs to hold the largest excess (the upper end point is -scale/shape)."""
    try:
        scale = float(stats.genpareto.fit(excesses, f0=shape, floc=0.0)[2])
    except (ValueError, RuntimeError, FloatingPointError):
        scale = float(np.mean(excesses) * (1.0 - shape))  # the GPD's mean is scale / (1 - shape)
    if shape < 0:
        scale = max(scale, -shape * float(np.max(excesses)) * (1.0 + 1e-9))
    return scale


@dataclass(frozen=True)
class TailCalibration:
    """Tail probability of a score under normal operation (see module docstring)."""

    sorted_scores: tuple
    tail_start: float
    tail_fraction: float
    shape: float
    scale: float

    @classmethod
    def fit(cls, scores: np.ndarray, initial_quantile: float = 0.95, max_stored: int = 2000) -> "TailCalibration":
        """Fit on normal scores: the empirical distribution (subsampled to ``max_stored`` quantiles) and a GPD
        fitted by maximum likelihood to the excesses over the ``initial_quantile``."""
        scores = np.sort(_check_scores(scores, 20))
        tail_start = float(np.quantile(scores, initial_quantile))
        excesses = scores[scores > tail_start] - tail_start
        if excesses.size >= 5 and np.ptp(excesses) > 0:
            from scipy import stats  # here: scoring needs only gpd_sf and gpd_isf; scipy.stats takes ~0.4 s to import

            shape, _, scale = stats.genpareto.fit(excesses, floc=0.0)
            # Keep the tail finite-variance-ish and the fit sane on small samples; a clipped shape gets the scale
            # that fits the excesses with that shape (the unclipped fit's scale goes with its own shape: kept with
            # -0.5 for a fitted -2.1, it put the threshold at twice the largest calibration score).
            clipped = float(np.clip(shape, -SHAPE_LIMIT, SHAPE_LIMIT))
            if clipped != shape:
                shape, scale = clipped, _scale_for_shape(stats, excesses, clipped)
        else:
            shape, scale = 0.0, float(max(np.std(scores), 1e-9))
        stored = np.quantile(scores, np.linspace(0, 1, min(max_stored, scores.size)))
        return cls(tuple(stored.tolist()), tail_start, float(excesses.size / scores.size), shape, float(scale))

    def _continuation(self) -> tuple[float, float, float] | None:
        """Where a bounded tail (shape < 0) goes on as an exponential: ``(excess, relative tail probability,
        scale)`` at the largest calibration score; None for an unbounded tail, or when the largest score is not
        in the tail."""
        if self.shape >= 0.0:
            return None
        excess = float(self.sorted_scores[-1]) - self.tail_start
        if excess <= 0.0:
            return None
        local_scale = self.scale + self.shape * excess  # > 0: the fit's support holds every calibration excess
        return excess, float(gpd_sf(excess, self.shape, self.scale)), max(local_scale, self.scale * 1e-12)

    def _relative_sf(self, excess: np.ndarray) -> np.ndarray:
        """P(excess > x | in the tail): the GPD, continued past the largest calibration score (module docstring)."""
        sf = gpd_sf(excess, self.shape, self.scale)
        continuation = self._continuation()
        if continuation is None:
            return sf
        at, sf_at, local_scale = continuation
        beyond = excess > at
        with np.errstate(under="ignore", over="ignore"):
            return np.where(beyond, sf_at * np.exp(-np.maximum(excess - at, 0.0) / local_scale), sf)

    def tail_probability(self, scores: np.ndarray) -> np.ndarray:
        """P(normal score >= s) for each s; 1 for NaN, as ``OnlineTailCalibration`` gives (a NaN had sorted past
        every stored score and got a small tail probability: no score is no evidence of an anomaly)."""
        s = np.asarray(scores, dtype=np.float64)
        stored = np.asarray(self.sorted_scores)
        empirical = 1.0 - np.searchsorted(stored, s, side="left") / stored.size
        tail = self.tail_fraction * self._relative_sf(s - self.tail_start)
        p = np.clip(np.where(s > self.tail_start, tail, np.maximum(empirical, self.tail_fraction)), 0.0, 1.0)
        return np.where(np.isnan(s), 1.0, p)

    def score_at(self, tail_probability: float) -> float:
        """The score whose tail probability is ``tail_probability`` (which must be below the tail fraction)."""
        if not 0.0 < tail_probability < self.tail_fraction:
            raise ValueError(f"tail_probability must be in (0, {self.tail_fraction:g}), got {tail_probability}")
        q = tail_probability / self.tail_fraction
        continuation = self._continuation()
        if continuation is not None and q < continuation[1]:
            at, sf_at, local_scale = continuation
            return float(self.tail_start + at + local_scale * (np.log(sf_at) - np.log(q)))
        return float(self.tail_start + gpd_isf(q, self.shape, self.scale))

    def to_dict(self) -> dict:
        return {"sorted_scores": list(self.sorted_scores), "tail_start": self.tail_start,
                "tail_fraction": self.tail_fraction, "shape": self.shape, "scale": self.scale}

    @classmethod
    def from_dict(cls, data: dict) -> "TailCalibration":
        return cls(tuple(data["sorted_scores"]), data["tail_start"], data["tail_fraction"], data["shape"],
                   data["scale"])


@dataclass(frozen=True)
class PeaksOverThreshold:
    """The score whose tail probability under a GPD tail fit is ``risk``."""

    initial_quantile: float = 0.95
    risk: float = 1e-3

    def __post_init__(self):
        if not 0.5 < self.initial_quantile < 1.0:
            raise ValueError(f"initial_quantile must be in (0.5, 1), got {self.initial_quantile}")
        if not 0.0 < self.risk < 1.0 - self.initial_quantile:
            raise ValueError(f"risk must be in (0, {1 - self.initial_quantile:g}), got {self.risk}")

    def fit(self, scores: np.ndarray) -> float:
        tail = TailCalibration.fit(scores, self.initial_quantile)
        if self.risk < tail.tail_fraction:
            return tail.score_at(self.risk)
        # Too few scores above the initial quantile to fit a tail (e.g. every normal window scored the same):
        # nothing normal was ever higher than the largest score.
        return float(np.max(scores))


def fit_threshold(scores: np.ndarray, scoring: "ScoringConfig") -> float:
    """The threshold ``scoring`` (a ``ScoringConfig``) sets on normal ``scores``: peaks over threshold or a
    quantile, as ``scoring.threshold_method`` says."""
    if scoring.threshold_method == "pot":
        return float(PeaksOverThreshold(scoring.pot_initial_quantile, scoring.pot_risk).fit(scores))
    return float(QuantileThreshold(scoring.threshold_quantile).fit(scores))


# The first score of a run above its threshold joins an online calibration's history no higher than the score
# at risk / this
JOIN_CAP_RISK_FACTOR = 100


class OnlineTailCalibration:
    """Tail probability of each score of a stream under the scores that came before it.

    A ``TailCalibration`` fitted on the latest ``history`` scores, refitted after every ``refit_every`` steps
    (defaults: the window and refit period of Numenta's anomaly likelihood, 30 days and 100 steps at 5 minutes).
    ``start(scores)`` seeds it with normal scores (e.g. a detector's calibration windows; at least 20, finite);
    then ``process(scores)`` gives each score its tail probability and adds it to the history, refitting at each
    ``refit_every`` steps, so a score never sees itself or a later score. ``tail_probability`` and ``update``
    are the two halves of ``process`` for callers that interleave them. A NaN score (a step without a score)
    gets probability 1, counts as a step of the refit period and never enters the history.

    A history whose top scores tie (a signal that stands still: a pump switched off reports the same readings, so
    its windows score the same) may hold too few scores above its tail's start to put a threshold at a risk
    (``process_at_risk``): its blocks are then judged by the seed's fit, the calibration ``start`` began with, until
    the history has a tail again (``score_at`` had raised, and the whole run with it).

    ``process_at_risk`` declusters the runs above its thresholds (runs declustering, as in extreme value
    statistics): of consecutive steps above the threshold that judged them, the first joins the history, and the
    next ``refit_every - 1`` count as steps of the refit period only, as a NaN does. Overlapping windows see one
    incident many times over, and had it all joined, the incident would have become the tail of every fit for
    ``history`` steps, and the entity blind to any lesser incident. Scattered exceedances (an entity noisier than
    the seed) still join one by one, so its threshold rises to its own noise; and a run that outlasts a refit
    period is a lasting change (an entity whose operating point differs from the seed's, a shift that stays), not
    an incident: its later steps join as they are, so that it becomes the entity's normal. A run's first score
    joins no higher than the score at a hundredth of the risk under the fit that judged it
    (``JOIN_CAP_RISK_FACTOR``): one score far beyond anything normal (a sensor's 5,000 among scores of 3) had
    raised the threshold by half for as long as the history held it, and the entity missed lesser incidents.

    The state is the scores kept, the steps since the last refit and the length of the run above the thresholds
    that the last step ended (``to_dict``/``from_dict``), so it can live in a streaming pipeline's per-entity
    state.
    """

    def __init__(self, history: int = 8640, refit_every: int = 100, initial_quantile: float = 0.95):
        if history < 20:
            raise ValueError(f"history must be >= 20 (a tail fit needs 20 scores), got {history}")
        if refit_every < 1:
            raise ValueError(f"refit_every must be >= 1, got {refit_every}")
        if not 0.0 < initial_quantile < 1.0:
            raise ValueError(f"initial_quantile must be in (0, 1), got {initial_quantile}")
        self.history = int(history)
        self.refit_every = int(refit_every)
        self.initial_quantile = float(initial_quantile)
        self._scores = np.zeros(0)
        self._since_refit = 0
        self._calibration: TailCalibration | None = None
        self._seed: TailCalibration | None = None  # the fit of start()'s scores
        self._run_steps = 0  # steps of the run above their thresholds that process_at_risk's last step ended

    @property
    def scores(self) -> np.ndarray:
        """The scores the next fit uses: the latest ``history`` finite scores seen (a copy)."""
        return self._scores.copy()

    @property
    def calibration(self) -> TailCalibration:
        """The current fit (refitted here when ``refit_every`` steps have passed since the last one)."""
        if self._calibration is None:
            if self._scores.size == 0:
                raise RuntimeError("OnlineTailCalibration has no scores: call start() with normal scores first")
            self._calibration = TailCalibration.fit(self._scores, self.initial_quantile)
        return self._calibration

    def start(self, scores: np.ndarray) -> "OnlineTailCalibration":
        """Forget everything and fit on normal ``scores`` (>= 20, finite; the latest ``history`` are kept)."""
        scores = _check_scores(scores, 20)[-self.history:]
        self._scores, self._since_refit, self._calibration, self._run_steps = scores, 0, None, 0
        self._seed = self.calibration
        return self

    def tail_probability(self, scores: np.ndarray) -> np.ndarray:
        """P(score >= s) under the current fit for each s (1 for NaN); changes nothing."""
        return _tail_probability(self.calibration, scores)

    def _judging(self, risk: float | None) -> TailCalibration:
        """The fit that judges the next block: the current one, or the seed's when the current one has no tail
        beyond ``risk`` (see the class docstring) and the seed's has."""
        fit = self.calibration
        if risk is not None and not risk < fit.tail_fraction and self._seed is not None and \
                risk < self._seed.tail_fraction:
            return self._seed
        return fit

    def update(self, scores: np.ndarray) -> "OnlineTailCalibration":
        """Add ``scores`` (in time order) to the history; a refit is due after each ``refit_every`` steps."""
        self.calibration  # noqa: B018  (raises before start())
        s = np.asarray(scores, dtype=np.float64).ravel()
        finite = s[np.isfinite(s)]
        if finite.size:
            self._scores = np.concatenate([self._scores, finite])[-self.history:]
        self._since_refit += s.size
        if self._since_refit >= self.refit_every:
            self._since_refit %= self.refit_every
            self._calibration = None
        return self

    def process(self, scores: np.ndarray) -> np.ndarray:
        """Tail probability of each score of ``scores`` (in time order) under the fit of the steps before its
        refit block, adding each block to the history before the next: causal."""
        return self._process(scores, None)[0]

    def process_at_risk(self, scores: np.ndarray, risk: float) -> tuple[np.ndarray, np.ndarray]:
        """``process(scores)`` and, for each score, the score whose tail probability is ``risk`` under the fit
        that judged it: a threshold per step (``risk`` must be below the fit's tail fraction)."""
        return self._process(scores, risk)

    def judge_at_risk(self, scores: np.ndarray, risk: float) -> tuple[np.ndarray, np.ndarray]:
        """Each score's tail probability, and the threshold at ``risk``, under the fit that would judge the next
        block, adding nothing to the history: for scores it already holds (a batch run's windows that the kept
        state it started from had judged)."""
        fit = self._judging(risk)
        s = np.asarray(scores, dtype=np.float64).ravel()
        at = fit.score_at(risk) if risk < fit.tail_fraction else fit.tail_start
        return _tail_probability(fit, s), np.full(s.size, at)

    def _process(self, scores: np.ndarray, risk: float | None) -> tuple[np.ndarray, np.ndarray | None]:
        s = np.asarray(scores, dtype=np.float64).ravel()
        p = np.ones(s.size)
        at_risk = None if risk is None else np.empty(s.size)
        start = 0
        while start < s.size:
            stop = min(s.size, start + self.refit_every - self._since_refit)
            fit = self._judging(risk)
            p[start:stop] = _tail_probability(fit, s[start:stop])
            block = s[start:stop]
            if at_risk is not None:  # a fit without a tail beyond the risk (a seed too): above its tied top is rare
                at_risk[start:stop] = fit.score_at(risk) if risk < fit.tail_fraction else fit.tail_start
                cap = fit.score_at(risk / JOIN_CAP_RISK_FACTOR) if risk < fit.tail_fraction else fit.tail_start
                block = self._declustered(block, at_risk[start:stop], cap)
            self.update(block)
            start = stop
        return p, at_risk

    def _declustered(self, block: np.ndarray, threshold: np.ndarray, cap: float) -> np.ndarray:
        """``block`` with the scores that continue a run above their thresholds replaced by NaN, up to the run's
        ``refit_every``-th step (they count as steps of the refit period only), and each run's first score lowered
        to ``cap`` where it lies beyond it (see the class docstring)."""
        steps = np.zeros(block.size, dtype=np.int64)
        run = self._run_steps
        for i, (score, limit) in enumerate(zip(block, threshold)):
            if not np.isfinite(score):
                continue  # a step without a score (a gap) neither ends a run nor continues it; it never joins
            run = run + 1 if score > limit else 0
            steps[i] = run
        self._run_steps = int(run)
        joining = np.where(steps == 1, np.minimum(block, max(cap, float(np.max(threshold)))), block)
        return np.where((steps >= 2) & (steps <= self.refit_every), np.nan, joining)

    def to_dict(self) -> dict:
        return {"history": self.history, "refit_every": self.refit_every, "initial_quantile": self.initial_quantile,
                "scores": self._scores.tolist(), "since_refit": self._since_refit, "run_steps": self._run_steps,
                "calibration": self._calibration.to_dict() if self._calibration is not None else None,
                "seed": self._seed.to_dict() if self._seed is not None else None}

    @classmethod
    def from_dict(cls, data: dict) -> "OnlineTailCalibration":
        """Inverse of ``to_dict``: the same history, the same fit in use, the same steps to the next refit."""
        online = cls(data["history"], data["refit_every"], data["initial_quantile"])
        online._scores = np.asarray(data["scores"], dtype=np.float64)
        online._since_refit = int(data["since_refit"])
        online._run_steps = int(data.get("run_steps", 0))  # a state written before runs were declustered has none
        if data.get("calibration") is not None:
            online._calibration = TailCalibration.from_dict(data["calibration"])
        if data.get("seed") is not None:  # a state written before the seed was kept has none
            online._seed = TailCalibration.from_dict(data["seed"])
        return online


def _tail_probability(fit: TailCalibration, scores: np.ndarray) -> np.ndarray:
    """``fit``'s tail probability of each score; 1 for a NaN or infinite one (a step without a score)."""
    s = np.asarray(scores, dtype=np.float64)
    p = np.ones(s.shape)
    finite = np.isfinite(s)
    if finite.any():
        p[finite] = fit.tail_probability(s[finite])
    return p


def severity_of(tail_probability: np.ndarray, is_anomaly: np.ndarray) -> np.ndarray:
    """``"normal"`` below the threshold; otherwise ``critical`` (p <= 1e-5), ``warning`` (p <= 1e-4) or ``info``."""
    p = np.asarray(tail_probability, dtype=np.float64)
    result = np.full(p.shape, "info", dtype=object)
    result[p <= SEVERITY_LEVELS[1][1]] = "warning"
    result[p <= SEVERITY_LEVELS[0][1]] = "critical"
    result[~np.asarray(is_anomaly, dtype=bool)] = "normal"
    return result
