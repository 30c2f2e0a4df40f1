#!/usr/bin/env python3
"""Where a sink batch's time goes: summarises the "Batch committed." debug lines of a kstage sink
log (RUST_LOG=kstage::sink=debug; bench.py --latency-rust-log kstage::sink=debug writes them in
the latency runs' logs). One line per batch, fields (src/sink/inflight.rs, BatchTimes):

  first_age_ms  the batch's first record's age when the sink polled it (wall clock - its Kafka
                timestamp): the producer's batching, the broker, the fetch
  collect_ms    the batch open: from its first record to the launch of its write
  write_ms      the write thread's transaction (offsets UPDATE, COPY, COMMIT)
  noticed_ms    from the write's end to the loop's settle

A row's latency (commit timestamp - send time) is about first_age + its wait in the open batch
(at most collect) + write. Prints, per field, the percentiles over the batches, as JSON.

Usage: batches.py LOG [LOG...]
"""

import json
import re
import sys

FIELDS = ("records", "first_age_ms", "collect_ms", "write_ms", "noticed_ms")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def summarise(path):
    columns = {field: [] for field in FIELDS}
    with open(path, errors="replace") as f:
        for line in f:
            line = ANSI.sub("", line)
            if "Batch committed." not in line:
                continue
            for field in FIELDS:
                match = re.search(rf"\b{field}=(-?[0-9.]+)", line)
                if match:
                    columns[field].append(float(match.group(1)))
    out = {"log": path, "batches": len(columns["records"])}
    for field, values in columns.items():
        out[field] = {f"p{int(q * 100) if q < 0.99 else q * 100:g}": percentile(values, q)
                      for q in (0.5, 0.9, 0.99)} if values else None
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        print(json.dumps(summarise(path)))


if __name__ == "__main__":
    main()
