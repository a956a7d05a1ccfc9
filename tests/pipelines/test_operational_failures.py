"""What a scheduled job meets when the machine or its files misbehave, found by the bug hunt of operational failures
(2026-12-03): a SIGTERM whose exception Python dropped, an input removed or cut while a run reads it, an unreadable
file or folder, a Keras backend that is not installed, and two trainings into one model folder. Each is one
sentence and an exit code a scheduler acts on, never a traceback or a run that carries on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.cli import _os_error_sentence, main
from seqwatch.pipelines.output_lock import output_lock
from seqwatch.pipelines.sources import expand_inputs

# Sends this process a SIGTERM from inside a garbage-collection callback, where the CLI's handler raises
# KeyboardInterrupt and Python drops it ("Exception ignored in ..."), as it did inside JAX's gc callback.
DROPPED_SIGTERM = textwrap.dedent("""
    import gc, os, signal

    def dropped_sigterm():
        fired = []

        def callback(phase, info):
            if phase == "start" and not fired:
                fired.append(True)
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(10_000):  # the handler runs here, inside the callback
                    pass

        gc.callbacks.append(callback)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(callback)


    from seqwatch.pipelines import interrupts

    redeliver = interrupts.redeliver_dropped

    def noted_redelivery(info, signum):  # says so on stdout when the CLI delivers a dropped interrupt again
        again = redeliver(info, signum)
        print(f"interrupt delivered again: {again}", flush=True)
        return again

    interrupts.redeliver_dropped = noted_redelivery
""")


def _script(tmp_path, body: str) -> list[str]:
    """A job that patches seqwatch and runs its ``main`` with the CLI's logging in place first, as ``seqwatch``
    has it before Beam is imported."""
    path = tmp_path / "job.py"
    path.write_text(DROPPED_SIGTERM + "from seqwatch.pipelines.cli import _quiet_logs\n_quiet_logs()\n"
                    + textwrap.dedent(body))
    return [sys.executable, str(path)]


def _readings(tmp_path, name="pump.csv", n_steps=300, seed=3):
    readings, _ = generate_sensor_data(n_entities=1, n_steps=n_steps, seed=seed)
    path = tmp_path / name
    readings.to_csv(path, index=False)
    return path


def test_a_sigterm_whose_exception_python_dropped_still_stops_the_run_before_its_commit(small_model_dir, tmp_path):
    """The hunt's SIGTERM 1.8 s into a run: the run went on, replaced the previous outputs and exited 0."""
    path = _readings(tmp_path)
    out = tmp_path / "out"
    assert main(["run", "--input", str(path), "--model-dir", str(small_model_dir), "--output", str(out),
                 "--run-id", "earlier"]) == 0
    before = json.loads((out / "manifest.json").read_text())
    command = _script(tmp_path, f"""
        import sys
        import seqwatch.pipelines.batch as batch
        from seqwatch.pipelines.cli import main

        build = batch.build_pipeline

        def build_then_signal(p, plan):
            graph = build(p, plan)
            dropped_sigterm()
            return graph

        batch.build_pipeline = build_then_signal
        fill = batch._fill_empty_sinks

        def finished(staging):  # runs once the pipeline has run: it had, before stopping at the commit
            print("the pipeline ran", flush=True)
            return fill(staging)

        batch._fill_empty_sinks = finished
        code = main(["run", "--input", {str(path)!r}, "--model-dir", {str(small_model_dir)!r}, "--output",
                     {str(out)!r}, "--run-id", "later"])
        sys.exit(code)
    """)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    # Python did drop it, and the CLI raised it again at once (it had stopped only before the commit)
    assert result.stdout.count("interrupt delivered again: True") >= 1, (result.stdout, result.stderr[-3000:])
    assert "the pipeline ran" not in result.stdout
    assert "Exception ignored" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 143, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "seqwatch run: stopped by SIGTERM; a batch run commits nothing unless it finishes, so the previous outputs "
        "are as they were")
    assert json.loads((out / "manifest.json").read_text()) == before
    assert not list(out.glob("_staging-*"))


def test_a_sigterm_whose_exception_python_dropped_still_stops_a_training_before_it_saves(tmp_path):
    """The hunt's SIGTERM 1 s into a training: it replaced the model in --model-dir and exited 0."""
    path = _readings(tmp_path, n_steps=600)
    model = tmp_path / "model"
    command = _script(tmp_path, f"""
        import sys
        from seqwatch.models.detector import Seq2SeqDetector
        from seqwatch.pipelines.cli import main

        fit = Seq2SeqDetector.fit

        def signal_then_fit(self, *args, **kwargs):  # it had stopped only before the save, after training
            dropped_sigterm()
            return fit(self, *args, **kwargs)

        Seq2SeqDetector.fit = signal_then_fit
        code = main(["train", "--input", {str(path)!r}, "--model-dir", {str(model)!r}, "--window", "8",
                     "--units", "4", "--epochs", "1", "--horizon", "0"])
        sys.exit(code)
    """)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.stdout.count("interrupt delivered again: True") >= 1, (result.stdout, result.stderr[-3000:])
    assert "Exception ignored" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 143, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == "seqwatch train: stopped by SIGTERM"
    assert "epoch" not in result.stderr  # stopped where it was, not at the save
    assert not model.exists()  # made for the training's lock, and removed with nothing saved in it


@pytest.mark.parametrize("error", [
    'ImportError("To use Keras, you need to have `optree` installed. Install it via `pip install optree`")',
    'ValueError("a value the interrupted step left half made")',  # the CLI's branch of configuration errors
])
def test_an_error_that_a_sigterm_was_turned_into_still_stops_the_command_as_a_sigterm(tmp_path, error):
    """A CI run's SIGTERM landed while Keras imported optree: optree's pybind11 init turned the interrupt into an
    ImportError, Keras's tree module raised its own "you need to have `optree` installed" with the interrupt no
    longer in the chain, and the command ended with that traceback, exit 1. (By hand, 3 of 23 SIGTERMs timed 1 ms
    apart across a bare `import optree` ended as pybind11's "ImportError: initialization failed", caused by the
    KeyboardInterrupt.) Done here as Keras does it, which a timed signal would hit only by chance: the handler's
    KeyboardInterrupt caught inside an import and a fresh ImportError raised outside the except. A ValueError
    made so had ended as a configuration error's sentence, exit 2."""
    path = _readings(tmp_path, n_steps=600)
    model = tmp_path / "model"
    command = _script(tmp_path, f"""
        import os, signal, sys
        from seqwatch.models.detector import Seq2SeqDetector
        from seqwatch.pipelines.cli import main

        def interrupted_import(self, *args, **kwargs):
            try:  # the extension's init, which the signal's handler interrupts
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1_000_000):
                    pass
                available = True
            except KeyboardInterrupt:
                available = False  # LazyModule.available: the ImportError pybind11 made of it, taken as absent
            if not available:
                raise {error}
            print("the handler raised nothing", flush=True)

        Seq2SeqDetector.fit = interrupted_import
        code = main(["train", "--input", {str(path)!r}, "--model-dir", {str(model)!r}, "--window", "8",
                     "--units", "4", "--epochs", "1", "--horizon", "0"])
        sys.exit(code)
    """)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert "the handler raised nothing" not in result.stdout
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 143, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == "seqwatch train: stopped by SIGTERM"
    assert not model.exists()


def test_sigusr1_prints_every_threads_stack_and_the_command_goes_on(tmp_path):
    """``kill -USR1 <pid>``: where a command waits, without stopping it (session 51, for a stream that no longer
    moves, as the Kafka outage test's once did)."""
    path = _readings(tmp_path, n_steps=600)
    model = tmp_path / "model"
    command = _script(tmp_path, f"""
        import os, signal, sys
        from seqwatch.models.detector import Seq2SeqDetector
        from seqwatch.pipelines.cli import main

        fit = Seq2SeqDetector.fit

        def looked_at_while_fitting(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGUSR1)
            return fit(self, *args, **kwargs)

        Seq2SeqDetector.fit = looked_at_while_fitting
        sys.exit(main(["train", "--input", {str(path)!r}, "--model-dir", {str(model)!r}, "--window", "8",
                       "--units", "4", "--epochs", "1", "--horizon", "0"]))
    """)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Current thread 0x" in result.stderr and "looked_at_while_fitting" in result.stderr, result.stderr[-3000:]
    assert (model / "latest").exists() or any(model.iterdir())  # the training went on and saved


@pytest.mark.parametrize("change", ["remove a CSV", "cut a Parquet file", "remove a CSV, 2 workers"])
def test_an_input_removed_or_cut_while_the_run_reads_it_is_one_sentence(small_model_dir, tmp_path, change):
    """An input deleted 3 s into a run had ended it with a traceback of 182 lines (exit 1); a Parquet file cut short
    with one of 39 lines and a sentence that named '<Buffer>', not the file. With 2 worker processes (a run of 8M
    readings or more) the worker printed the failed step's traceback, and the local job service logged it twice
    more, before the sentence (found by the bug hunt of operational failures, mended 2026-12-03)."""
    workers = ["--workers", "2"] if change.endswith("2 workers") else []
    inputs = tmp_path / "in"
    inputs.mkdir()
    readings, _ = generate_sensor_data(n_entities=2, n_steps=300, seed=3)
    for entity, part in readings.groupby("entity_id"):
        if change.startswith("remove a CSV"):
            part.to_csv(inputs / f"{entity}.csv", index=False)
        else:
            part.to_parquet(inputs / f"{entity}.parquet", index=False)
    victim = sorted(inputs.iterdir())[-1]
    out = tmp_path / "out"
    command = _script(tmp_path, f"""
        import os, sys
        import seqwatch.pipelines.batch as batch
        from seqwatch.pipelines.cli import main

        build = batch.build_pipeline

        def build_then_change(p, plan):  # after planning has read every input's header
            graph = build(p, plan)
            victim = {str(victim)!r}
            if victim.endswith(".csv"):
                os.remove(victim)
            else:
                data = open(victim, "rb").read()
                open(victim, "wb").write(data[:len(data) // 2])
            return graph

        batch.build_pipeline = build_then_change
        sys.exit(main(["run", "--input", {str(inputs)!r}, "--model-dir", {str(small_model_dir)!r}, "--output",
                       {str(out)!r}, *{workers!r}]))
    """)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("seqwatch run: note")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    removed = f"seqwatch run: could not read {victim} ([Errno 2] No such file or directory), after"
    said = {"remove a CSV": removed, "remove a CSV, 2 workers": removed,
            "cut a Parquet file": f"seqwatch run: {victim} cannot be read as a Parquet file ("}[change]
    assert lines[-1].startswith(said), result.stderr[-3000:]
    assert lines[-1].endswith("after the run had planned its reading (an input removed, cut, replaced or made "
                              "unreadable meanwhile); nothing was committed, rerun once the inputs are complete")
    assert not (out / "manifest.json").exists() and not list(out.glob("_staging-*"))


def _refuse_listing(monkeypatch, suffix: str) -> None:
    """Listing a folder whose path ends with ``suffix`` fails as it does for a user who may not read it (the tests
    run as root, who can list any folder)."""
    scandir = os.scandir

    def refused(folder="."):
        if os.fspath(folder).rstrip("/").endswith(suffix):
            raise PermissionError(13, "Permission denied", os.fspath(folder))
        return scandir(folder)

    monkeypatch.setattr(os, "scandir", refused)


def test_a_folder_under_an_input_folder_that_cannot_be_listed_is_refused(small_model_dir, tmp_path, monkeypatch,
                                                                          capsys):
    """Its files had been left out of the run without a word (Beam's file system skips what it cannot list):
    exit 0, and the manifest named the other folder's files only. (The tests run as root, who can list any
    folder, so listing it fails here as it does for another user.)"""
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    _readings(inputs, "pump-01.csv")
    _readings(inputs / "sub", "pump-02.csv", seed=4)
    _refuse_listing(monkeypatch, "/sub")
    with pytest.raises(PermissionError, match=f"^cannot list the folder {inputs / 'sub'} under {inputs} "
                                              f"\\(Permission denied\\): its files would be left out"):
        expand_inputs([str(inputs)])
    code = main(["run", "--input", str(inputs), "--model-dir", str(small_model_dir), "--output",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"seqwatch run: cannot list the folder {inputs / 'sub'}"), err


def test_a_file_that_cannot_be_read_or_written_is_one_sentence(tmp_path, monkeypatch, capsys):
    """A model or input file without read permission, and a full disk under the output lock, had each ended the
    CLI with a traceback (exit 1)."""
    import seqwatch.pipelines.cli as cli

    assert _os_error_sentence(PermissionError(13, "Permission denied", "in/a.csv")) == (
        "cannot use in/a.csv: Permission denied [Errno 13]")
    assert _os_error_sentence(OSError(28, "No space left on device")) == "[Errno 28] No space left on device"

    def refused(args, beam_args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "m" / "model.keras"))

    monkeypatch.setattr(cli, "cmd_run", refused)
    code = main(["run", "--input", str(tmp_path / "in.csv"), "--model-dir", str(tmp_path / "m"), "--output",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"seqwatch run: cannot use {tmp_path / 'm' / 'model.keras'}: Permission denied "
                                 f"[Errno 13]"]


def test_a_keras_backend_that_is_not_installed_is_refused_before_anything_is_read(tmp_path, monkeypatch, capsys):
    """It had failed inside the pipeline's scoring step, after the output lock, with 262 lines (exit 1)."""
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here")
    base = ["run", "--input", str(tmp_path / "missing.csv"), "--model-dir", str(tmp_path / "m"), "--output",
            str(tmp_path / "out")]
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert main(base) == 2
    assert capsys.readouterr().err.strip() == (
        "seqwatch run: KERAS_BACKEND=torch names a Keras backend that is not installed here (no module torch); "
        "seqwatch installs jax: unset KERAS_BACKEND or set it to jax")
    monkeypatch.setenv("KERAS_BACKEND", "bogus")
    assert main(base) == 2
    assert capsys.readouterr().err.strip().startswith("seqwatch run: KERAS_BACKEND=bogus is not a Keras backend")
    assert not (tmp_path / "out").exists()


def test_a_second_training_into_a_model_folder_in_use_is_refused(small_model_dir, tmp_path, capsys):
    """Two trainings into one --model-dir had each exited 0, the folder holding whichever saved last, and a model
    file of one beside the other's metadata where their saves crossed."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(small_model_dir, model)
    path = _readings(tmp_path, n_steps=600)
    held, release = threading.Event(), threading.Event()

    def another_training():  # another thread takes the lock as another process would (flock per open file)
        with output_lock(str(model), "training", ""):
            held.set()
            release.wait(60)

    thread = threading.Thread(target=another_training)
    thread.start()
    try:
        assert held.wait(30)
        code = main(["train", "--input", str(path), "--model-dir", str(model), "--window", "8", "--units", "4",
                     "--epochs", "1"])
    finally:
        release.set()
        thread.join()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err[-1].startswith("seqwatch train: another seqwatch training (process ") and err[-1].endswith(
        f"is writing into {model}; wait for it to end, or give this training its own --model-dir")
    assert (model / "metadata.json").read_bytes() == (small_model_dir / "metadata.json").read_bytes()


def test_an_empty_file_among_the_inputs_is_noted(small_model_dir, tmp_path, capsys):
    """A zero-byte file alone is refused ("the input holds no records"); one among others, as a failed export
    leaves it, had passed without a word."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    _readings(inputs, "pump-01.csv")
    (inputs / "pump-02.csv").write_bytes(b"")
    assert main(["run", "--input", str(inputs), "--model-dir", str(small_model_dir), "--output",
                 str(tmp_path / "out")]) == 0
    assert (f"seqwatch run: note: 1 of the 2 input files are empty (0 bytes), so this run holds no reading of "
            f"them: {inputs / 'pump-02.csv'}") in capsys.readouterr().err.splitlines()


def test_a_failed_training_removes_only_the_empty_folders_it_made(tmp_path, capsys):
    """Found by the review: the folder made for the training's lock was removed with rmtree when nothing was saved,
    and '--model-dir x/new/..' (which did not exist as written) took everything in x with it. Now only the lock
    file and the folders the training made, while empty, are removed."""
    keep = tmp_path / "x"
    (keep / "data").mkdir(parents=True)
    (keep / "precious.txt").write_text("kept")
    missing = str(tmp_path / "missing.csv")
    assert main(["train", "--input", missing, "--model-dir", str(keep / "new" / "..")]) == 2
    assert (keep / "precious.txt").read_text() == "kept" and (keep / "data").is_dir()
    assert main(["train", "--input", missing, "--model-dir", str(tmp_path / "models" / "pumps" / "v1")]) == 2
    assert not (tmp_path / "models").exists()  # v1 and the folders above it that it made
    capsys.readouterr()


def test_a_volumes_lost_and_found_under_an_input_folder_is_not_refused(small_model_dir, tmp_path, monkeypatch):
    """Found by the review: a volume's root given as --input holds lost+found, which only root may list; it holds
    no input, and must not refuse the run as another folder that cannot be listed does."""
    inputs = tmp_path / "volume"
    (inputs / "lost+found").mkdir(parents=True)
    path = _readings(inputs, "pump-01.csv")
    _refuse_listing(monkeypatch, "/lost+found")
    assert expand_inputs([str(inputs)]) == [str(path)]


def test_a_sigterm_whose_exception_python_dropped_stops_the_demo_where_it_is(tmp_path):
    """Before dropped interrupts were delivered again, only a run's commit and a training's save stopped on one: the
    demo trained on, and went on to generate, run and report (found by the bug hunt of operational failures)."""
    output = tmp_path / "demo"
    command = _script(tmp_path, f"""
        import sys
        from seqwatch.models.detector import Seq2SeqDetector
        from seqwatch.pipelines.cli import main

        fit = Seq2SeqDetector.fit

        def signal_then_fit(self, *args, **kwargs):
            dropped_sigterm()
            return fit(self, *args, **kwargs)

        Seq2SeqDetector.fit = signal_then_fit
        sys.exit(main(["demo", "--quick", "--output", {str(output)!r}]))
    """)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.stdout.count("interrupt delivered again: True") >= 1, (result.stdout, result.stderr[-3000:])
    assert result.returncode == 143, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("seqwatch demo: stopped by SIGTERM"), result.stderr[-3000:]
    assert "epoch" not in result.stderr  # stopped before its first epoch
    assert not list(output.rglob("manifest.json")) and not list(output.rglob("metadata.json"))


def test_a_dropped_interrupt_is_sent_again_only_while_nothing_has_acted_on_it():
    """A review: the signal sent again 20 ms after the drop had come even when the command was already stopping (a
    check before a commit raised first), or had ended: inside its clean-up, or after its handlers were restored."""
    import signal
    import time
    from types import SimpleNamespace

    from seqwatch.pipelines import interrupts

    got = []
    previous = signal.signal(signal.SIGUSR1, lambda number, frame: got.append(number))
    dropped = SimpleNamespace(exc_type=KeyboardInterrupt)
    try:
        interrupts.clear()
        interrupts.note_taken()
        assert interrupts.redeliver_dropped(dropped, signal.SIGUSR1)
        time.sleep(0.2)
        assert got == [signal.SIGUSR1]  # sent again
        assert interrupts.redeliver_dropped(dropped, signal.SIGUSR1)
        with pytest.raises(KeyboardInterrupt):
            interrupts.stop_if_taken()  # acted on before the 20 ms were up
        time.sleep(0.2)
        assert got == [signal.SIGUSR1]
        interrupts.note_taken()
        assert interrupts.redeliver_dropped(dropped, signal.SIGUSR1)
        interrupts.clear()  # the command ended
        time.sleep(0.2)
        assert got == [signal.SIGUSR1]
        assert not interrupts.redeliver_dropped(SimpleNamespace(exc_type=ValueError), signal.SIGUSR1)
        interrupts.clear()
        assert not interrupts.redeliver_dropped(dropped, signal.SIGUSR1)  # no signal has come
    finally:
        signal.signal(signal.SIGUSR1, previous)
        interrupts.clear()


def test_an_input_that_is_no_file_or_whose_name_is_not_utf8_is_refused_naming_it(small_model_dir, tmp_path):
    """Found by the bug hunt of pathological inputs: a named pipe named like a CSV in the input folder blocked the
    run for ever, and a Latin-1 file name (from an SMB share) failed it in a sentence naming no file."""
    (tmp_path / "in").mkdir()
    readings = _readings(tmp_path / "in")
    pipe = tmp_path / "in" / "pump-02.csv"
    os.mkfifo(pipe)
    with pytest.raises(FileNotFoundError, match=rf"^the input {pipe} is a named pipe, not a file: a run reads"):
        expand_inputs([str(tmp_path / "in")])
    code = main(["run", "--input", str(tmp_path / "in"), "--model-dir", str(small_model_dir), "--output",
                 str(tmp_path / "out")])
    assert code == 2 and not (tmp_path / "out" / "manifest.json").exists()
    pipe.unlink()
    latin = os.fsdecode(os.fsencode(str(tmp_path / "in")) + b"/pump-\xe9.csv")  # 'pump-é.csv' in Latin-1
    readings.rename(latin)
    with pytest.raises(FileNotFoundError, match=r"^the input file name b'.*pump-\\xe9.csv' is not UTF-8 text"):
        expand_inputs([str(tmp_path / "in")])
