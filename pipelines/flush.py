"""Streaming flushes that lose nothing: elements gathered per key into event-time windows of a fixed size and
released when the watermark passes each window's end, like ``FixedWindows`` and a ``GroupByKey``, except that an
element that arrives after its window was released is not dropped: it goes out with the next release.

Why not ``FixedWindows`` with a ``GroupByKey``: the quarantine records and the counts of a streaming run are
stamped with the event time of the reading that caused them. A reading that reaches the pipeline after the
watermark passed it (a broker message held up in transit, a partition read late) makes records whose window has
closed, and Beam drops such elements at the ``GroupByKey`` without a trace. Allowed lateness only moves the
cliff (a reading can be arbitrarily late), and late panes need firing-unique file names that runners do not agree
on. Here the elements live in the global window, which never closes, and a stateful ``DoFn`` releases them.

Each release is named by the start of the window it releases: every element of the window ``[s, s + size)``
whose timestamp is in it, plus those that arrived late, after earlier releases, and were moved to the first
window not yet released. A window is released at most once per key, so a name never repeats and a rerun or a
replay that sees the same input in the same order writes the same files.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam import coders
from apache_beam.coders import VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp


class Release(NamedTuple):
    """One key's elements of one window: ``start_us`` names the window ``[start_us, start_us + size)``; ``late``
    is how many of the items arrived after their own window had been released."""

    key: Any
    start_us: int
    items: list
    late: int


def release_window(own_start_us: int, released_us: int | None, size_us: int) -> int:
    """The start of the window an element goes out with: its own (``own_start_us``), or, if that one was released
    already (``released_us``: the start of the last window released, ``None`` if none), the one after the last
    released."""
    if released_us is not None and own_start_us <= released_us:
        return released_us + size_us
    return own_start_us


class _Flush(beam.DoFn):
    PENDING = BagStateSpec("pending", coders.PickleCoder())  # (window start, late, item)
    RELEASED = ReadModifyWriteStateSpec("released", VarIntCoder())  # start of the last window released
    DUE = ReadModifyWriteStateSpec("due", VarIntCoder())  # the window end the timer is set for
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)

    def __init__(self, size_us: int):
        self.size_us = size_us

    def process(self, element, timestamp=beam.DoFn.TimestampParam, pending=beam.DoFn.StateParam(PENDING),
                released=beam.DoFn.StateParam(RELEASED), due=beam.DoFn.StateParam(DUE),
                release=beam.DoFn.TimerParam(RELEASE)):
        _, item = element
        own = int(timestamp.micros) // self.size_us * self.size_us
        start = release_window(own, released.read(), self.size_us)
        pending.add((start, start != own, item))
        self._arm(start + self.size_us, due, release)

    def _arm(self, end_us: int, due, release) -> None:
        # One timer per key, at the earliest window end still to be released (a later one is re-armed on firing).
        current = due.read()
        if current is None or end_us < current:
            due.write(end_us)
            release.set(Timestamp(micros=end_us - 1))  # a window's last instant, where FixedWindows fire

    @on_timer(RELEASE)
    def on_release(self, key=beam.DoFn.KeyParam, pending=beam.DoFn.StateParam(PENDING),
                   released=beam.DoFn.StateParam(RELEASED), due=beam.DoFn.StateParam(DUE),
                   release=beam.DoFn.TimerParam(RELEASE)):
        end = due.read()
        due.clear()
        entries = list(pending.read())
        if end is None or not entries:
            return
        start = end - self.size_us
        now = [(late, item) for s, late, item in entries if s <= start]
        later = [(s, late, item) for s, late, item in entries if s > start]
        pending.clear()
        for entry in later:
            pending.add(entry)
        released.write(start)
        if later:
            self._arm(min(s for s, _, _ in later) + self.size_us, due, release)
        if now:
            # Stamped at the window's last instant (the timer's time): on time for whatever is downstream.
            yield beam.window.TimestampedValue(
                Release(key, start, [item for _, item in now], sum(late for late, _ in now)),
                Timestamp(micros=end - 1))


class FlushPerWindow(beam.PTransform):
    """``(key, item) -> Release``: items gathered per key and event-time window of ``size_s`` seconds, released
    when the watermark passes the window's end; an item that arrives after its window was released goes out with
    the next release of its key (see the module docstring). The input may be in any windowing: it is moved to
    the global window."""

    def __init__(self, size_s: float):
        super().__init__()
        if not size_s > 0:
            raise ValueError(f"the flush window must be > 0 seconds, got {size_s}")
        self.size_us = int(round(size_s * 1e6))

    def expand(self, keyed):
        return (keyed
                | "Global" >> beam.WindowInto(beam.window.GlobalWindows())
                | "Release" >> beam.ParDo(_Flush(self.size_us)))
