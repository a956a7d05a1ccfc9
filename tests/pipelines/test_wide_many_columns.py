"""A wide export of many columns the model lacks (a historian's hundreds of tags beside the model's few): every
reading of such a column is a quarantined record that carries its row's text, so a row of 500 such columns
repeats it 500 times. A 1.7 MB Parquet file of 300 rows had made a 4.3 GB quarantine element, beyond gRPC's
2 GB, after 13 GB of memory and 77 s (found by the bug hunt of output folders, 2026-12-02). The quarantine table
now holds each text once (dictionary-encoded), and is written as its dictionaries and indices with the plain
schema, a row group for about 64 MB of text (it was decoded a row group at a time for the writer to encode again:
about 110 s of the 2.7 minutes a wide file of 50,000 such columns took, 2026-12-04)."""
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqwatch.pipelines import sinks
from seqwatch.pipelines.sinks import quarantine_records_table, write_parquet
from seqwatch.schemas.arrow import QUARANTINE_SCHEMA
from seqwatch.schemas.elements import Quarantined


def _records(rows: int, columns: int, width: int) -> list:
    texts = [f"{line}," + "x" * width for line in range(1, rows + 1)]  # one text per row, as a wide file's line
    return [Quarantined(texts[line - 1], "plant.parquet", line, f"tag_{c:03d}", 1, "validate", "unknown_channel",
                        "the model has no such channel (it has ['flow'])", "run-1")
            for line in range(1, rows + 1) for c in range(columns)]


def test_a_text_repeated_by_many_records_is_held_once_and_written_with_the_plain_schema(tmp_path, monkeypatch):
    records = _records(rows=40, columns=500, width=20_000)  # 20,000 records of 20 KB texts: 400 MB as plain text
    table = quarantine_records_table(records)
    assert table.nbytes < 10_000_000  # 40 texts once and the indices (the other columns: 3.6 MB), not 400 MB
    monkeypatch.setattr(sinks, "DECODED_BYTES_PER_ROW_GROUP", 50_000_000)  # about 2,500 rows of 20 KB a group
    path = tmp_path / "quarantine" / "plant.parquet"
    write_parquet(str(path), table)
    assert pq.read_schema(path).equals(QUARANTINE_SCHEMA, check_metadata=True)
    metadata = pq.ParquetFile(path).metadata
    assert metadata.num_rows == 20_000 and 8 <= metadata.num_row_groups <= 9  # 2,499 rows a group: 9
    assert path.stat().st_size < 2_000_000  # Parquet's own dictionary pages keep each text once on disk too
    back = pq.read_table(path)
    assert back.column("raw").to_pylist()[::500] == [q.raw for q in records[::500]]
    assert back.column("column").to_pylist()[:3] == ["tag_000", "tag_001", "tag_002"]
    assert back.slice(0, 3).to_pylist() == [q._asdict() for q in records[:3]]


def test_a_table_standing_for_gigabytes_of_text_is_written_without_decoding_it(tmp_path):
    texts = [f"{line}," + "7" * 1_500_000 for line in (1, 2)]  # two rows of 1.5 MB, each the text of 2,048 records
    records = [Quarantined(texts[k], "wide.csv", k + 1, f"tag_{j:04d}", 1, "validate", "unknown_channel",
                           "the model has no such channel", "run-1") for k in (0, 1) for j in range(2048)]
    table = quarantine_records_table(records)  # stands for 6.1 GB of text
    default_pool = pa.default_memory_pool()
    counted = pa.proxy_memory_pool(default_pool)
    pa.set_memory_pool(counted)
    try:
        write_parquet(str(tmp_path / "wide.parquet"), table)
    finally:
        pa.set_memory_pool(default_pool)
    assert counted.max_memory() < 64_000_000  # 4.5 MB; decoding a row group at a time had held 1.5 GB
    parquet = pq.ParquetFile(tmp_path / "wide.parquet", read_dictionary=["raw"])
    assert pq.read_schema(tmp_path / "wide.parquet").equals(QUARANTINE_SCHEMA, check_metadata=True)
    assert parquet.metadata.num_row_groups == 4  # 1,024 rows a group (the least), 1.5 GB of text each
    for group in range(4):  # each row group's dictionary holds the one text its rows use
        raw = parquet.read_row_group(group, columns=["raw"]).column("raw").chunk(0)
        assert raw.dictionary.to_pylist() == [texts[group // 2]] and len(raw) == 1024
    back = parquet.read_row_group(3, columns=["line", "column", "reason_code"])
    assert back.column("line").to_pylist() == [2] * 1024
    assert back.column("column").to_pylist()[-1] == "tag_2047"


def test_a_run_over_many_columns_the_model_lacks_counts_them_and_names_the_mapping_that_reads_only_its_own(
        small_model_dir, tmp_path, capsys):
    from seqwatch.pipelines.cli import main

    n = 300
    rng = np.random.default_rng(0)
    data = {"timestamp": pd.date_range("2026-01-05", periods=n, freq="10s", tz="UTC")}
    data |= {c: rng.normal(50, 1, n) for c in ("flow", "pressure", "temperature", "vibration")}
    data |= {f"tag_{i:03d}": rng.normal(0, 1, n) for i in range(60)}
    pd.DataFrame(data).to_parquet(tmp_path / "pump-01.parquet")
    common = ["--input", str(tmp_path / "pump-01.parquet"), "--model-dir", str(small_model_dir),
              "--runner=DirectRunner"]
    assert main(["run", *common, "--format", "wide", "--output", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (manifest["records_in"], manifest["records_scored"], manifest["records_quarantined"]) == (
        64 * n, 4 * n, 60 * n)
    quarantine = pq.read_table(tmp_path / "out" / "quarantine")
    assert sum(quarantine.column("records").to_pylist()) == 60 * n
    assert set(quarantine.column("reason_code").to_pylist()) == {"unknown_channel"}
    assert json.loads(quarantine.column("raw")[0].as_py())["tag_000"] == data["tag_000"][0]
    note = captured.err.strip().splitlines()[-1]
    clause = "read only the model's columns with a --mapping file "
    assert clause in note and "--ignore" not in note
    mapping = json.loads(note.split(clause, 1)[1].split("; each record", 1)[0])
    assert mapping == {"format": "wide", "channels": {c: c for c in ("flow", "pressure", "temperature", "vibration")},
                       "extra_columns": "ignore"}
    (tmp_path / "mapping.json").write_text(json.dumps(mapping))
    assert main(["run", *common, "--mapping", str(tmp_path / "mapping.json"), "--output", str(tmp_path / "out2")]) == 0
    again = json.loads((tmp_path / "out2" / "manifest.json").read_text())
    assert (again["records_in"], again["records_scored"], again["records_quarantined"]) == (4 * n, 4 * n, 0)
    # The quarantine fed back with that mapping (its records read with each row's text once)
    assert main(["replay", "--quarantine", str(tmp_path / "out"), "--output", str(tmp_path / "replayed"),
                 "--model-dir", str(small_model_dir), "--mapping", str(tmp_path / "mapping.json"),
                 "--runner=DirectRunner"]) == 0
    replayed = json.loads((tmp_path / "replayed" / "manifest.json").read_text())
    assert (replayed["records_in"], replayed["records_quarantined"]) == (4 * n, 0)
    assert replayed["replay"]["replayed_by_reason"] == {"validate.unknown_channel": 60 * n}
    # the columns the mapping leaves out are counted as left out, not as scored now (found by a bug hunt of replays)
    assert (replayed["replay"]["left_out_by_mapping"], replayed["replay"]["scored_now"]) == (60 * n, 0)


def test_many_columns_of_text_get_the_mapping_too(small_model_dir, tmp_path, capsys):
    """Found by the check of the README's claims: six columns of text (tags, states) got --ignore advice for three
    of them, where the README promises the --mapping file that reads only the model's channels."""
    from seqwatch.pipelines.cli import main

    n = 200
    rng = np.random.default_rng(1)
    data = {"timestamp": pd.date_range("2026-01-05", periods=n, freq="10s", tz="UTC")}
    data |= {c: rng.normal(50, 1, n) for c in ("flow", "pressure", "temperature", "vibration")}
    data |= {f"state_{i}": ["RUNNING"] * n for i in range(6)}
    pd.DataFrame(data).to_csv(tmp_path / "pump-01.csv", index=False)
    assert main(["run", "--input", str(tmp_path / "pump-01.csv"), "--model-dir", str(small_model_dir), "--format",
                 "wide", "--output", str(tmp_path / "out"), "--runner=DirectRunner"]) == 0
    note = capsys.readouterr().err.strip().splitlines()[-1]
    assert "values that are not numbers, by column: 'state_0' 200" in note
    assert "read only the model's columns with a --mapping file " in note and "--ignore" not in note
