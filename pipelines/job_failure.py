"""A job that its runner failed, said once: what failed, in which step, and the step's traceback (a stream's on
any portable runner, and a batch run's on Prism or Flink).

Beam's portable runner (Prism, Flink, Dataflow) ends ``wait_until_finish`` with ``RuntimeError("Pipeline <job>
failed in state FAILED: <message>")``, where the message is the runner's last error report: a failed bundle's
worker traceback, or ``unknown error`` when the runner sent none. Before the job's end reaches the CLI, the same
failure has been reported four more times on a stream's terminal, where the SDK worker runs in seqwatch's own
process (LOOPBACK): the worker prints the traceback and logs it (``Error processing instruction``), Prism logs the
bundle's failure three times and the job's once, and Beam logs the runner's message again. A step that raised in a
5-minute replay had printed 300 lines. ``JobFailure`` is the parsed end; ``echoes_a_failed_bundle`` tells the log
records that repeat it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = ["JobFailure", "job_failure", "echoes_a_failed_bundle"]

_FAILED = re.compile(r"Pipeline (\S+) failed in state (\w+): (.*)\Z", re.S)
_WHILE_RUNNING = re.compile(r" \[while running '([^']*)'\]\s*\Z")
_BUNDLE = re.compile(r"\Abundle \S+ \S+ failed:")  # Prism's prefix of a failed bundle's report
# Flink's (its job server's Java exception, around the SDK worker's report)
_SDK_HARNESS = re.compile(r"\A\S+: Error received from SDK harness for instruction \S+: ")
_TRACEBACK = "Traceback (most recent call last)"
_REDRAISED = "\n\nDuring handling of the above exception, another exception occurred:"
NO_REASON = ("", "unknown error")  # what Beam says when the runner reported no error


@dataclass(frozen=True)
class JobFailure:
    """The end of a job its runner failed or cancelled (``state``), with the runner's last error report."""

    job: str
    state: str
    report: str

    @property
    def traceback(self) -> str | None:
        """The failed step's traceback as the worker sent it, when the report carries one: the exception's own,
        without Beam's re-raise of it (``During handling of the above exception``: some 50 lines of Beam's frames,
        which add the step's name)."""
        text = self.report.strip()
        if _TRACEBACK not in text:
            return None
        return text[text.index(_TRACEBACK):].split(_REDRAISED, 1)[0].rstrip()

    @property
    def step(self) -> str | None:
        """The step that raised (Beam's label, as ``[while running '...']`` names it), when the report says."""
        found = _WHILE_RUNNING.search(self.report)
        return found.group(1) if found else None

    @property
    def error(self) -> str | None:
        """The step's exception, ``ZeroDivisionError: ...`` (the last line of its traceback, without the step)."""
        if self.traceback is None:
            return None
        last = self.traceback.rstrip().splitlines()[-1]
        return _WHILE_RUNNING.sub("", last).strip() or None

    def sentence(self, kept: str, again: str) -> str:
        """What the CLI says of it, in one sentence (a step's traceback, when there is one, follows it): ``kept``
        says what became of the outputs, ``again`` what to do where the runner gave no reason."""
        if self.state != "FAILED":
            return f"the runner ended the job in state {self.state}; {kept}"
        if self.report.strip() in NO_REASON:
            return (f"the runner failed the job without saying why (it reported {self.report.strip() or 'nothing'}; "
                    f"its own log lines above may say more); {kept}; {again}")
        if self.error is not None:
            where = f" in step {self.step}" if self.step else ""
            return f"the job failed{where}: {self.error}; {kept}; the step's traceback, as the runner reported it:"
        first = self.report.strip().splitlines()[0]
        return f"the runner failed the job ({first}); {kept}"


def job_failure(exc: BaseException) -> JobFailure | None:
    """``exc`` parsed when it is Beam's end of a job its runner did not finish (``Pipeline ... failed in state
    ...``); None otherwise."""
    if not isinstance(exc, RuntimeError):
        return None
    found = _FAILED.match(str(exc))
    return JobFailure(*found.groups()) if found else None


# Prism's log lines of a failed bundle (its JSON ``msg``), each a copy of what the job's end reports
_PRISM_BUNDLE_LINES = {"Prism received bundle error from worker response", "stage.Execute aborting due to bundle error",
                       "Bundle Failed."}


def echoes_a_failed_bundle(record) -> bool:
    """Whether a log record repeats a failed bundle's report, which the job's end says (``JobFailure``): the SDK
    worker's ``Error processing instruction`` (with the traceback), Prism's lines of the bundle and of the job it
    failed for it, and Beam's relay of the runner's error message (Prism's, or Flink's ``Error received from SDK
    harness``). Prism's line of a job it failed for any other reason stays: it may be the only place that reason is
    said."""
    if record.name == "apache_beam.runners.worker.sdk_worker":  # its traceback is an argument of the message
        return str(record.msg).startswith("Error processing instruction")
    message = record.getMessage()
    if record.name == "PrismRunner":  # a JSON line as seqwatch relays it, or ``msg (key=value, ...)`` as Beam does
        try:
            line = json.loads(message)
        except ValueError:
            line = {"msg": message.split(" (", 1)[0],
                    "error": message.split("\nerror:\n", 1)[1] if "\nerror:\n" in message else ""}
        if not isinstance(line, dict):
            return False
        return line.get("msg") in _PRISM_BUNDLE_LINES or (line.get("msg") == "job failed"
                                                           and bool(_BUNDLE.match(str(line.get("error", "")))))
    return record.name == "root" and bool(_BUNDLE.match(message) or _SDK_HARNESS.match(message))
