"""Ctrl-C is how a person stops `seqwatch stream` (and a batch run they started by mistake): one sentence and
exit code 130, not the traceback Beam re-raises from whichever step was running."""
import signal
import subprocess
import sys
import time

import pytest

from seqwatch.models.synthetic import generate_sensor_data


@pytest.mark.slow
def test_ctrl_c_stops_a_stream_with_one_sentence(small_model_dir, tmp_path):
    readings, _ = generate_sensor_data(n_entities=1, n_steps=3000, seed=4)
    path = tmp_path / "readings.csv"
    readings.to_csv(path, index=False)
    out, log_path = tmp_path / "out", tmp_path / "stream.log"
    command = [sys.executable, "-m", "seqwatch.pipelines.cli", "stream", "--source", "replay", "--input", str(path),
               "--speed", "5", "--model-dir", str(small_model_dir), "--output", str(out)]  # ~100 minutes of replay
    with open(log_path, "w") as log:
        # As from a terminal: tests started in the background (`make test &`, some CI shells) have SIGINT ignored,
        # a child inherits that, and Python leaves it ignored, so the Ctrl-C would never arrive. A handled signal
        # is reset to the default in the child.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        deadline = time.monotonic() + 120
        while "seqwatch stream: replay:" not in log_path.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()[-2000:]
            time.sleep(0.2)
        time.sleep(8)  # the pipeline is running: readings are being replayed
        assert process.poll() is None, log_path.read_text()[-2000:]
        process.send_signal(signal.SIGINT)
        returncode = process.wait(timeout=120)
    text = log_path.read_text()
    assert returncode == 130, text[-2000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert text.splitlines()[-1] == (f"seqwatch stream: stopped by an interrupt (Ctrl-C); what was written so far "
                                     f"stays in {out}")
