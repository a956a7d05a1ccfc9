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
timestamp, the entity column and ``ignore``): an object of column and channel name, or a list of columns read
under their own names. ``columns`` is for long files only, and ``timestamp``, ``entity`` and ``channels`` for wide
ones: a mapping that sets one for the other format is refused, as the matching flags are. ``timestamp_unit``: ``s``/``ms``/``us``/``ns`` for epoch
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


ENTITY_FORMS = ("one of {'column': NAME}, {'value': ID}, {'from_filename': true}, {'from_topic': LEVEL} (an MQTT "
                "topic level counted from 0) or {'from_key': true} (the Kafka message key), with NAME and ID "
                "non-empty text")
# The keys only one format reads: their defaults, and what the other format has instead. A mapping that sets one
# for the other format is refused, as the matching flags are, rather than read without it.
WIDE_ONLY = {
    "timestamp": ("timestamp", "a long file's timestamp column is named in 'columns' (its role 'timestamp')"),
    "entity": ({"from_filename": True}, "a long file's rows name their entity in its entity_id column, named in "
                                        "'columns'"),
    "channels": ({}, "a long file's rows name their channel in its channel column, named in 'columns', and 'ignore' "
                     "leaves channels out"),
}
LONG_ONLY = {"columns": ({}, "a wide file's columns are named by 'timestamp', 'entity' and 'channels'")}


def shown(value) -> str:
    """A JSON value as a person wrote it in a mapping file, for the end of a refusal (``the text 'status'``,
    ``the number 5``, ``null``, ``the list ["flow"]``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, (list, tuple)):
        return f"the list {json.dumps(list(value), ensure_ascii=False, default=repr)}"
    if isinstance(value, dict):
        return f"the object {json.dumps(value, ensure_ascii=False, default=repr)}"
    return f"a {type(value).__name__}"


def _is_text(value, empty: bool = True) -> bool:
    return isinstance(value, str) and (empty or value != "")


def _valid_entity(entity) -> bool:
    if not isinstance(entity, dict) or len(entity) != 1:
        return False
    (key, value), = entity.items()
    if key in ("column", "value"):
        return _is_text(value, empty=False)
    if key in ("from_filename", "from_key"):
        return value is True
    if key == "from_topic":  # a level counted from 0; true is no level, though Python counts it as 1
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return False


def check_key(key: str, value):
    """``value`` as the mapping key ``key`` holds it (a list of ``channels`` becomes those columns, unrenamed;
    ``ignore`` a tuple), or a ``MappingError`` saying in one sentence what ``key`` must be and what it got: a
    value of the wrong JSON type had failed later with a traceback, or been read as something else (the text
    ``"status"`` as ``ignore`` was the columns 's', 't', 'a', ...). Checks each key alone; ``InputMapping`` checks
    them together."""
    def refuse(must: str, got=value):
        raise MappingError(f"the mapping's {key!r} must be {must}, got {shown(got)}")

    if key == "format":
        if value not in ("long", "wide"):
            refuse("'long' or 'wide'")
    elif key == "columns":
        roles = f"an object of role and column name (roles: {', '.join(LONG_COLUMNS)})"
        if not isinstance(value, dict):
            refuse(roles)
        for role, column in value.items():
            if role not in LONG_COLUMNS:
                refuse(roles, {role: column})
            if not _is_text(column):
                refuse(f"{roles}, its {role!r} a column name", column)
    elif key == "timestamp":
        if not _is_text(value):
            refuse("the name of the timestamp column")
    elif key == "entity":
        if not _valid_entity(value):
            refuse(ENTITY_FORMS)
    elif key == "channels":
        if isinstance(value, (list, tuple)):  # the README's "list and rename": these columns under their names
            if not all(_is_text(column, empty=False) for column in value):
                refuse("a list of column names or an object of column and channel name")
            return {column: column for column in value}
        if not isinstance(value, dict):
            refuse("a list of column names or an object of column and channel name")
        for column, channel in value.items():
            if not _is_text(column, empty=False) or not _is_text(channel, empty=False):
                refuse(f"a list of column names or an object of column and channel name, its {column!r} a "
                       f"channel name", channel)
        return value
    elif key == "ignore":
        if not isinstance(value, (list, tuple)) or not all(_is_text(column) for column in value):
            refuse("a list of column names")
        return tuple(value)
    elif key == "sep":
        if value is not None and not (_is_text(value) and len(value) == 1):
            refuse("one character, or null to sniff it from the header")
    elif key == "timestamp_unit":
        if value not in TIMESTAMP_UNITS:
            refuse(f"one of {[unit for unit in TIMESTAMP_UNITS if unit]}, or null to guess it from each value")
    elif key == "timezone":
        import zoneinfo
        try:
            if not _is_text(value, empty=False):
                raise ValueError
            zoneinfo.ZoneInfo(value)
        except (ValueError, zoneinfo.ZoneInfoNotFoundError):
            refuse("an IANA zone name such as 'Europe/Berlin' or 'UTC'")
    elif key == "extra_columns":
        if value not in ("error", "ignore"):
            refuse("'error' or 'ignore'")
    elif key == "decimal":
        if value not in (".", ","):
            refuse("'.' or ','")
    elif key == "timestamp_format":
        if value is not None and not (_is_text(value) and "%" in value):
            refuse("a strftime format such as '%d/%m/%Y %H:%M:%S', or null for ISO 8601 and epoch numbers")
    return value


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
        for key in self.__dataclass_fields__:  # each key alone, in the order of a mapping file's description
            value = getattr(self, key)
            checked = check_key(key, value)
            if checked is not value:  # frozen: a list of channels or ignored columns, as JSON gives them
                object.__setattr__(self, key, checked)
        # The keys of the other format: read without them, as they had been, the mapping would not do what it says.
        others, other = (WIDE_ONLY, "wide") if self.format == "long" else (LONG_ONLY, "long")
        for key, (default, instead) in others.items():
            value = getattr(self, key)
            if value != default:
                raise MappingError(f"the mapping's {key!r} is for format {other!r}, got {shown(value)} with format "
                                   f"{self.format!r}; {instead}")
        if self.decimal == "," and self.sep == ",":
            raise MappingError("decimal ',' needs another field separator than ',' (set sep, e.g. ';')")

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
        _refuse_unknown_keys(data)
        return cls(**data)

    @staticmethod
    def read_file(path: str, read=None) -> dict:
        """The keys a mapping file sets (a JSON object), each checked alone (``check_key``) but as written, so
        that the format flags and a replay's changes can still be merged into them; ``from_dict`` checks them
        together. A byte-order mark, as Notepad writes one, is read past. ``read``: how to read the file's bytes
        (``seqwatch.pipelines.object_store.read_bytes`` reads a URL of an object store too; default: a local
        file)."""
        try:
            raw = read(path) if read is not None else Path(path).read_bytes()
            data = json.loads(raw.decode("utf-8-sig"))
        except FileNotFoundError:
            raise MappingError(f"mapping file {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise MappingError(f"mapping file {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
        except UnicodeDecodeError:
            raise MappingError(f"mapping file {path} is not UTF-8 text: save it as UTF-8") from None
        except OSError as exc:
            raise MappingError(f"mapping file {path} cannot be read: {exc.strerror or exc}") from None
        if not isinstance(data, dict):
            raise MappingError(f"mapping file {path} must hold a JSON object, not a {type(data).__name__}")
        _refuse_unknown_keys(data)
        for key, value in data.items():
            check_key(key, value)
        return data

    @classmethod
    def from_file(cls, path: str) -> "InputMapping":
        return cls.from_dict(cls.read_file(path))


def _refuse_unknown_keys(data: dict) -> None:
    known = set(InputMapping.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise MappingError(f"mapping has unknown keys {sorted(unknown)}; known keys are {sorted(known)}")


def _channel_key(name: str) -> str:
    """A column name as a person would read it: no case, no unit in brackets, after a comma or as a last word that
    begins with a sign (``°C``, ``%``), letters and digits only (``'Flow [l/min]'``, ``'Flow, l/min'`` and
    ``'FLOW'`` read ``'flow'``, ``'Temperature °C'`` reads ``'temperature'``; found by the bug hunt of real data,
    on SKAB's columns with their units)."""
    name = re.sub(r"[\[(].*?[\])]", "", name.casefold())
    name = re.sub(r",[^,]*$", "", name) if re.search(r"[0-9a-z]", name.split(",")[0]) else name
    name = re.sub(r"\s+[°%‰µ][^\s]*\s*$", "", name)
    return re.sub(r"[^0-9a-z]", "", name)


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
    if not renamed or len(names) < len(channels):  # a mapping that still lacks a channel would be refused again
        return ""
    mapping = {"channels": names}
    others = [column for column in columns if column not in mapping["channels"]]
    if others:  # with "channels" given, the file's other columns are no channels: they must be ignored
        mapping["ignore"] = others
    shown = ", ".join(f"{column!r} for {channel!r}" for column, channel in renamed.items())
    return (f"; its columns look like the model's under other names ({shown}): a --mapping file "
            f"{json.dumps(mapping)} reads them as the model's channels")
