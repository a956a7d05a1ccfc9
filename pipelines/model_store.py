"""Model directories on object stores: ``--model-dir s3://bucket/models/pumps`` (any Beam file system).

A model directory is an artifact (``model.keras`` and ``metadata.json``) or a model root of such version folders,
the newest being the one whose ``metadata.json`` was written last (``models.artifact.model_versions``). Keras and
``models.artifact`` read local files, so a version on an object store is copied once into a local cache
(``local_model_dir``) where it is loaded, by the launcher and by each worker, which gets the version's URL: a
Dataflow worker has no other way to the launcher's files. ``publish_model`` puts a version trained locally into a
store, ``metadata.json`` last, so that a run that lists the root meanwhile never takes a version without its
network.

On an object store a version's time is its ``metadata.json``'s object time, which S3 keeps to the second: two
versions published in one second are told apart by their names. Local paths go to ``models.artifact`` as before.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading

from apache_beam.io.filesystems import FileSystems

from seqwatch.models.artifact import (METADATA_FILE, MODEL_FILE, ArtifactError, check_model_file, model_versions,
                                      read_metadata, resolve_model_dir)
from seqwatch.pipelines.object_store import is_remote, objects_listed_under, store_error, store_sentence

__all__ = ["model_versions_of", "pinned_model_dir", "local_model_dir", "publish_model", "read_model_text",
           "CACHE_FOLDER"]

CACHE_FOLDER = "seqwatch-models"  # under the temporary folder: one folder per version copied
CACHE_KEEP_S = 7 * 86400.0  # a copy no process has taken for this long is deleted when another is made
_COPIED: dict = {}  # version URL -> (its objects' sizes, times and checksums, local copy), this process's copies
_COPY_LOCK = threading.Lock()


def _asked(path: str, call):
    """``call()``, a request to the store about ``path``; a store's error is said in one sentence
    (``ArtifactError``)."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - the store's own, which Beam raises as they come
        if store_error(exc) is not None:
            raise ArtifactError(f"could not read the model directory {path}: {store_sentence(exc, path)}") \
                from None
        raise


def _objects(prefix: str) -> dict:
    """The objects under ``prefix`` (a folder of an object store) by their names below it, with their metadata
    (size, time)."""
    return _asked(prefix, lambda: objects_listed_under(prefix))


def _checksum(path: str) -> str:
    """The store's checksum of the object ``path`` (S3: its ETag)."""
    return _asked(path, lambda: FileSystems.checksum(path))


def _remote_versions(root: str) -> list[str]:
    """The versions a model directory on an object store stands for, oldest first: itself when it holds an
    artifact, else those of its folders that hold ``model.keras``, by their ``metadata.json``'s object time."""
    root = root.rstrip("/")
    objects = _objects(root)
    if METADATA_FILE in objects or MODEL_FILE in objects:
        return [root]
    found = []
    for name, meta in objects.items():
        folder, _, file = name.partition("/")
        if file == METADATA_FILE and f"{folder}/{MODEL_FILE}" in objects:
            found.append((meta.last_updated_in_seconds, folder))
    return [f"{root}/{folder}" for _, folder in sorted(found)]


def model_versions_of(directory: str) -> list[str]:
    """``models.artifact.model_versions`` of a local path or a URL: the artifacts ``directory`` stands for, oldest
    first."""
    if is_remote(directory):
        return _remote_versions(directory)
    return [str(path) for path in model_versions(directory)]


def pinned_model_dir(directory: str) -> str:
    """The artifact ``directory`` stands for: itself, or its newest version (``resolve_model_dir``), a URL where it
    is one, so that a run scores with the version it planned for wherever its workers load it."""
    if not is_remote(directory):
        return str(resolve_model_dir(directory))
    versions = _remote_versions(directory)
    return versions[-1] if versions else directory.rstrip("/")


def local_model_dir(directory: str) -> str:
    """A local folder that holds the artifact ``directory`` stands for: ``directory`` itself where it is local;
    where it is on an object store, a copy of its pinned version in the local cache, made once per version and
    process (a version published again in place, with other objects, is copied again). Raises ``ArtifactError``
    naming ``directory`` where it is no seqwatch model."""
    if not is_remote(directory):
        return directory
    version = pinned_model_dir(directory)
    objects = _objects(version)
    missing = [name for name in (MODEL_FILE, METADATA_FILE) if name not in objects]
    if len(missing) == 2:  # neither an artifact nor a root of versions (a version holds both)
        raise ArtifactError(f"model directory {directory} does not exist or holds no model (no {MODEL_FILE} and "
                            f"{METADATA_FILE} in it or in a version folder of it)")
    if missing:
        raise ArtifactError(f"{version} is not a seqwatch model: it needs {MODEL_FILE} and {METADATA_FILE}")
    # sizes and times, and the store's checksums (S3's ETags): a version put again within the second its last copy
    # was put, with files of the same sizes (another threshold), had kept its first copy
    stamp = tuple((name, objects[name].size_in_bytes, objects[name].last_updated_in_seconds,
                   _checksum(f"{version}/{name}")) for name in (MODEL_FILE, METADATA_FILE))
    with _COPY_LOCK:
        known = _COPIED.get(version)
        if known is not None and known[0] == stamp and os.path.isfile(os.path.join(known[1], METADATA_FILE)):
            return known[1]
        local = _copy_version(version, stamp)
        try:  # said of the version's URL, not of the cache's folder
            check_model_file(local, read_metadata(local))
        except ArtifactError as exc:
            raise ArtifactError(str(exc).replace(local, version)) from None
        _COPIED[version] = (stamp, local)
    return local


def _copy_version(version: str, stamp: tuple) -> str:
    """Copy ``version``'s network and metadata into the cache folder named by its URL and objects (``stamp``),
    unless a copy is there already (another process's): written into a folder of this process, then renamed into
    place, so that no process loads a copy half written."""
    key = hashlib.sha256(repr((version, stamp)).encode()).hexdigest()[:20]
    cache = os.path.join(tempfile.gettempdir(), CACHE_FOLDER)
    local = os.path.join(cache, key)
    if os.path.isfile(os.path.join(local, METADATA_FILE)):
        os.utime(local)  # taken: kept another CACHE_KEEP_S
        return local
    os.makedirs(cache, exist_ok=True)
    _prune(cache)
    partial = tempfile.mkdtemp(prefix=f"{key}.partial-", dir=cache)
    try:
        for name in (MODEL_FILE, METADATA_FILE):
            with FileSystems.open(f"{version}/{name}", compression_type="uncompressed") as source, \
                    open(os.path.join(partial, name), "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
        try:
            os.rename(partial, local)
        except OSError:  # another process put its copy there first
            if not os.path.isfile(os.path.join(local, METADATA_FILE)):
                raise
    except Exception as exc:
        if store_error(exc) is not None:
            raise ArtifactError(f"could not read the model {version}: {store_sentence(exc, version)}") from None
        raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return local


def _prune(cache: str) -> None:
    """Delete the copies in ``cache`` that no process has taken for ``CACHE_KEEP_S`` seconds (a stream that
    watches its model root copies each new version, for as long as it runs), and partial ones an hour old (a
    process killed while it copied). A copy deleted under a process that had loaded it costs nothing (the network
    is in memory) or a new copy."""
    import time

    now = time.time()
    for name in os.listdir(cache):
        path = os.path.join(cache, name)
        try:
            age = now - os.stat(path).st_mtime
        except OSError:
            continue
        if age > (3600.0 if ".partial-" in name else CACHE_KEEP_S):
            shutil.rmtree(path, ignore_errors=True)


def read_model_text(directory: str, name: str = METADATA_FILE) -> str:
    """The text of a version's file (its ``metadata.json``), local or on an object store; a store's error is raised
    as an ``OSError`` that says it."""
    if not is_remote(directory):
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            return f.read()
    path = f"{directory.rstrip('/')}/{name}"
    try:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            return f.read().decode("utf-8")
    except Exception as exc:
        if store_error(exc) is not None:
            raise OSError(store_sentence(exc, path)) from None
        raise


def publish_model(local_dir: str, target: str) -> None:
    """Put the artifact in ``local_dir`` (its files: the network, the training report) into ``target`` on an
    object store, its ``metadata.json`` last (what makes it a version of its root); a store's error is said in one
    sentence (``ArtifactError``)."""
    names = sorted(name for name in os.listdir(local_dir) if os.path.isfile(os.path.join(local_dir, name)))
    names = [name for name in names if name != METADATA_FILE] + [METADATA_FILE]
    for name in names:
        path = f"{target.rstrip('/')}/{name}"
        try:
            with open(os.path.join(local_dir, name), "rb") as source, \
                    FileSystems.create(path, compression_type="uncompressed") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
        except Exception as exc:
            if store_error(exc) is not None:
                raise ArtifactError(f"could not put the model into {target}: {store_sentence(exc, path)}") from None
            raise
