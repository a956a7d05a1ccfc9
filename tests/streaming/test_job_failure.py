"""A stream's job that its runner failed is said once (``seqwatch.pipelines.job_failure``): a step that raised is
one sentence with the step's own traceback, a full disk one sentence, a job failed without a reason one sentence.
A step that raised in a stream on Prism had printed some 300 lines, its traceback five times (the SDK worker runs
in seqwatch's process, and the worker, Prism and Beam each reported it)."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.job_failure import echoes_a_failed_bundle, job_failure

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
                                           "in out")
    for not_a_job_end in (RuntimeError("failed in state FAILED: x"), ValueError("Pipeline j failed in state FAILED: "
                                                                                "x")):
        assert job_failure(not_a_job_end) is None


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
    # Prism 2.77 at times fails the job with its own stuck-job check as well, as the bundle fails (one run in twelve):
    # its one line stays, as where it is the only reason given it is the one said
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
