"""A CSV file's data lines in chunks of bytes, the clean lines split into fields by Arrow.

seqwatch's line reader (``sources.FileReader``) handles every oddity of a text file one line at a time: mixed
encodings, quoting, blank and separator-only lines, rows with the wrong number of fields, binary junk, lone
``\\r`` line ends. That costs about 4-5 µs per line in Python. Most lines of most files have none of that, and
for them this module does the same work in bulk:

- ``data_start`` finds where the data lines begin (after blank lines, an Excel ``sep=`` line and the header),
  with the line reader's rules and line numbering;
- ``byte_chunks`` cuts the rest into chunks of ``chunk_lines`` lines (at ``\\n``);
- ``split_chunk`` sorts a chunk's lines into *clean* ones, split into fields by Arrow's CSV reader, and *odd*
  ones, which the line reader takes one by one as before (a chunk of plain ASCII without quote or control
  bytes, the usual one, by Arrow alone: it reports the lines with another number of fields; any other chunk
  by a numpy pass over its bytes). A clean line is valid UTF-8, holds no quote
  character and no control byte but tab, has exactly the header's number of fields and at least one ASCII
  character that is neither blank nor a separator. The line reader would split such a line with ``str.split``
  and skip none of them, so both give the same fields, raw text and line number. A chunk with a lone ``\\r``
  line end goes line by line as a whole (the line reader counts it as a line end). A record whose quoted field
  holds line breaks (``csv_records``) is one odd line, its lines joined.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_NEWLINES = re.compile(rb"\r\n|\r|\n")
# Every byte but the quote and the control bytes other than tab, \n and \r: what is left of a chunk after
# deleting these is its quote and control bytes (bytes.translate runs at memory speed, a regex 7x slower).
_PLAIN_BYTES = bytes(b for b in range(256) if b != ord('"') and (b >= 32 or b in (9, 10, 13)))


def data_start(head: bytes, is_sep_hint, decode) -> tuple[int, int] | None:
    """``(byte offset, line number)`` of the first line after the header in ``head`` (a file's first bytes,
    ``auto`` encoding), skipping blank lines and an Excel ``sep=`` line before the header as the line reader
    does; None when ``head`` does not reach the end of the header line."""
    seen_hint = False
    number = 0
    position = 0
    for match in _NEWLINES.finditer(head):
        if match.end() == len(head) and match.group() == b"\r":
            return None  # maybe the first half of "\r\n"
        number += 1
        line = decode(head[position:match.start()])
        position = match.end()
        if not line.strip():
            continue
        if not seen_hint and is_sep_hint(line):
            seen_hint = True
            continue
        return position, number + 1
    return None


def byte_chunks(stream, start: bytes, chunk_lines: int, block: int = 1 << 20):
    """Chunks of ``chunk_lines`` lines (the last one shorter) of ``start`` followed by the rest of ``stream``;
    each ends right after a ``\\n`` except the file's last."""
    # Each byte is searched for newlines once, when it is read; blocks are joined once per chunk.
    blocks = [bytes(start)]
    size = len(blocks[0])
    newlines = np.flatnonzero(np.frombuffer(blocks[0], dtype=np.uint8) == 10)
    eof = False
    while True:
        if len(newlines) >= chunk_lines:
            buffer = b"".join(blocks)
            cut = int(newlines[chunk_lines - 1]) + 1
            yield buffer[:cut]
            blocks, size = [buffer[cut:]], len(buffer) - cut
            newlines = newlines[chunk_lines:] - cut
            continue
        if eof:
            if size:
                yield b"".join(blocks)
            return
        data = stream.read(block)
        if data:
            newlines = np.concatenate((newlines, np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + size))
            blocks.append(data)
            size += len(data)
        else:
            eof = True


def line_bounds(chunk: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, line end not included) of each ``\\n``-terminated line of ``chunk``."""
    data = np.frombuffer(chunk, dtype=np.uint8)
    newlines = np.flatnonzero(data == 10)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(data)]))
    if starts[-1] == len(data):  # the chunk ends with a newline: no partial last line
        starts, ends = starts[:-1], ends[:-1]
    crlf = (ends > starts) & (data[np.maximum(ends - 1, 0)] == 13)
    return starts, ends - crlf


# What each byte tells about its line, as bits of one lookup table per separator.
_SEPARATOR, _QUOTE_OR_CONTROL, _TEXT, _NON_ASCII = 1, 2, 4, 8


def _byte_flags(sep: str) -> np.ndarray:
    table = np.zeros(256, dtype=np.uint8)
    table[ord(sep)] |= _SEPARATOR
    table[[b for b in range(32) if b not in (9, 10, 13)] + [ord('"')]] |= _QUOTE_OR_CONTROL
    # text: what can make a line hold a reading (not blank, not a line end, not the separator, ASCII)
    text = np.ones(256, dtype=bool)
    text[[9, 10, 13, 32, ord(sep)]] = False
    text[128:] = False
    table[text] |= _TEXT
    table[128:] |= _NON_ASCII
    return table


@dataclass
class SplitChunk:
    """A chunk cut into its clean lines, split into fields by Arrow, and its odd lines, left to the line reader.
    Line indices count the chunk's ``\\n``-terminated lines from 0."""

    columns: list  # per header field, the clean lines' fields as a pandas Series of Arrow-backed strings
    #                (empty lists when none): parse_rows reads them in bulk without a Python str per field
    clean: bytes  # the clean lines, concatenated
    starts: np.ndarray  # byte bounds of each clean line in ``clean`` (line end excluded), for its raw text
    ends: np.ndarray
    clean_index: np.ndarray  # chunk line index of each clean line
    odd: list  # bytes of each odd line, line end included (a record spanning lines: all of them, joined)
    odd_index: np.ndarray  # chunk line index of each odd line (a record spanning lines: its first)
    lines: int  # lines in the chunk


def has_lone_cr(chunk: bytes) -> bool:
    """Whether a ``\\r`` not followed by ``\\n`` ends a line of ``chunk``."""
    return b"\r" in chunk and chunk.count(b"\r") != chunk.count(b"\r\n")


class LoneCrAsLf:
    """A stream whose lines end in a lone ``\r`` (classic Mac OS, Excel's "CSV (Macintosh)"), read with each such
    ``\r`` as ``\n`` and a ``\r\n`` left as it is, so that ``byte_chunks`` finds its line ends: it looks for
    ``\n`` only, and held the whole file as one chunk (a 58 MB file: 10.6 s and 1.7 GB, against 0.9 s and 0.3 GB
    with ``\n``). Line numbers stay as they are, since a lone ``\r`` ends a line for the line reader too.
    ``feed`` translates bytes read elsewhere (the first block), ``read`` reads on from ``stream``."""

    _LONE_CR = re.compile(rb"\r(?!\n)")

    def __init__(self, stream):
        self.stream = stream
        self._held = b""  # a last "\r", until the next byte says whether a "\n" follows it

    def feed(self, data: bytes) -> bytes:
        data, self._held = self._held + data, b""
        if data.endswith(b"\r"):
            data, self._held = data[:-1], b"\r"
        return self._LONE_CR.sub(b"\n", data)

    @staticmethod
    def restored(piece: bytes) -> bytes:
        """``piece`` (a line, or a record of lines whose quoted field holds line breaks) with the line ends inside
        it as they were in the file (lone CRs); its own line end is left out of it by its reader."""
        body = piece[:-1] if piece.endswith(b"\n") else piece
        if b"\n" not in body:
            return piece
        return LoneCrAsLf._INNER_LF.sub(b"\r", body) + piece[len(body):]

    _INNER_LF = re.compile(rb"(?<!\r)\n")

    def read(self, size: int = -1) -> bytes:
        while True:
            data = self.stream.read(size)
            if not data:
                held, self._held = self._held, b""
                return b"\n" if held else b""
            out = self.feed(data)
            if out:
                return out


class ChunkLines:
    """The ``\\n``-terminated lines of a chunk as a sequence of bytes (line ends left out), cut only when asked
    for, and the indices of those holding a quote (``quoted``)."""

    def __init__(self, chunk: bytes):
        self.chunk = chunk
        self.starts, self.ends = line_bounds(chunk)
        self.quoted = np.zeros(0, dtype=np.int64)
        if self.starts.size:
            data = np.frombuffer(chunk, dtype=np.uint8)
            self.quoted = np.flatnonzero(np.add.reduceat(data == ord('"'), self.starts, dtype=np.int64))

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        return self.chunk[self.starts[i]:self.ends[i]]

    def texts(self, indices) -> list:
        """The lines at ``indices``."""
        chunk, starts, ends = self.chunk, self.starts.tolist(), self.ends.tolist()
        return [chunk[starts[i]:ends[i]] for i in indices]


def split_chunk(chunk: bytes, sep: str, n_fields: int, spans=()) -> SplitChunk | None:
    """The chunk's clean lines split by Arrow and its odd lines apart (see the module docstring); None when the
    whole chunk must go line by line: an empty chunk, a separator Arrow cannot take, or a lone ``\\r`` line
    end. ``spans``: the records that span several lines (``csv_records.record_spans``), each one odd line."""
    if not chunk or len(sep) != 1 or ord(sep) >= 128 or sep in '"\r\n':
        return None
    if has_lone_cr(chunk):
        return None
    if not spans and chunk.isascii() and not chunk.translate(None, _PLAIN_BYTES):
        split = _split_plain_ascii(chunk, sep, n_fields)
        if split is not None:
            return split
    return _split_any(chunk, sep, n_fields, spans)


def _split_any(chunk: bytes, sep: str, n_fields: int, spans=()) -> SplitChunk | None:
    """``split_chunk`` for any chunk (non-ASCII bytes, quotes, control bytes): each line's bytes classified in
    numpy, the clean lines handed to Arrow."""
    data = np.frombuffer(chunk, dtype=np.uint8)
    starts, ends = line_bounds(chunk)
    # Per line, from its first byte up to the next line's (its line end included, which sets no flag): every
    # line's span holds at least its line end or a byte, so reduceat sees no empty span.
    flags = _byte_flags(sep)[data]
    seen = np.bitwise_or.reduceat(flags, starts)
    separators = np.add.reduceat(flags & _SEPARATOR, starts, dtype=np.int64)
    odd = (separators != n_fields - 1) | (seen & _TEXT == 0) | (seen & _QUOTE_OR_CONTROL != 0)
    for i in np.flatnonzero(~odd & (seen & _NON_ASCII != 0)):
        try:  # the few lines with non-ASCII bytes: Arrow takes only valid UTF-8
            chunk[starts[i]:ends[i]].decode("utf-8")
        except UnicodeDecodeError:
            odd[i] = True
    # each line's bytes with its line end: up to the next line's start
    full_ends = np.concatenate((starts[1:], [len(data)]))
    if spans:  # a record spanning lines: one odd line, from its first line's start to its last line's end
        inner = np.zeros(len(starts), dtype=bool)  # the lines after a multi-line record's first
        record_ends = full_ends.copy()
        for first, count in spans:
            odd[first:first + count] = True
            inner[first + 1:first + count] = True
            record_ends[first] = full_ends[first + count - 1]
        odd_index = np.flatnonzero(odd)
        odd_records = odd_index[~inner[odd_index]]
        odd_lines = [chunk[a:b] for a, b in zip(starts[odd_records].tolist(), record_ends[odd_records].tolist())]
    else:
        odd_index = odd_records = np.flatnonzero(odd)
        odd_lines = [chunk[a:b] for a, b in zip(starts[odd_index].tolist(), full_ends[odd_index].tolist())]
    clean_index = np.flatnonzero(~odd)
    if odd_index.size:
        keep = np.repeat(~odd, full_ends - starts)
        clean = data[keep].tobytes()
    else:
        clean = chunk
    columns: list = [[] for _ in range(n_fields)]
    clean_starts = clean_ends = np.zeros(0, dtype=np.int64)
    if clean_index.size:
        columns = _arrow_fields(clean, sep, n_fields)
        if columns is None or len(columns[0]) != clean_index.size:
            return None
        clean_starts, clean_ends = line_bounds(clean) if odd_index.size else (starts, ends)
    return SplitChunk(columns, clean, clean_starts, clean_ends, clean_index, odd_lines, odd_records, len(starts))


def _split_plain_ascii(chunk: bytes, sep: str, n_fields: int) -> SplitChunk | None:
    """``split_chunk`` for a chunk of ASCII text without quote or control bytes (most chunks), without a pass
    over its bytes in numpy: Arrow splits every line and reports those with another number of fields, and a
    line whose fields are all blank (spaces and tabs) holds no text. The same lines are clean as on the general
    path. None when Arrow does not say which lines it left out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    starts, ends = line_bounds(chunk)
    wrong_count: list = []

    def leave_out(row) -> str:
        wrong_count.append(row.number)
        return "skip"

    table = _arrow_table(chunk, sep, n_fields, leave_out)
    if table is None or any(number is None for number in wrong_count):
        return None
    odd = np.zeros(len(starts), dtype=bool)
    odd[np.asarray(wrong_count, dtype=np.int64) - 1] = True  # Arrow numbers the chunk's lines from 1
    parsed = np.flatnonzero(~odd)
    if table.num_rows != parsed.size:
        return None
    # Blank lines: the first field blank, then the others (a regex over one column, not all of them).
    blank = pc.match_substring_regex(table.column(0), r"^[ \t]*$").to_numpy(zero_copy_only=False)
    if blank.any() and table.num_columns > 1:
        # the other fields of those rows, a column at a time (a cell at a time in Python had taken 11 s per
        # million blank lines: found by the bug hunt of pathological inputs)
        rows = np.flatnonzero(blank)
        candidates = table.take(pa.array(rows))
        for c in range(1, table.num_columns):
            blank[rows] &= pc.fill_null(pc.match_substring_regex(candidates.column(c), r"^[ \t]*$"),
                                        True).to_numpy(zero_copy_only=False)
    if blank.any():
        odd[parsed[blank]] = True
        table = table.filter(~blank)
    odd_index, clean_index = np.flatnonzero(odd), np.flatnonzero(~odd)
    full_ends = np.concatenate((starts[1:], [len(chunk)]))
    odd_lines = [chunk[starts[i]:full_ends[i]] for i in odd_index]
    columns = _string_series(table) if clean_index.size else [[] for _ in range(n_fields)]
    # Raw text of the clean lines: their bounds in the chunk itself.
    return SplitChunk(columns, chunk, starts[clean_index], ends[clean_index], clean_index, odd_lines, odd_index,
                      len(starts))


def _arrow_table(data: bytes, sep: str, n_fields: int, invalid_row_handler=None):
    """Every line of ``data`` split at ``sep`` into ``n_fields`` string columns (no quoting, empty lines kept);
    None when Arrow refuses the text. Without a handler a line with another number of fields refuses it."""
    import pyarrow as pa
    from pyarrow import csv as pa_csv

    names = [f"f{i}" for i in range(n_fields)]
    try:
        return pa_csv.read_csv(
            pa.py_buffer(data),
            read_options=pa_csv.ReadOptions(column_names=names, use_threads=False,
                                            block_size=max(len(data), 1 << 16)),
            parse_options=pa_csv.ParseOptions(delimiter=sep, quote_char=False, double_quote=False,
                                              escape_char=False, newlines_in_values=False, ignore_empty_lines=False,
                                              invalid_row_handler=invalid_row_handler),
            convert_options=pa_csv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                  strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowInvalid, ValueError):
        return None


def _string_series(table) -> list:
    import pandas as pd

    return [pd.Series(pd.arrays.ArrowStringArray(table.column(i)), copy=False) for i in range(table.num_columns)]


def _arrow_fields(clean: bytes, sep: str, n_fields: int) -> list | None:
    table = _arrow_table(clean, sep, n_fields)
    return None if table is None else _string_series(table)
