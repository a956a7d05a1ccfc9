"""A compressed input file read with a bound on what one read expands to.

Beam's ``CompressedFile`` decompresses each 16 MiB it reads of a compressed file in one call, with no bound on
the output: 16 MiB of gzip can expand to 16 GiB, of bzip2 to terabytes (256 MiB of zeros compress to 211
bytes). A gzip bomb of 2 MB made a run take 4.4 GB before a line of it was read (measured on 2026-12-03).

``BoundedDecompression`` reads gzip, deflate (zlib), bzip2 and xz/lzma files as Beam does (concatenated members or
streams one after another; the compression told by the file name; zero bytes after a gzip member or an xz stream
skipped, as their own tools skip them), but gives out at most what is asked for, so a
reader holds one block at a time however far the file expands. ``BoundedZstd`` does the same for zstd files,
with ``zstandard``'s stream reader (its ``decompressobj`` takes no output bound) and a walk over the frames'
headers to tell a file cut short, which that reader reads to its end without a word.
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


class ZstdFrames:
    """A walk over zstd frames' headers (RFC 8878), fed the compressed bytes in any pieces: ``whole`` says whether
    what was fed ends where a frame does. Block contents are skipped by their sizes, not decompressed. Bytes
    that are no frame end the walk (``whole`` False): the decompressor says what is wrong with them."""

    _ZSTD = b"\x28\xb5\x2f\xfd"

    def __init__(self):
        self._buffer = b""
        self._skip = 0  # bytes of content still to pass over
        self._state = "magic"  # magic | header | block | checksum | broken
        self._checksum = False

    @property
    def whole(self) -> bool:
        return self._state == "magic" and self._skip == 0 and not self._buffer

    def feed(self, data: bytes) -> None:
        if self._state == "broken":
            return
        if self._skip:
            passed = min(self._skip, len(data))
            self._skip -= passed
            data = data[passed:]
        self._buffer += data
        while self._state != "broken" and not self._skip and self._step():
            pass

    def _take(self, n: int) -> bytes | None:
        if len(self._buffer) < n:
            return None
        head, self._buffer = self._buffer[:n], self._buffer[n:]
        return head

    def _pass(self, n: int) -> None:
        passed = min(n, len(self._buffer))
        self._buffer, self._skip = self._buffer[passed:], n - passed

    def _step(self) -> bool:
        """One header or block further; False when more bytes are needed."""
        if self._state == "magic":
            if len(self._buffer) < 4:
                return False
            magic = self._buffer[:4]
            if magic == self._ZSTD and len(self._buffer) >= 5:
                descriptor = self._buffer[4]
                single = bool(descriptor & 0x20)
                size = 5 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3] \
                    + ((1 if single else 0), 2, 4, 8)[descriptor >> 6]
                if self._take(size) is None:
                    return False
                self._checksum, self._state = bool(descriptor & 4), "block"
                return True
            if magic == self._ZSTD:
                return False
            if int.from_bytes(magic, "little") & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame
                header = self._take(8)
                if header is None:
                    return False
                self._pass(int.from_bytes(header[4:], "little"))
                return True
            self._state = "broken"
            return False
        if self._state == "block":
            header = self._take(3)
            if header is None:
                return False
            value = int.from_bytes(header, "little")
            kind, size = (value >> 1) & 3, value >> 3
            if kind == 3:
                self._state = "broken"
                return False
            self._pass(1 if kind == 1 else size)
            if value & 1:  # the frame's last block
                self._state = "checksum" if self._checksum else "magic"
            return True
        if self._take(4) is None:  # the content checksum
            return False
        self._state = "magic"
        return True


class _Tee:
    """A raw file whose bytes, as they are read, also go to ``frames``."""

    def __init__(self, raw, frames: ZstdFrames):
        self.raw, self.frames = raw, frames

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.frames.feed(data)
        return data


class BoundedZstd:
    """``BoundedDecompression`` for zstd: ``read(size)`` gives at most ``size`` decompressed bytes, frames one after
    another (skippable ones skipped); ``finished`` says whether the file read so far ends where a frame does (256
    MiB of zeros are 8 kB of zstd; Beam's reader decompressed each 16 MiB of the file in one call, without a bound).
    Errors come out as ``BoundedDecompression``'s do: a read that meets one gives out what came before it (the
    frames before it, and what zstd decoded of the frame it is in before the call that failed), and the next read
    raises the ``ZstdError``."""

    kind = CompressionTypes.ZSTD

    def __init__(self, raw):
        import zstandard

        self._raw = raw
        self._error: Exception | None = None  # met after the bytes the last read gave out
        self._frames = ZstdFrames()
        self._reader = zstandard.ZstdDecompressor().stream_reader(_Tee(raw, self._frames), read_size=_READ,
                                                                   read_across_frames=True, closefd=False)

    @property
    def finished(self) -> bool:
        return self._frames.whole

    def read(self, size: int = -1) -> bytes:
        import zstandard

        if self._error is not None:
            error, self._error = self._error, None
            raise error
        out: list[bytes] = []
        n = 0
        try:
            while size is None or size < 0 or n < size:  # read1: one step of zstd's, which stops at a frame's end
                piece = self._reader.read1(1 << 20 if size is None or size < 0 else size - n)
                if not piece:
                    break
                out.append(piece)
                n += len(piece)
        except zstandard.ZstdError as exc:
            if not out:
                raise
            self._error = exc
        return b"".join(out)

    def close(self):
        self._raw.close()


BOUNDED = (BoundedDecompression, BoundedZstd)  # the types open_input gives for compressed files


def open_input(path: str):
    """``path`` opened for reading, decompressed as its name says, a block at a time: gzip, deflate, bzip2 and xz
    by ``BoundedDecompression``, zstd by ``BoundedZstd``; anything else as stored."""
    kind = CompressionTypes.detect_compression_type(path)
    if kind in BOUNDED_KINDS:
        return BoundedDecompression(FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED), kind)
    if kind == CompressionTypes.ZSTD:
        return BoundedZstd(FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED))
    return FileSystems.open(path)
