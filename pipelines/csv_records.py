"""Which lines of a CSV file make one record: a quoted field may hold line breaks (a two-line note).

seqwatch reads CSV files line by line or in chunks of lines (``csv_blocks``); a record whose quoted field holds a
line break spans several lines, which are joined here before the fields are split. A quote opens a quoted
field only at the start of a field, ``""`` inside one is a quote, and a quote elsewhere is text, as Python's
``csv`` module reads them (which then splits the joined record).

Lines are joined only into a record that has the header's number of fields. Where a quote opens a field that no
line within ``MAX_RECORD_LINES`` closes, the file ends first, or the lines it would join do not make one row of
the header's fields, the quote is taken as a stray one: its line stays a record of its own (a malformed row, as
before quoted line breaks were read) and the lines after it are read afresh, so one stray quote cannot swallow
the rows after it into one quarantined record.

Reading where records end costs about 2 µs for each line that holds a quote (a file with every field quoted: 0.43 s
for 200,000 lines, on a path that costs about 9 µs a line anyway); lines without quotes cost nothing. Lines that
each open a quoted field that no line closes (``ts,1,"a","a``) are malformed rows; past ``_MANY_OPENINGS`` of them
in a chunk their closings are found in one pass, not by a scan of the next 100 lines each (20,000 such lines:
0.45 s in bulk, 0.28 s line by line, against 4.2 s and 8.8 s). Where such lines each find a closing line up to 99
lines on that does not make them a row of the header's fields, each is parsed as a row up to it: about 30 µs a
line (2.9 s per 100,000 lines, measured by a review), the bound of this module's cost.
"""
from __future__ import annotations

import csv
import functools
import re
from typing import Iterable, Iterator, Sequence

import numpy as np

MAX_RECORD_LINES = 100  # the most lines one record may span
_MANY_OPENINGS = 64  # more lines than this that open a quoted field in one call: their closings are found at once


def ends_in_quotes(line, sep: str, inside: bool = False) -> bool:
    """Whether ``line`` (str or bytes, without its line end) ends inside a quoted field, reading it from inside
    one when ``inside``."""
    if isinstance(line, str):
        return _open_pattern(sep, False).fullmatch('"' + line if inside else line) is not None
    return _open_pattern(sep, True).fullmatch(b'"' + line if inside else line) is not None


@functools.lru_cache(maxsize=None)
def _open_pattern(sep: str, as_bytes: bool) -> re.Pattern:
    """A line that ends inside a quoted field, read from outside one: whole fields, each quoted (``""`` inside
    is a quote; text after the closing quote runs to the separator) or unquoted (its quotes are text), then a
    quoted field that does not close. One pass of ``re`` (a loop over the quotes in Python took 6 µs a line)."""
    s = re.escape(sep)
    # possessive: "" inside a quoted field is always a quote, never a closing quote and an opening one
    field = f'(?:"(?:[^"]|"")*+"[^{s}]*+|[^"{s}][^{s}]*+|)'
    pattern = f'(?:{field}{s})*+"(?:[^"]|"")*+'
    return re.compile(pattern.encode() if as_bytes else pattern, re.DOTALL)


def _strip_end(line):
    return line.rstrip("\r\n") if isinstance(line, str) else line.rstrip(b"\r\n")


def _fields(lines: Sequence, sep: str) -> int:
    """How many fields the csv module reads in ``lines`` (line ends left out) joined by line breaks (0 when their
    quoting cannot be read)."""
    text = "\n".join(line if isinstance(line, str) else line.decode("latin-1") for line in lines)
    try:
        return len(next(csv.reader([text], delimiter=sep, strict=True)))
    except (csv.Error, StopIteration):
        return 0


def record_spans(lines: Sequence, sep: str, n_fields: int | None, final: bool = True,
                 quoted: Iterable[int] | None = None) -> tuple[list[tuple[int, int]], int | None]:
    """The records of ``lines`` (line ends kept or not) that span more than one line, as ``(first line, number of
    lines)``, and, unless ``final``, the index of the first line of a record that the end of ``lines`` leaves open
    (None when none: ``lines`` is a chunk, and the next chunk may close it). ``n_fields``: the header's number of
    fields, which a record must have to be joined (None: any number).

    ``quoted``: the indices of the lines that hold a quote, ascending, when the caller knows them (a line without
    one changes nothing outside a quoted field and continues one inside it)."""
    as_bytes = bool(len(lines)) and not isinstance(lines[0], str)
    marked = ([i for i, line in enumerate(lines) if (b'"' if as_bytes else '"') in line] if quoted is None
              else list(quoted))
    texts = lines.texts(marked) if hasattr(lines, "texts") else [_strip_end(lines[i]) for i in marked]
    closes: list = [None] * len(marked)  # whether each quoted line closes a quoted field it starts inside of

    def closing(m: int) -> bool:
        if closes[m] is None:  # each line is read from inside at most once, however many records reach it
            closes[m] = not ends_in_quotes(texts[m], sep, inside=True)
        return closes[m]

    # the quoted lines that end inside quotes when read from outside (few): each may start a record
    opens = _open_pattern(sep, as_bytes).fullmatch
    starting = [k for k, text in enumerate(texts) if opens(text)]
    next_closing = None
    if len(starting) > _MANY_OPENINGS:  # e.g. every line ends in a broken quote: find each one's closing at once
        flags = np.fromiter((closing(m) for m in range(len(marked))), dtype=bool, count=len(marked))
        at = np.where(flags, np.arange(len(marked)), len(marked))
        next_closing = np.minimum.accumulate(at[::-1])[::-1].tolist() + [len(marked)]
    spans: list[tuple[int, int]] = []
    done = 0  # the lines before this one belong to records found
    for k in starting:
        first = marked[k]
        if first < done:
            continue
        # open: the record runs to the next quoted line that closes it
        last, m = None, k + 1
        if next_closing is not None:
            m = next_closing[k + 1]
            if m < len(marked) and marked[m] - first < MAX_RECORD_LINES:
                last = marked[m]
        else:
            while m < len(marked) and marked[m] - first < MAX_RECORD_LINES:
                if closing(m):
                    last = marked[m]
                    break
                m += 1
        if last is not None and (n_fields is None or _fields(
                [_strip_end(lines[i]) for i in range(first, last + 1)], sep) == n_fields):
            spans.append((first, last - first + 1))
            done = last + 1
            continue
        if not final and len(lines) - first < MAX_RECORD_LINES and m == len(marked):
            return spans, first  # the end of the chunk came before the record could close
        # a stray quote: its line stays alone, and the next quoted line is read afresh
    return spans, None


def join_records(numbered: Iterable[tuple[int, str]], sep: str, n_fields: int | None) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each record of ``numbered`` (``(number, line)`` pairs with line ends kept): a
    record spanning several lines is one text with its inner line breaks, numbered by its first line; every
    other line as it was. Line ends are kept.

    From a line that opens a quoted field on, lines are settled in blocks of ``2 * MAX_RECORD_LINES`` (at most
    ``MAX_RECORD_LINES - 1`` of them, an open record, wait for the next block), so each line is looked at about
    twice however its quotes fall."""
    buffer: list[tuple[int, str]] = []
    for item in numbered:
        if not buffer and ('"' not in item[1] or not ends_in_quotes(_strip_end(item[1]), sep)):
            yield item
            continue
        buffer.append(item)
        if len(buffer) >= 2 * MAX_RECORD_LINES:
            yield from _settle(buffer, sep, n_fields, final=False)
    yield from _settle(buffer, sep, n_fields, final=True)


def _settle(buffer: list, sep: str, n_fields: int | None, final: bool) -> Iterator[tuple[int, str]]:
    """Gives out the records of ``buffer`` up to an open one at its end (unless ``final``), keeping the rest."""
    spans, open_from = record_spans([line for _, line in buffer], sep, n_fields, final=final)
    done = len(buffer) if open_from is None else open_from
    position = 0
    for first, count in spans:
        yield from buffer[position:first]
        yield buffer[first][0], "".join(line for _, line in buffer[first:first + count])
        position = first + count
    yield from buffer[position:done]
    del buffer[:done]
