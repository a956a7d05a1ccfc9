"""Reading input files (CSV or Parquet, local or any Beam filesystem) into batches of readings.

``ReadInputFiles`` is the batch source: one element per chunk of up to ``chunk_rows`` rows, so that Beam's
per-element cost is paid per chunk, not per reading. Rows that fail to parse leave on the ``quarantine``
output; every chunk also reports how many readings it carried on the ``counts`` output, which is where the
run manifest's ``records_in`` comes from.
"""
from __future__ import annotations

import codecs
import csv
import functools
import glob
import itertools
import os
import re
from pathlib import PurePath
from typing import Iterator

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.io.filesystems import FileSystems

from seqwatch.pipelines.csv_blocks import ChunkLines, LoneCrAsLf, byte_chunks, data_start, has_lone_cr, split_chunk
from seqwatch.pipelines.csv_records import join_records, record_spans
from seqwatch.pipelines.decompression import BOUNDED, open_input
from seqwatch.pipelines.long_lines import MAX_LINE_BYTES, LineCutter, LongLine
from seqwatch.pipelines.parsing import (FileLayout, SchemaDriftError, csv_fields, parse_rows, raw_json,
                                        sniff_separator, split_lines)
from seqwatch.pipelines.sinks import QuarantinePacker
from seqwatch.pipelines.stage_metrics import StageTimer
from seqwatch.schemas.elements import Quarantined, ReadingBatch
from seqwatch.schemas.mapping import InputMapping

QUARANTINE = "quarantine"
COUNTS = "counts"
DEFAULT_CHUNK_ROWS = 100_000


def is_parquet(path: str) -> bool:
    return path.lower().endswith((".parquet", ".pq"))


def detect_encoding(head: bytes) -> str:
    """From a file's first bytes: a BOM decides (UTF-8, UTF-16, UTF-32); text whose every second byte is NUL is
    UTF-16 without a BOM; otherwise ``"auto"``: each line is decoded as UTF-8, or as cp1252 where it is not
    valid UTF-8 (files written by older Windows tools, or files concatenated from both)."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    sample = head[:4096]
    if len(sample) >= 8:
        half = len(sample) // 2
        even_nul, odd_nul = sample[0::2].count(0), sample[1::2].count(0)
        if odd_nul > 0.9 * half and even_nul < 0.1 * half:
            return "utf-16-le"
        if even_nul > 0.9 * half and odd_nul < 0.1 * half:
            return "utf-16-be"
    return "auto"


def _utf8_head(data: bytes) -> str:
    """The first bytes of a line cut from UTF-16 or UTF-32 text (kept as UTF-8), a character they end inside of
    left out."""
    return data.decode("utf-8", "ignore")


def decode_line(data: bytes) -> str:
    """One line's bytes as text: UTF-8 if valid, else cp1252, else Latin-1 (which decodes any byte)."""
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1")


_NEWLINE_BYTES = re.compile(rb"\r\n|\r|\n")
_NEWLINE_TEXT = re.compile(r"\r\n|\r|\n")
_BLOCK = 1 << 20


class InputChangedError(OSError):
    """An input that planning read and the run's read cannot: cut, replaced, removed or made unreadable since. The
    batch runner says so in one sentence (``batch._read_failure``)."""


class DamagedFileError(SchemaDriftError):
    """A compressed input of which nothing can be read: not in the format its name gives, or damaged or cut
    short before its first line."""


def _is_decompression_error(exc: BaseException) -> bool:
    """An error of a decompressor (zlib's, lzma's, zstd's, bz2's plain ``OSError``, a stream's ``EOFError``), not
    of the file system under it: a reset connection or a timeout (``OSError`` subclasses) must fail the bundle, so
    that the runner retries it, not cut the file."""
    import lzma
    import zlib

    kinds = [zlib.error, EOFError, lzma.LZMAError]
    try:
        import zstandard
        kinds.append(zstandard.ZstdError)
    except ImportError:
        pass
    return isinstance(exc, tuple(kinds)) or type(exc) is OSError


class CheckedStream:
    """A file opened by Beam's ``FileSystems.open`` that notices damage and cuts lines too long to be a row.

    Beam's ``CompressedFile`` reads a truncated gzip or bzip2 file up to where it stops without a word (its
    cut-off last line read as a reading: a value of 40.9185 cut to 4 raised a critical alert), and lets a
    decompressor's error out as zlib's or bz2's own. Here the file ends where the damage begins: ``read`` returns
    ``b""`` there, and ``damage`` says what happened (None for a sound file), so that a reader keeps every whole
    line before it and can hold back the line the damage cut.

    A compressed file is decompressed at most a block at a time (``decompression``), so that a file that expands
    without end (a gzip bomb) is read in bounded memory.

    A line longer than ``MAX_LINE_BYTES`` reaches the reader as a marker line (``long_lines``; ``long_line``
    gives the line a marker stands for), except in UTF-16 and UTF-32 text, whose line ends are not single bytes
    (``TextLines`` cuts that text once decoded).
    ``read`` then gives out whole lines only (all of them up to the last line end read), but for the file's last."""

    def __init__(self, path: str):
        self.path = path
        self.damage: str | None = None
        self._stream = open_input(path)
        self.compressed = isinstance(self._stream, BOUNDED)  # else the file as stored
        self._kind = str(self._stream.kind) if self.compressed else ""
        self._read_any = False
        self._cutter: LineCutter | None = None  # made at the first read, for text of single-byte line ends
        self._started = False

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        while True:
            data = self._read_stored(size)
            if not self._started:
                self._started = True
                if detect_encoding(data[:4096]) in ("auto", "utf-8-sig"):
                    self._cutter = LineCutter()
            if self._cutter is None:
                return data
            if not data:
                return self._cutter.finish()
            data = self._cutter.feed(data)
            if data:  # else all of it is held back (the line goes on) or dropped (it is too long): read on
                return data

    def long_line(self, text) -> LongLine | None:
        """The line too long to be a row that ``text`` (a line as read, or a record of lines joined) stands for or
        holds; None for any other text."""
        return None if self._cutter is None else self._cutter.long_line(text)

    def restored(self, text: str) -> str:
        """``text`` (a line or record as read) with each line too long to be a row as its first bytes."""
        return text if self._cutter is None else self._cutter.restored(text, decode_line)

    def _read_stored(self, size: int) -> bytes:
        """The file's next bytes as Beam gives them (decompressed), or ``b""`` from where damage begins."""
        if self.damage:
            return b""
        try:
            data = self._stream.read(size)
        except Exception as exc:  # noqa: BLE001 - told apart just below
            if not self.compressed or not _is_decompression_error(exc):
                raise
            self.damage = (f"{self.path} cannot be read as a {self._kind} file past this point ({exc}): is it "
                           f"damaged, or not compressed as its name says?")
            return b""
        if data:
            self._read_any = True
        elif size != 0 and self.compressed:
            if not self._last_stream_whole() and self._has_bytes():
                self.damage = (f"{self.path} ends before its {self._kind} stream does: the file was cut short (an "
                               f"interrupted download or copy?)")
        return data

    def _last_stream_whole(self) -> bool:
        """Whether the compressed stream (the last member, of a file of several) read to its end was whole."""
        return self._stream.finished

    def _has_bytes(self) -> bool:
        """Whether the compressed file holds any byte (an empty ``.gz`` is an empty file, not a damaged one)."""
        if self._read_any:
            return True
        try:
            return FileSystems.match([self.path])[0].metadata_list[0].size_in_bytes > 0
        except (OSError, IndexError, ValueError):
            return True

    def close(self):
        self._stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TextLines:
    """A file's lines as text, line endings kept, numbered exactly as ``enumerate(f, start=1)`` numbers them
    (``\\r\\n``, ``\\n`` and a lone ``\\r`` each end a line, as in Python's ``newline=""`` mode).

    A context manager and an iterator; the encoding is detected from the first bytes (``detect_encoding``)."""

    def __init__(self, path: str):
        self.path = path
        self._stream = CheckedStream(path)
        self._head = self._stream.read(_BLOCK)
        self.encoding = detect_encoding(self._head)
        self._text_cutter: LineCutter | None = None  # UTF-16 and UTF-32 text's (``_cut_as_utf8``)
        self.cut_line: str | None = None  # a damaged file's last, unterminated line, held back (see ``damage``)
        self.lines_read = 0  # a compressed file's lines given out so far (the next one is line lines_read + 1)

    @property
    def damage(self) -> str | None:
        """What ended a damaged compressed file early (``CheckedStream``), once it has been read to its end."""
        return self._stream.damage

    def long_line(self, text) -> LongLine | None:
        """The line too long to be a row that ``text`` (a line as read) stands for (``CheckedStream``; in UTF-16
        and UTF-32 text, ``_cut_as_utf8``)."""
        if self._text_cutter is not None:
            return self._text_cutter.long_line(text)
        return self._stream.long_line(text)

    def restored(self, text: str) -> str:
        """``text`` with each line too long to be a row as its first bytes (``CheckedStream``; in UTF-16 and
        UTF-32 text, ``_cut_as_utf8``)."""
        if self._text_cutter is not None:
            return self._text_cutter.restored(text, _utf8_head)
        return self._stream.restored(text)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._stream.close()

    def __iter__(self):
        if self.encoding == "auto":
            lines = (decode_line(b) for b in self._pieces(_NEWLINE_BYTES, self._blocks(), b""))
        else:
            decoder = codecs.getincrementaldecoder(self.encoding)(errors="replace")
            texts = (decoder.decode(block, final=not block) for block in self._blocks(final=True))
            if not self.encoding.startswith("utf-8"):  # UTF-8 with a BOM is cut as bytes (``CheckedStream``)
                texts = self._cut_as_utf8(texts)
            lines = self._pieces(_NEWLINE_TEXT, texts, "")
        # the line-by-line look-ahead only where damage can end the file (a plain file's lines go straight out)
        return self._holding_back_a_cut_line(lines) if self._stream.compressed else lines

    def _cut_as_utf8(self, texts):
        """``texts`` (UTF-16 or UTF-32 text as decoded, in pieces) with each line too long to be a row replaced by
        a marker line, as ``CheckedStream`` cuts the bytes of UTF-8 text: the text goes through a ``LineCutter`` as
        UTF-8, whose line ends are single bytes (in UTF-16 a line end is two bytes, and a byte 0x0A may be half of
        another character), so such a line's length and first bytes are counted in UTF-8. A UTF-16 file of one
        200 MB line had been held whole (found by the bug hunt of pathological inputs)."""
        cutter = self._text_cutter = LineCutter()
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for text in texts:
            data = cutter.feed(text.encode("utf-8", "replace"))
            if data:
                yield utf8.decode(data)
        yield utf8.decode(cutter.finish(), final=True)

    def _holding_back_a_cut_line(self, lines):
        """``lines``, except a damaged file's last line when no line end closes it: the damage may have cut it
        (kept as ``cut_line``)."""
        previous = None
        for line in lines:
            if previous is not None:
                self.lines_read += 1
                yield previous
            previous = line
        if previous is not None:
            if self.damage and not previous.endswith(("\n", "\r")):
                self.cut_line = previous
            else:
                self.lines_read += 1
                yield previous

    def _blocks(self, final: bool = False):
        block = self._head
        while block:
            yield block
            block = self._stream.read(_BLOCK)
        if final:
            yield b""

    @staticmethod
    def _pieces(newline: re.Pattern, blocks, empty):
        """The lines of ``blocks``, line ends kept. A line's pieces are joined once, at its end: a line of many
        blocks (200 MB without a line end) had been joined and searched again with every block, in time and memory
        growing with the square of its length (found by the bug hunt of pathological inputs)."""
        parts = []  # the line so far: no line end in it, but for a last "\r" held back
        for block in blocks:
            start = 0
            if parts and parts[-1][-1:] in ("\r", b"\r") and block:
                # a "\r" at the end of a block may be the first half of "\r\n": the line ends here either way
                if block[:1] in ("\n", b"\n"):
                    parts.append(block[:1])
                    start = 1
                yield empty.join(parts)
                parts = []
            for match in newline.finditer(block, start):
                if match.end() == len(block) and match.group() in ("\r", b"\r"):
                    break  # held back with the rest of the line, below
                parts.append(block[start:match.end()])
                yield empty.join(parts)
                parts = []
                start = match.end()
            if start < len(block):
                parts.append(block[start:])  # with the "\r" held back, if any
        if parts:
            yield empty.join(parts)


def nested_role_column(schema, layout: FileLayout) -> str | None:
    """Why a Parquet file cannot be read for its roles: a timestamp, entity, channel or value column (or a wide
    file's channel) of nested values (a struct, a list, a map); None when there is none."""
    import pyarrow as pa

    roles = [layout.timestamp_column, layout.entity_column, *(layout.long_columns or {}).values(),
             *(layout.channel_columns or ())]
    for name in roles:
        if name is not None and name in schema.names and pa.types.is_nested(schema.field(name).type):
            return (f"column {name!r} holds {schema.field(name).type} values, not plain values; flatten it "
                    f"upstream, or leave it out (--ignore, the mapping's 'ignore') if it is not a role column")
    return None


def _with_last(items):
    """``(item, whether it is the last)`` for each of ``items``."""
    items = iter(items)
    previous = next(items, _NOTHING)
    for item in items:
        yield previous, False
        previous = item
    if previous is not _NOTHING:
        yield previous, True


_NOTHING = object()


def _joined(pieces: list, spans) -> tuple[list, list]:
    """``pieces`` (lines) with each multi-line record of ``spans`` joined into one, and the index of each
    result's first line."""
    joined, indices, position = [], [], 0
    for first, count in spans:
        joined += pieces[position:first]
        indices += range(position, first)
        joined.append(b"".join(pieces[first:first + count]))
        indices.append(first)
        position = first + count
    joined += pieces[position:]
    indices += range(position, len(pieces))
    return joined, indices


def _decode_record(data: bytes) -> str:
    """A record's bytes as text, each of its lines decoded on its own (as the line reader decodes them)."""
    return "".join(decode_line(line) for line in TextLines._pieces(_NEWLINE_BYTES, [data], b""))


def open_text(path: str) -> TextLines:
    """Open a text file for reading lines, with its encoding detected (see ``TextLines``)."""
    return TextLines(path)


_SEP_HINT = re.compile(r'^"?sep=(.)"?$')


def _sep_hint(line: str) -> str | None:
    """The separator of an Excel ``sep=;`` first line, or None."""
    match = _SEP_HINT.match(line.strip())
    return match.group(1) if match else None


_CONTROLS = tuple(chr(code) for code in range(32) if chr(code) not in "\t\r\n")


def _looks_binary(line: str) -> bool:
    # counted by str.count, one pass in C per control character (a Python loop over each character had taken
    # seconds for a line of 40 MB)
    controls = sum(map(line.count, _CONTROLS))
    return "\x00" in line or controls > 0.1 * max(len(line), 1)


def estimate_readings(path: str, readings_per_row: int) -> int:
    """About how many readings a file holds: a Parquet footer's row count, or a text file's size over the mean
    length of its first lines (for planning only; nothing is counted by it)."""
    if is_parquet(path):
        import pyarrow.parquet as pq
        with FileSystems.open(path) as f:
            return pq.ParquetFile(f).metadata.num_rows * readings_per_row
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    with FileSystems.open(path, compression_type="uncompressed") as f:
        head = f.read(1 << 16)
    lines = max(1, head.count(b"\n"))
    return int(size / (len(head) / lines)) * readings_per_row if head else 0


# pandas stores an unnamed index in Parquet as a column of this name (DataFrame.to_parquet(index=True)): not data.
PANDAS_INDEX = re.compile(r"__index_level_\d+__")


def decimal_comma_clash(path: str, mapping: InputMapping, sep: str) -> None:
    """Raise ``SchemaDriftError`` for a CSV file separated by ``,`` read with the mapping's decimal ``,``: its
    quoted ``"1,200"`` groups thousands, and a decimal comma would read it as 1.2 (the mapping refuses a ``sep``
    of ``,`` with it; a sniffed one had passed)."""
    if mapping.decimal == "," and (mapping.sep or sep) == "," and not is_parquet(path):
        raise SchemaDriftError(f"{PurePath(path).name} is separated by ',', so its values cannot use a decimal comma "
                               f"(the mapping's decimal ','): a quoted \"1,200\" there groups thousands; leave "
                               f"decimal at '.', or give the separator the file has (--sep)")


def read_header(path: str, sep: str | None = None) -> tuple[list[str] | None, str]:
    """A file's column names and field separator; ``(None, ',')`` for an empty file. ``sep``: the mapping's
    separator, if it sets one (else an Excel ``sep=`` line's, else the commonest in the header). Raises
    ``SchemaDriftError`` for a file that is not text (its first line holds binary data), and for a header that
    ``sep`` leaves in one piece where another separator splits it (a separator given wrong); ``DamagedFileError``
    (one) for a compressed file of which not even the header can be read."""
    if is_parquet(path):
        import pyarrow as pa
        import pyarrow.parquet as pq
        try:
            with FileSystems.open(path) as f:
                return [n for n in pq.read_schema(f).names if not PANDAS_INDEX.fullmatch(n)], ","
        except pa.ArrowException as exc:  # not Parquet, or cut short: pyarrow's text does not name the file
            raise SchemaDriftError(f"{path} is not a readable Parquet file ({str(exc).split('. ', 1)[0].rstrip('.')})"
                                   ) from None
    hint = None
    with open_text(path) as f:
        for line in f:
            line = line.rstrip("\r\n")
            long = f.long_line(line)
            if long is not None:
                raise SchemaDriftError(f"{PurePath(path).name} does not look like a CSV text file: its first line is "
                                       f"{long.length:,} bytes long, more than a row can be "
                                       f"({MAX_LINE_BYTES >> 20} MiB), as in a file without line ends")
            if not line.strip():
                continue
            if hint is None and _sep_hint(line):
                hint = _sep_hint(line)
                continue
            if _looks_binary(line):
                raise SchemaDriftError(f"{PurePath(path).name} does not look like a CSV text file: its first line "
                                       f"holds binary data (is it compressed or in another format?)")
            data = [] if sep or hint else [text.rstrip("\r\n") for text in itertools.islice(f, 5) if text.strip()]
            given, sniffed = sep, sniff_separator(line, data)
            sep = given or hint or sniffed
            # a quoted name may hold the separator ("flow, l/min"): the csv module's reading, not a count of it
            fields = (csv_fields(line, sep) or [line]) if len(sep) == 1 else line.split(sep)
            if given and len(fields) == 1 and sniffed != given and sniffed in line:
                raise SchemaDriftError(f"{PurePath(path).name}'s header is one column when split by the separator "
                                       f"{given!r} (--sep, or the mapping's sep) and looks separated by {sniffed!r}: "
                                       f"give --sep {sniffed!r} or leave the separator out")
            return [h.strip() for h in fields], sep
        if f.damage:  # not empty: nothing of it could be read
            raise DamagedFileError(f.damage.replace(" past this point", "") if f.cut_line is None else
                                   f"{f.damage}; not even its header could be read")
    return None, ","


def _data_lines(f, sep: str | None = None, n_fields: int | None = None):
    """``(line number, text)`` of a text file's data records: after the header (and an Excel ``sep=`` line),
    without blank lines and lines of separators only, which carry no reading. With ``sep``, a record whose quoted
    field holds line breaks is one text, numbered by its first line, when it has ``n_fields`` fields
    (``csv_records``); blank lines skipped are those outside a record."""
    lines = _after_header(f)
    for number, line in (lines if sep is None else join_records(lines, sep, n_fields)):
        line = line.rstrip("\r\n")
        if line.strip():
            yield number, line


def _after_header(f):
    """``(line number, line)`` of a text file's lines after its header (and an Excel ``sep=`` line, and blank
    lines before them), line ends kept."""
    seen_header = seen_hint = False
    for number, line in enumerate(f, start=1):
        if seen_header:
            yield number, line
            continue
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if not seen_hint and _sep_hint(line):
            seen_hint = True
            continue
        seen_header = True


def _too_long_reason(long: LongLine) -> str:
    return (f"the line is {long.length:,} bytes long, more than a row can be ({MAX_LINE_BYTES >> 20} MiB), as where "
            f"line ends are missing or a part of the file is not CSV text; its first {len(long.head):,} bytes are "
            f"kept as its raw text")


def _malformed_reason(line: str, sep: str, n_fields: int) -> str:
    if _looks_binary(line):
        return "the row holds binary data (NUL or other control bytes)"
    if '"' not in line:
        return f"the row has {line.count(sep) + 1} fields, the header has {n_fields}"
    try:
        fields = len(next(csv.reader([line], delimiter=sep, strict=True)))
        return f"the row has {fields} fields, the header has {n_fields}"
    except (csv.Error, StopIteration) as exc:
        return f"the row's quoting cannot be read ({exc})"


class FileReader:
    """Reads one input file in chunks: ``read(path)`` yields ``(ReadingBatch, [Quarantined], readings_in)``.

    Plain Python (no pipeline), so ``seqwatch train`` parses exactly as the pipeline does. A file whose columns
    do not fit the mapping has all its rows quarantined with reason ``schema_drift``; an empty file yields
    one empty chunk (0 readings, so a run can tell it read the file); blank lines are skipped and carry no
    record."""

    def __init__(self, mapping: InputMapping, run_id: str, chunk_rows: int = DEFAULT_CHUNK_ROWS):
        self.mapping = mapping
        self.run_id = run_id
        self.chunk_rows = chunk_rows

    def read(self, path: str):
        sep, header = self.mapping.sep, None
        try:
            header, sep = read_header(path, self.mapping.sep)
            if header is None:  # an empty file: no record, but a count of 0, so the run knows it was read
                yield ReadingBatch.from_columns([], [], [], [], [], []), [], 0
                return
            decimal_comma_clash(path, self.mapping, sep)
            layout = FileLayout.resolve(header, self.mapping, path)
            if is_parquet(path):
                import pyarrow.parquet as pq

                with FileSystems.open(path) as f:
                    nested = nested_role_column(pq.ParquetFile(f).schema_arrow, layout)
                if nested:
                    raise SchemaDriftError(nested)
        except DamagedFileError as exc:  # a run refuses such a file up front (preflight); training gets here
            yield self._damaged(path, 1, None, str(exc), 0)
            return
        except SchemaDriftError as exc:
            yield self._quarantine_file(path, str(exc), self.mapping.sep or sep, header)
            return
        if is_parquet(path):
            yield from self._parquet_chunks(path, layout)
        else:
            sep = self.mapping.sep or sep
            yield from self._until_another_header(self._csv_chunks(path, layout, sep), path, header, sep, layout)

    def _until_another_header(self, chunks, path: str, header: list, sep: str, layout: FileLayout):
        """``chunks`` of a CSV file up to a header line in another column order than its first (files of other
        exports joined one after another): that line and every row after it are quarantined as ``schema_drift``,
        one record per row standing for its readings, rather than read by the first header (a repeated header of
        ``timestamp,pressure,flow`` had had every later row's pressure read as flow, without a word). A repeated
        header of the same columns is one quarantined line, and the rows after it are read."""
        expected = [name.strip() for name in header]
        drift = None  # (line, its header)
        held = None  # the output before, held back: a chunk gives its odd (quoted) lines first, then its clean ones,
        # so quoted rows after a clean header line come out before the header is seen
        for batch, bad, n in chunks:
            found = False
            if drift is None:
                for q in bad:  # a header line is a row whose time could not be read
                    if q.reason_code == "parse_timestamp" and q.raw:
                        fields = [name.strip() for name in csv_fields(q.raw, sep) or [q.raw]]
                        if fields != expected and 2 * len(set(fields) & set(expected)) >= len(expected):
                            drift, found = (q.line, fields), True  # the header's names, another order or others
                            break
            if drift is not None:
                batch, bad = self._drifted(path, batch, bad, drift, expected, layout)
                if found and held is not None:  # held back unfiltered: the output before the header was seen
                    held = (*self._drifted(path, held[0], held[1], drift, expected, layout), held[2])
            if held is not None:
                yield held
            held = batch, bad, n
        if held is not None:
            yield held

    def _drifted(self, path: str, batch: ReadingBatch, bad: list, drift: tuple, expected: list,
                 layout: FileLayout):
        """``batch`` and ``bad`` without the rows from the line of another header on, and a ``schema_drift``
        record for each of those rows."""
        line, fields = drift
        lines = batch.frame["line"].to_numpy()
        # a damaged compressed file's record stays as it is (it may stand for no reading: a damage at a line end)
        after = sorted(set(lines[lines >= line].tolist())
                       | {q.line for q in bad if q.line >= line and q.reason_code != "damaged_file"})
        if not after:
            return batch, bad
        reason = (f"line {line} is another header ({fields}) than the file's first ({expected}), as where files of "
                  f"two exports were joined: the rows from there on are not read by the first header; split the "
                  f"file at line {line}")
        raws = {q.line: q.raw for q in bad if q.line >= line and q.raw}
        records = [Quarantined(raws.get(n, ""), path, n, "", layout.readings_per_row, "parse", "schema_drift", reason,
                               self.run_id) for n in after]
        kept = ReadingBatch(batch.frame[lines < line].reset_index(drop=True)) if (lines >= line).any() else batch
        return kept, [q for q in bad if q.line < line or q.reason_code == "damaged_file"] + records

    def _csv_chunks(self, path: str, layout: FileLayout, sep: str):
        """Chunks of a CSV file: read as bytes, clean lines split by Arrow and odd ones by the line reader
        (``csv_blocks``), for files in the ``auto`` encoding whose header ends within the first block; other files
        (a BOM, UTF-16/32, a header past the first MiB, a separator that is not one ASCII character, which Arrow
        cannot split on and whose bytes a quote's record could not be found by) wholly line by line."""
        if len(sep) != 1 or not sep.isascii():
            yield from self._csv_line_chunks(path, layout, sep)
            return
        with CheckedStream(path) as stream:
            head = stream.read(_BLOCK)
            source = stream
            if head.count(b"\r") - head.count(b"\r\n") > head.count(b"\n"):  # lines end mostly in a lone CR:
                # read as if in LF (byte_chunks finds LFs only)
                source = LoneCrAsLf(stream)
                head = source.feed(head)
            start = data_start(head, _sep_hint, decode_line) if detect_encoding(head) == "auto" else None
            if start is not None:
                yield from self._csv_byte_chunks(path, layout, sep, stream, head[start[0]:], start[1], source)
                return
        yield from self._csv_line_chunks(path, layout, sep)

    def _damaged(self, path: str, line: int, cut: str | None, damage: str, readings_per_row: int):
        """The chunk that ends a damaged compressed file: its cut last line quarantined as ``damaged_file``
        (standing for a row's readings), or, when a line end closed the last line read, a record of the damage
        that stands for no reading (what followed it cannot be counted)."""
        reason = (f"{damage}; " + ("this line may be cut, and " if cut is not None else "")
                  + "nothing after it could be read")
        record = Quarantined(cut or "", path, line, "", readings_per_row if cut is not None else 0, "parse",
                             "damaged_file", reason, self.run_id)
        return ReadingBatch.from_columns([], [], [], [], [], []), [record], record.records

    def _csv_byte_chunks(self, path: str, layout: FileLayout, sep: str, stream, rest: bytes, number: int,
                         source=None):
        """``rest`` (the first block after the header, whose first line is line ``number``) and the rest of
        ``stream`` (read through ``source`` where given: ``LoneCrAsLf``) in chunks of ``chunk_rows`` lines; per
        chunk, the odd lines' output, then the clean lines'. A record whose quoted field holds line breaks is one
        odd line; when a chunk ends inside one, its lines go on with the next chunk."""
        chunks, reported, carry = 0, False, b""
        for chunk, last in _with_last(byte_chunks(source or stream, rest, self.chunk_rows)):
            chunk, carry, spans = carry + chunk, b"", []
            if last and stream.damage and not chunk.endswith((b"\n", b"\r")):
                # the file's last chunk, cut by the damage: its unterminated last line is held back
                cut_at = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1
                cut_number = number + len(list(TextLines._pieces(_NEWLINE_BYTES, [chunk[:cut_at]], b"")))
                chunk, cut = chunk[:cut_at], stream.restored(decode_line(chunk[cut_at:]))
                yield self._damaged(path, cut_number, cut, stream.damage, layout.readings_per_row)
                chunks, reported = chunks + 1, True
                if not chunk:
                    break
            if b'"' in chunk:
                # a lone CR ends a line as the line reader reads it: the chunk's lines are its pieces then
                by_line = (list(TextLines._pieces(_NEWLINE_BYTES, [chunk], b"")) if has_lone_cr(chunk)
                           else ChunkLines(chunk))
                quoted = by_line.quoted if isinstance(by_line, ChunkLines) else None
                spans, open_from = record_spans(by_line, sep, len(layout.header), final=last, quoted=quoted)
                if open_from is not None:  # the chunk ends inside a record: its lines go on with the next chunk
                    at = (int(by_line.starts[open_from]) if isinstance(by_line, ChunkLines)
                          else sum(len(piece) for piece in by_line[:open_from]))
                    chunk, carry = chunk[:at], chunk[at:]
                    if not chunk:
                        continue
            split = split_chunk(chunk, sep, len(layout.header), spans)
            if split is None:  # the whole chunk line by line
                every = list(TextLines._pieces(_NEWLINE_BYTES, [chunk], b""))
                pieces, indices = _joined(every, spans)
                physical = len(every)
            else:
                pieces, indices, physical = split.odd, split.odd_index, split.lines
            texts, numbers = [], []
            decode = _decode_record if spans else decode_line
            if spans and isinstance(source, LoneCrAsLf):  # a record's line breaks as the file has them
                pieces = [LoneCrAsLf.restored(piece) for piece in pieces]
            for k, piece in enumerate(pieces):
                text = decode(piece).rstrip("\r\n")
                if text.replace(sep, "").strip():  # blank and separator-only lines carry no reading
                    texts.append(text)
                    numbers.append(number + int(indices[k]))
            if texts:  # the odd lines first, so malformed rows lead the quarantine as they do line by line
                chunks += 1
                yield self._parse_csv_lines(path, layout, sep, texts, numbers, stream)
            if split is not None and split.clean_index.size:
                columns = dict(zip(layout.header, split.columns))
                batch, bad = parse_rows(columns, number + split.clean_index.astype(np.int64),
                                        lambda i, c=split.clean, a=split.starts, b=split.ends: c[a[i]:b[i]].decode(),
                                        path, layout, self.mapping, self.run_id)
                chunks += 1
                yield batch, bad, split.clean_index.size * layout.readings_per_row
            number += physical
        if stream.damage and not reported:  # the damage came at a line end, or before any data line
            chunks += 1
            yield self._damaged(path, number, None, stream.damage, layout.readings_per_row)
        if not chunks:  # a header-only file still reports its count of 0
            yield self._parse_csv_lines(path, layout, sep, [], [])

    def _csv_line_chunks(self, path: str, layout: FileLayout, sep: str):
        with open_text(path) as f:
            lines, numbers, chunks = [], [], 0
            for number, line in _data_lines(f, sep, len(layout.header)):
                if not line.replace(sep, "").strip():
                    continue  # only separators (a spreadsheet's empty row): no reading
                lines.append(line)
                numbers.append(number)
                if len(lines) >= self.chunk_rows:
                    yield self._parse_csv_lines(path, layout, sep, lines, numbers, f)
                    lines, numbers, chunks = [], [], chunks + 1
            if lines or not (chunks or f.damage):  # a header-only file still reports its count of 0
                yield self._parse_csv_lines(path, layout, sep, lines, numbers, f)
            if f.damage:
                cut = None if f.cut_line is None else f.restored(f.cut_line)
                yield self._damaged(path, f.lines_read + 1, cut, f.damage, layout.readings_per_row)

    def _parse_csv_lines(self, path, layout: FileLayout, sep: str, lines: list[str], numbers: list[int],
                         read_from=None):
        """The rows of ``lines`` (numbered ``numbers``) parsed, or quarantined: a line too long to be a row, or
        a record of lines joined that holds one (``read_from``, the ``CheckedStream`` or ``TextLines`` they were
        read from, tells) as ``line_too_long``, one of another number of fields than the header's as
        ``malformed_row``."""
        per_row = layout.readings_per_row
        records_in = len(lines) * per_row
        quarantine = []
        if read_from is not None and lines:
            cut = [read_from.long_line(line) for line in lines]
            if any(long is not None for long in cut):
                quarantine = [Quarantined(read_from.restored(line), path, number, "", per_row, "parse",
                                          "line_too_long", _too_long_reason(long), self.run_id)
                              for line, long, number in zip(lines, cut, numbers) if long is not None]
                lines = [line for line, long in zip(lines, cut) if long is None]
                numbers = [number for number, long in zip(numbers, cut) if long is None]
        rows, ok = split_lines(lines, sep, len(layout.header))
        quarantine += [Quarantined(lines[i], path, numbers[i], "", per_row, "parse", "malformed_row",
                                   _malformed_reason(lines[i], sep, len(layout.header)), self.run_id)
                       for i in np.flatnonzero(~ok)]
        keep = np.flatnonzero(ok)
        good_lines = [lines[i] for i in keep]
        frame = pd.DataFrame([rows[i] for i in keep], columns=list(layout.header), dtype=object)
        columns = {name: frame.iloc[:, j] for j, name in enumerate(layout.header)}
        batch, bad = parse_rows(columns, np.asarray(numbers, dtype=np.int64)[keep], good_lines.__getitem__, path,
                                layout, self.mapping, self.run_id)
        return batch, quarantine + bad, records_in

    def _parquet_chunks(self, path: str, layout: FileLayout):
        import pyarrow as pa
        import pyarrow.parquet as pq
        first = 1
        with FileSystems.open(path) as f:
            # INT96 timestamps (Spark's default) read at µs: at ns, Arrow wraps a date past 2262 (9999-12-31, a
            # "valid to" sentinel) to one in 1816, and 2610 to 2025, which would be scored.
            try:
                parquet = pq.ParquetFile(f, coerce_int96_timestamp_unit="us")
            except pa.ArrowInvalid as exc:  # planning read it: it was cut or replaced since (not an I/O error)
                raise InputChangedError(f"{path} cannot be read as a Parquet file "
                                        f"({str(exc).splitlines()[0]})") from None
            schema = parquet.schema_arrow
            # Id columns (entity, channel) hold a few distinct strings: read them dictionary-encoded, so that a
            # chunk arrives as pandas categoricals and its ids are cleaned once per distinct value.
            # The layout's names are stripped of blanks, as a CSV header's are; the file's may not be (" value")
            named = {name.strip(): name for name in schema.names}
            ids = [named[c] for c in (layout.entity_column, (layout.long_columns or {}).get("channel"))
                   if c is not None and c in named]
            strings = [c for c in ids if pa.types.is_string(schema.field(c).type)
                       or pa.types.is_large_string(schema.field(c).type)]
            integers = [c for c in ids if pa.types.is_integer(schema.field(c).type)]
            if strings:
                parquet = pq.ParquetFile(f, metadata=parquet.metadata, read_dictionary=strings,
                                         coerce_int96_timestamp_unit="us")
            booleans = {pa.bool_(): pd.BooleanDtype()}
            total = parquet.metadata.num_rows
            batches = parquet.iter_batches(batch_size=self.chunk_rows)
            while True:
                try:  # a decoding error reading the next rows is damage; errors of parsing them are not
                    record_batch = next(batches, None)
                except (OSError, pa.ArrowInvalid) as exc:
                    reason = (f"the Parquet file is damaged from row {first} on ({str(exc).splitlines()[0]}); "
                              f"{total - first + 1} rows could not be read")
                    record = Quarantined("", path, first, "", (total - first + 1) * layout.readings_per_row,
                                         "parse", "damaged_file", reason, self.run_id)
                    yield ReadingBatch.from_columns([], [], [], [], [], []), [record], record.records
                    return
                if record_batch is None:
                    break
                # Not the pandas metadata: a timestamp column pandas wrote as the frame's index stays a column.
                # Booleans stay boolean with their nulls (a status flag reads as 1 and 0; object would be text).
                frame = record_batch.to_pandas(ignore_metadata=True, types_mapper=booleans.get)
                for name in integers:  # ids 101, not 101.0 where a null made pandas read the column as floats
                    frame[name] = record_batch.column(name).to_pandas(integer_object_nulls=True)
                numbers = np.arange(first, first + len(frame), dtype=np.int64)
                first += len(frame)
                columns = {str(name).strip(): frame[name] for name in frame.columns}
                batch, bad = parse_rows(columns, numbers, lambda i, fr=frame: raw_json(fr.iloc[i].to_dict()),
                                        path, layout, self.mapping, self.run_id)
                yield batch, bad, len(frame) * layout.readings_per_row
        if first == 1:  # no rows: report a count of 0
            yield ReadingBatch.from_columns([], [], [], [], [], []), [], 0

    def _quarantine_file(self, path: str, reason: str, sep: str | None = None, header: list | None = None):
        quarantine = []
        if is_parquet(path):
            import pyarrow.parquet as pq
            import pyarrow as pa
            try:
                with FileSystems.open(path) as f:
                    rows = pq.read_table(f, coerce_int96_timestamp_unit="us").to_pylist()
            except pa.ArrowInvalid as exc:  # refused before a run: it was cut or replaced since
                raise InputChangedError(f"{path} cannot be read as a Parquet file ({str(exc).splitlines()[0]})") \
                    from None
            quarantine = [Quarantined(raw_json(row), path, i, "", 1, "parse", "schema_drift", reason, self.run_id)
                          for i, row in enumerate(rows, start=1)]
        else:
            with open_text(path) as f:
                quarantine = [Quarantined(f.restored(line), path, n, "", 1, "parse", "schema_drift", reason,
                                          self.run_id)
                              for n, line in (_data_lines(f, sep, len(header)) if header else _data_lines(f))]
                if f.damage:
                    cut = None if f.cut_line is None else f.restored(f.cut_line)
                    quarantine += self._damaged(path, f.lines_read + 1, cut, f.damage, 1)[1]
        return ReadingBatch.from_columns([], [], [], [], [], []), quarantine, sum(q.records for q in quarantine)


class _ReadFileChunks(beam.DoFn):
    """``path -> ReadingBatch`` chunks, with the quarantined records and the ``records_in`` counts as tagged
    outputs. ``packed_rows``: the records of each file are given out as ``PackedQuarantine`` tables of up to this
    many records (a batch run's, which its sinks write as tables), not one by one; 0: one ``Quarantined`` each."""

    def __init__(self, reader: FileReader, packed_rows: int = 0):
        self.reader = reader
        self.packed_rows = packed_rows
        self.timer = StageTimer("read_parse")

    def process(self, path: str) -> Iterator:
        chunks = iter(self.reader.read(path))
        packer = QuarantinePacker(self.packed_rows) if self.packed_rows else None
        while True:
            with self.timer:  # reading and parsing only, not the work downstream of each yield
                chunk = next(chunks, None)
            if chunk is None:
                break
            batch, quarantine, records = chunk
            yield beam.pvalue.TaggedOutput(COUNTS, ("records_in", records))
            if len(batch):
                yield batch
            for q in quarantine:
                out = q if packer is None else packer.add(q)
                if out is not None:
                    yield beam.pvalue.TaggedOutput(QUARANTINE, out)
        for packed in packer.flush() if packer is not None else []:
            yield beam.pvalue.TaggedOutput(QUARANTINE, packed)


class ReadInputFiles(beam.PTransform):
    """``PBegin -> {main: ReadingBatch, quarantine: Quarantined, counts: (name, n)}``.

    ``paths`` are concrete file paths (expand globs before building the graph, so a missing file is reported
    before the pipeline starts). ``packed_quarantine``: the quarantine output holds ``PackedQuarantine`` tables of
    up to this many records of one file each instead of ``Quarantined`` records (a batch run's: a file of a
    million "n/a" readings had sent a million elements through each step to its quarantine file)."""

    def __init__(self, paths: list[str], mapping: InputMapping, run_id: str, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 packed_quarantine: int = 0):
        super().__init__()
        self.paths = list(paths)
        self.mapping = mapping
        self.run_id = run_id
        self.chunk_rows = chunk_rows
        self.packed_quarantine = packed_quarantine

    def expand(self, pbegin):
        return (pbegin
                | "ListFiles" >> beam.Create(self.paths)
                | "SpreadFiles" >> beam.Reshuffle()
                | "ParseFiles" >> beam.ParDo(_ReadFileChunks(FileReader(self.mapping, self.run_id, self.chunk_rows),
                                                             self.packed_quarantine))
                .with_outputs(QUARANTINE, COUNTS, main="readings"))


# What a folder given as input stands for: files of these kinds, compressed or not (Beam decompresses by suffix).
DATA_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
COMPRESSION_SUFFIXES = ("", ".gz", ".bz2", ".zst", ".zstd", ".deflate", ".xz", ".lzma")
_DATA_FILE_SUFFIXES = tuple(data + packed for data in DATA_SUFFIXES for packed in COMPRESSION_SUFFIXES)


def expand_inputs(patterns: list[str], exclude: tuple = ()) -> list[str]:
    """Concrete, sorted file paths for glob patterns and folders; raises FileNotFoundError naming a pattern with
    no match. A local pattern without a folder (``*.csv``) is matched in the working directory: Beam's local file
    system matches such a pattern against nothing (``./*.csv`` it matches). A folder (``history/``, or a name
    without glob characters that names no file, as ``gs://bucket/history`` does) stands for the CSV and Parquet
    files under it, at any depth (``.csv``, ``.tsv``, ``.txt``, ``.parquet``, ``.pq``, each also compressed),
    except those whose name below it starts with ``.`` or ``_`` (``_SUCCESS``, ``.part-0.crc``: what Spark,
    Hadoop and Beam's own writers leave beside their data), those inside an ``exclude`` folder (a run's
    output folder, when it lies inside an input folder, also through a link) and those of an earlier run's
    output folders (``_seqwatch_outputs``: yesterday's ``out-day1`` inside today's input folder), and
    documentation beside the data (``README.txt``, ``LICENSE.txt``). A glob keeps all it names but the files inside
    an ``exclude`` folder; a file path keeps what it names.
    A local file
    named twice (``a.csv`` and ``./a.csv``, or a path through a link) is read once, under the first of its names
    in sorted order."""
    _real_folder.cache_clear()  # links may have changed since the last call
    paths = []
    for pattern in patterns:
        matched = _match(pattern)
        folder = _names_a_folder(pattern, matched)
        outputs = tuple(exclude) + (_seqwatch_outputs(pattern) if folder else ())
        if folder:
            under = [path for path in _files_under(pattern) if _is_input_file(path)]
            matched = [path for path in under if not any(_inside(path, out) for out in outputs)]
            if not matched and under:
                raise FileNotFoundError(f"the CSV and Parquet files under {pattern!r} all lie inside a seqwatch output "
                                        f"folder (--output, or an earlier run's), which is not read as input")
            if not matched and "://" not in pattern and os.path.isdir(pattern):
                raise FileNotFoundError(f"no CSV or Parquet file is in the folder {pattern!r}")
        elif matched and exclude and re.search(r"[*?\[]", pattern):
            # a glob over the run's own --output too ('land/**/*.parquet' with --output land/scored): its rerun
            # had read its outputs as input, and failed on their columns
            written = tuple(os.path.join(out, name) for out in exclude for name in _written_folders(out))
            kept = [path for path in matched if not any(_inside(path, folder) for folder in written)]
            if not kept:
                raise FileNotFoundError(f"every file {pattern!r} matches lies inside --output {exclude[0]}, whose "
                                        f"files are not read as input")
            matched = kept
        unreadable: list = []
        broken = _dangling_links(pattern, folder=folder, exclude=outputs, unreadable=unreadable)
        if broken:
            link, target = broken[0]
            more = f" (and {len(broken) - 1} more such links)" if len(broken) > 1 else ""
            raise FileNotFoundError(f"{link} is a link to {target}, which does not exist{more}: restore its target "
                                    f"(a mount that is down?) or remove the link; its readings cannot be read")
        if unreadable:
            folder_name, reason = unreadable[0]
            more = f" (and {len(unreadable) - 1} more such folders)" if len(unreadable) > 1 else ""
            raise PermissionError(f"cannot list the folder {folder_name} under {pattern} ({reason}){more}: its "
                                  f"files would be left out; let this user read it, or give --input the files "
                                  f"to read")
        if not matched:
            from seqwatch.pipelines.object_store import missing_bucket

            bucket = missing_bucket(pattern)  # a bucket's name mistyped: said, not left to be guessed
            raise FileNotFoundError(f"no input file matches {pattern!r}"
                                    + (f": there is no bucket {bucket!r} at that store" if bucket else ""))
        paths.extend(matched)
    for path in paths:
        _check_readable_kind(path)
    once: dict = {}
    for path in sorted(set(paths)):
        once.setdefault(path if "://" in path else os.path.realpath(path), path)
    return sorted(once.values())


def _check_readable_kind(path: str) -> None:
    """Refuse, naming it, an input that no run could read through: a named pipe, socket or device file (a FIFO
    named like a CSV had blocked a run for ever, found by the bug hunt of pathological inputs), and a local file
    whose name is not UTF-8 text (a Latin-1 name from an SMB share had failed the run in a sentence naming no
    file), which the outputs' source columns and manifest could not hold."""
    import stat

    if "://" in path:
        return
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise FileNotFoundError(f"the input file name {os.fsencode(path)!r} is not UTF-8 text, which the outputs "
                                f"name their sources in: rename it (e.g. convmv -f latin1 -t utf8)") from None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # gone or unreadable: said where it is opened
    if not stat.S_ISREG(mode):
        kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device file"
        raise FileNotFoundError(f"the input {path} is {kind}, not a file: a run reads each input to its end, which "
                                f"{kind} may never have; leave it out of --input (or move it out of the folder)")


def _dangling_links(pattern: str, folder: bool, exclude: tuple = (), unreadable: list | None = None) -> list:
    """``[(link, target)]`` of the local symbolic links ``pattern`` names (as a glob, or the data files under it
    as a folder) whose target does not exist: Beam's file system skips them, so their files would be left out
    of a run without a word. ``unreadable`` (a folder's walk): gets ``(folder, reason)`` of each folder under it
    that cannot be listed, which Beam skips as well (found by the bug hunt of operational failures: their files
    had been left out, exit 0); not those in ``exclude``, nor a file system's ``lost+found``."""
    if "://" in pattern:
        return []
    if folder:
        if not os.path.isdir(pattern):  # a name that matched nothing: a link to nowhere is one too
            link = pattern.rstrip("/")
            return [(link, os.readlink(link))] if os.path.islink(link) and not os.path.exists(link) else []

        def refused(exc: OSError) -> None:
            if unreadable is not None and not any(_inside(os.path.join(exc.filename, "x"), out) for out in exclude):
                unreadable.append((exc.filename, exc.strerror or str(exc)))

        names = []
        for root, dirs, files in os.walk(pattern, onerror=refused):
            dirs[:] = [d for d in dirs if not d.startswith((".", "_")) and d != "lost+found"]
            names += [os.path.join(root, f) for f in files if not f.startswith((".", "_")) and _is_input_file(f)]
        names = [n for n in names if not any(_inside(n, out) for out in exclude)]
    else:
        names = glob.glob(pattern)
    return sorted((name, os.readlink(name)) for name in names if os.path.islink(name) and not os.path.exists(name))


_DOCUMENTATION = ("readme", "license", "licence", "notice", "copying", "changelog", "authors")


def _is_documentation(path: str) -> bool:
    """A README.txt or LICENSE.txt that a data folder holds beside its files (NAB's does): not data. Only these
    names with a .txt suffix (license_plate_cam.csv is data)."""
    name = path.rsplit("/", 1)[-1].lower()
    return name.endswith(".txt") and name[:-4] in _DOCUMENTATION


def _is_data_file(path: str) -> bool:
    return path.rsplit("/", 1)[-1].lower().endswith(_DATA_FILE_SUFFIXES)


def _is_input_file(path: str) -> bool:
    """What a folder given as input stands for: its data files, not the documentation beside them."""
    return _is_data_file(path) and not _is_documentation(path)


def _inside(path: str, folder: str) -> bool:
    if "://" in path or "://" in folder:
        return path.startswith(folder.rstrip("/") + "/")
    # Through links on either side, each folder resolved once per expand_inputs (resolving each of 50,000 files
    # took 2 s): the file's own folder, as a file's name is not a link into the output folder.
    home, real = _real_folder(os.path.dirname(os.path.abspath(path))), _real_folder(folder).rstrip(os.sep)
    return home == real or home.startswith(real + os.sep)


@functools.lru_cache(maxsize=65536)
def _real_folder(folder: str) -> str:
    return os.path.realpath(folder)


_OUTPUT_FOLDERS = ("alerts", "alerts_open", "forecasts", "scores", "quarantine", "counts", "readings")


def _written_folders(output: str) -> tuple:
    """The folders seqwatch writes under ``output``: its outputs and its staging and set-aside folders (the other
    files under an --output, as when it is the input folder itself, are not its own)."""
    if "://" in output or not os.path.isdir(output):
        return _OUTPUT_FOLDERS
    return _OUTPUT_FOLDERS + tuple(name for name in os.listdir(output)
                                   if name.startswith(("_staging-", "_job-staging-", "_previous-")))


def _seqwatch_outputs(folder: str) -> tuple:
    """The output folders (``scores/``, ``alerts/``, ...) of the seqwatch runs under a local ``folder``: beside a
    ``manifest.json`` that names a run id and its counts (a data set's own manifest.json does not)."""
    if "://" in folder or not os.path.isdir(folder):
        return ()
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        if "manifest.json" in files and "scores" in dirs and _is_run_manifest(os.path.join(root, "manifest.json")):
            found += [os.path.join(root, d) for d in dirs if d in _OUTPUT_FOLDERS]
            dirs[:] = [d for d in dirs if d not in _OUTPUT_FOLDERS]
    return tuple(found)


def _is_run_manifest(path: str) -> bool:
    """Whether ``path`` is a batch run's ``manifest.json`` (a local file, or an object of a store)."""
    from seqwatch.pipelines.object_store import read_json_or_none

    manifest = read_json_or_none(path)
    return isinstance(manifest, dict) and {"run_id", "records_in"} <= set(manifest)


def _match(pattern: str) -> list[str]:
    bare = "://" not in pattern and not PurePath(pattern).parent.parts
    try:
        matched = [m.path for result in FileSystems.match(["./" + pattern if bare else pattern])
                   for m in result.metadata_list]
    except Exception:
        if "://" in pattern:  # GCS answers a listing of a bucket that is not there with an error (S3: no match)
            from seqwatch.pipelines.object_store import missing_bucket

            bucket = missing_bucket(pattern)
            if bucket:
                raise FileNotFoundError(f"no input file matches {pattern!r}: there is no bucket {bucket!r} at that "
                                        f"store") from None
        raise
    return [path[2:] if bare and path.startswith("./") else path for path in matched]


def _names_a_folder(pattern: str, matched: list[str]) -> bool:
    if re.search(r"[*?\[]", pattern):
        return False
    if pattern.endswith("/") or not matched:
        return True
    return "://" not in pattern and os.path.isdir(pattern)


def _files_under(folder: str) -> list[str]:
    base = folder.rstrip("/")
    below = [(path, path[len(base):].lstrip("/")) for path in _match(base + "/**")]
    return [path for path, rest in below if rest and not any(part.startswith((".", "_")) for part in rest.split("/"))]
