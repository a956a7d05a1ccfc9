"""One job at a time per output folder.

Two batch runs into one ``--output`` at once would share its sink folders: each commit sets the other's sinks
aside, and ``manifest.json`` would describe one run beside the other's files. A job therefore holds an advisory
lock on ``<output>/.seqwatch.lock`` (``flock``) from before its first check of the folder until its manifest is
written, or, for a stream, until the stream ends. The kernel drops the lock when its holder's process ends, killed
included (``kill -9``, an out-of-memory kill), so a lock never outlives its job and nothing has to be cleaned up; on
NFS, Linux takes ``flock`` as a whole-file lock on the server, released when the holding process (or, after its
lease, its machine) is gone. The file stays between jobs; while a job holds it, it names the job, for the refusal.

On S3 (``s3://``) the lock is an object, ``<output>/.seqwatch.lock``, created only where none is there (a
conditional write, ``If-None-Match: *``) and held as a lease: its holder writes it again every ``RENEW_S`` seconds
(``If-Match`` its own version, so a holder that lost it finds out), and deletes it at the end. A lock not written
again for ``LEASE_S`` seconds, by the store's own clock, is a killed job's: the next job takes it over, again by a
conditional write, so that of two jobs that find it stale one gets it. A job that finds a live lock is refused, as
on a local folder, except where the lock names a process of the same machine (Linux: its boot, PID namespace, PID
and start time) that has ended: a killed run's rerun by cron or Airflow on the same machine takes its lock over at
once, as the kernel's release of ``flock`` lets it do on a local folder, instead of waiting out the lease.

Not locked: outputs on other remote file systems (``gs://``: not done), stores that refuse conditional writes
(some S3-compatible ones), local folders whose file system refuses locks (some FUSE mounts), and platforms
without ``fcntl`` (Windows).
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


class LockRefused(OutputBusy):
    """The store refused the lock object (a bucket that is not there, a key without the right to write): said where
    a job that finds its output busy is, in one sentence."""


def _holder(fd: int) -> str:
    """``"run run-…, process 4242 on host-a, since 13:20:05 UTC"`` from the lock file's text, or ``"job"``."""
    try:
        return _holder_of(os.pread(fd, 4096, 0))
    except OSError:
        return "job"


def _holder_of(text: bytes) -> str:
    """The holder a lock's text names (``_holder``), or ``"job"``."""
    try:
        held = json.loads(text.decode("utf-8", "replace"))
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(held["since"])))
        named = f"{held['job']} {held['run_id']}" if held["run_id"] else held["job"]
        return f"{named} (process {held['pid']} on {held['host']}, since {since})"
    except (ValueError, KeyError, TypeError):  # written between our open and its write, or by hand
        return "job"


def _busy(holder: str, output: str, job: str, flag: str) -> OutputBusy:
    return OutputBusy(f"another seqwatch {holder} is writing into {output}; wait for it to end, or give this {job} "
                      f"its own {flag}")


def _lock(fd: int, output: str, job: str, flag: str = "--output") -> bool:
    """Take the lock on ``fd`` without waiting: True, or False where the file system has no locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(_holder(fd), output, job, flag) from None
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
    key = (os.path.realpath(output) if "://" not in output else output.rstrip("/"), threading.get_ident())
    if key in _HELD:  # a replay holds its output's lock around the batch run it starts
        yield True
        return
    hold = _s3_lease if output.startswith("s3://") else _file_lock
    with hold(output, job, run_id, flag) as locked:
        if locked:
            _HELD.add(key)
        try:
            yield locked
        finally:
            _HELD.discard(key)


def _holder_record(job: str, run_id: str) -> bytes:
    """What a lock names of its job, for the refusal of another (``_holder_of``), and, on Linux, which process
    holds it, so that a job on the same machine can tell a killed holder (``_holder_has_ended``)."""
    record = {"job": job, "run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    process = _process_identity(os.getpid())
    if process is not None:
        record["process"] = process
    return json.dumps(record).encode()


def _machine() -> dict | None:
    """This boot of this machine, and this process's PID namespace (a container has its own), on Linux; else None.
    Two processes with the same ``_machine()`` and PID are one process where their start times agree too."""
    try:
        return {"boot": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                "pid_ns": os.readlink("/proc/self/ns/pid")}
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or None where no live process has that PID; a zombie
    (killed, not yet reaped by its parent) has ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after the command's name, which may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]


def _process_identity(pid: int) -> dict | None:
    machine, started = _machine(), _start_time(pid)
    return None if machine is None or started is None else {**machine, "started": started}


def _holder_has_ended(text: bytes) -> bool:
    """Whether a lock's text names a process of this machine's boot and PID namespace that is no longer running
    (its PID gone, or taken by a later process). False where that cannot be told: another machine or container,
    a record without the process, a platform without ``/proc``."""
    try:
        held = json.loads(text.decode("utf-8", "replace"))
        process, pid = held["process"], int(held["pid"])
        if {"boot": process["boot"], "pid_ns": process["pid_ns"]} != _machine():
            return False
        return _start_time(pid) != process["started"]
    except (ValueError, KeyError, TypeError):
        return False


@contextmanager
def _file_lock(output: str, job: str, run_id: str, flag: str) -> Iterator[bool]:
    """Hold ``flock`` on a local output's lock file for the ``with`` block; yield False where none can be held."""
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
            os.ftruncate(fd, 0)
            os.pwrite(fd, _holder_record(job, run_id), 0)
        try:
            yield locked
        finally:
            if locked:  # the next job writes its own; a stale name would mislead a person reading the file
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


LEASE_S = 120.0  # an S3 lock not written again for this long (by the store's clock) is a killed job's
RENEW_S = 30.0  # how often its holder writes it again
_CONDITION_FAILED = {"PreconditionFailed", "ConditionalRequestConflict"}
_NO_CONDITIONS = {"NotImplemented"}  # a store without conditional writes


def _lock_object(output: str) -> tuple[str, str]:
    from seqwatch.pipelines.object_store import bucket_and_key

    bucket, prefix = bucket_and_key(output)
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/{LOCK_FILE}" if prefix else LOCK_FILE


@contextmanager
def _s3_lease(output: str, job: str, run_id: str, flag: str) -> Iterator[bool]:
    """Hold the lock object of an output on S3 for the ``with`` block (see the module's text); yield False where
    the store takes no conditional write."""
    from botocore.exceptions import ClientError

    from seqwatch.pipelines.object_store import s3_client

    client = s3_client()
    bucket, key = _lock_object(output)
    body = _holder_record(job, run_id)
    conditional = True  # whether the store takes conditional writes (else nothing is locked there)
    try:
        etag = client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")["ETag"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _NO_CONDITIONS:
            conditional = False
        elif code not in _CONDITION_FAILED:  # a bucket that is not there, a key without the right to write
            from seqwatch.pipelines.object_store import store_sentence

            raise LockRefused(f"could not take the lock on {output}: {store_sentence(exc, f's3://{bucket}/{key}')}") \
                from None
        else:
            etag = _take_over_if_stale(client, bucket, key, body, (output, job, flag))
    else:
        try:  # a store that takes If-None-Match but not If-Match could not renew the lease: not locked there
            etag = client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=etag)["ETag"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") not in _NO_CONDITIONS:
                raise
            client.delete_object(Bucket=bucket, Key=key)
            conditional = False
    if not conditional:
        yield False
        return
    lease = _Renewal(client, bucket, key, body, etag, output)
    lease.start()
    try:
        yield True
    finally:
        lease.stop()
        _let_go(client, bucket, key, lease.etag)


def _let_go(client, bucket: str, key: str, etag: str) -> None:
    """Delete the lock object where it is still this job's (a job that took it over keeps it). A store that takes
    no conditional delete has it deleted where its ETag is still this job's when asked; one out of reach leaves it
    to lapse: the job's own end is not failed for it."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code", "") in _NO_CONDITIONS:
            try:
                if client.head_object(Bucket=bucket, Key=key)["ETag"] == etag:
                    client.delete_object(Bucket=bucket, Key=key)
            except (ClientError, BotoCoreError):
                pass
    except BotoCoreError:
        pass


def _take_over_if_stale(client, bucket: str, key: str, body: bytes, said: tuple) -> str:
    """The new ETag of the lock object, taken over where its holder has not written it for ``LEASE_S`` seconds or
    is a process of this machine that has ended; raises ``OutputBusy`` where it is live, or another job took it
    over first."""
    import datetime
    from email.utils import parsedate_to_datetime

    from botocore.exceptions import ClientError

    try:
        found = client.get_object(Bucket=bucket, Key=key)
    except ClientError:  # deleted meanwhile: its holder has just ended
        raise _busy("job", *said) from None
    text = found["Body"].read()
    stamp = found["ResponseMetadata"].get("HTTPHeaders", {}).get("date")  # the store's clock, where it says it
    now = parsedate_to_datetime(stamp) if stamp else datetime.datetime.now(datetime.timezone.utc)
    age = (now - found["LastModified"]).total_seconds()
    if age < LEASE_S and not _holder_has_ended(text):
        busy = _busy(_holder_of(text), *said)
        raise OutputBusy(f"{busy} (its lock there was written {max(age, 0):.0f} s ago; a killed job's lapses "
                         f"{LEASE_S:.0f} s after that, and the next job takes it over)")
    try:
        return client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=found["ETag"])["ETag"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code", "") in _CONDITION_FAILED:  # another job was first
            raise _busy("job", *said) from None
        raise


class _Renewal(threading.Thread):
    """Writes the lock object again every ``RENEW_S`` seconds, while its ETag is still this job's."""

    def __init__(self, client, bucket: str, key: str, body: bytes, etag: str, output: str):
        super().__init__(daemon=True, name="seqwatch-lock-lease")
        self.client, self.bucket, self.key, self.body, self.etag, self.output = client, bucket, key, body, etag, output
        self._stopped = threading.Event()

    def run(self) -> None:
        import logging

        from botocore.exceptions import BotoCoreError, ClientError

        while not self._stopped.wait(RENEW_S):
            try:
                self.etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self.body,
                                                   IfMatch=self.etag)["ETag"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code", "") in _CONDITION_FAILED:
                    logging.getLogger("seqwatch.pipelines").warning(
                        "seqwatch: another job took over the lock on %s (this one could not write it again for "
                        "%.0f s); both may now write there", self.output, LEASE_S)
                    return
            except BotoCoreError:  # the store out of reach for a while: again at the next turn
                continue

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)
