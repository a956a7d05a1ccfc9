"""Where a pipeline's time goes: each stage adds its processing time to a Beam counter ``stage_ms.<stage>``.

The counters are ordinary Beam metrics, so they show up in the Dataflow/Flink UIs; ``run_batch`` also copies
them into the run manifest. Timing a whole batch costs two clock reads per element, nothing per reading.
"""
from __future__ import annotations

import time
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
