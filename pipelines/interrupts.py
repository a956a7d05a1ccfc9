"""Whether a Ctrl-C or SIGTERM has come, for the steps that must not go on after one.

The CLI's handler of both signals raises ``KeyboardInterrupt`` wherever the main thread is. When that is inside a
callback that Python calls itself (JAX's garbage-collection callback, a finalizer), Python prints "Exception ignored
in ..." and drops the exception: a run went on, committed its outputs and exited 0, and a training replaced the
model, after a SIGTERM 1 to 2.6 s into it (found by the bug hunt of operational failures). The handler therefore
also notes the signal here, and the steps that cannot be undone, a run's commit and a training's save, call
``stop_if_taken`` first.
"""
from __future__ import annotations

import threading

_TAKEN = threading.Event()


def note_taken() -> None:
    """Called by the signal handler: a Ctrl-C or SIGTERM has come."""
    _TAKEN.set()


def clear() -> None:
    """Forget an earlier signal (a command's start, in a process that runs several, as the tests do)."""
    _TAKEN.clear()


def taken() -> bool:
    """Whether a Ctrl-C or SIGTERM has come since ``clear``."""
    return _TAKEN.is_set()


def stop_if_taken() -> None:
    """Raise ``KeyboardInterrupt`` if a Ctrl-C or SIGTERM has come, even one whose exception Python dropped."""
    if _TAKEN.is_set():
        raise KeyboardInterrupt
