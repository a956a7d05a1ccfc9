"""Realistic multi-entity sensor data with injected, labelled anomalies (for the demo, tests and benchmarks).

Each entity is a pump-like machine with four correlated channels driven by a shared load cycle:
``temperature`` (°C), ``pressure`` (bar), ``vibration`` (g RMS) and ``flow`` (l/min), plus sensor noise.
Anomaly kinds: ``spike`` (a few extreme readings on one channel), ``level_shift`` (one channel offset),
``frequency_change`` (the load cycle speeds up on every channel), ``flatline`` (one channel stuck) and
``broken_channel`` (one channel loses its relation to the load and turns to noise). Every random draw comes
from one seeded generator, so the same arguments give the same data.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

CHANNELS = ("flow", "pressure", "temperature", "vibration")
ANOMALY_KINDS = ("spike", "level_shift", "frequency_change", "flatline", "broken_channel")
_START = pd.Timestamp("2026-01-05T00:00:00Z")


def _entity_signals(rng: np.random.Generator, n: int, period: float, phase: float, freq_factor: np.ndarray):
    t = np.arange(n)
    cycle_pos = np.cumsum(freq_factor) * 2 * np.pi / period + phase
    load = np.sin(cycle_pos) + 0.35 * np.sin(3 * cycle_pos + 0.7)
    drift = np.cumsum(rng.normal(0, 0.02, n))
    span = min(200, n)
    drift -= np.convolve(drift, np.ones(span) / span, mode="same")  # keep the random walk bounded
    signals = {
        "temperature": 60 + 6 * load + 0.8 * drift + rng.normal(0, 0.3, n),
        "pressure": 3.0 + 0.5 * load + rng.normal(0, 0.04, n),
        "vibration": 0.5 + 0.12 * np.abs(load) + 0.04 * np.sin(2 * np.pi * t / 11) + rng.normal(0, 0.015, n),
        "flow": 100 + 18 * load + rng.normal(0, 1.2, n),
    }
    return np.stack([signals[c] for c in CHANNELS], axis=1)


def generate_sensor_data(n_entities: int = 4, n_steps: int = 2000, step_seconds: int = 10,
                         anomalies_per_entity: int = 0, seed: int = 0, kinds: tuple = ANOMALY_KINDS,
                         start: pd.Timestamp = _START) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(readings, labels)``.

    ``readings``: long format ``entity_id, channel, timestamp (UTC datetime), value``.
    ``labels``: one row per injected anomaly: ``entity_id, kind, channel ('' for all), start, end`` (inclusive
    timestamps), ``start_step, end_step`` (positions in the entity's series).
    """
    if n_entities < 1 or n_steps < 10 or step_seconds < 1:
        raise ValueError(f"need n_entities >= 1, n_steps >= 10, step_seconds >= 1; got {n_entities}, {n_steps}, "
                         f"{step_seconds}")
    unknown = set(kinds) - set(ANOMALY_KINDS)
    if unknown:
        raise ValueError(f"unknown anomaly kinds {sorted(unknown)}; choose from {list(ANOMALY_KINDS)}")
    rng = np.random.default_rng(seed)
    frames, labels = [], []
    times = start + pd.to_timedelta(np.arange(n_steps) * step_seconds, unit="s")
    for e in range(n_entities):
        entity = f"pump-{e + 1:02d}"
        period = rng.uniform(90, 150)
        phase = rng.uniform(0, 2 * np.pi)
        freq = np.ones(n_steps)
        events = []
        if anomalies_per_entity:
            # Spread anomalies evenly, with random jitter, away from the series' first 200 steps.
            slots = np.linspace(200, n_steps - 120, anomalies_per_entity + 1)
            for k in range(anomalies_per_entity):
                kind = kinds[(e + k) % len(kinds)]
                s = int(rng.uniform(slots[k], max(slots[k] + 1, slots[k + 1] - 110)))
                length = {"spike": 2, "level_shift": 60, "frequency_change": 90, "flatline": 80,
                          "broken_channel": 80}[kind]
                channel = "" if kind == "frequency_change" else CHANNELS[int(rng.integers(len(CHANNELS)))]
                events.append((kind, channel, s, min(n_steps - 1, s + length - 1)))
                if kind == "frequency_change":
                    freq[s:s + length] = 2.5
        values = _entity_signals(rng, n_steps, period, phase, freq)
        std = values.std(axis=0)
        for kind, channel, s, end in events:
            c = CHANNELS.index(channel) if channel else None
            if kind == "spike":
                values[s:end + 1, c] += rng.choice([-1, 1]) * 7 * std[c]
            elif kind == "level_shift":
                values[s:end + 1, c] += rng.choice([-1, 1]) * 2.5 * std[c]
            elif kind == "flatline":
                values[s:end + 1, c] = values[s, c]
            elif kind == "broken_channel":
                values[s:end + 1, c] = values[:, c].mean() + rng.normal(0, 1.2 * std[c], end - s + 1)
            labels.append({"entity_id": entity, "kind": kind, "channel": channel, "start": times[s],
                           "end": times[end], "start_step": s, "end_step": end})
        frame = pd.DataFrame(values, columns=list(CHANNELS))
        frame["timestamp"] = times
        frame = frame.melt(id_vars="timestamp", var_name="channel", value_name="value")
        frame.insert(0, "entity_id", entity)
        frames.append(frame)
    readings = pd.concat(frames, ignore_index=True)[["entity_id", "channel", "timestamp", "value"]]
    label_frame = pd.DataFrame(labels, columns=["entity_id", "kind", "channel", "start", "end", "start_step",
                                                "end_step"])
    return readings, label_frame
