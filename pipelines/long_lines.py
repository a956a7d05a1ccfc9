"""Lines too long to be a row, cut out of a text file's bytes before any reader holds them.

A CSV row of 50,000 channels is about half a MiB. A "line" of hundreds of MiB is a file whose line ends are
missing or lost, a blob or a document that is not CSV, or a compressed file that expands without end (a gzip
bomb of one line). Every line reader holds a line whole until its end, with its raw text for the quarantine: a
200 MB line had taken 3.8 GB, and a gzip bomb of one line grew until the machine's memory ended (found by the bug
hunt of pathological inputs).

``LineCutter`` sits between a file's bytes and its readers (``sources.CheckedStream``). Lines up to
``MAX_LINE_BYTES`` pass as they are. A longer line is replaced, in the bytes the readers see, by a marker: a short
line of its own, whose line end is the long line's, so every line keeps its number. The reader quarantines the
marker's line as ``line_too_long``, with the long line's first ``KEEP_BYTES`` bytes as its raw text
(``LongLine``). The rest of the line is dropped as it is read, so no more than about ``MAX_LINE_BYTES`` of it is
ever held.

A line ends at ``\\n``, ``\\r\\n`` or a lone ``\\r``, as the line reader counts lines. The cutter works on bytes,
so it is used only for text whose line ends are those bytes: UTF-8 (with or without a BOM), cp1252 and the like;
UTF-16 and UTF-32 text goes through it re-encoded as UTF-8 (``sources.TextLines``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

MAX_LINE_BYTES = 16 << 20  # 16 MiB: about 30 times the row of a 50,000-channel wide file
KEEP_BYTES = 4096  # of a cut line, kept as its raw text


@dataclass(frozen=True)
class LongLine:
    """A line cut out of a file: its length in bytes (line end not counted) and its first bytes."""

    length: int
    head: bytes


def _first_line_end(data: bytes, start: int) -> int:
    """Index of the first ``\\n`` or ``\\r`` of ``data`` from ``start`` on, -1 when there is none."""
    ends = [i for i in (data.find(b"\n", start), data.find(b"\r", start)) if i >= 0]
    return min(ends) if ends else -1


def _last_line_end(data: bytes, start: int) -> int:
    """Index of the last ``\\n`` or ``\\r`` of ``data`` at or after ``start``, -1 when there is none."""
    return max(data.rfind(b"\n", start), data.rfind(b"\r", start))


class LineCutter:
    """Feed a file's bytes in order (``feed``), then ``finish``; what they return, joined, is the file with each
    line longer than ``max_line_bytes`` replaced by a marker line. ``long_line(text)`` tells whether a line the
    reader got is such a marker, and gives the line it stands for.

    Bytes are given out only up to a line end: the last line read so far is held back until its end comes, or
    until it is too long (then it is dropped as it is read)."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES, keep_bytes: int = KEEP_BYTES):
        if not 0 < keep_bytes <= max_line_bytes:
            raise ValueError("keep_bytes must be positive and at most max_line_bytes")
        self.max_line_bytes = max_line_bytes
        self.keep_bytes = keep_bytes
        # NUL makes the marker a line no reader takes as a row; the random part, one no file holds by chance
        self.marker = f"\x00seqwatch-line-too-long-{os.urandom(8).hex()}-"
        self._markers = re.compile(re.escape(self.marker) + r"\d+")
        self.cut: dict[str, LongLine] = {}  # marker line (line end left out) -> the line it stands for
        self._held: list[bytes] = []  # the current line so far, no line end in it
        self._held_size = 0
        self._dropped: int | None = None  # while a line is too long: its bytes so far
        self._head = b""

    def long_line(self, text) -> LongLine | None:
        """The line a marker stands for, given the marker's line as read (str or bytes, line end kept or not), or
        a record of several lines joined that holds one (a quoted field's line breaks: the first such line); None
        for any other text."""
        if not self.cut:
            return None
        if isinstance(text, bytes):
            text = text.decode("latin-1")
        found = self.cut.get(text.rstrip("\r\n"))
        if found is None and self.marker in text:
            match = self._markers.search(text)
            found = None if match is None else self.cut.get(match.group())
        return found

    def restored(self, text: str, decode) -> str:
        """``text`` with each marker in it replaced by the first bytes of the line it stands for (``decode``d)."""
        if not self.cut or self.marker not in text:
            return text
        return self._markers.sub(lambda m: decode(self.cut[m.group()].head), text)

    def feed(self, data: bytes) -> bytes:
        """The bytes of ``data`` (with those held from before) that can be given out now."""
        out: list[bytes] = []
        for start in range(0, len(data), self.max_line_bytes):  # a line inside a piece is never too long
            self._feed_piece(data[start:start + self.max_line_bytes], out)
        return b"".join(out)

    def finish(self) -> bytes:
        """At the end of the file: its last line when no line end closed it, or that line's marker."""
        if self._dropped is not None:
            return self._close_cut()
        rest = b"".join(self._held)
        self._held, self._held_size = [], 0
        return rest

    def _feed_piece(self, piece: bytes, out: list) -> None:
        position = 0
        if self._dropped is not None:  # inside a line that is too long: drop up to its end
            end = _first_line_end(piece, 0)
            if end < 0:
                self._dropped += len(piece)
                return
            self._dropped += end
            out.append(self._close_cut())
            position = end
        last = _last_line_end(piece, position)
        if last < 0:
            self._hold(piece[position:])
            return
        first = _first_line_end(piece, position)
        if self._held_size + first - position > self.max_line_bytes:  # the held line ends here, too long
            self._hold(piece[position:first])
            out.append(self._close_cut())
            position = first
        out.extend(self._held)
        out.append(piece[position:last + 1])
        self._held, self._held_size = [], 0
        self._hold(piece[last + 1:])

    def _hold(self, data: bytes) -> None:
        if not data:
            return
        self._held.append(data)
        self._held_size += len(data)
        if self._held_size > self.max_line_bytes:  # too long: keep its head, drop the rest from here on
            head, size = [], 0
            for part in self._held:
                head.append(part[:self.keep_bytes - size])
                size += len(head[-1])
                if size >= self.keep_bytes:
                    break
            self._head = b"".join(head)
            self._dropped, self._held, self._held_size = self._held_size, [], 0

    def _close_cut(self) -> bytes:
        marker = f"{self.marker}{len(self.cut)}"
        self.cut[marker] = LongLine(self._dropped, self._head)
        self._dropped = None
        self._head = b""
        return marker.encode("latin-1")
