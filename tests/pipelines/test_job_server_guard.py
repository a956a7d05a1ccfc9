"""``seqwatch.pipelines.job_server_guard``: a stream's job server ends with the seqwatch that started it, however
seqwatch ends. Each test runs the guard as ``runners`` starts it, around a small Python child that says its pid."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

# a job server stand-in: says its pid, then waits; with IGNORE_SIGINT it takes no notice of SIGINT
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    if sys.argv[1] == "IGNORE_SIGINT":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(os.getpid(), flush=True)
    time.sleep(float(sys.argv[2]))
""")


def _guarded(*child_args, wait_s=1.0):
    guard = subprocess.Popen([sys.executable, "-m", "seqwatch.pipelines.job_server_guard", "--wait", str(wait_s),
                              "--", sys.executable, "-c", CHILD, *child_args],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, text=True)
    return guard, int(guard.stdout.readline())


def _gone_within(pid, seconds, processes) -> float:
    started = time.monotonic()
    while processes.alive(pid):
        assert time.monotonic() - started < seconds, f"process {pid} still runs after {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.parametrize("how", ["end of input", "SIGTERM"])
def test_the_job_server_is_stopped_with_sigint_when_the_guards_input_ends_or_it_is_told_to(how, processes):
    guard, child = _guarded("EXIT_ON_SIGINT", "60")
    try:
        guard.stdin.close() if how == "end of input" else guard.send_signal(signal.SIGTERM)
        assert guard.wait(timeout=10) == 130  # the child's end by SIGINT, as a shell reports it
        assert _gone_within(child, 1, processes) < 1
    finally:
        processes.kill([guard.pid, child])


def test_a_job_server_that_takes_no_notice_of_sigint_is_killed_after_the_wait(processes):
    guard, child = _guarded("IGNORE_SIGINT", "60", wait_s=1.0)
    try:
        started = time.monotonic()
        guard.stdin.close()
        assert guard.wait(timeout=10) == 128 + signal.SIGKILL
        assert 0.9 < time.monotonic() - started < 5
        assert not processes.alive(child)
    finally:
        processes.kill([guard.pid, child])


def test_the_job_server_ends_with_a_seqwatch_that_was_killed(tmp_path, processes):
    """seqwatch SIGKILLed (the OOM killer, `kill -9`): its end of the guard's input is closed by the operating
    system, and the job server is stopped at once. (Prism, on its own, ended a minute after its job failed; Flink's
    job server never did.)"""
    owner_script = tmp_path / "owner.py"
    owner_script.write_text(textwrap.dedent(f"""
        import subprocess, sys, time
        guard = subprocess.Popen([sys.executable, "-m", "seqwatch.pipelines.job_server_guard", "--",
                                  sys.executable, "-c", {CHILD!r}, "EXIT_ON_SIGINT", "60"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, text=True)
        print(guard.pid, guard.stdout.readline().strip(), flush=True)
        time.sleep(60)
    """))
    owner = subprocess.Popen([sys.executable, str(owner_script)], stdout=subprocess.PIPE, text=True)
    guard, child = map(int, owner.stdout.readline().split())
    try:
        assert processes.alive(child) and os.getpgid(child) == guard != os.getpgid(owner.pid)
        owner.kill()
        owner.wait()
        assert _gone_within(child, 5, processes) < 5
        assert _gone_within(guard, 5, processes) < 5
    finally:
        processes.kill([owner.pid, guard, child])


def test_a_job_server_that_ends_by_itself_ends_its_guard_with_its_status(processes):
    guard = subprocess.Popen([sys.executable, "-m", "seqwatch.pipelines.job_server_guard", "--",
                              sys.executable, "-c", "import sys; sys.exit(7)"], stdin=subprocess.PIPE)
    try:
        assert guard.wait(timeout=10) == 7
    finally:
        processes.kill([guard.pid])


def test_a_guard_without_a_command_says_how_it_is_used():
    done = subprocess.run([sys.executable, "-m", "seqwatch.pipelines.job_server_guard", "--"], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and done.stderr.startswith("usage: python -m seqwatch.pipelines.job_server_guard")
