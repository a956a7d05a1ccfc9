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
    logging.getLogger().addHandler(terminal)  # Python's last-resort handler and basicConfig stay out
    os.environ["PIPELINE_OPTIONS"] = with_log_level(os.environ.get("PIPELINE_OPTIONS"))
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(argv)


def with_log_level(options_json: str | None) -> str:
    """The worker's pipeline options (Beam's JSON) with ``default_sdk_harness_log_level`` at WARNING unless they
    set it."""
    options = json.loads(options_json) if options_json else {}
    target = options["options"] if isinstance(options.get("options"), dict) else options
    if not any(key in target for key in ("default_sdk_harness_log_level",
                                         "beam:option:default_sdk_harness_log_level:v1")):
        target["default_sdk_harness_log_level"] = WORKER_LOG_LEVEL
    return json.dumps(options)


if __name__ == "__main__":
    main(sys.argv)
