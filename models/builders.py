"""Keras 3 builders for sequence-to-sequence autoencoders (no training, no scoring here).

The encoder reads a window ``[L, C]`` with 1-3 stacked LSTM or GRU layers (optionally bidirectional) and
summarises it in one vector. The reconstruction decoder repeats that vector L times and unrolls a recurrent
decoder to rebuild the window; the optional forecasting decoder does the same for the next H steps, from
the same encoding (one model, two heads). Only stock layers are used, so ``.keras`` files load in safe mode.
"""
from __future__ import annotations

from seqwatch.models.config import ArchitectureConfig
from seqwatch.models.quiet_imports import keras_module

keras = keras_module()
layers = keras.layers

RECONSTRUCTION = "reconstruction"
FORECAST = "forecast"


def _rnn(cell: str, units: int, return_sequences: bool, dropout: float, recurrent_dropout: float, name: str):
    rnn_class = layers.LSTM if cell == "lstm" else layers.GRU
    return rnn_class(units, return_sequences=return_sequences, dropout=dropout,
                     recurrent_dropout=recurrent_dropout, name=name)


def _decoder(encoding, steps: int, n_channels: int, config: ArchitectureConfig, name: str):
    x = layers.RepeatVector(steps, name=f"{name}_repeat")(encoding)
    for i in range(config.layers):
        x = _rnn(config.cell, config.units, True, config.dropout, config.recurrent_dropout, f"{name}_rnn{i}")(x)
    return layers.TimeDistributed(layers.Dense(n_channels), name=name)(x)


def build_seq2seq(config: ArchitectureConfig, window_length: int, n_channels: int) -> keras.Model:
    """Build the autoencoder for windows ``[window_length, n_channels]``.

    Returns a functional model with one output (``reconstruction``) or two (``reconstruction``, ``forecast``
    of shape ``[H, n_channels]``) when ``config.forecast_horizon > 0``.
    """
    if window_length < 2:
        raise ValueError(f"window_length must be >= 2, got {window_length}")
    if n_channels < 1:
        raise ValueError(f"n_channels must be >= 1, got {n_channels}")
    inputs = keras.Input(shape=(window_length, n_channels), name="window")
    x = inputs
    for i in range(config.layers):
        last = i == config.layers - 1
        rnn = _rnn(config.cell, config.units, not last, config.dropout, config.recurrent_dropout, f"encoder_rnn{i}")
        x = layers.Bidirectional(rnn, name=f"encoder_bi{i}")(x) if config.bidirectional else rnn(x)
    encoding = x
    outputs = {RECONSTRUCTION: _decoder(encoding, window_length, n_channels, config, RECONSTRUCTION)}
    if config.forecast_horizon > 0:
        outputs[FORECAST] = _decoder(encoding, config.forecast_horizon, n_channels, config, FORECAST)
    name = f"seq2seq_{config.cell}{'_bi' if config.bidirectional else ''}_{config.layers}x{config.units}"
    return keras.Model(inputs, outputs, name=name)
