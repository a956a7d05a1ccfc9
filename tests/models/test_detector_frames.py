"""The detector reads a pandas frame in the forms pandas holds it: timestamps as int µs (the pipelines' own; epoch
seconds, read so, are refused with the conversion to make, where they had trained a 10 µs model without a word),
datetimes of any unit (s, ms, µs, ns; zoned or naive, naive read as UTC), ``pd.Timestamp`` objects or ISO 8601
texts; channels as strings or numbers; values as any numeric type, non-finite ones missing. A nanosecond column
once made the sampling interval come out 1,000 times too long, so that no window could be cut; integer
channel names matched nothing; an infinite value failed the calibration."""
import numpy as np
import pandas as pd
import pytest

from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
from seqwatch.models.detector import ModelMismatchError, Seq2SeqDetector, as_micros, entity_grids, infer_step_us

START_US = 1_772_409_600_000_000  # 2026-03-02T00:00:00Z


def _readings(steps: int = 240) -> pd.DataFrame:
    times = pd.Timestamp("2026-03-02", tz="UTC") + np.arange(steps) * pd.Timedelta(seconds=10)
    rng = np.random.default_rng(3)
    return pd.concat([pd.DataFrame({"entity_id": "m1", "channel": c, "timestamp": times,
                                    "value": np.sin(np.arange(steps) / 5) + rng.normal(0, 0.1, steps)})
                      for c in ("a", "b")], ignore_index=True)


FORMS = {
    "int µs": lambda ts: ts.dt.as_unit("us").astype("int64"),
    "datetime64[ns, UTC]": lambda ts: ts.dt.as_unit("ns"),
    "datetime64[us, UTC]": lambda ts: ts.dt.as_unit("us"),
    "datetime64[ms, UTC]": lambda ts: ts.dt.as_unit("ms"),
    "datetime64[s, UTC]": lambda ts: ts.dt.as_unit("s"),
    "datetime64[ns], naive": lambda ts: ts.dt.tz_localize(None).dt.as_unit("ns"),
    "datetime64[ns, Europe/Berlin]": lambda ts: ts.dt.tz_convert("Europe/Berlin").dt.as_unit("ns"),
    "pd.Timestamp objects": lambda ts: ts.astype(object),
    "ISO 8601 texts": lambda ts: ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
}


@pytest.mark.parametrize("form", FORMS)
def test_every_form_gives_the_same_micros_and_interval(form):
    readings = _readings()
    frame = readings.assign(timestamp=FORMS[form](readings["timestamp"]))
    micros = as_micros(frame["timestamp"])
    assert micros[0] == START_US and micros[1] - micros[0] == 10_000_000
    assert infer_step_us(frame) == 10_000_000


def test_a_nanosecond_frame_trains_as_a_microsecond_one():
    config = DetectorConfig(ArchitectureConfig(cell="gru", units=4), WindowConfig(length=8, stride=2),
                            TrainingConfig(epochs=1, batch_size=64, training_stride=2, patience=1))
    readings = _readings(400)
    nanos = readings.assign(timestamp=readings["timestamp"].dt.as_unit("ns"))
    detector = Seq2SeqDetector(config).fit(nanos, progress=False)
    # 400 steps of 10 s split at 280 and 340: (280-8)//2+1 = 137 training windows, (60-8)//2+1 = 27 in each of
    # the other parts.
    assert detector.step_us == 10_000_000
    assert detector.metrics["windows"] == {"train": 137, "validation": 27, "calibration": 27}


def test_a_timestamp_that_is_no_time_is_one_sentence():
    with pytest.raises(ValueError, match=r"^timestamps must be datetimes, date texts or int µs since the epoch; "
                                         r"'yesterday noon' and others are not$"):
        as_micros(pd.Series(["yesterday noon", "2026-03-02T00:00:10Z"]))


def test_a_missing_timestamp_is_one_sentence_not_a_grid_from_292000_bc():
    """Found in a notebook: one NaT became the smallest int64, and fit and score_frame asked for 13.4 TiB."""
    readings = _readings()
    readings.loc[5, "timestamp"] = pd.NaT
    readings.loc[9, "timestamp"] = pd.NaT
    with pytest.raises(ValueError, match=r"^2 of 480 timestamps are missing \(the first at index 5\); drop those "
                                         r"readings or fill in their times$"):
        Seq2SeqDetector(DetectorConfig()).fit(readings, progress=False)
    # counted over the frame, not per entity (the bug hunt of the notebook API: "1 of 1200" of 2400 readings)
    fleet = pd.concat([readings, readings.assign(entity_id="m2")], ignore_index=True)
    with pytest.raises(ValueError, match=r"^4 of 960 timestamps are missing \(the first at index 5\)"):
        Seq2SeqDetector(DetectorConfig()).fit(fleet, progress=False)
    with pytest.raises(ValueError, match="1 of 2 timestamps are missing"):
        as_micros(pd.Series(["2026-03-02T00:00:10Z", None]))
    with pytest.raises(ValueError, match="1 of 2 timestamps are missing"):
        as_micros(pd.Series([1.7e15, np.nan]))


def test_a_reading_decades_from_the_others_is_refused_before_its_grid_is_built():
    readings = _readings()
    readings.loc[0, "timestamp"] = pd.Timestamp("1970-01-01", tz="UTC")  # a clock that was never set
    with pytest.raises(ValueError, match=r"^entity 'm1': its readings span 1970-01-01 00:00 to 2026-03-02 00:39, "
                                         r"177,\d{3},\d{3} steps of 10s for 241 times with readings; a timestamp is "
                                         r"likely wrong"):
        entity_grids(readings, ("a", "b"), 10_000_000, 0)
    assert len(entity_grids(_readings(), ("a", "b"), 10_000_000, 0)["m1"].values) == 240
    # A time written in ns among µs lies far beyond pandas' dates: still the one sentence (it was a pandas error).
    in_nanos = _readings().assign(timestamp=as_micros(_readings()["timestamp"]))
    in_nanos.loc[0, "timestamp"] *= 1000
    with pytest.raises(ValueError, match=r"^entity 'm1': its readings span 2026-03-02 00:00 to 58135-06-05 "
                                         r"00:00, .* or a time in another unit\): drop such readings first$"):
        entity_grids(in_nanos, ("a", "b"), 10_000_000, 0)


def test_fit_names_a_channel_the_frame_lacks_and_takes_one_name_as_one_channel():
    readings = _readings()
    with pytest.raises(ModelMismatchError, match=r"^the training data holds no readings of the channel\(s\) "
                                                 r"\['temp'\] \(its channels are \['a', 'b'\]\)$"):
        Seq2SeqDetector(DetectorConfig()).fit(readings, channels=("a", "temp"), progress=False)
    config = DetectorConfig(ArchitectureConfig(cell="gru", units=4), WindowConfig(length=8, stride=2),
                            TrainingConfig(epochs=1, batch_size=64, training_stride=2, patience=1))
    assert Seq2SeqDetector(config).fit(_readings(400), channels="a", progress=False).channels == ("a",)


def test_score_frame_refuses_a_chunk_of_no_windows(small_model_dir):
    from seqwatch.models.artifact import load_artifact

    with pytest.raises(ValueError, match="chunk must be >= 1 window, got 0"):
        load_artifact(str(small_model_dir)).score_frame(_readings(), chunk=0)


def test_numeric_channel_names_and_non_finite_values():
    readings = _readings(20)
    readings["channel"] = readings["channel"].map({"a": 10, "b": 20})
    readings.loc[3, "value"] = np.inf  # channel 10, step 3
    readings.loc[25, "value"] = -np.inf  # channel 20, step 5
    grid = entity_grids(readings, ("10", "20"), 10_000_000, max_gap=0)["m1"]
    assert grid.values.shape == (20, 2)
    # Every other reading lands in its column; the two infinite ones are missing, so steps 3 and 5 are absent.
    assert grid.values[0, 0] == readings["value"].iloc[0] and grid.values[0, 1] == readings["value"].iloc[20]
    assert np.flatnonzero(~grid.present).tolist() == [3, 5]


def test_score_frame_needs_a_fitted_model_and_returns_no_rows_where_no_window_fits(small_model_dir):
    from seqwatch.models.artifact import load_artifact

    with pytest.raises(RuntimeError, match="not fitted"):
        Seq2SeqDetector(DetectorConfig()).score_frame(_readings())
    detector = load_artifact(str(small_model_dir))
    short = pd.DataFrame({"entity_id": "m1", "channel": list(detector.channels) * 3,
                          "timestamp": np.repeat(START_US + np.arange(3) * 10_000_000, len(detector.channels)),
                          "value": 1.0})
    empty = detector.score_frame(short)
    assert len(empty) == 0 and list(empty.columns)[:3] == ["entity_id", "window_start", "window_end"]
    # Found by the bug hunt of the notebook API: every column of the empty frame was float64, so .dt failed and
    # a filter on is_anomaly dropped the columns. They have the types of a frame with windows.
    long = short.assign(value=0.0).iloc[:0]
    long = pd.concat([long] + [pd.DataFrame({"entity_id": "m1", "channel": c, "value": np.sin(np.arange(80) / 5),
                                             "timestamp": START_US + np.arange(80) * 10_000_000})
                               for c in detector.channels], ignore_index=True)
    full = detector.score_frame(long)
    assert len(full) and dict(empty.dtypes) == dict(full.dtypes), (dict(empty.dtypes), dict(full.dtypes))
    assert list(empty[empty["is_anomaly"]].columns) == list(full.columns)
    assert len(empty["window_start"].dt.date) == 0


def test_fit_refuses_entities_sampled_far_from_the_training_interval():
    # Three entities at 10 s and one at 60 s: the training interval is 10 s (the median), and the 60 s entity,
    # cut on that grid, would be too sparse for any window (it trained nothing and hid why).
    frames = [_readings().assign(entity_id=f"m{i}") for i in range(3)]
    slow = _readings(60)
    slow["timestamp"] = pd.Timestamp("2026-03-02", tz="UTC") + (slow["timestamp"] - slow["timestamp"].min()) * 6
    frames.append(slow.assign(entity_id="slow-1"))
    with pytest.raises(ModelMismatchError, match=r"^the training data's entities are read at different intervals: "
                                                 r"m0, m1, m2 every 10s; slow-1 every 60s: train one model per "
                                                 r"sampling interval, or resample the data$"):
        Seq2SeqDetector(DetectorConfig()).fit(pd.concat(frames, ignore_index=True), progress=False)
    # Intervals are grouped by their value and shown as seconds (a 3.6e+03 had grouped 3,600 s with 3,604 s).
    hourly = [_readings().assign(entity_id=f"h{i}") for i in range(3)]
    for i, seconds in enumerate((600, 3600, 3604)):
        start = hourly[i]["timestamp"].min()
        hourly[i]["timestamp"] = start + (hourly[i]["timestamp"] - start) * (seconds // 10) + pd.Timedelta(
            seconds=seconds % 10) * ((hourly[i]["timestamp"] - start) / pd.Timedelta(seconds=10))
    with pytest.raises(ModelMismatchError, match=r": h0 every 600s; h1 every 3600s; h2 every 3604s: "):
        Seq2SeqDetector(DetectorConfig()).fit(pd.concat(hourly, ignore_index=True), progress=False)
    # ...and a few ms of jitter is one interval: four hourly entities a millisecond apart are one group (a review)
    jittered = [hourly[1].assign(entity_id=f"j{i}", timestamp=hourly[1]["timestamp"] + pd.Timedelta(milliseconds=i)
                                 * np.arange(len(hourly[1]))) for i in range(4)]
    with pytest.raises(ModelMismatchError, match=r": j0, j1, j2 and 1 more every 3600s; h0 every 600s: "):
        Seq2SeqDetector(DetectorConfig()).fit(pd.concat([hourly[0], *jittered], ignore_index=True), progress=False)
    # One entity each: the pooled median (35 s) is nobody's interval, and both entities are named.
    with pytest.raises(ModelMismatchError, match=r"^the training data's entities are read at different intervals: "
                                                 r"m0 every 10s; slow-1 every 60s: "):
        Seq2SeqDetector(DetectorConfig()).fit(pd.concat([frames[0], frames[3]], ignore_index=True), progress=False)
    with pytest.raises(ModelMismatchError, match=r"^the model's interval is 60s, but not every entity of the "
                                                 r"training data is read at it: m0, m1, m2 every 10s; slow-1 "
                                                 r"every 60s: "):
        Seq2SeqDetector(DetectorConfig()).fit(pd.concat(frames, ignore_index=True), step_us=60_000_000,
                                              progress=False)


def test_a_reading_far_beyond_anything_seen_scores_as_an_anomaly_not_as_nan(small_model_dir):
    """Found by hand with a suite that has no bounds on values: a reading of 1e40 (infinite in a float32 window)
    or 1e30 made the network's output NaN, so 7 windows scored NaN, below every threshold, as normal."""
    from seqwatch.models.artifact import load_artifact
    from seqwatch.models.scaling import SCALED_LIMIT, ChannelScaler
    from seqwatch.models.synthetic import generate_sensor_data

    scaler = ChannelScaler((10.0,), (2.0,))
    with np.errstate(over="ignore"):
        window = np.array([[12.0], [1e30], [np.float32(1e40)], [-np.inf]])
    assert scaler.transform(window).ravel().tolist() == [1.0, SCALED_LIMIT, SCALED_LIMIT, -SCALED_LIMIT]

    detector = load_artifact(str(small_model_dir))
    readings, _ = generate_sensor_data(n_entities=1, n_steps=200, step_seconds=10, seed=5, anomalies_per_entity=0)
    plain = detector.score_frame(readings)
    assert not plain["is_anomaly"].any()
    for huge in (1e30, 1e40):
        broken = readings.copy()
        broken.loc[(broken["channel"] == detector.channels[0]).to_numpy().nonzero()[0][100], "value"] = huge
        scores = detector.score_frame(broken)
        assert np.isfinite(scores["score"]).all() and np.isfinite(scores["tail_probability"]).all()
        hit = scores["score"] > plain["score"] * 1.5
        assert hit.any() and scores.loc[hit, "is_anomaly"].all(), scores[hit]
        assert (scores.loc[hit, "top_channel"] == detector.channels[0]).all()


def test_a_channel_constant_in_training_is_named_in_a_warning_and_the_metrics():
    """A constant channel gets scale 1, its own unit, so the model cannot judge its changes: say so."""
    from seqwatch.models.detector import TrainingDataWarning
    from seqwatch.models.scaling import ChannelScaler

    values = np.array([[[1.0, 5.0, np.nan], [2.0, 5.0, 3.0]], [[4.0, 5.0, 3.0], [np.inf, 5.0, 3.0]]])
    assert ChannelScaler.constant(values) == [1, 2]  # NaN and infinities are not values
    assert ChannelScaler.fit(values).scale[1:] == (1.0, 1.0)

    config = DetectorConfig(ArchitectureConfig(cell="gru", units=4), WindowConfig(length=8, stride=2),
                            TrainingConfig(epochs=1, batch_size=64, training_stride=2, patience=1))
    readings = _readings(400)
    readings.loc[readings["channel"] == "b", "value"] = 0.0
    with pytest.warns(TrainingDataWarning, match=r"^channel 'b' held one value throughout the training "
                                                    r"readings, so the model cannot tell how unusual a change of it"):
        detector = Seq2SeqDetector(config).fit(readings, progress=False)
    assert detector.metrics["constant_channels"] == ["b"] and detector.metrics["rising_channels"] == []


def test_a_channel_that_only_rises_in_training_is_named_as_a_cumulative_meter():
    """A kWh counter modelled as a level leaves the training range the day after: every window would alert."""
    from seqwatch.models.detector import TrainingDataWarning, rising_channels

    entity_1 = np.array([[1.0, 5.0, 0.2], [1.0, 5.5, 0.1], [2.0, 5.5, 0.3], [3.0, 6.0, 0.2], [3.0, 7.0, 0.1]])
    entity_2 = np.array([[9.0, 2.0, 0.2], [9.0, 2.5, 0.4], [9.0, 2.5, 0.3], [9.0, 3.0, 0.2], [9.0, 3.0, 0.1]])
    # a: rises in entity 1, flat in entity 2; b: rises in both; c: wobbles
    assert rising_channels([entity_1, entity_2], ("a", "b", "c")) == {"a": (1.0, 9.0), "b": (2.0, 7.0)}
    falls = entity_2.copy()
    falls[3, 1] = 2.4  # b went down once: not a meter
    assert rising_channels([entity_1, falls], ("a", "b", "c")) == {"a": (1.0, 9.0)}
    assert rising_channels([entity_1[:4]], ("a", "b", "c")) == {}  # too few rows to say

    config = DetectorConfig(ArchitectureConfig(cell="gru", units=4), WindowConfig(length=8, stride=2),
                            TrainingConfig(epochs=1, batch_size=64, training_stride=2, patience=1))
    readings = _readings(400)
    meter = readings["channel"] == "b"
    readings.loc[meter, "value"] = 100 + np.cumsum(np.abs(readings.loc[meter, "value"]))
    with pytest.warns(TrainingDataWarning, match=r"^channel 'b' \(from 10\d\.\d+ to \d+\.?\d*\) never went down in the "
                                                 r"training readings, as a cumulative meter does: later readings will "
                                                 r"lie beyond anything the model saw"):
        detector = Seq2SeqDetector(config).fit(readings, progress=False)
    assert detector.metrics["rising_channels"] == ["b"] and len(detector.metrics["training_notes"]) == 1


def test_a_history_whose_end_is_idle_gives_a_zero_threshold_and_says_so():
    # The calibration part (the end of the history) of a machine switched off: every window there scores alike,
    # the threshold was 3e-11 without a word, and every normal window of a later run alerted.
    from seqwatch.models.detector import TrainingDataWarning

    config = DetectorConfig(ArchitectureConfig(cell="gru", units=4), WindowConfig(length=8, stride=2),
                            TrainingConfig(epochs=1, batch_size=64, training_stride=2, patience=1))
    readings = _readings(400)
    off = readings["timestamp"] >= readings["timestamp"].quantile(0.65)
    readings.loc[off, "value"] = 0.0
    with pytest.warns(TrainingDataWarning, match=r"^the threshold is .*: the calibration windows \(the end of each "
                                                 r"entity's history\) all score alike.* --holdout-input"):
        detector = Seq2SeqDetector(config).fit(readings, progress=False)
    assert detector.threshold <= 1e-6 and detector.metrics["training_notes"][-1].startswith("the threshold is ")
    assert "the threshold is" not in " ".join(Seq2SeqDetector(config).fit(_readings(400), progress=False)
                                              .metrics["training_notes"])


def test_a_channel_far_from_zero_is_scored_at_the_precision_it_was_trained_at():
    # Training cuts windows in float64, scoring cut them in float32: at 1e12 float32 steps by 131,072, and a signal
    # that varies by about 1 around it was erased; every window of the training data itself alerted.
    from seqwatch.models.windowing import window_dtype

    assert window_dtype((), {"mean": [100.0, 1e12], "scale": [5.0, 18.0]}) is np.float64
    # float32 holds 1e6 to 0.06 (0.3% of a spread of 18: float64, to be safe) and 1e4 to 0.001 (float32).
    assert window_dtype((), {"mean": [100.0, 1e6], "scale": [5.0, 18.0]}) is np.float64
    assert window_dtype((), {"mean": [100.0, 1e4], "scale": [5.0, 18.0]}) is np.float32
    assert window_dtype((), None) is np.float32 and window_dtype(("meter",), None) is np.float64
    config = DetectorConfig(ArchitectureConfig(cell="gru", units=4), WindowConfig(length=8, stride=2),
                            TrainingConfig(epochs=2, batch_size=64, training_stride=2, patience=1))
    readings = _readings(400).assign(value=lambda r: r["value"] + 1e12)
    detector = Seq2SeqDetector(config).fit(readings, progress=False)
    assert detector.window_dtype is np.float64
    assert detector.score_frame(readings)["is_anomaly"].mean() < 0.2


def test_an_entity_that_lacks_a_channel_is_named_as_not_trained_on():
    from seqwatch.models.detector import TrainingDataWarning, entities_lacking_channels

    frame = pd.DataFrame({"entity_id": ["m1", "m1", "m2", "m3", "m3"], "channel": ["a", "b", "a", "b", "c"],
                          "timestamp": [0, 0, 0, 0, 0], "value": [1.0] * 5})
    assert entities_lacking_channels(frame, ("a", "b")) == {"m2": ["b"], "m3": ["a"]}
    assert entities_lacking_channels(frame[frame["entity_id"] == "m1"], ("a", "b")) == {}

    config = DetectorConfig(ArchitectureConfig(cell="gru", units=4), WindowConfig(length=8, stride=2),
                            TrainingConfig(epochs=1, batch_size=64, training_stride=2, patience=1))
    readings = _readings(400)
    only_a = readings[readings["channel"] == "a"].assign(entity_id="m9")
    with pytest.warns(TrainingDataWarning, match=r"^entity 'm9' \(no 'b'\) did not report every channel of the "
                                                 r"model, so none of its readings trained it"):
        detector = Seq2SeqDetector(config).fit(pd.concat([readings, only_a], ignore_index=True), progress=False)
    assert detector.metrics["windows"] == {"train": 137, "validation": 27, "calibration": 27}  # m1's alone


def test_epoch_seconds_read_as_microseconds_are_refused_with_the_conversion(small_model_dir):
    """Found by a bug hunt: fit on epoch-second ints trained a model of 10 µs steps, which scores no real data,
    and score_frame on them returned 0 rows, both without a word. Numbers stay µs (no unit is guessed: a slice of
    a relative µs grid looks like epoch seconds by its magnitude), and both now say how to convert."""
    from seqwatch.models.artifact import load_artifact

    config = DetectorConfig(ArchitectureConfig(cell="gru", units=4), WindowConfig(length=8, stride=2),
                            TrainingConfig(epochs=1, batch_size=64, training_stride=2, patience=1))
    readings = _readings(400)
    seconds = readings.assign(timestamp=readings["timestamp"].dt.as_unit("s").astype("int64"))
    hint = (r"the timestamps are numbers, read as µs since the epoch; if they are epoch seconds or milliseconds, "
            r"convert them first: frame\['timestamp'\] = pd.to_datetime\(frame\['timestamp'\], unit='s'\)")
    with pytest.raises(ValueError, match=f"^the readings come every 10 µs: {hint}"):
        Seq2SeqDetector(config).fit(seconds, progress=False)
    detector = load_artifact(str(small_model_dir))
    live = pd.DataFrame({"entity_id": "m1", "channel": list(detector.channels) * 40, "value": 1.0,
                         "timestamp": np.repeat(1_772_409_600 + np.arange(40) * 10, len(detector.channels))})
    with pytest.raises(ModelMismatchError, match=f"the readings come every 1e-05s: {hint}"):
        detector.score_frame(live)
    live["timestamp"] = pd.to_datetime(live["timestamp"], unit="s")
    assert len(detector.score_frame(live)) > 0


def test_a_day_month_ambiguous_date_is_refused_not_guessed_row_by_row():
    """Found by a bug hunt: 12/01/2026 was read as 1 December and 13/01/2026 as 13 January in one frame."""
    texts = pd.Series(["12/01/2026 23:50:00", "13/01/2026 00:00:00"])
    with pytest.raises(ValueError, match=r"^'12/01/2026 23:50:00' could be day/month or month/day; parse the "
                                         r"timestamps with pd.to_datetime\(\.\.\., format="):
        as_micros(texts)
    assert as_micros(pd.Series(["2026-01-12 23:50:00", "Jan 13 2026 00:00"])).tolist() == [
        1_768_261_800_000_000, 1_768_262_400_000_000]


def test_score_frame_names_a_channel_the_frame_lacks_and_the_index_that_holds_the_times(small_model_dir):
    """Found by a bug hunt: a frame without a channel of the model (or with it in capitals) scored to 0 rows
    without a word; times in a DatetimeIndex were refused as "training data" lacking a column."""
    from seqwatch.models.artifact import load_artifact

    detector = load_artifact(str(small_model_dir))
    readings = pd.DataFrame({"entity_id": "m1", "channel": list(detector.channels) * 40,
                             "timestamp": np.repeat(START_US + np.arange(40) * 10_000_000, len(detector.channels)),
                             "value": 1.0})
    for frame in (readings[readings["channel"] != "flow"], readings.assign(channel=readings["channel"].str.upper())):
        with pytest.raises(ModelMismatchError, match=r"^model .* expects channels \[.*\], but the data lack \[.*'flow'"):
            detector.score_frame(frame)
    indexed = readings.set_index(pd.to_datetime(readings.pop("timestamp"), unit="us", utc=True))
    with pytest.raises(ValueError, match=r"^the readings lack columns \['timestamp'\] \(long format: entity_id, "
                                         r"channel, timestamp, value\); their times are the frame's index: pass "
                                         r"frame.rename_axis\('timestamp'\).reset_index\(\)$"):
        detector.score_frame(indexed)
    assert len(detector.score_frame(indexed.rename_axis("timestamp").reset_index())) > 0


def test_numbers_are_microseconds_whatever_their_magnitude():
    """From a review: a unit chosen by magnitude read a slice of a relative µs grid (1 h to 2 h: 3.6e9 to 7.2e9)
    as epoch seconds; the NAB benchmark fine-tunes on such slices."""
    assert as_micros(pd.Series([60_000_000, 70_000_000])).tolist() == [60_000_000, 70_000_000]
    assert as_micros(pd.Series(np.arange(3600, 7200) * 1_000_000))[-1] == 7_199_000_000
    assert len(as_micros(pd.Series([], dtype="int64"))) == 0
    with pytest.raises(ValueError, match="finite numbers"):
        as_micros(pd.Series([1.0, np.inf]))


def test_sessions_days_apart_train_on_grids_of_their_own_with_the_cuts_of_one_grid():
    """Found by the bug hunt of time scales: an entity's grid held every step from its first reading to its last,
    so two 100 Hz sessions 3 days apart (26M steps) were refused as "a timestamp is likely wrong", and 23 hours
    apart took 1 GB for 10,000 readings. Its grid is cut into parts at gaps of more than 1M steps (no window
    spans one), whose train, validation and calibration cuts are those of the one grid."""
    from seqwatch.models import windowing
    from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
    from seqwatch.models.detector import _chronological_part_cuts, _part_bounds, entity_grid_parts

    step = 10_000  # 100 Hz
    t = np.arange(1500)
    starts = (1_767_571_200_000_000, 1_767_571_200_000_000 + 3 * 86_400_000_000)
    frame = pd.concat([pd.DataFrame({"entity_id": "p1", "channel": c, "timestamp": start + t * step,
                                     "value": np.sin(t / (7 + 3 * i) + k) + 5})
                       for k, start in enumerate(starts) for i, c in enumerate(("a", "b"))], ignore_index=True)
    with pytest.raises(ValueError, match="likely wrong"):
        entity_grids(frame, ("a", "b"), step, 2)  # one grid: refused, as before
    parts = entity_grid_parts(frame, ("a", "b"), step, 2)["p1"]
    assert [len(g) for g in parts] == [1500, 1500]
    # the cuts of one grid, by hand: 3000 present steps, 70 % -> the 2100th (row 600 of the second part), 85 %
    # -> the 2550th (row 1050)
    assert _chronological_part_cuts(parts, 0.15, 0.15) == [(1500, 1500), (600, 1050)]
    single = [g for g in entity_grid_parts(frame.iloc[:3000], ("a", "b"), step, 2)["p1"]]
    assert _chronological_part_cuts(single, 0.15, 0.15) == [windowing.chronological_cuts(single[0].present, .15, .15)]
    # a few readings of a clock that was never set stay with their neighbours, and are refused as before
    stray = frame.assign(timestamp=frame["timestamp"].where(frame.index % 1500 != 0, 0))
    assert len(_part_bounds(np.unique(windowing.step_of(stray["timestamp"].to_numpy(), step)))) == 2
    with pytest.raises(ValueError, match="likely wrong"):
        entity_grid_parts(stray, ("a", "b"), step, 2)
    detector = Seq2SeqDetector(DetectorConfig(ArchitectureConfig(units=4), WindowConfig(length=16, stride=8),
                                              TrainingConfig(epochs=1, batch_size=64, patience=1)))
    detector.fit(frame, progress=False)
    scores = detector.score_frame(frame)
    assert scores["window_end"].min() < pd.Timestamp(starts[1], unit="us", tz="UTC") < scores["window_end"].max()


def test_a_forecast_coverage_the_calibration_windows_cannot_give_is_noted_and_carried():
    """27 calibration windows cannot give 99% intervals (99 are needed): training notes it, and the intervals (the
    forecasts' ``coverage``) say 27/28; at 90% nothing is noted."""
    import warnings

    from seqwatch.models.config import ScoringConfig
    from seqwatch.models.detector import TrainingDataWarning

    for asked, noted in ((0.99, True), (0.9, False)):
        config = DetectorConfig(ArchitectureConfig(cell="gru", units=4, forecast_horizon=2),
                                WindowConfig(length=8, stride=2),
                                TrainingConfig(epochs=1, batch_size=64, training_stride=2, patience=1),
                                ScoringConfig(interval_coverage=asked))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TrainingDataWarning)
            detector = Seq2SeqDetector(config).fit(_readings(400), progress=False)
        notes = [str(w.message) for w in caught if "forecast intervals" in str(w.message)]
        n = detector.metrics["windows"]["calibration"]
        assert (notes == [f"the forecast intervals are sure to cover {n / (n + 1):.1%} of new readings, not the 99.0% "
                          f"asked for: {n} calibration windows hold no residual that rare (that needs 99 or more), so "
                          f"the forecasts' coverage says {n / (n + 1):.1%}; give a longer history, or a lower "
                          f"--coverage"]) == noted
        assert detector.intervals.coverage == (n / (n + 1) if noted else asked)
