"""The batch pipeline on Apache Spark (an embedded local master in Beam's Spark job server, ``make
spark-job-server``), run as the README tells users: ``seqwatch run --runner=SparkRunner
--spark_job_server_jar=...``, where Beam starts the job server for the run. It writes exactly what the
DirectRunner writes. A stream is refused before it starts on Spark (``tests/pipelines/test_runners.py``)."""
import json
import os
import subprocess
import sys

import pytest

from seqwatch.pipelines.batch import SINKS, run_batch
from seqwatch.pipelines.config import RunConfig
from tests.streaming.conftest import SERVICE_JAVA_OPTIONS, parquet_tables

pytestmark = pytest.mark.slow


def test_seqwatch_run_on_spark_writes_what_the_direct_runner_writes(readings_csv, small_model_dir,
                                                                    spark_job_server_jar, tmp_path):
    path, rows = readings_csv
    direct = run_batch(RunConfig(inputs=(str(path),), output=str(tmp_path / "direct"), model_dir=str(small_model_dir),
                                 run_id="run-spark-test", pane_steps=256), ["--runner=DirectRunner"])
    out = tmp_path / "spark"
    # the job server's JVM compiles with C1 only, as the suite's other service JVMs do (conftest)
    result = subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "run", "--input", str(path),
                             "--model-dir", str(small_model_dir), "--output", str(out), "--run-id", "run-spark-test",
                             "--pane-steps", "256", "--runner=SparkRunner",
                             f"--spark_job_server_jar={spark_job_server_jar}", "--environment_type=LOOPBACK"],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "JAVA_TOOL_OPTIONS": SERVICE_JAVA_OPTIONS})
    assert result.returncode == 0, result.stderr[-3000:]
    on_spark = json.loads((out / "manifest.json").read_text())
    assert on_spark["records_in"] == rows == on_spark["records_scored"] + on_spark["records_quarantined"]
    assert on_spark["stages"]["quarantined.window.duplicate"] == 1
    assert on_spark["stages"]["alerts"] >= 2
    assert on_spark["stages"] == direct["stages"]
    for sink in SINKS:
        expected, written = parquet_tables(tmp_path / "direct", sink), parquet_tables(out, sink)
        assert expected.keys() == written.keys(), sink
        for name, table in expected.items():
            other = written[name]
            if sink == "quarantine":  # one file per source; the rows' order follows the runner's bundles
                table, other = (t.sort_by([("line", "ascending"), ("column", "ascending")]) for t in (table, other))
            assert table.equals(other), name
