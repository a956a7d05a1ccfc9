"""A pipeline's Beam metrics, in the ``seqwatch`` namespace: where its time goes, and what it counted.

- Each stage adds its processing time to a counter ``stage_ms.<stage>`` (``StageTimer``); ``run_batch`` copies
  them into the run manifest. Timing a whole batch costs two clock reads per element, nothing per reading.
- Every count a run writes to its manifest or a stream to its ``counts/`` files (``records_in``,
  ``records_scored``, ``records_quarantined``, ``quarantined.<stage>.<reason>``, ``alerts``, ``files_written``,
  ...) is also added to a counter of its name (``CountAsMetric``), so that a job's progress shows while it runs
  in the runner's own monitoring (Dataflow's job page and Cloud Monitoring, Flink's metrics reporters), where a
  stream's count files are written only as each flush window closes.

They are ordinary Beam counters: a runner that retries a bundle reports its counts in ``attempted`` more than
once, and once in ``committed`` where it tracks commits (Dataflow).
"""
from __future__ import annotations

import time

import apache_beam as beam
from apache_beam.metrics import Metrics

NAMESPACE = "seqwatch"


class StageTimer:
    """``with timer: ...`` adds the elapsed milliseconds to the ``stage_ms.<stage>`` counter."""

    def __init__(self, stage: str):
        self.stage = stage
        self._counter = None
        self._start = 0.0

    def __enter__(self):
        if self._counter is None:
            self._counter = Metrics.counter(NAMESPACE, f"stage_ms.{self.stage}")
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._counter.inc(int((time.perf_counter() - self._start) * 1000))
        return False

    def __getstate__(self):  # counters are created on the worker, not pickled with the DoFn
        return {"stage": self.stage, "_counter": None, "_start": 0.0}

    def __setstate__(self, state):
        self.__dict__.update(state)


def stage_seconds(result) -> dict:
    """``{stage: seconds}`` from a finished pipeline result's committed counters."""
    from apache_beam.metrics.metric import MetricsFilter
    out = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        name = counter.key.metric.name
        if name.startswith("stage_ms."):
            value = counter.committed if counter.committed is not None else counter.attempted
            out[name[len("stage_ms."):]] = out.get(name[len("stage_ms."):], 0.0) + value / 1000
    return dict(sorted(out.items()))


class CountAsMetric(beam.DoFn):
    """``(name, n)`` counts pass through unchanged, each ``n`` added to the counter ``seqwatch/<name>``."""

    def setup(self):
        self._counters: dict = {}  # one counter object per name, not one per count (a stream counts per record)

    def process(self, pair):
        name, n = pair
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = Metrics.counter(NAMESPACE, name)
        counter.inc(n)
        yield pair


def counter_totals(result) -> dict:
    """``{name: n}`` of a finished pipeline result's ``seqwatch`` counters other than the stage times (committed
    where the runner reports them, else attempted)."""
    from apache_beam.metrics.metric import MetricsFilter
    out = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        name = counter.key.metric.name
        if not name.startswith("stage_ms."):
            value = counter.committed if counter.committed is not None else counter.attempted
            out[name] = out.get(name, 0) + value
    return dict(sorted(out.items()))
