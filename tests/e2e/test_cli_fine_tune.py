"""``seqwatch train --warm-start``: a scheduled job fine-tunes the deployed model on recent readings, minus the
stretches a run alerted on, and writes a new version into the model root that running jobs switch to."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from seqwatch.models.artifact import load_artifact, model_versions
from seqwatch.models.synthetic import generate_sensor_data

STEP_SECONDS = 10  # the sampling interval of the session model (tests/conftest.py)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_fine_tune_on_recent_readings_leaving_out_alerted_stretches(small_model_dir, wide_csv, tmp_path):
    root = tmp_path / "models" / "pumps"
    shutil.copytree(small_model_dir, root / "v1")
    recent, labels = generate_sensor_data(n_entities=2, n_steps=1500, step_seconds=STEP_SECONDS,
                                          anomalies_per_entity=2, seed=202)
    for entity, part in recent.groupby("entity_id"):
        wide_csv(part, tmp_path / "recent" / f"{entity}.csv")
    inputs = str(tmp_path / "recent" / "*.csv")
    run = _cli("run", "--input", inputs, "--format", "wide", "--model-dir", str(root), "--output",
               str(tmp_path / "out"))
    assert run.returncode == 0, run.stderr[-2000:]
    alerts = pd.concat([pq.read_table(p).to_pandas() for p in (tmp_path / "out" / "alerts").rglob("*.parquet")])
    assert len(alerts) >= 2

    result = _cli("train", "--warm-start", str(root), "--input", inputs, "--format", "wide",
                  "--exclude-alerts", str(tmp_path / "out"), "--model-dir", str(root / "v2"), "--epochs", "3")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "were not read as they are now" not in result.stderr  # every training file was scored by that run
    summary = json.loads(result.stdout)

    # Readings inside an alert of their entity, counted here one alert at a time; overlapping alerts count a
    # reading once.
    covered = set()
    for a in alerts.itertuples():
        part = recent[(recent["entity_id"] == a.entity_id)]
        part = part[(part["timestamp"] >= a.start) & (part["timestamp"] <= a.end)]
        covered.update(zip(part["entity_id"], part["channel"], part["timestamp"]))
    assert summary["left_out_in_alerts"] == len(covered) > 0
    assert f"{len(covered)} inside alerts left out" in result.stderr
    assert "fine-tuning" in result.stderr and "epoch   1" in result.stderr

    old, new = load_artifact(root / "v1"), load_artifact(root)
    assert [p.name for p in model_versions(root)] == ["v1", "v2"]  # the root now stands for the new version
    assert summary["model_version"] == new.model_version != old.model_version
    assert summary["fine_tunes"] == new.metrics["fine_tunes"] == 1
    assert new.scaler == old.scaler and new.channels == old.channels and new.step_us == old.step_us
    assert new.config.architecture == old.config.architecture and new.config.window == old.config.window
    assert new.config.training.epochs == 3 and len(new.history["loss"]) <= 3
    windows = np.zeros((2, new.window_length, len(new.channels))) + np.asarray(old.scaler.mean)
    assert not np.array_equal(new.score_windows(windows).score, old.score_windows(windows).score)

    # With held-out readings (here one entity's recent file again) their alerted stretches are left out too, and
    # they give the validation and calibration parts.
    entity = sorted(recent["entity_id"].unique())[1]
    held = _cli("train", "--warm-start", str(root / "v1"), "--input", inputs, "--format", "wide",
                "--holdout-input", str(tmp_path / "recent" / f"{entity}.csv"), "--exclude-alerts", str(tmp_path / "out"),
                "--model-dir", str(tmp_path / "v3"), "--epochs", "1")
    assert held.returncode == 0, held.stderr[-2000:]
    held_summary = json.loads(held.stdout)
    in_holdout = {c for c in covered if c[0] == entity}
    assert held_summary["left_out_in_alerts"] == len(covered) + len(in_holdout)
    held_entity = recent[recent["entity_id"] == entity]
    assert held_summary["holdout_readings"] == len(held_entity) - len(in_holdout)
    windows_used = load_artifact(tmp_path / "v3").metrics["windows"]
    assert windows_used["validation"] == windows_used["calibration"] > 20


@pytest.mark.slow
def test_fine_tune_errors_are_one_sentence(small_model_dir, wide_csv, tmp_path, cli_cases):
    readings, _ = generate_sensor_data(n_entities=1, n_steps=300, step_seconds=STEP_SECONDS, seed=3)
    wide_csv(readings, tmp_path / "recent" / "pump-01.csv")
    wide_csv(readings.assign(channel=readings["channel"].str.upper()), tmp_path / "upper" / "pump-01.csv")
    base = ["train", "--input", str(tmp_path / "recent" / "*.csv"), "--format", "wide", "--model-dir",
            str(tmp_path / "m")]
    cases = [
        (base + ["--warm-start", str(small_model_dir), "--units", "8", "--window", "32"],
         "--warm-start continues the model's own architecture and window, so --units, --window cannot be given"),
        (base + ["--exclude-alerts", str(tmp_path)], "--exclude-alerts applies to --warm-start"),
        (base + ["--warm-start", str(small_model_dir), "--scored-only"],
         "--scored-only keeps the files the runs given with --exclude-alerts scored, and none is given"),
        (base + ["--warm-start", str(small_model_dir), "--scored-only", "--exclude-alerts", str(tmp_path / "none")],
         "--scored-only left no file to fine-tune on: no run given with --exclude-alerts read any file of --input as "
         "it is now (the notes above say what was left out); no version was written"),
        (base + ["--skip-stale"], "--skip-stale compares the readings of a fine-tuning with those of the model it "
                                  "continues: give --warm-start too"),
        (base + ["--warm-start", str(tmp_path / "nomodel")], "does not exist"),
        (base + ["--warm-start", str(small_model_dir), "--exclude-alerts", str(tmp_path / "recent")],
         "is not the output folder of a seqwatch run"),
        (base + ["--warm-start", str(small_model_dir), "--channel", "flow"],
         "--warm-start continues a model of channels"),
        (["train", "--input", str(tmp_path / "upper"), "--format", "wide", "--model-dir", str(tmp_path / "m"),
          "--warm-start", str(small_model_dir)],
         "its columns look like the model's under other names ('FLOW' for 'flow', 'PRESSURE' for 'pressure', "
         "'TEMPERATURE' for 'temperature', 'VIBRATION' for 'vibration'): a --mapping file {\"channels\": {\"FLOW\": "
         "\"flow\", \"PRESSURE\": \"pressure\", \"TEMPERATURE\": \"temperature\", \"VIBRATION\": \"vibration\"}} "
         "reads them as the model's channels"),
    ]
    for (args, message), (code, stderr) in zip(cases, cli_cases([args for args, _ in cases]), strict=True):
        assert code == 2, (args, stderr[-2000:])
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert message in lines[-1], (args, stderr[-2000:])
        assert "Traceback" not in stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_lifecycle_mistakes_are_refused_or_noted(small_model_dir, tmp_path, cli_cases):
    """Found by the bug hunt of the model lifecycle:
    - a version trained inside an artifact (the first model trained straight into the DAG's model root) was
      written, and no run ever used it: a run of that folder scores with the artifact itself;
    - --model-id with --warm-start was ignored without a word;
    - a fine-tuning whose input holds an entity without one of the model's channels said nothing of it (a first
      training notes it)."""
    artifact = tmp_path / "pumps"
    shutil.copytree(small_model_dir, artifact)
    recent, _ = generate_sensor_data(n_entities=3, n_steps=700, step_seconds=STEP_SECONDS, seed=31)
    recent = recent[~((recent["entity_id"] == "pump-03") & (recent["channel"] == "vibration"))].copy()
    recent["timestamp"] = recent["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    (tmp_path / "recent").mkdir()
    recent.to_csv(tmp_path / "recent" / "long.csv", index=False)
    inputs = str(tmp_path / "recent" / "long.csv")
    (inside, inside_err), (renamed, renamed_err), (tuned, tuned_err) = cli_cases([
        ["train", "--warm-start", str(artifact), "--input", inputs, "--model-dir", str(artifact / "2026-03"),
         "--epochs", "1"],
        ["train", "--warm-start", str(artifact), "--input", inputs, "--model-id", "fleet", "--model-dir",
         str(tmp_path / "v2"), "--epochs", "1"],
        ["train", "--warm-start", str(artifact), "--input", inputs, "--model-dir", str(tmp_path / "v3"),
         "--epochs", "1"]])
    assert inside == 2 and inside_err.strip().splitlines()[-1] == (
        f"seqwatch train: --model-dir {artifact / '2026-03'} lies inside the model artifact {artifact}: a run of "
        f"--model-dir {artifact} scores with that artifact and never sees a version inside it; keep versions side by "
        f"side in a model root (move {artifact} to {artifact / 'v1'}, then train into {artifact / '2026-03'})")
    assert not (artifact / "2026-03").exists()
    assert renamed == 2 and "--model-id fleet differs from the model id 'test-pumps' of --warm-start" in renamed_err
    assert tuned == 0, tuned_err[-2000:]
    assert "note: entity 'pump-03' (no 'vibration') did not report every channel of the model" in tuned_err


def test_skip_stale_writes_no_version_from_readings_older_than_the_models(small_model_dir, wide_csv, tmp_path,
                                                                          cli_cases):
    """``--skip-stale`` (the Airflow DAG's and cron's Sunday fine-tuning): a past Sunday's fine-tuning run again by
    hand after a later Sunday's had continued the newest version on older readings, and its version had become the
    newest. Readings that end after the model's fine-tune; readings that end no later write no version and exit 0;
    a model that does not say when its readings end (saved by an older seqwatch) is fine-tuned, with a note."""
    root = tmp_path / "pumps"
    shutil.copytree(small_model_dir, root / "v1")
    trained_to = load_artifact(root).readings_span_us[1]
    for name, days in (("newer", 30), ("older", 29)):  # two days after the model's readings, the second a day older
        start = pd.Timestamp(trained_to, unit="us", tz="UTC") + pd.Timedelta(days=days)
        readings, _ = generate_sensor_data(n_entities=1, n_steps=900, step_seconds=STEP_SECONDS, seed=days, start=start)
        wide_csv(readings, tmp_path / name / "pump-01.csv")
    legacy = tmp_path / "legacy" / "v1"  # the model without its span, as an older seqwatch saved it
    shutil.copytree(small_model_dir, legacy)
    metadata = json.loads((legacy / "metadata.json").read_text())
    del metadata["readings_span_us"]
    (legacy / "metadata.json").write_text(json.dumps(metadata))

    def fine_tune(model: Path, days: str, version: str) -> list:
        return ["train", "--warm-start", str(model), "--input", str(tmp_path / days), "--format", "wide",
                "--model-dir", str(model / version), "--epochs", "1", "--skip-stale"]

    (newer, newer_err), (older, older_err), (same, same_err), (legacy_code, legacy_err) = cli_cases([
        fine_tune(root, "newer", "20261206"), fine_tune(root, "older", "20261129"),
        fine_tune(root, "newer", "again"), fine_tune(legacy.parent, "older", "20261129")])
    assert newer == 0, newer_err[-2000:]
    tuned = load_artifact(root)
    ends = pd.Timestamp(trained_to, unit="us", tz="UTC") + pd.Timedelta(days=30, seconds=STEP_SECONDS * 899)
    assert tuned.readings_span_us == (load_artifact(root / "v1").readings_span_us[0], int(ends.value // 1000))
    for code, stderr, shown in ((older, older_err, ends - pd.Timedelta(days=1)), (same, same_err, ends)):
        assert code == 0, stderr[-2000:]
        assert stderr.strip().splitlines()[-1] == (
            f"seqwatch train: the model of --warm-start {root} (version {tuned.model_version}) was trained on "
            f"readings up to {ends.isoformat()}, and these end at {shown.isoformat()}: a version fine-tuned on them "
            f"would become the newest with older readings; no version is written (--skip-stale)")
        assert "fine-tuning on" not in stderr
    assert [p.name for p in model_versions(root)] == ["v1", "20261206"]
    assert not (root / "20261129").exists() and not (root / "again").exists()
    assert legacy_code == 0, legacy_err[-2000:]
    assert (f"note: the model of --warm-start {legacy.parent} does not say when its training readings end (it was "
            f"saved by an older seqwatch), so --skip-stale cannot compare them; fine-tuning") in legacy_err
    assert [p.name for p in model_versions(legacy.parent)] == ["v1", "20261129"]


def test_training_files_the_excluded_runs_did_not_score_are_named(tmp_path, monkeypatch):
    """Found by the bug hunt of deploy examples: a file that arrived after its day's run went into the Sunday
    fine-tuning whole, its level shift with it, and --exclude-alerts said nothing (its anomalies were never scored,
    so none was left out)."""
    from seqwatch.pipelines.batch import _sha256_file
    from seqwatch.pipelines.retraining import unscored_inputs

    day = tmp_path / "data"
    day.mkdir()
    for name in ("a.csv", "b.csv", "c.csv"):
        (day / name).write_text(f"{name}\n")
    out = tmp_path / "results"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({
        "run_id": "run-1", "records_in": 2, "inputs": [str(day / "a.csv"), str(day / "c.csv")],
        "input_digests": {str(day / "a.csv"): _sha256_file(str(day / "a.csv")), str(day / "c.csv"): "0" * 64}}))
    paths = [str(day / n) for n in ("a.csv", "b.csv", "c.csv")]
    assert unscored_inputs(paths, [str(out)]) == [str(day / "b.csv"), str(day / "c.csv")]  # late; changed since
    stream = tmp_path / "stream"
    (stream / "counts").mkdir(parents=True)
    assert unscored_inputs(paths, [str(out), str(stream)]) is None  # a stream records no inputs: no verdict
    # A run started in tmp_path with a relative --input, and a training started elsewhere: the run's files are
    # named from its working folder (they had all been taken for files the run never read).
    relative = tmp_path / "relative"
    relative.mkdir()
    (relative / "manifest.json").write_text(json.dumps({
        "run_id": "run-2", "working_dir": str(tmp_path), "inputs": ["data/a.csv"],
        "input_digests": {"data/a.csv": _sha256_file(str(day / "a.csv"))}}))
    monkeypatch.chdir(day)
    assert unscored_inputs([str(day / "a.csv"), str(day / "b.csv")], [str(relative)]) == [str(day / "b.csv")]


def test_scored_only_keeps_the_files_the_given_runs_read(tmp_path):
    """``seqwatch train --scored-only`` (the Airflow example's Sunday fine-tuning over the past days, which it had
    looked for with bash, in local folders only): a day without files, a day whose night was not scored and a file
    that came after its night's run are left out, each with a note; a stream's folder is refused."""
    from seqwatch.pipelines.batch import _sha256_file
    from seqwatch.pipelines.retraining import scored_inputs

    data, results = tmp_path / "data", tmp_path / "results"
    for day, names in (("fri", ("a.csv", "b.csv")), ("sat", ("a.csv",))):
        (data / day).mkdir(parents=True)
        for name in names:
            (data / day / name).write_text(f"{day} {name}\n")
    (results / "fri").mkdir(parents=True)  # Friday's run read a.csv; b.csv came after it
    scored = str(data / "fri" / "a.csv")
    (results / "fri" / "manifest.json").write_text(json.dumps({
        "run_id": "fri", "inputs": [scored], "input_digests": {scored: _sha256_file(scored)}}))
    (results / "sat").mkdir()  # Saturday's night was not scored (its folder is empty); Thursday has no files
    days = ("thu", "fri", "sat")
    kept = scored_inputs([str(data / day / "*.csv") for day in days], [str(results / day) for day in days])
    assert kept.files == [scored] and kept.runs == [str(results / "fri")]
    assert kept.notes == [
        f"--exclude-alerts {results / 'thu'} is left out: it holds no seqwatch run's output (no manifest.json: its "
        f"run did not score, or failed before it wrote anything)",
        f"--exclude-alerts {results / 'sat'} is left out: it holds no seqwatch run's output (no manifest.json: its "
        f"run did not score, or failed before it wrote anything)",
        f"--input {data / 'thu' / '*.csv'} is left out: no input file matches {str(data / 'thu' / '*.csv')!r}",
        f"2 of the 3 training file(s) are left out: no run given with --exclude-alerts read them as they are now "
        f"(first: {data / 'fri' / 'b.csv'}: its day was not scored, or it came after its day's run, or changed "
        f"since), so their anomalies were never scored"]
    nothing = scored_inputs([str(data / "sat" / "*.csv")], [str(results / "sat")])
    assert nothing.files == [] and nothing.runs == [] and len(nothing.notes) == 2
    (results / "stream" / "counts").mkdir(parents=True)
    with pytest.raises(ValueError, match="is a stream's, which does not record the files it read"):
        scored_inputs([str(data / "fri" / "*.csv")], [str(results / "stream")])
