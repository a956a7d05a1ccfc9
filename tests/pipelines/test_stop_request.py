"""The graceful stop of a stream (``seqwatch.pipelines.stop_request``): the file its readers look for."""
import os
import pickle

from seqwatch.pipelines import stop_request
from seqwatch.pipelines.stop_request import STOP_FILE, StopRequest, stop_file


def test_the_request_lives_in_the_output_folder_local_or_on_an_object_store(tmp_path):
    assert stop_file(str(tmp_path / "out")) == str(tmp_path / "out" / STOP_FILE)
    assert stop_file("gs://bucket/out/") == "gs://bucket/out/" + STOP_FILE
    assert STOP_FILE.startswith(".")  # dataset readers of the output skip it


def test_a_request_on_s3_is_an_object_looked_for_at_most_every_two_seconds(s3_store, monkeypatch, capfd):
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from seqwatch.pipelines.cli import _ask_stream_to_stop

    FileSystems.set_options(PipelineOptions(s3_store.beam_flags))
    now = [100.0]
    monkeypatch.setattr(stop_request.time, "monotonic", lambda: now[0])
    stop = StopRequest(stop_file(s3_store.url("stopped")))
    assert not stop.requested()
    _ask_stream_to_stop(StopRequest(stop.path), "SIGTERM")
    assert capfd.readouterr().err.startswith("seqwatch stream: stopping (SIGTERM)")
    assert f"seqwatch stream (pid {os.getpid()}) got SIGTERM at " in s3_store.read(f"stopped/{STOP_FILE}").decode()
    now[0] += 1.9
    assert not stop.requested()  # a request to the store each look: not again yet
    now[0] += 0.2
    assert stop.requested()
    copy = pickle.loads(pickle.dumps(stop))  # what a worker on another machine gets
    now[0] += 10
    assert copy.requested()
    stop.clear()
    assert s3_store.keys("stopped") == []
    stop.clear()  # nothing to take back: no error
    gone = StopRequest(stop_file("s3://no-such-bucket/out"))
    _ask_stream_to_stop(gone, "Ctrl-C")
    said = capfd.readouterr().err
    assert said.startswith("seqwatch stream: cannot ask the stream to stop gracefully (s3://no-such-bucket/out/"
                           ".seqwatch-stop: ") and "NoSuchBucket" in said and said.endswith("Ctrl-C again stops it at "
                                                                                              "once\n"), said
    assert len(said.splitlines()) == 1


def test_a_request_is_seen_once_its_file_exists_and_looked_for_at_most_every_quarter_second(tmp_path, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(stop_request.time, "monotonic", lambda: now[0])
    stop = StopRequest(str(tmp_path / STOP_FILE))
    assert not stop.requested()
    StopRequest(stop.path).request("a test")
    assert not stop.requested()  # looked 0.1 s ago: not again yet
    now[0] += 0.1
    assert not stop.requested()
    now[0] += 0.2
    assert stop.requested()
    assert "a test at " in (tmp_path / STOP_FILE).read_text()
    stop.clear()
    assert not (tmp_path / STOP_FILE).exists()
    assert stop.requested()  # once seen, seen: a reader that ended stays ended
    stop.clear()  # nothing to take back: no error


def test_a_request_travels_to_a_worker_without_what_this_one_saw(tmp_path):
    stop = StopRequest(str(tmp_path / STOP_FILE))
    stop.request("a test")
    assert stop.requested()
    stop.clear()
    copy = pickle.loads(pickle.dumps(stop))
    assert copy.path == stop.path and not copy.requested()


def test_a_streams_first_signal_asks_for_the_stop_and_says_so_in_one_line(tmp_path, capfd):
    from seqwatch.pipelines.cli import _ask_stream_to_stop

    stop = StopRequest(str(tmp_path / STOP_FILE))
    _ask_stream_to_stop(stop, "SIGTERM")
    assert stop.requested()
    assert capfd.readouterr().err == (
        "seqwatch stream: stopping (SIGTERM): the source reads no more, and what the stream holds is scored and "
        "written; a second SIGTERM or a Ctrl-C stops it at once, losing that\n")
    gone = StopRequest(str(tmp_path / "removed" / STOP_FILE))  # the output folder was taken away meanwhile
    _ask_stream_to_stop(gone, "Ctrl-C")
    assert capfd.readouterr().err == (
        f"seqwatch stream: cannot ask the stream to stop gracefully (No such file or directory: {gone.path}); "
        f"Ctrl-C again stops it at once\n")


def test_the_streams_help_says_how_a_ctrl_c_stops_it(capsys):
    import pytest

    from seqwatch.pipelines.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["stream", "--help"])
    assert " ".join(capsys.readouterr().out.split()).endswith(
        "Ctrl-C or SIGTERM stops a stream gracefully: it reads no more, writes what it read (scores, quarantine, "
        "counts, each entity's calibration) and exits 0; a second one stops it at once, losing what it held.")
