"""What a scheduled job meets around its outputs, found by a bug hunt of output folders and reruns (2026-12-02):
the run id names a folder, the commit puts one run's sinks in place or none, an earlier run's output folder
inside the input folder is not read as input, a rerun that replaces other inputs says so, and a SIGTERM (how
Airflow, systemd and ``timeout`` stop a task) ends a run as a Ctrl-C does."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from apache_beam.io.filesystems import FileSystems

from seqwatch.pipelines import batch
from seqwatch.pipelines.batch import RunError, _check_sinks_replaceable, _commit, _previous_run
from seqwatch.pipelines.config import RunConfig
from seqwatch.pipelines.sources import expand_inputs


@pytest.mark.parametrize("run_id, says", [("x/../../victim", "holds '/'"), ("a\\b", "holds '\\\\\\\\'"),
                                          ("tab\there", "holds '\\\\t'"), ("x" * 201, "is 201 characters long")])
def test_a_run_id_that_is_not_a_folder_name_is_refused(run_id, says):
    """``--run-id x/../../victim`` had staged, and deleted, a folder beside the output."""
    with pytest.raises(ValueError, match=f"^the run id .* {says}: it names a folder under the output"):
        RunConfig(inputs=("a.csv",), output="out", model_dir="m", run_id=run_id)
    RunConfig(inputs=("a.csv",), output="out", model_dir="m", run_id="scheduled__2026-12-02T00:00:00+00:00")


def test_the_cli_refuses_it_in_one_sentence_and_touches_nothing(tmp_path, capsys):
    from seqwatch.pipelines.cli import main

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("precious\n")
    readings = tmp_path / "in.csv"
    readings.write_text("entity_id,channel,timestamp,value\npump-01,flow,2026-01-05T00:00:00Z,1.0\n")
    code = main(["run", "--input", str(readings), "--model-dir", str(tmp_path / "m"), "--output",
                 str(tmp_path / "sb" / "out"), "--run-id", "x/../../victim"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("seqwatch run: the run id 'x/../../victim' holds '/'")
    assert (victim / "data.txt").read_text() == "precious\n" and not (tmp_path / "sb").exists()


def test_a_sink_that_is_a_link_is_refused_before_the_run(tmp_path):
    out = tmp_path / "out"
    (out / "alerts").mkdir(parents=True)
    _check_sinks_replaceable(str(out))  # plain folders: fine
    (tmp_path / "big-disk" / "scores").mkdir(parents=True)
    os.symlink(tmp_path / "big-disk" / "scores", out / "scores")
    with pytest.raises(RunError, match=f"^{out / 'scores'} is a link: a run replaces each output folder whole"):
        _check_sinks_replaceable(str(out))


def _sinks(root, run: str) -> None:
    for sink in batch.SINKS:
        (root / sink).mkdir(parents=True)
        (root / sink / f"{run}.parquet").write_text(run)


def _held(root) -> dict:
    return {sink: sorted(p.name for p in (root / sink).iterdir()) for sink in batch.SINKS if (root / sink).exists()}


def test_the_commit_puts_every_sink_of_the_new_run_in_place(tmp_path):
    out, staging = tmp_path / "out", tmp_path / "out" / "_staging-new"
    _sinks(out, "old")
    _sinks(staging, "new")
    (out / "notes.txt").write_text("mine\n")
    _commit(str(out), str(staging), str(out / "_previous-new"))
    assert _held(out) == {sink: ["new.parquet"] for sink in batch.SINKS}
    assert not (out / "_previous-new").exists()
    assert (out / "notes.txt").read_text() == "mine\n"


def test_a_sink_the_run_wrote_nothing_to_holds_a_file_of_no_row_with_its_schema(tmp_path):
    """A quiet night's alerts/ had been an empty folder: a query of its columns failed ('No match for FieldRef')."""
    import pyarrow.dataset as ds

    from seqwatch.schemas.arrow import ALERT_SCHEMA, FORECAST_SCHEMA

    out, staging = tmp_path / "out", tmp_path / "out" / "_staging-new"
    for sink in ("scores", "quarantine"):
        (staging / sink).mkdir(parents=True)
        (staging / sink / "new.parquet").write_text("new")
    _commit(str(out), str(staging), str(out / "_previous-new"))
    assert _held(out)["alerts"] == ["empty.parquet"] and _held(out)["forecasts"] == ["empty.parquet"]
    alerts = ds.dataset(out / "alerts", format="parquet").to_table(columns=["alert_id", "entity_id"])
    assert alerts.num_rows == 0
    assert ds.dataset(out / "alerts", format="parquet").schema.equals(ALERT_SCHEMA, check_metadata=False)
    assert ds.dataset(out / "forecasts", format="parquet").schema.equals(FORECAST_SCHEMA, check_metadata=False)


def test_a_commit_that_fails_halfway_puts_the_previous_run_back(tmp_path, monkeypatch):
    """The commit had deleted and moved one sink at a time: a failure on the third sink (a link in its place, with
    a traceback) left the new run's alerts beside the old run's scores, under the old run's manifest. The failure
    is made by the file system here: the fourth rename refuses."""
    out, staging = tmp_path / "out", tmp_path / "out" / "_staging-new"
    _sinks(out, "old")
    _sinks(staging, "new")
    _rename_fails_after_one_new_sink(monkeypatch, OSError("Rename operation failed (No space left on device)"))
    with pytest.raises(RunError, match=rf"^could not move the outputs into place under {out} \(Rename operation "
                                       r"failed \(No space left on device\)\); the previous run's outputs were put back"):
        _commit(str(out), str(staging), str(out / "_previous-new"))
    assert _held(out) == {sink: ["old.parquet"] for sink in batch.SINKS}
    assert not (out / "_previous-new").exists()


def test_an_interrupt_between_two_moves_puts_the_previous_run_back(tmp_path, monkeypatch):
    """Found by a review: a Ctrl-C or SIGTERM (now an interrupt too) between two moves left the previous sinks in
    the staging folder, which the run then deleted, while the CLI said the previous outputs were as they were."""
    out, staging = tmp_path / "out", tmp_path / "out" / "_staging-new"
    _sinks(out, "old")
    _sinks(staging, "new")
    _rename_fails_after_one_new_sink(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        _commit(str(out), str(staging), str(out / "_previous-new"))
    assert _held(out) == {sink: ["old.parquet"] for sink in batch.SINKS}
    assert not (out / "_previous-new").exists()


def _rename_fails_after_one_new_sink(monkeypatch, error: BaseException) -> None:
    """The file system's rename raises ``error`` once every old sink was set aside and one new sink moved in."""
    rename, calls = FileSystems.rename, []

    def failing(sources, destinations):
        calls.append(sources)
        if len(calls) == len(batch.SINKS) + 2:
            raise error
        return rename(sources, destinations)

    monkeypatch.setattr(FileSystems, "rename", failing)


def test_a_run_refuses_to_start_beside_outputs_a_failed_commit_could_not_put_back(tmp_path):
    from seqwatch.pipelines.batch import _check_nothing_set_aside

    _check_nothing_set_aside(str(tmp_path))
    (tmp_path / "_previous-run-1" / "scores").mkdir(parents=True)
    with pytest.raises(RunError, match=r"_previous-run-1 holds a previous run's outputs that a failed commit could "
                                       r"not put back; move them back"):
        _check_nothing_set_aside(str(tmp_path))


def test_a_rerun_under_the_same_run_id_with_other_inputs_says_what_it_replaces(tmp_path):
    """``--run-id nightly`` with other inputs had replaced the earlier outputs without the notice."""
    (tmp_path / "manifest.json").write_text(json.dumps({"run_id": "nightly", "inputs": ["live.csv"]}))
    assert _previous_run(str(tmp_path), "nightly", ["b.csv"]) == {"run_id": "nightly", "inputs": ["live.csv"]}
    assert _previous_run(str(tmp_path), "nightly", ["live.csv"]) is None  # a rerun of the same inputs
    assert _previous_run(str(tmp_path), "other", ["live.csv"]) is None  # same inputs, other settings


def test_an_earlier_runs_output_folder_inside_the_input_folder_is_not_input(tmp_path, monkeypatch):
    """A dated --output inside the input folder (out-day1) was read by the next day's run, which then failed on
    its alerts' columns; an --output given through a link into the input folder was read by its own rerun."""
    monkeypatch.chdir(tmp_path)
    inp = tmp_path / "inp"
    (inp / "out-day1" / "scores" / "pump-01").mkdir(parents=True)
    (inp / "live.csv").write_text("x\n")
    (inp / "out-day1" / "manifest.json").write_text('{"run_id": "run-1", "records_in": 5}')
    (inp / "out-day1" / "scores" / "pump-01" / "pane-1.parquet").write_text("x")
    (inp / "archive").mkdir()
    (inp / "archive" / "old.csv").write_text("x\n")  # a plain subfolder stays input
    assert expand_inputs(["inp"], exclude=("inp/out-day2",)) == ["inp/archive/old.csv", "inp/live.csv"]
    # a data set's own manifest.json beside a scores/ folder of its own data is not a run's output
    (inp / "dataset" / "scores").mkdir(parents=True)
    (inp / "dataset" / "manifest.json").write_text('{"dataset": "x"}')
    (inp / "dataset" / "scores" / "model_scores.csv").write_text("x\n")
    assert "inp/dataset/scores/model_scores.csv" in expand_inputs(["inp"])
    (inp / "dataset" / "scores" / "model_scores.csv").unlink()
    (inp / "outsym" / "alerts").mkdir(parents=True)
    (inp / "outsym" / "alerts" / "a.parquet").write_text("x")
    os.symlink(inp / "outsym", tmp_path / "linkB")
    assert expand_inputs(["inp"], exclude=("linkB",)) == ["inp/archive/old.csv", "inp/live.csv"]
    with pytest.raises(FileNotFoundError, match="^the CSV and Parquet files under 'inp' all lie inside a seqwatch "
                                                "output folder"):
        expand_inputs(["inp"], exclude=("inp",))


@pytest.mark.slow
@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_sigterm_ends_a_batch_run_as_ctrl_c_does(small_model_dir, tmp_path, sigint):
    """SIGTERM had killed the run without a word and left its staging folder, scores and all, in the output; and
    again (found by a check of the README) where SIGINT is ignored, as in a script's background job (``&``)."""
    from seqwatch.models.synthetic import generate_sensor_data

    readings, _ = generate_sensor_data(n_entities=4, n_steps=100_000, seed=5)  # 1.6M readings: some seconds
    path = tmp_path / "readings.csv"
    readings.to_csv(path, index=False)
    out = tmp_path / "out"
    (out / "scores").mkdir(parents=True)
    (out / "scores" / "previous.parquet").write_text("the previous run's")
    log_path = tmp_path / "run.log"
    command = [sys.executable, "-m", "seqwatch.pipelines.cli", "run", "--input", str(path), "--model-dir",
               str(small_model_dir), "--output", str(out), "--runner=DirectRunner"]
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as a scheduler's child has it
    try:
        with open(log_path, "w") as log:
            if sigint == "ignored":  # as a shell starts a script's background job; exec keeps the pid
                command = ["sh", "-c", "trap '' INT; exec \"$@\"", "sh", *command]
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("_staging-*")) and time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()[-2000:]
            time.sleep(0.05)
        assert process.poll() is None, log_path.read_text()[-2000:]  # the pipeline has begun to write
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    text = log_path.read_text()
    assert returncode == 143, text[-2000:]
    assert "Traceback" not in text, text[-3000:]
    assert text.strip().splitlines()[-1] == ("seqwatch run: stopped by SIGTERM; a batch run commits nothing unless it "
                                             "finishes, so the previous outputs are as they were")
    assert not list(out.glob("_staging-*"))
    assert sorted(p.name for p in out.iterdir()) == [".seqwatch.lock", "scores"]  # the lock: see test_output_lock
    assert (out / "scores" / "previous.parquet").read_text() == "the previous run's"
