"""The detector's life cycle: fit on normal history, calibrate, score windows, forecast, save and load.

``Seq2SeqDetector`` ties the pieces together and knows nothing about Beam: the Keras network
(``builders``), training (``training``), scaling, the Mahalanobis window scorer (``scoring``), the
threshold and tail calibration (``thresholds``) and conformal forecast intervals (``intervals``).

Data handed to ``fit`` is long format: a DataFrame with ``entity_id``, ``channel``, ``timestamp`` (int µs or
datetime) and ``value``. Each entity's timeline is split chronologically: the first part trains the network,
the next part (validation) drives early stopping and fits the score's error distribution, the last part
(calibration) sets the threshold, the severity scale and the forecast intervals.
"""
from __future__ import annotations

import hashlib
import math
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from seqwatch.models import windowing
from seqwatch.models.config import DetectorConfig
from seqwatch.models.intervals import ConformalIntervals
from seqwatch.models.scaling import ChannelScaler
from seqwatch.models.scoring import MahalanobisScorer, error_floor, reconstruction_errors, window_error_features
from seqwatch.models.thresholds import TailCalibration, fit_threshold, severity_of

PREDICT_BATCH = 512  # fixed batch shape: JAX compiles once per input shape; 512 measured fastest on 2 cores


class ModelMismatchError(ValueError):
    """The data asked of a model do not fit it (channels, sampling interval, window shape)."""


class TrainingDataWarning(UserWarning):
    """Something in the training readings that limits what the model can judge (``seqwatch train`` prints each as
    a note; ``metrics["training_notes"]`` keeps them)."""


# A threshold at or below this is no threshold: the calibration windows all scored (about) the same.
ZERO_THRESHOLD = 1e-6


def zero_threshold_note(threshold: float) -> str:
    return (f"the threshold is {threshold:.3g}: the calibration windows (the end of each entity's history) all "
            f"score alike, as where the signal is idle there, so every window that differs from them will alert; "
            f"give normal readings with the signal's usual activity as --holdout-input (the validation and "
            f"calibration part), or a history whose end is not idle")


def coverage_note(attained: float, asked: float, windows: int) -> str:
    """One sentence on forecast intervals that cannot cover as often as asked with so few calibration windows."""
    need = math.ceil(asked / (1.0 - asked) - 1e-9)
    return (f"the forecast intervals are sure to cover {attained:.1%} of new readings, not the {asked:.1%} asked "
            f"for: {windows} calibration windows hold no residual that rare (that needs {need} or more), so the "
            f"forecasts' coverage says {attained:.1%}; give a longer history, or a lower --coverage")


# A POT threshold this far above every calibration score was extrapolated by the tail fit, not measured.
EXTRAPOLATED_THRESHOLD_FACTOR = 1.5


def extrapolated_threshold_note(threshold: float, windows: int, highest: float, scoring) -> str | None:
    """One sentence on a peaks-over-threshold threshold that the tail fit put far beyond every calibration score
    (``highest``), from fewer windows than its risk needs to be measured (``scoring``: the ``ScoringConfig``); None
    when it was not."""
    risk = scoring.pot_risk
    if not (scoring.threshold_method == "pot" and windows * risk < 1 and highest > 0
            and threshold > EXTRAPOLATED_THRESHOLD_FACTOR * highest):
        return None
    return (f"the threshold {threshold:.3g} rests on {windows} calibration windows, fewer than the {1 / risk:.0f} a "
            f"risk of {risk:g} needs to be measured: the tail fit extrapolates it to {threshold / highest:.1f} times "
            f"the highest calibration score ({highest:.3g}), so windows that score up to there do not alert; give "
            f"more history (the calibration windows are the last 15% of each entity's) or more held-out normal "
            f"readings (--holdout-input)")


def constant_channel_note(channels: list, cumulative=()) -> str:
    """One sentence on channels that were constant in training (a ``cumulative`` one: its increase per step, as
    the model learns it; a meter that only falls has none): what it means for scoring, and what to do."""
    many = len(channels) > 1
    names = ", ".join(repr(c) + (" (its increase per step: --cumulative)" if c in cumulative else "")
                      for c in channels)
    return (f"channel{'s' if many else ''} {names} held one value throughout the training readings, so the model "
            f"cannot tell how unusual a change of {'them' if many else 'it'} is (it counts a change of 1 as one "
            f"standard deviation); train on history in which {'they vary' if many else 'it varies'}, or leave "
            f"{'them' if many else 'it'} out (--ignore {' --ignore '.join(channels)})")


def rising_channels(values_per_entity: list, channels: tuple) -> dict:
    """``{channel: (lowest, highest)}`` of the channels that never went down in any entity's training rows (each
    ``[rows, C]`` in time order) and rose in at least one: a cumulative meter (kWh, a counter). Measured sensors
    wobble, so exactly never going down over at least 10 rows is the mark."""
    rising = {}
    for c, name in enumerate(channels):
        series = [v[:, c][np.isfinite(v[:, c])] for v in values_per_entity]
        series = [x for x in series if len(x) >= 2]
        if sum(len(x) for x in series) < 10 or not series:
            continue
        if all((np.diff(x) >= 0).all() for x in series) and any(x[-1] > x[0] for x in series):
            rising[name] = (float(min(x[0] for x in series)), float(max(x[-1] for x in series)))
    return rising


def falling_channels(values_per_entity: list, channels: tuple, cumulative: tuple) -> dict:
    """``{channel: (falls, steps, largest fall)}`` of the ``cumulative`` channels that went down between readings
    of an entity's training rows (each ``[rows, C]`` in time order): what a meter does not do."""
    falling = {}
    for name in cumulative:
        c = channels.index(name)
        steps = [np.diff(x) for x in (v[:, c][np.isfinite(v[:, c])] for v in values_per_entity) if len(x) >= 2]
        falls = [d[d < 0] for d in steps]
        count = sum(len(f) for f in falls)
        if count:
            falling[name] = (count, sum(len(d) for d in steps), float(-min(f.min() for f in falls if len(f))))
    return falling


def falling_channel_note(falling: dict) -> str:
    """One sentence on channels declared cumulative that went down in training more often than resets explain."""
    many = len(falling) > 1
    spans = ", ".join(f"{name!r} ({falls} of {steps} steps, by up to {drop:.6g})"
                      for name, (falls, steps, drop) in falling.items())
    return (f"the cumulative channel{'s' if many else ''} {spans} went down in the training readings, more often than "
            f"a meter's resets or replacements would: the model counts each fall as the increase before it, so it "
            f"will not alert on {'them' if many else 'it'} going down; if "
            f"{'they are not meters' if many else 'it is not a meter'}, train without --cumulative "
            f"{' --cumulative '.join(falling)}")


# A note when a cumulative channel falls in more than this share of its training steps: a meter's resets are rarer.
FALLING_NOTE_SHARE = 0.01


def entities_lacking_channels(frame: pd.DataFrame, channels: tuple) -> dict:
    """``{entity: [channels it has no reading of]}`` for the entities of a long frame that lack some of
    ``channels``: none of their windows is complete, so none trains or calibrates the model."""
    have = frame.assign(channel=frame["channel"].astype(str)).groupby("entity_id", observed=True)["channel"].unique()
    return {str(entity): [c for c in channels if c not in set(present)] for entity, present in have.items()
            if not set(channels) <= set(present)}


def lacking_channels_note(lacking: dict, channels: tuple) -> str:
    """One sentence on entities whose readings could not train the model because they lack some channels."""
    many = len(lacking) > 1
    shown = ", ".join(f"{entity!r} (no {', '.join(map(repr, missing))})" for entity, missing in
                      list(lacking.items())[:5]) + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
    their, they = ("their", "they report") if many else ("its", "it reports")
    return (f"{'entities' if many else 'entity'} {shown} did not report every channel of the model, so none of "
            f"{their} readings trained it (every window needs all of {list(channels)}); a run will quarantine "
            f"{their} readings as insufficient_data too: train a model of the channels {they} (--channel), or leave "
            f"{'them' if many else 'it'} out")


# A note when more than this share of the training readings share a grid step with another reading of their channel.
SHARED_STEP_NOTE_SHARE = 0.01


def shared_steps(frame: pd.DataFrame, channels: tuple, step_us: int, offset_us: int = 0) -> int:
    """How many readings of a long frame fall into a grid step that holds an earlier reading (another timestamp)
    of the same entity and channel, with which they are averaged onto the grid (``windowing.step_of``)."""
    shared = 0
    for _, part, steps, positions in entity_steps(frame, channels, step_us, offset_us):
        cells = pd.DataFrame({"cell": steps * len(channels) + positions,
                              "stamp": as_micros(part["timestamp"])}).drop_duplicates()
        shared += len(cells) - cells["cell"].nunique()
    return int(shared)


def shared_steps_note(shared: int, readings: int, step_us: int) -> str:
    """One sentence on training readings averaged with another of their channel in one step of the grid."""
    return (f"{shared} of the {readings} readings ({shared / readings:.1%}) fell into a step of the model's grid "
            f"(every {step_us / 1e6:g}s, at the readings' common phase) that already held a reading of their "
            f"channel, and were averaged with it, while as many steps were filled in between: readings without a "
            f"common phase (devices of several phases in one model), an interval that is not a whole number of µs "
            f"(360 Hz), or one that is not fixed (calendar months) do that; readings resampled to a fixed interval "
            f"are scored as they were read")


def rising_channel_note(rising: dict) -> str:
    """One sentence on channels that only rose in training, as cumulative meters do."""
    many = len(rising) > 1
    spans = ", ".join(f"{name!r} (from {low:.6g} to {high:.6g})" for name, (low, high) in rising.items())
    return (f"channel{'s' if many else ''} {spans} never went down in the training readings, as a cumulative meter "
            f"does: later readings will lie beyond anything the model saw, and their windows will alert; if "
            f"{'they are meters' if many else 'it is a meter'}, model {'their' if many else 'its'} rate "
            f"(--cumulative {' --cumulative '.join(rising)}: WindowConfig.cumulative_channels), or leave "
            f"{'them' if many else 'it'} out (--ignore {' --ignore '.join(rising)})")


class InsufficientDataError(ValueError):
    """Too little normal data to train and calibrate a detector."""


class TrainingParts(NamedTuple):
    """What ``Seq2SeqDetector`` cuts from training readings: the ``windows`` of each part (``train``,
    ``validation``, ``calibration``), each entity's present training ``rows`` (for the notes on constant and
    rising channels), and the same rows as the scaler sees them (``scaler_rows``: cumulative channels as
    increments, NaN where the step before is missing)."""

    windows: dict
    rows: list
    scaler_rows: list


@dataclass(frozen=True)
class WindowScores:
    """Scores of N windows; ``forecast``/``lower``/``upper`` are ``[N, H, C]`` or None without a forecast head."""

    score: np.ndarray
    contributions: np.ndarray
    is_anomaly: np.ndarray
    tail_probability: np.ndarray
    severity: np.ndarray
    forecast: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None


def infer_step_us(frame: pd.DataFrame) -> int:
    """The median interval between consecutive readings of the same entity and channel, in µs (whatever the
    unit of a datetime column: pandas stores s, ms, µs or ns)."""
    ordered = frame.assign(timestamp=as_micros(frame["timestamp"])).sort_values(["entity_id", "channel", "timestamp"])
    same = (ordered["entity_id"].to_numpy()[1:] == ordered["entity_id"].to_numpy()[:-1]) & (
        ordered["channel"].to_numpy()[1:] == ordered["channel"].to_numpy()[:-1])
    diffs = np.diff(ordered["timestamp"].to_numpy(dtype=np.int64))[same]
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        raise InsufficientDataError("cannot infer the sampling interval: no entity has two readings of a channel")
    return int(np.median(diffs))


def _refined_step(frame: pd.DataFrame, step_us: int) -> int:
    """``windowing.refined_step`` of a long frame's series (its entities' channels)."""
    stamps = frame.assign(timestamp=as_micros(frame["timestamp"]))
    series = [np.unique(part.to_numpy(dtype=np.int64))
              for _, part in stamps.groupby(["entity_id", "channel"], observed=True, sort=False)["timestamp"]]
    return windowing.refined_step(series, step_us)


# A numeric date whose day and month could be either way round (05/01/2026); the pipelines refuse it too.
_DAY_MONTH_DATE = r"^\s*\d{1,2}[./-]\d{1,2}[./-]\d{2,4}\b"

# Numbers are µs since the epoch. No unit is guessed: a slice of a relative µs grid (rows 450 to 8,640 of a series,
# 4.5e8 to 8.6e9 µs) looks like epoch seconds by its magnitude alone. Epoch seconds read as µs come every few
# µs instead; ``fit`` and ``score_frame`` say so (``numeric_interval_hint``).
NUMERIC_TIMES_HINT = ("the timestamps are numbers, read as µs since the epoch; if they are epoch seconds or "
                      "milliseconds, convert them first: frame['timestamp'] = pd.to_datetime(frame['timestamp'], "
                      "unit='s') (or unit='ms')")


def as_micros(timestamps: pd.Series) -> np.ndarray:
    """µs since the epoch of int µs or datetime values of any unit (naive datetimes are UTC); a column of
    ``pd.Timestamp`` objects or of date texts is read as datetimes. Raises ValueError in one sentence
    when a value is none of these or missing, and for a day/month-ambiguous numeric date (``05/01/2026``), which
    pandas would read either way round from one row to the next: parse those with ``pd.to_datetime(...,
    format=...)`` first."""
    if not (pd.api.types.is_datetime64_any_dtype(timestamps) or pd.api.types.is_numeric_dtype(timestamps)) \
            or pd.api.types.is_bool_dtype(timestamps):
        text = timestamps.astype("string")
        ambiguous = text.str.match(_DAY_MONTH_DATE).fillna(False).to_numpy(dtype=bool)
        if ambiguous.any():
            raise ValueError(f"{text.iloc[int(np.flatnonzero(ambiguous)[0])]!r} could be day/month or month/day; "
                             f"parse the timestamps with pd.to_datetime(..., format='%d/%m/%Y %H:%M:%S') (or the "
                             f"format they have) first")
        try:
            timestamps = pd.to_datetime(timestamps, utc=True, format="mixed")
        except (ValueError, TypeError, OverflowError):
            raise ValueError("timestamps must be datetimes, date texts or int µs since the epoch; "
                             f"{str(timestamps.iloc[0])[:40]!r} and others are not") from None
    missing = timestamps.isna().to_numpy()
    if missing.any():  # NaT would become the smallest int64: a grid from 292,000 BC
        raise ValueError(f"{int(missing.sum())} of {len(missing)} timestamps are missing (the first at index "
                         f"{timestamps.index[int(np.flatnonzero(missing)[0])]!r}); drop those readings or fill in "
                         f"their times")
    if pd.api.types.is_datetime64_any_dtype(timestamps):
        ts = timestamps if timestamps.dt.tz is not None else timestamps.dt.tz_localize("UTC")
        return ts.dt.tz_convert("UTC").dt.as_unit("us").astype("int64").to_numpy()
    if not np.isfinite(timestamps.to_numpy(dtype=np.float64)).all():
        raise ValueError("timestamps must be finite numbers of µs since the epoch")
    return timestamps.to_numpy(dtype=np.int64)


def _check_columns(frame: pd.DataFrame) -> None:
    """Raise ValueError in one sentence when ``frame`` is not long-format readings."""
    missing = {"entity_id", "channel", "timestamp", "value"} - set(frame.columns)
    if missing:
        hint = ""
        if "timestamp" in missing and isinstance(frame.index, pd.DatetimeIndex):
            hint = "; their times are the frame's index: pass frame.rename_axis('timestamp').reset_index()"
        raise ValueError(f"the readings lack columns {sorted(missing)} (long format: entity_id, channel, timestamp, "
                         f"value){hint}")
    # counted over the frame here: counted per entity later, the sentence had said "1 of 1200" of 2400 readings
    absent = frame["timestamp"].isna().to_numpy(dtype=bool)
    if absent.any():
        raise ValueError(f"{int(absent.sum())} of {len(absent)} timestamps are missing (the first at index "
                         f"{frame.index[int(np.flatnonzero(absent)[0])]!r}); drop those readings or fill in their "
                         f"times")


def _check_entity_intervals(frame: pd.DataFrame, step_us: int, given: bool = False) -> None:
    """Raise ``ModelMismatchError`` when some entity's readings come more than 2x faster or slower than
    ``step_us``: one model learns one sampling interval (the pipelines quarantine such entities' panes). The
    sentence gives every entity's interval, grouped, commonest first; ``given``: ``step_us`` was set by the caller,
    not inferred from the readings (then it is named as the model's interval)."""
    intervals = {}
    for entity, part in frame.groupby("entity_id", sort=True, observed=True):
        try:
            intervals[str(entity)] = infer_step_us(part)
        except InsufficientDataError:
            continue
    if all(windowing.interval_fits(interval, step_us) for interval in intervals.values()):
        return
    groups: dict[str, list] = {}  # by the interval as shown: a few ms of jitter is the same interval
    for entity, interval in intervals.items():
        groups.setdefault(f"{interval / 1e6:g}", []).append(entity)

    def named(entities: list) -> str:
        return ", ".join(entities[:3]) + (f" and {len(entities) - 3} more" if len(entities) > 3 else "")

    shown = "; ".join(f"{named(entities)} every {seconds}s"
                      for seconds, entities in sorted(groups.items(), key=lambda kv: (-len(kv[1]), float(kv[0]))))
    head = (f"the model's interval is {step_us / 1e6:g}s, but not every entity of the training data is read at it"
            if given else "the training data's entities are read at different intervals")
    raise ModelMismatchError(f"{head}: {shown}: train one model per sampling interval, or resample the data")


def entity_grids(frame: pd.DataFrame, channels: tuple, step_us: int, max_gap: int,
                 offset_us: int = 0) -> dict[str, windowing.Grid]:
    """Resample a long-format frame into one grid per entity, channels in ``channels`` order, on the grid of
    ``step_us`` at phase ``offset_us`` (``windowing.step_of``). Channels are matched by name (``str``, as ``fit``
    names them); a value that is not a finite number is missing, as the pipelines' parser quarantines it."""
    grids = {}
    for entity, part, steps, positions in entity_steps(frame, channels, step_us, offset_us):
        _check_grid_span(entity, steps, step_us)
        values = pd.to_numeric(part["value"], errors="coerce").to_numpy(dtype=np.float64)
        values = np.where(np.isfinite(values), values, np.nan)
        grids[entity] = windowing.build_grid(steps, positions, values, len(channels), max_gap)
    return grids


# An entity's readings are cut into parts at gaps of more than this many steps (no window spans such a gap, and a
# grid across it costs tens of MB a channel: 100 Hz sessions days apart), where both sides hold at least
# MIN_PART_TIMES times with readings (a few readings of a clock that was never set stay with their neighbours, for
# _check_grid_span to refuse).
GRID_SPLIT_GAP_STEPS = 1_000_000
MIN_PART_TIMES = 100


def entity_grid_parts(frame: pd.DataFrame, channels: tuple, step_us: int, max_gap: int,
                      offset_us: int = 0) -> dict[str, list[windowing.Grid]]:
    """``entity_grids``, each entity's grid cut into parts, in time order, at gaps of more than
    ``GRID_SPLIT_GAP_STEPS`` steps: the same windows, without the memory for every step of such a gap."""
    grids = {}
    for entity, part, steps, positions in entity_steps(frame, channels, step_us, offset_us):
        values = pd.to_numeric(part["value"], errors="coerce").to_numpy(dtype=np.float64)
        values = np.where(np.isfinite(values), values, np.nan)
        pieces = []
        for lo, hi in _part_bounds(steps):
            inside = (steps >= lo) & (steps <= hi)
            _check_grid_span(entity, steps[inside], step_us)
            pieces.append(windowing.build_grid(steps[inside], positions[inside], values[inside], len(channels),
                                               max_gap))
        grids[entity] = pieces
    return grids


def _part_bounds(steps: np.ndarray) -> list[tuple[int, int]]:
    """``[(first step, last step)]`` of the parts of one entity's steps (see ``GRID_SPLIT_GAP_STEPS``)."""
    times = np.unique(steps)
    if not times.size:
        return []
    gaps = np.flatnonzero(np.diff(times) > GRID_SPLIT_GAP_STEPS)
    starts = [0]
    for g in gaps:
        if g + 1 - starts[-1] >= MIN_PART_TIMES and times.size - (g + 1) >= MIN_PART_TIMES:
            starts.append(int(g + 1))
    ends = starts[1:] + [times.size]
    return [(int(times[a]), int(times[b - 1])) for a, b in zip(starts, ends)]


def _chronological_part_cuts(parts: list, validation_fraction: float, calibration_fraction: float) -> list:
    """``windowing.chronological_cuts`` of one entity's grid parts taken together: ``[(cut_val, cut_cal)]`` rows of
    each part, so that the parts in time order hold the train, validation and calibration fractions of the
    entity's present steps, as one grid would."""
    counts = [int(np.count_nonzero(grid.present)) for grid in parts]
    total = sum(counts)
    marks = (int(total * (1 - validation_fraction - calibration_fraction)), int(total * (1 - calibration_fraction)))
    cuts, before = [], 0
    for grid, count in zip(parts, counts):
        rows = np.flatnonzero(grid.present)

        def row_of(k: int) -> int:  # the part's row before which the entity's k-th present step lies
            local = k - before
            return 0 if local < 0 else int(rows[local]) if local < count else len(grid)

        cuts.append(tuple(row_of(k) for k in marks))
        before += count
    return cuts


# An entity's grid holds every step from its first reading to its last. One far beyond 1,000 steps per time with
# readings, and longer than 10M steps (hundreds of MB a channel), comes from a timestamp that is wrong (a clock that
# was never set); the pipelines quarantine such readings before their horizon, a notebook's frame is not validated.
SPARSE_GRID_MIN_STEPS = 10_000_000
SPARSE_GRID_FACTOR = 1_000


def _check_grid_span(entity: str, steps: np.ndarray, step_us: int) -> None:
    span = int(steps.max() - steps.min()) + 1 if steps.size else 0
    if span <= SPARSE_GRID_MIN_STEPS:
        return
    times = np.unique(steps).size
    if span > SPARSE_GRID_FACTOR * times:
        first, last = (_minute_text(int(s) * step_us) for s in (steps.min(), steps.max()))
        raise ValueError(f"entity {entity!r}: its readings span {first} to {last}, "
                         f"{span:,} steps of {step_us / 1e6:g}s for {times:,} times with readings; a timestamp is "
                         f"likely wrong (a clock that was never set, or a time in another unit): drop such readings "
                         f"first")


def _minute_text(micros: int) -> str:
    """A time to the minute (``2026-03-02 00:39``), also far outside pandas' range (a time written in ns read as
    µs), where the µs number itself is given."""
    try:
        return str(np.datetime_as_string(np.datetime64(micros, "us"), unit="m")).replace("T", " ")
    except (ValueError, OverflowError):
        return f"{micros} µs since the epoch"


def entity_steps(frame: pd.DataFrame, channels: tuple, step_us: int, offset_us: int = 0):
    """``(entity, rows, grid steps, channel positions)`` per entity of a long-format frame, in entity order, for the
    rows of ``channels`` (matched by name, ``str``), on the grid of ``step_us`` at phase ``offset_us``."""
    position = {name: i for i, name in enumerate(channels)}
    column = frame["channel"].astype(str).map(position)
    known = frame.assign(_position=column)[column.notna().to_numpy()]
    for entity, part in known.groupby("entity_id", sort=True, observed=True):
        yield (str(entity), part, windowing.step_of(as_micros(part["timestamp"]), step_us, offset_us),
               part["_position"].to_numpy(dtype=np.int64))


def _segment_windows(grid: windowing.Grid, lo: int, hi: int, length: int, stride: int) -> np.ndarray:
    """All windows of ``length`` steps every ``stride`` steps inside grid rows ``[lo, hi)`` that contain only
    present steps."""
    out = []
    for start, end in windowing.stretches(grid.present[lo:hi]):
        if end - start + 1 >= length:
            out.append(windowing.sliding_windows(grid.values[lo + start:lo + end + 1], length, stride))
    if not out:
        return np.zeros((0, length, grid.values.shape[1]), dtype=np.float64)
    return np.concatenate(out)


class Seq2SeqDetector:
    """A seq2seq autoencoder with its scaler, scorer, threshold and intervals.

    Build one with ``Seq2SeqDetector(config)`` then ``fit(frame)``, or load one with
    ``seqwatch.models.artifact.load_artifact``.
    """

    def __init__(self, config: DetectorConfig | None = None, model_id: str = "seqwatch"):
        self.config = config or DetectorConfig()
        self.model_id = model_id
        self.model = None
        self.channels: tuple = ()
        self.step_us: int = 0
        self.grid_offset_us: int = 0  # the grid's phase: steps lie at k * step_us + grid_offset_us (windowing)
        self.scaler: ChannelScaler | None = None
        self.scorer: MahalanobisScorer | None = None
        self.tail: TailCalibration | None = None
        self.threshold: float = float("nan")
        self.intervals: ConformalIntervals | None = None
        # {channel: (low, high)} a reading must lie in (None: no bound on that side), as the suite the model was
        # trained with bounds it (schemas.validation.channel_value_bounds): forecasts and their intervals stay
        # inside, since a reading outside would be quarantined, not scored
        self.value_bounds: dict = {}
        # the suite the model was trained with (a bundled family's name or a file's absolute path), which a
        # fine-tuning without --suite judges its readings by; None for a model saved before it was kept
        self.training_suite: str | None = None
        self.fingerprint: str = ""
        # (first, last) time in µs of the readings of the model's channels that its trainings saw: the fit's, and
        # each fine-tuning's after it; None for a model saved before it was kept. ``seqwatch train --skip-stale``
        # compares a fine-tuning's readings with it.
        self.readings_span_us: tuple[int, int] | None = None
        self.metrics: dict = {}
        self.history: dict = {}
        self.model_version: str = ""
        self._predict_lock = threading.Lock()

    # ----------------------------------------------------------------------------------------- properties
    @property
    def window_length(self) -> int:
        return self.config.window.length

    @property
    def horizon(self) -> int:
        return self.config.architecture.forecast_horizon

    @property
    def is_fitted(self) -> bool:
        return self.model is not None and self.scorer is not None

    @property
    def window_dtype(self) -> type:
        """What windows are cut as (``windowing.window_dtype``: float64 with cumulative channels, or a channel far
        from zero next to its spread)."""
        return windowing.window_dtype(self.config.window.cumulative_channels,
                                      self.scaler.to_dict() if self.scaler is not None else None)

    @property
    def _cumulative(self) -> list:
        """The positions of the cumulative channels (``WindowConfig.cumulative_channels``) among ``channels``."""
        return [self.channels.index(c) for c in self.config.window.cumulative_channels if c in self.channels]

    def _network_input(self, windows: np.ndarray) -> np.ndarray:
        """Windows in original units as the scaler and network take them: cumulative channels as increments."""
        cumulative = self._cumulative
        return windowing.step_increments(windows, cumulative) if cumulative else windows

    def _forecast_readings(self, forecast: np.ndarray, last: np.ndarray) -> np.ndarray:
        """A forecast in original units (``[N, H, C]``) as readings: cumulative channels summed up from the
        windows' last readings ``last`` ``[N, C]``, each step at least the step before it (the running maximum: a
        meter does not run back, and where the network's net forecast rises past an earlier step it is kept), and
        never below the last reading. The intervals around it are the forecast's plus each step's own margins."""
        cumulative = self._cumulative
        if not cumulative:
            return forecast
        levels = windowing.levels_from_increments(last, forecast, cumulative)
        levels[..., cumulative] = np.maximum.accumulate(levels[..., cumulative], axis=1)
        return self._not_below_last(levels, last)

    def _within_bounds(self, levels: np.ndarray) -> np.ndarray:
        """``levels`` ``[N, H, C]`` clipped, per channel, to ``value_bounds``: clipping an interval at a bound that
        every reading keeps does not lower its coverage, and clipping a forecast there only brings it nearer."""
        for c, name in enumerate(self.channels):
            low, high = self.value_bounds.get(name, (None, None))
            if low is not None or high is not None:
                levels[..., c] = np.clip(levels[..., c], low, high)
        return levels

    def _not_below_last(self, levels: np.ndarray, last: np.ndarray) -> np.ndarray:
        """``levels`` ``[N, H, C]`` with each cumulative channel raised to no less than its window's last reading."""
        cumulative = self._cumulative
        levels[..., cumulative] = np.maximum(levels[..., cumulative],
                                             np.asarray(last, dtype=levels.dtype)[:, None, cumulative])
        return levels

    # ---------------------------------------------------------------------------------------------- fit
    def fit(self, frame: pd.DataFrame, channels: tuple | None = None, step_us: int | None = None,
            progress: bool = True, holdout: pd.DataFrame | None = None) -> "Seq2SeqDetector":
        """Train and calibrate on normal readings (long format).

        Each entity's readings are cut chronologically into a train, a validation and a calibration part
        (``TrainingConfig`` fractions of its steps with readings; a gap in time counts for nothing): the network
        trains on the first, early stopping and the scorer use the second, the tail, threshold and forecast
        intervals the third. With ``holdout`` (more normal readings kept apart from training: another day, another
        machine of the kind) all of ``frame`` trains the network and every window of the holdout serves both as
        the validation and as the calibration part; use it when the end of each training history is not typical
        of normal operation (a machine that is idle at the end of every day). The holdout is not split because
        what makes it worth holding out, a machine's rarer states (one dishwasher cycle a day), would land in one
        part only: a calibration part of idle minutes scores 0
        throughout and sets a threshold of 0. The cost is a threshold fitted on scores of the windows the scorer
        was fitted on, a little lower than on fresh windows when there are few windows per channel (the scorer
        has C means and C*C covariances). Raises ``InsufficientDataError`` when a part fills fewer than 20
        windows, ``ModelMismatchError`` when the holdout lacks a channel or is sampled at another interval."""
        from seqwatch.models.quiet_imports import keras_module

        keras = keras_module()  # here: keep `import seqwatch.models` free of Keras start-up cost

        from seqwatch.models.builders import build_seq2seq
        from seqwatch.models.compile_cache import enable_compile_cache

        _check_columns(frame)
        present = sorted(map(str, frame["channel"].unique()))
        if isinstance(channels, str):
            channels = (channels,)  # one channel's name, not its letters
        if channels:
            absent = [c for c in channels if str(c) not in present]
            if absent:
                raise ModelMismatchError(f"the training data holds no readings of the channel(s) {absent} (its "
                                         f"channels are {present})")
        self.channels = tuple(map(str, channels)) if channels else tuple(present)
        self.step_us = int(step_us) if step_us else _refined_step(frame, infer_step_us(frame))
        if self.step_us <= 0:
            raise ValueError(f"step_us must be > 0, got {self.step_us}")
        if not step_us and self.step_us < 1000 and pd.api.types.is_numeric_dtype(frame["timestamp"]) \
                and frame["timestamp"].min() >= 3.2e7 and frame["timestamp"].max() <= 7.3e9:
            # dates of 1971-2200 in epoch seconds, read as µs: readings every few µs, a model that scores no real
            # data (found by a bug hunt); a relative µs grid from 0 is not refused
            raise ValueError(f"the readings come every {self.step_us} µs: {NUMERIC_TIMES_HINT}")
        _check_entity_intervals(frame, self.step_us, given=bool(step_us))
        modelled = frame[frame["channel"].astype(str).isin(self.channels).to_numpy()]
        self.grid_offset_us = windowing.grid_offset(as_micros(modelled["timestamp"]), self.step_us)
        unknown = [c for c in self.config.window.cumulative_channels if c not in self.channels]
        if unknown:
            raise ValueError(f"the cumulative channel{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                             f"{'are' if len(unknown) > 1 else 'is'} not among the model's channels "
                             f"{list(self.channels)}")
        windows, train_values, scaler_values = self._split_windows(frame, holdout)
        values = np.concatenate(train_values)
        seen = np.concatenate(scaler_values)  # as the scaler and the network see them: cumulative channels as increments
        self.scaler = ChannelScaler.fit(seen, names=self.channels)
        cumulative = set(self.config.window.cumulative_channels)
        constant = self._constant_channels(values, seen)
        rising = {name: span for name, span in rising_channels(train_values, self.channels).items()
                  if name not in self.config.window.cumulative_channels}
        falling = {name: part for name, part in falling_channels(
            train_values, self.channels, self.config.window.cumulative_channels).items()
            if part[0] > FALLING_NOTE_SHARE * part[1]}
        lacking = entities_lacking_channels(frame, self.channels)
        shared = shared_steps(frame, self.channels, self.step_us, self.grid_offset_us)
        notes = ([constant_channel_note(constant, cumulative)] if constant else []) + \
            ([rising_channel_note(rising)] if rising else []) + \
            ([falling_channel_note(falling)] if falling else []) + \
            ([lacking_channels_note(lacking, self.channels)] if lacking else []) + \
            ([shared_steps_note(shared, len(frame), self.step_us)]
             if shared > SHARED_STEP_NOTE_SHARE * len(frame) else [])
        for note in notes:
            warnings.warn(TrainingDataWarning(note), stacklevel=2)
        enable_compile_cache()  # many small models of one shape (one per entity) compile their steps once
        keras.utils.set_random_seed(self.config.training.seed)
        self.model = build_seq2seq(self.config.architecture, self.window_length, len(self.channels))
        self._train_and_calibrate(windows, progress, warm_start=False)
        for note in self._calibration_notes(len(windows["calibration"])):
            notes.append(note)
            warnings.warn(TrainingDataWarning(note), stacklevel=2)
        self.metrics.update(constant_channels=constant, rising_channels=sorted(rising), training_notes=notes)
        self.readings_span_us = None
        self._record_data(frame, holdout)
        return self

    def fine_tune(self, frame: pd.DataFrame, progress: bool = True,
                  holdout: pd.DataFrame | None = None) -> "Seq2SeqDetector":
        """Continue training the fitted network on newer normal readings, in place, and recalibrate.

        The frame must hold the model's channels at its sampling interval (else ``ModelMismatchError``) and is
        split as in ``fit`` (with ``holdout``, as ``fit`` splits with one); readings to leave out, such as
        alerted stretches, are simply not in it. Training starts from the current weights and
        optimizer state with the configured learning rate and early stopping; the scaler is kept (the weights
        are only meaningful in its units); the scorer, tail, threshold and intervals are refitted on the new
        validation and calibration parts, exactly as ``fit`` fits them. Returns ``self``. Raises
        ``InsufficientDataError`` (and changes nothing) when a part fills fewer than 20 windows."""
        if not self.is_fitted:
            raise RuntimeError("the detector is not fitted: call fit() or load an artifact before fine_tune()")
        _check_columns(frame)
        if frame.empty:
            raise InsufficientDataError("the fine-tuning data hold no readings")
        self.check_compatible(set(map(str, frame["channel"].unique())), infer_step_us(frame))
        training = self._split_windows(frame, holdout, fixed_geometry=True)
        windows = training.windows
        done = int(self.metrics.get("fine_tunes", 0))
        kept = {k: self.metrics[k] for k in ("constant_channels", "rising_channels", "training_notes")
                if k in self.metrics}  # notes on the data the scaler was fitted on: it is kept
        from seqwatch.models.quiet_imports import keras_module

        keras = keras_module()

        # The same model and readings give the same new version (training shuffles its windows); each fine-tune of
        # a line of versions draws its own.
        keras.utils.set_random_seed(self.config.training.seed + done + 1)
        self._train_and_calibrate(windows, progress, warm_start=True)
        self._record_data(frame, holdout)
        # What a first training notes of its readings, for these (found by the bug hunt of training: a fine-tuning
        # on an idle week saved a threshold of 0 without a word, and every normal window of the next run alerted)
        cumulative = set(self.config.window.cumulative_channels)
        constant = self._constant_channels(np.concatenate(training.rows), np.concatenate(training.scaler_rows))
        notes = ([constant_channel_note(constant, cumulative)] if constant else []) + \
            self._calibration_notes(len(windows["calibration"]))
        for note in notes:
            warnings.warn(TrainingDataWarning(note), stacklevel=2)
        self.metrics.update(fine_tunes=done + 1, fine_tune_notes=notes, **kept)
        return self

    def _constant_channels(self, values: np.ndarray, seen: np.ndarray) -> list:
        """The channels that held one value throughout the training rows ``values``; a cumulative channel by its
        increases, as the scaler ``seen`` them (a meter that counts up steadily is constant there)."""
        cumulative = set(self.config.window.cumulative_channels)
        return ([self.channels[i] for i in ChannelScaler.constant(values) if self.channels[i] not in cumulative]
                + [self.channels[i] for i in ChannelScaler.constant(seen) if self.channels[i] in cumulative])

    def _calibration_notes(self, calibration_windows: int) -> list:
        """The notes on what the calibration gave, after a fit or fine-tuning: a threshold of 0, and forecast
        intervals that cannot cover as often as asked."""
        notes = [zero_threshold_note(self.threshold)] if not self.threshold > ZERO_THRESHOLD else []
        asked = self.config.scoring.interval_coverage
        if self.intervals is not None and self.intervals.coverage < asked:
            notes.append(coverage_note(self.intervals.coverage, asked, calibration_windows))
        return notes

    def _record_data(self, frame: pd.DataFrame, holdout: pd.DataFrame | None) -> None:
        """The fingerprint of the readings a fit or fine-tuning saw (the holdout's too), the holdout's size, and the
        span of time the model's readings cover now (widened by a fine-tuning's, the holdout's included)."""
        self.fingerprint = self._fingerprint(frame) if holdout is None else self._fingerprint(frame, holdout)
        if holdout is not None:
            self.metrics["holdout_readings"] = int(len(holdout))
        spans = [span for span in (self.readings_span_us, self.readings_span(frame),
                                   None if holdout is None else self.readings_span(holdout)) if span is not None]
        self.readings_span_us = (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else None

    def readings_span(self, frame: pd.DataFrame) -> tuple[int, int] | None:
        """(first, last) time in µs of ``frame``'s readings of the model's channels; None when it holds none."""
        stamps = as_micros(frame.loc[frame["channel"].astype(str).isin(self.channels).to_numpy(), "timestamp"])
        return (int(stamps.min()), int(stamps.max())) if len(stamps) else None

    def _check_holdout(self, holdout: pd.DataFrame) -> None:
        _check_columns(holdout)
        if holdout.empty:
            raise InsufficientDataError("the held-out readings hold no readings")
        missing = [c for c in self.channels if c not in set(map(str, holdout["channel"].unique()))]
        if missing:
            raise ModelMismatchError(f"the held-out readings lack channel(s) {missing} of the training data")
        try:
            step_us = infer_step_us(holdout[holdout["channel"].astype(str).isin(self.channels)])
        except InsufficientDataError:
            raise InsufficientDataError("the held-out readings hold no two readings of a channel of one entity, so "
                                        "they fill no window") from None
        if not windowing.same_interval(step_us, self.step_us):
            raise ModelMismatchError(f"the held-out readings are sampled every {step_us / 1e6:g}s, the training "
                                     f"readings every {self.step_us / 1e6:g}s")

    def _split_windows(self, frame: pd.DataFrame, holdout: pd.DataFrame | None = None,
                       fixed_geometry: bool = False) -> TrainingParts:
        """Train/validation/calibration windows of ``length + horizon`` steps: each entity's grid cut
        chronologically into the three parts, or, with ``holdout``, every grid of ``frame`` for training and
        every holdout grid for both validation and calibration (see ``fit``); with the training rows
        (``TrainingParts``). Raises ``InsufficientDataError`` when a part fills fewer than 20 windows."""
        cfg = self.config
        length, horizon = cfg.window.length, cfg.architecture.forecast_horizon
        vf, cf = cfg.training.validation_fraction, cfg.training.calibration_fraction
        pieces = []  # (grid, {part: (lo, hi)})
        for parts in entity_grid_parts(frame, self.channels, self.step_us, cfg.window.max_gap,
                                       self.grid_offset_us).values():
            if holdout is None:
                for grid, (cut_val, cut_cal) in zip(parts, _chronological_part_cuts(parts, vf, cf)):
                    pieces.append((grid, {"train": (0, cut_val), "validation": (cut_val, cut_cal),
                                          "calibration": (cut_cal, len(grid))}))
            else:
                pieces += [(grid, {"train": (0, len(grid))}) for grid in parts]
        if holdout is not None:
            self._check_holdout(holdout)
            for parts in entity_grid_parts(holdout, self.channels, self.step_us, cfg.window.max_gap,
                                           self.grid_offset_us).values():
                pieces += [(grid, {"validation": (0, len(grid)), "calibration": (0, len(grid))}) for grid in parts]
        parts = {"train": [], "validation": [], "calibration": []}
        train_values, scaler_values = [], []
        cumulative = self._cumulative
        for grid, bounds in pieces:
            for name, (lo, hi) in bounds.items():
                parts[name].append(_segment_windows(grid, lo, hi, length + horizon, cfg.training.training_stride))
            if "train" in bounds:
                hi = bounds["train"][1]
                present = grid.present[:hi]
                train_values.append(grid.values[:hi][present])
                scaler_values.append(windowing.step_increments(grid.values[:hi], cumulative, np.nan)[present]
                                     if cumulative else train_values[-1])
        empty = np.zeros((0, length + horizon, len(self.channels)))
        windows = {name: np.concatenate(chunks) if chunks else empty for name, chunks in parts.items()}
        for name, w in windows.items():
            if len(w) < 20:
                held_out = holdout is not None and name != "train"
                source = "held-out readings" if held_out else "training data"
                shorter = "a shorter window or forecast horizon" if horizon else "a shorter window"
                more = (f"give more readings (a fine-tuning keeps the model's window{' and horizon' if horizon else ''})"
                        if fixed_geometry else f"supply more normal history or {shorter}")
                advice = self._sparse_advice(holdout if held_out else frame, fixed_geometry) or more
                # a forecasting model's training windows hold the horizon's steps too: say so, or the count of
                # steps matches no setting the person gave
                steps = (f"{length + horizon} steps (the window's {length} and the forecast horizon's {horizon})"
                         if horizon else f"{length} steps")
                raise InsufficientDataError(
                    f"the {name} part of the {source} fills only {len(w)} windows of {steps} (need >= 20): {advice}")
        return TrainingParts(windows, train_values, scaler_values)

    def _sparse_advice(self, frame: pd.DataFrame, fixed_geometry: bool) -> str:
        """Why no window is complete when a channel's readings come further apart than ``max_gap`` bridges
        (``windowing.sparse_channels`` per entity), and what to change; empty when no channel is that sparse."""
        max_gap = self.config.window.max_gap
        spacing: dict = {}
        for _, _, steps, positions in entity_steps(frame, self.channels, self.step_us, self.grid_offset_us):
            for c, every in windowing.sparse_channels(steps, positions, len(self.channels), max_gap).items():
                spacing.setdefault(self.channels[c], []).append(every)
        if not spacing:
            return ""
        step = f"{self.step_us / 1e6:g}s"
        named = ", ".join(f"{name!r} (every {int(np.median(every))} steps of {step})"
                          for name, every in spacing.items())
        need = max(max(every) for every in spacing.values()) - 1
        fix = ("resample those readings to the model's interval" if fixed_geometry else
               f"set max_gap to {need} or more (--max-gap {need}) to bridge them, resample those readings to "
               f"every {step}, or leave {'them' if len(spacing) > 1 else 'it'} out (--ignore {' --ignore '.join(spacing)})")
        return (f"the readings of {named} come further apart than a window bridges (at most {max_gap} missing "
                f"steps: max_gap), so no window has every channel: {fix}")

    def _train_and_calibrate(self, windows: dict, progress: bool, warm_start: bool) -> None:
        """Train ``self.model`` on the train windows (from its current weights when ``warm_start``), then fit
        the scorer on the validation windows and the tail, threshold and intervals on the calibration windows."""
        from seqwatch.models.builders import FORECAST, RECONSTRUCTION
        from seqwatch.models.training import train_autoencoder

        cfg = self.config
        length, horizon = cfg.window.length, cfg.architecture.forecast_horizon
        scaled = {name: self.scaler.transform(self._network_input(w)) for name, w in windows.items()}

        def split_xy(w):
            targets = {RECONSTRUCTION: w[:, :length]}
            if horizon:
                targets[FORECAST] = w[:, length:]
            return w[:, :length], targets

        x_train, y_train = split_xy(scaled["train"])
        x_val, y_val = split_xy(scaled["validation"])
        if progress:
            sys.stderr.write(f"{'fine-tuning' if warm_start else 'training'} {self.model.name} on {len(x_train)} "
                             f"windows ({len(x_val)} for validation, {len(scaled['calibration'])} for calibration)\n")
        with self._predict_lock:
            self.history = train_autoencoder(self.model, x_train, y_train, x_val, y_val, cfg.training, progress,
                                             keep_optimizer=warm_start)

        # Score distribution of normal windows: fitted on validation, threshold on calibration.
        sc = cfg.scoring
        val_recon, _ = self._predict_scaled(x_val)
        val_errors = reconstruction_errors(x_val, val_recon)
        floor = () if sc.error_floor_quantile is None else error_floor(x_val, val_errors, sc.error_floor_quantile)
        scorer = MahalanobisScorer.fit(window_error_features(val_errors, floor), one_sided=sc.one_sided,
                                       error_floor=floor)
        x_cal, y_cal = split_xy(scaled["calibration"])
        cal_recon, cal_forecast = self._predict_scaled(x_cal)
        cal_scores, _ = scorer.score(window_error_features(reconstruction_errors(x_cal, cal_recon), floor))
        self.scorer = scorer
        self.tail = TailCalibration.fit(cal_scores, sc.pot_initial_quantile)
        self.threshold = fit_threshold(cal_scores, sc)
        if horizon:
            truth = windows["calibration"][:, length:]
            readings = self._forecast_readings(self.scaler.inverse_transform(cal_forecast),
                                               windows["calibration"][:, length - 1])
            self.intervals = ConformalIntervals.fit(readings - truth, sc.interval_coverage)
        self.metrics = {
            "windows": {name: int(len(w)) for name, w in windows.items()},
            "epochs_run": len(self.history.get("loss", [])),
            "best_val_loss": float(min(self.history.get("val_loss", [float("nan")]))),
            "threshold": self.threshold,
            "calibration_score_quantiles": {q: float(np.quantile(cal_scores, float(q)))
                                            for q in ("0.5", "0.9", "0.99")},
            "calibration_false_alarm_rate": float(np.mean(cal_scores > self.threshold)),
        }

    @staticmethod
    def _fingerprint(*frames: pd.DataFrame) -> str:
        """sha256 over each frame's readings in a fixed order (frames hashed one after the other, so a holdout
        whose columns hold other types than the training frame's is never mixed with it)."""
        digest = hashlib.sha256()
        for frame in frames:
            ordered = frame[["entity_id", "channel", "timestamp", "value"]].sort_values(
                ["entity_id", "channel", "timestamp"])
            digest.update(pd.util.hash_pandas_object(ordered, index=False).to_numpy().tobytes())
        return digest.hexdigest()

    # ------------------------------------------------------------------------------------------- score
    def _check_numeric_interval(self, frame: pd.DataFrame) -> None:
        """Refuse a frame of numeric timestamps whose readings come at an interval the model cannot score (epoch
        seconds read as µs: every few µs), saying how numbers are read; otherwise it would score no window."""
        try:
            step_us = infer_step_us(frame[frame["channel"].astype(str).isin(self.channels)])
        except InsufficientDataError:
            return
        if not windowing.interval_fits(step_us, self.step_us):
            raise ModelMismatchError(f"model {self.model_id} {self.model_version} was trained at a sampling interval "
                                     f"of {self.step_us / 1e6:g}s, the readings come every {step_us / 1e6:g}s: "
                                     f"{NUMERIC_TIMES_HINT}")

    def check_compatible(self, channels, step_us: int | None = None) -> None:
        """Raise ``ModelMismatchError`` with one sentence when data with ``channels`` cannot be scored."""
        missing = [c for c in self.channels if c not in set(channels)]
        if missing:
            raise ModelMismatchError(
                f"model {self.model_id} {self.model_version} expects channels {list(self.channels)}, but the data "
                f"lack {missing}")
        if step_us is not None and not windowing.same_interval(step_us, self.step_us):
            raise ModelMismatchError(f"model {self.model_id} {self.model_version} was trained at a sampling "
                                     f"interval of {self.step_us / 1e6:g}s, the data are at {step_us / 1e6:g}s "
                                     f"(a model learns one interval: give readings at {self.step_us / 1e6:g}s, or "
                                     f"train a new model)")

    def _predict_scaled(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Run the network on scaled windows in fixed-size batches (the last one padded).

        One call at a time: Keras-JAX donates the model's state buffers to each compiled call, so two threads
        predicting at once (Beam runs bundles on several threads and shares the model) corrupt each other."""
        with self._predict_lock:
            return self._predict_scaled_unlocked(x)

    def _predict_scaled_unlocked(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        from seqwatch.models.builders import FORECAST, RECONSTRUCTION

        n = len(x)
        recon = np.empty(x.shape, dtype=np.float32)
        forecast = np.empty((n, self.horizon, x.shape[2]), dtype=np.float32) if self.horizon else None
        for start in range(0, n, PREDICT_BATCH):
            batch = x[start:start + PREDICT_BATCH]
            size = len(batch)
            if size < PREDICT_BATCH:
                batch = np.concatenate([batch, np.zeros((PREDICT_BATCH - size,) + batch.shape[1:], batch.dtype)])
            out = self.model.predict_on_batch(batch)
            recon[start:start + size] = np.asarray(out[RECONSTRUCTION])[:size]
            if forecast is not None:
                forecast[start:start + size] = np.asarray(out[FORECAST])[:size]
        return recon, forecast

    def _check_windows(self, windows: np.ndarray) -> np.ndarray:
        if not self.is_fitted:
            raise RuntimeError("the detector is not fitted: call fit() or load an artifact")
        windows = np.asarray(windows)
        expected = (self.window_length, len(self.channels))
        name = " ".join(filter(None, (self.model_id, self.model_version)))
        if windows.ndim != 3 or windows.shape[1:] != expected:
            raise ModelMismatchError(f"model {name} scores windows of shape "
                                     f"[N, {expected[0]}, {expected[1]}], got {list(windows.shape)}")
        if windows.dtype == object:  # numbers held as Python objects are numbers
            try:
                windows = windows.astype(np.float64)
            except (TypeError, ValueError):
                pass
        if not (np.issubdtype(windows.dtype, np.number) or windows.dtype == bool):
            raise ValueError(f"model {name} scores windows of numbers, got {windows.dtype} values")
        return windows

    def _features(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        x = self.scaler.transform(self._network_input(windows))
        recon, forecast = self._predict_scaled(x)
        return window_error_features(reconstruction_errors(x, recon), self.scorer.error_floor), forecast

    def window_features(self, windows: np.ndarray) -> np.ndarray:
        """The error feature of each window and channel, ``[N, L, C] -> [N, C]``: the log of the root-mean-square
        reconstruction error in scaled units plus the scorer's error floor, what ``self.scorer`` turns into a score
        (``self.scorer.score(self.window_features(w))[0]`` equals ``self.score_windows(w).score``). Windows in
        original units and the model's channel order; a window holding NaN gets NaN features. Raises
        ``ModelMismatchError`` for windows of another shape, RuntimeError before ``fit``."""
        features, _ = self._features(self._check_windows(windows))
        return features

    def score_frame(self, frame: pd.DataFrame, chunk: int = 65536) -> pd.DataFrame:
        """Score long-format readings (``entity_id, channel, timestamp, value``) as ``seqwatch run`` scores them,
        without Beam (a notebook's way in): each entity's readings on the model's step grid with short gaps
        filled, the windows the pipeline places in each stretch of complete steps (every ``stride`` steps on the
        global grid, and the stretch's first and last), in ``chunk``-window calls of the model. One row per
        window, sorted by entity and end, with the scores sink's columns (``seqwatch.schemas.arrow``) up to
        ``top_channel``, then ``channel_contributions``; ``window_start`` and ``window_end`` (the last step's time)
        as UTC datetimes. Unlike the pipeline it does not validate or quarantine: a frame that lacks a channel the
        model needs raises ``ModelMismatchError``, readings of channels the model does not know are ignored, values that are not finite numbers count as missing, and repeated readings of a
        step are averaged. Raises RuntimeError before ``fit``."""
        if not self.is_fitted:
            raise RuntimeError("the detector is not fitted: call fit() or load an artifact first")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 window, got {chunk}")
        _check_columns(frame)
        if len(frame):  # a channel the model needs, absent from every entity, would leave no window to score
            self.check_compatible(set(map(str, frame["channel"].unique())))
            if pd.api.types.is_numeric_dtype(frame["timestamp"]):
                self._check_numeric_interval(frame)
        length, stride = self.config.window.length, self.config.window.stride
        entities, ends, windows = [], [], []
        for entity, grid in ((entity, grid) for entity, parts in entity_grid_parts(
                frame, self.channels, self.step_us, self.config.window.max_gap, self.grid_offset_us).items()
                for grid in parts):
            placed = [windowing.window_end_steps(grid.first_step + a, grid.first_step + b, length, stride)
                      for a, b in windowing.stretches(grid.present)]
            entity_ends = np.concatenate(placed) if placed else np.zeros(0, dtype=np.int64)
            if len(entity_ends):
                entities += [entity] * len(entity_ends)
                ends.append(entity_ends)
                windows.append(windowing.cut_windows(grid.values, entity_ends - grid.first_step, length))
        columns = ["entity_id", "window_start", "window_end", "score", "threshold", "is_anomaly", "severity",
                   "tail_probability", "top_channel", "channel_contributions"]
        if not ends:  # no window: the columns with their types, so that a filter or .dt on them still works
            stamps = pd.to_datetime(np.zeros(0, dtype=np.int64), unit="us", utc=True)
            text = pd.Series(["text"]).iloc[:0]  # the type pandas gives a column of texts
            return pd.DataFrame({
                "entity_id": text, "window_start": stamps, "window_end": stamps, "score": np.zeros(0),
                "threshold": np.zeros(0), "is_anomaly": np.zeros(0, dtype=bool), "severity": text,
                "tail_probability": np.zeros(0), "top_channel": text,
                "channel_contributions": pd.Series([], dtype=object)}, columns=columns)
        ends_us = np.concatenate(ends) * self.step_us + self.grid_offset_us
        with np.errstate(over="ignore"):  # a reading beyond float32 becomes inf; the scaler clips it
            values = np.concatenate(windows).astype(self.window_dtype)
        parts = [self.score_windows(values[i:i + chunk]) for i in range(0, len(values), chunk)]
        contributions = np.concatenate([p.contributions for p in parts])
        return pd.DataFrame({
            "entity_id": entities,
            "window_start": pd.to_datetime(ends_us - (length - 1) * self.step_us, unit="us", utc=True),
            "window_end": pd.to_datetime(ends_us, unit="us", utc=True),
            "score": np.concatenate([p.score for p in parts]).astype(np.float64),
            "threshold": float(self.threshold),
            "is_anomaly": np.concatenate([p.is_anomaly for p in parts]).astype(bool),
            "severity": np.concatenate([p.severity for p in parts]),
            "tail_probability": np.concatenate([p.tail_probability for p in parts]).astype(np.float64),
            "top_channel": np.asarray(self.channels)[np.argmax(contributions, axis=1)],
            "channel_contributions": list(contributions.astype(np.float64)),
        }, columns=columns)

    def score_windows(self, windows: np.ndarray) -> WindowScores:
        """Score windows ``[N, L, C]`` in original units and the model's channel order."""
        windows = self._check_windows(windows)
        features, forecast = self._features(windows)
        score, contributions = self.scorer.score(features)
        is_anomaly = score > self.threshold
        tail = self.tail.tail_probability(score)
        result = WindowScores(score, contributions, is_anomaly, tail, severity_of(tail, is_anomaly))
        if forecast is not None:
            yhat = self._forecast_readings(self.scaler.inverse_transform(forecast), windows[:, -1])
            lower, upper = self.intervals.bounds(yhat)
            if self._cumulative:  # a meter's interval does not reach below its last reading either
                lower, upper = self._not_below_last(lower, windows[:, -1]), self._not_below_last(upper, windows[:, -1])
            yhat, lower, upper = (self._within_bounds(levels) for levels in (yhat, lower, upper))
            result = WindowScores(score, contributions, is_anomaly, tail, result.severity, yhat, lower, upper)
        return result
