"""The output lock on object stores (``output_lock``: an object created by a conditional write and held as a
lease), on S3 against moto's S3 server and on Google Cloud Storage against fake-gcs-server, each on 127.0.0.1: one
job at a time, a lock written again while held, a killed job's lock taken over once it lapses (at once where it
names an ended process of this machine), and a holder that lost it leaves the new holder's lock alone."""
from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from seqwatch.pipelines import output_lock as lock_module
from seqwatch.pipelines.output_lock import LOCK_FILE, OutputBusy, output_lock


@pytest.fixture(params=["s3", "gcs"])
def store(request, monkeypatch):
    """The S3 store (moto) or the GCS store (fake-gcs-server, which holds a write to its ifGenerationMatch
    condition), reached from this process."""
    if request.param == "s3":
        found = request.getfixturevalue("s3_store")
        FileSystems.set_options(PipelineOptions(found.beam_flags))
        return found
    from apache_beam.internal.gcp import auth

    found = request.getfixturevalue("fake_gcs_store")
    found.use_here(monkeypatch)
    monkeypatch.setattr(auth._Credentials, "_credentials_init", False)  # looked up again, from the metadata server
    FileSystems.set_options(PipelineOptions([]))
    return found


def _in_another_thread(url: str, job: str = "run", run_id: str = "run-b") -> str:
    """``"held"`` where another thread (another job) gets the lock, else the refusal's text."""
    def take():
        try:
            with output_lock(url, job, run_id) as locked:
                return "held" if locked else "not locked"
        except OutputBusy as exc:
            return str(exc)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(take).result()


def test_an_output_on_a_store_is_held_by_one_job_at_a_time_and_its_lock_object_goes_with_it(store):
    url = store.url("locks/one")
    with output_lock(url, "run", "run-a") as locked:
        assert locked and store.keys("locks/one") == [LOCK_FILE]
        held = json.loads(store.read(f"locks/one/{LOCK_FILE}"))
        assert (held["job"], held["run_id"], held["pid"]) == ("run", "run-a", os.getpid())
        with output_lock(url + "/", "run", "run-a") as inner:  # re-entrant in its thread
            assert inner
        refused = _in_another_thread(url)
        assert refused.startswith(f"another seqwatch run run-a (process {os.getpid()} on ")
        assert f"is writing into {url}; wait for it to end, or give this run its own --output (its lock there " \
               f"was written " in refused and "a killed job's lapses 120 s after that" in refused
    assert store.keys("locks/one") == []  # deleted at the end
    assert _in_another_thread(url) == "held"


def test_a_lock_on_a_store_is_written_again_while_held_and_a_killed_jobs_lapses(store, monkeypatch):
    monkeypatch.setattr(lock_module, "LEASE_S", 3.0)  # the store's times are whole seconds
    monkeypatch.setattr(lock_module, "RENEW_S", 0.5)
    url = store.url("locks/renewed")
    with output_lock(url, "stream", "stream-a"):
        first = store.updated(f"locks/renewed/{LOCK_FILE}")
        time.sleep(4.5)  # longer than the lease: written again meanwhile, so still this job's
        later = store.updated(f"locks/renewed/{LOCK_FILE}")
        assert later > first
        assert _in_another_thread(url).startswith("another seqwatch stream stream-a ")
    # a killed job's lock: nobody deletes it or writes it again
    killed = {"job": "run", "run_id": "run-killed", "pid": 1, "host": "elsewhere", "since": time.time()}
    store.write(f"locks/killed/{LOCK_FILE}", json.dumps(killed).encode())
    assert _in_another_thread(store.url("locks/killed")).startswith("another seqwatch run run-killed (process 1 "
                                                                    "on elsewhere, since ")
    time.sleep(4.2)
    assert _in_another_thread(store.url("locks/killed"), run_id="run-next") == "held"  # taken over, then let go
    assert store.keys("locks/killed") == []


def test_a_holder_that_lost_its_lock_leaves_the_new_holders_lock_alone(store, monkeypatch, caplog):
    """A job that could not write its lock again in time (paused, cut off from the store) finds another job holding
    it: it says so, and its end deletes only its own lock."""
    monkeypatch.setattr(lock_module, "LEASE_S", 2.0)
    monkeypatch.setattr(lock_module, "RENEW_S", 60.0)  # the first holder writes it no more
    url, key = store.url("locks/lost"), f"locks/lost/{LOCK_FILE}"
    taken, release = threading.Event(), threading.Event()

    def second_job():
        with output_lock(url, "run", "run-b") as locked:
            assert locked
            taken.set()
            release.wait(30)

    with output_lock(url, "run", "run-a"):
        time.sleep(3.2)
        thread = threading.Thread(target=second_job)
        thread.start()
        assert taken.wait(30)
        assert json.loads(store.read(key))["run_id"] == "run-b"
    assert json.loads(store.read(key))["run_id"] == "run-b"  # the first job's end left it
    monkeypatch.setattr(lock_module, "RENEW_S", 0.2)
    release.set()
    thread.join(30)
    assert store.keys("locks/lost") == []


_HOLDER = """
import sys, time
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from seqwatch.pipelines.output_lock import output_lock
FileSystems.set_options(PipelineOptions(sys.argv[2:]))
with output_lock(sys.argv[1], "run", "run-killed"):
    print("held", flush=True)
    time.sleep(300)
"""


def _state(pid: int) -> str:
    """A process's state letter in ``/proc`` (``Z``: a zombie)."""
    stat = open(f"/proc/{pid}/stat").read()
    return stat[stat.rindex(")") + 2]


@pytest.mark.skipif(not os.path.exists("/proc/self/ns/pid"), reason="a process is told by /proc (Linux)")
def test_a_killed_holder_on_the_same_machine_is_taken_over_at_once_a_live_one_or_another_machines_is_not(store):
    """A run killed (SIGKILL) and run again on the same machine, as cron or Airflow reruns it, had waited out the
    lease (two minutes): its lock names a process of this boot and PID namespace that has ended, so the next job
    takes it over at once. A live holder, or one of another machine, still holds it."""
    import signal
    import subprocess
    import sys

    url, key = store.url("locks/rerun"), f"locks/rerun/{LOCK_FILE}"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, url, *getattr(store, "beam_flags", [])], env=store.env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        record = json.loads(store.read(key))
        assert record["pid"] == holder.pid and set(record["process"]) == {"boot", "pid_ns", "started"}
        assert _in_another_thread(url).startswith(f"another seqwatch run run-killed (process {holder.pid} on ")
        holder.send_signal(signal.SIGKILL)  # not reaped yet (no poll or wait): a zombie has ended too
        deadline = time.monotonic() + 10
        while _state(holder.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _state(holder.pid) == "Z"
        assert _in_another_thread(url, run_id="run-next") == "held"  # taken over at once, then let go
        assert store.keys("locks/rerun") == []
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(10)
    # a lock that names an ended PID of another boot (another machine) cannot be told from a live one: the lease
    elsewhere = {**record, "process": {**record["process"], "boot": "another-boot"}}
    store.write(key, json.dumps(elsewhere).encode())
    assert _in_another_thread(url).startswith(f"another seqwatch run run-killed (process {holder.pid} on ")
    # nor one whose PID was taken by a later process: its start time is not the holder's
    reused = {**record, "pid": os.getpid()}
    assert lock_module._holder_has_ended(json.dumps(reused).encode())
    assert not lock_module._holder_has_ended(lock_module._holder_record("run", "run-here"))


def test_a_lease_is_told_by_the_stores_clock_not_by_this_machines(store, monkeypatch):
    """A lock another machine wrote a moment ago is live, though this machine's clock runs ten minutes ahead, and
    one not written for longer than the lease has lapsed, though this machine's clock runs ten minutes behind. On
    GCS the age had been told by this machine's clock: a job there whose clock ran ahead took over a live lock."""
    import datetime

    monkeypatch.setattr(lock_module, "LEASE_S", 3.0)  # the store's times are whole seconds
    real_now = lock_module._this_machines_now
    holder = {"job": "run", "run_id": "run-live", "pid": 1, "host": "elsewhere", "since": time.time()}
    store.write(f"locks/clock/{LOCK_FILE}", json.dumps(holder).encode())
    monkeypatch.setattr(lock_module, "_this_machines_now", lambda: real_now() + datetime.timedelta(minutes=10))
    assert _in_another_thread(store.url("locks/clock")).startswith("another seqwatch run run-live (process 1 ")
    monkeypatch.setattr(lock_module, "_this_machines_now", lambda: real_now() - datetime.timedelta(minutes=10))
    time.sleep(4.2)
    assert _in_another_thread(store.url("locks/clock"), run_id="run-next") == "held"  # taken over, then let go
    assert store.keys("locks/clock") == []
