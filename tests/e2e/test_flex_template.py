"""``deploy/dataflow/flex-template``: what can be checked without Dataflow or a Docker engine. ``launch.py``, given
the parameters as Dataflow's launcher passes them, runs a job that commits its own outputs; each parameter of
``metadata.json`` is a flag of ``seqwatch run``; the Dockerfile's versions and paths match the repository. (A
launcher that exits while its job runs on: ``test_commit_in_job.py``, on Prism.)"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from seqwatch.models.synthetic import generate_sensor_data

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "dataflow" / "flex-template"


def _launch_module():
    spec = importlib.util.spec_from_file_location("flex_template_launch", TEMPLATE / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_parameter_of_the_metadata_is_a_flag_of_seqwatch_run():
    from seqwatch.pipelines.cli import build_parser

    launch = _launch_module()
    parameters = json.loads((TEMPLATE / "metadata.json").read_text())["parameters"]
    names = [p["name"] for p in parameters]
    assert sorted(names) == sorted([*launch.FLAGS, *launch.SWITCHES])
    assert {p["name"] for p in parameters if not p.get("isOptional")} == {"input", "output", "model_dir"}
    for parameter in parameters:
        assert re.fullmatch(r"[a-z][a-z_]*", parameter["name"]) and parameter["label"] and parameter["helpText"]
        value = {"format": "wide", "max_quarantined_share": "0.7"}.get(
            parameter["name"], "true" if parameter["name"] in launch.SWITCHES else "7")
        for pattern in parameter.get("regexes", []):
            assert re.fullmatch(pattern, value), parameter
        given = {"input": "a.csv", "output": "out", "model_dir": "m", parameter["name"]: value}
        argv = launch.run_argv([f"--{name}={text}" for name, text in given.items()]
                               + ["--runner=DataflowRunner", "--project=p"])
        args, beam_args = build_parser().parse_known_args(argv)
        assert args.command == "run" and args.commit_in_job
        assert beam_args == ["--runner=DataflowRunner", "--project=p"], parameter  # each parameter was a flag
        dest = launch.SWITCHES.get(parameter["name"]) or launch.FLAGS[parameter["name"]]
        got = getattr(args, dest.lstrip("-").replace("-", "_"))
        assert got in (True, 7, 7.0, "7", ["7"], "wide", 0.7), (parameter, got)


def test_the_workers_run_the_image_the_template_was_built_as_unless_the_launch_names_one():
    launch = _launch_module()
    image = {launch.IMAGE_VARIABLE: "europe-docker.pkg.dev/p/r/seqwatch-template:7"}
    assert launch.run_argv(["--input=a.csv"], image) == [
        "run", "--commit-in-job", "--sdk_container_image=europe-docker.pkg.dev/p/r/seqwatch-template:7", "--input",
        "a.csv"]
    assert "--sdk_container_image=other" in launch.run_argv(["--sdk_container_image=other"], image)
    assert not [a for a in launch.run_argv(["--sdk_container_image=other"], image) if a.endswith(":7")]
    assert not [a for a in launch.run_argv(["--input=a.csv"], {}) if a.startswith("--sdk_container_image")]


def test_a_parameter_given_as_two_words_is_read_as_one():
    launch = _launch_module()
    assert launch.run_argv(["--model_dir", "gs://b/m", "--input=a.csv", "--online_calibration", "true",
                            "--runner", "DataflowRunner"], {}) == [
        "run", "--commit-in-job", "--model-dir", "gs://b/m", "--input", "a.csv", "--online-calibration", "--runner",
        "DataflowRunner"]


def test_a_switch_parameter_is_true_or_false():
    launch = _launch_module()
    assert "--online-calibration" not in launch.run_argv(["--online_calibration=false"])
    assert "--online-calibration" in launch.run_argv(["--online_calibration=True"])
    with pytest.raises(launch.ParameterError, match=r"^the template parameter online_calibration is true or "
                                                    r"false, got 'yes'$"):
        launch.run_argv(["--online_calibration=yes"])


def test_the_launcher_script_runs_a_job_that_commits_its_outputs(small_model_dir, tmp_path, wide_csv):
    readings, _ = generate_sensor_data(n_entities=2, n_steps=300, seed=23)
    for entity, part in readings.groupby("entity_id"):
        wide_csv(part, tmp_path / "in" / f"{entity}.csv")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(TEMPLATE / "launch.py"), f"--input={tmp_path / 'in' / '*.csv'}",
                           "--format=wide", f"--model_dir={small_model_dir}", f"--output={out}", "--pane_steps=256",
                           "--online_calibration=true", "--runner=DirectRunner"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["committed_by"] == "job" and manifest["settings"]["online_calibration"] is True
    assert manifest["records_in"] == manifest["records_scored"] == len(readings)
    assert ds.dataset(out / "scores", format="parquet").count_rows() > 0
    assert (out / "calibration_state.parquet").exists() and not list(out.glob("_job-staging-*"))
    bad = subprocess.run([sys.executable, str(TEMPLATE / "launch.py"), "--online_calibration=yes"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "seqwatch template: the template parameter online_calibration is true or false, got 'yes'"]


def test_the_template_dockerfile_matches_the_pinned_versions_and_runs_launch_py():
    """Not built here (no Docker engine): its Python is the Beam SDK image's, its Beam that of requirements.lock
    (with the Google Cloud extra), every file it copies exists, the launcher's file is launch.py, and its
    entrypoint is Beam's worker launcher, so the one image serves the template's launcher and its workers."""
    text = (TEMPLATE / "Dockerfile").read_text()
    instructions = [line.strip() for line in text.replace("\\\n", " ").splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    base = re.fullmatch(r"FROM python:(\d+\.\d+)-slim", instructions[0])
    assert base, instructions[0]
    python = base.group(1)
    beam_pin = re.search(r"^apache-beam==(\S+)$", (REPO / "requirements.lock").read_text(), re.M).group(1)
    copies_from = [i for i in instructions if i.startswith("COPY --from=")]
    assert copies_from == [
        f"COPY --from=apache/beam_python{python}_sdk:{beam_pin} /opt/apache/beam /opt/apache/beam",
        f"COPY --from=gcr.io/dataflow-templates-base/python{python.replace('.', '')}-template-launcher-base:latest "
        f"/opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher"]
    copied = {}
    for instruction in instructions:
        if instruction.startswith("COPY ") and not instruction.startswith("COPY --from="):
            *sources, target = instruction.split()[1:]
            for source in sources:
                assert (REPO / source).exists(), instruction
                copied[source] = target
    assert copied["deploy/dataflow/flex-template/launch.py"] == "launch.py"
    assert "WORKDIR /template" in instructions
    assert any("FLEX_TEMPLATE_PYTHON_PY_FILE=/template/launch.py" in i for i in instructions if i.startswith("ENV "))
    assert 'ARG IMAGE=""' in instructions  # its name, for launch.py to give the workers
    variable = _launch_module().IMAGE_VARIABLE
    assert any(f"{variable}=${{IMAGE}}" in i for i in instructions if i.startswith("ENV "))
    assert any(i.startswith("RUN ") and "-r requirements.lock" in i and f'"apache-beam[gcp]=={beam_pin}"' in i
               and "--no-deps ." in i for i in instructions)
    assert instructions[-1] == 'ENTRYPOINT ["/opt/apache/beam/boot"]'
