"""The training report: loss curves as a PNG and final metrics as JSON, next to the model artifact."""
from __future__ import annotations

import json
from pathlib import Path


def write_training_report(detector, directory) -> Path:
    """Write ``training_report.json`` and ``loss_curves.png`` into ``directory``; returns the JSON path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    history = detector.history
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in ("loss", "val_loss"):
        if key in history:
            ax.plot(range(1, len(history[key]) + 1), history[key], label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean squared error (scaled units)")
    if all(value > 0 for key in ("loss", "val_loss") for value in history.get(key, [])):
        ax.set_yscale("log")  # a loss of 0 (readings the model reproduces exactly) has no place on it
    ax.set_title(f"{detector.model.name} {detector.model_version}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(directory / "loss_curves.png", dpi=100)
    plt.close(fig)
    report = {"model_version": detector.model_version, "metrics": detector.metrics, "history": history,
              "config": detector.config.to_dict()}
    path = directory / "training_report.json"
    path.write_text(json.dumps(report, indent=1, sort_keys=True))
    return path
