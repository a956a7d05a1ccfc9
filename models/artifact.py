"""The model artifact: one directory per model version.

```
<dir>/model.keras       the network, loaded with Keras safe mode (no arbitrary code)
<dir>/metadata.json     config, channels, sampling interval, scaler, scorer, threshold, calibration, intervals,
                        training-data fingerprint, metrics, library versions, sha256 of model.keras
```
Loading checks the format version and the checksum, and refuses a corrupt or mismatched artifact with one
sentence (``ArtifactError``). Reading the metadata checks every value a run uses (a threshold that is a finite
number, a stride within the window, a scaler of one positive scale per channel, ...), and checking the network
file compares its input shape and forecast head with the metadata (from the file's ``config.json``, without
Keras), so that a ``metadata.json`` edited by hand is refused before a pipeline starts, not in a Beam worker.

A *model root* is a directory of artifacts, one sub-directory per version (``<root>/<name>/metadata.json``).
Wherever an artifact directory is expected, a model root may be given instead: it stands for its newest
artifact, the one whose ``metadata.json`` was written last (``save_artifact`` writes it last, by a rename, so
an artifact counts only once it is complete).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from seqwatch.models.config import DetectorConfig
from seqwatch.models.detector import Seq2SeqDetector
from seqwatch.models.intervals import ConformalIntervals
from seqwatch.models.scaling import ChannelScaler
from seqwatch.models.scoring import MahalanobisScorer
from seqwatch.models.thresholds import TailCalibration

FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
FORECAST_OUTPUT = "forecast"  # builders.FORECAST, the forecast head's name (builders imports Keras)


class ArtifactError(ValueError):
    """A model artifact is missing, corrupt or incompatible."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _library_versions() -> dict:
    from seqwatch.models.quiet_imports import keras_module

    keras = keras_module()
    versions = {"python": platform.python_version(), "keras": keras.__version__, "backend": keras.backend.backend(),
                "numpy": np.__version__}
    try:
        from importlib.metadata import version
        versions["seqwatch"] = version("seqwatch")
    except Exception:  # not installed (running from a source tree)
        versions["seqwatch"] = "unknown"
    return versions


def _weights_digest(model) -> str:
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def save_artifact(detector: Seq2SeqDetector, directory: str | os.PathLike) -> Path:
    """Write ``detector`` to ``directory`` (created; existing files replaced) and return the path.

    The model version is derived from the weights and calibration, so saving the same model twice gives the
    same version, and a retrained model a new one."""
    if not detector.is_fitted:
        raise ArtifactError("cannot save an unfitted detector")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    body = {
        "config": detector.config.to_dict(),
        "model_id": detector.model_id,
        "channels": list(detector.channels),
        "step_us": detector.step_us,
        "scaler": detector.scaler.to_dict(),
        "scorer": detector.scorer.to_dict(),
        "tail": detector.tail.to_dict(),
        "threshold": detector.threshold,
        "intervals": detector.intervals.to_dict() if detector.intervals else None,
        "fingerprint": detector.fingerprint,
        "metrics": _standard_json(detector.metrics),
        "history": _standard_json(detector.history),
    }
    if detector.value_bounds:  # absent: no bounds, as before the suite's were kept
        body["value_bounds"] = {name: list(pair) for name, pair in sorted(detector.value_bounds.items())}
    if detector.readings_span_us is not None:  # absent: a model saved before it was kept
        body["readings_span_us"] = [int(t) for t in detector.readings_span_us]
    if detector.grid_offset_us:  # readings off the epoch's grid (windowing.grid_offset); absent: 0, as before it
        body["grid_offset_us"] = int(detector.grid_offset_us)
    version_digest = hashlib.sha256(_weights_digest(detector.model).encode())
    version_digest.update(json.dumps(body, sort_keys=True).encode())
    detector.model_version = "v" + version_digest.hexdigest()[:12]
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        staged = Path(tmp) / MODEL_FILE
        detector.model.save(staged)
        metadata = {"format_version": FORMAT_VERSION, "model_version": detector.model_version, **body,
                    "model_sha256": _sha256(staged), "library_versions": _library_versions()}
        if detector.training_suite:  # where it lies is no part of the version (as the libraries are not)
            metadata["training_suite"] = detector.training_suite
        meta_tmp = Path(tmp) / METADATA_FILE
        meta_tmp.write_text(json.dumps(metadata, indent=1, sort_keys=True))
        os.replace(staged, directory / MODEL_FILE)
        os.replace(meta_tmp, directory / METADATA_FILE)
    return directory


def _standard_json(value):
    """``value`` with every float that is not finite (a ``best_val_loss`` of NaN when no validation loss was
    recorded) as None: ``metadata.json`` stays standard JSON, which other tools (``jq``, JavaScript) can read."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _standard_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_standard_json(item) for item in value]
    return value


def model_versions(directory: str | os.PathLike) -> list[Path]:
    """The artifacts ``directory`` stands for, oldest first: itself when it is an artifact, else those of its
    sub-directories that are complete artifacts, ordered by when their metadata was written."""
    directory = Path(directory)
    if (directory / METADATA_FILE).is_file() or (directory / MODEL_FILE).is_file():
        return [directory]
    if not directory.is_dir():
        return []
    found = []
    for sub in directory.iterdir():
        try:
            if sub.is_dir() and (sub / MODEL_FILE).is_file():
                found.append(((sub / METADATA_FILE).stat().st_mtime_ns, sub.name, sub))
        except OSError:  # no metadata yet (being written), or removed while listed
            continue
    return [sub for _, _, sub in sorted(found)]


def resolve_model_dir(directory: str | os.PathLike) -> Path:
    """The artifact directory ``directory`` stands for: itself, or the newest version of a model root (a root
    with no complete artifact yet resolves to itself, which ``read_metadata`` then refuses)."""
    versions = model_versions(directory)
    return versions[-1] if versions else Path(directory)


def read_metadata(directory: str | os.PathLike) -> dict:
    """The artifact's metadata, checked for presence and format version (the network is not loaded).
    ``directory`` is an artifact or a model root (its newest version)."""
    directory = resolve_model_dir(directory)
    meta_path = directory / METADATA_FILE
    if directory.is_file():
        raise ArtifactError(f"{directory} is a file, not a model directory (one with {MODEL_FILE} and "
                            f"{METADATA_FILE}, or a model root of such directories)")
    if not directory.is_dir():
        raise ArtifactError(f"model directory {directory} does not exist")
    if not meta_path.is_file() or not (directory / MODEL_FILE).is_file():
        raise ArtifactError(f"{directory} is not a seqwatch model: it needs {MODEL_FILE} and {METADATA_FILE}")
    try:
        metadata = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"the metadata of model {directory} is corrupt ({exc.__class__.__name__})") from None
    if not isinstance(metadata, dict) or metadata.get("format_version") != FORMAT_VERSION:
        found = metadata.get("format_version") if isinstance(metadata, dict) else None
        raise ArtifactError(f"model {directory} has artifact format {found!r}; this seqwatch reads format "
                            f"{FORMAT_VERSION}")
    check_metadata(directory, metadata)
    return metadata


# What every artifact's metadata hold (``intervals`` may be null: a model without a forecast head).
REQUIRED_KEYS = ("config", "model_id", "model_version", "channels", "step_us", "scaler", "scorer", "tail",
                 "threshold", "intervals", "fingerprint", "metrics", "model_sha256")


def check_metadata(directory: str | os.PathLike, metadata: dict) -> None:
    """Raise ``ArtifactError`` in one sentence when ``metadata`` hold a value that loading or scoring cannot use
    (a ``metadata.json`` edited by hand, or cut): ``read_metadata`` calls it, so that ``run``, ``replay``,
    ``stream`` and ``train --warm-start`` refuse such a model before any pipeline or training starts, instead of
    a Beam worker failing with a traceback, or a threshold of ``null`` scoring nothing as anomalous."""
    problem = metadata_problem(metadata)
    if problem:
        raise ArtifactError(f"the metadata of model {directory} is invalid: {problem}; restore the {METADATA_FILE} "
                            f"it was saved with, or train the model again")


def _is_number(value) -> bool:
    """A finite JSON number (not a bool, which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _shown(value) -> str:
    """A value as ``metadata.json`` writes it (``null``, ``"high"``), cut short."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers_problem(name: str, values, count: int, what: str = "finite numbers") -> str | None:
    """Why ``values`` is not a list of ``count`` finite numbers, or None."""
    if not isinstance(values, list) or len(values) != count:
        shown = f"a list of {len(values)}" if isinstance(values, list) else _shown(values)
        return f"{name} must be a list of {count} {what}, got {shown}"
    bad = [v for v in values if not _is_number(v)]
    return f"{name} must hold {what}, got {_shown(bad[0])}" if bad else None


# (config section, key, the name its check uses) of the settings that count steps or units.
WHOLE_NUMBER_FIELDS = (("window", "length", "window length"), ("window", "stride", "stride"),
                       ("window", "max_gap", "max_gap"), ("architecture", "forecast_horizon", "forecast_horizon"),
                       ("architecture", "layers", "layers"), ("architecture", "units", "units"))


def metadata_problem(metadata: dict) -> str | None:
    """The first thing wrong with an artifact's metadata, as a clause (``threshold is "high", not a finite
    number``), or None when loading and scoring can use every value."""
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing:
        return f"it lacks {', '.join(map(repr, missing))}"
    sections = metadata["config"]
    if not isinstance(sections, dict) or not all(isinstance(part, dict) for part in sections.values()):
        return f"config must hold the sections architecture, window, training and scoring, got {_shown(sections)}"
    for section, key, name in WHOLE_NUMBER_FIELDS:
        value = sections.get(section, {}).get(key, 0)
        if not _is_whole(value):
            return f"{name} must be a whole number, got {_shown(value)}"
    try:
        config = DetectorConfig.from_dict(sections)
    except (TypeError, ValueError) as exc:
        return str(exc)
    window, architecture = config.window, config.architecture
    for name in ("model_id", "model_version"):
        if not isinstance(metadata[name], str) or not metadata[name]:
            return f"{name} must be a text, got {_shown(metadata[name])}"
    channels = metadata["channels"]
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
        return f"channels must be a list of channel names, got {_shown(channels)}"
    if len(set(channels)) != len(channels):
        return f"channels names a channel twice: {channels}"
    unknown = [c for c in window.cumulative_channels if c not in channels]
    if unknown:
        return f"cumulative_channels {unknown} are not among the channels {channels}"
    n = len(channels)
    step_us = metadata["step_us"]
    if not (_is_number(step_us) and step_us == int(step_us) and step_us > 0):
        return f"step_us (the sampling interval in µs) must be a whole number > 0, got {_shown(step_us)}"
    offset = metadata.get("grid_offset_us", 0)
    if not (_is_number(offset) and offset == int(offset) and abs(offset) <= step_us // 2):
        return (f"grid_offset_us (the phase of the model's grid in µs) must be a whole number of at most half the "
                f"step, {int(step_us) // 2}, either way, got {_shown(offset)}")
    span = metadata.get("readings_span_us", [0, 0])
    if not (isinstance(span, list) and len(span) == 2 and all(_is_whole(t) for t in span) and span[0] <= span[1]):
        return (f"readings_span_us (the first and last time of the training readings, in µs) must be two whole "
                f"numbers, the first not after the second, got {_shown(span)}")
    threshold = metadata["threshold"]
    if not _is_number(threshold):
        return f"threshold is {_shown(threshold)}, not a finite number"
    bounds_problem = _value_bounds_problem(metadata.get("value_bounds", {}), channels)
    if bounds_problem:
        return bounds_problem
    suite = metadata.get("training_suite")
    if suite is not None and not (isinstance(suite, str) and suite):
        return f"training_suite must name a suite (a bundled family or a file's path), got {_shown(suite)}"
    return _scaler_problem(metadata["scaler"], channels) or _scorer_problem(metadata["scorer"], n) or \
        _tail_problem(metadata["tail"]) or \
        _intervals_problem(metadata["intervals"], architecture.forecast_horizon, n)


def _value_bounds_problem(bounds, channels: list) -> str | None:
    shape = ("value_bounds must map channels of the model to [low, high] (numbers, or null for no bound, low <= "
             "high)")
    if not isinstance(bounds, dict):
        return f"{shape}, got {_shown(bounds)}"
    for name, pair in bounds.items():
        if name not in channels:
            return f"value_bounds names {name!r}, which is not among the channels {channels}"
        if not (isinstance(pair, list) and len(pair) == 2 and all(v is None or _is_number(v) for v in pair)) \
                or (None not in pair and pair[0] > pair[1]):
            return f"{shape}, got {_shown(pair)} for {name!r}"
    return None


def _scaler_problem(scaler, channels: list) -> str | None:
    if not isinstance(scaler, dict):
        return f"scaler must hold a mean and a scale per channel, got {_shown(scaler)}"
    n = len(channels)
    problem = _numbers_problem("scaler mean", scaler.get("mean"), n, "finite numbers (one per channel)") or \
        _numbers_problem("scaler scale", scaler.get("scale"), n, "finite numbers > 0 (one per channel)")
    if problem:
        return problem
    zero = [c for c, s in zip(channels, scaler["scale"]) if not s > 0]
    if zero:
        return f"scaler scale of channel {zero[0]!r} is {_shown(scaler['scale'][channels.index(zero[0])])}, not > 0"
    return None


def _scorer_problem(scorer, n: int) -> str | None:
    if not isinstance(scorer, dict):
        return f"scorer must hold a mean and a precision matrix, got {_shown(scorer)}"
    floor = scorer.get("error_floor", [])
    return _numbers_problem("scorer mean", scorer.get("mean"), n) or \
        _numbers_problem("scorer precision", scorer.get("precision"), n * n,
                         f"finite numbers ({n} x {n}, row by row)") or \
        (_numbers_problem("scorer error_floor", floor, n) if floor != [] else None)


def _tail_problem(tail) -> str | None:
    """Why the tail calibration (``thresholds.TailCalibration``) cannot give tail probabilities, or None."""
    if not isinstance(tail, dict):
        return f"tail must hold the calibration scores and the tail fit, got {_shown(tail)}"
    scores = tail.get("sorted_scores")
    if not isinstance(scores, list) or not scores or not all(_is_number(s) for s in scores):
        return "tail sorted_scores must be a list of finite numbers"
    if any(b < a for a, b in zip(scores, scores[1:])):
        return "tail sorted_scores must be in ascending order"
    if len(scores) < 20:  # what a tail fit needs: an online calibration starts from these (it had raised mid-run)
        return f"tail sorted_scores holds {len(scores)} scores, fewer than the 20 a tail fit needs"
    for name in ("tail_start", "shape", "scale"):
        if not _is_number(tail.get(name)):
            return f"tail {name} is {_shown(tail.get(name))}, not a finite number"
    if not tail["scale"] > 0:
        return f"tail scale is {_shown(tail['scale'])}, not > 0"
    fraction = tail.get("tail_fraction")
    if not (_is_number(fraction) and 0 <= fraction <= 1):
        return f"tail tail_fraction is {_shown(fraction)}, not a number in [0, 1]"
    return None


def _intervals_problem(intervals, horizon: int, n: int) -> str | None:
    """Why a model with a forecast ``horizon`` cannot bound its forecasts with ``intervals``, or None."""
    if not horizon:
        return None
    if not isinstance(intervals, dict):
        return (f"forecast_horizon is {horizon}, but intervals is {_shown(intervals)}, as for a model trained "
                f"without a forecast head (forecast_horizon 0)")
    coverage, width = intervals.get("coverage"), intervals.get("half_width")
    if not (_is_number(coverage) and 0 < coverage < 1):
        return f"intervals coverage is {_shown(coverage)}, not a number in (0, 1)"
    if not isinstance(width, list) or len(width) != horizon:
        return f"intervals half_width must have one row per forecast step ({horizon})"
    for row in width:
        problem = _numbers_problem("intervals half_width", row, n, "finite numbers >= 0")
        if problem or any(w < 0 for w in row):
            return problem or f"intervals half_width must hold numbers >= 0, got {_shown(min(row))}"
    return None


def check_model_file(directory: str | os.PathLike, metadata: dict) -> None:
    """Raise ``ArtifactError`` when the artifact's network file does not match the checksum its metadata hold
    (a copy cut short, a file edited by hand), or when the network takes windows of another length or number of
    channels, or has another forecast head, than the metadata say (a ``metadata.json`` edited by hand: the
    checksum covers the network only): for callers that read the metadata only, to refuse a damaged model before
    they start work that loads it later."""
    directory = Path(directory)
    if _sha256(directory / MODEL_FILE) != metadata.get("model_sha256"):
        raise ArtifactError(f"model {directory} is corrupt: {MODEL_FILE} does not match the checksum in "
                            f"{METADATA_FILE}")
    shape = network_shape(directory / MODEL_FILE)
    if shape is not None:
        _check_network(directory, metadata, *shape)
    encoder = network_encoder(directory / MODEL_FILE)
    if encoder is not None:
        _check_encoder(directory, metadata, encoder)


def _describe_encoder(encoder: dict) -> str:
    return (f"{encoder['layers']} {'bidirectional ' if encoder['bidirectional'] else ''}{encoder['cell'].upper()} "
            f"layer(s) of {encoder['units']} units")


def _check_encoder(directory: Path, metadata: dict, encoder: dict) -> None:
    """Refuse metadata whose architecture (cell, units, layers, bidirectional) differs from the network's: a
    fine-tuning builds nothing new but writes the metadata's architecture into its version, so an edit by hand
    had been carried into a model that says 16 units and has 8."""
    architecture = DetectorConfig.from_dict(metadata["config"]).architecture
    said = {"cell": architecture.cell, "units": architecture.units, "layers": architecture.layers,
            "bidirectional": architecture.bidirectional}
    if said != encoder:
        raise ArtifactError(f"model {directory} does not fit its {METADATA_FILE}: its network's encoder has "
                            f"{_describe_encoder(encoder)}, its metadata say {_describe_encoder(said)}; restore the "
                            f"{METADATA_FILE} it was saved with")


def network_encoder(path: str | os.PathLike) -> dict | None:
    """``{"cell", "units", "layers", "bidirectional"}`` of a saved network's encoder (``builders``: layers
    ``encoder_rnn<i>`` or ``encoder_bi<i>``), read from the ``config.json`` inside the ``.keras`` zip; None when
    the file does not hold a network of the builders' form."""
    try:
        config = _saved_network_config(path)
        found = {}
        for layer in config["layers"]:
            name = layer["name"]
            if re.fullmatch(r"encoder_(rnn|bi)\d+", name):
                bidirectional = layer["class_name"] == "Bidirectional"
                inner = layer["config"]["layer"] if bidirectional else layer
                cell = {"LSTM": "lstm", "GRU": "gru"}.get(inner["class_name"])
                if cell is None:
                    return None
                found[name] = (cell, int(inner["config"]["units"]), bidirectional)
        kinds = set(found.values())
        if len(kinds) != 1:
            return None
        cell, units, bidirectional = kinds.pop()
        return {"cell": cell, "units": units, "layers": len(found), "bidirectional": bidirectional}
    except (zipfile.BadZipFile, OSError, KeyError, TypeError, ValueError, IndexError):
        return None


def _saved_network_config(path: str | os.PathLike) -> dict:
    """The network's config from the ``config.json`` inside a ``.keras`` zip (a few KB; no Keras import, no
    weights): what ``network_shape`` and ``network_encoder`` read."""
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))["config"]


def network_shape(path: str | os.PathLike) -> tuple[tuple, int | None] | None:
    """``((window length, channels), forecast horizon or None)`` of a saved network, read from the ``config.json``
    inside the ``.keras`` zip (a few KB; no Keras import, no weights): the input layer's batch shape, and the
    length of the forecast head (``builders``: its ``forecast_repeat`` layer), None without one. None when the
    file does not hold a network of the builders' form; ``load_artifact`` then checks the network Keras loads."""
    try:
        config = _saved_network_config(path)
        layers = {layer["name"]: layer for layer in config["layers"]}
        inputs = [layer for layer in config["layers"] if layer["class_name"] == "InputLayer"]
        outputs = config["output_layers"]
        names = set(outputs) if isinstance(outputs, dict) else {out[0] for out in outputs}
        if len(inputs) != 1:
            return None
        batch_shape = inputs[0]["config"]["batch_shape"]
        horizon = int(layers[f"{FORECAST_OUTPUT}_repeat"]["config"]["n"]) if FORECAST_OUTPUT in names else None
        return tuple(batch_shape[1:]), horizon
    except (zipfile.BadZipFile, OSError, KeyError, TypeError, ValueError, IndexError):
        return None


def _check_network(directory: Path, metadata: dict, input_shape: tuple, horizon: int | None) -> None:
    """Refuse metadata whose window length, channels or forecast horizon differ from the network's own."""
    config = DetectorConfig.from_dict(metadata["config"])
    expected = (config.window.length, len(metadata["channels"]))
    if input_shape != expected:
        raise ArtifactError(f"model {directory} does not fit its {METADATA_FILE}: its network takes windows of "
                            f"{input_shape[0]} steps of {input_shape[1]} channels, its metadata say {expected[0]} "
                            f"steps of {expected[1]} channels; restore the {METADATA_FILE} it was saved with")
    _check_horizon(directory, config.architecture.forecast_horizon, horizon)


def _check_horizon(directory: Path, metadata_horizon: int, network_horizon: int | None) -> None:
    if (network_horizon or 0) != metadata_horizon:
        has = f"a forecast head of {network_horizon} steps" if network_horizon else "no forecast head"
        raise ArtifactError(f"model {directory} does not fit its {METADATA_FILE}: its network has {has}, its metadata "
                            f"say forecast_horizon {metadata_horizon}; restore the {METADATA_FILE} it was saved with")


def load_artifact(directory: str | os.PathLike) -> Seq2SeqDetector:
    """Load a detector saved by ``save_artifact`` (from an artifact, or the newest version of a model root);
    raises ``ArtifactError`` if it is corrupt or incompatible."""
    from seqwatch.models.compile_cache import enable_compile_cache

    enable_compile_cache()  # before Keras builds the network: loading it compiles its initialisers too
    from seqwatch.models.quiet_imports import keras_module

    keras = keras_module()

    directory = resolve_model_dir(directory)
    metadata = read_metadata(directory)
    check_model_file(directory, metadata)
    try:
        detector = Seq2SeqDetector(DetectorConfig.from_dict(metadata["config"]), metadata["model_id"])
        detector.channels = tuple(metadata["channels"])
        detector.step_us = int(metadata["step_us"])
        detector.grid_offset_us = int(metadata.get("grid_offset_us", 0))
        detector.scaler = ChannelScaler.from_dict(metadata["scaler"])
        detector.scorer = MahalanobisScorer.from_dict(metadata["scorer"])
        detector.tail = TailCalibration.from_dict(metadata["tail"])
        detector.threshold = float(metadata["threshold"])
        detector.intervals = ConformalIntervals.from_dict(metadata["intervals"]) if metadata["intervals"] else None
        detector.value_bounds = {name: tuple(pair) for name, pair in metadata.get("value_bounds", {}).items()}
        detector.training_suite = metadata.get("training_suite")
        detector.fingerprint = metadata["fingerprint"]
        span = metadata.get("readings_span_us")
        detector.readings_span_us = None if span is None else (int(span[0]), int(span[1]))
        detector.metrics = metadata["metrics"]
        detector.history = metadata.get("history", {})
        detector.model_version = metadata["model_version"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"the metadata of model {directory} is incomplete or invalid ({exc})") from None
    try:
        detector.model = keras.saving.load_model(directory / MODEL_FILE, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a damaged zip or config
        raise ArtifactError(f"model {directory} could not be loaded by Keras ({exc.__class__.__name__})") from None
    expected = (None, detector.window_length, len(detector.channels))
    if tuple(detector.model.inputs[0].shape) != expected:
        raise ArtifactError(f"model {directory} takes input {tuple(detector.model.inputs[0].shape)}, but its "
                            f"metadata say {expected}")
    outputs = detector.model.output if isinstance(detector.model.output, dict) else {}
    forecast = outputs.get(FORECAST_OUTPUT)
    _check_horizon(directory, detector.horizon, None if forecast is None else int(forecast.shape[1]))
    return detector
