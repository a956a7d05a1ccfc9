"""A household's kWh meter through the command line: ``seqwatch train --cumulative energy_wh`` models its rate,
``seqwatch run --suite energy`` scores the days after training, when the meter reads more than it ever did,
as the same model scores them in a notebook and in a pipeline of one's own (``DetectAnomalies``, planned as a
stream is), and writes meter readings as its forecasts."""
import importlib.util
import json
from pathlib import Path

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
from apache_beam.testing.util import assert_that

from seqwatch.models.artifact import load_artifact
from seqwatch.pipelines.embed import DetectAnomalies

_spec = importlib.util.spec_from_file_location(
    "meter_data", Path(__file__).parent.parent / "models" / "test_cumulative_channels.py")
meter_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(meter_data)


def _read(out: Path, sink: str) -> pd.DataFrame:
    return ds.dataset(out / sink, format="parquet").to_table().to_pandas()


def _same_scores(scores: pd.DataFrame):
    """A check of ``(entity, window end µs, score)`` triples against the scores sink's rows."""
    ends = (scores["window_end"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
    expected = sorted(zip(scores["entity_id"], ends, scores["score"]))

    def check(found):
        found = sorted(found)
        assert [(e, t) for e, t, _ in found] == [(e, t) for e, t, _ in expected]
        np.testing.assert_allclose([s for _, _, s in found], [s for _, _, s in expected], rtol=1e-4)
    return check


def test_a_meter_trained_as_a_rate_scores_in_a_run_as_in_a_notebook(tmp_path, wide_csv, cli_cases):
    history = meter_data.meter_readings(3000)
    later = meter_data.meter_readings(1500, start=3000, fault=meter_data.FAULT, seed=5, reset=meter_data.RESET)
    for name, readings in (("history", history), ("later", later)):
        for entity, part in readings.groupby("entity_id"):
            wide_csv(part, tmp_path / name / f"{entity}.csv")
    model, out = tmp_path / "model", tmp_path / "out"
    shape = ["--format", "wide", "--suite", "energy", "--cell", "gru", "--units", "8", "--window", "16", "--stride",
             "4", "--max-gap", "2", "--horizon", "4", "--epochs", "8", "--batch-size", "64"]
    results = cli_cases([
        ["train", "--input", str(tmp_path / "history"), *shape, "--cumulative", "energy_wh", "--model-dir", str(model)],
        ["run", "--input", str(tmp_path / "later"), "--format", "wide", "--suite", "energy", "--model-dir", str(model),
         "--output", str(out)],
        ["train", "--input", str(tmp_path / "history"), *shape, "--cumulative", "energy_kwh", "--model-dir",
         str(tmp_path / "typo")],
        ["train", "--input", str(tmp_path / "history"), "--format", "wide", "--warm-start", str(model),
         "--cumulative", "energy_wh", "--model-dir", str(tmp_path / "v2")],
    ])
    (trained, train_err), (ran, run_err), (typo, typo_err), (warm, warm_err) = results
    assert trained == 0, train_err[-2000:]
    assert "never went down" not in train_err  # the meter is modelled as a rate, so no note about its level
    assert ran == 0, run_err[-2000:]
    assert (typo, typo_err.strip().splitlines()[-1]) == (
        2, "seqwatch train: the cumulative channel 'energy_kwh' is not among the model's channels "
           "['energy_wh', 'temperature']")
    assert (warm, warm_err.strip().splitlines()[-1]) == (
        2, "seqwatch train: --warm-start continues the model's own architecture and window, so --cumulative "
           "cannot be given with it")

    # m2's meter was replaced: the reading where it went back is quarantined, and every other one scored.
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["records_in"], manifest["records_scored"], manifest["records_quarantined"]) == (
        len(later), len(later) - 1, 1)
    quarantined = _read(out, "quarantine")
    assert quarantined[["reason_code", "line"]].values.tolist() == [["monotonic_decrease", meter_data.RESET - 3000 + 2]]
    reset_at = meter_data.T0 + pd.Timedelta(minutes=meter_data.RESET)
    kept = later[~((later["entity_id"] == "m2") & (later["channel"] == "energy_wh") & (later["timestamp"] == reset_at))]

    # The run's scores are the notebook's, windows cut as float64 (float32 would hold the meter to 8 Wh).
    detector = load_artifact(model)
    assert detector.config.window.cumulative_channels == ("energy_wh",)
    expected = detector.score_frame(kept.assign(value=kept["value"].round(4)))  # as the CSV holds them
    scores = _read(out, "scores").sort_values(["entity_id", "window_end"]).reset_index(drop=True)
    assert len(scores) == len(expected)
    np.testing.assert_allclose(scores["score"], expected["score"], rtol=1e-4)
    assert scores["is_anomaly"].tolist() == expected["is_anomaly"].tolist()

    # The same readings in a pipeline of one's own (DetectAnomalies plans as a stream does): the same scores.
    rows = [{"entity_id": r.entity_id, "channel": r.channel, "timestamp": r.timestamp.isoformat(), "value": r.value}
            for r in later.assign(value=later["value"].round(4)).itertuples()]
    with beam.Pipeline() as p:
        found = p | beam.Create(rows) | DetectAnomalies(str(model), suite="energy")
        embedded = (found.scores | beam.FlatMap(lambda s: [(s.windows.entity_id, int(end), float(score))
                                                         for end, score in zip(s.windows.ends, s.score)]))
        assert_that(embedded, _same_scores(scores), label="SameScores")

    # m1's hour of 2.5x power is an incident; the days beyond the training readings are not (as a level, most of
    # their windows alert: tests/models/test_cumulative_channels.py), nor is m2's new meter.
    alerts = _read(out, "alerts")
    fault_start, fault_end = (meter_data.T0 + pd.Timedelta(minutes=step) for step in meter_data.FAULT)
    in_fault = (alerts["entity_id"] == "m1") & (alerts["start"] < fault_end) & (alerts["end"] >= fault_start)
    assert in_fault.any(), alerts[["entity_id", "start", "end"]]
    outside = ((scores["entity_id"] == "m2") | (scores["window_end"] < fault_start)
               | (scores["window_start"] >= fault_end))
    assert scores["is_anomaly"][outside].mean() < 0.01

    # Forecasts (the horizon after each entity's last window) are meter readings, a few Wh from what it read.
    forecasts = _read(out, "forecasts")
    meter = forecasts[forecasts["channel"] == "energy_wh"]
    assert sorted(meter["entity_id"]) == ["m1"] * 4 + ["m2"] * 4
    # What the meter went on to read (the same draws, 4 minutes longer).
    after = meter_data.meter_readings(1504, start=3000, fault=meter_data.FAULT, seed=5, reset=meter_data.RESET)
    truth = after[after["channel"] == "energy_wh"].set_index(["entity_id", "timestamp"])["value"]
    read = truth.reindex(pd.MultiIndex.from_arrays([meter["entity_id"], meter["target_time"]])).to_numpy()
    assert np.abs(meter["yhat"].to_numpy() - read).max() < 10, meter[["entity_id", "target_time", "yhat"]]
    assert (meter["yhat"][meter["entity_id"] == "m1"] > meter_data.METER_START_WH).all()
    assert (meter["yhat"][meter["entity_id"] == "m2"] < 2000).all()  # the new meter's count, not the old one's


def test_a_meter_going_back_just_before_a_pane_boundary_changes_no_window_of_the_next_pane(small_model_dir,
                                                                                            tmp_path):
    """Found by a differential bug hunt: the reading where a monotone meter went back, quarantined by its own
    pane, was kept as context by the next one and filled its first windows, so three windows scored 2.9 with
    64-step panes and 13.2 with the default panes."""
    from seqwatch.models.synthetic import generate_sensor_data
    from seqwatch.pipelines.batch import run_batch
    from seqwatch.pipelines.config import RunConfig
    from seqwatch.schemas.mapping import InputMapping

    readings, _ = generate_sensor_data(n_entities=1, n_steps=1000, seed=21, anomalies_per_entity=0,
                                       start=pd.Timestamp("2026-03-01", tz="UTC"))
    steps = readings.groupby("channel").cumcount()
    pressure = readings["channel"] == "pressure"
    readings.loc[pressure, "value"] = 3.0 + 0.0005 * steps[pressure]  # a rising ramp, judged as a meter
    readings.loc[pressure & (steps == 64 * 5 - 3), "value"] = 1.0  # it goes back 3 steps before a 64-step pane ends
    path = tmp_path / "pump-01.csv"
    readings.to_csv(path, index=False)
    suite = json.loads((Path(__file__).parents[2] / "schemas" / "suites" / "sensor.json").read_text())
    suite.setdefault("meta", {})["seqwatch_stateful"] = {"monotonic_channels": "pressure",
                                                         "monotonic_tolerance": 0.0, "stuck_min_readings": 0}
    (tmp_path / "suite.json").write_text(json.dumps(suite))
    scores = {}
    for pane_steps in (64, 4096):
        out = tmp_path / f"out-{pane_steps}"
        manifest = run_batch(RunConfig(inputs=(str(path),), output=str(out), model_dir=str(small_model_dir),
                                       mapping=InputMapping(), suite=str(tmp_path / "suite.json"),
                                       pane_steps=pane_steps), ["--runner=DirectRunner"])
        assert manifest["stages"]["quarantined.window.monotonic_decrease"] == 1
        table = ds.dataset(out / "scores", format="parquet").to_table().to_pandas()
        scores[pane_steps] = table.sort_values("window_end").set_index("window_end")["score"]
    assert len(scores[64]) == len(scores[4096]) > 200
    np.testing.assert_allclose(scores[64].to_numpy(), scores[4096].to_numpy(), rtol=1e-5)
