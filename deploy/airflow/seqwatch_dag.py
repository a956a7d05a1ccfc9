"""Airflow 3 example: every night, score yesterday's files; on Sundays, once that night's scoring has succeeded,
fine-tune the model on the past week's readings minus what the nightly runs alerted on, as a new version of the
model root that the next run uses.

Run for real by ``tests/e2e/test_airflow_dag.py`` (``airflow dags test``, Airflow from
``deploy/airflow/requirements.lock``, installed by ``make airflow``) on generated files: a weekday's run scores and
skips the fine-tuning, a Sunday's run scores and writes a new model version. The tasks only call the seqwatch CLI,
whose exit code is 0 on success and 2 with one sentence on stderr for a bad input, a missing file or a model that
does not fit the data; Airflow then retries the scoring once and the fine-tuning does not run. The scoring also
fails (exit code 3, its outputs written) when more than half of a night's readings were quarantined
(``--max-quarantined-share 0.5``): an export that changed its format upstream is then an alert, not a quiet night.

Where things are comes from Airflow Variables, read when a task runs (set them in the UI, with ``airflow variables
set``, or as ``AIRFLOW_VAR_SEQWATCH_BIN`` and so on in the environment), with the defaults below:

- ``seqwatch_bin``: the seqwatch command of the installation that runs the jobs;
- ``seqwatch_data``: one folder per day (``2026-11-28/``) of wide CSV files, one per entity;
- ``seqwatch_results``: one output folder per day, written by the nightly run (alerts, scores, forecasts);
- ``seqwatch_model_root``: a model root, one sub-folder per version, the newest counts (``seqwatch train`` writes
  a version's metadata last, so a half-written one is never used);
- ``seqwatch_fine_tune_days``: how many past days the Sunday fine-tuning reads (7).

A failed scoring is retried after ``SEQWATCH_RETRY_DELAY_MINUTES`` (10), read from the environment when the DAG file
is parsed (the test sets 0: ``airflow dags test`` waits out a retry delay).

The folders may be local or on an object store (``s3://``, ``gs://``; the test runs the DAG on S3 and GCS
emulators too): the tasks only call seqwatch, which reads and writes there.

The fine-tuning reads the past days that were scored (``seqwatch train --scored-only``) and says in the log what it
left out: a day without files, one the nightly run did not score because the scheduler was down (``catchup`` is
off), and a file that arrived after its night's run (its anomalies were never scored; found by the bug hunt of
deploy examples, as was a missing day, which had failed the week's fine-tuning). Where no past day is left (not
reached while that night's scoring runs first and must succeed), the task fails with one line and writes no version.
A rerun of the fine-tuning leaves that day's complete version alone (``--skip-existing``). A backfill
(``airflow backfill create``) re-scores past nights and does not fine-tune: a past Sunday's version would become
the newest, which every later run then uses. A past Sunday run by hand (``airflow dags trigger`` or ``dags test``
with its date, a cleared task) fine-tunes only when its readings end after those of the newest version
(``--skip-stale``): one whose fine-tuning had failed, run again after a later Sunday's succeeded, writes no
version (until 2026-12-06 it did, and its version, of older readings, became the newest).

The schedule is a ``CronTriggerTimetable``: a run's ``ds`` is the day it runs, so "yesterday" is
``macros.ds_add(ds, -1)`` (Airflow 2's default cron timetable made ``ds`` the day before; Airflow 3's does not).
"""
import os
from datetime import date, datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, CronTriggerTimetable

# How long Airflow waits before it retries a failed scoring (read when the DAG file is parsed, so it comes from the
# environment of the scheduler and workers, not from a Variable).
RETRY_DELAY_MINUTES = float(os.environ.get("SEQWATCH_RETRY_DELAY_MINUTES", "10"))
SEQWATCH = "{{ var.value.get('seqwatch_bin', '/srv/seqwatch/.venv/bin/seqwatch') }}"
DATA = "{{ var.value.get('seqwatch_data', '/data/plant') }}"
RESULTS = "{{ var.value.get('seqwatch_results', '/results') }}"
MODEL_ROOT = "{{ var.value.get('seqwatch_model_root', '/models/pumps') }}"
YESTERDAY = "{{ macros.ds_add(ds, -1) }}"

# The past days, each day's files as an --input and that night's run over them as an --exclude-alerts.
# --scored-only leaves out, with a note in the log, a day without files, a day whose night was not scored (the
# scheduler was down: catchup is off) and a file that came after its night's run (a missing day had failed the
# week's fine-tuning: found by the bug hunt of deploy examples); seqwatch looks for them itself, so the days may lie
# on an object store. --skip-existing makes the task idempotent: when this day's version is complete (its
# metadata.json, written last, is there) a rerun leaves it alone; otherwise --warm-start would fine-tune that
# version a second time. --skip-stale: a past day's fine-tuning run by hand after a later one writes no version
# when its readings end no later than the newest version's (its version would become the newest).
PAST_DAYS = ("{% for d in range(1, var.value.get('seqwatch_fine_tune_days', '7') | int + 1) %}"
             "{{ macros.ds_add(ds, -d) }} {% endfor %}")
FINE_TUNE = (f"args=(); for day in {PAST_DAYS}; do "
             f"args+=(--input '{DATA}/'$day'/*.csv' --exclude-alerts '{RESULTS}/'$day); done; "
             f"{SEQWATCH} train --warm-start {MODEL_ROOT} --format wide --scored-only --skip-existing --skip-stale "
             f"\"${{args[@]}}\" --model-dir {MODEL_ROOT}/{{{{ ds_nodash }}}}")


def fine_tunes(ds: str, run_type: str) -> bool:
    """Whether this DAG run fine-tunes after the night's scoring: on Sundays, except in a backfill. A backfill
    re-scores past nights only: a past Sunday's fine-tuning would continue the newest version, and its own would
    become the newest, which every later run then uses (listed as a limit until 2026-12-06)."""
    if date.fromisoformat(ds).weekday() != 6:
        return False
    if run_type == "backfill":  # DagRunType.BACKFILL_JOB
        print(f"fine-tuning: {ds} is a Sunday of a backfill, which re-scores past nights only; no new version")
        return False
    return True


with DAG("seqwatch_nightly", start_date=datetime(2026, 1, 1),
         schedule=CronTriggerTimetable("15 2 * * *", timezone="UTC"), catchup=False, max_active_runs=1) as nightly:
    score = BashOperator(
        task_id="score",
        # --alert-cooldown: a pump whose score flaps raises one alert, not one per anomalous spell, unless it
        # stays quiet for half an hour.
        bash_command=(f"{SEQWATCH} run --input '{DATA}/{YESTERDAY}/*.csv' --format wide "
                      f"--model-dir {MODEL_ROOT} --output {RESULTS}/{YESTERDAY} --alert-cooldown 1800 "
                      f"--max-quarantined-share 0.5"),
        retries=1, retry_delay=timedelta(minutes=RETRY_DELAY_MINUTES),
    )
    on_sundays = ShortCircuitOperator(task_id="on_sundays", python_callable=fine_tunes,
                                      op_kwargs={"ds": "{{ ds }}", "run_type": "{{ dag_run.run_type }}"})
    fine_tune = BashOperator(task_id="fine_tune", bash_command=FINE_TUNE)
    score >> on_sundays >> fine_tune
