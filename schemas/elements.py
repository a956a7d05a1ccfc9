"""Element types that flow between seqwatch's transforms and land in its sinks.

Each type is a frozen ``typing.NamedTuple`` (Beam infers a row coder for it) mirrored by a pyarrow schema in
``seqwatch.schemas.arrow``. Times are event times, UTC, integer microseconds since the epoch.

Readings travel in batches (``ReadingBatch``): Beam's per-element cost (~100-200 µs on the reference machine)
would otherwise dominate the run time.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import pandas as pd

READING_COLUMNS = ("entity_id", "channel", "timestamp", "value", "source", "line")


class Reading(NamedTuple):
    """One observation, long format."""

    entity_id: str
    channel: str
    timestamp: int  # µs since epoch, UTC
    value: float


class ReadingBatch(NamedTuple):
    """Many readings of one input chunk, as a frame with columns ``READING_COLUMNS``.

    ``timestamp`` is int64 µs UTC, ``value`` float64, ``line`` the 1-based line (or row) in ``source``.
    """

    frame: pd.DataFrame

    @staticmethod
    def from_columns(entity_id, channel, timestamp, value, source, line) -> "ReadingBatch":
        # Ids repeat across a batch: categoricals keep one copy of each string, which makes pickling a
        # batch between stages and grouping it by entity several times cheaper than object columns.
        frame = pd.DataFrame(
            {
                "entity_id": _categorical(entity_id),
                "channel": _categorical(channel),
                "timestamp": np.asarray(timestamp, dtype=np.int64),
                "value": np.asarray(value, dtype=np.float64),
                "source": _categorical(source),
                "line": np.asarray(line, dtype=np.int64),
            }
        )
        return ReadingBatch(frame)

    @staticmethod
    def constant(text: str, n: int) -> pd.Categorical:
        """A column of ``n`` copies of ``text`` for ``from_columns`` (without building ``n`` Python strings)."""
        return pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), dtype=categories_of((text,)))

    def __len__(self) -> int:  # number of readings, not of tuple fields
        return len(self.frame)


@functools.lru_cache(maxsize=4096)
def categories_of(names: tuple) -> pd.CategoricalDtype:
    """The categorical dtype that factorising strings of ``names`` (sorted, distinct) gives. Cached: pandas takes
    most of a millisecond to build one, which a batch of a small file paid for its source, entity and channels."""
    return pd.Categorical(np.asarray(names, dtype=object)).dtype


def _categorical(values) -> pd.Categorical:
    """A categorical column: strings are factorised, a categorical given as it is keeps its codes (with the
    categories that no row uses dropped, as factorising the strings would have)."""
    if isinstance(values, pd.Categorical):
        codes = values.codes
        used = np.bincount(codes[codes >= 0].astype(np.intp), minlength=len(values.categories)) > 0
        return values if used.all() else values.remove_unused_categories()
    return pd.Categorical(np.asarray(values, dtype=object))


class WindowBatch(NamedTuple):
    """The windows cut from one entity's pane, ready for a model.

    ``values`` is float32 ``[N, L, C]`` in the model's channel order and original units, ``observed`` is a
    bool ``[N, L, C]`` mask (False where a short gap was filled), ``ends`` the int64 end time of each window
    (the time of its last step) and ``step_us`` the sampling interval. ``readings_scored`` counts the
    readings of this pane that lie inside at least one window; the manifest adds them up.
    """

    entity_id: str
    pane: int
    channels: tuple
    step_us: int
    ends: np.ndarray
    values: np.ndarray
    observed: np.ndarray
    readings_scored: int


class Score(NamedTuple):
    """The anomaly score of one window."""

    entity_id: str
    window_start: int
    window_end: int
    score: float
    threshold: float
    is_anomaly: bool
    severity: str
    tail_probability: float
    top_channel: str
    channel_contributions: tuple  # one float per model channel, same order as the model's channels
    model_id: str
    model_version: str
    run_id: str


class Alert(NamedTuple):
    """One incident: consecutive anomalous windows of one entity, merged."""

    alert_id: str
    entity_id: str
    start: int
    end: int
    peak_score: float
    threshold: float
    severity: str
    windows: int
    top_channels: tuple  # channel names, most to blame first
    model_id: str
    model_version: str
    run_id: str


class Forecast(NamedTuple):
    """A point forecast with a prediction interval for one channel and horizon step."""

    entity_id: str
    issued_at: int
    target_time: int
    step: int
    channel: str
    yhat: float
    yhat_lower: float
    yhat_upper: float
    coverage: float
    model_version: str
    run_id: str


class Quarantined(NamedTuple):
    """A record that could not be scored, untouched, with where it came from and why."""

    raw: str
    source: str
    line: int  # 1-based line of a text file, or row of a Parquet file; 0 when not from a file
    column: str  # for one bad reading: its wide column, or its channel (a long row's); "" when the whole record is meant
    records: int  # how many readings this record stands for (a whole wide row stands for one per channel)
    stage: str
    reason_code: str
    reason: str
    run_id: str


class PackedQuarantine(NamedTuple):
    """Many ``Quarantined`` records of one source as a table (``seqwatch.pipelines.sinks.quarantine_records_table``:
    the records' fields as columns, the text columns dictionary-encoded), as a batch run's reader gives them: a
    source's million bad readings travel as a few tables, not as a million elements."""

    source: str
    table: object  # pyarrow.Table

    def records(self) -> list[Quarantined]:
        """The records, in the table's order; a text that many records share (a wide row's) is one object."""
        columns = []
        for column in self.table.columns:
            column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
            if hasattr(column, "dictionary"):
                texts = column.dictionary.to_pylist()
                columns.append([texts[i] for i in column.indices.to_numpy(zero_copy_only=False).tolist()])
            else:
                columns.append(column.to_pylist())
        return [Quarantined(*fields) for fields in zip(*columns)]


# Reason codes are a closed vocabulary so that users can filter and replay by them.
REASON_CODES = {
    "parse_timestamp": "the timestamp could not be parsed",
    "parse_value": "the value is not a finite number",
    "missing_entity": "the entity id is empty",
    "missing_channel": "the channel is empty",
    "malformed_row": "the row has the wrong number of fields",
    "duplicate": "a reading with the same entity, channel and timestamp came earlier",
    "future_timestamp": "the timestamp lies too far in the future",
    "before_horizon": "the timestamp lies before the configured horizon",
    "unknown_channel": "the model has no such channel",
    "expectation_failed": "a great-expectations expectation failed",
    "monotonic_decrease": "a monotone meter went backwards",
    "insufficient_data": "too few consecutive readings to fill one model window",
    "sampling_interval": "the entity's readings come at an interval more than 2x off the model's",
    "late": "the reading arrived after the allowed lateness",
    "schema_drift": "the file's columns do not match the mapping",
    "damaged_file": "a compressed file is damaged or cut short here: this line and the rest could not be read",
    "line_too_long": "the line is longer than a row can be (16 MiB): line ends are missing, or it is not CSV text",
}


class ScoredWindows(NamedTuple):
    """A ``WindowBatch`` after the model: per-window scores and, with a forecasting head, forecasts.
    ``windows`` keeps its ids and ends, but not its values (``values``/``observed`` are ``[N, 0, C]``).

    ``contributions`` is ``[N, C]``; ``forecast``/``lower``/``upper`` are ``[N, H, C]`` in original units, or
    None when the model has no forecasting head. ``threshold`` is the model's (a float), or ``[N]``, one per
    window, after per-entity online calibration (``seqwatch.pipelines.calibration``)."""

    windows: WindowBatch
    score: np.ndarray
    threshold: float | np.ndarray
    is_anomaly: np.ndarray
    severity: np.ndarray
    tail_probability: np.ndarray
    contributions: np.ndarray
    forecast: np.ndarray | None
    lower: np.ndarray | None
    upper: np.ndarray | None
    coverage: float
    window_length: int
    model_id: str
    model_version: str
