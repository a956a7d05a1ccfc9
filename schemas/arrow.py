"""pyarrow schemas of every sink; Parquet files are written with exactly these.

``SCHEMA_VERSION`` is stored in each schema's metadata; bump it when a field changes meaning or type.
"""
from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1"
_TS = pa.timestamp("us", tz="UTC")
# Parquet's standard name for list items, so a schema survives a write/read round trip unchanged.
_STRINGS = pa.list_(pa.field("element", pa.string()))
_FLOATS = pa.list_(pa.field("element", pa.float64()))
_META = {b"seqwatch.schema_version": SCHEMA_VERSION.encode()}


def _schema(name: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={**_META, b"seqwatch.element": name.encode()})


SCORE_SCHEMA = _schema(
    "Score",
    [
        pa.field("entity_id", pa.string(), nullable=False),
        pa.field("window_start", _TS, nullable=False),
        pa.field("window_end", _TS, nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("threshold", pa.float64(), nullable=False),
        pa.field("is_anomaly", pa.bool_(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("tail_probability", pa.float64(), nullable=False),
        pa.field("top_channel", pa.string(), nullable=False),
        pa.field("channel_contributions", _FLOATS, nullable=False),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ],
)

ALERT_SCHEMA = _schema(
    "Alert",
    [
        pa.field("alert_id", pa.string(), nullable=False),
        pa.field("entity_id", pa.string(), nullable=False),
        pa.field("start", _TS, nullable=False),
        pa.field("end", _TS, nullable=False),
        pa.field("peak_score", pa.float64(), nullable=False),
        pa.field("threshold", pa.float64(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("windows", pa.int64(), nullable=False),
        pa.field("top_channels", _STRINGS, nullable=False),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ],
)

FORECAST_SCHEMA = _schema(
    "Forecast",
    [
        pa.field("entity_id", pa.string(), nullable=False),
        pa.field("issued_at", _TS, nullable=False),
        pa.field("target_time", _TS, nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("channel", pa.string(), nullable=False),
        pa.field("yhat", pa.float64(), nullable=False),
        pa.field("yhat_lower", pa.float64(), nullable=False),
        pa.field("yhat_upper", pa.float64(), nullable=False),
        pa.field("coverage", pa.float64(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ],
)

QUARANTINE_SCHEMA = _schema(
    "Quarantined",
    [
        pa.field("raw", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
        pa.field("column", pa.string(), nullable=False),
        pa.field("records", pa.int64(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason_code", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ],
)

# The readings a stream archived (``seqwatch stream --archive-readings``): the long input format, so that
# ``seqwatch train --warm-start --input 'out/readings/*/*.parquet'`` reads them as they are.
READING_SCHEMA = _schema(
    "Reading",
    [
        pa.field("entity_id", pa.string(), nullable=False),
        pa.field("channel", pa.string(), nullable=False),
        pa.field("timestamp", _TS, nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ],
)

SCHEMAS_BY_SINK = {
    "scores": SCORE_SCHEMA,
    "alerts": ALERT_SCHEMA,
    "forecasts": FORECAST_SCHEMA,
    "quarantine": QUARANTINE_SCHEMA,
    "readings": READING_SCHEMA,
}

_TIME_FIELDS = {"window_start", "window_end", "start", "end", "issued_at", "target_time"}


def to_table(rows: list, schema: pa.Schema) -> pa.Table:
    """Build a table with ``schema`` from NamedTuples whose fields match it by name (times as int µs)."""
    arrays = []
    for field in schema:
        values = [getattr(row, field.name) for row in rows]
        if field.name in _TIME_FIELDS:
            arrays.append(pa.array(values, type=pa.int64()).cast(field.type))
        else:
            if pa.types.is_list(field.type):
                values = [list(v) for v in values]
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)
