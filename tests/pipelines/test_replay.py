"""``seqwatch replay``: quarantined records go back through the pipeline after a relaxed rule or a fix."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.batch import run_batch
from seqwatch.pipelines.config import RunConfig
from seqwatch.pipelines.replay import (ReplayConfig, ReplayError, fixed_texts, known_duplicates, prepare_inputs,
                                      run_replay)
from seqwatch.schemas.mapping import InputMapping
from seqwatch.schemas.validation import load_suite_dict

WIDE = InputMapping(format="wide")
NOW_US = 1_796_083_200_000_000  # 2026-12-01


def _quarantine(out):
    return ds.dataset(out / "quarantine", format="parquet").to_table().to_pandas()


@pytest.fixture(scope="module")
def original(small_model_dir, tmp_path_factory):
    """A strict user suite (temperature at most 63 °C) quarantines two readings; a unit in a cell one more."""
    root = tmp_path_factory.mktemp("replay")
    readings, _ = generate_sensor_data(n_entities=1, n_steps=200, seed=3)
    wide = readings.pivot(index="timestamp", columns="channel", values="value").iloc[:24].reset_index()
    wide["timestamp"] = wide["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    wide["temperature"] = wide["temperature"].clip(upper=62.9)
    wide.loc[5, "temperature"], wide.loc[10, "temperature"] = 63.5, 64.25
    wide = wide.astype({"flow": object})
    wide.loc[14, "flow"] = "101.5 l/min"
    source = root / "inputs" / "pump-07.csv"
    source.parent.mkdir()
    wide.to_csv(source, index=False, float_format="%.3f")
    strict = load_suite_dict("sensor", check=False)
    strict["name"] = "strict"
    for expectation in strict["expectations"]:
        if "temp" in str(expectation["kwargs"].get("row_condition", "")):
            expectation["kwargs"]["max_value"] = 63
    suite = root / "strict.json"
    suite.write_text(json.dumps(strict))
    out = root / "run"
    manifest = run_batch(RunConfig(inputs=(str(source),), output=str(out), model_dir=str(small_model_dir),
                                   mapping=WIDE, suite=str(suite), alert_cooldown_us=600_000_000,
                                   online_calibration=True),
                         ["--runner=DirectRunner"], now_us=NOW_US)
    return root, source, out, manifest


def test_the_original_run_quarantined_three_readings(original):
    _, source, out, manifest = original
    assert (manifest["records_in"], manifest["records_scored"], manifest["records_quarantined"]) == (96, 93, 3)
    quarantine = _quarantine(out).sort_values("line")
    assert quarantine[["line", "column", "reason_code"]].values.tolist() == [
        [7, "temperature", "expectation_failed"], [12, "temperature", "expectation_failed"],
        [16, "flow", "parse_value"]]


def test_replay_with_a_relaxed_suite_scores_what_the_strict_suite_refused(original, small_model_dir):
    root, source, out, _ = original
    replay_out = root / "relaxed"
    manifest = run_replay(ReplayConfig(quarantine=str(out), output=str(replay_out), model_dir=str(small_model_dir),
                                       suite="sensor"), ["--runner=DirectRunner"], now_us=NOW_US)
    assert manifest["records_in"] == 96 == manifest["records_scored"] + manifest["records_quarantined"]
    assert manifest["records_quarantined"] == 1
    assert manifest["replay"] == {
        "quarantine": str(out), "reason_codes": [], "sources": [str(source)], "context_sources": [],
        "replayed_by_reason": {"parse.parse_value": 1, "validate.expectation_failed": 2},
        "readings": 3, "scored_now": 2, "quarantined_again": 1, "left_out_by_mapping": 0,
        "quarantined_again_by_reason": {"parse.parse_value": 1}, "fixed_lines": 0}
    assert manifest["inputs"] == [str(source)]
    # the original source's digest as the replay read it: a replay of this replay's quarantine is checked too
    import hashlib
    assert manifest["input_digests"] == {str(source): hashlib.sha256(source.read_bytes()).hexdigest()}
    # taken from the original run's manifest
    assert manifest["settings"]["mapping"]["format"] == "wide"
    assert manifest["settings"]["alert_cooldown_us"] == 600_000_000
    assert manifest["settings"]["online_calibration"] is True
    again = _quarantine(replay_out)
    assert again[["source", "line", "column", "reason_code"]].values.tolist() == [
        [str(source), 16, "flow", "parse_value"]]
    assert json.loads((replay_out / "manifest.json").read_text())["replay"]["scored_now"] == 2
    assert not (replay_out / "_replay_inputs").exists()


def _replay_the_fixed_flow_cell(original, small_model_dir, output):
    """The user's fix of the unit in a flow cell ('101.5 l/min' -> 101.5), exported as JSON Lines beside ``output``
    and replayed with the strict suite: ``(manifest, the fixed records)``."""
    root, _, out, _ = original
    records = _quarantine(out)
    records = records[records["reason_code"] == "parse_value"].copy()
    records["raw"] = records["raw"].str.replace("101.5 l/min", "101.5", regex=False)
    fixes = output.parent / f"{output.name}-fixes.jsonl"
    records.to_json(fixes, orient="records", lines=True)
    manifest = run_replay(ReplayConfig(quarantine=str(fixes), output=str(output), model_dir=str(small_model_dir),
                                       mapping=WIDE, suite=str(root / "strict.json")),
                          ["--runner=DirectRunner"], now_us=NOW_US)
    return manifest, records


def test_replay_of_a_fixed_record_from_json_lines(original, small_model_dir, tmp_path):
    source = original[1]
    manifest, _ = _replay_the_fixed_flow_cell(original, small_model_dir, tmp_path / "fixed")
    assert manifest["replay"]["readings"] == 1 and manifest["replay"]["scored_now"] == 1
    # The strict suite still refuses the two hot readings of the same file, which were not replayed.
    assert manifest["records_quarantined"] == 2
    assert manifest["stages"]["quarantined.validate.expectation_failed"] == 2
    assert source.read_text().count("101.5 l/min") == 1  # the source file itself is untouched


def test_a_replay_of_a_replays_quarantine_keeps_the_earlier_fixes(original, small_model_dir, tmp_path):
    """Found by the replay bug hunt: a replay of a replay's quarantine started from the source files again, so the
    earlier replay's fix (the flow cell '101.5 l/min' edited to 101.5) was undone: quarantined again. The first
    replay keeps the texts it fixed beside its manifest, and the second applies them besides its own records."""
    root, source, _, _ = original
    first = tmp_path / "first"
    manifest, records = _replay_the_fixed_flow_cell(original, small_model_dir, first)
    assert manifest["records_quarantined"] == 2 and manifest["replay"]["fixed_lines"] == 1
    fixed = json.loads((first / "replay_edits.json").read_text())
    assert fixed == {"run_id": manifest["run_id"],
                     "edits": [{"source": str(source), "line": 16, "raw": records["raw"].iloc[0]}]}
    # the second replay: the strict suite's two records, with the relaxed suite; the earlier fix holds
    second = run_replay(ReplayConfig(quarantine=str(first), output=str(tmp_path / "second"),
                                     model_dir=str(small_model_dir), suite="sensor"),
                        ["--runner=DirectRunner"], now_us=NOW_US)
    assert (second["records_in"], second["records_scored"], second["records_quarantined"]) == (96, 96, 0)
    assert second["replay"]["readings"] == 2 and second["replay"]["scored_now"] == 2
    assert json.loads((tmp_path / "second" / "replay_edits.json").read_text())["edits"] == fixed["edits"]
    # (found by the hunt of today's features) without its fixes file, a replay of the first replay's quarantine
    # would undo them: refused; a run written into the replay's folder since is no replay, its file not the run's
    (first / "replay_edits.json").rename(tmp_path / "kept.json")
    with pytest.raises(ReplayError, match=r"the fixes of replay .* are gone .* it ran 1 fixed lines"):
        run_replay(ReplayConfig(quarantine=str(first), output=str(tmp_path / "third"),
                                model_dir=str(small_model_dir), suite="sensor"), ["--runner=DirectRunner"])
    (tmp_path / "kept.json").rename(first / "replay_edits.json")
    run_batch(RunConfig(inputs=(str(source),), output=str(first), model_dir=str(small_model_dir), mapping=WIDE,
                        suite=str(root / "strict.json")), ["--runner=DirectRunner"], now_us=NOW_US)
    fresh = run_replay(ReplayConfig(quarantine=str(first), output=str(tmp_path / "fourth"),
                                    model_dir=str(small_model_dir), suite="sensor"),
                       ["--runner=DirectRunner"], now_us=NOW_US)
    assert fresh["replay"]["fixed_lines"] == 0 and fresh["records_quarantined"] == 1  # the unit in a cell again


def test_a_json_lines_file_that_does_not_parse_names_its_line(tmp_path):
    # A hand-edited export: pandas said "Expected object or value at position 245", with no line.
    from seqwatch.pipelines.replay import ReplayError, load_records

    record = {"raw": "pump-01,flow,2026-01-05T00:00:50Z,100.5", "source": "a.csv", "line": 7, "column": "",
              "records": 1, "stage": "parse", "reason_code": "parse_value", "reason": "r", "run_id": "x"}
    fixes = tmp_path / "fixes.jsonl"
    fixes.write_text(json.dumps(record) + "\n\n" + json.dumps({**record, "line": 8}) + "\n")
    assert load_records([fixes])["line"].tolist() == [7, 8]
    fixes.write_text(json.dumps(record) + "\n{broken json\n")
    with pytest.raises(ReplayError, match=rf"^quarantine file {fixes} cannot be read: line 2 is not JSON \("):
        load_records([fixes])
    fixes.write_text("[1, 2]\n")
    with pytest.raises(ReplayError, match="line 1 is not a JSON object"):
        load_records([fixes])


def test_replay_by_reason_code_through_the_cli(original, small_model_dir, capsys):
    from seqwatch.pipelines.cli import main

    root, _, out, _ = original
    code = main(["replay", "--quarantine", str(out / "quarantine"), "--output", str(root / "cli"), "--model-dir",
                 str(small_model_dir), "--reason-code", "expectation_failed", "--runner=DirectRunner"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["replay"]["readings"] == 2 and printed["replay"]["scored_now"] == 0  # same strict suite
    assert printed["replay"]["quarantined_again_by_reason"] == {"validate.expectation_failed": 2}


def test_a_replay_mapping_changes_only_the_keys_it_sets(small_model_dir, tmp_path, capsys):
    """Found by hand: a European wide file run with --format wide and a mapping of only its separator was
    quarantined whole (decimal commas); replayed with a mapping file that sets only the decimal mark, it was read
    as long and refused, because the file replaced the original run's mapping instead of changing it."""
    from seqwatch.pipelines.cli import main

    readings, _ = generate_sensor_data(n_entities=1, n_steps=200, seed=3)
    wide = readings.pivot(index="timestamp", columns="channel", values="value").iloc[:24].reset_index()
    wide["timestamp"] = wide["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    source = tmp_path / "inputs" / "pump-08.csv"
    source.parent.mkdir()
    wide.to_csv(source, index=False, sep=";", decimal=",", float_format="%.3f")
    out = tmp_path / "run"
    manifest = run_batch(RunConfig(inputs=(str(source),), output=str(out), model_dir=str(small_model_dir),
                                   mapping=InputMapping(format="wide", sep=";")), ["--runner=DirectRunner"],
                         now_us=NOW_US)
    assert manifest["records_scored"] == 0 and manifest["stages"]["quarantined.parse.parse_value"] == 96
    decimal = tmp_path / "decimal.json"
    decimal.write_text('{"decimal": ","}')
    code = main(["replay", "--quarantine", str(out), "--output", str(tmp_path / "replay"), "--model-dir",
                 str(small_model_dir), "--mapping", str(decimal), "--runner=DirectRunner"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["replay"]["scored_now"] == 96 and printed["records_quarantined"] == 0
    mapping = json.loads((tmp_path / "replay" / "manifest.json").read_text())["settings"]["mapping"]
    assert (mapping["format"], mapping["sep"], mapping["decimal"]) == ("wide", ";", ",")


def test_a_streams_quarantine_is_replayed_with_the_format_flags(small_model_dir, tmp_path, capsys):
    """Found by hand: a stream writes no manifest, so a replay of its quarantine read its wide file as long and
    refused it with a hint (--format wide) that replay did not take. It takes the format flags now: they set
    mapping keys as a mapping file does, and --ignore adds to the original's list."""
    from seqwatch.pipelines.cli import main

    readings, _ = generate_sensor_data(n_entities=1, n_steps=120, seed=3)
    wide = readings.pivot(index="timestamp", columns="channel", values="value").reset_index()
    wide["timestamp"] = wide["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    wide["status"] = "ok"
    source = tmp_path / "inputs" / "pump-08.csv"
    source.parent.mkdir()
    wide.to_csv(source, index=False, float_format="%.4f")
    out = tmp_path / "stream"
    assert main(["stream", "--source", "replay", "--input", str(source), "--format", "wide", "--speed", "1000000",
                 "--model-dir", str(small_model_dir), "--output", str(out), "--runner=DirectRunner"]) == 0
    assert set(_quarantine(out)["column"]) == {"status"}
    capsys.readouterr()
    replay = ["replay", "--quarantine", str(out), "--model-dir", str(small_model_dir), "--runner=DirectRunner"]
    assert main([*replay, "--output", str(tmp_path / "as-long")]) == 2
    assert "a file with one column per channel is wide: --format wide" in capsys.readouterr().err
    long = tmp_path / "long.json"
    long.write_text('{"format": "long"}')
    assert main([*replay, "--output", str(tmp_path / "both"), "--mapping", str(long), "--format", "wide"]) == 2
    assert capsys.readouterr().err.strip() == (f"seqwatch replay: the mapping file {long} sets format 'long' but "
                                               f"--format says 'wide': give one of them")
    assert main([*replay, "--output", str(tmp_path / "replay"), "--format", "wide", "--ignore", "status"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["records_in"], printed["records_quarantined"]) == (480, 0)
    mapping = json.loads((tmp_path / "replay" / "manifest.json").read_text())["settings"]["mapping"]
    assert (mapping["format"], mapping["ignore"]) == ("wide", ["status"])


def _record(source, line, raw, reason="parse_value", column="flow"):
    return {"raw": raw, "source": str(source), "line": line, "column": column, "records": 1, "stage": "parse",
            "reason_code": reason, "reason": "", "run_id": "r"}


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_nothing_to_replay(tmp_path, small_model_dir):
    (tmp_path / "run" / "quarantine").mkdir(parents=True)
    with pytest.raises(ReplayError, match="nothing to replay: .* holds no quarantined records"):
        run_replay(ReplayConfig(quarantine=str(tmp_path / "run"), output=str(tmp_path / "o"),
                                model_dir=str(small_model_dir)))
    fixes = _jsonl(tmp_path / "q.jsonl", [_record(tmp_path / "a.csv", 2, "x")])
    with pytest.raises(ReplayError, match=r"with reason codes \['duplicate'\]"):
        run_replay(ReplayConfig(quarantine=str(fixes), output=str(tmp_path / "o"), model_dir=str(small_model_dir),
                                reason_codes=("duplicate",)))


def test_a_gone_source_or_a_stream_record_cannot_be_replayed_with_context(tmp_path, monkeypatch):
    records = pd.DataFrame([_record(tmp_path / "gone.csv", 2, "x")])
    with pytest.raises(ReplayError, match=r"cannot replay 1 quarantined readings of .*gone.csv: source file .* is "
                                          r"gone"):
        prepare_inputs(records, tmp_path / "work")
    with pytest.raises(ReplayError, match="they came from a stream or a PCollection, not a file"):
        prepare_inputs(pd.DataFrame([_record("", 0, "x")]), tmp_path / "work")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kafka:pumps").mkdir()
    (tmp_path / "kafka:pumps" / "0").write_text("a file that happens to bear a partition's name\n")
    for source in ("kafka:pumps/0", "pcollection:embedded"):
        with pytest.raises(ReplayError, match="they came from a stream or a PCollection, not a file"):
            prepare_inputs(pd.DataFrame([_record(source, 1, "x")]), tmp_path / "work")


def test_patched_copies_keep_line_numbers_and_endings(tmp_path):
    source = tmp_path / "in" / "pump.csv"
    source.parent.mkdir()
    source.write_bytes(b"timestamp,flow\r\n2026-01-05T00:00:00Z,1 kW\r\n\r\n2026-01-05T00:00:10Z,bad\r\n")
    records = pd.DataFrame([_record(source, 2, "2026-01-05T00:00:00Z,1"),
                            _record(source, 4, "2026-01-05T00:00:10Z,bad")])
    copies = prepare_inputs(records, tmp_path / "work")
    (copy, original), = copies.items()
    assert original == str(source) and copy.endswith("0000/pump.csv")
    assert open(copy, "rb").read() == (b"timestamp,flow\r\n2026-01-05T00:00:00Z,1\r\n\r\n"
                                       b"2026-01-05T00:00:10Z,bad\r\n")


def test_conflicting_fixes_for_one_line_are_refused(tmp_path):
    source = tmp_path / "pump.csv"
    source.write_text("timestamp,flow,pressure\n2026-01-05T00:00:00Z,x,y\n")
    records = pd.DataFrame([_record(source, 2, "2026-01-05T00:00:00Z,1,y"),
                            _record(source, 2, "2026-01-05T00:00:00Z,x,2", column="pressure")])
    with pytest.raises(ReplayError, match="records for line 2 of .* carry 2 different fixed texts"):
        prepare_inputs(records, tmp_path / "work")
    records.loc[1, "raw"] = "2026-01-05T00:00:00Z,x,y"  # one fixed, one untouched: the fix wins
    (copy, _), = prepare_inputs(records, tmp_path / "work2").items()
    assert open(copy).read().splitlines()[1] == "2026-01-05T00:00:00Z,1,y"


def test_cli_replay_errors_are_one_sentence_and_exit_2(tmp_path, capsys):
    from seqwatch.pipelines.cli import main

    code = main(["replay", "--quarantine", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o"),
                 "--model-dir", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"seqwatch replay: quarantine {tmp_path / 'nowhere'} is neither a folder nor a file"]


def test_a_parquet_source_is_patched_row_by_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from seqwatch.pipelines.parsing import raw_json
    from seqwatch.pipelines.sources import FileReader

    source = tmp_path / "in" / "pump.parquet"
    source.parent.mkdir()
    table = pa.table({"timestamp": pa.array(pd.to_datetime(["2026-01-05T00:00:00Z", "2026-01-05T00:00:10Z"])),
                      "flow": pa.array([1.5, float("inf")])})
    pq.write_table(table, source)
    fixed = raw_json({"timestamp": "2026-01-05 00:00:10+00:00", "flow": 2.5})
    (copy, _), = prepare_inputs(pd.DataFrame([_record(source, 2, fixed)]), tmp_path / "work").items()
    frames = [b.frame for b, q, n in FileReader(WIDE, "r").read(copy)]
    got = pd.concat(frames)[["timestamp", "value", "line"]].values.tolist()
    assert got == [[1_767_571_200_000_000, 1.5, 1], [1_767_571_210_000_000, 2.5, 2]]


def test_an_edited_export_beside_the_runs_parquet_is_read_once_and_wins(original, tmp_path):
    """Found by a bug hunt: both files were read, so every record was replayed (and counted) twice."""
    from seqwatch.pipelines.replay import load_records

    _, _, out, _ = original
    parquet = sorted((out / "quarantine").rglob("*.parquet"))
    records = _quarantine(out)
    edited = records.assign(raw=records["raw"].str.replace("101.5 l/min", "101.5", regex=False))
    export = tmp_path / "fixed.jsonl"
    edited.to_json(export, orient="records", lines=True)
    loaded = load_records([export, *parquet])  # in any order
    assert len(loaded) == len(records) == 3
    assert "101.5 l/min" not in " ".join(loaded["raw"]) and loaded["raw"].str.contains("101.5").any()


def test_a_source_changed_since_the_run_is_refused_not_patched_by_line(original, tmp_path):
    """Found by a bug hunt: a file re-exported with one row more had its good row on the record's line number
    overwritten by the old bad row's text, and that reading was lost."""
    import hashlib

    import pandas as pd

    from seqwatch.pipelines.replay import check_sources_unchanged

    _, source, out, manifest = original
    digests = json.loads((out / "manifest.json").read_text())["input_digests"]
    assert digests == {str(source): hashlib.sha256(source.read_bytes()).hexdigest()}
    check_sources_unchanged(_quarantine(out)["source"], digests)  # unchanged: no refusal
    changed = tmp_path / "pump-07.csv"
    lines = source.read_text().splitlines()
    changed.write_text("\n".join(lines[:1] + [lines[1]] + lines[1:]) + "\n")  # a row more after the header
    records = pd.DataFrame([{"source": str(changed), "line": 3}])
    with pytest.raises(ReplayError, match=rf"^cannot replay the records of {changed}: the file changed since the run "
                                          rf"read it"):
        check_sources_unchanged(records["source"], {str(changed): digests[str(source)]})


def test_readings_the_replay_mapping_ignores_are_counted_as_left_out_not_scored():
    """Found by a bug hunt: 600 'status' cells replayed with --ignore status were reported as 600 scored now."""
    import pandas as pd

    from seqwatch.pipelines.replay import replay_outcome
    from seqwatch.schemas.mapping import InputMapping

    replayed = pd.DataFrame([{"source": "p.csv", "line": n, "column": column, "records": 1}
                             for n in (2, 3) for column in ("status", "flow")])
    again = pd.DataFrame([{"source": "p.csv", "line": 3, "column": "flow", "records": 1, "stage": "validate",
                           "reason_code": "expectation_failed"}])
    ignoring = InputMapping(format="wide", timestamp="timestamp", ignore=("status",))
    assert replay_outcome(replayed, again, ignoring) == {
        "readings": 4, "scored_now": 1, "quarantined_again": 1, "left_out_by_mapping": 2,
        "quarantined_again_by_reason": {"validate.expectation_failed": 1}}
    # A column the mapping also names as a channel is still read: quarantined again, not left out (a review).
    both = InputMapping(format="wide", timestamp="timestamp", ignore=("status",),
                        channels={"status": "status", "flow": "flow"})
    again_both = pd.concat([again, again.assign(line=2, column="status", stage="parse", reason_code="parse_value")])
    assert replay_outcome(replayed, again_both, both)["left_out_by_mapping"] == 0
    assert replay_outcome(replayed, again_both, both)["quarantined_again"] == 2


@pytest.mark.parametrize("field, value", [("records", None), ("line", "twenty"), ("line", -3)])
def test_an_edited_record_whose_counts_are_no_whole_numbers_is_refused_before_the_run(original, small_model_dir,
                                                                                      tmp_path, field, value):
    """Found by a bug hunt of replays: "records": null had failed after the run had replaced the outputs (a bare
    'cannot convert float NaN to integer'); "line": "twenty" was a bare int() error."""
    _, source, _, _ = original
    fixes = _jsonl(tmp_path / "fix.jsonl", [{**_record(source, 15, "x"), field: value}])
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "manifest.json").write_text("{}")
    with pytest.raises(ReplayError, match=rf"^quarantine file .*fix.jsonl: record 1 has {field} {value!r}, not a "
                                          rf"whole number >= 0; mend or remove it$"):
        run_replay(ReplayConfig(quarantine=str(fixes), output=str(tmp_path / "keep"), model_dir=str(small_model_dir)))
    assert (tmp_path / "keep" / "manifest.json").read_text() == "{}"


def test_a_replay_into_the_runs_own_output_folder_is_refused(original, small_model_dir):
    """Found by a bug hunt of replays: the replay's commit replaced the outputs of every file it did not re-run."""
    _, _, out, _ = original
    before = sorted(str(p) for p in out.rglob("*.parquet"))
    with pytest.raises(ReplayError, match=r"is the run's own output folder: a replay is a run of the replayed "
                                          r"records' source files only"):
        run_replay(ReplayConfig(quarantine=str(out), output=str(out), model_dir=str(small_model_dir)))
    assert sorted(str(p) for p in out.rglob("*.parquet")) == before


@pytest.fixture(scope="module")
def overlapping(small_model_dir, tmp_path_factory):
    """Two long exports of one pump that overlap by 10 steps (40 readings): the run keeps a.csv's and quarantines
    b.csv's as ``duplicate``; a strict suite (temperature at most 63 °C) quarantines one reading of b.csv besides."""
    root = tmp_path_factory.mktemp("overlap")
    readings, _ = generate_sensor_data(n_entities=1, n_steps=200, seed=3)
    readings["timestamp"] = readings["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    steps = readings.groupby("channel").cumcount()
    hot = readings["channel"] == "temperature"
    readings.loc[hot, "value"] = readings.loc[hot, "value"].clip(upper=62.9)
    readings.loc[hot & (steps == 150), "value"] = 63.5
    (root / "inputs").mkdir()
    readings[steps < 120].to_csv(root / "inputs" / "a.csv", index=False, float_format="%.3f")
    readings[steps >= 110].to_csv(root / "inputs" / "b.csv", index=False, float_format="%.3f")
    strict = load_suite_dict("sensor", check=False)
    strict["name"] = "strict"
    for expectation in strict["expectations"]:
        if "temp" in str(expectation["kwargs"].get("row_condition", "")):
            expectation["kwargs"]["max_value"] = 63
    (root / "strict.json").write_text(json.dumps(strict))
    out = root / "run"
    manifest = run_batch(RunConfig(inputs=(str(root / "inputs" / "*.csv"),), output=str(out),
                                   model_dir=str(small_model_dir), suite=str(root / "strict.json")),
                         ["--runner=DirectRunner"], now_us=NOW_US)
    assert (manifest["records_in"], manifest["records_quarantined"]) == (840, 41)
    quarantine = _quarantine(out)
    assert set(quarantine["source"]) == {str(root / "inputs" / "b.csv")}
    assert quarantine["reason_code"].value_counts().to_dict() == {"duplicate": 40, "expectation_failed": 1}
    return root, out


@pytest.mark.parametrize("codes", [(), ("expectation_failed",)])
def test_a_replay_quarantines_again_the_repeats_of_readings_another_file_held(overlapping, small_model_dir, codes):
    """Found by the replay bug hunt: a replay re-ran b.csv alone, so the 40 readings the run quarantined as
    repeats of a.csv's were scored by it (a.csv was not in the replay), and the replay's output for b.csv, which
    supersedes the run's, scored them twice over. They are quarantined again as duplicates, whether they were
    replayed (all codes) or not (only the suite's); the reading the relaxed suite lets through is scored. Since
    the bug hunt of 2026-12-03 a replay re-runs a.csv too, as it holds readings of b.csv's pump (the run's
    ``input_groups``), so the pump's windows are cut from all of its readings, as the run cut them."""
    root, out = overlapping
    replay_out = root / f"replay-{len(codes)}"
    manifest = run_replay(ReplayConfig(quarantine=str(out), output=str(replay_out), model_dir=str(small_model_dir),
                                       suite="sensor", reason_codes=codes), ["--runner=DirectRunner"], now_us=NOW_US)
    assert manifest["replay"]["context_sources"] == [str(root / "inputs" / "a.csv")]
    assert (manifest["records_in"], manifest["records_scored"], manifest["records_quarantined"]) == (840, 800, 40)
    run_scores = pd.read_parquet(out / "scores").drop(columns=["run_id"]).sort_values("window_end")
    replay_scores = pd.read_parquet(replay_out / "scores").drop(columns=["run_id"]).sort_values("window_end")
    # the same windows as the run's (one reading more is scored: the relaxed suite's), none cut on another grid
    assert replay_scores["window_end"].tolist() == run_scores["window_end"].tolist()
    again = _quarantine(replay_out)
    assert again["reason_code"].tolist() == ["duplicate"] * 40
    assert set(again["source"]) == {str(root / "inputs" / "b.csv")}
    b = pd.read_csv(root / "inputs" / "b.csv")
    first_steps = b.index[b.groupby("channel").cumcount() < 10] + 2  # line numbers: the header is line 1
    assert sorted(again["line"]) == first_steps.tolist()
    replayed = 41 if not codes else 1
    assert manifest["replay"]["readings"] == replayed and manifest["replay"]["scored_now"] == 1
    assert manifest["replay"]["quarantined_again"] == replayed - 1


def test_a_repeat_whose_text_was_fixed_is_replayed_not_held_as_a_duplicate(tmp_path):
    """A duplicate record whose line the user edited (its timestamp set right) is no repeat any more: the replay
    reads it; one left as it was is quarantined again; a CRLF source's untouched line counts as unchanged."""
    source = tmp_path / "in" / "b.csv"
    source.parent.mkdir()
    source.write_bytes(b"timestamp,flow,pressure\r\n2026-01-05T00:00:00Z,1,2\r\n2026-01-05T00:00:10Z,1,2\r\n")
    records = pd.DataFrame([_record(source, 2, "2026-01-05T00:00:00Z,1,2", "duplicate"),
                            _record(source, 2, "2026-01-05T00:00:00Z,1,2", "duplicate", column="pressure"),
                            _record(source, 3, "2026-01-05T00:00:20Z,1,2", "duplicate")])
    copies = prepare_inputs(records, tmp_path / "work")
    (copy, _), = copies.items()
    assert known_duplicates(records, copies) == ((copy, 2, "flow"), (copy, 2, "pressure"))
    assert known_duplicates(records.assign(reason_code="parse_value"), copies) == ()
    assert fixed_texts(records, copies) == [{"source": str(source), "line": 3, "raw": "2026-01-05T00:00:20Z,1,2"}]


def test_a_fixed_record_of_several_lines_is_kept_whole(tmp_path):
    """Found by the review of the shared line reading: the fixed text kept for a later replay was the first line of
    a record whose quoted field holds a line break (an unterminated quote, which would have swallowed the lines after
    it when applied again), and a repeat whose second line was edited counted as unchanged."""
    source = tmp_path / "in" / "b.csv"
    source.parent.mkdir()
    source.write_bytes(b'timestamp,flow,note\n2026-01-05T00:00:00Z,1,"a\r\nb"\n2026-01-05T00:00:10Z,x,c\n')
    fixed = '2026-01-05T00:00:20Z,5,"a\r\nq"'
    records = pd.DataFrame([_record(source, 2, fixed, "duplicate")])
    copies = prepare_inputs(records, tmp_path / "work")
    (copy, _), = copies.items()
    assert fixed_texts(records, copies) == [{"source": str(source), "line": 2, "raw": fixed}]
    assert known_duplicates(records, copies) == ()
    unchanged = records.assign(raw="")
    assert known_duplicates(unchanged, prepare_inputs(unchanged, tmp_path / "work2")) != ()
    # applied again by a later replay, the kept text gives the same copy
    again = prepare_inputs(pd.DataFrame([_record(source, 2, fixed_texts(records, copies)[0]["raw"])]), tmp_path / "w3")
    assert Path(next(iter(again))).read_bytes() == Path(copy).read_bytes()


def test_the_lines_of_a_parquet_source_are_compared_as_its_copy_writes_them(tmp_path):
    """A Parquet source's rows are read once for the duplicates a replay keeps and the fixes it records: an
    unchanged row (its values written as text in the copy) is a known duplicate, an edited one a fixed text in
    the copy's form, and a row past the end of the file neither."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from seqwatch.pipelines.parsing import raw_json
    from seqwatch.pipelines.replay import compared_lines

    source = tmp_path / "in" / "pump.parquet"
    source.parent.mkdir()
    stamps = pd.to_datetime(["2026-01-05T00:00:00Z", "2026-01-05T00:00:10Z", "2026-01-05T00:00:10Z"])
    pq.write_table(pa.table({"timestamp": pa.array(stamps), "flow": pa.array([1.5, float("inf"), 2.0])}), source)
    fixed = raw_json({"timestamp": "2026-01-05 00:00:20+00:00", "flow": 2.5})
    records = pd.DataFrame([_record(source, 2, fixed), _record(source, 3, "", "duplicate"),
                            _record(source, 9, "", "duplicate")])
    copies = prepare_inputs(records.iloc[:2], tmp_path / "work")
    (copy, _), = copies.items()
    compared = compared_lines(records, copies)
    assert sorted(compared[str(source)]) == [2, 3]
    assert compared[str(source)][3] == ({"timestamp": "2026-01-05 00:00:10+00:00", "flow": "2.0"},) * 2
    assert known_duplicates(records, copies, compared) == ((copy, 3, "flow"),) == known_duplicates(records, copies)
    edits = fixed_texts(records.iloc[:1], copies, compared)
    assert edits == [{"source": str(source), "line": 2,
                      "raw": json.dumps({"timestamp": "2026-01-05 00:00:20+00:00", "flow": "2.5"})}]


def test_a_replay_that_scored_nothing_exits_3_as_a_run_does(small_model_dir, tmp_path, capsys):
    """Found by the hunt of today's features: a replay whose fix did nothing (every reading still quarantined)
    exited 0 where `seqwatch run` exits 3, so a script took it for a success."""
    from seqwatch.pipelines.cli import main

    readings, _ = generate_sensor_data(n_entities=1, n_steps=100, seed=3)
    readings["timestamp"] = (readings["timestamp"] - pd.Timedelta(days=365 * 40)).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    (tmp_path / "in").mkdir()
    readings.to_csv(tmp_path / "in" / "old.csv", index=False)
    assert main(["run", "--input", str(tmp_path / "in"), "--model-dir", str(small_model_dir), "--output",
                 str(tmp_path / "run"), "--runner=DirectRunner"]) == 3
    capsys.readouterr()
    code = main(["replay", "--quarantine", str(tmp_path / "run"), "--output", str(tmp_path / "replay"),
                 "--model-dir", str(small_model_dir), "--runner=DirectRunner"])
    assert code == 3
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"seqwatch replay: nothing was scored, every reading was quarantined (exit code 3); the replay's outputs are "
        f"in {tmp_path / 'replay'}")


# Found by the bug hunt of the replay round trip (2026-12-03).

def test_a_run_with_its_own_run_id_keeps_digests_so_a_changed_source_is_refused(original, small_model_dir, tmp_path):
    """A run with --run-id kept no digests of its inputs: a replay after a re-export (two rows more) pasted the bad
    row's text over a good reading, which was lost, and read the bad row a second time at its new line."""
    _, source, _, _ = original
    copy = tmp_path / "pump-07.csv"
    copy.write_bytes(source.read_bytes())
    out = tmp_path / "nightly"
    manifest = run_batch(RunConfig(inputs=(str(copy),), output=str(out), model_dir=str(small_model_dir),
                                   mapping=WIDE, suite=str(original[0] / "strict.json"), run_id="nightly-0105"),
                         ["--runner=DirectRunner"], now_us=NOW_US)
    import hashlib
    assert manifest["input_digests"] == {str(copy): hashlib.sha256(copy.read_bytes()).hexdigest()}
    lines = copy.read_text().splitlines(keepends=True)
    copy.write_text("".join(lines[:1] + lines[1:3] + lines[1:]))  # re-exported with two rows more
    with pytest.raises(ReplayError, match=rf"^cannot replay the records of {copy}: the file changed since the run "
                                          rf"read it"):
        run_replay(ReplayConfig(quarantine=str(out), output=str(tmp_path / "replayed"),
                                model_dir=str(small_model_dir), reason_codes=("parse_value",)))
    assert not (tmp_path / "replayed" / "manifest.json").exists()


def test_a_json_lines_export_is_not_replayed_into_the_runs_own_folder(original, small_model_dir, tmp_path):
    """The export, kept outside the run's folder, named no manifest: the replay ran into the run's folder and its
    commit removed the outputs of every file it did not re-run."""
    _, _, out, _ = original
    fixes = tmp_path / "fixes.jsonl"
    _quarantine(out).to_json(fixes, orient="records", lines=True)
    before = sorted(str(p) for p in out.rglob("*.parquet"))
    with pytest.raises(ReplayError, match=rf"^--output {out} is the run's own output folder"):
        run_replay(ReplayConfig(quarantine=str(fixes), output=str(out), model_dir=str(small_model_dir), mapping=WIDE))
    assert sorted(str(p) for p in out.rglob("*.parquet")) == before


def test_a_run_of_relative_paths_is_replayed_from_another_folder(original, small_model_dir, tmp_path, monkeypatch):
    """The quarantine names a source as the run was given it (``inputs/pump-07.csv``): a replay started in another
    folder had called the file gone."""
    _, source, _, _ = original
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "pump-07.csv").write_bytes(source.read_bytes())
    monkeypatch.chdir(tmp_path)
    manifest = run_batch(RunConfig(inputs=("inputs/pump-07.csv",), output="out", model_dir=str(small_model_dir),
                                   mapping=WIDE, suite=str(original[0] / "strict.json")),
                         ["--runner=DirectRunner"], now_us=NOW_US)
    assert manifest["working_dir"] == str(tmp_path)
    assert set(_quarantine(tmp_path / "out")["source"]) == {"inputs/pump-07.csv"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    replayed = run_replay(ReplayConfig(quarantine=str(tmp_path / "out"), output="replayed",
                                       model_dir=str(small_model_dir), suite="sensor"),
                          ["--runner=DirectRunner"], now_us=NOW_US)
    absolute = str(tmp_path / "inputs" / "pump-07.csv")
    assert replayed["replay"]["sources"] == [absolute] and replayed["replay"]["scored_now"] == 2
    assert replayed["records_in"] == 96 == replayed["records_scored"] + replayed["records_quarantined"]
    assert set(_quarantine(elsewhere / "replayed")["source"]) == {absolute}


def test_a_runs_relative_suite_is_found_from_its_folder_not_from_where_the_replay_runs(original, small_model_dir,
                                                                                         tmp_path, monkeypatch):
    """Bug hunt of user suites: the manifest names the suite as the run was given it (``suites/strict.json``); a
    replay without --suite started elsewhere refused the run's suite as no file, or, where a file of that name
    lay (a permissive one), judged the replayed readings by it without a word."""
    root, source, _, _ = original
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "pump-07.csv").write_bytes(source.read_bytes())
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "strict.json").write_bytes((root / "strict.json").read_bytes())
    monkeypatch.chdir(tmp_path)
    manifest = run_batch(RunConfig(inputs=("inputs/pump-07.csv",), output="out", model_dir=str(small_model_dir),
                                   mapping=WIDE, suite="suites/strict.json"), ["--runner=DirectRunner"], now_us=NOW_US)
    assert manifest["settings"]["suite"] == "suites/strict.json"
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "suites").mkdir(parents=True)
    (elsewhere / "suites" / "strict.json").write_text(json.dumps({"name": "permissive", "expectations": []}))
    monkeypatch.chdir(elsewhere)
    replayed = run_replay(ReplayConfig(quarantine=str(tmp_path / "out"), output="replayed",
                                       model_dir=str(small_model_dir), reason_codes=("expectation_failed",)),
                          ["--runner=DirectRunner"], now_us=NOW_US)
    assert replayed["settings"]["suite"] == str(tmp_path / "suites" / "strict.json")
    assert (replayed["replay"]["scored_now"], replayed["replay"]["quarantined_again"]) == (0, 2)


def test_a_replays_run_id_follows_the_model_and_a_rerun_replaces_nothing_else(original, small_model_dir, tmp_path):
    """A replay's run id had been derived from its records and settings alone: replays with two models (or a
    threshold edited by hand) had one run id; and a replay rerun into its own folder said it replaced another run
    (its own, whose inputs it compared with its temporary copies)."""
    import shutil

    _, _, out, _ = original
    edited = tmp_path / "edited-model"
    shutil.copytree(small_model_dir, edited)
    metadata = json.loads((edited / "metadata.json").read_text())
    metadata["threshold"] *= 2
    (edited / "metadata.json").write_text(json.dumps(metadata))
    manifests = [run_replay(ReplayConfig(quarantine=str(out), output=str(tmp_path / folder), model_dir=str(model),
                                         suite="sensor"), ["--runner=DirectRunner"], now_us=NOW_US)
                 for folder, model in (("a", small_model_dir), ("b", edited), ("a", small_model_dir))]
    first, other_model, rerun = manifests
    assert first["run_id"] != other_model["run_id"] and first["run_id"] == rerun["run_id"]
    assert "replaced_run" not in rerun and "replaced_run" not in first


def test_the_guard_of_the_runs_folder_lets_a_replays_own_folder_and_records_without_a_run_id_be(
        original, small_model_dir, tmp_path):
    """A review of the guard above: records of a JSON Lines export without a run id failed with a KeyError, and a
    replay rerun into its own folder with the run's own --run-id was refused as the run's folder."""
    _, _, out, manifest = original
    fixes = tmp_path / "fixes.jsonl"
    _quarantine(out).drop(columns=["run_id"]).to_json(fixes, orient="records", lines=True)
    replayed = run_replay(ReplayConfig(quarantine=str(fixes), output=str(tmp_path / "from-export"),
                                       model_dir=str(small_model_dir), mapping=WIDE, suite="sensor"),
                          ["--runner=DirectRunner"], now_us=NOW_US)
    assert replayed["replay"]["readings"] == 3
    for _ in range(2):  # the second time into a folder whose manifest (a replay's) bears the run's id
        again = run_replay(ReplayConfig(quarantine=str(out), output=str(tmp_path / "same-id"), suite="sensor",
                                        model_dir=str(small_model_dir), run_id=manifest["run_id"]),
                           ["--runner=DirectRunner"], now_us=NOW_US)
        assert again["run_id"] == manifest["run_id"] and again["replay"]["scored_now"] == 2


def test_a_relative_source_is_found_from_here_when_the_runs_working_folder_is_gone(original, small_model_dir,
                                                                                  tmp_path, monkeypatch):
    """A review: a run in a container (or a release folder since removed) names its sources relative to a folder
    the replay's machine lacks; the same relative path from where the replay starts is the file."""
    _, source, out, _ = original
    moved = tmp_path / "run"
    import shutil
    shutil.copytree(out, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "pump-07.csv").write_bytes(source.read_bytes())
    relative = "inputs/pump-07.csv"
    manifest.update(working_dir="/opt/job-that-is-gone", input_digests={relative: manifest["input_digests"][
        str(source)]})
    (moved / "manifest.json").write_text(json.dumps(manifest))
    quarantine = _quarantine(moved).assign(source=relative)
    for path in (moved / "quarantine").rglob("*.parquet"):
        path.unlink()
    quarantine.to_json(moved / "quarantine" / "records.jsonl", orient="records", lines=True)
    monkeypatch.chdir(tmp_path)
    replayed = run_replay(ReplayConfig(quarantine=str(moved), output="replayed", model_dir=str(small_model_dir),
                                       suite="sensor"), ["--runner=DirectRunner"], now_us=NOW_US)
    assert replayed["replay"]["sources"] == [relative] and replayed["replay"]["scored_now"] == 2


def test_a_replay_of_an_export_takes_the_runs_online_calibration_and_cooldown_when_given_again(
        original, small_model_dir, tmp_path, capsys):
    """Bug hunt of online calibration: a JSON Lines export names no run, so its replay ran without the run's online
    calibration (an entity's windows judged by the model's one threshold: 748 of 997 anomalous against 121), and
    replay had no flag to give it again. It now takes --online-calibration and --alert-cooldown."""
    from seqwatch.pipelines.cli import main

    _, _, out, _ = original
    fixes = tmp_path / "fixes.jsonl"
    _quarantine(out).to_json(fixes, orient="records", lines=True)
    common = ["replay", "--quarantine", str(fixes), "--model-dir", str(small_model_dir), "--format", "wide",
              "--suite", "sensor", "--runner=DirectRunner"]
    assert main([*common, "--output", str(tmp_path / "bare")]) == 0
    assert main([*common, "--output", str(tmp_path / "again"), "--online-calibration", "--alert-cooldown", "600"]) == 0
    assert main(["replay", "--quarantine", str(out), "--model-dir", str(small_model_dir), "--suite", "sensor",
                 "--runner=DirectRunner", "--output", str(tmp_path / "off"), "--no-online-calibration"]) == 0
    assert not json.loads((tmp_path / "off" / "manifest.json").read_text())["settings"].get("online_calibration")
    bare = json.loads((tmp_path / "bare" / "manifest.json").read_text())["settings"]
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())["settings"]
    assert not bare.get("online_calibration") and not bare.get("alert_cooldown_us")
    assert again["online_calibration"] is True and again["alert_cooldown_us"] == 600_000_000
    capsys.readouterr()
    assert main([*common, "--output", str(tmp_path / "bad"), "--alert-cooldown", "-1"]) == 2
    assert "seqwatch replay: --alert-cooldown must be zero or a positive number of seconds, got -1" in \
        capsys.readouterr().err


def test_a_replay_starts_from_the_calibration_state_its_run_started_from(original, small_model_dir, tmp_path):
    """A run that went on from an earlier run's calibration (``--calibration-from``): its replay judges the windows
    by the same state, writes no state of its own (its entities are only those of the replayed sources), and is
    refused in one sentence once the state has changed since (a later run into that folder)."""
    import hashlib
    import shutil

    from seqwatch.pipelines.calibration_state import STATE_FILE, write_states

    root, source, out, _ = original
    earlier = tmp_path / "day1"
    earlier.mkdir()
    shutil.copy(out / STATE_FILE, earlier / STATE_FILE)
    day2 = tmp_path / "day2"
    run_manifest = run_batch(RunConfig(inputs=(str(source),), output=str(day2), model_dir=str(small_model_dir),
                                       mapping=WIDE, suite=str(root / "strict.json"), online_calibration=True,
                                       calibration_from=str(earlier)),
                             ["--runner=DirectRunner"], now_us=NOW_US)
    kept = {"file": str((earlier / STATE_FILE).resolve()),
            "sha256": hashlib.sha256((earlier / STATE_FILE).read_bytes()).hexdigest()}
    assert run_manifest["calibration_from"] == kept
    assert run_manifest["stages"]["calibration_entities_continued"] == 1  # pump-07 went on from the kept state
    manifest = run_replay(ReplayConfig(quarantine=str(day2), output=str(tmp_path / "replayed"),
                                       model_dir=str(small_model_dir), suite="sensor"),
                          ["--runner=DirectRunner"], now_us=NOW_US)
    assert manifest["calibration_from"] == kept and manifest["replay"]["scored_now"] == 2
    assert manifest["stages"]["calibration_entities_continued"] == 1  # and so did the replay's
    assert not (tmp_path / "replayed" / STATE_FILE).exists() and "calibration_state" not in manifest["outputs"]

    write_states(str(earlier / STATE_FILE), [])  # a later run into day1's folder
    with pytest.raises(ReplayError, match=f"^run {run_manifest['run_id']} started its online calibration from "
                                          f"{kept['file']}, which has changed since \\(another run wrote a state "
                                          f"there\\); a replay from another state would judge its windows by "
                                          f"another history"):
        run_replay(ReplayConfig(quarantine=str(day2), output=str(tmp_path / "again"), model_dir=str(small_model_dir),
                                suite="sensor"), ["--runner=DirectRunner"], now_us=NOW_US)
    # without online calibration it runs
    assert run_replay(ReplayConfig(quarantine=str(day2), output=str(tmp_path / "plain"),
                                   model_dir=str(small_model_dir), suite="sensor",
                                   extra={"online_calibration": False}),
                      ["--runner=DirectRunner"], now_us=NOW_US)["records_in"] == 96


def test_a_replay_judges_with_the_runs_calibration_keep_days(original, small_model_dir):
    """The gap rule of ``--calibration-keep-days`` decides thresholds, so a replay takes it from the run's manifest,
    as it takes the run's online calibration (a replay had judged without it)."""
    root, source, _, _ = original
    out = root / "kept-run"
    run_batch(RunConfig(inputs=(str(source),), output=str(out), model_dir=str(small_model_dir), mapping=WIDE,
                        suite=str(root / "strict.json"), online_calibration=True, calibration_keep_days=0.5),
              ["--runner=DirectRunner"], now_us=NOW_US)
    manifest = run_replay(ReplayConfig(quarantine=str(out), output=str(root / "kept-replay"),
                                       model_dir=str(small_model_dir), suite="sensor"),
                          ["--runner=DirectRunner"], now_us=NOW_US)
    assert manifest["settings"]["online_calibration"] is True
    assert manifest["settings"]["calibration_keep_days"] == 0.5
