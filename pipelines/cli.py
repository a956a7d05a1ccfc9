"""The seqwatch command line: train, run, replay, stream, evaluate and demo.

Arguments the CLI does not know are passed to Beam as pipeline options (``--runner``,
``--direct_num_workers``, ...). Errors a person can cause (bad flags, missing files, a model that does not fit
the data) end with one sentence on stderr and exit code 2; nothing prints a traceback for them.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple, NoReturn


class CliError(Exception):
    """One sentence for the person at the terminal."""


def _mapping_flags(args) -> dict:
    """The mapping keys the format flags given on the command line set (flags left out set nothing)."""
    flags = {}
    if args.format is not None:
        flags["format"] = args.format
    if args.timestamp_column is not None:
        flags["timestamp"] = args.timestamp_column
    topic_level = getattr(args, "entity_topic_level", None)  # seqwatch stream only
    from_key = getattr(args, "entity_from_key", False) or None
    given = [flag for flag, value in (("--entity-column", args.entity_column), ("--entity", args.entity),
                                      ("--entity-topic-level", topic_level), ("--entity-from-key", from_key))
             if value is not None and value != ""]
    if len(given) > 1:
        raise CliError(f"{' and '.join(given)} both say where the entity comes from: give one of them")
    if args.entity_column:
        flags["entity"] = {"column": args.entity_column}
    elif args.entity:
        flags["entity"] = {"value": args.entity}
    elif topic_level is not None:
        flags["entity"] = {"from_topic": topic_level}
    elif from_key:
        flags["entity"] = {"from_key": True}
    if args.sep is not None:
        # '\t' as typed in a shell without $'...': two characters that mean a tab (the help says so)
        flags["sep"] = "\t" if args.sep == "\\t" else args.sep
    if args.timezone is not None:
        flags["timezone"] = args.timezone
    if getattr(args, "timestamp_format", None) is not None:
        flags["timestamp_format"] = args.timestamp_format
    return flags


def _mapping_from_args(args):
    """The input mapping of ``--mapping`` and the format flags together: a flag sets what the mapping file leaves
    out, ``--ignore`` adds to its ``ignore``, and a flag that contradicts the file, or a wide file's flag for long
    ones, is a ``CliError``; a mapping key of the wrong type or for the other format is a ``MappingError`` (a
    ``ValueError``: one sentence and exit code 2, as ``_main`` prints it)."""
    from seqwatch.pipelines.object_store import read_bytes
    from seqwatch.schemas.mapping import InputMapping
    flags = _mapping_flags(args)
    ignore = list(args.ignore or ())
    # The file's keys, each of the right type (a MappingError, one sentence, before a flag is compared with them).
    data = InputMapping.read_file(args.mapping, read=read_bytes) if args.mapping else {}
    if flags.get("format", data.get("format")) != "wide":
        wide_only = [flag for flag, value in (("--timestamp-column", args.timestamp_column),
                                              ("--entity-column", args.entity_column), ("--entity", args.entity))
                     if value]
        if wide_only:
            raise CliError(f"{' and '.join(wide_only)} {'is' if len(wide_only) == 1 else 'are'} for --format "
                           f"wide; a long file's rows name their entity and time in its entity_id and timestamp "
                           f"columns")
        flags.pop("timestamp", None)
        flags.pop("entity", None)  # --entity-topic-level, --entity-from-key: cmd_stream says why not
    data = _with_flags(data, flags, args)
    data["ignore"] = list(data.get("ignore", ())) + [c for c in ignore if c not in data.get("ignore", ())]
    return InputMapping.from_dict(data)


def _with_flags(data: dict, flags: dict, args) -> dict:
    """The keys of a mapping file (``data``) with those the format flags set; a flag that contradicts the file
    is a ``CliError`` naming both."""
    data = dict(data)
    for key, value in flags.items():
        if key in data and data[key] != value:
            flag = {"timestamp": "--timestamp-column", "timestamp_format": "--timestamp-format",
                    "entity": "--entity-column, --entity, --entity-topic-level or --entity-from-key"
                    }.get(key, f"--{key}")
            raise CliError(f"the mapping file {args.mapping} sets {key} {data[key]!r} but {flag} says {value!r}: "
                           f"give one of them")
        data[key] = value
    return data


INPUT_HELP = ("CSV or Parquet files: a glob, or a folder (its .csv/.tsv/.txt/.parquet/.pq files at any depth, also "
              "compressed (.gz, .bz2, .zst, ...), but _*, .* and README/LICENSE files); repeat for more")


def _add_input_args(parser, required: bool = True, input_help: str = INPUT_HELP):
    parser.add_argument("--input", action="append", required=required, metavar="GLOB|FOLDER", help=input_help)
    _add_format_args(parser)


def _add_format_args(parser, mapping_help: str = "a column mapping file (schemas/mapping.py); the format flags "
                                                 "set what it leaves out, and must not contradict it"):
    parser.add_argument("--format", choices=("long", "wide"),
                        help="long: entity_id,channel,timestamp,value rows (the default); wide: a timestamp and "
                             "one column per channel")
    parser.add_argument("--mapping", metavar="JSON", help=mapping_help)
    parser.add_argument("--timestamp-column", help="wide format: the timestamp column (default: timestamp)")
    parser.add_argument("--entity-column", help="wide format: the column holding the entity id (default: "
                        "entity_id when a file has that column)")
    parser.add_argument("--entity", help="wide format: one entity id for every file (default: the file's "
                        "entity_id column, or else its name)")
    parser.add_argument("--ignore", action="append", metavar="COLUMN", help="a column to ignore (repeatable); in training on long files, a channel whose readings to leave out")
    parser.add_argument("--sep", help="field separator (default: sniffed; '\\t' is a tab)")
    parser.add_argument("--timezone", help="zone of timestamps without an offset (default: UTC)")
    parser.add_argument("--timestamp-format", metavar="STRPTIME",
                        help="how text timestamps are written, e.g. '%%m/%%d/%%Y %%H:%%M' for US dates (default: "
                             "ISO 8601 and other unambiguous forms)"),


def _read_training_frame(args, inputs=None, what: str = "training input", channels=None, files=None):
    """The valid readings of ``inputs`` (default ``--input``) read with the run's mapping, as a ``TrainingInput``;
    a missing file, drifted columns, no valid reading, a channel to model without readings, or files of different
    partition folders that are one entity over the same time is a ``CliError``. Valid as a run would judge them:
    readings a run quarantines in parsing or validation (``--suite``) are left out, so that a model never learns a
    sentinel value or an impossible reading as normal. ``channels``: the ones the model will learn (None: all);
    only their readings are judged and counted; ``files``: the files to read, already matched (``--scored-only``),
    instead of ``inputs``."""
    import time

    import pandas as pd

    from seqwatch.pipelines.config import DAY_US
    from seqwatch.pipelines.parsing import (EMPTY_VALUE, MISSING_VALUE_END, FileLayout, SchemaDriftError,
                                            partition_clash)
    from seqwatch.pipelines.object_store import read_bytes
    from seqwatch.pipelines.sources import FileReader, expand_inputs, read_header
    from seqwatch.pipelines.validate import valid_history
    from seqwatch.schemas.mapping import renaming_hint
    from seqwatch.schemas.validation import SuiteError, load_suite_dict, with_earliest
    mapping = _mapping_from_args(args)
    try:
        paths = list(files) if files is not None else expand_inputs(inputs or args.input)
        columns: set = set()  # every input's columns, for the check of --ignore below
        for path in paths:
            header, _ = read_header(path, mapping.sep)
            if header is not None:
                FileLayout.resolve(header, mapping, path)
                columns.update(map(str, header))
        suite = with_earliest(load_suite_dict(args.suite, read=read_bytes), _earliest_us(args))
    except (FileNotFoundError, SchemaDriftError, SuiteError) as exc:
        raise CliError(str(exc)) from None
    reader = FileReader(mapping, "train")
    frames, rejected, empty, records = [], 0, 0, 0
    empty_by_channel: dict = {}
    unread: dict = {}  # rejected readings by reason code, and the first reason of each
    first_unread: dict = {}
    for path in paths:
        for batch, quarantine, n in reader.read(path):
            frames.append(batch.frame)
            for q in quarantine:
                if q.reason_code == "parse_value" and q.reason.endswith((EMPTY_VALUE, MISSING_VALUE_END)):
                    empty += q.records
                    channel = mapping.channels.get(q.column, q.column) if mapping.format == "wide" else q.column
                    empty_by_channel[channel] = empty_by_channel.get(channel, 0) + q.records
                    continue
                rejected += q.records
                unread[q.reason_code] = unread.get(q.reason_code, 0) + q.records
                first_unread.setdefault(q.reason_code, q.reason)
            records += n
    frame = pd.concat(frames, ignore_index=True) if frames else None
    if frame is not None and mapping.ignore and what == "training input":
        # a name that matches nothing (a typo of the channel a note advised leaving out) had trained on without it
        # a long file's --ignore names channels, or columns besides the four (a unit column)
        known = columns if mapping.format == "wide" else columns | set(map(str, frame["channel"].unique()))
        _note_unknown_ignored([name for name in mapping.ignore if name not in known], known, mapping.format, what)
    if frame is not None and mapping.format == "long" and mapping.ignore:
        # A long file has no column per channel: --ignore names channels, whose readings the model leaves out (as
        # the notes of a constant or rising channel advise). A run quarantines them as channels the model lacks.
        ignored = frame["channel"].astype(str).isin(set(mapping.ignore))
        if ignored.any():
            names = sorted(set(frame.loc[ignored, "channel"].astype(str)))
            print(f"seqwatch train: left out {int(ignored.sum())} readings of the ignored channel(s) {names}",
                  file=sys.stderr)
            frame = frame[~ignored].reset_index(drop=True)
    # What the reader could not read, with the first reason of the commonest code (it names the setting to
    # change: a decimal comma, a timestamp format), as a run's notice quotes it.
    commonest = min(unread, key=lambda code: (-unread[code], code)) if unread else None
    unread_why = f"{_by_reason(unread)}; the first {commonest}: {first_unread[commonest]}" if unread else ""
    if frame is None or frame.empty:
        raise CliError(f"the {what} holds no valid records ({len(paths)} file(s), {records} records, "
                       f"{rejected + empty} rejected" + (f": {unread_why}" if unread else "") + ")")
    # A channel of empty cells only is not in the frame at all: the model would leave it out without a word.
    found = set(map(str, frame["channel"].unique()))
    blank = sorted(c for c in empty_by_channel if c and c not in found and (not channels or c in channels))
    if blank:
        print(f"seqwatch train: note: channel(s) {blank} had no value at all in the {what} "
              f"({sum(empty_by_channel[c] for c in blank)} empty values): the model leaves them out, and runs will "
              f"quarantine their readings as unknown_channel", file=sys.stderr)
    spans: dict = {}  # entity -> [(file, first, last)]: files of one entity over the same time
    grouped = frame.groupby(["entity_id", "source"], observed=True)["timestamp"].agg(["min", "max"])
    for (entity, source), row in grouped.iterrows():
        spans.setdefault(str(entity), []).append((str(source), int(row["min"]), int(row["max"])))
    clash = partition_clash(spans)
    if clash:
        raise CliError(clash)
    if rejected > INVALID_SHARE_NOTED * records:
        print(f"seqwatch train: note: {rejected} of the {what}'s {records} readings ({rejected / records:.1%}) could "
              f"not be read ({unread_why}); they are left out, as a run quarantines them", file=sys.stderr)
    if channels:
        # Every channel to model must have readings: one without would leave no window complete, and the
        # refusal would come after reading, as "fills only 0 windows", which points at the history's length.
        found = set(map(str, frame["channel"].unique()))
        missing = [c for c in channels if c not in found]
        if missing:
            hint = renaming_hint(tuple(channels), sorted(found)) if mapping.format == "wide" else ""
            raise CliError(f"the {what} holds no readings of the channel(s) {missing} (its channels are "
                           f"{sorted(found)[:20]}){hint}")
        modelled = frame["channel"].astype(str).isin(channels).to_numpy()
        others = sorted(found - set(channels))
        if others and getattr(args, "warm_start", None) and not args.channel:
            print(f"seqwatch train: note: {int((~modelled).sum())} readings of the {what}'s channel"
                  f"{'s' if len(others) > 1 else ''} {others[:10]}{' and more' if len(others) > 10 else ''} are left "
                  f"out: a fine-tuning keeps the model's channels {list(channels)}, and runs quarantine those "
                  f"readings as unknown_channel; to model them, train a new model (without --warm-start)",
                  file=sys.stderr)
        frame = frame[modelled].reset_index(drop=True)
    history = frame
    frame, invalid, first = valid_history(frame, suite, _earliest_us(args), int(time.time() * 1e6) + DAY_US)
    # A channel none of whose readings pass validation would leave the model without a word (the share noted
    # below is of all readings): name it and the rule that removed it, and refuse when it is one to model.
    vanished = sorted(set(map(str, history["channel"].unique())) - set(map(str, frame["channel"].unique())))
    if vanished and not frame.empty:
        whys = []
        for channel in vanished:  # judged alone for its own reasons (the first reason above may be another's)
            _, own, own_first = valid_history(history[history["channel"].astype(str) == channel], suite,
                                              _earliest_us(args), int(time.time() * 1e6) + DAY_US)
            code = min(own, key=lambda c: (-own[c], c)) if own else None
            whys.append(f"{channel!r}: {_by_reason(own)}; the first {code}: {own_first[code]}" if own else
                        repr(channel))
        why = f"with suite {suite.get('name', args.suite)!r} ({'; '.join(whys)})"
        if channels:
            raise CliError(f"none of the {what}'s readings of the channel(s) {vanished} to model pass validation "
                           f"{why}; if such readings are normal for this equipment, train and run with a suite that "
                           f"allows them (--suite)")
        gone = ("the model leaves them out, and runs will quarantine their readings as unknown_channel"
                if what == "training input" else "they are left out, as a run quarantines them")
        print(f"seqwatch train: note: none of the {what}'s readings of the channel(s) {vanished} pass validation "
              f"{why}: {gone}; if such readings are normal for this equipment, train and run with a suite that "
              f"allows them (--suite)", file=sys.stderr)
    duplicates = invalid.pop("duplicate", 0)  # not the suite's verdict: noted apart, without suggesting one
    left_out = sum(invalid.values())
    total = left_out + duplicates + len(frame)
    if frame.empty or left_out > INVALID_SHARE_NOTED * total:
        commonest = min(invalid, key=lambda code: (-invalid[code], code))
        why = (f"fail validation with suite {suite.get('name', args.suite)!r} ({_by_reason(invalid)}; the first "
               f"{commonest}: {first[commonest]})")
        if frame.empty:
            raise CliError(f"the {what} holds no valid records: all {left_out} readings that parsed {why}")
        print(f"seqwatch train: note: {left_out} of the {what}'s {total} readings ({left_out / total:.1%}) {why}; "
              f"they are left out, as a run quarantines them; if such readings are normal for this equipment, "
              f"train and run with a suite that allows them (--suite)", file=sys.stderr)
    if duplicates > INVALID_SHARE_NOTED * total:
        print(f"seqwatch train: note: {duplicates} of the {what}'s {total} readings ({duplicates / total:.1%}) have "
              f"the entity, channel and timestamp of an earlier reading; they are left out, as a run quarantines "
              f"them as duplicate (it keeps the first of each, by file and line): if files overlap (an export and "
              f"its rerun), give each reading once", file=sys.stderr)
    return TrainingInput(frame, paths, rejected + left_out + duplicates, invalid, empty, duplicates)


def _note_unknown_ignored(unknown: list, known: set, layout: str, what: str) -> None:
    """A note on stderr naming the ignored names that are no column (wide) or channel (long) of the input, with
    the closest known name of each."""
    import difflib

    if not unknown:
        return
    kind = "column" if layout == "wide" else "column or channel"
    shown = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=1)
        shown.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    print(f"seqwatch train: note: the ignored name{'s' if len(unknown) > 1 else ''} {', '.join(shown)} "
          f"{'are' if len(unknown) > 1 else 'is'} no {kind} of the {what}, so {'they leave' if len(unknown) > 1 else 'it leaves'} "
          f"nothing out", file=sys.stderr)


class TrainingInput(NamedTuple):
    """What ``_read_training_frame`` read: the valid readings, the files, the readings left out (unreadable,
    failing validation or duplicates), those failing validation by reason, the empty values (a wide file's cells
    between the readings of a channel read less often than the others: not data errors), and the readings left
    out as duplicates of an earlier reading (a run quarantines them as ``duplicate``)."""

    frame: Any
    paths: list
    rejected: int
    invalid: dict
    empty: int
    duplicates: int = 0

    def skipped(self) -> str:
        """``70 rejected readings skipped``, with the empty values apart when there are any, and what the
        rejected hold: readings failing validation by reason, and duplicates."""
        parts = ([f"failing validation: {_by_reason(self.invalid)}"] if self.invalid else []) + \
            ([f"duplicates of an earlier reading: {self.duplicates}"] if self.duplicates else [])
        return f"{self.rejected} rejected readings" + (f" and {self.empty} empty values" if self.empty else "") + \
            " skipped" + (f", of which {'; '.join(parts)}" if parts else "")


INVALID_SHARE_NOTED = 0.01  # a larger share of training readings failing validation gets a note of its own


def _by_reason(counts: dict) -> str:
    return ", ".join(f"{code} {n}" for code, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


# Model shape flags of ``train``: their defaults, applied when not warm-starting (a warm start keeps the model's).
# The stride's default is at most the window (``_new_config``): ``--window 8`` alone gets stride 8, not 16.
SHAPE_DEFAULTS = {"cell": "lstm", "bidirectional": False, "layers": 1, "units": 32, "dropout": 0.0, "horizon": 0,
                  "window": 64, "stride": 16, "max_gap": 3, "cumulative": ()}
TRAINING_DEFAULTS = {"epochs": 30, "batch_size": 128, "seed": 7, "threshold": "pot", "coverage": 0.9}
CALIBRATION_HELP = ("judge each entity's windows by its own earlier scores (online tail calibration seeded "
                    "with the model's), not by the model's one threshold")
MODEL_DIR_HELP = ("a model artifact, or a directory of them (one sub-directory per version; the newest is used); "
                  "local or on S3 (s3://bucket/prefix)")
SUITE_HELP = "great-expectations suite: sensor, energy, health or a file"
COOLDOWN_HELP = ("an anomalous window after a quiet spell of at most this many seconds since an incident's end (it "
                 "starts within this long after the step that follows the end) continues that incident, so a "
                 "flapping signal raises one alert (default 0: only windows that overlap or touch)")


# The flags that set the configuration fields a check names (models/config.py, pipelines/config.py).
FLAG_OF_FIELD = {"window length": "--window", "stride": "--stride", "max_gap": "--max-gap",
                 "forecast_horizon": "--horizon", "dropout": "--dropout", "epochs": "--epochs", "units": "--units",
                 "layers": "--layers",
                 "batch_size": "--batch-size", "interval_coverage": "--coverage", "pane_steps": "--pane-steps",
                 "workers": "--workers"}


def _in_flags(message: str) -> str:
    """A configuration check's sentence with the field it starts with named by its flag (``forecast_horizon
    must be >= 0`` -> ``--horizon must be >= 0``): the person typed the flag, not the field."""
    for field, flag in FLAG_OF_FIELD.items():
        if message.startswith(field + " must "):
            return flag + message[len(field):]
    return message


def _new_config(args):
    from seqwatch.models.config import ArchitectureConfig, DetectorConfig, ScoringConfig, TrainingConfig, WindowConfig

    v = {name: default if getattr(args, name) is None else getattr(args, name)
         for name, default in {**SHAPE_DEFAULTS, **TRAINING_DEFAULTS}.items()}
    if args.stride is None and isinstance(v["window"], int) and v["window"] >= 1:
        v["stride"] = min(SHAPE_DEFAULTS["stride"], v["window"])  # a short window's own length, not a refusal
    _check_coverage_needs_forecasts(args, v["horizon"])
    return DetectorConfig(
        ArchitectureConfig(cell=v["cell"], bidirectional=v["bidirectional"], layers=v["layers"], units=v["units"],
                           dropout=v["dropout"], forecast_horizon=v["horizon"]),
        WindowConfig(length=v["window"], stride=v["stride"], max_gap=v["max_gap"],
                     cumulative_channels=tuple(v["cumulative"])),
        TrainingConfig(epochs=v["epochs"], batch_size=v["batch_size"], seed=v["seed"]),
        ScoringConfig(threshold_method=v["threshold"], interval_coverage=v["coverage"]))


def _warm_start_config(args, config):
    """The model's own config with the training and threshold flags that were given."""
    import dataclasses

    # given: not None, and not a store_true flag's False (a 0 is given: --horizon 0 asks to drop the forecast head)
    shape = [f"--{name.replace('_', '-')}" for name in SHAPE_DEFAULTS
             if getattr(args, name) is not None and getattr(args, name) is not False]
    if shape:
        raise CliError(f"--warm-start continues the model's own architecture and window, so {', '.join(shape)} "
                       "cannot be given with it")
    training = {k: getattr(args, a) for k, a in (("epochs", "epochs"), ("batch_size", "batch_size"), ("seed", "seed"))
                if getattr(args, a) is not None}
    scoring = {k: getattr(args, a) for k, a in (("threshold_method", "threshold"), ("interval_coverage", "coverage"))
               if getattr(args, a) is not None}
    _check_coverage_needs_forecasts(args, config.architecture.forecast_horizon)
    return dataclasses.replace(config, training=dataclasses.replace(config.training, **training),
                               scoring=dataclasses.replace(config.scoring, **scoring))


def _check_coverage_needs_forecasts(args, horizon: int) -> None:
    """Refuse a ``--coverage`` for a model that forecasts nothing: it sets the forecast intervals' coverage only, and
    had been taken without a word (found by the bug hunt of training)."""
    if getattr(args, "coverage", None) is not None and not horizon:
        which = "the model of --warm-start" if args.warm_start else "this model"
        fix = "leave --coverage out" if args.warm_start else "give --horizon STEPS too, or leave --coverage out"
        raise CliError(f"--coverage sets the coverage of the forecast intervals, and {which} forecasts nothing "
                       f"(a forecast horizon of 0); {fix}")


def _check_model_dir(path: str) -> None:
    """Refuse, before any training, a local ``--model-dir`` the artifact cannot go to: a file (or a file above it), a
    folder without write permission, or a place ``_check_model_place`` refuses."""
    from seqwatch.pipelines.sinks import file_in_the_way

    in_the_way = file_in_the_way(path)
    if in_the_way:
        raise CliError(f"cannot write the model to --model-dir {path}: {in_the_way}")
    target = Path(path)
    existing = next(p for p in (target, *target.parents, Path(".")) if p.exists())
    if not os.access(existing, os.W_OK):
        raise CliError(f"cannot write the model to --model-dir {path}: no permission to write in {existing}")
    _check_model_place(path)


def _check_model_place(path: str) -> None:
    """Refuse a ``--model-dir`` (local or on an object store) that is a model root, whose versions the new artifact
    would hide, or a folder inside an artifact, where no run would ever find it (a run of that artifact scores with
    the artifact itself). A store's error is raised as ``ArtifactError``."""
    from seqwatch.pipelines.model_store import model_versions_of
    from seqwatch.pipelines.object_store import is_remote, path_exists

    if is_remote(path):
        target = path.rstrip("/")
        scheme, _, rest = target.partition("://")
        parts = rest.split("/")
        parents = [f"{scheme}://{'/'.join(parts[:depth])}" for depth in range(len(parts) - 1, 1, -1)]  # below the
        # bucket

        def join(folder: str, name: str) -> str:
            return f"{folder}/{name}"
    else:
        target, parents, join = str(Path(path)), [str(p) for p in Path(path).parents], os.path.join
    artifact = next((p for p in parents if model_versions_of(p) == [p]), None)
    if artifact is not None:
        raise CliError(f"--model-dir {path} lies inside the model artifact {artifact}: a run of --model-dir "
                       f"{artifact} scores with that artifact and never sees a version inside it; keep versions "
                       f"side by side in a model root (move {artifact} to {join(artifact, 'v1')}, then train into "
                       f"{join(artifact, target.rsplit('/', 1)[-1])})")
    versions = model_versions_of(target)
    if versions and versions != [target]:  # a root; the name offered is not in use (it had always said v2, which
        # following replaced: bug hunt of variants)
        free = next(f"v{n}" for n in range(len(versions) + 1, 10_000) if not path_exists(join(target, f"v{n}")))
        raise CliError(f"--model-dir {path} is a model root (versions "
                       f"{', '.join(v.rsplit('/', 1)[-1] for v in versions)}); give a new version folder inside it, "
                       f"such as {join(target, free)}")


def cmd_train(args) -> int:
    from seqwatch.models.artifact import MODEL_FILE
    from seqwatch.pipelines.output_lock import OutputBusy, output_lock

    repeated = sorted({c for c in (args.channel or ()) if list(args.channel).count(c) > 1})
    if repeated:  # it had been kept twice, and the training refused for "0 windows" (bug hunt of variants)
        raise CliError(f"--channel {repeated[0]} is given more than once; name each channel to model once")
    if args.exclude_alerts and not args.warm_start:
        raise CliError("--exclude-alerts applies to --warm-start (fine-tuning on recent readings); a first model "
                       "is trained on readings known to be normal")
    if args.skip_stale and not args.warm_start:
        raise CliError("--skip-stale compares the readings of a fine-tuning with those of the model it continues: "
                       "give --warm-start too")
    if args.scored_only and not args.exclude_alerts:
        raise CliError("--scored-only keeps the files the runs given with --exclude-alerts scored, and none is given")
    if args.skip_existing and _holds_a_model(args.model_dir):
        print(f"seqwatch train: --model-dir {args.model_dir} holds a model already; it is left as it is "
              f"(--skip-existing)", file=sys.stderr)
        return 0
    from seqwatch.pipelines.object_store import is_remote

    if is_remote(args.model_dir):
        return _train_into_store(args)
    _check_model_dir(args.model_dir)
    # One training at a time per --model-dir: two at once had each replaced the other's model file or metadata
    # (found by the bug hunt of operational failures). The folder is made for its lock, and the folders made for
    # it are removed again, under the lock, when the training ends without saving anything there.
    target = Path(os.path.abspath(args.model_dir))
    made = []  # the folders this training makes, the deepest first
    folder = target
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    target.mkdir(parents=True, exist_ok=True)
    try:
        with output_lock(str(target), "training", "", flag="--model-dir"):
            try:
                return _train_locked(args)
            finally:
                if made and not (target / MODEL_FILE).exists():
                    _remove_made_folders(made)
    except OutputBusy as exc:
        raise CliError(str(exc)) from None


def _holds_a_model(path: str) -> bool:
    """Whether ``path`` (local or on an object store) holds a complete model version: its metadata, which a training
    writes last."""
    from apache_beam.io.filesystems import FileSystems

    from seqwatch.models.artifact import METADATA_FILE
    from seqwatch.pipelines.object_store import is_remote, path_exists

    if is_remote(path):
        return path_exists(FileSystems.join(path.rstrip("/"), METADATA_FILE))
    return os.path.isfile(os.path.join(path, METADATA_FILE))


def _train_into_store(args) -> int:
    """``seqwatch train --model-dir s3://...``: trained into a local temporary folder, then put into the store,
    its network first and its metadata last (``model_store.publish_model``), so that a run listing the model root
    meanwhile never takes the version half put. On S3 the version folder's lock (``output_lock``, an object there)
    keeps two trainings into it apart; on other stores none does."""
    import tempfile

    from seqwatch.models.artifact import ArtifactError
    from seqwatch.pipelines.output_lock import OutputBusy, output_lock

    target = args.model_dir.rstrip("/")
    try:
        _check_model_place(target)
    except ArtifactError as exc:
        raise CliError(str(exc)) from None
    try:
        with output_lock(target, "training", "", flag="--model-dir"), \
                tempfile.TemporaryDirectory(prefix="seqwatch-train-") as local:
            return _train_locked(args, save_to=os.path.join(local, "model"))
    except OutputBusy as exc:
        raise CliError(str(exc)) from None


def _same_model_dir(one: str, other: str) -> bool:
    """Whether two model directories (local paths or URLs) are one."""
    if "://" in one or "://" in other:
        return one.rstrip("/") == other.rstrip("/")
    return Path(one).resolve() == Path(other).resolve()


def _remove_made_folders(made: list) -> None:
    """Remove the folders a training made for its lock (``made``, the deepest first) when it saved nothing: the
    lock file, then each folder while it is empty. Anything else found there stays, with its folder (a recursive
    delete could have taken what another job put there meanwhile: found by the review)."""
    from seqwatch.pipelines.output_lock import LOCK_FILE

    try:
        (made[0] / LOCK_FILE).unlink(missing_ok=True)
        for folder in made:
            folder.rmdir()
    except OSError:
        pass


def _train_locked(args, save_to: str | None = None) -> int:
    """``cmd_train`` once its ``--model-dir`` is this training's alone; ``save_to``: a local folder to save the
    model in before it is put into ``--model-dir`` on an object store (``_train_into_store``)."""
    from seqwatch.models.artifact import ArtifactError, load_artifact, save_artifact
    from seqwatch.pipelines.model_store import local_model_dir, pinned_model_dir, publish_model
    from seqwatch.models.detector import (ZERO_THRESHOLD, InsufficientDataError, ModelMismatchError,
                                          Seq2SeqDetector, TrainingDataWarning, entities_lacking_channels,
                                          extrapolated_threshold_note, lacking_channels_note, zero_threshold_note)
    from seqwatch.pipelines import interrupts
    from seqwatch.pipelines.report import write_training_report
    from seqwatch.schemas.validation import FAMILIES as SUITE_FAMILIES
    from seqwatch.schemas.validation import channel_value_bounds, load_suite_dict, rules_for_no_channel

    try:
        if args.warm_start:
            source = pinned_model_dir(args.warm_start)
            if _same_model_dir(source, args.model_dir):
                raise CliError(f"--model-dir {args.model_dir} is the version --warm-start continues; give the new "
                               f"version a folder of its own (beside it in the model root), so that the one running "
                               f"jobs use stays as it is")
            detector = load_artifact(local_model_dir(args.warm_start))
            if args.model_id is not None and args.model_id != detector.model_id:
                raise CliError(f"--model-id {args.model_id} differs from the model id {detector.model_id!r} of "
                               f"--warm-start: a fine-tuned version keeps its model's id (its alerts continue "
                               f"the model's); a model of another id is trained without --warm-start")
            detector.config = _warm_start_config(args, detector.config)
        else:
            detector = Seq2SeqDetector(_new_config(args), model_id=args.model_id or "seqwatch")
    except ArtifactError as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(_in_flags(str(exc))) from None
    # A fine-tuning judges its readings, and bounds its forecasts, by the suite its model was trained with unless
    # --suite names another (the default sensor suite had replaced an energy model's bounds: power forecasts < 0 W)
    keep_bounds = False
    if args.suite is None:
        args.suite = (detector.training_suite if args.warm_start else None) or "sensor"
        keep_bounds = bool(args.warm_start) and detector.training_suite is None  # a model saved before it was kept
        if args.warm_start and detector.training_suite:
            if args.suite not in SUITE_FAMILIES and not os.path.isfile(args.suite):
                raise CliError(f"the model of --warm-start was trained with the suite file {args.suite}, which is "
                               f"gone; give the suite the runs use with --suite")
            print(f"seqwatch train: fine-tuning with the suite the model was trained with: {args.suite}",
                  file=sys.stderr)
    # what a later fine-tuning without --suite takes; none for a model saved before it was kept and fine-tuned
    # without --suite (it judged by the default suite but kept its own bounds, which that suite's would replace)
    detector.training_suite = None if keep_bounds else \
        args.suite if args.suite in SUITE_FAMILIES else os.path.abspath(args.suite)
    modelled = tuple(detector.channels) if args.warm_start else tuple(args.channel or ())
    scored_files = None
    if args.scored_only:  # the files the runs of --exclude-alerts read as they are now, and those runs' folders
        from seqwatch.pipelines.retraining import scored_inputs
        try:
            scored = scored_inputs(list(args.input), list(args.exclude_alerts))
        except ValueError as exc:
            raise CliError(str(exc)) from None
        for note in scored.notes:
            print(f"seqwatch train: note: {note}", file=sys.stderr)
        if not scored.files:
            raise CliError("--scored-only left no file to fine-tune on: no run given with --exclude-alerts read any "
                           "file of --input as it is now (the notes above say what was left out); no version was "
                           "written")
        scored_files, args.exclude_alerts = scored.files, scored.runs
    training = _read_training_frame(args, channels=modelled, files=scored_files)
    frame, paths = training.frame, training.paths
    holdout = held = None
    if args.holdout_input:
        held = _read_training_frame(args, args.holdout_input, "holdout input", modelled)
        holdout = held.frame
    left_out = left_out_of_input = 0
    if args.exclude_alerts:
        import pandas as pd

        from seqwatch.pipelines.retraining import alert_spans, leave_out_alerted, unscored_inputs
        spans = pd.concat([alert_spans(folder) for folder in args.exclude_alerts], ignore_index=True)
        frame, left_out = leave_out_alerted(frame, spans)
        left_out_of_input = left_out
        unscored = unscored_inputs(list(paths), list(args.exclude_alerts))
        if unscored:
            print(f"seqwatch train: note: {len(unscored)} of the {len(paths)} training file(s) were not read as they "
                  f"are now by the runs given with --exclude-alerts (first: {unscored[0]}; a file that came after "
                  f"its day's run, or changed since): their anomalies were never scored, so none of them is left "
                  f"out; score them (seqwatch run) and give that run's folder too", file=sys.stderr)
        if holdout is not None:
            holdout, held_left_out = leave_out_alerted(holdout, spans)
            left_out += held_left_out
    if args.skip_stale and _is_stale(detector, [frame, holdout], args.warm_start):
        return 0
    channels = tuple(args.channel) if args.channel else None
    print(f"{'fine-tuning' if args.warm_start else 'training'} on {len(frame)} readings from {len(paths)} file(s) "
          f"({training.skipped()}" + (f", {left_out} inside alerts left out" if args.exclude_alerts else "") + ")"
          + (f"; validation and calibration on {len(holdout)} held-out readings from {len(held.paths)} file(s) "
             f"({held.skipped()})" if holdout is not None else ""), file=sys.stderr)
    try:
        if args.warm_start:
            if channels and set(channels) != set(detector.channels):
                raise CliError(f"--warm-start continues a model of channels {list(detector.channels)}; "
                               f"--channel {' '.join(channels)} differs")
            tuned = frame[frame["channel"].isin(detector.channels)]
            if tuned.empty and left_out_of_input:
                raise CliError(f"all {left_out_of_input} readings of the fine-tuning input lie inside the alerts of "
                               f"the runs given with --exclude-alerts, so none is left to fine-tune on: give "
                               f"readings from outside those alerts, or, if they show the equipment's new normal, "
                               f"fine-tune on them without --exclude-alerts")
            lacking = entities_lacking_channels(tuned, detector.channels)
            if lacking:  # as a first training notes them: none of their readings can train the model
                print(f"seqwatch train: note: {lacking_channels_note(lacking, detector.channels)}", file=sys.stderr)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TrainingDataWarning)  # printed below, as notes
                detector.fine_tune(tuned, holdout=holdout)
            if not detector.threshold > ZERO_THRESHOLD:
                # a version that alerts on every window, which running jobs with --watch-models would switch to
                raise CliError(f"the fine-tuned version was not saved: {zero_threshold_note(detector.threshold)}; "
                               f"the model of --warm-start {args.warm_start} is as it was")
            notes = detector.metrics.get("fine_tune_notes", [])
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TrainingDataWarning)  # printed below, as notes
                detector.fit(frame, channels=channels, holdout=holdout)
            notes = detector.metrics.get("training_notes", [])
        for note in notes:
            print(f"seqwatch train: note: {note}", file=sys.stderr)
        extrapolated = extrapolated_threshold_note(detector.threshold, detector.metrics["windows"]["calibration"],
                                                   float(detector.tail.sorted_scores[-1]), detector.config.scoring)
        if extrapolated:
            print(f"seqwatch train: note: {extrapolated}", file=sys.stderr)
    except InsufficientDataError as exc:
        gone = (f" ({left_out} readings inside the alerts of --exclude-alerts were left out)"
                if args.exclude_alerts and left_out else "")
        raise CliError(f"{exc}{gone}") from None
    except ModelMismatchError as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    # the suite's bounds of each channel, which the forecasts keep to (a power forecast below 0 W would be a
    # reading the run quarantines); a fine-tuning takes them from the suite it judged its readings by (a model
    # saved before its suite was kept, fine-tuned without --suite, keeps its own)
    from seqwatch.pipelines.object_store import read_bytes

    suite_rules = load_suite_dict(args.suite, check=False, read=read_bytes)
    if not keep_bounds:
        detector.value_bounds = channel_value_bounds(suite_rules, detector.channels)
    idle = rules_for_no_channel(suite_rules, detector.channels) if args.suite not in SUITE_FAMILIES else []
    if idle:  # a user's suite (the bundled ones hold rules for every kind of channel)
        print(f"seqwatch train: note: {len(idle)} rule(s) of suite {args.suite} judge none of the model's channels "
              f"{list(detector.channels)} (first: {idle[0]}): a channel name misspelt in a row condition?",
              file=sys.stderr)
    # a signal whose exception was dropped stops here, with --model-dir as it was; one between the model's file
    # and its metadata had left neither version whole
    with interrupts.held_back():
        out = save_artifact(detector, save_to or args.model_dir)
        report = write_training_report(detector, out)
        if save_to is not None:
            try:
                publish_model(str(out), args.model_dir)
            except ArtifactError as exc:
                raise CliError(str(exc)) from None
            out, report = args.model_dir.rstrip("/"), f"{args.model_dir.rstrip('/')}/{Path(report).name}"
    summary = {"model_dir": str(out), "model_version": detector.model_version,
               "channels": list(detector.channels), "step_seconds": detector.step_us / 1e6,
               "threshold": round(detector.threshold, 4), "report": str(report)}
    if detector.readings_span_us is not None:
        import pandas as pd

        summary["readings_span"] = [pd.Timestamp(us, unit="us", tz="UTC").isoformat()
                                    for us in detector.readings_span_us]
    if holdout is not None:
        summary["holdout_readings"] = int(len(holdout))
    if args.warm_start:
        summary.update({"warm_start": str(args.warm_start), "fine_tunes": detector.metrics.get("fine_tunes", 0),
                        "left_out_in_alerts": left_out})
    print(json.dumps(summary, indent=1))
    return 0


def _is_stale(detector, frames: list, warm_start: str) -> bool:
    """``--skip-stale``: whether the readings of ``frames`` (the input's and the holdout's, None where there is
    none) end no later than those the model of ``--warm-start`` has been trained on, said on stderr. A past day's
    fine-tuning run again by hand (a cleared Airflow task of a Sunday whose fine-tuning had failed, after a later
    Sunday's succeeded) would otherwise continue the newest version on older readings, and its own version would
    become the newest, which every later run uses (a limit listed since the bug hunt of deploy examples, mended
    2026-12-06)."""
    import pandas as pd

    def shown(us: int) -> str:
        return pd.Timestamp(us, unit="us", tz="UTC").isoformat()

    theirs = detector.readings_span_us
    ends = [span[1] for span in (detector.readings_span(f) for f in frames if f is not None) if span is not None]
    if theirs is None:
        print(f"seqwatch train: note: the model of --warm-start {warm_start} does not say when its training readings "
              f"end (it was saved by an older seqwatch), so --skip-stale cannot compare them; fine-tuning",
              file=sys.stderr)
        return False
    if not ends or max(ends) > theirs[1]:
        return False
    print(f"seqwatch train: the model of --warm-start {warm_start} (version {detector.model_version}) was trained on "
          f"readings up to {shown(theirs[1])}, and these end at {shown(max(ends))}: a version fine-tuned on them would "
          f"become the newest with older readings; no version is written (--skip-stale)", file=sys.stderr)
    return True


def cmd_evaluate(args) -> int:
    """``seqwatch evaluate``: the evaluation as JSON on stdout, one line of it on stderr
    (``seqwatch.pipelines.evaluate``)."""
    from seqwatch.pipelines.evaluate import evaluate_run, summary_line

    _check_seconds_or_zero("--tolerance", args.tolerance)
    result = evaluate_run(args.output, args.labels, int(round(args.tolerance * 1e6)))
    print(f"seqwatch evaluate: {summary_line(result)}", file=sys.stderr)
    print(json.dumps(result, indent=1))
    return 0


def _calibration_keep_days(args) -> float:
    """``--calibration-keep-days`` checked (0.0 where not given); a ``CliError`` where it cannot apply."""
    keep_days = getattr(args, "calibration_keep_days", None)
    if keep_days is None:
        return 0.0
    if not (math.isfinite(keep_days) and keep_days > 0):
        raise CliError(f"--calibration-keep-days must be a positive number of days, got {keep_days:g}")
    if not args.online_calibration:
        raise CliError("--calibration-keep-days limits the calibration state that --online-calibration keeps: "
                       "give --online-calibration too")
    return keep_days


def _check_calibration_from(args) -> None:
    if args.calibration_from and not args.online_calibration:
        raise CliError("--calibration-from continues an earlier run's online calibration: give --online-calibration "
                       "too")


def _run_config(args):
    from seqwatch.pipelines.config import DEFAULT_PANE_STEPS, RunConfig
    mapping = _mapping_from_args(args)
    _check_calibration_from(args)
    keep_days = _calibration_keep_days(args)
    try:
        return RunConfig(inputs=tuple(args.input), output=args.output, model_dir=args.model_dir, mapping=mapping,
                         suite=args.suite, run_id=args.run_id or "",
                         pane_steps=DEFAULT_PANE_STEPS if args.pane_steps is None else args.pane_steps,
                         workers=args.workers, alert_cooldown_us=_cooldown_us(args.alert_cooldown),
                         online_calibration=args.online_calibration, calibration_from=args.calibration_from or "",
                         calibration_keep_days=keep_days, earliest_us=_earliest_us(args),
                         commit_in_job=getattr(args, "commit_in_job", False),
                         max_quarantined_share=getattr(args, "max_quarantined_share", None))
    except ValueError as exc:
        raise CliError(_in_flags(str(exc))) from None


def _is_direct_runner(beam_args) -> bool:
    """Whether the Beam flags name the DirectRunner (a stream that names no runner runs on Prism)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from seqwatch.pipelines.runners import DIRECT_RUNNERS, runner_name

    return runner_name(PipelineOptions(beam_args)) in DIRECT_RUNNERS


# A broker stream's batch (--batch-seconds): how long its reader gathers messages before it passes them on (a poll
# ends sooner at max_batch messages). At most 5 s, a bound on what a batch adds to latency, and half of Pub/Sub's
# shortest ack deadline (10 s), which runs from a message's pull to its bundle's finalization.
DEFAULT_BATCH_S = 0.5
MAX_BATCH_S = 5.0


def _check_positive_seconds(flag: str, seconds: float | None) -> None:
    """An optional flag of seconds that must be at least 1 µs (smaller rounds to no window at all: a flush window
    of 1e-9 s had divided by zero) and at most ``MAX_SECONDS`` when given."""
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise CliError(f"{flag} must be a positive number of seconds, got {seconds:g}")
    from seqwatch.pipelines.config import MAX_SECONDS

    if seconds is not None and not 1e-6 <= seconds <= MAX_SECONDS:
        raise CliError(f"{flag} must be from 1 µs to a century ({MAX_SECONDS:.0f} s), got {seconds:g}")


def _check_seconds_or_zero(flag: str, seconds: float) -> None:
    """A flag of seconds that may be zero, but must be finite, not negative and at most ``MAX_SECONDS``."""
    if not math.isfinite(seconds) or seconds < 0:
        raise CliError(f"{flag} must be zero or a positive number of seconds, got {seconds:g}")
    from seqwatch.pipelines.config import MAX_SECONDS

    if seconds > MAX_SECONDS:
        raise CliError(f"{flag} must be at most a century ({MAX_SECONDS:.0f} s), got {seconds:g}")


def _cooldown_us(seconds: float) -> int:
    _check_seconds_or_zero("--alert-cooldown", seconds)
    return int(round(seconds * 1e6))


class _Quarantine(NamedTuple):
    """The quarantine files a notice reads: all under ``output``/quarantine, or, for a stream (``since_s``, a
    time.time()), only those written since it started, so that an earlier stream's files in the same folder are
    not taken for its own."""

    output: str
    since_s: float | None = None

    def read(self, columns: list, where, limit: int | None = None):
        """The ``columns`` of the quarantined records that match the pyarrow expression ``where`` (the first
        ``limit`` of them), or None when the files cannot be read: the notices add what they can read, and no
        more. An output on an object store is read through Beam's file systems, with the run's ``--s3_*`` flags
        (``_store_dataset``)."""
        import pyarrow.dataset as ds

        from seqwatch.pipelines.object_store import is_remote, store_error
        from seqwatch.pipelines.streaming import written_since

        remote = is_remote(self.output)
        folder = f"{self.output.rstrip('/')}/quarantine" if remote else os.path.join(self.output, "quarantine")
        try:
            if self.since_s is None and not remote:
                dataset = ds.dataset(folder, format="parquet")
            else:
                files = written_since(folder, "**/*.parquet", self.since_s)
                if not files:
                    return None
                dataset = _store_dataset(files, columns) if remote else ds.dataset(files, format="parquet")
            return (dataset.head(limit, columns=columns, filter=where) if limit else
                    dataset.to_table(columns=columns, filter=where))
        except (OSError, ValueError):
            return None
        except Exception as exc:  # noqa: BLE001 - an object store's own errors are no OSError
            if store_error(exc) is None:
                raise
            return None


def _store_dataset(files: list, columns: list):
    """The quarantine files ``files`` on an object store as one in-memory dataset, read through Beam's file systems
    (pyarrow's own S3 file system knows neither Beam's ``--s3_endpoint_url`` nor its keys: given an ``s3://`` path it
    asked AWS for the bucket's region, which took 11 s to fail where the endpoint was another, and the notice lost
    its notes). The records' row texts (``raw``, most of the bytes) are left out unless ``columns`` names them."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    tables = []
    for path in files:
        with FileSystems.open(path) as f:
            parquet = pq.ParquetFile(f)
            tables.append(parquet.read([c for c in parquet.schema_arrow.names if c != "raw" or "raw" in columns]))
    return ds.dataset(pa.concat_tables(tables, promote_options="permissive"))


def _first_reason(quarantine: _Quarantine, reason_code: str) -> str | None:
    """The reason of the first quarantined record with ``reason_code``."""
    import pyarrow.compute as pc
    table = quarantine.read(["reason"], pc.field("reason_code") == reason_code, limit=1)
    return table.column("reason")[0].as_py() if table is not None and table.num_rows else None


def quarantine_notice(command: str, manifest: dict, output: str, since_s: float | None = None) -> str | None:
    """One line for stderr when a run quarantined records: how many, by reason, and where they are; when
    nothing was scored, also the first reason of the commonest code (it usually names the setting to change).
    ``since_s`` (a stream): read only the quarantine files written since then (``_Quarantine``)."""
    quarantined, records_in = manifest["records_quarantined"], manifest["records_in"]
    if not quarantined:
        return None
    by_code: dict = {}
    for key, n in manifest["stages"].items():
        if key.startswith("quarantined."):
            code = key.rsplit(".", 1)[1]
            by_code[code] = by_code.get(code, 0) + n
    ranked = sorted(by_code.items(), key=lambda item: (-item[1], item[0]))
    reasons = _by_reason(by_code)
    where = os.path.join(output, "quarantine")
    quarantine = _Quarantine(output, since_s)
    unknown = _column_notes(quarantine, manifest, by_code)
    unknown += (_lacking_channels(quarantine) + _sparse_channels(quarantine)) if "insufficient_data" in by_code else ""
    if manifest["records_scored"]:
        return f"seqwatch {command}: {quarantined} of {records_in} readings were quarantined ({reasons}){unknown}; " \
               f"each record and its reason is in {where}"
    first = _first_reason(quarantine, ranked[0][0]) if ranked else None
    example = f"; the first {ranked[0][0]}: {first}" if first else ""
    return f"seqwatch {command}: nothing was scored: all {quarantined} readings were quarantined ({reasons})" \
           f"{unknown}{example}; each record and its reason is in {where}"


def _lacking_channels(quarantine: _Quarantine) -> str:
    """``; sources whose entity lacks a model channel in some stretch: pump-07.csv (no 'vibration') ...`` (one
    stretch of a file can lack it where the rest has it: a reading days before the others)."""
    from seqwatch.pipelines.windows import LACKING_MARK, absent_channels
    return _sources_by_clause(quarantine, LACKING_MARK, lambda reason: f"no {absent_channels(reason)}",
                              "sources whose entity lacks a model channel in some stretch")


def _sparse_channels(quarantine: _Quarantine) -> str:
    """``; sources with channels whose readings come further apart than the model's gap filling bridges:
    pump-07.csv ('temperature' every 6 steps) ...``."""
    from seqwatch.pipelines.windows import SPARSE_MARK, sparse_channels_named
    return _sources_by_clause(quarantine, SPARSE_MARK, sparse_channels_named, "sources with channels whose readings "
                                                                          "come further apart than the model's "
                                                                          "gap filling bridges")


def _sources_by_clause(quarantine: _Quarantine, mark: str, named, what: str) -> str:
    """``; <what>: <source> (<named(reason)>), ...`` for the first three sources whose insufficient_data reasons
    hold the clause starting with ``mark`` (``windows.lacking_clause``, ``windows.sparse_clause``); empty when
    there are none or the files cannot be read."""
    import pyarrow.compute as pc
    rows = quarantine.read(["source", "reason"], (pc.field("reason_code") == "insufficient_data")
                        & pc.match_substring(pc.field("reason"), mark))
    found: dict = {}
    for source, reason in (zip(rows.column("source").to_pylist(), rows.column("reason").to_pylist())
                           if rows is not None else ()):
        found.setdefault(os.path.basename(source), named(reason))
    if not found:
        return ""
    shown = ", ".join(f"{source} ({clause})" for source, clause in sorted(found.items())[:3])
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return f"; {what}: {shown}{more}"


def _by_column(quarantine: _Quarantine, reason_code: str, where=None) -> list:
    """``[(column, n)]`` of the quarantined records with ``reason_code`` (and matching the pyarrow expression
    ``where``), commonest first (a wide file's column, a long file's channel); empty
    when the files cannot be read."""
    import pyarrow.compute as pc
    match = pc.field("reason_code") == reason_code
    names = quarantine.read(["column"], match if where is None else match & where)
    if names is None:
        return []
    counts = [(item["values"], item["counts"]) for item in names.column("column").value_counts().to_pylist()]
    return sorted(counts, key=lambda item: (-item[1], str(item[0])))


def _column_notes(quarantine: _Quarantine, manifest: dict, by_code: dict) -> str:
    """What the quarantine says by column: the channels the model lacks, the columns whose values are not
    numbers (a text status column of a wide file), each with the ``--ignore`` that leaves a wide file's column
    out, and the columns with empty values (a wide file's channel read less often than the others: no --ignore
    for it, it holds readings); empty when none was quarantined or the files cannot be read."""
    import pyarrow.compute as pc

    from seqwatch.pipelines.parsing import EMPTY_VALUE, MISSING_VALUE_END
    wide = ((manifest.get("settings") or {}).get("mapping") or {}).get("format") == "wide"
    by = "column" if wide else "channel"
    reason = pc.field("reason")
    gap = pc.ends_with(reason, EMPTY_VALUE) | pc.ends_with(reason, MISSING_VALUE_END)
    notes = ""
    # (code, which records, what they are, the --ignore hint for a wide file's whole column, an aside for wide)
    for code, where, what, hint, aside in (
            ("unknown_channel", None, "channels the model lacks", "leave such columns out with --ignore (e.g. "
                                                                  "{}) or the mapping's 'ignore' list", ""),
            ("parse_value", ~gap, f"values that are not numbers, by {by}",
             "a column of text, not readings, is left out with --ignore (e.g. {})", ""),
            ("parse_value", gap, f"empty or missing values, by {by}", None,
             " (a wide file's empty cell is counted as a reading that did not come)")):
        counts = _by_column(quarantine, code, where) if code in by_code else []
        if not counts:
            continue
        shown = ", ".join(f"{column!r} {n}" for column, n in counts[:5])
        more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
        notes += f"; {what}: {shown}{more}" + (aside if wide else "")
        ignorable = _ignorable_columns(code, counts, manifest)
        # many columns the model lacks, or many columns of text (a historian's export of tags and their states)
        model = set((manifest.get("model") or {}).get("channels") or ())
        others = [column for column, _ in counts if code == "unknown_channel" or column not in model]
        many = _model_columns_only(manifest) if hint and wide and len(others) > 5 else ""
        if many:  # an --ignore per column would make a long command line: read the model's columns only
            notes += f"; {many}"
        elif hint and wide and ignorable:
            notes += f"; {hint.format(' '.join(f'--ignore {c}' for c in ignorable))}"
    return notes


def _model_columns_only(manifest: dict) -> str:
    """For a wide file of many columns the model lacks (a historian's export of hundreds of tags): the --mapping
    file that reads only the model's channels, as a clause; empty without the model's channels in the manifest."""
    from seqwatch.schemas.mapping import InputMapping

    channels = (manifest.get("model") or {}).get("channels")
    mapping = dict((manifest.get("settings") or {}).get("mapping") or {})
    if not channels or mapping.get("channels"):
        return ""
    mapping.update({"channels": {c: c for c in channels}, "extra_columns": "ignore"})
    defaults = InputMapping().to_dict()
    shown = {k: v for k, v in mapping.items() if k in ("format", "channels", "extra_columns") or v != defaults.get(k)}
    return f"read only the model's columns with a --mapping file {json.dumps(shown)}"


def _ignorable_columns(code: str, counts: list, manifest: dict) -> list:
    """The columns (up to 3) an ``--ignore`` hint names: the commonest channel the model lacks; the columns of text
    that are not the model's channels (one of them may hold a stray bad cell: no hint for it). A manifest without
    the model's channels (older runs) falls back to the commonest column when it holds most of these records and
    more than a handful of readings."""
    if code == "unknown_channel":
        return [counts[0][0]]
    channels = set((manifest.get("model") or {}).get("channels") or ())
    if channels:
        # a wide file's column as the mapping names it, renamed to its channel ("Flow (l/min)" -> flow)
        renamed = (((manifest.get("settings") or {}).get("mapping") or {}).get("channels") or {})
        return [column for column, _ in counts if renamed.get(column, column) not in channels][:3]
    top = counts[0][1]
    whole = 2 * top > sum(n for _, n in counts) and top >= max(10, 0.01 * manifest["records_in"])
    return [counts[0][0]] if whole else []


QUARANTINE_GATE_EXIT = 3  # a run that finished but quarantined more than --max-quarantined-share allows, or all


def cmd_run(args, beam_args) -> int:
    from seqwatch.pipelines.batch import RunError, quarantine_gate, run_batch

    share = args.max_quarantined_share
    try:
        manifest = run_batch(_run_config(args), beam_args)
    except RunError as exc:
        raise CliError(str(exc)) from None
    if manifest.get("submitted"):  # --commit-in-job on a runner that runs the job without this process
        print(json.dumps(manifest, indent=1))
        print(f"seqwatch run: the job is submitted ({manifest['job_state']}); its last step moves the outputs into "
              f"place under {args.output} and writes manifest.json there", file=sys.stderr)
        gate = f"more than {share:g} of the readings were" if share is not None else "every reading was"
        print(f"seqwatch run: the job fails after its commit if {gate} quarantined, where a run that waits for its "
              f"job exits {QUARANTINE_GATE_EXIT}", file=sys.stderr)
        return 0
    print(json.dumps({k: manifest[k] for k in ("run_id", "records_in", "records_scored", "records_quarantined")}
                     | {"alerts": manifest["stages"].get("alerts", 0), "output": args.output}, indent=1))
    used, model = manifest["settings"]["pane_steps"], manifest["model"]
    if args.pane_steps is not None and args.pane_steps < 2 * (model["window_length"] + model["max_gap"] + 1):
        print(f"seqwatch run: note: a pane of this model holds at least two windows of {model['window_length']} "
              f"steps and their gap filling, so --pane-steps {args.pane_steps} became {used} (the manifest says so)",
              file=sys.stderr)
    _print_notices("run", manifest, args.output)
    # The outputs stay: the quarantine says what went wrong. The exit code tells a scheduler to alert (not one
    # reading scored: a long export without a model channel, a format changed upstream, must not pass for a quiet
    # night).
    failed = quarantine_gate(manifest, share)
    if failed:
        hint = "" if share is not None else "; --max-quarantined-share 1 exits 0 then"
        print(f"seqwatch run: {failed} (exit code {QUARANTINE_GATE_EXIT}{hint}); the run's outputs are in "
              f"{args.output}", file=sys.stderr)
        return QUARANTINE_GATE_EXIT
    return 0


def _print_notices(command: str, manifest: dict, output: str) -> None:
    """The stderr lines of a batch run (``run``, ``replay``): whose outputs it replaced, what it quarantined."""
    for line in (replaced_notice(command, manifest), empty_inputs_notice(command, manifest),
                 calibration_notice(command, manifest), quarantine_notice(command, manifest, output)):
        if line:
            print(line, file=sys.stderr)


def calibration_notice(command: str, manifest: dict) -> str | None:
    """One line for stderr when a run started from a kept calibration state (``--calibration-from``) and not one of
    the entities it judged went on from it (the bug hunt of kept states: entity ids taken from dated file names
    continued nothing, without a word)."""
    kept, stages = manifest.get("calibration_from"), manifest.get("stages") or {}
    started = stages.get("calibration_entities_started", 0)
    if kept and kept.get("missing"):
        return (f"seqwatch {command}: note: there is no calibration state at {kept['file']} (--calibration-from), so "
                f"every entity started from the model's calibration scores, as on the first day of a series")
    if not kept or stages.get("calibration_entities_continued", 0) or not started:
        return None
    return (f"seqwatch {command}: note: none of the {started} entities this run judged went on from the calibration "
            f"state it started from ({kept['file']}): each started again from the model's calibration scores (the "
            f"state holds other entity ids, as ids taken from dated file names are, or another model version)")


def empty_inputs_notice(command: str, manifest: dict) -> str | None:
    """One line for stderr when some of a run's inputs were empty files (0 bytes), as a failed export leaves them:
    one alone is refused ("the input holds no records"), but one among others had passed without a word (found by
    the bug hunt of operational failures). Local inputs, as they are after the run."""
    def size(path: str) -> int | None:  # local files only: a call per remote file would cost a round trip each
        try:
            return os.path.getsize(path) if "://" not in path else None
        except OSError:  # an input gone since: the run said what it read
            return None

    inputs = list(manifest.get("inputs") or [])
    empty = [path for path in inputs if size(path) == 0]
    if not empty:
        return None
    shown = ", ".join(empty[:3]) + (f" and {len(empty) - 3} more" if len(empty) > 3 else "")
    return (f"seqwatch {command}: note: {len(empty)} of the {len(inputs)} input files are empty (0 bytes), so this "
            f"run holds no reading of them: {shown}")


def _counts_folder(output: str) -> str:
    """``<output>/counts`` as a person reads it (``out/`` gave ``out//counts``)."""
    return f"{output.rstrip('/') or '/'}/counts"


def replaced_notice(command: str, manifest: dict) -> str | None:
    """One line for stderr when a run replaced another run's outputs in its --output folder."""
    replaced = manifest.get("replaced_run")
    if not replaced:
        return None
    inputs = replaced["inputs"]
    shown = ", ".join(inputs[:3]) + (f" and {len(inputs) - 3} more" if len(inputs) > 3 else "")
    return (f"seqwatch {command}: these outputs replace those of run {replaced['run_id']} (inputs: {shown or 'none'}) "
            f"in {manifest['output']}; give each run its own --output to keep both")


def cmd_replay(args, beam_args) -> int:
    from seqwatch.pipelines.batch import RunError
    from seqwatch.pipelines.replay import ReplayError, config_from_args, run_replay
    config = config_from_args(args)
    # The format flags set mapping keys as the mapping file does; --ignore adds to the original run's list.
    changes = _with_flags(config.mapping_changes, _mapping_flags(args), args)
    extra = dict(config.extra)
    if args.online_calibration is not None:  # a JSON Lines export names no run whose settings it could take
        extra["online_calibration"] = bool(args.online_calibration)
    if args.alert_cooldown is not None:
        extra["alert_cooldown_us"] = _cooldown_us(args.alert_cooldown)
    config = dataclasses.replace(config, mapping_changes=changes, more_ignored=tuple(args.ignore or ()), extra=extra)
    try:
        manifest = run_replay(config, beam_args)
    except (RunError, ReplayError) as exc:
        raise CliError(str(exc)) from None
    print(json.dumps({k: manifest[k] for k in ("run_id", "records_in", "records_scored", "records_quarantined")}
                     | {"replay": manifest["replay"], "output": args.output}, indent=1))
    _print_notices("replay", manifest, args.output)
    if manifest["records_in"] and not manifest["records_scored"]:
        # as seqwatch run: a fix that scored nothing is no success for a script
        print(f"seqwatch replay: nothing was scored, every reading was quarantined (exit code "
              f"{QUARANTINE_GATE_EXIT}); the replay's outputs are in {args.output}", file=sys.stderr)
        return QUARANTINE_GATE_EXIT
    return 0


# The stream flags that only one kind of source reads (those without a default).
STREAM_SOURCE_FLAGS = {"--input": ("replay",), "--bootstrap-servers": ("kafka",), "--group-id": ("kafka",),
                       "--topic": ("kafka", "mqtt"), "--mqtt-broker": ("mqtt",), "--client-id": ("mqtt",),
                       "--subscription": ("pubsub",), "--emulator-host": ("pubsub",),
                       "--batch-seconds": ("kafka", "mqtt", "pubsub")}


def cmd_stream(args, beam_args) -> int:
    from seqwatch.pipelines import broker_sources
    from seqwatch.pipelines.batch import RunError
    from seqwatch.pipelines.runners import StreamRunnerError, stream_runner_args
    from seqwatch.pipelines.parsing import SchemaDriftError
    from seqwatch.pipelines.sources import expand_inputs, is_parquet, read_header
    from seqwatch.pipelines.sinks import MAX_SCORE_FILES, prepare_output_folder
    from seqwatch.pipelines.output_lock import OutputBusy, output_lock
    from seqwatch.pipelines.streaming import plan_stream

    _check_positive_seconds("--watch-models", args.watch_models)
    _check_positive_seconds("--idle-watermark", args.idle_watermark)
    _check_positive_seconds("--stop-after-idle", args.stop_after_idle)  # 0 had read as "never stop"
    if args.batch_seconds is not None and not (math.isfinite(args.batch_seconds)
                                               and 0.01 <= args.batch_seconds <= MAX_BATCH_S):
        raise CliError(f"--batch-seconds must be from 0.01 to {MAX_BATCH_S:g} seconds, got {args.batch_seconds:g}")
    _check_positive_seconds("--archive-readings", args.archive_readings)
    _check_positive_seconds("--flush-window", args.flush_window)
    _check_positive_seconds("--late-after", args.late_after)
    _check_seconds_or_zero("--allowed-lateness", args.allowed_lateness)
    if args.calibration_save_every is not None:
        _check_seconds_or_zero("--calibration-save-every", args.calibration_save_every)
        if not args.online_calibration:
            raise CliError("--calibration-save-every sets how often --online-calibration writes each entity's "
                           "calibration: give --online-calibration too")
    _check_seconds_or_zero("--max-out-of-orderness", args.max_out_of_orderness)
    if args.pane_steps < 0:
        raise CliError(f"--pane-steps must be a positive number of steps (0: the default), got {args.pane_steps}")
    if not 0 <= args.score_window_files <= MAX_SCORE_FILES:
        raise CliError(f"--score-window-files must be a number of files from 1 to {MAX_SCORE_FILES} (0, the default: "
                       f"a file per entity and pane), got {args.score_window_files}")
    for flag, sources in STREAM_SOURCE_FLAGS.items():  # a flag of another source would be dropped without a word
        if getattr(args, flag[2:].replace("-", "_")) and args.source not in sources:
            named = " or ".join(sources) if len(sources) < 3 else f"{', '.join(sources[:-1])} or {sources[-1]}"
            raise CliError(f"{flag} is for --source {named}, not --source {args.source}")
    align = None
    # The mapping: of the replayed files, or of the brokers' JSON messages (long: one reading per message, its
    # keys renamed by the mapping; wide: a key per channel, as devices publish their state).
    mapping = _mapping_from_args(args)
    if mapping.entity.get("from_topic") is not None and args.source != "mqtt":
        raise CliError(f"the entity from a topic level (--entity-topic-level, or the mapping's from_topic) is for "
                       f"MQTT messages; --source {args.source} has no topic per message")
    if mapping.entity.get("from_key") and args.source != "kafka":
        raise CliError(f"the entity from the message key (--entity-from-key, or the mapping's from_key) is for "
                       f"Kafka messages; --source {args.source} has no message key")
    if (args.entity_topic_level is not None or args.entity_from_key) and mapping.format != "wide":
        raise CliError("--entity-topic-level and --entity-from-key read the entity of a device's state message "
                       "(--format wide); a long message names its entity in its entity_id field")
    # The first Ctrl-C or SIGTERM asks the readers to stop and the stream to write what it holds
    from seqwatch.pipelines.stop_request import StopRequest, stop_file

    stop = StopRequest(stop_file(args.output))
    # What every broker reader takes from the flags.
    reading = {"stop_after_idle_s": args.stop_after_idle, "max_out_of_orderness_s": args.max_out_of_orderness,
               "idle_watermark_s": args.idle_watermark, "mapping": mapping, "stop": stop}
    batching = {"max_bundle_s": args.batch_seconds or DEFAULT_BATCH_S}
    paths: list[str] = []  # the replayed files
    if args.source == "replay":
        if not args.input:
            raise CliError("--source replay needs --input")
        for flag, given in (("--idle-watermark", args.idle_watermark is not None),
                            ("--stop-after-idle", args.stop_after_idle is not None),
                            ("--max-out-of-orderness", args.max_out_of_orderness != 0)):
            if given:  # a replay ends with its files, and plays its readings in the files' order
                raise CliError(f"{flag} is for live broker sources (kafka, pubsub, mqtt), not a replay, which ends "
                               f"with its files and whose event time is theirs")
        try:
            paths = expand_inputs(args.input, exclude=(args.output,))
        except FileNotFoundError as exc:
            raise CliError(str(exc)) from None
        name = "replay:" + ",".join(paths)
        if not (math.isfinite(args.speed) and args.speed > 0):
            raise CliError(f"--speed must be a positive number (times real speed; 3600 plays an hour a second), "
                           f"got {args.speed:g}")
        for path in paths:  # a damaged Parquet file is said now, as a run says it, not as the job's failure
            if is_parquet(path):
                try:
                    read_header(path)
                except SchemaDriftError as exc:
                    raise CliError(str(exc)) from None
        if not (math.isfinite(args.max_wait) and args.max_wait >= 0):
            raise CliError(f"--max-wait must be zero (no limit) or a positive number of seconds, got "
                           f"{args.max_wait:g}")

        def make_source(run_id):
            return broker_sources.ReplayFile(paths, mapping, run_id, speed=args.speed, align_to_window_s=align,
                                             max_wait_s=args.max_wait or None, stop=stop)
    elif args.source == "kafka":
        if not (args.bootstrap_servers and args.topic):
            raise CliError("--source kafka needs --bootstrap-servers and --topic")
        name = f"kafka:{args.topic}"
        # The consumer group is the stream into its output: a restart into the same --output resumes after the
        # offsets the last one committed (without a group, a restart read the whole topic again: broker hunt).
        # Not on Flink: the reader commits when the runner finalizes a bundle, which Flink does at a checkpoint,
        # and Beam's FlinkRunner takes none from Python (a group's offsets stayed unset: session 51).
        from apache_beam.options.pipeline_options import PipelineOptions

        from seqwatch.pipelines.runners import runner_name

        on_flink = "flink" in runner_name(PipelineOptions(beam_args))
        where = args.output if "://" in args.output else os.path.realpath(args.output)
        group_id = args.group_id or (None if on_flink else "seqwatch-" +
                                     hashlib.sha256(f"{args.bootstrap_servers}|{args.topic}|{where}".encode())
                                     .hexdigest()[:12])
        if on_flink and group_id:
            print(f"seqwatch stream: on Flink the reader commits the offsets of --group-id {group_id} only when "
                  f"Flink finalizes a bundle at a checkpoint, and Beam's FlinkRunner turns on no checkpoints: the "
                  f"group's offsets stay where they are, and a stream started again reads from --start "
                  f"({args.start})", file=sys.stderr)

        def make_source(run_id):
            return broker_sources.KafkaReadings(args.bootstrap_servers, args.topic, run_id, group_id=group_id,
                                                start=args.start, **batching, **reading)
    elif args.source == "mqtt":
        if not (args.mqtt_broker and args.topic):
            raise CliError("--source mqtt needs --mqtt-broker host:port and --topic")
        if importlib.util.find_spec("paho") is None:
            raise CliError("--source mqtt needs the paho-mqtt package (pip install paho-mqtt)")
        name = f"mqtt:{args.topic}"

        def make_source(run_id):
            return broker_sources.MqttReadings(args.mqtt_broker, args.topic, run_id, qos=args.qos,
                                               client_id=args.client_id, **batching, **reading)
    else:
        if not args.subscription:
            raise CliError("--source pubsub needs --subscription projects/<p>/subscriptions/<s>")
        name = f"pubsub:{args.subscription}"

        def make_source(run_id):
            return broker_sources.PubSubReadings(args.subscription, run_id, emulator_host=args.emulator_host,
                                                 **batching, **reading)
    if args.archive_readings and _is_direct_runner(beam_args):
        raise CliError("--archive-readings in a stream needs Prism, Flink or Dataflow (leave out --runner: Prism): "
                       "the DirectRunner runs a stream as one batch, whose timers release the archive windows before "
                       "their readings have all come, so the readings would be filed under the wrong windows")
    _check_calibration_from(args)
    if args.online_calibration and _is_direct_runner(beam_args):
        raise CliError("--online-calibration in a stream needs Prism, Flink or Dataflow (leave out --runner: "
                       "Prism): the DirectRunner's timers do not hold the watermark, so calibrated windows could "
                       "reach the incident merge too late")
    try:
        plan = plan_stream(args.model_dir, args.output, args.suite, args.run_id or "", args.pane_steps, name,
                           _cooldown_us(args.alert_cooldown), args.online_calibration,
                           earliest_us=_earliest_us(args), calibration_keep_days=_calibration_keep_days(args),
                           score_window_files=args.score_window_files, calibration_from=args.calibration_from or "",
                           calibration_save_every_s=(300.0 if args.calibration_save_every is None
                                                     else args.calibration_save_every))
        prepare_output_folder(args.output)
    except (RunError, ValueError, OSError) as exc:
        raise CliError(str(exc)) from None
    # Prism unless --runner names another; its binary is looked for (or fetched) now, not when the job starts, and
    # after the flags, the model and the output folder were checked (a missing Prism had hidden their sentences)
    try:
        beam_args = stream_runner_args(beam_args, args.source,
                                       source_ends=args.source == "replay" or args.stop_after_idle is not None)
    except StreamRunnerError as exc:
        raise CliError(str(exc)) from None
    try:  # the stream holds its output folder until it ends (pipelines/output_lock.py)
        with output_lock(args.output, "stream", plan.run_id):
            return _stream_locked(args, beam_args, plan, make_source, name, mapping, paths, stop)
    except OutputBusy as exc:
        raise CliError(str(exc)) from None


def _stream_locked(args, beam_args, plan, make_source, name, mapping, paths, stop) -> int:
    """``cmd_stream`` once its output folder is this stream's alone: broker checks, the stream, its totals."""
    from seqwatch.pipelines.streaming import (check_stream_output, counts_files, gather_calibration_states,
                                              note_stream_start, run_stream, stream_totals)

    try:
        check_stream_output(args.output, plan)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.source == "kafka":
        try:  # a broker that does not answer, or a topic it lacks, is said now, not as the job's failure
            make_source(plan.run_id).check_topic()
        except (ConnectionError, LookupError) as exc:
            raise CliError(str(exc)) from None
    if args.source == "pubsub":
        try:  # a subscription that does not exist, an emulator that does not answer: said now, in one sentence
            make_source(plan.run_id).check_subscription()
        except (ValueError, ConnectionError, LookupError) as exc:
            raise CliError(str(exc)) from None
    if args.source == "mqtt":
        try:  # the broker keeps what is published from now on, before the pipeline has started
            source = make_source(plan.run_id)
            source.open_session()
        except (ValueError, ConnectionError) as exc:
            raise CliError(str(exc)) from None
    file_suffix = note_stream_start(args.output, plan)  # a start refused above is no start
    plan = gather_calibration_states(args.output, plan)
    watching = f", looking for new versions every {args.watch_models:g}s" if args.watch_models else ""
    extras = (f", archiving readings per {args.archive_readings:g}s under readings/" if args.archive_readings
              else "")
    if plan.calibration_state_from:
        extras += f", each entity's calibration going on from {plan.calibration_state_from}"
    if args.score_window_files:
        extras += (f", scores per {args.flush_window:g}s of event time in {args.score_window_files} "
                   f"file{'s' if args.score_window_files > 1 else ''}")
    print(f"seqwatch stream: {name} -> {args.output} (run {plan.run_id}, model {plan.model_version}{watching}, "
          f"panes of {plan.pane_steps} steps{extras})", file=sys.stderr, flush=True)
    started = time.time()
    earlier = len(counts_files(args.output))
    if earlier:
        kept = (f"this stream's pane and window files end in {file_suffix} and sit beside them, none replaced, and "
                f"the totals below are its own; a source that reads again what the earlier stream read (a replay "
                f"of the same files, Kafka --start earliest) gives those windows a second row" if file_suffix else
                "a window both streams write keeps this one's, and the totals below are this stream's own")
        print(f"seqwatch stream: {_counts_folder(args.output)} already holds the counts of {earlier} flush window(s) of an "
              f"earlier stream; {kept}", file=sys.stderr, flush=True)
    if args.source == "mqtt" and args.qos == 0:  # mosquitto keeps no QoS 0 message for a session that is away
        print("seqwatch stream: with --qos 0 the broker keeps nothing for this stream while it is not connected: what "
              "is published before it connects, or while it reconnects, is not read (--qos 1, the default, keeps it)",
              file=sys.stderr, flush=True)
    if _is_direct_runner(beam_args):
        print("seqwatch stream: the DirectRunner runs a stream as one batch where it cannot hand it to Prism: then "
              "its outputs are written when the source ends (leave out --runner to stream on Prism)",
              file=sys.stderr, flush=True)
    _log_incidents()
    from seqwatch.pipelines.runners import job_server_of_its_own

    stop.clear()  # a request left by a stream killed while it stopped is not this one's
    try:
        with job_server_of_its_own(beam_args) as job_args:
            _CtrlC.drain = lambda how: _ask_stream_to_stop(stop, how)
            run_stream(plan, make_source, job_args, args.flush_window, args.allowed_lateness, args.late_after,
                       args.watch_models, args.archive_readings, file_suffix)
    finally:
        _CtrlC.drain = None
        stop.clear()
    counts, windows = stream_totals(args.output, since_s=started)
    scored, quarantined = counts.get("records_scored", 0), counts.get("records_quarantined", 0)
    ended = (f"stopped by {_CtrlC.draining} once it had written what it read" if _CtrlC.draining
             else "the source ended")
    print(f"seqwatch stream: {ended}; records in {counts.get('records_in', 0)} = scored {scored} + "
          f"quarantined {quarantined}, incidents {counts.get('alerts', 0)} (counts of {windows} flush window(s) in "
          f"{_counts_folder(args.output)})", file=sys.stderr, flush=True)
    notice = quarantine_notice("stream", {"records_in": counts.get("records_in", 0), "records_scored": scored,
                                          "records_quarantined": quarantined, "stages": counts,
                                          "settings": {"mapping": mapping.to_dict() if mapping else {}}},
                               args.output, since_s=started)
    if notice:
        print(notice, file=sys.stderr, flush=True)
    if args.source == "replay" and not counts.get("records_in", 0) and not _CtrlC.draining:  # as a run refuses an
        # empty input (a replay stopped before its first reading read nothing, which is no fault of its files)
        raise CliError(f"the input holds no records ({len(paths)} file(s) are empty or have only a header)")
    if counts.get("records_in", 0) != scored + quarantined:
        # as a batch run refuses to commit such counts: readings that left neither scored nor quarantined (a stream
        # of 360 Hz readings had scored 128 of 12000 and exited 0: found by the bug hunt of sub-millisecond steps)
        raise CliError(f"the counts do not reconcile: {counts.get('records_in', 0)} records in, {scored} scored + "
                       f"{quarantined} quarantined; readings were lost between the source and the sinks, which is "
                       f"a bug of seqwatch's (the counts files in {_counts_folder(args.output)} show the flush windows)")
    return 3 if counts.get("records_in", 0) and not scored else 0  # as a run that scored nothing (it had said 0)


def cmd_demo(args, beam_args) -> int:
    from seqwatch.pipelines.demo import run_demo
    from seqwatch.pipelines.sinks import prepare_output_folder

    try:
        prepare_output_folder(args.output)
    except OSError as exc:
        raise CliError(str(exc)) from None
    return run_demo(Path(args.output), quick=args.quick, beam_args=beam_args, online_calibration=args.online_calibration)


EARLIEST_HELP = ("readings before this date (ISO 8601, UTC unless it says otherwise) are quarantined as "
                 "before_horizon (default 2000-01-01: a clock never set, or elapsed seconds read as dates); give an "
                 "earlier date for older data")


def _earliest_us(args) -> int:
    """``--earliest`` in µs since the epoch (the default horizon without it); a date that cannot be read is a
    ``CliError``. Found by the bug hunt of time scales: readings of the 1990s could be neither trained on nor
    scored, and the reason named no setting."""
    import pandas as pd

    from seqwatch.pipelines.config import HORIZON_US

    if getattr(args, "earliest", None) is None:
        return HORIZON_US
    try:
        stamp = pd.Timestamp(args.earliest)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        return int((stamp - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1))
    except (ValueError, TypeError, OverflowError) as exc:
        raise CliError(f"--earliest {args.earliest!r} is not a date (ISO 8601, such as 1990-01-01): {exc}") from None


# The packages whose versions ``seqwatch --version`` gives beside seqwatch's own (what a bug report needs)
VERSION_PACKAGES = ("apache-beam", "keras", "jax", "pandas", "pyarrow", "great-expectations")


def version_line() -> str:
    """``seqwatch 0.1.0 (apache-beam 2.77.0, keras ..., Python 3.11.2)``: the installed versions, from the
    packages' metadata (nothing is imported)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    others = ", ".join(f"{name} {installed(name)}" for name in VERSION_PACKAGES)
    return f"seqwatch {installed('seqwatch')} ({others}, Python {platform.python_version()})"


class _VersionAction(argparse.Action):
    """``--version``: the line of ``version_line``, made only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqwatch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=_VersionAction,
                        help="print the versions of seqwatch, Beam, Keras and the rest it runs on, and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fit a model artifact on normal data")
    _add_input_args(train)
    train.add_argument("--model-dir", required=True,
                       help="where to write the model artifact (a folder, local or on S3: s3://bucket/prefix)")
    train.add_argument("--model-id", help="name stored in the artifact and the alerts (default: seqwatch; a "
                                           "fine-tuned version keeps its model's)")
    train.add_argument("--channel", action="append", help="channels to model (default: all in the data)")
    train.add_argument("--suite", help=SUITE_HELP + "; readings it fails are left out of training, as a run "
                       "quarantines them (use the suite the runs will use; default sensor, and for --warm-start the "
                       "suite the model was trained with)")
    train.add_argument("--warm-start", metavar="MODEL_DIR",
                       help="fine-tune this model (an artifact or a model root's newest version) on the input "
                            "instead of training a new one: same architecture, window and scaler")
    train.add_argument("--holdout-input", action="append", metavar="GLOB|FOLDER",
                       help="normal readings kept apart from training (same format; repeatable): all of --input "
                            "trains the network, and every window of these sets early stopping, the scorer and the "
                            "threshold, instead of the last 30%% of each entity's history")
    train.add_argument("--exclude-alerts", metavar="RUN_OUTPUT", action="append",
                       help="with --warm-start: leave out the readings inside the alerts of this run's output folder "
                            "(repeatable: one per run over the input's period)")
    train.add_argument("--scored-only", action="store_true",
                       help="with --exclude-alerts: fine-tune only on the files those runs read as they are now; an "
                            "--input that matches no file, a folder of --exclude-alerts without a run's manifest "
                            "(a day not scored) and a file no run read are left out with a note, not refused (a "
                            "scheduled fine-tuning over the past days' files and runs)")
    train.add_argument("--skip-existing", action="store_true",
                       help="when --model-dir holds a complete model already, leave it as it is and exit 0 (a "
                            "scheduled training's rerun or retry)")
    train.add_argument("--skip-stale", action="store_true",
                       help="with --warm-start: when the input's readings end no later than those the model was "
                            "trained on, write no version and exit 0 (a past day's scheduled fine-tuning run again "
                            "after a later one: its version would become the newest with older readings)")
    train.add_argument("--cell", choices=("lstm", "gru"), help="default lstm; not with --warm-start")
    train.add_argument("--bidirectional", action="store_true", default=None, help="not with --warm-start")
    train.add_argument("--layers", type=int, help="default 1; not with --warm-start")
    train.add_argument("--units", type=int, help="default 32; not with --warm-start")
    train.add_argument("--dropout", type=float, help="default 0; not with --warm-start")
    train.add_argument("--horizon", type=int, help="forecast steps (default 0: no forecasting head); not with "
                                                   "--warm-start")
    train.add_argument("--window", type=int, help="default 64; not with --warm-start")
    train.add_argument("--stride", type=int, help="default 16, or the window when it is shorter; not with "
                                                   "--warm-start")
    train.add_argument("--max-gap", type=int, help="default 3; not with --warm-start")
    train.add_argument("--cumulative", action="append", metavar="CHANNEL",
                       help="a channel that only counts up, such as a kWh meter (repeatable): the model learns its "
                            "increase per step, and forecasts it as readings; not with --warm-start")
    train.add_argument("--epochs", type=int, help="default 30 (with --warm-start: the model's)")
    train.add_argument("--batch-size", type=int, help="default 128 (with --warm-start: the model's)")
    train.add_argument("--seed", type=int, help="default 7 (with --warm-start: the model's)")
    train.add_argument("--threshold", choices=("pot", "quantile"), help="default pot (with --warm-start: the model's)")
    train.add_argument("--coverage", type=float, help="forecast interval coverage, default 0.9 (with --warm-start: "
                                                      "the model's)")
    train.add_argument("--earliest", metavar="DATE", help=EARLIEST_HELP)

    run = sub.add_parser("run", help="score files with a model: the batch pipeline")
    _add_input_args(run)
    run.add_argument("--output", required=True, help="output folder (alerts/, scores/, ... and manifest.json)")
    run.add_argument("--model-dir", required=True, help=MODEL_DIR_HELP)
    run.add_argument("--suite", default="sensor", help=SUITE_HELP)
    run.add_argument("--run-id", help="default: derived from inputs, model and settings")
    run.add_argument("--pane-steps", type=int,
                     help="time steps per entity pane, the unit scored at once (default 4096; at least two windows "
                          "and their gap filling)")
    run.add_argument("--alert-cooldown", type=float, default=0.0, metavar="SECONDS", help=COOLDOWN_HELP)
    run.add_argument("--online-calibration", action="store_true", help=CALIBRATION_HELP)
    run.add_argument("--calibration-from", metavar="EARLIER_OUTPUT",
                     help="with --online-calibration: start each entity's calibration where an earlier run left it "
                          "(that run's --output folder, which holds its calibration_state.parquet; a daily job gives "
                          "the day before's); entities the earlier run did not see start from the model's")
    run.add_argument("--calibration-keep-days", type=float, metavar="DAYS",
                     help="with --online-calibration: leave out of the calibration state the run writes each entity "
                          "whose last window ended more than DAYS before the newest window in it (ids that go away, "
                          "or change from day to day, would otherwise stay in it for ever), and start afresh an "
                          "entity whose next window ends more than DAYS after its last (default: keep every entity)")
    run.add_argument("--max-quarantined-share", type=float, metavar="FRACTION",
                     help="exit with code 3 (after writing the outputs) when more than this share of the readings "
                          "was quarantined, so that a scheduler alerts on a night of unreadable input (default: only "
                          "when every reading was; 1: never)")
    run.add_argument("--earliest", metavar="DATE", help=EARLIEST_HELP)
    run.add_argument("--workers", type=int, default=0,
                     help="DirectRunner worker processes (default 0: one per core for inputs of 8M readings or more)")
    run.add_argument("--commit-in-job", action="store_true",
                     help="move the outputs into place and write manifest.json as the job's last step, and return "
                          "once the runner has the job, for a launcher that does not wait for its end (a Dataflow "
                          "Flex Template: deploy/dataflow/flex-template); the DirectRunner still runs it to its end "
                          "first")

    replay = sub.add_parser("replay", help="feed quarantined records back through the pipeline after a fix")
    from seqwatch.pipelines.replay import add_arguments
    add_arguments(replay)
    _add_format_args(replay, mapping_help="a column mapping file: the keys it and the format flags set replace the "
                                          "original run's (--ignore adds to its list), the others stay as they were")

    stream = sub.add_parser("stream", help="the streaming pipeline: a broker or a replayed file in, Parquet out "
                                           "(on Prism unless --runner names another runner)",
                            epilog="Ctrl-C or SIGTERM stops a stream gracefully: it reads no more, writes what it "
                                   "read (scores, quarantine, counts, each entity's calibration) and exits 0; a "
                                   "second one stops it at once, losing what it held.")
    stream.add_argument("--source", choices=("replay", "kafka", "pubsub", "mqtt"), required=True,
                        help="replay: play files on the wall clock; kafka, pubsub, mqtt: a broker of JSON readings "
                             "(one per message, or with --format wide a key per channel)")
    stream.add_argument("--model-dir", required=True, help=MODEL_DIR_HELP)
    stream.add_argument("--watch-models", type=float, metavar="SECONDS",
                        help="switch to a newer model version in --model-dir when one appears, looking this often")
    stream.add_argument("--output", required=True,
                        help="output folder (alerts/, alerts_open/, scores/, quarantine/, counts/, ...)")
    stream.add_argument("--suite", default="sensor", help=SUITE_HELP)
    stream.add_argument("--run-id", help="default: derived from the source and the model version only, so that a "
                                         "restart with other settings keeps it (and the MQTT session named after it)")
    stream.add_argument("--pane-steps", type=int, default=0, help="default: 4 windows (low latency)")
    stream.add_argument("--online-calibration", action="store_true", help=CALIBRATION_HELP)
    stream.add_argument("--calibration-from", metavar="EARLIER_OUTPUT",
                        help="with --online-calibration: start each entity's calibration where an earlier run left it "
                             "(a batch run's --output folder, which holds its calibration_state.parquet, or a "
                             "stream's, which holds calibration_state/); entities it did not see start from the "
                             "model's (default: the --output folder, where an earlier stream into it wrote its "
                             "calibration)")
    stream.add_argument("--calibration-save-every", type=float, metavar="SECONDS",
                        help="with --online-calibration: write each entity's calibration under "
                             "calibration_state/ at most this often (wall clock), and when the input ends, for a "
                             "restart to go on from (default 300; 0: after every pane)")
    stream.add_argument("--calibration-keep-days", type=float, metavar="DAYS",
                        help="with --online-calibration: drop an entity's calibration once the watermark passed its "
                             "last window by DAYS (an id that comes back starts afresh; default: keep every entity "
                             "for the stream's life)")
    stream.add_argument("--earliest", metavar="DATE", help=EARLIEST_HELP)
    stream.add_argument("--alert-cooldown", type=float, default=0.0, metavar="SECONDS",
                        help=COOLDOWN_HELP + "; a closed alert is written that much later")
    stream.add_argument("--flush-window", type=float, default=60.0, help="seconds of event time per quarantine "
                                                                         "and counts file (and, with "
                                                                         "--score-window-files, scores file)")
    stream.add_argument("--score-window-files", type=int, default=0, metavar="N",
                        help="write scores and forecasts per flush window in N files, "
                             "scores/<window start>/part-<k>-of-<N>.parquet, an entity's rows in one of them (a "
                             "fleet's stream writes a few files a minute, not one per entity and pane; scores "
                             "appear when their window closes; alerts and notices are not delayed); default 0: a "
                             "file per entity and pane, written as the pane is scored")
    stream.add_argument("--allowed-lateness", type=float, default=0.0,
                        help="seconds each pane waits for late readings before it is scored")
    stream.add_argument("--late-after", type=float, default=86_400.0,
                        help="readings this many seconds of event time behind the latest are quarantined as late")
    _add_input_args(stream, required=False,
                    input_help="replay: CSV or Parquet files to play (a glob or a folder; repeat for more)")
    stream.add_argument("--speed", type=float, default=60.0, help="replay: times real speed")
    stream.add_argument("--max-wait", type=float, default=5.0,
                        help="replay: a pause between readings longer than this many seconds of wall clock (at "
                             "--speed) is played in this time, as is one timestamp years off (default 5; 0: no limit)")
    stream.add_argument("--bootstrap-servers", help="kafka: host:port[,host:port]")
    stream.add_argument("--topic", help="kafka: topic of JSON readings; mqtt: a topic filter (plant/+/readings)")
    stream.add_argument("--mqtt-broker", help="mqtt: host:port of the broker")
    stream.add_argument("--qos", type=int, choices=(0, 1), default=1,
                        help="mqtt: subscription QoS (1: the broker keeps what comes while the stream is away; 0: "
                             "it does not)")
    stream.add_argument("--client-id", help="mqtt: persistent session name (default: seqwatch-<run id>)")
    stream.add_argument("--entity-from-key", action="store_true",
                        help="kafka, --format wide: the entity is each message's key (as devices key their messages)")
    stream.add_argument("--entity-topic-level", type=int, metavar="LEVEL",
                        help="mqtt, --format wide: the entity is this level of each message's topic, counted from "
                             "0 (plant/pump-01/state: 1)")
    stream.add_argument("--group-id", help="kafka: consumer group, whose offsets are committed (default: "
                        "seqwatch-<hash of the servers, topic and --output>, so that a restart into the same "
                        "--output resumes where the last stream stopped; none on Flink, which commits at "
                        "checkpoints only, and takes none)")
    stream.add_argument("--start", choices=("committed", "earliest", "latest"), default="committed",
                        help="kafka: where reading starts (default committed: the offsets committed by --group-id, "
                             "else the earliest)")
    stream.add_argument("--subscription", help="pubsub: projects/<p>/subscriptions/<s>")
    stream.add_argument("--emulator-host", help="pubsub: host:port of the emulator")
    stream.add_argument("--stop-after-idle", type=float, help="end after this many seconds without a message")
    stream.add_argument("--batch-seconds", type=float, metavar="SECONDS",
                        help="kafka, mqtt, pubsub: gather messages for this long into one batch (default "
                             f"{DEFAULT_BATCH_S:g}, at most {MAX_BATCH_S:g}): each batch pays Beam's fixed cost at "
                             "every step of the stream, so a longer one costs less CPU per reading, and adds up to "
                             "as much to the latency")
    stream.add_argument("--max-out-of-orderness", type=float, default=0.0,
                        help="seconds the watermark stays behind the latest event time: as much disorder as the "
                             "source delivers (Pub/Sub keeps no order); a reading that comes after its pane was "
                             "scored is quarantined as late")
    stream.add_argument("--archive-readings", type=float, metavar="SECONDS",
                        help="also write the readings that pass the late gate and validation to readings/<entity>/, "
                             "one long-format Parquet file per entity and this many seconds of event time (e.g. "
                             "3600), for fine-tuning: seqwatch train --warm-start --input 'OUT/readings/*/*.parquet' "
                             "--exclude-alerts OUT")
    stream.add_argument("--idle-watermark", type=float, metavar="SECONDS",
                        help="live feeds: once a caught-up source has had no message for this long, its watermark "
                             "follows the wall clock minus this, so the last panes and alerts are written without "
                             "waiting for the next reading; readings that arrive behind it later are quarantined "
                             "as late (default: the watermark waits for newer readings)")

    evaluate = sub.add_parser("evaluate", help="hold a run's alerts and scores against labelled incidents")
    evaluate.add_argument("--output", required=True, metavar="RUN_OUTPUT",
                          help="the output folder of a run or stream (local, s3:// or gs://)")
    evaluate.add_argument("--labels", required=True, metavar="FILE",
                          help="the incidents, a CSV or Parquet file with columns entity_id, start, end (without end, "
                               "each incident is the instant of its start: give --tolerance; other columns are "
                               "ignored); incidents of entities or times the run did not score are left out")
    evaluate.add_argument("--tolerance", type=float, default=0.0, metavar="SECONDS",
                          help="widen each incident by this much on both sides (an alert that came a little late "
                               "or early still found it; default 0: as labelled)")
    demo = sub.add_parser("demo", help="generate data, train, run, and report what was found")
    demo.add_argument("--output", default="demo-output", help="folder for the data, model and run (default "
                                                                 "demo-output)")
    demo.add_argument("--quick", action="store_true", help="smaller data and fewer epochs")
    demo.add_argument("--online-calibration", action="store_true", help=CALIBRATION_HELP)
    _say_defaults(sub)
    return parser


def _say_defaults(sub) -> None:
    """Each flag's help names its default where it has one and does not say it already (the README walkthrough:
    --suite's default, sensor, and most of the stream's timing defaults were said nowhere)."""
    for command in sub.choices.values():
        for action in command._actions:
            default = action.default
            if not action.option_strings or action.help in (None, argparse.SUPPRESS) or "default" in action.help \
                    or default in (None, False, argparse.SUPPRESS) or isinstance(default, (list, tuple)):
                continue
            shown = f"{default:g}" if isinstance(default, float) else default
            action.help = f"{action.help} (default {shown})"


def _log_incidents() -> None:
    """Print the incidents a stream opens and settles (the ``seqwatch.alerts`` log) as they are written; workers
    of a remote runner log them at INFO in their own logs."""
    import logging

    from seqwatch.pipelines.sinks import ALERT_LOG

    log = logging.getLogger(ALERT_LOG)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("seqwatch stream: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _quiet_logs() -> None:
    """Keep the terminal for seqwatch's own messages: libraries log errors only."""
    import logging
    import os

    from seqwatch.pipelines.job_failure import BUNDLE_ECHOES, prisms_stuck_check_once

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # Beam's batch-size estimator (BatchElements) fits bundle timings with numpy, which warns of a poorly
    # conditioned fit and a division by zero when they are alike: 16 lines of a 360 Hz stream's stderr
    warnings.filterwarnings("ignore", module=r"apache_beam\.transforms\.util")
    root = logging.getLogger()
    root.setLevel(logging.ERROR)
    for name in ("great_expectations", "apache_beam", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if not root.handlers:  # as logging.basicConfig would, but a Ctrl-C is one line of ours, not Beam's traceback
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
        handler.setLevel(logging.WARNING)  # as Python's last-resort handler: runners' INFO lines stay out
        handler.addFilter(lambda record: not _interrupted_record(record))
        handler.addFilter(lambda record: not step_failure_record(record))
        handler.addFilter(BUNDLE_ECHOES)  # the job's end says them (job_failure)
        handler.addFilter(prisms_stuck_check_once)
        handler.addFilter(lambda record: not _data_plane_broken_by_the_runner(record))
        # Prism's own log lines, relayed by Beam under this name with Prism's level after every logger's check
        # ("empty transform, with payload ..." on each start): its errors only.
        handler.addFilter(lambda record: record.name != "PrismRunner" or record.levelno >= logging.ERROR)
        handler.addFilter(lambda record: not record.name.startswith(OWN_LOG + "."))  # shown by their own handler
        root.addHandler(handler)
    # seqwatch's own warnings are for the person at the terminal (a model version --watch-models refuses or
    # switches to, an entity whose online calibration is skipped): shown as its other lines are.
    own = logging.getLogger(OWN_LOG)
    if not own.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(_OwnLines())
        own.addHandler(handler)
        own.setLevel(logging.WARNING)


OWN_LOG = "seqwatch.pipelines"


class _OwnLines(logging.Formatter):
    """``seqwatch <command>: <message>`` for seqwatch's own log records (their ``seqwatch: `` prefix, which
    marks them in a remote worker's log, is dropped)."""
    command = "seqwatch"

    def format(self, record) -> str:
        message = record.getMessage()
        return f"{self.command}: {message.removeprefix('seqwatch: ')}"


def step_failure_record(record) -> bool:
    """Beam's log record of a step that raised (``apache_beam.runners.common``, with the step's traceback): the
    exception goes on to the runner, which raises it where the job waits, and the CLI says it in one sentence or
    shows the traceback there; logged too, it had put a traceback before each of those sentences (a full disk).
    So are a worker process's logs of it, which the local job service logs again (``Worker: ...``: the step's
    record, with its transform and trace, and ``Error processing instruction``; runs with 2 workers)."""
    if record.name == "apache_beam.runners.portability.local_job_service":
        message = record.getMessage()
        return "Error processing instruction" in message or (' trace: "' in message and ' transform_id: "' in message)
    return record.name == "apache_beam.runners.common" and record.exc_info is not None


def _data_plane_broken_by_the_runner(record) -> bool:
    """The SDK worker's log record of its data stream broken by the runner (``sdk_stream_broken_by_the_runner``:
    after a failed job on Flink, "Multiplexer hanging up")."""
    runners = sys.modules.get("seqwatch.pipelines.runners")
    return (runners is not None and record.name == "apache_beam.runners.worker.data_plane" and bool(record.exc_info)
            and runners.is_grpc(record.exc_info[1]))


def _interrupted_record(record) -> bool:
    """A log record of a step that stopped because of a Ctrl-C (Beam logs each one with its traceback)."""
    exc = record.exc_info[1] if record.exc_info else None
    return ((exc is not None and (_interrupted(exc) or _CtrlC.caused(exc)))
            or str(record.msg).startswith("KeyboardInterrupt"))


class _CtrlC:
    """Whether a Ctrl-C has arrived, while ``_quiet_interrupts`` watches for one."""

    watching = False
    seen = None  # a threading.Event while watching
    terminated = False  # the interrupt was a SIGTERM (a scheduler's kill, `timeout`), not a Ctrl-C
    drain = None  # while a stream runs: ask it to stop gracefully (called with "SIGTERM" or "Ctrl-C")
    draining = ""  # what asked it to ("SIGTERM", "Ctrl-C"), once the first signal did

    @classmethod
    def signalled(cls) -> bool:
        """Whether a Ctrl-C or SIGTERM was taken as an interrupt (a stream's first, which only asks it to stop, is
        not)."""
        return cls.seen is not None and cls.seen.is_set()

    @classmethod
    def caused(cls, exc: BaseException | None) -> bool:
        """Whether ``exc``, a gRPC error in a thread other than the main one, came from a Ctrl-C that stopped the
        runner on the other end: it waits up to 2 s for the interrupt, which can reach the main thread after the
        runner's end has broken the thread's connection. Other failures are never held back."""
        import threading

        return (cls.watching and type(exc).__module__.split(".")[0] == "grpc"
                and threading.current_thread() is not threading.main_thread() and cls.seen.wait(timeout=2.0))


def _ask_stream_to_stop(stop, how: str) -> None:
    """A running stream's first Ctrl-C or SIGTERM (``how``): ask its readers to stop (``stop_request``), and say
    so. Called in the signal handler: the line is written with ``os.write``, as a ``print`` there could find
    stderr's buffer in the middle of another write."""
    again = "Ctrl-C again" if how == "Ctrl-C" else "a second SIGTERM or a Ctrl-C"
    try:
        stop.request(f"seqwatch stream (pid {os.getpid()}) got {how}")
        line = (f"seqwatch stream: stopping ({how}): the source reads no more, and what the stream holds is scored "
                f"and written; {again} stops it at once, losing that\n")
    except OSError as exc:  # the output folder refuses the file: nothing to do but stop at once next time
        reason = f"{exc.strerror}: {exc.filename}" if exc.strerror else str(exc)  # an object store's: a sentence
        line = f"seqwatch stream: cannot ask the stream to stop gracefully ({reason}); {again} stops it at once\n"
    os.write(2, line.encode())


def _quiet_interrupts():
    """Until the returned ``restore()`` is called: a Ctrl-C (SIGINT) raises KeyboardInterrupt as Python's own
    handler does, and a gRPC error that ends another thread after it, or that such a thread logs, is not printed.
    A Ctrl-C in a terminal stops the runner's own process too (Prism, in the same process group), and the threads
    that talked to it fail with gRPC tracebacks, which would bury the one line seqwatch prints. A SIGTERM (how
    Airflow, systemd and ``timeout`` stop a task) ends the run as a Ctrl-C does, where it has its default action.
    Each signal is left as it is where it is ignored or handled by someone else: SIGINT in a script's background
    job (``seqwatch run ... &``) or under nohup, whose SIGTERM is still taken (it had killed such a run without a
    word, leaving its staging folder). After ``restore()`` the SDK worker's streams that the runner breaks stay
    quiet still (``_sdk_hangups_kept_quiet``)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    original_sigint = signal.getsignal(signal.SIGINT)
    interrupt = original_sigint is signal.default_int_handler
    terminate = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if not (interrupt or terminate):
        return lambda: _stop_job_servers(original_sigint)
    from seqwatch.pipelines import interrupts

    previous_hook, previous_unraisable = threading.excepthook, sys.unraisablehook
    _CtrlC.seen, _CtrlC.watching = threading.Event(), True
    interrupts.clear()

    def on_interrupt(signum, frame):
        if _CtrlC.drain is not None and not _CtrlC.draining:  # a stream's first: stop reading, write what it holds
            # (not ``seen``: a failure while the stream writes what it holds is the failure, not this signal's)
            _CtrlC.draining = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
            _CtrlC.drain(_CtrlC.draining)
            return
        _CtrlC.seen.set()
        _CtrlC.terminated = signum == signal.SIGTERM
        interrupts.note_taken()  # for the steps that cannot be undone, should this exception be dropped
        raise KeyboardInterrupt

    def thread_failed(args):
        # the portable runner's reader of job messages fails too when the runner ends under the job: the main
        # thread's wait for the job then fails with it, and says so in one sentence (``_runner_connection_lost``)
        reader_lost = (getattr(args.thread, "name", "") == "wait_until_finish_read"
                       and _runner_connection_lost(args.exc_value) is not None)
        # the SDK worker's stream readers, when seqwatch has stopped the stream's job server
        # (runners.job_server_of_its_own waits for them to end first, up to a limit, where the job ended as it should)
        reader_lost = reader_lost or _sdk_stream_broken(args)
        if reader_lost or _CtrlC.caused(args.exc_value):  # (not waiting for a Ctrl-C where it is known already)
            return
        if getattr(args.thread, "name", "") == "wait_until_finish_read":
            # the reader failed otherwise (Prism 2.77 sent a message it could not parse, "string field contains
            # invalid UTF-8", as it failed a job: CI, 2026-12-05): the job's end, which the main thread waits for,
            # is said when it comes; the reader's own traceback had come before it
            print(f"{_OwnLines.command}: could not read the runner's messages of the job "
                  f"({_error_line(args.exc_value)}); the job's end is said when the runner reports it",
                  file=sys.stderr, flush=True)
            return
        previous_hook(args)

    def unraisable(info):
        # an interrupt Python dropped (raised inside JAX's gc callback): raised again once the callback is over
        if not interrupts.redeliver_dropped(info, signal.SIGTERM if _CtrlC.terminated else signal.SIGINT):
            previous_unraisable(info)

    def restore():
        _stop_job_servers(original_sigint)
        if interrupt:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if terminate:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        threading.excepthook, sys.unraisablehook = _sdk_hangups_kept_quiet(previous_hook), previous_unraisable
        _CtrlC.watching, _CtrlC.seen = False, None  # a later command in this process starts without this signal
        _CtrlC.drain, _CtrlC.draining = None, ""
        interrupts.clear()

    if interrupt:
        signal.signal(signal.SIGINT, on_interrupt)
    if terminate:  # Airflow, systemd and `timeout` stop a task with SIGTERM: end as a Ctrl-C ends (staging removed)
        signal.signal(signal.SIGTERM, on_interrupt)
    threading.excepthook, sys.unraisablehook = thread_failed, unraisable
    return restore


def _sdk_stream_broken(args) -> bool:
    """Whether the thread failure ``args`` (``threading.excepthook``'s) is the runner's hang-up of a stream of the
    SDK worker in this process (``runners.sdk_stream_broken_by_the_runner``)."""
    runners = sys.modules.get("seqwatch.pipelines.runners")
    return runners is not None and runners.sdk_stream_broken_by_the_runner(getattr(args.thread, "name", ""),
                                                                           args.exc_value)


def _sdk_hangups_kept_quiet(hook):
    """``hook`` (a ``threading.excepthook``), but for the runner's hang-ups of the SDK worker's streams, which are
    not shown. It is what a command leaves in place: the worker's threads outlive the command, and one that the
    runner's end broke only after the command had returned printed its traceback as the process exited, cut off
    there (``Exception in thread``: in a `make test` run, and once in 480 streams whose step raised on Prism, by
    hand)."""
    if getattr(hook, "keeps_sdk_hangups_quiet", False):  # a command run before this one in the process put it there
        return hook

    def quiet(args):
        if not _sdk_stream_broken(args):
            hook(args)

    quiet.keeps_sdk_hangups_quiet = True
    return quiet


def _stop_job_servers(original_sigint) -> None:
    """Stop the job servers (Prism's, Flink's) that Beam started in this command, whose SIGINT handlers it put in
    place (``StopOnExitJobServer``), with SIGINT and SIGTERM ignored meanwhile, then give SIGINT back its handler
    from before the command. Beam stops them at the interpreter's exit, holding a lock while it waits for the
    server to end; a Ctrl-C then ran Beam's handler, which waited for that lock: the process never ended, and
    Prism stayed behind (bug hunt of streams; in a terminal, a traceback from the exit's callback instead)."""
    import signal

    servers = []
    handler = signal.getsignal(signal.SIGINT)
    while type(getattr(handler, "__self__", None)).__name__ == "StopOnExitJobServer" and len(servers) < 16:
        servers.append(handler.__self__)
        handler = getattr(handler.__self__, "_original_sigint_handler", None)
    if not servers:
        return
    sigterm = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        for server in servers:
            try:
                server.stop()  # also takes it off the exit's callbacks
            except Exception:  # noqa: BLE001 - a server that cannot be stopped is Beam's to report at exit
                pass
    finally:
        signal.signal(signal.SIGTERM, sigterm)
        signal.signal(signal.SIGINT, original_sigint if original_sigint is not None else signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    from seqwatch.pipelines.job_failure import BUNDLE_ECHOES

    _quiet_logs()
    BUNDLE_ECHOES.first_report = None  # a report of this command's job only (tests run several in one process)
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    _OwnLines.command = f"seqwatch {args.command}"
    _stacks_on_sigusr1()
    restore = _quiet_interrupts()
    try:
        return _main(parser, args, beam_args)
    finally:
        restore()


def _stacks_on_sigusr1() -> None:
    """``kill -USR1 <pid>`` prints the stack of every thread of the command to stderr, and the command goes on: what
    a person needs to see where a stream that no longer moves waits (the reader, the runner's threads), without
    stopping it. Python's ``faulthandler``; where SIGUSR1 has a handler of someone else's, it is left alone."""
    import faulthandler
    import signal
    import threading

    usr1 = getattr(signal, "SIGUSR1", None)  # none on Windows
    if usr1 is None or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(usr1) in (signal.SIG_DFL, None):
        try:
            faulthandler.register(usr1, file=sys.stderr, all_threads=True)
        except (AttributeError, OSError, ValueError):  # a stderr with no file descriptor (captured, replaced)
            pass


# Keras 3's backends and the module each needs (numpy's is numpy itself)
KERAS_BACKENDS = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch", "numpy": "numpy",
                  "openvino": "openvino"}


def _check_keras_backend() -> None:
    """Refuse, before anything is read, a ``KERAS_BACKEND`` that Keras does not have or that is not installed here:
    it had failed inside the pipeline's scoring step with a traceback of 262 lines (found by the bug hunt of
    operational failures)."""
    name = os.environ.get("KERAS_BACKEND", "jax")
    if name not in KERAS_BACKENDS:
        raise CliError(f"KERAS_BACKEND={name} is not a Keras backend (Keras 3 has {', '.join(KERAS_BACKENDS)}); "
                       f"seqwatch installs jax: unset KERAS_BACKEND or set it to jax")
    if importlib.util.find_spec(KERAS_BACKENDS[name]) is None:
        raise CliError(f"KERAS_BACKEND={name} names a Keras backend that is not installed here (no module "
                       f"{KERAS_BACKENDS[name]}); seqwatch installs jax: unset KERAS_BACKEND or set it to jax")


def _said_job_failure(args, failure) -> int:
    """Say a job its runner failed (``job_failure.JobFailure``) in one sentence, with the failed step's
    own traceback after it where there is one; the exit code: 2 for a stream's outputs the file system refused (as
    a batch run says it, ``batch.RunError``), else 1."""
    from seqwatch.pipelines.batch import write_failure

    # a full disk, a read-only file system (in the runner's report, or the failed bundle's: with_bundle_report)
    refused = write_failure(RuntimeError(failure.report)) if args.command == "stream" else None
    if refused is not None:
        print(f"seqwatch stream: could not write the outputs under {args.output} ({refused}); what was written "
              f"before stays there", file=sys.stderr, flush=True)
        return 2
    if args.command == "stream":
        kept, again = f"what was written so far stays in {args.output}", "start the stream again to go on from there"
    else:
        kept, again = "nothing was committed: the previous outputs are as they were", "run it again"
    print(f"seqwatch {args.command}: {failure.sentence(kept, again)}", file=sys.stderr)
    if failure.traceback is not None and failure.error is not None:
        print(failure.traceback, file=sys.stderr)
    sys.stderr.flush()
    return 1


def _use_file_systems(beam_args: list[str]) -> None:
    """Give Beam's file systems the run's options before anything is read: a path on S3 (``s3://``) is read and
    written with the ``--s3_*`` flags (or the AWS environment where none is given), which Beam hands its file
    systems only when a pipeline is made, and a run reads its inputs, model and earlier outputs before that (S3 had
    failed there with "Must provide one of client or options")."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions(beam_args))


def _check_buckets(args, beam_args: list[str]) -> None:
    """Refuse, in seconds, paths on an S3 or GCS store that cannot be reached at all
    (``object_store.unreachable_bucket``); every flag's path is looked at (inputs, output, an earlier output, a
    model's), and Beam's (``--temp_location``: Beam's check of its options asks GCS about that bucket, and retried
    for minutes where GCS could not be reached)."""
    from seqwatch.pipelines.object_store import unreachable_bucket

    paths = []
    for value in [*vars(args).values(), [arg.split("=", 1)[-1] for arg in beam_args]]:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and item.startswith(("s3://", "gs://")):
                paths.append(item)
    refused = unreachable_bucket(paths, beam_args)
    if refused is not None:
        raise CliError(refused)


def _main(parser: argparse.ArgumentParser, args, beam_args: list[str]) -> int:
    try:
        _check_keras_backend()
        if args.command in ("train", "evaluate"):
            if beam_args:  # training and evaluating run no pipeline: no Beam flag is taken
                raise CliError(_unknown_flag(args.command, parser, beam_args[0], []))
        else:
            _check_beam_flags(args.command, parser, beam_args)
            # Where the SDK worker runs in this process (a portable runner's LOOPBACK: Prism, Flink), a failed
            # bundle's traceback is not printed here: the job's end says it (job_failure, _said_job_failure)
            from apache_beam.runners.worker import sdk_worker as beam_sdk_worker

            from seqwatch.pipelines.sdk_worker import print_unless_failed_instruction

            beam_sdk_worker.print = print_unless_failed_instruction
        _use_file_systems(beam_args)
        _check_buckets(args, beam_args)
        if args.command in BATCH_COMMANDS:
            from seqwatch.pipelines.runners import StreamRunnerError, batch_runner_args
            try:
                beam_args = batch_runner_args(beam_args)
            except StreamRunnerError as exc:
                raise CliError(str(exc)) from None
        if args.command == "train":
            return cmd_train(args)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "run":
            return cmd_run(args, beam_args)
        if args.command == "stream":
            return cmd_stream(args, beam_args)
        if args.command == "replay":
            return cmd_replay(args, beam_args)
        return cmd_demo(args, beam_args)
    except (CliError, FileNotFoundError, ValueError) as exc:  # ValueError: configuration errors raised at the
        # boundary, e.g. a bad mapping, or Beam's refusal of a runner's options (five lines for Dataflow's)
        if _CtrlC.signalled():
            _stop_after_interrupt(args, exc)
        from seqwatch.pipelines.runners import refused_options_sentence

        print(f"seqwatch {args.command}: {refused_options_sentence(str(exc)) or exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Exception) as exc:
        lost = _runner_connection_lost(exc)
        signalled = _CtrlC.signalled()  # the runner's end came after our Ctrl-C
        extra = re.search(r"apache[_-]beam\[(\w+)\]", str(exc)) if isinstance(exc, ImportError) else None
        if extra is not None and not signalled:
            # a runner Beam installs with an extra (DataflowRunner: [gcp]) that seqwatch's install leaves out: it
            # had ended with a traceback of 41 lines (found by the bug hunt of deploy examples)
            name = extra.group(1)
            print(f"seqwatch {args.command}: {str(exc).splitlines()[0].rstrip('.')}: seqwatch installs Beam "
                  f"without its [{name}] extra; pip install 'apache-beam[{name}]==2.77.0' into this environment "
                  f"(and on the workers: deploy/dataflow/README.md)", file=sys.stderr)
            return 2
        if args.command == "stream" and lost is not None and not signalled and not _interrupted(exc):
            # Prism ended under the job (a SIGINT to the process group of a script's background job reaches Prism,
            # which takes it, though the job ignores it): its gRPC error had ended the job with tracebacks (exit
            # 1), or left it waiting on its threads
            print(f"seqwatch stream: the runner ended the stream ({lost}: its process "
                  f"stopped, as on a signal to the job's process group); what was written so far stays in "
                  f"{getattr(args, 'output', '')}", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            _stop_runner_processes()
            os._exit(1)
        if args.command in BATCH_COMMANDS and lost is not None and not signalled and not _interrupted(exc):
            # the portable runner's job service went away during a batch job (Prism, given an EXTERNAL worker
            # pool where none listens, ends as the job starts): its gRPC error had been a traceback of 34 lines
            print(f"seqwatch {args.command}: the runner stopped answering during the job ({_error_line(exc)}); "
                  f"a batch run commits nothing unless it finishes, so the previous outputs are as they were",
                  file=sys.stderr)
            return 1
        from seqwatch.pipelines.object_store import store_error, store_sentence

        if store_error(exc) is not None and not signalled:  # a bucket that is not there, a store out of reach
            print(f"seqwatch {args.command}: {store_sentence(exc)}", file=sys.stderr)
            return 2
        if _file_refused(exc) and not (signalled or _interrupted(exc)):
            # a file that cannot be read or written: permissions, a full disk, a file removed meanwhile (each had
            # been a traceback: found by the bug hunt of operational failures)
            print(f"seqwatch {args.command}: {_os_error_sentence(exc)}", file=sys.stderr)
            return 2
        # after a Ctrl-C or SIGTERM, whatever failed failed because of it: an import it broke ("partially
        # initialized module"; or, landing in the init of a pybind11 extension such as optree's, an ImportError
        # that Keras rewords as optree missing, with the interrupt dropped from its chain: CI, 2026-12-06)
        if not (_interrupted(exc) or signalled):
            from seqwatch.pipelines.job_failure import BUNDLE_ECHOES, job_failure

            failure = job_failure(exc)
            if failure is not None:  # a portable runner's (Prism, Flink): its report, and the worker's and the
                # runner's logs of it, had printed the traceback 5 times; the failed step's report where Prism's
                # stuck-job check took its place
                return _said_job_failure(args, failure.with_bundle_report(BUNDLE_ECHOES.first_report))
            raise
        _stop_after_interrupt(args, exc)


def _stop_after_interrupt(args, exc: BaseException) -> NoReturn:
    """End the command that a Ctrl-C or SIGTERM stopped (``exc``: the interrupt, or what failed because of it) with
    one line that says what its outputs hold, and the shell's exit code of that signal."""
    from seqwatch.pipelines.interrupts import InterruptedAfterCommit

    kept = {"run": "; a batch run commits nothing unless it finishes, so the previous outputs are as they were",
            "stream": f"; what was written so far stays in {getattr(args, 'output', '')}"}.get(args.command, "")
    if isinstance(exc, InterruptedAfterCommit) and args.command == "train":
        kept = (f"; it came as the model was saved, which it finished first: {getattr(args, 'model_dir', '')} "
                f"holds the new version, whole")
    elif isinstance(exc, InterruptedAfterCommit):  # it came while the outputs were moved into place
        kept = (f"; it came as the run moved its outputs into place, which it finished first: "
                f"{getattr(args, 'output', '')} holds this run's outputs and manifest, whole")
    how = "SIGTERM" if _CtrlC.terminated else "an interrupt (Ctrl-C)"
    print(f"seqwatch {args.command}: stopped by {how}{kept}", file=sys.stderr)
    # The runner's worker threads are not daemons and go on replaying or reading after the interrupt: a
    # plain return would leave the process running. Flush what was printed and end it here.
    sys.stdout.flush()
    sys.stderr.flush()
    _stop_runner_processes()
    os._exit(143 if _CtrlC.terminated else 130)  # 128 + the signal's number, as a shell reports it


# The operating system's refusals of a file (not seqwatch's bugs, which keep their traceback)
FILE_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EISDIR,
               errno.ENOTDIR, errno.EIO, errno.EMFILE, errno.ENFILE, errno.ENAMETOOLONG, errno.ELOOP, errno.EFBIG,
               errno.ETXTBSY, errno.EBUSY, errno.ENOTEMPTY, errno.EEXIST, errno.EXDEV, errno.ESTALE}


def _file_refused(exc: BaseException) -> bool:
    """An ``OSError`` of a file the operating system refused (``FILE_ERRNOS``), or one of seqwatch's own sentences
    of that kind (an input folder that cannot be listed, an input that changed during the run)."""
    from seqwatch.pipelines.sources import InputChangedError

    if not isinstance(exc, OSError):
        return False
    return exc.errno in FILE_ERRNOS or (exc.errno is None and isinstance(exc, (PermissionError, InputChangedError)))


def _os_error_sentence(exc: OSError) -> str:
    """``"cannot use in/a.csv: Permission denied [Errno 13]"`` (or the error's own text when it names no file)."""
    if exc.filename is None or not exc.strerror:
        return str(exc)
    also = f" and {exc.filename2}" if exc.filename2 else ""
    return f"cannot use {exc.filename}{also}: {exc.strerror} [Errno {exc.errno}]"


def _stop_runner_processes(wait_s: float = 5.0) -> None:
    """Stop the runner processes Beam started for this job (Prism, a job server) before ``os._exit``, which skips
    Beam's own atexit cleanup: a SIGTERM to seqwatch's process alone (systemd's ``KillMode=process``, a
    container's init, ``kill PID``) had left Prism running (found by the bug hunt of brokers). A stream's own job
    server (``runners.job_server_of_its_own``) runs in a session of its own, which no signal to seqwatch's group
    reaches."""
    import time as clock

    runners = sys.modules.get("seqwatch.pipelines.runners")
    if runners is not None:  # a stream's job server of its own session (runners.job_server_of_its_own)
        runners.stop_own_job_servers(wait_s)
    module = sys.modules.get("apache_beam.utils.subprocess_server")
    if module is None:
        return
    try:
        entries = list(module.SubprocessServer._cache._cache.values())
    except Exception:  # another Beam's internals: leave them to the operating system
        return
    processes = [entry.obj[0] for entry in entries if isinstance(getattr(entry, "obj", None), tuple)]
    processes = [p for p in processes if hasattr(p, "poll") and p.poll() is None]
    for process in processes:
        process.terminate()
    deadline = clock.monotonic() + wait_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - clock.monotonic()))
        except Exception:
            process.kill()


def _check_beam_flags(command: str, parser: argparse.ArgumentParser, beam_args: list[str]) -> None:
    """Flags that neither ``seqwatch <command>`` nor Beam knows are a ``CliError`` naming the closest flag: Beam
    takes the flags seqwatch does not, and would drop a mistyped one (``--alert-cooldwn 60``) with a log line."""
    from seqwatch.pipelines.runners import BeamFlagError, unknown_beam_flags

    try:
        unknown, beam_known = unknown_beam_flags(beam_args)
    except BeamFlagError as exc:
        raise CliError(f"Beam option {exc}") from None
    if unknown:
        raise CliError(_unknown_flag(command, parser, unknown[0], beam_known))
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

    workers = PipelineOptions(beam_args).view_as(DirectOptions).direct_num_workers
    if workers is not None and workers < 0:  # Beam's FnApiRunner failed on it with an IndexError in a traceback
        raise CliError(f"--direct_num_workers must be 0 (one per core) or more, got {workers}")


# Flink runner options of Beam's Java SDK (FlinkPipelineOptions) that its Python SDK does not declare: a Flink user
# reaches for them first, and "Beam does not take it" would read as a typo
FLINK_JAVA_OPTIONS = frozenset({"--checkpointing_interval", "--checkpointing_mode", "--checkpoint_timeout_millis",
                                "--min_pause_between_checkpoints", "--state_backend", "--state_backend_storage_path",
                                "--shutdown_sources_after_idle_ms", "--externalized_checkpoints_enabled",
                                "--retain_externalized_checkpoints_on_cancellation", "--savepoint_path",
                                "--number_of_execution_retries", "--execution_retry_delay"})


def _unknown_flag(command: str, parser: argparse.ArgumentParser, first: str, beam_known: list[str]) -> str:
    """The sentence for an argument ``seqwatch <command>`` does not take, naming the closest flag of its own or of
    ``beam_known`` (the Beam flags, for the commands that pass them on)."""
    import difflib

    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    ours = [s for a in sub.choices[command]._actions for s in a.option_strings if s.startswith("--")]
    if not first.startswith("-"):
        return f"unexpected argument {first!r} (flags take the form --name value)"
    name = first.split("=", 1)[0]
    if beam_known and name in FLINK_JAVA_OPTIONS:
        return (f"unknown flag {name}: Flink's runner takes it in Beam's Java SDK, not in Python's, whose FlinkRunner "
                f"passes it on to an uber jar only; seqwatch's Flink jobs run without Flink checkpoints, as streams "
                f"with them wrote nothing in a trial (docs/limits.md, \"Kafka consumer groups on Flink\")")
    close = difflib.get_close_matches(name, ours + beam_known, n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]}?" if close else f" (seqwatch {command} --help lists its flags)"
    takes = f"neither seqwatch {command} nor Beam takes it" if beam_known else f"seqwatch {command} does not take it"
    return f"unknown flag {name}: {takes}{hint}"


BATCH_COMMANDS = ("run", "replay", "demo")  # the commands whose pipeline is a batch job


def _runner_connection_lost(exc: BaseException) -> str | None:
    """The gRPC status (``CANCELLED``, ``UNAVAILABLE``) when ``exc``, or an error it was raised from, is a gRPC
    error of a connection whose other end went away: the runner stopped; None otherwise (a Pub/Sub ``NOT_FOUND``
    raised from a gRPC error is the broker's answer, not the runner's end)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__module__.split(".")[0] == "grpc":
            code = getattr(exc, "code", None)
            try:
                status = getattr(code() if callable(code) else None, "name", None)
            except Exception:  # a gRPC error without a status yet
                status = None
            return status if status in ("CANCELLED", "UNAVAILABLE") else None
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return None


def _error_line(exc: BaseException) -> str:
    """``exc`` in one line: a gRPC error's status and details (its text is a block of several lines), else its type
    and first line."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    try:
        status = getattr(code(), "name", None) if callable(code) else None
        said = details() if callable(details) else None
    except Exception:  # noqa: BLE001 - an error without a status yet
        status = said = None
    if status or said:
        return f"{status or 'gRPC'}: {said or ''}".rstrip(": ")
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is a Ctrl-C, also as Beam re-raises it from a running step (``RuntimeError:
    KeyboardInterrupt [while running '...']``)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt) or str(exc).startswith("KeyboardInterrupt"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


if __name__ == "__main__":
    sys.exit(main())
