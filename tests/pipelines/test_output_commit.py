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

import pyarrow.parquet as pq
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
    batch._fill_empty_sinks(str(staging))
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


def test_a_first_commit_that_fails_halfway_takes_out_what_it_moved_in(tmp_path, monkeypatch):
    """Found by the bug hunt of outputs and reruns: into a fresh --output, a commit that failed on its third sink
    left the new run's alerts and forecasts there (no scores, no manifest), and said the previous outputs were
    put back."""
    out, staging = tmp_path / "out", tmp_path / "out" / "_staging-new"
    _sinks(staging, "new")
    rename, calls = FileSystems.rename, []

    def failing(sources, destinations):
        calls.append(sources)
        if len(calls) == 3:
            raise OSError("Rename operation failed (No space left on device)")
        return rename(sources, destinations)

    monkeypatch.setattr(FileSystems, "rename", failing)
    with pytest.raises(RunError, match="the previous run's outputs were put back"):
        _commit(str(out), str(staging), str(out / "_previous-new"))
    assert _held(out) == {} and not (out / "_previous-new").exists()


def test_the_manifest_moves_in_with_the_sinks_and_back_out_with_them(tmp_path, monkeypatch):
    """The manifest had been written after the commit, so an interrupt or a failure between the two left the new
    run's sinks under the old run's manifest; it is now staged and moved in last, and put back on a failure."""
    out, staging = tmp_path / "out", tmp_path / "out" / "_staging-new"
    _sinks(out, "old")
    _sinks(staging, "new")
    (out / "manifest.json").write_text('{"run_id": "old"}')
    (staging / "manifest.json").write_text('{"run_id": "new"}')
    rename, calls = FileSystems.rename, []

    def failing(sources, destinations):  # the new manifest's move, the last of ten, fails
        calls.append(sources)
        if len(calls) == 2 * (len(batch.SINKS) + 1):
            raise OSError("Rename operation failed (Input/output error)")
        return rename(sources, destinations)

    monkeypatch.setattr(FileSystems, "rename", failing)
    with pytest.raises(RunError, match="the previous run's outputs were put back"):
        _commit(str(out), str(staging), str(out / "_previous-new"))
    assert _held(out) == {sink: ["old.parquet"] for sink in batch.SINKS}
    assert json.loads((out / "manifest.json").read_text()) == {"run_id": "old"}
    monkeypatch.setattr(FileSystems, "rename", rename)
    _sinks(staging, "new")  # the rolled-back commit deleted what it had moved in (the run deletes its staging)
    (staging / "manifest.json").write_text('{"run_id": "new"}')
    _commit(str(out), str(staging), str(out / "_previous-new"))
    assert _held(out) == {sink: ["new.parquet"] for sink in batch.SINKS}
    assert json.loads((out / "manifest.json").read_text()) == {"run_id": "new"}


@pytest.mark.parametrize("in_job", [False, True], ids=["by the launcher", "in the job"])
def test_a_signal_during_the_commit_waits_for_it_and_its_manifest(small_model_dir, tmp_path, monkeypatch, in_job):
    """Found by the bug hunt of outputs and reruns: a SIGTERM 2.5 s into a run landed after the new sinks were moved
    in and before the manifest was written: the output held the new run's files under the old run's manifest, and
    the CLI said nothing was committed. The signal now waits until the sinks and the manifest are in place, and
    then ends the run as ``InterruptedAfterCommit``, which the CLI reports as a finished commit; also where the job
    commits itself, in the launcher's main thread on the DirectRunner (``--commit-in-job``)."""
    from seqwatch.models.synthetic import generate_sensor_data
    from seqwatch.pipelines.batch import run_batch
    from seqwatch.pipelines.interrupts import InterruptedAfterCommit

    readings, _ = generate_sensor_data(n_entities=1, n_steps=300, seed=3)
    path = tmp_path / "pump.csv"
    readings.to_csv(path, index=False)
    out = tmp_path / "out"
    first = run_batch(RunConfig(inputs=(str(path),), output=str(out), model_dir=str(small_model_dir),
                                run_id="old"), ["--runner=DirectRunner"])
    commit = batch._commit

    def signalled_mid_commit(output, staging, aside):
        rename = FileSystems.rename

        def rename_then_signal(sources, destinations):
            rename(sources, destinations)
            if destinations[0].endswith("/alerts") and "_previous" not in destinations[0]:
                os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler stops the task, with the first sink moved in

        monkeypatch.setattr(FileSystems, "rename", rename_then_signal)
        try:
            commit(output, staging, aside)
        finally:
            monkeypatch.setattr(FileSystems, "rename", rename)

    def as_the_cli(signum, frame):  # the CLI's SIGTERM handler ends a run as a Ctrl-C does
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "_commit", signalled_mid_commit)
    previous = signal.signal(signal.SIGTERM, as_the_cli)
    try:
        with pytest.raises(InterruptedAfterCommit):
            run_batch(RunConfig(inputs=(str(path),), output=str(out), model_dir=str(small_model_dir),
                                run_id="new", commit_in_job=in_job), ["--runner=DirectRunner"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run_id"] == "new" != first["run_id"]
    for sink in batch.SINKS:
        files = sorted(str(p.relative_to(out)) for p in (out / sink).rglob("*.parquet"))
        assert files == manifest["outputs"][sink]
    assert set(pq.read_table(out / "scores").column("run_id").to_pylist()) == {"new"}
    assert not list(out.glob("_previous-*")) and not list(out.glob("_staging-*"))
    assert not list(out.glob("_job-staging-*"))


def test_a_signal_held_while_a_commit_failed_is_an_interrupt_before_the_commit():
    """Found by the review: a signal held while the move failed (and was undone) had been dropped; it is delivered
    as the interrupt it was, not as one after a finished commit."""
    from seqwatch.pipelines.interrupts import InterruptedAfterCommit, held_back

    def as_the_cli(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, as_the_cli)
    try:
        with pytest.raises(KeyboardInterrupt) as stopped:
            with held_back():
                os.kill(os.getpid(), signal.SIGTERM)
                raise RunError("could not move the outputs into place")
        assert not isinstance(stopped.value, InterruptedAfterCommit)
        with pytest.raises(InterruptedAfterCommit):
            with held_back():
                os.kill(os.getpid(), signal.SIGTERM)
        with held_back():  # no signal: nothing
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert signal.getsignal(signal.SIGTERM) is previous


def test_the_cli_says_a_signal_during_the_commit_came_after_it(tmp_path, monkeypatch, capsys):
    from seqwatch.pipelines import cli
    from seqwatch.pipelines.interrupts import InterruptedAfterCommit

    def interrupted(args, beam_args):
        raise InterruptedAfterCommit()

    monkeypatch.setattr(cli, "cmd_run", interrupted)
    monkeypatch.setattr(cli.os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
    with pytest.raises(SystemExit) as ended:
        cli.main(["run", "--input", "x.csv", "--model-dir", "m", "--output", str(tmp_path / "out")])
    assert ended.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"seqwatch run: stopped by an interrupt (Ctrl-C); it came as the run moved its outputs into place, which it "
        f"finished first: {tmp_path / 'out'} holds this run's outputs and manifest, whole")


def test_a_write_failure_is_named_by_the_operating_systems_reason():
    """A full disk had ended a run with 121 lines of Beam tracebacks (exit 1)."""
    from seqwatch.pipelines.batch import write_failure

    inside_a_step = RuntimeError("OSError: [Errno 28] No space left on device: '/out/_staging-x/scores/a.parquet' "
                                 "[while running 'WriteOutputs/WriteParquet']")
    assert write_failure(inside_a_step) == "[Errno 28] No space left on device"
    assert write_failure(OSError(28, "No space left on device")) == "[Errno 28] No space left on device"
    assert write_failure(RuntimeError("OSError: [Errno 28] No space left on device [while running 'Write']")) == \
        "[Errno 28] No space left on device"
    assert write_failure(RuntimeError("KeyboardInterrupt [while running 'Score']")) is None
    # a read failure is not said to be a write failure (found by the review: an input removed mid-run was)
    assert write_failure(FileNotFoundError(2, "No such file or directory")) is None
    assert write_failure(RuntimeError("OSError: [Errno 2] No such file or directory: 'in/a.csv'")) is None
    assert write_failure(ValueError("x")) is None


def test_a_folder_set_aside_by_a_commit_that_finished_or_never_began_is_cleared(tmp_path):
    """Found by the bug hunt of outputs and reruns: a run killed between creating ``_previous-<id>`` and its first
    move, or while it deleted that folder after a finished commit, left a folder that refused every later run."""
    from seqwatch.pipelines.batch import _check_nothing_set_aside

    (tmp_path / "_previous-run-1").mkdir()  # nothing in it
    _check_nothing_set_aside(str(tmp_path))
    assert not (tmp_path / "_previous-run-1").exists()
    _sinks(tmp_path, "run-2")
    (tmp_path / "manifest.json").write_text('{"run_id": "run-2"}')
    (tmp_path / "_previous-run-2" / "scores").mkdir(parents=True)  # run-2's commit finished: its leftovers
    _check_nothing_set_aside(str(tmp_path))
    assert not (tmp_path / "_previous-run-2").exists()
    (tmp_path / "_previous-run-3" / "scores").mkdir(parents=True)  # run-3's did not: the outputs are run-2's
    with pytest.raises(RunError, match="_previous-run-3 holds a previous run's outputs"):
        _check_nothing_set_aside(str(tmp_path))


def test_staging_left_by_a_killed_run_of_another_id_is_removed(tmp_path):
    """A killed run's ``_staging-<id>`` (complete-looking Parquet) had stayed for good once the inputs changed: only
    the next run of that id removed it. Under the output lock no other run writes there."""
    from seqwatch.pipelines.batch import _remove_stale_staging

    (tmp_path / "_staging-run-old" / "scores").mkdir(parents=True)
    (tmp_path / "_staging-run-new").mkdir()
    (tmp_path / "scores").mkdir()
    _remove_stale_staging(str(tmp_path), "run-new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_staging-run-new", "scores"]


def test_an_output_whose_name_holds_glob_characters_is_written_and_probed_by_its_name(tmp_path):
    """Found by the bug hunt of outputs and reruns: ``--output 'results [prod]'`` was refused ("No files found to
    delete"), its probe file left behind: Beam's delete matches its argument as a glob. A sibling that such a glob
    would match is left alone."""
    from seqwatch.pipelines.sinks import delete_path, prepare_output_folder

    out = tmp_path / "results [prod]"
    (tmp_path / "resultsp").mkdir()  # what the glob 'results [prod]' would not match, but 'results*' would
    prepare_output_folder(str(out))
    assert out.is_dir() and list(out.iterdir()) == []
    (out / "_staging-x" / "scores").mkdir(parents=True)
    delete_path(str(out / "_staging-x"))
    delete_path(str(out / "_staging-x"))  # gone already: nothing to do
    star = tmp_path / "out*"
    star.mkdir()
    delete_path(str(star))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results [prod]", "resultsp"]


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

    import pyarrow as pa
    import pyarrow.csv as pa_csv

    readings, _ = generate_sensor_data(n_entities=4, n_steps=100_000, seed=5)  # 1.6M readings: some seconds
    path = tmp_path / "readings.csv"
    # written by Arrow, unquoted: 2.8 s where pandas' to_csv takes 8.7
    pa_csv.write_csv(pa.Table.from_pandas(readings, preserve_index=False), path,
                     pa_csv.WriteOptions(quoting_style="none"))
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


def test_a_glob_over_the_runs_own_output_leaves_its_files_out(tmp_path, monkeypatch):
    """Found by the bug hunt of outputs and reruns: ``--input 'land/**/*.parquet' --output land/scored`` read its
    own outputs on the rerun, which failed on their columns ("empty.parquet lacks required columns")."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "land" / "day1").mkdir(parents=True)
    (tmp_path / "land" / "day1" / "pumps.parquet").write_text("x")
    for sink in ("scored/scores/pump-01", "scored/_staging-run-1/alerts"):
        (tmp_path / "land" / sink).mkdir(parents=True)
        (tmp_path / "land" / sink / "part.parquet").write_text("x")
    assert expand_inputs(["land/**/*.parquet"], exclude=("land/scored",)) == ["land/day1/pumps.parquet"]
    assert len(expand_inputs(["land/**/*.parquet"])) == 3  # without an output to leave out, a glob keeps all
    with pytest.raises(FileNotFoundError, match=r"^every file 'land/scored/\*\*/\*.parquet' matches lies inside "
                                                r"--output land/scored, whose files are not read as input"):
        expand_inputs(["land/scored/**/*.parquet"], exclude=("land/scored",))
    # an --output that is the input folder, or above it: its other files stay input (found by the review)
    (tmp_path / "g" / "site" / "raw").mkdir(parents=True)
    (tmp_path / "g" / "site" / "a.csv").write_text("x\n")
    (tmp_path / "g" / "site" / "raw" / "b.csv").write_text("x\n")
    assert expand_inputs(["g/site/*.csv"], exclude=("g/site",)) == ["g/site/a.csv"]
    assert expand_inputs(["g/site/raw/*.csv"], exclude=("g/site",)) == ["g/site/raw/b.csv"]


def test_a_json_file_is_written_under_a_hidden_name_and_renamed_when_complete(tmp_path, monkeypatch):
    """Found by the bug hunt of streams: a monitor summing a stream's counts/*.json read empty files (149 of 3.7
    million reads): they were written in place."""
    from seqwatch.pipelines.graph import write_json

    rename, moves = FileSystems.rename, []

    def recorded(sources, destinations):
        moves.append((sources[0], destinations[0]))
        assert json.loads(open(sources[0]).read()) == {"records_in": 2}  # complete before it gets its name
        return rename(sources, destinations)

    monkeypatch.setattr(FileSystems, "rename", recorded)
    (tmp_path / "counts").mkdir()
    (tmp_path / "counts" / "w1.json").write_text('{"records_in": 1}')
    write_json({"records_in": 2}, str(tmp_path / "counts" / "w1.json"))
    assert len(moves) == 1 and moves[0][1] == str(tmp_path / "counts" / "w1.json")
    assert moves[0][0].startswith(str(tmp_path / "counts" / ".w1.json.")) and moves[0][0].endswith(".partial")
    assert json.loads((tmp_path / "counts" / "w1.json").read_text()) == {"records_in": 2}
    assert sorted(p.name for p in (tmp_path / "counts").iterdir()) == ["w1.json"]
