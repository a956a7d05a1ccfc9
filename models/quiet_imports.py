"""Keras and JAX, imported without the plotting and highlighting packages they load for helpers seqwatch never uses.

``import keras`` imports ``matplotlib.pyplot`` (for ``keras.visualization``'s image galleries), and JAX imports
``pygments`` (for its Colab debugger): about 0.5 s of every process's start on the 2-core machine, a command's or a
Beam worker's (``python -X importtime``, 2026-12-06: matplotlib.pyplot 0.40 s, pygments.lexers 0.12 s). Both import
them inside ``try``/``except ImportError``, so with the two marked as absent while Keras or JAX import, those helpers
are left off; the packages import as usual afterwards (the benchmarks' plots use matplotlib). Where either was
imported before, nothing is marked.
"""
from __future__ import annotations

import importlib
import sys

SKIPPED = ("matplotlib", "pygments")


def imported_quietly(name: str):
    """The module ``name`` (``"keras"``, ``"jax"``), imported with ``SKIPPED`` marked as absent meanwhile."""
    if name in sys.modules:
        return sys.modules[name]
    marked = [skipped for skipped in SKIPPED if skipped not in sys.modules]
    for skipped in marked:
        sys.modules[skipped] = None  # `import matplotlib` raises ImportError while this holds
    try:
        return importlib.import_module(name)
    finally:
        for skipped in marked:
            if skipped in sys.modules and sys.modules[skipped] is None:
                del sys.modules[skipped]


def keras_module():
    """``keras``, imported quietly (``imported_quietly``)."""
    return imported_quietly("keras")
