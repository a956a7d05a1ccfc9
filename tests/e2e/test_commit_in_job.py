"""``seqwatch run --commit-in-job``: the batch run's commit as its job's last step (``batch.CommitInJob``), for
launchers that submit a job and go (a Dataflow Flex Template). On the DirectRunner: the same outputs and
manifest as a run committed by its launcher, a commit that waits for another run's lock, a retried commit, and
the errors, each one sentence."""
from __future__ import annotations

import json
import re
import threading
import time

import pyarrow.dataset as ds
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines import batch
from seqwatch.pipelines.batch import SINKS, RunError, commit_in_job, plan_run, run_batch
from seqwatch.pipelines.config import RunConfig
from seqwatch.pipelines.output_lock import output_lock
from seqwatch.schemas.mapping import InputMapping
from tests.conftest import _free_port

WIDE = InputMapping(format="wide", timestamp="timestamp", entity={"from_filename": True})
DIRECT = ["--runner=DirectRunner"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, wide_csv):
    folder = tmp_path_factory.mktemp("inputs")
    readings, _ = generate_sensor_data(n_entities=2, n_steps=400, seed=17, anomalies_per_entity=1)
    for entity, part in readings.groupby("entity_id"):
        wide_csv(part, folder / f"{entity}.csv")
    path = folder / "pump-01.csv"
    lines = path.read_text().splitlines()
    lines[40] = "2026-01-05T99:00:00Z,1,2,3,4"  # one bad line: the quarantine is committed too
    path.write_text("\n".join(lines) + "\n")
    return folder


def _config(inputs, model_dir, out, **more) -> RunConfig:
    return RunConfig(inputs=(str(inputs / "*.csv"),), output=str(out), model_dir=str(model_dir), mapping=WIDE,
                     pane_steps=256, **more)


def _rows(out, sink):
    table = ds.dataset(out / sink, format="parquet").to_table().drop_columns(["run_id"]).to_pandas()
    return table.sort_values(list(table.columns[:3])).reset_index(drop=True)


@pytest.fixture(scope="module")
def both(inputs, small_model_dir, tmp_path_factory):
    """The same input run twice: committed by the launcher, and by the job."""
    launcher, job = tmp_path_factory.mktemp("launcher"), tmp_path_factory.mktemp("job")
    by_launcher = run_batch(_config(inputs, small_model_dir, launcher), DIRECT)
    by_job = run_batch(_config(inputs, small_model_dir, job, commit_in_job=True), DIRECT)
    return (launcher, by_launcher), (job, by_job)


def test_the_job_commits_what_its_launcher_would_have(both):
    (launcher, by_launcher), (job, by_job) = both
    assert by_job == json.loads((job / "manifest.json").read_text())  # what the job wrote, read back
    assert by_job["committed_by"] == "job" and "committed_by" not in by_launcher
    assert by_job["stage_seconds"] == {} and by_launcher["stage_seconds"]
    same = {"run_id", "inputs", "records_in", "records_scored", "records_quarantined", "stages", "model",
            "settings", "outputs", "input_digests", "working_dir", "workers"}
    assert {k: by_job[k] for k in same} == {k: by_launcher[k] for k in same}
    assert by_job["records_quarantined"] >= 4 and by_job["stages"]["alerts"] >= 1
    assert by_job["records_in"] == by_job["records_scored"] + by_job["records_quarantined"]
    for sink in SINKS:
        assert _rows(job, sink).equals(_rows(launcher, sink)), sink
    left = sorted(p.name for p in job.iterdir())
    assert left == sorted([*SINKS, "manifest.json", ".seqwatch.lock"]), left  # no staging folder left


def test_a_retried_commit_returns_the_committed_manifest_and_a_lost_staging_is_one_sentence(both, inputs,
                                                                                            small_model_dir):
    _, (job, by_job) = both
    plan = plan_run(_config(inputs, small_model_dir, job, commit_in_job=True))
    assert plan.run_id == by_job["run_id"] and "/_job-staging-" in plan.staging
    again = commit_in_job(plan, {"records_in": 1}, time.time(), 1, {})  # the step retried after it finished
    assert again == by_job
    other = plan_run(_config(inputs, small_model_dir, job, commit_in_job=True, run_id="another-run"))
    with pytest.raises(RunError, match=r"^the staged outputs of run another-run are gone from .*_job-staging-"
                                       r"another-run, so nothing was committed; run it again$"):
        commit_in_job(other, {"records_in": 1}, time.time(), 1, {})


def test_the_commit_waits_for_a_run_that_holds_the_output(inputs, small_model_dir, tmp_path):
    """The job takes the output's lock only for its commit: it waits while another run holds it."""
    out = tmp_path / "out"
    out.mkdir()
    taken, released = threading.Event(), []

    def other_run():
        with output_lock(str(out), "run", "run-other"):
            taken.set()
            time.sleep(8)
            released.append(time.time())

    holder = threading.Thread(target=other_run)
    holder.start()
    taken.wait(10)
    try:
        manifest = run_batch(_config(inputs, small_model_dir, out, commit_in_job=True), DIRECT)
    finally:
        holder.join()
    assert released and (out / "manifest.json").stat().st_mtime >= released[0] - 0.05
    assert manifest["records_in"] == manifest["records_scored"] + manifest["records_quarantined"] > 0


def test_a_commit_that_waited_too_long_is_one_sentence_and_commits_nothing(inputs, small_model_dir, tmp_path,
                                                                           monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(batch, "COMMIT_LOCK_WAIT_S", 1.0)
    taken, done = threading.Event(), threading.Event()

    def other_run():  # another thread: within one, the lock is re-entrant
        with output_lock(str(out), "run", "run-other"):
            taken.set()
            done.wait(120)

    holder = threading.Thread(target=other_run)
    holder.start()
    taken.wait(10)
    try:
        with pytest.raises(RunError, match=r"^.*run run-other.*; the job waited 1 s for it, so nothing was "
                                           r"committed$"):
            run_batch(_config(inputs, small_model_dir, out, commit_in_job=True), DIRECT)
    finally:
        done.set()
        holder.join()
    # nothing committed, and the launcher, whose job ended here, deleted the staged outputs
    assert sorted(p.name for p in out.iterdir()) == [".seqwatch.lock"]


def test_a_commit_whose_move_failed_leaves_the_staged_outputs_for_a_retry_that_commits(inputs, small_model_dir,
                                                                                       tmp_path, monkeypatch):
    """A move that fails (a store's error) is undone; the staged outputs stay, so the runner's retry of the step
    commits them (they had been deleted, and the retry found nothing to commit)."""
    import apache_beam as beam

    out = tmp_path / "out"
    out.mkdir()
    plan = plan_run(_config(inputs, small_model_dir, out, commit_in_job=True))
    p = beam.Pipeline(options=PipelineOptions(DIRECT))
    batch.build_pipeline(p, plan)  # the job, but for its commit
    p.run().wait_until_finish()
    counts = [json.loads((out / f"_job-staging-{plan.run_id}" / "counts.json").read_text())]
    move, calls = batch.move_path, []

    def second_move_fails(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError("[Errno 5] Input/output error")
        move(source, target)

    monkeypatch.setattr(batch, "move_path", second_move_fails)
    with pytest.raises(RunError, match=r"^could not move the outputs into place under .* \(\[Errno 5\] Input/output "
                                       r"error\); the previous run's outputs were put back$"):
        commit_in_job(plan, counts[0], time.time(), 1, {})
    assert (out / f"_job-staging-{plan.run_id}" / "scores").is_dir() and not (out / "manifest.json").exists()
    monkeypatch.setattr(batch, "move_path", move)
    manifest = commit_in_job(plan, counts[0], time.time(), 1, {})  # the retry
    assert json.loads((out / "manifest.json").read_text()) == manifest and manifest["records_in"] > 0
    assert not list(out.glob("_job-staging-*"))


def test_a_job_whose_input_holds_no_record_fails_in_one_sentence(small_model_dir, tmp_path, capsys):
    from seqwatch.pipelines.cli import main

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "pump-01.csv").write_text("timestamp,flow,pressure,temperature,vibration\n")
    out = tmp_path / "out"
    code = main(["run", "--input", str(tmp_path / "in" / "*.csv"), "--format", "wide",
                 "--model-dir", str(small_model_dir), "--output", str(out), "--commit-in-job", *DIRECT])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["seqwatch run: the input holds no records (1 file(s) are empty or have only a "
                                 "header)"], err
    assert not (out / "manifest.json").exists() and not list(out.glob("_job-staging-*"))


@pytest.mark.parametrize("share, bad_lines, says", [
    (None, "all", "nothing was scored, every reading was quarantined"),
    (0.001, 5, "{share:.1%} of the readings were quarantined, more than --max-quarantined-share 0.001 allows"),
])
def test_a_job_that_no_launcher_waits_for_fails_after_its_commit_on_the_quarantines_share(
        small_model_dir, tmp_path, share, bad_lines, says):
    """As ``seqwatch run`` exits 3, so that a scheduler alerts: the job commits, then fails."""
    import apache_beam as beam

    readings, _ = generate_sensor_data(n_entities=1, n_steps=200, seed=29)
    path = tmp_path / "pump.csv"
    readings.to_csv(path, index=False)
    lines = path.read_text().splitlines()
    for n in range(1, len(lines) if bad_lines == "all" else bad_lines + 1):
        fields = lines[n].split(",")
        lines[n] = ",".join([*fields[:-1], "n/a"])
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    plan = plan_run(RunConfig(inputs=(str(path),), output=str(out), model_dir=str(small_model_dir),
                              commit_in_job=True, max_quarantined_share=share))
    p = beam.Pipeline(options=PipelineOptions(DIRECT))
    batch.build_pipeline(p, plan)["counts"] | batch.CommitInJob(plan, time.time(), 1, {}, gate=True)
    with pytest.raises(Exception, match=r"(.+); the outputs are committed under " + re.escape(str(out)) +
                                        ", and the job fails so that its scheduler alerts") as failed:
        p.run().wait_until_finish()
    manifest = json.loads((out / "manifest.json").read_text())  # committed all the same
    quarantined = manifest["records_quarantined"]
    assert manifest["records_in"] == 800 and (quarantined == 800 if bad_lines == "all" else 5 <= quarantined < 800)
    says = says.format(share=quarantined / 800)  # the n/a readings, and the readings no window could hold
    assert batch.quarantine_gate(manifest, share) == says and says in str(failed.value)
    assert batch.quarantine_gate(manifest, 1.0) is None


def test_the_cli_flag_runs_and_commits_in_the_job(inputs, small_model_dir, tmp_path, capsys):
    from seqwatch.pipelines.cli import main

    out = tmp_path / "out"
    code = main(["run", "--input", str(inputs / "*.csv"), "--format", "wide",
                 "--model-dir", str(small_model_dir), "--output", str(out), "--pane-steps", "256",
                 "--commit-in-job", *DIRECT])
    summary = json.loads(capsys.readouterr().out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert code == 0 and manifest["committed_by"] == "job"
    assert summary["run_id"] == manifest["run_id"] and summary["records_in"] == manifest["records_in"]
    # another input into the same output: the job's commit replaces the first run's outputs and says whose
    code = main(["run", "--input", str(inputs / "pump-02.csv"), "--format", "wide", "--model-dir", str(small_model_dir),
                 "--output", str(out), "--pane-steps", "256", "--commit-in-job", *DIRECT])
    captured = capsys.readouterr()
    second = json.loads((out / "manifest.json").read_text())
    assert code == 0 and second["replaced_run"] == {"run_id": manifest["run_id"], "inputs": manifest["inputs"]}
    assert f"these outputs replace those of run {manifest['run_id']}" in captured.err
    assert set(ds.dataset(out / "scores", format="parquet").to_table().column("entity_id").to_pylist()) == {"pump-02"}


def test_a_run_leaves_the_staging_of_a_job_that_commits_itself(inputs, small_model_dir, tmp_path):
    """Such a job holds no lock while it runs: a run into the same output must not take its staging folder for a
    killed run's."""
    out = tmp_path / "out"
    staged = out / "_job-staging-run-elsewhere" / "scores"
    staged.mkdir(parents=True)
    (staged / "part.parquet").write_bytes(b"a job's file")
    stale = out / "_staging-run-killed"
    stale.mkdir()
    run_batch(_config(inputs, small_model_dir, out), DIRECT)
    assert (staged / "part.parquet").read_bytes() == b"a job's file" and not stale.exists()


def test_the_staging_of_a_failed_job_is_deleted_after_a_week_and_a_younger_one_kept(inputs, small_model_dir,
                                                                                      tmp_path):
    import os

    out = tmp_path / "out"
    failed, young = out / "_job-staging-run-failed", out / "_job-staging-run-running"
    for folder in (failed, young):
        (folder / "scores").mkdir(parents=True)
        (folder / "scores" / "part.parquet").write_bytes(b"x")
    week_ago = time.time() - batch.JOB_STAGING_KEPT_S - 60
    for path in (failed / "scores" / "part.parquet", failed / "scores", failed):
        os.utime(path, (week_ago, week_ago))
    run_batch(_config(inputs, small_model_dir, out, commit_in_job=True), DIRECT)
    assert not failed.exists() and (young / "scores" / "part.parquet").exists()
    assert (out / "manifest.json").exists()


@pytest.mark.parametrize("args, here", [
    (["--runner=DirectRunner"], True),
    ([], True),  # the DirectRunner's engine (LocalRunner)
    (["--runner=PrismRunner"], True),  # LOOPBACK: its workers are this process
    (["--runner=PortableRunner", "--environment_type=LOOPBACK"], True),
    (["--runner=FlinkRunner", "--environment_type=EXTERNAL", "--environment_config=localhost:50000"], False),
    (["--runner=PortableRunner", "--environment_type=DOCKER"], False),
    (["--runner=DataflowRunner"], False),
])
def test_the_launcher_waits_only_for_a_job_whose_workers_it_is(args, here):
    from apache_beam.options.pipeline_options import StandardOptions

    options = PipelineOptions(args)
    if not args:
        options.view_as(StandardOptions).runner = batch.LOCAL_RUNNER
    assert batch._job_runs_here(options) is here


def test_a_launcher_that_submits_the_job_and_exits_leaves_committed_outputs(inputs, small_model_dir, tmp_path,
                                                                             prism_endpoint):
    """What a Flex Template's launcher does, on Prism: ``seqwatch run --commit-in-job`` submits the job to a job
    server whose workers are a worker pool of their own (EXTERNAL), and exits while the job runs; the job commits."""
    import os
    import subprocess
    import sys

    port = _free_port()
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}  # the pool's `python`
    pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             f"--service_port={port}"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    out = tmp_path / "out"
    try:
        launch = subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "run",
                                 "--input", str(inputs / "*.csv"), "--format", "wide", "--model-dir", str(small_model_dir), "--output", str(out),
                                 "--pane-steps", "256", "--commit-in-job", "--runner=PortableRunner",
                                 f"--job_endpoint={prism_endpoint}", "--environment_type=EXTERNAL",
                                 f"--environment_config=localhost:{port}"],
                                capture_output=True, text=True, timeout=300)
        assert launch.returncode == 0, launch.stderr[-3000:]
        said = json.loads(launch.stdout)
        assert said["submitted"] is True and said["output"] == str(out) and said["job_state"] != "DONE"
        assert "the job is submitted" in launch.stderr
        assert "the job fails after its commit if every reading was quarantined" in launch.stderr
        deadline = time.monotonic() + 240
        while not (out / "manifest.json").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        manifest = json.loads((out / "manifest.json").read_text())
    finally:
        pool.kill()
        pool.wait()
    assert manifest["run_id"] == said["run_id"] and manifest["committed_by"] == "job"
    assert manifest["records_in"] == manifest["records_scored"] + manifest["records_quarantined"] > 0
    assert manifest["records_quarantined"] >= 4  # the bad line's readings
    scores = ds.dataset(out / "scores", format="parquet").to_table()
    assert scores.num_rows > 0 and set(scores.column("run_id").to_pylist()) == {said["run_id"]}
    assert not list(out.glob("_job-staging-*"))
