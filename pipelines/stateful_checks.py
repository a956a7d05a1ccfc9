"""Checks that need each entity's readings in event-time order: monotone meters and stuck channels.

They run on one entity's pane (see ``seqwatch.pipelines.windows``): the pane's own readings plus the context
readings its neighbours lend it, after duplicates are removed. Event time, not arrival order, decides what is
"previous", so a batch run and a streaming run of the same readings give the same answer.

- **Monotone meter** (a channel matched by the suite's ``monotonic_channels``, e.g. a cumulative energy
  counter): an own reading lower than the channel's previous reading (by more than ``monotonic_tolerance``)
  is quarantined as ``monotonic_decrease``. Only the reading where the meter went back is quarantined: after
  a meter reset the readings that follow count up again from the new value and are kept. A context reading
  where it went back is left out of the pane's windows as well (its own pane quarantines it).
- **Stuck channel**: an own reading inside a run of at least ``stuck_min_readings`` consecutive readings of
  one channel with exactly the same value is *flagged*, not dropped: it is still scored (a stuck sensor is
  what an anomaly detector should see), and the run manifest counts it as ``flagged.stuck_channel``.

What a pane can see: the previous reading of a channel is found when it lies within the pane's context
(``L + max_gap + 1`` steps before the pane); a stuck run is measured over the pane and its context, so runs
are measured exactly when ``stuck_min_readings <= L + max_gap + 1`` and may be missed near pane edges
above that.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from seqwatch.schemas.elements import Quarantined
from seqwatch.schemas.validation import StatefulRules

if TYPE_CHECKING:
    from seqwatch.pipelines.pane_pieces import PaneRows

STUCK_COUNT = "flagged.stuck_channel"


class PaneChecks(NamedTuple):
    """Masks over the rows of a pane's frame (same order): ``decrease`` marks own readings to quarantine as
    ``monotonic_decrease`` (``reasons``: one sentence per marked row, in frame order); ``stuck`` marks own
    readings inside a stuck run (flagged, kept)."""

    decrease: np.ndarray
    reasons: list
    stuck: np.ndarray
    went_back: np.ndarray | None = None  # every reading where a meter went back, context included (None: none)


@functools.lru_cache(maxsize=65536)
def _is_monotonic(rules: StatefulRules, channel: str) -> bool:
    return rules.is_monotonic(channel)


@functools.lru_cache(maxsize=65536)
def _checks_stuck(rules: StatefulRules, channel: str) -> bool:
    """(Each pane asks again for the same few channels: a regular expression search each time had been a tenth of
    cutting a fleet's pane.)"""
    return rules.checks_stuck(channel)


def check_pane(frame: pd.DataFrame, rules: StatefulRules) -> PaneChecks:
    """Run the stateful ``rules`` on one entity's readings.

    ``frame`` has columns ``channel``, ``timestamp`` (int µs), ``value`` and optionally ``own`` (bool: the
    reading belongs to this pane rather than to its context; all readings are own when absent), at most one
    reading per channel and timestamp (duplicates removed), in any row order."""
    column = frame["channel"]
    if isinstance(column.dtype, pd.CategoricalDtype):  # a pane's: its codes, no hashing of the strings
        codes, names = column.cat.codes.to_numpy(), column.cat.categories
    else:
        codes, names = pd.factorize(column, sort=False)
    own = frame["own"].to_numpy(dtype=bool) if "own" in frame.columns else np.ones(len(frame), dtype=bool)
    return check_columns(codes, names, frame["timestamp"].to_numpy(dtype=np.int64),
                         frame["value"].to_numpy(dtype=np.float64), own, rules)


def check_columns(codes: np.ndarray, names, stamps: np.ndarray, values: np.ndarray, own: np.ndarray,
                  rules: StatefulRules) -> PaneChecks:
    """``check_pane`` on a pane's columns: each reading's channel as a code into ``names``, its timestamp (int
    µs), value and whether it is the pane's own."""
    n = len(stamps)
    decrease, stuck = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    if n == 0 or not (rules.monotonic_channels or rules.stuck_min_readings):
        return PaneChecks(decrease, [], stuck)
    monotonic = np.array([_is_monotonic(rules, str(c)) for c in names], dtype=bool)
    checks_stuck = np.array([_checks_stuck(rules, str(c)) for c in names], dtype=bool)
    values = np.asarray(values, dtype=np.float64)

    order = np.lexsort((stamps, codes))  # by channel, then event time
    channel, value = codes[order], values[order]
    same_channel = np.r_[False, channel[1:] == channel[:-1]]
    previous = np.r_[np.nan, value[:-1]]

    went_back = same_channel & monotonic[channel] & (value < previous - rules.monotonic_tolerance)
    decrease[order] = went_back & own[order]
    back = np.zeros(n, dtype=bool)
    back[order] = went_back

    if rules.stuck_min_readings:
        run = np.cumsum(~same_channel | (value != previous))
        run_length = np.bincount(run)[run]
        flagged = checks_stuck[channel] & (run_length >= rules.stuck_min_readings)
        stuck[order] = flagged & own[order]

    reasons = []
    if decrease.any():
        previous_in_frame = np.empty(n)
        previous_in_frame[order] = previous
        reasons = [f"meter {str(names[codes[i]])!r} went back from {float(previous_in_frame[i])!r} to "
                   f"{float(values[i])!r}" for i in np.flatnonzero(decrease)]
    return PaneChecks(decrease, reasons, stuck, back if back.any() else None)


def apply_stateful_checks(rows: "PaneRows", rules: StatefulRules, run_id: str, stage: str = "window",
                          entity: str | None = None) -> tuple["PaneRows", list[Quarantined], dict]:
    """``check_columns`` as a pane's cutter needs it: returns ``(kept rows, quarantined records, counts)``.

    ``rows`` (``pane_pieces.PaneRows``) also has ``source`` and ``line`` (for the quarantine records; ``entity``:
    the pane's, for their raw text). ``counts`` is ``{"flagged.stuck_channel": n}`` when own readings were
    flagged, else empty."""
    from seqwatch.pipelines.validate import quarantine_pane_rows

    checks = check_columns(rows["channel"], rows.names("channel"), rows["timestamp"], rows["value"], rows["own"],
                           rules)
    records = list(quarantine_pane_rows(rows, checks.decrease, stage, "monotonic_decrease", checks.reasons, run_id,
                                        entity))
    counts = {STUCK_COUNT: int(checks.stuck.sum())} if checks.stuck.any() else {}
    # A context reading where the meter went back is its own pane's to quarantine, and this pane's to leave out
    # of its windows too: kept, it had filled the next pane's first windows, so scores depended on --pane-steps.
    kept = rows.take(~checks.went_back) if checks.went_back is not None else rows
    return kept, records, counts
