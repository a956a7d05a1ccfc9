"""Whether a Ctrl-C or SIGTERM has come, for the steps that must not go on after one.

The CLI's handler of both signals raises ``KeyboardInterrupt`` wherever the main thread is. When that is inside a
callback that Python calls itself (JAX's garbage-collection callback, a finalizer), Python prints "Exception ignored
in ..." and drops the exception: a run went on, committed its outputs and exited 0, and a training replaced the
model, after a SIGTERM 1 to 2.6 s into it (found by the bug hunt of operational failures). The handler therefore
also notes the signal here; ``redeliver_dropped``, in ``sys.unraisablehook``, delivers a dropped one again once the
callback has ended, so the command stops where it is (a stream and the demo too); and the steps that cannot be
undone, a run's commit and a training's save, run ``held_back``: it stops first if a signal has come, and holds
back one that comes meanwhile.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

_TAKEN = threading.Event()
_RESEND = threading.Event()  # a dropped interrupt is to be sent again: cleared once one is acted on


def note_taken() -> None:
    """Called by the signal handler, as it raises ``KeyboardInterrupt``: a Ctrl-C or SIGTERM has come (an earlier
    one that Python dropped needs sending again no more: this one is raised, or dropped and sent again itself)."""
    _TAKEN.set()
    _RESEND.clear()


def clear() -> None:
    """Forget an earlier signal (a command's start or end, in a process that runs several, as the tests do)."""
    _TAKEN.clear()
    _RESEND.clear()


def acted_on() -> None:
    """The interrupt is being acted on (the command stops): a dropped one is not to be sent again, which would
    raise inside the clean-up."""
    _RESEND.clear()


def taken() -> bool:
    """Whether a Ctrl-C or SIGTERM has come since ``clear``."""
    return _TAKEN.is_set()


def redeliver_dropped(unraisable, signum: int) -> bool:
    """For ``sys.unraisablehook``: when Python drops the ``KeyboardInterrupt`` of a signal that has come (it was
    raised inside a callback Python calls itself), send signal ``signum`` to the main thread again, whose handler
    raises it anew at the main thread's next step outside the callback (inside another such callback it is
    dropped and delivered again). Returns whether it did so; any other unraisable exception is not this one's.
    The signal is sent from another thread: sent from here, its handler ran inside this hook, where Python dropped
    its exception too."""
    if not (_TAKEN.is_set() and isinstance(unraisable.exc_type, type)
            and issubclass(unraisable.exc_type, KeyboardInterrupt)
            and threading.current_thread() is threading.main_thread()):
        return False
    import _thread

    _RESEND.set()
    # not threading.Thread: its start() waits for the thread, and the signal had come within that wait
    _thread.start_new_thread(_send_after_hook, (threading.main_thread().ident, signum))
    return True


def _send_after_hook(thread_id: int, signum: int) -> None:
    time.sleep(0.02)  # the hook returns meanwhile
    if _RESEND.is_set() and _TAKEN.is_set():  # not when the command already stops, or has ended
        acted_on()
        signal.pthread_kill(thread_id, signum)


def stop_if_taken() -> None:
    """Raise ``KeyboardInterrupt`` if a Ctrl-C or SIGTERM has come, even one whose exception Python dropped."""
    if _TAKEN.is_set():
        acted_on()
        raise KeyboardInterrupt


class InterruptedAfterCommit(KeyboardInterrupt):
    """A Ctrl-C or SIGTERM that came while a run moved its outputs into place (or a training saved its model): it
    finished that first, so the output holds this run's outputs (the model folder the new version), whole."""


@contextlib.contextmanager
def held_back():
    """For a step that cannot be undone: raise ``KeyboardInterrupt`` first if a signal has come (``stop_if_taken``),
    then hold back SIGINT and SIGTERM until the block is done. Moving the outputs into place and writing their
    manifest is short, and an interrupt inside it had left the new outputs beside the old manifest (or a half-
    deleted ``_previous-*`` folder that refused every later run); a model's file and its metadata likewise. A signal
    held back is then delivered as it would have been: a Python handler's ``KeyboardInterrupt`` (Ctrl-C, the CLI's
    SIGTERM) as ``InterruptedAfterCommit``; a default SIGTERM ends the process. Outside the main thread signals
    cannot be held, and are not."""
    stop_if_taken()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum, handler in previous.items():
        if handler not in (signal.SIG_IGN, None):
            signal.signal(signum, lambda number, frame: held.append(number))
    failed = False
    try:
        yield
    except BaseException:
        failed = True  # the move failed and was undone: a signal held meanwhile is an interrupt before the commit
        raise
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        if held:
            handler = previous[held[0]]
            if callable(handler):
                try:
                    handler(held[0], None)
                except KeyboardInterrupt:
                    if failed:
                        raise
                    raise InterruptedAfterCommit() from None
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), held[0])
