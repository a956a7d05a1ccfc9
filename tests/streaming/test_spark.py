"""The batch pipeline on Apache Spark (an embedded local master in Beam's Spark job server, ``make
spark-job-server``): the same outputs as the DirectRunner gives, through the session's job server
(``spark_job_server`` in conftest), and ``seqwatch run`` as the README tells users (Beam starts the job server
jar). A stream is refused before it starts on Spark (``tests/pipelines/test_runners.py``)."""
import json
import subprocess
import sys

import pytest

from seqwatch.pipelines.batch import SINKS, run_batch
from seqwatch.pipelines.config import RunConfig
from tests.streaming.conftest import parquet_tables

# As on Flink, the job server may hang up on the in-process (LOOPBACK) worker's data channel when a job ends.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")]


def test_the_batch_pipeline_on_spark_writes_what_the_direct_runner_writes(readings_csv, small_model_dir,
                                                                          spark_job_server, tmp_path):
    path, rows = readings_csv
    manifests = {}
    spark = ["--runner=PortableRunner", f"--job_endpoint={spark_job_server}", "--environment_type=LOOPBACK"]
    for name, args in (("direct", ["--runner=DirectRunner"]), ("spark", spark)):
        config = RunConfig(inputs=(str(path),), output=str(tmp_path / name), model_dir=str(small_model_dir),
                           run_id="run-spark-test", pane_steps=256)
        manifests[name] = run_batch(config, args)
    on_spark = manifests["spark"]
    assert on_spark["records_in"] == rows == on_spark["records_scored"] + on_spark["records_quarantined"]
    assert on_spark["stages"]["quarantined.window.duplicate"] == 1
    assert on_spark["stages"]["alerts"] >= 2
    assert on_spark["stages"] == manifests["direct"]["stages"]
    for sink in SINKS:
        direct, spark_tables = parquet_tables(tmp_path / "direct", sink), parquet_tables(tmp_path / "spark", sink)
        assert direct.keys() == spark_tables.keys(), sink
        for name, table in direct.items():
            other = spark_tables[name]
            if sink == "quarantine":  # one file per source; the rows' order follows the runner's bundles
                table, other = (t.sort_by([("line", "ascending"), ("column", "ascending")]) for t in (table, other))
            assert table.equals(other), name


def test_seqwatch_run_on_spark_as_the_readme_says(readings_csv, small_model_dir, spark_job_server_jar, tmp_path):
    """``--runner=SparkRunner --spark_job_server_jar=...``: Beam starts the job server for the run, and stops it."""
    path, rows = readings_csv
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "run", "--input", str(path),
                             "--model-dir", str(small_model_dir), "--output", str(out), "--runner=SparkRunner",
                             f"--spark_job_server_jar={spark_job_server_jar}", "--environment_type=LOOPBACK"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records_in"] == rows == manifest["records_scored"] + manifest["records_quarantined"]
    assert manifest["stages"]["alerts"] >= 2
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(SINKS)
