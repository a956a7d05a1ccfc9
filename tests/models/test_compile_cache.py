"""The persistent JAX compilation cache: on by default for the JAX backend, folder from the environment,
``off`` disables it, and a process that already chose a folder keeps it."""
from __future__ import annotations

import subprocess
import sys

from seqwatch.models.compile_cache import ENV, cache_dir

SCRIPT = ("import jax; from seqwatch.models.compile_cache import enable_compile_cache; "
          "print(enable_compile_cache()); print(jax.config.jax_compilation_cache_dir)")


def _run(env):
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True,
                            env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu", **env})
    return result.stdout.split()


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.setenv(ENV, "off")
    assert cache_dir() is None
    monkeypatch.delenv(ENV)
    assert cache_dir().parts[-3:] == (".cache", "seqwatch", "jax")


def test_enable_points_jax_at_the_folder(tmp_path):
    folder = str(tmp_path / "jax")
    assert _run({ENV: folder, "HOME": str(tmp_path)}) == [folder, folder]
    assert (tmp_path / "jax").is_dir()


def test_disabled_or_other_backend_leaves_jax_alone(tmp_path):
    assert _run({ENV: "off", "HOME": str(tmp_path)})[0] == "None"
    assert _run({ENV: str(tmp_path), "HOME": str(tmp_path), "KERAS_BACKEND": "torch"})[0] == "None"
