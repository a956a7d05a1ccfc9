"""The readings one batch holds for one (entity, pane), as they travel to the GroupByKey that gathers a pane.

A stream's panes are gathered from many small pieces: a replay or a broker delivers each poll's readings of a
fleet as one batch, so each entity's pane arrives as a piece of nearly every batch (a replay of 200 entities of 8
channels on the wall clock: about 57 pieces of 9 readings per pane). As pandas frames those
pieces cost most of a stream's time (measured on a 200-entity replay, 2026-12-04): 2.2 kB of pickle each, 0.4 ms to
unpickle (Arrow strings and categoricals rebuilt one by one), and a ``pd.concat`` per pane of 5 ms, most of it
hashing the categorical columns' Arrow-string categories to see whether they match. A ``PanePiece`` keeps the
columns as numpy arrays and the two categorical columns' names as tuples; it pickles as one bytes
buffer, and ``pane_rows`` joins a pane's pieces with ``numpy.concatenate`` into ``PaneRows``, the numpy columns the
cutter works on (``pane_frame`` makes a pandas frame of them, building each categorical column once).
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from seqwatch.schemas.elements import categories_of

# The columns of a pane's frame (``windows._KeyByPane._split``): a batch's readings without their entity (the
# key says it), with ``own`` telling a reading of the pane from one lent to it as context.
NUMERIC = (("timestamp", np.int64), ("value", np.float64), ("line", np.int64), ("own", np.bool_))
CATEGORICAL = ("channel", "source")
COLUMNS = ("channel", "timestamp", "value", "source", "line", "own")


def id_codes(column: pd.Series) -> tuple[np.ndarray, object]:
    """``(codes, values)`` of a column of ids: a categorical's own codes, or factorised."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(), column.cat.categories
    return pd.factorize(column)


def group_ranges(entity: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, starts, ends)``: the rows sorted stably by ``entity`` (codes), then ``key`` (a pane, an archive
    window), rows of a group keeping their order, and each (entity, key) group's range ``starts[i]:ends[i]`` in
    that order. A batch is cut so into a piece per entity and pane (``windows``) or archive window (``sinks``)."""
    order = np.lexsort((key, entity))
    entity, key = entity[order], key[order]
    starts = np.flatnonzero(np.r_[True, (entity[1:] != entity[:-1]) | (key[1:] != key[:-1])])
    return order, starts, np.r_[starts[1:], len(order)]


class PanePiece:
    """Rows of one pane from one batch: ``names[column]`` are a categorical column's categories (a tuple, in
    pandas' order), ``arrays[column]`` its codes, or a numeric column's values."""

    __slots__ = ("names", "arrays")

    def __init__(self, names: dict, arrays: dict):
        self.names = names
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays["timestamp"])

    def __reduce__(self):
        # One buffer of every column's bytes (views of a batch's arrays are copied here, once), and the
        # codes' dtypes: int8 for up to 127 names, wider for more.
        codes = [self.arrays[name] for name in CATEGORICAL]
        buffer = b"".join(a.tobytes() for a in [self.arrays[name] for name, _ in NUMERIC] + codes)
        return _piece_from_buffer, (len(self), tuple(self.names[name] for name in CATEGORICAL),
                                    tuple(a.dtype.str for a in codes), buffer)


def _piece_from_buffer(n: int, names: tuple, code_dtypes: tuple, buffer: bytes) -> PanePiece:
    arrays, offset = {}, 0
    for name, dtype in list(NUMERIC) + list(zip(CATEGORICAL, code_dtypes)):
        dtype = np.dtype(dtype)
        arrays[name] = np.frombuffer(buffer, dtype=dtype, count=n, offset=offset)
        offset += n * dtype.itemsize
    return PanePiece(dict(zip(CATEGORICAL, names)), arrays)


class PieceCutter:
    """Pieces of one batch's pane frame (``windows._KeyByPane._split``): its columns taken out once, then each
    piece a slice of them (a frame slice per piece, ``iloc`` and a new index, cost about 0.1 ms)."""

    def __init__(self, pieces: pd.DataFrame):
        rows = PaneRows.from_frame(pieces)
        self.names = {name: tuple(rows.names(name).tolist()) for name in CATEGORICAL}
        self.arrays = rows.arrays

    def piece(self, lo: int, hi: int) -> PanePiece:
        return PanePiece(self.names, {name: array[lo:hi] for name, array in self.arrays.items()})


class PaneRows:
    """A pane's readings as numpy columns (``COLUMNS``), which the cutter works on: ``dtypes[column]`` is a
    categorical column's dtype (its names), ``arrays[column]`` its codes, or a numeric column's values. Cutting a
    fleet's pane through a pandas frame spent about half its time in pandas' column access and row selection
    (0.6 ms a pane of 1,000 readings); a frame is built only for the rows a pane quarantines (``frame``)."""

    __slots__ = ("dtypes", "arrays")

    def __init__(self, dtypes: dict, arrays: dict):
        self.dtypes = dtypes
        self.arrays = arrays

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "PaneRows":
        """The columns of a pane frame (``COLUMNS``; a categorical column keeps its codes, strings are factorised
        in sorted order)."""
        dtypes, arrays = {}, {}
        for name in CATEGORICAL:
            column = frame[name]
            if isinstance(column.dtype, pd.CategoricalDtype):
                dtypes[name], arrays[name] = column.dtype, column.cat.codes.to_numpy()
            else:
                codes, categories = pd.factorize(column, sort=True)
                dtypes[name], arrays[name] = categories_of(tuple(categories.tolist())), codes
        for name, dtype in NUMERIC:
            arrays[name] = frame[name].to_numpy(dtype=dtype)
        return cls(dtypes, arrays)

    def __len__(self) -> int:
        return len(self.arrays["timestamp"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def names(self, name: str) -> pd.Index:
        """A categorical column's names, in the order of its codes."""
        return self.dtypes[name].categories

    def take(self, rows: np.ndarray) -> "PaneRows":
        """The rows ``rows`` selects (positions or a mask), in that order."""
        return PaneRows(self.dtypes, {name: array[rows] for name, array in self.arrays.items()})

    def slice(self, lo: int, hi: int) -> "PaneRows":
        """Rows ``lo:hi`` (views)."""
        return PaneRows(self.dtypes, {name: array[lo:hi] for name, array in self.arrays.items()})

    def frame(self) -> pd.DataFrame:
        """The rows as a pane frame (``COLUMNS``, categoricals as ``pane_frame`` gives them)."""
        return pd.DataFrame({name: pd.Categorical.from_codes(self.arrays[name], dtype=self.dtypes[name])
                             if name in self.dtypes else self.arrays[name] for name in COLUMNS})


def pane_rows(parts) -> PaneRows:
    """The ``PaneRows`` of a pane's ``PanePiece`` objects, in the order given."""
    parts = list(parts)
    dtypes, arrays = {}, {}
    for name in CATEGORICAL:
        dtypes[name], arrays[name] = _joined_codes([part.names[name] for part in parts],
                                                   [part.arrays[name] for part in parts])
    for name, _ in NUMERIC:
        arrays[name] = np.concatenate([part.arrays[name] for part in parts])
    return PaneRows(dtypes, arrays)


def pane_frame(parts) -> pd.DataFrame:
    """One frame (``COLUMNS``) of a pane's ``PanePiece`` objects, in the order given, with a fresh index."""
    return pane_rows(parts).frame()


def _joined_codes(names: list, codes: list) -> tuple:
    """``(dtype, codes)`` of one categorical of the pieces' codes: the pieces' names joined (sorted, as
    factorising their strings would give), each piece's codes mapped onto them (-1, a missing value, stays -1)."""
    distinct = tuple(dict.fromkeys(names))
    joined_names = distinct[0] if len(distinct) == 1 else tuple(sorted(set().union(*distinct)))
    dtype, _ = _names_onto(joined_names, joined_names)
    maps = {these: _names_onto(these, joined_names)[1] for these in distinct}
    if all(m is None for m in maps.values()):  # every piece's codes are already the joined dtype's
        return dtype, np.concatenate(codes)
    joined = np.concatenate([c if maps[these] is None else maps[these][np.asarray(c, dtype=np.int64)]
                             for these, c in zip(names, codes)])
    return dtype, joined


@functools.lru_cache(maxsize=4096)
def _names_onto(these: tuple, joined: tuple) -> tuple:
    """``(dtype, map)``: the categorical dtype of ``joined`` and the codes of ``these`` names in it, as an array
    whose last entry, -1, a missing value's code picks (None when the codes are the same)."""
    dtype = categories_of(joined)
    position = {name: i for i, name in enumerate(dtype.categories)}
    codes = [position[name] for name in these]
    if codes == list(range(len(these))):
        return dtype, None
    return dtype, np.array(codes + [-1], dtype=np.int64)
