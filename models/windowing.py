"""Windowing maths, pure numpy: time grid, gap filling, stretches, window placement and cutting.

Time is measured in steps of the model's sampling interval counted from the epoch; a reading belongs to the
nearest step (``step_of``: ``t`` within half a step of ``step * step_us``), so every pane, batch or streaming,
places windows on the same global grid. A window is named by its end
step ``e`` and covers steps ``e - L + 1 .. e``.

Placement inside one stretch of consecutive present steps ``[a, b]`` (``b - a + 1 >= L``):
- *grid* windows end at every step with ``e % stride == stride - 1`` in ``[a + L - 1, b]``;
- a *head* window ends at ``a + L - 1`` and a *tail* window at ``b`` (when those are not grid ends),
so every step of a stretch of at least L steps lies in some window, and steps of shorter stretches in none.
"""
from __future__ import annotations

import numpy as np


def step_of(stamps_us, step_us: int, offset_us: int = 0):
    """The grid step of each timestamp (µs since the epoch): the nearest step of the grid ``k * step_us +
    offset_us`` (half-way rounds up; ``offset_us``: a model's grid phase, ``grid_offset``). Nearest, not floor:
    devices report on the tick with a few ms of jitter either way, and a floor would put every early reading into
    the step before, leaving its own step empty and two readings in the other."""
    return (stamps_us - offset_us + step_us // 2) // step_us


def refined_step(series: list, step_us: int) -> int:
    """The sampling interval the readings keep on average: ``step_us`` (the median interval between readings)
    refined by a least-squares fit of times to step numbers within each stretch of a series whose readings come
    one interval apart (``series``: sorted int64 µs arrays, one per entity and channel; a gap or a restart at
    another phase starts a stretch with an intercept of its own, so readings at exact intervals keep theirs).
    Readings with a few ms of jitter have a median interval some µs off the interval (10,000,033 µs for 10 s with
    +-1 ms), which moves their grid a step's width off them in a month; the fit is good to far below a µs. Kept as
    it is for readings without a regular interval (the fit misses them by more than a tenth of a step, or moves
    the interval by more than 1 %). A stretch also ends at an interval further off the step than the readings'
    jitter goes (ten times the median distance, at least a thousandth of the step): local times' daily readings
    across a daylight-saving change come 23 and 25 hours apart there, which had pulled the fitted day to 86,400.82
    s and stamped windows 37 minutes and more off the readings (found by the bug hunt of time scales)."""
    stretches = []
    series = [np.asarray(stamps, dtype=np.int64) for stamps in series]
    off = [np.abs(np.diff(stamps) - step_us) for stamps in series if stamps.size >= 3]
    jitter = float(np.median(np.concatenate(off))) if off else 0.0
    tolerance = min(max(10 * jitter, 0.001 * step_us), 0.5 * step_us)
    for stamps in series:
        if stamps.size < 3:
            continue
        apart = np.abs(np.diff(stamps) - step_us) > tolerance
        for part in np.split(stamps, np.flatnonzero(apart) + 1):
            if part.size >= 3:
                n = np.arange(part.size, dtype=np.float64)
                t = (part - part[0]).astype(np.float64)
                stretches.append((n - n.mean(), t - t.mean()))
    bottom = sum(float((n * n).sum()) for n, _ in stretches)
    if bottom <= 0:
        return step_us
    step = sum(float((n * t).sum()) for n, t in stretches) / bottom
    # readings far from any grid (an irregular log) have no interval to refine: their misfit is a tenth of a step
    squares = sum(float(((t - step * n) ** 2).sum()) for n, t in stretches)
    misfit = np.sqrt(squares / sum(len(n) for n, _ in stretches))
    refined = int(round(step))
    regular = misfit <= 0.1 * step_us and refined > 0 and abs(refined - step_us) <= 0.01 * step_us
    return refined if regular else step_us


GRID_PHASE_SAMPLE = 100_000  # timestamps enough to tell a phase


def grid_offset(stamps_us, step_us: int) -> int:
    """The phase of readings taken every ``step_us``: where in a step of the grid counted from the epoch they fall,
    as the circular mean of their places (in ``(-step/2, step/2]``, rounded), so that a grid shifted by it has
    them at the middle of its steps' rounding, where jitter moves none into a neighbour's step. 0 when the
    readings keep no common phase (devices started at random times: their places spread round the step) or lie
    within a hundredth of a step of the epoch's grid (then that grid is kept, and models stay as they were)."""
    stamps = np.asarray(stamps_us, dtype=np.int64).ravel()
    if not stamps.size or step_us <= 1:
        return 0
    if stamps.size > GRID_PHASE_SAMPLE:
        stamps = stamps[np.linspace(0, stamps.size - 1, GRID_PHASE_SAMPLE).astype(np.int64)]
    angle = 2 * np.pi * (stamps % step_us) / step_us
    x, y = float(np.cos(angle).mean()), float(np.sin(angle).mean())
    if np.hypot(x, y) < 0.5:
        return 0
    # to a round number of µs, the power of ten at most a thousandth of the step (10 s: 10 ms; an hour: 1 s), so
    # that the windows' times are the readings' times, not 68 µs after them
    unit = 10 ** int(np.floor(np.log10(max(step_us // 1000, 1))))
    offset = int(round(np.arctan2(y, x) / (2 * np.pi) * step_us / unit)) * unit
    while abs(offset) > step_us // 2:  # rounding past half an odd step (33,333 µs): a unit back towards 0
        offset -= unit if offset > 0 else -unit
    return 0 if abs(offset) <= step_us // 100 else offset


def to_step_grid(steps: np.ndarray, channel_index: np.ndarray, values: np.ndarray, n_channels: int,
                 first_step: int, n_steps: int) -> np.ndarray:
    """Average readings onto the grid ``[first_step, first_step + n_steps)``: returns ``[n_steps, C]`` with NaN
    where a channel has no reading in a step. Readings outside the grid are ignored."""
    row = np.asarray(steps, dtype=np.int64) - first_step
    inside = (row >= 0) & (row < n_steps)
    # bincount adds in input order, as np.add.at would, many times faster.
    cell = row[inside] * n_channels + np.asarray(channel_index, dtype=np.int64)[inside]
    size = n_steps * n_channels
    grid_sum = np.bincount(cell, weights=np.asarray(values, dtype=np.float64)[inside],
                           minlength=size).reshape(n_steps, n_channels)
    grid_count = np.bincount(cell, minlength=size).reshape(n_steps, n_channels)
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = grid_sum / grid_count
    grid[grid_count == 0] = np.nan
    return grid


# A reading interval within this factor of the model's is scored (readings are averaged onto the model's grid);
# further off, the data are not what the model learned: the run refuses them up front (the first file's sample)
# and a pane whose readings come at such an interval is quarantined.
INTERVAL_TOLERANCE = 2.0
MIN_INTERVALS = 8  # fewer intervals than this in a pane say nothing about its sampling interval


def interval_fits(data_step_us: float, model_step_us: float) -> bool:
    """Whether readings every ``data_step_us`` can be scored by a model trained on ``model_step_us``."""
    return 1 / INTERVAL_TOLERANCE <= data_step_us / model_step_us <= INTERVAL_TOLERANCE


# Training the model further (fine-tuning) or calibrating it (held-out readings) takes readings at its own interval:
# within 1 %, the drift of a device's clock (60.001 s against 60 s), not another sampling rate.
SAME_INTERVAL_TOLERANCE = 0.01


def same_interval(data_step_us: float, model_step_us: float) -> bool:
    """Whether readings every ``data_step_us`` are at the interval ``model_step_us``, up to a clock's drift."""
    return abs(data_step_us / model_step_us - 1) <= SAME_INTERVAL_TOLERANCE


def median_interval(stamps_us: np.ndarray, channel_index: np.ndarray) -> int | None:
    """The median interval (µs) between consecutive distinct timestamps of the channel with the most readings,
    or None when it has fewer than ``MIN_INTERVALS`` such intervals. One channel, the busiest: it says how often
    the entity reports, at an eighth of the cost of sorting every channel's readings (it runs once per pane)."""
    stamps = np.asarray(stamps_us, dtype=np.int64)
    channels = np.asarray(channel_index, dtype=np.int64)
    if stamps.size <= MIN_INTERVALS:
        return None
    busiest = int(np.bincount(channels - channels.min()).argmax()) + int(channels.min())
    diffs = np.diff(np.sort(stamps[channels == busiest]))
    diffs = diffs[diffs > 0]
    return int(np.median(diffs)) if diffs.size >= MIN_INTERVALS else None


def sparse_channels(steps: np.ndarray, channel_index: np.ndarray, n_channels: int, max_gap: int) -> dict[int, int]:
    """Channels whose readings come further apart than gap filling bridges: ``{channel: median spacing in
    steps}`` for each channel whose distinct steps lie more than ``max_gap + 1`` apart at the median (a channel
    sampled every minute on a 10 s model with ``max_gap`` 3 leaves 5 missing steps between readings, so no
    window is ever complete). The median, so that an outage or two does not make a channel sparse."""
    steps = np.asarray(steps, dtype=np.int64)
    channel_index = np.asarray(channel_index, dtype=np.int64)
    found = {}
    for c in range(n_channels):
        own = np.unique(steps[channel_index == c])
        if own.size < 2:
            continue
        spacing = float(np.median(np.diff(own)))
        if spacing > max_gap + 1:
            found[c] = int(round(spacing))
    return found


def fill_short_gaps(grid: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Linearly fill runs of at most ``max_gap`` missing steps that have an observed value on both sides.

    Returns ``(filled, observed)``: ``observed`` is True where the value was measured. Longer runs, and runs at
    either end of the grid, stay NaN.
    """
    filled = grid.copy()
    observed = ~np.isnan(grid)
    if max_gap == 0:
        return filled, observed
    n = grid.shape[0]
    index = np.arange(n)
    for c in range(grid.shape[1]):
        have = observed[:, c]
        if have.all() or not have.any():
            continue
        known = index[have]
        # For each missing step: distance to the previous and next observation.
        prev_pos = np.searchsorted(known, index, side="right") - 1
        next_pos = prev_pos + 1
        missing = ~have & (prev_pos >= 0) & (next_pos < len(known))
        if not missing.any():
            continue
        lo = known[prev_pos[missing]]
        hi = known[next_pos[missing]]
        short = (hi - lo - 1) <= max_gap
        targets = index[missing][short]
        lo, hi = lo[short], hi[short]
        frac = (targets - lo) / (hi - lo)
        filled[targets, c] = grid[lo, c] + frac * (grid[hi, c] - grid[lo, c])
    return filled, observed


def stretches(present: np.ndarray) -> np.ndarray:
    """Runs of True in a 1-d mask as an int array ``[K, 2]`` of inclusive ``(start, end)`` positions."""
    present = np.asarray(present, dtype=bool)
    if present.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    padded = np.concatenate([[False], present, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return edges.reshape(-1, 2) - np.array([0, 1])


def window_end_steps(start: int, end: int, length: int, stride: int, lo: int | None = None,
                     hi: int | None = None) -> np.ndarray:
    """End steps of the windows placed in the stretch ``[start, end]`` (absolute steps, inclusive), restricted to
    ends in ``[lo, hi)`` when given. Empty when the stretch is shorter than ``length``."""
    first = start + length - 1
    if end < first:
        return np.zeros(0, dtype=np.int64)
    grid_first = first + (stride - 1 - first) % stride
    ends = np.arange(grid_first, end + 1, stride, dtype=np.int64)
    ends = np.union1d(ends, np.array([first, end], dtype=np.int64))
    if lo is not None:
        ends = ends[ends >= lo]
    if hi is not None:
        ends = ends[ends < hi]
    return ends


def covered_by_long_stretch(present: np.ndarray, length: int) -> np.ndarray:
    """True for every position that lies in a run of at least ``length`` present positions."""
    covered = np.zeros(len(present), dtype=bool)
    for start, end in stretches(present):
        if end - start + 1 >= length:
            covered[start:end + 1] = True
    return covered


def chronological_cuts(present: np.ndarray, validation_fraction: float,
                       calibration_fraction: float) -> tuple[int, int]:
    """Grid rows ``(cut_val, cut_cal)`` that cut one entity's grid into a train ``[0, cut_val)``, a validation
    ``[cut_val, cut_cal)`` and a calibration part ``[cut_cal, n)`` holding the fractions of its *present* steps:
    a gap (a night without readings, two training periods months apart) counts for nothing, so it cannot swallow
    a part. On a grid without gaps the cuts are ``int(n * (1 - v - c))`` and ``int(n * (1 - c))``."""
    rows = np.flatnonzero(np.asarray(present, dtype=bool))
    n = len(present)

    def row_of(k: int) -> int:  # the grid row before which ``k`` present steps lie
        return int(rows[k]) if k < len(rows) else n

    return (row_of(int(len(rows) * (1 - validation_fraction - calibration_fraction))),
            row_of(int(len(rows) * (1 - calibration_fraction))))


def cut_windows(series: np.ndarray, end_positions: np.ndarray, length: int) -> np.ndarray:
    """Windows ``series[e - length + 1 : e + 1]`` for each end position, as ``[N, length, ...]``.

    Uses a strided view, so only the selected windows are copied."""
    end_positions = np.asarray(end_positions, dtype=np.int64)
    if end_positions.size and (end_positions.min() < length - 1 or end_positions.max() >= len(series)):
        raise ValueError(f"window end positions must lie in [{length - 1}, {len(series) - 1}], got "
                         f"[{end_positions.min()}, {end_positions.max()}]")
    view = np.lib.stride_tricks.sliding_window_view(series, length, axis=0)  # [n - L + 1, ..., L]
    windows = view[end_positions - length + 1]
    return np.moveaxis(windows, -1, 1).copy()


def sliding_windows(series: np.ndarray, length: int, stride: int) -> np.ndarray:
    """All windows of ``length`` steps every ``stride`` steps from the start of ``series`` ``[n, C]``."""
    if len(series) < length:
        return np.zeros((0, length) + series.shape[1:], dtype=series.dtype)
    ends = np.arange(length - 1, len(series), stride)
    return cut_windows(series, ends, length)


class Grid:
    """One entity's readings on the step grid ``[first_step, first_step + n)``.

    ``values`` ``[n, C]`` has short gaps filled, ``observed`` ``[n, C]`` marks measured values and ``present``
    ``[n]`` marks steps where every channel has a value (measured or filled)."""

    __slots__ = ("first_step", "values", "observed", "present")

    def __init__(self, first_step: int, values: np.ndarray, observed: np.ndarray, present: np.ndarray):
        self.first_step = int(first_step)
        self.values = values
        self.observed = observed
        self.present = present

    def __len__(self) -> int:
        return len(self.present)


def build_grid(steps: np.ndarray, channel_index: np.ndarray, values: np.ndarray, n_channels: int, max_gap: int,
               first_step: int | None = None, last_step: int | None = None) -> Grid:
    """Resample readings (absolute ``steps``, channel positions, values) onto a grid from ``first_step`` to
    ``last_step`` inclusive (default: the readings' range), fill short gaps and mark present steps."""
    steps = np.asarray(steps, dtype=np.int64)
    if first_step is None:
        first_step = int(steps.min()) if steps.size else 0
    if last_step is None:
        last_step = int(steps.max()) if steps.size else first_step - 1
    n = max(0, last_step - first_step + 1)
    raw = to_step_grid(steps, np.asarray(channel_index, dtype=np.int64), np.asarray(values, dtype=np.float64),
                       n_channels, first_step, n)
    filled, observed = fill_short_gaps(raw, max_gap)
    return Grid(first_step, filled, observed, ~np.isnan(filled).any(axis=1))


# A channel whose float32 step at its mean level is coarser than this share of its standard deviation is cut in
# float64: float32 holds 1e12 to the nearest 131,072, which erases a signal that varies by 18 around it.
FLOAT32_RESOLUTION_SHARE = 1e-3


def window_dtype(cumulative_channels, scaler: dict | None = None) -> type:
    """What a model's windows are cut as: float32, or float64 for a model with cumulative channels, whose
    increments a float32 reading would not hold (a meter at 123,456,789 Wh is held to the nearest 8 Wh), or with
    a channel whose level is far from zero next to its spread (``scaler``: the artifact's ``{"mean", "scale"}``):
    training cuts its windows in float64, so scoring must not round away what the model learnt."""
    if cumulative_channels:
        return np.float64
    if scaler:
        mean, scale = np.abs(np.asarray(scaler["mean"], dtype=np.float64)), np.asarray(scaler["scale"], dtype=np.float64)
        if np.any(mean * 2.0 ** -24 > FLOAT32_RESOLUTION_SHARE * scale):
            return np.float64
    return np.float32


def step_increments(values: np.ndarray, columns, first: float = 0.0) -> np.ndarray:
    """``values`` ``[..., T, C]`` as float64 with each of ``columns`` replaced by its increase over the step
    before (``x[t] - x[t-1]``) and ``first`` at step 0, which has no step before in the array; other channels
    are copied unchanged. How a cumulative meter is shown to the network: a window's increments hold what its
    levels hold but the level reached, so a meter is judged by its rate wherever its count has got to.

    A fall is no measure of the rate: a meter that goes back was reset or replaced (the energy suite quarantines
    the reading, and gap filling then draws a line from the old count to the new one). Each fall counts as the
    nearest increase before it, or, when none comes before it in the array, the nearest after it (0 when every
    step falls). A NaN stays NaN."""
    out = np.array(values, dtype=np.float64, copy=True)
    columns = list(columns)
    if columns:
        out[..., 1:, columns] = _falls_as_neighbours(np.diff(out[..., columns], axis=-2))
        out[..., 0, columns] = first
    return out


def _falls_as_neighbours(increments: np.ndarray) -> np.ndarray:
    """``increments`` ``[..., T, k]`` with each negative value replaced as ``step_increments`` says."""
    fall = increments < 0
    if not fall.any():
        return increments
    n = increments.shape[-2]
    position = np.arange(n).reshape(n, 1)
    before = np.maximum.accumulate(np.where(fall, -1, position), axis=-2)  # the last step that did not fall
    after = np.flip(np.minimum.accumulate(np.flip(np.where(fall, n, position), axis=-2), axis=-2), axis=-2)
    source = np.where(before >= 0, before, after)
    filled = np.take_along_axis(increments, np.minimum(source, n - 1), axis=-2)
    return np.where(source < n, filled, 0.0)


def levels_from_increments(last: np.ndarray, increments: np.ndarray, columns) -> np.ndarray:
    """The inverse of ``step_increments`` for a forecast: ``increments`` ``[N, H, C]`` of the steps after
    windows whose last readings are ``last`` ``[N, C]``; each of ``columns`` becomes ``last`` plus the running
    sum of its increments (the meter's forecast readings), other channels are returned unchanged."""
    out = np.array(increments, dtype=np.float64, copy=True)
    columns = list(columns)
    if columns:
        out[..., columns] = np.asarray(last, dtype=np.float64)[:, None, columns] + np.cumsum(out[..., columns], axis=1)
    return out
