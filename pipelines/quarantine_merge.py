"""A source's quarantined records in the order of its file, merged from the tables they were packed in.

A batch run packs its quarantined records into tables per source and bundle (``sinks.quarantine_records_table``)
and groups them per source; the source's quarantine file holds them in the order of (line, column, stage,
reason_code, reason). A stream merges each flush window's records at once (``merged_quarantine``). A batch run
merges its parts a chunk of lines at a time (``chunks_in_line_order``), so that what it holds does not grow with
the source: each part crosses the grouping sorted by line, as pieces of ``PIECE_ROWS`` records, each piece its
own zstd-compressed Arrow IPC stream (``SortedQuarantinePart``), and the merge decodes the pieces in the order of
their first line, giving out the records of every line no piece still to be decoded holds. The whole source
merged at once had held it four to six times over (the parts, their concatenation, the text of each record as a
Python string, the sorted copy, and that copy again on its way to the writer): 0.59 GB for two million ``n/a``
readings, beside 0.79 GB for the run of the same readings good.
"""
from __future__ import annotations

import heapq
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

PIECE_ROWS = 16_384  # records per piece of a sorted part: the unit the merge decodes
CHUNK_ROWS = 262_144  # about this many records are merged and written at a time (more where one line holds more)


def compacted_dictionaries(part: pa.Table) -> pa.Table:
    """``part`` with each dictionary column in one chunk whose dictionary holds the values its rows use, each
    once: Parquet's writer writes such a dictionary as the row group's dictionary page (a value twice in it, or a
    second dictionary in one row group, would make it decode and encode the column row by row), and a piece cut
    from a part carries only its own texts."""
    part = part.unify_dictionaries().combine_chunks()
    for i, field in enumerate(part.schema):
        if not pa.types.is_dictionary(field.type) or not part.num_rows:
            continue
        column = part.column(i).chunk(0)
        used, codes = np.unique(column.indices.to_numpy(zero_copy_only=False), return_inverse=True)
        values = pc.dictionary_encode(column.dictionary.take(pa.array(used)))
        array = pa.DictionaryArray.from_arrays(values.indices.take(pa.array(codes.reshape(-1))), values.dictionary)
        part = part.set_column(i, field, array)
    return part


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as out:
        out.write_table(table)
    return sink.getvalue().to_pybytes()


def _table(ipc: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(ipc)).read_all()


class SortedQuarantinePart:
    """A packed quarantine table on its way to its source's merge: its records sorted by line (stably) and cut
    into pieces of at most ``PIECE_ROWS``, each with its own dictionaries, kept as ``(first line, zstd Arrow IPC)``.
    Compressed, the records of a sensor's ``n/a`` lines take about a tenth of their table's bytes (2 million: 17
    MB against 178), and the local runner holds a few copies of what crosses the grouping."""

    __slots__ = ("pieces",)

    def __init__(self, pieces: list):
        self.pieces = pieces  # [(first line, ipc bytes)], in line order

    @classmethod
    def of(cls, table: pa.Table, piece_rows: int = PIECE_ROWS) -> "SortedQuarantinePart":
        lines = table.column("line").to_numpy()
        if len(lines) and np.any(lines[1:] < lines[:-1]):
            table = table.take(pa.array(np.argsort(lines, kind="stable")))
            lines = table.column("line").to_numpy()
        return cls([(int(lines[start]), _ipc(compacted_dictionaries(table.slice(start, piece_rows))))
                    for start in range(0, table.num_rows, piece_rows)])

    def table(self) -> pa.Table:
        """The part's records, sorted by line (its pieces decoded and put together)."""
        return pa.concat_tables([_table(ipc) for _, ipc in self.pieces]).unify_dictionaries().combine_chunks()

    def __reduce__(self):
        return SortedQuarantinePart, (self.pieces,)


def chunks_in_line_order(parts: Iterable[SortedQuarantinePart], chunk_rows: int = CHUNK_ROWS
                         ) -> Iterator[list[pa.Table]]:
    """The records of ``parts`` in chunks of whole lines, the chunks in line order, each a list of tables (pieces
    and slices of pieces) of about ``chunk_rows`` records in all: every record of a line is in the chunk of that
    line. Pieces are decoded in the order of their first line, and a chunk is given out as soon as about
    ``chunk_rows`` records are decoded: the records of the lines before the first line of every piece still to be
    decoded (a piece's lines are sorted, so none of those can come later)."""
    pieces = [part.pieces for part in parts if part.pieces]
    pending = [(each[0][0], k, 0) for k, each in enumerate(pieces)]
    heapq.heapify(pending)
    held: list[pa.Table] = []
    held_rows = 0

    def decode_next() -> None:
        nonlocal held_rows
        _, k, j = heapq.heappop(pending)
        table = _table(pieces[k][j][1])
        held.append(table)
        held_rows += table.num_rows
        if j + 1 < len(pieces[k]):
            heapq.heappush(pending, (pieces[k][j + 1][0], k, j + 1))

    while pending or held:
        while pending and held_rows < chunk_rows:
            decode_next()
        if not pending:
            yield held
            return
        boundary = pending[0][0]  # no piece still to be decoded holds a line before it
        ready, kept = [], []
        for table in held:
            cut = int(np.searchsorted(table.column("line").to_numpy(), boundary, side="left"))
            if cut:
                ready.append(table.slice(0, cut))
            if cut < table.num_rows:
                kept.append(table.slice(cut))
        if ready:
            held, held_rows = kept, sum(t.num_rows for t in kept)
            yield ready
        else:  # every record held is of the boundary's line, which goes on in a piece still to be decoded
            decode_next()


def concatenated(tables: list) -> pa.Table:
    """Quarantine tables as one, each column one chunk with one dictionary. Where the records' texts are mostly
    distinct (a sensor's lines of "n/a": a text per record), ``raw``'s dictionaries are put one after the other
    rather than unified: unifying hashed every text (3.8 s of a 2-million-record merge), and a text that two parts
    hold twice is merged by the writer's dictionary per row group (``compacted_dictionaries``). Texts that many
    records share (a wide row's, once per part) are unified, as are the other columns' few values (the order of
    the records goes by those values, so equal ones must have one code)."""
    table = pa.concat_tables(tables)
    chunks = table.column("raw").chunks
    sizes = [len(chunk.dictionary) for chunk in chunks]
    text_bytes = sum(chunk.dictionary.nbytes for chunk in chunks)
    if len(chunks) < 2 or sum(sizes) < table.num_rows // 2 or text_bytes > 2**30:
        return table.unify_dictionaries().combine_chunks()
    at = table.schema.get_field_index("raw")
    offsets = np.cumsum([0] + sizes[:-1])
    indices = np.concatenate([chunk.indices.to_numpy(zero_copy_only=False) + offset
                              for chunk, offset in zip(chunks, offsets)]).astype(np.int32)
    raw = pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()),
                                         pa.concat_arrays([chunk.dictionary for chunk in chunks]))
    rest = table.remove_column(at).unify_dictionaries().combine_chunks()
    return rest.add_column(at, table.schema.field(at), raw)


def merged_quarantine(source: str, tables, raw_lines: Callable[[set], dict] | None = None) -> pa.Table:
    """Quarantine tables of one source (a stream's records of one flush window, or a chunk of a batch run's
    lines) as one, in the order of (line, column, stage, reason_code, reason); records that lack their raw text
    (quarantined after parsing) get the untouched line from ``source``, found by ``raw_lines(wanted lines)``
    (default: ``RawLines(source).find``)."""
    table = concatenated(list(tables))
    if not table.num_rows:
        return table
    raw = table.column("raw").chunk(0)
    lines = table.column("line").to_numpy()
    empty = np.flatnonzero(pc.equal(pc.binary_length(raw.dictionary), 0).to_numpy(zero_copy_only=False))
    lacking = np.isin(raw.indices.to_numpy(zero_copy_only=False), empty) & (lines > 0)
    find = raw_lines or RawLines(source).find
    found = find(set(lines[lacking].tolist())) if lacking.any() else {}
    if found:
        codes = raw.indices.to_numpy(zero_copy_only=False).astype(np.int32)
        code_of = {line: len(raw.dictionary) + k for k, line in enumerate(found)}
        rows = np.flatnonzero(lacking)
        filled = np.array([code_of.get(line, -1) for line in lines[rows].tolist()], dtype=np.int64)
        codes[rows[filled >= 0]] = filled[filled >= 0]
        texts = pa.concat_arrays([raw.dictionary, pa.array(list(found.values()), pa.string())])
        raw = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), texts)
        table = table.set_column(table.schema.get_field_index("raw"), pa.field("raw", raw.type, nullable=False), raw)

    def rank(name):  # a text column's order, as Python orders its strings (equal texts: one rank)
        column = table.column(name).chunk(0)
        _, ranks = np.unique(np.asarray(column.dictionary.to_pylist(), dtype=object), return_inverse=True)
        return ranks.reshape(-1)[column.indices.to_numpy(zero_copy_only=False)]

    keys = (rank("reason"), rank("reason_code"), rank("stage"), rank("column"), lines)
    order = np.lexsort(keys)
    ties = np.ones(len(order) - 1, dtype=bool)
    for key in keys:
        ranked = key[order]
        ties &= ranked[1:] == ranked[:-1]
    if ties.any():  # records alike but for their text or count: by those too, so that their order does not
        # depend on the order the parts came in (a batch run's come from a grouping; its chunks decode pieces
        # in the order of their first lines)
        order = np.lexsort((table.column("records").to_numpy(), rank("raw"), *keys))
    return table.take(pa.array(order))


class RawLines:
    """The untouched text of lines of a source file (rows of a Parquet file), read forward: each ``find`` reads on
    from where the last stopped, so a batch run's merge, which asks for the lines of one chunk after another in
    line order, reads the file once. A line before the last one read is read again from the start."""

    def __init__(self, source: str):
        self.source = source
        self._lines = None  # the open file's numbered lines (text) or rows (Parquet), read forward
        self._at = 0  # the number of the last line read
        self._exists: bool | None = None

    def find(self, wanted: set) -> dict[int, str]:
        """``{line: untouched text}`` of the ``wanted`` lines; none for a message source, or a source that is no
        longer there."""
        from seqwatch.pipelines.validate import MESSAGE_SOURCE_PREFIXES

        if not wanted or self.source.startswith(MESSAGE_SOURCE_PREFIXES):
            return {}
        if self._exists is None:  # a message source is never a file, even where one of its name lies here
            self._exists = FileSystems.exists(self.source)
        if not self._exists:
            return {}
        if self._lines is None or min(wanted) <= self._at:
            self._lines, self._at = self._blocks(), 0
        found: dict[int, str] = {}
        last = max(wanted)
        for first, block in self._lines:  # lines first, first + 1, ... of the source
            self._at = first + len(block) - 1
            for number in sorted(n for n in wanted if first <= n <= self._at):
                found[number] = block[number - first]
            if self._at >= last:
                break
        return found

    def _blocks(self) -> Iterator[tuple[int, list[str] | _Rows]]:
        """``(number of the first line, its lines)`` through the source: a text file a line at a time, a Parquet
        file a record batch at a time (a row's text made only where it is wanted)."""
        from seqwatch.pipelines.sources import is_parquet, open_text

        if is_parquet(self.source):
            with FileSystems.open(self.source) as f:
                first = 1
                for batch in pq.ParquetFile(f).iter_batches(batch_size=8192):
                    yield first, _Rows(batch)
                    first += batch.num_rows
            return
        with open_text(self.source) as f:
            for number, text in enumerate(f, start=1):
                yield number, [text.rstrip("\r\n")]


class _Rows:
    """A record batch's rows as raw texts, each made when it is asked for (``parsing.raw_json``)."""

    def __init__(self, batch: pa.RecordBatch):
        self.batch = batch

    def __len__(self) -> int:
        return self.batch.num_rows

    def __getitem__(self, k: int) -> str:
        from seqwatch.pipelines.parsing import raw_json

        return raw_json(self.batch.slice(k, 1).to_pylist()[0])
