"""How many DirectRunner worker processes a batch run uses, and the reading estimate it is chosen from."""
import pandas as pd
import pytest

from seqwatch.pipelines import batch
from seqwatch.pipelines.batch import _options, choose_workers
from seqwatch.pipelines.config import RunConfig
from seqwatch.pipelines.sources import estimate_readings
from seqwatch.schemas.mapping import InputMapping

WIDE = InputMapping(format="wide", timestamp="timestamp", entity={"from_filename": True})


def _long(n):
    return pd.DataFrame({"entity_id": ["p1"] * n, "channel": ["a"] * n,
                         "timestamp": pd.date_range("2026-01-01", periods=n, freq="s"), "value": range(n)})


def test_a_parquet_file_is_estimated_from_its_footer(tmp_path):
    _long(1234).to_parquet(tmp_path / "a.parquet", index=False)
    assert estimate_readings(str(tmp_path / "a.parquet"), 1) == 1234
    assert estimate_readings(str(tmp_path / "a.parquet"), 3) == 3 * 1234


def test_a_text_file_is_estimated_from_its_size_and_first_lines(tmp_path):
    path = tmp_path / "w.csv"
    wide = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=5000, freq="s"), "a": 1.5, "b": 2.5})
    wide.to_csv(path, index=False)  # every line has the same length: the estimate is the row count, +-1
    assert abs(estimate_readings(str(path), 2) - 2 * 5001) <= 2


def test_workers_follow_the_size_of_the_input(tmp_path, monkeypatch):
    paths = []
    for i in range(3):
        _long(1000).to_parquet(tmp_path / f"p{i}.parquet", index=False)
        paths.append(str(tmp_path / f"p{i}.parquet"))
    monkeypatch.setattr(batch, "AUTO_WORKERS_MIN_READINGS", 3000)
    assert choose_workers(paths, InputMapping(), cpus=2) == 2  # 3,000 readings: one process per core
    assert choose_workers(paths, InputMapping(), cpus=8) == 3  # no more processes than files
    assert choose_workers(paths[:1], InputMapping(), cpus=2) == 1  # one file is one unit of work
    assert choose_workers(paths, InputMapping(), cpus=1) == 1
    monkeypatch.setattr(batch, "AUTO_WORKERS_MIN_READINGS", 3001)
    assert choose_workers(paths, InputMapping(), cpus=2) == 1


def test_beam_flags_given_by_the_user_win(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "choose_workers", lambda paths, mapping, readings=None: 2)
    config = RunConfig(inputs=("x",), output="o", model_dir="m")
    options, workers = _options([], config, ("a", "b"))
    assert workers == 2
    assert options.get_all_options()["direct_running_mode"] == "multi_processing"
    assert options.get_all_options()["runner"] == batch.LOCAL_RUNNER  # not Beam's try-Prism-first switch
    options, workers = _options(["--direct_num_workers=1"], config, ("a", "b"))
    assert workers == 1 and options.get_all_options()["direct_running_mode"] == "in_memory"
    options, workers = _options([], RunConfig(inputs=("x",), output="o", model_dir="m", workers=1), ("a", "b"))
    assert workers == 1 and options.get_all_options()["direct_running_mode"] == "in_memory"
    _, workers = _options(["--runner=DataflowRunner"], config, ("a", "b"))
    assert workers == 0  # Dataflow chooses its own


def test_a_negative_worker_count_is_refused():
    with pytest.raises(ValueError, match="workers must be >= 0"):
        RunConfig(inputs=("x",), output="o", model_dir="m", workers=-1)


def test_the_worker_processes_are_started_through_the_quiet_entry_point():
    from apache_beam.portability import python_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    from seqwatch.pipelines.local_runner import QUIET_WORKER_MODULE, quiet_worker_command

    proto = beam_runner_api_pb2.Pipeline()
    environments = proto.components.environments
    environments["workers"].urn = python_urns.SUBPROCESS_SDK
    environments["workers"].payload = b"/opt/py/bin/python -m apache_beam.runners.worker.sdk_worker_main"
    environments["own"].urn = python_urns.SUBPROCESS_SDK
    environments["own"].payload = b"/opt/py/bin/python -m company.worker"  # a command of the user's: left alone
    environments["embedded"].urn = python_urns.EMBEDDED_PYTHON
    assert quiet_worker_command(proto) == 1
    assert environments["workers"].payload.decode() == f"/opt/py/bin/python -m {QUIET_WORKER_MODULE}"
    assert environments["own"].payload == b"/opt/py/bin/python -m company.worker"
    assert quiet_worker_command(proto) == 0


def test_the_worker_log_level_is_warning_unless_the_options_set_one():
    import json

    from seqwatch.pipelines.sdk_worker import with_log_level

    assert json.loads(with_log_level(None)) == {"default_sdk_harness_log_level": "WARNING"}
    assert json.loads(with_log_level("{}")) == {"default_sdk_harness_log_level": "WARNING"}
    assert json.loads(with_log_level('{"options": {"a": 1}}')) == {
        "options": {"a": 1, "default_sdk_harness_log_level": "WARNING"}}
    given = '{"beam:option:default_sdk_harness_log_level:v1": "DEBUG"}'
    assert json.loads(with_log_level(given)) == json.loads(given)


def _fails_on_three(x):
    if x == 3:
        raise ValueError(f"reading {x} is cursed")
    return x


def test_an_error_in_a_quiet_worker_process_still_fails_the_run_with_its_message():
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions([f"--runner={batch.LOCAL_RUNNER}", "--direct_running_mode=multi_processing",
                               "--direct_num_workers=2"])
    with pytest.raises(Exception, match="reading 3 is cursed"):
        with beam.Pipeline(options=options) as p:
            _ = p | beam.Create([1, 2, 3]) | beam.Map(_fails_on_three)
