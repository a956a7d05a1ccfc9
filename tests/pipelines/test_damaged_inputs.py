"""Compressed inputs that are damaged, cut short or misnamed (found by a bug hunt): Beam's decompressing reader
read a truncated ``.gz`` to where it stopped without a word, so a value cut from 40.9185 to 4 was scored (and raised
a critical alert), and a plain CSV named ``.gz`` ended the run in a zlib traceback. Now every whole line before the
damage is read, the cut line is quarantined as ``damaged_file`` with the damage named, the counts still add up, and
a file of which nothing can be read is one sentence before the run starts."""
import bz2
import gzip
import zlib

import pytest

from seqwatch.pipelines.batch import RunError, run_batch
from seqwatch.pipelines.config import RunConfig
from seqwatch.pipelines.parsing import SchemaDriftError
from seqwatch.pipelines.sources import DamagedFileError, FileReader, read_header
from seqwatch.schemas.mapping import InputMapping

WIDE = InputMapping(format="wide", timestamp="timestamp", entity={"from_filename": True})
HEADER = "timestamp,flow,pressure\n"


def _lines(n: int) -> str:
    return "".join(f"2026-02-01T00:{i // 6:02d}:{i % 6 * 10:02d}Z,{40 + i / 1000:.4f},3.{i:04d}\n" for i in range(n))


def _read(path, chunk_rows: int = 100_000):
    batches, quarantine, records_in = [], [], 0
    for batch, bad, n in FileReader(WIDE, "run-t", chunk_rows).read(str(path)):
        batches.append(batch)
        quarantine += bad
        records_in += n
    readings = sum(len(b) for b in batches)
    assert records_in == readings + sum(q.records for q in quarantine)  # every reading that entered is accounted
    return readings, quarantine


@pytest.mark.parametrize("chunk_rows", [100_000, 7])
def test_a_gzip_cut_in_a_line_keeps_every_whole_line_and_quarantines_the_cut_one(tmp_path, chunk_rows):
    whole = gzip.compress((HEADER + _lines(50)).encode())
    path = tmp_path / "pump-01.csv.gz"
    path.write_bytes(whole[: len(whole) - 30])  # no end of stream, and the last line cut
    readings, quarantine = _read(path, chunk_rows)
    [record] = quarantine
    assert record.reason_code == "damaged_file" and record.records == 2 and record.stage == "parse"
    assert record.reason.startswith(f"{path} ends before its gzip stream does: the file was cut short")
    assert record.reason.endswith("this line may be cut, and nothing after it could be read")
    full = (HEADER + _lines(50)).splitlines()
    assert full[record.line - 1].startswith(record.raw) and record.raw != full[record.line - 1]
    assert readings == 2 * (record.line - 2)  # every whole data line before it, two readings each


def test_a_gzip_cut_at_a_line_end_says_so_in_a_record_that_stands_for_no_reading(tmp_path):
    text = (HEADER + _lines(20)).encode()
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    cut = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)  # every byte out, no end of stream
    path = tmp_path / "pump-01.csv.gz"
    path.write_bytes(cut)
    readings, [record] = _read(path)
    assert readings == 40 and (record.reason_code, record.records, record.raw, record.line) == (
        "damaged_file", 0, "", 22)


def test_a_gzip_damaged_midway_is_a_record_not_a_traceback(tmp_path):
    """The lines before the damage are read, and the damage, which came at a line end, is a record that stands for
    no reading. Beam's reader gave out what it decompressed only when a whole read succeeded (16 MiB of the file
    at a time), so the 30 lines had gone with the damage (0 readings, the record at line 1); the gzip reader of
    ``seqwatch.pipelines.decompression`` gives out what came before an error."""
    first = gzip.compress((HEADER + _lines(30)).encode())
    path = tmp_path / "pump-01.csv.gz"
    path.write_bytes(first + b"\x1f\x8b\x08\x00garbage that is no deflate stream at all" * 3)  # a second member
    readings, [record] = _read(path)
    assert (readings, record.reason_code, record.records, record.line) == (60, "damaged_file", 0, 32)
    assert record.reason.startswith(f"{path} cannot be read as a gzip file past this point (Error -3 while "
                                    f"decompressing data")


@pytest.mark.parametrize("cut", ["in a block", "after the last block, before the checksum", "damaged midway"])
def test_a_zstd_file_cut_short_or_damaged_is_told_as_a_gzip_one_is(tmp_path, cut):
    """zstd's stream reader reads a file cut short to where it stops without a word; the walk over the frames'
    headers (``ZstdFrames``) tells it, as zlib tells a cut gzip."""
    import zstandard

    text = (HEADER + _lines(300)).encode()
    whole = zstandard.ZstdCompressor(write_checksum=True).compress(text)
    path = tmp_path / "pump-01.csv.zst"
    if cut == "damaged midway":
        path.write_bytes(whole + b"\x28\xb5\x2f\xfd" + b"\xff" * 40)
        readings, [record] = _read(path)
        assert (readings, record.reason_code, record.records) == (600, "damaged_file", 0)
        assert record.reason.startswith(f"{path} cannot be read as a zstd file past this point (zstd decompress "
                                        f"error")
        return
    path.write_bytes(whole[:len(whole) // 2] if cut == "in a block" else whole[:-2])
    readings, quarantine = _read(path)
    assert [q.reason_code for q in quarantine] == ["damaged_file"]
    assert quarantine[0].reason.startswith(f"{path} ends before its zstd stream does: the file was cut short")
    assert readings < 600 if cut == "in a block" else readings == 600


def test_a_text_with_a_byte_order_mark_read_line_by_line_is_cut_the_same_way(tmp_path):
    whole = gzip.compress(("\ufeff" + HEADER + _lines(50)).encode("utf-8"))
    path = tmp_path / "pump-01.csv.gz"
    path.write_bytes(whole[: len(whole) - 30])
    readings, [record] = _read(path)
    assert record.reason_code == "damaged_file" and record.records == 2
    assert readings == 2 * (record.line - 2)


def test_a_file_of_which_nothing_can_be_read_is_one_sentence_not_empty(tmp_path):
    plain = tmp_path / "pump-01.csv.gz"
    plain.write_text(HEADER + _lines(5))  # not compressed, named .gz
    with pytest.raises(DamagedFileError, match=r"pump-01.csv.gz cannot be read as a gzip file \(Error -3 while "
                                               r"decompressing data: incorrect header check\): is it damaged, or "
                                               r"not compressed as its name says\?$"):
        read_header(str(plain))
    cut = tmp_path / "pump-02.csv.bz2"
    cut.write_bytes(bz2.compress((HEADER + _lines(2000)).encode())[:3000])
    with pytest.raises(SchemaDriftError, match=r"pump-02.csv.bz2 ends before its bzip2 stream does"):
        read_header(str(cut))
    empty = tmp_path / "pump-03.csv.gz"
    empty.write_bytes(b"")
    assert read_header(str(empty)) == (None, ",")  # empty, not damaged


def test_a_run_with_a_misnamed_file_among_good_ones_is_refused_in_one_sentence(tmp_path, small_model_dir):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "pump-01.csv").write_text(HEADER + _lines(5))
    (tmp_path / "in" / "pump-02.csv.gz").write_text(HEADER + _lines(5))
    config = RunConfig(inputs=(str(tmp_path / "in"),), output=str(tmp_path / "out"), model_dir=str(small_model_dir),
                       mapping=WIDE)
    with pytest.raises(RunError, match=r"^[^\n]*pump-02.csv.gz cannot be read as a gzip file"):
        run_batch(config, ["--runner=DirectRunner"])


def test_a_read_error_of_the_file_system_under_a_file_fails_the_read_for_the_runner_to_retry(tmp_path, monkeypatch):
    """From a review: a reset connection under a plain CSV (an OSError subclass) had been taken for a damaged file,
    cutting the file there without a retry."""
    import io

    from seqwatch.pipelines import sources

    path = tmp_path / "pump-01.csv"
    path.write_text(HEADER + _lines(300))

    class Flaky(io.BytesIO):
        calls = 0

        def read(self, size=-1):
            Flaky.calls += 1
            if Flaky.calls == 3:
                raise ConnectionError("Connection reset by peer")
            return super().read(600)

    monkeypatch.setattr(sources.FileSystems, "open", staticmethod(lambda p, *a, **k: Flaky(path.read_bytes())))
    with pytest.raises(ConnectionError):
        list(FileReader(WIDE, "run-t").read(str(path)))


def test_a_damaged_file_quarantined_whole_for_its_columns_keeps_its_cut_line(tmp_path):
    whole = gzip.compress(("ts,flow,pressure\n" + _lines(50)).encode())  # no 'timestamp' column: schema_drift
    path = tmp_path / "pump-01.csv.gz"
    path.write_bytes(whole[: len(whole) - 30])
    readings, quarantine = _read(path)
    codes = [q.reason_code for q in quarantine]
    assert readings == 0 and codes[-1] == "damaged_file" and set(codes[:-1]) == {"schema_drift"}
    assert quarantine[-1].line == quarantine[-2].line + 1 and quarantine[-1].raw


def test_the_run_id_hashes_a_compressed_file_as_stored(tmp_path):
    """Hashing decompressed bytes failed the plan on a file damaged past the reader's first read."""
    import hashlib

    from seqwatch.pipelines.batch import _sha256_file

    path = tmp_path / "pump-01.csv.gz"
    path.write_bytes(gzip.compress((HEADER + _lines(5)).encode())[:-10])
    assert _sha256_file(str(path)) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_records_of_a_damaged_file_are_not_replayed_and_a_compressed_source_is(tmp_path, small_model_dir):
    """From a review: a replay read less of a cut file than the run had (its cut line held back), and a
    compressed source's patched copy kept its .gz name, so the replay took the plain copy for a damaged file."""
    import pandas as pd

    from seqwatch.pipelines.replay import ReplayConfig, ReplayError, prepare_inputs, run_replay

    record = {"raw": "2026-02-01T00:00:00Z,41.0,3.0", "source": "", "line": 2, "column": "flow", "records": 1,
              "stage": "parse", "reason_code": "parse_value", "reason": "r", "run_id": "run-t"}
    source = tmp_path / "pump-01.csv.gz"
    source.write_bytes(gzip.compress((HEADER + "2026-02-01T00:00:00Z,4x1.0,3.0\n" + _lines(3)[1:]).encode()))
    copies = prepare_inputs(pd.DataFrame([{**record, "source": str(source)}]), tmp_path / "work")
    [(copy, original)] = copies.items()
    assert original == str(source) and copy.endswith("/pump-01.csv")
    assert open(copy).read().splitlines()[1] == record["raw"]

    quarantine = tmp_path / "run" / "quarantine.jsonl"
    quarantine.parent.mkdir()
    damaged = {**record, "source": str(source), "line": 5, "raw": "2026-02-01T00:00:3", "records": 2,
               "reason_code": "damaged_file"}
    quarantine.write_text("\n".join(pd.Series([{**record, "source": str(source)}, damaged]).map(
        lambda r: pd.Series(r).to_json()).tolist()) + "\n")
    for codes in ((), ("parse_value",)):
        with pytest.raises(ReplayError, match=rf"^cannot replay the records of {source}: the file is damaged or cut "
                                              rf"short \(its damaged_file record, line 5\)"):
            run_replay(ReplayConfig(quarantine=str(quarantine), output=str(tmp_path / "o"),
                                    model_dir=str(small_model_dir), reason_codes=codes))
