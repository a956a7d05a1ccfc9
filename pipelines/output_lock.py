"""One job at a time per output folder.

Two batch runs into one ``--output`` at once would share its sink folders: each commit sets the other's sinks
aside, and ``manifest.json`` would describe one run beside the other's files. A job therefore holds an advisory
lock on ``<output>/.seqwatch.lock`` (``flock``) from before its first check of the folder until its manifest is
written, or, for a stream, until the stream ends. The kernel drops the lock when its holder's process ends, killed
included (``kill -9``, an out-of-memory kill), so a lock never outlives its job and nothing has to be cleaned up; on
NFS, Linux takes ``flock`` as a whole-file lock on the server, released when the holding process (or, after its
lease, its machine) is gone. The file stays between jobs; while a job holds it, it names the job, for the refusal.

On S3 (``s3://``) and Google Cloud Storage (``gs://``) the lock is an object, ``<output>/.seqwatch.lock``, created
only where none is there (a conditional write: S3's ``If-None-Match: *``, GCS's ``ifGenerationMatch=0``) and held
as a lease: its holder writes it again every ``RENEW_S`` seconds (on the condition that it is still the version it
wrote: ``If-Match`` its ETag, ``ifGenerationMatch`` its generation; so a holder that lost it finds out), and
deletes it at the end. A lock not written again for ``LEASE_S`` seconds (by the store's own clock, the ``Date``
of its answer, against its time of the write) is a killed job's: the next job takes it over, again by a
conditional write, so that of two jobs that find it stale one gets it. A job that finds a live lock is refused, as
on a local folder, except where the lock names a process of the same machine (Linux: its boot, PID namespace, PID
and start time) that has ended: a killed run's rerun by cron or Airflow on the same machine takes its lock over at
once, as the kernel's release of ``flock`` lets it do on a local folder, instead of waiting out the lease.

Not locked: outputs on other remote file systems (``hdfs://``), stores that refuse conditional writes (some
S3-compatible ones), local folders whose file system refuses locks (some FUSE mounts), and platforms
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
    hold = _store_lease if output.startswith(("s3://", "gs://")) else _file_lock
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


LEASE_S = 120.0  # a lock object not written again for this long is a killed job's
RENEW_S = 30.0  # how often its holder writes it again


class _Taken(Exception):
    """The lock object is there (a conditional create), or is no longer the version this job wrote or read."""


class _S3LockObject:
    """The lock object of an output on S3: written with ``If-None-Match: *`` and ``If-Match`` its ETag."""

    CONDITION_FAILED = {"PreconditionFailed", "ConditionalRequestConflict"}
    NO_CONDITIONS = {"NotImplemented"}  # a store without conditional writes

    def __init__(self, output: str):
        from seqwatch.pipelines.object_store import s3_client

        self.client = s3_client()
        self.bucket, self.key = _lock_object(output)
        self.url = f"s3://{self.bucket}/{self.key}"

    @staticmethod
    def _code(exc) -> str:
        return exc.response.get("Error", {}).get("Code", "")

    def create(self, body: bytes) -> str | None:
        """The new object's version; None where the store takes no conditional write (nothing is locked there).
        Raises ``_Taken`` where it is there, or ``LockRefused`` where the store refused it."""
        from botocore.exceptions import ClientError

        try:
            etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfNoneMatch="*")["ETag"]
        except ClientError as exc:
            if self._code(exc) in self.NO_CONDITIONS:
                return None
            if self._code(exc) in self.CONDITION_FAILED:
                raise _Taken from None
            raise _refused(exc, self.url) from None  # a bucket that is not there, a key without the right to write
        try:  # a store that takes If-None-Match but not If-Match could not renew the lease: not locked there
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfMatch=etag)["ETag"]
        except ClientError as exc:
            if self._code(exc) not in self.NO_CONDITIONS:
                raise
            self.client.delete_object(Bucket=self.bucket, Key=self.key)
            return None

    def replace(self, body: bytes, version: str) -> str:
        """Write it again where it is still ``version``; its new version. Raises ``_Taken`` where it is not."""
        from botocore.exceptions import ClientError

        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfMatch=version)["ETag"]
        except ClientError as exc:
            if self._code(exc) in self.CONDITION_FAILED:
                raise _Taken from None
            raise

    def read(self) -> tuple[bytes, float, str] | None:
        """Its text, its age in seconds by the store's clock (where the store says it) and its version; None where
        it is gone."""
        from botocore.exceptions import ClientError

        try:
            found = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError:
            return None
        now = _store_now(found["ResponseMetadata"].get("HTTPHeaders", {}).get("date"))
        return found["Body"].read(), (now - found["LastModified"]).total_seconds(), found["ETag"]

    def delete(self, version: str) -> None:
        """Delete it where it is still ``version`` (a job that took it over keeps it). A store that takes no
        conditional delete has it deleted where its ETag is still this job's when asked; one out of reach leaves it
        to lapse: the job's own end is not failed for it."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=version)
        except ClientError as exc:
            if self._code(exc) in self.NO_CONDITIONS:
                try:
                    if self.client.head_object(Bucket=self.bucket, Key=self.key)["ETag"] == version:
                        self.client.delete_object(Bucket=self.bucket, Key=self.key)
                except (ClientError, BotoCoreError):
                    pass
        except BotoCoreError:
            pass


class _GcsLockObject:
    """The lock object of an output on Google Cloud Storage: written with ``ifGenerationMatch`` (0: only where there
    is none; else the generation this job wrote or read). Its age is told by the store's clock, the ``Date`` of the
    store's answer, against the store's time of its last write, as on S3: GCS's client returns no header, so this
    object's client notes the ``Date`` of each answer (its own session's response hook). Until 2026-12-06 the age
    was told by this machine's clock, and a machine whose clock ran a few minutes ahead took over a live lock."""

    def __init__(self, output: str):
        from seqwatch.pipelines.object_store import gcs_client

        bucket, self.key = _lock_object(output)
        client = gcs_client()  # a client of its own (Beam makes a new one each time), so the hook is this object's
        self.bucket = client.bucket(bucket)
        self.url = f"gs://{bucket}/{self.key}"
        self._store_date: str | None = None  # the Date header of the store's last answer
        try:
            client._http.hooks["response"].append(self._note_date)  # a requests session (google-auth's)
        except (AttributeError, KeyError, TypeError):  # another transport: this machine's clock, as before
            pass

    def _note_date(self, response, *args, **kwargs) -> None:
        self._store_date = response.headers.get("Date")

    def _write(self, body: bytes, generation: int) -> int:
        from google.api_core.exceptions import PreconditionFailed

        blob = self.bucket.blob(self.key)
        try:
            blob.upload_from_string(body, content_type="application/json", if_generation_match=generation)
        except PreconditionFailed:
            raise _Taken from None
        return blob.generation

    def create(self, body: bytes) -> int:
        from google.api_core.exceptions import GoogleAPIError
        from requests.exceptions import RequestException

        try:
            return self._write(body, 0)
        except (GoogleAPIError, RequestException) as exc:  # a bucket that is not there, no right to write, no answer
            raise _refused(exc, self.url) from None

    def replace(self, body: bytes, version: int) -> int:
        return self._write(body, version)

    def read(self) -> tuple[bytes, float, int] | None:
        from google.api_core.exceptions import NotFound

        self._store_date = None
        try:
            found = self.bucket.get_blob(self.key)
            stamp = self._store_date  # the answer that says when it was last written
            text = found.download_as_bytes() if found is not None else None
        except NotFound:
            return None
        if found is None:
            return None
        return text, (_store_now(stamp) - found.updated).total_seconds(), found.generation

    def delete(self, version: int) -> None:
        """Delete it where it is still ``version`` (asked first as well: an emulator may not hold a delete to its
        condition); one out of reach leaves it to lapse."""
        try:
            found = self.bucket.get_blob(self.key)
            if found is not None and found.generation == version:
                found.delete(if_generation_match=version)
        except Exception:  # noqa: BLE001 - the job's own end is not failed for a lock it leaves to lapse
            pass


def _store_now(date_header: str | None):
    """The store's time, from the ``Date`` header of its answer; this machine's where there is none or it cannot be
    read."""
    from email.utils import parsedate_to_datetime

    if date_header:
        try:
            stamp = parsedate_to_datetime(date_header)
            if stamp.tzinfo is not None:
                return stamp
        except (TypeError, ValueError):
            pass
    return _this_machines_now()


def _this_machines_now():
    import datetime

    return datetime.datetime.now(datetime.timezone.utc)


def _refused(exc, url: str) -> LockRefused:
    from seqwatch.pipelines.object_store import store_sentence

    return LockRefused(store_sentence(exc, url))


def _lock_object(output: str) -> tuple[str, str]:
    from seqwatch.pipelines.object_store import bucket_and_key

    bucket, prefix = bucket_and_key(output)
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/{LOCK_FILE}" if prefix else LOCK_FILE


@contextmanager
def _store_lease(output: str, job: str, run_id: str, flag: str) -> Iterator[bool]:
    """Hold the lock object of an output on S3 or GCS for the ``with`` block (see the module's text); yield False
    where the store takes no conditional write."""
    lock = _GcsLockObject(output) if output.startswith("gs://") else _S3LockObject(output)
    body = _holder_record(job, run_id)
    try:
        version = lock.create(body)
    except LockRefused as exc:
        raise LockRefused(f"could not take the lock on {output}: {exc}") from None
    except _Taken:
        version = _take_over_if_stale(lock, body, (output, job, flag))
    if version is None:
        yield False
        return
    lease = _Renewal(lock, body, version, output)
    lease.start()
    try:
        yield True
    finally:
        lease.stop()
        lock.delete(lease.version)


def _take_over_if_stale(lock, body: bytes, said: tuple):
    """The new version of the lock object, taken over where its holder has not written it for ``LEASE_S`` seconds
    or is a process of this machine that has ended; raises ``OutputBusy`` where it is live, or another job took it
    over first."""
    found = lock.read()
    if found is None:  # deleted meanwhile: its holder has just ended
        raise _busy("job", *said)
    text, age, version = found
    if age < LEASE_S and not _holder_has_ended(text):
        busy = _busy(_holder_of(text), *said)
        raise OutputBusy(f"{busy} (its lock there was written {max(age, 0):.0f} s ago; a killed job's lapses "
                         f"{LEASE_S:.0f} s after that, and the next job takes it over)")
    try:
        return lock.replace(body, version)
    except _Taken:  # another job was first
        raise _busy("job", *said) from None


class _Renewal(threading.Thread):
    """Writes the lock object again every ``RENEW_S`` seconds, while it is still this job's version."""

    def __init__(self, lock, body: bytes, version, output: str):
        super().__init__(daemon=True, name="seqwatch-lock-lease")
        self.lock, self.body, self.version, self.output = lock, body, version, output
        self._stopped = threading.Event()

    def run(self) -> None:
        import logging

        while not self._stopped.wait(RENEW_S):
            try:
                self.version = self.lock.replace(self.body, self.version)
            except _Taken:
                logging.getLogger("seqwatch.pipelines").warning(
                    "seqwatch: another job took over the lock on %s (this one could not write it again for "
                    "%.0f s); both may now write there", self.output, LEASE_S)
                return
            except Exception:  # noqa: BLE001 - the store out of reach for a while: again at the next turn
                continue

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)
