"""What the speed benchmarks share: a timestamped progress line, a model of the demo's shape, and timed runs of
variants taken in turn."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Callable


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


def alternating_medians(labels, run: Callable[[str, int], object], repeats: int) -> dict[str, float]:
    """Each variant's median seconds over ``repeats`` rounds that run every variant in turn (so that the machine's
    drift falls on all alike), after a first round that only warms up (imports, the compiled model, caches);
    ``run(label, repeat)`` runs one once."""
    times: dict[str, list] = {label: [] for label in labels}
    for repeat in range(repeats + 1):
        for label in times:
            t0 = time.perf_counter()
            run(label, repeat)
            seconds = time.perf_counter() - t0
            log(f"run {repeat}, {label}: {seconds:.1f} s")
            if repeat:
                times[label].append(seconds)
    return {label: statistics.median(values) for label, values in times.items()}
