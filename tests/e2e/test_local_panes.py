"""Panes that one Parquet file holds alone are cut where the file is read (no GroupByKey): the outputs must be
exactly those of a run that sends every pane through the GroupByKey, bad readings included."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.pipelines.batch import SINKS, run_batch
from seqwatch.pipelines.config import RunConfig

PANE_STEPS = 128


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parquet-inputs")
    readings, _ = generate_sensor_data(n_entities=3, n_steps=1200, seed=11, anomalies_per_entity=2)
    readings["timestamp"] = readings["timestamp"].dt.as_unit("us")
    entities = sorted(readings["entity_id"].unique())
    channels = sorted(readings["channel"].unique())
    # pump 0: two "daily" files back to back: their inner panes are local, the panes at the seam are not.
    first = readings[readings["entity_id"] == entities[0]]
    seam = first["timestamp"].sort_values().iloc[len(first) // 2]
    first[first["timestamp"] < seam].to_parquet(folder / "p0-day1.parquet", index=False)
    first[first["timestamp"] >= seam].to_parquet(folder / "p0-day2.parquet", index=False)
    # pump 1: one file per pair of channels over the same time: no pane of it is local.
    second = readings[readings["entity_id"] == entities[1]]
    second[second["channel"].isin(channels[:2])].to_parquet(folder / "p1-ab.parquet", index=False)
    second[second["channel"].isin(channels[2:])].to_parquet(folder / "p1-cd.parquet", index=False)
    # pump 2: one file with a repeated reading, a missing value and a 40-step hole in one channel.
    third = readings[readings["entity_id"] == entities[2]].sort_values(["timestamp", "channel"])
    third = third.reset_index(drop=True)
    third.loc[100, "value"] = np.nan
    stamps = third["timestamp"].drop_duplicates().sort_values().to_numpy()
    hole = third["channel"].eq(channels[0]) & third["timestamp"].between(stamps[500], stamps[539])
    third = third[~hole]
    third = third.iloc[np.r_[np.arange(len(third)), [700]]]  # line 700 again, as the last row
    third.to_parquet(folder / "p2.parquet", index=False)
    return folder


def _run(folder, model_dir, out, local, beam_args=("--runner=DirectRunner",)):
    config = RunConfig(inputs=(str(folder / "*.parquet"),), output=str(out), model_dir=str(model_dir),
                       pane_steps=PANE_STEPS, chunk_rows=700, run_id="run-local-test", local_panes=local)
    return run_batch(config, list(beam_args))


@pytest.fixture(scope="module")
def runs(inputs, small_model_dir, tmp_path_factory):
    here = tmp_path_factory.mktemp("cut-here")
    grouped = tmp_path_factory.mktemp("grouped")
    return (_run(inputs, small_model_dir, here, True), here), (_run(inputs, small_model_dir, grouped, False), grouped)


def _same_outputs(a, b):
    for sink in SINKS:
        files_a = sorted(p.relative_to(a) for p in (a / sink).rglob("*.parquet"))
        files_b = sorted(p.relative_to(b) for p in (b / sink).rglob("*.parquet"))
        assert files_a == files_b, sink
        for name in files_a:
            assert pq.read_table(a / name).equals(pq.read_table(b / name)), name


def test_cutting_panes_where_they_are_read_changes_no_output(runs):
    (local, here), (grouped, there) = runs
    assert local["stages"]["panes_cut_here"] > 0
    assert "panes_cut_here" not in grouped["stages"]
    _same_outputs(here, there)
    stages = {k: v for k, v in local["stages"].items() if k != "panes_cut_here"}
    assert stages == grouped["stages"]


def test_counts_reconcile_with_every_kind_of_bad_reading(runs):
    (local, here), _ = runs
    assert local["records_in"] == local["records_scored"] + local["records_quarantined"]
    stages = local["stages"]
    assert stages["quarantined.window.duplicate"] == 1
    assert stages["quarantined.parse.parse_value"] == 1
    assert stages["quarantined.window.insufficient_data"] > 0
    written = json.loads((here / "manifest.json").read_text())
    assert written["records_in"] == 3 * 1200 * 4 - 40 + 1


def _panes_reached(path) -> set:
    """The (entity, pane) keys the readings of a file reach: each reading's own pane, and the neighbouring pane
    when it lies within that pane's context margin (window 16 + max gap 2 + 1 = 19 steps before a pane,
    16 + 2 = 18 after it); steps of 10 s."""
    frame = pq.read_table(path).to_pandas()
    steps = frame["timestamp"].astype("int64").to_numpy() // 10_000_000
    own, offset = steps // PANE_STEPS, steps % PANE_STEPS
    panes = set(own) | set(own[offset >= PANE_STEPS - 19] + 1) | set(own[offset < 18] - 1)
    return {(frame["entity_id"].iloc[0], int(p)) for p in panes}


def test_only_panes_that_one_file_holds_alone_are_cut_here(runs, inputs):
    (local, _), _ = runs
    day1, day2 = _panes_reached(inputs / "p0-day1.parquet"), _panes_reached(inputs / "p0-day2.parquet")
    alone = (day1 ^ day2) | _panes_reached(inputs / "p2.parquet")  # and none of pump 1's
    assert day1 & day2  # the panes at the seam get readings from both days
    assert local["stages"]["panes_cut_here"] == len(alone)


@pytest.fixture(scope="module")
def csv_inputs(inputs, tmp_path_factory):
    """The same files as CSV (ISO timestamps), each with a row of too few fields, which the reader quarantines."""
    import pandas as pd

    folder = tmp_path_factory.mktemp("csv-inputs")
    for path in sorted(inputs.glob("*.parquet")):
        frame = pd.read_parquet(path)
        frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        target = folder / f"{path.stem}.csv"
        frame.to_csv(target, index=False)
        with open(target, "a") as f:
            f.write(f"{frame['entity_id'].iloc[0]},flow\n")
    return folder


def test_csv_panes_cut_where_they_are_read_change_no_output(csv_inputs, small_model_dir, tmp_path):
    runs = {}
    for local in (True, False):
        out = tmp_path / f"local-{local}"
        config = RunConfig(inputs=(str(csv_inputs / "*.csv"),), output=str(out), model_dir=str(small_model_dir),
                           pane_steps=PANE_STEPS, chunk_rows=700, run_id="run-local-test", local_panes=local)
        runs[local] = run_batch(config, ["--runner=DirectRunner"]), out
    (local, here), (grouped, there) = runs[True], runs[False]
    assert local["stages"]["panes_cut_here"] > 0
    assert local["stages"]["quarantined.parse.malformed_row"] == 5
    _same_outputs(here, there)
    assert {k: v for k, v in local["stages"].items() if k != "panes_cut_here"} == grouped["stages"]


@pytest.mark.slow
def test_two_worker_processes_give_the_same_outputs(runs, inputs, small_model_dir, tmp_path):
    _, (grouped, there) = runs
    two = _run(inputs, small_model_dir, tmp_path, True,
               ("--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"))
    assert two["stages"]["panes_cut_here"] > 0
    _same_outputs(tmp_path, there)
