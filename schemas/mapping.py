"""Input column mappings: how the columns of a user's file become long-format readings.

A mapping is a small JSON file (or the equivalent CLI flags)::

    {"format": "wide", "timestamp": "datetime", "entity": {"from_filename": true},
     "channels": {"Accelerometer1RMS": "accel1"}, "ignore": ["anomaly", "changepoint"], "sep": ";"}

    {"format": "long", "columns": {"entity_id": "device", "channel": "sensor", "timestamp": "time",
                                   "value": "reading"}}

``format``: ``long`` (one reading per row) or ``wide`` (a timestamp column and one column per channel).
``entity``: for wide files, ``{"column": NAME}``, ``{"value": ID}`` or ``{"from_filename": true}`` (the file's
stem; the default, under which a file that has an ``entity_id`` column takes its entities from it instead); for
wide MQTT messages also ``{"from_topic": LEVEL}``, the topic's level LEVEL counted from 0 (``plant/pump-01/state``:
level 1 is ``pump-01``), and for wide Kafka messages ``{"from_key": true}``, the message key.
``channels``: for wide files, which columns are channels and their names (default: every column but the
timestamp, the entity column and ``ignore``). ``timestamp_unit``: ``s``/``ms``/``us``/``ns`` for epoch
numbers (default: guessed per value from its magnitude). ``timestamp_format``: a ``strftime`` format for
timestamps that are neither ISO 8601 nor epoch numbers (without it, day/month-ambiguous dates such as
``05/01/2026`` are refused, not guessed). ``timezone``: zone of timestamps that carry no offset (default UTC; an
ambiguous or nonexistent local time around a daylight-saving change is refused). ``sep``: field delimiter
(default: sniffed from the header, or an Excel ``sep=;`` first line). ``decimal``: ``"."`` (default) or
``","`` for files that write ``12,5``. ``extra_columns``: ``"error"`` (default) or ``"ignore"``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

LONG_COLUMNS = ("entity_id", "channel", "timestamp", "value")
TIMESTAMP_UNITS = (None, "s", "ms", "us", "ns")


class MappingError(ValueError):
    """A mapping file or flags are invalid."""


@dataclass(frozen=True)
class InputMapping:
    format: str = "long"
    columns: dict = field(default_factory=dict)  # long: role -> column name in the file
    timestamp: str = "timestamp"  # wide: the timestamp column
    entity: dict = field(default_factory=lambda: {"from_filename": True})
    channels: dict = field(default_factory=dict)  # wide: column -> channel name; empty = all remaining
    ignore: tuple = ()
    sep: str | None = None
    timestamp_unit: str | None = None
    timezone: str = "UTC"
    extra_columns: str = "error"
    decimal: str = "."
    timestamp_format: str | None = None

    def __post_init__(self):
        if self.format not in ("long", "wide"):
            raise MappingError(f"mapping format must be 'long' or 'wide', got {self.format!r}")
        unknown_roles = set(self.columns) - set(LONG_COLUMNS)
        if unknown_roles:
            raise MappingError(f"mapping columns has unknown roles {sorted(unknown_roles)}; roles are "
                               f"{list(LONG_COLUMNS)}")
        if self.format == "wide":
            keys = set(self.entity)
            level = self.entity.get("from_topic")
            if (not keys or not keys <= {"column", "value", "from_filename", "from_topic", "from_key"}
                    or len(keys) != 1 or ("from_key" in keys and self.entity["from_key"] is not True)
                    or ("from_topic" in keys and (isinstance(level, bool) or not isinstance(level, int)
                                                  or level < 0))):
                raise MappingError(f"mapping entity must be one of {{'column': NAME}}, {{'value': ID}}, "
                                   f"{{'from_filename': true}}, {{'from_topic': LEVEL}} (an MQTT topic level "
                                   f"counted from 0) or {{'from_key': true}} (the Kafka message key), got "
                                   f"{self.entity!r}")
        if self.timestamp_unit not in TIMESTAMP_UNITS:
            raise MappingError(f"timestamp_unit must be one of {[u for u in TIMESTAMP_UNITS if u]} or null, got "
                               f"{self.timestamp_unit!r}")
        if self.decimal not in (".", ","):
            raise MappingError(f"decimal must be '.' or ',', got {self.decimal!r}")
        if self.decimal == "," and self.sep == ",":
            raise MappingError("decimal ',' needs another field separator than ',' (set sep, e.g. ';')")
        if self.timestamp_format is not None and "%" not in str(self.timestamp_format):
            raise MappingError(f"timestamp_format must be a strftime format such as '%d/%m/%Y %H:%M:%S', got "
                               f"{self.timestamp_format!r}")
        try:
            import zoneinfo
            zoneinfo.ZoneInfo(self.timezone)
        except (ValueError, zoneinfo.ZoneInfoNotFoundError):
            raise MappingError(f"timezone must be an IANA zone name such as 'Europe/Berlin' or 'UTC', got "
                               f"{self.timezone!r}") from None
        if self.extra_columns not in ("error", "ignore"):
            raise MappingError(f"extra_columns must be 'error' or 'ignore', got {self.extra_columns!r}")
        if self.sep is not None and len(self.sep) != 1:
            raise MappingError(f"sep must be one character, got {self.sep!r}")

    def long_column(self, role: str) -> str:
        return self.columns.get(role, role)

    def to_dict(self) -> dict:
        return {"format": self.format, "columns": dict(self.columns), "timestamp": self.timestamp,
                "entity": dict(self.entity), "channels": dict(self.channels), "ignore": list(self.ignore),
                "sep": self.sep, "timestamp_unit": self.timestamp_unit, "timezone": self.timezone,
                "extra_columns": self.extra_columns, "decimal": self.decimal,
                "timestamp_format": self.timestamp_format}

    @classmethod
    def from_dict(cls, data: dict) -> "InputMapping":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise MappingError(f"mapping has unknown keys {sorted(unknown)}; known keys are {sorted(known)}")
        data = dict(data)
        if "ignore" in data:
            data["ignore"] = tuple(data["ignore"])
        return cls(**data)

    @staticmethod
    def read_file(path: str) -> dict:
        """The keys a mapping file sets (a JSON object), not yet checked."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise MappingError(f"mapping file {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise MappingError(f"mapping file {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
        if not isinstance(data, dict):
            raise MappingError(f"mapping file {path} must hold a JSON object, not a {type(data).__name__}")
        return data

    @classmethod
    def from_file(cls, path: str) -> "InputMapping":
        return cls.from_dict(cls.read_file(path))


def _channel_key(name: str) -> str:
    """A column name as a person would read it: no case, no unit in brackets, letters and digits only
    (``'Flow [l/min]'`` and ``'FLOW'`` both read ``'flow'``)."""
    return re.sub(r"[^0-9a-z]", "", re.sub(r"[\[(].*?[\])]", "", name.casefold()))


def renaming_hint(channels: tuple, columns: list) -> str:
    """When some of the model's ``channels`` are not among a wide file's channel ``columns`` but one column each
    reads as they do (``_channel_key``: another case, a unit added), the mapping that renames them, as a clause
    to add to the refusal; else empty."""
    by_key: dict = {}
    for column in columns:
        by_key.setdefault(_channel_key(column), []).append(column)
    names = {}  # column -> channel, in the model's channel order
    for channel in channels:
        if channel in columns:
            names[channel] = channel
        elif len(by_key.get(_channel_key(channel), ())) == 1:
            names[by_key[_channel_key(channel)][0]] = channel
    renamed = {column: channel for column, channel in names.items() if column != channel}
    if not renamed:
        return ""
    mapping = {"channels": names}
    others = [column for column in columns if column not in mapping["channels"]]
    if others:  # with "channels" given, the file's other columns are no channels: they must be ignored
        mapping["ignore"] = others
    shown = ", ".join(f"{column!r} for {channel!r}" for column, channel in renamed.items())
    return (f"; its columns look like the model's under other names ({shown}): a --mapping file "
            f"{json.dumps(mapping)} reads them as the model's channels")
