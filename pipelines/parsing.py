"""Turning the rows of an input file into readings, or into quarantined records with a reason (no Beam here).

``FileLayout`` checks a file's header against the mapping (schema drift is a clear error, not a crash);
``parse_rows`` converts a chunk of rows column by column (vectorised with pandas) and routes each row or cell
that fails to a ``Quarantined`` record that keeps the raw line untouched.

The unit of accounting is the *reading* (one value of one channel at one time). A long-format row is one
reading; a wide-format row is one reading per channel column. A quarantined record says how many readings it
stands for (``records``) and, for a single bad cell of a wide row, which ``column``.
"""
from __future__ import annotations

import csv
import difflib
import json
import re
import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePath
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from seqwatch.schemas.elements import Quarantined, ReadingBatch, categories_of
from seqwatch.schemas.mapping import LONG_COLUMNS, InputMapping

MAX_ID_LENGTH = 256
# A wide file whose entity comes from its name by default, but which has a column of this name (the long
# format's entity column, as ``DataFrame.pivot(index=["entity_id", "timestamp"], ...)`` writes it), takes its
# entities from that column: read as a channel it would be text in every row, and every entity of the file the
# same one.
WIDE_ENTITY_COLUMN = "entity_id"
_OFFSET_RE = re.compile(r"(?:Z|UTC|GMT|[+-]\d\d:?\d\d)$", re.IGNORECASE)
# ASCII digits only (``\d`` matches full-width ones, which int() reads but Arrow and pandas do not); an exponent for
# a float column's text (a Parquet float64 of epoch ns is written as 1.7675928e+18)
_EPOCH_RE = re.compile(r"^[+-]?\d+(\.\d+)?([eE][+-]?\d+)?$", re.ASCII)


class SchemaDriftError(ValueError):
    """A file's columns do not match what the mapping requires."""


# Names a long file's role columns often go by (compared without case, blanks and underscores), for the guess of
# a refusal: a header "Device,Time,Tag,Value" had been hinted only for 'value' (found by the bug hunt of real data).
ROLE_SYNONYMS = {
    "entity_id": ("entity", "device", "deviceid", "asset", "assetid", "machine", "machineid", "equipment", "station",
                  "meter", "meterid", "node", "id"),
    "timestamp": ("time", "ts", "datetime", "date", "timeutc", "timestamputc", "eventtime"),
    "channel": ("tag", "tagname", "signal", "metric", "variable", "sensor", "parameter", "channelname", "series",
                "field", "name"),
    "value": ("val", "reading", "measurement", "measuredvalue", "y"),
}


def _fold(name: str) -> str:
    return name.casefold().replace(" ", "").replace("_", "")


def _renamed_to(column: str, others: list[str], synonyms: tuple = ()) -> str | None:
    """The column among ``others`` that ``column`` was likely renamed to: the same name in another case or
    spacing, one of its ``synonyms``, or a close spelling; None."""
    folded = {_fold(h): h for h in others}
    for candidate in (column, *synonyms):
        if _fold(candidate) in folded:
            return folded[_fold(candidate)]
    close = difflib.get_close_matches(column, others, n=1, cutoff=0.6)
    return close[0] if close else None


COLUMNS_NAMED = 10  # an error names this many of a header's columns, then how many more


def column_list(columns) -> str:
    """``['a', 'b']``, or the first ``COLUMNS_NAMED`` of ``columns`` and how many more: a historian's export of
    50,000 tags had made an error sentence of 600 kB."""
    columns = list(columns)
    if len(columns) <= COLUMNS_NAMED:
        return str(columns)
    return f"{columns[:COLUMNS_NAMED]} and {len(columns) - COLUMNS_NAMED:,} more"


def _lacks(name: str, what: str, missing: list[str], header: tuple, taken=(), synonyms: dict | None = None,
           roles: dict | None = None) -> str:
    """``x.csv lacks required columns ['timestamp'] (its columns are [...]; was 'timestamp' renamed to 'time'?)``;
    ``taken``: columns with a role of their own (the timestamp), never guessed as another's new name;
    ``synonyms``: other names per missing column. ``roles`` (a long file's ``{role: column}``): when every missing
    column has a guess, the mapping that reads them too."""
    others = [h for h in header if h and h not in missing and h not in taken]
    found = {}
    for column in missing:
        guess = _renamed_to(column, [h for h in others if h not in found.values()], (synonyms or {}).get(column, ()))
        if guess is not None:
            found[column] = guess
    guesses = [f"{column!r} renamed to {guess!r}" for column, guess in found.items()]
    hint = f"; was {' and '.join(guesses)}?" if guesses else ""
    if roles is not None and found and len(found) == len(missing):
        columns = {role: found.get(column, column) for role, column in roles.items() if found.get(column, column)
                   != role}
        suggested = {"format": "long", "columns": columns}
        used = {found.get(column, column) for column in roles.values()}
        extra = [h for h in header if h and h not in used]
        if extra:  # a long file's other columns are refused unless ignored
            suggested["ignore"] = extra
        hint += f" If so, a --mapping file {json.dumps(suggested)} reads them"
    named = repr(missing[0]) if what.startswith("the ") else str(missing)
    return f"{name} lacks {what} {named} (its columns are {column_list(header)}{hint})"


@dataclass(frozen=True)
class FileLayout:
    """Where the roles of a mapping sit in one file's header."""

    header: tuple
    entity_column: str | None  # None: entity from the mapping's value or the file name
    entity_value: str | None
    timestamp_column: str
    channel_columns: tuple  # wide: file columns that hold channels; long: ()
    channel_names: tuple  # wide: channel names for channel_columns
    long_columns: dict  # long: role -> file column

    @classmethod
    def resolve(cls, header: list[str], mapping: InputMapping, source: str) -> "FileLayout":
        """The layout of ``header`` under ``mapping``; raises ``SchemaDriftError`` naming the file and the columns
        when a required column is missing (with the likely renamed one), a column appears twice, or an extra
        column appears that the mapping does not tolerate."""
        header = tuple(h.strip() for h in header)
        present = set(header)
        name = PurePath(source).name
        # counted once (``header.count`` per column took 31 s for a historian's export of 50,000 tags)
        repeated = sorted(h for h, n in Counter(header).items() if h and n > 1)
        if repeated:
            raise SchemaDriftError(f"{name} has duplicate columns {column_list(repeated)} (its columns are "
                                   f"{column_list(header)})")
        if mapping.format == "long":
            roles = {role: mapping.long_column(role) for role in LONG_COLUMNS}
            partitions = hive_partitions(source)
            # A Hive-style folder (entity_id=pump-01/, as Spark's partitionBy writes) holds the entity of its files.
            entity_folder = partitions.get(roles["entity_id"]) if roles["entity_id"] not in present else None
            missing = [col for col in roles.values() if col not in present
                       and not (col == roles["entity_id"] and entity_folder is not None)]
            if missing:
                # a timestamp and value columns without entity and channel ones (NAB's files) are wide too
                looks_wide = roles["timestamp"] in present and (
                    {roles["channel"], roles["value"]} <= set(missing)
                    or {roles["channel"], roles["entity_id"]} <= set(missing))
                hint = ("; a file with one column per channel is wide: --format wide, or the mapping's 'format'"
                        if looks_wide else "")
                synonyms = {column: ROLE_SYNONYMS[role] for role, column in roles.items() if column == role}
                raise SchemaDriftError(_lacks(name, "required columns", missing, header, synonyms=synonyms,
                                              roles=roles) + hint)
            extra = [h for h in header if h not in set(roles.values()) and h not in mapping.ignore and h]
            if extra and mapping.extra_columns == "error":
                raise _unexpected_columns(name, extra)
            if entity_folder is not None:
                return cls(header, None, entity_folder, roles["timestamp"], (), (), roles)
            return cls(header, roles["entity_id"], None, roles["timestamp"], (), (), roles)
        if mapping.timestamp not in present:
            unnamed = header[0] if header and (not header[0] or header[0].startswith("Unnamed")) else None
            hint = (f"; its first column has no name, as pandas writes an unnamed index: if it holds the times, "
                    f"--timestamp-column {shlex.quote(unnamed)} (or the mapping's 'timestamp') reads them"
                    if unnamed is not None else "")
            timelike = [h for h in header if h and _TIMELIKE.search(h)]
            if not hint and timelike:
                hint = (f"; if {timelike[0]!r} holds the times, --timestamp-column {shlex.quote(timelike[0])} (or the "
                        f"mapping's 'timestamp') reads them")
            raise SchemaDriftError(_lacks(name, "the timestamp column", [mapping.timestamp], header) + hint)
        if mapping.entity.get("from_topic") is not None or mapping.entity.get("from_key"):
            origin = "an MQTT topic level (from_topic)" if "from_topic" in mapping.entity else "a Kafka key (from_key)"
            raise SchemaDriftError(f"{name}: the mapping takes each entity from {origin}, which a file does not "
                                   f"have; take it from a column, a value or the file name")
        entity_column = mapping.entity.get("column")
        entity_value = mapping.entity.get("value")
        partitions = hive_partitions(source)
        if entity_column is not None and entity_column not in present:
            if entity_column not in partitions:
                raise SchemaDriftError(_lacks(name, "the entity column", [entity_column], header))
            # A Hive-style folder (device=pump-01/, as Spark's partitionBy writes) holds the column for its files.
            entity_column, entity_value = None, partitions[entity_column]
        if mapping.entity.get("from_filename"):
            if WIDE_ENTITY_COLUMN in present and WIDE_ENTITY_COLUMN not in (*mapping.ignore, *mapping.channels):
                entity_column = WIDE_ENTITY_COLUMN  # the file names its entities, as a long file would
            elif WIDE_ENTITY_COLUMN in partitions:
                entity_value = partitions[WIDE_ENTITY_COLUMN]  # or its folder does (entity_id=pump-01/)
            else:
                entity_value = entity_from_filename(source)
        taken = {mapping.timestamp, entity_column, *mapping.ignore}
        if mapping.channels:
            missing = [col for col in mapping.channels if col not in present]
            if missing:
                raise SchemaDriftError(_lacks(name, "channel columns", missing, header, taken))
            extra = [h for h in header if h and h not in taken and h not in mapping.channels
                     and not h.startswith("Unnamed")]
            if extra and mapping.extra_columns == "error":
                raise _unexpected_columns(name, extra)
            columns = tuple(mapping.channels)
            names = tuple(mapping.channels[c] for c in columns)
            shared = sorted(n for n, k in Counter(names).items() if k > 1)
            if shared:  # their readings would be one channel's, read twice at each time
                both = [c for c in columns if mapping.channels[c] == shared[0]]
                raise SchemaDriftError(f"the mapping names the columns {both} of {name} both channel {shared[0]!r}; "
                                       f"give each column a channel of its own, or ignore all but one")
        else:
            columns = tuple(h for h in header if h and h not in taken and not h.startswith("Unnamed"))
            names = columns
        if not columns:
            raise SchemaDriftError(f"{name} has no channel columns besides {sorted(c for c in taken if c)}")
        return cls(header, entity_column, entity_value, mapping.timestamp, columns, names, {})

    @property
    def readings_per_row(self) -> int:
        return len(self.channel_columns) if self.channel_columns else 1


_TIMELIKE = re.compile(r"time|date|^ts$|stamp|^t$|zeit|datum", re.IGNORECASE)


def _unexpected_columns(name: str, extra: list) -> SchemaDriftError:
    return SchemaDriftError(f"{name} has unexpected columns {column_list(extra)}; ignore them (--ignore, or the "
                            f"mapping's 'ignore' list) or set the mapping's 'extra_columns' to 'ignore'")


HIVE_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


def hive_partitions(source: str) -> dict[str, str]:
    """The Hive-style partition folders of a path (``.../device=pump-01/date=2026-01-05/part-0.parquet`` ->
    ``{"device": "pump-01", "date": "2026-01-05"}``), their values unescaped as Spark and Arrow escape them
    (``%2F`` for ``/``); the innermost wins when a key repeats."""
    from urllib.parse import unquote

    found = {}
    for part in PurePath(source).parts[:-1]:
        key, sep, value = part.partition("=")
        if sep and key and value == HIVE_NULL_PARTITION:
            found[unquote(key)] = ""  # Spark's folder for rows whose key is null: an entity id that is missing
        elif sep and key and value:
            found[unquote(key)] = unquote(value)
    return found


def partition_clash(spans: dict) -> str | None:
    """The sentence refusing files of different Hive-style partition folders that are one entity over the same
    time, or None. ``spans``: entity -> ``[(path, first µs, last µs)]``. Spark's ``partitionBy("device")`` writes
    ``device=pump-01/part-0000.parquet`` and ``device=pump-02/part-0000.parquet``: named alike, every pump would be
    the entity of the file name, and all but one pump's readings duplicates (files of one entity in date folders,
    ``date=2026-01-05/pump-01.csv``, cover different times and pass)."""
    for entity, items in spans.items():
        items = sorted(items, key=lambda item: item[1])
        reach = items[0]  # of the files so far, the one that reaches latest: a later file overlapping any overlaps it
        for b, first_b, last_b in items[1:]:
            a, first_a, last_a = reach
            if last_b > last_a:
                reach = (b, first_b, last_b)
            if first_b > last_a:
                continue
            pa_, pb_ = hive_partitions(a), hive_partitions(b)
            differ = sorted(k for k in set(pa_) | set(pb_) if pa_.get(k) != pb_.get(k))
            if differ:
                return (f"{a} and {b} are both entity {entity!r} over the same time, but lie in different "
                        f"partition folders ({differ[0]}={pa_.get(differ[0], '')} and {differ[0]}="
                        f"{pb_.get(differ[0], '')}): take the entity from the folders with --entity-column "
                        f"{differ[0]} (the mapping's entity column)")
            # Files of one name in other (not partition) folders, each the entity of its name, over mostly the same
            # time: other machines (site-a/pump.csv, site-b/pump.csv; a data set's anomaly_*/day6.csv), whose
            # readings would be duplicates of one another. Files that share less than half of the longer one's span
            # pass: daily exports sharing an hour, rolling 48-hour exports written daily, a file whose one stray
            # reading from months before stretches its span over another.
            shared = min(last_a, last_b) - first_b
            same_name = PurePath(a).name == PurePath(b).name and PurePath(a).parent != PurePath(b).parent
            if (same_name and not pa_ and not pb_ and entity == entity_from_filename(a)
                    and shared > 0.5 * max(last_a - first_a, last_b - first_b)):
                return (f"{a} and {b} are both entity {entity!r}, the name of the file, over the same time: they "
                        f"would be one machine's readings twice; give each file its entity (a column: "
                        f"--entity-column; a folder: site=a/{PurePath(a).name}, read with --entity-column site; or "
                        f"other file names), or run the folders apart")
    return None


def entity_from_filename(source: str) -> str:
    """The entity a file's name stands for: its name without the extension, and without a compression suffix
    Beam reads through (``pump-01.csv.gz`` -> ``pump-01``, as ``pump-01.csv``)."""
    from apache_beam.io.filesystem import CompressionTypes

    path = PurePath(source)
    if CompressionTypes.detect_compression_type(path.name) != CompressionTypes.UNCOMPRESSED:
        path = path.with_suffix("")
    return path.stem


_BAD_TIME = np.iinfo(np.int64).min
_YEAR_RE = re.compile(r"(?<!\d)\d{4}(?!\d)")
_NUMERIC_DATE_RE = re.compile(r"^\d{1,2}[./-]\d{1,2}[./-]\d{2,4}\b")
_NUMERIC_DATE_PARTS = re.compile(r"^(\d{1,2})([./-])(\d{1,2})\2(\d{2,4})(?:[ T](\d{1,2}:\d{2})(:\d{2})?(\.\d+)?)?$")


def numeric_date_reason(shown: str, text: str) -> str:
    """Why a numeric date (``3/15/2020 21:01``) is not read without a format, with the ``--timestamp-format`` that
    reads it: month first where the second number cannot be a month, day first where the first cannot, both
    where either could be."""
    match = _NUMERIC_DATE_PARTS.match(text.strip())
    if not match:
        return (f"timestamp {shown} is ambiguous (day/month order); set the timestamp format (--timestamp-format, "
                f"the mapping's timestamp_format), e.g. '%d/%m/%Y %H:%M:%S' or '%m/%d/%Y %H:%M:%S'")
    first, sep, second, year, clock, seconds, fraction = match.groups()
    rest = "%Y" if len(year) == 4 else "%y"
    if clock:
        rest += " %H:%M" + (":%S" if seconds else "") + (".%f" if fraction else "")
    day_first, month_first = f"%d{sep}%m{sep}{rest}", f"%m{sep}%d{sep}{rest}"
    if int(first) > 12 and int(second) > 12:
        return f"timestamp {shown} is no date: neither {first} nor {second} can be a month"
    if int(second) > 12 >= int(first):
        return (f"timestamp {shown} is written month first ({second} cannot be a month), which is read only with "
                f"its format: --timestamp-format '{month_first}' (the mapping's timestamp_format)")
    if int(first) > 12 >= int(second):
        return (f"timestamp {shown} is written day first ({first} cannot be a month), which is read only with "
                f"its format: --timestamp-format '{day_first}' (the mapping's timestamp_format)")
    return (f"timestamp {shown} is ambiguous (day/month order); set its format: --timestamp-format "
            f"'{day_first}' or '{month_first}' (the mapping's timestamp_format)")


_EPOCH_SCALE = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}  # µs per unit; ns divides by 1000


def _epoch_micros(text: pd.Series, unit: str | None) -> np.ndarray:
    """Epoch numbers (as text) to int64 µs; ``_BAD_TIME`` where out of range. Integers stay exact (no float
    rounding of nanosecond epochs); without ``unit`` each value's unit is guessed from its magnitude:
    < 1e11 seconds, < 1e14 milliseconds, < 1e17 microseconds, else nanoseconds."""
    out = np.full(len(text), _BAD_TIME, dtype=np.int64)
    integral = ~text.str.contains(r"[.eE]").to_numpy(dtype=bool)
    digits = text.str.lstrip("+-").str.len().to_numpy()
    exact = integral & (digits <= 18)
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    magnitude = np.abs(numbers)
    if unit is None:
        units = np.where(magnitude < 1e11, "s", np.where(magnitude < 1e14, "ms", np.where(magnitude < 1e17, "us",
                                                                                            "ns")))
    else:
        units = np.full(len(text), unit)
    for u in ("s", "ms", "us", "ns"):
        sel = units == u
        if not sel.any():
            continue
        as_int = sel & exact
        if as_int.any():  # at most 18 digits: exact in int64
            ints = text[as_int].str.lstrip("+").astype("int64").to_numpy()
            if u == "ns":
                fits, micros = np.ones(len(ints), dtype=bool), (ints + 500) // 1000
            else:
                fits = np.abs(ints) < 9_000_000_000_000_000_000 // _EPOCH_SCALE[u]
                micros = np.where(fits, ints, 0) * _EPOCH_SCALE[u]
            idx = np.flatnonzero(as_int)
            out[idx[fits]] = micros[fits]
        as_float = sel & ~exact
        if as_float.any():
            micros = numbers[as_float] * (1e-3 if u == "ns" else _EPOCH_SCALE[u])
            fits = np.isfinite(micros) & (np.abs(micros) < 9e18)
            idx = np.flatnonzero(as_float)
            out[idx[fits]] = np.round(micros[fits]).astype(np.int64)
    return out


def _localize(parsed: pd.Series, timezone: str) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(parsed)
    if index.tz is None:
        index = index.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    return index.tz_convert("UTC").as_unit("us")


# Text the fast paths below parse with Arrow in bulk. Each value goes one way or the other by its text alone, and
# Arrow gives what pandas gives for every text these patterns take (tests/pipelines/test_parsing_fast_paths.py);
# anything else (blanks around it, a unit, a thousands separator, a date Arrow refuses) takes the general path.
_ISO_PREFIX = (r"^(19|20|21)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d"
               r"(:[0-5]\d(\.\d{1,6})?)?")
_ISO_NAIVE = _ISO_PREFIX + "$"
_ISO_AWARE = _ISO_PREFIX + r"(Z|[+-]([01]\d|2[0-3]):?[0-5]\d)$"
_PLAIN_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?$"


def _arrow_text(values: pd.Series) -> pa.Array | None:
    """The column's Arrow string array when pandas holds it as Arrow-backed strings (CSV columns), else None."""
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        return pa.array(values.array)
    return None


def _matches(text: pa.Array, pattern: str) -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(text, pattern), False).to_numpy(zero_copy_only=False)


def _iso_timestamps(text: pa.Array, timezone: str) -> tuple[np.ndarray, np.ndarray]:
    """int64 µs UTC of the plain ISO 8601 texts (with a ``Z`` or offset; without one only when ``timezone`` is
    UTC), and the mask of the values parsed; a group holding a date that does not exist (Feb 30) is left out."""
    out = np.full(len(text), _BAD_TIME, dtype=np.int64)
    done = np.zeros(len(text), dtype=bool)
    groups = [(_ISO_AWARE, pa.timestamp("us", tz="UTC"))]
    if timezone == "UTC":
        groups.append((_ISO_NAIVE, pa.timestamp("us")))
    for pattern, arrow_type in groups:
        if done.all():
            break
        mask = _matches(text, pattern)
        if not mask.any():
            continue
        try:
            parsed = pc.cast(text.filter(mask), arrow_type)
        except pa.ArrowInvalid:
            continue
        out[mask] = parsed.cast(pa.int64()).to_numpy()
        done |= mask
    return out, done


def parse_timestamps(values: pd.Series, unit: str | None = None, timezone: str = "UTC",
                     fmt: str | None = None, groups: np.ndarray | None = None) -> np.ndarray:
    """Timestamps as int64 µs UTC; ``np.iinfo(int64).min`` where a value cannot be parsed.

    Accepts datetimes, ISO 8601 strings (with or without offset; those without are in ``timezone``, and an
    ambiguous or nonexistent local time around a DST change is rejected), other unambiguous date strings that
    name a four-digit year (``Jan 5 2026 10:00``), strings in the ``strftime`` format ``fmt``, and epoch numbers
    (seconds, milliseconds, microseconds or nanoseconds: ``unit``, or guessed per value from its magnitude).
    Rejected rather than guessed: a time without a date (pandas would put it on today's date) and a
    day/month-ambiguous numeric date such as ``05/01/2026`` when no ``fmt`` is given. ``groups``: a code per value
    of the series it belongs to (an entity's, or an entity's channel's in a long file), by which local times of
    a repeated daylight-saving hour are told apart (``_resolve_repeated_hour``)."""
    text = _arrow_text(values) if fmt is None and len(values) else None
    if text is None:
        out = _parse_timestamps(values, unit, timezone, fmt)
    else:
        out, done = _iso_timestamps(text, timezone)
        if not done.all():
            out[~done] = _parse_timestamps(values[~done].reset_index(drop=True), unit, timezone, fmt)
    if timezone != "UTC" and (out == _BAD_TIME).any():
        _resolve_repeated_hour(values, out, timezone, fmt, groups)
    return out


def _resolve_repeated_hour(values: pd.Series, out: np.ndarray, timezone: str, fmt: str | None,
                           groups: np.ndarray | None = None) -> None:
    """Local times of the hour a daylight-saving change repeats (02:00-03:00 twice on a European October night),
    told apart by the order of the rows, in place in ``out``: when the chunk's ambiguous rows run forward, jump
    back once and run forward again, the first run is the first pass (summer time) and the second the repeat.
    Readings of many entities interleaved in time order (a fleet's export) run so too. With ``groups`` (a code
    per row: its entity, or its entity's channel), each group's rows are told apart on their own, so entities
    one after another are too, and a series read once an hour, whose two rows ``02:00`` and ``02:00`` do not
    jump back but repeat, has its second row in the repeat. Any other order (unsorted rows, only one pass in the
    chunk) says nothing, and those rows stay unparsed (quarantined as ambiguous)."""
    bad = np.flatnonzero(out == _BAD_TIME)
    raw = values.iloc[bad].reset_index(drop=True)
    if pd.api.types.is_datetime64_any_dtype(raw):
        if getattr(raw.dtype, "tz", None) is not None:
            return
        naive = pd.DatetimeIndex(raw)
    else:
        text = raw.astype("string").str.strip()
        text = text.where(~text.str.contains(_OFFSET_RE).fillna(False))  # times with an offset are not local
        try:
            naive = pd.DatetimeIndex(pd.to_datetime(text, errors="coerce", format=fmt or "ISO8601"))
        except (ValueError, TypeError):
            return
        if naive.tz is not None:
            return
    first = naive.tz_localize(timezone, ambiguous=np.ones(len(naive), dtype=bool), nonexistent="NaT")
    repeat = naive.tz_localize(timezone, ambiguous=np.zeros(len(naive), dtype=bool), nonexistent="NaT")
    ambiguous = (~first.isna() & ~repeat.isna() & (first != repeat))
    if not ambiguous.any():
        return
    stamps = naive.asi8[ambiguous]
    second = np.zeros(len(stamps), dtype=bool)
    told = np.zeros(len(stamps), dtype=bool)
    if groups is None:
        turn = _repeat_starts(stamps, one_series=False)
        if turn is not None:
            second[turn:] = told[:] = True
    else:
        codes = np.asarray(groups)[bad][np.asarray(ambiguous)]
        for rows in pd.Series(np.arange(len(codes))).groupby(codes, sort=False).indices.values():
            turn = _repeat_starts(stamps[rows], one_series=True)
            if turn is not None:
                second[rows[turn:]] = told[rows] = True
    if not told.any():
        return
    utc = np.where(second, repeat.as_unit("us").asi8[ambiguous], first.as_unit("us").asi8[ambiguous])
    rows = np.flatnonzero(ambiguous)
    out[bad[rows[told]]] = utc[told]


def _repeat_starts(stamps: np.ndarray, one_series: bool) -> int | None:
    """Where the repeat of the hour starts in local times of that hour in row order: after their one jump back,
    to no later than where they began (a first pass, then the repeat); for ``one_series`` read once an hour, at
    its second of two equal rows. None for any other order (a reading out of place, a repeated row among
    others)."""
    if one_series and len(stamps) == 2 and stamps[1] == stamps[0]:
        return 1
    back = np.flatnonzero(np.diff(stamps) < 0)
    if len(back) == 1 and stamps[back[0] + 1] <= stamps[0]:
        return int(back[0]) + 1
    return None


def series_codes(n: int, entity_codes=None, channel_codes=None) -> np.ndarray:
    """A code per row for the series it belongs to: its entity (one for a file of one entity) and, in a long file,
    its channel (codes of -1, a missing id, stay apart from the others)."""
    groups = np.zeros(n, dtype=np.int64) if entity_codes is None else np.asarray(entity_codes, dtype=np.int64)
    if channel_codes is not None:
        channel = np.asarray(channel_codes, dtype=np.int64)
        groups = groups * (int(channel.max(initial=0)) + 2) + channel
    return groups


def _parse_timestamps(values: pd.Series, unit: str | None, timezone: str, fmt: str | None) -> np.ndarray:
    """``parse_timestamps`` value by value with pandas: every form it accepts."""
    if len(values) > 64 and not pd.api.types.is_datetime64_any_dtype(values):
        # Each value is parsed on its own: parse each distinct one once (a long file repeats every timestamp once
        # per channel).
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        if 2 * len(uniques) <= len(values):
            return _parse_timestamps(pd.Series(uniques), unit, timezone, fmt)[codes]
    out = np.full(len(values), _BAD_TIME, dtype=np.int64)
    if pd.api.types.is_datetime64_any_dtype(values):
        micros = pd.Series(_localize(values, timezone))
        ok = micros.notna().to_numpy()
        out[ok] = micros[ok].astype("int64").to_numpy()
        return out
    text = values.astype("string").str.strip().fillna("")
    # An explicit format first: 20260105 with '%Y%m%d' is a date, not 20 million epoch seconds
    epoch_mask = (np.zeros(len(text), dtype=bool) if fmt is not None else
                  text.str.match(_EPOCH_RE).fillna(False).to_numpy(dtype=bool))
    if epoch_mask.any():
        out[epoch_mask] = _epoch_micros(text[epoch_mask], unit)
    rest = ~epoch_mask & (text != "").to_numpy(dtype=bool)
    if not rest.any():
        return out
    strings = text[rest]
    idx = np.flatnonzero(rest)
    if fmt is not None:
        aware = "%z" in fmt or "%Z" in fmt
        parsed = pd.to_datetime(strings, errors="coerce", format=fmt, utc=aware)
        micros = pd.Series(_localize(parsed, timezone), index=strings.index)
        ok = micros.notna().to_numpy()
        out[idx[ok]] = micros[ok].astype("int64").to_numpy()
        return out
    has_offset = strings.str.contains(_OFFSET_RE).fillna(False).to_numpy(dtype=bool)
    for mask, aware in ((has_offset, True), (~has_offset, False)):
        if not mask.any():
            continue
        out[idx[mask]] = _date_strings(strings[mask].reset_index(drop=True), aware, timezone)
    return out


def _date_strings(part: pd.Series, aware: bool, timezone: str) -> np.ndarray:
    """int64 µs (``_BAD_TIME`` where unparsed) of date strings: ISO 8601, else any form naming a four-digit year
    that is not a day/month-ambiguous numeric date. ``aware``: the strings end with a zone, which pandas then
    converts to UTC. A group pandas refuses as a whole (a zone it finds that ``_OFFSET_RE`` did not, such as the
    hour-only ``+01``, among zone-less strings: "mixed timezones") is parsed one string at a time."""
    out = np.full(len(part), _BAD_TIME, dtype=np.int64)
    try:
        parsed = pd.to_datetime(part, errors="coerce", format="ISO8601", utc=aware)
        _put_micros(out, np.arange(len(part)), parsed, timezone)
        retry = (parsed.isna() & part.str.contains(_YEAR_RE) & ~part.str.contains(_NUMERIC_DATE_RE)).to_numpy(
            dtype=bool)
        if retry.any():  # each parse keeps its own zone handling: one may give naive times, the other aware ones
            fallback = pd.to_datetime(part[retry], errors="coerce", format="mixed", utc=aware)
            _put_micros(out, np.flatnonzero(retry), fallback, timezone)
    except (ValueError, TypeError):
        if len(part) == 1:
            return out
        return np.concatenate([_date_strings(part.iloc[k:k + 1].reset_index(drop=True), aware, timezone)
                               for k in range(len(part))])
    return out


def _put_micros(out: np.ndarray, positions: np.ndarray, parsed: pd.Series, timezone: str) -> None:
    micros = pd.Series(_localize(parsed, timezone))
    ok = micros.notna().to_numpy()
    out[positions[ok]] = micros[ok].astype("int64").to_numpy()


def explain_timestamp(value, unit: str | None = None, timezone: str = "UTC", fmt: str | None = None) -> str:
    """Why ``parse_timestamps`` rejected ``value``: one sentence for the quarantine's ``reason``."""
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
    shown = repr(text[:80])
    if not text:
        return "the timestamp is empty"
    if _EPOCH_RE.match(text):
        return f"epoch number {shown} is out of range for {unit or 'any'} epoch unit"
    if fmt is not None:
        naive = pd.to_datetime(pd.Series([text]), errors="coerce", format=fmt)
        if naive.isna().all():
            return f"timestamp {shown} does not match the mapping's timestamp_format {fmt!r}"
    elif not _YEAR_RE.search(text):
        return f"timestamp {shown} has no date with a four-digit year"
    elif _NUMERIC_DATE_RE.match(text) and pd.isna(pd.to_datetime(text, errors="coerce", format="ISO8601")):
        return numeric_date_reason(shown, text)
    else:
        naive = pd.to_datetime(pd.Series([text]), errors="coerce", format="mixed")
        if naive.isna().all():
            return (f"timestamp {shown} could not be parsed (expected ISO 8601 such as 2026-01-05T10:00:00Z, or "
                    f"epoch seconds or milliseconds)")
    stamp = naive.iloc[0]
    if stamp.tzinfo is None and timezone != "UTC":
        shifted = pd.DatetimeIndex([stamp]).tz_localize(timezone, ambiguous=True, nonexistent="NaT")
        if shifted.isna().all():
            return (f"local time {shown} does not exist in {timezone} (a daylight-saving change); write an "
                    f"explicit UTC offset or use UTC")
        # Said of every such row: the rows may be in time order yet hold the hour once (NYC taxi counts: found by
        # the bug hunt of real data, where the reason had said that rows in time order would tell)
        return (f"local time {shown} is ambiguous in {timezone} (a daylight-saving change repeats its hour, and "
                f"the rows around it do not tell which pass it is: a series in time order through both passes "
                f"would, one that holds the hour once cannot); write an explicit UTC offset or use UTC")
    return f"timestamp {shown} could not be parsed"


_DECIMAL_COMMA_RE = re.compile(r"^[+-]?\d*,\d+$")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}([,.' \u00a0\u202f]\d{3})+([.,]\d+)?$")  # French: (narrow) no-break spaces
_GROUPED_RE = re.compile(r"^[+-]?\d{1,3},\d{3}$")  # one comma before three digits: either reading fits
_POINT_GROUPED = re.compile(r"^[+-]?\d{1,3}(\.\d{3})+$")  # under a decimal comma: a point may group thousands
_HEX_RE = re.compile(r"^[+-]?0[xX][0-9a-fA-F]+$")
_UNIT_RE = re.compile(r"^[+-]?(\d+[.,]?\d*|\.\d+)([eE][+-]?\d+)?\s*([^\d\s.,+-].*)$")


def parse_values(values: pd.Series, decimal: str = ".") -> np.ndarray:
    """Floats; NaN where a value is missing, not a number, or not finite. ``decimal=","`` reads ``12,5``;
    a Unicode minus sign (U+2212, as some spreadsheets write) reads as ``-``. A column typed boolean (a Parquet
    status flag: a valve open, a pump running) reads as 1 and 0; the text ``true`` in a CSV cell is not a number."""
    if pd.api.types.is_bool_dtype(values):
        return np.array(values.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    text = _arrow_text(values)
    if pd.api.types.is_numeric_dtype(values):
        # A copy: a column read from Parquet can be a read-only view of Arrow memory.
        numbers = np.array(values.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64, copy=True)
    elif text is not None and len(values):  # plain numbers in bulk by Arrow, the rest as below
        numbers = np.full(len(values), np.nan)
        if decimal == ",":  # as below: a decimal comma reads as a point where the text is digits around one comma
            dotted = _matches(text, _POINT_GROUPED.pattern)  # under a decimal comma, 1.234 is 1234 or 1.234: not read
            text = pc.replace_substring_regex(text, r"^([+-]?\d*),(\d+)$", r"\1.\2")
        plain = _matches(text, _PLAIN_NUMBER)
        if decimal == ",":
            plain &= ~dotted
        try:
            numbers[plain] = pc.cast(text.filter(plain), pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            plain[:] = False
        if not plain.all():
            numbers[~plain] = _text_values(values[~plain], decimal)
    else:
        numbers = _text_values(values, decimal)
    numbers = np.array(numbers, dtype=np.float64, copy=True)  # Parquet-backed columns give read-only views
    numbers[~np.isfinite(numbers)] = np.nan
    return numbers


PARSED_TOGETHER = 1_000_000  # text values of a wide file's columns parsed in one call, at most


def parse_columns(columns: list[pd.Series], decimal: str = ".") -> list[np.ndarray]:
    """``parse_values`` of each column; the columns of Arrow-backed text (a CSV's) are parsed together, up to
    ``PARSED_TOGETHER`` values a call: the call's fixed cost (about 0.1 ms) had made a wide file of 16 rows and
    50,000 columns spend 18 s parsing its 800,000 values one column at a time."""
    out: list = [None] * len(columns)
    texts = {k: _arrow_text(values) for k, values in enumerate(columns)}
    together = [k for k, text in texts.items() if text is not None]
    kinds = {texts[k].type for k in together}
    if len(together) < 2 or len(kinds) != 1:
        together = []
    start = 0
    while start < len(together):
        group, size = [], 0
        while start < len(together) and (not group or size + len(columns[together[start]]) <= PARSED_TOGETHER):
            group.append(together[start])
            size += len(columns[together[start]])
            start += 1
        arrays = [texts[k].combine_chunks() if isinstance(texts[k], pa.ChunkedArray) else texts[k] for k in group]
        joined = pd.Series(pd.arrays.ArrowStringArray(pa.concat_arrays(arrays)))
        numbers = parse_values(joined, decimal)
        for k, part in zip(group, np.split(numbers, np.cumsum([len(columns[k]) for k in group])[:-1])):
            out[k] = part
    return [parse_values(values, decimal) if out[k] is None else out[k] for k, values in enumerate(columns)]


def _text_values(values: pd.Series, decimal: str) -> np.ndarray:
    text = values.astype("string").str.strip().str.replace("\u2212", "-", regex=False)
    if decimal == ",":
        # A point before groups of three digits in a decimal-comma export may group thousands (1.234 is 1234)
        text = text.where(~text.str.match(_POINT_GROUPED).fillna(False), pd.NA)
        comma = text.str.match(_DECIMAL_COMMA_RE).fillna(False)
        text = text.where(~comma, text.str.replace(",", ".", regex=False))
    return pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


EMPTY_VALUE = "the value is empty"  # how a reason for an empty value ends (the notices count them apart)
MISSING_VALUE_END = " is missing"  # how a reason for a 'NaN', 'NA', 'null' ... value ends


_UNDERSCORE_GROUPED_RE = re.compile(r"^[+-]?\d{1,3}(?:_\d{3})+(?:\.\d*)?$")

# No number with a unit or a separator is longer: a longer text is not a number, whatever it holds.
LONGEST_EXPLAINED_VALUE = 100


def explain_value(value, decimal: str = ".") -> str:
    """Why ``parse_values`` rejected ``value``: one sentence (without the column) for the quarantine's reason."""
    missing = value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value))
    text = "" if missing else str(value).strip()
    shown = repr(text[:80])
    if not text or text.lower() in ("nan", "na", "n/a", "#n/a", "null", "none", "-"):  # #N/A: a spreadsheet's
        return f"the value {shown}{MISSING_VALUE_END}" if text else EMPTY_VALUE
    if decimal == "," and _POINT_GROUPED.match(text):
        return (f"the value {shown} has a point before three digits, which under the mapping's decimal ',' may "
                f"group thousands (1.234 is 1234); write numbers without a thousands separator")
    number = pd.to_numeric(pd.Series([text.replace("\u2212", "-")]), errors="coerce").iloc[0]
    if pd.notna(number) or text.lower().lstrip("+-") in ("inf", "infinity"):
        return f"the value {shown} is not finite"
    if len(text) > LONGEST_EXPLAINED_VALUE:  # the patterns below backtrack over a long run of digits: 200k hung
        return f"the value {shown}... ({len(text):,} characters) is not a number"
    if decimal == "." and _GROUPED_RE.match(text):  # 1,200: a thousands comma (1200) or a decimal comma (1.2)
        return (f"the value {shown} has a comma that groups thousands or is a decimal comma; write numbers "
                f"without a thousands separator, or set the mapping's decimal to ',' if it is a decimal comma")
    if decimal == "." and _DECIMAL_COMMA_RE.match(text):
        return f"the value {shown} uses a decimal comma; set the mapping's decimal to ','"
    if _THOUSANDS_RE.match(text):
        return f"the value {shown} has a thousands separator; write numbers without one"
    if _HEX_RE.match(text):
        return f"the value {shown} is hexadecimal; seqwatch reads decimal numbers only"
    if _UNDERSCORE_GROUPED_RE.match(text):  # it had been said to carry a unit, '_000' (bug hunt of inputs)
        return f"the value {shown} groups digits with '_'; write numbers without a separator"
    unit = _UNIT_RE.match(text)
    if unit:
        return f"the value {shown} carries a unit ({unit.group(3)[:20]!r}); seqwatch expects bare numbers"
    return f"the value {shown} is not a number"


def _ids(values: pd.Series) -> tuple[pd.Categorical, np.ndarray]:
    """Ids stripped of surrounding blanks (missing ones as ``""``) and a mask of the valid ones (not empty, at
    most ``MAX_ID_LENGTH`` characters), as a categorical with sorted categories (what ``ReadingBatch`` keeps).

    A chunk holds few distinct ids: the text is cleaned once per distinct value, not once per row."""
    if isinstance(values.dtype, pd.CategoricalDtype):  # e.g. a Parquet dictionary column: its codes as they are
        codes, uniques = values.cat.codes.to_numpy().astype(np.intp), values.cat.categories
    else:
        codes, uniques = pd.factorize(values)  # missing values get code -1
    uniques = np.asarray(uniques, dtype=object)
    if all(type(u) is str for u in uniques):  # the usual case, in plain Python: a chunk has few distinct ids
        clean = np.array([u.strip() for u in uniques], dtype=object)
        valid = np.array([0 < len(c) <= MAX_ID_LENGTH for c in clean], dtype=bool)
    else:
        text = pd.Series(uniques, dtype=object).astype("string").str.strip()
        valid = (text.notna() & (text != "") & (text.str.len() <= MAX_ID_LENGTH)).to_numpy(dtype=bool)
        clean = text.fillna("").to_numpy(dtype=object)
    missing = codes < 0
    if missing.any():
        clean, valid = np.append(clean, ""), np.append(valid, False)
        codes = np.where(missing, len(uniques), codes)
    categories = np.asarray(sorted(set(clean)), dtype=object)
    dtype = pd.CategoricalDtype(categories)
    position = np.searchsorted(categories, clean)
    return pd.Categorical.from_codes(position[codes], dtype=dtype, validate=False), valid[codes]


def _explain_id(role: str, value) -> str:
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
    if not text:
        return f"the {role} is empty"
    return f"the {role} is {len(text)} characters long (at most {MAX_ID_LENGTH}): {text[:40]!r}..."


def _channel_codes(names: list, counts: list) -> pd.Categorical:
    """``counts[j]`` readings of channel ``names[j]`` after one another, as the categorical that factorising
    those strings gives (categories sorted, only the channels with readings)."""
    order = sorted((name, j) for j, name in enumerate(names) if counts[j])
    rank = np.zeros(len(names), dtype=np.int32)
    rank[[j for _, j in order]] = np.arange(len(order), dtype=np.int32)
    codes = np.repeat(rank, counts)
    return pd.Categorical.from_codes(codes, dtype=categories_of(tuple(name for name, _ in order)))


def parse_rows(columns: dict[str, pd.Series], lines: np.ndarray, raw: Callable[[int], str], source: str,
               layout: FileLayout, mapping: InputMapping, run_id: str) -> tuple[ReadingBatch, list[Quarantined]]:
    """Parse rows given column-wise (``columns``: file column -> values, all the same length).

    ``lines`` are the rows' line numbers in ``source`` and ``raw(i)`` gives row i's untouched text. Returns
    the readings that parsed and a quarantine row for every row or cell that did not."""
    n = len(lines)
    quarantine: list[Quarantined] = []
    if layout.entity_column is not None:
        entity, entity_ok = _ids(columns[layout.entity_column])
    else:
        entity = np.full(n, str(layout.entity_value), dtype=object)
        entity_ok = np.full(n, len(str(layout.entity_value)) <= MAX_ID_LENGTH and bool(layout.entity_value))
    if not layout.channel_columns:  # long: a series is an entity's channel
        channel, channel_ok = _ids(columns[layout.long_columns["channel"]])
    groups = series_codes(n, entity.codes if layout.entity_column is not None else None,
                          None if layout.channel_columns else channel.codes)
    stamps = parse_timestamps(columns[layout.timestamp_column], mapping.timestamp_unit, mapping.timezone,
                              mapping.timestamp_format, groups)
    bad_time = stamps == np.iinfo(np.int64).min
    per_row = layout.readings_per_row
    row_bad = ~entity_ok | bad_time
    bad_entity = np.flatnonzero(~entity_ok)
    entity_reasons = _explained(_values_at(columns[layout.entity_column], bad_entity) if layout.entity_column is not
                                None else [layout.entity_value] * len(bad_entity),
                                lambda value: _explain_id("entity id", value))
    for i, reason in zip(bad_entity.tolist(), entity_reasons):
        quarantine.append(Quarantined(raw(i), source, int(lines[i]), "", per_row, "parse", "missing_entity", reason,
                                      run_id))
    bad_stamp = np.flatnonzero(entity_ok & bad_time)
    stamp_reasons = _explained(_values_at(columns[layout.timestamp_column], bad_stamp), lambda value: (
        HEADER_AGAIN if str(value).strip() == layout.timestamp_column else
        explain_timestamp(value, mapping.timestamp_unit, mapping.timezone, mapping.timestamp_format)))
    for i, reason in zip(bad_stamp.tolist(), stamp_reasons):
        quarantine.append(Quarantined(raw(i), source, int(lines[i]), "", per_row, "parse", "parse_timestamp", reason,
                                      run_id))
    if len(bad_entity) and len(bad_stamp):  # in the order of the rows, as they had been
        quarantine.sort(key=lambda q: q.line)

    good_rows = ~row_bad
    if layout.channel_columns:  # wide
        parts = []
        parsed = parse_columns([columns[column] for column in layout.channel_columns], mapping.decimal)
        for column, name, numbers in zip(layout.channel_columns, layout.channel_names, parsed):
            bad = np.flatnonzero(good_rows & np.isnan(numbers))
            reasons = _explained(_values_at(columns[column], bad),
                                 lambda value: f"column {column!r}: {explain_value(value, mapping.decimal)}")
            for i, reason in zip(bad.tolist(), reasons):
                quarantine.append(Quarantined(raw(i), source, int(lines[i]), column, 1, "parse", "parse_value",
                                              reason, run_id))
            keep = good_rows & ~np.isnan(numbers)
            parts.append((entity[keep] if layout.entity_column is not None else None, int(keep.sum()),
                          stamps[keep], numbers[keep], lines[keep]))
        total = sum(p[1] for p in parts)
        # The ids as categoricals built from codes: a file's one entity and its few channel names, not one
        # Python string per reading to factorise again (a millisecond for a small file's 1,440 readings).
        entity_out = (np.concatenate([p[0] for p in parts]) if layout.entity_column is not None
                      else ReadingBatch.constant(str(layout.entity_value), total))
        channel_out = _channel_codes(list(layout.channel_names), [p[1] for p in parts])
        stamps_out = np.concatenate([p[2] for p in parts])
        values_out = np.concatenate([p[3] for p in parts])
        lines_out = np.concatenate([p[4] for p in parts])
    else:  # long (channel and channel_ok: read above)
        numbers = parse_values(columns[layout.long_columns["value"]], mapping.decimal)
        no_channel = np.flatnonzero(good_rows & ~channel_ok)
        reasons = _explained(_values_at(columns[layout.long_columns["channel"]], no_channel),
                             lambda value: _explain_id("channel", value))
        for i, reason in zip(no_channel.tolist(), reasons):
            quarantine.append(Quarantined(raw(i), source, int(lines[i]), "", 1, "parse", "missing_channel",
                                          reason, run_id))
        bad = np.flatnonzero(good_rows & channel_ok & np.isnan(numbers))
        reasons = _explained(_values_at(columns[layout.long_columns["value"]], bad),
                             lambda value: explain_value(value, mapping.decimal))
        # The column of a long row's bad value is its channel, as validation records it (and a wide file's).
        for i, name, reason in zip(bad.tolist(), _values_at(channel, bad), reasons):
            quarantine.append(Quarantined(raw(i), source, int(lines[i]), str(name), 1, "parse", "parse_value",
                                          reason, run_id))
        keep = good_rows & channel_ok & ~np.isnan(numbers)
        entity_out = (entity[keep] if layout.entity_column is not None
                      else ReadingBatch.constant(str(layout.entity_value), int(keep.sum())))
        channel_out, stamps_out = channel[keep], stamps[keep]
        values_out, lines_out = numbers[keep], lines[keep]
    batch = ReadingBatch.from_columns(entity_out, channel_out, stamps_out, values_out,
                                      ReadingBatch.constant(source, len(lines_out)), lines_out)
    return batch, quarantine


def _values_at(values, rows: np.ndarray) -> list:
    """The values of ``values`` (a Series or a Categorical) at the positions ``rows``, as Python objects, taken
    at once: taken one by one (``.iloc[i]`` of an Arrow-backed Series), a million bad values took 27 s."""
    if not len(rows):
        return []
    return values.iloc[rows].tolist() if isinstance(values, pd.Series) else list(values.take(rows))


def _explained(values: list, explain: Callable) -> list[str]:
    """``explain(value)`` for each of ``values``, each distinct value explained once: a sensor that sends "n/a"
    for a month is a million rows with one reason."""
    reasons: dict = {}
    out = []
    for value in values:
        try:
            key = (type(value), value)
            reason = reasons.get(key)
            if reason is None:
                reason = reasons[key] = explain(value)
        except TypeError:  # a value that cannot be a key
            reason = explain(value)
        out.append(reason)
    return out


HEADER_AGAIN = "the header line again, not a reading (files joined one after another keep each file's header)"
SEPARATORS = (",", ";", "\t", "|")


def sniff_separator(header_line: str, data_lines: list[str] = ()) -> str:
    """The separator of a CSV file from its header line and its first data lines: of ``, ; \\t |``, those that
    split every line into the header's number of fields (quotes read as the ``csv`` module reads them), the one
    that gives most fields, ``;``, tab or ``|`` before ``,`` on a tie (``50,03;3,19``: a decimal comma); without
    data lines, or where none fits them all, the most frequent in the header (``,`` if none). A header's commas
    alone had split ``timestamp;flow, l/min;pressure, bar`` into ``timestamp;flow`` and ``l/min;pressure``."""
    counts = {sep: header_line.count(sep) for sep in SEPARATORS}
    best = max(counts, key=counts.get)
    if not any(counts.values()):
        return ","
    fitting = {}
    for sep in SEPARATORS:
        if not counts[sep] or not data_lines:
            continue
        n = len(csv_fields(header_line, sep) or [header_line])
        if n > 1 and all(len(csv_fields(line, sep) or [line]) == n for line in data_lines):
            fitting[sep] = n
    if fitting:
        return max(fitting, key=lambda sep: (fitting[sep], sep != ","))
    return best


def csv_fields(line: str, sep: str, strict: bool = False) -> list[str] | None:
    """``line``'s fields split by ``sep``: directly without quotes, else as the ``csv`` module reads them; None
    where it cannot (``strict``: also a quote inside an unquoted field)."""
    if '"' not in line:
        return line.split(sep)
    try:
        return next(csv.reader([line], delimiter=sep, strict=strict))
    except (csv.Error, StopIteration):
        return None


def split_lines(lines: list[str], sep: str, n_fields: int) -> tuple[list[list[str]], np.ndarray]:
    """Split CSV lines into fields; returns the rows and a mask of lines with the right number of fields.

    Lines without quotes are split directly (fast path); quoted lines go through the csv module. A line with
    a NUL byte or the wrong field count is marked bad (and given empty fields)."""
    rows: list[list[str]] = []
    ok = np.ones(len(lines), dtype=bool)
    for i, line in enumerate(lines):
        fields = [] if "\x00" in line else csv_fields(line, sep, strict=True) or []
        if len(fields) != n_fields:
            ok[i] = False
            fields = [""] * n_fields
        rows.append(fields)
    return rows, ok


def raw_json(record: dict) -> str:
    """A Parquet row as the raw text of a quarantined record."""
    return json.dumps(record, default=str, sort_keys=True)
