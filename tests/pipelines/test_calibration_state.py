"""The kept per-entity calibration of a batch run (``calibration_state.py``): the file a run writes and a later run
reads, its checks, and ``calibrate`` on windows the kept state already holds."""
import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqwatch.models.thresholds import OnlineTailCalibration
from seqwatch.pipelines.calibration import calibrate
from seqwatch.pipelines.calibration_state import (REQUIRED_COLUMNS, STATE_FILE, STATE_SCHEMA, CalibrationStateError,
                                                  check_state, forget_stale, read_states, state_file, state_of,
                                                  write_states)
from seqwatch.schemas.elements import ScoredWindows, WindowBatch


def _online(seed=0):
    return OnlineTailCalibration(history=200, refit_every=10).start(np.random.default_rng(seed).gamma(2.0, 1.0, 50))


def test_a_run_folder_names_its_state_file_and_a_file_names_itself(tmp_path):
    assert state_file(str(tmp_path)) == str(tmp_path / STATE_FILE)
    assert state_file(str(tmp_path) + "/") == str(tmp_path / STATE_FILE)
    assert state_file("gs://bucket/day1") == "gs://bucket/day1/" + STATE_FILE
    assert state_file(str(tmp_path / "kept.parquet")) == str(tmp_path / "kept.parquet")


def test_a_state_written_is_read_back_and_carries_the_entities_a_run_did_not_see(tmp_path):
    first = {"pump-01": state_of(_online(1).to_dict(), "v1", 1_000),
             "pump-02": state_of(_online(2).to_dict(), "v1", 2_000)}
    assert write_states(str(tmp_path / "day1" / STATE_FILE), list(first.items())) == (2, 0)
    assert read_states(str(tmp_path / "day1" / STATE_FILE)) == first
    later = state_of(_online(3).to_dict(), "v2", 5_000)
    assert write_states(str(tmp_path / "day2" / STATE_FILE), [("pump-01", later)],
                        carried_from=str(tmp_path / "day1" / STATE_FILE)) == (2, 0)
    assert read_states(str(tmp_path / "day2" / STATE_FILE)) == {"pump-01": later, "pump-02": first["pump-02"]}
    # what a later run goes on from is the calibration itself
    restored = later.online()
    assert restored.to_dict() == _online(3).to_dict()
    assert "scores" not in json.loads(later.calibration)  # the history in its own column, as float64s
    history = pq.read_table(tmp_path / "day2" / STATE_FILE).to_pandas().set_index("entity_id")["scores"]
    np.testing.assert_array_equal(history["pump-01"], _online(3).scores)
    # no entity judged and none carried (a run that scored nothing): a file of no row, with its columns
    assert write_states(str(tmp_path / "none" / STATE_FILE), []) == (0, 0)
    assert pq.read_table(tmp_path / "none" / STATE_FILE).column_names == ["entity_id", "model_version",
                                                                          "last_window_end_us", "calibration",
                                                                          "scores", "fit_scores", "seed_scores"]


def test_check_state_gives_the_file_and_its_digest_or_one_sentence(tmp_path):
    day = tmp_path / "day1"
    write_states(str(day / STATE_FILE), [("pump-01", state_of(_online().to_dict(), "v1", 10))])
    file, digest = check_state(str(day))
    assert file == str(day / STATE_FILE)
    assert digest == hashlib.sha256((day / STATE_FILE).read_bytes()).hexdigest()
    assert check_state(str(day / STATE_FILE)) == (file, digest)

    with pytest.raises(CalibrationStateError, match=f"^--calibration-from: {tmp_path / 'day0' / STATE_FILE} does "
                                                    f"not exist; it takes the output folder of an earlier run with "
                                                    f"--online-calibration"):
        check_state(str(tmp_path / "day0"))
    # where nothing is there at all (the day before a series began), a run may start afresh
    assert check_state(str(tmp_path / "day0"), missing_ok=True) == (str(tmp_path / "day0" / STATE_FILE), "")
    (tmp_path / "plain").mkdir()  # a folder without a state is another folder than meant
    for missing_ok in (False, True):
        with pytest.raises(CalibrationStateError, match=f"{tmp_path / 'plain'} holds no {STATE_FILE}"):
            check_state(str(tmp_path / "plain"), missing_ok=missing_ok)
    (tmp_path / "text.parquet").write_text("not Parquet")
    with pytest.raises(CalibrationStateError, match="text.parquet is not a calibration state seqwatch can read"):
        check_state(str(tmp_path / "text.parquet"))
    # the right columns, damaged content (the bug hunt of kept states: each had failed inside the run, with a
    # traceback)
    good = pq.read_table(day / STATE_FILE).to_pylist()[0]
    for name, change in (("json", {"calibration": "{not json"}), ("empty", {"calibration": "{}"}),
                         ("null", {"last_window_end_us": None}), ("noid", {"entity_id": None}),
        ("huge", {"calibration": good["calibration"].replace('"since_refit": 0', '"since_refit": 1e400')}),
        ("twice", {})):
        rows = [{**good, **change}] * (2 if name == "twice" else 1)
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / f"{name}.parquet")
        with pytest.raises(CalibrationStateError, match=f"^--calibration-from: {tmp_path / name}.parquet is not a "
                                                        f"calibration state seqwatch can read \\("):
            check_state(str(tmp_path / f"{name}.parquet"))
    pq.write_table(pa.table({"entity_id": ["a"], "score": [1.0]}), tmp_path / "scores.parquet")
    with pytest.raises(CalibrationStateError, match="is not a calibration state written by seqwatch \\(it has no "
                                                    "model_version, last_window_end_us, calibration column\\)"):
        check_state(str(tmp_path / "scores.parquet"))


def test_entities_whose_last_window_is_older_than_the_days_kept_are_left_out_of_the_state_written(tmp_path):
    day_us = 86_400_000_000
    newest = 100 * day_us
    states = {"pump-01": state_of(_online(1).to_dict(), "v1", newest),
              "pump-02": state_of(_online(2).to_dict(), "v1", newest - 3 * day_us),  # on the limit: kept
              "pump-03": state_of(_online(3).to_dict(), "v1", newest - 3 * day_us - 1),
              "tmp-0417": state_of(_online(4).to_dict(), "v1", newest - 40 * day_us)}
    assert sorted(forget_stale(states, 3 * day_us)) == ["pump-01", "pump-02"]
    assert forget_stale(states, 0) == states and forget_stale({}, day_us) == {}
    file = str(tmp_path / "day1" / STATE_FILE)
    write_states(file, list(states.items()))
    # The next day: pump-01 judged again a day later; the newest window is now 101 days in, so pump-02 (4 days
    # before it) goes too. The limit is the data's newest window, not the clock: a rerun keeps the same entities.
    later = state_of(_online(5).to_dict(), "v1", newest + day_us)
    assert write_states(str(tmp_path / "day2" / STATE_FILE), [("pump-01", later)], carried_from=file,
                        keep_us=3 * day_us) == (1, 3)
    assert read_states(str(tmp_path / "day2" / STATE_FILE)) == {"pump-01": later}
    assert write_states(str(tmp_path / "day2b" / STATE_FILE), [("pump-01", later)], carried_from=file,
                        keep_us=45 * day_us) == (4, 0)


def test_a_state_that_changed_since_the_run_checked_it_is_refused(tmp_path):
    """The run plans with the state's digest; its workers read the file again, and a state replaced meanwhile had
    been used under the run id and manifest of the one before (the bug hunt of kept states)."""
    from seqwatch.pipelines.sources import InputChangedError

    file = str(tmp_path / STATE_FILE)
    write_states(file, [("pump-01", state_of(_online().to_dict(), "v1", 10))])
    _, digest = check_state(file)
    assert set(read_states(file, digest)) == {"pump-01"}
    write_states(file, [("pump-02", state_of(_online().to_dict(), "v1", 10))])
    with pytest.raises(InputChangedError, match=f"^the calibration state {file} \\(--calibration-from\\) is no "
                                                f"longer the file the run planned with$"):
        read_states(file, digest)
    with pytest.raises(InputChangedError):
        write_states(str(tmp_path / "next" / STATE_FILE), [], carried_from=file, carried_sha256=digest)


def test_a_run_that_continued_none_of_its_entities_says_so():
    from seqwatch.pipelines.cli import calibration_notice

    manifest = {"calibration_from": {"file": "/r/d1/calibration_state.parquet", "sha256": "x"},
                "stages": {"calibration_entities_started": 3}}
    assert calibration_notice("run", manifest) == (
        "seqwatch run: note: none of the 3 entities this run judged went on from the calibration state it started "
        "from (/r/d1/calibration_state.parquet): each started again from the model's calibration scores (the state "
        "holds other entity ids, as ids taken from dated file names are, or another model version)")
    assert calibration_notice("run", {**manifest, "stages": {"calibration_entities_started": 3,
                                                             "calibration_entities_continued": 1}}) is None
    assert calibration_notice("run", {"stages": {"calibration_entities_started": 3}}) is None  # no kept state
    assert calibration_notice("run", {"calibration_from": {"file": "/r/d0/calibration_state.parquet", "missing": True},
                                      "stages": {"calibration_entities_started": 3}}) == (
        "seqwatch run: note: there is no calibration state at /r/d0/calibration_state.parquet (--calibration-from), "
        "so every entity started from the model's calibration scores, as on the first day of a series")


def _pane(ends_s, scores):
    n = len(ends_s)
    wb = WindowBatch("m1", 1, ("a",), 1_000_000, np.asarray(ends_s, dtype=np.int64) * 1_000_000,
                     np.zeros((n, 0, 1), np.float32), np.ones((n, 0, 1), bool), n)
    return ScoredWindows(wb, np.asarray(scores, dtype=np.float64), 999.0, np.zeros(n, bool),
                         np.array(["normal"] * n, dtype=object), np.ones(n), np.ones((n, 1)), None, None, None, 0.9,
                         4, "mid", "v1")


def test_windows_a_kept_state_holds_are_judged_by_it_without_joining_it_again():
    """A day's file that repeats the day before's last steps: its windows that end no later than the state's last
    one are judged by the state's fit and leave its history as it was; the others join as usual."""
    rng = np.random.default_rng(4)
    scores = rng.gamma(2.0, 1.0, 30)
    kept = _online(5)
    online, by_hand = OnlineTailCalibration.from_dict(kept.to_dict()), OnlineTailCalibration.from_dict(kept.to_dict())
    judged = calibrate(_pane(range(100, 130), scores), online, 1e-3, joined_until_us=111_000_000)
    seen_tail, seen_threshold = by_hand.judge_at_risk(scores[:12], 1e-3)  # ends 100..111 s
    tail, threshold = by_hand.process_at_risk(scores[12:], 1e-3)
    np.testing.assert_allclose(judged.tail_probability, np.r_[seen_tail, tail])
    np.testing.assert_allclose(judged.threshold, np.r_[seen_threshold, threshold])
    np.testing.assert_array_equal(online.scores, by_hand.scores)
    assert online.scores.size == 50 + 18  # the 12 windows the state held did not join again


@pytest.mark.parametrize("scores_column", [False, True])
def test_a_state_of_an_earlier_format_is_read_and_carried_in_the_new_form(tmp_path, scores_column):
    """States written until 2026-12-04 keep each entity's scores inside its calibration JSON (220 kB an entity at
    the full history); those written until 2026-12-05 the sorted scores of its fits (about 80 kB of JSON text,
    most of the time a state took to write). A daily series goes on from such a file: it is checked and read as
    before, and the state the next run writes has every array in its column and a JSON of a few hundred bytes."""
    old = tmp_path / "day1" / STATE_FILE
    old.parent.mkdir()
    online = _online(7)
    data = online.to_dict()
    columns = {"entity_id": ["pump-01"], "model_version": ["v1"], "last_window_end_us": [1_000]}
    if scores_column:  # (2026-12-04: the history's scores in their column, the fits' in the JSON)
        columns["calibration"] = [json.dumps({k: v for k, v in data.items() if k != "scores"})]
        columns["scores"] = pa.array([list(online.scores)], pa.large_list(pa.float64()))
    else:
        columns["calibration"] = [json.dumps(data)]
    names = [*REQUIRED_COLUMNS, *(["scores"] * scores_column)]
    pq.write_table(pa.table(columns, schema=pa.schema([f for f in STATE_SCHEMA if f.name in names])), old)
    assert "sorted_scores" in pq.read_table(old).column("calibration")[0].as_py()
    file, digest = check_state(str(old.parent))
    state = read_states(file, digest)["pump-01"]
    assert (state.scores is None) != scores_column and state.fit_scores is None and state.seed_scores is None
    assert state.online().to_dict() == online.to_dict()
    assert write_states(str(tmp_path / "day2" / STATE_FILE), [], carried_from=file, carried_sha256=digest) == (1, 0)
    carried = read_states(str(tmp_path / "day2" / STATE_FILE))["pump-01"]
    assert None not in (carried.scores, carried.fit_scores, carried.seed_scores)
    assert "sorted_scores" not in carried.calibration and len(carried.calibration) < 500
    assert carried.online().to_dict() == online.to_dict()
    assert carried == state_of(online.to_dict(), "v1", 1_000)


def test_a_state_whose_scores_are_missing_is_refused_before_the_run(tmp_path):
    table = pa.table({"entity_id": ["pump-01"], "model_version": ["v1"], "last_window_end_us": [1_000],
                      "calibration": [json.dumps({k: v for k, v in _online(7).to_dict().items() if k != "scores"})],
                      "scores": pa.array([None], pa.large_list(pa.float64()))})
    (tmp_path / "day1").mkdir()
    pq.write_table(table, tmp_path / "day1" / STATE_FILE)
    with pytest.raises(CalibrationStateError, match="is not a calibration state seqwatch can read"):
        check_state(str(tmp_path / "day1"))


def test_a_streams_workers_go_on_without_a_state_that_changed_since_planning_and_a_batch_runs_refuse_it(tmp_path,
                                                                                                     caplog):
    """A stream's worker reads the kept state when it first needs it, which can be long after planning (a worker
    restarted): a state replaced since then is a warning, and the stream's entities start from the model's
    calibration scores; a batch run's workers refuse it (its manifest names the state it planned with)."""
    from seqwatch.pipelines.calibration import _CalibrateEntity, _CalibrateEntityAtEnd
    from seqwatch.pipelines.sources import InputChangedError

    file = str(tmp_path / STATE_FILE)
    write_states(file, [("pump-01", state_of(_online().to_dict(), "v1", 10))])
    _, digest = check_state(file)
    stream, batch = (cls("m", "m", state_from=file, state_sha256=digest) for cls in (_CalibrateEntity,
                                                                                      _CalibrateEntityAtEnd))
    stream.setup()
    assert stream._kept_state("pump-01").model_version == "v1"  # unchanged: used
    write_states(file, [("pump-01", state_of(_online(2).to_dict(), "v2", 10))])
    stream.setup(), batch.setup()  # (a worker that reads it now)
    with caplog.at_level("WARNING"):
        assert stream._kept_state("pump-01") is None
    assert f"the calibration state {file} (--calibration-from) cannot be used (the calibration state" in caplog.text
    with pytest.raises(InputChangedError):
        batch._kept_state("pump-01")


def test_a_stream_plans_with_the_state_it_goes_on_from_or_refuses_in_one_sentence(small_model_dir, tmp_path,
                                                                                  capsys):
    from seqwatch.pipelines.cli import main
    from seqwatch.pipelines.streaming import plan_stream

    day1 = tmp_path / "day1"
    write_states(str(day1 / STATE_FILE), [("pump-01", state_of(_online().to_dict(), "v1", 10))])
    (tmp_path / "x.csv").write_text("entity_id,channel,timestamp,value\n")
    plan = plan_stream(str(small_model_dir), str(tmp_path / "o"), online_calibration=True, calibration_from=str(day1))
    assert (plan.calibration_state_from, plan.calibration_state_sha256) == check_state(str(day1))
    assert plan_stream(str(small_model_dir), str(tmp_path / "o"), online_calibration=True).calibration_state_from == ""
    with pytest.raises(ValueError, match="calibration_from continues an earlier run's online calibration: it needs "
                                         "online_calibration=True"):
        plan_stream(str(small_model_dir), str(tmp_path / "o"), calibration_from=str(day1))
    for flags, sentence in (
            (["--calibration-from", str(day1)], "--calibration-from continues an earlier run's online calibration: "
                                                "give --online-calibration too"),
            (["--online-calibration", "--calibration-from", str(tmp_path / "day0")],
             f"--calibration-from: {tmp_path / 'day0' / STATE_FILE} does not exist; it takes the output folder of an "
             f"earlier run with --online-calibration")):
        code = main(["stream", "--source", "replay", "--input", str(tmp_path / "x.csv"), "--model-dir",
                     str(small_model_dir), "--output", str(tmp_path / "out"), *flags])
        assert (code, capsys.readouterr().err.strip()) == (2, f"seqwatch stream: {sentence}")


def test_a_streams_folder_of_entity_files_is_read_as_one_state_each_entitys_latest(tmp_path):
    """A stream writes ``calibration_state/stream-<start>/<entity>.parquet``; a restarted one writes in a folder of
    its own. Read as one state: each entity's row with the latest last window end, whichever start wrote it; a
    running stream's own folder left out (``skip``); a batch run's file preferred where a folder has both."""
    from seqwatch.pipelines.calibration_state import (STATE_FOLDER, state_source, stream_state_files,
                                                      write_entity_state)
    from seqwatch.pipelines.sources import InputChangedError

    out = tmp_path / "stream"
    first, second = (str(out / STATE_FOLDER / f"stream-2026120{k}T000000000000Z") for k in (1, 2))
    states = {"a1": state_of(_online(1).to_dict(), "v1", 1_000), "b1": state_of(_online(2).to_dict(), "v1", 2_000),
              "a2": state_of(_online(3).to_dict(), "v1", 3_000), "b2": state_of(_online(4).to_dict(), "v1", 1_500)}
    write_entity_state(first, "pump-01", states["a1"])
    write_entity_state(first, "pump-02", states["b1"])
    write_entity_state(second, "pump-01", states["a2"])
    write_entity_state(second, "pump-02", states["b2"])  # (an earlier end than the first start's: not taken)
    write_entity_state(second, "Site A/pump 3", states["a1"])
    folder = str(out / STATE_FOLDER)
    assert state_source(str(out)) == state_source(folder) == folder
    assert [f[len(folder) + 1:] for f in stream_state_files(folder)] == [
        "stream-20261201T000000000000Z/pump-01.parquet", "stream-20261201T000000000000Z/pump-02.parquet",
        f"stream-20261202T000000000000Z/Site_A_pump_3-{hashlib.sha256(b'Site A/pump 3').hexdigest()[:8]}.parquet",
        "stream-20261202T000000000000Z/pump-01.parquet", "stream-20261202T000000000000Z/pump-02.parquet"]
    assert read_states(folder) == {"pump-01": states["a2"], "pump-02": states["b1"], "Site A/pump 3": states["a1"]}
    assert read_states(folder, skip=second) == {"pump-01": states["a1"], "pump-02": states["b1"]}

    source, digest = check_state(str(out))
    assert source == folder and read_states(folder, digest) == read_states(folder)
    write_entity_state(first, "pump-02", states["b2"])  # a file changed since the check
    with pytest.raises(InputChangedError, match=f"the calibration state {folder} .* is no longer the folder of "
                                                f"files the run planned with"):
        read_states(folder, digest)
    # skip leaves a running stream's own writes out of the digest: what it reads stays what was planned
    _, before = check_state(str(out))
    write_entity_state(str(out / STATE_FOLDER / "stream-20261203T000000000000Z"), "pump-01", states["a1"])
    assert read_states(folder, before, skip=str(out / STATE_FOLDER / "stream-20261203T000000000000Z")) == {
        "pump-01": states["a2"], "pump-02": states["b2"], "Site A/pump 3": states["a1"]}

    (tmp_path / "damaged" / STATE_FOLDER / "stream-1").mkdir(parents=True)
    (tmp_path / "damaged" / STATE_FOLDER / "stream-1" / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(CalibrationStateError, match=f"^--calibration-from: {tmp_path / 'damaged' / STATE_FOLDER}/"
                                                    f"stream-1/x.parquet is not a calibration state seqwatch can "
                                                    f"read"):
        check_state(str(tmp_path / "damaged"))
    # a batch run that goes on from a stream's output writes them all in its one file, with its own entities
    _, digest = check_state(str(out))
    assert write_states(str(tmp_path / "day2" / STATE_FILE), [("pump-07", states["b1"])], folder, digest) == (4, 0)
    assert read_states(str(tmp_path / "day2" / STATE_FILE)) == {**read_states(folder), "pump-07": states["b1"]}
    write_states(str(out / STATE_FILE), [("pump-09", states["a1"])])  # a batch run's file: preferred
    assert state_source(str(out)) == str(out / STATE_FILE)


def test_a_stream_restarted_into_its_output_goes_on_from_the_calibration_written_there(small_model_dir, tmp_path,
                                                                                      capsys):
    """``plan_stream`` with online calibration: the stream writes into a folder of its own start under
    ``calibration_state/``; one restarted into an output where an earlier stream wrote its calibration goes on
    from it unasked (a state given with ``calibration_from`` is taken instead); without online calibration, none."""
    from seqwatch.pipelines.calibration_state import STATE_FOLDER, write_entity_state
    from seqwatch.pipelines.cli import main
    from seqwatch.pipelines.streaming import plan_stream

    out = tmp_path / "out"
    first = plan_stream(str(small_model_dir), str(out), online_calibration=True)
    assert first.calibration_state_from == "" and first.calibration_save_every_s == 300.0
    assert first.calibration_state_to.startswith(f"{out / STATE_FOLDER}/stream-")
    assert plan_stream(str(small_model_dir), str(out)).calibration_state_to == ""
    write_entity_state(first.calibration_state_to, "pump-01", state_of(_online().to_dict(), "v1", 10))
    again = plan_stream(str(small_model_dir), str(out), online_calibration=True, calibration_save_every_s=0)
    assert (again.calibration_state_from, again.calibration_state_sha256) == check_state(str(out))
    assert again.calibration_state_from == str(out / STATE_FOLDER) and again.calibration_save_every_s == 0
    assert again.calibration_state_to != first.calibration_state_to
    assert plan_stream(str(small_model_dir), str(out)).calibration_state_from == ""
    day1 = tmp_path / "day1"
    write_states(str(day1 / STATE_FILE), [("pump-01", state_of(_online(2).to_dict(), "v1", 10))])
    given = plan_stream(str(small_model_dir), str(out), online_calibration=True, calibration_from=str(day1))
    assert given.calibration_state_from == str(day1 / STATE_FILE)

    (tmp_path / "x.csv").write_text("entity_id,channel,timestamp,value\n")
    for flags, sentence in (
            (["--calibration-save-every", "60"], "--calibration-save-every sets how often --online-calibration "
                                                 "writes each entity's calibration: give --online-calibration too"),
            (["--online-calibration", "--calibration-save-every", "-1"],
             "--calibration-save-every must be zero or a positive number of seconds, got -1")):
        code = main(["stream", "--source", "replay", "--input", str(tmp_path / "x.csv"), "--model-dir",
                     str(small_model_dir), "--output", str(tmp_path / "o2"), *flags])
        assert (code, capsys.readouterr().err.strip()) == (2, f"seqwatch stream: {sentence}")


def test_a_restarted_stream_gathers_the_earlier_starts_files_into_one(tmp_path):
    """``gather_stream_states`` (a restarted stream, before its job starts): the earlier starts' entity files
    become one file of the same state (each entity's latest row) and their folders go; with ``keep_us``, less the
    entities whose last window is that much older than the newest; one file alone is left as it is."""
    from seqwatch.pipelines.calibration_state import (STATE_FOLDER, gather_stream_states, stream_state_files,
                                                      write_entity_state)

    folder = tmp_path / "stream" / STATE_FOLDER
    write_entity_state(str(folder / "stream-1"), "pump-01", state_of(_online(1).to_dict(), "v1", 1_000))
    assert gather_stream_states(str(folder), str(folder / "stream-3-carried")) == ""  # one file: nothing to gather
    assert [f[len(str(folder)) + 1:] for f in stream_state_files(str(folder))] == ["stream-1/pump-01.parquet"]
    write_entity_state(str(folder / "stream-1"), "pump-02", state_of(_online(2).to_dict(), "v1", 2_000))
    write_entity_state(str(folder / "stream-2"), "pump-01", state_of(_online(3).to_dict(), "v1", 9_000))
    write_entity_state(str(folder / "stream-2"), "pump-03", state_of(_online(4).to_dict(), "v1", 5_000))
    before = read_states(str(folder))
    digest = gather_stream_states(str(folder), str(folder / "stream-3-carried"))
    assert [f[len(str(folder)) + 1:] for f in stream_state_files(str(folder))] == [
        "stream-3-carried/entities.parquet"]
    assert sorted(p.name for p in folder.iterdir()) == ["stream-3-carried"]
    assert read_states(str(folder)) == before and digest == check_state(str(folder))[1]
    assert read_states(str(folder), digest, skip=str(folder / "stream-3")) == before
    # again, with the files the next start's stream wrote beside it, and a rule that forgets pump-02
    write_entity_state(str(folder / "stream-3"), "pump-03", state_of(_online(5).to_dict(), "v1", 6_000))
    gather_stream_states(str(folder), str(folder / "stream-4-carried"), keep_us=5_000)
    assert sorted(p.name for p in folder.iterdir()) == ["stream-4-carried"]
    assert read_states(str(folder)) == {"pump-01": before["pump-01"],
                                        "pump-03": state_of(_online(5).to_dict(), "v1", 6_000)}
