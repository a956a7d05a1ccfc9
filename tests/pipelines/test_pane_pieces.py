"""A pane's pieces (``pipelines/pane_pieces.py``): what travels to the GroupByKey, and the frame joined from it."""
import pickle

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from seqwatch.pipelines.pane_pieces import COLUMNS, PieceCutter, pane_frame


def _pieces_frame(channels, sources, start=0):
    """A pane frame as ``_KeyByPane._split`` builds it: categorical channel and source, sorted categories."""
    n = len(channels)
    return pd.DataFrame({
        "channel": pd.Categorical(channels),
        "timestamp": np.arange(start, start + n, dtype=np.int64) * 1_000_000,
        "value": np.arange(n, dtype=np.float64) + 0.5,
        "source": pd.Categorical(sources),
        "line": np.arange(1, n + 1, dtype=np.int64) + start,
        "own": np.arange(n) % 2 == 0,
    })


def test_pieces_with_other_names_join_onto_sorted_names_worked_by_hand():
    a = PieceCutter(_pieces_frame(["flow", "temp"], ["a.csv", "a.csv"])).piece(0, 2)
    b = PieceCutter(_pieces_frame(["pressure", "flow"], ["b.csv", "b.csv"], start=2)).piece(0, 2)
    assert a.names["channel"] == ("flow", "temp") and b.names["channel"] == ("flow", "pressure")
    frame = pane_frame([a, b])
    assert list(frame.columns) == list(COLUMNS)
    # joined names flow, pressure, temp: a's codes 0, 1 become 0, 2; b's 1, 0 become 1, 0
    assert list(frame["channel"].cat.categories) == ["flow", "pressure", "temp"]
    assert frame["channel"].cat.codes.tolist() == [0, 2, 1, 0]
    assert frame["channel"].tolist() == ["flow", "temp", "pressure", "flow"]
    assert frame["source"].tolist() == ["a.csv", "a.csv", "b.csv", "b.csv"]
    assert frame["timestamp"].tolist() == [0, 1_000_000, 2_000_000, 3_000_000]
    assert frame["line"].tolist() == [1, 2, 3, 4]
    assert frame["own"].tolist() == [True, False, True, False]
    assert frame.index.equals(pd.RangeIndex(4))


def test_pickled_pieces_give_the_frame_pandas_concat_gives():
    rng = np.random.default_rng(3)
    names = ["flow", "pressure", "temp", "vibration"]
    batches = [_pieces_frame(list(rng.choice(names[:k], 12)), [f"f{k}.csv"] * 12, start=12 * k) for k in (2, 3, 4, 4)]
    slices = [(frame, lo, hi) for frame in batches for lo, hi in ((0, 5), (5, 12))]
    pieces = [pickle.loads(pickle.dumps(PieceCutter(frame).piece(lo, hi))) for frame, lo, hi in slices]
    joined = pane_frame(pieces)
    expected = pd.concat([frame.iloc[lo:hi] for frame, lo, hi in slices], ignore_index=True)
    # pandas joins categoricals whose categories differ as plain strings; the pieces keep one categorical
    for name in ("channel", "source"):
        assert joined[name].astype(str).tolist() == expected[name].astype(str).tolist()
    pd.testing.assert_frame_equal(joined.drop(columns=["channel", "source"]),
                                  expected.drop(columns=["channel", "source"]))
    assert joined["timestamp"].dtype == np.int64 and joined["own"].dtype == bool


def test_pieces_of_one_batch_keep_its_categorical_dtype():
    frame = _pieces_frame(["flow", "temp", "flow", "temp"], ["a.csv"] * 4)
    cutter = PieceCutter(frame)
    joined = pane_frame([pickle.loads(pickle.dumps(cutter.piece(0, 1))), cutter.piece(1, 4)])
    pd.testing.assert_frame_equal(joined, frame)


def test_a_piece_pickles_only_its_own_rows():
    frame = _pieces_frame(["flow"] * 10_000, ["a.csv"] * 10_000)
    piece = PieceCutter(frame).piece(100, 103)
    assert len(piece) == 3
    assert len(pickle.dumps(piece)) < 400  # 3 rows of 26 bytes and the names, not the 10,000 rows' 260 kB
    back = pane_frame([pickle.loads(pickle.dumps(piece))])
    assert back["line"].tolist() == [101, 102, 103]


def test_a_missing_code_stays_missing_and_plain_strings_are_factorised():
    frame = _pieces_frame(["flow", "temp"], ["a.csv", "a.csv"])
    frame["channel"] = pd.Categorical(["flow", None], categories=["flow", "temp"])
    plain = _pieces_frame(["temp", "flow"], ["b.csv", "b.csv"])
    plain["source"] = plain["source"].astype(object)
    joined = pane_frame([PieceCutter(frame).piece(0, 2), PieceCutter(plain).piece(0, 2)])
    assert joined["channel"].isna().tolist() == [False, True, False, False]
    assert joined["channel"].tolist()[2:] == ["temp", "flow"]
    assert joined["source"].tolist() == ["a.csv", "a.csv", "b.csv", "b.csv"]


def test_pieces_survive_beams_group_by_key():
    a = _pieces_frame(["flow", "temp", "flow"], ["a.csv"] * 3)
    b = _pieces_frame(["pressure", "flow"], ["b.csv"] * 2, start=3)
    keyed = [(("pump-1", 7), PieceCutter(a).piece(0, 3)), (("pump-1", 7), PieceCutter(b).piece(0, 2)),
             (("pump-2", 7), PieceCutter(b).piece(1, 2))]

    def check(actual):
        got = {key: sorted(zip(frame["line"], frame["channel"].astype(str))) for key, frame in actual}
        assert got == {("pump-1", 7): [(1, "flow"), (2, "temp"), (3, "flow"), (4, "pressure"), (5, "flow")],
                       ("pump-2", 7): [(5, "flow")]}, got

    with TestPipeline() as p:
        frames = (p | beam.Create(keyed) | beam.GroupByKey()
                  | beam.MapTuple(lambda key, parts: (key, pane_frame(parts))))
        assert_that(frames, check)
