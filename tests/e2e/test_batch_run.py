"""The batch pipeline end to end on the DirectRunner: small wide CSV files in, Parquet read back with pyarrow."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.batch import SINKS, RunError, run_batch
from seqwatch.pipelines.config import RunConfig
from seqwatch.schemas.arrow import SCHEMAS_BY_SINK
from seqwatch.schemas.elements import REASON_CODES
from seqwatch.schemas.mapping import InputMapping


WIDE = InputMapping(format="wide", timestamp="timestamp", entity={"from_filename": True})
BAD_LINES = {  # line number in pump-01.csv -> (replacement text, reason, readings it stands for)
    30: ("2026-01-05T99:00:00Z,1,2,3,4", "parse_timestamp", 4),
    60: (None, "parse_value", 1),  # the flow cell replaced with "n/a"
    90: ("1,2", "malformed_row", 4),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, wide_csv):
    folder = tmp_path_factory.mktemp("inputs")
    readings, labels = generate_sensor_data(n_entities=2, n_steps=900, seed=7, anomalies_per_entity=2,
                                            kinds=("level_shift", "broken_channel"))
    for entity, part in readings.groupby("entity_id"):
        wide_csv(part, folder / f"{entity}.csv")
    path = folder / "pump-01.csv"
    lines = path.read_text().splitlines()
    for number, (text, _, _) in BAD_LINES.items():
        if text is None:
            fields = lines[number - 1].split(",")
            fields[1] = "n/a"
            text = ",".join(fields)
        lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")
    return folder, labels


@pytest.fixture(scope="module")
def run(inputs, small_model_dir, tmp_path_factory):
    folder, labels = inputs
    out = tmp_path_factory.mktemp("out")
    config = RunConfig(inputs=(str(folder / "*.csv"),), output=str(out), model_dir=str(small_model_dir),
                       mapping=WIDE, pane_steps=256)
    manifest = run_batch(config, ["--runner=DirectRunner"])
    return config, manifest, out, labels


def _read(out, sink):
    return ds.dataset(out / sink, format="parquet").to_table()


def test_counts_reconcile(run):
    _, manifest, out, _ = run
    assert manifest["records_in"] == 2 * 900 * 4
    assert manifest["records_in"] == manifest["records_scored"] + manifest["records_quarantined"]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["records_in"] == manifest["records_in"]
    quarantine = _read(out, "quarantine").to_pandas()
    assert quarantine["records"].sum() == manifest["records_quarantined"]
    scores = _read(out, "scores").to_pandas()
    assert manifest["stages"]["windows_scored"] == len(scores)


def test_every_file_has_exactly_its_sink_schema(run):
    _, _, out, _ = run
    for sink in SINKS:
        files = sorted((out / sink).rglob("*.parquet"))
        assert files, sink
        for f in files:
            assert pq.read_schema(f).equals(SCHEMAS_BY_SINK[sink], check_metadata=True), f


def test_bad_rows_are_quarantined_with_reason_and_raw_text(run, inputs):
    folder, _ = inputs
    _, _, out, _ = run
    quarantine = _read(out, "quarantine").to_pandas().set_index("line")
    lines = (folder / "pump-01.csv").read_text().splitlines()
    for number, (_, reason, records) in BAD_LINES.items():
        row = quarantine.loc[number]
        assert (row["reason_code"], row["records"], row["stage"]) == (reason, records, "parse")
        assert row["raw"] == lines[number - 1]
        assert row["source"].endswith("pump-01.csv")
    assert quarantine.loc[60, "column"] == "flow"


def test_alerts_find_the_injected_anomalies(run):
    _, manifest, out, labels = run
    alerts = _read(out, "alerts").to_pandas()
    assert len(alerts) >= 1 and manifest["stages"]["alerts"] == len(alerts)
    found = 0
    for label in labels.itertuples():
        mine = alerts[alerts["entity_id"] == label.entity_id]
        found += bool(((mine["start"] <= label.end) & (mine["end"] >= label.start)).any())
    assert found >= 3, (found, len(labels))
    assert set(alerts["model_version"]) == {manifest["model"]["model_version"]}
    assert alerts["alert_id"].is_unique


def test_forecasts_have_intervals(run):
    _, _, out, _ = run
    forecasts = _read(out, "forecasts").to_pandas()
    assert set(forecasts["step"]) == {1, 2, 3, 4}
    assert (forecasts["yhat_lower"] <= forecasts["yhat"]).all() and (forecasts["yhat"] <= forecasts["yhat_upper"]).all()
    assert set(forecasts["coverage"]) == {0.9}


def test_a_rerun_of_the_same_input_writes_the_same_files(run, tmp_path):
    config, manifest, out, _ = run
    again = tmp_path / "again"
    second = run_batch(RunConfig(**{**config.__dict__, "output": str(again)}), ["--runner=DirectRunner"])
    assert second["run_id"] == manifest["run_id"]
    for sink in SINKS:
        first_files = {p.relative_to(out): p.read_bytes() for p in (out / sink).rglob("*.parquet")}
        second_files = {p.relative_to(again): p.read_bytes() for p in (again / sink).rglob("*.parquet")}
        assert first_files == second_files, sink


def test_gzipped_inputs_give_the_same_outputs(run, inputs, tmp_path):
    """``pump-01.csv.gz`` is read through Beam's decompression and stands for entity ``pump-01``, as
    ``pump-01.csv`` does (the compressed file's own stem once became the entity, and planning failed with "I/O
    operation on closed file" where Arrow was handed Beam's decompressing file object)."""
    import gzip

    config, manifest, out, _ = run
    folder, _ = inputs
    for path in folder.glob("*.csv"):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    zipped = run_batch(RunConfig(**{**config.__dict__, "inputs": (str(tmp_path / "in" / "*.csv.gz"),),
                                    "output": str(tmp_path / "out")}), ["--runner=DirectRunner"])
    # Equal but for where the panes were cut: in the GroupByKey, as Arrow cannot scan a compressed file ahead.
    assert {k: v for k, v in zipped["stages"].items() if k != "panes_cut_here"} == \
        {k: v for k, v in manifest["stages"].items() if k != "panes_cut_here"}
    for sink, order in (("scores", ["window_end"]), ("alerts", ["start"]),
                        ("forecasts", ["issued_at", "target_time", "channel"])):
        key = [(c, "ascending") for c in ("entity_id", *order)]
        plain, gz = (_read(o, sink).drop_columns(["run_id"]) for o in (out, tmp_path / "out"))
        assert gz.sort_by(key).equals(plain.sort_by(key)), sink
    assert set(_read(tmp_path / "out", "scores").column("entity_id").to_pylist()) == {"pump-01", "pump-02"}


def test_a_run_into_another_runs_output_folder_replaces_its_outputs_and_says_whose(run, tmp_path):
    """--output is one run's folder: a run of other inputs replaces what is there (a rerun after a late file
    arrived must), and its manifest names the run it replaced so that nobody loses results unknowingly."""
    import shutil

    from seqwatch.pipelines.cli import replaced_notice

    config, manifest, out, _ = run
    shared = tmp_path / "out"
    shutil.copytree(out, shared)
    one = sorted(Path(config.inputs[0]).parent.glob("*.csv"))[0]
    other = RunConfig(**{**config.__dict__, "inputs": (str(one),), "output": str(shared)})
    replacing = run_batch(other, ["--runner=DirectRunner"])
    assert replacing["replaced_run"] == {"run_id": manifest["run_id"], "inputs": manifest["inputs"]}
    assert json.loads((shared / "manifest.json").read_text())["replaced_run"]["run_id"] == manifest["run_id"]
    assert set(_read(shared, "scores").column("entity_id").to_pylist()) == {one.stem}
    shown = ", ".join(manifest["inputs"])
    assert replaced_notice("run", replacing) == (
        f"seqwatch run: these outputs replace those of run {manifest['run_id']} (inputs: {shown}) in {shared}; give "
        f"each run its own --output to keep both")
    rerun = run_batch(other, ["--runner=DirectRunner"])  # the same run again: nothing else is replaced
    assert "replaced_run" not in rerun and replaced_notice("run", rerun) is None
    changed = run_batch(RunConfig(**{**other.__dict__, "alert_cooldown_us": 60_000_000}), ["--runner=DirectRunner"])
    assert changed["run_id"] != rerun["run_id"] and "replaced_run" not in changed  # same files, other settings


def test_naive_local_times_across_the_repeated_dst_hour_score_as_their_utc_times(small_model_dir, tmp_path, wide_csv):
    """A plant exports naive Europe/Berlin times; on 2026-10-25 the hour 02:00-03:00 comes twice. In time order
    each reading gets its own UTC time, so the file scores exactly as the same readings stamped in UTC."""
    readings, _ = generate_sensor_data(n_entities=1, n_steps=900, step_seconds=10, seed=8,
                                       start=pd.Timestamp("2026-10-24T23:30:00Z"))
    wide_csv(readings, tmp_path / "utc" / "pump-01.csv")
    local = pd.read_csv(tmp_path / "utc" / "pump-01.csv")
    local["timestamp"] = pd.to_datetime(local["timestamp"]).dt.tz_convert("Europe/Berlin").dt.strftime(
        "%Y-%m-%d %H:%M:%S")
    (tmp_path / "local").mkdir()
    local.to_csv(tmp_path / "local" / "pump-01.csv", index=False)
    assert local["timestamp"].duplicated().sum() == 360  # the hour, twice
    tables = {}
    for name, zone in (("utc", "UTC"), ("local", "Europe/Berlin")):
        config = RunConfig(inputs=(str(tmp_path / name / "*.csv"),), output=str(tmp_path / f"out-{name}"),
                           model_dir=str(small_model_dir), mapping=InputMapping(format="wide", timezone=zone))
        manifest = run_batch(config, ["--runner=DirectRunner"])
        assert manifest["records_quarantined"] == 0 and manifest["records_scored"] == 3600
        # the count of files is of the files the manifest lists, quarantine/empty.parquet among them (bug hunt of
        # outputs, 2026-12-03: it had left such placeholders out)
        listed = sum(len(files) for files in manifest["outputs"].values())
        assert manifest["stages"]["files_written"] == listed == len(list((tmp_path / f"out-{name}").rglob("*.parquet")))
        assert "empty.parquet" in manifest["outputs"]["quarantine"][0]
        tables[name] = _read(tmp_path / f"out-{name}", "scores").drop_columns(["run_id"]).sort_by("window_end")
    assert tables["local"].equals(tables["utc"])


def test_a_wide_file_without_a_model_channel_among_files_with_it_is_quarantined_not_refused(small_model_dir, tmp_path,
                                                                                           wide_csv):
    """One pump of a fleet does not report vibration: the run scores the others and quarantines that pump's
    readings with the channel named, as it does for a long file's entity without it. (A run where no file has
    every channel is refused: tests/pipelines/test_bad_inputs.py, s01.)"""
    from seqwatch.pipelines.cli import quarantine_notice

    readings, _ = generate_sensor_data(n_entities=2, n_steps=200, step_seconds=10, seed=9)
    wide_csv(readings[readings["entity_id"] == "pump-01"], tmp_path / "in" / "pump-01.csv")
    lacking = readings[(readings["entity_id"] == "pump-02") & (readings["channel"] != "vibration")]
    wide_csv(lacking, tmp_path / "in" / "pump-02.csv")
    out = tmp_path / "out"
    manifest = run_batch(RunConfig(inputs=(str(tmp_path / "in"),), output=str(out), model_dir=str(small_model_dir),
                                   mapping=WIDE), ["--runner=DirectRunner"])
    assert (manifest["records_in"], manifest["records_scored"], manifest["records_quarantined"]) == (1400, 800, 600)
    quarantine = _read(out, "quarantine").to_pandas()
    assert set(quarantine["source"].map(lambda s: Path(s).name)) == {"pump-02.csv"}
    assert set(quarantine["reason"]) == {"no model window covers this reading: fewer than 16 consecutive steps with "
                                         "every channel present (this entity has no 'vibration' readings here, and "
                                         "every window needs all of ['flow', 'pressure', 'temperature', "
                                         "'vibration'])"}
    assert set(_read(out, "scores").column("entity_id").to_pylist()) == {"pump-01"}
    assert quarantine_notice("run", manifest, str(out)) == (
        f"seqwatch run: 600 of 1400 readings were quarantined (insufficient_data 600); sources whose entity lacks a "
        f"model channel in some stretch: pump-02.csv (no 'vibration'); each record and its reason is in {out}/quarantine")


def test_a_wide_file_whose_channel_is_read_less_often_is_named_as_sparse_and_its_empty_cells_get_no_ignore_hint(
        small_model_dir, tmp_path, wide_csv):
    """pump-01 reads temperature every 4th row of a 10 s file, as a historian exports channels of different rates:
    its other cells are empty. The model bridges 2 missing steps, so no window of pump-01 is complete. The notice
    counts the empty cells by column without the --ignore meant for a text column (temperature holds readings),
    and names the source whose channel comes too seldom; pump-02 is scored."""
    from seqwatch.pipelines.cli import quarantine_notice

    readings, _ = generate_sensor_data(n_entities=2, n_steps=200, step_seconds=10, seed=9)
    one = readings[readings["entity_id"] == "pump-01"]
    steps = (one["timestamp"] - one["timestamp"].min()) // pd.Timedelta(seconds=10)
    wide_csv(one[(one["channel"] != "temperature") | (steps % 4 == 0)], tmp_path / "in" / "pump-01.csv")
    wide_csv(readings[readings["entity_id"] == "pump-02"], tmp_path / "in" / "pump-02.csv")
    out = tmp_path / "out"
    manifest = run_batch(RunConfig(inputs=(str(tmp_path / "in"),), output=str(out), model_dir=str(small_model_dir),
                                   mapping=WIDE), ["--runner=DirectRunner"])
    assert (manifest["records_in"], manifest["records_scored"], manifest["records_quarantined"]) == (1600, 800, 800)
    assert manifest["stages"]["quarantined.parse.parse_value"] == 150
    quarantine = _read(out, "quarantine").to_pandas()
    assert set(quarantine["source"].map(lambda s: Path(s).name)) == {"pump-01.csv"}
    assert set(quarantine.loc[quarantine["reason_code"] == "insufficient_data", "reason"]) == {
        "no model window covers this reading: fewer than 16 consecutive steps with every channel present (readings "
        "of 'temperature' every 4 steps come further apart than the model bridges: at most 2 missing steps of 10s; "
        "resample them to every 10s, or train a model with --max-gap 3)"}
    assert quarantine_notice("run", manifest, str(out)) == (
        f"seqwatch run: 800 of 1600 readings were quarantined (insufficient_data 650, parse_value 150); empty or "
        f"missing values, by column: 'temperature' 150 (a wide file's empty cell is counted as a reading that did "
        f"not come); sources with channels whose readings come further apart than the model's gap filling bridges: "
        f"pump-01.csv ('temperature' every 4 steps); each record and its reason is in {out}/quarantine")


def test_a_dataset_partitioned_by_device_takes_its_entities_from_the_folders(small_model_dir, tmp_path, capsys):
    """Spark's partitionBy("device") (here pyarrow's write_to_dataset, which writes the same layout): the device
    is in the folder names, not the files, and every folder's file has the same name. --entity-column device reads
    the folders; without it, the run is refused in one sentence (each pump would have been the file name's entity,
    all but one quarantined as duplicates). One pump's days in date folders run as they did."""
    import pyarrow as pa

    readings, _ = generate_sensor_data(n_entities=2, n_steps=200, step_seconds=10, seed=9)
    wide = readings.pivot(index=["timestamp", "entity_id"], columns="channel", values="value").reset_index()
    wide = wide.rename(columns={"entity_id": "device"})
    pq.write_to_dataset(pa.Table.from_pandas(wide, preserve_index=False), tmp_path / "by-device",
                        partition_cols=["device"], basename_template="part-{i}.parquet")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "by-device").rglob("*.parquet")) == [
        "by-device/device=pump-01/part-0.parquet", "by-device/device=pump-02/part-0.parquet"]
    mapping = InputMapping(format="wide", timestamp="timestamp", entity={"column": "device"})
    manifest = run_batch(RunConfig(inputs=(str(tmp_path / "by-device"),), output=str(tmp_path / "out"),
                                   model_dir=str(small_model_dir), mapping=mapping), ["--runner=DirectRunner"])
    assert (manifest["records_scored"], manifest["records_quarantined"]) == (1600, 0)
    assert set(_read(tmp_path / "out", "scores").column("entity_id").to_pylist()) == {"pump-01", "pump-02"}
    with pytest.raises(RunError, match=r"device=pump-01/part-0.parquet and .*device=pump-02/part-0.parquet are both "
                                       r"entity 'part-0' over the same time, but lie in different partition folders "
                                       r"\(device=pump-01 and device=pump-02\): take the entity from the folders "
                                       r"with --entity-column device"):
        run_batch(RunConfig(inputs=(str(tmp_path / "by-device"),), output=str(tmp_path / "refused"),
                            model_dir=str(small_model_dir), mapping=WIDE), ["--runner=DirectRunner"])
    from seqwatch.pipelines.cli import main  # training would have averaged the pumps into one: refused alike
    assert main(["train", "--input", str(tmp_path / "by-device"), "--format", "wide", "--model-dir",
                 str(tmp_path / "m")]) == 2
    assert "are both entity 'part-0' over the same time" in capsys.readouterr().err
    one = wide[wide["device"] == "pump-01"].drop(columns="device")
    for day, part in (("2026-01-05", one.iloc[:100]), ("2026-01-06", one.iloc[100:])):
        folder = tmp_path / "by-day" / f"date={day}"
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / "pump-01.parquet")
    manifest = run_batch(RunConfig(inputs=(str(tmp_path / "by-day"),), output=str(tmp_path / "days"),
                                   model_dir=str(small_model_dir), mapping=WIDE), ["--runner=DirectRunner"])
    assert (manifest["records_in"], manifest["records_quarantined"]) == (800, 0)


def test_a_failed_run_leaves_the_previous_outputs_untouched(run, tmp_path):
    config, _, out, _ = run
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp_path / "other.csv"
    bad.write_text("timestamp,flow,pressure\n2026-01-05T00:00:00Z,1,2\n")
    with pytest.raises(RunError, match=r"expects channels .* but other.csv has \['flow', 'pressure'\]"):
        run_batch(RunConfig(**{**config.__dict__, "inputs": (str(bad),)}))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def _alerts_in_us(out):
    """The alerts of a run, by entity and start, with ``start`` and ``end`` in epoch microseconds."""
    alerts = _read(out, "alerts").to_pandas().sort_values(["entity_id", "start"])
    for column in ("start", "end"):
        alerts[column] = alerts[column].dt.as_unit("us").astype("int64")
    return alerts


def test_an_alert_cooldown_merges_the_alerts_it_separates_no_longer(run, small_model_dir, tmp_path):
    from seqwatch.models.artifact import read_metadata

    config, manifest, out, _ = run
    step_us = int(read_metadata(str(small_model_dir))["step_us"])
    plain = _alerts_in_us(out)
    quiet = [int(b.start - a.end - step_us) for _, part in plain.groupby("entity_id")
             for a, b in zip(part.itertuples(), part.iloc[1:].itertuples())]
    assert len(quiet) >= 2, "the data should give some entity several alerts"
    cooldown = sorted(quiet)[len(quiet) // 2]  # a quiet spell exactly as long as the cooldown merges
    expected = []  # the plain alerts, merged by hand where the quiet spell between them is <= the cooldown
    for entity, part in plain.groupby("entity_id"):
        for a in part.itertuples():
            if expected and expected[-1][0] == entity and a.start - expected[-1][2] - step_us <= cooldown:
                expected[-1] = (entity, expected[-1][1], max(expected[-1][2], a.end), expected[-1][3] + a.windows,
                                expected[-1][4])
            else:
                expected.append((entity, a.start, a.end, a.windows, a.alert_id))
    assert len(expected) < len(plain)

    merged_out = tmp_path / "cooldown"
    merged_manifest = run_batch(RunConfig(**{**config.__dict__, "output": str(merged_out),
                                             "alert_cooldown_us": cooldown}), ["--runner=DirectRunner"])
    merged = _alerts_in_us(merged_out)
    assert [tuple(r) for r in merged[["entity_id", "start", "end", "windows", "alert_id"]].itertuples(index=False)] \
        == expected
    assert merged_manifest["stages"]["alerts"] == len(expected)
    assert merged_manifest["records_scored"] == manifest["records_scored"]
    assert merged_manifest["settings"]["alert_cooldown_us"] == cooldown
    assert "alert_cooldown_us" not in manifest["settings"] and merged_manifest["run_id"] != manifest["run_id"]


def _with_scoring(model_dir, copy_to, **scoring):
    """A copy of the artifact ``model_dir`` whose metadata has these scoring settings."""
    import shutil

    shutil.copytree(model_dir, copy_to)
    meta_path = copy_to / "metadata.json"
    metadata = json.loads(meta_path.read_text())
    metadata["config"]["scoring"].update(scoring)
    meta_path.write_text(json.dumps(metadata))
    return copy_to


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", *args], capture_output=True, text=True)


def test_a_runner_that_stops_answering_during_a_batch_job_is_one_sentence(run, small_model_dir, prism_location,
                                                                        tmp_path):
    """Found by hand (session 50): Prism given an EXTERNAL worker pool where none listens ends as the job starts,
    and its job service's gRPC error (UNAVAILABLE) was a traceback of 34 lines. Nothing is committed."""
    from tests.conftest import _free_port

    config, _, _, _ = run
    result = _cli("run", "--input", config.inputs[0], "--format", "wide", "--output", str(tmp_path / "o"),
                  "--model-dir", str(small_model_dir), "--runner=PrismRunner", f"--prism_location={prism_location}",
                  "--environment_type=EXTERNAL", f"--environment_config=127.0.0.1:{_free_port()}")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("seqwatch run: the runner stopped answering during the job (UNAVAILABLE: "), \
        result.stderr
    assert result.stderr.endswith("); a batch run commits nothing unless it finishes, so the previous outputs are "
                                  "as they were\n"), result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o" / "manifest.json").exists()


@pytest.mark.slow
def test_a_pane_shorter_than_the_model_allows_is_raised_and_said(run, small_model_dir, tmp_path):
    """Found by a bug hunt: --pane-steps 10 ran with panes of 40 steps, without a word, and the manifest said 10."""
    config, _, _, _ = run
    result = _cli("run", "--input", config.inputs[0], "--format", "wide", "--output", str(tmp_path / "o"),
                  "--model-dir", str(small_model_dir), "--pane-steps", "10")
    assert result.returncode == 0, result.stderr
    # window 16, max gap 2: 2 x (16 + 2 + 1) = 38 steps, in whole strides of 4: 40
    assert ("seqwatch run: note: a pane of this model holds at least two windows of 16 steps and their gap filling, "
            "so --pane-steps 10 became 40 (the manifest says so)") in result.stderr
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["settings"]["pane_steps"] == 40


@pytest.mark.slow
def test_two_worker_processes_leave_the_terminal_to_seqwatch_and_score_as_one(run, small_model_dir, tmp_path):
    config, manifest, out, _ = run
    two = tmp_path / "two"
    result = _cli("run", "--input", config.inputs[0], "--format", "wide", "--output",
                  str(two), "--model-dir", str(small_model_dir), "--pane-steps", "256", "--workers", "2")
    assert result.returncode == 0, result.stderr
    # Beam's worker processes wrote ~50 lines here (their start-up at INFO, import warnings), each run.
    beam_lines = [line for line in result.stderr.splitlines()
                  if line.startswith(("INFO:", "WARNING:", "DEBUG:")) or "Failed to import" in line]
    assert beam_lines == []
    second = json.loads((two / "manifest.json").read_text())
    assert second["workers"] == 2
    assert (second["records_in"], second["records_scored"], second["records_quarantined"]) == (
        manifest["records_in"], manifest["records_scored"], manifest["records_quarantined"])
    keys = ["entity_id", "window_start"]
    one_scores = _read(out, "scores").to_pandas().sort_values(keys).reset_index(drop=True)
    two_scores = _read(two, "scores").to_pandas().sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(one_scores[keys + ["score"]], two_scores[keys + ["score"]])


@pytest.mark.slow
def test_cli_errors_are_one_sentence_and_exit_2(small_model_dir, tmp_path, cli_cases):
    header_only = tmp_path / "empty.csv"
    header_only.write_text("timestamp,flow,pressure,temperature,vibration\n")
    header_only.with_suffix(".parquet").write_text("not Parquet")  # a calibration state that is not one
    long_file = tmp_path / "long.csv"
    long_file.write_text("entity_id,channel,timestamp,value\npump-01,flow,2026-01-05T00:00:00Z,1.0\n")
    negative_flow = tmp_path / "negative.csv"
    negative_flow.write_text("entity_id,channel,timestamp,value\npump-01,flow,2026-01-05T00:00:00Z,-9999\n"
                             "pump-01,flow,2026-01-05T00:00:10Z,-9999\n")
    empty_folder = tmp_path / "nothing-yet"
    empty_folder.mkdir()
    (empty_folder / "_SUCCESS").write_text("")
    replay_stream = ["stream", "--source", "replay", "--input", str(header_only), "--output", str(tmp_path / "o"),
                     "--model-dir", str(small_model_dir)]
    cases = [
        (["run", "--input", str(tmp_path / "missing*.csv"), "--output", str(tmp_path / "o"), "--model-dir",
          str(small_model_dir)], "no input file matches"),
        (["run", "--input", str(header_only), "--format", "wide", "--output", str(tmp_path / "o"), "--model-dir",
          str(small_model_dir)], "the input holds no records"),
        (["run", "--input", str(header_only), "--format", "wide", "--output", str(tmp_path / "o"), "--model-dir",
          str(tmp_path / "nomodel")], "does not exist"),
        (["run", "--input", str(header_only), "--format", "wide", "--output", str(tmp_path / "o"), "--model-dir",
          str(header_only)], f"{header_only} is a file, not a model directory (one with model.keras and "
                             f"metadata.json, or a model root of such directories)"),
        (["train", "--input", str(header_only), "--format", "wide", "--model-dir", str(tmp_path / "m")],
         "holds no valid records"),
        (["train", "--input", str(header_only), "--model-dir", str(tmp_path / "m")],
         "empty.csv lacks required columns ['entity_id', 'channel', 'value'] (its columns are ['timestamp', 'flow', "
         "'pressure', 'temperature', 'vibration']); a file with one column per channel is wide: --format wide"),
        (["run", "--input", str(long_file), "--format", "wide", "--output", str(tmp_path / "o"), "--model-dir",
          str(small_model_dir)], "long.csv has ['channel', 'value'] (missing ['flow', 'pressure', 'temperature', "
                                 "'vibration']); a file of entity, channel, timestamp and value columns is long: "
                                 "--format long"),
        (["run", "--input", str(empty_folder), "--output", str(tmp_path / "o"), "--model-dir", str(small_model_dir)],
         f"no CSV or Parquet file is in the folder {str(empty_folder)!r}"),
        (["run", "--input", str(header_only), "--format", "wide", "--output", str(tmp_path / "o"), "--model-dir",
          str(small_model_dir), "--alert-cooldown", "-60"],
         "--alert-cooldown must be zero or a positive number of seconds, got -60"),
        (["run", "--input", str(header_only), "--format", "wide", "--output", str(tmp_path / "o"), "--model-dir",
          str(small_model_dir), "--max-quarantined-share", "20"],
         "--max-quarantined-share must be a fraction from 0 to 1 (0.2: a fifth of the readings; 1: never exit 3), "
         "got 20"),
        (["train", "--input", str(header_only), "--format", "wide", "--model-dir", str(tmp_path / "m"),
          "--window", "-3"], "--window must be >= 2, got -3"),
        (["train", "--input", str(header_only), "--format", "wide", "--model-dir", str(tmp_path / "m"),
          "--horizon", "-1"], "--horizon must be >= 0, got -1"),
        (["run", "--input", str(long_file), "--output", str(tmp_path / "o"), "--model-dir", str(small_model_dir),
          "--pane-steps", "0"], "--pane-steps must be >= 1, got 0"),
        (["train", "--input", str(negative_flow), "--model-dir", str(tmp_path / "m"), "--channel", "humidity"],
         "the training input holds no readings of the channel(s) ['humidity'] (its channels are ['flow'])"),
        # One of two channels asked for: refused up front (it had trained on flow alone into "fills only 0 windows").
        (["train", "--input", str(negative_flow), "--model-dir", str(tmp_path / "m"), "--channel", "flow",
          "--channel", "humidity"],
         "the training input holds no readings of the channel(s) ['humidity'] (its channels are ['flow'])"),
        # --horizon 0 asks to drop the forecast head: it had been taken for "not given" and ignored.
        (["train", "--input", str(long_file), "--model-dir", str(tmp_path / "m"), "--warm-start",
          str(small_model_dir), "--horizon", "0", "--dropout", "0"],
         "--warm-start continues the model's own architecture and window, so --dropout, --horizon cannot be given "
         "with it"),
        (["train", "--input", str(long_file), "--model-dir", str(small_model_dir), "--warm-start",
          str(small_model_dir)],
         f"--model-dir {small_model_dir} is the version --warm-start continues; give the new version a folder of its "
         f"own (beside it in the model root), so that the one running jobs use stays as it is"),
        (["train", "--input", str(long_file), "--model-dir", str(tmp_path / "m"), "--suite", "pumps.json"],
         "suite 'pumps.json' is neither a bundled family ['energy', 'health', 'sensor'] nor a file"),
        (["train", "--input", str(negative_flow), "--model-dir", str(tmp_path / "m")],
         "the training input holds no valid records: all 2 readings that parsed fail validation with suite "
         "'sensor' (expectation_failed 2; the first expectation_failed: channel 'flow' value -9999.0 failed "
         "expect_column_values_to_be_between(value, max_value=1000000.0, min_value=0.0) for flow "
         "channels)"),
        ([*replay_stream, "--archive-readings", "3600", "--runner=DirectRunner"],
         "--archive-readings in a stream needs Prism, Flink or Dataflow (leave out --runner: Prism)"),
        ([*replay_stream, "--online-calibration", "--runner=DirectRunner"],
         "--online-calibration in a stream needs Prism, Flink or Dataflow"),
        # The DirectRunner runs a stream as one batch where it cannot hand it to Prism: a broker read that never
        # ends would write nothing (and hold every message in memory).
        (["stream", "--source", "kafka", "--bootstrap-servers", "127.0.0.1:1", "--topic", "t", "--output",
          str(tmp_path / "o"), "--model-dir", str(small_model_dir), "--runner=DirectRunner"],
         "a kafka stream without --stop-after-idle never ends, and the DirectRunner, where it cannot hand the job to "
         "Prism, runs a stream as one batch that writes nothing before its source ends: leave out --runner (Prism) "
         "or name a streaming runner (FlinkRunner, DataflowRunner)"),
        # Beam's Spark runner gives a splittable DoFn no checkpoint: the stream failed after 15 s (session 51)
        ([*replay_stream, "--runner=SparkRunner"], "Beam's Spark runner cannot run a stream: its portable runner "
                                                   "gives no checkpoint to a splittable DoFn"),
        ([*replay_stream, "--runner=PrismRunner", f"--prism_location={tmp_path / 'no-prism-here'}"],
         "a stream runs on Prism unless --runner names another runner, and Prism's binary could not be had (Unable "
         f"to parse binary URL \"{tmp_path / 'no-prism-here'}\"): build it with `make prism` (Go) and pass "
         "--prism_location=.tools/bin/prism, or name another streaming runner (FlinkRunner, DataflowRunner)"),
        (["stream", "--source", "kafka", "--bootstrap-servers", "127.0.0.1:1", "--topic", "t", "--output",
          str(tmp_path / "o"), "--model-dir", str(small_model_dir), "--idle-watermark", "-5"],
         "--idle-watermark must be a positive number of seconds, got -5"),
        ([*replay_stream, "--idle-watermark", "30"],
         "--idle-watermark is for live broker sources (kafka, pubsub, mqtt), not a replay"),
        # Both had been dropped without a word on a replay (found by a bug hunt).
        ([*replay_stream, "--stop-after-idle", "3"],
         "--stop-after-idle is for live broker sources (kafka, pubsub, mqtt), not a replay, which ends with its "
         "files and whose event time is theirs"),
        ([*replay_stream, "--max-out-of-orderness", "60"],
         "--max-out-of-orderness is for live broker sources (kafka, pubsub, mqtt), not a replay"),
        # 0 had passed the DirectRunner's never-ending-read guard and read as "never stop".
        (["stream", "--source", "kafka", "--bootstrap-servers", "127.0.0.1:1", "--topic", "t", "--output",
          str(tmp_path / "o"), "--model-dir", str(small_model_dir), "--stop-after-idle", "0"],
         "--stop-after-idle must be a positive number of seconds, got 0"),
        ([*replay_stream, "--speed", "0"],
         "--speed must be a positive number (times real speed; 3600 plays an hour a second), got 0"),
        ([*replay_stream, "--archive-readings", "0"],
         "--archive-readings must be a positive number of seconds, got 0"),
        ([*replay_stream, "--flush-window", "0"],
         "--flush-window must be a positive number of seconds, got 0"),
        # a stream's bug hunt: below 1 µs a window rounded to none (ZeroDivisionError), and 1e15 s overflowed the
        # timers' int64 µs (OverflowError), each with a traceback
        ([*replay_stream, "--flush-window", "1e-9"],
         "--flush-window must be from 1 µs to a century (3155760000 s), got 1e-09"),
        ([*replay_stream, "--archive-readings", "1e15"],
         "--archive-readings must be from 1 µs to a century (3155760000 s), got 1e+15"),
        ([*replay_stream, "--calibration-keep-days", "2"],
         "--calibration-keep-days limits the calibration state that --online-calibration keeps: give "
         "--online-calibration too"),
        ([*replay_stream, "--alert-cooldown", "1e15"],
         "--alert-cooldown must be at most a century (3155760000 s), got 1e+15"),
        ([*replay_stream, "--allowed-lateness", "-1"],
         "--allowed-lateness must be zero or a positive number of seconds, got -1"),
        ([*replay_stream, "--pane-steps", "-3"],
         "--pane-steps must be a positive number of steps (0: the default), got -3"),
        ([*replay_stream, "--score-window-files", "5000"],
         "--score-window-files must be a number of files from 1 to 4096 (0, the default: a file per entity and "
         "pane), got 5000"),
        (["run", "--input", str(header_only), "--format", "wide", "--output", str(tmp_path / "o"), "--model-dir",
          str(_with_scoring(small_model_dir, tmp_path / "q90", threshold_method="quantile", threshold_quantile=0.9)),
          "--online-calibration"], "online calibration needs a model whose threshold is rarer than its tail fit"),
        # a kept calibration state (--calibration-from): each mistake one sentence
        (["run", "--input", str(header_only), "--format", "wide", "--output", str(tmp_path / "o"), "--model-dir",
          str(small_model_dir), "--calibration-from", str(tmp_path)],
         "--calibration-from continues an earlier run's online calibration: give --online-calibration too"),
        (["run", "--input", str(header_only), "--format", "wide", "--output", str(tmp_path / "o"), "--model-dir",
          str(small_model_dir), "--online-calibration", "--calibration-from", str(tmp_path / "o")],
         f"--calibration-from names the run's own --output {tmp_path / 'o'}: the run replaces the state it starts "
         f"from there"),
        (["run", "--input", str(header_only), "--format", "wide", "--output", str(tmp_path / "o"), "--model-dir",
          str(small_model_dir), "--online-calibration", "--calibration-from", str(tmp_path)],
         f"--calibration-from: {tmp_path} holds no calibration_state.parquet; it takes the output folder"),
        (["run", "--input", str(header_only), "--format", "wide", "--output", str(tmp_path / "o"), "--model-dir",
          str(small_model_dir), "--online-calibration", "--calibration-from", str(header_only.with_suffix(".parquet"))],
         f"--calibration-from: {header_only.with_suffix('.parquet')} is not a calibration state seqwatch can read ("),
        # the bug hunt of online calibration: the advice named a quantile setting the command line does not have
        (["run", "--input", str(header_only), "--format", "wide", "--output", str(tmp_path / "o"), "--model-dir",
          str(tmp_path / "q90"), "--online-calibration"], "has risk 0.1: train it with --threshold pot (the default; "
                                                          "or, in Python, ScoringConfig(threshold_quantile=) above "
                                                          "0.95)"),
    ]
    import shutil

    damaged = shutil.copytree(small_model_dir, tmp_path / "damaged")  # a copy cut short
    (damaged / "model.keras").write_bytes((damaged / "model.keras").read_bytes()[:1000])
    cases += [
        (["run", "--input", str(long_file), "--output", str(tmp_path / "o"), "--model-dir", str(damaged)],
         f"model {damaged} is corrupt: model.keras does not match the checksum in metadata.json"),
        (["stream", "--source", "replay", "--input", str(long_file), "--output", str(tmp_path / "o"),
          "--model-dir", str(damaged), "--runner=DirectRunner"],
         f"model {damaged} is corrupt: model.keras does not match the checksum in metadata.json"),
        (["stream", "--source", "kafka", "--bootstrap-servers", "127.0.0.1:1", "--topic", "t", "--output",
          str(tmp_path / "o"), "--model-dir", str(small_model_dir), "--stop-after-idle", "5",
          "--runner=DirectRunner"], "cannot reach the Kafka broker at 127.0.0.1:1 ("),
        ([*replay_stream, "--max-wait", "-1"], "--max-wait must be zero (no limit) or a positive number of seconds, "
                                               "got -1"),
        # Flags that the input or the source does not read were dropped without a word.
        ([*replay_stream, "--max-out-of-orderness", "-1"],
         "--max-out-of-orderness must be zero or a positive number of seconds, got -1"),
        ([*replay_stream, "--topic", "readings"], "--topic is for --source kafka or mqtt, not --source replay"),
        (["stream", "--source", "kafka", "--bootstrap-servers", "127.0.0.1:1", "--topic", "t", "--output",
          str(tmp_path / "o"), "--model-dir", str(small_model_dir), "--batch-seconds", "0"],
         "--batch-seconds must be from 0.01 to 5 seconds, got 0"),
        (["stream", "--source", "kafka", "--bootstrap-servers", "127.0.0.1:1", "--topic", "t", "--output",
          str(tmp_path / "o"), "--model-dir", str(small_model_dir), "--batch-seconds", "60"],
         "--batch-seconds must be from 0.01 to 5 seconds, got 60"),
        ([*replay_stream, "--batch-seconds", "2"], "--batch-seconds is for --source kafka, mqtt or pubsub, not "
                                                   "--source replay"),
        ([*replay_stream, "--format", "wide", "--speed", "1000", "--runner=DirectRunner"],
         "the input holds no records (1 file(s) are empty or have only a header)"),
        (["stream", "--source", "kafka", "--bootstrap-servers", "127.0.0.1:1", "--topic", "t", "--input",
          str(long_file), "--output", str(tmp_path / "o"), "--model-dir", str(small_model_dir)],
         "--input is for --source replay, not --source kafka"),
        (["train", "--input", str(long_file), "--model-dir", str(tmp_path / "m"), "--epocs", "3"],
         "unknown flag --epocs: seqwatch train does not take it; did you mean --epochs?"),
        (["run", "--input", str(long_file), "--sep", ";", "--output", str(tmp_path / "o"), "--model-dir",
          str(small_model_dir)], "long.csv's header is one column when split by the separator ';' (--sep, or the "
                                 "mapping's sep) and looks separated by ',': give --sep ',' or leave the separator "
                                 "out"),
        (["run", "--input", str(long_file), "--entity", "pump-7", "--output", str(tmp_path / "o"), "--model-dir",
          str(small_model_dir)], "--entity is for --format wide; a long file's rows name their entity and time in "
                                 "its entity_id and timestamp columns"),
    ]
    # A Parquet file cut short, among good files: the sentence names it (pyarrow's own text does not).
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(long_file, mixed / "a.csv")
    (mixed / "b.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 4)
    cases += [
        (["run", "--input", str(mixed), "--output", str(tmp_path / "o"), "--model-dir", str(small_model_dir)],
         f"{mixed}/b.parquet is not a readable Parquet file (Parquet magic bytes not found in footer)"),
        (["stream", "--source", "replay", "--input", str(mixed), "--output", str(tmp_path / "o"), "--model-dir",
          str(small_model_dir), "--runner=DirectRunner"],
         f"{mixed}/b.parquet is not a readable Parquet file (Parquet magic bytes not found in footer)"),
    ]
    taken = tmp_path / "results.csv"
    taken.write_text("x\n")
    mapping = tmp_path / "eu.json"
    mapping.write_text('{"format": "long", "sep": ";"}')
    cases += [
        (["run", "--input", str(long_file), "--output", str(taken), "--model-dir", str(small_model_dir)],
         f"cannot write the outputs under --output {taken}: it is a file"),
        (["stream", "--source", "replay", "--input", str(long_file), "--output", str(taken / "live"),
          "--model-dir", str(small_model_dir)], f"cannot write the outputs under --output {taken}/live: {taken} is a "
                                                f"file"),
        (["train", "--input", str(long_file), "--model-dir", str(taken / "m")],
         f"cannot write the model to --model-dir {taken}/m: {taken} is a file"),
        (["demo", "--quick", "--output", str(taken)], f"cannot write the outputs under --output {taken}: it is a file"),
        (["run", "--input", str(long_file), "--output", str(tmp_path / "o"), "--model-dir", str(small_model_dir),
          "--alert-cooldwn", "60"], "unknown flag --alert-cooldwn: neither seqwatch run nor Beam takes it; did you "
                                    "mean --alert-cooldown?"),
        # found by hand (session 50): Beam's FnApiRunner failed on it with an IndexError in a traceback
        (["run", "--input", str(long_file), "--output", str(tmp_path / "o"), "--model-dir", str(small_model_dir),
          "--direct_num_workers=-1"], "--direct_num_workers must be 0 (one per core) or more, got -1"),
        # and a job server that is not there (test_runners.py has the others): a 300 s wait, then a traceback
        (["run", "--input", str(long_file), "--output", str(tmp_path / "o"), "--model-dir", str(small_model_dir),
          "--runner=PortableRunner", "--job_endpoint=127.0.0.1:1"],
         "no job server answers at 127.0.0.1:1 (--job_endpoint): Connection refused; start it first"),
        # a Flink cluster that is not there: the job server tried it for a minute, then an ERROR:root: line (68 s)
        (["run", "--input", str(long_file), "--output", str(tmp_path / "o"), "--model-dir", str(small_model_dir),
          "--runner=FlinkRunner", "--flink_master=127.0.0.1:1", f"--flink_job_server_jar={long_file}"],
         "no Flink cluster answers at 127.0.0.1:1 (--flink_master=127.0.0.1:1): Connection refused; start it first"),
        (["run", "--input", str(long_file), "--output", str(tmp_path / "o"), "--model-dir", str(small_model_dir),
          "--runner=SparkRunner", "--spark_master_url=spark://127.0.0.1:1", f"--spark_job_server_jar={long_file}"],
         "no Spark master answers at --spark_master_url=spark://127.0.0.1:1 (127.0.0.1:1: Connection refused)"),
        (["run", "--input", str(long_file), "--format", "wide", "--mapping", str(mapping), "--output",
          str(tmp_path / "o"), "--model-dir", str(small_model_dir)],
         f"the mapping file {mapping} sets format 'long' but --format says 'wide': give one of them"),
    ]
    # The first case as a user runs it (its own process); the rest in one process, which imports Beam only once.
    first = _cli(*cases[0][0])
    results = [(first.returncode, first.stderr)] + cli_cases([args for args, _ in cases[1:]])
    for (args, message), (code, stderr) in zip(cases, results, strict=True):
        assert code == 2, (args, stderr[-2000:])
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert message in lines[-1], (args, stderr[-2000:])
        assert "Traceback" not in stderr, stderr[-2000:]


def test_a_run_that_quarantines_more_than_its_gate_allows_writes_its_outputs_and_exits_3(small_model_dir, tmp_path,
                                                                                       wide_csv, cli_cases):
    """--max-quarantined-share: a night whose export grew a text column quarantines a fifth of its readings; with
    a gate of 0.1 the run still writes everything, then exits 3 with one sentence for the scheduler to alert on;
    with a gate of 0.5 it exits 0."""
    readings, _ = generate_sensor_data(n_entities=1, n_steps=200, step_seconds=10, seed=9)
    path = wide_csv(readings, tmp_path / "in" / "pump-01.csv")
    table = pd.read_csv(path)
    table["status"] = "running"
    table.to_csv(path, index=False)
    runs = {share: ["run", "--input", str(path), "--format", "wide", "--model-dir", str(small_model_dir), "--output",
                    str(tmp_path / f"out-{share}"), "--max-quarantined-share", share] for share in ("0.1", "0.5")}
    (strict_code, strict_err), (lenient_code, lenient_err) = cli_cases(list(runs.values()))
    assert strict_code == 3, strict_err[-2000:]
    assert strict_err.strip().splitlines()[-1] == (
        f"seqwatch run: 20.0% of the readings were quarantined, more than --max-quarantined-share 0.1 allows (exit "
        f"code 3); the run's outputs are in {tmp_path / 'out-0.1'}")
    manifest = json.loads((tmp_path / "out-0.1" / "manifest.json").read_text())
    assert (manifest["records_in"], manifest["records_quarantined"]) == (1000, 200)
    assert _read(tmp_path / "out-0.1", "scores").num_rows > 0
    assert lenient_code == 0 and "--max-quarantined-share" not in lenient_err, lenient_err[-2000:]


def test_a_run_that_scored_nothing_exits_3_unless_its_gate_is_1(small_model_dir, tmp_path, cli_cases):
    """A long export whose entity lacks one of the model's channels throughout: the sample read before the run
    cannot tell it from a channel that comes later in the file, so the run goes on and quarantines every reading as
    ``insufficient_data``. It had exited 0, and a scheduler took the night for a quiet one; it now exits 3 after
    writing its outputs, as over a --max-quarantined-share gate; a gate of 1 lets it exit 0."""
    readings, _ = generate_sensor_data(n_entities=1, n_steps=200, step_seconds=10, seed=9)
    readings = readings[readings["channel"] != "vibration"].copy()
    readings["timestamp"] = readings["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    path = tmp_path / "in" / "night.csv"
    path.parent.mkdir()
    readings.to_csv(path, index=False)
    runs = [["run", "--input", str(path), "--model-dir", str(small_model_dir), "--output", str(tmp_path / name),
             *extra] for name, extra in (("out", []), ("out-1", ["--max-quarantined-share", "1"]))]
    (code, err), (lenient_code, lenient_err) = cli_cases(runs)
    assert code == 3, err[-2000:]
    lines = err.strip().splitlines()
    assert lines[-1] == (f"seqwatch run: nothing was scored, every reading was quarantined (exit code 3; "
                         f"--max-quarantined-share 1 exits 0 then); the run's outputs are in {tmp_path / 'out'}")
    assert "nothing was scored: all 600 readings were quarantined (insufficient_data 600)" in err
    assert "night.csv (no 'vibration')" in err, err[-2000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (manifest["records_in"], manifest["records_scored"], manifest["records_quarantined"]) == (600, 0, 600)
    assert _read(tmp_path / "out", "quarantine").num_rows > 0
    assert lenient_code == 0 and "exit code 3" not in lenient_err, lenient_err[-2000:]
    assert (tmp_path / "out-1" / "manifest.json").exists()


def test_online_calibration_judges_each_entitys_windows_by_its_own_earlier_scores(run, small_model_dir, tmp_path):
    """``online_calibration``: the same windows and scores as the plain run, but each entity's windows, in time
    order, judged by OnlineTailCalibration seeded with the model's calibration scores (worked out here from the
    scores read back); the alerts follow the new flags; the setting changes the run id."""
    import numpy as np

    from seqwatch.models.artifact import read_metadata
    from seqwatch.pipelines.calibration import model_risk, start_calibration

    config, manifest, out, _ = run
    calibrated_out = tmp_path / "calibrated"
    calibrated_manifest = run_batch(RunConfig(**{**config.__dict__, "output": str(calibrated_out),
                                                 "online_calibration": True}), ["--runner=DirectRunner"])
    plain = _read(out, "scores").to_pandas().sort_values(["entity_id", "window_end"]).reset_index(drop=True)
    scores = _read(calibrated_out, "scores").to_pandas().sort_values(["entity_id", "window_end"]).reset_index(drop=True)
    assert (scores["window_end"] == plain["window_end"]).all()
    np.testing.assert_allclose(scores["score"], plain["score"], rtol=1e-6)
    metadata = read_metadata(str(small_model_dir))
    risk, _ = model_risk(metadata)
    for entity, part in scores.groupby("entity_id"):
        tail, threshold = start_calibration(metadata).process_at_risk(part["score"].to_numpy(), risk)
        np.testing.assert_allclose(part["tail_probability"], tail, rtol=1e-9, err_msg=entity)
        np.testing.assert_allclose(part["threshold"], threshold, rtol=1e-9, err_msg=entity)
        np.testing.assert_array_equal(part["is_anomaly"], part["score"].to_numpy() > threshold)
    assert scores["threshold"].nunique() > 2  # refitted per entity as windows come
    # The alerts are the calibrated anomalous windows merged (windows that overlap or touch), worked out here.
    step_us = int(metadata["step_us"])
    expected = []
    for entity, part in scores[scores["is_anomaly"]].groupby("entity_id"):
        for start, end in zip(part["window_start"].astype("int64"), part["window_end"].astype("int64")):
            if expected and expected[-1][0] == entity and start <= expected[-1][2] + step_us:
                expected[-1] = (entity, expected[-1][1], max(end, expected[-1][2]), expected[-1][3] + 1)
            else:
                expected.append((entity, start, end, 1))
    alerts = _alerts_in_us(calibrated_out)
    assert [tuple(a) for a in alerts[["entity_id", "start", "end", "windows"]].itertuples(index=False)] == expected
    assert len(expected) >= 2 and sum(e[3] for e in expected) == calibrated_manifest["stages"]["windows_anomalous"]
    assert calibrated_manifest["records_scored"] == manifest["records_scored"]
    assert calibrated_manifest["settings"]["online_calibration"] is True
    assert "online_calibration" not in manifest["settings"] and calibrated_manifest["run_id"] != manifest["run_id"]


def test_entity_ids_that_are_not_file_names_are_written_where_readers_find_them(small_model_dir, tmp_path):
    """Entity ids were folder names in every sink (alerts still, and a stream's scores and forecasts). '..' wrote
    its files outside the sink (lost with the staging folder) and '.x' or '_x' made folders that pyarrow.dataset,
    Spark and Hive skip as hidden: their scores, forecasts and alerts were not read back. Every id must come back
    from each sink; a batch run's scores, forecasts and alerts are in one file each (its alerts had been a file per
    incident in a folder per entity), so no entity id names a path there."""
    odd = {"pump-01": "..", "pump-02": ".hidden", "pump-03": "_staging", "pump-04": "site-a/pump 4"}
    readings, _ = generate_sensor_data(n_entities=4, n_steps=300, seed=11, anomalies_per_entity=1,
                                       kinds=("level_shift",))
    readings["entity_id"] = readings["entity_id"].map(odd)
    readings["timestamp"] = readings["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    path = tmp_path / "_export.csv"  # the quarantine file is named after the source
    readings.to_csv(path, index=False)
    with path.open("a") as f:
        f.write("..,flow,2026-01-05T99:00:00Z,1.0\n")
    out = tmp_path / "out"
    manifest = run_batch(RunConfig(inputs=(str(path),), output=str(out), model_dir=str(small_model_dir),
                                   pane_steps=256), ["--runner=DirectRunner"])
    assert manifest["records_quarantined"] == 1
    assert manifest["records_scored"] == len(readings)
    scores = _read(out, "scores").to_pandas()
    assert set(scores["entity_id"]) == set(odd.values())
    assert len(scores) == manifest["stages"]["windows_scored"]
    assert set(_read(out, "forecasts").column("entity_id").to_pylist()) == set(odd.values())
    alerts = _read(out, "alerts").to_pandas()
    assert len(alerts) >= 2 and set(alerts["entity_id"]) <= set(odd.values())
    assert list(alerts["alert_id"]) == list(alerts.sort_values(["entity_id", "start", "alert_id"])["alert_id"])
    assert _read(out, "quarantine").column("records").to_pylist() == [1]
    assert [p.name for sink in ("scores", "forecasts", "alerts") for p in (out / sink).iterdir()] == [
        "part-00000-of-00001.parquet"] * 3
    assert {p.name for p in out.iterdir()} == {*SINKS, "manifest.json", ".seqwatch.lock"}


def test_an_entity_sampled_far_from_the_models_interval_is_quarantined_with_that_reason(small_model_dir, tmp_path):
    """The run checks the first file's interval before it starts; an entity in another file whose readings come
    every 1 s or every 60 s (the model: 10 s) was averaged onto the model's grid and scored, or quarantined as
    'no model window covers this reading', which hid the cause."""
    folder = tmp_path / "fleet"
    folder.mkdir()
    for name, step, n_steps in (("a-ok", 10, 400), ("b-fast", 1, 400), ("c-slow", 60, 200)):
        readings, _ = generate_sensor_data(n_entities=1, n_steps=n_steps, step_seconds=step, seed=len(name) + step)
        readings.assign(entity_id=name).to_csv(folder / f"{name}.csv", index=False)
    manifest = run_batch(RunConfig(inputs=(str(folder),), output=str(tmp_path / "out"),
                                   model_dir=str(small_model_dir)), ["--runner=DirectRunner"])
    assert manifest["records_in"] == (400 + 400 + 200) * 4
    assert manifest["records_scored"] == 400 * 4
    assert manifest["stages"]["quarantined.window.sampling_interval"] == manifest["records_quarantined"] == 600 * 4
    quarantine = _read(tmp_path / "out", "quarantine").to_pandas()
    reasons = quarantine.groupby("source")["reason"].unique()
    assert list(reasons[str(folder / "b-fast.csv")]) == [
        "this entity's readings come every 1s here, but the model was trained on readings every 10s: train a model "
        "for this interval, or resample the data"]
    assert list(reasons[str(folder / "c-slow.csv")]) == [
        "this entity's readings come every 60s here, but the model was trained on readings every 10s: train a model "
        "for this interval, or resample the data"]
    assert set(_read(tmp_path / "out", "scores").column("entity_id").to_pylist()) == {"a-ok"}
    assert set(quarantine["reason_code"]) <= set(REASON_CODES)


def test_score_frame_in_a_notebook_gives_the_pipelines_scores(small_model_dir, tmp_path):
    """``Seq2SeqDetector.score_frame`` (no Beam) scores the windows ``seqwatch run`` scores, with the same
    numbers, read back from the scores sink; gaps longer than the model fills split the stretches alike."""
    from seqwatch.models.artifact import load_artifact

    readings, _ = generate_sensor_data(n_entities=2, n_steps=700, seed=21, anomalies_per_entity=2,
                                       kinds=("level_shift", "broken_channel"))
    gap = (readings["entity_id"] == "pump-02") & readings["timestamp"].between(
        readings["timestamp"].min() + pd.Timedelta(seconds=3000), readings["timestamp"].min() + pd.Timedelta(
            seconds=3200))
    readings = readings[~gap]
    path = tmp_path / "readings.csv"
    readings.assign(timestamp=readings["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(path, index=False)
    manifest = run_batch(RunConfig(inputs=(str(path),), output=str(tmp_path / "out"), model_dir=str(small_model_dir),
                                   pane_steps=128), ["--runner=DirectRunner"])
    assert manifest["records_quarantined"] == 0  # score_frame does not validate: compare on readings that pass
    piped = _read(tmp_path / "out", "scores").to_pandas().sort_values(["entity_id", "window_end"])
    frame = load_artifact(str(small_model_dir)).score_frame(readings)
    assert len(frame) == len(piped) > 100
    assert list(frame["entity_id"]) == list(piped["entity_id"])
    assert (frame["window_end"].to_numpy() == piped["window_end"].dt.tz_convert("UTC").to_numpy()).all()
    assert (frame["window_start"].to_numpy() == piped["window_start"].dt.tz_convert("UTC").to_numpy()).all()
    np.testing.assert_allclose(frame["score"], piped["score"], rtol=1e-5)
    assert list(frame["is_anomaly"]) == list(piped["is_anomaly"]) and frame["is_anomaly"].any()
    assert list(frame["severity"]) == list(piped["severity"])
    assert list(frame["top_channel"]) == list(piped["top_channel"])


def test_a_run_whose_output_lies_in_its_input_folder_does_not_read_its_own_outputs(small_model_dir, tmp_path):
    """`seqwatch run --input data --output data/results`, run daily: the second run read the first one's
    Parquet outputs as readings (and stopped at their columns)."""
    readings, _ = generate_sensor_data(n_entities=1, n_steps=300, seed=5)
    data = tmp_path / "data"
    data.mkdir()
    readings.to_csv(data / "pump.csv", index=False)
    (data / "README.md").write_text("exported nightly\n")  # not a CSV or Parquet file: a folder leaves it out
    config = RunConfig(inputs=(str(data),), output=str(data / "results"), model_dir=str(small_model_dir))
    first = run_batch(config, ["--runner=DirectRunner"])
    assert any((data / "results" / "scores").rglob("*.parquet"))
    second = run_batch(config, ["--runner=DirectRunner"])
    assert first["inputs"] == second["inputs"] == [str(data / "pump.csv")]
    assert second["run_id"] == first["run_id"] and second["records_in"] == first["records_in"] == 1200


def test_readings_jittered_around_their_tick_score_as_on_the_tick(small_model_dir, tmp_path):
    """Devices report on the tick with a few ms of jitter either way. A reading 20 ms early used to fall into the
    step before (t // step): a quarter of the steps held two readings (averaged) and as many were empty (filled
    by interpolation), which moved the scores. Each reading now belongs to its nearest step."""
    from seqwatch.models.artifact import load_artifact

    readings, _ = generate_sensor_data(n_entities=1, n_steps=600, seed=8, anomalies_per_entity=1,
                                       kinds=("level_shift",))
    rng = np.random.default_rng(1)
    ticks = readings["timestamp"].drop_duplicates()
    jitter = dict(zip(ticks, pd.to_timedelta(rng.normal(0, 30, len(ticks)).clip(-400, 400).round(), unit="ms")))
    jittered = readings.assign(timestamp=readings["timestamp"] + readings["timestamp"].map(jitter))
    assert (jittered["timestamp"] < readings["timestamp"]).mean() > 0.4
    scores = {}
    for name, frame in (("tick", readings), ("jitter", jittered)):
        path = tmp_path / f"{name}.csv"
        frame.assign(timestamp=frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")).to_csv(path, index=False)
        out = tmp_path / f"out-{name}"
        manifest = run_batch(RunConfig(inputs=(str(path),), output=str(out), model_dir=str(small_model_dir),
                                       pane_steps=128), ["--runner=DirectRunner"])
        assert manifest["records_scored"] == len(frame)
        scores[name] = _read(out, "scores").to_pandas().sort_values("window_end").reset_index(drop=True)
    assert list(scores["jitter"]["window_end"]) == list(scores["tick"]["window_end"])
    np.testing.assert_allclose(scores["jitter"]["score"], scores["tick"]["score"], rtol=1e-6)
    # the same without Beam: the detector grids the frame as the pipeline does
    detector = load_artifact(str(small_model_dir))
    np.testing.assert_allclose(detector.score_frame(jittered)["score"], scores["tick"]["score"], rtol=1e-5)


def test_a_file_out_of_time_order_is_not_refused_for_the_gaps_of_its_first_rows(small_model_dir, tmp_path):
    """Found by a differential bug hunt: the interval check read the first rows of a shuffled file (a scattering
    of its times) and refused readings every 10 s as "every 30s"; the pipeline itself sorts them."""
    from seqwatch.models.synthetic import generate_sensor_data

    readings, _ = generate_sensor_data(n_entities=1, n_steps=6000, seed=3, anomalies_per_entity=0)
    scores = {}
    for name, frame in (("sorted", readings), ("shuffled", readings.sample(frac=1, random_state=0))):
        (tmp_path / name).mkdir()
        frame.to_csv(tmp_path / name / "pump-01.csv", index=False)
        manifest = run_batch(RunConfig(inputs=(str(tmp_path / name),), output=str(tmp_path / f"out-{name}"),
                                       model_dir=str(small_model_dir)), ["--runner=DirectRunner"])
        assert manifest["records_scored"] == manifest["records_in"] == 24_000
        scores[name] = _read(tmp_path / f"out-{name}", "scores").to_pandas().sort_values("window_end")["score"]
    np.testing.assert_allclose(scores["sorted"].to_numpy(), scores["shuffled"].to_numpy(), rtol=1e-6)
    # From a review: a file at the wrong interval with one late reading is still refused before the run
    slower = readings[readings.groupby("channel").cumcount() % 3 == 0].reset_index(drop=True)  # every 30 s
    order = list(range(len(slower)))
    order[0:4], order[4:8] = order[4:8], order[0:4]  # the first time's readings come after the second's
    slower.iloc[order].to_csv(tmp_path / "every30.csv", index=False)
    with pytest.raises(RunError, match=r"was trained on readings every 10s, but every30.csv has readings every 30s"):
        run_batch(RunConfig(inputs=(str(tmp_path / "every30.csv"),), output=str(tmp_path / "out-30"),
                            model_dir=str(small_model_dir)))


def _one_pump_csv(tmp_path) -> Path:
    """``in/pump-01.csv`` under ``tmp_path``: 200 steps of one pump's readings, ISO timestamps (what plan_run reads)."""
    readings, _ = generate_sensor_data(n_entities=1, n_steps=200, step_seconds=10, seed=9)
    path = tmp_path / "in" / "pump-01.csv"
    path.parent.mkdir()
    readings["timestamp"] = readings["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    readings.to_csv(path, index=False)
    return path


def test_a_hand_edited_model_gives_another_run_id(small_model_dir, tmp_path):
    """Found by the bug hunt of the model lifecycle: a threshold edited by hand in metadata.json keeps the model's
    version, so the run id stayed the same while the outputs changed (2 alerts, then none); the run id now takes
    the metadata's bytes too."""
    import shutil

    from seqwatch.pipelines.batch import plan_run

    path = _one_pump_csv(tmp_path)
    model = tmp_path / "model"
    shutil.copytree(small_model_dir, model)
    config = RunConfig(inputs=(str(path),), output=str(tmp_path / "out"), model_dir=str(model))
    before, again = plan_run(config).run_id, plan_run(config).run_id
    metadata = json.loads((model / "metadata.json").read_text())
    metadata["threshold"] = 50.0
    (model / "metadata.json").write_text(json.dumps(metadata))
    assert before == again != plan_run(config).run_id


def test_an_edited_suite_file_gives_another_run_id(small_model_dir, tmp_path):
    """Found by the bug hunt of suites: a suite file edited from max 52 to max 1000 quarantined 463 readings, then
    none, under one run id (the run id took the suite's path only), so the second run's files claimed to be the
    first's; the run id now takes the suite's rules."""
    from seqwatch.pipelines.batch import plan_run
    from seqwatch.schemas.validation import load_suite_dict

    path = _one_pump_csv(tmp_path)
    suite_file = tmp_path / "my_suite.json"
    suite = load_suite_dict("sensor")
    suite_file.write_text(json.dumps(suite))
    config = RunConfig(inputs=(str(path),), output=str(tmp_path / "out"), model_dir=str(small_model_dir),
                       suite=str(suite_file))
    before, again = plan_run(config).run_id, plan_run(config).run_id
    suite["expectations"] = suite["expectations"][1:]
    suite_file.write_text(json.dumps(suite))
    assert before == again != plan_run(config).run_id


def test_the_same_files_spelled_another_way_give_the_same_run_id(small_model_dir, tmp_path, monkeypatch):
    """Found by the bug hunt of outputs and reruns: a cron line's relative paths and a rerun by hand with absolute
    ones gave two run ids, so every row's run_id changed and the rerun said it replaced another run's outputs."""
    from seqwatch.pipelines.batch import _previous_run, plan_run

    _one_pump_csv(tmp_path)
    monkeypatch.chdir(tmp_path)
    from seqwatch.schemas.validation import load_suite_dict

    (tmp_path / "my_suite.json").write_text(json.dumps(load_suite_dict("sensor")))
    relative = RunConfig(inputs=("in/pump-01.csv",), output="out", model_dir=str(small_model_dir),
                         suite="my_suite.json")
    absolute = RunConfig(inputs=(str(tmp_path / "in" / "pump-01.csv"),), output=str(tmp_path / "out"),
                         model_dir=str(small_model_dir), suite=str(tmp_path / "my_suite.json"))
    assert plan_run(relative).run_id == plan_run(absolute).run_id
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text(json.dumps({"run_id": "x", "inputs": ["in/pump-01.csv"]}))
    assert _previous_run("out", "x", [str(tmp_path / "in" / "pump-01.csv")]) is None


def test_a_batch_run_keeps_nothing_in_beams_state_cache(inputs, small_model_dir, tmp_path, monkeypatch):
    """Found by profiling a fleet's run: the in-process runner's SDK caches user state and weighs every value it
    caches by scanning the globals of every loaded module (about 1 ms each once Keras and JAX are loaded). A batch
    run merges alerts and calibrates online after one GroupByKey per entity, not through state: with alerts and
    --online-calibration it weighs nothing (the alert merge's state had been weighed 448 times in a run of 2,000
    entities and 64 incidents)."""
    import apache_beam.runners.worker.statecache as statecache

    weighed = []  # the user state weighed (a side input is weighed once, when it is first read: not counted)
    weigh = statecache.get_deep_size

    def counted(*values):
        frame, owners = sys._getframe(1), set()
        while frame is not None:
            owner = frame.f_locals.get("self")
            owners.add(type(owner).__name__ if owner is not None else "")
            frame = frame.f_back
        if any(name.endswith("RuntimeState") or name == "FnApiUserStateContext" for name in owners):
            weighed.append(type(values[0]).__name__)
        return weigh(*values)

    monkeypatch.setattr(statecache, "get_deep_size", counted)
    folder, _ = inputs
    out = tmp_path / "out"
    manifest = run_batch(RunConfig(inputs=(str(folder / "*.csv"),), output=str(out), model_dir=str(small_model_dir),
                                   mapping=WIDE, pane_steps=256, online_calibration=True), ["--runner=DirectRunner"])
    assert manifest["stages"]["alerts"] >= 2 == len({*_read(out, "alerts").column("entity_id").to_pylist()})
    assert weighed == []
