"""Ctrl-C is how a person stops `seqwatch stream` (and a batch run they started by mistake), SIGTERM how a
scheduler does. A stream's first one stops it gracefully: it reads no more, writes what it read, and exits 0. A
second one (a batch run's first) stops at once: one sentence and exit code 130 (143), not the traceback Beam
re-raises from whichever step was running, nor the gRPC tracebacks of the threads that talked to the runner."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow.dataset as ds
import pytest

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.stop_request import STOP_FILE


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


def _start_as_from_a_terminal(command: list, log) -> subprocess.Popen:
    """``command`` in a session of its own, with SIGINT as a terminal leaves it: tests started in the background
    (`make test &`, some CI shells) have SIGINT ignored, a child inherits that, and Python leaves it ignored, so
    the Ctrl-C would never arrive (a handled signal is reset to the default in the child). A Ctrl-C is then
    ``os.killpg(process.pid, SIGINT)``: to the whole process group, as a terminal sends it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_for(process, log_path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log_path.read_text() and time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()[-2000:]
        time.sleep(0.05)
    assert text in log_path.read_text(), log_path.read_text()[-2000:]


def _wait_for_scores(runner: str, process, out, log_path) -> None:
    """Until the stream runs and (on Prism) has written scores; the DirectRunner writes nothing before its end."""
    _wait_for(process, log_path, "seqwatch stream: replay:", 120)
    deadline = time.monotonic() + (60 if runner == "prism" else 8)
    while runner == "prism" and not list(out.glob("scores/*/*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2 if runner == "prism" else 8)
    assert process.poll() is None, log_path.read_text()[-2000:]


DIRECT_NOTICE = ("seqwatch stream: the DirectRunner runs a stream as one batch where it cannot hand it to Prism: then "
                 "its outputs are written when the source ends (leave out --runner to stream on Prism)")
STOPPING = ("seqwatch stream: stopping ({how}): the source reads no more, and what the stream holds is scored and "
            "written; {again} stops it at once, losing that")


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["prism", "direct"])
def test_a_second_ctrl_c_stops_a_stream_at_once_with_one_sentence(runner, small_model_dir, tmp_path, request):
    # Prism is what `seqwatch stream` runs on when no --runner is given: the checkout's `make prism` binary.
    runner_args = ["--runner=DirectRunner"] if runner == "direct" else []
    if runner == "prism":
        request.getfixturevalue("prism_location")  # skips when `make prism` has not built it
    # 200 s of replay: 8.3 hours of readings
    command, out, log_path = _replay_stream(tmp_path, small_model_dir, 3000, 150, *runner_args)
    with open(log_path, "w") as log:
        process = _start_as_from_a_terminal(command, log)
        try:
            _wait_for_scores(runner, process, out, log_path)
            os.killpg(process.pid, signal.SIGINT)
            _wait_for(process, log_path, "seqwatch stream: stopping (Ctrl-C)", 30)
            os.killpg(process.pid, signal.SIGINT)  # before the stream has written what it holds
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
    assert lines[1:-1] == [*([DIRECT_NOTICE] if runner == "direct" else []),
                           STOPPING.format(how="Ctrl-C", again="Ctrl-C again")], text[-3000:]
    assert lines[-1] == f"seqwatch stream: stopped by an interrupt (Ctrl-C); what was written so far stays in {out}"
    if runner == "prism":  # a real stream: what it scored before the Ctrl-C is there, and readable
        scored = ds.dataset(out / "scores", format="parquet").to_table()
        assert 0 < scored.num_rows


def _stopped_totals(line: str, how: str) -> tuple[int, int, int]:
    """``(records in, scored, quarantined)`` of a stream's closing line after a graceful stop."""
    found = re.fullmatch(rf"seqwatch stream: stopped by {how} once it had written what it read; records in (\d+) = "
                         rf"scored (\d+) \+ quarantined (\d+), incidents \d+ \(counts of \d+ flush window\(s\) in "
                         rf".*\)", line)
    assert found, line
    return tuple(int(g) for g in found.groups())


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["prism", "direct"])
def test_a_ctrl_c_stops_a_stream_once_it_has_written_what_it_read(runner, small_model_dir, tmp_path, request,
                                                                   processes):
    """The first Ctrl-C ends the source, as its end would: everything the stream read is scored or quarantined
    and written, and each entity's calibration is kept for the restart. On Prism the Ctrl-C to the process group
    had stopped Prism too, with the panes it held (Prism now runs in a session of its own), and its state."""
    runner_args = ["--runner=DirectRunner"] if runner == "direct" else ["--online-calibration"]
    if runner == "prism":
        request.getfixturevalue("prism_location")
    command, out, log_path = _replay_stream(tmp_path, small_model_dir, 3000, 150, *runner_args)
    with open(log_path, "w") as log:
        process = _start_as_from_a_terminal(command, log)
        prism = []
        try:
            _wait_for_scores(runner, process, out, log_path)
            prism = [pid for pid, name in processes.descendants(process.pid).items() if name.startswith("prism")]
            os.killpg(process.pid, signal.SIGINT)
            returncode = process.wait(timeout=120)
            left = [pid for pid in prism if processes.alive(pid)]
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            processes.kill(prism)
    text = log_path.read_text()
    assert returncode == 0, text[-2000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    lines = text.splitlines()
    assert lines[1:-1] == [*([DIRECT_NOTICE] if runner == "direct" else []),
                           STOPPING.format(how="Ctrl-C", again="Ctrl-C again")], text[-3000:]
    records_in, scored, quarantined = _stopped_totals(lines[-1], "Ctrl-C")
    assert records_in == scored + quarantined and 0 < scored, lines[-1]
    assert records_in < 3000 * 4, "the stream was to be stopped before its replay's end"
    counts = [json.loads(p.read_text()) for p in out.glob("counts/*.json")]
    assert sum(c.get("records_in", 0) for c in counts) == records_in
    assert not (out / STOP_FILE).exists()
    assert left == [], f"Prism processes {left} outlived the stream"
    if runner == "prism":  # each entity's calibration, to the last window the stream scored
        scores = ds.dataset(out / "scores", format="parquet").to_table().to_pandas()
        state = ds.dataset(out / "calibration_state", format="parquet").to_table().to_pandas()
        last = int(pd.Timestamp(scores["window_end"].max()).value // 1000)
        assert state["entity_id"].tolist() == ["pump-01"] and state["last_window_end_us"].tolist() == [last]


@pytest.mark.slow
def test_a_sigterm_to_the_stream_process_alone_stops_it_once_written_and_its_prism_too(small_model_dir, tmp_path,
                                                                                         prism_location, processes):
    """A SIGTERM to seqwatch's own process (systemd's KillMode=process, a container's init, `kill PID`) stops the
    stream as its first Ctrl-C does: what it read is written, exit 0. Bug hunt of broker sources: such a SIGTERM
    had left Prism running, reparented to init (one leaked Prism per restart); seqwatch stops the Prism it started
    before it exits. A second SIGTERM stops it at once (exit 143), with Prism too."""
    for signals in (1, 2):
        out_dir = tmp_path / f"signals-{signals}"
        out_dir.mkdir()
        command, out, log_path = _replay_stream(out_dir, small_model_dir, 3000, 150,
                                                f"--prism_location={prism_location}")
        with open(log_path, "w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True,
                                       start_new_session=True)
            prism = []
            try:
                deadline = time.monotonic() + 120
                while not list(out.glob("scores/*/*.parquet")) and time.monotonic() < deadline:
                    assert process.poll() is None, log_path.read_text()[-2000:]
                    time.sleep(0.5)
                prism = [pid for pid, name in processes.descendants(process.pid).items() if name.startswith("prism")]
                assert prism, (processes.descendants(process.pid), log_path.read_text()[-2000:])
                process.send_signal(signal.SIGTERM)  # to seqwatch alone, not its process group
                if signals == 2:
                    _wait_for(process, log_path, "seqwatch stream: stopping (SIGTERM)", 30)
                    process.send_signal(signal.SIGTERM)
                returncode = process.wait(timeout=120)
                left = [pid for pid in prism if processes.alive(pid)]  # stopped before seqwatch exits
            finally:
                os.killpg(process.pid, signal.SIGKILL) if process.poll() is None else None
                processes.kill(prism)
        text = log_path.read_text()
        lines = text.splitlines()
        assert lines[1] == STOPPING.format(how="SIGTERM", again="a second SIGTERM or a Ctrl-C"), text[-2000:]
        if signals == 1:
            assert returncode == 0, text[-2000:]
            records_in, scored, quarantined = _stopped_totals(lines[-1], "SIGTERM")
            assert records_in == scored + quarantined and 0 < scored < 3000 * 4
        else:
            assert returncode == 143, text[-2000:]
            assert lines[-1] == f"seqwatch stream: stopped by SIGTERM; what was written so far stays in {out}"
        assert left == [], f"Prism processes {left} outlived the stream"


@pytest.mark.slow
def test_a_ctrl_c_while_a_finished_stream_stops_prism_ends_it_all_the_same(small_model_dir, tmp_path, prism_location,
                                                                               processes):
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
                prism = prism or [pid for pid, name in processes.descendants(process.pid).items()
                                  if name.startswith("prism")]
                time.sleep(0.05)
            assert prism, log_path.read_text()[-2000:]
            time.sleep(0.3)
            process.send_signal(signal.SIGINT)  # while the job server is being stopped
            returncode = process.wait(timeout=60)
            left = [pid for pid in prism if processes.alive(pid)]
        finally:
            os.killpg(process.pid, signal.SIGKILL) if process.poll() is None else None
            processes.kill(prism)
    text = log_path.read_text()
    assert returncode == 0, text[-2000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert left == [], f"Prism processes {left} outlived the stream"
