#!/usr/bin/env python3
"""The independent client of tests/avro.rs's interoperability test.

Confluent's Python client (confluent-kafka, its AvroSerializer / AvroDeserializer and
SchemaRegistryClient) produces Avro orders for a kstage stage to read, and reads back what the
stage wrote, against the same broker and Confluent-compatible schema registry (Apicurio's ccompat
API). It knows nothing of kstage: its Order schema is its own text, and it decodes the stage's
output with the writer schema it fetches from the registry by the id in each record.

Usage (run with the venv of scripts/python-env.sh):
  avro_interop.py produce --bootstrap B --registry URL --topic T --orders JSON
      JSON: a list of {"key": str, "partition": int, "value": {Order fields}}.
      Prints {"written": [{"partition": p, "offset": o}, ...]} on stdout.
  avro_interop.py consume --bootstrap B --registry URL --topic T --count N [--timeout S]
      Reads the topic read_committed from the beginning until N records were seen.
      Prints {"records": [{"partition", "offset", "key", "value", "headers"}, ...]}; a
      value that is an Avro record is printed as its JSON object; null for a tombstone.

Exit code 0 on success, 1 with a message on stderr otherwise.
"""

import argparse
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringSerializer

# The order schema as a Python producer team would write it by hand.
ORDER_SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "Order",
        "namespace": "kstage.examples",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "customer", "type": "string"},
            {"name": "currency", "type": "string"},
            {
                "name": "items",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "Item",
                        "fields": [
                            {"name": "sku", "type": "string"},
                            {"name": "qty", "type": "int"},
                            {"name": "unit_price", "type": "double"},
                        ],
                    },
                },
            },
            {"name": "channel", "type": "string", "default": "web"},
        ],
    }
)


def registry_client(url):
    return SchemaRegistryClient({"url": url})


def produce(args):
    orders = json.loads(args.orders)
    serializer = AvroSerializer(
        registry_client(args.registry),
        ORDER_SCHEMA,
        # Register the schema under <topic>-value (TopicNameStrategy) if it is not there yet.
        conf={"auto.register.schemas": True},
    )
    keys = StringSerializer("utf_8")
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "enable.idempotence": True,
            "broker.address.family": "v4",
        }
    )
    written = [None] * len(orders)
    errors = []

    def delivered(index):
        def callback(err, msg):
            if err is not None:
                errors.append(str(err))
            else:
                written[index] = {"partition": msg.partition(), "offset": msg.offset()}

        return callback

    for index, order in enumerate(orders):
        context = SerializationContext(args.topic, MessageField.VALUE)
        producer.produce(
            args.topic,
            key=keys(order["key"], SerializationContext(args.topic, MessageField.KEY)),
            value=serializer(order["value"], context),
            partition=order.get("partition", 0),
            headers=[("producer", b"confluent-kafka-python")],
            on_delivery=delivered(index),
        )
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or errors or any(w is None for w in written):
        fail(f"produce failed: {remaining} undelivered, errors {errors}")
    print(json.dumps({"written": written}))


def consume(args):
    deserializer = AvroDeserializer(registry_client(args.registry))
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"interop-reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "broker.address.family": "v4",
        }
    )
    metadata = consumer.list_topics(args.topic, timeout=30)
    partitions = metadata.topics[args.topic].partitions
    consumer.assign([TopicPartition(args.topic, p, 0) for p in partitions])
    records = []
    deadline = time.monotonic() + args.timeout
    while len(records) < args.count:
        if time.monotonic() > deadline:
            fail(f"saw {len(records)} of {args.count} records of {args.topic} in {args.timeout}s")
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            fail(f"consume {args.topic}: {msg.error()}")
        value = msg.value()
        if value is not None:
            value = deserializer(value, SerializationContext(args.topic, MessageField.VALUE))
        records.append(
            {
                "partition": msg.partition(),
                "offset": msg.offset(),
                "key": msg.key().decode("utf-8") if msg.key() is not None else None,
                "value": value,
                "headers": {k: v.decode("utf-8", "replace") for k, v in (msg.headers() or [])},
            }
        )
    consumer.close()
    print(json.dumps({"records": records}))


def fail(message):
    print(f"avro_interop.py: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("produce", "consume"):
        command = commands.add_parser(name)
        command.add_argument("--bootstrap", required=True)
        command.add_argument("--registry", required=True)
        command.add_argument("--topic", required=True)
        if name == "produce":
            command.add_argument("--orders", required=True)
        else:
            command.add_argument("--count", type=int, required=True)
            command.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    try:
        produce(args) if args.command == "produce" else consume(args)
    except Exception as error:  # noqa: BLE001 - report anything as a failure with its type
        fail(f"{type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
