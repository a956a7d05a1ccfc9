"""From reconstruction errors to anomaly scores.

Each window is summarised by one error feature per channel (log of the root-mean-square reconstruction
error over its steps). Normal windows' features are modelled as a Gaussian fitted on held-out validation
windows; a window's score is the Mahalanobis distance of its feature vector from that Gaussian (the
approach of EncDec-AD, Malhotra et al. 2016, applied per window), so that channels whose errors move together
are not counted twice. The squared distance splits exactly into per-channel contributions.

A one-sided scorer (``one_sided=True``) counts only errors above normal: each feature below its normal mean is
taken as the mean before the distance, so a window the model reconstructs better than usual scores 0 on that
channel instead of high.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-6


def reconstruction_errors(windows: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """Per step and channel error ``reconstruction - window``, ``[N, L, C]``."""
    if windows.shape != reconstructions.shape:
        raise ValueError(f"windows and reconstructions must have the same shape, got {windows.shape} and "
                         f"{reconstructions.shape}")
    return np.asarray(reconstructions, dtype=np.float64) - np.asarray(windows, dtype=np.float64)


def window_error_features(errors: np.ndarray, floor: np.ndarray | tuple | None = None) -> np.ndarray:
    """``log(rms + floor_c)`` of the errors of each channel over the window's steps: ``[N, L, C] -> [N, C]``.

    ``floor`` (one value per channel, > 0) defaults to 1e-6. A larger floor makes errors far below it count as
    equal, so that a channel reconstructed almost perfectly (a signal that is off) does not make the normal
    features' spread tiny (see ``error_floor``)."""
    rms = np.sqrt(np.mean(np.square(errors), axis=1))
    return np.log(rms + (_EPS if floor is None or len(floor) == 0 else np.asarray(floor, dtype=np.float64)))


def error_floor(windows: np.ndarray, errors: np.ndarray, quantile: float) -> tuple:
    """Per channel, the ``quantile`` of the reconstruction RMS of normal windows ``[N, L, C]`` whose input on
    that channel is not constant: the error of a window with any activity. Windows where a channel is constant
    (an appliance that is off) are left out, since the model reproduces them almost exactly and would pull the
    floor to zero. A channel that is constant in every window gets 1e-6, the default floor. Raises ValueError
    for a quantile outside (0, 1) or shapes that differ."""
    windows, errors = np.asarray(windows, dtype=np.float64), np.asarray(errors, dtype=np.float64)
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    if windows.shape != errors.shape or windows.ndim != 3:
        raise ValueError(f"windows and errors must be [N, L, C] of one shape, got {windows.shape} and "
                         f"{errors.shape}")
    rms = np.sqrt(np.mean(np.square(errors), axis=1))
    active = np.ptp(windows, axis=1) > 0
    floor = [float(np.quantile(rms[active[:, c], c], quantile)) if active[:, c].any() else _EPS
             for c in range(windows.shape[2])]
    return tuple(max(f, _EPS) for f in floor)


@dataclass(frozen=True)
class MahalanobisScorer:
    """Mahalanobis distance of window error features from their distribution on normal windows; with
    ``one_sided``, of the features raised to at least their normal mean (see module docstring)."""

    mean: tuple
    precision: tuple  # inverse covariance, row-major C x C
    one_sided: bool = False
    error_floor: tuple = ()  # per channel, the floor of the features it was fitted on; () = the default 1e-6

    @classmethod
    def fit(cls, features: np.ndarray, shrinkage: float = 0.1, one_sided: bool = False,
            error_floor: tuple = ()) -> "MahalanobisScorer":
        """Fit on normal features ``[N, C]`` (N >= 2). The covariance is shrunk towards its diagonal by
        ``shrinkage`` so that it stays invertible with few windows or constant channels. ``one_sided`` changes
        only how windows are scored, not the fit. ``error_floor`` is the ``floor`` the features were computed
        with (``window_error_features``); it is kept so that windows are scored with the same one."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"features must be [N >= 2, C], got shape {features.shape}")
        if not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
        mean = features.mean(axis=0)
        cov = np.atleast_2d(np.cov(features, rowvar=False))
        cov = (1 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov))
        cov += np.eye(cov.shape[0]) * max(1e-9, 1e-6 * float(np.trace(cov)) / cov.shape[0])
        precision = np.linalg.inv(cov)
        floor = tuple(float(f) for f in error_floor)
        if floor and len(floor) != features.shape[1]:
            raise ValueError(f"error_floor must have one value per channel ({features.shape[1]}), got {len(floor)}")
        return cls(tuple(mean.tolist()), tuple(precision.ravel().tolist()), bool(one_sided), floor)

    @property
    def n_channels(self) -> int:
        return len(self.mean)

    def score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores [N], contributions [N, C])``: the Mahalanobis distance, and each channel's share
        ``d_c * (P d)_c`` of the squared distance (they sum to ``score**2``; a share can be negative when a
        channel's error is lower than usual given the others). One-sided, a channel whose feature is at or below
        its normal mean has difference 0 and contributes 0."""
        diff = np.asarray(features, dtype=np.float64) - np.asarray(self.mean)
        if self.one_sided:
            diff = np.maximum(diff, 0.0)
        precision = np.asarray(self.precision).reshape(self.n_channels, self.n_channels)
        # einsum without BLAS: a row's result must not depend on how many windows share the call (BLAS picks
        # kernels by matrix size), or the same window would score differently in different batches.
        contributions = diff * np.einsum("nc,dc->nd", diff, precision, optimize=False)
        squared = contributions.sum(axis=1)
        return np.sqrt(np.maximum(squared, 0.0)), contributions

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "precision": list(self.precision), "one_sided": self.one_sided,
                "error_floor": list(self.error_floor)}

    @classmethod
    def from_dict(cls, data: dict) -> "MahalanobisScorer":
        """Inverse of ``to_dict``; a scorer saved before ``one_sided`` and ``error_floor`` existed is two-sided
        with the default floor, as it scored then."""
        return cls(tuple(data["mean"]), tuple(data["precision"]), bool(data.get("one_sided", False)),
                   tuple(data.get("error_floor", ())))


def causal_point_scores(steps: np.ndarray, window_ends: np.ndarray, window_scores: np.ndarray,
                        window_length: int) -> np.ndarray:
    """Score of each step from the latest window that ends at or before it and still overlaps it
    (``end > step - window_length``); NaN where there is none. Uses no window that ends after the step, so a
    streaming run, which has not seen the future, gives the same point scores as a batch run."""
    order = np.argsort(window_ends, kind="stable")
    ends = np.asarray(window_ends)[order]
    scores = np.asarray(window_scores, dtype=np.float64)[order]
    steps = np.asarray(steps)
    position = np.searchsorted(ends, steps, side="right") - 1
    result = np.full(len(steps), np.nan)
    valid = position >= 0
    valid[valid] = ends[position[valid]] > steps[valid] - window_length
    result[valid] = scores[position[valid]]
    return result
