"""Property-based tests: random mixtures of good and bad rows, in random encodings, separators and line endings.

At the reader level (fast, many examples): every reading is either parsed exactly as written or quarantined
with the expected reason, line and raw text, and ``records_in == parsed + quarantined``. End to end (slow, a
few examples, one pipeline run each): the run reconciles and every good reading is scored.
"""
from __future__ import annotations

import codecs
import os

import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from seqwatch.pipelines.sources import FileReader
from seqwatch.schemas.mapping import InputMapping

# Fixed examples by default; SEQWATCH_PROPERTY_EXAMPLES=1500 (and SEQWATCH_PROPERTY_E2E_EXAMPLES=8) explore
# that many fresh random examples instead.
_EXPLORE = os.environ.get("SEQWATCH_PROPERTY_EXAMPLES")
_EXPLORE_E2E = os.environ.get("SEQWATCH_PROPERTY_E2E_EXAMPLES")
READER_SETTINGS = settings(max_examples=int(_EXPLORE or 150), deadline=None, derandomize=not _EXPLORE,
                           suppress_health_check=[HealthCheck.function_scoped_fixture])

T0_S = 1_767_571_200  # 2026-01-05T00:00:00Z
STEP_S = 10
CHANNELS = ("flow", "pressure", "temperature", "vibration")
ENTITIES = ("p1", "K\u00fchl-2", "\u00d83")  # all encodable in cp1252
BAD_TIMES = ("", "nope", "12:00", "31/12/2026 10:00", "2026-99-99T00:00:00Z")
BAD_VALUES = ("", "NaN", "inf", "-Infinity", "12 kW", "abc", "1e999", "1,5")

encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"])
separators = st.sampled_from([",", ";", "\t"])
newlines = st.sampled_from(["\n", "\r\n", "\r"])
numbers = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


def _timestamp(step: int, style: int) -> str:
    seconds = T0_S + STEP_S * step
    if style == 0:
        return pd.Timestamp(seconds, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    if style == 1:
        local = pd.Timestamp(seconds, unit="s", tz="UTC").tz_convert("Asia/Kolkata")
        return local.strftime("%Y-%m-%dT%H:%M:%S") + "+05:30"
    return str(seconds) if style == 2 else str(seconds * 1000)


def _number(value: float, style: int) -> str:
    return [repr(value), f"{value:.3f}", f" {value:.6e} "][style]


@st.composite
def wide_rows(draw):
    """``[(kind, fields or text, expected)]`` for a wide file; expected readings use channel names."""
    steps = draw(st.lists(st.integers(0, 10_000), min_size=0, max_size=25, unique=True))
    rows = []
    for step in steps:
        kind = draw(st.sampled_from(["good", "good", "good", "bad_time", "bad_cell", "short", "nul", "blank"]))
        stamp = _timestamp(step, draw(st.integers(0, 3)))
        values = [draw(numbers) for _ in CHANNELS]
        texts = [_number(v, draw(st.integers(0, 2))) for v in values]
        if kind == "bad_time":
            stamp = draw(st.sampled_from(BAD_TIMES))
        if kind == "bad_cell":
            bad = draw(st.integers(0, 3))
            texts[bad] = draw(st.sampled_from(BAD_VALUES))
        rows.append((kind, step, [stamp] + texts, values, locals().get("bad")))
    return rows


@st.composite
def long_rows(draw):
    keys = draw(st.lists(st.tuples(st.sampled_from(ENTITIES), st.sampled_from(CHANNELS), st.integers(0, 10_000)),
                         min_size=0, max_size=40, unique=True))
    rows = []
    for entity, channel, step in keys:
        kind = draw(st.sampled_from(["good", "good", "good", "bad_time", "bad_value", "no_entity", "no_channel",
                                     "short", "nul", "blank"]))
        value = draw(numbers)
        fields = [entity, channel, _timestamp(step, draw(st.integers(0, 3))), _number(value, draw(st.integers(0, 2)))]
        if kind == "bad_time":
            fields[2] = draw(st.sampled_from(BAD_TIMES))
        elif kind == "bad_value":
            fields[3] = draw(st.sampled_from(BAD_VALUES))
        elif kind == "no_entity":
            fields[0] = ""
        elif kind == "no_channel":
            fields[1] = " "
        rows.append((kind, step, fields, value, None))
    return rows


def _join(fields, sep):
    """A CSV line: fields holding the separator are quoted."""
    return sep.join(f'"{f}"' if sep in f else f for f in fields)


def _line(kind, fields, sep):
    if kind == "blank":
        return sep * (len(fields) - 1) if len(fields) % 2 else ""
    if kind == "short":
        return _join(fields[:-1], sep)
    if kind == "nul":
        return _join(fields[:-1] + ["\x00"], sep)
    return _join(fields, sep)


def _write(path, header, rows, sep, newline, encoding):
    lines = [_join(header, sep)] + [_line(kind, fields, sep) for kind, _, fields, _, _ in rows]
    data = newline.join(lines) + newline
    path.write_bytes(data.encode(encoding))
    return lines


def _read(path, mapping):
    frames, quarantine, records = [], [], 0
    for batch, q, n in FileReader(mapping, "prop", chunk_rows=16).read(str(path)):
        frames.append(batch.frame)
        quarantine += q
        records += n
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["entity_id", "channel", "timestamp", "value", "source", "line"])
    return frame, quarantine, records


@READER_SETTINGS
@given(rows=wide_rows(), sep=separators, newline=newlines, encoding=encodings)
def test_wide_rows_parse_exactly_or_are_quarantined_with_their_reason(tmp_path, rows, sep, newline, encoding):
    path = tmp_path / "prop.csv"
    lines = _write(path, ["timestamp", *CHANNELS], rows, sep, newline, encoding)
    frame, quarantine, records = _read(path, InputMapping(format="wide"))

    expected, expected_q, expected_in = set(), set(), 0
    for number, (kind, step, fields, values, bad) in enumerate(rows, start=2):
        if kind == "blank":
            continue
        expected_in += 4
        if kind in ("short", "nul"):
            expected_q.add((number, "", 4, "malformed_row"))
        elif kind == "bad_time":
            expected_q.add((number, "", 4, "parse_timestamp"))
        else:
            for i, channel in enumerate(CHANNELS):
                if kind == "bad_cell" and i == bad:
                    expected_q.add((number, channel, 1, "parse_value"))
                else:
                    expected.add(("prop", channel, (T0_S + STEP_S * step) * 1_000_000, float(fields[1 + i]), number))
    assert records == expected_in == len(frame) + sum(q.records for q in quarantine)
    assert set(map(tuple, frame[["entity_id", "channel", "timestamp", "value", "line"]].values.tolist())) == expected
    assert {(q.line, q.column, q.records, q.reason_code) for q in quarantine} == expected_q
    assert all(q.raw == lines[q.line - 1] for q in quarantine)


@READER_SETTINGS
@given(rows=long_rows(), sep=separators, newline=newlines, encoding=encodings)
def test_long_rows_parse_exactly_or_are_quarantined_with_their_reason(tmp_path, rows, sep, newline, encoding):
    path = tmp_path / "prop.csv"
    lines = _write(path, ["entity_id", "channel", "timestamp", "value"], rows, sep, newline, encoding)
    frame, quarantine, records = _read(path, InputMapping())

    codes = {"short": "malformed_row", "nul": "malformed_row", "bad_time": "parse_timestamp",
             "bad_value": "parse_value", "no_entity": "missing_entity", "no_channel": "missing_channel"}
    expected, expected_q, expected_in = set(), set(), 0
    for number, (kind, step, fields, value, _) in enumerate(rows, start=2):
        if kind == "blank":
            continue
        expected_in += 1
        if kind in codes:
            expected_q.add((number, codes[kind]))
        else:
            expected.add((fields[0], fields[1], (T0_S + STEP_S * step) * 1_000_000, float(fields[3]), number))
    assert records == expected_in == len(frame) + sum(q.records for q in quarantine)
    assert set(map(tuple, frame[["entity_id", "channel", "timestamp", "value", "line"]].values.tolist())) == expected
    assert {(q.line, q.reason_code) for q in quarantine} == expected_q
    assert all(q.records == 1 and q.raw == lines[q.line - 1] for q in quarantine)


# End to end: files of 20 consecutive good steps (every reading of them must be scored) plus bad rows that carry
# no scorable reading (each kind at least once, more drawn at random), shuffled. Expected quarantine per bad row kind: (stage.reason_code, readings).
E2E_BAD = {
    "bad_time": ("parse.parse_timestamp", 4),
    "short": ("parse.malformed_row", 4),
    "nul": ("parse.malformed_row", 4),
    "all_cells_bad": ("parse.parse_value", 4),
    "duplicate": ("window.duplicate", 4),
    "future": ("validate.future_timestamp", 4),
    "before_horizon": ("validate.before_horizon", 4),
    "huge": ("validate.expectation_failed", 4),
    "blank": (None, 0),
}
NOW_US = 1_796_083_200_000_000  # 2026-12-01


@st.composite
def e2e_files(draw):
    from seqwatch.models.synthetic import generate_sensor_data

    readings, _ = generate_sensor_data(n_entities=1, n_steps=200, step_seconds=STEP_S, seed=draw(st.integers(0, 99)))
    values = readings.pivot(index="timestamp", columns="channel", values="value")[list(CHANNELS)].to_numpy()
    files = []
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, 150))
        good = [[_timestamp(start + i, draw(st.integers(0, 3)))] + [f"{v:.4f}" for v in values[start + i]]
                for i in range(20)]
        bad = []
        for kind in sorted(E2E_BAD) + draw(st.lists(st.sampled_from(sorted(E2E_BAD)), max_size=8)):
            row = list(draw(st.sampled_from(good)))
            if kind == "bad_time":
                row[0] = draw(st.sampled_from(BAD_TIMES[1:]))
            elif kind == "all_cells_bad":
                row[1:] = [draw(st.sampled_from(BAD_VALUES)) for _ in CHANNELS]
            elif kind == "future":
                row[0] = "2030-01-01T00:00:00Z"
            elif kind == "before_horizon":
                row[0] = "1999-06-01T00:00:00Z"
            elif kind == "huge":
                row[1:] = ["1e300"] * 4
            bad.append((kind, row))
        rows = [("good", r) for r in good] + bad
        order = draw(st.permutations(range(len(rows))))
        files.append([rows[k] for k in order])
    return files, draw(separators), draw(newlines), draw(encodings)


@pytest.mark.slow
@settings(max_examples=int(_EXPLORE_E2E or 2), deadline=None, derandomize=not _EXPLORE_E2E, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=e2e_files())
def test_random_mixtures_end_to_end_reconcile_and_score_every_good_reading(case, small_model_dir, tmp_path_factory):
    import pyarrow.dataset as ds

    from seqwatch.pipelines.batch import run_batch
    from seqwatch.pipelines.config import RunConfig

    files, sep, newline, encoding = case
    folder = tmp_path_factory.mktemp("mix")
    expected = {"records_scored": 0}
    for i, rows in enumerate(files):
        lines = [sep.join(["timestamp", *CHANNELS])]
        for kind, fields in rows:
            lines.append(_line(kind, fields, sep))
            if kind == "good":
                expected["records_scored"] += 4
            elif E2E_BAD[kind][0]:
                expected[E2E_BAD[kind][0]] = expected.get(E2E_BAD[kind][0], 0) + E2E_BAD[kind][1]
        (folder / f"m{i}.csv").write_bytes((newline.join(lines) + newline).encode(encoding))
    out = tmp_path_factory.mktemp("out")
    manifest = run_batch(RunConfig(inputs=(str(folder / "*.csv"),), output=str(out), model_dir=str(small_model_dir),
                                   mapping=InputMapping(format="wide")), ["--runner=DirectRunner"], now_us=NOW_US)
    assert manifest["records_in"] == manifest["records_scored"] + manifest["records_quarantined"]
    got = {"records_scored": manifest["records_scored"]}
    got.update({k.removeprefix("quarantined."): v for k, v in manifest["stages"].items()
                if k.startswith("quarantined.")})
    assert got == expected
    if manifest["records_quarantined"]:
        quarantine = ds.dataset(out / "quarantine", format="parquet").to_table().to_pandas()
        assert quarantine["records"].sum() == manifest["records_quarantined"]
        assert (quarantine["raw"] != "").all()


def test_bom_only_and_header_only_files_carry_no_record(tmp_path):
    for data in (b"", codecs.BOM_UTF8, "timestamp,flow\r\n".encode("utf-16"), b"\n\n"):
        path = tmp_path / "x.csv"
        path.write_bytes(data)
        assert _read(path, InputMapping(format="wide"))[2] == 0
