"""A stream's job that its runner failed is said once (``seqwatch.pipelines.job_failure``): a step that raised is
one sentence with the step's own traceback, a full disk one sentence, a job failed without a reason one sentence.
A step that raised in a stream on Prism had printed some 300 lines, its traceback five times (the SDK worker runs
in seqwatch's process, and the worker, Prism and Beam each reported it)."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.job_failure import (PRISM_STUCK, _BundleEchoes, echoes_a_failed_bundle, job_failure,
                                            prisms_stuck_check_once)

STEP = "WindowReadings/KeyByPane/ParDo(_KeyByPane)"
KEPT, AGAIN = "what was written so far stays in out", "start the stream again to go on from there"  # a stream's
# Beam 2.77's end of a job Prism failed for a step that raised (its frames shortened to one each)
OWN = ('Traceback (most recent call last):\n  File "apache_beam/runners/common.py", line 1512, in '
       'apache_beam.runners.common.DoFnRunner.process\n  File "job.py", line 6, in process\n'
       '    raise ZeroDivisionError("injected")\nZeroDivisionError: injected')
REPORT = (f"bundle inst003 stage-003 failed:{OWN}\n\nDuring handling of the above exception, another exception "
          f"occurred:\n\nTraceback (most recent call last):\n  File \"sdk_worker.py\", line 310, in _execute\n"
          f"ZeroDivisionError: injected [while running '{STEP}']\n")


def test_a_failed_steps_report_gives_its_step_its_error_and_its_own_traceback():
    failure = job_failure(RuntimeError(f"Pipeline job-001 failed in state FAILED: {REPORT}"))
    assert (failure.job, failure.state) == ("job-001", "FAILED")
    assert failure.step == STEP
    assert failure.error == "ZeroDivisionError: injected"
    assert failure.traceback == OWN  # Beam's re-raise of it, some 50 lines of its own frames, left out
    assert failure.sentence(KEPT, AGAIN) == (f"the job failed in step {STEP}: ZeroDivisionError: injected; what "
                                             f"was written so far stays in out; the step's traceback, as the runner "
                                             f"reported it:")


def test_flinks_report_of_a_failed_step_gives_the_same():
    """Flink's job server wraps the worker's report in its Java exception."""
    report = f"java.lang.RuntimeException: Error received from SDK harness for instruction 8: {REPORT}"
    failure = job_failure(RuntimeError(f"Pipeline job_5 failed in state FAILED: {report}"))
    assert (failure.step, failure.error, failure.traceback) == (STEP, "ZeroDivisionError: injected", OWN)
    assert echoes_a_failed_bundle(_record("root", report))


def test_the_sdk_workers_streams_broken_by_the_runner_are_not_shown():
    """After a failed job the runner breaks the SDK worker's streams, whose threads printed a traceback each before
    the job's end was said (a stream whose step raised, on Flink two runs in three, on Prism one in twelve)."""
    from seqwatch.pipelines.runners import sdk_stream_broken_by_the_runner

    class _Rendezvous(Exception):
        def __init__(self, status):
            super().__init__(status)
            self.status = status

        def code(self):
            return type("Status", (), {"name": self.status})()

    _Rendezvous.__module__ = "grpc._channel"
    assert sdk_stream_broken_by_the_runner("run_worker_1-1", _Rendezvous("CANCELLED"))  # Flink's close
    assert sdk_stream_broken_by_the_runner("read_grpc_client_inputs", _Rendezvous("UNKNOWN"))  # Prism's "worker_id
    # ... not registered in worker pool", one run in twelve
    assert not sdk_stream_broken_by_the_runner("another_thread", _Rendezvous("CANCELLED"))
    assert not sdk_stream_broken_by_the_runner("run_worker_1-1", RuntimeError("CANCELLED"))


def test_a_job_ended_without_a_reason_or_cancelled_is_one_sentence():
    # Prism 2.77 fails a job it finds stuck, and its message of it had not reached the SDK (CI, 2026-12-05)
    unknown = job_failure(RuntimeError("Pipeline job-004 failed in state FAILED: unknown error"))
    assert unknown.traceback is None and unknown.step is None and unknown.error is None
    assert unknown.sentence(KEPT, AGAIN) == (
        "the runner failed the job without saying why (it reported unknown error; its own log lines above may say "
        "more); what was written so far stays in out; start the stream again to go on from there")
    cancelled = job_failure(RuntimeError("Pipeline job-002 failed in state CANCELLED: unknown error"))
    assert cancelled.sentence(KEPT, AGAIN) == ("the runner ended the job in state CANCELLED; what was written so "
                                               "far stays in out")
    other = job_failure(RuntimeError("Pipeline job-003 failed in state FAILED: worker lost\nmore"))
    assert other.sentence(KEPT, AGAIN) == ("the runner failed the job (worker lost); what was written so far stays "
                                           "in out; start the stream again to go on from there")
    for not_a_job_end in (RuntimeError("failed in state FAILED: x"), ValueError("Pipeline j failed in state FAILED: "
                                                                                "x")):
        assert job_failure(not_a_job_end) is None


# Prism 2.77's stuck-job check's message (its state of the stages cut to two)
STUCK = (f"{PRISM_STUCK}: 1\nElementManager Now: 1796503223787 processingTimeEvents: map[] injectedBundles: []\n"
         f"stage-000 watermark in 1767571270000 out 1767571270000 pending [] byKey map[]\n"
         f"stage-001 watermark in 1767571270000 out 1767571270000 pending [] byKey map[]\n")


def test_a_job_prisms_stuck_check_failed_as_its_step_raised_is_said_with_the_steps_traceback():
    """Prism 2.77 at times fails the job with its stuck-job check as a bundle fails (one stream in 12 to 60 whose
    step raised): the job's end then carried that check's message only, and the step's traceback was nowhere, as
    its echoes are kept off the terminal. The terminal's filter keeps the first report among them, the SDK
    worker's (in seqwatch's process on LOOPBACK) or Beam's relay of the runner's, and the job's end falls back on
    it."""
    echoes = _BundleEchoes()
    traceback = REPORT.split("failed:", 1)[1]
    worker = _record("apache_beam.runners.worker.sdk_worker", "Error processing instruction %s. Original traceback "
                     "is\n%s\n", "inst005", traceback)
    assert echoes.filter(_record("root", "something else failed")) and echoes.first_report is None
    assert not echoes.filter(worker) and echoes.first_report == traceback
    assert not echoes.filter(_record("PrismRunner", '{"level":"ERROR","msg":"Bundle Failed."}'))  # no report in it
    # the worker's own failure as the runner tears the job down (seen once in 120 streams by hand): not the step's
    teardown = ("Traceback (most recent call last):\n  File \"sdk_worker.py\", line 596, in release\n"
                "KeyError: 'inst017'")
    assert not echoes.filter(_record("apache_beam.runners.worker.sdk_worker", "Error processing instruction %s. "
                                     "Original traceback is\n%s\n", "inst017", teardown))
    assert echoes.first_report == traceback
    stuck = job_failure(RuntimeError(f"Pipeline job-001 failed in state FAILED: {STUCK}"))
    assert stuck.sentence(KEPT, AGAIN) == (f"the runner failed the job ({PRISM_STUCK}: 1); what was written so far "
                                           f"stays in out; start the stream again to go on from there")
    said = stuck.with_bundle_report(echoes.first_report)
    assert (said.step, said.error, said.traceback) == (STEP, "ZeroDivisionError: injected", OWN)
    assert said.sentence(KEPT, AGAIN).startswith(f"the job failed in step {STEP}: ZeroDivisionError: injected; ")
    relayed = _BundleEchoes()  # Beam's relay of Prism's report
    assert not relayed.filter(_record("root", REPORT)) and relayed.first_report == REPORT
    assert stuck.with_bundle_report(REPORT).traceback == OWN
    # the runner's own report of a step stays; a job cancelled, a report without a traceback, none: as they were
    own = job_failure(RuntimeError(f"Pipeline job-001 failed in state FAILED: {REPORT}"))
    other = REPORT.replace("injected", "another")
    assert own.with_bundle_report(other) is own
    cancelled = job_failure(RuntimeError("Pipeline job-002 failed in state CANCELLED: unknown error"))
    assert cancelled.with_bundle_report(REPORT) is cancelled
    assert stuck.with_bundle_report(None) is stuck and stuck.with_bundle_report("bundle x y failed: lost") is stuck


def test_prisms_stuck_check_is_one_line_on_the_terminal():
    """Prism's line of it had 12,000 characters and Beam's relay of it some 60 lines: its state of every stage."""
    prisms = _record("PrismRunner", "%s", json.dumps({"level": "ERROR", "msg": "job failed",
                                                      "job": {"key": "job-001"}, "error": STUCK}))
    assert prisms_stuck_check_once(prisms)
    assert json.loads(prisms.getMessage().removesuffix(" (Prism's state of its stages left out)")) == {
        "level": "ERROR", "msg": "job failed", "job": {"key": "job-001"}, "error": f"{PRISM_STUCK}: 1"}
    relayed_by_beam = _record("PrismRunner", f"job failed (job={{'key': 'job-001'}}, \nerror:\n{STUCK})")
    assert prisms_stuck_check_once(relayed_by_beam)  # where Beam started Prism itself
    assert relayed_by_beam.getMessage() == (f"job failed (job={{'key': 'job-001'}}, \nerror:\n{PRISM_STUCK}: 1 "
                                            f"(Prism's state of its stages left out)")
    assert not prisms_stuck_check_once(_record("root", "%s", STUCK))  # Beam's relay of the message: Prism's says it
    for other in (_record("root", "something else failed"), _record("PrismRunner", '{"msg": "job failed", "error": '
                                                                                   '"worker lost\\nmore"}')):
        message = other.getMessage()
        assert prisms_stuck_check_once(other) and other.getMessage() == message


def _record(name: str, message: str, *args) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, "x.py", 1, message, args, None)


def test_only_the_echoes_of_a_failed_bundle_are_kept_off_the_terminal():
    bundle = '"error":"bundle inst003 stage-003 failed:Traceback (most recent call last):\\n..."'
    echoes = [_record("apache_beam.runners.worker.sdk_worker", "Error processing instruction %s. Original traceback "
                      "is\n%s\n", "inst003", OWN),
              _record("PrismRunner", '{"level":"ERROR","msg":"Prism received bundle error from worker response"}'),
              _record("PrismRunner", '{"level":"ERROR","msg":"stage.Execute aborting due to bundle error"}'),
              _record("PrismRunner", '{"level":"ERROR","msg":"Bundle Failed.",' + bundle + '}'),
              _record("PrismRunner", '{"level":"ERROR","msg":"job failed","job":{"key":"job-001"},' + bundle + '}'),
              # as Beam relays them where it started Prism itself (a batch run on Prism)
              _record("PrismRunner", "Prism received bundle error from worker response (bundle='inst004')"),
              _record("PrismRunner", f"Bundle Failed. (\nerror:\n{REPORT})"),
              _record("PrismRunner", f"job failed (job={{'key': 'job-001', 'name': 'job'}}, \nerror:\n{REPORT})"),
              _record("root", REPORT)]
    kept = [_record("PrismRunner", '{"level":"ERROR","msg":"job failed","error":"nothing in progress and no '
                                   'refreshes with non zero pending elements"}'),  # Prism's only word on why
            _record("PrismRunner", "not a JSON line"),
            _record("PrismRunner", "job failed (job={'key': 'job-001'}, \nerror:\nnothing in progress)"),
            _record("root", "something else failed"),
            _record("apache_beam.runners.worker.sdk_worker", "Something else")]
    assert [echoes_a_failed_bundle(r) for r in echoes] == [True] * len(echoes)
    assert [echoes_a_failed_bundle(r) for r in kept] == [False] * len(kept)


@pytest.mark.parametrize("fault, runner", [("a bug", "prism"), ("a full disk", "prism"), ("a bug", "flink"),
                                           ("a bug", "prism, a batch run")])
def test_a_step_that_fails_in_a_stream_is_said_once(fault, runner, small_model_dir, request, tmp_path):
    """On Prism and on Flink (whose job server wraps the report in a Java exception, and closes the SDK worker's
    streams: their threads had printed two gRPC tracebacks more in two runs of three)."""
    readings, _ = generate_sensor_data(n_entities=2, n_steps=300, step_seconds=10, seed=5)
    path = tmp_path / "readings.csv"
    readings.to_csv(path, index=False)
    out = tmp_path / "out"
    runner_args = (request.getfixturevalue("flink_args")(own_job_server=True) if runner == "flink" else
                   ["--runner=PrismRunner", f"--prism_location={request.getfixturevalue('prism_location')}"])
    command = (["stream", "--source", "replay", "--speed", "1000"] if "batch" not in runner else ["run"])
    raised = {"a bug": 'ZeroDivisionError("injected into a step")',
              "a full disk": 'OSError(errno.ENOSPC, "No space left on device")'}[fault]
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import errno
        import sys

        from seqwatch.pipelines.cli import _quiet_logs, main

        _quiet_logs()  # as seqwatch has it before Beam is imported
        from seqwatch.pipelines import windows

        def process(self, *args, **kwargs):
            raise {raised}

        windows._KeyByPane.process = process
        sys.exit(main([*{command!r}, "--input", {str(path)!r}, "--model-dir", {str(small_model_dir)!r}, "--output",
                       {str(out)!r}, *{runner_args!r}]))
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    # Prism 2.77 at times fails the job with its own stuck-job check as the bundle fails (one run in 12 to 60): Prism's
    # one line of it stays, and the job's end is said with the failed bundle's report (with_bundle_report)
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("ERROR:PrismRunner:")]
    if "batch" in runner:  # a batch run says nothing before it is done
        lines.insert(0, "(a batch run)")
        assert result.returncode == 1, result.stderr[-3000:]
        assert lines[1] == (f"seqwatch run: the job failed in step {STEP}: ZeroDivisionError: injected into a step; "
                            f"nothing was committed: the previous outputs are as they were; the step's traceback, as "
                            f"the runner reported it:")
        assert result.stderr.count("Traceback") == 1 and len(lines) < 15, result.stderr[-5000:]
        return
    assert lines[0].startswith("seqwatch stream: replay:"), result.stderr[-3000:]
    if fault == "a full disk":  # as a batch run says it
        assert result.returncode == 2, result.stderr[-3000:]
        assert lines[1:] == [f"seqwatch stream: could not write the outputs under {out} ([Errno 28] No space left "
                             f"on device); what was written before stays there"], result.stderr[-5000:]
        return
    assert result.returncode == 1, result.stderr[-3000:]
    assert lines[1] == (f"seqwatch stream: the job failed in step {STEP}: ZeroDivisionError: injected into a step; "
                        f"what was written so far stays in {out}; the step's traceback, as the runner reported it:"), \
        result.stderr[-5000:]
    assert lines[2] == "Traceback (most recent call last):" and lines[-1] == "ZeroDivisionError: injected into a step"
    assert 'raise ZeroDivisionError("injected into a step")' in [line.strip() for line in lines]
    assert result.stderr.count("Traceback") == 1 and len(lines) < 15, result.stderr[-5000:]
