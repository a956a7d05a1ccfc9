"""Reading input files (CSV or Parquet, local or any Beam filesystem) into batches of readings.

``ReadInputFiles`` is the batch source: one element per chunk of up to ``chunk_rows`` rows, so that Beam's
per-element cost is paid per chunk, not per reading. Rows that fail to parse leave on the ``quarantine``
output; every chunk also reports how many readings it carried on the ``counts`` output, which is where the
run manifest's ``records_in`` comes from.
"""
from __future__ import annotations

import codecs
import io
from typing import Iterator

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.io.filesystems import FileSystems

from seqwatch.pipelines.parsing import FileLayout, SchemaDriftError, parse_rows, raw_json, sniff_separator, split_lines
from seqwatch.schemas.elements import Quarantined, ReadingBatch
from seqwatch.schemas.mapping import InputMapping

QUARANTINE = "quarantine"
COUNTS = "counts"
DEFAULT_CHUNK_ROWS = 100_000


def is_parquet(path: str) -> bool:
    return path.lower().endswith((".parquet", ".pq"))


def detect_encoding(head: bytes) -> str:
    """From a file's first bytes: a BOM decides; otherwise UTF-8 if the bytes decode, else cp1252."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a multi-byte character cut at the end of the sample
            return "cp1252"
    return "utf-8"


def open_text(path: str):
    """Open a text file for reading lines, with its encoding detected (see ``detect_encoding``)."""
    with FileSystems.open(path) as f:
        head = f.read(65536)
    return io.TextIOWrapper(FileSystems.open(path), encoding=detect_encoding(head), errors="replace", newline="")


def read_header(path: str) -> tuple[list[str] | None, str]:
    """A file's column names and field separator; ``(None, ',')`` for an empty file."""
    if is_parquet(path):
        import pyarrow.parquet as pq
        with FileSystems.open(path) as f:
            return list(pq.read_schema(f).names), ","
    with open_text(path) as f:
        for line in f:
            line = line.rstrip("\r\n")
            if line.strip():
                sep = sniff_separator(line)
                fields = split_lines([line], sep, line.count(sep) + 1)[0][0] if '"' in line else line.split(sep)
                return [h.strip() for h in fields], sep
    return None, ","


class FileReader:
    """Reads one input file in chunks: ``read(path)`` yields ``(ReadingBatch, [Quarantined], readings_in)``.

    Plain Python (no pipeline), so ``seqwatch train`` parses exactly as the pipeline does. A file whose columns
    do not fit the mapping has all its rows quarantined with reason ``schema_drift``; an empty file yields
    nothing; blank lines are skipped and carry no record."""

    def __init__(self, mapping: InputMapping, run_id: str, chunk_rows: int = DEFAULT_CHUNK_ROWS):
        self.mapping = mapping
        self.run_id = run_id
        self.chunk_rows = chunk_rows

    def read(self, path: str):
        try:
            header, sep = read_header(path)
            if header is None:
                return
            layout = FileLayout.resolve(header, self.mapping, path)
        except SchemaDriftError as exc:
            yield self._quarantine_file(path, str(exc))
            return
        if is_parquet(path):
            yield from self._parquet_chunks(path, layout)
        else:
            yield from self._csv_chunks(path, layout, self.mapping.sep or sep)

    def _csv_chunks(self, path: str, layout: FileLayout, sep: str):
        with open_text(path) as f:
            lines, numbers, seen_header = [], [], False
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                if not seen_header:
                    seen_header = True
                    continue
                lines.append(line)
                numbers.append(number)
                if len(lines) >= self.chunk_rows:
                    yield self._parse_csv_lines(path, layout, sep, lines, numbers)
                    lines, numbers = [], []
            if lines:
                yield self._parse_csv_lines(path, layout, sep, lines, numbers)

    def _parse_csv_lines(self, path, layout: FileLayout, sep: str, lines: list[str], numbers: list[int]):
        rows, ok = split_lines(lines, sep, len(layout.header))
        per_row = layout.readings_per_row
        quarantine = [Quarantined(lines[i], path, numbers[i], "", per_row, "parse", "malformed_row",
                                  f"the row does not have the header's {len(layout.header)} fields "
                                  f"(or it holds a NUL byte)", self.run_id)
                      for i in np.flatnonzero(~ok)]
        keep = np.flatnonzero(ok)
        good_lines = [lines[i] for i in keep]
        frame = pd.DataFrame([rows[i] for i in keep], columns=list(layout.header), dtype=object)
        columns = {name: frame.iloc[:, j] for j, name in enumerate(layout.header)}
        batch, bad = parse_rows(columns, np.asarray(numbers, dtype=np.int64)[keep], good_lines.__getitem__, path,
                                layout, self.mapping, self.run_id)
        return batch, quarantine + bad, len(lines) * per_row

    def _parquet_chunks(self, path: str, layout: FileLayout):
        import pyarrow.parquet as pq
        first = 1
        with FileSystems.open(path) as f:
            for record_batch in pq.ParquetFile(f).iter_batches(batch_size=self.chunk_rows):
                frame = record_batch.to_pandas()
                numbers = np.arange(first, first + len(frame), dtype=np.int64)
                first += len(frame)
                columns = {name: frame[name] for name in frame.columns}
                batch, bad = parse_rows(columns, numbers, lambda i, fr=frame: raw_json(fr.iloc[i].to_dict()), path,
                                        layout, self.mapping, self.run_id)
                yield batch, bad, len(frame) * layout.readings_per_row

    def _quarantine_file(self, path: str, reason: str):
        quarantine = []
        if is_parquet(path):
            import pyarrow.parquet as pq
            with FileSystems.open(path) as f:
                rows = pq.read_table(f).to_pylist()
            quarantine = [Quarantined(raw_json(row), path, i, "", 1, "parse", "schema_drift", reason, self.run_id)
                          for i, row in enumerate(rows, start=1)]
        else:
            with open_text(path) as f:
                numbered = [(n, line.rstrip("\r\n")) for n, line in enumerate(f, start=1)]
            data = [(n, line) for n, line in numbered if line.strip()][1:]
            quarantine = [Quarantined(line, path, n, "", 1, "parse", "schema_drift", reason, self.run_id)
                          for n, line in data]
        return ReadingBatch.from_columns([], [], [], [], [], []), quarantine, len(quarantine)


class _ReadFileChunks(beam.DoFn):
    def __init__(self, reader: FileReader):
        self.reader = reader

    def process(self, path: str) -> Iterator:
        for batch, quarantine, records in self.reader.read(path):
            yield beam.pvalue.TaggedOutput(COUNTS, ("records_in", records))
            if len(batch):
                yield batch
            for q in quarantine:
                yield beam.pvalue.TaggedOutput(QUARANTINE, q)


class ReadInputFiles(beam.PTransform):
    """``PBegin -> {main: ReadingBatch, quarantine: Quarantined, counts: (name, n)}``.

    ``paths`` are concrete file paths (expand globs before building the graph, so a missing file is reported
    before the pipeline starts)."""

    def __init__(self, paths: list[str], mapping: InputMapping, run_id: str, chunk_rows: int = DEFAULT_CHUNK_ROWS):
        super().__init__()
        self.paths = list(paths)
        self.mapping = mapping
        self.run_id = run_id
        self.chunk_rows = chunk_rows

    def expand(self, pbegin):
        return (pbegin
                | "ListFiles" >> beam.Create(self.paths)
                | "SpreadFiles" >> beam.Reshuffle()
                | "ParseFiles" >> beam.ParDo(_ReadFileChunks(FileReader(self.mapping, self.run_id, self.chunk_rows)))
                .with_outputs(QUARANTINE, COUNTS, main="readings"))


def expand_inputs(patterns: list[str]) -> list[str]:
    """Concrete, sorted file paths for glob patterns; raises FileNotFoundError naming a pattern with no match."""
    paths = []
    for pattern in patterns:
        matched = [m.path for result in FileSystems.match([pattern]) for m in result.metadata_list]
        if not matched:
            raise FileNotFoundError(f"no input file matches {pattern!r}")
        paths.extend(matched)
    return sorted(set(paths))
