"""One job at a time per output folder.

Two batch runs into one ``--output`` at once would share its sink folders: each commit sets the other's sinks
aside, and ``manifest.json`` would describe one run beside the other's files. A job therefore holds an advisory
lock on ``<output>/.seqwatch.lock`` (``flock``) from before its first check of the folder until its manifest is
written, or, for a stream, until the stream ends. The kernel drops the lock when its holder's process ends, killed
included (``kill -9``, an out-of-memory kill), so a lock never outlives its job and nothing has to be cleaned up; on
NFS, Linux takes ``flock`` as a whole-file lock on the server, released when the holding process (or, after its
lease, its machine) is gone. The file stays between jobs; while a job holds it, it names the job, for the refusal.

Not locked: outputs on remote file systems (``gs://``, ``s3://``: no such lock exists there), local folders whose
file system refuses locks (some FUSE mounts), and platforms without ``fcntl`` (Windows).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = ".seqwatch.lock"
_HELD: set[tuple] = set()  # (real path, thread) of the output folders whose lock this process's threads hold


class OutputBusy(Exception):
    """Another job holds the output folder's lock; the message is one sentence for a person."""


def _holder(fd: int) -> str:
    """``"run run-…, process 4242 on host-a, since 13:20:05 UTC"`` from the lock file's text, or ``"job"``."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        held = json.loads(text)
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(held["since"])))
        named = f"{held['job']} {held['run_id']}" if held["run_id"] else held["job"]
        return f"{named} (process {held['pid']} on {held['host']}, since {since})"
    except (OSError, ValueError, KeyError, TypeError):  # written between our open and its write, or by hand
        return "job"


def _lock(fd: int, output: str, job: str, flag: str = "--output") -> bool:
    """Take the lock on ``fd`` without waiting: True, or False where the file system has no locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputBusy(f"another seqwatch {_holder(fd)} is writing into {output}; wait for it to end, or give "
                         f"this {job} its own {flag}") from None
    except OSError:
        return False
    return True


@contextmanager
def output_lock(output: str, job: str, run_id: str, flag: str = "--output") -> Iterator[bool]:
    """Hold ``output``'s lock for the ``with`` block; yield whether a lock is held (False where none can be).

    ``job`` is what the holder is (``"run"``, ``"stream"``, ``"training"``: a training holds its ``--model-dir``,
    the ``flag`` the refusal names), ``run_id`` its id; both go into the lock file for the message of a job that
    finds the folder taken. Raises ``OutputBusy`` when another job holds it. Within one thread the lock is
    re-entrant: a ``with`` inside one that holds the same folder holds it already."""
    # Re-entrant per thread: another thread of the process (two runs of a notebook's) takes it as another job does
    key = (os.path.realpath(output) if "://" not in output else output, threading.get_ident())
    if key in _HELD:  # a replay holds its output's lock around the batch run it starts
        yield True
        return
    fd = None
    if fcntl is not None and "://" not in output:
        try:  # prepare_output_folder has made the folder and proved it writable
            fd = os.open(Path(output) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            pass
    if fd is None:
        yield False
        return
    try:
        locked = _lock(fd, output, job, flag)
        if locked:
            held = {"job": job, "run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
                    "since": time.time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(held).encode(), 0)
            _HELD.add(key)
        try:
            yield locked
        finally:
            _HELD.discard(key)
            if locked:  # the next job writes its own; a stale name would mislead a person reading the file
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
