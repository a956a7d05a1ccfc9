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
``gs://`` or ``s3://`` output keeps its request there, as an object, which workers on other machines see as well:
they look for it at most every ``CHECK_REMOTE_EVERY_S`` (a request to the store each time). Dataflow also drains a
job itself (``gcloud dataflow jobs drain``)."""
from __future__ import annotations

import os
import time

from seqwatch.pipelines.object_store import is_remote, quiet_store_logs, store_error, store_sentence

STOP_FILE = ".seqwatch-stop"  # hidden: dataset readers skip names that start with "."
CHECK_EVERY_S = 0.25  # how often a reader looks for the file: a stat call, whatever the rate of messages
CHECK_REMOTE_EVERY_S = 2.0  # on an object store: a request (HEAD) each time, which the store bills


def stop_file(output: str) -> str:
    """The stop request's path for a stream into ``output``: a file in a local folder, an object on a store."""
    if is_remote(output):
        return f"{output.rstrip('/')}/{STOP_FILE}"
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
        if now - self._checked < (CHECK_REMOTE_EVERY_S if is_remote(self.path) else CHECK_EVERY_S):
            return False
        self._checked = now
        self._seen = self._exists()
        return self._seen

    def _exists(self) -> bool:
        if not is_remote(self.path):
            return os.path.exists(self.path)
        from apache_beam.io.filesystems import FileSystems

        try:
            with quiet_store_logs():
                return FileSystems.exists(self.path)
        except Exception:  # noqa: BLE001 - a store out of reach: not asked (the sinks will say it if it stays so)
            return False

    def request(self, why: str) -> None:
        """Ask the stream's readers to stop (``why``: what asked, kept in the file for a person who finds it).
        Written with ``os`` calls only where local: a signal handler calls this. On an object store it is one put
        of a few bytes (``OSError``, one sentence, where the store refuses it)."""
        text = f"{why} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode()
        if is_remote(self.path):
            from apache_beam.io.filesystems import FileSystems

            try:
                with quiet_store_logs(), FileSystems.create(self.path) as f:
                    f.write(text)
            except Exception as exc:  # noqa: BLE001 - Beam's clients raise their own errors
                if store_error(exc) is None:
                    raise
                raise OSError(store_sentence(exc, self.path)) from None
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, text)
        finally:
            os.close(fd)

    def clear(self) -> None:
        """Take back a request (a stale one, left by a stream that was killed while it stopped, must not stop the
        next stream into the folder at its first poll)."""
        if is_remote(self.path):
            from apache_beam.io.filesystems import FileSystems

            if FileSystems.exists(self.path):
                FileSystems.delete([self.path])
            return
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
