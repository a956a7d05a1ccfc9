"""``seqwatch evaluate``: a run's alerts and scores against incidents a person labelled.

A data engineer who has an incident log (maintenance tickets, a list of known faults) asks how well a model finds
them before trusting its alerts. ``evaluate_run`` reads a run's output folder (batch or stream, local or on an
object store: tested on S3) and a labels file (CSV or Parquet: ``entity_id, start, end``, where an incident
without an ``end`` (no column, or a blank) is the instant of its start, as a ticket's time; other columns are
ignored) and gives:

- **event level**, as the range metrics of ``seqwatch.models.evaluation.event_metrics`` (its overlap rule,
  ``overlaps_any``, on each entity's merged intervals): an incident is found
  when an alert of its entity overlaps it, and an alert is true when it overlaps an incident of its entity
  (recall = incidents found / incidents, precision = true alerts / alerts, F1 of the two), over all entities
  and per entity; with a ``tolerance``, each incident is widened by that much on both sides first (an alert a
  minute late still found it);
- **window level**: ROC AUC and PR AUC (average precision) of the scored windows' scores, a window counting as
  anomalous when it overlaps a (widened) incident of its entity: how well the scores rank, whatever the threshold.

Only what the run could have seen is judged: an incident of an entity the run did not score, or outside the time its
windows cover (widened by the tolerance), is left out (and counted as such), so one day's run can be held against a
year's log. Overlapping incidents of an entity count as one. A stream's incident still open (its notice in
``alerts_open/``) counts from its start to the entity's last scored window.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from seqwatch.models.detector import as_micros
from seqwatch.models.evaluation import overlaps_any, pr_auc, roc_auc

LABEL_COLUMNS = ("entity_id", "start")  # and "end"; without it each incident is the instant of its start


def read_incidents(path: str) -> pd.DataFrame:
    """``entity_id, start_us, end_us`` of a labels file (CSV, or Parquet by its name); ValueError in one sentence
    when it cannot be read as such."""
    from apache_beam.io.filesystems import FileSystems

    from seqwatch.pipelines.object_store import path_exists

    if not path_exists(path):
        raise ValueError(f"the labels file {path} does not exist")
    try:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            frame = pd.read_parquet(f) if path.lower().endswith(".parquet") else \
                pd.read_csv(f, dtype={"entity_id": str})
    except Exception as exc:  # pandas and pyarrow raise many types for a file that is not what it says
        raise ValueError(f"the labels file {path} could not be read ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    missing = [c for c in LABEL_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"the labels file {path} lacks the column(s) {missing} (it has {list(frame.columns)}); "
                         f"each row is an incident: entity_id, start and, where it lasted, end")
    if frame.empty:
        return pd.DataFrame({"entity_id": pd.Series(dtype=str), "start_us": pd.Series(dtype=np.int64),
                             "end_us": pd.Series(dtype=np.int64)})
    def where(row: int) -> str:  # a row as the file numbers it: a CSV's lines after its header, a Parquet's rows
        return f"row {row + 1}" if path.lower().endswith(".parquet") else f"line {row + 2}"

    no_start = np.flatnonzero(frame["start"].isna().to_numpy())
    if no_start.size:
        raise ValueError(f"the labels file {path} has an incident without a start ({where(no_start[0])} of the file)")
    try:
        start = as_micros(frame["start"])
        end = start.copy()  # without an end (no column, or a blank): the instant of its start, as a ticket's time
        given = frame["end"].notna().to_numpy() if "end" in frame.columns else np.zeros(len(frame), dtype=bool)
        if given.any():
            end[given] = as_micros(frame["end"][given])
    except ValueError as exc:
        raise ValueError(f"the labels file {path}: {exc}") from None
    backwards = np.flatnonzero(end < start)
    if backwards.size:
        row = backwards[0]
        raise ValueError(f"the labels file {path} has an incident that ends before it starts ({where(row)} of the "
                         f"file: {frame['start'].iloc[row]} to {frame['end'].iloc[row]})")
    return pd.DataFrame({"entity_id": frame["entity_id"].astype(str).to_numpy(), "start_us": start, "end_us": end})


def read_scores(output: str) -> pd.DataFrame:
    """``entity_id, start_us, end_us, score`` of every scored window of a run's output folder."""
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    from seqwatch.pipelines.sinks import files_under

    folder = FileSystems.join(output.rstrip("/"), "scores")
    paths = [path for path, _ in files_under(folder, "**/*.parquet")]
    parts = []
    for path in paths:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            table = pq.read_table(f, columns=["entity_id", "window_start", "window_end", "score"])
        if table.num_rows:
            parts.append(pd.DataFrame({"entity_id": table.column("entity_id").to_numpy(zero_copy_only=False),
                                       "start_us": as_micros(table.column("window_start").to_pandas()),
                                       "end_us": as_micros(table.column("window_end").to_pandas()),
                                       "score": table.column("score").to_numpy()}))
    if not parts:
        return pd.DataFrame({"entity_id": pd.Series(dtype=str), "start_us": pd.Series(dtype=np.int64),
                             "end_us": pd.Series(dtype=np.int64), "score": pd.Series(dtype=float)})
    return pd.concat(parts, ignore_index=True)


def merged_intervals(starts, ends) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive intervals sorted by start, those that overlap or touch merged into one."""
    order = np.argsort(np.asarray(starts, dtype=np.int64), kind="stable")
    s, e = np.asarray(starts, dtype=np.int64)[order], np.asarray(ends, dtype=np.int64)[order]
    out_s, out_e = [], []
    for a, b in zip(s.tolist(), e.tolist()):
        if out_e and a <= out_e[-1]:
            out_e[-1] = max(out_e[-1], b)
        else:
            out_s.append(a)
            out_e.append(b)
    return np.asarray(out_s, dtype=np.int64), np.asarray(out_e, dtype=np.int64)


def _shown(us: int) -> str:
    return pd.Timestamp(int(us), unit="us", tz="UTC").isoformat()


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def evaluate_run(output: str, labels: str, tolerance_us: int = 0) -> dict:
    """The evaluation of the run in ``output`` against the incidents of the file ``labels`` (see the module's
    docstring), as a dict that ``json.dumps`` writes. ValueError in one sentence for a labels file that cannot be
    read, FileNotFoundError for an output folder that is not a run's."""
    from seqwatch.pipelines.retraining import alert_spans

    if tolerance_us < 0:
        raise ValueError(f"the tolerance must be zero or more, got {tolerance_us / 1e6:g} s")
    alerts = alert_spans(output)  # raises FileNotFoundError for a folder that is not a run's output
    incidents = read_incidents(labels)
    scores = read_scores(output)
    if scores.empty:
        raise ValueError(f"the run in {output} scored no window, so there is nothing to hold against the labels")
    spans = scores.groupby("entity_id")[["start_us", "end_us"]].agg({"start_us": "min", "end_us": "max"})
    left_out = {"entity_not_scored": 0, "outside_scored_time": 0}
    totals = dict(incidents=0, found=0, alerts=0, true_alerts=0)
    entities, missed, false_alerts = {}, [], []
    window_labels = np.zeros(len(scores), dtype=bool)
    # each entity's rows, found once (a fleet's run: thousands of entities, millions of windows)
    windows_of = scores.groupby("entity_id").indices
    empty_incidents, empty_alerts = incidents.iloc[:0], alerts.iloc[:0]
    incidents_of = {entity: part for entity, part in incidents.groupby("entity_id")}
    alerts_of = {entity: part for entity, part in alerts.groupby("entity_id")}
    for entity in sorted(set(spans.index) | set(alerts["entity_id"])):
        first, last = (int(spans.loc[entity, "start_us"]), int(spans.loc[entity, "end_us"])) \
            if entity in spans.index else (None, None)
        mine = incidents_of.get(entity, empty_incidents)
        if first is not None:
            inside = (mine["start_us"] - tolerance_us <= last) & (mine["end_us"] + tolerance_us >= first)
            left_out["outside_scored_time"] += int((~inside).sum())
            mine = mine[inside]
        true_s, true_e = merged_intervals(mine["start_us"] - tolerance_us, mine["end_us"] + tolerance_us)
        theirs = alerts_of.get(entity, empty_alerts)
        alert_end = theirs["end_us"].to_numpy(dtype=np.int64)
        if last is not None:
            alert_end = np.minimum(alert_end, last)  # a stream's open incident: to the last window
        pred_s, pred_e = merged_intervals(theirs["start_us"], alert_end)
        found = overlaps_any(true_s, true_e, pred_s, pred_e)
        true = overlaps_any(pred_s, pred_e, true_s, true_e)
        entities[entity] = {"incidents": int(true_s.size), "found": int(found.sum()), "alerts": int(pred_s.size),
                            "true_alerts": int(true.sum())}
        for key, n in entities[entity].items():
            totals[key] += n
        missed += [{"entity_id": entity, "start": _shown(a + tolerance_us), "end": _shown(b - tolerance_us)}
                   for a, b, hit in zip(true_s.tolist(), true_e.tolist(), found) if not hit]
        false_alerts += [{"entity_id": entity, "start": _shown(a), "end": _shown(b)}
                         for a, b, hit in zip(pred_s.tolist(), pred_e.tolist(), true) if not hit]
        rows = windows_of.get(entity, np.zeros(0, dtype=np.int64))
        if rows.size:
            window_labels[rows] = overlaps_any(scores["start_us"].to_numpy()[rows], scores["end_us"].to_numpy()[rows],
                                               true_s, true_e)
    left_out["entity_not_scored"] = int((~incidents["entity_id"].isin(set(spans.index))).sum())
    precision = _ratio(totals["true_alerts"], totals["alerts"])
    recall = _ratio(totals["found"], totals["incidents"])
    # as event_metrics: 0 where one side has intervals and nothing overlaps (no alert at all, or no incident)
    f1 = None if precision is None and recall is None else \
        (2 * precision * recall / (precision + recall) if precision and recall else 0.0)
    positives = int(window_labels.sum())
    windows = {"windows": len(scores), "anomalous_windows": positives, "roc_auc": None, "pr_auc": None}
    if 0 < positives < len(scores):
        windows["roc_auc"] = roc_auc(window_labels, scores["score"].to_numpy())
        windows["pr_auc"] = pr_auc(window_labels, scores["score"].to_numpy())
    return {"output": output, "labels": labels, "tolerance_seconds": tolerance_us / 1e6,
            **totals, "recall": recall, "precision": precision, "f1": f1, **windows,
            "incidents_left_out": left_out, "missed": missed, "false_alerts": false_alerts, "entities": entities}


def summary_line(result: dict) -> str:
    """One line of what ``evaluate_run`` found, for a person."""
    def shown(value) -> str:
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"

    left = sum(result["incidents_left_out"].values())
    return (f"{result['found']} of {result['incidents']} incidents found (recall {shown(result['recall'])}); "
            f"{result['true_alerts']} of {result['alerts']} alerts on an incident (precision "
            f"{shown(result['precision'])}); F1 {shown(result['f1'])}; windows: ROC AUC {shown(result['roc_auc'])}, "
            f"PR AUC {shown(result['pr_auc'])}"
            + (f"; {left} incident(s) left out (entity not scored, or outside the time scored)" if left else ""))
