"""Ctrl-C is how a person stops `seqwatch stream` (and a batch run they started by mistake): one sentence and
exit code 130, not the traceback Beam re-raises from whichever step was running, nor the gRPC tracebacks of the
threads that talked to the runner the same Ctrl-C stopped."""
import os
import signal
import subprocess
import sys
import time

import pyarrow.dataset as ds
import pytest

from seqwatch.models.synthetic import generate_sensor_data


def _replay_stream(tmp_path, model_dir, steps: int, speed: float, *flags) -> tuple:
    """``(command, output folder, log path)`` of a `seqwatch stream` replaying ``steps`` readings of one pump at
    ``speed`` times real time (windows of the small model, panes of 16 steps), with ``flags`` added."""
    readings, _ = generate_sensor_data(n_entities=1, n_steps=steps, seed=4)
    path = tmp_path / "readings.csv"
    readings.to_csv(path, index=False)
    out, log_path = tmp_path / "out", tmp_path / "stream.log"
    command = [sys.executable, "-m", "seqwatch.pipelines.cli", "stream", "--source", "replay", "--input", str(path),
               "--speed", f"{speed:g}", "--model-dir", str(model_dir), "--output", str(out), "--pane-steps", "16",
               *flags]
    return command, out, log_path


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["prism", "direct"])
def test_ctrl_c_stops_a_stream_with_one_sentence(runner, small_model_dir, tmp_path, request):
    # Prism is what `seqwatch stream` runs on when no --runner is given: the checkout's `make prism` binary.
    runner_args = ["--runner=DirectRunner"] if runner == "direct" else []
    if runner == "prism":
        request.getfixturevalue("prism_location")  # skips when `make prism` has not built it
    # 200 s of replay: 8.3 hours of readings
    command, out, log_path = _replay_stream(tmp_path, small_model_dir, 3000, 150, *runner_args)
    with open(log_path, "w") as log:
        # As from a terminal: tests started in the background (`make test &`, some CI shells) have SIGINT ignored,
        # a child inherits that, and Python leaves it ignored, so the Ctrl-C would never arrive. A handled signal
        # is reset to the default in the child. Its own session: the Ctrl-C goes to its process group, Prism too.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True,
                                       start_new_session=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        try:
            deadline = time.monotonic() + 120
            while "seqwatch stream: replay:" not in log_path.read_text() and time.monotonic() < deadline:
                assert process.poll() is None, log_path.read_text()[-2000:]
                time.sleep(0.2)
            # The pipeline is running: readings are being replayed (on Prism, and panes scored: let some be).
            deadline = time.monotonic() + (60 if runner == "prism" else 8)
            while runner == "prism" and not list(out.glob("scores/*/*.parquet")) and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(2 if runner == "prism" else 8)
            assert process.poll() is None, log_path.read_text()[-2000:]
            os.killpg(process.pid, signal.SIGINT)
            returncode = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    text = log_path.read_text()
    assert returncode == 130, text[-2000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    lines = text.splitlines()
    assert lines[0].startswith("seqwatch stream: replay:"), text[-3000:]
    # On the DirectRunner a notice says that a stream runs as one batch there (where Beam cannot hand it to Prism).
    assert lines[1:-1] == (["seqwatch stream: the DirectRunner runs a stream as one batch where it cannot hand it to "
                            "Prism: then its outputs are written when the source ends (leave out --runner to stream "
                            "on Prism)"] if runner == "direct" else []), text[-3000:]
    assert lines[-1] == f"seqwatch stream: stopped by an interrupt (Ctrl-C); what was written so far stays in {out}"
    if runner == "prism":  # a real stream: what it scored before the Ctrl-C is there, and readable
        scored = ds.dataset(out / "scores", format="parquet").to_table()
        assert 0 < scored.num_rows


def _children(pid: int) -> dict:
    """``{pid: command name}`` of the processes whose parent is ``pid``."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if int(rest[1]) == pid:
                found[int(entry)] = name
    return found


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_a_sigterm_to_the_stream_process_alone_stops_its_prism_too(small_model_dir, tmp_path, prism_location):
    """Bug hunt of broker sources: a SIGTERM to seqwatch's own process (systemd's KillMode=process, a container's
    init, `kill PID`) ended the stream with its one sentence, exit 143, but left Prism running, reparented to
    init: one leaked Prism per restart (a Prism that logs dies of the broken pipe; a quiet one, as under a
    Kafka stream waiting for messages, stays). Its exit skips Beam's atexit cleanup, so seqwatch stops Prism
    itself before it exits."""
    command, out, log_path = _replay_stream(tmp_path, small_model_dir, 3000, 150,
                                            f"--prism_location={prism_location}")
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not list(out.glob("scores/*/*.parquet")) and time.monotonic() < deadline:
                assert process.poll() is None, log_path.read_text()[-2000:]
                time.sleep(0.5)
            prism = [pid for pid, name in _children(process.pid).items() if name.startswith("prism")]
            assert prism, (_children(process.pid), log_path.read_text()[-2000:])
            process.send_signal(signal.SIGTERM)  # to seqwatch alone, not its process group
            returncode = process.wait(timeout=120)
            left = [pid for pid in prism if _alive(pid)]  # stopped before seqwatch exits, not when it next logs
        finally:
            os.killpg(process.pid, signal.SIGKILL) if process.poll() is None else None
            for pid in prism if "prism" in locals() else []:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
    text = log_path.read_text()
    assert returncode == 143, text[-2000:]
    assert text.splitlines()[-1] == f"seqwatch stream: stopped by SIGTERM; what was written so far stays in {out}"
    assert left == [], f"Prism processes {left} outlived the stream"


@pytest.mark.slow
def test_a_ctrl_c_while_a_finished_stream_stops_prism_ends_it_all_the_same(small_model_dir, tmp_path, prism_location):
    """Bug hunt of streams (2026-12-03): a stream started as a script's background job (SIGINT ignored) got a SIGINT
    while Beam stopped Prism at the interpreter's exit, holding a lock; Beam's SIGINT handler, put in place for
    the job server whatever the job ignored, waited for that lock: the process never ended, and Prism stayed. Now
    seqwatch stops the job server itself before it returns, with the signal ignored meanwhile."""
    command, out, log_path = _replay_stream(tmp_path, small_model_dir, 600, 100000,
                                            f"--prism_location={prism_location}")
    with open(log_path, "w") as log:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a script's background job
        try:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True,
                                       start_new_session=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        prism = []
        try:
            deadline = time.monotonic() + 180
            while "the source ended" not in log_path.read_text() and time.monotonic() < deadline:
                assert process.poll() is None, log_path.read_text()[-2000:]
                prism = prism or [pid for pid, name in _children(process.pid).items() if name.startswith("prism")]
                time.sleep(0.05)
            assert prism, log_path.read_text()[-2000:]
            time.sleep(0.3)
            process.send_signal(signal.SIGINT)  # while the job server is being stopped
            returncode = process.wait(timeout=60)
            left = [pid for pid in prism if _alive(pid)]
        finally:
            os.killpg(process.pid, signal.SIGKILL) if process.poll() is None else None
            for pid in prism:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
    text = log_path.read_text()
    assert returncode == 0, text[-2000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert left == [], f"Prism processes {left} outlived the stream"
