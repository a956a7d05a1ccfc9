"""Per-entity online calibration (``--online-calibration``): the pure step against OnlineTailCalibration, the
model's risk, the Beam step with panes out of order (TestStream), and a batch run end to end read back from
Parquet."""
import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from seqwatch.models.artifact import read_metadata
from seqwatch.models.thresholds import OnlineTailCalibration, severity_of
from seqwatch.pipelines.calibration import (HISTORY, REFIT_EVERY, CalibrateOnline, CalibrationError, calibrate,
                                            model_risk, start_calibration)
from seqwatch.schemas.elements import ScoredWindows, WindowBatch


def _metadata(method="pot", quantile=0.995, risk=1e-3, seed=None):
    return {"model_version": "v1", "tail": {"sorted_scores": list(seed if seed is not None else range(1, 201))},
            "config": {"scoring": {"threshold_method": method, "threshold_quantile": quantile, "pot_risk": risk,
                                   "pot_initial_quantile": 0.95}}}


def test_the_risk_is_the_models_threshold_probability():
    assert model_risk(_metadata("pot", risk=1e-3)) == (1e-3, 0.95)
    assert model_risk(_metadata("quantile", quantile=0.99))[0] == pytest.approx(0.01)
    with pytest.raises(CalibrationError, match="online calibration needs a model whose threshold is rarer than its "
                                               "tail fit's start"):
        model_risk(_metadata("quantile", quantile=0.9))


def _pane(pane, ends, scores, version="v1", entity="m1"):
    n = len(ends)
    wb = WindowBatch(entity, pane, ("a",), 1_000_000, np.asarray(ends, dtype=np.int64) * 1_000_000,
                     np.zeros((n, 0, 1), np.float32), np.ones((n, 0, 1), bool), n)
    return ScoredWindows(wb, np.asarray(scores, dtype=np.float64), 999.0, np.zeros(n, bool),
                         np.array(["normal"] * n, dtype=object), np.ones(n), np.ones((n, 1)), None, None, None, 0.9,
                         4, "mid", version)


def test_calibrate_judges_each_window_by_the_seed_and_the_entitys_earlier_windows():
    """Two panes in order through ``calibrate`` give what OnlineTailCalibration gives on their scores at once
    (``process_at_risk``, checked by hand in tests/models): tail probabilities, and as threshold the score at the
    model's risk under the fit that judged the window."""
    rng = np.random.default_rng(3)
    metadata = _metadata(seed=np.sort(rng.gamma(2.0, 1.0, 400)))
    scores = np.r_[rng.gamma(2.0, 1.0, 150), [30.0, 31.0], rng.gamma(2.0, 3.0, 80)]
    online = start_calibration(metadata)
    first = calibrate(_pane(1, range(150), scores[:150]), online, 1e-3)
    second = calibrate(_pane(2, range(150, 232), scores[150:]), online, 1e-3)

    at_once = OnlineTailCalibration(HISTORY, REFIT_EVERY, 0.95).start(np.asarray(metadata["tail"]["sorted_scores"]))
    tail, threshold = at_once.process_at_risk(scores, 1e-3)
    got_tail = np.r_[first.tail_probability, second.tail_probability]
    got_threshold = np.r_[first.threshold, second.threshold]
    np.testing.assert_allclose(got_tail, tail)
    np.testing.assert_allclose(got_threshold, threshold)
    assert len(set(np.round(got_threshold, 9))) == 3  # three fits: the seed's, after 100 and after 200 windows
    got_anomaly = np.r_[first.is_anomaly, second.is_anomaly]
    np.testing.assert_array_equal(got_anomaly, scores > threshold)
    assert got_anomaly[150] and got_anomaly[151]  # the two high scores
    np.testing.assert_array_equal(np.r_[first.severity, second.severity], severity_of(tail, got_anomaly))
    np.testing.assert_array_equal(first.score, scores[:150])  # scores are not changed


def _two_entities_panes(metadata: dict, seed: int) -> dict:
    """``{(entity, k): pane}``: panes 1 and 2 (windows ending 100-159 s and 200-259 s) of entities m1 and m2, of
    the model's version, with random scores."""
    rng = np.random.default_rng(seed)
    return {(entity, k): _pane(k, range(100 * k, 100 * k + 60), rng.gamma(2.0, 0.02, 60), metadata["model_version"],
                               entity)
            for entity in ("m1", "m2") for k in (1, 2)}


def test_windows_are_judged_in_event_time_order_though_panes_arrive_out_of_order(small_model_dir):
    """Streaming: pane 2 reaches the step before pane 1. Each entity's panes are released in event-time order as
    the watermark passes them, so the result equals ``calibrate`` on pane 1 then pane 2, per entity."""
    metadata = read_metadata(small_model_dir)
    panes = _two_entities_panes(metadata, seed=5)
    risk, _ = model_risk(metadata)
    expected = []
    for entity in ("m1", "m2"):
        online = start_calibration(metadata)
        for k in (1, 2):
            sw = calibrate(panes[(entity, k)], online, risk)
            expected.append((entity, k, tuple(np.round(sw.tail_probability, 12)), tuple(np.round(sw.threshold, 9))))
    stream = (TestStream()
              .add_elements([TimestampedValue(panes[("m1", 2)], Timestamp(260)),
                             TimestampedValue(panes[("m2", 2)], Timestamp(260))])
              .add_elements([TimestampedValue(panes[("m1", 1)], Timestamp(160)),
                             TimestampedValue(panes[("m2", 1)], Timestamp(160))])
              .advance_watermark_to(Timestamp(1000))
              .advance_watermark_to_infinity())
    with beam.Pipeline(options=PipelineOptions(["--streaming", "--runner=DirectRunner"])) as p:
        out = (p | stream | CalibrateOnline(str(small_model_dir))
               | beam.Map(lambda sw: (sw.windows.entity_id, sw.windows.pane, tuple(np.round(sw.tail_probability, 12)),
                                      tuple(np.round(sw.threshold, 9)))))
        assert_that(out, equal_to(expected))


def test_in_a_stream_a_pane_released_after_a_later_one_still_joins_the_history(small_model_dir):
    """A late pane (its windows end before those already judged) is judged and joins the entity's history, as every
    pane does in a stream; only the windows of a kept state a batch run started from are judged without joining
    (the review of kept states: the rule had leaked into every release)."""
    metadata = read_metadata(small_model_dir)
    version = metadata["model_version"]
    rng = np.random.default_rng(5)
    panes = {k: _pane(k, range(100 * k, 100 * k + 60), rng.gamma(2.0, 0.02, 60), version) for k in (1, 2, 3)}
    risk, _ = model_risk(metadata)
    online = start_calibration(metadata)
    expected = [(k, tuple(np.round(calibrate(panes[k], online, risk).threshold, 9))) for k in (2, 1, 3)]
    assert online.scores.size == len(metadata["tail"]["sorted_scores"]) + 180  # all three joined
    stream = (TestStream()
              .add_elements([TimestampedValue(panes[2], Timestamp(260))])
              .advance_watermark_to(Timestamp(300))
              .add_elements([TimestampedValue(panes[1], Timestamp(160))])  # behind the watermark
              .advance_watermark_to(Timestamp(330))
              .add_elements([TimestampedValue(panes[3], Timestamp(360))])
              .advance_watermark_to(Timestamp(1000))
              .advance_watermark_to_infinity())
    with beam.Pipeline(options=PipelineOptions(["--streaming", "--runner=DirectRunner"])) as p:
        out = (p | stream | CalibrateOnline(str(small_model_dir))
               | beam.Map(lambda sw: (sw.windows.pane, tuple(np.round(sw.threshold, 9)))))
        assert_that(out, equal_to(expected))


@pytest.mark.parametrize("keep_s, fresh", [(30, True), (120, False), (0, False)])
def test_in_a_stream_an_entity_unseen_for_longer_than_kept_starts_afresh(small_model_dir, keep_s, fresh):
    """``keep_us`` in a stream: pane 1's last window ends at 159 s; the watermark then passes 250 s before pane 2
    (windows ending 200-259 s) comes. Kept for 30 s, the entity's calibration was dropped at 189 s (and pane 2's
    gap is longer than that anyway) and pane 2 is judged from the model's calibration scores; kept for 120 s (or
    for ever), pane 2 continues pane 1's history."""
    metadata = read_metadata(small_model_dir)
    version = metadata["model_version"]
    rng = np.random.default_rng(7)
    panes = {k: _pane(k, range(100 * k, 100 * k + 60), rng.gamma(2.0, 0.02, 60), version) for k in (1, 2)}
    risk, _ = model_risk(metadata)
    online = start_calibration(metadata)
    first = calibrate(panes[1], online, risk)
    second = calibrate(panes[2], start_calibration(metadata) if fresh else online, risk)
    other = calibrate(panes[2], online if fresh else start_calibration(metadata), risk)
    assert not np.allclose(second.threshold, other.threshold)  # the two ways tell apart
    expected = [(1, tuple(np.round(first.threshold, 9))), (2, tuple(np.round(second.threshold, 9)))]
    stream = (TestStream()
              .add_elements([TimestampedValue(panes[1], Timestamp(160))])
              .advance_watermark_to(Timestamp(250))
              .add_elements([TimestampedValue(panes[2], Timestamp(260))])
              .advance_watermark_to(Timestamp(1000))
              .advance_watermark_to_infinity())
    with beam.Pipeline(options=PipelineOptions(["--streaming", "--runner=DirectRunner"])) as p:
        out = (p | stream | CalibrateOnline(str(small_model_dir), keep_us=keep_s * 1_000_000)
               | beam.Map(lambda sw: (sw.windows.pane, tuple(np.round(sw.threshold, 9)))))
        assert_that(out, equal_to(expected))


@pytest.mark.parametrize("streaming", [False, True])
def test_an_entity_back_after_a_gap_longer_than_kept_starts_afresh_in_batch_and_stream_alike(small_model_dir,
                                                                                           streaming):
    """The gap rule judges by the windows, not by when a timer fires: both panes come before the watermark moves
    (a stream's backlog) or in one batch run (all released at the end), and pane 2, whose first window ends 41 s
    after pane 1's last, starts afresh when the calibration is kept for 30 s; pane 3 (ending 10 s after pane 2's
    windows) goes on from pane 2."""
    metadata = read_metadata(small_model_dir)
    version = metadata["model_version"]
    rng = np.random.default_rng(8)
    panes = {1: _pane(1, range(100, 160), rng.gamma(2.0, 0.02, 60), version),
             2: _pane(2, range(200, 260), rng.gamma(2.0, 0.02, 60), version),
             3: _pane(3, range(270, 330), rng.gamma(2.0, 0.02, 60), version)}
    risk, _ = model_risk(metadata)
    online, fresh = start_calibration(metadata), start_calibration(metadata)
    expected = [(1, tuple(np.round(calibrate(panes[1], online, risk).threshold, 9))),
                (2, tuple(np.round(calibrate(panes[2], fresh, risk).threshold, 9))),
                (3, tuple(np.round(calibrate(panes[3], fresh, risk).threshold, 9)))]
    elements = [TimestampedValue(panes[k], Timestamp(100 * k + 60 if k < 3 else 330)) for k in (1, 2, 3)]
    if streaming:
        options = PipelineOptions(["--streaming", "--runner=DirectRunner"])
        source = (TestStream().add_elements(elements).advance_watermark_to(Timestamp(1000))
                  .advance_watermark_to_infinity())
    else:
        options = PipelineOptions(["--runner=DirectRunner"])
        source = beam.Create(elements)  # (Create stamps each element with its TimestampedValue's time)
    with beam.Pipeline(options=options) as p:
        out = (p | source | CalibrateOnline(str(small_model_dir), at_end=not streaming, keep_us=30_000_000,
                                            pane_wait_us=60_000_000)  # a pane spans 60 s here
               | beam.Map(lambda sw: (sw.windows.pane, tuple(np.round(sw.threshold, 9)))))
        assert_that(out, equal_to(expected))


class _Held:
    """A stand-in for a Beam state cell (``read``, ``clear``), for calling a timer callback directly."""

    def __init__(self, value):
        self.value = value

    def read(self):
        return self.value

    def write(self, value):
        self.value = value

    def clear(self):
        self.value = None


def test_the_forget_timer_drops_an_entitys_calibration_unless_a_waiting_pane_goes_on_from_it(small_model_dir):
    """What ``on_forget`` frees: the entity's state, once no waiting pane has a window within ``keep_us`` of its
    last judged one (such a pane will go on from the state when its release comes)."""
    from seqwatch.pipelines.calibration import _CalibrateEntity

    fn = _CalibrateEntity(str(small_model_dir), str(small_model_dir), keep_us=30_000_000)
    state = ("v1", {"scores": []}, 159_000_000, None, False)  # its last judged window ended at 159 s
    near = (330_000_000, _pane(3, range(180, 240), np.ones(60)))  # first window ends 21 s after: goes on
    far = (400_000_000, _pane(4, range(200, 260), np.ones(60)))  # 41 s after: would start afresh
    for waiting, dropped in (([], True), ([near], False), ([far], True), ([far, near], False)):
        online = _Held(state)
        fn.on_forget(Timestamp(micros=189_000_000), _Held(waiting), online)
        assert (online.read() is None) == dropped, (waiting, dropped)
    online = _Held(None)  # nothing kept (a version that could not be calibrated): nothing to do
    fn.on_forget(Timestamp(micros=189_000_000), _Held([]), online)
    assert online.read() is None


@pytest.mark.parametrize("save_every_s", [300.0, 0.0])
def test_a_stream_writes_each_entitys_calibration_when_its_input_ends(small_model_dir, tmp_path, save_every_s):
    """A stream with a folder to write in (``state_to``): once the input ends, each entity's file there holds the
    calibration it reached (the same history, fit and steps to its next refit as ``calibrate`` pane after pane)
    and its last window's end, read back as the state a restart goes on from; written at each release (0) or
    only at the end, the files are the same."""
    from seqwatch.pipelines.calibration_state import read_states, stream_state_files

    metadata = read_metadata(small_model_dir)
    version = metadata["model_version"]
    panes = _two_entities_panes(metadata, seed=9)
    risk, _ = model_risk(metadata)
    expected = {}
    for entity in ("m1", "m2"):
        online = start_calibration(metadata)
        for k in (1, 2):
            calibrate(panes[(entity, k)], online, risk)
        expected[entity] = online.to_dict()
    folder = tmp_path / "calibration_state"
    stream = (TestStream()
              .add_elements([TimestampedValue(panes[(e, 1)], Timestamp(160)) for e in ("m1", "m2")])
              .advance_watermark_to(Timestamp(200))
              .add_elements([TimestampedValue(panes[(e, 2)], Timestamp(260)) for e in ("m1", "m2")])
              .advance_watermark_to(Timestamp(1000))
              .advance_watermark_to_infinity())
    with beam.Pipeline(options=PipelineOptions(["--streaming", "--runner=DirectRunner"])) as p:
        _ = p | stream | CalibrateOnline(str(small_model_dir), state_to=str(folder / "stream-1"),
                                         save_every_s=save_every_s)
    assert [f.rsplit("/", 1)[1] for f in stream_state_files(str(folder))] == ["m1.parquet", "m2.parquet"]
    states = read_states(str(folder))
    assert sorted(states) == ["m1", "m2"]
    for entity, state in states.items():
        assert (state.model_version, state.last_window_end_us) == (version, 259_000_000)
        got = state.online().to_dict()
        np.testing.assert_array_equal(got.pop("scores"), expected[entity].pop("scores"))
        assert got == expected[entity]


def test_a_streams_entity_file_is_written_every_so_often_of_wall_clock_and_at_the_end(tmp_path, monkeypatch):
    """When ``_save`` writes: not at the first release (the seed and a pane), then once ``save_every_s`` of wall
    clock passed since the last write (or that first release), never twice for the same last window, and at the
    end whatever the clock says, and so at every release after the end's timer fired; with 0, at every release
    that moved on. What it returns is kept with the calibration (the ``ONLINE`` cell's sixth item)."""
    from seqwatch.pipelines import calibration
    from seqwatch.pipelines.calibration import _CalibrateEntity
    from seqwatch.pipelines.calibration_state import read_states, stream_entity_file

    clock = [1000.0]
    monkeypatch.setattr(calibration.time, "time", lambda: clock[0])
    online = start_calibration(_metadata()).to_dict()

    def state(end_s):
        return ("v1", online, end_s * 1_000_000, None, False)

    folder = str(tmp_path / "stream-1")
    fn = _CalibrateEntity("m", "m", state_dir=folder, save_every_s=300.0)
    file = stream_entity_file(folder, "pump-01")

    def written():
        try:
            return read_states(folder.rsplit("/", 1)[0])["pump-01"].last_window_end_us // 1_000_000
        except (KeyError, OSError):
            return None

    saved = fn._save("pump-01", state(100), None)  # the first release: counted from, not written
    assert written() is None and saved == (1000.0, None, False)
    clock[0] = 1299.0
    saved = fn._save("pump-01", state(160), saved)
    assert written() is None and saved == (1000.0, None, False)
    clock[0] = 1300.0
    saved = fn._save("pump-01", state(220), saved)
    assert written() == 220 and saved == (1300.0, 220_000_000, False)
    clock[0] = 2000.0
    stamp = os.stat(file).st_mtime_ns
    assert fn._save("pump-01", state(220), saved) == saved  # nothing new since
    assert os.stat(file).st_mtime_ns == stamp
    clock[0] = 2001.0
    saved = fn._save("pump-01", state(280), saved, at_end=True)  # the input ended: written whatever the clock says
    assert written() == 280 and saved == (2001.0, 280_000_000, True)
    saved = fn._save("pump-01", state(340), saved)  # a release after the end's timer (Prism fires it first): too
    assert written() == 340 and saved[2]

    every = _CalibrateEntity("m", "m", state_dir=str(tmp_path / "stream-2"), save_every_s=0.0)
    assert every._save("pump-02", state(100), None) == (2001.0, 100_000_000, False)
    assert read_states(str(tmp_path))["pump-02"].last_window_end_us == 100_000_000


def test_the_end_of_input_writes_the_file_unless_releases_are_still_to_come(tmp_path):
    """``on_end``: with no pane waiting, the entity's calibration is written and marked as ended; with panes still
    to release (Prism fires this timer before them), nothing is written, and the mark makes those releases write."""
    from seqwatch.pipelines.calibration import _CalibrateEntity, _Saved
    from seqwatch.pipelines.calibration_state import read_states

    online = start_calibration(_metadata()).to_dict()
    fn = _CalibrateEntity("m", "m", state_dir=str(tmp_path / "stream-1"), save_every_s=300.0)
    state = ("v1", online, 220_000_000, None, False)
    waiting = _Held([(300_000_000, _pane(3, range(240, 300), np.ones(60)))])
    cell = _Held(state + (_Saved(1.0, None, False),))
    fn.on_end(cell, waiting, "pump-01")
    assert cell.read()[5] == _Saved(1.0, None, True) and not (tmp_path / "stream-1").exists()
    cell = _Held(state + (_Saved(1.0, None, False),))
    fn.on_end(cell, _Held([]), "pump-01")
    assert cell.read()[5].end_us == 220_000_000 and cell.read()[5].ended
    assert read_states(str(tmp_path))["pump-01"].last_window_end_us == 220_000_000


def test_when_a_stream_forgets_an_entity_its_file_goes_too(small_model_dir, tmp_path):
    """``--calibration-keep-days`` in a stream that writes its calibration: the entity's file is deleted with its
    state, so a restart does not bring back an id that went away (and the folder does not grow with them)."""
    from seqwatch.pipelines.calibration import _CalibrateEntity
    from seqwatch.pipelines.calibration_state import state_of, stream_entity_file, write_entity_state

    folder = str(tmp_path / "stream-1")
    fn = _CalibrateEntity(str(small_model_dir), str(small_model_dir), keep_us=30_000_000, state_dir=folder)
    kept = start_calibration(read_metadata(small_model_dir)).to_dict()
    for entity in ("pump-01", "pump-02"):
        write_entity_state(folder, entity, state_of(kept, "v1", 159_000_000))
    near = (330_000_000, _pane(3, range(180, 240), np.ones(60)))
    for entity, waiting, gone in (("pump-01", [near], False), ("pump-02", [], True)):
        online = _Held(("v1", kept, 159_000_000, None, False, (1.0, 159_000_000, False)))
        fn.on_forget(Timestamp(micros=189_000_000), _Held(waiting), online, entity)
        assert os.path.exists(stream_entity_file(folder, entity)) != gone, entity
        assert (online.read() is None) == gone, entity


def test_an_unknown_model_version_is_one_sentence(small_model_dir):
    from seqwatch.pipelines.calibration import _ModelCalibrations

    with pytest.raises(CalibrationError, match="model version v-none is neither"):
        _ModelCalibrations(str(small_model_dir), str(small_model_dir)).metadata("v-none")


def test_a_new_model_version_restarts_the_entitys_calibration_from_its_own_scores(small_model_dir, tmp_path):
    """``--watch-models``: panes scored by a newer version of the model root are judged by a calibration that
    starts again from that version's calibration scores, not by the history of the old version's scores."""
    import shutil

    from seqwatch.models.artifact import load_artifact, save_artifact
    from seqwatch.models.thresholds import TailCalibration

    root = tmp_path / "models"
    shutil.copytree(small_model_dir, root / "v1")
    detector = load_artifact(root / "v1")
    tail = detector.tail.to_dict()
    detector.tail = TailCalibration.from_dict({**tail, "sorted_scores": [3 * s for s in tail["sorted_scores"]]})
    save_artifact(detector, root / "v2")
    old, new = read_metadata(root / "v1"), read_metadata(root / "v2")
    assert old["model_version"] != new["model_version"]
    rng = np.random.default_rng(8)
    first = _pane(1, range(100, 160), rng.gamma(2.0, 0.02, 60), old["model_version"])
    second = _pane(2, range(200, 260), rng.gamma(2.0, 0.02, 60), new["model_version"])
    risk, _ = model_risk(old)
    expected = [(1, tuple(np.round(calibrate(first, start_calibration(old), risk).threshold, 9))),
                (2, tuple(np.round(calibrate(second, start_calibration(new), risk).threshold, 9)))]
    assert expected[0][1] != expected[1][1]
    stream = (TestStream()
              .add_elements([TimestampedValue(first, Timestamp(160))])
              .advance_watermark_to(Timestamp(170))
              .add_elements([TimestampedValue(second, Timestamp(260))])
              .advance_watermark_to(Timestamp(1000))
              .advance_watermark_to_infinity())
    with beam.Pipeline(options=PipelineOptions(["--streaming", "--runner=DirectRunner"])) as p:
        out = (p | stream | CalibrateOnline(str(root / "v1"), str(root))
               | beam.Map(lambda sw: (sw.windows.pane, tuple(np.round(sw.threshold, 9)))))
        assert_that(out, equal_to(expected))


def test_a_new_model_version_that_cannot_be_calibrated_keeps_its_own_threshold(small_model_dir, tmp_path):
    """A version that appears while running with a threshold risk the tail fit cannot give (a 0.9 quantile) does
    not stop the stream: its windows come out as the model scored them."""
    import json
    import shutil

    root = tmp_path / "models"
    shutil.copytree(small_model_dir, root / "v1")
    shutil.copytree(small_model_dir, root / "v2")
    meta_path = root / "v2" / "metadata.json"
    metadata = json.loads(meta_path.read_text())
    metadata["model_version"] = "v-quantile"
    metadata["config"]["scoring"].update(threshold_method="quantile", threshold_quantile=0.9)
    meta_path.write_text(json.dumps(metadata))
    pane = _pane(1, range(100, 160), np.random.default_rng(2).gamma(2.0, 0.02, 60), "v-quantile")
    stream = (TestStream()
              .add_elements([TimestampedValue(pane, Timestamp(160))])
              .advance_watermark_to(Timestamp(1000))
              .advance_watermark_to_infinity())
    with beam.Pipeline(options=PipelineOptions(["--streaming", "--runner=DirectRunner"])) as p:
        out = (p | stream | CalibrateOnline(str(root / "v1"), str(root))
               | beam.Map(lambda sw: (sw.windows.pane, float(np.asarray(sw.threshold).max()),
                                      bool(sw.is_anomaly.any()))))
        assert_that(out, equal_to([(1, 999.0, False)]))  # the pane as scored (threshold 999, nothing flagged)


def test_new_entities_start_from_one_fit_of_the_models_calibration_scores():
    """Every new entity of a model version starts from the same seed. Its tail fit (about 45 ms) had been made
    again for each: a fleet of 2,000 entities with online calibration took 92 s, against 15 s without. Each gets a
    copy of one fit, equal to a fresh start, and what one entity then learns is its own."""
    seed = np.random.default_rng(3).gamma(2.0, 1.0, 400)
    metadata = _metadata(seed=np.sort(seed))
    first, second = start_calibration(metadata), start_calibration(metadata)
    assert first is not second and first._seed is second._seed  # one fit, shared (a fit is never changed)
    fresh = OnlineTailCalibration(HISTORY, REFIT_EVERY, 0.95).start(np.sort(seed))
    assert first.to_dict() == second.to_dict() == fresh.to_dict()
    first.process_at_risk(np.random.default_rng(4).gamma(2.0, 3.0, 250), 1e-3)  # refits twice
    assert first.to_dict() != fresh.to_dict() and second.to_dict() == fresh.to_dict()
    other = start_calibration(_metadata(seed=np.sort(seed) * 2))  # another model's scores: a fit of its own
    assert other._seed is not first._seed and other.to_dict() != fresh.to_dict()


def test_a_batch_run_judges_each_entitys_panes_as_the_stateful_step_does(small_model_dir):
    """Batch (``at_end``) judges an entity's panes after one GroupByKey, without per-entity state: each write to
    the SDK's state cache weighs the value by scanning every loaded module (about 1 ms with Keras loaded). The
    stateful step a stream uses gives the same thresholds on the same panes, given out of order."""
    metadata = read_metadata(small_model_dir)
    rng = np.random.default_rng(12)
    elements = []
    for entity in ("m1", "m2", "m3"):
        for k in (3, 1, 2):  # out of order
            pane = _pane(k, range(100 * k, 100 * k + 60), rng.gamma(2.0, 0.02 * (1 + k), 60),
                         metadata["model_version"], entity)
            elements.append(TimestampedValue(pane, Timestamp(100 * k + 60)))

    def check(lists):
        assert len(lists) == 2 and lists[0] == lists[1], lists
        assert len(lists[0]) == 9 and len({thresholds for _, _, thresholds in lists[0]}) > 1  # refits moved them

    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        judged = [(p | f"Panes{at_end}" >> beam.Create(elements)
                   | f"Calibrate{at_end}" >> CalibrateOnline(str(small_model_dir), at_end=at_end)
                   | f"Thresholds{at_end}" >> beam.Map(
                       lambda sw: (sw.windows.entity_id, sw.windows.pane, tuple(np.round(sw.threshold, 9))))
                   | f"All{at_end}" >> beam.combiners.ToList()
                   | f"Sorted{at_end}" >> beam.Map(sorted))
                  for at_end in (True, False)]
        assert_that(judged | beam.Flatten(), check)
