"""The model artifact: one directory per model version.

```
<dir>/model.keras       the network, loaded with Keras safe mode (no arbitrary code)
<dir>/metadata.json     config, channels, sampling interval, scaler, scorer, threshold, calibration, intervals,
                        training-data fingerprint, metrics, library versions, sha256 of model.keras
```
Loading checks the format version and the checksum, and refuses a corrupt or mismatched artifact with one
sentence (``ArtifactError``).

A *model root* is a directory of artifacts, one sub-directory per version (``<root>/<name>/metadata.json``).
Wherever an artifact directory is expected, a model root may be given instead: it stands for its newest
artifact, the one whose ``metadata.json`` was written last (``save_artifact`` writes it last, by a rename, so
an artifact counts only once it is complete).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
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


class ArtifactError(ValueError):
    """A model artifact is missing, corrupt or incompatible."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _library_versions() -> dict:
    import keras
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
        "metrics": detector.metrics,
        "history": detector.history,
    }
    version_digest = hashlib.sha256(_weights_digest(detector.model).encode())
    version_digest.update(json.dumps(body, sort_keys=True).encode())
    detector.model_version = "v" + version_digest.hexdigest()[:12]
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        staged = Path(tmp) / MODEL_FILE
        detector.model.save(staged)
        metadata = {"format_version": FORMAT_VERSION, "model_version": detector.model_version, **body,
                    "model_sha256": _sha256(staged), "library_versions": _library_versions()}
        meta_tmp = Path(tmp) / METADATA_FILE
        meta_tmp.write_text(json.dumps(metadata, indent=1, sort_keys=True))
        os.replace(staged, directory / MODEL_FILE)
        os.replace(meta_tmp, directory / METADATA_FILE)
    return directory


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
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"model {directory} has artifact format {metadata.get('format_version')!r}; this "
                            f"seqwatch reads format {FORMAT_VERSION}")
    return metadata


def check_model_file(directory: str | os.PathLike, metadata: dict) -> None:
    """Raise ``ArtifactError`` when the artifact's network file does not match the checksum its metadata hold
    (a copy cut short, a file edited by hand): for callers that read the metadata only, to refuse a damaged model
    before they start work that loads it later."""
    directory = Path(directory)
    if _sha256(directory / MODEL_FILE) != metadata.get("model_sha256"):
        raise ArtifactError(f"model {directory} is corrupt: {MODEL_FILE} does not match the checksum in "
                            f"{METADATA_FILE}")


def load_artifact(directory: str | os.PathLike) -> Seq2SeqDetector:
    """Load a detector saved by ``save_artifact`` (from an artifact, or the newest version of a model root);
    raises ``ArtifactError`` if it is corrupt or incompatible."""
    from seqwatch.models.compile_cache import enable_compile_cache

    enable_compile_cache()  # before Keras builds the network: loading it compiles its initialisers too
    import keras

    directory = resolve_model_dir(directory)
    metadata = read_metadata(directory)
    check_model_file(directory, metadata)
    try:
        detector = Seq2SeqDetector(DetectorConfig.from_dict(metadata["config"]), metadata["model_id"])
        detector.channels = tuple(metadata["channels"])
        detector.step_us = int(metadata["step_us"])
        detector.scaler = ChannelScaler.from_dict(metadata["scaler"])
        detector.scorer = MahalanobisScorer.from_dict(metadata["scorer"])
        detector.tail = TailCalibration.from_dict(metadata["tail"])
        detector.threshold = float(metadata["threshold"])
        detector.intervals = ConformalIntervals.from_dict(metadata["intervals"]) if metadata["intervals"] else None
        detector.fingerprint = metadata["fingerprint"]
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
    return detector
