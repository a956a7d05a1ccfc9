"""Split-conformal prediction intervals for forecasts (Vovk et al.; Lei et al. 2018).

Absolute residuals of the forecasting head on held-out calibration windows give, per horizon step and
channel, the half-width ``q``: the ``k``-th smallest absolute residual with ``k = ceil((n + 1) * coverage)``; the interval is
``yhat ± q`` and covers a new point with probability >= ``coverage`` when data are exchangeable. With too few
calibration windows for that (``(n + 1) * coverage > n``) the largest residual is the most there is, which covers
with probability >= ``n / (n + 1)``: the intervals then carry that coverage, not the one asked for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConformalIntervals:
    coverage: float
    half_width: tuple  # [H][C], original units

    @classmethod
    def fit(cls, residuals: np.ndarray, coverage: float = 0.9) -> "ConformalIntervals":
        """Fit on residuals ``[N, H, C]`` (forecast minus truth, original units)."""
        residuals = np.asarray(residuals, dtype=np.float64)
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}")
        if residuals.ndim != 3 or residuals.shape[0] < 1:
            raise ValueError(f"residuals must be [N >= 1, H, C], got shape {residuals.shape}")
        n = residuals.shape[0]
        k = math.ceil((n + 1) * coverage)  # the k-th smallest absolute residual
        attained = float(coverage) if k <= n else n / (n + 1)
        width = np.sort(np.abs(residuals), axis=0)[min(k, n) - 1]
        return cls(attained, tuple(map(tuple, width.tolist())))

    def bounds(self, yhat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds for forecasts ``[N, H, C]``."""
        width = np.asarray(self.half_width)
        return yhat - width, yhat + width

    def to_dict(self) -> dict:
        return {"coverage": self.coverage, "half_width": [list(row) for row in self.half_width]}

    @classmethod
    def from_dict(cls, data: dict) -> "ConformalIntervals":
        return cls(data["coverage"], tuple(map(tuple, data["half_width"])))
