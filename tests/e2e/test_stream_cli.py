"""``seqwatch stream`` on the DirectRunner (which plays a replay as a batch): what it says when the source ends."""
import pandas as pd

from seqwatch.models.synthetic import generate_sensor_data


def test_a_stream_that_quarantined_readings_says_so_by_reason_when_its_source_ends(small_model_dir, tmp_path,
                                                                                   wide_csv, capsys):
    """As a batch run does: the counts summed, then the quarantined readings by reason, naming the channel the
    model lacks and the --ignore that leaves its column out."""
    from seqwatch.pipelines.cli import main

    readings, _ = generate_sensor_data(n_entities=1, n_steps=120, seed=5, anomalies_per_entity=0)
    humidity = readings[readings["channel"] == "flow"].assign(channel="humidity", value=40.0)
    path = tmp_path / "pump-01.csv"
    wide_csv(pd.concat([readings, humidity], ignore_index=True), path)
    code = main(["stream", "--source", "replay", "--input", str(path), "--format", "wide", "--speed", "1000000",
                 "--model-dir", str(small_model_dir), "--output", str(tmp_path / "out"), "--runner=DirectRunner"])
    assert code == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("seqwatch stream:")]
    assert lines[-2].startswith("seqwatch stream: the source ended; records in 600 = scored 480 + quarantined 120, ")
    assert lines[-1] == (f"seqwatch stream: 120 of 600 readings were quarantined (unknown_channel 120); channels the "
                         f"model lacks: 'humidity' 120; leave such columns out with --ignore (e.g. --ignore "
                         f"humidity) or the mapping's 'ignore' list; each record and its reason is in "
                         f"{tmp_path / 'out'}/quarantine")


def test_a_second_stream_into_the_same_output_counts_only_its_own_readings(small_model_dir, tmp_path, wide_csv,
                                                                          capsys):
    """A stream restarted, or another one, into a folder that already holds a stream's counts and quarantine: it
    says so when it starts, and its totals and its notice of quarantined readings when the source ends are its own
    (they had summed both streams' counts files, and named the columns of both streams' quarantine files)."""
    from seqwatch.pipelines.cli import main

    out = tmp_path / "out"
    for name, steps, extra in (("first", 120, "humidity"), ("second", 60, "rssi")):
        readings, _ = generate_sensor_data(n_entities=1, n_steps=steps, seed=5, anomalies_per_entity=0)
        unknown = readings[readings["channel"] == "flow"].assign(channel=extra, value=40.0)
        wide_csv(pd.concat([readings, unknown], ignore_index=True), tmp_path / name / "pump-01.csv")
        assert main(["stream", "--source", "replay", "--input", str(tmp_path / name), "--format", "wide", "--speed",
                     "1000000", "--model-dir", str(small_model_dir), "--output", str(out),
                     "--runner=DirectRunner"]) == 0
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("seqwatch stream:")]
        earlier = [line for line in lines if "already holds the counts" in line]
        ended = [line for line in lines if "the source ended" in line]
        assert len(ended) == 1 and f"records in {5 * steps} = scored {4 * steps} + quarantined {steps}" in ended[0]
        assert len(earlier) == (name == "second")
        assert lines[-1].startswith(f"seqwatch stream: {steps} of {5 * steps} readings were quarantined "
                                    f"(unknown_channel {steps}); channels the model lacks: '{extra}' {steps}; ")
    assert earlier[0].startswith(f"seqwatch stream: {out}/counts already holds the counts of ")


def test_a_stream_that_scored_nothing_exits_3_as_a_run_does(small_model_dir, tmp_path, wide_csv, capsys):
    """Found by the bug hunt of streams: every reading quarantined (here: columns the model lacks) and the stream
    exited 0, so a scheduler could not tell it from one that scored."""
    from seqwatch.pipelines.cli import main

    readings, _ = generate_sensor_data(n_entities=1, n_steps=60, seed=5, anomalies_per_entity=0)
    readings["channel"] = "x_" + readings["channel"].astype(str)
    wide_csv(readings, tmp_path / "pump-01.csv")
    code = main(["stream", "--source", "replay", "--input", str(tmp_path / "pump-01.csv"), "--format", "wide",
                 "--speed", "1000000", "--model-dir", str(small_model_dir), "--output", str(tmp_path / "out"),
                 "--runner=DirectRunner"])
    assert code == 3
    assert "records in 240 = scored 0 + quarantined 240" in capsys.readouterr().err


def test_a_stream_and_a_batch_run_do_not_share_an_output_nor_streams_of_other_panes(small_model_dir, tmp_path,
                                                                                     wide_csv, capsys):
    """Found by the bug hunt of streams: a stream's score files are named by pane, so a stream into a batch run's
    folder, or restarted with another --pane-steps, wrote each window's row beside the earlier one (128 rows for 64
    windows); and a batch run into a stream's folder left the stream's counts/ and alerts_open/ beside its own
    outputs, whose open notices a fine-tuning then took for incidents still going on. Each is refused now."""
    import json

    from seqwatch.pipelines.cli import main

    readings, _ = generate_sensor_data(n_entities=1, n_steps=120, seed=5, anomalies_per_entity=0)
    path = tmp_path / "pump-01.csv"
    wide_csv(readings, path)
    common = ["--input", str(path), "--format", "wide", "--model-dir", str(small_model_dir), "--runner=DirectRunner"]
    stream = ["stream", "--source", "replay", "--speed", "1000000", *common]
    out = tmp_path / "streamed"
    assert main([*stream, "--output", str(out)]) == 0
    assert json.loads((out / ".seqwatch-stream.json").read_text())["pane_steps"] > 0
    capsys.readouterr()
    assert main([*stream, "--output", str(out), "--pane-steps", "400"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"seqwatch stream: {out} holds the outputs of a stream with panes of ") and \
        err.endswith("or give the stream its own --output") and "400 steps" in err
    assert main([*stream, "--output", str(out)]) == 0  # a restart with the same panes goes on
    capsys.readouterr()
    assert main(["run", *common, "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (f"seqwatch run: {out} holds a stream's outputs (counts/), which a "
                                               f"batch run would leave beside its own; give the run its own --output")
    batch = tmp_path / "batch"
    assert main(["run", *common, "--output", str(batch)]) == 0
    capsys.readouterr()
    assert main([*stream, "--output", str(batch)]) == 2
    assert capsys.readouterr().err.strip() == (f"seqwatch stream: {batch} holds a batch run's outputs (manifest.json): "
                                               f"a stream writes its panes beside them, not over them, so each window "
                                               f"would have two rows; give the stream its own --output")


def test_a_runner_that_ends_under_a_stream_is_one_sentence(tmp_path, monkeypatch, capsys):
    """Found by the bug hunt of streams: a SIGINT to a script's background job's process group (which the job
    ignores) stops Prism, and the job then ended with gRPC tracebacks (exit 1), or hung on its threads."""
    import pytest

    from seqwatch.pipelines import cli

    class _Rendezvous(Exception):  # what grpc raises in the main thread when the runner's end is gone
        def code(self):
            class Status:
                name = "CANCELLED"
            return Status()

    _Rendezvous.__module__ = "grpc._channel"

    def runner_gone(args, beam_args):
        raise _Rendezvous("Cancelled")

    monkeypatch.setattr(cli, "cmd_stream", runner_gone)
    monkeypatch.setattr(cli.os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
    with pytest.raises(SystemExit) as ended:
        cli.main(["stream", "--source", "replay", "--input", "x.csv", "--model-dir", "m", "--output",
                  str(tmp_path / "out")])
    assert ended.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"seqwatch stream: the runner ended the stream (CANCELLED: its process stopped, as on a signal to the job's "
        f"process group); what was written so far stays in {tmp_path / 'out'}")
    from seqwatch.pipelines.cli import _runner_connection_lost

    class _NotFound(_Rendezvous):  # a broker's answer through gRPC, not the runner's end (found by the review)
        def code(self):
            class Status:
                name = "NOT_FOUND"
            return Status()

    assert _runner_connection_lost(_NotFound("no such subscription")) is None
    assert _runner_connection_lost(RuntimeError("job failed")) is None
    monkeypatch.setattr(cli, "cmd_run", runner_gone)  # a batch run's gets a batch run's sentence (session 50: it
    # had been a traceback; test_batch_run.py has the case with Prism), not a stream's
    assert cli.main(["run", "--input", "x.csv", "--model-dir", "m", "--output", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "seqwatch run: the runner stopped answering during the job (CANCELLED); a batch run commits nothing unless "
        "it finishes, so the previous outputs are as they were")


def test_the_job_message_readers_failure_when_the_runner_ends_is_left_to_the_main_threads_sentence():
    """The same case, measured with Prism: besides the main thread's sentence, the portable runner's reader of job
    messages printed its own gRPC traceback."""
    import threading
    from types import SimpleNamespace

    from seqwatch.pipelines.cli import _quiet_interrupts

    class _Rendezvous(Exception):
        def code(self):
            class Status:
                name = "CANCELLED"
            return Status()

    _Rendezvous.__module__ = "grpc._channel"
    shown, before = [], threading.excepthook
    threading.excepthook = lambda args: shown.append(args.thread.name)  # what prints a thread's traceback
    restore = _quiet_interrupts()
    try:
        for name in ("wait_until_finish_read", "another_thread"):
            error = _Rendezvous("Stream removed (Channel closed!)")
            threading.excepthook(SimpleNamespace(exc_type=_Rendezvous, exc_value=error, exc_traceback=None,
                                                 thread=SimpleNamespace(name=name)))
    finally:
        restore()
        threading.excepthook = before
    assert shown == ["another_thread"]


def test_the_job_message_readers_other_failures_are_one_line(capsys):
    """Prism 2.77 failed a job with its own stuck-job check and sent a message of it that the reader could not
    parse (CI, 2026-12-05): the reader's gRPC traceback came before the job's end. Now one line; the job's end is
    said by the main thread (job_failure)."""
    import threading
    from types import SimpleNamespace

    from seqwatch.pipelines.cli import _OwnLines, _quiet_interrupts

    class _Rendezvous(Exception):
        def code(self):
            class Status:
                name = "INTERNAL"
            return Status()

        def details(self):
            return "Failed to parse server response: string field contains invalid UTF-8"

    _Rendezvous.__module__ = "grpc._channel"
    shown, before = [], threading.excepthook
    threading.excepthook = lambda args: shown.append(args.thread.name)  # what prints a thread's traceback
    _OwnLines.command = "seqwatch stream"
    restore = _quiet_interrupts()
    try:
        for name, error in (("wait_until_finish_read", _Rendezvous("<_MultiThreadedRendezvous of RPC that ...\n")),
                            ("wait_until_finish_read", ValueError("not what was expected\nmore")),
                            ("another_thread", _Rendezvous("x"))):
            threading.excepthook(SimpleNamespace(exc_type=type(error), exc_value=error, exc_traceback=None,
                                                 thread=SimpleNamespace(name=name)))
    finally:
        restore()
        threading.excepthook = before
    assert shown == ["another_thread"]
    assert capsys.readouterr().err.splitlines() == [
        "seqwatch stream: could not read the runner's messages of the job (INTERNAL: Failed to parse server "
        "response: string field contains invalid UTF-8); the job's end is said when the runner reports it",
        "seqwatch stream: could not read the runner's messages of the job (ValueError: not what was expected); the "
        "job's end is said when the runner reports it"]


def test_a_runner_that_needs_a_beam_extra_is_one_sentence(tmp_path, monkeypatch, capsys):
    """Found by the bug hunt of deploy examples: --runner=DataflowRunner without apache-beam[gcp] ended with a
    traceback of 41 lines (exit 1)."""
    import pytest

    from seqwatch.pipelines import cli

    def dataflow(args, beam_args):
        raise ImportError("Google Cloud Dataflow runner not available, please install apache_beam[gcp]")

    monkeypatch.setattr(cli, "cmd_run", dataflow)
    argv = ["run", "--input", "x.csv", "--model-dir", "m", "--output", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "seqwatch run: Google Cloud Dataflow runner not available, please install apache_beam[gcp]: seqwatch installs "
        "Beam without its [gcp] extra; pip install 'apache-beam[gcp]==2.77.0' into this environment (and on the "
        "workers: deploy/dataflow/README.md)")

    def other(args, beam_args):
        raise ImportError("No module named 'somethingelse'")

    monkeypatch.setattr(cli, "cmd_run", other)
    with pytest.raises(ImportError):
        cli.main(argv)


def test_a_stream_refused_before_its_job_is_not_counted_as_a_start(small_model_dir, tmp_path, capsys):
    """Review of the restart suffixes: the stream's start was noted before the broker checks, so a stream refused
    for a broker that does not answer still counted, and the first stream that ran named its files .s2."""
    from seqwatch.pipelines.cli import main
    from seqwatch.pipelines.streaming import STREAM_SETTINGS_FILE

    out = tmp_path / "out"
    # on the DirectRunner (a stream that ends when idle), so that the test needs no Prism: the broker check comes
    # after the runner's
    code = main(["stream", "--source", "mqtt", "--mqtt-broker", "127.0.0.1:9", "--topic", "plant/+/readings",
                 "--model-dir", str(small_model_dir), "--output", str(out), "--stop-after-idle", "5",
                 "--runner=DirectRunner"])
    assert code == 2 and "127.0.0.1:9" in capsys.readouterr().err
    assert not (out / STREAM_SETTINGS_FILE).exists()


def test_a_stream_with_score_window_files_writes_the_pane_files_rows_per_window(small_model_dir, tmp_path, wide_csv,
                                                                               capsys):
    """``--score-window-files 1``: the start line says where scores go; every score file is the one file of its
    flush window, and together they hold the rows a stream without the flag writes a file per entity and pane."""
    import pyarrow.parquet as pq

    from seqwatch.pipelines.cli import main

    readings, _ = generate_sensor_data(n_entities=2, n_steps=600, seed=5, anomalies_per_entity=1)
    for entity, part in readings.groupby("entity_id"):
        wide_csv(part, tmp_path / "in" / f"{entity}.csv")
    tables = {}
    for name, extra in (("panes", []), ("windows", ["--score-window-files", "1"])):
        assert main(["stream", "--source", "replay", "--input", str(tmp_path / "in"), "--format", "wide", "--speed",
                     "1000000", "--model-dir", str(small_model_dir), "--output", str(tmp_path / name),
                     "--flush-window", "1800", "--pane-steps", "64", "--runner=DirectRunner", *extra]) == 0
        files = sorted((tmp_path / name / "scores").rglob("*.parquet"))
        tables[name] = (files, pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
                        .sort_values(["entity_id", "window_end"]).reset_index(drop=True))
    started = [line for line in capsys.readouterr().err.splitlines() if "-> " + str(tmp_path / "windows") in line]
    assert len(started) == 1 and started[0].endswith(", scores per 1800s of event time in 1 file)")
    window_files, gathered = tables["windows"]
    assert len(window_files) < len(tables["panes"][0])
    assert all(f.name == "part-0-of-1.parquet" and int(f.parent.name) % 1_800_000_000 == 0 for f in window_files)
    assert len(gathered) > 0
    pd.testing.assert_frame_equal(gathered, tables["panes"][1])
