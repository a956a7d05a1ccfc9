"""An output folder that cannot be written is one sentence before the pipeline starts. Found by hand: ``seqwatch
run --output results.csv`` (an existing file) scored every reading and then ended in a Beam traceback from the
Parquet sink."""
import numpy as np
import pytest

from seqwatch.pipelines.batch import RunError, run_batch
from seqwatch.pipelines.cli import CliError, _check_model_dir
from seqwatch.pipelines.config import RunConfig
from seqwatch.pipelines.sinks import file_in_the_way, prepare_output_folder


def test_a_missing_output_folder_is_created_and_left_empty(tmp_path):
    out = tmp_path / "a" / "b"
    prepare_output_folder(str(out))
    assert out.is_dir() and list(out.iterdir()) == []
    prepare_output_folder(str(out))  # an existing folder is fine


@pytest.mark.parametrize("check, error, says", [
    (prepare_output_folder, OSError, "cannot write the outputs under --output"),
    (_check_model_dir, CliError, "cannot write the model to --model-dir"),
])
def test_a_file_in_place_of_the_folder_or_above_it_is_one_sentence(tmp_path, check, error, says):
    """``seqwatch train --model-dir history/pump-01.csv`` trained, then ended in FileExistsError."""
    taken = tmp_path / "results.csv"
    taken.write_text("x\n")
    with pytest.raises(error, match=f"^{says} {taken}: it is a file$"):
        check(str(taken))
    with pytest.raises(error, match=f"^{says} {taken}/day-1: {taken} is a file$"):
        check(str(taken / "day-1"))
    assert taken.read_text() == "x\n"
    assert file_in_the_way(str(tmp_path / "new" / "folder")) is None and file_in_the_way("gs://b/out") is None


def test_a_run_refuses_such_an_output_before_it_starts(small_model_dir, tmp_path):
    """(``seqwatch stream`` and ``train``: in ``tests/e2e/test_batch_run.py``'s CLI errors.)"""
    taken = tmp_path / "results.csv"
    taken.write_text("x\n")
    readings = tmp_path / "in.csv"
    readings.write_text("entity_id,channel,timestamp,value\npump-01,flow,2026-01-05T00:00:00Z,1.0\n")
    config = RunConfig(inputs=(str(readings),), output=str(taken), model_dir=str(small_model_dir))
    with pytest.raises(RunError, match="it is a file"):
        run_batch(config, ["--runner=DirectRunner"])


def test_train_refuses_a_model_root_whose_versions_its_artifact_would_hide(small_model_dir, tmp_path):
    import shutil

    from seqwatch.models.artifact import resolve_model_dir

    root = tmp_path / "pumps"
    shutil.copytree(small_model_dir, root / "2026-01")
    with pytest.raises(CliError, match=r"is a model root \(versions 2026-01\); give a new version folder inside it"):
        _check_model_dir(str(root))
    shutil.copytree(small_model_dir, root / "v2")  # the suggestion is a name not in use (it had always been v2,
    with pytest.raises(CliError, match=f"such as {root / 'v3'}$"):  # which following replaced: bug hunt of variants)
        _check_model_dir(str(root))
    shutil.rmtree(root / "v2")
    for fine in (root / "2026-02", root / "2026-01", tmp_path / "new" / "deeper", tmp_path):
        _check_model_dir(str(fine))  # a new version, retraining one in place, a new folder, an empty folder
    assert resolve_model_dir(root) == root / "2026-01" and not (tmp_path / "new").exists()


def test_a_streams_files_are_found_in_an_output_whose_name_looks_like_a_glob(tmp_path):
    """``seqwatch stream --output 'results [prod]'``: the counts, quarantine notices and calibration files are
    listed under the folder as named. Through Beam's match the brackets were a character class, nothing was found,
    and the stream's closing line said 0 records in."""
    import json
    import os
    import time

    from seqwatch.models.thresholds import OnlineTailCalibration
    from seqwatch.pipelines.calibration_state import STATE_FOLDER, state_of, stream_state_files, write_entity_state
    from seqwatch.pipelines.sinks import files_under
    from seqwatch.pipelines.streaming import stream_totals, written_since

    out = tmp_path / "results [prod]*"
    (out / "counts").mkdir(parents=True)
    for start, n in ((0, 5), (60, 7)):
        (out / "counts" / f"{start}.json").write_text(json.dumps({"records_in": n, "records_scored": n}))
    (out / "counts" / ".120.json.partial").write_text("{}")  # a file being written: not one of them
    assert stream_totals(str(out)) == ({"records_in": 12, "records_scored": 12}, 2)
    quarantine = out / "quarantine"
    (quarantine / "a-1").mkdir(parents=True)
    for name in ("a-1/0.parquet", "b-2.parquet"):
        (quarantine / name).write_bytes(b"x")
    assert [p[len(str(quarantine)) + 1:] for p, _ in files_under(str(quarantine), "**/*.parquet")] == [
        "a-1/0.parquet", "b-2.parquet"]
    old = time.time() - 3600
    os.utime(quarantine / "b-2.parquet", (old, old))
    assert written_since(str(quarantine), "**/*.parquet", time.time() - 60) == [str(quarantine / "a-1/0.parquet")]
    online = OnlineTailCalibration(200, 10).start(np.linspace(1.0, 4.0, 50))
    write_entity_state(str(out / STATE_FOLDER / "stream-1"), "pump-01", state_of(online.to_dict(), "v1", 10))
    assert stream_state_files(str(out / STATE_FOLDER)) == [str(out / STATE_FOLDER / "stream-1" / "pump-01.parquet")]
    assert files_under(str(tmp_path / "none"), "*.json") == []
