"""How RunInference groups panes into model calls. A fleet's panes hold a few windows each: batched 16 panes a
call, 2,000 entities made 135 calls of ~64 windows, each padded to the network's batch of 512 (score 6.0 s of a
22.8 s run); weighed in windows they fill the network's batches (1.2 s of 14.7 s)."""
import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that

from seqwatch.models.detector import PREDICT_BATCH
from seqwatch.pipelines.inference import Seq2SeqModelHandler
from seqwatch.schemas.elements import WindowBatch


def _pane(entity: int, windows: int) -> WindowBatch:
    return WindowBatch(f"pump-{entity}", 0, ("a",), 10_000_000, np.arange(windows, dtype=np.int64),
                       np.zeros((windows, 4, 1), np.float32), np.ones((windows, 4, 1), bool), windows)


# Beam's batch size estimator fits a line to its timings; panes of one size make that fit degenerate.
@pytest.mark.filterwarnings("ignore:Polyfit may be poorly conditioned")
@pytest.mark.filterwarnings("ignore:divide by zero encountered in divide:RuntimeWarning")
def test_model_calls_are_weighed_in_windows_and_fill_the_networks_batch():
    handler = Seq2SeqModelHandler("unused")
    kwargs = handler.batch_elements_kwargs()
    assert kwargs["min_batch_size"] == PREDICT_BATCH and kwargs["max_batch_size"] == 4096
    assert kwargs["element_size_fn"](_pane(0, 4)) == 4

    def check(batches):
        windows = [sum(len(p.ends) for p in batch) for batch in batches]
        assert sum(windows) == 2000 * 4
        assert all(0 < w <= 4096 for w in windows)
        assert len(batches) <= 2000 * 4 // PREDICT_BATCH + 2, windows  # not one small pane per call

    with beam.Pipeline() as p:
        batches = (p | beam.Create([_pane(i, 4) for i in range(2000)]) | beam.BatchElements(**kwargs))
        assert_that(batches, check)


def test_an_empty_batch_scores_nothing():
    """Beam's BatchElements, weighing elements, flushes an empty batch before an element heavier than its
    target (a pane of more than 512 windows): that crashed the run with 'need at least one array to
    concatenate'."""
    assert list(Seq2SeqModelHandler("unused").run_inference([], model=None)) == []
