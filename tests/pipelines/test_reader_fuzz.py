"""Seeded random CSV files, built from the texts real exports hold and the odd ones they sometimes do, read by
``FileReader``: no file crashes the read, every reading a file holds leaves it as a parsed reading or inside a
quarantined record, and the bulk reader (``csv_blocks`` and Arrow) gives what the line-by-line reader gives."""
from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from seqwatch.pipelines.csv_records import join_records
from seqwatch.pipelines.parsing import FileLayout
from seqwatch.pipelines.sources import FileReader, read_header
from seqwatch.schemas.mapping import InputMapping

TIMESTAMPS = [
    "2026-01-05T10:00:00Z", "2026-01-05 10:00:00", "2026-01-05T10:00:00.25Z", "2026-01-05T10:00:00+01:00",
    "2026-01-05T10:00:00-0530", "2026-01-05T10:00:00+01", "2026-01-05T10:00:00 UTC", "2026-01-05T10:00:00GMT",
    "1767607200", "1767607200123", "1767607200.5", "1e20", "-1767607200", "1767607200000000000000",
    "Jan 5 2026 10:00", "05/01/2026", "10:00", "yesterday", "", " 2026-01-05T10:00:00Z ", "2026-02-30T00:00:00Z",
    "2026-13-01", "2026-01-05T24:00:00Z", "2026-01-05T10:00:00.123456789Z", "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z", "1850-01-05T10:00:00Z", "2026-03-29T02:30:00", "2026-10-25T02:30:00",
    "20260105T100000Z", "2026-W02-1", "2026-005", "+2026-01-05", "2026-01-05T10:00:00+25:00",
    "2026-01-05T10:00:00Z[UTC]", "\u0662\u0660\u0662\u0666-01-05", "nan", "0x10",
]
VALUES = ["1.5", "-2", "1e5", "1e999", "nan", "", " 3 ", "\u22121", "1,5", "1.5kW", "abc", "0x1F", "1_0", "--1",
          "+.5", "5.", ".", "1e-400", "Infinity", "NULL", "1 234", "\u0661\u0662", "9" * 400, "-0"]
IDS = ["pump-01", "pump-02", "", " ", "x" * 300, "p\u00e9", "a;b", "t\tab"]
CHANNELS = ["temp", "flow", "", "c" * 200]


def _line(rng: random.Random, long: bool) -> str:
    if long:
        fields = [rng.choice(IDS), rng.choice(CHANNELS), rng.choice(TIMESTAMPS), rng.choice(VALUES)]
    else:
        fields = [rng.choice(TIMESTAMPS)] + [rng.choice(VALUES) for _ in range(3)]
    odd = rng.random()
    if odd < 0.04:
        fields.append("extra")
    elif odd < 0.07:
        fields.pop()
    elif odd < 0.08:
        fields[0] = '"' + fields[0]
    elif odd < 0.09:
        fields = [""] * len(fields)
    return ",".join(fields)


def _read(reader: FileReader, path: str, line_by_line: bool):
    if line_by_line:
        header, sep = read_header(path)
        chunks = reader._csv_line_chunks(path, FileLayout.resolve(header, reader.mapping, path), sep)
    else:
        chunks = reader.read(path)
    frames, quarantined, counted = [], [], 0
    for batch, bad, count in chunks:
        frames.append(batch.frame)
        quarantined += bad
        counted += count
    frame = pd.concat(frames, ignore_index=True).astype({"entity_id": str, "channel": str, "source": str})
    frame = frame.sort_values(["line", "channel"], kind="stable").reset_index(drop=True)
    records = sorted((q.line, q.column, q.reason_code, q.reason, q.raw, q.records) for q in quarantined)
    return frame, records, counted


@pytest.mark.parametrize("seed", range(24))
def test_random_files_read_without_loss_and_the_same_either_way(tmp_path, seed):
    rng = random.Random(seed)
    long = seed % 2 == 0
    lines = [_line(rng, long) for _ in range(rng.choice([1, 60, 400]))]
    path = tmp_path / "pump-09.csv"
    text = ("entity_id,channel,timestamp,value" if long else "timestamp,a,b,c") + "\n" + "\n".join(lines)
    path.write_text(text + ("\n" if seed % 3 else ""), encoding="utf-8")
    timezone = "Europe/Berlin" if seed % 4 == 1 else "UTC"
    mapping = InputMapping(timezone=timezone) if long else \
        InputMapping(format="wide", entity={"value": "pump-09"}, timezone=timezone)
    reader = FileReader(mapping, "fuzz", chunk_rows=rng.choice([7, 64, 100_000]))

    frame, records, counted = _read(reader, str(path), line_by_line=False)
    per_row = 1 if long else 3
    # A stray quote at a field's start (the odd texts above) can open a quoted field that a later stray one
    # closes: those lines are one record when it has the header's fields (csv_records), as a csv reader reads them.
    records_in = [text for _, text in join_records(enumerate((line + "\n" for line in lines), start=2), ",", 4)]
    assert len(records_in) <= len(lines)
    holding = sum(1 for text in records_in if text.replace(",", "").strip())  # separator-only: no reading
    assert counted == holding * per_row
    assert len(frame) + sum(r[-1] for r in records) == counted
    if len(lines) > 1:  # the texts above hold both readings and records to quarantine
        assert 0 < len(frame) < counted
    assert all(reason for _, _, _, reason, _, _ in records)

    line_frame, line_records, line_counted = _read(reader, str(path), line_by_line=True)
    assert line_counted == counted and line_records == records
    pd.testing.assert_frame_equal(frame, line_frame)
    assert np.isfinite(frame["value"]).all()


@pytest.mark.parametrize("seed", range(5))
def test_lines_split_across_blocks_of_any_size_are_pythons_lines(seed):
    """``TextLines._pieces`` joins a line's pieces once, at its end (the bug hunt of pathological inputs: a line of
    200 MB without a line end had been joined and searched again with every block); its lines are still exactly
    Python's ``newline=""`` lines, whatever the block size, in text and bytes, a "\\r\\n" split between blocks too."""
    import io

    from seqwatch.pipelines.sources import _NEWLINE_BYTES, _NEWLINE_TEXT, TextLines

    rng = random.Random(seed)
    for _ in range(600):
        text = "".join(rng.choice(["a", "bc", "\r", "\n", "\r\n", ""]) for _ in range(rng.randint(0, 40)))
        size = rng.randint(1, 6)
        blocks = [text[i:i + size] for i in range(0, len(text), size)] + [""]
        expected = list(io.StringIO(text, newline=""))
        assert list(TextLines._pieces(_NEWLINE_TEXT, iter(blocks), "")) == expected, (text, size)
        as_bytes = TextLines._pieces(_NEWLINE_BYTES, iter([b.encode() for b in blocks]), b"")
        assert [line.decode() for line in as_bytes] == expected, (text, size)
