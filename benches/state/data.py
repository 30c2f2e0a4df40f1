"""data.py: the stateful benchmark's input, its truth, and the reading of an app's output.

What flows through it: a fixed-seed sequence of keyed records (key `k<n>`, n uniform over the
keys, partition n % partitions, value `v`, event time base + sequence number in ms, so every
partition's timestamps rise and no record is late), produced in chunks that continue the
sequence; the true final count per key and per (key, tumbling window) over everything produced;
and an app's output read read_committed, reduced to the same shape.

Invariants: the same seed gives both apps the same records in the same order per partition; a
window is in the truth only if its partition's stream time closed it (stream time >= window end +
grace, the rule of topologies/windowed_count.rs and of Kafka Streams' suppress), and a window
emitted twice makes the output differ from the truth.
"""

import json
import random
import time
from collections import Counter

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


class Generator:
    def __init__(self, records, keys, partitions, seed):
        self.keys, self.partitions = keys, partitions
        self.rng = random.Random(seed)
        # Event time: far enough in the past for the whole run, recent enough for retention.
        # Rounded to the hour, so every run's windows start at the same offsets in the sequence
        # (a 60 s window then holds the same records in every run of the same size).
        base = int(time.time() * 1000) - 2 * (records + 1_000_000)
        self.base = base - base % 3_600_000
        self.produced = 0
        self.sent = []  # (key number, timestamp) of every record produced, in order

    def _producer(self, bootstrap):
        return Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "queue.buffering.max.messages": 500000, "enable.idempotence": True})

    def _send(self, p, topic, n):
        ts = self.base + self.produced
        self.sent.append((n, ts))
        self.produced += 1
        while True:
            try:
                p.produce(topic, key=b"k%d" % n, value=b"v", partition=n % self.partitions,
                          timestamp=ts)
                return
            except BufferError:
                p.poll(0.05)

    def produce(self, bootstrap, topic, count):
        """Produces the next `count` records of the sequence and waits for their delivery."""
        p = self._producer(bootstrap)
        for i in range(count):
            self._send(p, topic, self.rng.randrange(self.keys))
            if i % 10000 == 0:
                p.poll(0)
        if p.flush(60) != 0:
            raise RuntimeError(f"records to {topic} were not delivered within 60 s")

    def produce_one_per_partition(self, bootstrap, topic):
        """One record per partition (key k<p> on partition p): a kstage partition restores on
        its first record, so a restart after the local state was deleted restores them all."""
        p = self._producer(bootstrap)
        for n in range(self.partitions):
            self._send(p, topic, n)
        if p.flush(60) != 0:
            raise RuntimeError(f"records to {topic} were not delivered within 60 s")

    def truth(self, topology, size_ms=60_000, grace_ms=10_000):
        """count: {key: final count}; windowed-count: {(key, start): count} of closed windows."""
        if topology == "count":
            return dict(Counter("k%d" % n for n, _ in self.sent))
        stream_time = {}
        windows = Counter()
        for n, ts in self.sent:
            part = n % self.partitions
            stream_time[part] = max(stream_time.get(part, ts), ts)
            windows[("k%d" % n, ts - ts % size_ms)] += 1
        return {(k, s): c for (k, s), c in windows.items()
                if stream_time[int(k[1:]) % self.partitions] >= s + size_ms + grace_ms}


def read_output(bootstrap, topic, partitions, topology):
    """Reads `topic` read_committed to its end: count: {key: last count}; windowed-count:
    {(key, start): count}, with a window seen twice marked as such (a mismatch)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-state-reader",
                  "enable.auto.commit": False, "isolation.level": "read_committed",
                  "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    at_end, out = set(), {}
    deadline = time.time() + 300
    while len(at_end) < partitions and time.time() < deadline:
        for m in c.consume(num_messages=10000, timeout=1.0):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                    continue
                raise RuntimeError(f"reading {topic}: {m.error()}")
            at_end.discard(m.partition())
            key = m.key().decode()
            if topology == "count":
                out[key] = int(m.value())
            else:
                v = json.loads(m.value())
                w = (v["key"], v["start"])
                out[w] = ("emitted twice", out[w]) if w in out else v["count"]
    c.close()
    if len(at_end) < partitions:
        raise RuntimeError(f"reading {topic}: not at the end after 300 s")
    return out
