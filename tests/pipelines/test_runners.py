"""``seqwatch.pipelines.runners``: the settings seqwatch gives particular runners, and on Prism the reason for
them: without ``prism_disable_sdf_split``, Prism 2.77 lets two bundles process one key of a stateful step at once
(measured: each of four runs of the test below lost or split a key's state)."""
import collections
import contextlib
import os
import threading
import time

import apache_beam as beam
import pytest
from apache_beam import coders
from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.testing.util import assert_that, equal_to

from seqwatch.pipelines import runners
from seqwatch.pipelines.runners import (PRISM_NO_SPLIT, StreamRunnerError, apply_runner_fixes, runner_name,
                                        stream_runner_args)


@pytest.mark.parametrize("flags, fixed", [
    ([], True),  # no runner named: the DirectRunner, which in Beam 2.77 may hand the job to Prism
    (["--runner=PrismRunner"], True),
    (["--runner=DirectRunner"], True),
    (["--runner=apache_beam.runners.portability.prism_runner.PrismRunner"], True),
    (["--runner=FlinkRunner"], False),
    (["--runner=DataflowRunner"], False),
])
def test_runs_that_can_end_on_prism_get_its_split_switch_and_others_nothing(flags, fixed):
    options = apply_runner_fixes(PipelineOptions(flags + ["--experiments=other"]))
    experiments = options.view_as(DebugOptions).experiments
    assert (PRISM_NO_SPLIT in experiments) == fixed and "other" in experiments
    assert apply_runner_fixes(options).view_as(DebugOptions).experiments.count(PRISM_NO_SPLIT) == int(fixed)


def test_runner_name_is_the_class_name_in_lower_case():
    assert runner_name(PipelineOptions(["--runner=apache_beam.runners.portability.prism_runner.PrismRunner"])) == \
        "prismrunner"
    assert runner_name(PipelineOptions([])) == ""


@pytest.fixture
def checkout_prism(tmp_path, monkeypatch):
    """A stand-in for the checkout's ``make prism`` binary (an executable file; nothing runs it here)."""
    binary = tmp_path / "tools" / "prism"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setattr(runners, "PRISM_IN_CHECKOUT", binary)
    return binary


def test_a_batch_job_that_names_prism_gets_the_checkouts_binary(checkout_prism, tmp_path):
    # `seqwatch run --runner=PrismRunner` ended in Beam's traceback: it tried to download Prism from GitHub.
    assert runners.batch_runner_args(["--runner=PrismRunner"]) == [
        "--runner=PrismRunner", f"--prism_location={checkout_prism}"]
    assert runners.batch_runner_args(["--runner=DirectRunner"]) == ["--runner=DirectRunner"]
    assert runners.batch_runner_args([]) == []
    with pytest.raises(StreamRunnerError, match=r"^--runner=PrismRunner needs Prism's binary, which could not be "
                                                r"had \(Unable to parse binary URL .*\): build it with `make prism` "):
        runners.batch_runner_args(["--runner=PrismRunner", f"--prism_location={tmp_path / 'none'}"])


def test_a_stream_that_names_no_runner_runs_on_the_checkouts_prism(checkout_prism, tmp_path):
    assert stream_runner_args(["--flush"], "kafka", source_ends=False) == [
        "--flush", "--runner=PrismRunner", f"--prism_location={checkout_prism}"]
    # Prism named without a location: the checkout's too (Beam would download its own).
    assert stream_runner_args(["--runner=PrismRunner"], "replay", source_ends=True) == [
        "--runner=PrismRunner", f"--prism_location={checkout_prism}"]
    # A --prism_location of the user's own is kept.
    own = tmp_path / "my-prism"
    own.write_text("#!/bin/sh\n")
    assert stream_runner_args([f"--prism_location={own}"], "replay", source_ends=True) == [
        f"--prism_location={own}", "--runner=PrismRunner"]


@pytest.mark.parametrize("flags, source, ends", [
    (["--runner=DirectRunner"], "replay", True),  # a replay ends: the DirectRunner runs it as one batch
    (["--runner=DirectRunner"], "kafka", True),  # --stop-after-idle
    (["--runner=FlinkRunner", "--flink_master=[local]", "--flink_job_server_jar={jar}"], "kafka", False),
    (["--runner=DataflowRunner"], "pubsub", False),
])
def test_a_stream_on_a_runner_it_names_keeps_its_flags(flags, source, ends, checkout_prism, tmp_path):
    (tmp_path / "job-server.jar").write_bytes(b"a jar")  # a local jar (without one, Beam's would be downloaded)
    flags = [flag.format(jar=tmp_path / "job-server.jar") for flag in flags]
    assert stream_runner_args(flags, source, source_ends=ends) == flags


@pytest.mark.parametrize("source", ["kafka", "pubsub", "mqtt"])
def test_the_direct_runner_is_refused_for_a_broker_stream_that_never_ends(source):
    with pytest.raises(StreamRunnerError, match=f"^a {source} stream without --stop-after-idle never ends, and the "
                                                f"DirectRunner, .* writes nothing before its source ends: leave out "
                                                f"--runner \\(Prism\\)"):
        stream_runner_args(["--runner=DirectRunner"], source, source_ends=False)


def test_a_prism_binary_that_cannot_be_had_is_one_sentence_naming_the_fix(tmp_path):
    with pytest.raises(StreamRunnerError) as raised:
        stream_runner_args([f"--prism_location={tmp_path / 'none'}"], "replay", source_ends=True)
    message = str(raised.value)
    assert message.startswith("a stream runs on Prism unless --runner names another runner, and Prism's binary "
                              "could not be had (")
    assert message.endswith("build it with `make prism` (Go) and pass --prism_location=.tools/bin/prism, or name "
                            "another streaming runner (FlinkRunner, DataflowRunner)")
    assert "\n" not in message and str(tmp_path / "none") in message


class _CountPerKey(beam.DoFn):
    """Every value of a key into a bag; the bag's size once, when the input is done. A few slow elements make
    Prism's progress checks see a stuck bundle and split it."""

    BAG = BagStateSpec("bag", coders.VarIntCoder())
    DONE = TimerSpec("done", TimeDomain.WATERMARK)

    def process(self, element, bag=beam.DoFn.StateParam(BAG), done=beam.DoFn.TimerParam(DONE)):
        if element[1] % 40 == 0:
            time.sleep(0.2)
        bag.add(element[1])
        done.set(beam.window.GlobalWindow().max_timestamp())

    @on_timer(DONE)
    def count(self, key=beam.DoFn.KeyParam, bag=beam.DoFn.StateParam(BAG)):
        yield key, len(list(bag.read()))


@pytest.mark.slow
def test_on_prism_a_stateful_step_sees_every_element_of_a_key_in_one_state(prism_options):
    """Counted in state, each key's 1,000 values come out once, as one count of 1,000. Without the switch Prism
    split the slow bundles and returned the residual's keys to its scheduler while the primary still held them:
    four runs out of four gave a key twice (467 + 533) or lost half of it (500)."""
    with beam.Pipeline(options=prism_options()) as p:
        counts = (p | beam.Create([(f"k{i % 3}", i) for i in range(3000)])
                  | beam.Reshuffle()
                  | beam.ParDo(_CountPerKey()))
        assert_that(counts, equal_to([("k0", 1000), ("k1", 1000), ("k2", 1000)]))


def test_a_job_on_prism_runs_longer_than_the_job_server_timeout(prism_options):
    """Beam gave the streams of a job's state and messages ``--job_server_timeout`` (300 s) as their gRPC deadline
    where the job service knows the job by its preparation id, as Prism does: every stream on Prism failed after 5
    minutes with DEADLINE_EXCEEDED, in a traceback (found by a stream left running). Here the timeout is 2 s and
    the job takes longer."""
    with beam.Pipeline(options=prism_options("--job_server_timeout=2")) as p:
        slow = p | beam.Create([1, 2, 3]) | beam.Reshuffle() | beam.Map(lambda x: (time.sleep(1.5), x)[1])
        assert_that(slow, equal_to([1, 2, 3]))


def test_the_job_services_other_calls_keep_their_timeout():
    from seqwatch.pipelines.runners import JOB_STREAMS, _StreamsWithoutDeadline

    calls = []

    class Stub:  # the generated gRPC stub's shape: one callable per method
        def __getattr__(self, name):
            return lambda request, **kwargs: calls.append((name, request, kwargs))

    stub = _StreamsWithoutDeadline(Stub())
    for name in (*JOB_STREAMS, "Prepare", "Cancel"):
        getattr(stub, name)("request", timeout=300)
    assert calls == [("GetStateStream", "request", {}), ("GetMessageStream", "request", {}),
                     ("Prepare", "request", {"timeout": 300}), ("Cancel", "request", {"timeout": 300})]


def test_a_streams_prism_runs_in_a_session_of_its_own_and_is_stopped_with_the_block(prism_location, processes):
    """A terminal's Ctrl-C goes to the process group: Prism in seqwatch's group stopped under a stream that was
    to stop gracefully. It runs under a guard that stops it when seqwatch ends. Other runners, and a job server the
    flags name an endpoint of, are left as they are."""
    from seqwatch.pipelines.runners import job_server_of_its_own

    args = ["--runner=PrismRunner", f"--prism_location={prism_location}"]
    with job_server_of_its_own(args) as job_args:
        (guard,) = runners._OWN_JOB_SERVERS
        assert job_args[:2] == args and job_args[2].startswith("--job_endpoint=localhost:")
        assert guard.poll() is None and os.getpgid(guard.pid) != os.getpgid(0)
        assert "seqwatch.pipelines.job_server_guard" in guard.args
        assert f"--idle_shutdown_timeout={runners.PRISM_IDLE_SHUTDOWN}" in guard.args
        deadline = time.monotonic() + 10
        while not (prism := [pid for pid, name in processes.children(guard.pid).items() if name == "prism"]):
            assert time.monotonic() < deadline, processes.children(guard.pid)
            time.sleep(0.05)
        assert os.getpgid(prism[0]) == os.getpgid(guard.pid) != os.getpgid(0)
    assert guard.poll() is not None and not processes.alive(prism[0]) and runners._OWN_JOB_SERVERS == []
    for given in (["--runner=DataflowRunner"], [*args, "--job_endpoint=localhost:8099"], ["--runner=DirectRunner"],
                  ["--runner=FlinkRunner", "--flink_master=cluster:8081", "--flink_submit_uber_jar"]):
        with job_server_of_its_own(given) as job_args:
            assert job_args == given and runners._OWN_JOB_SERVERS == []


@pytest.mark.parametrize("program, said", [
    ("print('Error: Invalid or corrupt jarfile x.jar'); raise SystemExit(1)",
     "ended as it started (exit status 1): Error: Invalid or corrupt jarfile x.jar; its command: "),
    (None, "ended as it started (exit status 127): cannot start no-such-java: No such file or directory"),
    ("import time; time.sleep(30)", "did not answer on localhost:"),
])
def test_a_job_server_that_does_not_start_is_one_sentence_at_once(program, said):
    """A job server seqwatch starts for a stream is waited for until it answers: one that ended (a jar that is no
    jar, no Java) had left Beam waiting --job_server_timeout (300 s) for it, and then failed in a traceback."""
    import sys

    command = [sys.executable, "-c", program] if program else ["no-such-java", "-jar", "x.jar"]
    guard = runners._start_guarded(command)
    lines = collections.deque(maxlen=5)
    try:
        threading.Thread(target=runners._relay_log("test"), args=(guard.stdout, lines), daemon=True).start()
        started = time.monotonic()
        with pytest.raises(StreamRunnerError) as refused:
            runners._wait_until_serving(guard, "localhost:1", "the job server", lines, timeout_s=2.0)
        assert str(refused.value).startswith(f"the job server {said}") and time.monotonic() - started < 10
    finally:
        runners._end_of_block(guard)
    assert guard.poll() is not None and runners._OWN_JOB_SERVERS == []


def test_a_job_server_is_waited_for_until_it_answers():
    import socket
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = (f"import socket, time; time.sleep(1); s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); "
              f"time.sleep(30)")
    guard = runners._start_guarded([sys.executable, "-c", server])
    try:
        started = time.monotonic()
        runners._wait_until_serving(guard, f"127.0.0.1:{port}", "the job server", [], timeout_s=20)
        assert 0.9 < time.monotonic() - started < 15 and guard.poll() is None
    finally:
        runners._end_of_block(guard)


@pytest.mark.parametrize("master, extra", [
    ("[local]", []),  # the embedded cluster
    ("[auto]", []),
    ("flink-jm:8081", ["--flink_master=http://flink-jm:8081"]),  # a cluster: the scheme Beam adds for the job
    ("https://flink-jm:8081", []),
])
def test_flinks_job_server_is_started_as_beam_would_start_it(master, extra, tmp_path):
    """Flink's job server, as Beam's FlinkRunner starts its jar, with the master's address as Beam gives it; its
    staged artifacts in a folder of its own, removed with the stream."""
    import contextlib

    jar = tmp_path / "job-server.jar"
    jar.write_bytes(b"")
    args = ["--runner=FlinkRunner", f"--flink_job_server_jar={jar}", f"--flink_master={master}"]
    with contextlib.ExitStack() as cleanup:
        command, endpoint, job_extra = runners._flink_command(args, cleanup)
        artifacts = command[command.index("--artifacts-dir") + 1]
        assert os.path.isdir(artifacts)
    assert not os.path.exists(artifacts)
    assert command[:3] == ["java", "-jar", str(jar)] and job_extra == extra
    assert command[command.index("--flink-master") + 1] == (extra[0].split("=", 1)[1] if extra else master)
    assert endpoint.startswith("localhost:") and str(endpoint.split(":")[1]) in map(str, command)
    with contextlib.ExitStack() as cleanup:  # the user's own artifacts folder is theirs
        command, _, _ = runners._flink_command([*args, f"--artifacts_dir={tmp_path}"], cleanup)
        assert command[command.index("--artifacts-dir") + 1] == str(tmp_path)
    assert tmp_path.is_dir()


def test_prism_is_stopped_once_the_sdk_worker_has_hung_up_and_a_reader_broken_after_it_is_not_printed():
    """Prism stopped before the SDK worker in seqwatch's process had closed its state stream broke the stream under
    the worker, whose reader thread printed a gRPC traceback after a stream's closing line (a CI run; one run in
    ten with the cores busy). seqwatch waits for the readers (up to a limit), and a reader broken after it stopped
    Prism is not printed; another thread's failure still is."""
    import time

    import grpc

    from seqwatch.pipelines import runners
    from seqwatch.pipelines.cli import _quiet_interrupts

    reader = threading.Thread(target=time.sleep, args=(0.3,), name="read_state", daemon=True)
    reader.start()
    started = time.monotonic()
    runners._let_the_sdk_worker_hang_up(timeout_s=3.0)
    assert not reader.is_alive() and 0.2 < time.monotonic() - started < 2.0
    stuck = threading.Thread(target=time.sleep, args=(5,), name="read_grpc_client_inputs", daemon=True)
    stuck.start()
    started = time.monotonic()
    runners._let_the_sdk_worker_hang_up(timeout_s=0.2)
    assert stuck.is_alive() and time.monotonic() - started < 1.0  # a limit, not a hang

    def broken():
        raise grpc.RpcError("Stream removed (Socket closed)")

    printed, original = [], threading.excepthook
    threading.excepthook = lambda args: printed.append(args.thread.name)  # what Python's own hook would print
    try:
        restore = _quiet_interrupts()
        try:
            for name in ("read_state", "some_other_thread"):
                thread = threading.Thread(target=broken, name=name)
                thread.start()
                thread.join()
        finally:
            restore()
    finally:
        threading.excepthook = original
    assert printed == ["some_other_thread"]


@pytest.mark.parametrize("ended_by", [None, RuntimeError])
def test_a_stream_block_ended_by_an_exception_stops_its_job_server_without_waiting_for_the_sdk_worker(
        ended_by, prism_location, monkeypatch):
    """After a failed job Prism leaves the SDK worker's data stream open: the wait for the worker to hang up ran out
    its 3 s in 5 of 24 streams whose step raised (by hand, session 53). A block that ends as it should still waits."""
    waits = []
    monkeypatch.setattr(runners, "_let_the_sdk_worker_hang_up", lambda timeout_s=3.0: waits.append(timeout_s))
    with contextlib.suppress(RuntimeError):
        with runners.job_server_of_its_own(["--runner=PrismRunner", f"--prism_location={prism_location}"]) as args:
            guard = runners._OWN_JOB_SERVERS[-1]
            assert guard.poll() is None and any(arg.startswith("--job_endpoint=localhost:") for arg in args)
            if ended_by is not None:
                raise ended_by("Pipeline job-001 failed in state FAILED: bundle inst003 stage-003 failed")
    assert guard.poll() is not None and guard not in runners._OWN_JOB_SERVERS
    assert waits == ([] if ended_by else [3.0])


def test_a_reader_that_the_runner_breaks_after_the_command_has_returned_is_not_printed_either():
    """The SDK worker's threads outlive the command: one broken by Prism's end after the command had returned printed
    its traceback as the process exited, cut off there (``Exception in thread``; a stream whose step raised on Prism:
    in a `make test` run, and once in 480 runs by hand). The hook a command leaves keeps those quiet, passes the rest to the hook
    from before it, and is not wrapped again by the next command in the process."""
    import grpc

    from seqwatch.pipelines.cli import _quiet_interrupts

    printed, original = [], threading.excepthook
    threading.excepthook = lambda args: printed.append(args.thread.name)  # what Python's own hook would print
    try:
        for _ in range(2):  # two commands in one process
            _quiet_interrupts()()
        left = threading.excepthook
        _quiet_interrupts()()
        assert threading.excepthook is left
        for name, error in (("read_grpc_client_inputs", grpc.RpcError), ("run_worker_1-1", grpc.RpcError),
                            ("read_state", ValueError), ("some_other_thread", grpc.RpcError)):
            def fail(error=error):
                raise error("Socket closed")

            thread = threading.Thread(target=fail, name=name)
            thread.start()
            thread.join()
    finally:
        threading.excepthook = original
    assert printed == ["read_state", "some_other_thread"]


def test_a_job_server_that_cannot_be_had_is_one_sentence_before_the_run(tmp_path):
    """Found by hand: ``seqwatch run`` (or ``stream``) with a ``--job_endpoint`` where nothing listens waited
    ``--job_server_timeout`` (300 s) and ended in a traceback; ``--runner=PortableRunner`` without one, and the
    FlinkRunner or SparkRunner whose job server jar Beam could not download, ended in a traceback at once."""
    import socket

    from tests.conftest import _free_port

    closed = _free_port()
    refused = f"no job server answers at 127.0.0.1:{closed} (--job_endpoint): Connection refused; start it first"
    with pytest.raises(StreamRunnerError) as caught:
        runners.batch_runner_args(["--runner=PortableRunner", f"--job_endpoint=127.0.0.1:{closed}"])
    assert str(caught.value) == refused
    with pytest.raises(StreamRunnerError) as caught:
        stream_runner_args(["--runner=FlinkRunner", f"--job_endpoint=127.0.0.1:{closed}"], "kafka",
                           source_ends=False)
    assert str(caught.value) == f"{refused}, or leave out --job_endpoint for Beam to start one"
    with socket.socket() as listening:  # one that answers is left to Beam
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        answers = [f"--job_endpoint=127.0.0.1:{listening.getsockname()[1]}"]
        assert runners.batch_runner_args(["--runner=PortableRunner", *answers]) == ["--runner=PortableRunner",
                                                                                     *answers]
    with pytest.raises(StreamRunnerError) as caught:
        runners.batch_runner_args(["--runner=PortableRunner"])
    assert str(caught.value).startswith("--runner=PortableRunner needs --job_endpoint, the host:port of a running "
                                        "job server; ")
    # a jar Beam must download, from a server that is not there (as Maven Central has no Beam 2.77 jar for Spark 3)
    jar = f"http://127.0.0.1:{closed}/beam-runners-spark-3-job-server.jar"
    with pytest.raises(StreamRunnerError) as caught:
        runners.batch_runner_args(["--runner=SparkRunner", f"--spark_job_server_jar={jar}",
                                   f"--jar_cache_dir={tmp_path}"])
    assert str(caught.value).startswith(f"the SparkRunner's job server jar cannot be had (Beam could not fetch "
                                        f"{jar}: <urlopen error [Errno 111] Connection refused>): give one with "
                                        f"--spark_job_server_jar (`make spark-job-server` assembles one, README "
                                        f"\"Spark\"), or a running job server with --job_endpoint")
    local = tmp_path / "flink-job-server.jar"
    local.write_bytes(b"a jar")  # a local jar is Beam's to start
    flink = ["--runner=FlinkRunner", f"--flink_job_server_jar={local}"]
    assert runners.batch_runner_args(flink) == flink
    # a Flink cluster where nothing answers (found by hand: the job server tried it for 68 s, then failed the job)
    for master in (f"127.0.0.1:{closed}", f"http://127.0.0.1:{closed}/"):
        for runner_args in (runners.batch_runner_args,
                            lambda args: stream_runner_args(args, "kafka", source_ends=False)):
            with pytest.raises(StreamRunnerError) as caught:
                runner_args([*flink, f"--flink_master={master}"])
            assert str(caught.value) == (f"no Flink cluster answers at 127.0.0.1:{closed} (--flink_master={master}): "
                                         f"Connection refused; start it first, or leave out --flink_master for a "
                                         f"Flink of the job's own ([local])")
    with socket.socket() as listening:  # one that answers, and the embedded ones, are left to Beam
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        for master in (f"127.0.0.1:{listening.getsockname()[1]}", "[local]", "[auto]"):
            assert runners.batch_runner_args([*flink, f"--flink_master={master}"]) == [*flink,
                                                                                        f"--flink_master={master}"]
        # a Spark standalone master where nothing answers (found by hand: 68 s, then "Cannot call methods on a
        # stopped SparkContext"); one with a standby that answers, and the other masters, are Spark's
        spark = ["--runner=SparkRunner", f"--spark_job_server_jar={local}"]
        with pytest.raises(StreamRunnerError) as caught:
            runners.batch_runner_args([*spark, f"--spark_master_url=spark://127.0.0.1:{closed}"])
        assert str(caught.value) == (f"no Spark master answers at --spark_master_url=spark://127.0.0.1:{closed} "
                                     f"(127.0.0.1:{closed}: Connection refused): start it first, or leave out "
                                     f"--spark_master_url for a Spark of the job's own (local[4])")
        answers = listening.getsockname()[1]
        for master in (f"spark://127.0.0.1:{closed},127.0.0.1:{answers}", "local[2]", "yarn", "k8s://h:1"):
            given = [*spark, f"--spark_master_url={master}"]
            assert runners.batch_runner_args(given) == given


def test_a_stream_on_spark_is_refused_before_it_starts():
    """Found by hand (session 51): a stream on Beam's Spark runner failed after 15 s with an ERROR:root: line, as
    its portable runner gives a splittable DoFn no checkpoint (apache/beam#19468). A batch run there is Beam's."""
    for source, ends in (("replay", True), ("kafka", False)):
        with pytest.raises(StreamRunnerError) as caught:
            stream_runner_args(["--runner=SparkRunner", "--spark_job_server_jar=/no/such.jar"], source,
                               source_ends=ends)
        assert str(caught.value) == runners.SPARK_STREAM_REFUSAL
    assert runners.SPARK_STREAM_REFUSAL.startswith("Beam's Spark runner cannot run a stream: ")

