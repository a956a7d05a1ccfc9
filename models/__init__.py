"""seqwatch.models: seq2seq autoencoder detectors, their maths and their evaluation, without Beam.

Keras is configured here: the JAX backend is the default (fastest on CPU, see FACTS.md) unless the user set
``KERAS_BACKEND``. Modules that need Keras import it lazily, so the pure-numpy parts (windowing, scaling,
scoring, thresholds, intervals, evaluation) load fast.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

__all__ = ["artifact", "builders", "compile_cache", "config", "detector", "evaluation", "intervals", "quiet_imports",
           "scaling", "scoring", "synthetic", "thresholds", "training", "windowing"]
