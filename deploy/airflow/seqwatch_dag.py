"""Airflow example: score yesterday's files every night; every week, fine-tune the model on the week's readings
minus what the nightly runs alerted on, as a new version of the model root that the next run uses.

Not run here (no Airflow on the development machines), but ``tests/e2e/test_deploy_examples.py`` renders every
command below with Airflow's template values and checks it against seqwatch's command line. The tasks only call
the seqwatch CLI, whose exit code is 0 on success and 2 with one sentence on stderr for a bad input, a missing
file or a model that does not fit the data.

``/models/pumps`` is a model root: one sub-folder per version, the newest counts (``seqwatch train`` writes a
version's metadata last, so a half-written one is never used).
"""
from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

SEQWATCH = "/srv/seqwatch/.venv/bin/seqwatch"
MODEL_ROOT = "/models/pumps"

with DAG("seqwatch_daily", start_date=datetime(2026, 1, 1), schedule="15 2 * * *", catchup=False,
         default_args={"retries": 1, "retry_delay": timedelta(minutes=10)}) as daily:
    BashOperator(
        task_id="score",
        # --alert-cooldown: a pump whose score flaps raises one alert, not one per anomalous spell, unless it
        # stays quiet for half an hour.
        bash_command=(f"{SEQWATCH} run --input '/data/plant/{{{{ ds }}}}/*.csv' --format wide "
                      f"--model-dir {MODEL_ROOT} --output /results/{{{{ ds }}}} --alert-cooldown 1800"),
    )

# The week's seven days: each day's files as an --input, and the nightly run over them as an --exclude-alerts.
WEEK = ("{% for d in range(7) %}--input '/data/plant/{{ macros.ds_add(ds, -d) }}/*.csv' "
        "--exclude-alerts /results/{{ macros.ds_add(ds, -d) }} {% endfor %}")

with DAG("seqwatch_weekly_fine_tuning", start_date=datetime(2026, 1, 1), schedule="0 3 * * 0", catchup=False) as weekly:
    BashOperator(
        task_id="fine_tune",
        bash_command=(f"{SEQWATCH} train --warm-start {MODEL_ROOT} --format wide {WEEK}"
                      f"--model-dir {MODEL_ROOT}/{{{{ ds_nodash }}}}"),
    )
