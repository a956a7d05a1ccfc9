"""Parquet sinks: every file has one of the schemas of ``seqwatch.schemas.arrow`` and a deterministic name.

Layout under a run's output (no ``key=value`` folder names, so readers do not invent partition columns)::

    scores/part-<k>-of-<n>.parquet         batch: the run's scores in n files (n from the input's size: about a
                                           million rows each), an entity's rows all in one, entities in order,
                                           each entity's rows by window end; row groups of 65,536 rows
    forecasts/part-<k>-of-<n>.parquet      batch: the same for forecasts, an entity in the file of its scores
    scores/<entity>/pane-<n>.parquet       streaming: one file per entity pane, rows by window end, written as
    forecasts/<entity>/pane-<n>.parquet    the pane is scored
    alerts/part-00000-of-00001.parquet     batch: the run's alerts, one row per incident, by entity and start
    alerts/<entity>/<alert_id>.parquet     streaming: one file per incident, once it is over
    alerts_open/<entity>/<alert_id>.parquet  streaming: one notice per incident as soon as it opens (its first
                                           window; same id as its alert when that window was the first to arrive)
    quarantine/<source file>-<hash>.parquet  batch: one file per source, rows by line
    quarantine/<source>-<hash>/<window start>.parquet  streaming: one file per source and flush window (with
                                           the records that arrived late for earlier windows of the source)
    readings/<entity>/<window start>.parquet  streaming with ``--archive-readings``: the readings that passed the
                                           late gate and validation, one file per entity and archive window, in
                                           the long input format (``seqwatch train --warm-start`` reads them)

``pyarrow.dataset.dataset("out/alerts")``, DuckDB's ``read_parquet('out/alerts/**/*.parquet')`` and Spark's
``recursiveFileLookup`` read them as they are. Every file is written under a temporary name and renamed when
complete, so a reader never sees half a file; file names are deterministic, so a rerun or a replay overwrites
instead of duplicating (a stream restarted into its folder ends the names of its pane and window files with
``.s2``, ``.s3``, ...: it resumes where the last one stopped, and writes the rest of that pane beside it). The batch runner also writes into a staging folder and moves it into place only after
the whole pipeline succeeded (``seqwatch.pipelines.batch``).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import zlib
from operator import itemgetter
from pathlib import Path, PurePath
from typing import Callable, Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from seqwatch.pipelines.alerts import describe_incident, forecast_rows
from seqwatch.pipelines.flush import FlushPerWindow
from seqwatch.pipelines.object_store import is_remote, objects_under, quiet_store_logs, store_error, store_sentence
from seqwatch.pipelines.pane_pieces import group_ranges, id_codes
from seqwatch.pipelines.quarantine_merge import (CHUNK_ROWS, PIECE_ROWS, RawLines, SortedQuarantinePart,
                                                 chunks_in_line_order, compacted_dictionaries, merged_quarantine)
from seqwatch.pipelines.stage_metrics import StageTimer
from seqwatch.schemas.arrow import (ALERT_SCHEMA, FORECAST_SCHEMA, QUARANTINE_SCHEMA, READING_SCHEMA, SCORE_SCHEMA,
                                    to_table)
from seqwatch.schemas.elements import PackedQuarantine, Quarantined, ReadingBatch, ScoredWindows

MAX_SCORE_FILES = 4096  # the most files a run's scores (and forecasts) are written in, per run or flush window


# Names Windows reserves for devices, with or without an extension: a folder ``con`` or ``nul.x`` cannot be made there.
_WINDOWS_DEVICE = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)


def _cleaned(text: str) -> str:
    """``text`` with characters outside ``A-Za-z0-9._-`` replaced, cut to 80, without leading dots and underscores."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:80].lstrip("._")


def safe_name(text: str) -> str:
    """A file-name-safe form of an id, one path segment that readers list: characters outside ``A-Za-z0-9._-``
    are replaced, and leading dots and underscores dropped (``..`` would climb out of the sink's folder, and
    pyarrow.dataset, Spark and Hive skip ``.x`` and ``_x`` as hidden); a short hash of the id is appended when
    anything had to change, so distinct ids keep distinct names. The hash is appended as well to an id with a
    capital letter, one ending in ``.``, and a Windows device name (``con``, ``nul.txt``): a case-insensitive
    file system (macOS, Windows, SMB shares) would give ``PumpA`` and ``pumpa`` one folder, whose files of the
    same pane would overwrite each other, and Windows drops a trailing dot and refuses device names."""
    clean = _cleaned(text)
    plain = (clean == text and clean and clean == clean.lower() and not clean.endswith(".")
             and not _WINDOWS_DEVICE.fullmatch(clean))
    if not plain:
        clean = f"{clean or 'id'}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return clean


def delete_path(path: str) -> None:
    """Delete the file or folder (with what it holds) named ``path``, if there is one. A local path is deleted by
    its name: Beam's ``FileSystems.delete`` matches its argument as a glob, so an output named ``results [prod]``
    matched nothing (the run was refused, and its probe file left behind), and one with ``*`` in its name would
    have matched other folders."""
    if "://" in path:  # an object, or a "folder": every object under the prefix
        objects = objects_under(path) + [path] * FileSystems.exists(path)
        if objects:
            FileSystems.delete(objects)
        return
    import shutil

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def files_under(folder: str, pattern: str) -> list[tuple[str, float]]:
    """``(path, time written)`` of the files under ``folder`` that match ``pattern`` (a glob relative to it; ``**/``
    for any depth, none included), sorted. A local folder's name is taken as it is, not as a glob: through Beam's
    match, an output named ``results [prod]`` held no file (a stream's closing line counted 0 records in it). Other
    file systems' folders go through Beam's match."""
    if "://" in folder:
        found = FileSystems.match([f"{folder.rstrip('/')}/{pattern.replace('**/', '**')}"])
        return sorted((m.path, m.last_updated_in_seconds) for r in found for m in r.metadata_list)
    import glob

    found = []
    for path in glob.glob(os.path.join(glob.escape(folder), pattern), recursive=True):
        try:
            if os.path.isfile(path):
                found.append((path, os.path.getmtime(path)))
        except OSError:  # gone since it was listed (a file renamed into place by a running stream)
            continue
    return sorted(found)


def prepare_output_folder(output: str) -> None:
    """Create ``output`` where missing and write and delete a probe file in it, before a pipeline starts: a
    file in its place or a folder without write permission raises ``OSError`` here, with one sentence, rather
    than inside a sink after the readings were scored."""
    probe = FileSystems.join(output, f".seqwatch-probe-{os.getpid()}")
    try:
        with quiet_store_logs():
            if not FileSystems.exists(output):
                FileSystems.mkdirs(output)
            with FileSystems.create(probe) as f:
                f.write(b"probe\n")  # not empty: Beam's S3 writer cannot complete an upload of no parts
            delete_path(probe)
    except Exception as exc:  # noqa: BLE001 - Beam's BeamIOError is an OSError; an object store's errors are not
        if store_error(exc) is not None:
            raise OSError(f"cannot write the outputs under --output {store_sentence(exc, output)}") from None
        if not isinstance(exc, OSError):
            raise
        reason = file_in_the_way(output) or getattr(exc, "strerror", None) or str(exc).split(" [while", 1)[0]
        raise OSError(f"cannot write the outputs under --output {output}: {reason}") from None


DECODED_BYTES_PER_ROW_GROUP = 64 << 20  # a row group of a dictionary-encoded table stands for this much text


def _write_dictionary_encoded(tables: Iterable[pa.Table], f) -> None:
    """Write tables of one schema whose dictionary-encoded columns stand for plain ones
    (``quarantine_records_table``), one after the other, as their dictionaries and indices: the file has the plain
    types (no Arrow schema is stored, so every reader gets strings; ``read_dictionary=["raw"]`` gets each text
    once), and no text is decoded or hashed once per row. Each row group stands for about
    ``DECODED_BYTES_PER_ROW_GROUP`` of decoded text (at most a table's rows), so that a reader that decodes a row
    group at a time holds that much, and has its own dictionaries of the values it uses. A file is written even
    where ``tables`` are all empty (the first's schema); there must be one.

    The quarantine of a wide file of 50,000 columns the model lacks stands for 280 GB of text (its rows' text,
    once per reading): decoded a row group at a time for the writer to encode again, it had taken about 110 s."""
    writer = metadata = None
    try:
        for table in tables:
            if writer is None:
                writer = pq.ParquetWriter(f, table.schema, compression="zstd", store_schema=False)
                metadata = table.schema.metadata
            decoded = 0
            for column in table.columns:
                if pa.types.is_dictionary(column.type):
                    for chunk in column.chunks:
                        lengths = pc.binary_length(chunk.dictionary).to_numpy(zero_copy_only=False)
                        decoded += int(lengths[chunk.indices.to_numpy(zero_copy_only=False)].sum()) if len(chunk) else 0
            rows = max(1024, int(DECODED_BYTES_PER_ROW_GROUP * table.num_rows / max(decoded, 1)))
            for start in range(0, table.num_rows, rows):
                writer.write_table(compacted_dictionaries(table.slice(start, rows)), row_group_size=rows)
        if metadata:
            writer.add_key_value_metadata(metadata)
    finally:
        if writer is not None:
            writer.close()


def quarantine_records_table(rows: list[Quarantined]) -> pa.Table:
    """The quarantine sink's table of ``rows``, its text columns dictionary-encoded: every reading of a wide row
    is a record with the row's text, so a row of 500 columns the model lacks repeats its text 500 times (a 1.7 MB
    Parquet file of 300 such rows had made a 4.3 GB element, beyond gRPC's 2 GB, and 13 GB of memory), and a
    sensor that sends "n/a" for a month repeats one reason a million times. ``write_parquet`` writes it with the
    plain ``QUARANTINE_SCHEMA``."""
    arrays, fields = [], []
    for k, field in enumerate(QUARANTINE_SCHEMA):  # a record's fields are in the schema's order
        values = list(map(itemgetter(k), rows))  # (zip(*rows) had taken 1.2 s of a million records' 1.7)
        if pa.types.is_string(field.type):
            index: dict = {}  # each distinct text once: a text many records share is one Python object
            codes = [index.setdefault(v, len(index)) for v in values]
            array = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(list(index), pa.string()))
            field = field.with_type(array.type)
        else:
            array = pa.array(values, type=field.type)
        arrays.append(array)
        fields.append(field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=QUARANTINE_SCHEMA.metadata))


PACKED_QUARANTINE_ROWS = 50_000  # the most records a batch run packs into one table before they are grouped


class QuarantinePacker:
    """Quarantined records held per source and given out as ``PackedQuarantine`` tables of at most ``rows``
    records (``quarantine_records_table``): a source's table as soon as it is full (``add``), the rest when asked
    (``flush``; ``rows=None``: only then). The batch reader, validation and the sink's packing step each hold their
    records so."""

    def __init__(self, rows: int | None = PACKED_QUARANTINE_ROWS):
        self.rows = rows
        self._held: dict = {}  # source -> records

    def add(self, q: Quarantined) -> PackedQuarantine | None:
        held = self._held.get(q.source)
        if held is None:
            held = self._held[q.source] = []
        held.append(q)
        if self.rows is None or len(held) < self.rows:
            return None
        del self._held[q.source]
        return PackedQuarantine(q.source, quarantine_records_table(held))

    def flush(self) -> list[PackedQuarantine]:
        held, self._held = self._held, {}
        return [PackedQuarantine(source, quarantine_records_table(records)) for source, records in held.items()]


class _PackQuarantine(beam.DoFn):
    """``Quarantined -> (source, SortedQuarantinePart)``: a batch run's quarantined records packed per source and
    bundle into tables of at most ``rows`` records (``quarantine_records_table``) before they are grouped, sorted by
    line and cut into compressed pieces of ``piece_rows`` (``quarantine_merge``); records that came packed
    (``PackedQuarantine``, from the batch reader) are sorted and cut as they are. Grouped one by one, a million
    records (a sensor that sent "n/a" for a month) had taken 2.8 GB and most of the run's 83 s: each went through
    the grouping as a pickled record and came out as Python objects again."""

    def __init__(self, rows: int = PACKED_QUARANTINE_ROWS, piece_rows: int = PIECE_ROWS):
        self.rows = rows
        self.piece_rows = piece_rows

    def start_bundle(self):
        self._packer = QuarantinePacker(self.rows)

    def process(self, q: Quarantined | PackedQuarantine):
        packed = q if isinstance(q, PackedQuarantine) else self._packer.add(q)  # (packed where it was made)
        if packed is not None:
            yield packed.source, SortedQuarantinePart.of(packed.table, self.piece_rows)

    def finish_bundle(self):
        # a batch run's records are all in the global window (one file per source)
        for packed in self._packer.flush():
            yield WindowedValue((packed.source, SortedQuarantinePart.of(packed.table, self.piece_rows)),
                                GlobalWindow().max_timestamp(), [GlobalWindow()])


def file_in_the_way(path: str) -> str | None:
    """Why no folder can be made at the local ``path``: ``"it is a file"``, or ``"<ancestor> is a file"``; None
    when no file stands in the way (and for URLs such as ``gs://``)."""
    if "://" in path:
        return None
    target = Path(path)
    for place in (target, *target.parents):
        if place.exists():
            if place.is_dir():
                return None
            return "it is a file" if place == target else f"{place} is a file"
    return None


# Tables of fewer rows are written uncompressed: an alert (one row), a stream's pane of scores (a few windows) or
# forecasts. zstd made such files no smaller (a 16-row score table: 4,727 bytes against 4,612) and cost 0.6 ms a
# file (0.85 ms against 0.25 ms), a twentieth of a fleet's stream; from a few hundred rows it pays (256 rows: 15%).
COMPRESS_FROM_ROWS = 256


def parquet_compression(table: pa.Table) -> str:
    """The codec a table of this size is written with (``COMPRESS_FROM_ROWS``)."""
    return "zstd" if table.num_rows >= COMPRESS_FROM_ROWS else "none"


def write_parquet(path: str, table: pa.Table, row_group_rows: int | None = None, dictionary: bool = True) -> None:
    """Write ``table`` to ``path`` on any Beam filesystem (folders are created where needed); ``row_group_rows``:
    at most that many rows per row group (default: Arrow's). Compressed with zstd unless it is small
    (``parquet_compression``). ``dictionary=False``: no dictionary encoding (columns of distinct doubles, where
    trying it cost four times the rest of the write)."""
    def write(f) -> None:
        if any(pa.types.is_dictionary(field.type) for field in table.schema):
            _write_dictionary_encoded([table], f)
        else:
            pq.write_table(table, f, compression=parquet_compression(table), row_group_size=row_group_rows,
                           use_dictionary=dictionary)

    write_file(path, write)


def write_file(path: str, write: Callable) -> None:
    """Make the file ``path`` on any Beam filesystem with ``write(f)``, whole or not at all: locally under a
    partial name, renamed when complete (folders are created where needed); on an object store in place."""
    if is_remote(path):
        # An object store's object appears whole when its upload completes, and has no folder to make: written in
        # place, three requests, where a partial name, its rename and the checks around it took nine (a stream of
        # a few thousand readings into S3 spent most of its time on them)
        with FileSystems.create(path) as f:
            write(f)
        return
    directory = path.rsplit("/", 1)[0]
    if not FileSystems.exists(directory):
        try:
            FileSystems.mkdirs(directory)
        except IOError:  # another worker created it first
            if not FileSystems.exists(directory):
                raise
    partial = f"{directory}/.{path.rsplit('/', 1)[1]}.partial"
    with FileSystems.create(partial) as f:
        write(f)
    delete_path(path)
    FileSystems.rename([partial], [path])


def score_table(scored: ScoredWindows, run_id: str) -> pa.Table:
    """The rows of ``score_rows(scored, run_id)`` as a table with ``SCORE_SCHEMA``, built column by column from
    the arrays (no Python object per window): the same values, the same Parquet bytes."""
    wb = scored.windows
    n = len(wb.ends)
    span = (scored.window_length - 1) * wb.step_us
    ends = np.asarray(wb.ends, dtype=np.int64)
    contributions = np.asarray(scored.contributions)
    top = np.argmax(contributions, axis=1) if n else np.zeros(0, dtype=np.int64)
    flat = contributions.astype(np.float64, copy=False).reshape(-1)
    width = contributions.shape[1] if contributions.ndim == 2 else 0
    columns = {
        "entity_id": pa.array([wb.entity_id] * n, pa.string()),
        "window_start": pa.array(ends - span, pa.int64()),
        "window_end": pa.array(ends, pa.int64()),
        "score": pa.array(np.asarray(scored.score, dtype=np.float64), pa.float64()),
        "threshold": pa.array(np.broadcast_to(np.asarray(scored.threshold, dtype=np.float64), (n,)), pa.float64()),
        "is_anomaly": pa.array(np.asarray(scored.is_anomaly, dtype=bool), pa.bool_()),
        "severity": pa.array(np.asarray(scored.severity).tolist(), pa.string()),
        "tail_probability": pa.array(np.asarray(scored.tail_probability, dtype=np.float64), pa.float64()),
        "top_channel": pa.array(np.asarray(wb.channels, dtype=object)[top].tolist() if n else [], pa.string()),
        "channel_contributions": pa.ListArray.from_arrays(
            pa.array(np.arange(n + 1, dtype=np.int32) * width, pa.int32()), pa.array(flat, pa.float64())),
        "model_id": pa.array([scored.model_id] * n, pa.string()),
        "model_version": pa.array([scored.model_version] * n, pa.string()),
        "run_id": pa.array([run_id] * n, pa.string()),
    }
    arrays = [columns[f.name].cast(f.type) for f in SCORE_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SCORE_SCHEMA)


class ArchivePiece:
    """An entity's readings of one batch in one archive window, as they travel to the archive's flush (Beam state
    until the window is written): the channels' names (a tuple) and codes, timestamps (int µs) and values, pickled
    as one buffer. As pandas frames, like the pane pieces before them (``pane_pieces``), they were most of what
    ``--archive-readings`` cost a live stream: a frame pickled and unpickled per entity and poll."""

    __slots__ = ("channels", "codes", "timestamp", "value")

    def __init__(self, channels: tuple, codes: np.ndarray, timestamp: np.ndarray, value: np.ndarray):
        self.channels = channels
        self.codes = codes
        self.timestamp = timestamp
        self.value = value

    def __len__(self) -> int:
        return len(self.timestamp)

    def __reduce__(self):
        buffer = b"".join(a.tobytes() for a in (self.timestamp, self.value, self.codes))
        return _archive_piece_from_buffer, (len(self), self.channels, self.codes.dtype.str, buffer)


def _archive_piece_from_buffer(n: int, channels: tuple, code_dtype: str, buffer: bytes) -> ArchivePiece:
    timestamp = np.frombuffer(buffer, dtype=np.int64, count=n)
    value = np.frombuffer(buffer, dtype=np.float64, count=n, offset=8 * n)
    codes = np.frombuffer(buffer, dtype=np.dtype(code_dtype), count=n, offset=16 * n)
    return ArchivePiece(channels, codes, timestamp, value)


def reading_table(entity: str, pieces: list) -> pa.Table:
    """An entity's archived readings (``ArchivePiece`` objects) as one table with ``READING_SCHEMA``, rows ordered
    by time and channel (stably: a reading and its copy keep their order)."""
    names = sorted(set().union(*(piece.channels for piece in pieces))) if pieces else []
    position = {name: i for i, name in enumerate(names)}
    codes = np.concatenate([np.asarray([position[c] for c in piece.channels], dtype=np.int64)[piece.codes]
                            for piece in pieces]) if pieces else np.zeros(0, dtype=np.int64)
    timestamp = np.concatenate([piece.timestamp for piece in pieces]) if pieces else np.zeros(0, dtype=np.int64)
    value = np.concatenate([piece.value for piece in pieces]) if pieces else np.zeros(0, dtype=np.float64)
    order = np.lexsort((codes, timestamp))  # channel names sorted: their codes sort as the names do
    n = len(order)
    return pa.Table.from_arrays([
        pa.array([entity] * n, pa.string()),
        pa.DictionaryArray.from_arrays(pa.array(codes[order], pa.int32()),
                                       pa.array(names, pa.string())).cast(pa.string()),
        pa.array(timestamp[order], pa.int64()).cast(READING_SCHEMA.field("timestamp").type),
        pa.array(value[order], pa.float64()),
    ], schema=READING_SCHEMA)


# The archive's flush is keyed by a shard of entities, not by entity: a poll of a live fleet then makes an element
# per shard, not per entity, and each element costs the flush a few state calls to the runner (100 pumps: 100
# elements a poll had cost about 0.09 of a core in seqwatch and 0.05 in Prism at 400 readings/s). Shards, not one
# key, so that a runner with several workers spreads the archive over them.
ARCHIVE_SHARDS = 16


def archive_shard(entity: str) -> int:
    """The archive shard of ``entity``: the same in every process and run (CRC-32 of its id)."""
    return zlib.crc32(entity.encode("utf-8")) % ARCHIVE_SHARDS


def archive_pieces(batch: ReadingBatch, size_us: int, timestamp=beam.DoFn.TimestampParam):
    """``(shard, [(entity, ArchivePiece), ...])`` per archive shard and window of ``size_us`` of a batch, a piece per
    entity, each element stamped with its first reading's time (never before the batch's own stamp, which Beam
    does not allow): the archive files a piece by its stamp, and a batch of a replay or a broker poll can span
    several windows (an hour's file held readings of the next hour)."""
    frame = batch.frame
    if not len(frame):
        return
    entity_codes, entity_names = id_codes(frame["entity_id"])
    channel_codes, channels = id_codes(frame["channel"])
    channel_names = tuple(str(c) for c in channels)
    stamps = frame["timestamp"].to_numpy(dtype=np.int64)
    values = frame["value"].to_numpy(dtype=np.float64)
    window = stamps // size_us
    order, starts, ends = group_ranges(entity_codes, window)  # a piece keeps its readings' order in the batch
    groups: dict = {}  # (shard, window) -> [(entity, piece)]
    for lo, hi in zip(starts, ends):
        rows = order[lo:hi]
        entity = str(entity_names[entity_codes[rows[0]]])
        piece = ArchivePiece(channel_names, channel_codes[rows], stamps[rows], values[rows])
        groups.setdefault((archive_shard(entity), int(window[rows[0]])), []).append((entity, piece))
    floor = int(timestamp.micros)
    for (shard, _), pieces in groups.items():
        at = max(min(int(piece.timestamp.min()) for _, piece in pieces), floor)
        yield beam.window.TimestampedValue((shard, pieces), Timestamp(micros=at))


def archive_tables(release, suffix: str = ""):
    """``(relative path, table)`` per entity of a release of the archive's flush (``FlushPerWindow`` over
    ``archive_pieces``): ``readings/<entity>/<window start><suffix>.parquet``. A shard's window is released once, so
    an entity's file of a window is written once."""
    by_entity: dict = {}
    for pieces in release.items:
        for entity, piece in pieces:
            by_entity.setdefault(entity, []).append(piece)
    for entity in sorted(by_entity):
        yield (f"readings/{safe_name(entity)}/{release.start_us}{suffix}.parquet",
               reading_table(entity, by_entity[entity]))


ALERT_LOG = "seqwatch.alerts"


class _WriteTable(beam.DoFn):
    """Writes ``(relative path, table)`` items; with ``announce``, logs each incident file it wrote (opened or
    settled) on the ``seqwatch.alerts`` logger at INFO, so that a stream's log says what it found as it finds it."""

    def __init__(self, root: str, announce: bool = False):
        self.root = root
        self.announce = announce
        self.timer = StageTimer("write")

    def process(self, item):
        relative, table = item
        with self.timer:
            sharded = relative.count("/") == 1 and relative.startswith(("scores/", "forecasts/"))
            write_parquet(FileSystems.join(self.root, relative), table, SHARD_ROW_GROUP_ROWS if sharded else None)
        if self.announce and relative.startswith(("alerts/", "alerts_open/")):
            logging.getLogger(ALERT_LOG).info(describe_incident(table.to_pylist()[0],
                                                                opened=relative.startswith("alerts_open/")))
        yield ("files_written", 1)


class _WriteQuarantineFile(beam.DoFn):
    """Writes a batch run's ``(source, [SortedQuarantinePart])`` as the source's quarantine file, its records in the
    order of (line, column, stage, reason_code, reason), merged and written a chunk of lines at a time
    (``quarantine_merge``): what it holds does not grow with the source's bad records."""

    def __init__(self, root: str, chunk_rows: int = CHUNK_ROWS):
        self.root = root
        self.chunk_rows = chunk_rows
        self.timer = StageTimer("write")

    def process(self, item):
        source, parts = item
        raw_lines = RawLines(source).find

        def merged_chunks():
            any_rows = False
            for chunk in chunks_in_line_order(list(parts), self.chunk_rows):
                any_rows = True
                yield merged_quarantine(source, chunk, raw_lines)
            if not any_rows:  # (parts of no records: a file of none, as a part of none had made)
                yield quarantine_records_table([])

        with self.timer:
            write_file(FileSystems.join(self.root, quarantine_file(source)),
                       lambda f: _write_dictionary_encoded(merged_chunks(), f))
        yield ("files_written", 1)


def quarantine_file(source: str, window_start_us: int | None = None, suffix: str = "") -> str:
    """The quarantine file of ``source``, relative to the output: a batch run's, or a stream's of the flush window
    that starts at ``window_start_us``."""
    name = (_cleaned(PurePath(source).name) or "source") + "-" + hashlib.sha256(source.encode()).hexdigest()[:8]
    if window_start_us is not None:
        return f"quarantine/{name}/{window_start_us}{suffix}.parquet"
    return f"quarantine/{name}.parquet"


def _pane_file(sink: str, entity: str, pane: int, suffix: str = "") -> str:
    return f"{sink}/{safe_name(entity)}/pane-{pane:+09d}{suffix}.parquet"


# Row groups of a batch run's score and forecast files: an entity's rows are together and the files are in entity
# order, so a reader that filters on entity_id skips the row groups of others by their statistics.
SHARD_ROW_GROUP_ROWS = 65_536


def shard_of(entity: str, files: int) -> int:
    """The file (0 to ``files`` - 1) that holds ``entity``'s scores and forecasts in a batch run: a hash of its id,
    the same on every worker and in every run."""
    if files <= 1:
        return 0
    return int.from_bytes(hashlib.sha256(entity.encode("utf-8", "surrogatepass")).digest()[:8], "big") % files


def shard_file(sink: str, shard: int, files: int) -> str:
    return f"{sink}/part-{shard:05d}-of-{files:05d}.parquet"


ALERTS_FILE = shard_file("alerts", 0, 1)  # a batch run's alerts, all in one file


def _alerts_file(alerts: list):
    """A batch run's alerts as one table, rows by entity, start and id (a rerun writes the same file); nothing
    when there are none (the run's commit then writes the sink's empty file)."""
    if alerts:
        yield ALERTS_FILE, to_table(sorted(alerts, key=lambda a: (a.entity_id, a.start, a.alert_id)), ALERT_SCHEMA)


def _score_piece(sw: ScoredWindows, run_id: str) -> pa.Table | None:
    return score_table(sw, run_id) if len(sw.windows.ends) else None


def _forecast_piece(sw: ScoredWindows, run_id: str) -> pa.Table | None:
    rows = forecast_rows(sw, run_id)
    return to_table(rows, FORECAST_SCHEMA) if rows else None


class _GatherShardPieces(beam.DoFn):
    """``ScoredWindows -> (file, (pieces, table))``, once per bundle and file: the bundle's tables of the file's
    entity panes in one table, and ``(entity, pane, first window end, rows)`` of each piece in it. A table per
    pane through the GroupByKey had cost 0.8 ms of pickling each (about 1 s of a fleet's run of 2,000 entities)."""

    def __init__(self, files: int, table_of, run_id: str):
        self.files = files
        self.table_of = table_of
        self.run_id = run_id

    def start_bundle(self):
        self._held: dict = {}

    def process(self, sw: ScoredWindows):
        table = self.table_of(sw, self.run_id)
        if table is not None:
            entity = sw.windows.entity_id
            self._held.setdefault(shard_of(entity, self.files), []).append((*_piece_order(sw), table))

    def finish_bundle(self):
        held, self._held = self._held, {}
        for shard, pieces in sorted(held.items()):
            # One chunk per column: pickled as a table of a chunk per pane, 1,000 panes' scores took 214 ms to
            # pickle and 108 ms to unpickle (7 ms and 0.4 ms as one chunk; a fleet's run of 2,000 entities spent
            # 3 s of its 13 s pickling these tables for the GroupByKey).
            table = pa.concat_tables([piece[-1] for piece in pieces]).combine_chunks()
            yield WindowedValue((shard, ([(*piece[:-1], piece[-1].num_rows) for piece in pieces], table)),
                                Timestamp(micros=0), [GlobalWindow()])


def _window_piece(sw: ScoredWindows, sink: str, files: int, table_of, run_id: str):
    """``ScoredWindows -> ((sink, file), ([(entity, pane, first window end, rows)], table))`` for a stream's scores
    or forecasts gathered per flush window (the element's own timestamp is kept, so the flush puts it in its
    window); both sinks go through one flush, the sink in the key."""
    table = table_of(sw, run_id)
    if table is not None:
        yield (sink, shard_of(sw.windows.entity_id, files)), ([(*_piece_order(sw), table.num_rows)], table)


def _piece_order(sw: ScoredWindows) -> tuple:
    """``(entity, pane, first window end)``: where a pane's rows go in a part file (``_shard_table``)."""
    ends = sw.windows.ends
    return sw.windows.entity_id, int(sw.windows.pane), int(ends[0]) if len(ends) else 0


def window_file(sink: str, start_us: int, shard: int, files: int, suffix: str = "") -> str:
    """A stream's file of scores (``sink`` scores or forecasts) of the flush window starting at ``start_us``
    (µs since the epoch) and of file ``shard`` of ``files``."""
    return f"{sink}/{start_us}/part-{shard}-of-{files}{suffix}.parquet"


def _shard_table(gathered) -> pa.Table:
    """One file's table from its gathered ``(pieces, table)`` parts: entities in order, each entity's panes in
    order (as the panes' own files had them; a pane's pieces by their first window), whatever order the parts and
    pieces came in."""
    slices, tables = [], []
    for pieces, table in gathered:
        offset = 0
        for entity, pane, first_end, rows in pieces:
            slices.append(((entity, pane, first_end), len(tables), offset, rows))
            offset += rows
        tables.append(table)
    slices.sort(key=lambda s: s[0])
    # Taken, not sliced: one chunk per column, with buffers of its own. The table goes on to the writer through a
    # stage boundary, where a slice pickles the whole buffer it views (a fleet's file: 3.8 GB) and a table of a
    # chunk per slice pickles slowly (see _GatherShardPieces).
    starts = np.cumsum([0] + [table.num_rows for table in tables])
    rows = [np.arange(starts[t] + offset, starts[t] + offset + n, dtype=np.int64) for _, t, offset, n in slices]
    taken = pa.concat_tables(tables).take(np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64))
    return taken.combine_chunks()


class WriteOutputs(beam.PTransform):
    """Write scores, forecasts, alerts and quarantined records (and, given ``readings``, the archived readings)
    under ``root``; emits ``(name, n)`` counts: files written and (streaming) ``flushed_late.quarantine``, the
    quarantine rows that arrived after their flush window was written and went into a later file; with an
    archive, ``readings_archived`` (readings written) and ``flushed_late.reading_batches`` (a shard's pieces of a
    batch that arrived after their archive window was written)."""

    def __init__(self, root: str, run_id: str, flush_window_s: float | None = None,
                 archive_window_s: float | None = None, file_suffix: str = "", score_files: int = 1,
                 score_window_files: int = 0):
        """``flush_window_s``: streaming only; quarantined records are written per event-time window of this
        length (batch: one file per source at the end). ``archive_window_s``: streaming only; the ``readings``
        input (``ReadingBatch`` elements) is written per entity and event-time window of this length.
        ``file_suffix``: streaming only; ends the names of the files written per pane or window (a restarted
        stream's, ``.s2``: ``streaming.note_stream_start``), so that they sit beside an earlier stream's.
        ``score_files``: batch only; scores and forecasts are written in this many files each, an entity's rows in
        one of them (``shard_of``). A stream writes them per entity and pane as each pane is scored, or, with
        ``score_window_files`` N, per flush window in N files (``window_file``), an entity's rows in one of them."""
        super().__init__()
        if score_files < 1:
            raise ValueError(f"score_files must be at least 1, got {score_files}")
        if not 0 <= score_window_files <= MAX_SCORE_FILES:
            raise ValueError(f"score_window_files must be from 0 to {MAX_SCORE_FILES}, got {score_window_files}")
        if score_window_files and flush_window_s is None:
            raise ValueError("scores are gathered per flush window by streaming runs only")
        self.score_files = int(score_files)
        self.score_window_files = int(score_window_files)
        if archive_window_s is not None and flush_window_s is None:
            raise ValueError("the reading archive is written by streaming runs only")
        self.root = root
        self.run_id = run_id
        self.flush_window_s = flush_window_s
        self.archive_window_s = archive_window_s
        self.file_suffix = file_suffix

    def expand(self, outputs):
        scored, alerts, quarantine = outputs["scored"], outputs["alerts"], outputs.get("quarantine")
        opened = outputs.get("opened")
        run_id, suffix = self.run_id, self.file_suffix

        def alert_table(alert, folder="alerts"):
            return f"{folder}/{safe_name(alert.entity_id)}/{alert.alert_id}.parquet", to_table([alert], ALERT_SCHEMA)

        streaming = self.flush_window_s is not None

        if streaming:
            keyed = quarantine | "KeyQuarantine" >> beam.Map(lambda q: (q.source, q))
            # Per source and flush window; a record that arrives after its window was written goes out with the
            # next one (never dropped as late: see seqwatch.pipelines.flush).
            releases = keyed | "FlushQuarantine" >> FlushPerWindow(self.flush_window_s)
            quarantine_tables = releases | "QuarantineTables" >> beam.Map(
                lambda r: (quarantine_file(r.key, r.start_us, suffix),
                           merged_quarantine(r.key, [quarantine_records_table(list(r.items))])))
            flushed_late = releases | "CountFlushedLate" >> beam.FlatMap(
                lambda r: [("flushed_late.quarantine", r.late)] if r.late else [])
        else:
            # packed where each part of the records is made (``quarantine_<part>`` outputs, from ``detect``), so
            # that no stage boundary carries them one by one: through the Flatten of the parts, a million records
            # had been pickled and read back one at a time (16 s of a 32 s run)
            parts = [pcoll for name, pcoll in sorted(outputs.items()) if name.startswith("quarantine_")] or [
                quarantine]
            packed = ([records | f"PackQuarantine{i}" >> beam.ParDo(_PackQuarantine())
                       for i, records in enumerate(parts)] | "AllPackedQuarantine" >> beam.Flatten())
            quarantine_written = (packed
                                  | "GroupQuarantine" >> beam.GroupByKey()
                                  | "WriteQuarantine" >> beam.ParDo(_WriteQuarantineFile(self.root)))

        pieces_of = (("Score", "scores", _score_piece), ("Forecast", "forecasts", _forecast_piece))
        score_flush_counts: list = []
        if streaming and self.score_window_files:
            # Per flush window, in a few files: a fleet's stream had written a file per entity and pane (1,000
            # entities at 1 s with panes of 64 steps: 16 files a second). Rows of a pane that reaches the sink after
            # its window was written go out with the next window (never dropped: see seqwatch.pipelines.flush).
            # One flush for both sinks, keyed by (sink, file): with a flush step per sink, the DirectRunner's
            # streaming mode (Beam 2.77) released one sink's rows and lost or misfiled the other's.
            files = self.score_window_files
            pieces = [scored | f"{name}WindowPieces" >> beam.FlatMap(_window_piece, sink, files, table_of, run_id)
                      for name, sink, table_of in pieces_of]
            releases = (pieces | "AllWindowPieces" >> beam.Flatten()
                        | "FlushScoreFiles" >> FlushPerWindow(self.flush_window_s))
            parts = {"ScoreAndForecast": releases | "ScoreWindowFiles" >> beam.Map(
                lambda r: (window_file(r.key[0], r.start_us, r.key[1], files, suffix), _shard_table(r.items)))}
            score_flush_counts = [releases | "CountScoresFlushedLate" >> beam.FlatMap(
                lambda r: [(f"flushed_late.{r.key[0]}_panes", r.late)] if r.late else [])]
        elif streaming:
            # a file per entity pane, written as the pane is scored
            def pane_table(sw, sink, table_of):
                table = table_of(sw, run_id)
                if table is not None:
                    yield _pane_file(sink, sw.windows.entity_id, sw.windows.pane, suffix), table

            parts = {name: scored | f"{name}Tables" >> beam.FlatMap(pane_table, sink, table_of)
                     for name, sink, table_of in pieces_of}
        else:
            # A batch run's scores and forecasts in a few files, not one per entity pane: a fleet's run (2,000
            # entities) had written 4,000 files of a few rows, and a long history one per 4,096 steps of each
            # entity; readers and object stores pay for every file.
            files = self.score_files
            parts = {}
            for name, sink, table_of in pieces_of:
                parts[name] = (scored
                               | f"{name}Pieces" >> beam.ParDo(_GatherShardPieces(files, table_of, run_id))
                               | f"Group{name}Files" >> beam.GroupByKey()
                               | f"{name}Files" >> beam.MapTuple(
                                   lambda shard, pieces, sink=sink: (shard_file(sink, shard, files),
                                                                     _shard_table(pieces))))
        if streaming:  # a file per incident, written as it settles (its id names it: a replay overwrites it)
            parts["Alert"] = alerts | "AlertTables" >> beam.Map(alert_table)
            parts["Quarantine"] = quarantine_tables
        else:
            # A batch run's alerts in one file, rows by entity and start: a fleet's night of incidents had been a
            # file of one row each, and readers and object stores pay for every file (the commit on a store
            # moves them one by one).
            parts["Alert"] = (alerts
                              | "AlertsToGlobal" >> beam.WindowInto(beam.window.GlobalWindows())
                              | "AllAlerts" >> beam.combiners.ToList()
                              | "AlertFile" >> beam.FlatMap(_alerts_file))
        if opened is not None:
            parts["Opened"] = opened | "OpenedTables" >> beam.Map(alert_table, "alerts_open")
        flush_counts = [flushed_late, *score_flush_counts] if streaming else []
        if self.archive_window_s is not None:
            # Per entity and archive window; readings that arrive after their window was written go into the next
            # file of their entity (never dropped: see seqwatch.pipelines.flush).
            archived = (outputs["readings"]
                        | "ReadingsByEntity" >> beam.FlatMap(archive_pieces, int(round(self.archive_window_s * 1e6)))
                        | "FlushReadings" >> FlushPerWindow(self.archive_window_s))
            parts["Readings"] = archived | "ReadingTables" >> beam.FlatMap(archive_tables, suffix)
            flush_counts.append(archived | "CountArchived" >> beam.FlatMap(
                lambda r: [("readings_archived", sum(len(piece) for pieces in r.items for _, piece in pieces))]
                + ([("flushed_late.reading_batches", r.late)] if r.late else [])))
        tables = ([pcoll | f"{name}TablesToGlobal" >> beam.WindowInto(beam.window.GlobalWindows())
                   for name, pcoll in parts.items()]
                  | "AllTables" >> beam.Flatten())
        written = tables | "WriteParquet" >> beam.ParDo(_WriteTable(self.root, announce=streaming))
        if not streaming:
            return (written, quarantine_written) | "AllWriteCounts" >> beam.Flatten()
        return (written, *flush_counts) | "AllWriteCounts" >> beam.Flatten()  # all in the global window
