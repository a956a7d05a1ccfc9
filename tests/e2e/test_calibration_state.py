"""A daily series of batch runs with online calibration (``--calibration-from``): each run writes each entity's
calibration beside its sinks, and the next run's entities go on from it. Real runs on the DirectRunner, the
state and the scores read back from Parquet, the expected thresholds worked out here with OnlineTailCalibration."""
import hashlib
import json

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from seqwatch.models.artifact import read_metadata
from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.models.thresholds import OnlineTailCalibration
from seqwatch.pipelines.batch import RunError, run_batch
from seqwatch.pipelines.calibration import model_risk, start_calibration
from seqwatch.pipelines.calibration_state import STATE_FILE
from seqwatch.pipelines.config import RunConfig
from seqwatch.schemas.mapping import InputMapping

WIDE = InputMapping(format="wide", timestamp="timestamp", entity={"from_filename": True})
OVERLAP_STEPS = 40  # day 2's file repeats day 1's last steps, for window context


@pytest.fixture(scope="module")
def days(tmp_path_factory, wide_csv):
    """Day 1: two pumps; day 2: pump-01 only (pump-02 is off), its file starting ``OVERLAP_STEPS`` before day 1
    ended. Each pump is noisier than the model's training data, so that its own history matters."""
    folder = tmp_path_factory.mktemp("days")
    readings, _ = generate_sensor_data(n_entities=2, n_steps=1000, seed=23, anomalies_per_entity=1,
                                       kinds=("level_shift",))
    times = np.sort(readings["timestamp"].unique())
    cut = times[600]
    for entity, part in readings.groupby("entity_id"):
        wide_csv(part[part["timestamp"] < cut], folder / "day1" / f"{entity}.csv")
    pump = readings[readings["entity_id"] == "pump-01"]
    wide_csv(pump[pump["timestamp"] >= times[600 - OVERLAP_STEPS]], folder / "day2" / "pump-01.csv")
    return folder


def _run(folder, out, model_dir, calibration_from="", keep_days=0.0):
    config = RunConfig(inputs=(str(folder / "*.csv"),), output=str(out), model_dir=str(model_dir), mapping=WIDE,
                       pane_steps=256, online_calibration=True, calibration_from=str(calibration_from),
                       calibration_keep_days=keep_days)
    return run_batch(config, ["--runner=DirectRunner"])


def _scores(out):
    table = ds.dataset(out / "scores", format="parquet").to_table().to_pandas()
    table["end_us"] = table["window_end"].dt.as_unit("us").astype("int64")
    return table.sort_values(["entity_id", "end_us"]).reset_index(drop=True)


def _state(out):
    table = pq.read_table(out / STATE_FILE).to_pylist()
    return {row["entity_id"]: row for row in table}


def test_a_daily_run_goes_on_from_the_day_befores_calibration(days, small_model_dir, tmp_path):
    metadata = read_metadata(str(small_model_dir))
    risk, _ = model_risk(metadata)
    day1, day2 = tmp_path / "day1", tmp_path / "day2"
    # One command line for every day: the first day's "day before" has no output, and its entities start afresh.
    first = _run(days / "day1", day1, small_model_dir, calibration_from=tmp_path / "day0")
    assert first["calibration_from"] == {"file": str(tmp_path / "day0" / STATE_FILE), "missing": True}
    manifest = _run(days / "day2", day2, small_model_dir, calibration_from=day1)

    # Day 1 started from the model's calibration scores; its state is each pump's history at the day's end.
    scores1, state1 = _scores(day1), _state(day1)
    assert sorted(state1) == ["pump-01", "pump-02"]
    for entity, part in scores1.groupby("entity_id"):
        online = start_calibration(metadata)
        online.process_at_risk(part["score"].to_numpy(), risk)
        np.testing.assert_allclose(state1[entity]["scores"], online.scores, rtol=1e-12, err_msg=entity)
        assert state1[entity]["last_window_end_us"] == part["end_us"].max()
        assert state1[entity]["model_version"] == metadata["model_version"]

    # Day 2 goes on from it: the windows day 1 had judged (the repeated steps) are judged by the state without
    # joining it again; the rest as a continuation of day 1.
    scores2 = _scores(day2)
    assert set(scores2["entity_id"]) == {"pump-01"}
    last_end = state1["pump-01"]["last_window_end_us"]
    seen = scores2["end_us"].to_numpy() <= last_end
    assert 0 < seen.sum() < len(scores2)
    # the row as written: the calibration's JSON, and its arrays in their columns (the fits' sorted scores too)
    kept = json.loads(state1["pump-01"]["calibration"])
    assert "sorted_scores" not in kept["calibration"] and "sorted_scores" not in kept["seed"]
    kept["calibration"]["sorted_scores"] = state1["pump-01"]["fit_scores"]
    kept["seed"]["sorted_scores"] = state1["pump-01"]["seed_scores"]
    online = OnlineTailCalibration.from_dict({**kept, "scores": state1["pump-01"]["scores"]})
    seen_tail, seen_threshold = online.judge_at_risk(scores2["score"].to_numpy()[seen], risk)
    tail, threshold = online.process_at_risk(scores2["score"].to_numpy()[~seen], risk)
    np.testing.assert_allclose(scores2["threshold"], np.r_[seen_threshold, threshold], rtol=1e-9)
    np.testing.assert_allclose(scores2["tail_probability"], np.r_[seen_tail, tail], rtol=1e-9)
    np.testing.assert_array_equal(scores2["is_anomaly"], scores2["score"] > scores2["threshold"])
    fresh = start_calibration(metadata).process_at_risk(scores2["score"].to_numpy()[~seen], risk)[1]
    assert not np.allclose(threshold[:100], fresh[:100])  # the state, not the model's seed, judged the first windows

    # Day 2's state: pump-01 where day 2 left it, pump-02 (off that day) as day 1 left it.
    state2 = _state(day2)
    assert sorted(state2) == ["pump-01", "pump-02"]
    np.testing.assert_allclose(state2["pump-01"]["scores"], online.scores, rtol=1e-12)
    assert state2["pump-01"]["last_window_end_us"] == scores2["end_us"].max()
    assert state2["pump-02"] == state1["pump-02"]
    state_file = day1 / STATE_FILE
    assert manifest["calibration_from"] == {"file": str(state_file.resolve()),
                                            "sha256": hashlib.sha256(state_file.read_bytes()).hexdigest()}
    assert manifest["outputs"]["calibration_state"] == [STATE_FILE]
    listed = sum(len(files) for files in manifest["outputs"].values())  # the count of files is of those listed
    assert manifest["stages"]["files_written"] == listed == len(list(day2.rglob("*.parquet")))
    assert manifest["settings"]["calibration_from"] == str(day1)
    assert (manifest["stages"]["calibration_entities_continued"], manifest["stages"].get(
        "calibration_entities_started", 0)) == (1, 0)

    # A rerun of day 2 from the same day 1 (an Airflow task cleared) writes the same outputs under the same run id.
    again = _run(days / "day2", tmp_path / "day2-again", small_model_dir, calibration_from=day1 / STATE_FILE)
    assert again["run_id"] == manifest["run_id"]
    assert _state(tmp_path / "day2-again") == state2
    np.testing.assert_array_equal(_scores(tmp_path / "day2-again")["threshold"], scores2["threshold"])


def test_an_entity_not_seen_for_longer_than_the_days_kept_is_left_out_of_the_next_state(days, small_model_dir,
                                                                                          tmp_path):
    """``--calibration-keep-days``: pump-02 is off on day 2; its last window ended some hours before pump-01's
    newest. Kept for longer than that, it stays in day 2's state; for less, it is left out and counted."""
    day1 = tmp_path / "day1"
    _run(days / "day1", day1, small_model_dir)
    state1 = _state(day1)
    longer = _run(days / "day2", tmp_path / "kept", small_model_dir, calibration_from=day1, keep_days=1.0)
    assert sorted(_state(tmp_path / "kept")) == ["pump-01", "pump-02"]
    assert longer["stages"]["calibration_entities_forgotten"] == 0
    assert longer["settings"]["calibration_keep_days"] == 1.0
    newest = _state(tmp_path / "kept")["pump-01"]["last_window_end_us"]
    gap_days = (newest - state1["pump-02"]["last_window_end_us"]) / 86_400e6
    assert 0 < gap_days < 1.0
    shorter = _run(days / "day2", tmp_path / "forgot", small_model_dir, calibration_from=day1,
                   keep_days=gap_days * 0.9)
    assert sorted(_state(tmp_path / "forgot")) == ["pump-01"]
    assert shorter["stages"]["calibration_entities_forgotten"] == 1
    assert shorter["run_id"] != longer["run_id"]  # the state written differs: so does the run id
    # pump-01's scores do not depend on what the state keeps of others
    np.testing.assert_array_equal(_scores(tmp_path / "forgot")["threshold"], _scores(tmp_path / "kept")["threshold"])


def test_a_state_is_not_taken_from_the_runs_own_output_nor_once_it_changed_after_planning(days, small_model_dir,
                                                                                           tmp_path):
    """The bug hunt of kept states: a run given its own --output as --calibration-from replaced the state it started
    from (a rerun of the day went on from its own, and its replay was refused); and a state replaced between the
    plan (which hashes it) and the workers' reading had been used under the plan's run id and manifest."""
    import time

    from seqwatch.pipelines.batch import _run_locked, plan_run

    day1 = tmp_path / "day1"
    _run(days / "day1", day1, small_model_dir)
    with pytest.raises(RunError, match=f"^--calibration-from names the run's own --output {day1}: the run replaces "
                                       f"the state it starts from there"):
        _run(days / "day2", day1, small_model_dir, calibration_from=day1)
    plan = plan_run(RunConfig(inputs=(str(days / "day2" / "*.csv"),), output=str(tmp_path / "day2"),
                              model_dir=str(small_model_dir), mapping=WIDE, pane_steps=256, online_calibration=True,
                              calibration_from=str(day1)))
    _run(days / "day2", tmp_path / "other", small_model_dir)  # another state, put where day 1's was
    (tmp_path / "other" / STATE_FILE).replace(day1 / STATE_FILE)
    with pytest.raises(RunError, match=f"^the calibration state {(day1 / STATE_FILE).resolve()} \\(--calibration-"
                                       f"from\\) is no longer the file the run planned with, after the run had "
                                       f"planned its reading"):
        _run_locked(plan, ["--runner=DirectRunner"], time.time())
    assert not (tmp_path / "day2" / "manifest.json").exists()


def test_a_run_without_online_calibration_replaces_the_state_a_run_before_it_left(days, small_model_dir, tmp_path):
    """The output folder holds one run: a state that an earlier run with online calibration left there is not the
    next run's, and goes with the earlier run's sinks. A series cannot go on from a run that kept none."""
    out = tmp_path / "out"
    _run(days / "day1", out, small_model_dir)
    assert (out / STATE_FILE).is_file()
    manifest = run_batch(RunConfig(inputs=(str(days / "day1" / "*.csv"),), output=str(out),
                                   model_dir=str(small_model_dir), mapping=WIDE, pane_steps=256),
                         ["--runner=DirectRunner"])
    assert not (out / STATE_FILE).exists() and "calibration_state" not in manifest["outputs"]
    with pytest.raises(RunError, match=f"holds no {STATE_FILE}"):
        _run(days / "day2", tmp_path / "day2", small_model_dir, calibration_from=out)
