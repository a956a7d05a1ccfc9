"""Leaving alerted stretches out of fine-tuning data, with spans and counts worked out by hand."""
from types import SimpleNamespace

import pandas as pd
import pyarrow.parquet as pq
import pytest

from seqwatch.pipelines.retraining import alert_spans, leave_out_alerted
from seqwatch.schemas.arrow import ALERT_SCHEMA, to_table


def _readings(entity: str, seconds: range) -> pd.DataFrame:
    return pd.DataFrame({"entity_id": entity, "channel": "flow",
                         "timestamp": pd.to_datetime(list(seconds), unit="s", utc=True), "value": 1.0})


def _seconds(frame: pd.DataFrame) -> list:
    return [int(t.timestamp()) for t in frame["timestamp"]]


def _spans(*rows) -> pd.DataFrame:
    return pd.DataFrame([{"entity_id": e, "start_us": a * 1_000_000, "end_us": b * 1_000_000} for e, a, b in rows])


def test_readings_inside_an_alert_of_their_entity_are_left_out_ends_included():
    frame = pd.concat([_readings("a", range(0, 100, 10)), _readings("b", range(0, 100, 10))], ignore_index=True)
    # a: 20..40 (3 readings: 20, 30, 40) and a nested/overlapping pair 60..70 + 65..65 (60, 70);
    # b: 95..200 covers nothing (no reading at 95..99); c: no readings at all
    kept, left_out = leave_out_alerted(frame, _spans(("a", 20, 40), ("a", 60, 70), ("a", 65, 65), ("b", 95, 200),
                                                     ("c", 0, 100)))
    assert left_out == 5
    assert _seconds(kept[kept["entity_id"] == "a"]) == [0, 10, 50, 80, 90]
    assert len(kept[kept["entity_id"] == "b"]) == 10


def test_a_long_alert_covers_readings_after_a_later_short_one():
    frame = _readings("a", range(0, 100, 10))
    kept, left_out = leave_out_alerted(frame, _spans(("a", 10, 80), ("a", 30, 30)))
    assert left_out == 8 and _seconds(kept) == [0, 90]


def test_no_alerts_leave_everything(tmp_path):
    frame = _readings("a", range(0, 50, 10))
    (tmp_path / "manifest.json").write_text("{}")
    spans = alert_spans(tmp_path)
    assert spans.empty
    kept, left_out = leave_out_alerted(frame, spans)
    assert left_out == 0 and kept.equals(frame)


def test_alert_spans_are_read_from_a_run_output(tmp_path):
    start = pd.Timestamp("2026-01-05T00:01:00Z").value // 1000
    alert = SimpleNamespace(alert_id="x1", entity_id="pump-01", start=start, end=start + 60_000_000, peak_score=9.0,
                            threshold=3.0, severity="warning", windows=2, top_channels=["flow"], model_id="m",
                            model_version="v1", run_id="r")
    folder = tmp_path / "alerts" / "pump-01"
    folder.mkdir(parents=True)
    pq.write_table(to_table([alert], ALERT_SCHEMA), folder / "x1.parquet")
    spans = alert_spans(tmp_path)
    assert spans.to_dict("records") == [{"entity_id": "pump-01", "start_us": start, "end_us": start + 60_000_000}]
    with pytest.raises(FileNotFoundError, match="is not the output folder of a seqwatch run"):
        alert_spans(tmp_path / "alerts" / "pump-01")


def test_a_stream_output_without_alerts_has_no_spans(tmp_path):
    """A stream's output holds counts/ from its first flush window on, and alerts/ only once one is settled."""
    with pytest.raises(FileNotFoundError, match=r"no manifest.json, alerts/ or counts/"):
        alert_spans(tmp_path)
    (tmp_path / "counts").mkdir()
    assert alert_spans(tmp_path).empty



def test_a_streams_open_incident_is_left_out_from_its_start_on(tmp_path):
    """Found by the bug hunt of the model lifecycle: alert_spans read only alerts/, so a fine-tuning on a running
    stream's archive (readings/) trained on a fault whose incident was still open (alerts_open/ only). An open
    incident goes on: every later reading of its entity is left out; one settled since counts with its end."""
    start = pd.Timestamp("2026-01-05T00:01:00Z").value // 1000

    def alert(alert_id, entity, end_s, folder):
        row = SimpleNamespace(alert_id=alert_id, entity_id=entity, start=start, end=start + end_s * 1_000_000,
                              peak_score=9.0, threshold=3.0, severity="warning", windows=2, top_channels=["flow"],
                              model_id="m", model_version="v1", run_id="r")
        (tmp_path / folder / entity).mkdir(parents=True, exist_ok=True)
        pq.write_table(to_table([row], ALERT_SCHEMA), tmp_path / folder / entity / f"{alert_id}.parquet")

    (tmp_path / "counts").mkdir()
    alert("open1", "pump-01", 30, "alerts_open")  # still open: as of its first window
    alert("done2", "pump-02", 30, "alerts_open")  # opened, then settled 90 s long
    alert("done2", "pump-02", 90, "alerts")
    alert("late3", "pump-02", 30, "alerts_open")  # its id moved: panes out of order; the settled alert covers it
    spans = alert_spans(tmp_path).sort_values("entity_id").to_dict("records")
    assert spans == [{"entity_id": "pump-01", "start_us": start, "end_us": 2**63 - 1},
                     {"entity_id": "pump-02", "start_us": start, "end_us": start + 90_000_000}]
    seconds = range(start // 1_000_000 - 30, start // 1_000_000 + 300, 30)
    frame = pd.concat([_readings("pump-01", seconds), _readings("pump-02", seconds)], ignore_index=True)
    kept, left_out = leave_out_alerted(frame, alert_spans(tmp_path))
    assert _seconds(kept[kept["entity_id"] == "pump-01"]) == [start // 1_000_000 - 30]
    assert len(kept[kept["entity_id"] == "pump-02"]) == len(seconds) - 4  # start, +30, +60, +90
    assert left_out == len(seconds) - 1 + 4
