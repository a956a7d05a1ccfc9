"""Pipeline options seqwatch sets for particular Beam runners.

Prism (Beam's portable local runner, 2.77) splits a slow bundle of a stateful stage and hands the residual's keys
back to its scheduler while the primary part of the bundle still holds the same keys (``splitBundle`` in Prism's
``elementmanager.go`` removes them from its in-progress set). A second bundle can then process a key that the
first is still processing, and state written by one of them is lost. seqwatch's stateful steps (late gate,
incident merge, online calibration, flushes of the quarantine, counts and reading archive) rely on one bundle per
key, as Beam's model promises; measured on this machine, a replay on Prism lost the reading-archive writes of 9
of one entity's 119 batches in one run of four. Prism's own experiment ``prism_disable_sdf_split`` turns those
runner-initiated splits off (a splittable DoFn still checkpoints itself), so every run on Prism, and on the
DirectRunner (which in Beam 2.77 can hand a job to Prism), gets it.

A stream (``seqwatch stream``) runs on Prism unless ``--runner`` names another runner (``stream_runner_args``).
Beam's DirectRunner tries Prism for a streaming job too, but where it cannot download Prism's binary it falls back,
without a word, to its batch runner, which reads the source to its end before any step after it runs: a broker
stream then writes nothing and holds every message in memory, and a paced replay spins through hundreds of bundles
a second (a replay at 5x real speed: 13 GB after 16 minutes, nothing written).

Prism also asks the SDK to finalize bundles that had nothing to finalize (the bundle that pairs a splittable
DoFn's elements with their restrictions, and others of a DoFn that declares a bundle finalizer), and the Python SDK
worker, which runs in seqwatch's own process there, answers each with a RuntimeError that it prints to stderr as a
traceback before it logs it: one or more per Pub/Sub stream (found by the bug hunt of Pub/Sub and MQTT streams).
``finalize_released_bundles`` makes finalizing such a bundle a success with nothing to do.
"""
from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import subprocess
import threading
from pathlib import Path

PRISM_NO_SPLIT = "prism_disable_sdf_split"
DIRECT_RUNNERS = ("directrunner", "bundlebaseddirectrunner", "switchingdirectrunner")
# ``make prism`` builds the binary here in a checkout (an editable install); an installed wheel has none.
PRISM_IN_CHECKOUT = Path(__file__).resolve().parents[1] / ".tools" / "bin" / "prism"
# Runners whose options are all declared in ``apache_beam.options.pipeline_options``; another runner (Dask, a
# runner of your own) may declare options in its own module, which is imported only when the job starts.
RUNNERS_WITH_KNOWN_OPTIONS = ("", "directrunner", "bundlebaseddirectrunner", "switchingdirectrunner",
                              "prismrunner", "flinkrunner", "sparkrunner", "dataflowrunner", "portablerunner")


class BeamFlagError(ValueError):
    """A flag passed on to Beam that Beam cannot take: one sentence."""


class StreamRunnerError(ValueError):
    """A stream that its runner could not run as a stream: one sentence with the fix."""


# How Beam's check of a runner's options begins its refusal (``Pipeline``: its validator's errors, a line each).
BEAM_OPTIONS_REFUSED = "Pipeline has validations errors:"


def refused_options_sentence(message: str) -> str | None:
    """Beam's refusal of a runner's pipeline options (``BEAM_OPTIONS_REFUSED``, then one line per error, as for
    the DataflowRunner without ``--project``: five lines) as one sentence that names the flags; ``None`` for any
    other message."""
    if not message.startswith(BEAM_OPTIONS_REFUSED):
        return None
    missing, other = [], []
    for line in message[len(BEAM_OPTIONS_REFUSED):].splitlines():
        line = line.strip().rstrip(".")
        required = re.fullmatch(r"Missing required option: (\w+)", line)
        path = re.fullmatch(r"Missing GCS path option: (\w+)", line)
        if required:
            missing.append(f"--{required.group(1)}")
        elif path:
            missing.append(f"--{path.group(1)} (a gs:// path)")
        elif line:
            other.append(line[0].lower() + line[1:])
    needs = [f"it needs {', '.join(missing[:-1])} and {missing[-1]}" if len(missing) > 1 else
             f"it needs {missing[0]}"] if missing else []
    return "the runner refuses the pipeline's options: " + "; ".join(needs + other or ["(Beam gave no reason)"])


def beam_option_parser():
    """The argument parser Beam builds from every ``PipelineOptions`` class imported so far (Beam's own
    ``get_all_options`` hands it to ``add_extra_args_fn``); its ``error`` raises ``BeamFlagError``."""
    from apache_beam.options.pipeline_options import PipelineOptions

    box = {}
    PipelineOptions([]).get_all_options(add_extra_args_fn=lambda parser: box.setdefault("parser", parser))
    parser = box["parser"]

    def error(message):
        if not message.startswith("ambiguous option: "):  # Beam's parser ignores these too
            raise BeamFlagError(message)

    parser.error = error
    return parser


def unknown_beam_flags(beam_args: list[str]) -> tuple[list[str], list[str]]:
    """``(unknown, known)``: the arguments among ``beam_args`` that no Beam pipeline option takes (Beam would
    drop them with a log line, so a mistyped flag would silently change nothing), and every option string Beam
    knows. Nothing is unknown for runners outside ``RUNNERS_WITH_KNOWN_OPTIONS``. A value Beam refuses (an
    invalid choice, a number that is not one) raises ``BeamFlagError``."""
    parser = beam_option_parser()
    known_args, unknown = parser.parse_known_args(list(beam_args))
    runner = known_args.runner if isinstance(known_args.runner, str) or known_args.runner is None else ""
    if (runner or "").rsplit(".", 1)[-1].lower() not in RUNNERS_WITH_KNOWN_OPTIONS:
        unknown = []
    known = sorted(s for action in parser._actions for s in action.option_strings if s.startswith("--"))
    return unknown, known


def runner_name(options) -> str:
    """The runner the options name, lower case, without module path ('' when none is named)."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    name = runner if runner is None or isinstance(runner, str) else type(runner).__name__
    return (name or "").rsplit(".", 1)[-1].lower()


def apply_runner_fixes(options):
    """``options`` with the settings seqwatch needs on their runner (see the module docstring); returns them."""
    from apache_beam.options.pipeline_options import DebugOptions

    name = runner_name(options)
    if not name or "prism" in name or "direct" in name:
        debug = options.view_as(DebugOptions)
        if PRISM_NO_SPLIT not in (debug.experiments or []):
            debug.add_experiment(PRISM_NO_SPLIT)
        finalize_released_bundles()
    job_streams_without_deadline()
    return options


JOB_STREAMS = ("GetStateStream", "GetMessageStream")


def job_streams_without_deadline() -> None:
    """Patch Beam's portable runner (``JobServiceHandle``) so that its streams of a job's state and messages carry
    no deadline. Beam opens them with ``--job_server_timeout`` (300 s) as their gRPC deadline where the job service
    knows the job by its preparation id, as Prism does: every job on Prism that ran longer than that failed with
    DEADLINE_EXCEEDED (a stream after 5 minutes, in a traceback; Beam's issue 35867, whose fix raised the timeout
    from 60 s). Where the service does not (Flink's job server), Beam opens them again without a deadline, as it
    now does everywhere. The job service's other calls keep their timeout. Idempotent."""
    from apache_beam.runners.portability import portable_runner

    handle = portable_runner.JobServiceHandle
    if getattr(handle.__init__, "seqwatch_no_stream_deadline", False):
        return
    original = handle.__init__

    def __init__(self, job_service, *args, **kwargs):
        original(self, _StreamsWithoutDeadline(job_service), *args, **kwargs)

    __init__.seqwatch_no_stream_deadline = True
    handle.__init__ = __init__


class _StreamsWithoutDeadline:
    """A job service stub whose ``JOB_STREAMS`` calls drop their ``timeout``; every other attribute is the stub's."""

    def __init__(self, stub):
        self._stub = stub

    def __getattr__(self, name):
        attribute = getattr(self._stub, name)
        if name not in JOB_STREAMS:
            return attribute

        def call(request, *args, timeout=None, **kwargs):
            return attribute(request, *args, **kwargs)

        return call


def finalize_released_bundles() -> None:
    """Patch this process's Beam SDK worker (``SdkWorker.finalize_bundle``) so that a request to finalize a bundle
    that finished and was released without registering a finalization callback succeeds with nothing to do, as the
    request asks for nothing to be done; the SDK's own answer is a RuntimeError ("Bundle is not in a finalizable
    state"), printed to stderr as a traceback (see the module docstring). A bundle that failed, or one that the
    worker does not know, still gets the SDK's own answer. Idempotent."""
    from apache_beam.portability.api import beam_fn_api_pb2
    from apache_beam.runners.worker import sdk_worker

    original = sdk_worker.SdkWorker.finalize_bundle
    if getattr(original, "seqwatch_tolerant", False):
        return

    def finalize_bundle(self, request, instruction_id):
        try:
            released = self.bundle_processor_cache.lookup(request.instruction_id) is None
        except RuntimeError:  # failed or unknown: the SDK says so itself
            released = False
        if not released:
            return original(self, request, instruction_id)
        return beam_fn_api_pb2.InstructionResponse(instruction_id=instruction_id,
                                                   finalize_bundle=beam_fn_api_pb2.FinalizeBundleResponse())

    finalize_bundle.seqwatch_tolerant = True
    sdk_worker.SdkWorker.finalize_bundle = finalize_bundle


# Beam's portable Spark runner gives a splittable DoFn no checkpoint ("The ActiveBundle does not have a registered
# bundle checkpoint handler", after 15 s and an ERROR:root: line: found by hand, session 51), and every source of a
# stream is one that checkpoints: apache/beam#19468 (Beam added it for Spark's batch mode in 2026, not its streams)
SPARK_STREAM_REFUSAL = ("Beam's Spark runner cannot run a stream: its portable runner gives no checkpoint to a "
                        "splittable DoFn, which every source of a stream is (apache/beam#19468); run the stream on "
                        "Prism (leave out --runner), FlinkRunner or DataflowRunner; SparkRunner runs seqwatch run "
                        "and replay")


def stream_runner_args(beam_args: list[str], source: str, source_ends: bool) -> list[str]:
    """The Beam flags a stream from ``source`` runs with: ``beam_args``, on Prism when they name no runner; on
    Prism, the checkout's ``make prism`` binary unless ``--prism_location`` names one (without either, Beam's own,
    from its cache or downloaded). Raises ``StreamRunnerError`` when Prism's binary cannot be had, for the
    SparkRunner (``SPARK_STREAM_REFUSAL``), and for the DirectRunner on a
    source that does not end (a broker without ``--stop-after-idle``): where the DirectRunner cannot hand the job
    to Prism it reads the source to its end before anything after it runs, and this one has none."""
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(beam_args)
    options = PipelineOptions(args)
    name = runner_name(options)
    if name in DIRECT_RUNNERS and not source_ends:
        raise StreamRunnerError(
            f"a {source} stream without --stop-after-idle never ends, and the DirectRunner, where it cannot hand "
            f"the job to Prism, runs a stream as one batch that writes nothing before its source ends: leave out "
            f"--runner (Prism) or name a streaming runner (FlinkRunner, DataflowRunner)")
    if name == "sparkrunner":
        raise StreamRunnerError(SPARK_STREAM_REFUSAL)
    if not name:
        args.append("--runner=PrismRunner")
        name = "prismrunner"
    _check_job_server(PipelineOptions(args))
    if name == "prismrunner":
        args = _on_checkout_prism(args, options)
        prism_binary(PipelineOptions(args))
    return args


def _on_checkout_prism(args: list[str], options) -> list[str]:
    """``args`` with the checkout's ``make prism`` binary as ``--prism_location`` when they name none and it is
    built (else Beam looks in its cache or downloads its own)."""
    from apache_beam.options.pipeline_options import PrismRunnerOptions

    if not options.view_as(PrismRunnerOptions).prism_location and os.access(PRISM_IN_CHECKOUT, os.X_OK):
        return [*args, f"--prism_location={PRISM_IN_CHECKOUT}"]
    return args


def batch_runner_args(beam_args: list[str]) -> list[str]:
    """The Beam flags a batch job (run, replay, demo) runs with: ``beam_args``, and where they name the PrismRunner
    without ``--prism_location``, the checkout's ``make prism`` binary, as a stream gets it. Raises
    ``StreamRunnerError`` when Prism is named and its binary cannot be had (Beam's download failed in a
    traceback)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(beam_args)
    _check_job_server(options)
    if runner_name(options) != "prismrunner":
        return list(beam_args)
    args = _on_checkout_prism(list(beam_args), options)
    prism_binary(PipelineOptions(args), refusal="--runner=PrismRunner needs Prism's binary, which could not be had "
                                                "({reason}): build it with `make prism` (Go) and pass "
                                                "--prism_location=.tools/bin/prism, or leave out --runner")
    return args


JOB_ENDPOINT_CONNECT_S = 5.0  # how long a --job_endpoint may take to accept a connection before the run


def job_server_refusal(options) -> str | None:
    """One sentence where the job server a portable runner's job needs cannot be had, said before the run: a
    ``--job_endpoint`` where nothing answers (Beam waited ``--job_server_timeout``, 300 s, then a traceback), the
    PortableRunner without one (a traceback), and the job server jar of the FlinkRunner or SparkRunner that cannot
    be had (Beam's download of Beam 2.77's jar from Maven Central, which has none for Flink 2.2 or Spark 3, ended
    in a traceback). ``None`` for other runners, and where the job server is there."""
    from apache_beam.options.pipeline_options import PortableOptions

    name = runner_name(options)
    endpoint = options.view_as(PortableOptions).job_endpoint
    if endpoint and endpoint != "embed":  # "embed": Beam's job server in this process
        reason = _no_answer(endpoint)
        if reason is None:
            return None
        starts = name in ("prismrunner", "flinkrunner", "sparkrunner")
        return (f"no job server answers at {endpoint} (--job_endpoint): {reason}; start it first"
                + (", or leave out --job_endpoint for Beam to start one" if starts else ""))
    if name == "portablerunner":
        return ("--runner=PortableRunner needs --job_endpoint, the host:port of a running job server; or name the "
                "runner, whose job server Beam starts: --runner=PrismRunner, --runner=FlinkRunner")
    if name == "flinkrunner":
        return _flink_master_refusal(options) or _job_server_jar_refusal(options, name)
    if name == "sparkrunner":
        return _spark_master_refusal(options) or _job_server_jar_refusal(options, name)
    return None


SPARK_MASTER_PORT = 7077  # a Spark standalone master's port, where spark:// names none


def _spark_master_refusal(options) -> str | None:
    """The sentence where no Spark standalone master answers at ``--spark_master_url`` (``spark://host:port``, or
    several for a master with standbys): Spark tried for a minute, then failed the job with "Cannot call methods
    on a stopped SparkContext" (68 s, found by hand). Other masters (``local[N]``, ``yarn``, ``k8s://``) are
    Spark's to reach."""
    from apache_beam.options.pipeline_options import SparkRunnerOptions

    url = (options.view_as(SparkRunnerOptions).spark_master_url or "").strip()
    if not url.startswith("spark://"):
        return None
    reasons = []
    for master in url[len("spark://"):].split(","):
        host, _, port = master.strip().partition(":")
        port = port or str(SPARK_MASTER_PORT)
        if not (host and port.isdigit()):
            return None  # not host:port: Spark's to refuse
        reason = _no_answer(f"{host}:{port}")
        if reason is None:
            return None
        reasons.append(f"{host}:{port}: {reason}")
    return (f"no Spark master answers at --spark_master_url={url} ({'; '.join(reasons)}): start it first, or leave "
            f"out --spark_master_url for a Spark of the job's own (local[4])")


FLINK_REST_PORT = 8081  # a Flink cluster's REST port, where --flink_master names none


def _flink_master_refusal(options) -> str | None:
    """The sentence where nothing answers at the Flink cluster ``--flink_master`` names: Beam's job server tried
    it for a minute, logged an ``ERROR:root:`` line and failed the job (68 s, found by hand)."""
    from urllib.parse import urlsplit

    from apache_beam.options.pipeline_options import FlinkRunnerOptions
    from apache_beam.runners.portability.flink_runner import MAGIC_HOST_NAMES

    master = options.view_as(FlinkRunnerOptions).flink_master.strip()
    if master in MAGIC_HOST_NAMES:
        return None
    url = urlsplit(master if re.match(r"^https?://", master) else f"http://{master}")
    try:
        host, port = url.hostname, url.port or FLINK_REST_PORT
    except ValueError:  # a port that is no number: Beam's to refuse
        return None
    reason = _no_answer(f"{host}:{port}") if host else None
    if reason is None:
        return None
    return (f"no Flink cluster answers at {host}:{port} (--flink_master={master}): {reason}; start it first, or "
            f"leave out --flink_master for a Flink of the job's own ([local])")


def _check_job_server(options) -> None:
    """``StreamRunnerError`` with ``job_server_refusal``'s sentence, where it has one."""
    refusal = job_server_refusal(options)
    if refusal is not None:
        raise StreamRunnerError(refusal)


def _no_answer(endpoint: str, timeout_s: float = JOB_ENDPOINT_CONNECT_S) -> str | None:
    """Why nothing accepts a connection at ``endpoint`` (``host:port``) within ``timeout_s``, or ``None`` where
    something does (or the endpoint is no ``host:port``, left to Beam)."""
    import socket

    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def _job_server_jar_refusal(options, name: str) -> str | None:
    """The sentence where the FlinkRunner's or SparkRunner's job server jar (``--flink_job_server_jar``, else
    Beam's from Maven Central) cannot be had; fetched now, as Beam would fetch it, into Beam's cache."""
    from apache_beam.options.pipeline_options import JobServerOptions

    if name == "flinkrunner":
        from apache_beam.runners.portability.flink_runner import FlinkJarJobServer as JarJobServer
        flag, runner = "--flink_job_server_jar", "FlinkRunner"
        hint = " (`make flink-job-server` assembles one, README \"Flink\")"
    else:
        from apache_beam.runners.portability.spark_runner import SparkJarJobServer as JarJobServer
        flag, runner = "--spark_job_server_jar", "SparkRunner"
        hint = " (`make spark-job-server` assembles one, README \"Spark\")"
    try:
        JarJobServer.local_jar(JarJobServer(options).path_to_jar(), options.view_as(JobServerOptions).jar_cache_dir)
    except RuntimeError as exc:
        fetched = re.match(r"Unable to fetch remote job server jar at (\S+): (.+?)\. (?:Also|If no)", str(exc))
        why = f"Beam could not fetch {fetched.group(1)}: {fetched.group(2)}" if fetched else str(exc).rstrip(".")
        return (f"the {runner}'s job server jar cannot be had ({why}): give one with {flag}{hint}, or a running "
                f"job server with --job_endpoint")
    return None


def prism_binary(options, refusal: str | None = None) -> str:
    """The path of the Prism binary that ``options`` give Beam (``--prism_location``, Beam's cache, or a download,
    as Beam's ``PrismJobServer`` resolves it); ``StreamRunnerError`` when there is none to be had, with
    ``refusal`` (its ``{reason}`` filled in) or a stream's sentence."""
    from apache_beam.runners.portability.prism_runner import PrismJobServer

    try:
        return PrismJobServer(options)._get_executable_path()
    except Exception as exc:  # noqa: BLE001 - a download refused, a path that is no binary: all one message
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0].rstrip(".")
        refusal = refusal or ("a stream runs on Prism unless --runner names another runner, and Prism's binary could "
                              "not be had ({reason}): build it with `make prism` (Go) and pass "
                              "--prism_location=.tools/bin/prism, or name another streaming runner (FlinkRunner, "
                              "DataflowRunner)")
        raise StreamRunnerError(refusal.format(reason=reason)) from None


# A stream's job server (Prism, Flink's), started by seqwatch in a session of its own (``job_server_of_its_own``),
# and the guards of them still running in this process (``stop_own_job_servers``).
_OWN_JOB_SERVERS: list = []
PRISM_IDLE_SHUTDOWN = "60s"  # a Prism whose guard was killed too ends this long after its job failed
JOB_SERVER_STOP_WAIT_S = 5.0  # from SIGINT to SIGKILL, as Beam stops the job servers it starts


@contextlib.contextmanager
def job_server_of_its_own(beam_args: list[str], prism_idle_shutdown: str = PRISM_IDLE_SHUTDOWN):
    """Yield ``beam_args`` for a stream, with ``--job_endpoint`` of a job server that seqwatch starts for it in a
    session of its own, and stop that job server when the block ends: Prism, and Flink's job server where Beam
    would start its jar (``--flink_master`` ``[local]``, ``[auto]`` or a cluster's address, without
    ``--flink_submit_uber_jar``). Other runners' args, and any that name a ``--job_endpoint``, are yielded as they
    are.

    Beam starts a job server in seqwatch's process group, where a terminal's Ctrl-C (and a scheduler's signal to
    the group: Airflow's BashOperator) stops it too, with the job and what its state held: the graceful stop of a
    stream (``stop_request``) needs the runner alive to write it. (systemd's default ``KillMode=control-group``
    signals every process of the service, whatever its session: ``deploy/systemd`` sets ``mixed``.) The job server
    runs with the command line Beam would use, under ``job_server_guard``, which stops it when seqwatch ends, be
    it by SIGKILL (Prism also gets ``--idle_shutdown_timeout=prism_idle_shutdown``: "0s" for one that serves pipelines
    minutes apart, as the tests' does). Its log lines go to the logger Beam relays them to (``PrismRunner``,
    ``FlinkJarJobServer``)."""
    from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions

    options = PipelineOptions(beam_args)
    name = runner_name(options)
    if options.view_as(PortableOptions).job_endpoint or name not in ("prismrunner", "flinkrunner"):
        yield list(beam_args)
        return
    with contextlib.ExitStack() as cleanup:
        if name == "prismrunner":
            command, endpoint, extra = _prism_command(options, prism_idle_shutdown)
            relay = _relay_prism_log
        else:
            found = _flink_command(beam_args, cleanup)
            if found is None:  # an uber jar submitted to a cluster: no job server to start
                yield list(beam_args)
                return
            command, endpoint, extra = found
            relay = _relay_log("FlinkJarJobServer")
        guard = _start_guarded(command)
        cleanup.push(lambda exc_type, exc, tb: _end_of_block(guard, ended_by=exc_type))
        last_lines = collections.deque(maxlen=JOB_SERVER_LAST_LINES)
        threading.Thread(target=relay, args=(guard.stdout, last_lines), daemon=True, name="job-server-log").start()
        _wait_until_serving(guard, endpoint, "Prism" if name == "prismrunner" else "Flink's job server", last_lines)
        yield [*beam_args, *extra, f"--job_endpoint={endpoint}"]


JOB_SERVER_START_S = 120.0  # a JVM and Flink's job server take seconds; Prism well under one
JOB_SERVER_LAST_LINES = 20


def _wait_until_serving(guard: subprocess.Popen, endpoint: str, what: str, last_lines,
                        timeout_s: float = JOB_SERVER_START_S) -> None:
    """Return once the job server answers on ``endpoint``; ``StreamRunnerError`` naming its last output line when
    it ends first (a jar that is no jar, no Java) or does not answer within ``timeout_s``. Beam's own wait for an
    endpoint it is given takes ``--job_server_timeout`` (300 s) and ends in a traceback."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        if guard.poll() is not None:
            time.sleep(0.2)  # its last lines, relayed
            said = next((line for line in reversed(last_lines) if line.strip()), "")
            raise StreamRunnerError(f"{what} ended as it started (exit status {guard.returncode})"
                                    + (f": {said.strip()}" if said else "") + f"; its command: {_shown(guard)}")
        if _no_answer(endpoint, timeout_s=1.0) is None:
            return
        if time.monotonic() > deadline:
            raise StreamRunnerError(f"{what} did not answer on {endpoint} within {timeout_s:.0f} s; its command: "
                                    f"{_shown(guard)}")
        time.sleep(0.1)


def _shown(guard: subprocess.Popen) -> str:
    args = [str(part) for part in guard.args]
    return " ".join(args[args.index("--") + 1:] if "--" in args else args)


def _prism_command(options, idle_shutdown: str = PRISM_IDLE_SHUTDOWN):
    from apache_beam.runners.portability.prism_runner import PrismJobServer

    command, endpoint = PrismJobServer(options).subprocess_cmd_and_endpoint()
    return [*command, f"--idle_shutdown_timeout={idle_shutdown}"], endpoint, []


def _flink_command(beam_args: list[str], cleanup: contextlib.ExitStack):
    """Flink's job server command line as Beam's ``FlinkRunner`` builds it, its endpoint, and the flags the job
    needs with it (the master's address with its scheme, as Beam sets it); ``None`` where Beam would start none.
    Its staged artifacts go to a temporary folder removed with ``cleanup`` unless ``--artifacts_dir`` names one."""
    import shutil
    import tempfile

    from apache_beam.options.pipeline_options import FlinkRunnerOptions, JobServerOptions, PipelineOptions
    from apache_beam.runners.portability.flink_runner import MAGIC_HOST_NAMES, FlinkJarJobServer, FlinkRunner

    options = PipelineOptions(beam_args)
    flink = options.view_as(FlinkRunnerOptions)
    master = FlinkRunner.add_http_scheme(flink.flink_master)
    if flink.flink_submit_uber_jar and master not in MAGIC_HOST_NAMES:
        return None
    extra = [f"--flink_master={master}"] if master != flink.flink_master else []
    if not options.view_as(JobServerOptions).artifacts_dir:
        artifacts = tempfile.mkdtemp(prefix="seqwatch-flink-artifacts-")
        cleanup.callback(shutil.rmtree, artifacts, ignore_errors=True)
        options = PipelineOptions([*beam_args, *extra, f"--artifacts_dir={artifacts}"])
    elif extra:
        options = PipelineOptions([*beam_args, *extra])
    command, endpoint = FlinkJarJobServer(options).subprocess_cmd_and_endpoint()
    return command, endpoint, extra


def _start_guarded(command: list) -> subprocess.Popen:
    """``command`` under ``job_server_guard``, in a session of its own; the guard's stdin is the pipe whose end
    stops it."""
    import sys

    guard = subprocess.Popen([sys.executable, "-m", "seqwatch.pipelines.job_server_guard",
                              "--wait", str(JOB_SERVER_STOP_WAIT_S), "--", *[str(part) for part in command]],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    _OWN_JOB_SERVERS.append(guard)
    return guard


def _end_of_block(guard: subprocess.Popen, ended_by: type | None = None) -> None:
    """Stop the block's job server, once the SDK worker has hung up where the block ended as it should. A block
    ``ended_by`` an exception (a failed job, a second Ctrl-C) does not wait: the runner does not close the worker's
    data stream after a failed job (Prism 2.77: the wait ran out its 3 s in 5 of 24 streams whose step raised, which
    took 4.1-4.9 s to end against 2.0-3.0 s without the wait), and the readers that its stop breaks are not shown
    (``cli._sdk_hangups_kept_quiet``)."""
    if ended_by is None:
        _let_the_sdk_worker_hang_up()
    _stop(guard)
    if guard in _OWN_JOB_SERVERS:
        _OWN_JOB_SERVERS.remove(guard)


# The threads of Beam's SDK worker that read its streams from the runner (sdk_worker.py, data_plane.py)
SDK_READER_THREADS = ("read_state", "read_grpc_client_inputs")
# ... and those that run its control stream (``run_worker_<worker>-<n>``), which the runner breaks too after a failed
# job (a Flink stream whose step raised)
SDK_CONTROL_THREAD_PREFIX = "run_worker_"


def sdk_stream_broken_by_the_runner(thread_name: str, exc: BaseException | None) -> bool:
    """Whether ``exc``, raised in the SDK worker's stream thread ``thread_name``, is a gRPC error: the runner's
    hang-up, not a failure to show, as the job's end, which the main thread waits for, says what happened. After a
    failed job Flink's job server closes the worker's streams (CANCELLED), Prism answers them that the worker is not
    registered (UNKNOWN), and a job server seqwatch stops breaks them; their threads had printed a traceback each
    before the job's end was said."""
    return (thread_name in SDK_READER_THREADS or thread_name.startswith(SDK_CONTROL_THREAD_PREFIX)) and is_grpc(exc)


def is_grpc(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a gRPC error (of a stream to or from the runner)."""
    return type(exc).__module__.split(".")[0] == "grpc"


def _let_the_sdk_worker_hang_up(timeout_s: float = 3.0) -> None:
    """Wait (at most ``timeout_s``) until the SDK worker in this process has closed its streams to the runner. It
    closes them when the runner ends its job, a little after the job's end reaches seqwatch; Prism stopped before
    that broke the state stream under the worker, whose reader thread printed a gRPC traceback after the stream's
    closing line (one run in ten with the machine's cores busy, and in a CI run)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(thread.name in SDK_READER_THREADS and thread.is_alive()
                                              for thread in threading.enumerate()):
        time.sleep(0.01)


def stop_own_job_servers(wait_s: float = JOB_SERVER_STOP_WAIT_S) -> None:
    """Stop every job server ``job_server_of_its_own`` started that still runs (before an ``os._exit``, which
    skips the blocks' ends)."""
    for guard in list(_OWN_JOB_SERVERS):
        _stop(guard, wait_s)


def _stop(guard: subprocess.Popen, wait_s: float = JOB_SERVER_STOP_WAIT_S) -> None:
    """Stop a guarded job server: the end of the guard's input has it stop the job server with SIGINT (as Beam
    stops it, as a terminal would) and SIGKILL after ``wait_s``; a guard that has not ended a little after that is
    killed."""
    if guard.stdin is not None and not guard.stdin.closed:
        try:
            guard.stdin.close()
        except OSError:  # the guard has ended: its pipe is broken
            pass
    try:
        guard.wait(timeout=wait_s + 2.0)
    except subprocess.TimeoutExpired:
        guard.terminate()  # the guard stops its job server at once on it
        try:
            guard.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            guard.kill()
            guard.wait()


_PRISM_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING, "WARNING": logging.WARNING,
                 "ERROR": logging.ERROR}


def _relay_log(logger_name: str):
    """A relay of a job server's output lines to the logger ``logger_name`` at INFO, as Beam relays them (the last
    ones kept in ``last_lines`` too)."""

    def relay(stream, last_lines=None) -> None:
        logger = logging.getLogger(logger_name)
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="backslashreplace").rstrip()
            if last_lines is not None:
                last_lines.append(line)
            logger.info("%s", line)

    return relay


def _relay_prism_log(stream, last_lines=None) -> None:
    """Prism's output, a JSON record per line, to the logger ``PrismRunner`` at each record's level (a line that
    is not such a record: INFO); the last ones kept in ``last_lines`` too."""
    logger = logging.getLogger("PrismRunner")
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="backslashreplace").rstrip()
        if last_lines is not None:
            last_lines.append(line)
        try:
            level = str(json.loads(line).get("level", "INFO"))
        except (ValueError, AttributeError):
            level = "INFO"
        logger.log(_PRISM_LEVELS.get(level.split("+")[0].split("-")[0].upper(), logging.INFO), "%s", line)
