"""Scoring windows with RunInference and a Keras ``ModelHandler``.

``Seq2SeqModelHandler`` is the one seam between Beam and the model: RunInference loads the artifact once
per worker (shared across threads), batches ``WindowBatch`` elements, and records inference metrics. Each
call concatenates the windows of several panes into one model call, scored in fixed-size batches.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, RunInference

from seqwatch.pipelines.stage_metrics import StageTimer
from seqwatch.schemas.elements import ScoredWindows, WindowBatch


class Seq2SeqModelHandler(ModelHandler[WindowBatch, ScoredWindows, Any]):
    """Loads a seqwatch model artifact and scores ``WindowBatch`` elements into ``ScoredWindows``."""

    def __init__(self, model_dir: str, max_batch_panes: int = 16):
        self.model_dir = model_dir
        self.max_batch_panes = max_batch_panes
        self._timer = None

    def load_model(self):
        from seqwatch.models.artifact import load_artifact
        return load_artifact(self.model_dir)

    def update_model_path(self, model_path: Optional[str] = None):
        if model_path:
            self.model_dir = model_path

    def run_inference(self, batch: Sequence[WindowBatch], model, inference_args=None) -> Iterable[ScoredWindows]:
        if self._timer is None:
            self._timer = StageTimer("score")
        sizes = [len(wb.ends) for wb in batch]
        with self._timer:
            result = model.score_windows(np.concatenate([wb.values for wb in batch]))
        coverage = model.intervals.coverage if model.intervals else 0.0
        start = 0
        for wb, size in zip(batch, sizes):
            part = slice(start, start + size)
            start += size
            yield ScoredWindows(
                wb, result.score[part], float(model.threshold), result.is_anomaly[part], result.severity[part],
                result.tail_probability[part], result.contributions[part],
                None if result.forecast is None else result.forecast[part],
                None if result.lower is None else result.lower[part],
                None if result.upper is None else result.upper[part],
                coverage, model.window_length, model.model_id, model.model_version)

    def get_num_bytes(self, batch: Sequence[WindowBatch]) -> int:
        return sum(wb.values.nbytes for wb in batch)

    def get_metrics_namespace(self) -> str:
        return "seqwatch"

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": self.max_batch_panes}

    def share_model_across_processes(self) -> bool:
        return False


class ScoreWindows(beam.PTransform):
    """``WindowBatch -> ScoredWindows`` through RunInference with ``Seq2SeqModelHandler``."""

    def __init__(self, model_dir: str):
        super().__init__()
        self.model_dir = model_dir

    def expand(self, windows):
        return windows | "RunInference" >> RunInference(Seq2SeqModelHandler(self.model_dir))
