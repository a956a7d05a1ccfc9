"""The batch pipeline: files in, Parquet out, with a manifest whose counts reconcile.

``build_pipeline(p, plan)`` wires the transforms; ``run_batch(config, beam_args)`` checks everything a person
can get wrong before starting (inputs, model, columns), runs the pipeline into a staging folder, checks that
``records_in == records_scored + records_quarantined``, and only then moves the outputs into place and writes
``manifest.json``. A failed run leaves the previous outputs untouched.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import time
from pathlib import Path

import apache_beam as beam
import pandas as pd
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from seqwatch.models.windowing import window_dtype
from seqwatch.pipelines import interrupts
from seqwatch.pipelines.calibration_state import STATE_FILE
from seqwatch.pipelines.config import RunConfig
from seqwatch.pipelines.graph import (COUNTS_FILE, RunPlan, SourceOutputs, build_scoring_graph, read_json,
                                      write_json)
from seqwatch.pipelines.locality import file_spans
from seqwatch.pipelines.object_store import (folders_matching, move_path, open_as_stored, path_exists, read_bytes,
                                              store_error, store_sentence)
from seqwatch.pipelines.output_lock import LockRefused, OutputBusy, output_lock
from seqwatch.pipelines.parsing import FileLayout, partition_clash
from seqwatch.pipelines.sinks import MAX_SCORE_FILES
from seqwatch.pipelines.stage_metrics import stage_seconds
from seqwatch.pipelines.windows import pane_floor
from seqwatch.pipelines.sinks import PACKED_QUARANTINE_ROWS, delete_path, prepare_output_folder
from seqwatch.pipelines.sources import (FileReader, InputChangedError, ReadInputFiles, decimal_comma_clash,
                                        expand_inputs, read_header)
from seqwatch.schemas.mapping import renaming_hint
from seqwatch.schemas.validation import FAMILIES as SUITE_FAMILIES
from seqwatch.schemas.validation import load_suite_dict, with_earliest

SINKS = ("alerts", "forecasts", "scores", "quarantine")
MANIFEST_FILE = "manifest.json"
EMPTY_SINK_FILE = "empty.parquet"  # what a sink folder holds when a run wrote nothing to it: no row, its schema
# A run that commits in its job stages here: no other run deletes such a folder as a killed run's (it has no lock
# while its job runs; see CommitInJob)
JOB_STAGING_PREFIX = "_job-staging-"
# How long a job's commit waits for the output's lock, held by another run or another job's commit
COMMIT_LOCK_WAIT_S = 3600.0
# A _job-staging-* folder that nothing was written into for this long is a failed job's, and is deleted (a job that
# commits itself holds no lock while it runs, so a younger one may be a job still writing)
JOB_STAGING_KEPT_S = 7 * 86400.0


class RunError(Exception):
    """A run cannot start or finish; the message is one sentence for a person."""


# An input on an object store is known by the store's own checksum of it (GCS: its CRC32C; S3: its ETag), read in
# one request: its sha256 had cost reading the whole object once more before the run (on a Flex Template's
# launcher too)
STORE_DIGEST_PREFIX = "store:"


def input_digest(path: str, like: str | None = None) -> str:
    """What tells an input's content, for the run id and for a replay's check that a source is still the file the
    run read: the sha256 of a local file's bytes; of an object on S3 or GCS, ``STORE_DIGEST_PREFIX`` and the
    store's checksum of it. ``like``: a digest recorded before, to compare with (a remote input recorded by its
    sha256, as before 2026-12-06, is hashed so again)."""
    from seqwatch.pipelines.object_store import is_remote

    if is_remote(path) and (like is None or like.startswith(STORE_DIGEST_PREFIX)):
        try:
            checksum = FileSystems.checksum(path)
        except NotImplementedError:  # a file system without checksums: its bytes
            checksum = None
        if checksum:
            return f"{STORE_DIGEST_PREFIX}{checksum}"
    return _sha256_file(path)


def _sha256_file(path: str) -> str:
    """The digest of a file's bytes as stored (a compressed file is not decompressed: cheaper, and a damaged one
    cannot fail the plan)."""
    digest = hashlib.sha256()
    with open_as_stored(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _in_time_order(frame: pd.DataFrame, tolerance: float = 0.01) -> bool:
    """Whether each entity's readings of each channel in ``frame`` come in time order, but for at most a
    ``tolerance`` share of steps back (a late reading or two: sorted, the rows still show the interval; a
    shuffled file's go back at every other step)."""
    ordered = frame.sort_values(["entity_id", "channel"], kind="stable")
    stamps = ordered["timestamp"].to_numpy()
    entity, channel = ordered["entity_id"].to_numpy(), ordered["channel"].to_numpy()
    same = (entity[1:] == entity[:-1]) & (channel[1:] == channel[:-1])
    return int(((stamps[1:] < stamps[:-1]) & same).sum()) <= tolerance * max(int(same.sum()), 1)


def _preflight_channels(paths: list[str], config: RunConfig, channels: tuple, step_us: int, model: str) -> None:
    """Read each file's header, and a sample of the first fitting file's rows, to refuse data the model cannot
    score. A wide file that lacks some of the model's channels among files that have them all is a machine that
    does not report a sensor, not the wrong model: it runs, and its readings are quarantined as
    ``insufficient_data`` naming the channel (as a long file's entity without that channel is). The run is refused
    when no file has them all, or when the file looks long."""
    from seqwatch.models.detector import InsufficientDataError, infer_step_us
    from seqwatch.models.windowing import interval_fits

    seen_data, lacking, fitting = False, None, False
    for path in paths:
        header, sep = read_header(path, config.mapping.sep)
        if header is None:
            continue
        decimal_comma_clash(path, config.mapping, sep)
        layout = FileLayout.resolve(header, config.mapping, path)
        if layout.channel_names:
            missing = [c for c in channels if c not in layout.channel_names]
            if missing:
                long_roles = {config.mapping.long_column(role) for role in ("channel", "value")}
                looks_long = long_roles <= set(layout.channel_names)
                hint = ("; a file of entity, channel, timestamp and value columns is long: --format long, or the "
                        "mapping's 'format'" if looks_long else "")
                hint = hint or renaming_hint(channels, list(layout.channel_names))
                refusal = RunError(f"model {model} expects channels {list(channels)}, but {Path(path).name} has "
                                   f"{list(layout.channel_names)} (missing {missing}){hint}")
                if looks_long:
                    raise refusal
                lacking = lacking or refusal
                continue
        fitting = True
        if seen_data:
            continue
        # The first outputs of the reader up to some thousand readings: it gives out a chunk's odd lines (quoted
        # ones, say) before its clean ones, and a damaged file's record before both; two quoted rows alone had set
        # the file's interval.
        sample, rows = [], 0
        for batch_out in itertools.islice(FileReader(config.mapping, "preflight", chunk_rows=5000).read(path), 6):
            if len(batch_out[0]):
                sample.append(batch_out[0].frame)
                rows += len(batch_out[0])
            if rows >= 2000:
                break
        if not sample:
            continue
        frame = pd.concat(sample, ignore_index=True) if len(sample) > 1 else sample[0]
        found = set(frame["channel"].unique())
        if not found & set(channels):
            raise RunError(f"model {model} expects channels {list(channels)}, but {Path(path).name} has "
                           f"{sorted(found)[:10]}")
        if not _in_time_order(frame):
            # The first rows of a file out of time order are a scattering of its times, whose gaps say nothing
            # of its interval (a shuffled file of readings every 10 s had been refused as "every 30s"): the next
            # file may tell; the pipeline sorts each pane's readings and checks the interval pane by pane.
            continue
        seen_data = True
        try:
            data_step = infer_step_us(frame[frame["channel"].isin(channels)])
        except InsufficientDataError:
            continue
        if not interval_fits(data_step, step_us):
            raise RunError(f"model {model} was trained on readings every {step_us / 1e6:g}s, but {Path(path).name} "
                           f"has readings every {data_step / 1e6:g}s: train a model on readings like these (seqwatch "
                           f"train), or resample them to every {step_us / 1e6:g}s")
    if lacking is not None and not fitting:
        raise lacking


def plan_run(config: RunConfig, now_us: int | None = None) -> RunPlan:
    """Resolve and check a run before any pipeline starts; raises ``RunError`` with one clear sentence."""
    from seqwatch.models.artifact import METADATA_FILE, ArtifactError, check_model_file, read_metadata
    from seqwatch.pipelines.model_store import local_model_dir, pinned_model_dir
    from seqwatch.pipelines.parsing import SchemaDriftError
    from seqwatch.schemas.mapping import MappingError
    from seqwatch.pipelines.calibration import CalibrationError, model_risk
    from seqwatch.pipelines.calibration_state import CalibrationStateError, check_state, state_file
    from seqwatch.schemas.validation import SuiteError

    model_source = config.model_dir
    try:
        # A model root stands for its newest version: pin it, so the whole run scores with the model it planned for
        # (a URL where the model is on an object store: each worker loads it from there, model_store).
        config = dataclasses.replace(config, model_dir=pinned_model_dir(config.model_dir))
        model_files = local_model_dir(config.model_dir)
        metadata = read_metadata(model_files)
        check_model_file(model_files, metadata)
        paths = expand_inputs(list(config.inputs), exclude=(config.output,))
        suite = with_earliest(load_suite_dict(config.suite, read=read_bytes), config.earliest_us)
        window = metadata["config"]["window"]
        channels, step_us = tuple(metadata["channels"]), int(metadata["step_us"])
        _preflight_channels(paths, config, channels, step_us, f"{metadata['model_id']} {metadata['model_version']}")
        if config.online_calibration:
            model_risk(metadata)
        own_state = FileSystems.join(config.output, STATE_FILE)
        if config.calibration_from and _canonical_path(state_file(config.calibration_from)) == _canonical_path(own_state):
            raise CalibrationStateError(
                f"--calibration-from names the run's own --output {config.output}: the run replaces the state it "
                f"starts from there, so a rerun of the day would go on from its own state, and a replay would find it "
                f"changed; give each run an --output of its own (a dated folder) and --calibration-from the one before")
        # A state that does not exist at all (the day before the first of a series) starts every entity afresh, so
        # that one fixed command line starts a series; a folder without one is refused (check_state).
        state_from, state_sha256 = (check_state(config.calibration_from, missing_ok=True) if config.calibration_from
                                    else ("", ""))
    except (ArtifactError, FileNotFoundError, SuiteError, SchemaDriftError, MappingError, CalibrationError,
            CalibrationStateError) as exc:
        raise RunError(str(exc)) from None
    stride, length, max_gap = int(window["stride"]), int(window["length"]), int(window["max_gap"])
    minimum = 2 * (length + max_gap + 1)
    pane_steps = pane_floor(max(config.pane_steps, minimum), step_us)
    pane_steps += (-pane_steps) % stride
    run_id = config.run_id
    # what each input holds, for the run id and for a replay's check that its sources are still the files this run
    # read: with --run-id too (a replay of such a run had pasted a fixed line over another reading of a file
    # re-exported since, and read the line it fixed a second time)
    input_digests = tuple((path, input_digest(path)) for path in paths)
    if not run_id:
        # the files and the model, not how they were spelled: a cron line's relative paths and a rerun by hand
        # with absolute ones had given two run ids (and a notice that the run replaced its own inputs' outputs)
        settings = {**config.settings(), "inputs": [_canonical_path(path) for path in config.inputs],
                    "model_dir": _canonical_path(config.model_dir)}
        if config.suite not in SUITE_FAMILIES:  # a suite file, by the path it names
            settings["suite"] = _canonical_path(config.suite)
        if config.calibration_from:  # the state, by what it holds: a rerun of a day from the same one keeps its id
            settings["calibration_from"] = state_sha256 or "missing"
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        digest.update(metadata["model_version"].encode())
        # and what the model's metadata hold now: a threshold edited by hand keeps the version, not the outputs
        digest.update(_sha256_file(str(Path(model_files) / METADATA_FILE)).encode())
        # and the suite's rules, not only its name or path: an edited suite file quarantines other readings
        digest.update(json.dumps(suite, sort_keys=True, default=str).encode())
        for path, file_digest in input_digests:
            digest.update(_canonical_path(path).encode() + file_digest.encode())
        run_id = "run-" + digest.hexdigest()[:12]
    now_us = now_us if now_us is not None else int(time.time() * 1e6)
    staging = FileSystems.join(config.output, (JOB_STAGING_PREFIX if config.commit_in_job else "_staging-") + run_id)
    spans = file_spans(paths, config.mapping) if config.local_panes else None
    clash = partition_clash(spans.spans) if spans is not None else None
    if clash:
        raise RunError(clash)
    readings = estimated_readings(list(paths), config.mapping)
    return RunPlan(config, tuple(paths), run_id, staging, channels, step_us, length, stride, max_gap, pane_steps,
                   metadata["model_id"], metadata["model_version"], suite, now_us + config.future_tolerance_us,
                   model_source, spans, window_dtype(window.get("cumulative_channels"), metadata.get("scaler")),
                   input_digests, int(metadata.get("grid_offset_us", 0)), _canonical_path(state_from) if state_from
                   else "", state_sha256, score_files_for(readings, len(channels), stride), readings)


def build_pipeline(p: beam.Pipeline, plan: RunPlan) -> dict:
    """Add the batch graph to ``p``: files in, the shared scoring graph, outputs under ``plan.staging``."""
    cfg = plan.config
    read = p | "ReadInputs" >> ReadInputFiles(list(plan.paths), cfg.mapping, plan.run_id, cfg.chunk_rows,
                                              packed_quarantine=PACKED_QUARANTINE_ROWS)
    return build_scoring_graph(SourceOutputs(read.readings, read.quarantine, read.counts), plan, plan.staging)


_delete = delete_path


def _check_sinks_replaceable(output: str) -> None:
    """Refuse a local output whose sink folder is a link (a run replaces each sink folder whole: the commit had
    failed on the link halfway, with a traceback, leaving one sink of the new run among those of the old)."""
    if "://" in output:
        return
    for sink in SINKS:
        path = Path(output) / sink
        if path.is_symlink():
            raise RunError(f"{path} is a link: a run replaces each output folder whole when it commits, so it would "
                           f"not write through the link; give --output on the disk the link leads to instead")


def _fill_empty_sinks(staging: str) -> int:
    """A staged sink that received no row gets a file of none: a quiet night's alerts/ holds one, so that a query
    of it still has columns. Returns how many it wrote (counted in ``files_written``, as ``outputs`` lists them)."""
    from seqwatch.pipelines.sinks import write_parquet
    from seqwatch.schemas.arrow import ALERT_SCHEMA, FORECAST_SCHEMA, QUARANTINE_SCHEMA, SCORE_SCHEMA

    schemas = {"alerts": ALERT_SCHEMA, "forecasts": FORECAST_SCHEMA, "scores": SCORE_SCHEMA,
               "quarantine": QUARANTINE_SCHEMA}
    written = 0
    for sink in SINKS:
        staged = FileSystems.join(staging, sink)
        if not path_exists(staged):
            write_parquet(FileSystems.join(staged, EMPTY_SINK_FILE), schemas[sink].empty_table())
            written += 1
    return written


def _commit(output: str, staging: str, aside: str) -> None:
    """Move the staged sinks and manifest into place: first the previous run's aside (into ``aside``), then the
    new ones in, then the previous ones away; on a failure the new ones are taken out again and the previous ones
    put back, so that the output holds one run's sinks and their manifest, not a mix, and an error is one
    sentence. Where they cannot be put back they stay in ``aside``, which a later run refuses to start beside
    (``_check_nothing_set_aside``). The caller holds interrupts back meanwhile (``interrupts.held_back``)."""
    # A calibration state is replaced too, whether or not this run writes one: one left by an earlier run is not
    # this run's. (The manifest last: it says whose the sinks are.)
    names = [*SINKS, STATE_FILE] + [MANIFEST_FILE] * FileSystems.exists(FileSystems.join(staging, MANIFEST_FILE))
    set_aside: list[tuple[str, str]] = []
    moved_in: list[str] = []
    try:
        for name in names:
            final = FileSystems.join(output, name)
            if path_exists(final):
                if not set_aside:
                    FileSystems.mkdirs(aside)
                previous = FileSystems.join(aside, name)
                move_path(final, previous)
                set_aside.append((final, previous))
        for name in names:
            final, staged = FileSystems.join(output, name), FileSystems.join(staging, name)
            if name == STATE_FILE and not path_exists(staged):
                continue  # an earlier run's, set aside above
            move_path(staged, final)
            moved_in.append(final)
    except BaseException as exc:  # an OSError (Beam's BeamIOError is one), or an interrupt not held back
        reason = str(exc).split(" [while", 1)[0].splitlines()[0] if isinstance(exc, OSError) else "interrupted"
        try:
            for final in moved_in:  # a sink of no previous version too (it had stayed: a partial commit)
                _delete(final)
            for final, previous in set_aside:
                move_path(previous, final)
            _delete(aside)
        except OSError:
            raise RunError(f"could not move the outputs into place under {output} ({reason}), nor put the previous "
                           f"run's back: they are in {aside}; move them back before the next run") from None
        if not isinstance(exc, OSError):
            raise
        raise RunError(f"could not move the outputs into place under {output} ({reason}); the previous run's "
                       f"outputs were put back") from None
    try:
        _delete(aside)
    except OSError as exc:  # the commit is done: the next run clears the folder (_check_nothing_set_aside)
        import logging

        logging.getLogger(__name__).warning("the outputs are in place under %s, but the previous run's, set aside in "
                                            "%s, could not be deleted (%s); the next run into it deletes them",
                                            output, aside, exc)


def _check_no_stream_outputs(output: str) -> None:
    """Refuse an output folder that holds a stream's outputs: a run replaces its own sinks, and would leave the
    stream's ``counts/`` and ``alerts_open/`` beside them (a fine-tuning that left out alerted stretches then took
    the stream's open notices for incidents still going on, and left out 62% of its readings)."""
    from seqwatch.pipelines.streaming import STREAM_ONLY_FOLDERS

    found = [name for name in STREAM_ONLY_FOLDERS if path_exists(FileSystems.join(output, name))]
    if found:
        raise RunError(f"{output} holds a stream's outputs ({', '.join(f'{name}/' for name in found)}), which a "
                       f"batch run would leave beside its own; give the run its own --output")


def _check_output_folder(output: str, clear: bool) -> None:
    """What a run checks of its output folder before it writes there and again before a job's own commit
    (``clear``: under the output's lock, so that set-aside folders of finished commits may be deleted)."""
    _check_sinks_replaceable(output)
    _check_no_stream_outputs(output)
    _check_nothing_set_aside(output, clear=clear)


def _check_nothing_set_aside(output: str, clear: bool = True) -> None:
    """Refuse to run beside a previous run's outputs that a failed commit could not put back. A ``_previous-<run
    id>`` folder that holds nothing (a run killed before it set anything aside), or whose run's commit finished
    (the output's manifest is that run's and every sink is there: killed while it deleted the folder), is
    deleted instead (with ``clear``: under the output lock, where no other run is making one)."""
    if "://" in output:  # an object store: a folder is there while it holds objects (no empty one to delete)
        left = []
        for name in folders_matching(output, "_previous-*"):
            if not _commit_finished(output, name[len("_previous-"):]):
                left.append(name)
            elif clear:
                _delete(FileSystems.join(output, name))
    elif not Path(output).is_dir():
        return
    else:
        left = []
        for folder in sorted(p for p in Path(output).glob("_previous-*") if p.is_dir()):
            if any(folder.iterdir()) and not _commit_finished(output, folder.name[len("_previous-"):]):
                left.append(folder.name)
            elif clear:
                _delete(str(folder))
    if left:
        raise RunError(f"{FileSystems.join(output, left[0])} holds a previous run's outputs that a failed commit "
                       f"could not put back; move them back into {output} (or delete them) before the next run")


def _commit_finished(output: str, run_id: str) -> bool:
    """Whether ``output`` holds the whole commit of the run ``run_id``: its manifest and every sink."""
    try:
        manifest = read_json(FileSystems.join(output, MANIFEST_FILE))
    except (OSError, ValueError):
        return False
    there = path_exists if "://" in output else os.path.isdir
    return manifest.get("run_id") == run_id and all(there(FileSystems.join(output, sink)) for sink in SINKS)


def _folders_named(output: str, pattern: str) -> list[str]:
    """The names of the folders under ``output`` that match ``pattern`` (on an object store: those that hold
    objects, as a folder there is its objects)."""
    if "://" in output:
        return folders_matching(output, pattern)
    if not Path(output).is_dir():
        return []
    return sorted(folder.name for folder in Path(output).glob(pattern) if folder.is_dir())


def _remove_stale_staging(output: str, run_id: str) -> None:
    """Delete the staging folders of other runs killed before they finished (a run deletes its own when it
    starts): under the output lock no other run is writing into ``output`` (held under the lock on S3 and GCS too:
    output_lock)."""
    for name in _folders_named(output, "_staging-*"):
        if name != f"_staging-{run_id}":
            _delete(FileSystems.join(output, name))


def _remove_abandoned_job_staging(output: str, run_id: str, now: float | None = None) -> None:
    """Delete the staging folders of other jobs that committed themselves (``--commit-in-job``) and failed: those
    nothing was written into for ``JOB_STAGING_KEPT_S``."""
    from seqwatch.pipelines.sinks import files_under

    now = time.time() if now is None else now
    for name in _folders_named(output, JOB_STAGING_PREFIX + "*"):
        folder = FileSystems.join(output, name)
        # its newest file's time (an empty local folder: its own)
        written = [at for _, at in files_under(folder, "**/*")] or [0.0 if "://" in folder else
                                                                    os.path.getmtime(folder)]
        if name != JOB_STAGING_PREFIX + run_id and now - max(written) > JOB_STAGING_KEPT_S:
            _delete(folder)


def _files_under(path: str) -> list[str]:
    """The Parquet files under a staged sink folder, named from the sink (``scores/part-00000-of-00001.parquet``),
    on any file system (a ``Path`` of ``s3://...`` had listed none there)."""
    from seqwatch.pipelines.sinks import files_under

    folder = path.rstrip("/")
    sink = folder.rsplit("/", 1)[-1]
    return sorted(f"{sink}/{found[len(folder) + 1:]}" for found, _ in files_under(folder, "**/*.parquet"))


# Two DirectRunner worker processes pay for themselves from about 7M readings on the 2-core development machine
# (each imports Beam and Keras and loads the model: ~3 s; BENCHMARKS.md, Speed); one file is one unit of work.
AUTO_WORKERS_MIN_READINGS = 8_000_000


def estimated_readings(paths: list[str], mapping) -> int:
    """About how many readings ``paths`` hold (Parquet footers, file sizes); files that cannot be read count 0."""
    from seqwatch.pipelines.parsing import SchemaDriftError
    from seqwatch.pipelines.sources import estimate_readings

    total = 0
    for path in paths:
        try:
            header, _ = read_header(path, mapping.sep)
            if header is not None:
                total += estimate_readings(path, FileLayout.resolve(header, mapping, path).readings_per_row)
        except (SchemaDriftError, OSError):
            continue
    return total


def choose_workers(paths: list[str], mapping, cpus: int | None = None, readings: int | None = None) -> int:
    """DirectRunner worker processes for a run: one per core (at most one per file) for an input of at least
    ``AUTO_WORKERS_MIN_READINGS`` readings (``readings``: that estimate, if made already), else 1."""
    cpus = cpus or os.cpu_count() or 1
    if cpus < 2 or len(paths) < 2:
        return 1
    if readings is None:
        readings = estimated_readings(paths, mapping)
    return min(cpus, len(paths)) if readings >= AUTO_WORKERS_MIN_READINGS else 1


# About this many score rows per file of a batch run's scores/ (and forecasts/): tens of MB of Parquet, small
# enough for one worker to gather, large enough that a fleet's run is not thousands of files.
SCORE_ROWS_PER_FILE = 1_000_000


def score_files_for(readings: int, channels: int, stride: int) -> int:
    """The files a batch run writes its scores in: one per ``SCORE_ROWS_PER_FILE`` windows the input makes
    (a window per ``stride`` steps of ``channels`` readings), at least one. The input's estimate, not what gets
    scored, decides, so a rerun of the same files and a replay of them cut the same files."""
    windows = readings // max(1, channels * stride)
    return int(min(MAX_SCORE_FILES, max(1, -(-windows // SCORE_ROWS_PER_FILE))))


LOCAL_RUNNER = "seqwatch.pipelines.local_runner.LocalRunner"


def _options(beam_args: list[str], config: RunConfig, paths: tuple,
             readings: int | None = None) -> tuple[PipelineOptions, int]:
    """The run's pipeline options (the DirectRunner's engine unless a runner is named) and its worker processes: the
    user's Beam flags as given; on the DirectRunner without worker flags, ``config.workers`` or
    ``choose_workers``."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    from seqwatch.pipelines.runners import apply_runner_fixes, runner_name

    options = PipelineOptions(beam_args)
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        # The DirectRunner's own engine, named: Beam 2.77's "DirectRunner" first tries to download Prism and run
        # the job there, so a machine with internet access would run something else than what was measured.
        # LocalRunner is that engine (the FnApiRunner) with quiet worker processes (local_runner.py).
        standard.runner = LOCAL_RUNNER
    apply_runner_fixes(options)
    direct = options.view_as(DirectOptions)
    if runner_name(options) not in ("directrunner", "switchingdirectrunner", "fnapirunner", "localrunner"):
        return options, 0  # a distributed runner decides its own parallelism
    if any(a.startswith(("--direct_num_workers", "--direct_running_mode")) for a in beam_args):
        return options, direct.direct_num_workers if direct.direct_running_mode == "multi_processing" else 1
    workers = config.workers or choose_workers(list(paths), config.mapping, readings=readings)
    if workers > 1:
        direct.direct_running_mode = "multi_processing"
        direct.direct_num_workers = workers
    return options, workers


def run_batch(config: RunConfig, beam_args: list[str] | None = None, now_us: int | None = None) -> dict:
    """Run the batch pipeline and return the manifest (also written to ``<output>/manifest.json``)."""
    # Beam gives its file systems the options when the pipeline is made; the plan reads inputs before that, and
    # S3 is reached with the --s3_* flags (it had failed there with "Must provide one of client or options")
    FileSystems.set_options(PipelineOptions(beam_args or []))
    try:
        plan = plan_run(config, now_us)
        started = time.time()
        try:
            prepare_output_folder(config.output)
        except OSError as exc:
            raise RunError(str(exc)) from None
    except Exception as exc:  # an object store's client error (a missing bucket, an endpoint out of reach)
        if store_error(exc) is None:
            raise
        raise RunError(store_sentence(exc)) from None
    if config.commit_in_job:
        return _run_committing_in_job(plan, beam_args, started)
    try:
        with output_lock(config.output, "run", plan.run_id) as locked:
            return _run_locked(plan, beam_args, started, locked)
    except OutputBusy as exc:
        raise RunError(str(exc)) from None


def _run_locked(plan: RunPlan, beam_args: list[str] | None, started: float, locked: bool = True) -> dict:
    """``run_batch`` once the output folder is this run's alone (``locked``: False where the file system takes no
    lock, so another run may be writing there: its folders are left alone)."""
    config = plan.config
    output = config.output
    _check_output_folder(output, clear=locked)
    if locked:
        _remove_stale_staging(output, plan.run_id)
    _remove_abandoned_job_staging(output, plan.run_id)
    _delete(plan.staging)
    options, workers = _options(list(beam_args or []), config, plan.paths, plan.estimated_readings)
    try:
        p = beam.Pipeline(options=options)
        build_pipeline(p, plan)
        # a Ctrl-C or SIGTERM taken while the graph was built, its exception dropped by Python (inside a gc
        # callback), stops the run here, before it reads anything: its redelivery from another thread had come
        # after a small input's whole pipeline on a loaded machine (make test, 2026-12-06)
        interrupts.stop_if_taken()
        result = p.run()
        result.wait_until_finish()
        counts = read_json(FileSystems.join(plan.staging, COUNTS_FILE))
        manifest = _staged_manifest(plan, counts, started, workers, stage_seconds(result), _working_dir())
        with interrupts.held_back():
            _commit(output, plan.staging, FileSystems.join(output, f"_previous-{plan.run_id}"))
    except (OSError, RuntimeError) as exc:
        reason = write_failure(exc)
        if reason is not None:
            raise RunError(f"could not write the outputs under {output} ({reason}); nothing was committed") from None
        unread = _read_failure(exc, plan.paths)
        if unread is not None:
            raise RunError(f"{unread}, after the run had planned its reading (an input removed, cut, replaced or "
                           f"made unreadable meanwhile); nothing was committed, rerun once the inputs are "
                           f"complete") from None
        raise
    finally:
        _delete(plan.staging)
    return manifest


def _staged_manifest(plan: RunPlan, counts: dict, started: float, workers: int, stage_times: dict,
                     working_dir: dict) -> dict:
    """Once the pipeline has written its outputs under ``plan.staging``: check its ``counts`` (a ``RunError`` for an
    input of no records, or counts that do not reconcile), give each sink that received no row its empty file, and
    write the manifest there (returned). Under the output lock: it names the run whose outputs it replaces."""
    records_in = counts.get("records_in", 0)
    if records_in == 0:
        raise RunError(f"the input holds no records ({len(plan.paths)} file(s) are empty or have only a header)")
    accounted = counts.get("records_scored", 0) + counts.get("records_quarantined", 0)
    if accounted != records_in:
        raise RunError(f"counts do not reconcile: {records_in} records in, {counts.get('records_scored', 0)} "
                       f"scored + {counts.get('records_quarantined', 0)} quarantined; outputs were not committed")
    counts = dict(counts)
    # the manifest's count of files is of the files it lists (the bug hunt of outputs): the placeholders of
    # empty sinks and the calibration state too
    written = _fill_empty_sinks(plan.staging) + plan.config.writes_calibration_state
    if written:
        counts["files_written"] = counts.get("files_written", 0) + written
    manifest = _manifest(plan, started, workers, counts, stage_times,
                         _previous_run(plan.config.output, plan.run_id, list(plan.paths)), working_dir)
    write_json(manifest, FileSystems.join(plan.staging, MANIFEST_FILE))
    return manifest


def _run_committing_in_job(plan: RunPlan, beam_args: list[str] | None, started: float) -> dict:
    """``run_batch`` with ``commit_in_job``: the checks a run makes of its output before it starts (read only: this
    process takes no lock, which could not outlive it), then the job, whose last step commits (``CommitInJob``).
    Returns the manifest where the job ran to its end here (the DirectRunner, a portable runner's workers in this
    process), else ``{"run_id", "output", "job_state", "submitted": True}`` once the runner has the job."""
    output = plan.config.output
    _check_output_folder(output, clear=False)
    _remove_abandoned_job_staging(output, plan.run_id)
    _delete(plan.staging)
    options, workers = _options(list(beam_args or []), plan.config, plan.paths, plan.estimated_readings)
    p = beam.Pipeline(options=options)
    graph = build_pipeline(p, plan)
    here = _job_runs_here(options)  # else the job fails its own run on the quarantine's share: none will read it
    graph["counts"] | "CommitInJob" >> CommitInJob(plan, started, workers, _working_dir(), gate=not here)
    interrupts.stop_if_taken()
    try:
        result = p.run()
        if not here:
            return {"run_id": plan.run_id, "output": output, "job_state": str(result.state), "submitted": True}
        result.wait_until_finish()
    except BaseException as exc:  # a job not submitted, or one that failed or was stopped here: it commits nothing
        _delete(plan.staging)
        if not isinstance(exc, (OSError, RuntimeError, RunError)):
            raise
        if "InterruptedAfterCommit [while running" in str(exc):  # the job's commit finished, then took the signal
            raise interrupts.InterruptedAfterCommit() from None
        said = _failure_in_job(exc)
        if said is not None:
            raise RunError(said) from None
        reason = write_failure(exc)
        if reason is not None:
            raise RunError(f"could not write the outputs under {output} ({reason}); nothing was committed") from None
        raise
    return read_json(FileSystems.join(output, MANIFEST_FILE))


def quarantine_gate(manifest: dict, share: float | None) -> str | None:
    """Why a finished run fails its scheduler's task although its outputs are written (``seqwatch run`` exits 3, a
    job that commits itself fails): more of its readings were quarantined than ``share`` allows, or, with no share
    given, every one of them (a night of unreadable input must not pass for a quiet one); None otherwise."""
    quarantined, records_in = manifest["records_quarantined"], manifest["records_in"]
    if share is not None and records_in and quarantined > share * records_in:
        return (f"{quarantined / records_in:.1%} of the readings were quarantined, more than --max-quarantined-share "
                f"{share:g} allows")
    if share is None and records_in and not manifest["records_scored"]:
        return "nothing was scored, every reading was quarantined"
    return None


def _job_runs_here(options: PipelineOptions) -> bool:
    """Whether a job's workers live in this process, so that it must wait for the job's end (the DirectRunner's
    engine, a portable runner's LOOPBACK environment): a Dataflow job, or a Flink or Prism job of EXTERNAL, PROCESS
    or DOCKER workers, runs on without it."""
    from apache_beam.options.pipeline_options import PortableOptions

    from seqwatch.pipelines.runners import DIRECT_RUNNERS, runner_name

    name = runner_name(options)
    if name in DIRECT_RUNNERS or name in ("localrunner", "fnapirunner"):
        return True
    if name in ("dataflowrunner", "testdataflowrunner"):
        return False
    environment = (options.view_as(PortableOptions).environment_type or "").upper()
    return environment in ("", "LOOPBACK")


def _failure_in_job(exc: BaseException) -> str | None:
    """The sentence of a ``RunError`` that a step of the job raised (its commit's: an input of no records, counts
    that do not reconcile, a lock not had in time), which the runner re-raises inside its own error; None
    otherwise."""
    import re

    if isinstance(exc, RunError):  # the in-process runner's, the step's name added to it
        return re.sub(r" \[while running '[^']*'\]$", "", str(exc))
    found = re.search(r"RunError: (.+?)(?: \[while running '[^']*'\])?$", str(exc), re.M)
    return found.group(1) if found else None


class CommitInJob(beam.PTransform):
    """A batch run's commit as its job's last step, for launchers that do not wait for the job's end (a Dataflow
    Flex Template, whose launcher submits the job and goes; ``seqwatch run --commit-in-job``). Applied to the
    run's counts, which the pipeline makes once every sink has written its files (the calibration state's
    count included): it checks them, writes the manifest, and moves the staged outputs into place under the
    output's lock (``commit_in_job``). With ``gate`` (no launcher waits for it), a run that ``quarantine_gate``
    fails then fails the job, its outputs committed, so that the job's scheduler alerts as on ``seqwatch run``'s
    exit code 3."""

    def __init__(self, plan: RunPlan, started: float, workers: int, working_dir: dict, gate: bool = False):
        super().__init__()
        self.plan, self.started, self.workers, self.working_dir = plan, started, workers, working_dir
        self.gate = gate

    def expand(self, counts):
        plan, started, workers, working_dir, gate = self.plan, self.started, self.workers, self.working_dir, self.gate

        def commit(c: dict) -> dict:
            manifest = commit_in_job(plan, c, started, workers, working_dir)
            failed = quarantine_gate(manifest, plan.config.max_quarantined_share) if gate else None
            if failed:  # a retry of the step finds the commit done and fails again
                raise RunError(f"{failed}; the outputs are committed under {plan.config.output}, and the job fails "
                               f"so that its scheduler alerts")
            return manifest

        return counts | "Commit" >> beam.Map(commit)


def commit_in_job(plan: RunPlan, counts: dict, started: float, workers: int, working_dir: dict,
                  wait_s: float | None = None) -> dict:
    """Commit a run whose job staged its outputs under ``plan.staging`` and counted ``counts``: with the output's
    lock (waited for up to ``wait_s``, ``COMMIT_LOCK_WAIT_S`` by default: another run may hold it for its whole
    run), check the folder as a run does before it starts, write the manifest and move the outputs into place;
    returns the manifest. Run again after it finished (a runner's retry of the step), it returns the committed
    manifest. Counts that refuse the commit (an input of no records, counts that do not reconcile) delete the
    staged outputs; any other failure (the lock not had in time, the folder's state, a move that failed and was
    undone) leaves them for a retry of the step (a failed job's are deleted a week later:
    ``_remove_abandoned_job_staging``)."""
    output = plan.config.output
    if not path_exists(plan.staging):
        if _commit_finished(output, plan.run_id):
            return read_json(FileSystems.join(output, MANIFEST_FILE))
        raise RunError(f"the staged outputs of run {plan.run_id} are gone from {plan.staging}, so nothing was "
                       f"committed; run it again")
    with _output_lock_waiting(output, plan.run_id, COMMIT_LOCK_WAIT_S if wait_s is None else wait_s) as locked:
        _check_output_folder(output, clear=locked)
        try:
            manifest = _staged_manifest(plan, counts, started, workers, {}, working_dir)
        except RunError:  # the job's own counts refuse it: a retry would too
            _delete(plan.staging)
            raise
        with interrupts.held_back():  # where the job runs in the launcher's main thread (the DirectRunner)
            _commit(output, plan.staging, FileSystems.join(output, f"_previous-{plan.run_id}"))
    _delete(plan.staging)
    return manifest


@contextlib.contextmanager
def _output_lock_waiting(output: str, run_id: str, wait_s: float):
    """``output_lock`` for a job's commit, waiting while another job holds it (a ``RunError`` after ``wait_s``, or
    at once where the store refuses the lock)."""
    import logging

    deadline, said = time.monotonic() + wait_s, 0.0
    held = contextlib.ExitStack()
    while True:
        try:
            locked = held.enter_context(output_lock(output, "run", run_id))
            break
        except LockRefused as exc:
            raise RunError(str(exc)) from None
        except OutputBusy as exc:
            if time.monotonic() >= deadline:
                raise RunError(f"{exc}; the job waited {wait_s:g} s for it, so nothing was committed") from None
            if time.monotonic() - said >= 60:
                logging.getLogger(__name__).warning("the commit waits for the output's lock: %s", exc)
                said = time.monotonic()
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    with held:
        yield locked


def _read_failure(exc: BaseException, inputs) -> str | None:
    """What could not be read (``"could not read in/a.csv ([Errno 2] No such file or directory)"``) when ``exc``
    is a failure to read one of the ``inputs`` that exists no more, may not be read, or is no longer what planning
    read, raised here or inside a step (Beam re-raises it as a RuntimeError naming the error); None otherwise.
    Found by the bug hunt of operational failures: an input deleted during a run had ended it with a traceback of
    182 lines."""
    import errno
    import re

    def an_input(path) -> bool:
        return os.path.abspath(str(path)) in {os.path.abspath(str(p)) for p in inputs}

    reading = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR}
    changed = re.search(r"InputChangedError: (.+?)(?: \[while running '[^']*'\])?$", str(exc), re.M)
    if isinstance(exc, InputChangedError) or changed:
        text = str(exc) if isinstance(exc, InputChangedError) else changed.group(1)
        return re.sub(r" \[while running '[^']*'\]$", "", text)
    if isinstance(exc, OSError) and exc.errno in reading and exc.filename and an_input(exc.filename):
        return f"could not read {exc.filename} ([Errno {exc.errno}] {exc.strerror})"
    found = re.search(r"(?:FileNotFoundError|PermissionError|IsADirectoryError|NotADirectoryError|OSError): "
                      r"\[Errno (\d+)\] ([^:'\n\[\]]+): (?:'([^'\n]+)'|\"([^\"\n]+)\")", str(exc))
    path = found and (found.group(3) or found.group(4))
    if found and int(found.group(1)) in reading and an_input(path):
        return f"could not read {path} ([Errno {found.group(1)}] {found.group(2).strip()})"
    return None


def write_failure(exc: BaseException) -> str | None:
    """The operating system's reason (``[Errno 28] No space left on device``) when ``exc`` is a failure to write,
    raised here or inside a step (Beam re-raises it as a RuntimeError naming the OSError); None otherwise."""
    import re

    import errno

    writing = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}  # a read failure is not said to be one
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"[Errno {exc.errno}] {exc.strerror}" if exc.errno in writing else None
    found = re.search(r"(?:OSError|IOError): \[Errno (\d+)\] ([^:'\n\[\]]+)", str(exc))
    return f"[Errno {found.group(1)}] {found.group(2).strip()}" if found and int(found.group(1)) in writing else None


def _manifest(plan: RunPlan, started: float, workers: int, counts: dict, stage_times: dict,
              replaced: dict | None, working_dir: dict) -> dict:
    """What ``<output>/manifest.json`` says of a run whose outputs are staged."""
    config = plan.config
    manifest = {
        "run_id": plan.run_id,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 2),
        "inputs": list(plan.paths),
        "output": config.output,
        "model": {"dir": config.model_dir, "model_id": plan.model_id, "model_version": plan.model_version,
                  "channels": list(plan.channels), "step_seconds": plan.step_us / 1e6,
                  "window_length": plan.window_length, "stride": plan.stride, "max_gap": plan.max_gap},
        # pane_steps as the run used it: at least two windows and their gap filling, in whole strides
        "settings": {**config.settings(), "pane_steps": plan.pane_steps},
        "workers": workers,  # DirectRunner worker processes (0: a distributed runner's own choice)
        # what each input held (sha256 of its bytes): a replay checks that its sources are still the files this
        # run read
        **({"input_digests": dict(plan.input_digests)} if plan.input_digests else {}),
        # where relative input paths (and the quarantine's sources, named as given) lie: a replay started from
        # another folder finds them there
        **working_dir,
        # files that hold readings of one entity, joined (locality.FileSpans.file_groups): a replay of one re-runs
        # them all (absent where the inputs could not be indexed without parsing them whole)
        **({"input_groups": plan.spans.file_groups()} if plan.spans is not None else {}),
        "records_in": counts["records_in"],
        "records_scored": counts.get("records_scored", 0),
        "records_quarantined": counts.get("records_quarantined", 0),
        "stages": {k: v for k, v in sorted({"alerts": 0, **counts}.items())},  # no alert is a count of 0
        "stage_seconds": stage_times,  # none where the job committed itself (its runner's metrics are not there)
        **({"committed_by": "job"} if config.commit_in_job else {}),
        # the files as they will lie under the output (each staged sink moves there whole)
        "outputs": {sink: _files_under(FileSystems.join(plan.staging, sink)) for sink in SINKS},
    }
    if config.writes_calibration_state:  # each entity's calibration, for a later run
        manifest["outputs"]["calibration_state"] = [STATE_FILE]
    if plan.calibration_state_sha256:  # the state this run started from (a replay starts from it too)
        manifest["calibration_from"] = {"file": plan.calibration_state_from,
                                        "sha256": plan.calibration_state_sha256}
    elif plan.calibration_state_from:  # none there: every entity started from the model's calibration scores
        manifest["calibration_from"] = {"file": plan.calibration_state_from, "missing": True}
    if replaced:
        manifest["replaced_run"] = replaced
    return manifest


def _working_dir() -> dict:
    """``{"working_dir": ...}``, or nothing where the folder the run started in was removed meanwhile (a release
    folder swapped under a long cron run): a run of absolute paths needs none."""
    try:
        return {"working_dir": os.getcwd()}
    except OSError:
        return {}


def _canonical_path(path: str) -> str:
    """A local path as the absolute path it names (links resolved); another file system's as given."""
    return path if "://" in path else os.path.realpath(path)


def _previous_run(output: str, run_id: str, inputs: list) -> dict | None:
    """``{"run_id", "inputs"}`` of the run of other inputs whose outputs ``output`` holds (this run replaces
    them), or None: no earlier run, a rerun of these inputs (perhaps with other settings), or a manifest that
    cannot be read."""
    path = FileSystems.join(output, "manifest.json")
    try:
        previous = read_json(path) if FileSystems.exists(path) else None
    except (OSError, ValueError):
        return None
    if not isinstance(previous, dict) or previous.get("run_id") is None \
            or sorted(map(_canonical_path, previous.get("inputs") or [])) == sorted(map(_canonical_path, inputs)):
        return None  # a rerun of the same inputs (with the same run id or other settings) replaces nothing new
    return {"run_id": previous["run_id"], "inputs": list(previous.get("inputs") or [])}
