"""The bulk CSV path (``pipelines/csv_blocks.py``) reads exactly what the line reader reads: the same readings,
line numbers, quarantined records with raw text and reason, and counts, on files that mix clean chunks with
every oddity the line reader handles."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seqwatch.pipelines.csv_blocks import LoneCrAsLf, byte_chunks, data_start, split_chunk
from seqwatch.pipelines.parsing import FileLayout
from seqwatch.pipelines.sources import FileReader, _sep_hint, decode_line, read_header
from seqwatch.schemas.mapping import InputMapping


def _wide_lines(n: int, start: int = 0, sep: str = ",") -> list[str]:
    return [sep.join([f"2026-01-05T00:{(start + i) // 60:02d}:{(start + i) % 60:02d}Z", f"{i * 1.5:g}", f"{-i}"])
            for i in range(n)]


ODD_LINES = [
    "",  # blank
    ",,",  # separators only
    "   ",  # spaces only
    '"2026-01-05T01:00:00Z","1.0","2"',  # quoted
    '"2026-01-05T01:00:01Z,1.0,2',  # broken quoting
    "2026-01-05T01:00:02Z,1.0",  # too few fields
    "2026-01-05T01:00:03Z,1.0,2,3",  # too many fields
    "2026-01-05T01:00:04Z,abc,2",  # bad value
    "not a time,1,2",  # bad timestamp
    "2026-01-05T01:00:05Z,\x00\x01\x02,2",  # binary junk
    "2026-01-05T01:00:06Z,1.0,2\x0c",  # a control byte
    "2026-01-05T01:00:07Z,1.0, 2 ",  # padded fields
]


def _write(path, header: str, lines: list[str], newline: str = "\n", encoding: str = "utf-8",
           trailing: bool = True, prefix: bytes = b"") -> str:
    text = newline.join([header] + lines) + (newline if trailing else "")
    path.write_bytes(prefix + text.encode(encoding, errors="surrogateescape"))
    return str(path)


def _read(path: str, chunk_rows: int, line_by_line: bool):
    mapping = InputMapping(format="wide", entity={"value": "e1"})
    reader = FileReader(mapping, "run", chunk_rows=chunk_rows)
    header, sep = read_header(path)
    layout = FileLayout.resolve(header, mapping, path)
    chunks = (reader._csv_line_chunks(path, layout, sep) if line_by_line else reader._csv_chunks(path, layout, sep))
    frames, quarantine, count = [], [], 0
    for batch, bad, n in chunks:
        frames.append(batch.frame)
        quarantine += [tuple(q) for q in bad]
        count += n
    readings = pd.concat(frames, ignore_index=True).astype({"entity_id": object, "channel": object, "source": object})
    return readings.sort_values(["line", "channel"]).reset_index(drop=True), sorted(quarantine), count


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 7, 1000])
def test_mixed_files_read_the_same_in_bulk_and_line_by_line(tmp_path, newline, chunk_rows):
    rng = np.random.default_rng(chunk_rows)
    lines = _wide_lines(40)
    for odd in ODD_LINES:  # scatter the odd lines among clean runs
        lines.insert(int(rng.integers(0, len(lines) + 1)), odd)
    lines.insert(5, "2026-01-05T02:00:00Z,1,2".encode().decode() + "\udce9")  # invalid UTF-8 byte (cp1252 é)
    path = _write(tmp_path / "mixed.csv", "timestamp,flow,temp", lines, newline=newline)
    bulk, line = _read(path, chunk_rows, False), _read(path, chunk_rows, True)
    pd.testing.assert_frame_equal(bulk[0], line[0])
    assert bulk[1] == line[1] and bulk[2] == line[2]
    assert len(bulk[1]) >= 6 and len(bulk[0]) > 80  # both kinds of output are there to compare


@pytest.mark.parametrize("case", ["sep-hint", "leading-blank-lines", "no-trailing-newline", "lone-cr", "bom",
                                  "header-only", "semicolon", "tab"])
def test_file_shapes_read_the_same_in_bulk_and_line_by_line(tmp_path, case):
    header, lines, kwargs = "timestamp,flow,temp", _wide_lines(25), {}
    if case == "sep-hint":
        header = "sep=;\ntimestamp;flow;temp"
        lines = _wide_lines(25, sep=";")
    elif case == "leading-blank-lines":
        header = "\n\n  \ntimestamp,flow,temp"
    elif case == "no-trailing-newline":
        kwargs["trailing"] = False
    elif case == "lone-cr":
        kwargs["newline"] = "\r"
    elif case == "bom":
        kwargs["prefix"] = b"\xef\xbb\xbf"
    elif case == "header-only":
        lines = []
    elif case == "semicolon":
        header, lines = "timestamp;flow;temp", _wide_lines(25, sep=";")
    elif case == "tab":
        header, lines = "timestamp\tflow\ttemp", _wide_lines(25, sep="\t")
    path = _write(tmp_path / f"{case}.csv", header, lines, **kwargs)
    for chunk_rows in (4, 1000):
        bulk, line = _read(path, chunk_rows, False), _read(path, chunk_rows, True)
        pd.testing.assert_frame_equal(bulk[0], line[0])
        assert bulk[1] == line[1] and bulk[2] == line[2] == 2 * len(lines)


def test_clean_lines_are_split_by_arrow_and_odd_ones_are_left_to_the_line_reader():
    lines = _wide_lines(5)
    clean = ("\n".join(lines) + "\n").encode()
    split = split_chunk(clean, ",", 3)
    assert [list(c) for c in split.columns] == [[line.split(",")[k] for line in lines] for k in range(3)]
    assert split.clean[split.starts[2]:split.ends[2]].decode() == lines[2]
    assert split.odd == [] and split.clean_index.tolist() == [0, 1, 2, 3, 4] and split.lines == 5
    crlf = split_chunk(clean.replace(b"\n", b"\r\n"), ",", 3)
    assert crlf.clean[crlf.starts[1]:crlf.ends[1]].decode() == lines[1] and crlf.odd == []

    line_level = [odd for odd in ODD_LINES if "abc" not in odd and "not a time" not in odd and " 2 " not in odd]
    assert len(line_level) == 9
    odd_bytes = [odd.encode("latin-1") for odd in line_level] + ["2026-01-05T02:00:00Z,1,\xe9".encode("latin-1")]
    mixed = b"".join(bytes(line, "ascii") + b"\n" + odd + b"\n" for line, odd in zip(_wide_lines(10), odd_bytes))
    split = split_chunk(mixed, ",", 3)
    assert split.odd == [odd + b"\n" for odd in odd_bytes]
    assert split.odd_index.tolist() == list(range(1, 20, 2)) and split.clean_index.tolist() == list(range(0, 20, 2))
    assert list(split.columns[0]) == [line.split(",")[0] for line in _wide_lines(10)] and split.lines == 20
    for fine in ("2026-01-05T01:00:04Z,abc,2", "not a time,1,2", "2026-01-05T01:00:07Z,1.0, 2 ",
                 "2026-01-05T01:00:08Z,1,K\u00fchl"):
        assert split_chunk(clean + fine.encode() + b"\n", ",", 3).odd == []  # parse_rows judges the fields
    assert split_chunk(clean.replace(b"\n", b"\r"), ",", 3) is None  # lone CR line ends: all line by line
    assert split_chunk(clean, ";", 3).clean_index.size == 0  # another separator: every line has 1 field


def test_chunks_end_at_newlines_and_keep_every_byte():
    data = b"".join(f"line {i}\n".encode() for i in range(10)) + b"tail"

    class Stream:
        def __init__(self, payload):
            self.payload = payload

        def read(self, n):
            out, self.payload = self.payload[:n], self.payload[n:]
            return out

    chunks = list(byte_chunks(Stream(data[7:]), data[:7], chunk_lines=3, block=5))
    assert b"".join(chunks) == data
    assert [c.count(b"\n") for c in chunks] == [3, 3, 3, 1] and chunks[-1].endswith(b"tail")

    rng = np.random.default_rng(0)
    for _ in range(200):  # random texts, first bytes, chunk sizes and read sizes
        data = bytes(rng.choice(list(b"ab\n"), size=int(rng.integers(0, 300))).tolist())
        head = int(rng.integers(0, len(data) + 1))
        lines = int(rng.integers(1, 9))
        chunks = list(byte_chunks(Stream(data[head:]), data[:head], chunk_lines=lines,
                                  block=int(rng.integers(1, 40))))
        assert b"".join(chunks) == data and all(chunks)
        assert all(c.count(b"\n") == lines and c.endswith(b"\n") for c in chunks[:-1])
        assert chunks == [] or chunks[-1].count(b"\n") <= lines


def test_data_start_follows_the_line_readers_header_rules():
    head = b"\n  \nsep=;\r\ntimestamp;flow\r\n2026-01-05T00:00:00Z;1\r\n"
    offset, number = data_start(head, _sep_hint, decode_line)
    assert head[offset:].startswith(b"2026") and number == 5
    assert data_start(b"timestamp,flow", _sep_hint, decode_line) is None  # the header line does not end
    assert data_start(b"timestamp,flow\r", _sep_hint, decode_line) is None  # maybe "\r\n"


def test_a_gzipped_csv_reads_like_the_plain_file(tmp_path):
    import gzip

    lines = _wide_lines(30)
    lines.insert(7, "2026-01-05T03:00:00Z,1.0")  # one malformed line
    plain = _write(tmp_path / "plant.csv", "timestamp,flow,temp", lines)
    packed = tmp_path / "plant.csv.gz"
    packed.write_bytes(gzip.compress((tmp_path / "plant.csv").read_bytes()))
    mapping = InputMapping(format="wide", entity={"value": "e1"})
    out = {}
    for name, path in (("plain", plain), ("gz", str(packed))):
        chunks = list(FileReader(mapping, "run", chunk_rows=8).read(path))
        frame = pd.concat([c[0].frame for c in chunks], ignore_index=True)
        out[name] = (frame.drop(columns="source").sort_values(["line", "channel"]).reset_index(drop=True),
                     sorted((q.line, q.reason_code, q.raw) for c in chunks for q in c[1]), sum(c[2] for c in chunks))
    pd.testing.assert_frame_equal(out["plain"][0], out["gz"][0])
    assert out["plain"][1:] == out["gz"][1:] and out["gz"][2] == 62 and len(out["gz"][1]) == 1


def _same_split(a, b) -> None:
    assert a.lines == b.lines
    assert a.clean_index.tolist() == b.clean_index.tolist() and a.odd_index.tolist() == b.odd_index.tolist()
    assert a.odd == b.odd
    assert [list(c) for c in a.columns] == [list(c) for c in b.columns]
    assert ([a.clean[s:e] for s, e in zip(a.starts, a.ends)] == [b.clean[s:e] for s, e in zip(b.starts, b.ends)])


@pytest.mark.parametrize("seed", range(40))
def test_plain_ascii_chunks_split_by_arrow_alone_as_by_the_byte_pass(seed):
    """A chunk of ASCII without quote or control bytes is split by Arrow alone (``_split_plain_ascii``): the
    same clean and odd lines, fields and raw text as the numpy pass over its bytes that every other chunk takes
    (``_split_any``), over random lines of fields, blanks, tabs and separators, LF or CRLF, with or without a
    last newline."""
    from seqwatch.pipelines.csv_blocks import _split_any, _split_plain_ascii

    rng = np.random.default_rng(seed)
    sep = str(rng.choice([",", ";", "\t", "|"]))
    n_fields = int(rng.integers(1, 5))
    pieces = ["", " ", "\t", "  \t ", "a", "1.5", "x y", "2026-01-05T00:00:00Z", "-", "e+5"]
    lines = []
    for _ in range(int(rng.integers(1, 60))):
        fields = [str(rng.choice(pieces)) for _ in range(max(1, n_fields + int(rng.choice([0, 0, 0, -1, 1, 2]))))]
        lines.append(sep.join(fields))
    newline = "\r\n" if rng.random() < 0.3 else "\n"
    chunk = (newline.join(lines) + (newline if rng.random() < 0.8 else "")).encode()
    fast, general = _split_plain_ascii(chunk, sep, n_fields), _split_any(chunk, sep, n_fields)
    assert fast is not None and general is not None
    _same_split(fast, general)
    assert split_chunk(chunk, sep, n_fields) is not None


class _Pieces:
    def __init__(self, pieces):
        self.pieces = list(pieces)

    def read(self, size=-1):
        return self.pieces.pop(0) if self.pieces else b""


def test_lone_cr_line_ends_are_read_as_lf_in_chunks_of_chunk_rows_lines(tmp_path):
    """``byte_chunks`` looks for ``\n`` only: a file whose lines end in a lone ``\r`` was one chunk, held whole
    (a 58 MB file took 1.7 GB and 10.6 s). Its lone CRs are now read as LF, a CRLF left as it is, a ``\r`` at the
    end of a block held until the next byte says which it is; the readings and their line numbers are those of
    the line reader."""
    source = LoneCrAsLf(_Pieces([b"a\rb\r", b"\nc\r", b"d\r", b"e\r\r"]))
    assert source.feed(b"h\rx\r") == b"h\nx"  # the first block, read before; its last CR held
    out = [source.read(99) for _ in range(6)]
    assert b"".join(out) == b"\na\nb\r\nc\nd\ne\n\n" and out[-1] == b""

    lines = _wide_lines(40)
    lines[30:30] = ['2026-01-05T04:00:00Z,1,"2\rx"', "2026-01-05T05:00:00Z,1", "2026-01-05T05:00:01Z,1,2\r\n"]
    path = _write(tmp_path / "mac.csv", "timestamp,flow,temp", lines, newline="\r")
    mapping = InputMapping(format="wide", entity={"value": "e1"})
    header, sep = read_header(path)
    layout = FileLayout.resolve(header, mapping, path)
    batches = [len(batch.frame) for batch, _, _ in FileReader(mapping, "run", chunk_rows=7)._csv_chunks(
        path, layout, sep)]
    assert len(batches) > 6 and max(batches) <= 14  # chunks of 7 lines, of 2 readings each, not the whole file
    bulk, line = _read(path, 7, False), _read(path, 7, True)
    pd.testing.assert_frame_equal(bulk[0], line[0])
    assert bulk[1] == line[1] and bulk[2] == line[2] == 86
    # a quoted field's line break kept as the file has it; a CRLF among lone CRs is one line end
    assert sorted((q[2], q[0], q[6]) for q in bulk[1]) == [
        (32, '2026-01-05T04:00:00Z,1,"2\rx"', "parse_value"), (34, "2026-01-05T05:00:00Z,1", "malformed_row")]
    assert bulk[0]["line"].max() == 46  # the CRLF and the CR after it: one line end each, a blank line between
