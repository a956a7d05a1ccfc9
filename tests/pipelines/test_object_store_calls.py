"""What calls to S3 cost, against moto's S3 server on 127.0.0.1: Beam's S3 clients of one process and options share
one boto3 client (Beam made a boto3 session and client for every call of its S3 file system, 70-115 ms of CPU each:
79 of them, 9.2 s, in the launcher of a run of 2,400 readings), and a run's quarantine notice reads its files on S3
through Beam's file systems (pyarrow's own S3 file system, which knows neither Beam's endpoint nor its keys, asked
AWS for the bucket's region: 11 s to fail, and the notice lost its notes; the time is measured by hand, README "On
S3", not here)."""
from __future__ import annotations

import pyarrow as pa
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from seqwatch.pipelines.object_store import share_s3_clients
from seqwatch.pipelines.parsing import EMPTY_VALUE
from seqwatch.schemas.arrow import QUARANTINE_SCHEMA

boto3_client = pytest.importorskip("apache_beam.io.aws.clients.s3.boto3_client")


@pytest.fixture
def store(s3_store, monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):  # S3 is reached by Beam's flags alone, as in a run
        monkeypatch.delenv(name, raising=False)
    FileSystems.set_options(PipelineOptions(s3_store.beam_flags))
    share_s3_clients()  # done when object_store is imported, as in every seqwatch process; a second call is none
    return s3_store


def test_beams_s3_clients_of_one_process_and_options_share_one_boto3_client_and_keep_their_own_downloads(store):
    options = PipelineOptions(store.beam_flags)
    first, second = boto3_client.Client(options), boto3_client.Client(options)
    assert first.client is second.client and first is not second
    elsewhere = [flag for flag in store.beam_flags if not flag.startswith("--s3_region_name")]
    other = boto3_client.Client(PipelineOptions([*elsewhere, "--s3_region_name=eu-west-1"]))
    assert other.client is not first.client
    assert vars(second).keys() == vars(other).keys()  # every attribute Beam's own __init__ makes
    # two objects read at once, a piece of each in turn: each client's download is its own
    texts = {name: (name * 300_000).encode() for name in ("a", "b")}
    for name, data in texts.items():
        store.client.put_object(Bucket=store.BUCKET, Key=f"calls/{name}.bin", Body=data)
    with FileSystems.open(store.url("calls/a.bin")) as a, FileSystems.open(store.url("calls/b.bin")) as b:
        read = {"a": a.read(1000), "b": b.read(1000)}
        read = {"a": read["a"] + a.read(), "b": read["b"] + b.read()}
    assert read == texts


def test_a_quarantine_notice_reads_its_records_on_s3_with_the_runs_flags(store):
    from seqwatch.pipelines.cli import quarantine_notice
    from seqwatch.pipelines.sinks import write_parquet

    def record(line: int, value: str, reason: str) -> dict:
        return {"raw": f"pump-01,flow,2026-01-05T00:00:{line:02d}Z,{value}", "source": store.url("in/pump-01.csv"),
                "line": line, "column": "flow", "records": 1, "stage": "parse", "reason_code": "parse_value",
                "reason": reason, "run_id": "run-0123456789ab"}

    rows = [record(2, "abc", "'abc' is not a number"), record(3, "", f"flow: {EMPTY_VALUE}"),
            record(4, "", f"flow: {EMPTY_VALUE}")]
    write_parquet(store.url("notice/quarantine/pump-01.parquet"), pa.Table.from_pylist(rows, QUARANTINE_SCHEMA))
    manifest = {"records_in": 100, "records_scored": 97, "records_quarantined": 3,
                "stages": {"quarantined.parse.parse_value": 3}, "settings": {"mapping": {"format": "long"}}}
    notice = quarantine_notice("run", manifest, store.url("notice"))
    assert notice == (f"seqwatch run: 3 of 100 readings were quarantined (parse_value 3); values that are not "
                      f"numbers, by channel: 'flow' 1; empty or missing values, by channel: 'flow' 2; each record and "
                      f"its reason is in {store.url('notice')}/quarantine")
