"""Alert merging and forecast rows, by hand."""
import numpy as np

from seqwatch.pipelines.alerts import alert_id, continues, forecast_rows, merge_alerts
from seqwatch.schemas.elements import Score, ScoredWindows, WindowBatch

CHANNELS = ("a", "b", "c")


def _score(start, end, score, contributions, severity="info"):
    return Score("m1", start, end, score, 2.0, True, severity, 1e-3, "a", contributions, "mid", "v1", "run")


def test_overlapping_and_touching_windows_merge_and_gaps_split():
    windows = [
        _score(0, 3, 3.0, (1.0, 0.5, 0.0)),
        _score(2, 5, 5.0, (0.0, 4.0, -1.0), severity="warning"),
        _score(6, 9, 2.5, (0.0, 0.0, 2.0)),  # starts one step after 5: same incident
        _score(12, 15, 4.0, (0.0, 0.0, 3.0), severity="critical"),  # gap: a new incident
    ]
    alerts = merge_alerts("m1", list(reversed(windows)), CHANNELS, step_us=1, run_id="run")
    assert [(a.start, a.end, a.windows, a.peak_score, a.severity) for a in alerts] == [
        (0, 9, 3, 5.0, "warning"), (12, 15, 1, 4.0, "critical")]
    # blame over the first incident: a = 1, b = 4.5, c = 2 (negative parts ignored)
    assert alerts[0].top_channels == ("b", "c", "a")
    assert alerts[1].top_channels == ("c",)
    assert alerts[0].alert_id == alert_id("m1", 0, "mid") != alerts[1].alert_id
    assert len(alerts[0].alert_id) == 20


def test_forecast_rows_come_from_the_last_window_of_the_pane():
    wb = WindowBatch("m1", 0, ("a", "b"), 10, np.array([100, 50]), np.zeros((2, 4, 2), np.float32),
                     np.ones((2, 4, 2), bool), 8)
    forecast = np.arange(8, dtype=float).reshape(2, 2, 2)
    scored = ScoredWindows(wb, np.zeros(2), 1.0, np.zeros(2, bool), np.array(["normal"] * 2), np.ones(2),
                           np.zeros((2, 2)), forecast, forecast - 1, forecast + 1, 0.9, 4, "mid", "v1")
    rows = forecast_rows(scored, "run")
    assert [(r.issued_at, r.target_time, r.step, r.channel, r.yhat, r.yhat_lower, r.yhat_upper) for r in rows] == [
        (100, 110, 1, "a", 0.0, -1.0, 1.0), (100, 110, 1, "b", 1.0, 0.0, 2.0),
        (100, 120, 2, "a", 2.0, 1.0, 3.0), (100, 120, 2, "b", 3.0, 2.0, 4.0)]


def test_a_cooldown_merges_windows_separated_by_a_quiet_spell_no_longer_than_it():
    windows = [_score(0, 3, 3.0, (1.0, 0.0, 0.0)),
               _score(12, 15, 4.0, (0.0, 1.0, 0.0)),  # starts 9 steps after 3: 8 quiet steps (4..11)
               _score(30, 33, 2.0, (0.0, 0.0, 1.0))]  # starts 15 steps after 15
    spans = {c: [(a.start, a.end, a.windows) for a in merge_alerts("m1", windows, CHANNELS, 1, "run", cooldown_us=c)]
             for c in (0, 7, 8, 13, 14)}
    assert spans[0] == spans[7] == [(0, 3, 1), (12, 15, 1), (30, 33, 1)]
    assert spans[8] == spans[13] == [(0, 15, 2), (30, 33, 1)]  # 12 <= 3 + 1 + 8
    assert spans[14] == [(0, 33, 3)]  # 30 <= 15 + 1 + 14
    assert continues(12, 3, 1, 8) and not continues(12, 3, 1, 7)
    # the merged alert keeps the id of its first window, as the incident would have without the cooldown
    assert merge_alerts("m1", windows, CHANNELS, 1, "run", cooldown_us=8)[0].alert_id == alert_id("m1", 0, "mid")
