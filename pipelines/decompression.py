"""A compressed input file read with a bound on what one read expands to.

Beam's ``CompressedFile`` decompresses each 16 MiB it reads of a compressed file in one call, with no bound on
the output: 16 MiB of gzip can expand to 16 GiB, of bzip2 to terabytes (256 MiB of zeros compress to 211
bytes). A gzip bomb of 2 MB made a run take 4.4 GB before a line of it was read (measured on 2026-12-03).

``BoundedDecompression`` reads gzip, deflate (zlib), bzip2 and xz/lzma files as Beam does (concatenated members or
streams one after another; the compression told by the file name; zero bytes after a gzip member or an xz stream
skipped, as their own tools skip them), but gives out at most what is asked for, so a
reader holds one block at a time however far the file expands. zstd files are still read by Beam's
``CompressedFile`` (the ``zstandard`` decompressor takes no output bound).
"""
from __future__ import annotations

import bz2
import lzma
import zlib

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

_READ = 1 << 16  # compressed bytes read at a time


def _decompressor(kind: str):
    if kind == CompressionTypes.GZIP:
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if kind == CompressionTypes.DEFLATE:
        return zlib.decompressobj()
    if kind == CompressionTypes.BZIP2:
        return bz2.BZ2Decompressor()
    return lzma.LZMADecompressor()


BOUNDED_KINDS = (CompressionTypes.GZIP, CompressionTypes.DEFLATE, CompressionTypes.BZIP2, CompressionTypes.LZMA)


class BoundedDecompression:
    """``read(size)``: up to ``size`` decompressed bytes of ``raw`` (a file object of the compressed bytes);
    ``b""`` at the end. Errors of the data (zlib's, bz2's ``OSError``, lzma's) come out of ``read`` as they are,
    after what was decompressed before them: a read that meets one gives out what came before it, and the next read
    raises it (Beam's reader loses what it decompressed of the 16 MiB read that fails).
    ``finished``: whether the last stream read so far was whole (a file cut short ends inside one)."""

    def __init__(self, raw, kind: str):
        self.kind = kind
        self._raw = raw
        self._decompressor = _decompressor(kind)
        self._input = b""  # compressed bytes read, not yet taken by the decompressor
        self._raw_ended = False
        self._zlib = kind in (CompressionTypes.GZIP, CompressionTypes.DEFLATE)
        self._error: Exception | None = None  # met after the bytes the last read gave out
        self._spill = b""  # decompressed, not yet given out (zlib's last bytes of a file cut short)

    @property
    def finished(self) -> bool:
        return self._decompressor.eof

    def read(self, size: int = -1) -> bytes:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        out: list[bytes] = []
        try:
            self._read_into(out, size)
        except Exception as exc:  # noqa: BLE001 - raised as it is, by the next read when bytes came before it
            if not out:
                raise
            self._error = exc
        return b"".join(out)

    def _read_into(self, out: list, size: int) -> None:
        n = 0
        if self._spill:
            out.append(self._spill[:size] if size >= 0 else self._spill)
            self._spill = self._spill[len(out[-1]):]
            n = len(out[-1])
        while size < 0 or n < size:
            d = self._decompressor
            if d.eof:  # a stream ended: another may follow (concatenated gzip members, bzip2 or xz streams)
                # what follows the stream; zlib leaves the same bytes in unconsumed_tail as well (CPython 3.11)
                rest = self._after_padding(d.unused_data)
                if not rest:
                    break
                self._decompressor, self._input = _decompressor(self.kind), rest
                continue
            limit = size - n if size >= 0 else (0 if self._zlib else -1)  # zlib's 0 and the others' -1: no bound
            if self._input or not self._needs_input(d):
                data = self._step(d, limit)
                if data:
                    out.append(data)
                    n += len(data)
                    continue
                if self._input:  # taken in part (a header) and nothing out yet: give it more
                    more = self._read_raw()
                    if not more:
                        break
                    self._input += more
                continue
            more = self._read_raw()
            if not more:
                if self._zlib:  # what zlib holds of input it has taken (at most a match's length)
                    tail = d.flush()
                    keep = len(tail) if size < 0 else size - n
                    out.append(tail[:keep])
                    self._spill = tail[keep:]
                break
            self._input = more

    def _after_padding(self, rest: bytes) -> bytes:
        """The bytes after a finished stream, past the zero bytes that gzip and xz allow there (gzip's tools
        ignore zeros after a member, as a tape's block pads it; xz's format has stream padding), reading on as
        needed; ``b""`` at the end of the file. The bug hunt of this reader found both read as damage, as Beam's
        reader reads them."""
        pads = self.kind in (CompressionTypes.GZIP, CompressionTypes.LZMA)
        while True:
            if pads:
                rest = rest.lstrip(b"\0")
            if rest:
                return rest
            rest = self._read_raw()
            if not rest:
                return b""

    def _needs_input(self, d) -> bool:
        return True if self._zlib else d.needs_input

    def _step(self, d, limit: int) -> bytes:
        data = d.decompress(self._input, limit)
        self._input = d.unconsumed_tail if self._zlib else b""
        return data

    def _read_raw(self) -> bytes:
        if self._raw_ended:
            return b""
        data = self._raw.read(_READ)
        self._raw_ended = not data
        return data

    def close(self):
        self._raw.close()


def open_input(path: str):
    """``path`` opened for reading, decompressed as its name says: gzip, deflate, bzip2 and xz by
    ``BoundedDecompression``, zstd by Beam's ``CompressedFile``, anything else as stored."""
    kind = CompressionTypes.detect_compression_type(path)
    if kind in BOUNDED_KINDS:
        return BoundedDecompression(FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED), kind)
    return FileSystems.open(path)
