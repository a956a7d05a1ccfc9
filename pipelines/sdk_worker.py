"""Entry point of a local run's SDK worker process (``local_runner.LocalRunner``): Beam's ``sdk_worker_main``, with
the terminal kept for errors.

The handler is in place before Beam is imported, so the warnings its imports log (no Google Cloud Storage, no
apitools) and the harness's INFO lines stay out of the terminal; records of WARNING and above still reach the
runner through the harness's own log channel (``default_sdk_harness_log_level``, set here, since the FnApiRunner
passes its workers no pipeline options).
"""
from __future__ import annotations

import json
import logging
import os
import sys

WORKER_LOG_LEVEL = "WARNING"


def main(argv: list[str]) -> None:
    terminal = logging.StreamHandler()
    terminal.setLevel(logging.ERROR)
    terminal.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    # a step's failure goes to the runner, where the CLI says it (``cli.step_failure_record``)
    terminal.addFilter(lambda record: not (record.name == "apache_beam.runners.common" and record.exc_info))
    terminal.addFilter(lambda record: not _instruction_failure(record))
    logging.getLogger().addHandler(terminal)  # Python's last-resort handler and basicConfig stay out
    os.environ["PIPELINE_OPTIONS"] = with_store_options(with_log_level(os.environ.get("PIPELINE_OPTIONS")),
                                                        os.environ.get("SEQWATCH_WORKER_STORE_OPTIONS"))
    from apache_beam.runners.worker import sdk_worker, sdk_worker_main

    sdk_worker.print = print_unless_failed_instruction  # the module's own name for print, found before the builtin
    sdk_worker_main.main(argv)
    # The harness has ended (the runner closed its channels): leave without the interpreter's shutdown, during
    # which gRPC's threads, stopped mid-call after a failed job, aborted the process ("FATAL: exception not
    # rethrown", exit 134 or a segmentation fault), and the runner printed that the worker had died.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _instruction_failure(record) -> bool:
    return record.name == "apache_beam.runners.worker.sdk_worker" and \
        str(record.msg).startswith("Error processing instruction")


def print_unless_failed_instruction(*args, **kwargs) -> None:
    """``print``, except the failed instruction's traceback that Beam's ``SdkHarness._execute`` prints to the
    terminal: it also sends it to the runner, where the CLI says it in one sentence or shows it (a run of 8M
    readings or more, with 2 workers, had printed it before the sentence)."""
    if kwargs.get("file") is sys.stderr and len(args) == 1 and isinstance(args[0], str) \
            and args[0].startswith("Traceback (most recent call last)"):
        return
    print(*args, **kwargs)


def with_log_level(options_json: str | None) -> str:
    """The worker's pipeline options (Beam's JSON) with ``default_sdk_harness_log_level`` at WARNING unless they
    set it."""
    options = json.loads(options_json) if options_json else {}
    target = options["options"] if isinstance(options.get("options"), dict) else options
    if not any(key in target for key in ("default_sdk_harness_log_level",
                                         "beam:option:default_sdk_harness_log_level:v1")):
        target["default_sdk_harness_log_level"] = WORKER_LOG_LEVEL
    return json.dumps(options)


def with_store_options(options_json: str, store_json: str | None) -> str:
    """The worker's pipeline options (Beam's JSON) with the run's options of object stores (``--s3_*``, handed over
    by ``local_runner.LocalRunner`` in ``SEQWATCH_WORKER_STORE_OPTIONS``) added where they do not set them."""
    if not store_json:
        return options_json
    options = json.loads(options_json) if options_json else {}
    target = options["options"] if isinstance(options.get("options"), dict) else options
    for name, value in json.loads(store_json).items():
        target.setdefault(name, value)
    return json.dumps(options)


if __name__ == "__main__":
    main(sys.argv)
