"""The cron lines in ``deploy/cron`` run by a shell as cron would run them: its ``\\%`` escapes undone, its example
paths (``/srv/seqwatch``, ``/data/plant``, ``/models/pumps``, ``/results``, ``/var/log``) moved to a scratch folder,
everything else (the ``date`` substitution, the quoting, the glob, the redirection) as written. The Airflow DAG is
run by Airflow itself in ``test_airflow_dag.py``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from seqwatch.models.synthetic import generate_sensor_data

REPO = Path(__file__).resolve().parents[2]
STEP_SECONDS = 10  # the session model's interval (tests/conftest.py)


def _cron_command(root: Path, schedule: str = "15 2 * * *") -> str:
    """The command of the cron line of ``schedule`` (the nightly scoring; ``30 3 * * 0``: the Sunday fine-tuning),
    as cron hands it to the shell, with its paths under ``root``."""
    lines = [line for line in (REPO / "deploy" / "cron" / "seqwatch.cron").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert [line.split(None, 5)[:5] for line in lines] == [["15", "2", "*", "*", "*"], ["30", "3", "*", "*", "0"]]
    (command,) = [line.split(None, 5)[5] for line in lines if line.split(None, 5)[:5] == schedule.split()]
    # cron turns an unescaped % into a newline (the rest is the command's stdin); the line must have none.
    assert "%" not in command.replace("\\%", "")
    command = command.replace("\\%", "%")
    for example in ("/srv/seqwatch", "/data/plant", "/models/pumps", "/results", "/var/log"):
        assert example in command
        command = command.replace(example, f"{root}{example}")
    return command


def _bash(command: str, shell: str = "bash") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"TZ": "UTC"}
    return subprocess.run([shell, "-c", command], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # a scoring and a fine-tuning: about 20 s
def test_cron_lines_score_yesterdays_files_fine_tune_on_sundays_and_log_a_failure_in_one_sentence(small_model_dir, wide_csv, tmp_path):
    command = _cron_command(tmp_path)
    (tmp_path / "srv" / "seqwatch").mkdir(parents=True)
    (tmp_path / "srv" / "seqwatch" / ".venv").symlink_to(REPO / ".venv")
    shutil.copytree(small_model_dir, tmp_path / "models" / "pumps" / "v1")
    (tmp_path / "var" / "log").mkdir(parents=True)
    log = tmp_path / "var" / "log" / "seqwatch.log"

    # No files for yesterday yet: the run fails, exit code 2, with one sentence in the log and no output.
    failed = _bash(command)
    assert failed.returncode == 2 and failed.stdout == failed.stderr == ""
    (reason,) = log.read_text().splitlines()
    assert reason.startswith("seqwatch run: ") and "Traceback" not in reason
    yesterday = _bash("date -d yesterday +%F").stdout.strip()
    assert not (tmp_path / "results" / yesterday).exists()

    readings, _ = generate_sensor_data(n_entities=2, n_steps=600, step_seconds=STEP_SECONDS, seed=5,
                                       anomalies_per_entity=1, start=pd.Timestamp(yesterday, tz="UTC"))
    for entity, part in readings.groupby("entity_id"):
        wide_csv(part, tmp_path / "data" / "plant" / yesterday / f"{entity}.csv")
    done = _bash(command)
    assert done.returncode == 0, log.read_text()[-3000:]
    out = tmp_path / "results" / yesterday
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records_in"] == manifest["records_scored"] == len(readings)  # 2 pumps x 600 steps x 4 channels
    assert pq.read_table(out / "scores").num_rows > 0
    assert "Traceback" not in log.read_text()

    # The Sunday line (run by sh, as cron runs it, whatever the day): the past week holds one scored night, so the
    # model is fine-tuned on its files into today's version, and the six days without files are left out with a
    # note; run again, it leaves that version alone.
    sunday = _cron_command(tmp_path, "30 3 * * 0")
    before = len(log.read_text().splitlines())
    tuned = _bash(sunday, shell="sh")
    assert tuned.returncode == 0, log.read_text()[-3000:]
    said = log.read_text().splitlines()[before:]
    today = _bash("date +%Y%m%d").stdout.strip()
    assert sum("is left out: no input file matches" in line for line in said) == 6, said
    assert any(line.startswith("fine-tuning on ") and " readings from 2 file(s) " in line for line in said), said
    assert (tmp_path / "models" / "pumps" / today / "metadata.json").is_file()
    again = _bash(sunday, shell="sh")
    assert again.returncode == 0 and log.read_text().splitlines()[-1] == (
        f"seqwatch train: --model-dir {tmp_path}/models/pumps/{today} holds a model already; it is left as it is "
        f"(--skip-existing)")
    assert "Traceback" not in log.read_text()


def test_the_dockerfile_matches_the_pinned_versions_and_starts_beams_worker_launcher():
    """The image is not built here (no Docker engine); what can drift without a build is checked: the Beam SDK image
    its worker launcher comes from has the Beam of requirements.lock and the Python of the base image, every file
    it copies exists, and its entrypoint is the launcher that Dataflow and DOCKER environments run."""
    import re

    text = (REPO / "deploy" / "Dockerfile").read_text()
    instructions = [line.strip() for line in text.replace("\\\n", " ").splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    base = re.fullmatch(r"FROM python:(\d+\.\d+)-slim", instructions[0])
    assert base, instructions[0]
    beam_pin = re.search(r"^apache-beam==(\S+)$", (REPO / "requirements.lock").read_text(), re.M).group(1)
    assert re.search(rf'"apache-beam(\[[a-z,]+\])?=={re.escape(beam_pin)}"', (REPO / "setup.py").read_text())
    launcher = [i for i in instructions if i.startswith("COPY --from=")]
    assert launcher == [f"COPY --from=apache/beam_python{base.group(1)}_sdk:{beam_pin} /opt/apache/beam "
                        f"/opt/apache/beam"]
    for instruction in instructions:
        if instruction.startswith("COPY ") and not instruction.startswith("COPY --from="):
            for source in instruction.split()[1:-1]:
                assert (REPO / source).exists(), instruction
    assert instructions[-1] == 'ENTRYPOINT ["/opt/apache/beam/boot"]'
    assert any(i.startswith("RUN ") and "-r requirements.lock" in i and "--no-deps ." in i for i in instructions)
