"""Which panes one input file holds alone, so the batch pipeline can cut them where the file is read.

The windowing stage groups each (entity, pane) by key, because a pane's readings may come from several files.
On the DirectRunner that GroupByKey holds every reading in memory until the whole input is read, and moving
the readings through it costs about as much as the model. But the usual large input (a file per entity, or per
entity and day) puts each pane in one file: then nothing needs to meet, and the pane can be cut as soon as its
file has been read.

``FileSpans`` is the index that makes this safe: for every input file, the time span of each entity's readings
(planning reads it from the Parquet footers' statistics, or from the entity and timestamp columns where the
statistics cannot tell). A pane is *local* to a file when no other file has a reading of the entity in the
pane's window with its context margins: every file then takes the same decision for a pane, and a local
pane's pieces are exactly those the GroupByKey would have brought together. The spans are computed with the
reader's own parsing functions, so they name entities and times exactly as the readings do. Text files are
indexed from their entity and timestamp columns read with Arrow's CSV reader; a file Arrow might read
differently from seqwatch's reader (another encoding, an Excel ``sep=`` line) makes the whole run use the
GroupByKey, as before.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from seqwatch.pipelines.parsing import FileLayout, SchemaDriftError, _ids, parse_timestamps, series_codes
from seqwatch.schemas.mapping import InputMapping

_BAD = np.iinfo(np.int64).min


class FileSpans:
    """``entity -> [(source, first µs, last µs)]``: the span of each entity's readings in each file."""

    def __init__(self, spans: dict[str, list[tuple[str, int, int]]]):
        self.spans = {entity: list(items) for entity, items in spans.items()}

    def is_local(self, source: str, entity: str, start_us: int, end_us: int) -> bool:
        """True when ``source`` is the only file with readings of ``entity`` in ``[start_us, end_us)``."""
        items = self.spans.get(entity)
        if not items or not any(s == source for s, _, _ in items):
            return False  # not in the index: never guess
        return all(s == source or last < start_us or first >= end_us for s, first, last in items)

    def file_groups(self) -> list[list[str]]:
        """The files that hold readings of one entity, joined across entities (files A and B share an entity, B
        and C another: one group), each sorted; only groups of more than one file. A replay re-runs a source's
        whole group, so that the windows of every entity it scores are cut from all of that entity's readings."""
        parent: dict[str, str] = {}

        def root(path: str) -> str:
            while parent.setdefault(path, path) != path:
                parent[path] = parent[parent[path]]
                path = parent[path]
            return path

        for items in self.spans.values():
            first = root(items[0][0])
            for source, _, _ in items[1:]:
                parent[root(source)] = first
        groups: dict[str, list[str]] = defaultdict(list)
        for path in parent:
            groups[root(path)].append(path)
        return sorted(sorted(set(members)) for members in groups.values() if len(set(members)) > 1)

    def __eq__(self, other):
        return isinstance(other, FileSpans) and self.spans == other.spans

    def __repr__(self):
        return f"FileSpans({len(self.spans)} entities)"


def file_spans(paths: list[str], mapping: InputMapping) -> FileSpans | None:
    """The index for ``paths``, or ``None`` when any file's spans cannot be read without parsing it whole."""
    from seqwatch.pipelines.sources import is_parquet, read_header

    spans: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for path in paths:
        try:
            header, sep = read_header(path, mapping.sep)
            if header is None:
                continue  # an empty file holds no reading
            layout = FileLayout.resolve(header, mapping, path)
        except SchemaDriftError:
            continue  # the reader quarantines every row of such a file: none reaches the windows
        if is_parquet(path):
            per_entity = _parquet_spans(path, layout, mapping)
        else:
            per_entity = _csv_spans(path, layout, mapping, mapping.sep or sep)
        if per_entity is None:
            return None
        for entity, (first, last) in per_entity.items():
            spans[entity].append((path, first, last))
    return FileSpans(spans)


def _widen(found: dict, entity: str, first: int, last: int) -> None:
    """Grow ``found[entity]`` (a ``(first, last)`` span) to cover ``[first, last]``."""
    old = found.get(entity)
    found[entity] = (first, last) if old is None else (min(old[0], first), max(old[1], last))


def _parquet_spans(path: str, layout: FileLayout, mapping: InputMapping) -> dict[str, tuple[int, int]] | None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    from seqwatch.pipelines.sources import nested_role_column

    found: dict[str, tuple[int, int]] = {}
    with FileSystems.open(path) as f:
        parquet = pq.ParquetFile(f, coerce_int96_timestamp_unit="us")  # as the reader reads INT96 (Spark's)
        names = parquet.schema_arrow.names
        if layout.timestamp_column not in names or (layout.entity_column and layout.entity_column not in names):
            return None
        if nested_role_column(parquet.schema_arrow, layout):
            return {}  # the reader quarantines every row of such a file: none reaches the windows
        for group in range(parquet.metadata.num_row_groups):
            quick = _row_group_span(parquet, group, layout, mapping)
            if quick is not None:
                if quick:
                    _widen(found, *quick)
                continue
            columns = _span_columns(layout, mapping)
            group_table = parquet.read_row_group(group, columns=columns)
            table = group_table.to_pandas(ignore_metadata=True)
            if layout.entity_column and pa.types.is_integer(group_table.schema.field(layout.entity_column).type):
                # ids 101, not 101.0 where a null made pandas read the column as floats (as the reader reads them)
                table[layout.entity_column] = group_table.column(layout.entity_column).to_pandas(
                    integer_object_nulls=True)
            for entity, first, last in _column_spans(table, layout, mapping):
                _widen(found, entity, first, last)
    return found


def _csv_spans(path: str, layout: FileLayout, mapping: InputMapping, sep: str) -> dict[str, tuple[int, int]] | None:
    """The spans of a text file from its entity and timestamp columns alone, read with Arrow's CSV reader (C++,
    threaded: a small part of the cost of parsing the file), then parsed with the reader's own functions.
    ``None`` wherever Arrow might not see the rows as seqwatch's reader does: an encoding other than UTF-8, an
    Excel ``sep=`` line, text that is not valid UTF-8, or anything else Arrow refuses."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    from seqwatch.pipelines.sources import _sep_hint, detect_encoding

    if CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED:
        return None  # Arrow cannot read through Beam's decompressing file object (".gz" input)
    with FileSystems.open(path) as f:
        head = f.read(1 << 16)
    if detect_encoding(head) not in ("auto", "utf-8-sig"):
        return None
    first = next((line for line in head.decode("utf-8", "replace").splitlines() if line.strip()), "")
    if _sep_hint(first.lstrip("\ufeff")):
        return None
    # A row with the wrong number of fields is skipped, as the reader quarantines it (malformed_row).
    parse = pacsv.ParseOptions(delimiter=sep, invalid_row_handler=lambda row: "skip")
    found: dict[str, tuple[int, int]] = {}
    try:
        with FileSystems.open(path) as f:  # the column names as Arrow reads the header
            names = pacsv.open_csv(f, parse_options=parse, read_options=pacsv.ReadOptions(block_size=1 << 20)).schema.names
        needed = _span_columns(layout, mapping)
        raw = {}
        for name in names:
            clean = name.lstrip("\ufeff").strip()
            if clean in needed:
                raw[clean] = name
        if any(column not in raw for column in needed):
            return None
        convert = pacsv.ConvertOptions(include_columns=[raw[c] for c in needed],
                                       column_types={raw[c]: pa.string() for c in needed},
                                       strings_can_be_null=False, quoted_strings_can_be_null=False)
        with FileSystems.open(path) as f:
            reader = pacsv.open_csv(f, parse_options=parse, convert_options=convert,
                                    read_options=pacsv.ReadOptions(block_size=1 << 24))
            for batch in reader:
                columns = {c: batch.column(raw[c]).to_pandas() for c in needed}
                for entity, first_us, last_us in _column_spans(columns, layout, mapping):
                    _widen(found, entity, first_us, last_us)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError, OSError):
        return None
    return found


def _row_group_span(parquet, group: int, layout: FileLayout, mapping: InputMapping):
    """``(entity, first, last)`` from a row group's statistics; ``()`` for a row group with no rows; ``None``
    when the statistics cannot tell (several entities, text timestamps, an endpoint that does not parse)."""
    import pyarrow as pa

    meta = parquet.metadata.row_group(group)
    if meta.num_rows == 0:
        return ()
    stats = {meta.column(i).path_in_schema: meta.column(i).statistics for i in range(meta.num_columns)}
    field = parquet.schema_arrow.field(layout.timestamp_column)
    if not (pa.types.is_timestamp(field.type) or pa.types.is_integer(field.type)):
        return None
    time_stats = stats.get(layout.timestamp_column)
    if time_stats is None or not time_stats.has_min_max:
        return None
    if layout.entity_column is not None:
        entity_stats = stats.get(layout.entity_column)
        if entity_stats is None or not entity_stats.has_min_max or entity_stats.min != entity_stats.max:
            return None
        entity, ok = _ids(pd.Series([entity_stats.min], dtype=object))
        if not ok[0]:
            return None
        entity = str(entity[0])
    else:
        entity = str(layout.entity_value)
    low, high = time_stats.min, time_stats.max
    if pa.types.is_integer(field.type):
        if low < 0 or (mapping.timestamp_unit is None and _guessed_unit(low) != _guessed_unit(high)):
            return None  # the unit is guessed per value: min and max may not bound the values between them
        bounds = parse_timestamps(pd.Series([low, high], dtype="int64"), mapping.timestamp_unit, mapping.timezone,
                                  mapping.timestamp_format)
    else:
        tz = field.type.tz
        series = pd.Series(pd.to_datetime([low, high], utc=tz is not None))
        bounds = parse_timestamps(series, mapping.timestamp_unit, mapping.timezone, mapping.timestamp_format)
    if (bounds == _BAD).any():
        return None
    return entity, int(bounds[0]), int(bounds[1])


def _guessed_unit(value: int) -> str:
    """The unit ``parse_timestamps`` guesses for an epoch number without a mapping unit."""
    magnitude = abs(value)
    return "s" if magnitude < 1e11 else "ms" if magnitude < 1e14 else "us" if magnitude < 1e17 else "ns"


def _span_columns(layout: FileLayout, mapping: InputMapping) -> list:
    """The columns a file's spans are read from: its timestamps and entities; in a long file of local times, its
    channels too, by whose series the reader tells a repeated daylight-saving hour apart (``series_codes``)."""
    columns = [layout.timestamp_column] + ([layout.entity_column] if layout.entity_column else [])
    if not layout.channel_columns and mapping.timezone != "UTC":
        columns.append(layout.long_columns["channel"])
    return columns


def _column_spans(table, layout: FileLayout, mapping: InputMapping):
    """``(entity, first, last)`` for each entity in a row group's timestamp (and entity) columns (``table``: a
    frame, or a dict of Series by column name), parsed as the reader parses them; rows the reader would
    quarantine are left out."""
    entity, ok = _ids(table[layout.entity_column]) if layout.entity_column is not None else (None, None)
    # the reader's series (parsing.parse_rows), by which a repeated daylight-saving hour is told apart
    channel_column = None if layout.channel_columns else layout.long_columns["channel"]
    channels = _ids(table[channel_column])[0].codes if channel_column in _span_columns(layout, mapping) else None
    groups = (series_codes(len(table[layout.timestamp_column]), entity.codes if entity is not None else None,
                           channels) if layout.channel_columns or channels is not None else None)
    stamps = parse_timestamps(table[layout.timestamp_column], mapping.timestamp_unit, mapping.timezone,
                              mapping.timestamp_format, groups)
    good = stamps != _BAD
    if entity is not None:
        good &= ok
        codes = np.asarray(entity.codes)[good]
        names = entity.categories
    else:
        codes = np.zeros(int(good.sum()), dtype=np.int64)
        names = [str(layout.entity_value)]
    if not len(codes):
        return
    if codes.min() == codes.max():  # one entity, as in a file per entity: no grouping (a third of a small file's cost)
        kept = stamps[good]
        yield str(names[codes[0]]), int(kept.min()), int(kept.max())
        return
    frame = pd.DataFrame({"code": codes, "stamp": stamps[good]}).groupby("code")["stamp"].agg(["min", "max"])
    for code, row in frame.iterrows():
        yield str(names[code]), int(row["min"]), int(row["max"])
