"""One job at a time per output folder (``pipelines/output_lock.py``). Found by the bug hunt of output folders
(2026-12-02): two batch runs into one ``--output`` at once set each other's sinks aside in their commits. The
lock is the kernel's (``flock``), so a killed holder (``kill -9``) frees the folder: each test that finds the
folder taken then kills the holder and takes it."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pyarrow.dataset as ds
import pytest

from seqwatch.pipelines import batch
from seqwatch.pipelines.batch import RunError, run_batch
from seqwatch.pipelines.config import RunConfig
from seqwatch.pipelines.output_lock import LOCK_FILE, OutputBusy, output_lock

# A job that holds an output folder until its stdin closes (or it is killed).
HOLD = """import sys
from seqwatch.pipelines.output_lock import output_lock
with output_lock(sys.argv[1], sys.argv[2], sys.argv[3]):
    print("held", flush=True)
    sys.stdin.read()
"""
# Whether another process could take the folder now: "free", or the refusal it would get.
PROBE = """import sys
from seqwatch.pipelines.output_lock import OutputBusy, output_lock
try:
    with output_lock(sys.argv[1], "run", "run-probe"):
        print("free")
except OutputBusy as exc:
    print(exc)
"""
BUSY = (r"^another seqwatch {job} {run_id} \(process \d+ on \S+, since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC\) is "
        r"writing into {output}; wait for it to end, or give this {this} its own --output$")


class Holder:
    """A separate process holding ``output``'s lock as ``job`` ``run_id``."""

    def __init__(self, output, job="run", run_id="run-nightly"):
        self.process = subprocess.Popen([sys.executable, "-c", HOLD, str(output), job, run_id],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "held"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)  # as the out-of-memory killer ends a run: no clean-up
        self.process.wait(timeout=30)


def _probe(output) -> str:
    return subprocess.run([sys.executable, "-c", PROBE, str(output)], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def test_a_folder_held_by_another_process_is_refused_with_its_holder_and_freed_when_it_is_killed(tmp_path):
    holder = Holder(tmp_path, "stream", "run-kafka")
    try:
        with pytest.raises(OutputBusy, match=BUSY.format(job="stream", run_id="run-kafka", output=tmp_path,
                                                          this="run")):
            with output_lock(str(tmp_path), "run", "run-2"):
                pass
        held = json.loads((tmp_path / LOCK_FILE).read_text())
        assert (held["job"], held["run_id"], held["pid"]) == ("stream", "run-kafka", holder.process.pid)
    finally:
        holder.kill()
    with output_lock(str(tmp_path), "run", "run-2") as locked:
        assert locked
        assert json.loads((tmp_path / LOCK_FILE).read_text())["run_id"] == "run-2"
        assert _probe(tmp_path).startswith("another seqwatch run run-2 (process ")
    assert (tmp_path / LOCK_FILE).read_text() == ""  # no stale name once released
    assert _probe(tmp_path) == "free"


def test_the_lock_is_reentrant_within_a_process_and_absent_on_remote_outputs(tmp_path):
    (tmp_path / "out").mkdir()
    with output_lock(str(tmp_path / "out"), "replay", "replay-1") as outer:
        with output_lock(str(tmp_path / "out") + "/.", "run", "replay-1") as inner:  # the replay's batch run
            assert outer and inner
        assert _probe(tmp_path / "out").startswith("another seqwatch replay replay-1 ")  # still held
    assert _probe(tmp_path / "out") == "free"
    with output_lock("hdfs://namenode/out", "run", "run-1") as locked:  # S3 and GCS: test_output_lock_stores.py
        assert not locked


def _readings(path, n=400):
    lines = ["timestamp,flow,pressure,temperature,vibration"]
    lines += [f"2026-01-05T{i // 360:02d}:{i // 6 % 60:02d}:{i % 6 * 10:02d}Z,{50 + i % 7},{3 + i % 3 * 0.1},"
              f"{60 + i % 5},{0.2 + i % 4 * 0.01}" for i in range(n)]
    lines[10] = lines[10].replace(",", ",oops", 1)  # one unreadable flow value: a quarantined reading
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(path, output, model_dir, run_id="") -> RunConfig:
    from seqwatch.schemas.mapping import InputMapping

    return RunConfig(inputs=(str(path),), output=str(output), model_dir=str(model_dir),
                     mapping=InputMapping(format="wide"), run_id=run_id)


def test_a_batch_run_holds_its_output_until_its_manifest_and_waits_for_no_one(small_model_dir, tmp_path,
                                                                               monkeypatch):
    path, out = _readings(tmp_path / "pump-01.csv"), tmp_path / "out"
    seen = []
    commit = batch._commit

    def commit_and_probe(output, staging, aside):  # what another process meets while this run commits
        seen.append(_probe(output))
        commit(output, staging, aside)

    monkeypatch.setattr(batch, "_commit", commit_and_probe)
    manifest = run_batch(_config(path, out, small_model_dir, run_id="run-a"), ["--runner=DirectRunner"])
    assert len(seen) == 1 and seen[0].startswith("another seqwatch run run-a (process ") and str(out) in seen[0]
    assert manifest["records_in"] == manifest["records_scored"] + manifest["records_quarantined"] == 1600
    assert _probe(out) == "free"

    holder = Holder(out)  # a second run while another job writes there: refused before it touches anything
    try:
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        with pytest.raises(RunError, match=BUSY.format(job="run", run_id="run-nightly", output=out, this="run")):
            run_batch(_config(path, out, small_model_dir, run_id="run-b"), ["--runner=DirectRunner"])
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    finally:
        holder.kill()
    again = run_batch(_config(path, out, small_model_dir, run_id="run-b"), ["--runner=DirectRunner"])
    assert again["run_id"] == json.loads((out / "manifest.json").read_text())["run_id"] == "run-b"
    assert ds.dataset(out / "quarantine", format="parquet").to_table().column("records").to_pylist() == [1]


def test_the_cli_says_so_in_one_sentence_and_a_replay_is_refused_too(small_model_dir, tmp_path, capsys):
    from seqwatch.pipelines.cli import main
    from seqwatch.pipelines.replay import ReplayConfig, ReplayError, run_replay

    path, first = _readings(tmp_path / "pump-01.csv"), tmp_path / "first"
    run_batch(_config(path, first, small_model_dir), ["--runner=DirectRunner"])
    out = tmp_path / "out"
    out.mkdir()
    holder = Holder(out)
    try:
        code = main(["run", "--input", str(path), "--format", "wide", "--model-dir",
                     str(small_model_dir), "--output", str(out), "--runner=DirectRunner"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith(f"seqwatch run: another seqwatch run run-nightly (process {holder.process.pid} ")
        with pytest.raises(ReplayError, match=BUSY.format(job="run", run_id="run-nightly", output=out,
                                                           this="replay")):
            run_replay(ReplayConfig(quarantine=str(first), output=str(out), model_dir=str(small_model_dir)),
                       ["--runner=DirectRunner"])
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing staged, no replay inputs copied
    finally:
        holder.kill()
    replayed = run_replay(ReplayConfig(quarantine=str(first), output=str(out), model_dir=str(small_model_dir)),
                          ["--runner=DirectRunner"])
    assert replayed["replay"]["sources"] == [str(path)] and sum(replayed["replay"]["replayed_by_reason"].values()) == 1
    assert replayed["records_in"] == replayed["records_scored"] + replayed["records_quarantined"] == 1600
    assert _probe(out) == "free"


def test_a_stream_holds_its_output_and_is_refused_where_a_run_writes(small_model_dir, tmp_path, capsys,
                                                                    monkeypatch):
    from seqwatch.pipelines import streaming
    from seqwatch.pipelines.cli import main

    path, out = _readings(tmp_path / "pump-01.csv"), tmp_path / "out"
    argv = ["stream", "--source", "replay", "--input", str(path), "--format", "wide", "--speed", "1000000",
            "--model-dir", str(small_model_dir), "--output", str(out), "--runner=DirectRunner"]
    out.mkdir()
    holder = Holder(out)
    try:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("seqwatch stream: another seqwatch run run-nightly ")
        assert err[0].endswith("; wait for it to end, or give this stream its own --output")
    finally:
        holder.kill()
    seen = []
    run_stream = streaming.run_stream

    def probe_and_run(plan, *args):  # what another process meets while the stream runs
        seen.append(_probe(out))
        run_stream(plan, *args)

    monkeypatch.setattr(streaming, "run_stream", probe_and_run)
    assert main(argv) == 0
    assert len(seen) == 1 and seen[0].startswith("another seqwatch stream stream-"), seen
    assert _probe(out) == "free"


def test_another_thread_of_the_process_is_another_job(tmp_path):
    """From a review: the re-entrancy had been per process, so two runs of one notebook's threads both went in."""
    import threading

    refused = []

    def second():
        try:
            with output_lock(str(tmp_path), "run", "run-b"):
                refused.append(None)
        except OutputBusy as exc:
            refused.append(str(exc))

    with output_lock(str(tmp_path), "run", "run-a"):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert refused[0] is not None and refused[0].startswith("another seqwatch run run-a (process ")
