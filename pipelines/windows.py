"""Cutting model windows per entity without copying each reading L/stride times.

Each entity's time line is divided into fixed panes of ``pane_steps`` steps (a multiple of the stride, on
the global step grid, so batch and streaming runs cut the same panes). A pane receives its own readings plus
a margin of context from its neighbours (``L + max_gap + 1`` steps before, ``L + max_gap`` after), so a
reading is copied at most three times, whatever L/stride is. Inside a pane (see ``seqwatch.models.windowing``):
duplicates are quarantined, readings are put on the step grid with short gaps filled, the windows that *end*
in the pane are cut, and each own reading is counted as scored (it lies in a window) or quarantined as
``insufficient_data`` (its run of consecutive complete steps is shorter than L). A pane whose readings come at
an interval more than 2x off the model's is quarantined whole as ``sampling_interval``.
"""
from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming, WindowedValue

from seqwatch.models import windowing
from seqwatch.pipelines.pane_pieces import PaneRows, PieceCutter, group_ranges, id_codes, pane_frame, pane_rows
from seqwatch.pipelines.sources import COUNTS, QUARANTINE
from seqwatch.pipelines.stage_metrics import StageTimer
from seqwatch.pipelines.stateful_checks import apply_stateful_checks
from seqwatch.pipelines.validate import DUPLICATE_REASON, quarantine_pane_rows, quarantine_rows
from seqwatch.schemas.elements import ReadingBatch, WindowBatch

CUT_HERE = "windows_cut_here"  # windows of local panes, cut by _KeyByPane without the GroupByKey


LACKING_MARK = "(this entity has no "  # starts the part of an insufficient_data reason naming an absent channel
_LACKING_END = " readings here"


def lacking_clause(absent: list, channels: tuple) -> str:
    """The part of an insufficient_data reason that names the model channels an entity does not report."""
    return f"{LACKING_MARK}{', '.join(map(repr, absent))}{_LACKING_END}, and every window needs all of {list(channels)})"


def absent_channels(reason: str) -> str:
    """The absent channels ``lacking_clause`` wrote into ``reason``, as written (``'vibration'``)."""
    return reason.split(LACKING_MARK, 1)[1].split(_LACKING_END, 1)[0]


SPARSE_MARK = "(readings of "  # starts the part of an insufficient_data reason naming a channel too sparse to fill
_SPARSE_END = " come further apart"


def sparse_clause(sparse: dict, step_us: int, max_gap: int) -> str:
    """The part of an insufficient_data reason that names the channels whose readings come further apart than
    the model's gap filling bridges (``{name: median spacing in steps}``, from ``windowing.sparse_channels``)."""
    named = ", ".join(f"{name!r} every {every} steps" for name, every in sparse.items())
    need = max(sparse.values()) - 1
    return (f"{SPARSE_MARK}{named}{_SPARSE_END} than the model bridges: at most {max_gap} missing steps of "
            f"{step_us / 1e6:g}s; resample them to every {step_us / 1e6:g}s, or train a model with --max-gap {need})")


def sparse_channels_named(reason: str) -> str:
    """The channels and spacings ``sparse_clause`` wrote into ``reason``, as written (``'temperature' every 6
    steps``)."""
    return reason.split(SPARSE_MARK, 1)[1].split(_SPARSE_END, 1)[0]


class PaneSpec:
    """The pane arithmetic shared by keying and cutting."""

    def __init__(self, step_us: int, length: int, stride: int, max_gap: int, pane_steps: int, offset_us: int = 0):
        if pane_steps % stride or pane_steps < 2 * (length + max_gap + 1):
            raise ValueError(f"pane_steps must be a multiple of stride={stride} and >= "
                             f"{2 * (length + max_gap + 1)}, got {pane_steps}")
        self.step_us, self.length, self.stride, self.max_gap, self.pane_steps = (
            step_us, length, stride, max_gap, pane_steps)
        self.before = length + max_gap + 1
        self.after = length + max_gap
        self.offset_us = offset_us  # the grid's phase: steps lie at k * step_us + offset_us

    def own_range(self, pane: int) -> tuple[int, int]:
        return pane * self.pane_steps, (pane + 1) * self.pane_steps


# A pane spans at least this long: its window's start, rounded down to a millisecond by Beam (``PaneWindows.owns``),
# must still tell it from its neighbours'.
MIN_PANE_US = 2000


def pane_floor(pane_steps: int, step_us: int) -> int:
    """``pane_steps``, raised to span at least ``MIN_PANE_US`` (at 44.1 kHz, 87 steps)."""
    return max(pane_steps, -(-MIN_PANE_US // max(step_us, 1)))


class PaneWindows:
    """The event-time window of each pane, which spans the pane and its context margins (and, in streaming, the
    wait for late readings): ``[pane start - before, pane end + after + wait)``.

    In streaming, a pane's group fires once the watermark has passed the end of its look-ahead context, so the
    windows it cuts are complete; in batch every group fires at the end, as a plain GroupByKey would.

    The windows are Beam's standard ``SlidingWindows`` (size: a pane and its margins; period: a pane), not a
    window function of seqwatch's own: a Python WindowFn is a pickled function that only Python-aware runners
    (the DirectRunner, Prism, Dataflow) can group by, while Flink and Spark refuse it. Each piece is stamped
    inside its own pane's window and past the neighbours' ones (``piece_timestamp_us``) where the margins
    allow; otherwise it also lands in a neighbour's window, where the cutter drops it (``owns``)."""

    def __init__(self, spec: "PaneSpec", wait_us: int = 0):
        self.spec = spec
        self.wait_us = wait_us

    def _bounds(self, pane: int) -> tuple[int, int]:
        start, end = self.context_us(pane)
        return start, end + self.wait_us

    def window_fn(self) -> beam_window.SlidingWindows:
        spec = self.spec
        start, end = self._bounds(0)
        period = spec.pane_steps * spec.step_us
        return beam_window.SlidingWindows(Duration(micros=end - start), Duration(micros=period),
                                          Timestamp(micros=start % period))

    def piece_timestamp_us(self, pane: int) -> int:
        """The event time given to a piece of ``pane``: inside its window, after the previous pane's window ends
        (so it lies in the next pane's window only if the margins and the wait are longer than a pane)."""
        return self._bounds(pane - 1)[1]

    def owns(self, pane: int, window) -> bool:
        """Whether ``window`` is ``pane``'s own window (and not a neighbour's that a piece also fell in). Beam
        encodes a window's bounds in whole milliseconds (``IntervalWindowCoder``), so after a GroupByKey on a
        runner its start is the µs bound rounded down to a millisecond: that is this pane's too (a neighbour's
        lies a pane, at least ``MIN_PANE_US``, away, so in another millisecond). Compared with the µs bound alone,
        every pane whose start was not a whole millisecond had been dropped, scored nor quarantined: a stream of
        360 Hz ECG on Prism scored 0 of 6000 readings (found by the bug hunt of sub-millisecond steps)."""
        bound = self._bounds(pane)[0]
        return window.start.micros in (bound, bound // 1000 * 1000)

    def context_us(self, pane: int) -> tuple[int, int]:
        """``[start, end)`` µs of the readings a pane receives: its own steps and its context margins."""
        spec = self.spec
        lo, hi = spec.own_range(pane)
        return (lo - spec.before) * spec.step_us, (hi + spec.after) * spec.step_us

    def end_us(self, pane: int) -> int:
        return self._bounds(pane)[1]


class _KeyByPane(beam.DoFn):
    """Splits each batch into ``((entity, pane), readings)`` pieces, stamped inside their pane's window.

    With ``spans`` (batch runs whose inputs ``FileSpans`` could index), a piece of a pane that its file holds
    alone is not sent to the GroupByKey: it is held until its file has been read (the reader emits a file's
    chunks one after another), then the pane is cut here, with the same code and into the same outputs, in
    the global window and at the timestamp the GroupByKey would have given it."""

    def __init__(self, windows: PaneWindows, spans=None, cutter: "_PaneCutter | None" = None):
        self.spec = windows.spec
        self.windows = windows
        self.spans = spans
        self.cutter = cutter
        self.timer = StageTimer("window_key")
        self.cut_timer = StageTimer("window_cut")

    def start_bundle(self):
        self._held: list = []  # (pieces frame of a chunk, [(entity, pane, lo, hi) of its local pieces])
        self._held_source = None

    def process(self, batch: ReadingBatch):
        with self.timer:
            pieces, bounds = self._split(batch)
        out, to_group, local = [], bounds, []
        if self.spans is not None:
            sources = batch.frame["source"].unique()
            source = str(sources[0]) if len(sources) == 1 else None
            if source is None or source != self._held_source:
                out += self._flush()  # the previous file has been read: its panes are complete
                self._held_source = source
            # readings of a pane's steps lie up to half a step earlier (step_of), shifted by the grid's phase
            half = self.spec.step_us // 2 - self.spec.offset_us
            to_group = []
            for entity, pane, lo, hi in bounds:
                start, end = self.windows.context_us(pane)
                local_pane = source is not None and self.spans.is_local(source, entity, start - half, end - half)
                (local if local_pane else to_group).append((entity, pane, lo, hi))
        with self.timer:
            if to_group:
                cutter = PieceCutter(pieces)
                out += [beam_window.TimestampedValue(((entity, pane), cutter.piece(lo, hi)),
                                                     Timestamp(micros=self.windows.piece_timestamp_us(pane)))
                        for entity, pane, lo, hi in to_group]
        if local:
            self._held.append((pieces, local))
        return out

    def finish_bundle(self):
        yield from self._flush()

    def _flush(self):
        """Cut the held panes of the file just read. Their pieces lie in the chunks' piece frames: one concat of
        those frames and one take in pane order make each pane's readings one slice (a pane of a fleet's file,
        sorted by time, has a piece in every chunk: a concat per pane cost about 4 ms)."""
        held, self._held = self._held, []
        if not held:
            return []
        out = []
        with self.cut_timer:
            frames = [frame for frame, _ in held]
            starts = np.cumsum([0] + [len(frame) for frame in frames[:-1]])
            ranges: dict = {}
            for (_, local), start in zip(held, starts.tolist()):
                for entity, pane, lo, hi in local:
                    ranges.setdefault((entity, pane), []).append((start + lo, hi - lo))
            del held
            keys = sorted(ranges)
            firsts, lengths = (np.array(column, dtype=np.int64)
                               for column in zip(*(r for key in keys for r in ranges[key])))
            # Row numbers of every held piece, pane after pane, pieces in the order they were read.
            index = np.repeat(firsts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
            everything = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
            del frames
            ordered = PaneRows.from_frame(everything).take(index)
            del everything
            out.append(beam.pvalue.TaggedOutput(COUNTS, WindowedValue(
                ("panes_cut_here", len(keys)), Timestamp(micros=0), [GlobalWindow()])))
            ends = np.cumsum([sum(n for _, n in ranges[key]) for key in keys]).tolist()
            for (entity, pane), lo, hi in zip(keys, [0] + ends[:-1], ends):
                part = ordered.slice(lo, hi)
                # The GroupByKey's output timestamp: the end of the pane's window (OUTPUT_AT_EOW).
                stamp = Timestamp(micros=self.windows.end_us(pane) - 1)
                for result in self.cutter.cut(entity, pane, part):
                    if isinstance(result, beam.pvalue.TaggedOutput):
                        out.append(beam.pvalue.TaggedOutput(
                            result.tag, WindowedValue(result.value, stamp, [GlobalWindow()])))
                    else:
                        out.append(beam.pvalue.TaggedOutput(
                            CUT_HERE, WindowedValue(result, stamp, [GlobalWindow()])))
        return out

    def _split(self, batch: ReadingBatch) -> tuple[pd.DataFrame, list]:
        """``(pieces, bounds)``: the batch's readings once for their own pane and again for each neighbour they
        lend context to (an ``own`` column tells which), grouped by (entity, pane), and each group's
        ``(entity, pane, lo, hi)`` row range in ``pieces``."""
        spec = self.spec
        frame = batch.frame
        stamps = frame["timestamp"].to_numpy()
        steps = windowing.step_of(stamps, spec.step_us, spec.offset_us)
        pane = steps // spec.pane_steps
        offset = steps - pane * spec.pane_steps
        rows = np.arange(len(frame))
        tail = offset >= spec.pane_steps - spec.before  # context for the next pane
        head = offset < spec.after  # context for the previous pane
        # Row numbers, not copies: each reading once for its own pane, and again for each neighbour it lends
        # context to.
        row = np.concatenate([rows, rows[tail], rows[head]])
        target = np.concatenate([pane, pane[tail] + 1, pane[head] - 1])
        own = np.zeros(len(row), dtype=bool)
        own[:len(rows)] = True
        entity_codes, entities = id_codes(frame["entity_id"])
        entity = entity_codes[row]
        order, starts, ends = group_ranges(entity, target)  # by entity, then pane; rows keep their order inside
        row, target, own, entity = row[order], target[order], own[order], entity[order]
        # One take of every piece's rows, in piece order, then row ranges: a take per piece cost about 0.3 ms,
        # which a chunk of a fleet's file (thousands of entities) pays thousands of times.
        pieces = frame.drop(columns=["entity_id"]).take(row).reset_index(drop=True)
        pieces["own"] = own
        bounds = [(str(entities[entity[lo]]), int(target[lo]), lo, hi)
                  for lo, hi in zip(starts.tolist(), ends.tolist())]
        return pieces, bounds


class _PaneCutter:
    """Cuts the windows that end in one (entity, pane) from the pane's pieces (no Beam state: used by the
    GroupByKey path and by the local path alike)."""

    def __init__(self, spec: PaneSpec, channels: tuple, run_id: str, rules=None, dtype: type = np.float32):
        self.spec = spec
        self.channels = channels
        self.run_id = run_id
        self.rules = rules
        self.dtype = dtype  # the windows' (models.windowing.window_dtype)

    def cut(self, entity: str, pane: int, rows: PaneRows):
        """The outputs of one pane: its ``WindowBatch`` and, tagged, its quarantined readings and counts.
        ``rows`` holds the pane's readings and those lent to it as context (``pane_pieces.COLUMNS``)."""
        spec = self.spec
        rows = rows.take(_own_first_in_file_order(rows))
        # A reading repeated at the same entity, channel and timestamp: the first (by file, line) is kept.
        dup = _repeated(rows)
        yield from self._quarantine(rows, dup & rows["own"], "duplicate", DUPLICATE_REASON, entity)
        if dup.any():
            rows = rows.take(~dup)
        if self.rules is not None:
            rows, records, flags = apply_stateful_checks(rows, self.rules, self.run_id, entity=entity)
            for q in records:
                yield beam.pvalue.TaggedOutput(QUARANTINE, q)
            for name, n in flags.items():
                yield beam.pvalue.TaggedOutput(COUNTS, (name, n))
        own = rows["own"]

        lo, hi = spec.own_range(pane)
        first = lo - spec.before
        position = {name: i for i, name in enumerate(self.channels)}
        stamps = rows["timestamp"]
        channel_index = _positions(rows, position)
        interval = windowing.median_interval(stamps, channel_index)
        if interval is not None and not windowing.interval_fits(interval, spec.step_us):
            # Readings much faster or slower than the model's interval: not what it learned (cut on its grid they
            # would be averaged away, or too sparse for any window, which would hide the cause).
            yield from self._quarantine(rows, own, "sampling_interval",
                                        f"this entity's readings come every {interval / 1e6:g}s here, but the model "
                                        f"was trained on readings every {spec.step_us / 1e6:g}s: train a model for "
                                        f"this interval, or resample the data", entity)
            yield beam.pvalue.TaggedOutput(COUNTS, ("records_scored", 0))
            return
        steps = windowing.step_of(stamps, spec.step_us, spec.offset_us)
        # The grid spans the pane's steps that hold readings, not the whole pane: a pane of a billion steps (one
        # pane per entity) had asked for 30 GiB however few its readings. No window reaches past them anyway.
        last = hi - 1 + spec.after
        if len(steps):
            first, last = max(first, int(steps.min())), min(last, int(steps.max()))
        else:
            last = first - 1
        grid = windowing.build_grid(steps, channel_index, rows["value"],
                                    len(self.channels), spec.max_gap, first_step=first, last_step=last)
        covered = windowing.covered_by_long_stretch(grid.present, spec.length)
        reading_covered = covered[steps - first]
        short = own & ~reading_covered
        reason = f"no model window covers this reading: fewer than {spec.length} consecutive steps with every " \
                 f"channel present"
        if short.any():
            seen = np.bincount(channel_index, minlength=len(self.channels))
            absent = [name for name, n in zip(self.channels, seen) if not n]
            if absent:  # the commonest cause, named: a channel this entity does not report at all here
                reason += " " + lacking_clause(absent, self.channels)
            else:  # the next: a channel reported less often than the model's gap filling bridges
                sparse = windowing.sparse_channels(steps, channel_index, len(self.channels), spec.max_gap)
                if sparse:
                    reason += " " + sparse_clause({self.channels[c]: k for c, k in sparse.items()}, spec.step_us,
                                                  spec.max_gap)
        yield from self._quarantine(rows, short, "insufficient_data", reason, entity)
        scored = int((own & reading_covered).sum())
        yield beam.pvalue.TaggedOutput(COUNTS, ("records_scored", scored))

        ends = [windowing.window_end_steps(first + a, first + b, spec.length, spec.stride, lo, hi)
                for a, b in windowing.stretches(grid.present)]
        ends = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
        if len(ends) == 0:
            return
        positions = ends - first
        with np.errstate(over="ignore"):  # a reading beyond float32 becomes inf; the scaler clips it
            values = windowing.cut_windows(grid.values, positions, spec.length).astype(self.dtype)
        observed = windowing.cut_windows(grid.observed, positions, spec.length)
        yield WindowBatch(entity, pane, self.channels, spec.step_us, ends * spec.step_us + spec.offset_us, values,
                          observed, scored)

    def _quarantine(self, rows: PaneRows, mask: np.ndarray, code: str, reasons, entity: str):
        """The quarantine records of the rows ``mask`` selects (``reasons``: one, or one per selected row), tagged."""
        for q in quarantine_pane_rows(rows, mask, "window", code, reasons, self.run_id, entity):
            yield beam.pvalue.TaggedOutput(QUARANTINE, q)



class _CutPane(beam.DoFn):
    def __init__(self, cutter: _PaneCutter, windows: PaneWindows):
        self.cutter = cutter
        self.windows = windows
        self.run_id = cutter.run_id
        self.timer = StageTimer("window_cut")

    def process(self, keyed, window=beam.DoFn.WindowParam, pane_info=beam.DoFn.PaneInfoParam):
        if not self.windows.owns(keyed[0][1], window):
            return []  # pieces that also fell in a neighbour's window: they are cut in their own
        parts = list(keyed[1])
        if not parts:
            return []  # an empty firing (Flink fires a window's late pane when it closes, even with nothing new)
        keyed = (keyed[0], parts)
        with self.timer:
            if pane_info.timing == PaneInfoTiming.LATE:
                # Streaming: readings that arrived after their pane was scored. They are not scored twice
                # and not dropped: each one is quarantined (context copies are counted in their own pane).
                return list(self._late(keyed))
            (entity, pane), parts = keyed
            return list(self.cutter.cut(entity, pane, pane_rows(parts)))

    def _late(self, keyed):
        (entity, _), parts = keyed
        frame = pane_frame(parts)
        yield from (beam.pvalue.TaggedOutput(QUARANTINE, q)
                    for q in quarantine_rows(frame, frame["own"].to_numpy(), "window", "late",
                                             "the reading arrived after its pane had been scored", self.run_id,
                                             entity))


def _own_first_in_file_order(rows: PaneRows) -> np.ndarray:
    """The row order of ``frame.sort_values(["own", "source", "line"], ascending=[False, True, True])``
    (stable, as pandas sorts; a categorical source by its categories' order), in numpy."""
    return np.lexsort((rows["line"], rows["source"], ~rows["own"]))


def _repeated(rows: PaneRows) -> np.ndarray:
    """``frame.duplicated(["channel", "timestamp"], keep="first")`` as a bool array: one int64 key per row, sorted
    stably (a pane's thousand rows: 20 µs, where hashing them in pandas took 140 µs)."""
    channel = rows["channel"].astype(np.int64)
    stamps = rows["timestamp"]
    if not len(stamps):
        return np.zeros(0, dtype=bool)
    span, width = int(stamps.max()) - int(stamps.min()), int(channel.max()) + 1
    if span >= (1 << 62) // width:  # the combined key would overflow: let pandas hash the pairs
        return pd.DataFrame({"channel": channel, "timestamp": stamps}).duplicated(keep="first").to_numpy()
    key = (stamps - stamps.min()) * width + channel
    order = np.argsort(key, kind="stable")  # equal keys keep their row order: the first is not a repeat
    ordered = key[order]
    repeated = np.zeros(len(key), dtype=bool)
    repeated[order[1:]] = ordered[1:] == ordered[:-1]
    return repeated


def _positions(rows: PaneRows, position: dict) -> np.ndarray:
    """Each reading's column in the model's channel order (every channel is a model channel after validation),
    looked up once per channel name, not once per reading."""
    lookup = np.array([position.get(c, -1) for c in rows.names("channel")] + [-1], dtype=np.int64)
    index = lookup[rows["channel"]]  # a missing channel (code -1) looks up the last entry, -1
    if len(index) and index.min() < 0:
        unknown = sorted(str(c) for c in rows.names("channel") if c not in position)
        raise ValueError(f"readings of channels the model lacks reached the windows: {unknown}")
    return index


class WindowedReadings(NamedTuple):
    """The outputs of ``WindowReadings``: windows in their pane windows; quarantine and counts global.
    ``cut_here`` (only with ``spans``): the windows of local panes, in the global window. They are kept apart
    from ``windows`` because a Flatten would make the DirectRunner hold them all in memory: score each, then
    flatten the (much smaller) scores."""

    windows: beam.PCollection
    quarantine: beam.PCollection
    counts: beam.PCollection
    cut_here: beam.PCollection | None = None


class WindowReadings(beam.PTransform):
    """``ReadingBatch -> WindowedReadings(windows: WindowBatch, quarantine: Quarantined, counts: (name, n))``: the
    windows that end in each (entity, pane), in the model's channel order and original units."""

    def __init__(self, step_us: int, length: int, stride: int, max_gap: int, pane_steps: int, channels: tuple,
                 run_id: str, allowed_lateness_s: float = 0.0, rules=None, keep_open_s: float = 0.0, spans=None,
                 dtype: type = np.float32, offset_us: int = 0):
        """``allowed_lateness_s`` (streaming): each pane waits this long in event time after its context before
        it is scored, so readings up to that late are still scored; later ones are quarantined (see
        ``seqwatch.pipelines.streaming``). ``rules``: a suite's ``StatefulRules`` (monotone meters, stuck
        channels), checked per pane in event-time order. ``spans`` (batch only; a
        ``seqwatch.pipelines.locality.FileSpans`` of the input files): panes that one file holds alone are cut
        as soon as that file has been read, without the GroupByKey; their windows leave on ``cut_here``, in the
        global window (the same windows, timestamps and counts as through the GroupByKey). ``dtype``: what the
        windows are cut as (``seqwatch.models.windowing.window_dtype``: float64 for cumulative channels).
        ``offset_us``: the model's grid phase (``seqwatch.models.windowing.grid_offset``)."""
        super().__init__()
        self.spec = PaneSpec(step_us, length, stride, max_gap, pane_steps, offset_us)
        self.channels = tuple(channels)
        self.run_id = run_id
        self.allowed_lateness_s = allowed_lateness_s
        self.pane_windows = PaneWindows(self.spec, int(allowed_lateness_s * 1e6))
        self.rules = rules
        self.keep_open_s = keep_open_s
        self.spans = spans
        self.dtype = dtype

    def expand(self, batches):
        cutter = _PaneCutter(self.spec, self.channels, self.run_id, self.rules, self.dtype)
        keyed = (batches
                 | "KeyByPane" >> beam.ParDo(_KeyByPane(self.pane_windows, self.spans, cutter))
                 .with_outputs(QUARANTINE, COUNTS, CUT_HERE, main="pieces"))
        cut = (keyed.pieces
               | "PaneWindows" >> beam.WindowInto(self.pane_windows.window_fn(), allowed_lateness=self.keep_open_s)
               | "GroupPanes" >> beam.GroupByKey()
               | "CutWindows" >> beam.ParDo(_CutPane(cutter, self.pane_windows)).with_outputs(QUARANTINE, COUNTS, main="windows"))
        # Records and counts leave the pane windows, so they can be flattened with other stages' outputs.
        return WindowedReadings(
            cut.windows,
            (cut[QUARANTINE] | "QuarantineToGlobal" >> beam.WindowInto(beam_window.GlobalWindows()),
             keyed[QUARANTINE]) | "AllWindowQuarantine" >> beam.Flatten(),
            (cut[COUNTS] | "CountsToGlobal" >> beam.WindowInto(beam_window.GlobalWindows()),
             keyed[COUNTS]) | "AllWindowCounts" >> beam.Flatten(),
            keyed[CUT_HERE] if self.spans is not None else None)
