"""Readings to fine-tune a model on: recent history minus the stretches a run alerted on.

``seqwatch train --warm-start`` continues training a deployed model on newer readings (``Seq2SeqDetector.
fine_tune``). Those readings should be normal; a scheduled retraining job usually has a seqwatch run over the
same period, and its alerts say which stretches were not. ``alert_spans`` reads them from a run's output
folder (``alerts/**/*.parquet``, the settled alerts) and ``leave_out_alerted`` drops every reading of an entity
that falls inside one of its alerts, ends included.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from seqwatch.models.detector import as_micros


def alert_spans(output_dir: str | Path) -> pd.DataFrame:
    """``entity_id, start_us, end_us`` of every alert of a run's output folder (empty when the run raised none): a
    batch run's (``manifest.json``) or a stream's (``counts/``). A stream's incident that is still open (in
    ``alerts_open/``, not yet settled in ``alerts/`` by id or by an alert of its entity that covers its start) goes
    on: its span runs from its start to the end of time, so a fine-tuning on the stream's archive while the fault
    lasts leaves the fault out (a stream killed before the incident settled leaves such a notice for good:
    fine-tune from another folder then). Raises FileNotFoundError with one sentence when the folder is neither.
    The folder may be on an object store (``s3://``), as a run's ``--output`` may."""
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    from seqwatch.pipelines.object_store import is_remote, objects_under, path_exists

    root = str(output_dir).rstrip("/") if is_remote(str(output_dir)) else str(Path(output_dir))
    if not any(path_exists(FileSystems.join(root, name)) for name in ("manifest.json", "alerts", "counts")):
        raise FileNotFoundError(f"{root} is not the output folder of a seqwatch run (no manifest.json, alerts/ or "
                                f"counts/)")
    columns = ["alert_id", "entity_id", "start", "end"]

    def parquet_files(folder: str) -> list[str]:
        if is_remote(folder):
            return sorted(path for path in objects_under(folder) if path.endswith(".parquet"))
        return sorted(str(path) for path in Path(folder).rglob("*.parquet")) if Path(folder).is_dir() else []

    def read_one(path: str) -> pd.DataFrame:
        if not is_remote(path):
            return pq.read_table(path, columns=columns).to_pandas()
        with FileSystems.open(path, compression_type="uncompressed") as f:
            return pq.read_table(f, columns=columns).to_pandas()

    def read(folder: str) -> pd.DataFrame:
        tables = [read_one(path) for path in parquet_files(FileSystems.join(root, folder))]
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)

    settled, opened = read("alerts"), read("alerts_open")
    # A notice is settled when an alert has its id, or one of its entity covers its start: the settled alert's id
    # comes from the incident's earliest start, which moves when panes arrive out of order or two incidents join.
    starts, ends = as_micros(settled["start"]), as_micros(settled["end"])
    covered = [any(e == entity and a <= start <= b for e, a, b in zip(settled["entity_id"], starts, ends))
               for entity, start in zip(opened["entity_id"], as_micros(opened["start"]))]
    still_open = opened[~(opened["alert_id"].isin(set(settled["alert_id"])) | np.asarray(covered, dtype=bool))]
    spans = [pd.DataFrame({"entity_id": part["entity_id"].astype(str), "start_us": as_micros(part["start"]),
                           "end_us": as_micros(part["end"]) if not going_on else np.iinfo(np.int64).max})
             for part, going_on in ((settled, False), (still_open, True)) if len(part)]
    if not spans:
        return pd.DataFrame({"entity_id": pd.Series(dtype=object), "start_us": pd.Series(dtype=np.int64),
                             "end_us": pd.Series(dtype=np.int64)})
    return pd.concat(spans, ignore_index=True).astype({"start_us": np.int64, "end_us": np.int64})


def leave_out_alerted(frame: pd.DataFrame, spans: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``frame`` (long format) without the readings inside an alert of their entity; also how many were left
    out."""
    if spans.empty or frame.empty:
        return frame, 0
    ts = as_micros(frame["timestamp"])
    entities = frame["entity_id"].astype(str).to_numpy()
    inside = np.zeros(len(frame), dtype=bool)
    for entity, part in spans.groupby("entity_id", sort=False):
        rows = np.flatnonzero(entities == entity)
        if rows.size == 0:
            continue
        starts = part["start_us"].to_numpy(dtype=np.int64)
        ends = part["end_us"].to_numpy(dtype=np.int64)
        order = np.argsort(starts)
        starts, ends = starts[order], np.maximum.accumulate(ends[order])
        # the latest alert starting at or before each reading covers it when it has not ended before it
        k = np.searchsorted(starts, ts[rows], side="right") - 1
        covered = (k >= 0) & (ts[rows] <= ends[np.maximum(k, 0)])
        inside[rows[covered]] = True
    return frame[~inside].reset_index(drop=True), int(inside.sum())


def unscored_inputs(paths: list, output_dirs: list) -> list | None:
    """The training files of ``paths`` that none of the batch runs of ``output_dirs`` read as they are now (not
    among a run's inputs, or changed since: another sha256 than its manifest's): their anomalies were never scored,
    so ``leave_out_alerted`` leaves none of them out. None when a folder is a stream's (no manifest: what it read
    is not recorded). A file that arrived after the night's run had gone into a fine-tuning whole, its level shift
    with it (found by the bug hunt of deploy examples)."""
    from apache_beam.io.filesystems import FileSystems

    from seqwatch.pipelines.batch import _canonical_path, input_digest
    from seqwatch.pipelines.object_store import path_exists, read_json_or_none

    read: dict = {}
    for folder in output_dirs:
        manifest = read_json_or_none(FileSystems.join(str(folder), "manifest.json"))
        if not isinstance(manifest, dict):
            return None
        digests = manifest.get("input_digests") or {}
        base = manifest.get("working_dir")
        for path in manifest.get("inputs") or []:
            # a relative --input names a file from the run's working folder (a training started elsewhere had found
            # none of the run's files read: found by the review of --scored-only)
            named = os.path.join(base, path) if isinstance(base, str) and base and _is_relative_local(path) else path
            read.setdefault(_canonical_path(named), set()).add(digests.get(path))
    unscored = []
    for path in paths:
        seen = read.get(_canonical_path(path))
        if seen is None or (None not in seen and path_exists(path)
                            and not any(input_digest(path, digest) == digest for digest in seen)):
            unscored.append(path)
    return unscored


def _is_relative_local(path: str) -> bool:
    """A relative path of this machine's file system (not a URL such as ``gs://...``, not absolute)."""
    return "://" not in path and not os.path.isabs(path)


class ScoredInputs(NamedTuple):
    """What ``scored_inputs`` keeps of a fine-tuning's ``--input`` and ``--exclude-alerts``, and a note for each
    thing it left out."""

    files: list
    runs: list
    notes: list


def scored_inputs(patterns: list, output_dirs: list) -> ScoredInputs:
    """``seqwatch train --scored-only``: the files of ``patterns`` that a batch run of ``output_dirs`` read as they
    are now, and the folders of ``output_dirs`` that hold a batch run's output. Left out, each with a note: a
    pattern that matches no file (a day without files), a folder without a run's ``manifest.json`` (a night that
    was not scored, or whose run failed before it wrote anything) and a file no such run read as it is now (one that
    came after its day's run, or changed since: its anomalies were never scored). A scheduled fine-tuning over the
    past week gives each day's files and run folder, and trains on the days that were scored, on any store (the
    Airflow example had looked for them with bash, in local folders only). Raises ValueError with one sentence for
    a stream's output folder, which does not record the files it read."""
    from apache_beam.io.filesystems import FileSystems

    from seqwatch.pipelines.object_store import path_exists
    from seqwatch.pipelines.sources import expand_inputs

    notes, runs, files = [], [], []
    for folder in output_dirs:
        folder = str(folder)
        if path_exists(FileSystems.join(folder, "manifest.json")):
            runs.append(folder)
        elif path_exists(FileSystems.join(folder, "counts")):
            raise ValueError(f"--scored-only takes batch runs' output folders, and {folder} is a stream's, which "
                             f"does not record the files it read; fine-tune on a stream's archive without it")
        else:
            notes.append(f"--exclude-alerts {folder} is left out: it holds no seqwatch run's output (no "
                         f"manifest.json: its run did not score, or failed before it wrote anything)")
    for pattern in patterns:
        try:
            files += expand_inputs([pattern])
        except FileNotFoundError as exc:
            notes.append(f"--input {pattern} is left out: {exc}")
    files = list(dict.fromkeys(files))  # a file two patterns match, once
    unscored = set(unscored_inputs(files, runs) or ()) if runs else set(files)
    if unscored:
        first = next(path for path in files if path in unscored)
        notes.append(f"{len(unscored)} of the {len(files)} training file(s) are left out: no run given with "
                     f"--exclude-alerts read them as they are now (first: {first}: its day was not scored, "
                     f"or it came after its day's run, or changed since), so their anomalies were never scored")
    return ScoredInputs([path for path in files if path not in unscored], runs, notes)
