"""Per-channel standard scaling, fitted on training data only and stored in the model artifact."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((values - np.asarray(self.mean)) / np.asarray(self.scale)).astype(np.float32)

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64) * np.asarray(self.scale) + np.asarray(self.mean)

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, data: dict) -> "ChannelScaler":
        return cls(tuple(data["mean"]), tuple(data["scale"]))
