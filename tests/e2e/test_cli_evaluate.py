"""``seqwatch evaluate``: a run's alerts and scores held against labelled incidents. A run folder made by hand
(alerts and scores in the sinks' schemas, read back as a run's are), its numbers worked out by hand; the command's
errors in one sentence; and a real run on generated pumps, whose injected anomalies are the labels."""
import json
import shutil
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqwatch.models.synthetic import generate_sensor_data
from seqwatch.schemas.arrow import ALERT_SCHEMA, SCORE_SCHEMA

T0 = pd.Timestamp("2026-11-28T00:00:00Z")


def _at(minutes: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=minutes)


def _run_folder(root):
    """pump-01 scored from minute 9 to 52, pump-02 from 0 to 60; three alerts."""
    alerts = [("a1", "pump-01", 11, 13), ("a2", "pump-01", 50, 52), ("a3", "pump-02", 26, 27)]
    for alert_id, entity, start, end in alerts:
        row = {"alert_id": alert_id, "entity_id": entity, "start": _at(start), "end": _at(end), "peak_score": 9.0,
               "threshold": 3.0, "severity": "high", "windows": 2, "top_channels": ["flow"], "model_id": "m",
               "model_version": "v1", "run_id": "r"}
        (root / "alerts" / entity).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([row], schema=ALERT_SCHEMA),
                       root / "alerts" / entity / f"{alert_id}.parquet")
    # windows: (entity, start, end, score); pump-01's first and third overlap an incident
    windows = [("pump-01", 9, 11, 5.0), ("pump-01", 30, 32, 1.0), ("pump-01", 39, 41, 2.0), ("pump-01", 50, 52, 4.0),
               ("pump-02", 0, 2, 0.5), ("pump-02", 58, 60, 0.7)]
    rows = [{"entity_id": e, "window_start": _at(a), "window_end": _at(b), "score": s, "threshold": 3.0,
             "is_anomaly": s > 3, "severity": "", "tail_probability": 0.1, "top_channel": "flow",
             "channel_contributions": [1.0], "model_id": "m", "model_version": "v1", "run_id": "r"}
            for e, a, b, s in windows]
    (root / "scores").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCORE_SCHEMA), root / "scores" / "part-0-of-1.parquet")
    (root / "manifest.json").write_text("{}")


def _labels(path):
    incidents = [("pump-01", 10, 12), ("pump-01", 40, 41), ("pump-02", 20, 25), ("pump-03", 10, 20),
                 ("pump-01", 300, 310)]
    pd.DataFrame({"entity_id": [e for e, _, _ in incidents], "kind": "ticket",
                  "start": [_at(a).isoformat() for _, a, _ in incidents],
                  "end": [_at(b).isoformat() for _, _, b in incidents]}).to_csv(path, index=False)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "evaluate", *map(str, args)],
                          capture_output=True, text=True)


def test_alerts_and_scores_against_incidents_worked_out_by_hand(tmp_path):
    """Three incidents the run could see (pump-03 was not scored, and pump-01's at minute 300 lies after its
    windows): pump-01's first is found by alert a1; its second, at minute 40, by none; pump-02's (minutes 20-25)
    by none, as a3 starts at 26, unless incidents are widened by a minute. Alerts a2 and a3 are on no incident
    (a3 is, widened). Windows:
    positives score 5 and 2, negatives 4, 1, 0.7, 0.5: ROC AUC 7/8 (5 beats all four, 2 beats three); average
    precision 0.5 * 1 + 0.5 * 2/3 = 5/6."""
    _run_folder(tmp_path / "out")
    _labels(tmp_path / "incidents.csv")
    strict = _cli("--output", tmp_path / "out", "--labels", tmp_path / "incidents.csv")
    assert strict.returncode == 0, strict.stderr
    result = json.loads(strict.stdout)
    assert (result["incidents"], result["found"], result["alerts"], result["true_alerts"]) == (3, 1, 3, 1)
    assert result["recall"] == result["precision"] == pytest.approx(1 / 3) and result["f1"] == pytest.approx(1 / 3)
    assert result["incidents_left_out"] == {"entity_not_scored": 1, "outside_scored_time": 1}
    assert result["roc_auc"] == pytest.approx(7 / 8) and result["pr_auc"] == pytest.approx(5 / 6)
    assert (result["windows"], result["anomalous_windows"]) == (6, 2)
    assert result["missed"] == [
        {"entity_id": "pump-01", "start": _at(40).isoformat(), "end": _at(41).isoformat()},
        {"entity_id": "pump-02", "start": _at(20).isoformat(), "end": _at(25).isoformat()}]
    assert result["false_alerts"] == [
        {"entity_id": "pump-01", "start": _at(50).isoformat(), "end": _at(52).isoformat()},
        {"entity_id": "pump-02", "start": _at(26).isoformat(), "end": _at(27).isoformat()}]
    assert result["entities"]["pump-02"] == {"incidents": 1, "found": 0, "alerts": 1, "true_alerts": 0}
    assert strict.stderr.strip() == (
        "seqwatch evaluate: 1 of 3 incidents found (recall 0.33); 1 of 3 alerts on an incident (precision 0.33); "
        "F1 0.33; windows: ROC AUC 0.88, PR AUC 0.83; 2 incident(s) left out (entity not scored, or outside the "
        "time scored)")

    widened = json.loads(_cli("--output", tmp_path / "out", "--labels", tmp_path / "incidents.csv",
                              "--tolerance", 60).stdout)
    assert (widened["found"], widened["true_alerts"]) == (2, 2)  # pump-02's incident now ends at minute 26
    assert widened["f1"] == pytest.approx(2 / 3)
    assert widened["missed"] == [{"entity_id": "pump-01", "start": _at(40).isoformat(), "end": _at(41).isoformat()}]
    assert widened["false_alerts"] == [{"entity_id": "pump-01", "start": _at(50).isoformat(),
                                        "end": _at(52).isoformat()}]

    # Incidents known by an instant only (a ticket's time, no end column), found within a minute's tolerance:
    # pump-01's at minute 12 by a1 (11-13), its one at 40.5 by none, pump-02's at 25.5 by a3 (26-27).
    pd.DataFrame({"entity_id": ["pump-01", "pump-01", "pump-02"],
                  "start": [_at(12).isoformat(), _at(40.5).isoformat(), _at(25.5).isoformat()]}).to_csv(
        tmp_path / "tickets.csv", index=False)
    (tmp_path / "blank_ends.csv").write_text(  # the same, an end column left blank
        "entity_id,start,end\n" + "".join(f"{e},{_at(m).isoformat()},\n" for e, m in
                                           (("pump-01", 12), ("pump-01", 40.5), ("pump-02", 25.5))))
    tickets = json.loads(_cli("--output", tmp_path / "out", "--labels", tmp_path / "tickets.csv",
                              "--tolerance", 60).stdout)
    assert (tickets["incidents"], tickets["found"], tickets["true_alerts"]) == (3, 2, 2)
    assert tickets["missed"] == [{"entity_id": "pump-01", "start": _at(40.5).isoformat(),
                                  "end": _at(40.5).isoformat()}]
    blank = json.loads(_cli("--output", tmp_path / "out", "--labels", tmp_path / "blank_ends.csv",
                            "--tolerance", 60).stdout)
    assert {k: v for k, v in blank.items() if k != "labels"} == {k: v for k, v in tickets.items() if k != "labels"}

    # A run that raised no alert: no precision to speak of, and F1 0 (as event_metrics has it: incidents, and
    # nothing found); the scores still rank.
    shutil.rmtree(tmp_path / "out" / "alerts")
    quiet = json.loads(_cli("--output", tmp_path / "out", "--labels", tmp_path / "incidents.csv").stdout)
    assert (quiet["alerts"], quiet["found"], quiet["precision"], quiet["recall"], quiet["f1"]) == (0, 0, None, 0.0, 0.0)
    assert quiet["roc_auc"] == pytest.approx(7 / 8)


def test_evaluate_errors_are_one_sentence(tmp_path, cli_cases):
    _run_folder(tmp_path / "out")
    (tmp_path / "no_start.csv").write_text("entity_id,end\npump-01,2026-11-28T00:10:00Z\n")
    (tmp_path / "backwards.csv").write_text("entity_id,start,end\npump-01,2026-11-28T00:10:00Z,2026-11-28T00:09:00Z\n")
    (tmp_path / "no_start_time.csv").write_text("entity_id,start,end\npump-01,2026-11-28T00:10:00Z,\npump-02,,\n")
    (tmp_path / "not_a_run").mkdir()
    _labels(tmp_path / "incidents.csv")
    labels = str(tmp_path / "incidents.csv")
    cases = [
        (["--output", str(tmp_path / "out"), "--labels", str(tmp_path / "none.csv")],
         f"the labels file {tmp_path / 'none.csv'} does not exist"),
        (["--output", str(tmp_path / "out"), "--labels", str(tmp_path / "no_start.csv")],
         "lacks the column(s) ['start'] (it has ['entity_id', 'end']); each row is an incident: entity_id, start and, "
         "where it lasted, end"),
        (["--output", str(tmp_path / "out"), "--labels", str(tmp_path / "backwards.csv")],
         "has an incident that ends before it starts (line 2 of the file: 2026-11-28T00:10:00Z to "
         "2026-11-28T00:09:00Z)"),
        (["--output", str(tmp_path / "out"), "--labels", str(tmp_path / "no_start_time.csv")],
         "has an incident without a start (line 3 of the file)"),
        (["--output", str(tmp_path / "not_a_run"), "--labels", labels], "is not the output folder of a seqwatch run"),
        (["--output", str(tmp_path / "out"), "--labels", labels, "--tolerance", "-5"],
         "--tolerance must be zero or a positive number of seconds, got -5"),
        (["--output", str(tmp_path / "out"), "--labels", labels, "--runner", "DirectRunner"],
         "--runner"),
    ]
    for (args, message), (code, stderr) in zip(cases, cli_cases([["evaluate", *a] for a, _ in cases]), strict=True):
        assert code == 2, (args, stderr[-2000:])
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("seqwatch evaluate: ") and message in lines[0], (args, stderr)


def test_a_real_run_against_its_injected_anomalies(small_model_dir, wide_csv, tmp_path):
    """A batch run on generated pumps with injected anomalies, the anomalies as the labels: every number the
    command gives is recomputed here from the sinks' files read back with pyarrow, one alert and incident at a
    time."""
    readings, injected = generate_sensor_data(n_entities=2, n_steps=1200, step_seconds=10, anomalies_per_entity=2,
                                              seed=77, start=T0)
    for entity, part in readings.groupby("entity_id"):
        wide_csv(part, tmp_path / "in" / f"{entity}.csv")
    run = subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "run", "--input", str(tmp_path / "in"),
                          "--format", "wide", "--model-dir", str(small_model_dir), "--output", str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    injected[["entity_id", "kind", "start", "end"]].to_csv(tmp_path / "labels.csv", index=False)
    done = _cli("--output", tmp_path / "out", "--labels", tmp_path / "labels.csv")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)

    alerts = pq.read_table(tmp_path / "out" / "alerts").to_pandas()
    assert len(alerts) == result["alerts"] > 0
    found = sum(((alerts["entity_id"] == i.entity_id) & (alerts["start"] <= i.end) & (alerts["end"] >= i.start)).any()
                for i in injected.itertuples())
    true = sum(((injected["entity_id"] == a.entity_id) & (injected["start"] <= a.end)
                & (injected["end"] >= a.start)).any() for a in alerts.itertuples())
    assert (result["incidents"], result["found"], result["true_alerts"]) == (len(injected), found, true)
    assert found >= 3  # the model finds most injected anomalies
    scores = pq.read_table(tmp_path / "out" / "scores").to_pandas()
    positive = [((injected["entity_id"] == w.entity_id) & (injected["start"] <= w.window_end)
                 & (injected["end"] >= w.window_start)).any() for w in scores.itertuples()]
    assert result["anomalous_windows"] == sum(positive) and result["windows"] == len(scores)
    assert result["roc_auc"] > 0.8


def test_a_run_and_labels_on_s3_evaluate_as_they_do_here(s3_store, tmp_path):
    """The run's folder and the labels on S3 (moto's server, reached through ``AWS_ENDPOINT_URL`` as boto3 and
    seqwatch's other commands without Beam flags reach it): the same evaluation as of the local copies."""
    _run_folder(tmp_path / "out")
    (tmp_path / "labels").mkdir()
    _labels(tmp_path / "labels" / "incidents.csv")
    output, labels = s3_store.put_folder(tmp_path / "out", "eval/out"), s3_store.put_folder(tmp_path / "labels",
                                                                                          "eval/labels")
    env = {**s3_store.env, "AWS_ENDPOINT_URL": s3_store.endpoint}
    remote = subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "evaluate", "--output", output,
                             "--labels", f"{labels}/incidents.csv"], capture_output=True, text=True, env=env)
    assert remote.returncode == 0, remote.stderr[-2000:]
    here = json.loads(_cli("--output", tmp_path / "out", "--labels", tmp_path / "labels" / "incidents.csv").stdout)
    there = json.loads(remote.stdout)
    assert {k: v for k, v in there.items() if k not in ("output", "labels")} == \
        {k: v for k, v in here.items() if k not in ("output", "labels")}
    assert there["found"] == 1 and there["roc_auc"] == pytest.approx(7 / 8)


@pytest.mark.slow  # the emulator's start is shared, but each command starts its own interpreter
def test_a_run_and_labels_on_gcs_evaluate_as_they_do_here(gcs_store, tmp_path):
    """The same on Google Cloud Storage (gcp-storage-emulator, reached as the other commands reach it)."""
    _run_folder(tmp_path / "out")
    (tmp_path / "labels").mkdir()
    _labels(tmp_path / "labels" / "incidents.csv")
    output = gcs_store.put_folder(tmp_path / "out", "eval/out")
    labels = gcs_store.put_folder(tmp_path / "labels", "eval/labels")
    remote = subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "evaluate", "--output", output,
                             "--labels", f"{labels}/incidents.csv"], capture_output=True, text=True,
                            env=gcs_store.env, timeout=120)
    assert remote.returncode == 0, remote.stderr[-2000:]
    here = json.loads(_cli("--output", tmp_path / "out", "--labels", tmp_path / "labels" / "incidents.csv").stdout)
    there = json.loads(remote.stdout)
    assert there["output"].startswith("gs://")
    assert {k: v for k, v in there.items() if k not in ("output", "labels")} == \
        {k: v for k, v in here.items() if k not in ("output", "labels")}
    assert there["found"] == 1 and there["roc_auc"] == pytest.approx(7 / 8)
