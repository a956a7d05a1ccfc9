"""Training of a seq2seq autoencoder, following common practice for recurrent autoencoders.

Backpropagation through time over whole windows, Adam with gradient-norm clipping, dropout from the
architecture, early stopping on validation loss with the best weights restored, learning rate halved when
the validation loss stalls, and fixed seeds. The train/validation split is chronological and done by the
caller (``seqwatch.models.detector``); windows are shuffled only inside the training part.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from seqwatch.models.config import TrainingConfig
from seqwatch.models.quiet_imports import keras_module

keras = keras_module()

class EpochProgress(keras.callbacks.Callback):
    """One line per epoch on stderr: losses, learning rate, seconds."""

    def __init__(self, stream=sys.stderr):
        super().__init__()
        self.stream = stream
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.stream.write(f"  epoch {epoch + 1:3d}  loss {logs.get('loss', float('nan')):.4f}  "
                          f"val_loss {logs.get('val_loss', float('nan')):.4f}  lr {lr:.1e}  "
                          f"{time.perf_counter() - self._start:.1f}s\n")
        self.stream.flush()


def train_autoencoder(model: keras.Model, x_train: np.ndarray, y_train: dict, x_val: np.ndarray, y_val: dict,
                      config: TrainingConfig, progress: bool = True, keep_optimizer: bool = False) -> dict:
    """Fit ``model`` in place; returns the Keras history (per-epoch losses and learning rates).

    ``keep_optimizer`` (fine-tuning): a model that is already compiled keeps its optimizer state and compiled
    training step, with the learning rate reset to the configured one; recompiling would retrace the step."""
    if len(x_train) == 0 or len(x_val) == 0:
        raise ValueError(f"need training and validation windows, got {len(x_train)} and {len(x_val)}")
    if keep_optimizer and getattr(model, "optimizer", None) is not None and model.compiled:
        model.optimizer.learning_rate.assign(config.learning_rate)
    else:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate, clipnorm=config.clipnorm),
                      loss={name: "mse" for name in y_train})
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(1, config.patience // 2),
                                          min_lr=config.learning_rate / 64),
    ]
    if progress:
        callbacks.append(EpochProgress())
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=config.epochs,
                        batch_size=config.batch_size, shuffle=True, callbacks=callbacks, verbose=0)
    return {key: [float(v) for v in values] for key, values in history.history.items()}
