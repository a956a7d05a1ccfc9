"""The local runner of a batch run: Beam's FnApiRunner, with worker processes that keep the terminal for errors.

With more than one worker (``seqwatch run --workers 2``, and by default from 8M readings: ``batch.choose_workers``)
the FnApiRunner starts each SDK worker as ``python -m apache_beam.runners.worker.sdk_worker_main``, a process
that writes its start-up to the terminal it inherits at INFO (about 25 lines a worker: channels, state cache,
harness start, and import warnings for Google Cloud modules a local run does not use). Its level cannot be set:
the FnApiRunner passes no pipeline options to its workers, so ``--default_sdk_harness_log_level`` never reaches
them. ``LocalRunner`` starts the same worker through ``seqwatch.pipelines.sdk_worker``, which keeps the terminal
for errors before Beam is imported. Everything else is the FnApiRunner's; a worker's errors still fail the run
with their traceback, since the runner reports them, not the worker's terminal.
"""
from __future__ import annotations

import sys

from apache_beam.portability import python_urns
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

BEAM_WORKER_MODULE = "apache_beam.runners.worker.sdk_worker_main"
QUIET_WORKER_MODULE = "seqwatch.pipelines.sdk_worker"


class LocalRunner(FnApiRunner):
    """The FnApiRunner, whose subprocess workers (``direct_running_mode=multi_processing``) run quietly."""

    def run_via_runner_api(self, pipeline_proto, options):
        quiet_worker_command(pipeline_proto)
        return super().run_via_runner_api(pipeline_proto, options)


def quiet_worker_command(pipeline_proto) -> int:
    """Point every environment that starts Beam's worker module in a subprocess at the quiet one; returns how many
    were changed (none in a single-process run, and none should a later Beam start its workers otherwise)."""
    changed = 0
    for environment in pipeline_proto.components.environments.values():
        if environment.urn != python_urns.SUBPROCESS_SDK:
            continue
        command = environment.payload.decode("utf-8")
        if command.endswith(f" -m {BEAM_WORKER_MODULE}"):
            interpreter = command[: -len(f" -m {BEAM_WORKER_MODULE}")] or sys.executable
            environment.payload = f"{interpreter} -m {QUIET_WORKER_MODULE}".encode("utf-8")
            changed += 1
    return changed
