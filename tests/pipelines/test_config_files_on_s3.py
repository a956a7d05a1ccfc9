"""A suite file and a mapping file on S3 (``--suite s3://...``, ``--mapping s3://...``), read by the launcher through
Beam's file systems, against moto's S3 server on 127.0.0.1. Before 2026-12-06 a run said that a mapping file on S3
"does not exist" and that a suite there was "neither a bundled family nor a file"."""
from __future__ import annotations

import json

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from seqwatch.pipelines.object_store import read_bytes
from seqwatch.schemas.mapping import InputMapping, MappingError
from seqwatch.schemas.validation import SUITES_DIR, SuiteError, load_suite_dict


@pytest.fixture
def store(s3_store):
    FileSystems.set_options(PipelineOptions(s3_store.beam_flags))
    return s3_store


def test_a_suite_file_on_s3_is_read_as_the_same_file_here(store, tmp_path):
    text = (SUITES_DIR / "energy.json").read_bytes()
    store.client.put_object(Bucket=store.BUCKET, Key="conf/plant suite.json", Body=b"\xef\xbb\xbf" + text)
    (tmp_path / "plant suite.json").write_bytes(text)
    remote = load_suite_dict(store.url("conf/plant suite.json"), read=read_bytes)
    assert remote == load_suite_dict(str(tmp_path / "plant suite.json")) and remote["name"]
    with pytest.raises(SuiteError, match=r"^suite 's3://seqwatch-test/conf/none.json' is neither a bundled family "):
        load_suite_dict(store.url("conf/none.json"), read=read_bytes)
    store.client.put_object(Bucket=store.BUCKET, Key="conf/broken.json", Body=b'{"expectations": [')
    with pytest.raises(SuiteError, match=r"^suite file s3://seqwatch-test/conf/broken.json is not valid JSON"):
        load_suite_dict(store.url("conf/broken.json"), read=read_bytes)


def test_a_mapping_file_on_s3_is_read_with_its_errors_said_of_its_url(store):
    mapping = {"format": "wide", "timestamp": "time", "ignore": ["status"]}
    store.client.put_object(Bucket=store.BUCKET, Key="conf/mapping.json", Body=json.dumps(mapping).encode())
    assert InputMapping.read_file(store.url("conf/mapping.json"), read=read_bytes) == mapping
    with pytest.raises(MappingError, match=r"^mapping file s3://seqwatch-test/conf/none.json does not exist$"):
        InputMapping.read_file(store.url("conf/none.json"), read=read_bytes)
    store.client.put_object(Bucket=store.BUCKET, Key="conf/list.json", Body=b"[1]")
    with pytest.raises(MappingError, match=r"must hold a JSON object, not a list$"):
        InputMapping.read_file(store.url("conf/list.json"), read=read_bytes)
