"""``seqwatch replay``: feed quarantined records back through the batch pipeline after a fix or a relaxed rule.

A model scores windows, so a quarantined reading can only be scored together with its neighbours. Replay
therefore re-runs each source file that has replayed records, with those records' lines put back in place
(line numbers unchanged) from their ``raw`` text: unchanged when a rule was relaxed (``--suite``,
``--mapping``), or as the user fixed it (edit ``raw`` in the quarantine Parquet, or in a JSON Lines export of
it). The replay's output is the complete result for those source files and supersedes the original run's
output for them; its manifest reconciles as any run's does (``records_in == records_scored +
records_quarantined``) and adds a ``replay`` section: how many of the replayed readings are scored now and
how many are quarantined again, by reason.

Settings default to the original run's (its ``manifest.json`` next to the quarantine folder): mapping, suite,
pane size and time horizon; flags override them. A ``--mapping`` file changes the keys it sets and keeps the
original run's others, so that fixing the decimal mark of a wide file need not restate that it is wide.
Quarantine records from a stream (no source file) and records whose source file is gone cannot be replayed with
their context; replay stops and names them. A replay keeps the fixed texts it ran with (``EDITS_FILE``), so that
a replay of its own quarantine runs with them again besides its own.

The quarantine, the source files and the replay's output may each be local or on an object store (``s3://``,
through Beam's file systems). The patched copies of the sources lie beside the output, in ``REPLAY_DIR``, while
the replay runs: on the store where the output is on one (made in a local temporary folder first), so that a
runner's workers on other machines read them.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from seqwatch.pipelines.output_lock import OutputBusy, output_lock
from seqwatch.schemas.mapping import InputMapping
from seqwatch.schemas.validation import FAMILIES as SUITE_FAMILIES

REPLAY_DIR = "_replay_inputs"
# The lines a replay ran with another text than its source's (the user's fixes), beside its manifest: a replay of
# this replay's quarantine starts from the source files again and applies them too. JSON, not JSON Lines: a
# quarantine folder's *.jsonl files are records to replay.
EDITS_FILE = "replay_edits.json"
RECORD_COLUMNS = ("raw", "source", "line", "column", "records", "stage", "reason_code", "reason", "run_id")


if TYPE_CHECKING:
    import pandas as pd


class ReplayError(ValueError):
    """Replay cannot start; the message is one sentence for a person."""


@dataclass(frozen=True)
class ReplayConfig:
    """``quarantine``: a run's output folder, its ``quarantine/`` folder, one quarantine Parquet file, or a JSON
    Lines file of quarantine records (fields as in ``Quarantined``); ``reason_codes``: replay only these
    (default: all); ``mapping``/``suite``/``pane_steps``: default to the original run's settings;
    ``mapping_changes``: mapping keys to set over the original run's mapping (or over ``mapping``);
    ``more_ignored``: columns to ignore besides those the mapping ignores."""

    quarantine: str
    output: str
    model_dir: str
    mapping: InputMapping | None = None
    mapping_changes: dict = field(default_factory=dict)
    suite: str | None = None
    reason_codes: tuple = ()
    run_id: str = ""
    pane_steps: int | None = None
    extra: dict = field(default_factory=dict)  # other RunConfig fields to override, e.g. {"chunk_rows": 1000}
    more_ignored: tuple = ()


def find_quarantine(path: str) -> tuple[list, str | None]:
    """The quarantine files under ``path`` and the original run's manifest (None when not found): local paths,
    or the URLs of an object store's objects."""
    from seqwatch.pipelines.object_store import is_remote

    if is_remote(path):
        return _find_quarantine_on_store(path)
    root = Path(path)
    if root.is_file():
        manifest = root.parent.parent / "manifest.json"
        return [root], str(manifest) if manifest.is_file() else None
    if not root.is_dir():
        raise ReplayError(f"quarantine {path} is neither a folder nor a file")
    folder = root / "quarantine" if (root / "quarantine").is_dir() else root
    files = sorted(folder.rglob("*.parquet")) + sorted(folder.rglob("*.jsonl"))
    for manifest in (folder.parent / "manifest.json", folder / "manifest.json"):
        if manifest.is_file():
            return files, str(manifest)
    return files, None


def _find_quarantine_on_store(url: str) -> tuple[list[str], str | None]:
    """``find_quarantine`` of a URL: one object (a quarantine Parquet file or a JSON Lines file), or a prefix (a
    run's output, or its ``quarantine/``)."""
    from apache_beam.io.filesystems import FileSystems

    from seqwatch.pipelines.object_store import objects_under

    url = url.rstrip("/")
    if url.lower().endswith((".parquet", ".jsonl")) and FileSystems.exists(url):
        folder = url.rsplit("/", 1)[0]
        manifest = f"{folder.rsplit('/', 1)[0]}/manifest.json"
        return [url], manifest if FileSystems.exists(manifest) else None
    below = objects_under(url)
    if not below:
        raise ReplayError(f"quarantine {url} is neither a folder nor a file")
    folder = f"{url}/quarantine" if any(o.startswith(f"{url}/quarantine/") for o in below) else url
    files = [o for o in below if o.startswith(folder + "/")]
    files = sorted(o for o in files if o.endswith(".parquet")) + sorted(o for o in files if o.endswith(".jsonl"))
    for manifest in (f"{folder.rsplit('/', 1)[0]}/manifest.json", f"{folder}/manifest.json"):
        if manifest in below or FileSystems.exists(manifest):
            return files, manifest
    return files, None


def _is_file(path: str) -> bool:
    """``object_store.is_file``: a local file, or an object of an object store (imported when called: Beam's file
    systems are not loaded for the CLI's parser)."""
    from seqwatch.pipelines.object_store import is_file

    return is_file(path)


def _opened(path: str):
    """``object_store.open_as_stored``: ``path`` open for reading its bytes as stored, here or on a store."""
    from seqwatch.pipelines.object_store import open_as_stored

    return open_as_stored(path)


def _read_json_lines(path) -> pd.DataFrame:
    """A JSON Lines file of records, one object per non-blank line; a line that is not a JSON object is a
    ``ValueError`` naming the line (pandas named a character position in the whole file)."""
    import io

    import pandas as pd

    rows = []
    with _opened(path) as raw, io.TextIOWrapper(raw, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {number} is not JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"line {number} is not a JSON object")
            rows.append(row)
    return pd.DataFrame(rows)


def load_records(files: list) -> pd.DataFrame:
    """Quarantine records from Parquet and JSON Lines files (local paths or URLs), one row each, in the
    ``Quarantined`` fields."""
    import pandas as pd
    import pyarrow.parquet as pq

    frames = []
    # An edited JSON Lines export beside the run's Parquet files holds the same records: read last, it wins.
    for path in sorted(files, key=lambda p: str(p).endswith(".jsonl")):
        try:
            if str(path).endswith(".jsonl"):
                frame = _read_json_lines(path)
            else:
                with _opened(path) as f:
                    frame = _records_frame(pq.read_table(f, read_dictionary=["raw"]))
        except ValueError as exc:
            raise ReplayError(f"quarantine file {path} cannot be read: {exc}") from None
        missing = [c for c in ("raw", "source", "line", "column", "records", "reason_code") if c not in frame]
        if missing:
            raise ReplayError(f"quarantine file {path} lacks the fields {missing} of a quarantine record")
        _check_whole_numbers(frame, path)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(RECORD_COLUMNS))
    records = pd.concat(frames, ignore_index=True)  # line and records: int64 (_check_whole_numbers)
    records["column"] = records["column"].fillna("").astype(str)
    records["raw"] = records["raw"].fillna("").astype(str)
    # A reading leaves a run once: the same source, line and column twice is one record read from two files.
    return records.drop_duplicates(subset=["source", "line", "column"], keep="last").reset_index(drop=True)


def _records_frame(table) -> pd.DataFrame:
    """A quarantine table read with its ``raw`` column dictionary-encoded (a wide row's text is the raw of each of
    its readings' records) as a frame whose ``raw`` holds each text once, shared by its records, not copied."""
    frame = table.to_pandas()
    if "raw" in frame:
        frame["raw"] = frame["raw"].astype(object)
    return frame


def _check_whole_numbers(frame: pd.DataFrame, path) -> None:
    """Refuse records whose ``line`` or ``records`` is not a whole number >= 0, in one sentence naming the file and
    the record, before the replay runs (an edited ``"records": null`` had failed after the run had replaced the
    outputs; ``"line": "twenty"`` had been a bare int() error)."""
    import pandas as pd

    for name in ("line", "records"):
        numbers = pd.to_numeric(frame[name], errors="coerce")
        bad = numbers.isna() | (numbers < 0) | (numbers != numbers.round())
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            value = frame[name].iloc[i]
            value = value.item() if hasattr(value, "item") else value  # a numpy number as JSON wrote it
            raise ReplayError(f"quarantine file {path}: record {i + 1} has {name} {value!r}, not a whole number "
                              f">= 0; mend or remove it")
        frame[name] = numbers.astype("int64")


def _original_manifest(manifest: str | None) -> dict:
    from seqwatch.pipelines.object_store import read_json_or_none

    found = None if manifest is None else read_json_or_none(str(manifest))
    return found if isinstance(found, dict) else {}


def check_sources_unchanged(sources, input_digests: dict, current: dict | None = None) -> None:
    """Refuse a replay whose source file no longer holds what the run read (a replay patches lines by number: in
    a file re-exported since, a record's line is another reading's, which the patch would erase). Sources the
    run's manifest has no digest of (a stream, a JSON Lines export alone, a run with --run-id before 2026-12-03)
    are not checked. ``sources``: the files to replay, and those re-run beside them; ``current``: their digests
    where already computed (each file is hashed once)."""
    from seqwatch.pipelines.batch import input_digest

    current = current or {}
    for source in sorted(set(sources)):
        expected = input_digests.get(source)
        if expected and _is_file(source) and (current.get(source) or input_digest(source, expected)) != expected:
            raise ReplayError(f"cannot replay the records of {source}: the file changed since the run read it, so "
                              f"their line numbers may point at other readings now; run the file again instead")


def _refuse_long_lines(source: str, read_from, lines: list[str]) -> None:
    """Raise ``ReplayError`` for a source holding a line too long to be a row (``long_lines``): the reader never
    held it, so a patched copy of the file cannot hold it either (found by the bug hunt of long lines: the copy had
    held the reader's marker in its place, which the replay then quarantined as binary data)."""
    for number, line in enumerate(lines, start=1):
        long = read_from.long_line(line)
        if long is not None:
            raise ReplayError(f"cannot replay {source}: its line {number} is {long.length:,} bytes long, more than a "
                              f"row can be, and a replay's copy of the file cannot hold it; mend the file and run it "
                              f"again instead")


def _patched_lines(source: str, records: pd.DataFrame, sep: str | None = None) -> list[str]:
    """The source file's lines (endings kept) with each replayed record's lines replaced by its ``raw`` text.

    A record whose quoted field holds line breaks spans several lines; its fixed text may span as many or fewer
    (blank lines make up the difference, so every later line keeps its number), and must be one record."""
    from seqwatch.pipelines.sources import open_text

    with open_text(source) as f:
        lines = list(f)
        _refuse_long_lines(source, f, lines)
    spans, sep = _record_lines(source, lines, sep)
    inner = {n: first for first, count in spans.items() for n in range(first + 1, first + count)}
    for number, part in records.groupby("line"):
        if not 1 <= number <= len(lines):
            raise ReplayError(f"cannot replay line {number} of {source}: the file has {len(lines)} lines")
        if number in inner:
            raise ReplayError(f"cannot replay line {number} of {source}: it lies inside the record of line "
                              f"{inner[number]}, whose quoted field holds line breaks (a run before such records "
                              f"were read as one row quarantined its lines one by one); run the file again instead")
        count = spans.get(number, 1)
        current = "".join(lines[number - 1:number - 1 + count])
        ending = current[len(current.rstrip("\r\n")):] or "\n"
        current = current.rstrip("\r\n")
        texts = set(part["raw"]) - {""}
        if len(texts) > 1:
            changed = texts - {current}
            if len(changed) != 1:
                raise ReplayError(f"records for line {number} of {source} carry {len(changed)} different fixed "
                                  f"texts; keep one")
            texts = changed
        if not texts:
            continue
        text = texts.pop()
        pieces = _text_lines(text)
        text_lines = len(pieces)
        if text_lines > 1 and not _one_record(pieces, sep):
            raise ReplayError(f"the raw text for line {number} of {source} holds a line break outside a quoted "
                              f"field; a fixed record stays one row")
        if text_lines > count:
            raise ReplayError(f"the raw text for line {number} of {source} spans {text_lines} lines where the "
                              f"record spans {count}; a fixed record may not span more lines than it did (its line "
                              f"breaks belong inside a quoted field)")
        lines[number - 1] = text + ending * (1 + count - text_lines)
        lines[number:number - 1 + count] = [""] * (count - 1)
    return lines


def _text_lines(text: str) -> list[str]:
    """``text``'s lines, line ends kept, as the reader splits a file's."""
    from seqwatch.pipelines.sources import TextLines, _NEWLINE_TEXT

    return list(TextLines._pieces(_NEWLINE_TEXT, [text], ""))


def _one_record(pieces: list[str], sep: str) -> bool:
    """Whether the lines ``pieces`` are one CSV record, their line breaks inside quoted fields."""
    from seqwatch.pipelines.csv_records import join_records

    return len(list(join_records(enumerate(pieces, start=1), sep, None))) == 1


def _record_lines(source: str, lines: list[str], sep: str | None) -> tuple[dict[int, int], str]:
    """First line number -> number of lines of each record of a CSV source that spans several lines (as the
    reader joins them: ``csv_records``), and the separator (``sep``, or the one the header shows)."""
    from seqwatch.pipelines.csv_records import join_records
    from seqwatch.pipelines.sources import _after_header, read_header

    try:
        header, sep = read_header(source, sep)
    except ValueError:  # a file the run quarantined whole (schema drift): no record of it spans lines
        return {}, sep or ","
    if header is None or not any('"' in line for line in lines):
        return {}, sep
    numbers = [number for number, _ in join_records(_after_header(lines), sep, len(header))] + [len(lines) + 1]
    return {a: b - a for a, b in zip(numbers, numbers[1:]) if b - a > 1}, sep


def _patched_parquet(source: str, records: pd.DataFrame, target: Path) -> None:
    """A copy of a Parquet source with the replayed rows replaced by their ``raw`` JSON; every column becomes
    text, which the parser reads as it reads a CSV."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _opened(source) as f:
        table = pq.read_table(f)
    rows = table.to_pylist()
    for record in records.itertuples():
        if not 1 <= record.line <= len(rows):
            raise ReplayError(f"cannot replay row {record.line} of {source}: the file has {len(rows)} rows")
        if record.raw:
            try:
                rows[record.line - 1] = json.loads(record.raw)
            except json.JSONDecodeError as exc:
                raise ReplayError(f"the raw text for row {record.line} of {source} is not a JSON object: "
                                  f"{exc.msg}") from None
    names = list(table.schema.names)
    columns = {k: pa.array([None if row.get(k) is None else str(row[k]) for row in rows], type=pa.string())
               for k in names}
    pq.write_table(pa.table(columns), target)


def prepare_inputs(records: pd.DataFrame, work: Path, sep: str | None = None,
                   context: tuple = ()) -> dict[str, str]:
    """Write a patched copy of every source of ``records`` under ``work``, and an unpatched one of each ``context``
    file (the run's other files of the same entities); returns copy path -> source path. ``sep``: the CSV
    separator the replay's mapping gives (None: as the header shows).

    Each copy keeps its file name (a wide file's entity is its name) in its own folder, numbered in the sources'
    order (the order in which a run keeps the first of two readings of one time)."""
    from apache_beam.io.filesystem import CompressionTypes

    from seqwatch.pipelines.sources import is_parquet
    from seqwatch.pipelines.validate import MESSAGE_SOURCE_PREFIXES

    copies = {}
    parts = {source: part for source, part in records.groupby("source")}
    for i, source in enumerate(sorted(set(parts) | set(context))):
        part = parts.get(source)
        if part is None:  # a context file: read as the run read it
            if not _is_file(source):
                raise ReplayError(f"cannot replay: {source}, a file of the run that holds readings of the replayed "
                                  f"entities (their windows are cut from all of their readings), is gone")
            target = work / f"{i:04d}" / PurePath(source).name
            target.parent.mkdir(parents=True, exist_ok=True)
            with _opened(source) as f, open(target, "wb") as copy:
                shutil.copyfileobj(f, copy, 1 << 20)
            copies[str(target)] = source
            continue
        from_messages = not source or source.startswith(MESSAGE_SOURCE_PREFIXES)
        if from_messages or not _is_file(source):
            where = "they came from a stream or a PCollection, not a file" if from_messages else (
                f"source file {source} is gone")
            raise ReplayError(f"cannot replay {int(part['records'].sum())} quarantined readings of "
                              f"{source or '(no source)'}: {where}, and a reading is scored only with its "
                              f"neighbours from that file")
        # The copy is written as plain text: a compressed source's copy loses its compression suffix (its entity,
        # the name's stem, stays), or the run would try to decompress it.
        name = PurePath(source).name
        if CompressionTypes.detect_compression_type(source) != CompressionTypes.UNCOMPRESSED:
            name = PurePath(name).stem
        target = work / f"{i:04d}" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_parquet(source):
            _patched_parquet(source, part, target)
        else:
            with open(target, "w", encoding="utf-8", newline="") as f:
                f.writelines(_patched_lines(source, part, sep))
        copies[str(target)] = source
    return copies


def known_duplicates(records: pd.DataFrame, copies: dict[str, str], compared: dict | None = None,
                     sep: str | None = None) -> tuple:
    """``(copy, line, channel)`` of each reading the run quarantined as ``duplicate`` in a replayed source, where
    the copy holds its line as the source does (not a fixed text). The run kept an earlier reading of the same
    entity, channel and timestamp, which may lie in another of its files; the replay reads only the replayed
    sources, so it would not find that one and would score the repeat. It quarantines these again instead.
    ``compared``: ``compared_lines`` of these lines, when the caller has read them already (else ``sep`` is
    the CSV separator to read them with, as for ``prepare_inputs``)."""
    repeats = records[records["reason_code"] == "duplicate"]
    copy_of = {source: copy for copy, source in copies.items()}
    repeats = repeats[repeats["source"].isin(set(copy_of))]
    if compared is None:
        compared = compared_lines(repeats, copies, sep)
    known = []
    for source, part in repeats.groupby("source"):
        texts = compared.get(source, {})
        known += [(copy_of[source], int(line), str(column)) for line, column in zip(part["line"], part["column"])
                  if int(line) in texts and texts[int(line)][0] == texts[int(line)][1]]
    return tuple(sorted(known))


def compared_lines(wanted: pd.DataFrame, copies: dict[str, str], sep: str | None = None) -> dict[str, dict[int, tuple]]:
    """``{source: {line: (text in the source, text in its patched copy)}}`` for the ``source`` and ``line`` pairs
    of ``wanted`` whose source has a copy, each file read once. A record whose quoted field holds line breaks is
    compared whole (all its lines, as the reader joins them; ``sep`` as for ``prepare_inputs``). A Parquet row is
    compared as the copy writes it (every value as text) and given as a dict. A line past the end of either file
    is left out."""
    from seqwatch.pipelines.sources import is_parquet, open_text

    copy_of = {source: copy for copy, source in copies.items()}
    out = {}
    for source, part in wanted.groupby("source"):
        if source not in copy_of:
            continue
        numbers = {int(n) for n in part["line"]}
        copy = copy_of[source]
        if is_parquet(source):
            original, patched = _parquet_rows(source, numbers), _parquet_rows(copy, numbers)
            original = {n: {k: None if v is None else str(v) for k, v in row.items()} for n, row in original.items()}
        else:
            with open_text(source) as f:
                lines = list(f)
                _refuse_long_lines(source, f, lines)
            with open(copy, encoding="utf-8", newline="") as f:
                copied = list(f)
            spans, _ = _record_lines(source, lines, sep)
            original, patched = _records_at(lines, numbers, spans), _records_at(copied, numbers, spans)
        out[source] = {n: (original[n], patched[n]) for n in sorted(numbers) if n in original and n in patched}
    return out


def _parquet_rows(path: str, numbers: set[int]) -> dict[int, dict]:
    """Rows ``numbers`` (1-based) of a Parquet file as dicts; numbers past its end are left out."""
    import pyarrow.parquet as pq

    with _opened(path) as f:
        table = pq.read_table(f)
    present = sorted(n for n in numbers if 1 <= n <= table.num_rows)
    return dict(zip(present, table.take([n - 1 for n in present]).to_pylist()))


def _records_at(lines: list[str], numbers: set[int], spans: dict[int, int]) -> dict[int, str]:
    """The text of the record that starts at each line of ``numbers`` (1-based; ``spans``: the line count of
    each record of several lines), without its final line ending; numbers past the end are left out."""
    return {n: "".join(lines[n - 1:n - 1 + spans.get(n, 1)]).rstrip("\r\n")
            for n in numbers if 1 <= n <= len(lines)}


def _channel_of(column: str, mapping: InputMapping) -> str:
    return mapping.channels.get(column, column) if mapping.format == "wide" else column


def replay_outcome(replayed: pd.DataFrame, again: pd.DataFrame, mapping: InputMapping) -> dict:
    """How many replayed readings are quarantined again (matched by source, line and channel), how many the
    replay's mapping leaves out (a wide column it ignores: no reading any more) and how many are scored now."""
    total = int(replayed["records"].sum())
    again_by_line = {key: part for key, part in again.groupby(["source", "line"])}
    requarantined, left_out, reasons = 0, 0, {}
    # a column the mapping also names as a channel is still read (FileLayout.resolve): not left out; with channels
    # listed and extra_columns 'ignore', every other column is left out too
    ignored = set(mapping.ignore) - set(mapping.channels) if mapping.format == "wide" else set()
    only_listed = mapping.format == "wide" and bool(mapping.channels) and mapping.extra_columns == "ignore"
    for record in replayed.itertuples():
        if record.column and (record.column in ignored or only_listed and record.column not in mapping.channels):
            left_out += int(record.records)
            continue
        part = again_by_line.get((record.source, record.line))
        if part is None:
            continue
        mine = _channel_of(record.column, mapping)
        hit = part[(part["column"] == "") | (record.column == "")
                   | (part["column"].map(lambda c: _channel_of(c, mapping)) == mine)]
        n = min(int(hit["records"].sum()), int(record.records))
        requarantined += n
        if n:
            code = f"{hit['stage'].iloc[0]}.{hit['reason_code'].iloc[0]}"
            reasons[code] = reasons.get(code, 0) + n
    return {"readings": total, "scored_now": total - requarantined - left_out, "quarantined_again": requarantined,
            "left_out_by_mapping": left_out, "quarantined_again_by_reason": dict(sorted(reasons.items()))}


def _rewrite_sources(output: str, copies: dict[str, str]) -> pd.DataFrame:
    """Point the replay's quarantine records at the original source files (not the temporary copies)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from seqwatch.pipelines.object_store import is_remote, objects_under
    from seqwatch.pipelines.sinks import write_parquet
    from seqwatch.schemas.arrow import QUARANTINE_SCHEMA

    frames = []
    folder = f"{output.rstrip('/')}/quarantine"
    paths = [o for o in objects_under(folder) if o.endswith(".parquet")] if is_remote(output) else \
        [str(p) for p in Path(folder).rglob("*.parquet")]
    for path in sorted(paths):
        with _opened(path) as f:
            table = pq.read_table(f, read_dictionary=["raw"])  # each text once (sinks.quarantine_records_table)
        sources = [copies.get(s, s) for s in table.column("source").to_pylist()]
        table = table.set_column(table.schema.get_field_index("source"), table.schema.field("source"),
                                 pa.array(sources, type=pa.string()))
        table = table.replace_schema_metadata(QUARANTINE_SCHEMA.metadata)
        write_parquet(path, table)  # with the plain schema
        frames.append(_records_frame(table))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(RECORD_COLUMNS))


def run_replay(config: ReplayConfig, beam_args: list[str] | None = None, now_us: int | None = None) -> dict:
    """Replay, and return the replay run's manifest (also written to ``<output>/manifest.json``).

    Raises ``ReplayError`` (nothing to replay, a source is gone, conflicting fixes) or the batch run's
    ``RunError``; either way with one sentence."""
    from seqwatch.pipelines.sinks import prepare_output_folder

    files, manifest_path = find_quarantine(config.quarantine)
    records = everything = load_records(files)
    carried = earlier_edits(manifest_path, _original_manifest(manifest_path))
    damaged = records[records["reason_code"] == "damaged_file"]
    if config.reason_codes:
        records = records[records["reason_code"].isin(config.reason_codes)]
    for source, line in zip(damaged["source"], damaged["line"]):
        if (records["source"] == source).any():
            raise ReplayError(f"cannot replay the records of {source}: the file is damaged or cut short (its "
                              f"damaged_file record, line {int(line)}), so a replay would read less of it than the "
                              f"run did; restore the file and run it again")
    if records.empty:
        which = f" with reason codes {list(config.reason_codes)}" if config.reason_codes else ""
        raise ReplayError(f"nothing to replay: {config.quarantine} holds no quarantined records{which}")
    original_manifest = _original_manifest(manifest_path)
    # sources the run named relative to its working folder, as found from here (a replay started elsewhere had
    # called them gone)
    records, everything, carried, original_manifest = _from_run_folder(records, everything, carried,
                                                                       original_manifest)
    # what the replay reads (hashed once), checked against the run's, and kept so that a replay of this replay's
    # quarantine is checked in turn
    from seqwatch.pipelines.batch import input_digest
    context = context_sources(set(records["source"]), original_manifest.get("input_groups") or [])
    recorded = original_manifest.get("input_digests") or {}
    digests = {source: input_digest(source, recorded.get(source))
               for source in sorted(set(records["source"].unique()) | set(context)) if source and _is_file(source)}
    check_sources_unchanged({*records["source"], *context}, original_manifest.get("input_digests") or {}, digests)
    original = original_manifest.get("settings", {})
    mapping = config.mapping
    if mapping is None:
        mapping = InputMapping.from_dict(original["mapping"]) if original.get("mapping") else InputMapping()
    if config.mapping_changes or config.more_ignored:
        changed = {**mapping.to_dict(), **config.mapping_changes}
        ignored = changed.get("ignore", ())
        if isinstance(ignored, (list, tuple)):  # else from_dict says what it must be (text is no list of columns)
            changed["ignore"] = list(ignored) + [c for c in config.more_ignored if c not in ignored]
        mapping = InputMapping.from_dict(changed)
    settings = {k: original[k] for k in ("pane_steps", "earliest_us", "future_tolerance_us", "chunk_rows",
                                         "alert_cooldown_us", "online_calibration", "calibration_keep_days")
                if k in original}
    if config.pane_steps is not None:
        settings["pane_steps"] = config.pane_steps
    settings.update(config.extra)
    if settings.get("online_calibration") and (original_manifest.get("calibration_from") or {}).get("sha256"):
        settings["calibration_from"] = _kept_state_unchanged(original_manifest)
    suite = config.suite or original.get("suite") or "sensor"

    output = config.output
    if manifest_path is not None and _same_folder(output, manifest_path.rsplit("/", 1)[0]) \
            or _holds_run_of(output, everything):  # the run a JSON Lines export came from, too
        raise ReplayError(f"--output {config.output} is the run's own output folder: a replay is a run of the "
                          f"replayed records' source files only, whose commit would replace the other files' "
                          f"outputs there; give the replay a folder of its own")
    try:
        prepare_output_folder(output)
    except OSError as exc:
        raise ReplayError(str(exc)) from None
    try:
        with output_lock(output, "replay", config.run_id or ""):
            return _replay_locked(config, records, everything, original_manifest, digests, mapping, settings, suite,
                                  beam_args, now_us, carried, context)
    except OutputBusy as exc:
        raise ReplayError(str(exc)) from None


def _same_folder(a: str, b: str) -> bool:
    """Whether the local paths or URLs ``a`` and ``b`` name one folder."""
    from seqwatch.pipelines.object_store import is_remote

    if is_remote(a) or is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


def _holds_run_of(folder: str, records: pd.DataFrame) -> bool:
    """Whether ``folder`` holds the outputs of a run (not a replay's) whose records ``records`` are: a replay
    committed there would replace the outputs of every file it does not re-run. A replay's own folder, rerun with
    the same ``--run-id``, is not such a run; records without a run id name none."""
    manifest = _original_manifest(f"{folder.rstrip('/')}/manifest.json")
    if not manifest.get("run_id") or manifest.get("replay"):
        return False
    ids = set(records["run_id"].dropna().astype(str)) if "run_id" in records.columns else set()
    return manifest["run_id"] in ids


def context_sources(sources: set, groups: list) -> tuple:
    """The run's files that share an entity with ``sources`` (its manifest's ``input_groups``), less those: a
    replay re-runs them as they are, so that the windows of every entity it scores are cut from all of that
    entity's readings, as the run cut them (a fleet's daily files: the day before a replayed day)."""
    found = set()
    for group in groups:
        if isinstance(group, list) and sources & set(group):
            found.update(str(path) for path in group)
    return tuple(sorted(found - sources))


# A source that is no relative local path: a URL (gs://), a stream's (pcollection:, kafka:...), a Windows drive's.
_NOT_RELATIVE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:|[\\/])")


def _from_run_folder(records, everything, carried, manifest: dict):
    """``records``, ``everything``, ``carried`` and the run's ``manifest`` with each local source that the run named
    relative to its ``working_dir`` (a relative ``--input``) as the path it names from there."""
    import os

    base = manifest.get("working_dir")
    if not isinstance(base, str) or not base:
        return records, everything, carried, manifest

    def located(source):
        if not isinstance(source, str) or not source or _NOT_RELATIVE.match(source) or os.path.isabs(source):
            return source  # another file system's, a stream's (pcollection:..., kafka:...), or absolute already
        there = os.path.normpath(os.path.join(base, source))
        # where the run was started; if that folder is gone or elsewhere (a container's), as named from here
        return there if os.path.exists(there) or not os.path.exists(source) else source

    def moved(frame):
        return None if frame is None else frame.assign(source=frame["source"].map(located))

    manifest = {**manifest, "input_digests": {located(k): v for k, v in (manifest.get("input_digests") or {}).items()},
                "input_groups": [[located(p) for p in group] for group in manifest.get("input_groups") or []
                                 if isinstance(group, list)]}
    settings = manifest.get("settings")
    if isinstance(settings, dict) and settings.get("suite") not in (None, *SUITE_FAMILIES):
        # a suite file the run named relative to its folder: the run's, not one of that name where the replay runs
        manifest["settings"] = {**settings, "suite": located(settings["suite"])}
    return moved(records), moved(everything), moved(carried), manifest


def _kept_state_unchanged(manifest: dict) -> str:
    """The calibration state the run of ``manifest`` started its online calibration from (``--calibration-from``),
    once it is found to hold what it held then; ``ReplayError`` otherwise."""
    from seqwatch.pipelines.calibration_state import CalibrationStateError, check_state

    kept = manifest["calibration_from"]
    try:
        _, digest = check_state(kept["file"])
    except CalibrationStateError:
        digest = None
    if digest != kept.get("sha256"):
        why = "is gone or unreadable now" if digest is None else "has changed since (another run wrote a state there)"
        raise ReplayError(f"run {manifest.get('run_id')} started its online calibration from {kept['file']}, which "
                          f"{why}; a replay from another state would judge its windows by another history: put "
                          f"that file back, or replay with --no-online-calibration")
    return kept["file"]


def _replay_locked(config: ReplayConfig, records: pd.DataFrame, everything: pd.DataFrame, original_manifest: dict,
                   digests: dict, mapping: InputMapping, settings: dict, suite: str, beam_args: list[str] | None,
                   now_us: int | None, carried: pd.DataFrame | None = None, context: tuple = ()) -> dict:
    """``run_replay`` once its output folder is this replay's alone: the copies, the batch run, the manifest.
    ``everything``: the quarantine's records, ``records`` those replayed; ``carried``: an earlier replay's fixed
    texts (``earlier_edits``), applied to the lines of the replayed sources that ``records`` do not fix;
    ``context``: the run's other files of the replayed sources' entities, re-run as they are."""
    import tempfile

    import pandas as pd

    from seqwatch.pipelines.batch import run_batch
    from seqwatch.pipelines.config import RunConfig
    from seqwatch.pipelines.graph import write_json
    from seqwatch.pipelines.object_store import is_remote

    output = config.output
    # the patched copies: local files, beside a local output (its run reads them); for an output on an object
    # store, made in a temporary folder and put beside the output there, where the run reads them (a runner's
    # workers on other machines, Dataflow's, could not read this machine's files)
    remote = is_remote(output)
    work = Path(tempfile.mkdtemp(prefix="seqwatch-replay-")) if remote else Path(output) / REPLAY_DIR
    shutil.rmtree(work, ignore_errors=True)
    stored = f"{output.rstrip('/')}/{REPLAY_DIR}"
    try:
        patch = with_earlier_edits(records, carried, context)
        local_copies = prepare_inputs(patch, work, mapping.sep, context)
        copies = _put_copies(local_copies, work, stored) if remote else local_copies  # what the run reads
        run_id = config.run_id or "replay-" + hashlib.sha256(
            json.dumps([sorted(patch[["source", "line", "column", "raw"]].astype(str).values.tolist()),
                        mapping.to_dict(), suite, settings, _model_and_suite(config.model_dir, suite)],
                       sort_keys=True).encode()).hexdigest()[:12]
        # each replayed line's text in its source and in the copy, read once for both uses below
        compared = compared_lines(pd.concat([everything.loc[everything["reason_code"] == "duplicate",
                                                            ["source", "line"]], patch[["source", "line"]]]),
                                  local_copies, mapping.sep)
        # (no calibration state of its own: the entities of the sources it does not re-run would be the state's
        # the run started from, not the run's own)
        run = RunConfig(inputs=tuple(sorted(copies)), output=output, model_dir=config.model_dir,
                        mapping=mapping, suite=suite, run_id=run_id, keep_calibration_state=False,
                        known_duplicates=known_duplicates(everything, copies, compared), **settings)
        manifest = run_batch(run, beam_args, now_us=now_us)
        again = _rewrite_sources(output, copies)
        edits = fixed_texts(patch, local_copies, compared)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if remote:
            from seqwatch.pipelines.sinks import delete_path
            try:
                delete_path(stored)
            except Exception:  # a store that refuses now: the copies stay, named, and a rerun replaces them
                print(f"seqwatch replay: note: the patched copies in {stored} could not be deleted; delete them",
                      file=sys.stderr)
    from seqwatch.pipelines.batch import _canonical_path

    replaced = manifest.get("replaced_run")
    if replaced and sorted(map(_canonical_path, replaced.get("inputs") or [])) == sorted(
            map(_canonical_path, set(copies.values()))):
        del manifest["replaced_run"]  # a replay of these sources again (its inputs were copies of them)
    manifest["inputs"] = [copies.get(p, p) for p in manifest["inputs"]]
    manifest["input_digests"] = {source: digests[source] for source in sorted(set(copies.values()))}
    manifest["settings"]["inputs"] = [copies.get(p, p) for p in manifest["settings"].get("inputs", [])]
    by_reason = records.groupby(["stage", "reason_code"])["records"].sum()
    manifest["replay"] = {
        "quarantine": str(config.quarantine),
        "reason_codes": list(config.reason_codes),
        "sources": sorted(set(copies.values())),
        "context_sources": sorted(set(context) - set(patch["source"])),
        "replayed_by_reason": {f"{s}.{c}": int(n) for (s, c), n in by_reason.items()},
        **replay_outcome(records, again, mapping),
    }
    write_json({"run_id": manifest["run_id"], "edits": edits}, f"{output.rstrip('/')}/{EDITS_FILE}")
    manifest["replay"]["fixed_lines"] = len(edits)
    write_json(manifest, f"{output.rstrip('/')}/manifest.json")
    return manifest


def _put_copies(copies: dict[str, str], work: Path, folder: str) -> dict[str, str]:
    """Put the local ``copies`` (copy path -> source, under ``work``) under ``folder`` on an object store, each at
    its path relative to ``work``; returns stored copy -> source."""
    from apache_beam.io.filesystems import FileSystems

    stored = {}
    for copy, source in copies.items():
        target = f"{folder}/{Path(copy).relative_to(work).as_posix()}"
        with open(copy, "rb") as f, FileSystems.create(target) as out:
            shutil.copyfileobj(f, out, 1 << 20)
        stored[target] = source
    return stored


def _model_and_suite(model_dir: str, suite: str) -> list:
    """What the replay's outputs depend on besides its records and settings, as a run id does: the model's version
    and its metadata as they are now, and the suite's rules (not its name or path); as given where they cannot be
    read (the batch run then refuses them in one sentence)."""
    from seqwatch.models.artifact import METADATA_FILE, ArtifactError, read_metadata
    from seqwatch.pipelines.batch import _sha256_file
    from seqwatch.pipelines.model_store import local_model_dir
    from seqwatch.pipelines.object_store import read_bytes
    from seqwatch.schemas.validation import SuiteError, load_suite_dict

    try:
        folder = local_model_dir(model_dir)  # a model root's newest version, copied where it is on an object store
        model = [read_metadata(folder)["model_version"], _sha256_file(str(Path(folder) / METADATA_FILE))]
    except (ArtifactError, OSError, KeyError):
        model = [str(model_dir)]
    try:
        rules = load_suite_dict(suite, check=False, read=read_bytes)
    except (SuiteError, OSError):
        rules = suite
    return [model, rules]


def earlier_edits(manifest_path: str | None, manifest: dict) -> pd.DataFrame | None:
    """The fixed texts of the replay whose output holds ``manifest_path`` (``EDITS_FILE``, written by that replay:
    its run id), as records of ``source``, ``line`` and ``raw``; None for a run's output (a file a replay left in
    a folder that a run wrote since is not the run's) or a quarantine file alone. Raises ``ReplayError`` when the
    replay's fixes are gone, as a replay without them would undo them."""
    import pandas as pd

    replayed = manifest.get("replay") if manifest_path is not None else None
    if not replayed:
        return None
    path = f"{manifest_path.rsplit('/', 1)[0]}/{EDITS_FILE}"
    if not _is_file(path):
        if replayed.get("fixed_lines"):
            raise ReplayError(f"the fixes of replay {manifest.get('run_id')} are gone ({path}; it ran "
                              f"{replayed['fixed_lines']} fixed lines): a replay of its quarantine would undo them; "
                              f"restore the file, or replay the original run's quarantine with every fix")
        return None
    try:
        with _opened(path) as f:
            stored = json.loads(f.read().decode("utf-8"))
        if isinstance(stored, list):  # as the first version wrote it, without the run id: its own
            stored = {"run_id": manifest.get("run_id"), "edits": stored}
        if stored.get("run_id") != manifest.get("run_id"):
            return None  # another replay's, left in the folder
        frame = pd.DataFrame(stored["edits"], columns=["source", "line", "raw"])
        frame["line"] = frame["line"].astype("int64")
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ReplayError(f"the earlier replay's fixes {path} cannot be read: {exc}") from None
    return frame.assign(column="", records=0, stage="replay", reason_code="earlier_fix", reason="", run_id="")


def with_earlier_edits(records: pd.DataFrame, carried: pd.DataFrame | None, context: tuple = ()) -> pd.DataFrame:
    """``records`` and, for their sources and the ``context`` files, the earlier replay's fixes of the lines they
    do not fix themselves (a fix of this replay's wins); the carried rows count no reading (``records`` 0)."""
    import pandas as pd

    if carried is None or carried.empty:
        return records
    mine = set(zip(records["source"], records["line"]))
    keep = carried["source"].isin(set(records["source"]) | set(context)) & ~pd.Series(
        [(s, n) in mine for s, n in zip(carried["source"], carried["line"])], index=carried.index, dtype=bool)
    return pd.concat([records, carried[keep][records.columns.intersection(carried.columns)]], ignore_index=True)


def fixed_texts(patch: pd.DataFrame, copies: dict[str, str], compared: dict | None = None,
                sep: str | None = None) -> list[dict]:
    """``[{source, line, raw}]`` of the lines (a Parquet source's rows, as JSON) that the copies hold with another
    text than their source, in the copies' text: what a later replay of this replay's quarantine applies again
    (a record of several lines whole). ``compared``, ``sep``: as for ``known_duplicates``."""
    if compared is None:
        compared = compared_lines(patch, copies, sep)
    edits = []
    for source in sorted(set(copies.values())):
        numbers = {int(n) for n in patch.loc[patch["source"] == source, "line"]}
        texts = compared.get(source, {})
        for n in sorted(numbers):
            if n in texts and texts[n][0] != texts[n][1]:
                copied = texts[n][1]
                edits.append({"source": source, "line": n,
                              "raw": json.dumps(copied) if isinstance(copied, dict) else copied})
    return edits


def add_arguments(parser) -> None:
    """The ``seqwatch replay`` flags (the CLI's parser calls this)."""
    parser.add_argument("--quarantine", required=True, metavar="PATH",
                        help="a run's output folder, its quarantine/ folder, a quarantine Parquet file, or a JSON "
                             "Lines file of (fixed) quarantine records; local or on S3")
    parser.add_argument("--output", required=True, help="output folder of the replay run; local or on S3")
    parser.add_argument("--model-dir", required=True,
                        help="the model artifact (or model root) to score the records with")
    parser.add_argument("--suite", help="great-expectations suite (default: the original run's)")
    parser.add_argument("--reason-code", action="append", metavar="CODE",
                        help="replay only records with this reason code (repeatable; default: all)")
    parser.add_argument("--run-id", help="default: derived from the replayed records and settings")
    parser.add_argument("--pane-steps", type=int, help="default: the original run's")
    parser.add_argument("--online-calibration", action=argparse.BooleanOptionalAction, default=None,
                        help="judge each entity's windows by its own earlier scores, or not (default: as the "
                             "original run did; a JSON Lines export names no run, so give it again with one)")
    parser.add_argument("--alert-cooldown", type=float, metavar="SECONDS",
                        help="as seqwatch run's (default: the original run's; give it again with a JSON Lines "
                             "export)")


def config_from_args(args) -> ReplayConfig:
    from seqwatch.pipelines.object_store import read_bytes

    changes = InputMapping.read_file(args.mapping, read=read_bytes) if args.mapping else {}
    return ReplayConfig(quarantine=args.quarantine, output=args.output, model_dir=args.model_dir,
                        mapping_changes=changes,
                        suite=args.suite, reason_codes=tuple(args.reason_code or ()), run_id=args.run_id or "",
                        pane_steps=args.pane_steps)
