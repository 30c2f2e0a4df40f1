#!/usr/bin/env python3
"""The sink benchmark (docs/BENCHMARKS.md, "Kafka into PostgreSQL"): one run, one broker, one
PostgreSQL, the same preloaded records for every contender:

  kstage-txn   kstage sink, mode transactional (rows and offsets in one DB transaction)
  kstage-idem  kstage sink, mode idempotent (upsert on id, Kafka offsets after the DB commit)
  kstage-txn-insert, kstage-idem-insert
               the same with write = "insert" (multi-row INSERTs instead of COPY), for A/B
  copy         psql \\copy of the same rows from a file: the limit
  debezium     the Debezium JDBC sink connector on Kafka Connect standalone, insert.mode=upsert

Every record is JSON with a Kafka Connect schema envelope (the Debezium sink needs the schema;
kstage maps value.payload.*), about 330 bytes. Every table is (id, k, amount, note, sent_ms,
written_at DEFAULT clock_timestamp()); the upserting contenders' tables have a primary key on id.
PostgreSQL runs with track_commit_timestamp = on, so:

  throughput = rows / (last commit timestamp - first row's written_at)   (the same for all four)
  latency    = commit timestamp - sent_ms (the producer's send time), per row

CPU is the contender process's user+system time (and, separately, the PostgreSQL server's, all
its processes) over the run; RSS is the contender's peak (VmHWM). Latency: records produced at a
fixed rate (half of the contender's own median throughput, unless --latency-rate) for
--latency-load-warmup seconds (not measured) then --latency-secs, into a fresh topic and
table, by each of --latency-contenders (interleaved rounds, --latency-rounds), after warm-up
records (not measured) have reached the table. The
load comes from benches/sink/load.rs (the harness's paced rdkafka producer; --load-bin), which
reports the rate it achieved: a run is reported as "half load" only when it achieved at least
95% of the rate asked. Each latency result also has the p99 of each quarter of the load (a
growing p99 is a backlog), the contender's and PostgreSQL's CPU, and the load average.

Usage (scripts/bench.sh sink runs it with the servers started):
  bench.py --bootstrap HOST:PORT --pg-url URL --kstage target/release/kstage \\
           --load-bin target/release/examples/bench-sink-load \\
           --connect-libs DIR [--records 1000000] [--rounds 1] [--out DIR]
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 6
SCHEMA = {
    "type": "struct",
    "name": "kstage.bench.Row",
    "optional": False,
    "fields": [
        {"field": "id", "type": "string", "optional": False},
        {"field": "k", "type": "string", "optional": False},
        {"field": "amount", "type": "int64", "optional": False},
        {"field": "note", "type": "string", "optional": False},
        {"field": "sent_ms", "type": "int64", "optional": False},
    ],
}
NOTE = "x" * 40
WARMUP = 60
# A latency run is called "half load" only if the load generator achieved this share of the
# rate asked.
MIN_ACHIEVED = 0.95


def log(*args):
    print("bench-sink:", *args, file=sys.stderr, flush=True)


def psql(url, sql):
    out = subprocess.run(
        ["psql", url, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True, capture_output=True, text=True)
    return out.stdout.strip()


def record(n, sent_ms):
    payload = {"id": f"id-{n:09d}", "k": f"k{n % 100000}", "amount": n * 7 % 100000,
               "note": NOTE, "sent_ms": sent_ms}
    return json.dumps({"schema": SCHEMA, "payload": payload}, separators=(",", ":")), payload


def create_topic(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result()


def producer(bootstrap):
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1000000,
                     "compression.type": "lz4", "queue.buffering.max.messages": 1000000,
                     "enable.idempotence": True})


def preload(bootstrap, topic, records, copy_file):
    """Writes the records (sent_ms = 0) to the topic and, as TSV, to copy_file."""
    create_topic(bootstrap, topic)
    p = producer(bootstrap)
    started = time.time()
    with open(copy_file, "w") as tsv:
        for n in range(records):
            value, payload = record(n, 0)
            while True:
                try:
                    p.produce(topic, value=value, key=payload["id"], partition=n % PARTITIONS)
                    break
                except BufferError:
                    p.poll(0.05)
            tsv.write(f"{payload['id']}\t{payload['k']}\t{payload['amount']}\t{NOTE}\t0\n")
            if n % 10000 == 0:
                p.poll(0)
    p.flush(120)
    log(f"preloaded {records} records into {topic} in {time.time() - started:.1f} s")


def create_table(url, table, primary_key):
    key = "PRIMARY KEY" if primary_key else ""
    psql(url, f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id text NOT NULL {key}, "
              f"k text NOT NULL, amount bigint NOT NULL, note text NOT NULL, "
              f"sent_ms bigint NOT NULL, written_at timestamptz NOT NULL DEFAULT clock_timestamp())")


class Poller:
    """One long-lived psql session for waiting on a table, so the waiting costs the machine little
    while a contender runs: no psql process started per check, a cheap statistics read
    (pg_stat_user_tables.n_tup_ins) every 0.2 s, and the exact count(*) (not parallel) only once
    the statistics reach the target, or every 2 s (statistics are flushed lazily). The harness
    used to run `psql -c "SELECT count(*)"` every 0.2 s: in a profile of one 500,000-row run
    (docs/BENCHMARKS.md) those checks took about 1.6 CPU-s during the sink's run (a psql start
    and a parallel scan each), on the 2 cores the sink and PostgreSQL share, while COPY waited
    for nothing."""

    def __init__(self, url):
        self.proc = subprocess.Popen(["psql", url, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1)
        self.one("SET max_parallel_workers_per_gather = 0; SELECT 1")

    def one(self, sql):
        self.proc.stdin.write(sql + ";\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the polling psql session ended ({sql})")
        return line.strip()

    def inserted(self, table):
        return int(self.one("SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables "
                            f"WHERE relid = '{table}'::regclass"))

    def count(self, table):
        return int(self.one(f"SELECT count(*) FROM {table}"))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)


def server_cpu(pg_data):
    """User+system seconds of the PostgreSQL server: the postmaster, its live children, and the
    children it has reaped (so a backend that ended during the run is counted)."""
    with open(os.path.join(pg_data, "postmaster.pid")) as f:
        postmaster = int(f.readline())
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid = int(fields[1])
        if int(pid) == postmaster:
            # Its own time, and that of every backend it has reaped (cutime, cstime).
            total += sum(int(x) for x in fields[11:15]) / ticks
        elif ppid == postmaster:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def process_usage(pid):
    """(user+system seconds of pid and its threads, peak RSS in MiB)."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024
    return cpu, rss


def wait_rows(url, table, rows, proc, timeout):
    deadline = time.time() + timeout
    poller = Poller(url)
    last_exact = 0.0
    try:
        while time.time() < deadline:
            if poller.inserted(table) >= rows or time.time() - last_exact >= 2:
                last_exact = time.time()
                if poller.count(table) >= rows:
                    return
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"the contender exited ({proc.returncode}) before writing {rows} rows")
            time.sleep(0.2)
    finally:
        poller.close()
    raise RuntimeError(f"{table}: fewer than {rows} rows after {timeout} s")


def throughput(url, table):
    row = psql(url, f"SELECT count(*), extract(epoch FROM max(pg_xact_commit_timestamp(xmin)) "
                    f"- min(written_at)) FROM {table}")
    rows, secs = row.split("|")
    return int(rows), float(secs)


def latency(url, table):
    row = psql(url, "SELECT count(*), " + ", ".join(
        f"percentile_disc({q}) WITHIN GROUP (ORDER BY extract(epoch FROM "
        f"pg_xact_commit_timestamp(xmin) - to_timestamp(sent_ms / 1000.0)) * 1000)"
        for q in (0.5, 0.99, 0.999)) + f" FROM {table} WHERE sent_ms > 0")
    rows, p50, p99, p999 = row.split("|")
    return {"rows": int(rows), "p50_ms": float(p50), "p99_ms": float(p99), "p999_ms": float(p999)}


def kstage_config(args, topic, table, mode, group, directory, write="copy"):
    path = os.path.join(directory, f"{group}.toml")
    key = 'key_columns = ["id"]\n' if mode == "idempotent" else ""
    key += f'write = "{write}"\n'
    with open(path, "w") as f:
        f.write(f'bootstrap_servers = "{args.bootstrap}"\ninputs = ["{topic}"]\napp_id = "{group}"\n'
                f'instance_id = "bench"\ncommit_interval = "{args.commit_interval}"\n'
                f"[sink]\nurl = \"{args.pg_url}\"\nmode = \"{mode}\"\ntable = \"{table}\"\n{key}"
                "[sink.columns]\nid = \"value.payload.id\"\nk = \"value.payload.k\"\n"
                "amount = \"value.payload.amount\"\nnote = \"value.payload.note\"\n"
                "sent_ms = \"value.payload.sent_ms\"\n")
    return path


def start_kstage(args, topic, table, mode, group, directory, write="copy", binary=None,
                 rust_log="warn"):
    config = kstage_config(args, topic, table, mode, group, directory, write)
    logf = open(os.path.join(directory, f"{group}.log"), "w")
    return subprocess.Popen([binary or args.kstage, "sink", "-c", config, "--metrics-address", "off"],
                            stdout=logf, stderr=logf, env={**os.environ, "RUST_LOG": rust_log})


def start_debezium(args, topic, table, group, directory):
    worker = os.path.join(directory, f"{group}-worker.properties")
    connector = os.path.join(directory, f"{group}-connector.properties")
    with open(worker, "w") as f:
        f.write(f"bootstrap.servers={args.bootstrap}\n"
                "key.converter=org.apache.kafka.connect.storage.StringConverter\n"
                "value.converter=org.apache.kafka.connect.json.JsonConverter\n"
                "value.converter.schemas.enable=true\n"
                f"offset.storage.file.filename={directory}/{group}.offsets\n"
                "offset.flush.interval.ms=1000\n"
                f"consumer.auto.offset.reset=earliest\nlisteners=http://127.0.0.1:{args.connect_port}\n")
    host_port_db = args.pg_url.split("@", 1)[1]
    user_pass = args.pg_url.split("://", 1)[1].split("@", 1)[0]
    user, password = user_pass.split(":", 1)
    with open(connector, "w") as f:
        f.write(f"name={group}\nconnector.class=io.debezium.connector.jdbc.JdbcSinkConnector\n"
                f"tasks.max=1\ntopics={topic}\n"
                f"connection.url=jdbc:postgresql://{host_port_db}\n"
                f"connection.username={user}\nconnection.password={password}\n"
                "insert.mode=upsert\nprimary.key.mode=record_value\nprimary.key.fields=id\n"
                f"schema.evolution=none\ntable.name.format={table}\n")
    logf = open(os.path.join(directory, f"{group}.log"), "w")
    log4j = os.path.join(directory, "connect-log4j2.properties")
    with open(log4j, "w") as f:
        f.write("status = warn\nappender.stderr.type = Console\nappender.stderr.name = STDERR\n"
                "appender.stderr.target = SYSTEM_ERR\nappender.stderr.layout.type = PatternLayout\n"
                "appender.stderr.layout.pattern = [%d] %p %m (%c)%n\nrootLogger.level = WARN\n"
                "rootLogger.appenderRef.stderr.ref = STDERR\n")
    return subprocess.Popen(
        ["java", "-Xmx1g", f"-Dlog4j2.configurationFile={log4j}", "-cp",
         f"{args.connect_libs}/*", "org.apache.kafka.connect.cli.ConnectStandalone", worker,
         connector], stdout=logf, stderr=logf)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_contender(args, name, topic, records, copy_file, directory, tag):
    table = f"bench_{name.replace('-', '_')}_{tag}"
    group = f"bench-{name}-{tag}"
    create_table(args.pg_url, table, primary_key=name.startswith("kstage-idem") or name == "debezium")
    cpu_before = server_cpu(args.pg_data)
    started = time.time()
    proc, cpu, rss = None, 0.0, 0.0
    if name == "copy":
        proc = subprocess.Popen(["psql", args.pg_url, "-X", "-q", "-c",
                                 f"\\copy {table} (id, k, amount, note, sent_ms) FROM '{copy_file}'"])
        pid = proc.pid
        proc.wait()
        if proc.returncode != 0:
            raise RuntimeError("psql \\copy failed")
    else:
        if name == "debezium":
            proc = start_debezium(args, topic, table, group, directory)
        else:
            mode = "transactional" if name.startswith("kstage-txn") else "idempotent"
            write = "insert" if "-insert" in name else "copy"
            binary = None
            if name.endswith("-before"):
                if not args.kstage_before:
                    raise RuntimeError(f"{name} needs --kstage-before PATH")
                binary = args.kstage_before
            proc = start_kstage(args, topic, table, mode, group, directory, write, binary)
        wait_rows(args.pg_url, table, records, proc, args.timeout)
        cpu, rss = process_usage(proc.pid)
        stop(proc)
    wall = time.time() - started
    rows, secs = throughput(args.pg_url, table)
    result = {"contender": name, "rows": rows, "seconds": round(secs, 3),
              "rows_per_s": round(rows / secs) if secs > 0 else None,
              "wall_s_including_start": round(wall, 1), "cpu_s": round(cpu, 1),
              "peak_rss_mib": round(rss, 1),
              "postgres_cpu_s": round(server_cpu(args.pg_data) - cpu_before, 1)}
    log(json.dumps(result))
    psql(args.pg_url, f"DROP TABLE {table}")
    return result


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def latency_quarters(url, table):
    """p99 (ms) of each quarter of the load, by send time: a latency that grows from quarter to
    quarter is a backlog building (the contender does not keep up), not a latency at that load."""
    rows = psql(url, f"""
        WITH l AS (SELECT sent_ms, extract(epoch FROM pg_xact_commit_timestamp(xmin)
                          - to_timestamp(sent_ms / 1000.0)) * 1000 AS ms
                   FROM {table} WHERE sent_ms > 0),
             b AS (SELECT min(sent_ms) AS lo, max(sent_ms) - min(sent_ms) + 1 AS span FROM l)
        SELECT least(3, ((sent_ms - lo) * 4 / span))::int AS q,
               percentile_disc(0.99) WITHIN GROUP (ORDER BY ms)
        FROM l, b GROUP BY 1 ORDER BY 1""")
    return [round(float(line.split("|")[1]), 1) for line in rows.splitlines() if line]


def send_load(args, topic, rate, count, warmup):
    """The load at `rate` records/s: benches/sink/load.rs (the harness's paced producer), which
    holds rates the Python client cannot; its first `warmup` records carry sent_ms = 0 (not
    measured). Returns its report (sent, seconds, achieved_rate)."""
    out = subprocess.run(
        [args.load_bin, "--bootstrap", args.bootstrap, "--topic", topic, "--rate", str(rate),
         "--count", str(count), "--warmup-count", str(warmup), "--partitions", str(PARTITIONS),
         "--schema", json.dumps(SCHEMA, separators=(",", ":")), "--note-len", str(len(NOTE))],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def latency_run(args, name, rate, directory, tag, half_load):
    """One latency run of `name` at `rate`. `half_load`: the rate is half of the contender's
    median throughput; the run is called a half-load run only if the load generator achieved
    at least MIN_ACHIEVED of it."""
    topic = f"bench-sink-lat-{name}-{tag}"
    table = f"bench_lat_{name.replace('-', '_')}_{tag}"
    group = f"bench-lat-{name}-{tag}"
    create_topic(args.bootstrap, topic)
    create_table(args.pg_url, table,
                 primary_key=name == "debezium" or name.startswith("kstage-idem"))
    if name == "debezium":
        proc = start_debezium(args, topic, table, group, directory)
    else:
        binary = None
        if name.endswith("-before"):
            if not args.kstage_before:
                raise RuntimeError(f"{name} needs --kstage-before PATH")
            binary = args.kstage_before
        mode = "transactional" if name.startswith("kstage-txn") else "idempotent"
        proc = start_kstage(args, topic, table, mode, group, directory, binary=binary,
                            rust_log=args.latency_rust_log)
    p = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 1,
                  "queue.buffering.max.messages": 1000000, "enable.idempotence": True})
    # Warm-up: records with sent_ms = 0 (not measured) until the contender writes them, so its
    # start-up (a JVM, a group join) is not counted as latency.
    for n in range(WARMUP):
        value, payload = record(10**9 + n, 0)
        p.produce(topic, value=value, key=payload["id"], partition=n % PARTITIONS)
    p.flush(60)
    wait_rows(args.pg_url, table, WARMUP, proc, args.timeout)
    time.sleep(args.warmup)
    total = int(rate * args.latency_secs)
    load_warmup = int(rate * args.latency_load_warmup)
    load_start = loadavg()
    cpu_before = process_usage(proc.pid)[0]
    pg_cpu_before = server_cpu(args.pg_data)
    sent = send_load(args, topic, rate, load_warmup + total, load_warmup)
    load_end = loadavg()
    cpu = process_usage(proc.pid)[0] - cpu_before
    pg_cpu = server_cpu(args.pg_data) - pg_cpu_before
    wait_rows(args.pg_url, table, load_warmup + total + WARMUP, proc, args.timeout)
    stop(proc)
    achieved = sent["achieved_rate"]
    held = achieved >= MIN_ACHIEVED * rate
    if half_load and held:
        load = "half load"
    elif half_load:
        load = (f"NOT half load: the load generator achieved {achieved:.0f}/s of the "
                f"{rate:.0f}/s asked (below {MIN_ACHIEVED:.0%})")
    else:
        load = f"{rate:.0f}/s asked (--latency-rate)" + ("" if held else
                                                          f", only {achieved:.0f}/s achieved")
    result = {"contender": name, "rate": round(rate), "achieved_rate": achieved,
              "load": load, "half_load": half_load and held,
              "seconds": sent["seconds"], **latency(args.pg_url, table),
              "p99_ms_by_quarter": latency_quarters(args.pg_url, table),
              "cpu_s": round(cpu, 1), "postgres_cpu_s": round(pg_cpu, 1),
              "loadavg_start": load_start, "loadavg_end": load_end,
              "log": os.path.join(directory, f"{group}.log")}
    log(json.dumps(result))
    if half_load and not held:
        log(f"{name}: {load}; this run is not a latency at half load")
    psql(args.pg_url, f"DROP TABLE {table}")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--pg-url", required=True)
    parser.add_argument("--pg-data", required=True, help="the server's data directory (CPU)")
    parser.add_argument("--kstage", required=True)
    parser.add_argument("--kstage-before", default="",
                        help="another kstage binary (e.g. a build of the previous commit): the "
                             "contenders kstage-txn-before and kstage-idem-before run it, for an "
                             "A/B of a change side by side in one run")
    parser.add_argument("--connect-libs", required=True)
    parser.add_argument("--connect-port", type=int, default=44083)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--contenders", default="kstage-txn,kstage-idem,copy,debezium")
    parser.add_argument("--commit-interval", default="100ms")
    parser.add_argument("--latency-secs", type=float, default=20)
    parser.add_argument("--latency-rate", type=float, default=0)
    parser.add_argument("--latency-contenders", default="kstage-txn,debezium",
                        help="contenders of the latency runs, each at half of its own median "
                             "throughput (so each needs its throughput run too), or at "
                             "--latency-rate")
    parser.add_argument("--latency-load-warmup", type=float, default=5,
                        help="seconds of load at the rate before the --latency-secs measured, "
                             "not measured (sent_ms = 0): without it the first seconds' p99 "
                             "was 4-8x the rest's, from the load producer's and the contender's "
                             "cold start")
    parser.add_argument("--latency-half-of", default="",
                        help="run every latency contender at half of this contender's median "
                             "throughput (for an A/B at one load; e.g. kstage-txn-before)")
    parser.add_argument("--latency-rounds", type=int, default=1,
                        help="latency runs per contender (interleaved rounds, the order "
                             "rotated)")
    parser.add_argument("--latency-rust-log", default="warn",
                        help="RUST_LOG of the kstage contenders' latency runs (e.g. "
                             "kstage::sink=debug for the per-batch timings; benches/sink/batches.py "
                             "summarises them)")
    parser.add_argument("--load-bin", required=True,
                        help="the load generator (cargo build --release --example "
                             "bench-sink-load)")
    parser.add_argument("--warmup", type=float, default=2,
                        help="seconds to wait after the warm-up records are written")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--out", default="target/bench/sink")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tag = f"{random.getrandbits(32):08x}"
    directory = tempfile.mkdtemp(prefix="kstage-bench-sink-")
    copy_file = os.path.join(directory, "rows.tsv")
    topic = f"bench-sink-in-{tag}"
    preload(args.bootstrap, topic, args.records, copy_file)
    contenders = args.contenders.split(",")
    results = []
    for round_ in range(args.rounds):
        # Interleaved rounds, in a rotated order, so drift on a shared machine spreads out.
        order = contenders[round_ % len(contenders):] + contenders[:round_ % len(contenders)]
        for name in order:
            result = run_contender(args, name, topic, args.records, copy_file, directory,
                                   f"{tag}_{round_}")
            result["round"] = round_
            results.append(result)
    latencies = []
    if args.latency_secs > 0 and args.latency_contenders:
        names = args.latency_contenders.split(",")
        rates = {}
        for name in names:
            # Half load: half of this contender's own median throughput (or of
            # --latency-half-of's, or --latency-rate).
            rates[name] = (args.latency_rate, False)
            if args.latency_rate <= 0:
                of = args.latency_half_of or name
                own = sorted(r["rows_per_s"] for r in results if r["contender"] == of)
                if not own:
                    raise RuntimeError(f"half load of {of} needs its throughput run (add it "
                                       "to --contenders) or --latency-rate")
                rates[name] = (own[len(own) // 2] / 2, True)
        for round_ in range(args.latency_rounds):
            # Interleaved and rotated, as the throughput rounds.
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                rate, half_load = rates[name]
                result = latency_run(args, name, rate, directory, f"{tag}_{round_}", half_load)
                result["round"] = round_
                latencies.append(result)
    report = {"records": args.records, "partitions": PARTITIONS, "throughput": results,
              "latency": latencies, "logs": directory}
    path = os.path.join(args.out, "results.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    log(f"wrote {path}")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
