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
import json
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Callable

import numpy as np
import pandas as pd

from seqwatch.schemas.elements import Quarantined, ReadingBatch
from seqwatch.schemas.mapping import LONG_COLUMNS, InputMapping

MAX_ID_LENGTH = 256
_OFFSET_RE = re.compile(r"(?:Z|[+-]\d\d:?\d\d)$", re.IGNORECASE)
_EPOCH_RE = re.compile(r"^[+-]?\d+(\.\d+)?$")


class SchemaDriftError(ValueError):
    """A file's columns do not match what the mapping requires."""


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
        header = tuple(h.strip() for h in header)
        present = set(header)
        name = PurePath(source).name
        if mapping.format == "long":
            roles = {role: mapping.long_column(role) for role in LONG_COLUMNS}
            missing = [col for col in roles.values() if col not in present]
            if missing:
                raise SchemaDriftError(f"{name} lacks required columns {missing} (its columns are {list(header)})")
            extra = [h for h in header if h not in set(roles.values()) and h not in mapping.ignore and h]
            if extra and mapping.extra_columns == "error":
                raise SchemaDriftError(f"{name} has unexpected columns {extra}; add them to the mapping's "
                                       f"'ignore' list or set 'extra_columns' to 'ignore'")
            return cls(header, roles["entity_id"], None, roles["timestamp"], (), (), roles)
        if mapping.timestamp not in present:
            raise SchemaDriftError(f"{name} lacks the timestamp column {mapping.timestamp!r} (its columns are "
                                   f"{list(header)})")
        entity_column = mapping.entity.get("column")
        if entity_column is not None and entity_column not in present:
            raise SchemaDriftError(f"{name} lacks the entity column {entity_column!r} (its columns are "
                                   f"{list(header)})")
        entity_value = mapping.entity.get("value")
        if mapping.entity.get("from_filename"):
            entity_value = PurePath(source).stem
        taken = {mapping.timestamp, entity_column, *mapping.ignore}
        if mapping.channels:
            missing = [col for col in mapping.channels if col not in present]
            if missing:
                raise SchemaDriftError(f"{name} lacks channel columns {missing} (its columns are {list(header)})")
            extra = [h for h in header if h and h not in taken and h not in mapping.channels
                     and not h.startswith("Unnamed")]
            if extra and mapping.extra_columns == "error":
                raise SchemaDriftError(f"{name} has unexpected columns {extra}; add them to the mapping's "
                                       f"'ignore' list or set 'extra_columns' to 'ignore'")
            columns = tuple(mapping.channels)
            names = tuple(mapping.channels[c] for c in columns)
        else:
            columns = tuple(h for h in header if h and h not in taken and not h.startswith("Unnamed"))
            names = columns
        if not columns:
            raise SchemaDriftError(f"{name} has no channel columns besides {sorted(c for c in taken if c)}")
        return cls(header, entity_column, entity_value, mapping.timestamp, columns, names, {})

    @property
    def readings_per_row(self) -> int:
        return len(self.channel_columns) if self.channel_columns else 1


def parse_timestamps(values: pd.Series, unit: str | None = None, timezone: str = "UTC") -> np.ndarray:
    """Timestamps as int64 µs UTC; ``np.iinfo(int64).min`` where a value cannot be parsed.

    Accepts datetimes, ISO 8601 and other common date strings (with or without offset; those without are in
    ``timezone``, and an ambiguous or nonexistent local time around a DST change is rejected) and epoch
    numbers (seconds, milliseconds or microseconds: ``unit``, or guessed per value from its magnitude)."""
    bad = np.iinfo(np.int64).min
    out = np.full(len(values), bad, dtype=np.int64)
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = values if values.dt.tz is not None else values.dt.tz_localize(timezone, ambiguous="NaT",
                                                                           nonexistent="NaT")
        micros = ts.dt.tz_convert("UTC").dt.as_unit("us")
        ok = micros.notna().to_numpy()
        out[ok] = micros[ok].astype("int64").to_numpy()
        return out
    text = values.astype("string").str.strip().fillna("")
    epoch_mask = text.str.match(_EPOCH_RE).fillna(False).to_numpy(dtype=bool)
    if epoch_mask.any():
        numbers = pd.to_numeric(text[epoch_mask], errors="coerce").to_numpy(dtype=np.float64)
        if unit is None:
            magnitude = np.abs(numbers)
            scale = np.where(magnitude < 1e11, 1e6, np.where(magnitude < 1e14, 1e3, 1.0))
        else:
            scale = {"s": 1e6, "ms": 1e3, "us": 1.0}[unit]
        micros = numbers * scale
        ok = np.isfinite(micros) & (np.abs(micros) < 9e18)
        idx = np.flatnonzero(epoch_mask)
        out[idx[ok]] = np.round(micros[ok]).astype(np.int64)
    rest = ~epoch_mask & (text != "").to_numpy(dtype=bool)
    if rest.any():
        strings = text[rest]
        has_offset = strings.str.contains(_OFFSET_RE).fillna(False).to_numpy(dtype=bool)
        idx = np.flatnonzero(rest)
        for mask, aware in ((has_offset, True), (~has_offset, False)):
            if not mask.any():
                continue
            part = strings[mask]
            parsed = pd.to_datetime(part, errors="coerce", format="ISO8601", utc=aware)
            retry = parsed.isna().to_numpy()
            if retry.any():
                fallback = pd.to_datetime(part[retry], errors="coerce", format="mixed", utc=aware)
                parsed = parsed.astype(fallback.dtype) if len(fallback) else parsed
                parsed[retry] = fallback
            if not aware:
                parsed = pd.Series(pd.DatetimeIndex(parsed).tz_localize(timezone, ambiguous="NaT",
                                                                       nonexistent="NaT"), index=part.index)
            micros = pd.Series(pd.DatetimeIndex(parsed).tz_convert("UTC").as_unit("us"), index=part.index)
            ok = micros.notna().to_numpy()
            target = idx[mask][ok]
            out[target] = micros[ok].astype("int64").to_numpy()
    return out


def parse_values(values: pd.Series) -> np.ndarray:
    """Floats; NaN where a value is missing, not a number, or not finite."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        numbers = pd.to_numeric(values.astype("string").str.strip(), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan)
    numbers[~np.isfinite(numbers)] = np.nan
    return numbers


def _ids(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    text = values.astype("string").str.strip()
    ok = (text.notna() & (text != "") & (text.str.len() <= MAX_ID_LENGTH)).to_numpy(dtype=bool)
    return text.fillna("").to_numpy(dtype=object), ok


def parse_rows(columns: dict[str, pd.Series], lines: np.ndarray, raw: Callable[[int], str], source: str,
               layout: FileLayout, mapping: InputMapping, run_id: str) -> tuple[ReadingBatch, list[Quarantined]]:
    """Parse rows given column-wise (``columns``: file column -> values, all the same length).

    ``lines`` are the rows' line numbers in ``source`` and ``raw(i)`` gives row i's untouched text. Returns
    the readings that parsed and a quarantine row for every row or cell that did not."""
    n = len(lines)
    quarantine: list[Quarantined] = []
    stamps = parse_timestamps(columns[layout.timestamp_column], mapping.timestamp_unit, mapping.timezone)
    bad_time = stamps == np.iinfo(np.int64).min
    if layout.entity_column is not None:
        entity, entity_ok = _ids(columns[layout.entity_column])
    else:
        entity = np.full(n, str(layout.entity_value), dtype=object)
        entity_ok = np.full(n, len(str(layout.entity_value)) <= MAX_ID_LENGTH and bool(layout.entity_value))
    per_row = layout.readings_per_row
    row_bad = ~entity_ok | bad_time
    for i in np.flatnonzero(row_bad):
        if not entity_ok[i]:
            code, reason = "missing_entity", "the entity id is empty or longer than 256 characters"
        else:
            value = columns[layout.timestamp_column].iloc[i]
            code, reason = "parse_timestamp", f"timestamp {str(value)[:80]!r} could not be parsed"
        quarantine.append(Quarantined(raw(i), source, int(lines[i]), "", per_row, "parse", code, reason, run_id))

    good_rows = ~row_bad
    if layout.channel_columns:  # wide
        parts = []
        for column, name in zip(layout.channel_columns, layout.channel_names):
            numbers = parse_values(columns[column])
            bad = good_rows & np.isnan(numbers)
            for i in np.flatnonzero(bad):
                quarantine.append(Quarantined(raw(i), source, int(lines[i]), column, 1, "parse", "parse_value",
                                                f"column {column!r}: {str(columns[column].iloc[i])[:80]!r} is "
                                                f"not a finite number", run_id))
            keep = good_rows & ~np.isnan(numbers)
            parts.append((entity[keep], np.full(keep.sum(), name, dtype=object), stamps[keep], numbers[keep],
                          lines[keep]))
        entity_out = np.concatenate([p[0] for p in parts])
        channel_out = np.concatenate([p[1] for p in parts])
        stamps_out = np.concatenate([p[2] for p in parts])
        values_out = np.concatenate([p[3] for p in parts])
        lines_out = np.concatenate([p[4] for p in parts])
    else:  # long
        channel, channel_ok = _ids(columns[layout.long_columns["channel"]])
        numbers = parse_values(columns[layout.long_columns["value"]])
        for i in np.flatnonzero(good_rows & ~channel_ok):
            quarantine.append(Quarantined(raw(i), source, int(lines[i]), "", 1, "parse", "missing_channel",
                                            "the channel is empty or longer than 256 characters", run_id))
        for i in np.flatnonzero(good_rows & channel_ok & np.isnan(numbers)):
            value = columns[layout.long_columns["value"]].iloc[i]
            quarantine.append(Quarantined(raw(i), source, int(lines[i]), "", 1, "parse", "parse_value",
                                            f"value {str(value)[:80]!r} is not a finite number", run_id))
        keep = good_rows & channel_ok & ~np.isnan(numbers)
        entity_out, channel_out, stamps_out = entity[keep], channel[keep], stamps[keep]
        values_out, lines_out = numbers[keep], lines[keep]
    batch = ReadingBatch.from_columns(entity_out, channel_out, stamps_out, values_out,
                                      np.full(len(lines_out), source, dtype=object), lines_out)
    return batch, quarantine


def sniff_separator(header_line: str) -> str:
    """The most frequent of ``, ; \\t |`` in the header line (``,`` if none)."""
    counts = {sep: header_line.count(sep) for sep in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def split_lines(lines: list[str], sep: str, n_fields: int) -> tuple[list[list[str]], np.ndarray]:
    """Split CSV lines into fields; returns the rows and a mask of lines with the right number of fields.

    Lines without quotes are split directly (fast path); quoted lines go through the csv module. A line with
    a NUL byte or the wrong field count is marked bad (and given empty fields)."""
    rows: list[list[str]] = []
    ok = np.ones(len(lines), dtype=bool)
    for i, line in enumerate(lines):
        if "\x00" in line:
            fields = []
        elif '"' in line:
            try:
                fields = next(csv.reader([line], delimiter=sep))
            except (csv.Error, StopIteration):
                fields = []
        else:
            fields = line.split(sep)
        if len(fields) != n_fields:
            ok[i] = False
            fields = [""] * n_fields
        rows.append(fields)
    return rows, ok


def raw_json(record: dict) -> str:
    """A Parquet row as the raw text of a quarantined record."""
    return json.dumps(record, default=str, sort_keys=True)
