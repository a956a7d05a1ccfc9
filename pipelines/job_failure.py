"""A job that its runner failed, said once: what failed, in which step, and the step's traceback (a stream's on
any portable runner, and a batch run's on Prism or Flink).

Beam's portable runner (Prism, Flink, Dataflow) ends ``wait_until_finish`` with ``RuntimeError("Pipeline <job>
failed in state FAILED: <message>")``, where the message is the runner's last error report: a failed bundle's
worker traceback, or ``unknown error`` when the runner sent none. Before the job's end reaches the CLI, the same
failure has been reported four more times on a stream's terminal, where the SDK worker runs in seqwatch's own
process (LOOPBACK): the worker prints the traceback and logs it (``Error processing instruction``), Prism logs the
bundle's failure three times and the job's once, and Beam logs the runner's message again. A step that raised in a
5-minute replay had printed 300 lines. ``JobFailure`` is the parsed end; ``echoes_a_failed_bundle`` tells the log
records that repeat it, and ``BUNDLE_ECHOES``, the filter that keeps them off the terminal, keeps the first failed
bundle's report among them: Prism 2.77 at times fails the job with its own stuck-job check as a bundle fails, and the
job's end then carries that check's message, not the step's (``JobFailure.with_bundle_report``).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace

__all__ = ["JobFailure", "job_failure", "echoes_a_failed_bundle", "bundle_report", "BUNDLE_ECHOES",
           "prisms_stuck_check_once"]

_FAILED = re.compile(r"Pipeline (\S+) failed in state (\w+): (.*)\Z", re.S)
_WHILE_RUNNING = re.compile(r" \[while running '([^']*)'\]\s*\Z")
_BUNDLE = re.compile(r"\Abundle \S+ \S+ failed:")  # Prism's prefix of a failed bundle's report
# Flink's (its job server's Java exception, around the SDK worker's report)
_SDK_HARNESS = re.compile(r"\A\S+: Error received from SDK harness for instruction \S+: ")
_TRACEBACK = "Traceback (most recent call last)"
_REDRAISED = "\n\nDuring handling of the above exception, another exception occurred:"
NO_REASON = ("", "unknown error")  # what Beam says when the runner reported no error
# Prism 2.77's message when its stuck-job check fails a job: this line, then its state of every stage (some 60 lines)
PRISM_STUCK = "nothing in progress and no refreshes with non zero pending elements"
_PRISM_STATE = "\nElementManager Now:"


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
        return f"the runner failed the job ({first}); {kept}; {again}"

    def with_bundle_report(self, report: str | None) -> JobFailure:
        """This failure with ``report``, a failed bundle's (``bundle_report``), where the runner's own report carries
        no traceback: Prism 2.77 at times fails a job with its stuck-job check as a bundle fails (one stream in 12
        to 60 whose step raised), and the job's end then says that check's message; the step and its traceback
        were lost (the echoes that carried them are kept off the terminal)."""
        if self.state != "FAILED" or self.traceback is not None or report is None or _TRACEBACK not in report:
            return self
        return replace(self, report=report)


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


def bundle_report(record) -> str | None:
    """The failed bundle's report that a log record carries, as the runner has it: the SDK worker's traceback, which
    it logs (``Error processing instruction``) and sends the runner, or Beam's relay of the runner's report (Prism's
    ``bundle ... failed:``, Flink's ``Error received from SDK harness``); None for any other record."""
    if record.name == "apache_beam.runners.worker.sdk_worker" and str(record.msg).startswith("Error processing "
                                                                                              "instruction"):
        return str(record.args[-1]) if isinstance(record.args, tuple) and record.args else None
    if record.name == "root":
        message = record.getMessage()
        return message if _BUNDLE.match(message) or _SDK_HARNESS.match(message) else None
    return None


class _BundleEchoes(logging.Filter):
    """The terminal's filter of the echoes of a failed bundle (``echoes_a_failed_bundle``), which keeps the first
    report among them (``first_report``) for the job's end to fall back on (``JobFailure.with_bundle_report``): the
    step's. Later ones can be the SDK worker's own, as the runner tears the job down (``KeyError: 'inst017'`` of
    its bundle processors, once in 120 streams by hand)."""

    def __init__(self):
        super().__init__()
        self.first_report: str | None = None

    def filter(self, record) -> bool:
        if not echoes_a_failed_bundle(record):
            return True
        self.first_report = self.first_report or bundle_report(record)
        return False


BUNDLE_ECHOES = _BundleEchoes()


def prisms_stuck_check_once(record) -> bool:
    """A log filter that has Prism's stuck-job check said once, in a line: Prism's own log line of it (a JSON line of
    12,000 characters) without its state of every stage, and not Beam's relay of its message (some 60 lines), which
    reaches the SDK only at times (at others, "invalid UTF-8"). The job's end says the check's line too, where no
    failed bundle's report takes its place. False for the relay; the line is cut in place."""
    if record.name not in ("PrismRunner", "root") or PRISM_STUCK not in str(record.args or record.msg):
        return True
    message = record.getMessage()
    if record.name == "root":
        return not message.startswith(PRISM_STUCK)
    try:
        line = json.loads(message)
    except ValueError:  # as Beam relays Prism's lines where it started Prism itself: ``msg (key=value, ...)``
        cut = message.split(_PRISM_STATE, 1)[0]
    else:
        if not isinstance(line, dict) or not isinstance(line.get("error"), str):
            return True
        cut = json.dumps({**line, "error": line["error"].split(_PRISM_STATE, 1)[0]})
    if cut != message:
        record.msg, record.args = "%s", (f"{cut} (Prism's state of its stages left out)",)
    return True
