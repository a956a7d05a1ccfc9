"""Writes the bad-input corpus next to this file: ``python tests/pipelines/bad_inputs/make_corpus.py``.

Each file is one named case; what the pipeline must do with it (scored, quarantined with which reason, or the
run stops) is stated literally in ``tests/pipelines/test_bad_inputs.py``. Files are small: 20 good steps of the
synthetic pump channels (enough for the test model's window of 16) plus the bad rows of the case.

- ``wide/``: wide files (``timestamp`` + one column per channel, entity = file name), read with the mapping
  ``{"format": "wide", "timezone": "Europe/Berlin"}``.
- ``long/``: long files (``entity_id,channel,timestamp,value``, entity = case name), default long mapping.
- ``stop/``: files whose run must stop before it starts (one run per file; see ``STOP_MAPPINGS`` in the test).
- ``empty/``: files that hold no record at all (a run over only these stops with "holds no records").

The bytes are deterministic (fixed seed, fixed shuffles), and ``test_corpus_is_reproducible`` checks that this
script still writes exactly the committed files.
"""
from __future__ import annotations

import codecs
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
CHANNELS = ("flow", "pressure", "temperature", "vibration")
HEADER = "timestamp," + ",".join(CHANNELS)
T0 = pd.Timestamp("2026-01-05T00:00:00Z")
STEP_S = 10
N_GOOD = 20


# 40 steps of the synthetic pump (seqwatch.models.synthetic, seed 11), frozen here so that the corpus does not
# change when the generator does: flow, pressure, temperature, vibration.
VALUES = np.array([
    (95.213, 2.857, 58.151, 0.548),
    (92.079, 2.776, 57.741, 0.579),
    (91.412, 2.707, 57.038, 0.578),
    (86.718, 2.700, 56.507, 0.636),
    (88.442, 2.661, 56.346, 0.639),
    (85.632, 2.676, 55.817, 0.582),
    (85.024, 2.626, 55.675, 0.604),
    (85.388, 2.596, 55.379, 0.562),
    (85.653, 2.671, 55.579, 0.551),
    (86.798, 2.654, 55.117, 0.579),
    (87.146, 2.670, 55.713, 0.573),
    (86.941, 2.653, 55.429, 0.594),
    (85.898, 2.635, 55.382, 0.631),
    (88.291, 2.635, 55.975, 0.639),
    (87.784, 2.654, 56.537, 0.633),
    (89.756, 2.714, 56.451, 0.587),
    (87.576, 2.690, 56.117, 0.563),
    (85.592, 2.633, 56.569, 0.580),
    (88.436, 2.693, 56.243, 0.529),
    (91.541, 2.637, 56.301, 0.536),
    (89.315, 2.694, 56.302, 0.522),
    (88.150, 2.629, 55.446, 0.553),
    (88.920, 2.612, 55.993, 0.562),
    (87.799, 2.649, 55.392, 0.631),
    (86.967, 2.619, 55.224, 0.612),
    (84.927, 2.532, 54.681, 0.634),
    (84.709, 2.603, 54.336, 0.630),
    (83.919, 2.633, 54.194, 0.638),
    (81.993, 2.462, 54.435, 0.582),
    (80.580, 2.571, 54.402, 0.590),
    (81.361, 2.450, 53.640, 0.583),
    (81.783, 2.442, 53.790, 0.601),
    (81.018, 2.444, 53.268, 0.617),
    (80.681, 2.389, 52.718, 0.626),
    (80.792, 2.502, 53.378, 0.657),
    (83.659, 2.480, 53.607, 0.660),
    (81.524, 2.448, 53.559, 0.672),
    (83.401, 2.493, 54.078, 0.648),
    (85.717, 2.477, 54.570, 0.612),
    (84.913, 2.565, 54.636, 0.589),
])


def cells(i: int) -> list[str]:
    """The four channel values of step ``i`` as text."""
    return [f"{v:.3f}" for v in VALUES[i]]


def iso(i: int, t0: pd.Timestamp = T0) -> str:
    return (t0 + pd.Timedelta(seconds=STEP_S * i)).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_s(i: int) -> int:
    return int(T0.timestamp()) + STEP_S * i


def wide_rows(n: int = N_GOOD, stamp=iso) -> list[list[str]]:
    return [[stamp(i)] + cells(i) for i in range(n)]


def wide_text(rows: list[list[str]], sep: str = ",", header: str = HEADER, newline: str = "\n",
              last_newline: bool = True) -> str:
    lines = [header.replace(",", sep)] + [sep.join(r) for r in rows]
    return newline.join(lines) + (newline if last_newline else "")


def long_rows(entity: str, steps=range(N_GOOD), channels=CHANNELS) -> list[list[str]]:
    return [[entity, c, iso(i), f"{VALUES[i][CHANNELS.index(c)]:.3f}"] for i in steps for c in channels]


def long_text(rows: list[list[str]]) -> str:
    return "\n".join(["entity_id,channel,timestamp,value"] + [",".join(r) for r in rows]) + "\n"


def _set(rows, i, column, value):
    rows[i][1 + CHANNELS.index(column)] = value
    return rows


def _shuffled(rows, seed):
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[k] for k in order]


def _parquet(frame: pd.DataFrame) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue()


def wide_cases() -> dict[str, bytes]:
    c: dict[str, str | bytes] = {}
    c["w01_clean.csv"] = wide_text(wide_rows())
    c["w02_utf8_bom.csv"] = codecs.BOM_UTF8 + wide_text(wide_rows()).encode()
    c["w03_utf16_bom.csv"] = wide_text(wide_rows(), newline="\r\n").encode("utf-16")  # BOM + little endian
    c["w04_utf16le_no_bom.csv"] = wide_text(wide_rows()).encode("utf-16-le")
    c["w05_semicolon.csv"] = wide_text(wide_rows(), sep=";")
    rows = [[r[0]] + [v.replace(".", ",") for v in r[1:]] for r in wide_rows(3)]
    c["w06_semicolon_decimal_comma.csv"] = wide_text(rows, sep=";")
    c["w07_tab.tsv"] = wide_text(wide_rows(), sep="\t")
    c["w08_excel_sep_hint.csv"] = "sep=;\n" + wide_text(wide_rows(), sep=";")
    c["w09_crlf.csv"] = wide_text(wide_rows(), newline="\r\n")
    c["w10_cr_only.csv"] = wide_text(wide_rows(), newline="\r")
    rows = [[f'"{v}"' for v in r] for r in wide_rows()]
    rows[7][1] = '"' + cells(7)[0].replace(".", ",") + '"'  # a quoted decimal comma in a comma file
    c["w11_quoted_fields.csv"] = wide_text(rows, header=",".join(f'"{h}"' for h in HEADER.split(",")))
    lines = wide_text(wide_rows()).splitlines()
    lines[5:5] = ["", "   ", ",,,,", " , , , ,"]
    lines.insert(15, "")
    c["w12_blank_lines.csv"] = "\n".join(lines) + "\n\n\n"
    rows = wide_rows(N_GOOD + 1)
    rows[-1] = rows[-1][:3]
    rows[-1][2] = rows[-1][2][:2]  # the file was cut while writing its last line
    c["w13_truncated_last_line.csv"] = wide_text(rows, last_newline=False)
    rows = wide_rows()
    for i, column, value in ((3, "flow", "NaN"), (7, "pressure", "inf"), (11, "temperature", "-Infinity"),
                             (15, "vibration", "")):
        _set(rows, i, column, value)
    c["w14_nan_inf_empty.csv"] = wide_text(rows)
    rows = _set(_set(wide_rows(), 4, "flow", cells(4)[0] + " l/min"), 9, "pressure", cells(9)[1] + "bar")
    c["w15_units.csv"] = wide_text(rows)
    c["w16_tz_offsets.csv"] = wide_text(wide_rows(stamp=lambda i: (T0 + pd.Timedelta(seconds=STEP_S * i))
                                                  .tz_convert("America/New_York").isoformat()))
    fall = pd.Timestamp("2026-10-25T01:56:40")  # Europe/Berlin: 02:00-02:59 happens twice that night
    rows = [[(fall + pd.Timedelta(seconds=STEP_S * i)).strftime("%Y-%m-%d %H:%M:%S")] + cells(i)
            for i in range(N_GOOD + 4)]
    c["w17_dst_ambiguous.csv"] = wide_text(rows)
    spring = pd.Timestamp("2026-03-29T01:56:40")  # Europe/Berlin: 02:00-02:59 does not exist that night
    rows = [[(spring + pd.Timedelta(seconds=STEP_S * i)).strftime("%Y-%m-%d %H:%M:%S")] + cells(i)
            for i in range(N_GOOD + 4)]
    c["w18_dst_nonexistent.csv"] = wide_text(rows)
    c["w19_epoch_seconds.csv"] = wide_text(wide_rows(stamp=lambda i: str(epoch_s(i))))
    c["w20_epoch_millis.csv"] = wide_text(wide_rows(stamp=lambda i: str(epoch_s(i) * 1000)))
    scale = ("", "000", "000000", "000000000")
    c["w21_epoch_mixed_units.csv"] = wide_text(wide_rows(stamp=lambda i: str(epoch_s(i)) + scale[i % 4]))
    rows = wide_rows()
    rows = rows[:7] + [rows[5], rows[6]] + rows[7:]
    c["w22_duplicated_rows.csv"] = wide_text(rows)
    c["w23_out_of_order.csv"] = wide_text(_shuffled(wide_rows(), seed=23))
    rows = _set(_set(wide_rows(), 6, "flow", "1e300"), 12, "pressure", "1e400")
    c["w24_huge_values.csv"] = wide_text(rows)
    rows = _set(_set(wide_rows(), 5, "temperature", "2000"), 10, "pressure", "-5")
    c["w25_outside_physical_bounds.csv"] = wide_text(rows)
    rows = _set(_set(wide_rows(), 8, "flow", "x" * 10_000), 13, "vibration", "1" * 400)
    c["w26_very_long_strings.csv"] = wide_text(rows)
    lines = wide_text(wide_rows()).encode().splitlines()
    lines[10:10] = [b"\x00\x01\x02\x03PK\x03\x04\x00\x00", bytes(range(0x80, 0x100))]
    c["w27_binary_junk.csv"] = b"\n".join(lines) + b"\n"
    rows = [r + [f"{40 + i % 7}.0"] for i, r in enumerate(wide_rows())]
    c["w28_extra_column.csv"] = wide_text(rows, header=HEADER + ",humidity")
    rows = wide_rows()
    bad_times = ["not a date", "2026-13-45T00:00:00Z", "12:00:00", "05/01/2026 00:03:20", ""]
    rows += [[t] + cells(i) for i, t in enumerate(bad_times)]
    c["w29_bad_timestamps.csv"] = wide_text(rows)
    rows = wide_rows() + [["2030-01-01T00:00:00Z"] + cells(0), ["1999-12-31T23:59:50Z"] + cells(1), ["0"] + cells(2)]
    c["w30_future_and_past.csv"] = wide_text(rows)
    lines = wide_text(wide_rows()).splitlines()
    lines.insert(11, HEADER)  # two exports concatenated
    c["w31_repeated_header.csv"] = "\n".join(lines) + "\n"
    rows = _set(wide_rows(), 4, "temperature", cells(4)[2] + " °C")
    c["w32_cp1252_unit.csv"] = wide_text(rows).encode("cp1252")
    rows = [[f"  {r[0]} "] + [f" {v}  " for v in r[1:]] for r in wide_rows()]
    c["w33_whitespace_padding.csv"] = wide_text(rows)
    rows = [[r[0], f"{float(r[1]):.4E}", "+" + r[2], r[3], f"{float(r[4]) * 1000:.1f}e-3"] for r in wide_rows()]
    c["w34_scientific_notation.csv"] = wide_text(rows)
    rows = wide_rows()
    bad_numbers = {2: ("flow", "1,234.5"), 6: ("pressure", "0x1A"), 10: ("temperature", "true"),
                   14: ("vibration", "\u22120.5")}  # thousands separator, hex, boolean, Unicode minus
    for i, (column, value) in bad_numbers.items():
        _set(rows, i, column, f'"{value}"' if "," in value else value)
    c["w35_odd_numbers.csv"] = wide_text(rows)
    frame = pd.DataFrame([[pd.Timestamp(iso(i)).tz_localize(None) + pd.Timedelta(hours=1)] + list(VALUES[i])
                          for i in range(N_GOOD)], columns=["timestamp", *CHANNELS])
    c["w36_parquet_naive_datetime.parquet"] = _parquet(frame)  # naive local (Berlin) datetimes
    frame = pd.DataFrame(wide_rows(), columns=["timestamp", *CHANNELS])
    frame.loc[9, "pressure"] = "abc"
    c["w37_parquet_strings.parquet"] = _parquet(frame)
    return {k: v.encode() if isinstance(v, str) else v for k, v in c.items()}


def long_cases() -> dict[str, bytes]:
    c: dict[str, str | bytes] = {}
    c["l01_clean.csv"] = long_text(long_rows("l01"))
    c["l02_cp1252_entity.csv"] = long_text(long_rows("K\u00fchlpumpe-\u00d8")).encode("cp1252")
    text = long_text(long_rows("K\u00fchl-3")).splitlines(keepends=True)
    c["l03_mixed_encoding.csv"] = "".join(text[:41]).encode() + "".join(text[41:]).encode("cp1252")
    rows = long_rows("l04")
    rows[13][0] = ""
    rows[38][0] = "   "
    rows[57][0] = "l04-" + "x" * 300
    c["l04_missing_entity.csv"] = long_text(rows)
    rows = long_rows("l05")
    rows[22][1] = ""
    c["l05_missing_channel.csv"] = long_text(rows)
    rows = long_rows("l06") + [["l06", "humidity", iso(i), "41.0"] for i in range(5)]
    c["l06_unknown_channel.csv"] = long_text(rows)
    text = long_text(long_rows("l07"))
    c["l07_quoted_newline.csv"] = text + f'"l07\nX",flow,{iso(0)},1.0\n'
    rows = long_rows("l08")
    rows += [list(rows[k]) for k in (8, 12, 16)]
    c["l08_duplicates.csv"] = long_text(rows)
    rows = long_rows("l09")
    rows.append(["l09", "temperature", iso(5), "99.000"])  # same time, another value: the first one is kept
    c["l09_conflicting_duplicate.csv"] = long_text(rows)
    c["l10_out_of_order.csv"] = long_text(_shuffled(long_rows("l10"), seed=10))
    c["l11_channel_never_present.csv"] = long_text(long_rows("l11", channels=CHANNELS[:3]))
    c["l12_gap_too_long.csv"] = long_text(long_rows("l12", steps=[*range(12), *range(17, 37)]))
    rows = [[f" {r[0]} ", f"{r[1]}  ", r[2], r[3]] for r in long_rows("l13")]
    c["l13_padded_ids.csv"] = long_text(rows)
    return {k: v.encode() if isinstance(v, str) else v for k, v in c.items()}


def stop_cases() -> dict[str, bytes]:
    return {
        "s01_wide_missing_channel.csv": wide_text([r[:4] for r in wide_rows()],
                                                  header="timestamp,flow,pressure,temperature").encode(),
        "s02_wide_duplicate_column.csv": wide_text([r + [r[1]] for r in wide_rows()],
                                                   header=HEADER + ",flow").encode(),
        "s03_long_extra_column.csv": long_text([r + ["ok"] for r in long_rows("s03")]).replace(
            "entity_id,channel,timestamp,value", "entity_id,channel,timestamp,value,quality", 1).encode(),
        "s04_long_renamed_column.csv": long_text(long_rows("s04")).replace(
            "entity_id,channel,timestamp,value", "entity_id,channel,time,value", 1).encode(),
        "s05_not_text.csv": b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(range(256)),
        "s06_wide_step_1s.csv": wide_text(wide_rows(stamp=lambda i: (T0 + pd.Timedelta(seconds=i))
                                                    .strftime("%Y-%m-%dT%H:%M:%SZ"))).encode(),
        "s07_wide_renamed_channels.csv": wide_text([r + ["-67"] for r in wide_rows()],
                                                   header="timestamp,Flow [l/min],PRESSURE,temperature,Vibration,"
                                                          "rssi").encode(),
    }


def empty_cases() -> dict[str, bytes]:
    return {"e01_empty.csv": b"", "e02_header_only.csv": (HEADER + "\n").encode(),
            "e03_bom_and_blank_lines.csv": codecs.BOM_UTF8 + b"\n\r\n  \n"}


CASES = {"wide": wide_cases, "long": long_cases, "stop": stop_cases, "empty": empty_cases}


def build() -> dict[str, bytes]:
    """``{"wide/w01_clean.csv": bytes, ...}``: every corpus file, relative to this folder."""
    return {f"{folder}/{name}": data for folder, make in CASES.items() for name, data in make().items()}


def main(root: Path = HERE) -> None:
    for relative, data in build().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"{len(data):7d}  {relative}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
