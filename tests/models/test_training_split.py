"""``Seq2SeqDetector.fit`` cuts each entity's readings into its train, validation and calibration parts by the
fractions of its steps with readings, not of its time span: training history from two periods (two weeks
months apart, two daily files of a few hours each) once had its validation and calibration cuts fall inside
the gap between them, and fit refused data it had plenty of ("the validation part fills only 0 windows")."""
import numpy as np
import pandas as pd
import pytest

from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
from seqwatch.models.detector import Seq2SeqDetector

STEP = pd.Timedelta(seconds=60)
CONFIG = DetectorConfig(ArchitectureConfig(cell="gru", units=4), WindowConfig(length=8, stride=2),
                        TrainingConfig(epochs=1, batch_size=64, training_stride=2, patience=1))


def _period(start: str, steps: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    times = pd.Timestamp(start, tz="UTC") + np.arange(steps) * STEP
    return pd.DataFrame({"entity_id": "m1", "channel": "a", "timestamp": times,
                         "value": np.sin(np.arange(steps) / 4) + rng.normal(0, 0.1, steps)})


def test_two_periods_with_a_gap_are_cut_by_their_readings():
    # 300 steps on 2 March and 300 on 4 March: the grid spans 3,180 steps, 600 of them with readings. Cut at the
    # 420th and 510th reading: all of the first period and the second's first 120 steps train, its next 90 steps
    # validate and its last 90 calibrate: (300-8)//2+1 + (120-8)//2+1 = 147 + 57 = 204 training windows and
    # (90-8)//2+1 = 42 in each of the other parts. By time the cuts (steps 2,226 and 2,703) fell in the gap.
    frame = pd.concat([_period("2026-03-02", 300, 1), _period("2026-03-04", 300, 2)], ignore_index=True)
    detector = Seq2SeqDetector(CONFIG).fit(frame, progress=False)
    assert detector.metrics["windows"] == {"train": 204, "validation": 42, "calibration": 42}
    # The scaler saw the training readings only: the first 420.
    assert detector.scaler.mean[0] == pytest.approx(frame["value"].iloc[:420].mean())


def test_fine_tuning_on_readings_with_a_stretch_left_out_cuts_by_readings_too():
    # 600 steps with steps 100-299 left out (as --exclude-alerts does): 400 readings, cut at the 280th (step
    # 480) and the 340th (step 540): training windows (100-8)//2+1 + (180-8)//2+1 = 47 + 87 = 134, and
    # (60-8)//2+1 = 27 in each of the other parts. By time (420, 510) the validation part would hold 90 steps.
    base = Seq2SeqDetector(CONFIG).fit(_period("2026-03-02", 400, 3), progress=False)
    recent = _period("2026-03-03", 600, 4)
    recent = recent[~recent.index.isin(range(100, 300))]
    base.fine_tune(recent, progress=False)
    assert base.metrics["windows"] == {"train": 134, "validation": 27, "calibration": 27}
