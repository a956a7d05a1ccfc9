"""Keep a stream's job server (Prism, Flink's job server) no longer than the seqwatch that started it.

``python -m seqwatch.pipelines.job_server_guard [--wait S] -- COMMAND...`` runs COMMAND and stops it (SIGINT, as a
terminal stops it, then SIGKILL after ``S`` seconds) when its standard input ends: seqwatch keeps the other end of
that pipe open while its stream runs, and the operating system closes it however seqwatch ends, by SIGKILL too. A
SIGTERM or SIGINT to the guard stops COMMAND the same way; COMMAND ending by itself ends the guard with its exit
status. seqwatch starts the guard in a session of its own (``runners.job_server_of_its_own``), so that a terminal's
Ctrl-C, which goes to seqwatch's process group, leaves the job server running for the stream's graceful stop; a job
server there has no seqwatch signal to end it, and Flink's has no idle shutdown of its own (Prism's takes a minute).

Standard library only: it starts in a few tens of milliseconds, and its output is COMMAND's."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

DEFAULT_WAIT_S = 5.0


def main(argv: list[str] | None = None) -> int:
    wait_s, command = _parse(list(sys.argv[1:] if argv is None else argv))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    except OSError as exc:  # no such program (Java not installed), not executable
        print(f"cannot start {command[0]}: {exc.strerror}", flush=True)
        return 127
    threading.Thread(target=_until_end_of_input, args=(stop,), daemon=True, name="guard-input").start()
    while not stop.wait(0.2):
        if child.poll() is not None:
            return _exit_status(child.returncode)
    return _exit_status(stop_child(child, wait_s))


def stop_child(child: subprocess.Popen, wait_s: float) -> int:
    """Stop ``child`` with SIGINT, and SIGKILL after ``wait_s`` seconds; its return code."""
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            child.kill()
    return child.wait()


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # a signal's end as a shell reports it


def _until_end_of_input(stop: threading.Event) -> None:
    try:  # os.read, not sys.stdin: a daemon thread in a buffered read aborts the interpreter's exit
        while os.read(0, 4096):  # seqwatch writes nothing: only the end matters
            pass
    except OSError:  # no standard input at all
        pass
    finally:
        stop.set()


def _parse(argv: list[str]) -> tuple[float, list[str]]:
    wait_s = DEFAULT_WAIT_S
    if argv[:1] == ["--wait"] and len(argv) > 1:
        wait_s, argv = float(argv[1]), argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise SystemExit("usage: python -m seqwatch.pipelines.job_server_guard [--wait S] -- COMMAND...")
    return wait_s, argv


if __name__ == "__main__":
    sys.exit(main())
