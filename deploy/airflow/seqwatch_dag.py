"""Airflow example: train weekly on the last month of normal data, score daily. Untested here (no Airflow on the
development machines); it only calls the seqwatch CLI, whose exit code is 0 on success and 2 with one sentence
on stderr for a bad input, a missing file or a model that does not fit the data."""
from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

SEQWATCH = "/srv/seqwatch/.venv/bin/seqwatch"

with DAG("seqwatch_daily", start_date=datetime(2026, 1, 1), schedule="15 2 * * *", catchup=False,
         default_args={"retries": 1, "retry_delay": timedelta(minutes=10)}) as daily:
    BashOperator(
        task_id="score",
        bash_command=(f"{SEQWATCH} run --input '/data/plant/{{{{ ds }}}}/*.csv' --format wide "
                      "--model-dir /models/pumps/current --output /results/{{ ds }}"),
    )

with DAG("seqwatch_weekly_training", start_date=datetime(2026, 1, 1), schedule="0 3 * * 0", catchup=False) as weekly:
    BashOperator(
        task_id="train",
        bash_command=(f"{SEQWATCH} train --input '/data/plant/normal/*.csv' --format wide "
                      "--model-dir /models/pumps/{{ ds_nodash }} && ln -sfn /models/pumps/{{ ds_nodash }} "
                      "/models/pumps/current"),
    )
