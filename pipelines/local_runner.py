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


# The environment variable that hands a worker process the file systems' options (sdk_worker.py merges them into
# its pipeline options): an environment, not the command line, which any user of the machine can read with ps.
STORE_OPTIONS_VARIABLE = "SEQWATCH_WORKER_STORE_OPTIONS"


class LocalRunner(FnApiRunner):
    """The FnApiRunner, whose subprocess workers (``direct_running_mode=multi_processing``) run quietly and get the
    run's options of object stores (``--s3_*``): the FnApiRunner passes its workers no pipeline options, and a run
    with two workers read its ``s3://`` inputs from Amazon's endpoint instead of ``--s3_endpoint_url`` (retried for
    eight minutes before it failed)."""

    def run_via_runner_api(self, pipeline_proto, options):
        import os

        quiet_worker_command(pipeline_proto)
        before = os.environ.get(STORE_OPTIONS_VARIABLE)
        os.environ[STORE_OPTIONS_VARIABLE] = store_options_json(options)
        try:
            return super().run_via_runner_api(pipeline_proto, options)
        finally:
            if before is None:
                os.environ.pop(STORE_OPTIONS_VARIABLE, None)
            else:
                os.environ[STORE_OPTIONS_VARIABLE] = before


def store_options_json(options) -> str:
    """The options of Beam's S3 file system that ``options`` sets (``S3Options``, all named ``s3_*``), as JSON."""
    import json

    return json.dumps({name: value for name, value in options.get_all_options(drop_default=True).items()
                       if name.startswith("s3_") and value is not None})


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
