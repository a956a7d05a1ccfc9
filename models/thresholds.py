"""Thresholds calibrated on held-out normal scores, and the tail probability behind a severity.

A threshold turns a score into a label; it knows nothing about models or alerts. ``TailCalibration`` maps a
score to the probability that a normal window scores at least as high: empirical in the body, a generalised
Pareto tail (peaks over threshold, Pickands-Balkema-de Haan) beyond. Severity is read off that probability,
so "critical" means the same rarity whatever the model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

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
            shape, _, scale = stats.genpareto.fit(excesses, floc=0.0)
            # Keep the tail finite-variance-ish and the fit sane on small samples.
            shape = float(np.clip(shape, -0.5, 0.5))
        else:
            shape, scale = 0.0, float(max(np.std(scores), 1e-9))
        stored = np.quantile(scores, np.linspace(0, 1, min(max_stored, scores.size)))
        return cls(tuple(stored.tolist()), tail_start, float(excesses.size / scores.size), shape, float(scale))

    def tail_probability(self, scores: np.ndarray) -> np.ndarray:
        """P(normal score >= s) for each s."""
        s = np.asarray(scores, dtype=np.float64)
        stored = np.asarray(self.sorted_scores)
        empirical = 1.0 - np.searchsorted(stored, s, side="left") / stored.size
        tail = self.tail_fraction * stats.genpareto.sf(s - self.tail_start, self.shape, loc=0.0, scale=self.scale)
        return np.clip(np.where(s > self.tail_start, tail, np.maximum(empirical, self.tail_fraction)), 0.0, 1.0)

    def score_at(self, tail_probability: float) -> float:
        """The score whose tail probability is ``tail_probability`` (which must be below the tail fraction)."""
        if not 0.0 < tail_probability < self.tail_fraction:
            raise ValueError(f"tail_probability must be in (0, {self.tail_fraction:g}), got {tail_probability}")
        return float(self.tail_start + stats.genpareto.isf(tail_probability / self.tail_fraction, self.shape,
                                                           loc=0.0, scale=self.scale))

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


def severity_of(tail_probability: np.ndarray, is_anomaly: np.ndarray) -> np.ndarray:
    """``"normal"`` below the threshold; otherwise ``critical`` (p <= 1e-5), ``warning`` (p <= 1e-4) or ``info``."""
    p = np.asarray(tail_probability, dtype=np.float64)
    result = np.full(p.shape, "info", dtype=object)
    result[p <= SEVERITY_LEVELS[1][1]] = "warning"
    result[p <= SEVERITY_LEVELS[0][1]] = "critical"
    result[~np.asarray(is_anomaly, dtype=bool)] = "normal"
    return result
