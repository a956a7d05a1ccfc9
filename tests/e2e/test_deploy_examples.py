"""The deployment examples in ``deploy/`` call seqwatch with flags it has: the Airflow DAG's commands are
rendered with Airflow's template values (``ds``, ``ds_nodash``, ``macros.ds_add``) and the cron line with its
shell substitution done, then every seqwatch command in them goes through seqwatch's own argument parser.
Airflow is not installed here, so the DAG file runs against a stand-in ``airflow`` module that records the
tasks it declares."""
from __future__ import annotations

import runpy
import shlex
import sys
import types
from datetime import date, timedelta
from pathlib import Path

import jinja2

from seqwatch.pipelines.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DS = "2026-11-29"


class _Dag:
    def __init__(self, dag_id, **kwargs):
        self.dag_id, self.tasks = dag_id, []

    def __enter__(self):
        _Dag.current = self
        return self

    def __exit__(self, *exc):
        _Dag.current = None


class _BashOperator:
    def __init__(self, task_id, bash_command, **kwargs):
        _Dag.current.tasks.append((task_id, bash_command))


def _dag_commands(monkeypatch) -> dict:
    airflow = types.ModuleType("airflow")
    airflow.DAG = _Dag
    operators = types.ModuleType("airflow.operators")
    bash = types.ModuleType("airflow.operators.bash")
    bash.BashOperator = _BashOperator
    for name, module in (("airflow", airflow), ("airflow.operators", operators), ("airflow.operators.bash", bash)):
        monkeypatch.setitem(sys.modules, name, module)
    namespace = runpy.run_path(str(REPO / "deploy" / "airflow" / "seqwatch_dag.py"))
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    macros = types.SimpleNamespace(ds_add=lambda ds, days: (date.fromisoformat(ds) + timedelta(days=days)).isoformat())
    return {f"{dag.dag_id}.{task}": env.from_string(command).render(ds=DS, ds_nodash=DS.replace("-", ""),
                                                                     macros=macros)
            for dag in namespace.values() if isinstance(dag, _Dag) for task, command in dag.tasks}


def _seqwatch_args(command: str) -> list[list[str]]:
    """The arguments of every seqwatch call in a shell command line."""
    calls = []
    for part in command.split("&&"):
        words = shlex.split(part)
        if words and words[0].endswith("seqwatch"):
            calls.append(words[1:])
    return calls


def _parse(args: list[str]):
    parsed, unknown = build_parser().parse_known_args(args)
    assert unknown == [], (args, unknown)
    return parsed


def test_airflow_dag_commands_are_valid_seqwatch_calls(monkeypatch):
    commands = _dag_commands(monkeypatch)
    assert set(commands) == {"seqwatch_daily.score", "seqwatch_weekly_fine_tuning.fine_tune"}
    (score,) = _seqwatch_args(commands["seqwatch_daily.score"])
    run = _parse(score)
    assert run.command == "run" and run.input == [f"/data/plant/{DS}/*.csv"] and run.output == f"/results/{DS}"
    assert run.model_dir == "/models/pumps" and run.alert_cooldown == 1800
    (tune,) = _seqwatch_args(commands["seqwatch_weekly_fine_tuning.fine_tune"])
    train = _parse(tune)
    week = [(date.fromisoformat(DS) - timedelta(days=d)).isoformat() for d in range(7)]
    assert train.command == "train" and train.warm_start == "/models/pumps"
    assert train.input == [f"/data/plant/{day}/*.csv" for day in week]
    assert train.exclude_alerts == [f"/results/{day}" for day in week]
    assert train.model_dir == "/models/pumps/20261129"  # a new version inside the root the daily run reads


def test_cron_line_is_a_valid_seqwatch_call():
    lines = [line for line in (REPO / "deploy" / "cron" / "seqwatch.cron").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    assert len(fields) == 6 and fields[:5] == ["15", "2", "*", "*", "*"]
    command = fields[5].replace("\\%", "%").replace("$(date -d yesterday +%F)", DS).split(">>")[0]
    (args,) = _seqwatch_args(command)
    run = _parse(args)
    assert run.command == "run" and run.input == [f"/data/plant/{DS}/*.csv"] and run.output == f"/results/{DS}"
    assert run.model_dir == "/models/pumps"
