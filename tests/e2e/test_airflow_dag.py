"""The Airflow DAG in ``deploy/airflow`` run by Airflow itself (``airflow dags test``, Airflow 3 from
``deploy/airflow/requirements.lock`` in ``.tools/airflow``, made by ``make airflow``, which ``make test`` runs) on
generated days of pump files: a Saturday's run scores Friday and skips the fine-tuning; the Sunday's run scores
Saturday, then fine-tunes the model on both days minus what the two nights alerted on, as a new version of the
model root; and the same DAG with its data, results and model root on S3 and on GCS (emulators). The seqwatch
commands are the real CLI of this checkout; the outputs are read back with pyarrow."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from seqwatch.models.artifact import load_artifact, model_versions
from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.retraining import alert_spans, leave_out_alerted

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = REPO / ".tools" / "airflow" / "bin" / "airflow"
SEQWATCH = Path(sys.executable).parent / "seqwatch"
STEP_SECONDS = 10  # the session model's interval (tests/conftest.py)
STEPS_PER_DAY = 600  # each "day" holds 100 minutes of readings per entity: enough windows, quick to score


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
    if not AIRFLOW.is_file():
        pytest.skip(f"Airflow is not installed at {AIRFLOW} (run `make airflow`; it needs PyPI)")
    home = tmp_path_factory.mktemp("airflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "deploy" / "airflow"),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW_VAR_SEQWATCH_BIN=str(SEQWATCH),
               AIRFLOW_VAR_SEQWATCH_DATA=str(home / "data"), AIRFLOW_VAR_SEQWATCH_RESULTS=str(home / "results"),
               AIRFLOW_VAR_SEQWATCH_MODEL_ROOT=str(home / "models" / "pumps"),
               AIRFLOW_VAR_SEQWATCH_FINE_TUNE_DAYS="2",
               SEQWATCH_RETRY_DELAY_MINUTES="0")  # a failed scoring is retried at once, not after 10 minutes
    migrate = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    return home, env


def _airflow(env: dict, *command: str, succeeds: bool = True) -> str:
    """``airflow <command>`` on the DAG (``dags test <date>``: a whole DAG run; ``tasks test <task> <date>``: one
    task), which must succeed or fail as ``succeeds`` says; its log."""
    run = subprocess.run([str(AIRFLOW), *command[:2], "seqwatch_nightly", *command[2:]], env=env,
                         capture_output=True, text=True, timeout=600)
    log = run.stdout + run.stderr
    assert (run.returncode == 0) == succeeds, log[-5000:]
    return log


def test_a_failed_scoring_is_retried_once_and_fails_the_run_without_fine_tuning(airflow_env, small_model_dir):
    """The DAG's docstring: a seqwatch run that exits 2 (here: the night's folder is missing) is retried once, the
    DAG run fails and the fine-tuning does not run. With the DAG's 10-minute retry delay ``airflow dags test`` had
    waited out the delay, so a failing task took the test to its 600 s timeout; the test sets the delay to 0
    (``SEQWATCH_RETRY_DELAY_MINUTES``)."""
    home, env = airflow_env
    root = home / "models" / "retried"  # a model root of its own: the other test writes versions into its own
    shutil.copytree(small_model_dir, root / "v1")
    log = _airflow({**env, "AIRFLOW_VAR_SEQWATCH_MODEL_ROOT": str(root)}, "dags", "test", "2026-12-06",
                   succeeds=False)
    tries = [line for line in log.splitlines() if "seqwatch run:" in line]  # a Sunday whose Saturday has no folder
    assert len(tries) == 2 and all("2026-12-05" in line for line in tries), tries
    assert "DagRun failed" in log
    assert "fine-tuning on" not in log and [p.name for p in model_versions(root)] == ["v1"]


@pytest.mark.slow
def test_nightly_scoring_and_sunday_fine_tuning_under_airflow(airflow_env, small_model_dir, wide_csv):
    home, env = airflow_env
    root = home / "models" / "pumps"
    shutil.copytree(small_model_dir, root / "v1")
    days = {}
    for n, day in enumerate(("2026-11-27", "2026-11-28")):  # a Friday and a Saturday, with anomalies
        readings, labels = generate_sensor_data(n_entities=2, n_steps=STEPS_PER_DAY, step_seconds=STEP_SECONDS,
                                                anomalies_per_entity=1, seed=300 + n,
                                                start=pd.Timestamp(day, tz="UTC"))
        for entity, part in readings.groupby("entity_id"):
            wide_csv(part, home / "data" / day / f"{entity}.csv")
        days[day] = readings

    # Saturday 2026-11-28 02:15: Friday's files are scored; it is not a Sunday, so no fine-tuning.
    saturday = _airflow(env, "dags", "test", "2026-11-28")
    assert f"{home}/data/2026-11-27/*.csv" in saturday  # the rendered command read yesterday's folder
    assert [p.name for p in model_versions(root)] == ["v1"]
    assert "fine-tuning on" not in saturday

    # Sunday 2026-11-29: Saturday's files are scored, then the model is fine-tuned on the two days minus the
    # readings inside the two nights' alerts, into a new version that the root now stands for.
    sunday = _airflow(env, "dags", "test", "2026-11-29")
    for day in days:
        out = home / "results" / day
        assert (out / "manifest.json").is_file() and pq.read_table(out / "scores").num_rows > 0
    spans = pd.concat([alert_spans(home / "results" / day) for day in days], ignore_index=True)
    assert len(spans) >= 2  # each day holds two anomalies; the nights alerted on them
    readings = pd.concat(days.values(), ignore_index=True)
    kept, left_out = leave_out_alerted(readings, spans)
    assert left_out > 0
    assert (f"fine-tuning on {len(kept)} readings from 4 file(s) (0 rejected readings skipped, {left_out} inside "
            f"alerts left out)") in sunday
    assert [p.name for p in model_versions(root)] == ["v1", "20261129"]
    new, old = load_artifact(root), load_artifact(root / "v1")
    assert new.metrics["fine_tunes"] == 1 and new.model_version != old.model_version
    assert new.channels == old.channels and new.config.window == old.config.window

    # A rerun of the Sunday's fine-tuning (a cleared task, a backfill) leaves that version alone instead of
    # fine-tuning it a second time.
    written = (root / "20261129" / "metadata.json").stat().st_mtime_ns
    again = _airflow(env, "tasks", "test", "fine_tune", "2026-11-29")
    assert f"--model-dir {root}/20261129 holds a model already; it is left as it is (--skip-existing)" in again
    assert "fine-tuning on" not in again
    assert [p.name for p in model_versions(root)] == ["v1", "20261129"]
    assert (root / "20261129" / "metadata.json").stat().st_mtime_ns == written

    # An earlier day's fine-tuning run by hand (a cleared task of a Sunday whose fine-tuning had failed) reads
    # readings that end before the newest version's: it writes no version (--skip-stale). Its version had become
    # the newest, one fine-tuned last on older readings, which every later run used.
    past = _airflow(env, "tasks", "test", "fine_tune", "2026-11-28")
    assert (f"seqwatch train: the model of --warm-start {root} (version {new.model_version}) was trained on "
            f"readings up to 2026-11-28T01:39:50+00:00, and these end at 2026-11-27T01:39:50+00:00: a version "
            f"fine-tuned on them would become the newest with older readings; no version is written (--skip-stale)"
            ) in past
    assert "fine-tuning on" not in past
    assert [p.name for p in model_versions(root)] == ["v1", "20261129"]
    # A past day without files or without a scored night is left out with a note: the DAG on S3, below.


@pytest.fixture(params=["s3", "gcs"])
def dag_store(request):
    """The store the DAG's folders lie on and the environment that reaches it from Airflow's tasks: S3 (moto's
    server; seqwatch finds it through ``AWS_ENDPOINT_URL``, as boto3 does) or GCS (gcp-storage-emulator and a
    stand-in for a Compute Engine metadata server, as Cloud Composer's workers have one; ``STORAGE_EMULATOR_HOST``)."""
    if request.param == "s3":
        store = request.getfixturevalue("s3_store")
        return store, {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": store.endpoint}
    store = request.getfixturevalue("gcs_store")
    return store, store.variables


@pytest.mark.slow
def test_the_dag_on_a_store_scores_and_fine_tunes_on_the_days_that_were_scored(airflow_env, dag_store,
                                                                              small_model_dir, wide_csv, tmp_path):
    """Data, results and model root on S3 or GCS. The DAG's fine-tuning had looked for the past days with bash, in
    local folders only, and failed there; ``seqwatch train --scored-only`` looks for them itself. Sunday 2026-11-29
    with three past days: Saturday's files are scored by this DAG run, Friday's came but the scheduler was down
    that night (no results), Thursday had none. The fine-tuning reads Saturday's files alone, says what it left
    out, and writes a version on the store; a rerun of the task leaves that version as it is."""
    home, env = airflow_env
    store, reach = dag_store
    prefix = f"airflow-{tmp_path.name}"
    for day, seed in (("2026-11-27", 320), ("2026-11-28", 321)):
        readings, _ = generate_sensor_data(n_entities=2, n_steps=STEPS_PER_DAY, step_seconds=STEP_SECONDS,
                                           anomalies_per_entity=1, seed=seed, start=pd.Timestamp(day, tz="UTC"))
        for entity, part in readings.groupby("entity_id"):
            wide_csv(part, tmp_path / "data" / day / f"{entity}.csv")
    data = store.put_folder(tmp_path / "data", f"{prefix}/data")
    root = store.put_folder(small_model_dir, f"{prefix}/models/pumps/v1").rsplit("/", 1)[0]
    results = store.url(f"{prefix}/results")
    on_store = {**{k: v for k, v in env.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}, **reach,
                "AIRFLOW_VAR_SEQWATCH_DATA": data, "AIRFLOW_VAR_SEQWATCH_RESULTS": results,
                "AIRFLOW_VAR_SEQWATCH_MODEL_ROOT": root, "AIRFLOW_VAR_SEQWATCH_FINE_TUNE_DAYS": "3"}
    sunday = _airflow(on_store, "dags", "test", "2026-11-29")
    saturday = store.keys(f"{prefix}/results/2026-11-28")
    assert "manifest.json" in saturday and not store.keys(f"{prefix}/results/2026-11-27")
    scores = pq.read_table(f"{store.BUCKET}/{prefix}/results/2026-11-28/scores", filesystem=store.fs)
    assert scores.num_rows > 0
    for line in (f"--input {data}/2026-11-26/*.csv is left out: no input file matches '{data}/2026-11-26/*.csv'",
                 f"--exclude-alerts {results}/2026-11-26 is left out: it holds no seqwatch run's output",
                 f"--exclude-alerts {results}/2026-11-27 is left out: it holds no seqwatch run's output",
                 f"2 of the 4 training file(s) are left out: no run given with --exclude-alerts read them as they are "
                 f"now (first: {data}/2026-11-27/pump-01.csv: its day was not scored"):
        assert line in sunday, (line, sunday[-5000:])
    assert re.search(r"fine-tuning on \d+ readings from 2 file\(s\) \(0 rejected readings skipped, [1-9]\d* inside "
                     r"alerts left out\)", sunday), sunday[-5000:]
    version = store.keys(f"{prefix}/models/pumps/20261129")
    assert "metadata.json" in version and "model.keras" in version
    written = store.updated(f"{prefix}/models/pumps/20261129/metadata.json")

    log = _airflow(on_store, "tasks", "test", "fine_tune", "2026-11-29")
    assert f"--model-dir {root}/20261129 holds a model already; it is left as it is (--skip-existing)" in log
    assert "fine-tuning on" not in log
    assert store.keys(f"{prefix}/models/pumps/20261129") == version
    assert store.updated(f"{prefix}/models/pumps/20261129/metadata.json") == written


def test_a_backfill_rescores_past_nights_and_does_not_fine_tune(tmp_path):
    """A backfill's Sunday had fine-tuned too: its version continued the newest and became the newest, which every
    later run then used (the DAG's docstring had said "do not backfill"). The DAG's ``on_sundays`` step now lets a
    Sunday of a backfill (``dag_run.run_type`` "backfill") go no further; scheduled and manual runs fine-tune (a
    manual Sunday does in the test above). The step's function is called in Airflow's own Python: ``airflow dags
    test`` makes manual runs only, and a backfill needs a scheduler."""
    if not AIRFLOW.is_file():
        pytest.skip(f"Airflow is not installed at {AIRFLOW} (run `make airflow`; it needs PyPI)")
    script = ("import seqwatch_dag as dag\n"
              "for ds, run_type in (('2026-11-29', 'scheduled'), ('2026-11-29', 'manual'), ('2026-11-29', 'backfill'),"
              " ('2026-11-28', 'scheduled')):\n"
              "    print(ds, run_type, dag.fine_tunes(ds, run_type))\n"
              "print(dag.nightly.get_task('on_sundays').op_kwargs)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    run = subprocess.run([str(AIRFLOW.parent / "python"), "-c", script], capture_output=True, text=True, timeout=120,
                         env={**env, "AIRFLOW_HOME": str(tmp_path), "PYTHONPATH": str(REPO / "deploy" / "airflow")})
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[:5] == ["2026-11-29 scheduled True", "2026-11-29 manual True",
                         "fine-tuning: 2026-11-29 is a Sunday of a backfill, which re-scores past nights only; no new "
                         "version", "2026-11-29 backfill False", "2026-11-28 scheduled False"], run.stdout
    assert lines[5] == "{'ds': '{{ ds }}', 'run_type': '{{ dag_run.run_type }}'}"
