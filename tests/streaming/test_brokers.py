"""The streaming sources against real brokers on 127.0.0.1, run on Beam's Prism runner in streaming mode.

Each broker test publishes readings (some malformed), reads them with a source from
``seqwatch.pipelines.broker_sources``, writes one file per event-time window pane (Parquet for readings, JSON
lines for quarantine, JSON for counts) and checks that every message came out exactly once, parsed or
quarantined, in the window of its own event time. The fast tests at the top need no broker.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import FixedWindows
from apache_beam.testing.util import assert_that, equal_to

from seqwatch.pipelines.broker_sources import (KafkaReadings, MessageParser, MqttReadings, PartitionOffsets,
                                               PubSubReadings, ReplayFile, _PartitionOffsetsTracker)
from seqwatch.pipelines.stop_request import STOP_FILE, StopRequest
from seqwatch.schemas.mapping import InputMapping

T0 = 1_767_571_200  # 2026-01-05T00:00:00Z, epoch seconds
WINDOW_S = 600


# ---------------------------------------------------------------------------------------------------------
# Messages: what the brokers carry. Malformed ones at fixed indices, one kind each.

def _message(i: int) -> bytes:
    """Reading i of entity ``pump-{i % 4}``, one second apart; every 97th is broken in one of five ways."""
    entity, t, value = f"pump-{i % 4}", T0 + i, round(0.25 * i, 2)
    stamp = (pd.Timestamp(t, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ") if i % 2 else t)  # ISO or epoch
    record = {"entity_id": entity, "channel": "flow", "timestamp": stamp, "value": value}
    kind = (i // 97) % 5 if i % 97 == 13 else None
    if kind == 0:
        return b"{not json"
    if kind == 1:
        record["timestamp"] = "yesterday"
    elif kind == 2:
        record["value"] = "n/a"
    elif kind == 3:
        del record["channel"]
    elif kind == 4:
        record["entity_id"] = ""
    return json.dumps(record).encode()


KIND_CODES = ("malformed_row", "parse_timestamp", "parse_value", "malformed_row", "missing_entity")


def _expected_quarantine(n: int) -> dict:
    codes: dict = {}
    for i in range(13, n, 97):
        code = KIND_CODES[(i // 97) % 5]
        codes[code] = codes.get(code, 0) + 1
    return codes


def test_expected_quarantine_is_what_the_messages_say():
    # 1000 messages: i = 13, 110, ..., 982 are broken (11 of them); kinds cycle through i // 97 = 0..10.
    assert _expected_quarantine(1000) == {"malformed_row": 5, "parse_timestamp": 2, "parse_value": 2,
                                          "missing_entity": 2}


# ---------------------------------------------------------------------------------------------------------
# Fast tests: the message parser and the Kafka restriction tracker, no broker.

def test_parser_reads_iso_and_epoch_and_quarantines_each_kind_with_its_source_and_line():
    parser = MessageParser("run-1")
    payloads = [_message(i) for i in (0, 1, 13, 110, 207, 304, 401)]
    parsed = parser.parse("kafka:readings/0", [100, 101, 102, 103, 104, 105, 106], payloads)
    [(batch, min_time)] = parsed.batches
    assert batch.frame["timestamp"].tolist() == [T0 * 10**6, (T0 + 1) * 10**6]
    assert batch.frame["value"].tolist() == [0.0, 0.25]
    assert batch.frame["line"].tolist() == [100, 101]
    assert set(batch.frame["source"]) == {"kafka:readings/0"}
    assert min_time == T0 * 10**6
    assert [(q.line, q.reason_code) for q in parsed.quarantine] == [
        (102, "malformed_row"), (105, "malformed_row"), (103, "parse_timestamp"), (106, "missing_entity"),
        (104, "parse_value")]
    assert parsed.quarantine[0].raw == "{not json" and parsed.quarantine[0].stage == "parse"
    assert parsed.quarantine[1].reason == "the message lacks fields ['channel'] (it has ['entity_id', 'timestamp', " \
                                         "'value'])"
    assert parsed.records == 7


def test_parser_cuts_batches_at_window_boundaries_and_keeps_epoch_microseconds_exact():
    parser = MessageParser("run-1", align_to_window_us=WINDOW_S * 10**6)
    stamps = [T0 + 599, T0 + 600, T0 + 601, T0 + 1]  # windows 0, 1, 1, 0
    payloads = [json.dumps({"entity_id": "e", "channel": "c", "timestamp": t * 10**6 + 7, "value": 1}).encode()
                for t in stamps]
    parsed = parser.parse("pubsub:projects/p/subscriptions/s", [1, 2, 3, 4], payloads)
    assert [(b.frame["line"].tolist(), t) for b, t in parsed.batches] == [
        ([1, 4], (T0 + 1) * 10**6 + 7), ([2, 3], (T0 + 600) * 10**6 + 7)]


def _stamps(outputs) -> list:
    """``(what, seconds after T0)`` of each output of ``_emit``."""
    out = []
    for o in outputs:
        tag, value = (o.tag, o.value) if isinstance(o, beam.pvalue.TaggedOutput) else ("readings", o)
        item = value.value
        name = {"readings": lambda: f"readings {item.frame['line'].tolist()}", "counts": lambda: f"counts {item}"}
        out.append((name.get(tag, lambda: tag)(), value.timestamp.micros // 10**6 - T0))
    return out


def test_a_batch_behind_the_readers_watermark_is_stamped_at_the_watermark_with_its_count():
    """A late reading (delivered after the reader's watermark passed it) keeps its event time in the batch, but
    the batch and its count are stamped at the watermark, which the late gate then compares it with; a batch
    ahead of the watermark keeps its own time; quarantine is never stamped before the watermark."""
    from apache_beam.utils.timestamp import Timestamp

    from seqwatch.pipelines.broker_sources import _emit

    parser = MessageParser("run-1", align_to_window_us=WINDOW_S * 10**6)
    payloads = [json.dumps({"entity_id": "e", "channel": "c", "timestamp": t, "value": 1}).encode()
                for t in (T0 + 5, T0 + 1000)] + [b"{not json"]
    parsed = parser.parse("kafka:readings/0", [1, 2, 3], payloads)
    assert _stamps(_emit(parsed, None, Timestamp(T0 + 700))) == [
        ("readings [1]", 700), ("counts ('records_in', 1)", 700),  # behind the watermark: at the watermark
        ("readings [2]", 1000), ("counts ('records_in', 1)", 1000),  # ahead of it: its own time
        ("quarantine", 700), ("counts ('records_in', 1)", 700)]
    [(late, _), _] = parsed.batches
    assert late.frame["timestamp"].tolist() == [(T0 + 5) * 10**6]  # the reading keeps its event time
    assert [s for _, s in _stamps(_emit(parsed, None, None))] == [5, 5, 1000, 1000, 5, 5]  # no watermark


def test_messages_from_beams_own_ios_are_stamped_no_earlier_than_the_message():
    """``_ParseMessageBatches`` (after ReadFromKafka / ReadFromPubSub): a reading older than the message that
    carried it is stamped at the message's time, which the IO's watermark follows."""
    from apache_beam.utils.timestamp import Timestamp

    from seqwatch.pipelines.broker_sources import _ParseMessageBatches

    parse = _ParseMessageBatches(MessageParser("run-1", align_to_window_us=WINDOW_S * 10**6))
    messages = [("pubsub:s", 1, json.dumps({"entity_id": "e", "channel": "c", "timestamp": T0 + 5,
                                            "value": 1}).encode())]
    assert _stamps(parse.process(messages, Timestamp(T0 + 300))) == [
        ("readings [1]", 300), ("counts ('records_in', 1)", 300)]
    assert _stamps(parse.process(messages, Timestamp(T0 - 300))) == [
        ("readings [1]", 5), ("counts ('records_in', 1)", 5)]


def test_wide_messages_give_one_reading_per_channel_key_and_quarantine_with_the_batch_parsers_reasons():
    """Devices publish their state, a key per channel: each channel key a message has is one reading (a key it
    lacks is none), in the batch parser's wide path, so a bad value names its key and a bad time quarantines the
    message's readings together. Counts reconcile: readings + quarantined records = channel keys + bad messages."""
    mapping = InputMapping(format="wide", timestamp="ts", entity={"column": "device"}, ignore=("rssi",))
    messages = [
        {"ts": T0, "device": "pump-01", "flow": 95.5, "pressure": 2.5, "rssi": -70},
        {"ts": T0 + 10, "device": "pump-01", "flow": 96.0},  # pressure not sent: no reading, not a gap record
        {"ts": T0 + 10, "device": "pump-02", "flow": "n/a", "pressure": 2.75},
        {"ts": "yesterday", "device": "pump-02", "flow": 1.0, "pressure": 2.0},  # both readings quarantined
        {"ts": T0 + 20, "device": "pump-02", "rssi": -60},  # no channel key
        {"device": "pump-03", "flow": 1.0},  # no time
    ]
    parsed = MessageParser("run-1", mapping).parse("mqtt:plant/+/state", [1, 2, 3, 4, 5, 6],
                                                   [json.dumps(m).encode() for m in messages])
    [(batch, first)] = parsed.batches
    got = batch.frame.astype({"entity_id": str, "channel": str}).sort_values(["line", "channel"])
    assert got[["entity_id", "channel", "timestamp", "value", "line"]].values.tolist() == [
        ["pump-01", "flow", T0 * 10**6, 95.5, 1], ["pump-01", "pressure", T0 * 10**6, 2.5, 1],
        ["pump-01", "flow", (T0 + 10) * 10**6, 96.0, 2], ["pump-02", "pressure", (T0 + 10) * 10**6, 2.75, 3]]
    assert first == T0 * 10**6
    assert sorted((q.line, q.reason_code, q.column, q.records, q.reason) for q in parsed.quarantine) == [
        (3, "parse_value", "flow", 1, "column 'flow': the value 'n/a' is missing"),
        (4, "parse_timestamp", "", 2, "timestamp 'yesterday' has no date with a four-digit year"),
        (5, "malformed_row", "", 1, "the message has no channel fields besides ['device', 'rssi', 'ts']"),
        (6, "malformed_row", "", 1, "the message lacks fields ['ts'] (it has ['device', 'flow'])")]
    assert [q.raw for q in sorted(parsed.quarantine, key=lambda q: q.line)][:1] == [json.dumps(messages[2])]
    assert len(batch) + sum(q.records for q in parsed.quarantine) == 4 + 1 + 2 + 1 + 1
    # Renamed channels, a fixed entity, and a message without the default entity key.
    renamed = MessageParser("run-1", InputMapping(format="wide", timestamp="ts", entity={"value": "pump-09"},
                                                  channels={"q": "flow"}))
    parsed = renamed.parse("kafka:t/0", [7, 8], [json.dumps({"ts": T0, "q": 1.5, "other": 3}).encode(),
                                                 json.dumps({"ts": T0, "other": 3}).encode()])
    assert parsed.batches[0][0].frame.astype(str)[["entity_id", "channel", "value"]].values.tolist() == [
        ["pump-09", "flow", "1.5"]]
    assert [q.reason for q in parsed.quarantine] == ["the message has none of the channel fields ['q']"]
    default = MessageParser("run-1", InputMapping(format="wide")).parse("kafka:t/0", [9], [b'{"timestamp": 1, "a": 2}'])
    assert [q.reason for q in default.quarantine] == [
        "the message lacks fields ['entity_id'] (it has ['a', 'timestamp'])"]


def test_parser_quarantines_bytes_that_are_not_utf8_and_null_payloads():
    parsed = MessageParser("run-1").parse("kafka:t/0", [5, 6], [b"\xff\xfe", None])
    assert [(q.line, q.reason) for q in parsed.quarantine] == [(5, "the message is not UTF-8 text"),
                                                              (6, "the message is empty (null payload)")]


def test_one_poison_message_is_quarantined_and_the_rest_of_its_poll_is_read():
    """Bug hunt of broker sources: a message nested 3,000 brackets deep raised RecursionError in json.loads (one
    nested nearly as deep as json.loads goes, in _field_text's json.dumps: review), and
    one with a lone surrogate escape gave an entity id that Arrow could not encode. Either failed the job, lost
    the poll's good readings, and came back on every restart (never acknowledged). Ids that are JSON objects,
    arrays or booleans had become entities such as '{"x": 1}'. Each is now quarantined with its reason."""
    def reading(entity, second, **extra):
        return json.dumps({"entity_id": entity, "channel": "flow", "timestamp": T0 + second, "value": 1.5, **extra})

    messages = [reading("pump-01", 0),
                reading("pump-01", 1).replace('"pump-01"', '"pump\\ud800"'),  # a lone surrogate escape
                reading("pump-\ud83d\ude00", 2),  # json.dumps escapes the pair: an emoji, text
                reading("pump-01", 3)[:-1] + ', "x": ' + "[" * 3000 + "]" * 3000 + "}",
                reading({"x": 1}, 4), reading(True, 5), json.dumps({"entity_id": "p", "channel": ["flow"],
                                                                    "timestamp": T0 + 6, "value": 1.0}),
                reading(123, 7), "str\ud800", reading("pump-02", 8),
                reading("pump-01", 10)[:-1] + ', "x": ' + "[" * 990 + "]" * 990 + "}"]  # nearly json.loads' limit
    parsed = MessageParser("run-1").parse("kafka:t/0", list(range(len(messages))), messages)
    [(batch, _)] = parsed.batches
    assert batch.frame.astype({"entity_id": str})[["entity_id", "line"]].values.tolist() == [
        ["pump-01", 0], ["pump-\U0001f600", 2], ["123", 7], ["pump-02", 9]]
    assert [(q.line, q.reason_code, q.reason) for q in parsed.quarantine] == [
        (1, "malformed_row", "the message holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is no text"),
        (3, "malformed_row", "the message nests more than 100 levels deep"),
        (4, "malformed_row", "the message's 'entity_id' is a JSON object, not an id (text or a number)"),
        (5, "malformed_row", "the message's 'entity_id' is true or false, not an id (text or a number)"),
        (6, "malformed_row", "the message's 'channel' is a JSON array, not an id (text or a number)"),
        (8, "malformed_row", "the message is not UTF-8 text"),
        (10, "malformed_row", "the message nests more than 100 levels deep")]
    pa.table({"raw": [q.raw for q in parsed.quarantine]})  # every raw text can be written to the quarantine sink
    pa.table({"entity_id": batch.frame["entity_id"].astype(str).tolist()})
    assert len(batch) + sum(q.records for q in parsed.quarantine) == len(messages)


def test_kafka_tracker_claims_checkpoints_at_the_claimed_offsets_and_finishes():
    endless = 2**63 - 1
    tracker = _PartitionOffsetsTracker(PartitionOffsets((0, 1), (10, 0), (endless, 5)))
    assert tracker.try_claim({0: 15, 1: 5})
    assert tracker.try_split(0.5) is None  # no dynamic splits: only self-checkpoints
    primary, residual = tracker.try_split(0)
    assert primary == PartitionOffsets((0, 1), (10, 0), (15, 5))
    assert residual == PartitionOffsets((0, 1), (15, 5), (endless, 5))
    assert not tracker.try_claim({0: 16})  # after a checkpoint nothing more is claimed here
    tracker.check_done()
    resumed = _PartitionOffsetsTracker(residual)
    with pytest.raises(ValueError, match="partition 1 at 5 \\(stop 5\\) cannot claim 6"):
        resumed.try_claim({1: 6})
    with pytest.raises(ValueError, match="offsets left to read"):
        resumed.check_done()
    assert not resumed.try_claim("end")
    resumed.check_done()


def test_sources_check_their_arguments():
    with pytest.raises(ValueError, match="start must be one of .*, got 'newest'"):
        KafkaReadings("127.0.0.1:9092", "t", "r", start="newest")
    with pytest.raises(ValueError, match="subscription must be 'projects/<project>/subscriptions/<name>', got 's'"):
        PubSubReadings("s", "r")
    with pytest.raises(ValueError, match="speed must be a finite number > 0, got 0"):
        ReplayFile(["x.csv"], InputMapping(), "r", speed=0)
    with pytest.raises(ValueError, match="max_out_of_orderness_s must be a finite number of seconds >= 0, got -1"):
        KafkaReadings("127.0.0.1:9092", "t", "r", max_out_of_orderness_s=-1)


# ---------------------------------------------------------------------------------------------------------
# A windowed sink for the tests: one file per window pane, written under a temporary name and renamed.

class _WritePane(beam.DoFn):
    def __init__(self, folder: str, kind: str):
        self.folder = folder
        self.kind = kind

    def process(self, keyed, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        _, items = keyed
        items = list(items)
        start_us = int(window.start.micros)
        base = Path(self.folder) / self.kind / f"{start_us}-{pane.index}"
        base.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "readings":
            frame = pd.concat([b.frame for b in items], ignore_index=True)
            path, tmp = base.with_suffix(".parquet"), base.with_suffix(".parquet.tmp")
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
        elif self.kind == "quarantine":
            path, tmp = base.with_suffix(".jsonl"), base.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(q._asdict()) + "\n" for q in items))
        else:
            path, tmp = base.with_suffix(".json"), base.with_suffix(".json.tmp")
            totals: dict = {}
            for name, n in items:
                totals[name] = totals.get(name, 0) + n
            tmp.write_text(json.dumps(totals))
        os.replace(tmp, path)


def _write_windows(result, folder: Path, window_s: int = WINDOW_S) -> None:
    for kind, pcoll in (("readings", result.readings), ("quarantine", result.quarantine),
                        ("counts", result.counts)):
        (pcoll
         | f"Window{kind}" >> beam.WindowInto(FixedWindows(window_s))
         | f"Key{kind}" >> beam.Map(lambda x: (0, x))
         | f"Group{kind}" >> beam.GroupByKey()
         | f"Write{kind}" >> beam.ParDo(_WritePane(str(folder), kind)))


def _read_back(folder: Path) -> tuple[pd.DataFrame, list, int]:
    frames = []
    for path in sorted((folder / "readings").glob("*.parquet")):
        frame = pq.read_table(path).to_pandas()
        window_start = int(path.stem.split("-")[0])
        frame["window_start"] = window_start
        frames.append(frame)
    readings = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["line"])
    quarantine = [json.loads(line) for path in sorted((folder / "quarantine").glob("*.jsonl"))
                  for line in path.read_text().splitlines()]
    records_in = sum(json.loads(p.read_text()).get("records_in", 0) for p in (folder / "counts").glob("*.json"))
    return readings, quarantine, records_in


def _check_reconciles(readings: pd.DataFrame, quarantine: list, records_in: int, published: set, n: int) -> None:
    """Every published message (identified by ``(source, line)``) came out once, parsed or quarantined."""
    out = list(zip(readings["source"], readings["line"])) + [(q["source"], q["line"]) for q in quarantine]
    assert len(out) == n, f"{len(readings)} readings + {len(quarantine)} quarantined != {n} published"
    assert set(out) == published
    assert records_in == n
    codes: dict = {}
    for q in quarantine:
        codes[q["reason_code"]] = codes.get(q["reason_code"], 0) + 1
    assert codes == _expected_quarantine(n)
    # each reading sits in the window of its own event time
    assert ((readings["timestamp"] // (WINDOW_S * 10**6)) * WINDOW_S * 10**6 == readings["window_start"]).all()


# ---------------------------------------------------------------------------------------------------------
# Kafka

def _publish_kafka(broker, topic: str, indices, partitions: int) -> dict:
    """Publish messages ``indices`` keyed by entity (so each entity's readings keep their order in one
    partition); returns ``{(source, offset): i}`` from the delivery reports."""
    delivered: dict = {}

    def report(err, msg, i):
        assert err is None, err
        delivered[(f"kafka:{topic}/{msg.partition()}", msg.offset())] = i

    producer = broker.producer()
    for i in indices:
        producer.produce(topic, _message(i), key=f"pump-{i % 4}".encode(), partition=(i % 4) % partitions,
                         on_delivery=lambda err, msg, i=i: report(err, msg, i))
        producer.poll(0)
    assert producer.flush(30) == 0
    return delivered


def test_a_kafka_topic_is_checked_before_a_pipeline_starts(kafka_broker):
    kafka_broker.create_topic("readings-checked", partitions=3)
    assert KafkaReadings(kafka_broker.bootstrap_servers, "readings-checked", "run-1").check_topic() == [0, 1, 2]
    with pytest.raises(LookupError, match=f"^the Kafka topic 'readings-missing' does not exist on "
                                          f"{kafka_broker.bootstrap_servers} "):
        KafkaReadings(kafka_broker.bootstrap_servers, "readings-missing", "run-1").check_topic()
    with pytest.raises(ConnectionError, match=r"^cannot reach the Kafka broker at 127.0.0.1:1 \(.*\)$"):
        KafkaReadings("127.0.0.1:1", "readings-checked", "run-1").check_topic(timeout_s=2)


@pytest.mark.slow
def test_kafka_readings_reconcile_on_prism(kafka_broker, prism_options, tmp_path):
    n = 3000  # 50 minutes of event time: windows of 10 minutes, 5 of them
    kafka_broker.create_topic("readings-bulk", partitions=2)
    delivered = _publish_kafka(kafka_broker, "readings-bulk", range(n), partitions=2)
    assert len(delivered) == n

    started = time.monotonic()
    with beam.Pipeline(options=prism_options()) as p:
        read = p | "ReadKafka" >> KafkaReadings(kafka_broker.bootstrap_servers, "readings-bulk", "run-kafka",
                                                start="earliest", stop_at_end=True, align_to_window_s=WINDOW_S)
        _write_windows(read, tmp_path)
    elapsed = time.monotonic() - started

    readings, quarantine, records_in = _read_back(tmp_path)
    _check_reconciles(readings, quarantine, records_in, set(delivered), n)
    index = pd.Series([delivered[(s, o)] for s, o in zip(readings["source"], readings["line"])])
    assert (readings["value"].to_numpy() == (0.25 * index).round(2).to_numpy()).all()
    assert (readings["timestamp"].to_numpy() == ((T0 + index) * 10**6).to_numpy()).all()
    assert sorted({int(p.stem.split("-")[0]) for p in (tmp_path / "readings").glob("*.parquet")}) == [
        (T0 + k * WINDOW_S) * 10**6 for k in range(5)]
    print(f"kafka: broker started in {kafka_broker.started_s:.1f} s; {n} messages read on Prism in {elapsed:.1f} s")


@pytest.mark.slow
def test_wide_kafka_messages_take_their_entity_from_the_message_key_on_prism(kafka_broker, prism_options, tmp_path):
    """Devices that publish their state keyed by device name (``--entity-from-key``), through a real broker: each
    channel key of a message is one reading of the key's entity, a message without a key or with a key that is
    not text is quarantined with its reason, and every message comes out once."""
    kafka_broker.create_topic("readings-wide-keyed", partitions=2)
    n = 240  # 4 minutes of event time, a message a second
    messages = [(f"pump-{i % 3}".encode(), {"ts": T0 + i, "flow": 0.5 * i, "pressure": float(i)}) for i in range(n)]
    messages[50] = (None, messages[50][1])  # no key
    messages[51] = (b"\xff\xfe", messages[51][1])  # a key that is not UTF-8 text
    messages[52] = (b"pump-1", {"ts": T0 + 52})  # a key but no channel field
    delivered: dict = {}
    producer = kafka_broker.producer()
    for i, (key, record) in enumerate(messages):
        producer.produce("readings-wide-keyed", json.dumps(record).encode(), key=key, partition=i % 2,
                         on_delivery=lambda err, msg, i=i: delivered.setdefault((msg.partition(), msg.offset()), i))
        producer.poll(0)
    assert producer.flush(30) == 0 and len(delivered) == n

    mapping = InputMapping(format="wide", timestamp="ts", entity={"from_key": True})
    with beam.Pipeline(options=prism_options()) as p:
        read = p | "ReadKafka" >> KafkaReadings(kafka_broker.bootstrap_servers, "readings-wide-keyed", "run-wide",
                                                start="earliest", stop_at_end=True, mapping=mapping,
                                                align_to_window_s=WINDOW_S)
        _write_windows(read, tmp_path)

    readings, quarantine, records_in = _read_back(tmp_path)
    index = pd.Series([delivered[(int(s.rsplit("/", 1)[1]), o)] for s, o in zip(readings["source"],
                                                                                  readings["line"])])
    assert sorted(index.unique()) == [i for i in range(n) if i not in (50, 51, 52)]
    assert (readings["entity_id"].astype(str).to_numpy() == [f"pump-{i % 3}" for i in index]).all()
    flow = readings["channel"].astype(str).to_numpy() == "flow"
    assert flow.sum() == (~flow).sum() == n - 3 and set(readings["channel"].astype(str)) == {"flow", "pressure"}
    assert (readings["value"].to_numpy()[flow] == 0.5 * index[flow].to_numpy()).all()
    assert (readings["timestamp"].to_numpy() == ((T0 + index) * 10**6).to_numpy()).all()
    assert sorted((delivered[(int(q["source"].rsplit("/", 1)[1]), q["line"])], q["reason"]) for q in quarantine) == [
        (50, "the message has no key, and the mapping takes the entity from the message key"),
        (51, "the message key is not UTF-8 text, and the mapping takes the entity from the key"),
        (52, "the message has no channel fields besides ['ts']")]
    # Counted in: a reading per channel key of a good message, a record per quarantined message.
    assert records_in == len(readings) + sum(q["records"] for q in quarantine) == 2 * (n - 3) + 3


@pytest.mark.slow
def test_kafka_windows_fire_while_the_job_runs(kafka_broker, prism_options, tmp_path):
    """The first window's file appears while the job still runs, before the second wave is even published."""
    kafka_broker.create_topic("readings-live", partitions=1)
    first_wave = range(0, 1200)  # windows 0 and 1: the watermark passes window 0's end within the wave
    second_wave = range(1200, 2400)  # windows 2 and 3
    p = beam.Pipeline(options=prism_options())
    read = p | "ReadKafka" >> KafkaReadings(kafka_broker.bootstrap_servers, "readings-live", "run-live",
                                            start="earliest", stop_after_idle_s=8, align_to_window_s=WINDOW_S)
    _write_windows(read, tmp_path)
    result = p.run()
    try:
        delivered = _publish_kafka(kafka_broker, "readings-live", first_wave, partitions=1)
        first_window = tmp_path / "readings" / f"{T0 * 10**6}-0.parquet"
        deadline = time.monotonic() + 90
        while not first_window.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first_window.exists(), "window 0 was not written within 90 s of publishing it"
        assert str(result.state) not in ("DONE", "FAILED", "CANCELLED")
        assert not (tmp_path / "readings" / f"{(T0 + 2 * WINDOW_S) * 10**6}-0.parquet").exists()
        second_published_at = time.time()
        delivered.update(_publish_kafka(kafka_broker, "readings-live", second_wave, partitions=1))
        result.wait_until_finish(duration=120_000)
    finally:
        if str(result.state) not in ("DONE", "FAILED", "CANCELLED"):
            result.cancel()
    assert str(result.state) == "DONE"
    assert first_window.stat().st_mtime < second_published_at
    readings, quarantine, records_in = _read_back(tmp_path)
    _check_reconciles(readings, quarantine, records_in, set(delivered), 2400)


class _NoteBatch(beam.DoFn):
    """Appends each batch's number of readings to a file (the SDK worker runs in the test's process: LOOPBACK)."""

    def __init__(self, path: str):
        self.path = path

    def process(self, batch):
        with open(self.path, "a") as notes:
            notes.write(f"{len(batch)}\n")


def _batches_of_a_trickle(kafka_broker, prism_options, tmp_path, topic: str,
                          max_bundle_s: float) -> tuple[list[int], float]:
    """The batches (readings in each) a Kafka read with ``max_bundle_s`` makes of 40 messages published one every
    0.05 s or so, once the reader has passed on a first message of its own (it polls already); and the seconds the
    publishing took (longer on a busy machine)."""
    kafka_broker.create_topic(topic, partitions=1)
    notes = tmp_path / f"{topic}.txt"
    p = beam.Pipeline(options=prism_options())
    read = p | "ReadKafka" >> KafkaReadings(kafka_broker.bootstrap_servers, topic, "run-trickle", start="earliest",
                                            stop_after_idle_s=3, max_bundle_s=max_bundle_s)
    read.readings | beam.ParDo(_NoteBatch(str(notes)))
    result = p.run()
    try:
        _publish_kafka(kafka_broker, topic, [0], partitions=1)
        deadline = time.monotonic() + 90
        while not notes.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert notes.exists(), "the reader passed nothing on within 90 s"
        producer, began = kafka_broker.producer(), time.monotonic()
        for i in range(1, 41):
            producer.produce(topic, _message(i), key=f"pump-{i % 4}".encode(), partition=0)
            producer.flush(5)
            time.sleep(0.05)
        took = time.monotonic() - began
        result.wait_until_finish(duration=120_000)
    finally:
        if str(result.state) not in ("DONE", "FAILED", "CANCELLED"):
            result.cancel()
    assert str(result.state) == "DONE"
    sizes = [int(line) for line in notes.read_text().split()]
    assert sizes[0] == 1 and sum(sizes) == 40, sizes  # message 13 is one of _message's broken ones, quarantined
    return sizes[1:], took


@pytest.mark.slow
def test_a_longer_kafka_batch_takes_a_trickle_of_messages_in_fewer_batches(kafka_broker, prism_options, tmp_path):
    """``max_bundle_s`` (``seqwatch stream --batch-seconds``): the reader gathers messages that long before it
    passes them on. A stream's CPU goes mostly to Beam's fixed cost per batch at each step (100 pumps fed live:
    0.31-0.39 + 0.20-0.21 cores of seqwatch and Prism at 0.5 s, 0.19 + 0.13 at 2 s), so a trickle is cheaper in fewer
    batches: 40 messages over 2 s come in 3 or fewer at 1.5 s (a batch per 1.5 s the publishing took, and one more),
    and in 10 or more at 0.1 s."""
    import math

    long, took = _batches_of_a_trickle(kafka_broker, prism_options, tmp_path, "trickle-long", 1.5)
    short, _ = _batches_of_a_trickle(kafka_broker, prism_options, tmp_path, "trickle-short", 0.1)
    assert len(long) <= math.ceil(took / 1.5) + 1 and len(short) >= 10, (long, took, short)


def _polls_of_a_trickle(reader, element, publish, n: int = 20, gap_s: float = 0.15):
    """The sizes of the polls (``_receive``: a batch each) of ``reader`` that took messages of a trickle of ``n``
    published one every ``gap_s`` or so in another thread (``publish(i)``), polled until all came (at most 60 s);
    the seconds the publishing took (longer on a busy machine); and how long each poll lasted."""
    took = []

    def trickle():
        began = time.monotonic()
        for i in range(n):
            publish(i)
            time.sleep(gap_s)
        took.append(time.monotonic() - began)

    publishing = threading.Thread(target=trickle)
    sizes, lasted, deadline = [], [], time.monotonic() + 60
    publishing.start()
    try:
        while sum(sizes) < n and time.monotonic() < deadline:
            began = time.monotonic()
            received = reader._receive(element)
            lasted.append(time.monotonic() - began)
            if received:
                sizes.append(len(received))
    finally:
        publishing.join(60)
    assert sum(sizes) == n, sizes
    return sizes, took[0], lasted


def _check_filled_polls(filled: tuple, plain: tuple, batch_s: float) -> None:
    """A reader that fills its batches (``fill_batch``, the default; ``seqwatch stream --batch-seconds`` sets
    their time) waits out each poll's time and takes the trickle in a batch per ``batch_s`` the publishing took, and
    one more; with ``fill_batch=False`` a poll ends when nothing more is waiting, and the same trickle comes in a
    batch or so a message."""
    import math

    (sizes, took, lasted), (plain_sizes, _, _) = filled, plain
    assert len(sizes) <= math.ceil(took / batch_s) + 1, (sizes, took)
    assert min(lasted) >= batch_s - 0.02, lasted
    assert len(plain_sizes) >= 10, plain_sizes


def test_a_pubsub_read_fills_its_batches_and_takes_a_trickle_in_fewer(pubsub_emulator):
    """``PubSubReadings`` fills its batches (``fill_batch``; ``--batch-seconds`` on ``--source pubsub`` sets their
    time): a reader that ended each batch when a pull found nothing, as it did before 2026-12-05, took a live
    trickle in a batch or so a message, each paying Beam's fixed cost at every step of the stream (100 pumps
    publishing at their own phases: 0.69-0.85 cores of seqwatch and Prism, against 0.27 in batches of 0.5 s)."""
    from seqwatch.pipelines import broker_sources

    topic, subscription = pubsub_emulator.create_subscription("readings-trickle")
    publisher, _ = pubsub_emulator.clients()
    polls = {}
    for fill in (True, False):
        reader = broker_sources._PullPubSub(MessageParser("run-trickle"), pubsub_emulator.host, 100, 1.5, 0.2, 0,
                                            None, None, fill)
        reader.setup()
        try:
            polls[fill] = _polls_of_a_trickle(reader, (subscription, 0),
                                              lambda i: publisher.publish(topic, _message(i)).result(timeout=30))
        finally:
            reader.teardown()
    _check_filled_polls(polls[True], polls[False], 1.5)


def test_an_mqtt_read_fills_its_batches_and_takes_a_trickle_in_fewer(mqtt_broker):
    """``MqttReadings`` fills its batches, as Pub/Sub's reader above (100 pumps: 0.52-0.53 cores of seqwatch and
    Prism before, 0.30 in batches of 0.5 s)."""
    import paho.mqtt.client as mqtt

    from seqwatch.pipelines import broker_sources

    host, port = mqtt_broker.rsplit(":", 1)
    topic = "trickle/readings"
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="trickle-publisher")
    publisher.connect(host, int(port))
    publisher.loop_start()
    polls, sessions = {}, []
    try:
        for fill in (True, False):
            client_id = f"seqwatch-trickle-{fill}"
            MqttReadings(mqtt_broker, topic, "run-trickle", client_id=client_id).open_session()
            reader = broker_sources._SubscribeMqtt(MessageParser("run-trickle"), host, int(port), 1, client_id,
                                                   100, 1.5, 0.2, 0, None, None, fill)
            reader.setup()
            sessions.append((host, int(port), client_id, topic, 1))
            polls[fill] = _polls_of_a_trickle(
                reader, (topic, 0), lambda i: publisher.publish(topic, _message(i), qos=1).wait_for_publish(10))
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        for key in sessions:  # this process's connections of the readers' sessions
            client, _ = broker_sources._MQTT_SESSIONS.pop(key, (None, None))
            if client is not None:
                client.loop_stop()
                client.disconnect()
    _check_filled_polls(polls[True], polls[False], 1.5)


def test_a_poll_waits_for_a_quiet_sources_first_message_up_to_its_quiet_time():
    """``_quiet_wait_s``, worked by hand: a poll that has received nothing waits on for a first message up to
    ``QUIET_POLL_S`` (5 s), less where the source will sooner have been idle for --stop-after-idle or
    --idle-watermark (what a poll's end acts on), never less than the batch time."""
    from seqwatch.pipelines.broker_sources import QUIET_POLL_S, _due_in, _quiet_wait_s

    assert QUIET_POLL_S == 5.0
    assert _quiet_wait_s(0.5) == 5.0
    assert _quiet_wait_s(0.5, _due_in(30.0, 28.0), None) == 2.0  # idle 28 s of --stop-after-idle 30
    assert _quiet_wait_s(0.5, _due_in(30.0, 1.0), _due_in(2.0, 1.5)) == 0.5  # the idle watermark in 0.5 s
    assert _quiet_wait_s(0.5, _due_in(8.0, 7.9)) == 0.5  # never less than the batch time
    assert _quiet_wait_s(0.5, _due_in(2.0, 9.0)) == 5.0  # idle past it already: the watermark follows every 5 s
    assert _quiet_wait_s(8.0, _due_in(30.0, 0.0)) == 8.0  # --batch-seconds 8: a poll is as long as its batch


def _quiet_polls(reader, element, publish, stop_path: Path) -> None:
    """A quiet poll of ``reader`` (batch time 0.3 s) waits for a first message until the time it is given, not for
    its batch time; a message published a second into such a poll ends it a batch time later, with that message;
    a stop request ends the wait (``_waits_on``). Bounds only: a loaded machine makes each poll longer."""
    began = time.monotonic()
    assert reader._receive(element, began + 2.0) == []
    assert time.monotonic() - began >= 2.0  # a bundle where its batch time would have made 7
    timer = threading.Timer(1.0, publish)
    timer.start()
    began = time.monotonic()
    try:
        assert len(reader._receive(element, began + 30.0)) == 1
        assert time.monotonic() - began < 20.0  # not the whole 30 s
    finally:
        timer.join()
    reader.stop_request = StopRequest(str(stop_path))
    stop_path.write_text("test\n")
    began = time.monotonic()
    assert reader._receive(element, began + 30.0) == []
    assert time.monotonic() - began < 20.0


def test_a_quiet_pubsub_poll_waits_on_in_one_bundle_and_a_message_or_a_stop_ends_it(pubsub_emulator, tmp_path):
    """A quiet stream on Prism spent 0.07-0.09 cores of Prism's CPU on bundles of 0.5 s that took nothing (BENCHMARKS.md,
    "A quiet stream's CPU"); a poll that has received nothing now waits on in its bundle."""
    from seqwatch.pipelines import broker_sources

    topic, subscription = pubsub_emulator.create_subscription("readings-quiet")
    publisher, _ = pubsub_emulator.clients()
    reader = broker_sources._PullPubSub(MessageParser("run-quiet"), pubsub_emulator.host, 100, 0.3, 0.1, 0, None,
                                        None)
    reader.setup()
    try:
        _quiet_polls(reader, (subscription, 0), lambda: publisher.publish(topic, _message(1)).result(timeout=30),
                     tmp_path / STOP_FILE)
    finally:
        reader.teardown()


def test_a_quiet_kafka_poll_waits_on_in_one_bundle_and_a_message_or_a_stop_ends_it(kafka_broker, tmp_path,
                                                                                   monkeypatch):
    """Kafka's reader, called as the SDK worker calls it (``process`` with Beam's tracker, estimator and finalizer):
    a call that finds nothing lasts the quiet wait and goes on; a message published a second into a call ends it
    with that message; a stop request ends a call's wait and the read. ``QUIET_POLL_S`` is set per step (2 s, then
    30 s, so that a call that waited it out is told from one a message or a stop ended). Bounds only."""
    from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
    from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker
    from apache_beam.transforms.core import _BundleFinalizerParam

    from seqwatch.pipelines import broker_sources

    kafka_broker.create_topic("quiet-kafka")
    offsets = broker_sources._KafkaOffsets(kafka_broker.bootstrap_servers, "quiet-test", {}, "earliest", False)
    reader = broker_sources._ReadKafkaPartitions(kafka_broker.bootstrap_servers, "quiet-test", {}, offsets,
                                                 MessageParser("run-quiet-kafka"), 100, 0.3, 0.1, 0, None, None)
    restriction = PartitionOffsets((0,), (0,), (broker_sources._ENDLESS,))

    def call():
        """One call of ``process``: how long it took, the readings it emitted, and whether the read goes on."""
        nonlocal restriction
        tracker = ThreadsafeRestrictionTracker(offsets.create_tracker(restriction))
        finalizer = _BundleFinalizerParam()
        began = time.monotonic()
        emitted = list(reader.process(("quiet-kafka", (0,)), tracker=RestrictionTrackerView(tracker),
                                      estimator=ManualWatermarkEstimator(None)))
        took = time.monotonic() - began
        finalizer.finalize_bundle()
        residual = tracker.deferred_status()
        if residual is not None:
            restriction = residual[0]
        return took, sum(len(t.value) for t in emitted if isinstance(t, beam.window.TimestampedValue)), \
            residual is not None

    reader.setup()
    try:
        monkeypatch.setattr(broker_sources, "QUIET_POLL_S", 2.0)
        took, readings, goes_on = call()
        assert took >= 2.0 and readings == 0 and goes_on  # one bundle where its batch time would have made 7
        monkeypatch.setattr(broker_sources, "QUIET_POLL_S", 30.0)
        producer = kafka_broker.producer()
        timer = threading.Timer(1.0, lambda: (producer.produce("quiet-kafka", _message(1)), producer.flush(10)))
        timer.start()
        try:
            took, readings, goes_on = call()
        finally:
            timer.join()
        assert readings == 1 and goes_on and took < 20.0
        reader.stop_request = StopRequest(str(tmp_path / STOP_FILE))
        (tmp_path / STOP_FILE).write_text("test\n")
        took, readings, goes_on = call()
        assert readings == 0 and not goes_on and took < 20.0  # the read ends, as on a graceful stop
    finally:
        reader.teardown()


def test_a_quiet_mqtt_poll_waits_on_in_one_bundle_and_a_message_or_a_stop_ends_it(mqtt_broker, tmp_path):
    import paho.mqtt.client as mqtt

    from seqwatch.pipelines import broker_sources

    host, port = mqtt_broker.rsplit(":", 1)
    topic, client_id = "quiet/readings", "seqwatch-quiet"
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="quiet-publisher")
    publisher.connect(host, int(port))
    publisher.loop_start()
    try:
        MqttReadings(mqtt_broker, topic, "run-quiet", client_id=client_id).open_session()
        reader = broker_sources._SubscribeMqtt(MessageParser("run-quiet"), host, int(port), 1, client_id, 100, 0.3,
                                               0.1, 0, None, None)
        reader.setup()
        _quiet_polls(reader, (topic, 0), lambda: publisher.publish(topic, _message(1), qos=1).wait_for_publish(10),
                     tmp_path / STOP_FILE)
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        client, _ = broker_sources._MQTT_SESSIONS.pop((host, int(port), client_id, topic, 1), (None, None))
        if client is not None:
            client.loop_stop()
            client.disconnect()


# ---------------------------------------------------------------------------------------------------------
# Pub/Sub

def _unacknowledged(subscriber, subscription: str) -> int:
    """How many messages (up to 10) the subscription still delivers: those left unacknowledged."""
    from google.api_core import exceptions

    try:
        return len(subscriber.pull(request={"subscription": subscription, "max_messages": 10}, timeout=3,
                                   retry=None).received_messages)
    except exceptions.DeadlineExceeded:
        return 0


@pytest.mark.slow
def test_pubsub_readings_reconcile_and_are_acknowledged(pubsub_emulator, prism_options, tmp_path):
    n = 2000
    topic, subscription = pubsub_emulator.create_subscription("readings-bulk")
    publisher, subscriber = pubsub_emulator.clients()
    futures = {i: publisher.publish(topic, _message(i)) for i in range(n)}
    delivered = {(f"pubsub:{subscription}", int(f.result(timeout=60))): i for i, f in futures.items()}
    assert len(delivered) == n

    started = time.monotonic()
    with beam.Pipeline(options=prism_options()) as p:
        # Pub/Sub does not keep order: the watermark trails the latest event time by 30 minutes here, more than
        # this publisher's batches reorder readings.
        read = p | "ReadPubSub" >> PubSubReadings(subscription, "run-pubsub", emulator_host=pubsub_emulator.host,
                                                  stop_after_idle_s=4, align_to_window_s=WINDOW_S,
                                                  max_out_of_orderness_s=1800)
        _write_windows(read, tmp_path)
    elapsed = time.monotonic() - started

    readings, quarantine, records_in = _read_back(tmp_path)
    _check_reconciles(readings, quarantine, records_in, set(delivered), n)
    index = pd.Series([delivered[(s, o)] for s, o in zip(readings["source"], readings["line"])])
    assert (readings["timestamp"].to_numpy() == ((T0 + index) * 10**6).to_numpy()).all()
    assert _unacknowledged(subscriber, subscription) == 0, "messages were left unacknowledged"
    print(f"pubsub: emulator started in {pubsub_emulator.started_s:.1f} s; {n} messages read in {elapsed:.1f} s")


# ---------------------------------------------------------------------------------------------------------
# Replay

@pytest.mark.slow
def test_replay_plays_a_file_on_the_wall_clock(prism_options, tmp_path):
    n = 1800  # 30 minutes of readings at 600x: 3 s of wall clock, a 5-minute window every 0.5 s
    lines = ["entity_id,channel,timestamp,value"]
    for i in range(n):
        lines.append(f"pump-{i % 3},flow,{T0 + i},{0.5 * i}" if i % 700 != 5 else f"pump-1,flow,not-a-time,{i}")
    path = tmp_path / "replay.csv"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"

    started = time.monotonic()
    with beam.Pipeline(options=prism_options()) as p:
        read = p | "Replay" >> ReplayFile([str(path)], InputMapping(format="long"), "run-replay", speed=600,
                                          align_to_window_s=300)
        _write_windows(read, out, window_s=300)
    elapsed = time.monotonic() - started

    readings, quarantine, records_in = _read_back(out)
    assert len(readings) == n - 3 and records_in == n  # rows 5, 705 and 1405 have no valid time
    assert [(q["line"], q["reason_code"]) for q in quarantine] == [(7, "parse_timestamp"), (707, "parse_timestamp"),
                                                                  (1407, "parse_timestamp")]
    assert sorted(readings["line"]) == [i + 2 for i in range(n) if i % 700 != 5]
    written = sorted(p.stat().st_mtime for p in (out / "readings").glob("*.parquet"))
    assert len(written) == 6
    assert written[-1] - written[0] > 1.5, f"windows were written within {written[-1] - written[0]:.2f} s"
    assert elapsed > 3.0


def test_a_replay_plays_a_long_pause_in_its_longest_wait(tmp_path):
    """One reading with a timestamp 70 years off (and one 20 years early) held a replay back for hours, at any
    speed, for readings that validation quarantines anyway: a pause is played in at most ``max_wait_s``."""
    year = 365 * 86_400
    path = tmp_path / "replay.csv"
    path.write_text("entity_id,channel,timestamp,value\n" + "".join(
        f"pump-1,flow,{T0 + s},{i}\n" for i, s in enumerate((1, -20 * year, 0, 70 * year))))
    p = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", "--streaming"]))
    read = p | "Replay" >> ReplayFile([str(path)], InputMapping(format="long"), "run-pause", speed=10,
                                      max_wait_s=0.5)
    times = read.readings | beam.FlatMap(lambda batch: (batch.frame["timestamp"] // 10**6 - T0).tolist())
    assert_that(times, equal_to([-20 * year, 0, 1, 70 * year]))
    started = time.monotonic()
    p.run().wait_until_finish()
    assert time.monotonic() - started < 60  # in full, the pauses take 2 and 7 years at 10x
    with pytest.raises(ValueError, match="max_wait_s must be a number of seconds > 0 or None, got 0"):
        ReplayFile([str(path)], InputMapping(format="long"), "run-pause", max_wait_s=0)


def test_a_replay_waits_for_its_next_reading_itself_on_the_direct_runner(tmp_path):
    """The DirectRunner, where it cannot hand a stream to Prism, runs it on its batch runner, which re-runs a
    deferred remainder at once whatever its delay. A replay waiting there for its next reading's time spun through
    hundreds of checkpoints a second (a replay at 5x: 70% of a core, its memory growing by 1 GB a minute); it now
    waits itself, about one checkpoint per second of waiting."""
    from apache_beam.metrics.metric import MetricsFilter

    path = tmp_path / "replay.csv"
    path.write_text("entity_id,channel,timestamp,value\n" + "".join(
        f"pump-1,flow,{T0 + s},{s}\n" for s in (0, 1, 4)))  # at 1x: 4 s of wall clock, mostly waiting
    p = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", "--streaming"]))
    read = p | "Replay" >> ReplayFile([str(path)], InputMapping(format="long"), "run-wait", speed=1)
    values = read.readings | beam.FlatMap(lambda batch: batch.frame["value"].tolist())
    assert_that(values, equal_to([0.0, 1.0, 4.0]))
    started = time.monotonic()
    result = p.run()
    result.wait_until_finish()
    assert time.monotonic() - started > 3.5  # paced: the last reading is due 4 s after the first
    counters = result.metrics().query(MetricsFilter().with_namespace("seqwatch.replay").with_name("checkpoints"))
    checkpoints = sum(c.committed or c.attempted for c in counters["counters"])
    assert 2 <= checkpoints <= 12, checkpoints


def test_a_wide_message_can_take_its_entity_from_a_level_of_its_mqtt_topic():
    parser = MessageParser("run-1", InputMapping(format="wide", timestamp="ts", entity={"from_topic": 1}))
    payloads = [json.dumps({"ts": T0, "flow": 1.5}).encode()] * 4
    parsed = parser.parse("mqtt:plant/+/state", [1, 2, 3, 4], payloads,
                          ["plant/pump-01/state", "plant/pump-02/state", "plant", "plant//state"])
    frame = parsed.batches[0][0].frame.astype({"entity_id": str})
    assert frame[["entity_id", "line"]].values.tolist() == [["pump-01", 1], ["pump-02", 2]]
    assert [(q.line, q.reason_code, q.reason) for q in parsed.quarantine] == [
        (3, "malformed_row", "the topic 'plant' has no level 1 to take the entity from"),
        (4, "malformed_row", "the topic 'plant//state' has no level 1 to take the entity from")]
    without = parser.parse("kafka:t/0", [5], payloads[:1])
    assert [q.reason for q in without.quarantine] == [
        "the message came without a topic, and the mapping takes the entity from a topic level"]


def test_a_json_boolean_value_is_1_or_0_as_a_boolean_parquet_column_is_and_the_text_true_is_not_a_number():
    wide = MessageParser("run-1", InputMapping(format="wide", entity={"value": "pump-01"}))
    parsed = wide.parse("mqtt:p/+/s", [1, 2], [json.dumps({"timestamp": T0, "relay": True, "valve": False}).encode(),
                                               json.dumps({"timestamp": T0 + 1, "relay": "true"}).encode()])
    frame = parsed.batches[0][0].frame.astype({"channel": str})
    assert frame[["channel", "value", "line"]].values.tolist() == [["relay", 1.0, 1], ["valve", 0.0, 1]]
    assert [q.reason for q in parsed.quarantine] == ["column 'relay': the value 'true' is not a number"]
    long = MessageParser("run-1").parse("kafka:t/0", [3, 4], [
        json.dumps({"entity_id": "pump-01", "channel": "relay", "timestamp": T0, "value": False}).encode(),
        json.dumps({"entity_id": "pump-01", "channel": "relay", "timestamp": True, "value": 1}).encode()])
    assert long.batches[0][0].frame[["value", "line"]].values.tolist() == [[0.0, 3]]
    assert [q.reason_code for q in long.quarantine] == ["parse_timestamp"]  # only a value reads a boolean as 1/0


def test_a_wide_message_can_take_its_entity_from_its_kafka_key():
    parser = MessageParser("run-1", InputMapping(format="wide", timestamp="ts", entity={"from_key": True}))
    payloads = [json.dumps({"ts": T0, "flow": 1.5}).encode()] * 4
    parsed = parser.parse("kafka:t/0", [1, 2, 3, 4], payloads, keys=[b"pump-01", "pump-02", None, b"\xff\xfe"])
    frame = parsed.batches[0][0].frame.astype({"entity_id": str})
    assert frame[["entity_id", "line"]].values.tolist() == [["pump-01", 1], ["pump-02", 2]]
    assert [(q.line, q.reason) for q in parsed.quarantine] == [
        (3, "the message has no key, and the mapping takes the entity from the message key"),
        (4, "the message key is not UTF-8 text, and the mapping takes the entity from the key")]
    with pytest.raises(ValueError, match=r"or \{'from_key': true\} \(the Kafka message key\)"):
        InputMapping(format="wide", entity={"from_key": "yes"})


def test_a_pubsub_message_over_4_mb_is_read_and_the_subscription_is_checked_before_the_job(
        pubsub_emulator, prism_options, tmp_path):
    """Bug hunt of Pub/Sub and MQTT streams: the client's own channel to the emulator kept gRPC's 4 MB limit on a
    response, so one message of 5 MB (Pub/Sub takes 10 MB) failed the job with ResourceExhausted, and every restart
    once the message came back. And a subscription that does not exist, or an emulator that does not answer,
    failed the job with some 450 lines of traceback; each is now one sentence before the job."""
    n = 300
    topic, subscription = pubsub_emulator.create_subscription("readings-large")
    publisher, _ = pubsub_emulator.clients()
    big = json.dumps({"entity_id": "pump-0", "channel": "flow", "timestamp": T0 + n, "value": 1.0,
                      "note": "x" * 5_000_000}).encode()
    futures = [publisher.publish(topic, _message(i)) for i in range(n)] + [publisher.publish(topic, big)]
    assert all(f.result(timeout=60) for f in futures)
    source = PubSubReadings(subscription, "run-large", emulator_host=pubsub_emulator.host, stop_after_idle_s=4,
                            align_to_window_s=WINDOW_S, max_out_of_orderness_s=1800)
    source.check_subscription()
    with beam.Pipeline(options=prism_options()) as p:
        _write_windows(p | "ReadPubSub" >> source, tmp_path)
    readings, quarantine, records_in = _read_back(tmp_path)
    assert records_in == n + 1 == len(readings) + sum(q["records"] for q in quarantine)
    assert (readings["timestamp"] == (T0 + n) * 10**6).sum() == 1  # the large one, read whole

    missing = f"projects/{pubsub_emulator.project}/subscriptions/nowhere"
    with pytest.raises(LookupError, match=f"^the Pub/Sub subscription {missing} does not exist on the Pub/Sub "
                                          f"emulator at {pubsub_emulator.host}$"):
        PubSubReadings(missing, "run", emulator_host=pubsub_emulator.host).check_subscription()
    with pytest.raises(ConnectionError, match="^the Pub/Sub emulator at 127.0.0.1:9 did not answer for the "
                                              "subscription"):
        PubSubReadings(subscription, "run", emulator_host="127.0.0.1:9").check_subscription(timeout_s=2)


def test_a_pull_the_emulator_does_not_answer_holds_the_idle_time_until_the_ack_deadline(pubsub_emulator,
                                                                                       monkeypatch, caplog):
    """A pull cut by its deadline may have been handed messages that the reader never got; the service gives them
    again only after the subscription's ack deadline, and the reader had counted that time as idle and ended
    without them (CI, 2026-12-03: 4700 of 4800 readings). Pulls are now answered at once, so only a service that
    does not answer cuts one; the first answer after it holds --stop-after-idle until the ack deadline has passed."""
    from seqwatch.pipelines import broker_sources

    publisher, _ = pubsub_emulator.clients()
    monkeypatch.setattr(broker_sources, "_PULL_TIMEOUT_S", 1.0)
    parser = MessageParser("run-unanswered", None)
    readers = {}
    for name, stop_after_idle_s in (("held", 4.0), ("endless", None)):
        topic, subscription = pubsub_emulator.create_subscription(f"readings-unanswered-{name}", ack_deadline_s=10)
        assert all(f.result(timeout=60) for f in [publisher.publish(topic, _message(i)) for i in range(30)])
        reader = broker_sources._PullPubSub(parser, pubsub_emulator.host, 100, 0.5, 0.2, 0, None, stop_after_idle_s)
        reader.setup()
        readers[name] = (reader, subscription, reader._hold((subscription, 0)))
    (held, held_sub, held_hold), (endless, endless_sub, endless_hold) = readers["held"], readers["endless"]
    try:
        started = time.monotonic()
        assert len(held._pull(held_sub, 10)) == 10  # answered at once, though a message is due or not
        assert held_hold.idle_from == float("-inf")
        pubsub_emulator.freeze()
        try:
            assert held._pull(held_sub, 10) == [] and held_hold.unanswered
            assert endless._pull(endless_sub, 10) == [] and endless_hold.unanswered
        finally:
            pubsub_emulator.thaw()
        with caplog.at_level("WARNING", logger=broker_sources.__name__):
            while (held_hold.unanswered or endless_hold.unanswered) and time.monotonic() - started < 30:
                held._pull(held_sub, 10)
                endless._pull(endless_sub, 10)
        answered = time.monotonic()
        assert not held_hold.unanswered and not endless_hold.unanswered
        assert answered + 8 < held_hold.idle_from <= answered + 10  # the ack deadline, counted from the answer
        assert endless_hold.idle_from == float("-inf")  # an endless read has no idle time to hold
        # the watermark waits for them too, or they come back late (bug hunt of delivery semantics: 52 readings)
        for hold in (held_hold, endless_hold):
            assert answered + 8 < hold.watermark_until <= answered + 10
        said = [f"a pull from Pub/Sub for {subscription} (the emulator at {pubsub_emulator.host}) went unanswered; "
                f"messages it took come back after the subscription's ack deadline (10 s): the watermark waits for "
                f"them" for subscription in (held_sub, endless_sub)]
        assert sorted(r.getMessage() for r in caplog.records) == sorted(
            [said[0] + ", and --stop-after-idle counts from then", said[1]])
    finally:
        held.teardown()
        endless.teardown()


class _ReaderCall:
    """One call of a polling reader's ``process`` as the SDK worker makes it, with Beam's own restriction tracker
    view, watermark estimator and bundle finalizer: what it emitted, and whether it went on (a residual) or ended."""

    def __init__(self, reader, element, watermark=None):
        from apache_beam.io.restriction_trackers import OffsetRange
        from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
        from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker
        from apache_beam.transforms.core import _BundleFinalizerParam
        from seqwatch.pipelines import broker_sources

        self.threadsafe = ThreadsafeRestrictionTracker(reader.restrictions.create_tracker(
            OffsetRange(0, broker_sources._ENDLESS)))
        self.estimator = ManualWatermarkEstimator(watermark)
        self.finalizer = _BundleFinalizerParam()
        self.emitted = list(reader.process(element, self.finalizer, tracker=RestrictionTrackerView(self.threadsafe),
                                           estimator=self.estimator))
        self.finalizer.finalize_bundle()  # acknowledges what it read

    @property
    def went_on(self) -> bool:
        return self.threadsafe.deferred_status() is not None

    @property
    def readings(self) -> int:
        return sum(len(v.value) for v in self.emitted if isinstance(v, beam.window.TimestampedValue))


def test_a_reader_instance_used_again_does_not_take_a_live_read_for_idle(pubsub_emulator, monkeypatch):
    """A runner may run a reader's bundles on several instances of its DoFn. Each instance had its own clock of the
    element's last message, so an instance used again after another had read the element for longer than
    --stop-after-idle took the live read for idle, and ended it, at its first poll that found nothing waiting.
    The clock is now one per process and run: the read goes on. A poll that finds nothing lasts its batch time
    here (``QUIET_POLL_S`` as short): a quiet poll waits on until --stop-after-idle is due, and would end the read
    then whatever the clock."""
    from seqwatch.pipelines import broker_sources

    monkeypatch.setattr(broker_sources, "QUIET_POLL_S", 0.3)

    topic, subscription = pubsub_emulator.create_subscription("readings-instances-idle")
    publisher, _ = pubsub_emulator.clients()
    element = (subscription, 0)
    first, other = (broker_sources._PullPubSub(MessageParser("run-instances-idle"), pubsub_emulator.host, 100, 0.3,
                                               0.1, 0, None, 1.5) for _ in range(2))
    for reader in (first, other):
        reader.setup()
    try:
        i = 0

        def publish():
            nonlocal i
            assert publisher.publish(topic, _message(i)).result(timeout=60)
            i += 1

        publish()
        assert _ReaderCall(first, element).went_on
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # longer than --stop-after-idle: a message every 0.3 s or so
            publish()
            assert _ReaderCall(other, element).went_on
        call = _ReaderCall(first, element)  # nothing waits: a pause of the feed, not its end
        assert call.went_on and not call.emitted
    finally:
        for reader in (first, other):
            reader.teardown()


def test_a_pull_one_reader_instance_lost_holds_the_watermark_of_another(pubsub_emulator, monkeypatch, caplog):
    """The watermark hold after a pull the emulator did not answer was kept by the instance of the reader whose
    pull it was: the runner's next bundle, on another instance, moved the watermark past the messages that pull
    took, which then came back late (and the instance that held it, used again, would have held it for good). It
    is now one per process: whatever instance reads next holds the watermark until the ack deadline has passed,
    and the hold is said once."""
    from seqwatch.pipelines import broker_sources

    topic, subscription = pubsub_emulator.create_subscription("readings-instances-hold", ack_deadline_s=10)
    publisher, _ = pubsub_emulator.clients()
    monkeypatch.setattr(broker_sources, "_PULL_TIMEOUT_S", 1.0)
    element = (subscription, 0)
    lost, other = (broker_sources._PullPubSub(MessageParser("run-instances-hold"), pubsub_emulator.host, 100, 0.3,
                                              0.1, 0, None, None) for _ in range(2))
    for reader in (lost, other):
        reader.setup()
    try:
        pubsub_emulator.freeze()
        try:
            assert lost._pull(subscription, 10) == []  # not answered
        finally:
            pubsub_emulator.thaw()
        assert all(f.result(timeout=60) for f in [publisher.publish(topic, _message(i)) for i in range(1, 9, 2)])
        with caplog.at_level("WARNING", logger=broker_sources.__name__):
            read, deadline = 0, time.monotonic() + 30
            while read < 4 and time.monotonic() < deadline:
                call = _ReaderCall(other, element)
                read += call.readings
                assert call.estimator.current_watermark() is None  # held: what the lost pull took is older
            assert read == 4
            assert _ReaderCall(lost, element).estimator.current_watermark() is None
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and " went unanswered; " in said[0], said
    finally:
        for reader in (lost, other):
            reader.teardown()


def test_messages_without_numbers_of_their_own_are_numbered_once_per_process():
    """MQTT messages carry no number; a reading's and a quarantined record's ``line`` is the message's place in
    what the run read of its topic in this process. Each instance of the reader had counted from 1, so two messages of one
    run shared a line."""
    import paho.mqtt.client as mqtt

    from seqwatch.pipelines import broker_sources

    topic = "plant/numbered-once"
    readers = [broker_sources._SubscribeMqtt(MessageParser("run-numbered"), "127.0.0.1", 9, 1, "numbered", 100,
                                             0.5, 0.1, 0, None, None) for _ in range(2)]
    for reader in readers:
        reader.setup()  # no connection: a session is opened at the first poll
    lines = []
    for i, reader in enumerate(readers * 2):
        message = mqtt.MQTTMessage(mid=i, topic=topic.encode())
        message.payload = _message(i) if i != 2 else b"{not json"
        parsed = reader._parse((topic, 0), [message])
        lines += [int(n) for batch, _ in parsed.batches for n in batch.frame["line"]]
        lines += [q.line for q in parsed.quarantine]
    assert sorted(lines) == [1, 2, 3, 4]  # numbered from 1 in each run


def test_an_outage_is_said_once_by_the_readers_of_a_process(caplog):
    """A runner may run a reader's bundles on several instances of its DoFn, each with its own state: an MQTT
    stream said one outage twice, and that the broker answered again twice (CI, 2026-12-05). Two instances of a
    Pub/Sub reader of an emulator that is not there say it once, and once that it answers."""
    from seqwatch.pipelines import broker_sources

    element = ("projects/p/subscriptions/outage-said-once", 0)
    readers = [broker_sources._PullPubSub(MessageParser("run-outage"), "127.0.0.1:9", 100, 0.5, 0.2, 0, None, 30.0)
               for _ in range(2)]
    for reader in readers:
        reader.setup()
    try:
        with caplog.at_level("WARNING", logger=broker_sources.__name__):
            assert [reader._broker_down(element) for reader in readers] == [True, True]
            for reader in readers:
                reader._broker_back(element)
        said = [r.getMessage() for r in caplog.records]
        where = "Pub/Sub for projects/p/subscriptions/outage-said-once (the emulator at 127.0.0.1:9)"
        assert len(said) == 2 and said[0].startswith(f"cannot reach {where} (") and \
            said[1] == f"{where} answers again", said
    finally:
        for reader in readers:
            reader.teardown()


def test_an_outage_one_reader_instance_saw_is_ended_by_another(pubsub_emulator, caplog):
    """A Pub/Sub stream said that the emulator could not be reached, and never that it answered again: the messages
    came back to another instance of the reader, which had not seen the outage (CI, 2026-12-05). An instance takes
    an outage said by another of its process for its own: it says the answer, and starts its idle time again."""
    from seqwatch.pipelines import broker_sources

    _, subscription = pubsub_emulator.create_subscription("readings-outage-instances")
    element = (subscription, 0)
    seen, other = (broker_sources._PullPubSub(MessageParser("run-instances"), pubsub_emulator.host, 100, 0.5, 0.2,
                                              0, None, 30.0) for _ in range(2))
    for reader in (seen, other):
        reader.setup()
    try:
        with caplog.at_level("WARNING", logger=broker_sources.__name__):
            pubsub_emulator.freeze()
            try:
                assert seen._broker_down(element)  # the probe is not answered within 2 s
            finally:
                pubsub_emulator.thaw()
            clock = broker_sources._read_clock("run-instances", element, lambda: broker_sources._EventTimeClock(0, None))
            before = clock.last_message_at
            assert other._broker_down(element)  # answered: the outage another instance said is over
            assert clock.last_message_at > before  # its idle time starts again
            other._probed_at = 0.0
            assert not other._broker_down(element)
        said = [r.getMessage() for r in caplog.records]
        where = f"Pub/Sub for {subscription} (the emulator at {pubsub_emulator.host})"
        assert len(said) == 2 and said[0].startswith(f"cannot reach {where} (") and \
            said[1] == f"{where} answers again", said
    finally:
        for reader in (seen, other):
            reader.teardown()


def test_a_kafka_commit_that_fails_is_said(kafka_broker, caplog):
    """Bug hunt of delivery semantics: the reader commits its group's offsets asynchronously when a bundle is
    finalized, and a commit that failed was not said; a stream started again then reread those messages. Here
    the broker refuses a commit for a partition the topic does not have. It is said once per process, whatever
    instance of the reader (each with a consumer of its own) commits: each had said it once."""
    from seqwatch.pipelines import broker_sources

    kafka_broker.create_topic("pumps-commit", partitions=1)
    readers = [broker_sources._ReadKafkaPartitions(kafka_broker.bootstrap_servers, "commit-test", {}, None,
                                                   MessageParser("run-commit"), 100, 0.5, 0.2, 0, None, None)
               for _ in range(2)]
    for reader in readers:
        reader.setup()
    try:
        with caplog.at_level("WARNING", logger=broker_sources.__name__):
            for reader in readers:
                consumer, _ = reader._consumer("pumps-commit", PartitionOffsets((0,), (0,), (10,)), [0])
                broker_sources._KafkaCommit(consumer, "pumps-commit", {7: 10}).run()
                said, deadline = len(caplog.records), time.monotonic() + (30 if reader is readers[0] else 5)
                while len(caplog.records) == said and time.monotonic() < deadline:
                    consumer.consume(num_messages=1, timeout=0.5)  # serves librdkafka's callbacks
        [record] = caplog.records
        assert record.getMessage().startswith("the offsets this stream read up to could not be committed to the "
                                              "Kafka consumer group (")
        assert record.getMessage().endswith("): a stream started again reads those messages again")
    finally:
        for reader in readers:
            reader.teardown()


def test_a_message_pubsub_delivers_again_is_quarantined_as_a_duplicate(pubsub_emulator):
    """Bug hunt of delivery semantics: copies Pub/Sub delivered again (acknowledgements late or failed while the
    emulator was frozen) were scored again, or quarantined as late once their panes had been scored. The reader
    knows the ids of the messages whose bundles were finalized: a copy of one is quarantined as ``duplicate``,
    standing for the readings it holds. (Here the test hands the messages back at once, with an ack deadline of
    0.)"""
    from seqwatch.pipelines import broker_sources

    topic, subscription = pubsub_emulator.create_subscription("readings-again")
    publisher, subscriber = pubsub_emulator.clients()
    payloads = [_message(1), b"not json", _message(2)]
    assert all(f.result(timeout=60) for f in [publisher.publish(topic, m) for m in payloads])
    reader = broker_sources._PullPubSub(MessageParser("run-again"), pubsub_emulator.host, 100, 0.5, 0.2, 0, None,
                                        None)
    reader.setup()
    try:
        element = (subscription, 0)
        first = reader._receive(element)
        parsed = reader._parse(element, first)
        assert len(first) == 3 and sum(len(b) for b, _ in parsed.batches) == 2
        assert [q.reason_code for q in parsed.quarantine] == ["malformed_row"]

        def again():
            subscriber.modify_ack_deadline(request={"subscription": subscription, "ack_deadline_seconds": 0,
                                                    "ack_ids": [r.ack_id for r in first]})  # delivered again
            got, deadline = [], time.monotonic() + 30
            while len(got) < 3 and time.monotonic() < deadline:
                got += reader._receive(element)
            return got

        # a bundle that was not finalized (it failed): its messages are read anew when they come back
        first = again()
        assert reader._parse(element, first).quarantine == parsed.quarantine
        # the bundle finalized, its acknowledgement failed (here: sent for a subscription that is not there)
        ack = reader._acknowledgement(element, first).__self__
        ack.subscription = f"projects/{pubsub_emulator.project}/subscriptions/gone"
        ack.run()
        copies = reader._parse(element, again())
        assert sum(len(b) for b, _ in copies.batches) == 0
        assert sorted((q.reason_code, q.records, q.raw) for q in copies.quarantine) == sorted(
            ("duplicate", 1, m.decode()) for m in payloads)
        ids = {r.message.data.decode(): r.message.message_id for r in first}
        for q in copies.quarantine:
            assert q.reason == (f"Pub/Sub delivered message {ids[q.raw]} again (its acknowledgement came late or "
                                f"failed); it was read when it first came")
    finally:
        reader.teardown()


def test_acknowledgements_that_fail_are_said_not_swallowed(pubsub_emulator, caplog):
    """Bug hunt of delivery semantics: an acknowledgement that failed (the emulator frozen for 75 s) raised inside
    the bundle's finalization, where the SDK worker swallowed it; the redelivered copies then came without a word.
    Here Pub/Sub refuses the acknowledgement at once (the subscription does not exist)."""
    from seqwatch.pipelines import broker_sources

    _, subscriber = pubsub_emulator.clients()
    missing = f"projects/{pubsub_emulator.project}/subscriptions/gone"
    with caplog.at_level("WARNING", logger=broker_sources.__name__):
        broker_sources._PubSubAck(subscriber, missing, ["a", "b", "c"]).run()
    [record] = caplog.records
    assert record.getMessage().startswith(f"3 message(s) of {missing} could not be acknowledged (")
    assert record.getMessage().endswith("): Pub/Sub delivers them again after the ack deadline, and the stream "
                                        "reads them again")


@pytest.mark.slow
def test_a_pubsub_stream_waits_out_an_emulator_that_does_not_answer(pubsub_emulator, small_model_dir,
                                                                    prism_location, tmp_path, stream_outputs):
    """Bug hunt of Pub/Sub and MQTT streams: with the emulator not answering for longer than --stop-after-idle,
    the stream ended as if the subscription were quiet, without a word, and what was published afterwards was
    left for the next run. Now the outage is one line, the idle time does not count during it, and starts again
    when the emulator answers. (The emulator is frozen with SIGSTOP: each test worker process has an emulator of its own.)"""
    import subprocess
    import sys

    from seqwatch.models.synthetic import generate_sensor_data

    readings, _ = generate_sensor_data(n_entities=2, n_steps=600, seed=7, anomalies_per_entity=1)
    readings = readings.sort_values(["timestamp", "entity_id", "channel"]).reset_index(drop=True)
    readings["timestamp"] = readings["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    messages = [json.dumps({"entity_id": r.entity_id, "channel": r.channel, "timestamp": r.timestamp,
                            "value": round(float(r.value), 4)}).encode() for r in readings.itertuples(index=False)]
    topic, subscription = pubsub_emulator.create_subscription("readings-outage", ack_deadline_s=10)
    publisher, _ = pubsub_emulator.clients()

    def publish(part):
        assert all(f.result(timeout=60) for f in [publisher.publish(topic, m) for m in part])

    publish(messages[:len(messages) // 2])
    out, log_path = tmp_path / "out", tmp_path / "stream.log"
    with open(log_path, "w") as log:
        stream = subprocess.Popen([sys.executable, "-m", "seqwatch.pipelines.cli", "stream", "--source", "pubsub",
                                   "--subscription", subscription, "--emulator-host", pubsub_emulator.host,
                                   "--max-out-of-orderness", "1800", "--model-dir", str(small_model_dir),
                                   "--output", str(out), "--stop-after-idle", "20",
                                   f"--prism_location={prism_location}"], stdout=log, stderr=subprocess.STDOUT)
        frozen = False
        try:
            stream_outputs.wait_for_scores(stream, out, log_path)
            pubsub_emulator.freeze()
            frozen = True
            # longer than --stop-after-idle, which is as long as the MQTT outage test's: at 12 s, under the load of
            # `make test`, the stream once ended before it had read the half published after the outage (3095
            # of 4800 readings, 2026-12-03)
            time.sleep(28)
            assert stream.poll() is None, log_path.read_text()[-3000:]
            pubsub_emulator.thaw()
            frozen = False
            publish(messages[len(messages) // 2:])
            returncode = stream.wait(timeout=300)
        finally:
            if frozen:
                pubsub_emulator.thaw()
            if stream.poll() is None:
                stream.kill()
    text = log_path.read_text()
    assert returncode == 0, text[-3000:]
    # Prism's requests to finalize bundles with nothing to finalize had each printed a traceback here
    assert "Traceback" not in text and "finalizable" not in text, text[:3000]
    assert text.count("cannot reach Pub/Sub") == 1 and "answers again" in text, text[-3000:]
    # the pull the frozen emulator did not answer may have taken messages, given again only after the ack deadline:
    # the stream had ended as idle before then, with 4700 of the 4800 readings (CI, 2026-12-03)
    assert ("went unanswered; messages it took come back after the subscription's ack deadline (10 s): the "
            "watermark waits for them, and --stop-after-idle counts from then") in text, text
    counts = stream_outputs.counts(out)
    # every message read once, but for copies Pub/Sub delivered again (an acknowledgement the frozen emulator
    # took late), each quarantined as a duplicate; no reading came after its pane was scored
    copies = counts.get("quarantined.parse.duplicate", 0)
    assert f"records in {len(messages) + copies} = " in text, text[-3000:]
    assert counts.get("quarantined.window.late", 0) == 0, counts


# ---------------------------------------------------------------------------------------------------------
# A graceful stop (seqwatch.pipelines.stop_request): the readers end at the request, and what they read is written

class _Taken:
    """Readings and quarantined records the pipelines of this process have taken from their reader so far (Prism
    runs the SDK worker in the test's own process)."""

    count = 0
    lock = threading.Lock()

    @classmethod
    def add(cls, n: int) -> None:
        with cls.lock:
            cls.count += n


def _count_taken(read) -> None:
    _Taken.count = 0
    _ = read.readings | "CountReadings" >> beam.Map(lambda batch: _Taken.add(len(batch)))
    _ = read.quarantine | "CountQuarantined" >> beam.Map(lambda q: _Taken.add(q.records))


def _stop_once(path: str, taken: int | None = None, after_s: float | None = None, timeout_s: float = 120):
    """A thread that asks the readers to stop once ``taken`` records were taken, or ``after_s`` seconds from now
    (and after ``timeout_s`` in any case, so that a reader that never takes them does not hold the test for ever)."""
    def run():
        deadline = time.monotonic() + (after_s if after_s is not None else timeout_s)
        while (taken is None or _Taken.count < taken) and time.monotonic() < deadline:
            time.sleep(0.05)
        StopRequest(path).request("the test")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_replay_asked_to_stop_plays_no_more_and_counts_what_it_played(tmp_path):
    n = 60  # a minute of readings at 10x: 6 s of wall clock; asked to stop after 2
    path = tmp_path / "replay.csv"
    path.write_text("entity_id,channel,timestamp,value\n" + "".join(f"pump-1,flow,{T0 + i},{i}\n" for i in range(n)))
    stop_path = str(tmp_path / STOP_FILE)
    p = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", "--streaming"]))
    read = p | "Replay" >> ReplayFile([str(path)], InputMapping(format="long"), "run-stop", speed=10,
                                      stop=StopRequest(stop_path))
    _write_windows(read, tmp_path / "out")
    stopper = _stop_once(stop_path, after_s=2.0)
    started = time.monotonic()
    p.run().wait_until_finish()
    elapsed = time.monotonic() - started
    stopper.join()
    readings, quarantine, records_in = _read_back(tmp_path / "out")
    assert 5 <= len(readings) < n and elapsed < 5.5, (len(readings), elapsed)
    assert records_in == len(readings) and quarantine == []
    assert sorted(readings["line"]) == list(range(2, 2 + len(readings)))  # played in order up to the stop


def test_a_kafka_read_asked_to_stop_ends_and_commits_what_it_read(kafka_broker, prism_options, tmp_path):
    """A read without a stop condition of its own ends at the request; every message it took is written, and its
    group's offsets are committed up to them: the next read of the group takes exactly the messages published
    since."""
    kafka_broker.create_topic("readings-stopped", partitions=2)
    first = _publish_kafka(kafka_broker, "readings-stopped", range(600), partitions=2)
    stop_path = str(tmp_path / STOP_FILE)
    with beam.Pipeline(options=prism_options()) as p:
        read = p | "ReadKafka" >> KafkaReadings(kafka_broker.bootstrap_servers, "readings-stopped", "run-stop",
                                                group_id="stopped-group", start="earliest",
                                                align_to_window_s=WINDOW_S, stop=StopRequest(stop_path))
        _count_taken(read)
        _write_windows(read, tmp_path / "first")
        stopper = _stop_once(stop_path, taken=600)
    stopper.join()
    readings, quarantine, records_in = _read_back(tmp_path / "first")
    _check_reconciles(readings, quarantine, records_in, set(first), 600)

    second = _publish_kafka(kafka_broker, "readings-stopped", range(600, 900), partitions=2)
    with beam.Pipeline(options=prism_options()) as p:
        read = p | "ReadKafka" >> KafkaReadings(kafka_broker.bootstrap_servers, "readings-stopped", "run-after",
                                                group_id="stopped-group", stop_after_idle_s=3,
                                                align_to_window_s=WINDOW_S)
        _write_windows(read, tmp_path / "second")
    readings, quarantine, records_in = _read_back(tmp_path / "second")
    out = list(zip(readings["source"], readings["line"])) + [(q["source"], q["line"]) for q in quarantine]
    assert sorted(out) == sorted(second) and records_in == 300


def test_a_pubsub_read_asked_to_stop_ends_with_what_it_took_written_and_acknowledged(pubsub_emulator,
                                                                                      prism_options, tmp_path):
    n = 500
    topic, subscription = pubsub_emulator.create_subscription("readings-stopped")
    publisher, subscriber = pubsub_emulator.clients()
    futures = {i: publisher.publish(topic, _message(i)) for i in range(n)}
    delivered = {(f"pubsub:{subscription}", int(f.result(timeout=60))): i for i, f in futures.items()}
    stop_path = str(tmp_path / STOP_FILE)
    with beam.Pipeline(options=prism_options()) as p:
        read = p | "ReadPubSub" >> PubSubReadings(subscription, "run-stop", emulator_host=pubsub_emulator.host,
                                                  align_to_window_s=WINDOW_S, max_out_of_orderness_s=1800,
                                                  stop=StopRequest(stop_path))
        _count_taken(read)
        _write_windows(read, tmp_path)
        stopper = _stop_once(stop_path, taken=n)
    stopper.join()
    readings, quarantine, records_in = _read_back(tmp_path)
    _check_reconciles(readings, quarantine, records_in, set(delivered), n)
    assert _unacknowledged(subscriber, subscription) == 0, "messages were left unacknowledged"


def test_a_kafka_consumer_that_does_not_reach_its_broker_for_a_while_is_replaced(own_kafka_node, caplog):
    """Twice in some 40 runs of the outage test alone (2026-12-06), a stream's consumer neither read nor reached a
    broker that was back, while other clients reached it. A consumer whose probes have all failed for
    ``RENEW_CONSUMER_AFTER_S`` (1 s here) is replaced, said once, and the new one reads on from the offsets the
    read claimed: nothing read twice, nothing skipped."""
    from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
    from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker
    from apache_beam.transforms.core import _BundleFinalizerParam

    from seqwatch.pipelines import broker_sources

    broker = own_kafka_node.start()
    broker.create_topic("renewed")

    def publish(numbers):
        producer = broker.producer()
        for i in numbers:
            producer.produce("renewed", _message(i))
        assert producer.flush(30) == 0

    offsets = broker_sources._KafkaOffsets(broker.bootstrap_servers, "renew-test", {}, "earliest", False)
    reader = broker_sources._ReadKafkaPartitionsCommitting(broker.bootstrap_servers, "renew-test", {}, offsets,
                                                           MessageParser("run-renewed"), 100, 0.5, 0.1, 0, None, None)
    reader.RENEW_CONSUMER_AFTER_S = 1.0
    element = ("renewed", (0,))
    restriction = PartitionOffsets((0,), (0,), (broker_sources._ENDLESS,))

    def call():
        """One call of ``process``; the readings' values it emitted, and the residual restriction becomes the next
        call's."""
        nonlocal restriction
        tracker = ThreadsafeRestrictionTracker(offsets.create_tracker(restriction))
        finalizer = _BundleFinalizerParam()
        emitted = list(reader.process(element, finalizer, tracker=RestrictionTrackerView(tracker),
                                      estimator=ManualWatermarkEstimator(None)))
        finalizer.finalize_bundle()
        residual = tracker.deferred_status()
        assert residual is not None  # an endless read goes on, from the offsets this call claimed
        restriction = residual[0]
        return sorted(float(v) for t in emitted if isinstance(t, beam.window.TimestampedValue)
                      for v in t.value.frame["value"])

    reader.setup()
    try:
        publish(range(3))
        read, deadline = [], time.monotonic() + 60
        while len(read) < 3 and time.monotonic() < deadline:
            read += call()
        assert read == [0.0, 0.25, 0.5]
        first = next(iter(reader._consumers.values()))[0]
        own_kafka_node.stop()
        with caplog.at_level("WARNING", logger=broker_sources.__name__):
            try:
                deadline = time.monotonic() + 30
                while any(held is first for held, _ in reader._consumers.values()) and time.monotonic() < deadline:
                    assert call() == []
            finally:  # back before any assertion: a consumer's close waits on a broker that does not answer
                broker = own_kafka_node.start()
            renewed = [r.getMessage() for r in caplog.records if "a new consumer" in r.getMessage()]
            assert len(renewed) == 1 and renewed[0].startswith(f"the Kafka broker at {broker.bootstrap_servers} "
                                                               f"has not answered for "), caplog.records
            publish(range(3, 5))
            deadline = time.monotonic() + 60
            while len(read) < 5 and time.monotonic() < deadline:
                read += call()
        assert read == [0.0, 0.25, 0.5, 0.75, 1.0]  # nothing twice, nothing skipped
        assert all(held is not first for held, _ in reader._consumers.values())
        assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        reader.teardown()
