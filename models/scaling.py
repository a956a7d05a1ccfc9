"""Per-channel standard scaling, fitted on training data only and stored in the model artifact.

Scaled values are clipped to +-``SCALED_LIMIT`` standard deviations. A reading far outside anything the model
saw (``1e30`` from a broken sensor, or ``1e40``, which a float32 window holds as infinity) would otherwise make
the network's output, and so the window's score, NaN, and a NaN score is never above a threshold: the window
would pass as normal. Clipped, it is a very large finite error, and the window scores as the anomaly it is.
Normal data stays far inside the limit (the largest on NAB, 58 files: 268 standard deviations of the
probationary period).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

SCALED_LIMIT = 1e4  # standard deviations

@dataclass(frozen=True)
class ChannelScaler:
    """``(x - mean) / scale`` per channel. A constant channel gets scale 1 so it does not blow up."""

    mean: tuple
    scale: tuple

    @classmethod
    def fit(cls, values: np.ndarray) -> "ChannelScaler":
        """Fit on ``values`` ``[..., C]``, ignoring NaN. Raises ValueError on a channel with no finite value."""
        flat = np.asarray(values, dtype=np.float64).reshape(-1, np.shape(values)[-1])
        finite = np.isfinite(flat)
        empty = np.flatnonzero(~finite.any(axis=0))
        if empty.size:
            raise ValueError(f"cannot fit a scaler: channels {empty.tolist()} have no finite value")
        mean = np.nanmean(np.where(finite, flat, np.nan), axis=0)
        std = np.nanstd(np.where(finite, flat, np.nan), axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        return cls(tuple(float(m) for m in mean), tuple(float(s) for s in std))

    @staticmethod
    def constant(values: np.ndarray) -> list:
        """The indices of the channels of ``values`` ``[..., C]`` whose finite values are all one value: ``fit``
        gives them scale 1, the channel's own unit, which says nothing about how far a later value is off."""
        flat = np.asarray(values, dtype=np.float64).reshape(-1, np.shape(values)[-1])
        finite = np.where(np.isfinite(flat), flat, np.nan)
        with warnings.catch_warnings():  # a channel without a finite value: all-NaN, so no spread either
            warnings.simplefilter("ignore", RuntimeWarning)
            spread = np.nanmax(finite, axis=0) - np.nanmin(finite, axis=0)
        return [int(i) for i in np.flatnonzero(~(spread > 0))]

    def transform(self, values: np.ndarray) -> np.ndarray:
        """``(values - mean) / scale`` as float32, clipped to +-``SCALED_LIMIT`` (infinities too; NaN stays)."""
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = (np.asarray(values, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return np.clip(scaled, -SCALED_LIMIT, SCALED_LIMIT).astype(np.float32)

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64) * np.asarray(self.scale) + np.asarray(self.mean)

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, data: dict) -> "ChannelScaler":
        return cls(tuple(data["mean"]), tuple(data["scale"]))
