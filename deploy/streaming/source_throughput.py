"""Measure how fast the streaming sources deliver readings on Prism (not a test; numbers for BENCHMARKS.md).

Start the brokers first (deploy/streaming/kafka-local.sh, deploy/streaming/pubsub-emulator.sh), then e.g.

    .venv/bin/python deploy/streaming/source_throughput.py kafka --bootstrap 127.0.0.1:9092 -n 200000
    .venv/bin/python deploy/streaming/source_throughput.py pubsub --emulator 127.0.0.1:8085 -n 20000
    .venv/bin/python deploy/streaming/source_throughput.py replay -n 200000

It publishes ``n`` JSON readings to a new topic, reads them back with the seqwatch source on Prism (streaming)
and prints the publish rate and the read rate: readings / (time of the last batch - time of the first batch)
as seen right after the source, so Prism's start-up (~2 s) is not counted.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
import uuid
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from seqwatch.pipelines.broker_sources import KafkaReadings, PubSubReadings, ReplayFile
from seqwatch.schemas.mapping import InputMapping

REPO = Path(__file__).resolve().parents[2]
T0 = 1_767_571_200


def _message(i: int) -> bytes:
    return json.dumps({"entity_id": f"pump-{i % 10}", "channel": "flow", "timestamp": T0 + i,
                       "value": 0.5 * i}).encode()


class _Stamp(beam.DoFn):
    def __init__(self, log: str):
        self.log = log

    def process(self, batch):
        with open(self.log, "a") as f:
            f.write(f"{time.time()} {len(batch)}\n")


def _rate(log: str) -> tuple[int, float]:
    rows = [line.split() for line in Path(log).read_text().splitlines()]
    times = [float(t) for t, _ in rows]
    n = sum(int(c) for _, c in rows)
    first_batch = int(rows[0][1]) if rows else 0
    span = max(times) - min(times) if rows else 0.0
    return n, (n - first_batch) / span if span > 0 else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", choices=("kafka", "pubsub", "replay"))
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--emulator", default="127.0.0.1:8085")
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=5000)
    parser.add_argument("--prism", default=str(REPO / ".tools" / "bin" / "prism"))
    args = parser.parse_args(argv)
    name = f"throughput-{uuid.uuid4().hex[:8]}"
    log = tempfile.mktemp(suffix=".log")
    started = time.time()
    if args.source == "kafka":
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": args.bootstrap})
        for f in admin.create_topics([NewTopic(name, num_partitions=args.partitions)]).values():
            f.result()
        producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5})
        for i in range(args.n):
            producer.produce(name, _message(i), partition=i % args.partitions)
            if i % 10_000 == 0:
                producer.poll(0)
        producer.flush()
        source = KafkaReadings(args.bootstrap, name, "throughput", start="earliest", stop_at_end=True,
                               max_batch=args.max_batch)
    elif args.source == "pubsub":
        os.environ["PUBSUB_EMULATOR_HOST"] = args.emulator
        from google.cloud import pubsub_v1

        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        topic, subscription = publisher.topic_path("throughput", name), subscriber.subscription_path("throughput", name)
        publisher.create_topic(name=topic)
        subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=60)
        for f in [publisher.publish(topic, _message(i)) for i in range(args.n)]:
            f.result()
        source = PubSubReadings(subscription, "throughput", emulator_host=args.emulator, stop_after_idle_s=3,
                                max_batch=args.max_batch)
    else:
        path = tempfile.mktemp(suffix=".csv")
        with open(path, "w") as f:
            f.write("entity_id,channel,timestamp,value\n")
            f.writelines(f"pump-{i % 10},flow,{T0 + i},{0.5 * i}\n" for i in range(args.n))
        source = ReplayFile([path], InputMapping(format="long"), "throughput", speed=1e9, max_batch=args.max_batch)
    published = time.time() - started
    options = PipelineOptions(["--runner=PrismRunner", f"--prism_location={args.prism}", "--streaming",
                               "--prism_log_level=warn"])
    t = time.time()
    with beam.Pipeline(options=options) as p:
        read = p | "Read" >> source
        read.readings | "Stamp" >> beam.ParDo(_Stamp(log))
    wall = time.time() - t
    n, rate = _rate(log)
    # One batch has no span to time (-n at most --max-batch): the rate is not known, not a crash.
    print(json.dumps({"source": args.source, "messages": args.n, "readings_out": n,
                      "publish_per_s": round(args.n / published) if args.source != "replay" else None,
                      "pipeline_wall_s": round(wall, 2),
                      "read_readings_per_s": round(rate) if math.isfinite(rate) else None}))


if __name__ == "__main__":
    main()
