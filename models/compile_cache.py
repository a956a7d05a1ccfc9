"""A persistent cache of compiled model code, so a worker that loads a model it has seen before does not
compile it again (with Keras on JAX, compiling one LSTM autoencoder's predict step takes about 2 s on the
reference machine, longer than scoring a million readings).

The cache lives in ``$SEQWATCH_COMPILE_CACHE`` (default ``~/.cache/seqwatch/jax``); set it to ``off`` to
disable. Entries are keyed by JAX on the program, the JAX version and the machine, so a stale entry is never
used; they are small (tens to hundreds of kB per model shape). Other Keras backends are left alone.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV = "SEQWATCH_COMPILE_CACHE"


def cache_dir() -> Path | None:
    """The cache folder, or None when disabled."""
    value = os.environ.get(ENV, "")
    if value.lower() in ("off", "0", "none", "false"):
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "seqwatch" / "jax"


def enable_compile_cache() -> Path | None:
    """Point JAX's persistent compilation cache at ``cache_dir()`` (every compiled program, however quick to
    compile), unless the Keras backend is not JAX, the cache is disabled, or the process already set a cache
    folder. Returns the folder in use, or None. Never raises: without a cache, models still run."""
    if os.environ.get("KERAS_BACKEND", "jax") != "jax":
        return None
    folder = cache_dir()
    if folder is None:
        return None
    try:
        from seqwatch.models.quiet_imports import imported_quietly

        jax = imported_quietly("jax")
        current = jax.config.jax_compilation_cache_dir
        if current:
            return Path(current)
        folder.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        return folder
    except Exception:  # an old JAX without these options, a read-only home: run without the cache
        return None
