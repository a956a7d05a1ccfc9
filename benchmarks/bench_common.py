"""What the speed benchmarks share: a timestamped progress line, and a model of the demo's shape."""
from __future__ import annotations

import sys
import time
from pathlib import Path


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def train_demo_shape(work: Path, model_id: str, epochs: int) -> Path:
    """A model of the demo's shape (LSTM 32 units, window 32, stride 8, 4 channels at 10 s) trained for
    ``epochs`` on synthetic pumps, saved under ``work``/model; returns the artifact folder."""
    from seqwatch.models.artifact import save_artifact
    from seqwatch.models.config import ArchitectureConfig, DetectorConfig, TrainingConfig, WindowConfig
    from seqwatch.models.detector import Seq2SeqDetector
    from seqwatch.models.synthetic import generate_sensor_data

    log("training the demo's model shape (window 32, stride 8)")
    history, _ = generate_sensor_data(4, 3000, 10, seed=11)
    config = DetectorConfig(ArchitectureConfig(cell="lstm", units=32), WindowConfig(length=32, stride=8, max_gap=3),
                            TrainingConfig(epochs=epochs, batch_size=128, patience=3))
    detector = Seq2SeqDetector(config, model_id=model_id).fit(history, progress=False)
    return save_artifact(detector, work / "model")
