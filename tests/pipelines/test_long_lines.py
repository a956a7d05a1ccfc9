"""Lines too long to be a row (``seqwatch.pipelines.long_lines``): cut out of a file's bytes as they are read,
quarantined as ``line_too_long`` with their first bytes, every other line read as before and numbered as before.
Found by the bug hunt of pathological inputs: a 200 MB line without a line end had taken 3.8 GB, and a gzip bomb
of one line grew until the machine's memory ended."""
from __future__ import annotations

import gzip
import json
import lzma
import random
import re
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
import zstandard

from seqwatch.pipelines.long_lines import KEEP_BYTES, MAX_LINE_BYTES, LineCutter, LongLine
from seqwatch.pipelines.parsing import SchemaDriftError
from seqwatch.pipelines.sources import FileReader, read_header
from seqwatch.schemas.elements import REASON_CODES
from seqwatch.schemas.mapping import InputMapping


def _cut(data: bytes, blocks, max_line_bytes: int, keep_bytes: int) -> tuple[bytes, LineCutter]:
    """``data`` fed to a cutter in pieces of the sizes ``blocks`` (then the rest), and the cutter."""
    cutter, out, position = LineCutter(max_line_bytes, keep_bytes), [], 0
    for size in blocks:
        out.append(cutter.feed(data[position:position + size]))
        position += size
    out.append(cutter.feed(data[position:]))
    out.append(cutter.finish())
    return b"".join(out), cutter


def _named(out: bytes, cutter: LineCutter) -> bytes:
    """``out`` with each marker written ``<n>``."""
    for n, marker in enumerate(cutter.cut):
        out = out.replace(marker.encode("latin-1"), b"<%d>" % n)
    return out


@pytest.mark.parametrize("blocks", [[], [1] * 60, [3, 7, 11], [5] * 12])
def test_lines_over_the_limit_become_markers_that_keep_their_line_ends(blocks):
    """Limit 10 bytes, 4 kept: the 20 x's (ended by \\r\\n) and the unterminated last line of 15 bytes are cut; a
    line of exactly 10 bytes is not. However the bytes come in, the same lines come out."""
    data = b"abc\n" + b"x" * 20 + b"\r\nok\n0123456789\nlast0123456789x"
    out, cutter = _cut(data, blocks, 10, 4)
    assert _named(out, cutter) == b"abc\n<0>\r\nok\n0123456789\n<1>"
    assert list(cutter.cut.values()) == [LongLine(20, b"xxxx"), LongLine(15, b"last")]
    first = next(iter(cutter.cut))
    assert cutter.long_line(first + "\r\n") == LongLine(20, b"xxxx")
    assert cutter.long_line(first.encode("latin-1")) == LongLine(20, b"xxxx")
    assert cutter.long_line("ok") is None and cutter.long_line(first[:-1]) is None
    assert cutter.long_line(f'a,"b\n{first}\nc"') == LongLine(20, b"xxxx")  # a record of lines joined
    assert cutter.restored(f'a,"b\n{first}\nc"', bytes.decode) == 'a,"b\nxxxx\nc"'


def test_a_lone_cr_ends_a_line_and_nothing_is_held_back_past_a_line_end():
    cutter = LineCutter(8, 2)
    assert cutter.feed(b"a,1\rb,2\r") == b"a,1\rb,2\r"  # whole lines go out at once
    assert cutter.feed(b"c,3") == b""  # the line goes on: held back
    assert cutter.feed(b"\n") == b"c,3\n"
    assert cutter.feed(b"0123456789") == b""  # over the limit: dropped as it comes
    assert cutter.feed(b"abc") == b""
    out = cutter.feed(b"\r\nd,4\n")
    marker = next(iter(cutter.cut))
    assert out == marker.encode("latin-1") + b"\r\nd,4\n" and cutter.cut[marker] == LongLine(13, b"01")
    assert cutter.finish() == b""


def test_any_bytes_in_any_pieces_come_out_as_the_same_lines_cut_alike():
    """Against a reference that splits the whole data at its line ends at once (random lines of a, b, comma and
    line ends, random pieces; limit 8 bytes, 3 kept)."""
    rng = random.Random(7)
    for _ in range(2000):
        data = b"".join(bytes(rng.choice(b"ab,\r\n") for _ in range(rng.randint(0, 30)))
                        for _ in range(rng.randint(0, 6)))
        out, cutter = _cut(data, [rng.randint(1, 12) for _ in range(rng.randint(0, 6))], 8, 3)
        parts, expected, cut = re.split(rb"(\r\n|\r|\n)", data), b"", []
        for i in range(0, len(parts), 2):
            line, end = parts[i], parts[i + 1] if i + 1 < len(parts) else b""
            if len(line) > 8:
                line = b"<%d>" % len(cut)
                cut.append(LongLine(len(parts[i]), parts[i][:3]))
            expected += line + end
        assert _named(out, cutter) == expected, data
        assert list(cutter.cut.values()) == cut, data


def _readings_csv(n_rows: int) -> list[bytes]:
    lines = [b"entity_id,channel,timestamp,value\n"]
    start = pd.Timestamp("2026-01-05", tz="UTC")
    for i in range(n_rows):
        lines.append(f"pump-01,flow,{(start + pd.Timedelta(seconds=10 * i)).isoformat()},{100 + i % 7}\n".encode())
    return lines


def _read(path, mapping=InputMapping()):
    batches = list(FileReader(mapping, "test").read(str(path)))
    frames = pd.concat([b.frame for b, _, _ in batches], ignore_index=True)
    quarantined = [q for _, bad, _ in batches for q in bad]
    return frames, quarantined, sum(n for _, _, n in batches)


@pytest.mark.parametrize("kind", ["plain", "gzip", "utf-8 with a BOM (read line by line)", "no line end after it",
                                  "utf-16 (cut as UTF-8)", "utf-16-le without a BOM", "utf-32"])
def test_a_line_over_16_mib_is_quarantined_with_its_head_and_the_rows_after_it_keep_their_numbers(tmp_path, kind):
    lines = _readings_csv(40)
    long = b"pump-01,flow,2026-01-05T00:10:00Z," + b"9" * MAX_LINE_BYTES
    at = len(lines) if kind == "no line end after it" else 20  # index in lines: the file's line at + 1
    lines.insert(at, long + (b"" if at == len(lines) else b"\r\n"))
    data = b"".join(lines)
    path = tmp_path / "readings.csv"
    if kind == "gzip":
        path = tmp_path / "readings.csv.gz"
        path.write_bytes(gzip.compress(data, compresslevel=1))
    elif kind.startswith(("utf-16", "utf-32")):  # a line's length and first bytes are counted in UTF-8
        path.write_bytes(data.decode().encode(kind.split()[0]))
    else:
        path.write_bytes((b"\xef\xbb\xbf" if kind.startswith("utf-8") else b"") + data)
    frames, quarantined, records_in = _read(path)
    assert records_in == 41 and len(frames) == 40 and len(quarantined) == 1
    record = quarantined[0]
    assert (record.reason_code, record.line, record.records) == ("line_too_long", at + 1, 1)
    assert record.raw == long[:KEEP_BYTES].decode()
    assert record.reason == (f"the line is {len(long):,} bytes long, more than a row can be (16 MiB), as where line "
                             f"ends are missing or a part of the file is not CSV text; its first 4,096 bytes are "
                             f"kept as its raw text")
    assert record.reason_code in REASON_CODES
    # the rows around it keep the line numbers they have in the file
    numbers = sorted(frames["line"].tolist())
    assert numbers == [n for n in range(2, 43) if n != at + 1]


@pytest.mark.parametrize("layout", ["plain", "utf-8 with a BOM (read line by line)", "lone CR line ends"])
def test_a_quoted_record_over_lines_that_holds_a_long_line_is_quarantined_as_too_long(tmp_path, layout):
    """Found by the bug hunt: a quoted field's line breaks joined the marker into a record, quarantined as binary
    data with the marker as its raw text."""
    lines = _readings_csv(10)
    lines[5:5] = [b'pump-01,"flow\n', b"x" * (MAX_LINE_BYTES + 1) + b"\n", b'more",2026-01-05T00:10:00Z,1.0\n']
    data = b"".join(lines)
    if layout == "lone CR line ends":
        data = data.replace(b"\n", b"\r")
    path = tmp_path / "readings.csv"
    path.write_bytes((b"\xef\xbb\xbf" if layout.startswith("utf-8") else b"") + data)
    frames, quarantined, records_in = _read(path)
    assert records_in == 11 and len(frames) == 10
    [record] = quarantined
    end = "\r" if layout == "lone CR line ends" else "\n"
    assert (record.reason_code, record.line) == ("line_too_long", 6)
    assert record.raw == f'pump-01,"flow{end}{"x" * KEEP_BYTES}{end}more",2026-01-05T00:10:00Z,1.0'
    assert sorted(frames["line"]) == [2, 3, 4, 5, 9, 10, 11, 12, 13, 14]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32-be"])
def test_a_header_over_16_mib_is_refused_as_not_csv_text(tmp_path, encoding):
    path = tmp_path / "blob.csv"
    bom = "\ufeff" if encoding == "utf-32-be" else ""  # "utf-16" writes one of its own
    path.write_bytes((bom + "x" * (MAX_LINE_BYTES + 5)).encode(encoding))
    with pytest.raises(SchemaDriftError, match=r"^blob.csv does not look like a CSV text file: its first line is "
                                               r"16,777,221 bytes long, more than a row can be \(16 MiB\), as in a "
                                               r"file without line ends$"):
        read_header(str(path))


@pytest.mark.slow
def test_a_run_over_a_gzip_bomb_of_one_line_and_a_file_with_a_40_mb_line(small_model_dir, tmp_path):
    """``seqwatch run`` as the user runs it: the 40 MB line is one quarantined record among the file's readings;
    the bomb (0.5 MB of gzip, 512 MiB of one line) is one quarantined record; every count reconciles."""
    from seqwatch.models.synthetic import generate_sensor_data

    readings, _ = generate_sensor_data(n_entities=1, n_steps=300, seed=11)
    path = tmp_path / "pumps.csv"
    readings.to_csv(path, index=False)
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(100, b"pump-00,flow,2026-01-05 00:16:30+00:00," + b"7" * (40 << 20) + b"\n")
    path.write_bytes(b"".join(lines))
    bomb = tmp_path / "bomb.csv.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(lines[0])
        for _ in range(32):
            f.write(b"0" * (16 << 20))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "run", "--input", str(path), "--input",
                          str(bomb), "--model-dir", str(small_model_dir), "--output", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records_in"] == len(readings) + 2
    assert manifest["records_scored"] + manifest["records_quarantined"] == manifest["records_in"]
    quarantine = pq.read_table(out / "quarantine").to_pandas()
    too_long = quarantine[quarantine["reason_code"] == "line_too_long"].sort_values("line")
    assert [(s.rsplit("/", 1)[-1], line) for s, line in zip(too_long["source"], too_long["line"])] == \
        [("bomb.csv.gz", 2), ("pumps.csv", 101)]
    assert too_long["reason"].str.contains("bytes long").all() and too_long["raw"].str.len().tolist() == [4096, 4096]
    assert "line_too_long 2" in run.stderr
    # a replay of the run's quarantine cannot copy the file with its long line: refused in one sentence (the copy
    # had held the reader's marker in its place, quarantined again as binary data; found by the bug hunt)
    replay = subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "replay", "--quarantine", str(out),
                             "--output", str(tmp_path / "replayed"), "--model-dir", str(small_model_dir)],
                            capture_output=True, text=True, timeout=600)
    assert replay.returncode == 2 and "Traceback" not in replay.stderr, replay.stderr[-3000:]
    assert re.fullmatch(r"seqwatch replay: cannot replay \S*(bomb.csv.gz: its line 2 is 536,870,912|pumps.csv: "
                        r"its line 101 is 41,943,040) bytes long, more than a row can be, and a replay's copy of the "
                        r"file cannot hold it; mend the file and run it again instead\n", replay.stderr), replay.stderr


def _compressed(kind: str, parts: list) -> bytes:
    """``parts`` compressed one after another as ``kind``'s members or streams (as ``cat a.gz b.gz`` makes)."""
    import bz2
    import lzma
    import zlib

    pack = {"gz": lambda b: gzip.compress(b, compresslevel=6), "deflate": zlib.compress, "bz2": bz2.compress,
            "xz": lzma.compress, "zst": lambda b: zstandard.ZstdCompressor().compress(b)}[kind]
    return b"".join(pack(part) for part in parts)


@pytest.mark.parametrize("kind", ["gz", "deflate", "bz2", "xz", "zst"])
def test_a_compressed_file_of_several_members_reads_as_beam_reads_it_a_block_at_a_time(tmp_path, kind):
    from apache_beam.io.filesystems import FileSystems

    from seqwatch.pipelines.decompression import BOUNDED, open_input

    rng = random.Random(3)
    parts = [bytes(rng.getrandbits(8) for _ in range(n)) + b"x" * 300_000 for n in (70_000, 0, 5)]
    path = tmp_path / f"data.csv.{kind}"
    path.write_bytes(_compressed(kind, parts))
    stream = open_input(str(path))
    assert isinstance(stream, BOUNDED)
    pieces = []
    while piece := stream.read(10_000):
        pieces.append(piece)
    assert b"".join(pieces) == b"".join(parts) and stream.finished
    assert max(len(p) for p in pieces) == 10_000
    with FileSystems.open(str(path)) as beam:  # Beam's CompressedFile, all at once
        assert beam.read(1 << 30) == b"".join(parts)


def test_a_bzip2_bomb_expands_a_block_at_a_time_and_a_cut_one_is_not_finished(tmp_path):
    """256 MiB of zeros are 211 bytes of bzip2: Beam's reader would decompress all of it in one call."""
    import bz2

    from seqwatch.pipelines.decompression import open_input

    path = tmp_path / "bomb.csv.bz2"
    path.write_bytes(bz2.compress(b"0" * (256 << 20)))
    assert path.stat().st_size < 300
    stream, total, largest = open_input(str(path)), 0, 0
    while piece := stream.read(1 << 20):
        total, largest = total + len(piece), max(largest, len(piece))
    assert (total, largest, stream.finished) == (256 << 20, 1 << 20, True)
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(gzip.compress(b"a,b\n" * 100_000)[:-100])
    stream = open_input(str(cut))
    assert len(stream.read(1 << 30)) < 400_000 and not stream.finished


@pytest.mark.parametrize("kind", ["gz", "deflate", "bz2", "xz", "zst"])
def test_a_read_of_everything_and_reads_of_a_cut_file_give_no_more_than_asked(tmp_path, kind):
    """Found by the bug hunt of this reader: ``read()`` without a size gave nothing for bzip2 and xz (their
    decompressors take -1, not 0, for "no bound"), and the last bytes zlib held of a file cut short came out past
    the size asked for."""
    from seqwatch.pipelines.decompression import open_input

    data = b"a,b,1.5\n" * 30_000
    path = tmp_path / f"data.csv.{kind}"
    path.write_bytes(_compressed(kind, [data]))
    assert open_input(str(path)).read() == data
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) * 2 // 3])
    stream, pieces = open_input(str(path)), []
    while True:
        try:
            piece = stream.read(7)
        except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError):
            break
        if not piece:
            break
        pieces.append(piece)
    # bz2 (one 900 kB block) and zstd (one block of 128 kB at most) decode a block whole or not at all
    assert (pieces or kind in ("bz2", "zst")) and data.startswith(b"".join(pieces))
    assert max((len(p) for p in pieces), default=0) <= 7
    assert not stream.finished


@pytest.mark.parametrize("kind", ["gz", "xz"])
def test_zero_bytes_after_a_gzip_member_or_an_xz_stream_are_padding_not_damage(tmp_path, kind):
    """Found by the bug hunt of this reader: zeros after a gzip member (gzip's tools ignore them: a tape's block
    pads the file) and xz's stream padding read as a damaged file, its last rows quarantined as damaged_file (475 of
    800 readings of the hunt's xz file), as Beam's reader reads them. Zeros before data that is not a stream are
    still damage."""
    from seqwatch.pipelines.decompression import open_input

    lines = _readings_csv(40)
    header, rows = lines[0], lines[1:]
    pack = gzip.compress if kind == "gz" else lzma.compress
    padded = pack(header + b"".join(rows[:25])) + bytes(512) + pack(b"".join(rows[25:])) + bytes(4)
    path = tmp_path / f"readings.csv.{kind}"
    path.write_bytes(padded)
    stream = open_input(str(path))
    assert stream.read() == b"".join(lines) and stream.finished
    frames, quarantined, records_in = _read(path)
    assert (records_in, len(frames), quarantined) == (40, 40, [])
    assert sorted(frames["line"].tolist()) == list(range(2, 42))

    path.write_bytes(pack(header + b"".join(rows[:25])) + bytes(8) + b"not a stream" + bytes(4))
    frames, quarantined, records_in = _read(path)
    assert (records_in, len(frames)) == (25, 25)
    assert [(q.reason_code, q.line, q.records) for q in quarantined] == [("damaged_file", 27, 0)]


def test_a_zstd_bomb_expands_a_block_at_a_time_and_its_frames_are_walked_in_any_pieces():
    """256 MiB of zeros are 8 kB of zstd: Beam's reader decompressed each 16 MiB of the file in one call, without
    a bound. The walk over the frames' headers, fed in pieces of any size, says whether the bytes end where a frame
    does, through skippable frames, checksums and frames with and without a content size."""
    import io

    from seqwatch.pipelines.decompression import BoundedZstd, ZstdFrames

    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(256 << 20))
    assert len(bomb) < 20_000
    stream, total, largest = BoundedZstd(io.BytesIO(bomb)), 0, 0
    while piece := stream.read(1 << 20):
        total, largest = total + len(piece), max(largest, len(piece))
    assert (total, largest, stream.finished) == (256 << 20, 1 << 20, True)

    rng = random.Random(5)
    skippable = (0x184D2A53).to_bytes(4, "little") + (9).to_bytes(4, "little") + b"metadata!"
    frames = [zstandard.ZstdCompressor(write_checksum=True).compress(bytes(rng.getrandbits(8) for _ in range(9000))),
              skippable,
              zstandard.ZstdCompressor(write_content_size=False).compress(b"a,b\n" * 50_000),
              zstandard.ZstdCompressor().compress(b"")]
    data = b"".join(frames)
    ends = {sum(len(f) for f in frames[:i]) for i in range(len(frames) + 1)}
    for pieces in ([len(data)], [1] * 200 + [len(data)], [7, 13, 4096, len(data)]):
        walk, fed = ZstdFrames(), 0
        for size in pieces:
            walk.feed(data[fed:fed + size])
            fed = min(fed + size, len(data))
            assert walk.whole == (fed in ends), (pieces, fed)
    out = BoundedZstd(io.BytesIO(data))
    assert out.read() == zstandard.ZstdDecompressor().decompressobj().decompress(frames[0]) + b"a,b\n" * 50_000
    assert out.finished
