"""A request that a running stream stop reading and end as its source's end ends it: a graceful stop.

The first Ctrl-C or SIGTERM that ``seqwatch stream`` gets writes a small file in its output folder
(``STOP_FILE``); each of the stream's readers looks for it at each poll (at most every ``CHECK_EVERY_S``), and a
reader that sees it reads no more, as when ``--stop-after-idle`` ends it. Its watermark then goes to the end of
time, so everything the stream holds (the panes not yet scored, the quarantine records, counts and calibration
of the flush windows not yet written) is scored and written, and the job ends. The broker has counted what was
read as delivered (Kafka offsets committed, MQTT and Pub/Sub messages acknowledged): a stream stopped at once
lost those messages, one stopped this way has written them.

A file, not a flag in memory: the readers run in the worker processes of the runner (the SDK worker of Prism or
Flink in seqwatch's own process, the DirectRunner's), which see the same local file system. A stream into a
``gs://`` or ``s3://`` output has none to share with its workers (Dataflow drains a job itself: ``gcloud dataflow
jobs drain``)."""
from __future__ import annotations

import os
import time

STOP_FILE = ".seqwatch-stop"  # hidden: dataset readers skip names that start with "."
CHECK_EVERY_S = 0.25  # how often a reader looks for the file: a stat call, whatever the rate of messages


def stop_file(output: str) -> str | None:
    """The stop request's path for a stream into ``output``; None for an object store's output."""
    if "://" in output:
        return None
    return os.path.join(os.path.realpath(output), STOP_FILE)


class StopRequest:
    """Whether the stream was asked to stop (``requested``), for a reader to ask at each poll; picklable, so that
    it travels with the reader to its worker. Once seen, a request stays seen in that worker."""

    def __init__(self, path: str):
        self.path = path
        self._seen = False
        self._checked = float("-inf")

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def requested(self) -> bool:
        if self._seen:
            return True
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY_S:
            return False
        self._checked = now
        self._seen = os.path.exists(self.path)
        return self._seen

    def request(self, why: str) -> None:
        """Ask the stream's readers to stop (``why``: what asked, kept in the file for a person who finds it).
        Written with ``os`` calls only: a signal handler calls this."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, f"{why} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode())
        finally:
            os.close(fd)

    def clear(self) -> None:
        """Take back a request (a stale one, left by a stream that was killed while it stopped, must not stop the
        next stream into the folder at its first poll)."""
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
