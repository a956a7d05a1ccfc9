"""Frozen, JSON round-tripping configuration of a detector: architecture, training and scoring."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class ArchitectureConfig:
    """The encoder-decoder network. ``forecast_horizon`` 0 means no forecasting head."""

    cell: str = "lstm"
    bidirectional: bool = False
    layers: int = 1
    units: int = 32
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    forecast_horizon: int = 0

    def __post_init__(self):
        _check(self.cell in ("lstm", "gru"), f"cell must be 'lstm' or 'gru', got {self.cell!r}")
        _check(1 <= self.layers <= 3, f"layers must be 1, 2 or 3, got {self.layers}")
        _check(self.units > 0, f"units must be > 0, got {self.units}")
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        _check(0.0 <= self.recurrent_dropout < 1.0, f"recurrent_dropout must be in [0, 1), got {self.recurrent_dropout}")
        _check(self.forecast_horizon >= 0, f"forecast_horizon must be >= 0, got {self.forecast_horizon}")


@dataclass(frozen=True)
class WindowConfig:
    """How a series is cut: ``length`` steps per window, a new window every ``stride`` steps.

    ``max_gap`` is the longest run of missing steps that is filled (linearly) and marked; a longer gap
    breaks the series into separate stretches.

    ``cumulative_channels`` names channels that only count up (a kWh meter, a counter): the network sees each
    window of them as its increase per step (``seqwatch.models.windowing.step_increments``), so a meter far
    beyond its training readings is scored by its rate, and their forecasts are integrated back into readings.
    Artifacts saved before this setting existed load without cumulative channels.
    """

    length: int = 64
    stride: int = 16
    max_gap: int = 3
    cumulative_channels: tuple = ()

    def __post_init__(self):
        _check(self.length >= 2, f"window length must be >= 2, got {self.length}")
        _check(1 <= self.stride <= self.length, f"stride must be in [1, length={self.length}], got {self.stride}")
        _check(self.max_gap >= 0, f"max_gap must be >= 0, got {self.max_gap}")
        _check(not isinstance(self.cumulative_channels, str),
               f"cumulative_channels must be a sequence of channel names, got {self.cumulative_channels!r}")
        names = tuple(str(c) for c in self.cumulative_channels)  # a JSON list comes back as a list
        _check(len(set(names)) == len(names), f"cumulative_channels names a channel twice: {list(names)}")
        object.__setattr__(self, "cumulative_channels", names)


@dataclass(frozen=True)
class TrainingConfig:
    """Training follows common practice for recurrent autoencoders (see models/training.py)."""

    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 2e-3
    clipnorm: float = 1.0
    patience: int = 5
    validation_fraction: float = 0.15
    calibration_fraction: float = 0.15
    seed: int = 7
    training_stride: int = 4

    def __post_init__(self):
        _check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        _check(self.clipnorm > 0, f"clipnorm must be > 0, got {self.clipnorm}")
        _check(self.patience >= 1, f"patience must be >= 1, got {self.patience}")
        for name in ("validation_fraction", "calibration_fraction"):
            value = getattr(self, name)
            _check(0.05 <= value <= 0.4, f"{name} must be in [0.05, 0.4], got {value}")
        _check(self.training_stride >= 1, f"training_stride must be >= 1, got {self.training_stride}")


@dataclass(frozen=True)
class ScoringConfig:
    """Thresholding and forecast intervals.

    ``threshold_method``: ``"quantile"`` (the ``threshold_quantile`` of calibration scores) or ``"pot"``
    (peaks over threshold: a generalised Pareto tail fitted above ``pot_initial_quantile``, threshold at tail
    probability ``pot_risk``).

    ``one_sided``: a window scores high only when a channel is reconstructed *worse* than on normal windows
    (error features below their normal mean count as the mean). The two-sided default also flags windows the
    model reconstructs unusually *well*, which catches a signal that goes flat but flags quiet spells (a night
    with few events, an appliance switched off). Artifacts saved before this setting existed load as two-sided.

    ``error_floor_quantile``: None keeps the error features' floor at 1e-6. A value q sets each channel's floor
    to the q-quantile of the reconstruction RMS of validation windows in which the channel is not constant
    (``seqwatch.models.scoring.error_floor``), for on/off signals whose "off" windows are reconstructed almost
    exactly and would otherwise make every "on" window look anomalous.
    """

    threshold_method: str = "pot"
    threshold_quantile: float = 0.995
    pot_initial_quantile: float = 0.95
    pot_risk: float = 1e-3
    interval_coverage: float = 0.9
    one_sided: bool = False
    error_floor_quantile: float | None = None

    def __post_init__(self):
        _check(self.threshold_method in ("quantile", "pot"),
               f"threshold_method must be 'quantile' or 'pot', got {self.threshold_method!r}")
        _check(0.5 < self.threshold_quantile < 1, f"threshold_quantile must be in (0.5, 1), got {self.threshold_quantile}")
        _check(0.5 < self.pot_initial_quantile < 1,
               f"pot_initial_quantile must be in (0.5, 1), got {self.pot_initial_quantile}")
        _check(0 < self.pot_risk < 1 - self.pot_initial_quantile,
               f"pot_risk must be in (0, {1 - self.pot_initial_quantile:g}), got {self.pot_risk}")
        _check(0.5 <= self.interval_coverage < 1, f"interval_coverage must be in [0.5, 1), got {self.interval_coverage}")
        _check(isinstance(self.one_sided, bool), f"one_sided must be True or False, got {self.one_sided!r}")
        _check(self.error_floor_quantile is None or 0 < self.error_floor_quantile < 1,
               f"error_floor_quantile must be None or in (0, 1), got {self.error_floor_quantile}")


@dataclass(frozen=True)
class DetectorConfig:
    """Everything needed to rebuild and retrain a detector; stored in the model artifact."""

    architecture: ArchitectureConfig = field(default_factory=ArchitectureConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)

    def to_dict(self) -> dict:
        """The config as JSON-ready values. ``cumulative_channels`` is left out when empty, so that an artifact
        without cumulative channels stays readable by a seqwatch from before the setting (one with them is refused
        there, rather than scored wrongly)."""
        data = dataclasses.asdict(self)
        if not self.window.cumulative_channels:
            del data["window"]["cumulative_channels"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "DetectorConfig":
        parts = {"architecture": ArchitectureConfig, "window": WindowConfig,
                 "training": TrainingConfig, "scoring": ScoringConfig}
        unknown = set(data) - set(parts)
        _check(not unknown, f"unknown detector config sections: {sorted(unknown)}")
        return cls(**{name: parts[name](**data.get(name, {})) for name in parts})

    @classmethod
    def from_json(cls, text: str) -> "DetectorConfig":
        return cls.from_dict(json.loads(text))
