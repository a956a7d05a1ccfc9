"""Model benchmark (issue 3): training time per epoch and inference windows/s for each architecture variant.

    .venv/bin/python benchmarks/models.py          # what `make bench-models` runs; rewrites its BENCHMARKS.md section

Every variant gets the same data: 8 channels, window 64, 20,000 training windows, batch 256, 64 units, and is
scored in batches of ``PREDICT_BATCH`` (network + Mahalanobis scoring). Epoch time is the median of 3 epochs
after the first (which includes compilation).
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sections import replace_section  # noqa: E402

WINDOW, CHANNELS, UNITS, TRAIN_WINDOWS, BATCH = 64, 8, 64, 20_000, 256

VARIANTS = {
    "LSTM": dict(cell="lstm"),
    "GRU": dict(cell="gru"),
    "bidirectional LSTM": dict(cell="lstm", bidirectional=True),
    "LSTM, 2 layers": dict(cell="lstm", layers=2),
    "LSTM + forecast head (H=8)": dict(cell="lstm", forecast_horizon=8),
    "bidirectional GRU + forecast head (H=8)": dict(cell="gru", bidirectional=True, forecast_horizon=8),
}


def bench_variant(name: str, options: dict, windows: np.ndarray) -> dict:
    import keras

    from seqwatch.models.builders import FORECAST, RECONSTRUCTION, build_seq2seq
    from seqwatch.models.config import ArchitectureConfig
    from seqwatch.models.detector import PREDICT_BATCH

    config = ArchitectureConfig(units=UNITS, **options)
    keras.utils.set_random_seed(0)
    model = build_seq2seq(config, WINDOW, CHANNELS)
    x = windows[:, :WINDOW]
    targets = {RECONSTRUCTION: x}
    if config.forecast_horizon:
        targets[FORECAST] = windows[:, WINDOW:WINDOW + config.forecast_horizon]
    model.compile(optimizer=keras.optimizers.Adam(1e-3, clipnorm=1.0), loss={k: "mse" for k in targets})
    epoch_seconds = []
    for _ in range(4):
        start = time.perf_counter()
        model.fit(x, targets, batch_size=BATCH, epochs=1, shuffle=True, verbose=0)
        epoch_seconds.append(time.perf_counter() - start)
    batch = x[:PREDICT_BATCH]
    model.predict_on_batch(batch)
    rounds = 20
    start = time.perf_counter()
    for _ in range(rounds):
        model.predict_on_batch(batch)
    seconds = time.perf_counter() - start
    return {"variant": name, "params": model.count_params(), "first_epoch_s": epoch_seconds[0],
            "epoch_s": statistics.median(epoch_seconds[1:]), "windows_per_s": rounds * PREDICT_BATCH / seconds}


def main() -> int:
    from seqwatch.models.synthetic import generate_sensor_data
    from seqwatch.models.windowing import sliding_windows

    started = time.time()
    a, _ = generate_sensor_data(1, 90_000, 1, seed=0)
    b, _ = generate_sensor_data(1, 90_000, 1, seed=1)
    values = np.concatenate([a.pivot(index="timestamp", columns="channel", values="value").to_numpy(),
                             b.pivot(index="timestamp", columns="channel", values="value").to_numpy()], axis=1)
    values = ((values - values.mean(0)) / values.std(0)).astype(np.float32)
    windows = sliding_windows(values, WINDOW + 8, 4)[:TRAIN_WINDOWS]
    rows = []
    for name, options in VARIANTS.items():
        print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)
        rows.append(bench_variant(name, options, windows))
    table = "\n".join(f"| {r['variant']} | {r['params']:,} | {r['epoch_s']:.1f} | {r['first_epoch_s']:.1f} | "
                      f"{r['windows_per_s']:,.0f} |" for r in rows)
    text = f"""## Model variants

Command: `make bench-models` (= `.venv/bin/python benchmarks/models.py`), run {time.strftime('%Y-%m-%d')} on
{os.cpu_count()} cores, Python {platform.python_version()}, Keras {__import__('keras').__version__} on
{os.environ.get('KERAS_BACKEND', 'jax')}; {time.time() - started:.0f} s in all. {TRAIN_WINDOWS:,} windows of
{WINDOW} steps x {CHANNELS} channels, {UNITS} units per layer, batch {BATCH} for training; inference in the fixed
batches the detector uses ({__import__('seqwatch.models.detector', fromlist=['PREDICT_BATCH']).PREDICT_BATCH}
windows), network only. Run alone on the machine: other load halves these numbers.

| variant | parameters | s / epoch (median of 3) | first epoch s (with compile) | inference windows/s |
|---|---|---|---|---|
{table}
"""
    print(text)
    replace_section("models", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
