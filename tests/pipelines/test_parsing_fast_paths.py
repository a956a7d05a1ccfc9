"""The Arrow fast paths of ``parse_values`` and ``parse_timestamps`` (CSV columns arrive as Arrow-backed strings)
give, value by value, what the general pandas path gives for the same text (an object column), on texts made to
sit at the edges of what each path accepts."""
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from seqwatch.pipelines import parsing
from seqwatch.pipelines.parsing import parse_timestamps, parse_values


def _arrow(texts: list[str]) -> pd.Series:
    return pd.Series(pd.arrays.ArrowStringArray(pa.array(texts, pa.string())))


def _objects(texts: list[str]) -> pd.Series:
    return pd.Series(np.array(texts, dtype=object))


def _number_texts(rng) -> list[str]:
    floats = rng.normal(size=3000) * 10.0 ** rng.integers(-40, 40, 3000)
    texts = [repr(float(x)) for x in floats]
    texts += ["%.25g" % x for x in floats[:500]] + ["%.3e" % x for x in floats[500:1000]]
    texts += [str(int(x)) for x in rng.integers(-10**18, 10**18, 500)]
    texts += [f"{x:.4f}".replace(".", ",") for x in floats[1000:1500]] + ["-,5", "+1,0", "1,", ",", "1,2,3", "1.234,5"]
    texts += ["".join(map(str, rng.integers(0, 10, int(n)))) for n in rng.integers(15, 40, 300)]  # past int64
    texts += ["-0", "-0.0", "+.5", "5.", "007.50", "1e308", "1e309", "-1e999", "1e-400", "4.9e-324",
              "2.2250738585072011e-308", "0." + "1" * 60, "1E5", "1e+05", "+1", "9007199254740993"]
    # not plain: the general path's business (and must still give the same answer)
    texts += [" 1.5", "1.5 ", "\u22122.5", "12,5", "1_000", "0x1A", "inf", "-Infinity", "nan", "NaN", "", "-",
              "1.5kW", "1,234.5", "abc", "1e", "e5", ".", "+", "1.2.3", "١٢"]
    return texts


@pytest.mark.parametrize("decimal", [".", ","])
def test_plain_numbers_parse_as_pandas_parses_them(decimal):
    texts = _number_texts(np.random.default_rng(3))
    fast, general = parse_values(_arrow(texts), decimal), parse_values(_objects(texts), decimal)
    np.testing.assert_array_equal(fast, general)
    plain = parsing._matches(pa.array(texts), parsing._PLAIN_NUMBER)
    assert plain.sum() > 4000 and not plain[-21:].any()  # the fast path took the plain ones, and only those
    expected = [1.5, -0.25, np.nan] if decimal == "," else [np.nan] * 3
    np.testing.assert_array_equal(parse_values(_arrow(["1,5", "-0,25", "1,234.5"]), decimal), expected)


def test_a_column_arrow_refuses_as_a_whole_goes_to_pandas(monkeypatch):
    # Arrow parses every text the plain-number pattern takes; a broader pattern hands it one it refuses, which
    # must send the column to the general path, not fail the chunk.
    monkeypatch.setattr(parsing, "_PLAIN_NUMBER", r"^.+$")
    texts = ["1.5", " 2.5", "12,5", "abc"]
    np.testing.assert_array_equal(parse_values(_arrow(texts), ","), [1.5, 2.5, 12.5, np.nan])


def _timestamp_texts(rng, n: int = 4000) -> list[str]:
    texts = []
    for _ in range(n):
        year, month, day = int(rng.integers(1895, 2205)), int(rng.integers(1, 13)), int(rng.integers(1, 32))
        hour, minute, second = int(rng.integers(0, 25)), int(rng.integers(0, 60)), int(rng.integers(0, 61))
        text = f"{year:04d}-{month:02d}-{day:02d}{'T' if rng.random() < 0.7 else ' '}{hour:02d}:{minute:02d}"
        if rng.random() < 0.8:
            text += f":{second:02d}"
            if rng.random() < 0.4:
                text += "." + "".join(map(str, rng.integers(0, 10, int(rng.integers(1, 10)))))
        zone = rng.random()
        if zone < 0.3:
            text += "Z"
        elif zone < 0.6:
            sign, hh, mm = "+-"[int(rng.integers(0, 2))], int(rng.integers(0, 15)), int(rng.choice([0, 30, 45]))
            text += f"{sign}{hh:02d}{':' if rng.random() < 0.7 else ''}{mm:02d}"
        texts.append(text)
    return texts


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Berlin"])
def test_plain_iso_timestamps_parse_as_pandas_parses_them(timezone):
    rng = np.random.default_rng(5)
    texts = _timestamp_texts(rng)  # about 1 in 9 holds a day or an hour that does not exist
    for start in range(0, len(texts), 200):  # chunks: one impossible date sends its chunk's group to pandas
        part = texts[start:start + 200]
        np.testing.assert_array_equal(parse_timestamps(_arrow(part), timezone=timezone),
                                      parse_timestamps(_objects(part), timezone=timezone))
    # the fast path took every valid text of its forms: years 1900-2199, at most 6 digits of fraction, and a zone
    # unless the timezone is UTC
    valid = [t for t, ok in zip(texts, parse_timestamps(_objects(texts)) != np.iinfo(np.int64).min) if ok]
    _, done = parsing._iso_timestamps(pa.array(valid), timezone)
    zoned = [t.endswith("Z") or "+" in t[16:] or "-" in t[16:] for t in valid]
    fraction = [len(m.group(1)) if (m := re.search(r"\.(\d+)", t)) else 0 for t in valid]
    plain = [1900 <= int(t[:4]) <= 2199 and digits <= 6 and (z or timezone == "UTC")
             for t, z, digits in zip(valid, zoned, fraction)]
    assert done.tolist() == plain and sum(plain) > 1000


def test_other_timestamp_forms_are_left_to_pandas():
    texts = ["2026-01-05T10:00:00Z", " 2026-01-05T10:00:00Z", "1767607200", "Jan 5 2026 10:00", "2026-01-05",
             "2026-01-05T10:00:00.1234567Z", "2026-01-05T10:00:00+01", "10:00", "05/01/2026 10:00"]
    _, done = parsing._iso_timestamps(pa.array(texts), "UTC")
    assert done.tolist() == [True] + [False] * 8
    np.testing.assert_array_equal(parse_timestamps(_arrow(texts)), parse_timestamps(_objects(texts)))
