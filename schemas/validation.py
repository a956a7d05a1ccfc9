"""Validating readings against a great-expectations suite, one batch (a pandas frame) at a time.

Suites are JSON files of GX 1.x expectations over the long-format columns ``entity_id, channel, timestamp
(int µs UTC), value``. Bundled families: ``sensor``, ``energy`` and ``health`` (``schemas/suites/``); a user can
pass the path of their own suite file. Physical bounds per kind of channel use GX row conditions on the channel
name (e.g. ``channel.str.contains("temp")``); the bundled ones match words of the name (split on ``_``, ``-``,
``.`` or spaces, any case, or at a camelCase capital), so that ``compressor_speed`` is no pressure and
``room_temperature`` no body temperature; a rule's ``meta.seqwatch_channels`` label names it in quarantine reasons
in place of its regex. A suite is refused in one sentence when it is in GX 0.x's format, has a ``meta`` that is not an
object, a suite parameter (``{"$PARAMETER": ...}``: seqwatch supplies none), a NaN argument, or an expectation
that judges a reading against other readings (unique, increasing, z-scores, ...): each reading is judged alone.

``SuiteValidator.failures(frame)`` runs the whole suite once on the batch (not once per row) and returns, for
each row, the first expectation (in the suite's order) it failed, so that only failing rows, not the whole
batch, are quarantined. The common row-level expectations run in pandas with GX's semantics (GX itself costs
about 0.2 s per batch, whatever its size); the others run through GX. GX does not return results in the
suite's order, so each GX result is matched to its expectation through a position stored in its ``meta``.

Checks that need order or state per entity (GX has no group-by) are configured in the suite's
``meta.seqwatch_stateful`` and run by ``seqwatch.pipelines.stateful_checks``; see ``StatefulRules``.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

SUITES_DIR = Path(__file__).parent / "suites"
FAMILIES = tuple(sorted(p.stem for p in SUITES_DIR.glob("*.json")))
COLUMNS = ("entity_id", "channel", "timestamp", "value")
_POSITION = "seqwatch_position"


class SuiteError(ValueError):
    """A suite name or file is invalid."""


DEFAULT_EARLIEST_US = 946_684_800_000_000  # 2000-01-01: the bundled suites' earliest timestamp, and the runs' horizon


def with_earliest(suite: dict, earliest_us: int) -> dict:
    """``suite`` with its timestamp range opened down to ``earliest_us`` where it starts at the default horizon
    (the bundled suites' rule, or a copy of it): ``--earliest`` asks for older readings, which that rule would
    quarantine anyway. A range a suite sets otherwise stays as it is."""
    if earliest_us >= DEFAULT_EARLIEST_US:
        return suite
    changed = dict(suite, expectations=[dict(e) for e in suite.get("expectations", [])])
    for expectation in changed["expectations"]:
        kwargs = expectation.get("kwargs") or {}
        if (expectation.get("type") == "expect_column_values_to_be_between" and kwargs.get("column") == "timestamp"
                and kwargs.get("min_value") == DEFAULT_EARLIEST_US):
            expectation["kwargs"] = dict(kwargs, min_value=earliest_us)
    return changed


def _read_local(path: str) -> bytes:
    return Path(path).read_bytes()


def load_suite_dict(family_or_path: str, check: bool = True, read=None) -> dict:
    """The suite JSON of a bundled family (``sensor``, ``energy``, ``health``) or of a user's file; ``read``: how
    to read a file's bytes (``seqwatch.pipelines.object_store.read_bytes`` reads a URL of an object store too;
    default: a local file), raising ``FileNotFoundError`` where there is none.

    Raises ``SuiteError`` naming the file when it is missing, not JSON, has no expectations list, is in GX 0.x's
    format, has a ``meta`` that is not an object, an invalid ``meta.seqwatch_stateful`` section, a suite parameter
    or a NaN argument, or (with ``check``) an expectation that GX does not know, that does not judge each row on
    its own, or that cannot run on readings (e.g. a row condition naming no column): a broken suite stops a run
    before it starts instead of failing inside a worker."""
    family = family_or_path in FAMILIES
    # named as before (a local path as pathlib writes it), a URL as given
    path = str(SUITES_DIR / f"{family_or_path}.json") if family else (
        family_or_path if "://" in family_or_path else str(Path(family_or_path)))
    try:
        raw = (read or _read_local)(path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):  # another OSError (no permission) says itself
        raise SuiteError(f"suite {family_or_path!r} is neither a bundled family {list(FAMILIES)} nor a file") \
            from None
    stem = PurePosixPath(path).stem
    try:
        data = json.loads(raw.decode("utf-8-sig"))  # past a byte-order mark, as Notepad saves
    except json.JSONDecodeError as exc:
        raise SuiteError(f"suite file {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except UnicodeDecodeError:
        raise SuiteError(f"suite file {path} is not UTF-8 text") from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise SuiteError(f"suite file {path} needs a list of 'expectations'")
    try:
        _check_suite_content(data, stem)  # before the name is filled in: GX 0.x's suites have none
        if not data.get("name"):
            data["name"] = stem
        StatefulRules.from_suite(data)  # a bad rule fails here, before any pipeline starts
        if check:
            sample = pd.DataFrame({"entity_id": ["e"], "channel": ["c"], "timestamp": [1_767_571_200_000_000],
                                   "value": [0.0]})
            SuiteValidator(data).failures(sample)
    except SuiteError as exc:
        raise SuiteError(f"suite file {path}: {exc}") from None
    return data


_GX0_KEYS = ("expectation_suite_name", "ge_cloud_id", "data_asset_type")


def _expectation_name(expectation, position: int) -> str:
    """``expectation 2 (expect_column_values_to_be_in_set on 'channel')`` for messages."""
    kind = expectation.get("type") or expectation.get("expectation_type") if isinstance(expectation, dict) else None
    kwargs = expectation.get("kwargs") if isinstance(expectation, dict) else None
    column = kwargs.get("column") if isinstance(kwargs, dict) else None
    return f"expectation {position + 1} ({kind or 'of no type'}" + (f" on {column!r})" if column is not None else ")")


def _nested(value, path: str):
    """``(path, item)`` for ``value`` and everything inside its dicts and lists (``value_set[2]``)."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _nested(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _nested(item, f"{path}[{i}]")


def _microseconds_example(text: str) -> int | None:
    """``text`` read as a UTC time, in microseconds since the epoch; None when it is no time."""
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        return None
    if pd.isna(stamp):
        return None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.value // 1000)


def _check_suite_content(suite: dict, name=None) -> None:
    """Refuses, in one sentence, what GX would reject only while validating a batch (a traceback in a worker)
    or what seqwatch's pandas engine would read otherwise than GX: a suite in GX 0.x's format, a ``meta`` that is
    not an object, a suite parameter (``{"$PARAMETER": ...}``: seqwatch has none to supply) and a NaN argument
    (GX fails every reading against a NaN bound). ±Infinity stays allowed: GX and the pandas engine both read it
    as no bound on that side."""
    name = suite.get("name") or suite.get("expectation_suite_name") or name
    expectations = suite.get("expectations") if isinstance(suite.get("expectations"), list) else []
    old = [key for key in _GX0_KEYS if key in suite]
    old_types = any(isinstance(e, dict) and "expectation_type" in e and "type" not in e for e in expectations)
    if old or old_types:
        drop = [key for key in old if key != "expectation_suite_name"]
        raise SuiteError(f"suite {name!r} is in the format of great-expectations 0.x (" + ", ".join(
            [f"top-level {key!r}" for key in old] + (["expectations' 'expectation_type'"] if old_types else []))
            + "), and seqwatch reads GX 1.x suites: rename 'expectation_suite_name' to 'name' and each "
            "expectation's 'expectation_type' to 'type'" + (f", and drop {' and '.join(map(repr, drop))}"
                                                             if drop else ""))
    if suite.get("meta") is not None and not isinstance(suite["meta"], dict):
        raise SuiteError(f"suite {name!r}: its 'meta' must be a JSON object, got {suite['meta']!r:.80}")
    for position, expectation in enumerate(expectations):
        if not isinstance(expectation, dict):
            continue  # GX's own check names it
        if expectation.get("meta") is not None and not isinstance(expectation["meta"], dict):
            raise SuiteError(f"{_expectation_name(expectation, position)} of suite {name!r}: its 'meta' must be a "
                             f"JSON object, got {expectation['meta']!r:.80}")
        severity = expectation.get("severity", "critical")
        if severity != "critical":  # GX's warning and info levels fail a validation without stopping anything
            raise SuiteError(f"{_expectation_name(expectation, position)} of suite {name!r} has severity "
                             f"{severity!r}, and seqwatch quarantines every reading that fails an expectation "
                             f"(there is no reading it lets through with a warning): make it 'critical' to "
                             f"quarantine what fails it, or leave it out of the suite")
        kwargs = expectation.get("kwargs")
        if not isinstance(kwargs, dict):
            continue
        for path, item in _nested(kwargs, "kwargs"):
            if isinstance(item, dict) and "$PARAMETER" in item:
                raise SuiteError(f"{_expectation_name(expectation, position)} of suite {name!r} takes {path[7:]} "
                                 f"from the suite parameter {item['$PARAMETER']!r}, and seqwatch has no suite "
                                 f"parameters to supply: write the value into the suite")
            if isinstance(item, float) and np.isnan(item):
                raise SuiteError(f"{_expectation_name(expectation, position)} of suite {name!r} has NaN as "
                                 f"{path[7:]}, which no reading can be compared with: give a number (or null for "
                                 f"no bound)")
        if kwargs.get("column") == "timestamp":
            for key in ("min_value", "max_value"):
                if isinstance(kwargs.get(key), str):  # "2026-01-01": compared with integers, it fails every batch
                    example = _microseconds_example(kwargs[key])
                    raise SuiteError(f"{_expectation_name(expectation, position)} of suite {name!r} bounds the "
                                     f"timestamp by the text {kwargs[key]!r}, but a reading's timestamp is an integer "
                                     f"of microseconds since 1970-01-01 UTC: write {key} as such a number"
                                     + (f" ({example} for {kwargs[key]})" if example is not None else ""))


def channel_value_bounds(suite: dict, channels) -> dict:
    """``{channel: (low, high)}``: the range a reading of each of ``channels`` must lie in to pass ``suite``, from
    its ``expect_column_values_to_be_between`` rules on ``value`` whose row condition, if any, names no column
    but ``channel`` (a rule of some entities only bounds none of the model's forecasts); their ``mostly`` is
    ignored, as ``SuiteValidator`` ignores it (a run quarantines every reading outside them). ``None`` is no
    bound on that side; a channel no rule bounds, or whose rules leave no value (a low bound above a high one),
    is left out. A model trained with the suite keeps them, and its forecasts are clipped to them (a power
    forecast below 0 W predicts a reading the suite would quarantine; a strict bound is clipped to as to an
    inclusive one)."""
    names = [str(c) for c in channels]
    frame = pd.DataFrame({"channel": pd.Categorical(names)})
    bounds = {name: [None, None] for name in names}
    for expectation in suite.get("expectations", []):
        kwargs = expectation.get("kwargs") if isinstance(expectation, dict) else None
        if not isinstance(kwargs, dict) or expectation.get("type") != "expect_column_values_to_be_between" \
                or kwargs.get("column") != "value":
            continue
        applies = _channels_judged(kwargs, frame)
        if applies is None:  # a condition the channel alone cannot answer: no bound from it
            continue
        for name, hit in zip(names, applies):
            if not hit:
                continue
            low, high = kwargs.get("min_value"), kwargs.get("max_value")
            if _is_bound(low) and (bounds[name][0] is None or low > bounds[name][0]):
                bounds[name][0] = float(low)
            if _is_bound(high) and (bounds[name][1] is None or high < bounds[name][1]):
                bounds[name][1] = float(high)
    return {name: tuple(pair) for name, pair in bounds.items()
            if pair != [None, None] and (None in pair or pair[0] <= pair[1])}


def rules_for_no_channel(suite: dict, channels) -> list:
    """Descriptions of ``suite``'s expectations whose pandas row condition names no column but ``channel`` and
    selects none of ``channels``: rules that judge no reading of a model of those channels (a channel name
    misspelt in the condition, ``channel == "presure"``, or a rule for another kind of equipment)."""
    frame = pd.DataFrame({"channel": pd.Categorical([str(c) for c in channels])})
    found = []
    for expectation in suite.get("expectations", []):
        kwargs = expectation.get("kwargs") if isinstance(expectation, dict) else None
        if not isinstance(kwargs, dict):
            continue
        applies = _channels_judged(kwargs, frame)  # None: a condition the channel alone cannot answer
        if applies is not None and not applies.any():
            found.append(f"{expectation.get('type')}({kwargs.get('column')}) where {_row_condition(kwargs)}")
    return found


def _row_condition(kwargs: dict):
    """A rule's row condition, a pass-through one (GX's export of a pandas condition) as its text."""
    condition = kwargs.get("row_condition")
    if isinstance(condition, dict) and condition.get("type") == "pass_through":
        condition = condition.get("pass_through_filter")
    return condition


def _channels_judged(kwargs: dict, frame: pd.DataFrame) -> np.ndarray | None:
    """Which of the channels of ``frame`` (one categorical ``channel`` column) a rule's row condition selects:
    all of them without a condition; None for a condition the channel alone cannot answer (another column in
    it, GX's syntax, an error)."""
    condition = _row_condition(kwargs)
    if condition is None:
        return np.ones(len(frame), dtype=bool)
    if not isinstance(condition, str) or kwargs.get("condition_parser") != "pandas" \
            or set(_IDENTIFIER.findall(condition)) & (set(COLUMNS) - {"channel"}):
        return None
    try:
        return _condition_mask(frame, condition)
    except Exception:  # noqa: BLE001 - a user's condition that fails on the channels alone
        return None


def _is_bound(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


@dataclass(frozen=True)
class StatefulRules:
    """Per-entity checks in event-time order, from a suite's ``meta.seqwatch_stateful``::

        {"monotonic_channels": "energy|kwh|counter", "monotonic_tolerance": 0.0,
         "stuck_min_readings": 30, "stuck_exempt_channels": "setpoint|status"}

    ``monotonic_channels``: a regular expression (case-insensitive, searched in the channel name) for cumulative
    meters; a reading lower than the channel's previous reading by more than ``monotonic_tolerance`` is
    quarantined as ``monotonic_decrease``. ``stuck_min_readings``: a channel that repeats exactly one value for
    at least this many consecutive readings is flagged ``stuck_channel`` (still scored); 0 turns it off.
    Channels matching ``stuck_exempt_channels`` (and monotone meters, which legitimately stand still) are not
    checked for being stuck."""

    monotonic_channels: str = ""
    monotonic_tolerance: float = 0.0
    stuck_min_readings: int = 0
    stuck_exempt_channels: str = ""

    def __post_init__(self):
        for name in ("monotonic_channels", "stuck_exempt_channels"):
            pattern = getattr(self, name)
            if not isinstance(pattern, str):
                raise SuiteError(f"seqwatch_stateful.{name} must be a regular expression string, got {pattern!r}")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise SuiteError(f"seqwatch_stateful.{name} is not a valid regular expression: {exc}") from None
        if not isinstance(self.stuck_min_readings, int) or isinstance(self.stuck_min_readings, bool) \
                or self.stuck_min_readings < 0 or self.stuck_min_readings == 1:
            raise SuiteError(f"seqwatch_stateful.stuck_min_readings must be 0 (off) or an integer >= 2, got "
                             f"{self.stuck_min_readings!r}")
        if not isinstance(self.monotonic_tolerance, (int, float)) or not self.monotonic_tolerance >= 0:
            raise SuiteError(f"seqwatch_stateful.monotonic_tolerance must be a number >= 0, got "
                             f"{self.monotonic_tolerance!r}")

    @classmethod
    def from_suite(cls, suite: dict) -> "StatefulRules":
        meta = suite.get("meta") or {}
        if not isinstance(meta, dict):
            raise SuiteError(f"suite {suite.get('name')!r}: its 'meta' must be a JSON object, got {meta!r:.80}")
        section = meta.get("seqwatch_stateful") or {}
        if not isinstance(section, dict):
            raise SuiteError(f"suite {suite.get('name')!r}: meta.seqwatch_stateful must be an object")
        unknown = set(section) - set(cls.__dataclass_fields__)
        if unknown:
            raise SuiteError(f"suite {suite.get('name')!r}: meta.seqwatch_stateful has unknown keys "
                             f"{sorted(unknown)}; known keys are {sorted(cls.__dataclass_fields__)}")
        return cls(**section)

    def is_monotonic(self, channel: str) -> bool:
        return bool(self.monotonic_channels) and re.search(self.monotonic_channels, channel, re.IGNORECASE) is not None

    def checks_stuck(self, channel: str) -> bool:
        if not self.stuck_min_readings or self.is_monotonic(channel):
            return False
        return not (self.stuck_exempt_channels and re.search(self.stuck_exempt_channels, channel, re.IGNORECASE))


def _describe(config) -> str:
    """The expectation as a quarantine reason names it: its type and arguments, then the rows it judges, by the
    ``seqwatch_channels`` label of its meta where it has one ("for pressure channels"; a bundled rule's regex is
    long), else by its row condition."""
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("column", "condition_parser", "batch_id")}
    condition = kwargs.pop("row_condition", None)
    text = f"{config.type}({config.kwargs.get('column')}"
    text += "".join(f", {k}={v}" for k, v in sorted(kwargs.items())) + ")"
    label = (config.meta or {}).get("seqwatch_channels") if isinstance(config.meta, dict) else None
    if condition and isinstance(label, str) and label.strip():
        text += f" for {label.strip()} channels"
    elif condition:
        if isinstance(condition, dict):
            condition = condition.get("pass_through_filter", condition)
        text += f" where {getattr(condition, 'pass_through_filter', condition)}"
    return text


def _check_row_level(suite) -> None:
    """Only expectations that judge each row can route failing rows to quarantine; refuse the others (e.g.
    ``expect_table_row_count_to_be_between``, which would judge an arbitrary batch)."""
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )
    row_level = (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)
    others = sorted({e.expectation_type for e in suite.expectations if not isinstance(e, row_level)})
    if others:
        raise SuiteError(f"suite {suite.name!r} has expectations that do not judge each row: {others}; seqwatch "
                         f"quarantines rows, so use column map expectations (expect_column_values_to_...)")
    relative = sorted({e.expectation_type for e in suite.expectations
                       if e.expectation_type in _RELATIVE_TYPES or getattr(e, "map_metric", None) in _RELATIVE_METRICS})
    if relative:
        raise SuiteError(f"suite {suite.name!r} has expectations that judge a reading against the other readings "
                         f"of its batch: {relative}; seqwatch judges each reading on its own (which readings share "
                         f"a batch depends on the files and their order), and checks order and repeats itself: a "
                         f"run quarantines a reading with the entity, channel and timestamp of an earlier one as "
                         f"duplicate, and a meter named by the suite's meta.seqwatch_stateful.monotonic_channels "
                         f"that goes back as monotonic_decrease")


# Column map expectations whose verdict on a row depends on the other rows of the batch (its order, repeats or
# statistics): their results would change with how readings are batched.
_RELATIVE_TYPES = frozenset({
    "expect_column_values_to_be_increasing", "expect_column_values_to_be_decreasing",
    "expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique",
    "expect_multicolumn_values_to_be_unique", "expect_column_value_z_scores_to_be_less_than",
    "expect_column_values_to_not_be_outliers"})
_RELATIVE_METRICS = frozenset({
    "column_values.increasing", "column_values.decreasing", "column_values.unique", "compound_columns.unique",
    "multicolumn_values.unique", "column_values.z_score.under_threshold", "column_values.not_outliers"})


def _raised(info) -> str | None:
    """The exception message in a GX result's ``exception_info`` (flat, or keyed by metric), or None."""
    if not info:
        return None
    entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for entry in entries:
        if entry.get("raised_exception") or entry.get("exception_message"):
            message = entry.get("exception_message") or "unknown error"
            return str(message).strip().splitlines()[-1][:300]
    return None


class _MissingColumn(Exception):
    pass


def _column(data: pd.DataFrame, name: str) -> pd.Series:
    if name not in data.columns:  # GX's own words for it
        raise _MissingColumn(f'Error: The column "{name}" in BatchData does not exist.')
    return data[name]


def _between(data: pd.DataFrame, kw: dict) -> np.ndarray:
    column = _column(data, kw["column"])
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    low, high = kw.get("min_value"), kw.get("max_value")
    if low is not None and high is not None and low > high:
        raise ValueError("min_value cannot be greater than max_value")  # GX's check, at run time too
    bad = np.zeros(len(values), dtype=bool)
    with np.errstate(invalid="ignore"):
        if kw.get("min_value") is not None:
            bad |= values <= kw["min_value"] if kw.get("strict_min") else values < kw["min_value"]
        if kw.get("max_value") is not None:
            bad |= values >= kw["max_value"] if kw.get("strict_max") else values > kw["max_value"]
    return bad & ~np.isnan(values)  # GX ignores missing values here (not_be_null judges them)


def _in_set(data: pd.DataFrame, kw: dict, inside: bool) -> np.ndarray:
    column = _column(data, kw["column"])
    if kw.get("value_set") is None:
        return np.zeros(len(column), dtype=bool)
    member = column.astype(object).isin(list(kw["value_set"])).to_numpy(dtype=bool)
    return column.notna().to_numpy(dtype=bool) & (~member if inside else member)


def _match_regex(data: pd.DataFrame, kw: dict) -> np.ndarray:
    column = _column(data, kw["column"])
    matched = column.astype(str).str.contains(kw["regex"]).to_numpy(dtype=bool)
    return column.notna().to_numpy(dtype=bool) & ~matched


# Row-level expectations evaluated in numpy/pandas with GX's own semantics (tested against GX in
# tests/schemas/test_validation_engine.py): expectation type -> (accepted kwargs, unexpected-row mask).
_COMMON_KWARGS = {"column", "row_condition", "condition_parser", "mostly", "result_format", "catch_exceptions"}
_FAST = {
    "expect_column_values_to_not_be_null": (set(), lambda d, kw: _column(d, kw["column"]).isna().to_numpy()),
    "expect_column_values_to_be_between": ({"min_value", "max_value", "strict_min", "strict_max"}, _between),
    "expect_column_values_to_be_in_set": ({"value_set"}, lambda d, kw: _in_set(d, kw, inside=True)),
    "expect_column_values_to_not_be_in_set": ({"value_set"}, lambda d, kw: _in_set(d, kw, inside=False)),
    "expect_column_values_to_match_regex": ({"regex"}, _match_regex),
}


def _fast_rule(config):
    """``(kwargs, mask function)`` when this expectation runs without GX, else None."""
    entry = _FAST.get(config.type)
    if entry is None:
        return None
    kwargs = {k: v for k, v in config.kwargs.items() if v is not None or k in ("min_value", "max_value")}
    extra, rule = entry
    if set(kwargs) - _COMMON_KWARGS - extra:
        return None
    condition = kwargs.get("row_condition")
    if condition is not None:
        if isinstance(condition, dict) and condition.get("type") == "pass_through":
            kwargs["row_condition"] = condition["pass_through_filter"]
        elif not isinstance(condition, str) or kwargs.get("condition_parser") != "pandas":
            return None  # GX's own condition syntax: leave it to GX
    return kwargs, rule


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ID_COLUMNS = {"entity_id", "channel"}


def _condition_mask(data: pd.DataFrame, condition: str) -> np.ndarray:
    """Rows of ``data`` (categorical ``entity_id`` and ``channel``) that satisfy the pandas row ``condition``.

    A condition that names no column but the ids (e.g. ``channel.str.contains("temp")``) is evaluated once per
    combination of id values present in ``data``'s categories, then looked up for each row: the same answer
    as ``data.query`` row by row, at a cost that does not grow with the rows. Any other condition (or a word
    in it that might be another column) goes through ``data.query``."""
    names = set(_IDENTIFIER.findall(condition)) & set(data.columns)
    if names and names <= _ID_COLUMNS and all(isinstance(data[c].dtype, pd.CategoricalDtype) for c in names):
        columns = sorted(names)
        codes = [data[c].cat.codes.to_numpy().astype(np.int64) for c in columns]
        # Code -1 (a missing id) is evaluated only when some row has it, as data.query would see it.
        ranges = [np.arange(-1 if (k < 0).any() else 0, len(data[c].cat.categories)) for c, k in zip(columns, codes)]
        if np.prod([len(r) for r in ranges]) <= 4096:
            dtypes = tuple(data[c].dtype for c in columns)
            hit = _combination_hits(condition, tuple(columns), dtypes, tuple(r[0] < 0 for r in ranges))
            flat = np.zeros(len(data), dtype=np.int64)
            for k, r in zip(codes, ranges):
                flat = flat * len(r) + (k - r[0])
            return hit[flat]
    mask = np.zeros(len(data), dtype=bool)
    mask[_plain_ids(data).query(condition).index.to_numpy()] = True
    return mask


def _plain_ids(data: pd.DataFrame) -> pd.DataFrame:
    """``data`` with categorical id columns as the plain strings a user's row condition was written for (an
    unordered categorical refuses ``channel > "m"``, which plain strings compare)."""
    categorical = [c for c in _ID_COLUMNS & set(data.columns) if isinstance(data[c].dtype, pd.CategoricalDtype)]
    return data.astype({c: object for c in categorical}) if categorical else data


@functools.lru_cache(maxsize=256)
def _combination_hits(condition: str, columns: tuple, dtypes: tuple, with_missing: tuple) -> np.ndarray:
    """Whether each combination of the ``columns``' categories (in ``np.meshgrid(..., indexing="ij")`` order,
    code -1 first where ``with_missing``) satisfies ``condition``. Cached: a stream of batches with the same ids
    pays for ``DataFrame.query`` (several ms whatever the size) once."""
    ranges = [np.arange(-1 if missing else 0, len(dtype.categories)) for dtype, missing in zip(dtypes, with_missing)]
    grid = np.meshgrid(*ranges, indexing="ij")
    table = _plain_ids(pd.DataFrame({c: pd.Categorical.from_codes(g.ravel(), dtype=dtype)
                                     for c, g, dtype in zip(columns, grid, dtypes)}))
    hit = np.zeros(len(table), dtype=bool)
    hit[table.query(condition).index.to_numpy()] = True
    hit.setflags(write=False)
    return hit


SUITE_CACHE_ENV = "SEQWATCH_SUITE_CACHE"


def _suite_cache_file(suite: dict) -> Path | None:
    """Where the compiled form of ``suite`` is kept (``$SEQWATCH_SUITE_CACHE``, default
    ``~/.cache/seqwatch/suites``; ``off`` disables), keyed by the suite's JSON, the GX version and this module's
    source, so a changed suite, GX or seqwatch never reuses an old entry. None when disabled."""
    from importlib.metadata import PackageNotFoundError, version

    folder = os.environ.get(SUITE_CACHE_ENV, "")
    if folder.lower() in ("off", "0", "none", "false"):
        return None
    try:
        gx_version = version("great_expectations")
        digest = hashlib.sha256(json.dumps(suite, sort_keys=True, default=str).encode())
        digest.update(gx_version.encode())
        digest.update(Path(__file__).read_bytes())
    except (PackageNotFoundError, OSError, TypeError, ValueError):
        return None
    base = Path(folder).expanduser() if folder else Path.home() / ".cache" / "seqwatch" / "suites"
    return base / f"{digest.hexdigest()[:32]}.json"


def _compiled_suite(suite: dict) -> dict | None:
    """The compiled form of a suite that GX checked on this machine before and that runs without GX: its name,
    each expectation's description, and each expectation's type and GX-normalised arguments. Importing GX
    costs about 3 s per process; a run whose suite is compiled does not import it."""
    path = _suite_cache_file(suite)
    try:
        compiled = json.loads(path.read_text()) if path is not None and path.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(compiled, dict) or any(kind not in _FAST for _, kind, _ in compiled.get("fast", [])):
        return None
    if len(compiled.get("fast", [])) != len(compiled.get("descriptions", [])):
        return None
    return compiled


def _store_compiled_suite(suite: dict, compiled: dict) -> None:
    path = _suite_cache_file(suite)
    if path is None:
        return
    try:
        text = json.dumps(compiled, sort_keys=True)
        if json.loads(text) != compiled:  # arguments JSON cannot carry exactly: do not cache
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(text)
        os.replace(partial, path)
    except (OSError, TypeError, ValueError):
        pass  # without the cache, the next run imports GX again


def _id_columns_read(expectation) -> list:
    """Of ``entity_id`` and ``timestamp``, those an expectation judges (its column or columns)."""
    kwargs = expectation.get("kwargs") if isinstance(expectation, dict) else None
    if not isinstance(kwargs, dict):
        return []
    named = [kwargs.get(k) for k in ("column", "column_A", "column_B")]
    if isinstance(kwargs.get("column_list"), list):
        named += kwargs["column_list"]
    return [c for c in ("entity_id", "timestamp") if c in named]


def _timestamp_text(timestamp_us) -> str:
    """A reading's timestamp (integer µs since the epoch) as ISO 8601 UTC, and the integer a rule compares."""
    try:
        return f"{pd.Timestamp(int(timestamp_us), unit='us', tz='UTC').isoformat()} ({int(timestamp_us)} µs)"
    except (ValueError, OverflowError):
        return f"{int(timestamp_us)} µs"


class SuiteValidator:
    """Runs one GX suite on pandas batches. Construct once per worker (GX start-up takes seconds).

    ``engine="auto"`` evaluates the common row-level expectations (not null, between, in set, not in set,
    match regex; with pandas row conditions) directly in pandas with GX's semantics, and only the others through
    GX: a GX validation costs about 0.2 s per batch whatever its size, which would dominate small batches and
    streams. ``engine="gx"`` runs every expectation through GX. Either way ``mostly`` is ignored: each reading
    is judged alone, so what is quarantined does not depend on how readings were batched."""

    def __init__(self, suite: dict, engine: str = "auto"):
        if engine not in ("auto", "gx"):
            raise ValueError(f"engine must be 'auto' or 'gx', got {engine!r}")
        _check_suite_content(suite)
        self.suite_dict = suite
        self.engine = engine
        self._id_columns = [_id_columns_read(e) for e in suite.get("expectations", [])]
        compiled = _compiled_suite(suite) if engine == "auto" else None
        if compiled is not None:  # checked by GX on this machine before, and every expectation runs in pandas
            self.suite, self._gx_suite, self._name = None, None, compiled["name"]
            self.descriptions = list(compiled["descriptions"])
            self._fast = {int(p): (kwargs, _FAST[kind][1]) for p, kind, kwargs in compiled["fast"]}
            return
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.suite = self._build(gx, suite, range(len(suite.get("expectations", []))))
        self._name = self.suite.name
        self.descriptions = [_describe(e.configuration) for e in self.suite.expectations]
        self._fast = {}
        if engine == "auto":
            for position, expectation in enumerate(self.suite.expectations):
                rule = _fast_rule(expectation.configuration)
                if rule is not None:
                    self._fast[position] = rule
        rest = [p for p in range(len(self.descriptions)) if p not in self._fast]
        self._gx_suite = self._build(gx, suite, rest) if rest else None
        if self._gx_suite is not None:
            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
            source = context.data_sources.add_pandas("seqwatch_readings")
            self._batch_definition = source.add_dataframe_asset("batch").add_batch_definition_whole_dataframe("whole")
        elif engine == "auto":
            _store_compiled_suite(suite, {
                "name": self._name, "descriptions": self.descriptions,
                "fast": [[p, self.suite.expectations[p].configuration.type, kwargs]
                         for p, (kwargs, _) in sorted(self._fast.items())]})

    @staticmethod
    def _build(gx, suite: dict, positions):
        """A GX suite of the expectations at ``positions``, each tagged with its position in ``suite``."""
        import logging

        numbered = copy.deepcopy(suite)
        numbered["expectations"] = []
        for position in positions:
            expectation = copy.deepcopy(suite["expectations"][position])
            if isinstance(expectation, dict):
                expectation["meta"] = {**(expectation.get("meta") or {}), _POSITION: position}
            numbered["expectations"].append(expectation)
        gx_log = logging.getLogger("great_expectations.core.expectation_suite")
        level = gx_log.level
        gx_log.setLevel(logging.CRITICAL)  # GX logs, then drops, an invalid expectation: we raise instead
        try:
            built = gx.ExpectationSuite(**numbered)
        except Exception as exc:  # GX raises pydantic and its own errors for a bad expectation
            detail = " ".join(str(exc).split())  # pydantic's report spans lines: keep one sentence
            raise SuiteError(f"suite {suite.get('name')!r} has an invalid expectation: {detail}") from None
        finally:
            gx_log.setLevel(level)
        kept = {int(e.meta[_POSITION]) for e in built.expectations}
        dropped = [suite["expectations"][p].get("type") if isinstance(suite["expectations"][p], dict)
                   else suite["expectations"][p] for p in positions if p not in kept]
        if dropped:
            raise SuiteError(f"suite {suite.get('name')!r} has invalid expectations {dropped} (unknown type or "
                             f"arguments)")
        _check_row_level(built)
        return built

    @property
    def name(self) -> str:
        return self._name

    def reason(self, position: int, entity_id, channel, timestamp_us, value) -> str:
        """The quarantine reason of a reading that failed the expectation at ``position``: its channel and value,
        and its entity or timestamp where the expectation judges those (neither is in a reading's ``raw`` text
        when the entity comes from the file name)."""
        named = "".join(f", entity {str(entity_id)!r}" if column == "entity_id" else
                        f", timestamp {_timestamp_text(timestamp_us)}" for column in self._id_columns[position])
        return f"channel {str(channel)!r} value {float(value)!r}{named} failed {self.descriptions[position]}"

    @property
    def gx_positions(self) -> list[int]:
        """Positions of the expectations that run through GX (the others run in pandas)."""
        return [p for p in range(len(self.descriptions)) if p not in self._fast]

    def failures(self, frame: pd.DataFrame) -> np.ndarray:
        """For each row of ``frame``, the position (in the suite's order) of the first expectation it failed, or
        -1. Raises ``SuiteError`` when an expectation cannot run (e.g. a row condition naming no column)."""
        first = np.full(len(frame), -1, dtype=np.int64)
        if len(frame) == 0:
            return first
        data = frame.loc[:, list(COLUMNS)].reset_index(drop=True)
        # Categorical ids: row conditions that match strings on the channel run once per category, not per row
        # (sensor suite, 100k readings: 8 ms instead of 38 ms).
        data["entity_id"] = data["entity_id"].astype("category")
        data["channel"] = data["channel"].astype("category")
        failed = self._fast_failures(data)
        if self._gx_suite is not None:
            failed.update(self._gx_failures(_plain_ids(data)))
        for position in sorted(failed):
            rows = failed[position] & (first == -1)
            first[rows] = position
        return first

    def _fast_failures(self, data: pd.DataFrame) -> dict:
        selected: dict = {}
        out = {}
        for position, (kwargs, rule) in self._fast.items():
            try:
                bad = np.asarray(rule(data, kwargs), dtype=bool)
                condition = kwargs.get("row_condition")
                if condition:
                    if condition not in selected:
                        selected[condition] = _condition_mask(data, condition)
                    bad = bad & selected[condition]
            except Exception as exc:  # a bad column name, row condition or argument in a user's suite
                message = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
                raise SuiteError(f"expectation {self.descriptions[position]} of suite {self.name!r} could not run: "
                                 f"{message}") from None
            out[position] = bad
        return out

    def _gx_failures(self, data: pd.DataFrame) -> dict:
        from great_expectations.exceptions import GreatExpectationsError

        try:
            batch = self._batch_definition.get_batch(batch_parameters={"dataframe": data})
            result = batch.validate(self._gx_suite, result_format={"result_format": "COMPLETE",
                                                                   "partial_unexpected_count": 0})
        except GreatExpectationsError as exc:  # GX's verdict on the suite's content; any other error is a bug
            message = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise SuiteError(f"suite {self.name!r} could not run through great-expectations: {message}") from None
        out = {}
        for outcome in result.results:
            position = self._position(outcome)
            error = _raised(outcome.exception_info)
            if error is not None:
                raise SuiteError(f"expectation {self.descriptions[position]} of suite {self.name!r} could not run: "
                                 f"{error}")
            if outcome.success and not (outcome.result or {}).get("unexpected_index_list"):
                continue
            if "unexpected_index_list" not in (outcome.result or {}):
                raise SuiteError(f"expectation {self.descriptions[position]} of suite {self.name!r} failed without "
                                 f"naming the rows that failed it")
            bad = np.zeros(len(data), dtype=bool)
            bad[np.asarray(outcome.result["unexpected_index_list"], dtype=np.int64)] = True
            out[position] = bad
        return out

    def _position(self, outcome) -> int:
        meta = outcome.expectation_config.meta or {}
        if _POSITION not in meta:
            raise SuiteError(f"a result of suite {self.name!r} cannot be matched to its expectation "
                             f"({outcome.expectation_config.type})")
        return int(meta[_POSITION])
