"""A batch run's quarantined records are packed into tables per source and bundle in the step that made them,
before they are grouped, and counted there: one by one, a million of them (a sensor that sent "n/a" for a month)
had taken 2.8 GB and most of the run's 83 s (1.4 GB and 17 s packed, timed by hand). The batch reader packs the
records of each file itself (``ReadInputFiles(packed_quarantine=...)``): 19.3 s before, 12.3 s with it and a
faster table build (timed by hand, 2026-12-04)."""
import random

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from seqwatch.pipelines.graph import _CountPerBundle, _quarantined_records, packed_quarantine_counts
from seqwatch.pipelines.quarantine_merge import (RawLines, SortedQuarantinePart, chunks_in_line_order,
                                                 merged_quarantine)
from seqwatch.pipelines.sinks import _PackQuarantine, _WriteQuarantineFile, quarantine_records_table, write_parquet
from seqwatch.schemas.arrow import QUARANTINE_SCHEMA
from seqwatch.pipelines.sources import ReadInputFiles
from seqwatch.schemas.elements import PackedQuarantine, Quarantined
from seqwatch.schemas.mapping import InputMapping


def _records(source: str, seed: int) -> list:
    """Records of ``source`` in a random order: some without their raw text (quarantined after parsing, to be
    read again from the file), some with it, one that stands for no line; no two with the same sort key."""
    rng = random.Random(seed)
    records = []
    for line in range(2, 32):
        for column in rng.sample(["flow", "pressure", "zeta", "Alpha", "é"], rng.randint(1, 3)):
            after_parsing = rng.random() < 0.6
            records.append(Quarantined("" if after_parsing else f"kept text {line}", source, line, column,
                                       rng.choice([1, 3]), "validate" if after_parsing else "parse",
                                       rng.choice(["unknown_channel", "parse_value"]),
                                       rng.choice(["the value 'n/a' is a missing value", "the model has no such"
                                                   " channel", "Z reason"]), "run-1"))
    records.append(Quarantined("", source, 0, "", 0, "parse", "damaged_file", "nothing after it could be read",
                               "run-1"))
    rng.shuffle(records)
    return records


def test_packed_tables_merge_into_the_file_the_records_make_one_by_one(tmp_path):
    path = tmp_path / "readings.csv"
    path.write_text("entity_id,channel,timestamp,value\n" + "".join(
        f"pump-01,flow,2026-01-05T00:00:{s:02d}Z,{s}.5\n" for s in range(40)))
    records = _records(str(path), seed=3)
    # record by record, as the sink had written them: each record without its raw text given its line, then sorted
    found = RawLines(str(path)).find({q.line for q in records if not q.raw and q.line > 0})
    filled = [q if q.raw else q._replace(raw=found.get(q.line, "")) for q in records]
    expected = quarantine_records_table(sorted(filled, key=lambda q: (q.line, q.column, q.stage, q.reason_code,
                                                                      q.reason)))
    assert len(found) > 10 and sum(not q.raw for q in filled) == 1  # only the record of no line stays without
    parts = [quarantine_records_table(records[a:b]) for a, b in ((0, 7), (7, 8), (8, 40), (40, len(records)))]
    merged = merged_quarantine(str(path), parts)
    assert merged.num_rows == len(records) > 50
    assert merged.to_pylist() == expected.to_pylist()
    assert merged.to_pylist()[0]["line"] == 0 and merged.to_pylist()[1]["raw"] == (
        "pump-01,flow,2026-01-05T00:00:00Z,0.5" if merged.to_pylist()[1]["stage"] == "validate" else "kept text 2")
    written = tmp_path / "out" / "quarantine.parquet"
    write_parquet(str(written), merged)
    assert pq.read_schema(written).equals(QUARANTINE_SCHEMA, check_metadata=True)
    assert pq.read_table(written).to_pylist() == expected.to_pylist()


def test_parts_whose_texts_are_mostly_distinct_merge_and_write_as_the_records_do(tmp_path):
    """A sensor's lines of "n/a": a text per record, so the parts' ``raw`` dictionaries are put one after the other
    rather than unified (``quarantine_merge.concatenated``); a text that two parts both hold, and records without
    their text, come out as record by record, and the file's dictionary of each row group holds each text once."""
    path = tmp_path / "na.csv"
    lines = [f"pump-01,flow,2026-01-05T00:{s // 60:02d}:{s % 60:02d}Z,n/a" for s in range(300)]
    path.write_text("entity_id,channel,timestamp,value\n" + "".join(line + "\n" for line in lines))
    records = [Quarantined("" if i % 7 == 0 else ("shared text" if i in (10, 250) else lines[i]), str(path), i + 2,
                           "flow", 1, "parse", "parse_value", "the value 'n/a' is missing", "run-1")
               for i in range(300)]
    expected = [q._replace(raw=q.raw or lines[q.line - 2])._asdict() for q in records]
    parts = [quarantine_records_table(records[a:b]) for a, b in ((0, 100), (100, 200), (200, 300))]
    merged = merged_quarantine(str(path), reversed(parts))
    assert merged.to_pylist() == expected
    written = tmp_path / "out" / "quarantine.parquet"
    write_parquet(str(written), merged)
    assert pq.read_table(written).to_pylist() == expected
    for chunk in pq.read_table(written, read_dictionary=["raw"]).column("raw").chunks:
        assert len(set(chunk.dictionary.to_pylist())) == len(chunk.dictionary)


def test_no_records_merge_into_an_empty_table_with_the_sinks_columns():
    merged = merged_quarantine("a.csv", [quarantine_records_table([])])
    assert merged.num_rows == 0 and merged.schema.names == QUARANTINE_SCHEMA.names


def test_a_source_that_is_gone_keeps_its_records_without_raw_text(tmp_path):
    records = _records(str(tmp_path / "gone.csv"), seed=5)
    merged = merged_quarantine(str(tmp_path / "gone.csv"), [quarantine_records_table(records)])
    assert sorted(merged.column("raw").to_pylist()) == sorted(q.raw for q in records)


def test_records_are_packed_per_source_at_most_rows_at_a_time_and_counted_per_bundle():
    records = _records("a.csv", seed=1)[:10] + _records("b.csv", seed=2)[:4]
    with TestPipeline() as p:
        quarantine = p | beam.Create(records)
        packed = (quarantine | beam.ParDo(_PackQuarantine(rows=3)) | beam.GroupByKey()
                  | beam.MapTuple(lambda source, parts: (source, sorted(p.table().num_rows for p in parts),
                                                         sorted(r["line"] for p in parts
                                                                for r in p.table().to_pylist()))))
        assert_that(packed | beam.MapTuple(lambda source, sizes, lines: (source, sum(sizes), max(sizes) <= 3,
                                                                         lines)),
                    equal_to([("a.csv", 10, True, sorted(q.line for q in records[:10])),
                              ("b.csv", 4, True, sorted(q.line for q in records[10:]))]), label="packed")
        counts = (quarantine | beam.ParDo(_CountPerBundle(lambda q: [("records", q.records), (q.source, 1)]))
                  | beam.CombinePerKey(sum))
        assert_that(counts, equal_to([("records", sum(q.records for q in records)), ("a.csv", 10), ("b.csv", 4)]),
                    label="counted")


def test_a_packed_table_crosses_the_grouping_sorted_by_line_in_compressed_pieces():
    """``SortedQuarantinePart``: the packed tables of a batch run's quarantine cross the GroupByKey sorted by line
    (stably: records of one line keep their order), cut into pieces of ``piece_rows`` records with their own
    dictionaries, as zstd-compressed Arrow IPC: the records come back, their text columns still
    dictionary-encoded, in a fifth of the bytes the table's plain pickle takes for records of one reason (a
    sensor's "n/a" for a month; 2 million took 178 MB a copy plainly, 17 MB compressed)."""
    import pickle

    records = [Quarantined(f"pump-01,flow,2026-01-05T00:{i // 60 % 60:02d}:{i % 60:02d}Z,n/a", "na.csv",
                           (i * 7919) % 20_000 + 2, "flow" if i % 3 else "temp", 1, "parse", "parse_value",
                           "the value 'n/a' is missing", "run-1")
               for i in range(20_000)]
    table = quarantine_records_table(records)
    carried = pickle.dumps(SortedQuarantinePart.of(table, piece_rows=4096))
    part = pickle.loads(carried)
    assert len(part.pieces) == 5  # 4 x 4096 + 3616 records
    assert [first for first, _ in part.pieces] == [2, 4098, 8194, 12290, 16386]
    back = part.table()
    assert back.to_pylist() == [q._asdict() for q in sorted(records, key=lambda q: q.line)]
    assert back.schema.equals(table.schema, check_metadata=True)  # dictionary-encoded as packed
    assert len(carried) * 5 < len(pickle.dumps(table))


def _spread_records(source: str) -> list:
    """Records of lines 1-600 of ``source`` as a batch run's parts hold them: the reader's parts each of a stretch
    of lines (1-200, 201-400, 401-600), the validation's of lines from all over the file; line 300 is a wide row
    with 250 unknown columns, more than a piece or a chunk holds."""
    rng = random.Random(11)
    reader = [Quarantined(f"text {line}", source, line, "flow", 1, "parse", "parse_value", "n/a", "run-1")
              for line in range(1, 601) if line % 3]
    wide = [Quarantined("wide row", source, 300, f"tag_{c:03d}", 1, "validate", "unknown_channel", "no such channel",
                        "run-1") for c in range(250)]
    validated = [Quarantined("", source, line, rng.choice(["flow", "temp"]), 1, "validate", "out_of_range",
                             rng.choice(["too high", "too low"]), "run-1") for line in rng.sample(range(1, 601), 240)]
    rng.shuffle(validated)
    rng.shuffle(wide)
    return [reader[:133], reader[133:266], reader[266:], validated[:120] + wide[:100], validated[120:] + wide[100:]]


def test_parts_merge_a_chunk_of_whole_lines_at_a_time_in_line_order(tmp_path):
    """``chunks_in_line_order``: a batch run's parts, sorted by line and cut into pieces, give their records in
    chunks of whole lines in line order, each of about ``chunk_rows`` records (more only for a line that alone
    holds more: the wide row), every record once; merged chunk by chunk they are the file the whole source
    merged at once makes."""
    path = tmp_path / "readings.csv"
    path.write_text("".join(f"line {n}\n" for n in range(1, 601)))
    parts = _spread_records(str(path))
    everything = merged_quarantine(str(path), [quarantine_records_table(records) for records in parts])
    assert everything.num_rows == 400 + 250 + 240
    sorted_parts = [SortedQuarantinePart.of(quarantine_records_table(records), piece_rows=32) for records in parts]
    chunks = list(chunks_in_line_order(sorted_parts, chunk_rows=100))
    ranges = [(min(t.column("line").to_numpy().min() for t in chunk if t.num_rows),
               max(t.column("line").to_numpy().max() for t in chunk if t.num_rows)) for chunk in chunks]
    assert all(last < first for (_, last), (first, _) in zip(ranges, ranges[1:]))  # whole lines, in line order
    sizes = [sum(t.num_rows for t in chunk) for chunk in chunks]
    assert sum(sizes) == everything.num_rows and len(chunks) >= 8
    wide = [size for size, (first, last) in zip(sizes, ranges) if first <= 300 <= last]
    assert wide[0] >= 250 and all(size < 100 + 5 * 32 for size in sizes if size not in wide)
    raw_lines = RawLines(str(path)).find
    merged = [merged_quarantine(str(path), chunk, raw_lines) for chunk in chunks]
    assert [row for table in merged for row in table.to_pylist()] == everything.to_pylist()
    assert everything.to_pylist()[0]["raw"] in ("text 1", "line 1")  # the records without text got their line


def test_a_batch_runs_quarantine_file_is_written_chunk_by_chunk_as_the_whole_merge_writes_it(tmp_path):
    """``_WriteQuarantineFile`` after the grouping, with pieces and chunks small enough that the source's records
    take many of each: its file holds the records of the whole merge, in its order, with their lines' texts."""
    path = tmp_path / "readings.csv"
    path.write_text("".join(f"line {n}\n" for n in range(1, 601)))
    parts = _spread_records(str(path))
    expected = merged_quarantine(str(path), [quarantine_records_table(records) for records in parts]).to_pylist()
    out = tmp_path / "out"
    with TestPipeline() as p:
        written = (p | beam.Create([q for records in parts for q in records])
                   | beam.ParDo(_PackQuarantine(rows=150, piece_rows=32)) | beam.GroupByKey()
                   | beam.ParDo(_WriteQuarantineFile(str(out), chunk_rows=100)))
        assert_that(written, equal_to([("files_written", 1)]))
    (file,) = (out / "quarantine").glob("*.parquet")
    assert pq.read_table(file).to_pylist() == expected
    assert pq.read_schema(file).equals(QUARANTINE_SCHEMA, check_metadata=True)
    assert pq.ParquetFile(file).metadata.num_row_groups >= 8  # a row group per chunk at least


def test_raw_lines_are_read_forward_and_from_a_parquet_files_rows(tmp_path):
    """``RawLines``: a text file's lines, asked for in line order chunk after chunk, then one before the last read
    (read again from the start); a Parquet file's rows as the JSON text of their record; a message source or a
    file that is gone has none."""
    import pyarrow as pa

    from seqwatch.pipelines.parsing import raw_json

    path = tmp_path / "readings.csv"
    path.write_text("".join(f"line {n}\r\n" for n in range(1, 101)))
    lines = RawLines(str(path))
    assert lines.find({3, 1}) == {1: "line 1", 3: "line 3"}
    assert lines.find({50, 40, 200}) == {40: "line 40", 50: "line 50"}  # no line 200: the file ends at 100
    assert lines.find({2}) == {2: "line 2"}
    rows = [{"entity_id": "pump-01", "timestamp": f"2026-01-05T00:00:{s:02d}Z", "value": s * 0.5} for s in range(20)]
    parquet = tmp_path / "readings.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet, row_group_size=7)
    assert RawLines(str(parquet)).find({1, 8, 20, 21}) == {1: raw_json(rows[0]), 8: raw_json(rows[7]),
                                                           20: raw_json(rows[19])}
    assert RawLines(str(tmp_path / "gone.csv")).find({1}) == {}
    assert RawLines("kafka://broker/topic").find({1}) == {}


def _counted_one_by_one(records) -> dict:
    counts: dict = {}
    for q in records:
        for name in ("records_quarantined", f"quarantined.{q.stage}.{q.reason_code}"):
            counts[name] = counts.get(name, 0) + q.records
    return counts


def test_a_packed_table_counts_as_its_records_do_one_by_one():
    records = _records("a.csv", seed=3)  # 1 or 3 readings a record, and a damaged_file record of 0 readings
    counts = packed_quarantine_counts(quarantine_records_table(records))
    assert dict(counts) == _counted_one_by_one(records) and len(counts) == len(dict(counts))
    assert dict(counts)["quarantined.parse.damaged_file"] == 0  # counted, as one by one, though it is 0
    by_hand = packed_quarantine_counts(quarantine_records_table([
        Quarantined("x", "a.csv", 2, "", 3, "parse", "parse_timestamp", "r", "run-1"),
        Quarantined("y", "a.csv", 3, "flow", 1, "parse", "parse_value", "r", "run-1"),
        Quarantined("z", "a.csv", 4, "", 3, "parse", "parse_timestamp", "r", "run-1")]))
    assert sorted(by_hand) == [("quarantined.parse.parse_timestamp", 6), ("quarantined.parse.parse_value", 1),
                               ("records_quarantined", 7)]
    assert packed_quarantine_counts(quarantine_records_table([])) == []


def test_a_packed_table_gives_back_its_records_in_order_sharing_a_wide_rows_text():
    wide_row = "2026-01-05T00:00:00Z," + ",".join(["1.5"] * 500)
    records = [Quarantined(wide_row, "w.csv", 2, f"tag_{c}", 1, "validate", "unknown_channel", "r", "run-1")
               for c in range(300)] + _records("w.csv", seed=4)
    back = PackedQuarantine("w.csv", quarantine_records_table(records)).records()
    assert back == records
    assert len({id(q.raw) for q in back[:300]}) == 1  # one text object, not 300 copies
    assert _quarantined_records(records[0]) == [records[0]]


def test_the_batch_reader_packs_each_files_records_and_they_are_the_records_it_gives_one_by_one(tmp_path):
    path = tmp_path / "readings.csv"
    rows = [f"pump-01,flow,2026-01-05T00:00:{s:02d}Z,{'n/a' if s % 3 else s}\n" for s in range(40)]
    rows[7] = "pump-01,flow,not a time,1.0\n"
    path.write_text("entity_id,channel,timestamp,value\n" + "".join(rows))
    other = tmp_path / "other.csv"
    other.write_text("entity_id,channel,timestamp,value\npump-02,flow,2026-01-05T00:00:00Z,n/a\n")
    mapping = InputMapping()
    with TestPipeline() as p:
        one_by_one = p | "One" >> ReadInputFiles([str(path), str(other)], mapping, "run-1", chunk_rows=16)
        packed = p | "Packed" >> ReadInputFiles([str(path), str(other)], mapping, "run-1", chunk_rows=16,
                                                packed_quarantine=10)
        sizes = packed.quarantine | beam.Map(lambda t: (type(t).__name__, t.source.rsplit("/", 1)[1],
                                                        t.table.num_rows <= 10))
        assert_that(sizes | beam.combiners.Count.PerElement(),
                    equal_to([(("PackedQuarantine", "readings.csv", True), 3),  # 26 records: 10, 10, 6
                              (("PackedQuarantine", "other.csv", True), 1)]), label="tables")
        assert_that(packed.quarantine | beam.FlatMap(_quarantined_records),
                    equal_to(_expected_records(path, other, mapping)), label="records")
        assert_that(one_by_one.quarantine, equal_to(_expected_records(path, other, mapping)), label="one by one")


def _expected_records(path, other, mapping) -> list:
    from seqwatch.pipelines.sources import FileReader

    reader = FileReader(mapping, "run-1", 16)
    return [q for source in (path, other) for _, bad, _ in reader.read(str(source)) for q in bad]


_MERGE_SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)


@_MERGE_SETTINGS
@given(parts=st.lists(st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["flow", "temp", ""]),
                                         st.sampled_from(["parse", "validate"]), st.booleans()),
                               max_size=40), min_size=1, max_size=6),
       piece_rows=st.integers(1, 9), chunk_rows=st.integers(1, 40))
def test_any_parts_merged_chunk_by_chunk_are_the_whole_merge(parts, piece_rows, chunk_rows):
    """Any parts (lines repeated within and across parts, records with and without text, empty parts), any piece
    and chunk sizes: the chunks hold whole lines in line order, and merged one by one they are the whole merge."""
    records = [[Quarantined(f"text {line}" if kept else "", "msg:none", line, column, 1, stage, "r", "why", "run-1")
                for line, column, stage, kept in part] for part in parts]
    tables = [quarantine_records_table(part) for part in records]
    sorted_parts = [SortedQuarantinePart.of(table, piece_rows) for table in tables]
    chunks = list(chunks_in_line_order(sorted_parts, chunk_rows))
    lines = [sorted({int(n) for t in chunk for n in t.column("line").to_numpy()}) for chunk in chunks]
    assert all(chunk_lines for chunk_lines in lines[:-1]) and all(
        a[-1] < b[0] for a, b in zip(lines, lines[1:]) if a and b)
    merged = [row for chunk in chunks for row in merged_quarantine("msg:none", chunk).to_pylist()]
    assert merged == merged_quarantine("msg:none", tables).to_pylist()
    assert len(merged) == sum(map(len, records))
