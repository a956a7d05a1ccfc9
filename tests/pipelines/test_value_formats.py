"""Value and time texts as exports write them, found by a bug hunt of value formats (2026-12-02): under a decimal
comma a point that groups thousands (1.234) had been read as a decimal point, 1000 times too small; a thousands
comma (1,200) had been called a decimal comma, and the advice followed read every value 1000 times too small; an
explicit --timestamp-format had been ignored for all-digit times (20260105 read as epoch seconds); a Parquet float
column of epoch nanoseconds had lost every row; full-width digits had been read as an epoch."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqwatch.pipelines.parsing import explain_value, parse_timestamps, parse_values
from seqwatch.pipelines.sources import FileReader
from seqwatch.schemas.mapping import InputMapping

US = 1_000_000


@pytest.mark.parametrize("many", [False, True])  # alone (the pandas path) and among clean values (Arrow's)
def test_a_point_under_a_decimal_comma_is_not_read_as_a_decimal_point(many):
    clean = ["10,5"] * (70 if many else 1)
    numbers = parse_values(pd.Series(clean + ["1.234", "1.234.567", "1.234,5", "12.5"]), ",")
    assert numbers[0] == 10.5 and np.isnan(numbers[-4:-1]).all() and numbers[-1] == 12.5  # 12.5 groups nothing
    assert explain_value("1.234", ",") == ("the value '1.234' has a point before three digits, which under the "
                                           "mapping's decimal ',' may group thousands (1.234 is 1234); write numbers "
                                           "without a thousands separator")


def test_a_comma_before_three_digits_is_not_called_a_decimal_comma():
    assert explain_value("1,200") == ("the value '1,200' has a comma that groups thousands or is a decimal comma; "
                                      "write numbers without a thousands separator, or set the mapping's decimal "
                                      "to ',' if it is a decimal comma")
    assert explain_value("95,7562") == "the value '95,7562' uses a decimal comma; set the mapping's decimal to ','"


def test_a_comma_separated_file_is_not_read_with_a_decimal_comma(tmp_path):
    path = tmp_path / "pump-01.csv"
    path.write_text('timestamp,flow\n2026-01-05T06:00:00Z,"1,200"\n2026-01-05T06:01:00Z,"1,201"\n')
    records = [q for _, bad, _ in FileReader(InputMapping(format="wide", decimal=","), "r").read(str(path))
               for q in bad]
    assert {q.reason_code for q in records} == {"schema_drift"} and sum(q.records for q in records) == 2
    assert "is separated by ',', so its values cannot use a decimal comma" in records[0].reason


@pytest.mark.parametrize("text, fmt, expected", [
    ("20260105", "%Y%m%d", "2026-01-05T00:00:00"),
    ("20260105060000", "%Y%m%d%H%M%S", "2026-01-05T06:00:00"),
    ("05012026", "%d%m%Y", "2026-01-05T00:00:00"),
])
def test_an_explicit_format_reads_all_digit_times_before_any_epoch_guess(text, fmt, expected):
    assert parse_timestamps(pd.Series([text]), None, "UTC", fmt)[0] == pd.Timestamp(expected, tz="UTC").value // 1000


def test_epoch_numbers_with_an_exponent_and_full_width_digits(tmp_path):
    stamps = parse_timestamps(pd.Series([1767592800e9 + 60e9 * i for i in range(3)]))  # float ns, as Parquet's
    assert (np.diff(stamps) == 60 * US).all() and stamps[0] == 1767592800 * US
    assert parse_timestamps(pd.Series(["１７６７５９２８００"]))[0] == np.iinfo(np.int64).min  # not an epoch: not read as one
    pq.write_table(pa.table({"timestamp": pa.array([1767592800e9 + 60e9 * i for i in range(6)]), "flow": [1.0] * 6}),
                   tmp_path / "pump-01.parquet")
    read = [(len(batch), len(bad)) for batch, bad, _ in
            FileReader(InputMapping(format="wide"), "r").read(str(tmp_path / "pump-01.parquet"))]
    assert read == [(6, 0)]


def test_a_spreadsheets_missing_value_and_french_thousands_are_named():
    """From the bug hunt of value texts: '#N/A' was "not a number" (not counted as a missing value) and 5 000 with
    a no-break space, as French exports group thousands, was "not a number" too."""
    assert explain_value("#N/A") == "the value '#N/A' is missing"
    for text in ("5\u00a0000", "1\u202f234,5"):
        assert explain_value(text).endswith("has a thousands separator; write numbers without one")
