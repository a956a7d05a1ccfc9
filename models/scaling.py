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
    def fit(cls, values: np.ndarray, names: tuple | None = None) -> "ChannelScaler":
        """Fit on ``values`` ``[..., C]``, ignoring NaN. Raises ValueError on a channel with no finite value.

        A channel whose sum or squares overflow float64 (one reading of ``1e300`` among ordinary ones, where the
        suite sets no bounds) is measured in units of its largest magnitude instead, so that its scale is the
        finite number its readings give, not ``inf``: an infinite scale switches the channel off (every scaled
        value 0) and is written to ``metadata.json`` as ``Infinity``, which JSON does not allow. A spread that is
        still not finite raises ValueError naming the channel (``names``: the channels' names; else its index)."""
        flat = np.asarray(values, dtype=np.float64).reshape(-1, np.shape(values)[-1])
        finite = np.isfinite(flat)
        empty = np.flatnonzero(~finite.any(axis=0))
        if empty.size:
            raise ValueError(f"cannot fit a scaler: channels {empty.tolist()} have no finite value")
        kept = np.where(finite, flat, np.nan)
        with np.errstate(over="ignore", invalid="ignore"):
            mean = np.nanmean(kept, axis=0)
            std = np.nanstd(kept, axis=0)
        for c in np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std))):
            mean[c], std[c] = _spread_of_large(kept[:, c])
        unbounded = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))
        if unbounded.size:
            c = int(unbounded[0])
            name = repr(str(names[c])) if names is not None else f"#{c}"
            raise ValueError(f"cannot fit a scaler: the spread of channel {name} is not a finite number (its largest "
                             f"reading is {float(np.nanmax(np.abs(kept[:, c]))):.6g}); give a suite with value "
                             f"bounds for it (--suite), so that such readings are left out, as a run quarantines them")
        # A spread is the channel's own when it is more than rounding of its level: a channel measured around 1e-13
        # (pF, pA) keeps its spread (an absolute floor of 1e-12 had given it scale 1, every scaled value about 0:
        # switched off, so a jump of 14 of its spreads raised no alert); one value read back with rounding noise
        # (101325 +- 1e-11) is constant, scale 1, its own unit.
        std = np.where(std > np.maximum(np.abs(mean) * 1e-12, np.finfo(np.float64).tiny), std, 1.0)
        return cls(tuple(float(m) for m in mean), tuple(float(s) for s in std))

    @staticmethod
    def constant(values: np.ndarray) -> list:
        """The indices of the channels of ``values`` ``[..., C]`` whose finite values are all one value, up to
        the rounding ``fit`` treats as no spread (a level read back with noise of 1e-11): ``fit`` gives them scale
        1, the channel's own unit, which says nothing about how far a later value is off."""
        flat = np.asarray(values, dtype=np.float64).reshape(-1, np.shape(values)[-1])
        finite = np.where(np.isfinite(flat), flat, np.nan)
        with warnings.catch_warnings():  # a channel without a finite value: all-NaN, so no spread either
            warnings.simplefilter("ignore", RuntimeWarning)
            spread = np.nanmax(finite, axis=0) - np.nanmin(finite, axis=0)
            level = np.abs(np.nanmean(finite, axis=0))
        return [int(i) for i in np.flatnonzero(~(spread > np.maximum(level * 1e-12, np.finfo(np.float64).tiny)))]

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


def _spread_of_large(column: np.ndarray) -> tuple[float, float]:
    """``(mean, standard deviation)`` of one channel's readings (NaN ignored) computed in units of its largest
    magnitude, where the plain sums overflow float64."""
    largest = float(np.nanmax(np.abs(column)))
    with np.errstate(over="ignore", invalid="ignore"):
        unit = column / largest
        return float(np.nanmean(unit) * largest), float(np.nanstd(unit) * largest)

