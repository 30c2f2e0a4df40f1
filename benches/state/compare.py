"""compare.py: kstage against Kafka Streams on the stateful topologies (issue 13).

Run through benches/state/compare.sh (it builds both apps and finds the Python environment).

What flows through it: for every round, topology and app (the order of the apps alternates
between rounds), a fresh input topic gets the same records (data.py, a fixed seed), and the app
runs as a new application (fresh group, output topic, changelogs and state directory) through
three phases:

1. drain: from start until the group's committed offsets reach the input's end. Throughput is
   the records committed from the first commit to the last over that time; CPU (utime + stime
   from /proc/<pid>/stat) is taken over the same span; peak RSS is VmHWM at the end. A clean
   stop (SIGTERM) follows, then the output is checked against the truth (data.py).
2. local state deleted: the state directory is removed, one record per partition appended, and
   the app restarted; "ready" is the time from the restart until the committed offsets cover the
   new records (it restored the full state and processed again). The apps' own figures are
   summed too: Kafka Streams' restore listener (records, ms) and its RUNNING transition,
   kstage's "The partition's state is restored" lines (records, seconds).
3. unclean kill: a chunk of records more is appended; the app runs until half of the chunk is
   committed and gets SIGKILL; the restart's "ready" is the time until every partition with
   records left has committed past where the kill left it. Kafka Streams under exactly_once_v2 wipes its stores
   after an unclean shutdown; kstage keeps its store. The run then drains the chunk, and the
   output is checked against the truth once more (the kill must not change any count).

Invariants: both apps get identical input and the same check, so the comparison is of equal work;
a run whose check fails is reported as failed, never averaged in.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import data

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class Offsets:
    """Reads a group's committed total over an input topic's partitions."""

    def __init__(self, boot, group, topic, parts):
        self.c = Consumer({"bootstrap.servers": boot, "group.id": group,
                           "enable.auto.commit": False})
        self.tps = [TopicPartition(topic, p) for p in range(parts)]

    def committed(self):
        parts = self.per_partition()
        return -1 if parts is None else sum(parts)

    def per_partition(self):
        try:
            return [max(tp.offset, 0) for tp in self.c.committed(self.tps, timeout=10)]
        except Exception:  # the coordinator may be busy with a rebalance: try again
            return None

    def ends(self):
        return [self.c.get_watermark_offsets(tp, timeout=10)[1] for tp in self.tps]

    def close(self):
        self.c.close()


class App:
    """One application (kstage or Kafka Streams) with its topics, state dir and logs."""

    def __init__(self, args, kind, topology, app_id, input_topic, work):
        self.args, self.kind, self.topology = args, kind, topology
        self.app_id, self.input, self.output = app_id, input_topic, f"{app_id}-out"
        self.dir = os.path.join(work, app_id)
        self.state = os.path.join(self.dir, "state")
        os.makedirs(self.dir, exist_ok=True)
        self.proc, self.runs = None, 0
        if kind.startswith("kstage"):
            self.binary = args.kstage_before if kind == "kstage-before" else args.kstage
            self.config = os.path.join(self.dir, "stage.toml")
            params = ""
            if topology == "windowed-count":
                params = (f'[params]\nsize = "{args.size_ms}ms"\n'
                          f'grace = "{args.grace_ms}ms"\n')
            with open(self.config, "w") as f:
                f.write(f'topology = "{topology}"\nbootstrap_servers = "{args.bootstrap}"\n'
                        f'inputs = ["{input_topic}"]\napp_id = "{app_id}"\n'
                        f'instance_id = "0"\nstate_dir = "{self.state}"\n'
                        f'[outputs]\ndefault = "{self.output}"\n{params}')
            subprocess.run([self.binary, "topics", "create", "--config", self.config],
                           check=True, stdout=subprocess.DEVNULL)

    def command(self):
        if self.kind.startswith("kstage"):
            return [self.binary, "run", "--config", self.config,
                    "--metrics-address", "off"]
        return (["java"] + self.args.jvm_opts.split() +
                ["-cp", self.args.streams_jar, "kstage.bench.StateApp",
                 "--bootstrap-servers", self.args.bootstrap, "--input", self.input,
                 "--output", self.output, "--application-id", self.app_id,
                 "--topology", self.topology, "--size-ms", str(self.args.size_ms),
                 "--grace-ms", str(self.args.grace_ms), "--state-dir", self.state,
                 # Static membership, as kstage uses: a restart takes the partitions back at
                 # once instead of after the dead member's session timeout.
                 "--config", f"group.instance.id={self.app_id}-0"])

    def start(self):
        self.runs += 1
        self.log = os.path.join(self.dir, f"run{self.runs}.log")
        self.started = time.time()
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        return self.proc.pid

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restore_figures(self):
        """The app's own restore lines of the current run: (records, seconds, running_at)."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", open(self.log, errors="replace").read())
        records, seconds, running = 0, 0.0, None
        if self.kind.startswith("kstage"):
            for m in re.finditer(r"The partition's state is restored.*", text):
                line = m.group(0)
                r = re.search(r"records=(\d+)", line)
                s = re.search(r"seconds=([0-9.e-]+)", line)
                records += int(r.group(1)) if r else 0
                seconds += float(s.group(1)) if s else 0.0
        else:
            for m in re.finditer(r"restored store=\S+ partition=\d+ records=(\d+) ms=(\d+)", text):
                records += int(m.group(1))
                seconds += int(m.group(2)) / 1000
            for m in re.finditer(r"at=(\d+) state=RUNNING", text):
                running = int(m.group(1)) / 1000 - self.started
        return records, seconds, running


def wait_for(offsets, pred, app, deadline_s, what):
    """Polls the committed total every 50 ms until pred(total); returns (time, total)."""
    end = time.time() + deadline_s
    while time.time() < end:
        total = offsets.committed()
        if total >= 0 and pred(total):
            return time.time(), total
        if app.proc.poll() is not None:
            raise RuntimeError(f"{app.kind} exited ({app.proc.returncode}) waiting for {what}; "
                               f"see {app.log}")
        time.sleep(0.05)
    raise RuntimeError(f"{app.kind}: no {what} within {deadline_s} s; see {app.log}")


def wait_progress(offsets, at_kill, ends, app, deadline_s):
    """Waits until each partition with records after `at_kill` has committed past it."""
    left = [p for p, (k, e) in enumerate(zip(at_kill, ends)) if e > k]
    end = time.time() + deadline_s
    while time.time() < end:
        now = offsets.per_partition()
        if now is not None and all(now[p] > at_kill[p] for p in left):
            return time.time()
        if app.proc.poll() is not None:
            raise RuntimeError(f"{app.kind} exited waiting for progress; see {app.log}")
        time.sleep(0.05)
    raise RuntimeError(f"{app.kind}: no progress on every partition after the kill")


def check(args, app, gen):
    """Compares the app's output (read_committed) with the truth; returns a short verdict."""
    got = data.read_output(args.bootstrap, app.output, args.partitions, app.topology)
    want = gen.truth(app.topology, args.size_ms, args.grace_ms)
    if got == want:
        return f"exact ({len(want)} {'keys' if app.topology == 'count' else 'windows'})"
    missing = sum(1 for k in want if k not in got)
    wrong = sum(1 for k in want if k in got and got[k] != want[k])
    extra = sum(1 for k in got if k not in want)
    return f"MISMATCH: {missing} missing, {wrong} wrong, {extra} extra of {len(want)}"


def run_app(args, admin, kind, topology, round_no, work):
    tag = f"{kind.replace('-', '')}-{topology}-r{round_no}-{os.getpid()}-{int(time.time())}"
    input_topic = f"bench-state-{tag}-in"
    app_id = f"bench-state-{tag}"
    for f in admin.create_topics([NewTopic(input_topic, args.partitions, 1),
                                  NewTopic(f"{app_id}-out", args.partitions, 1)]).values():
        f.result()
    gen = data.Generator(args.records, args.keys, args.partitions, args.seed)
    gen.produce(args.bootstrap, input_topic, args.records)
    app = App(args, kind, topology, app_id, input_topic, work)
    offsets = Offsets(args.bootstrap, app_id, input_topic, args.partitions)
    result = {"app": kind, "topology": topology, "round": round_no}
    try:
        # 1. drain
        pid = app.start()
        t0, c0 = wait_for(offsets, lambda c: c > 0, app, 300, "first commit")
        cpu0 = cpu_seconds(pid)
        t1, _ = wait_for(offsets, lambda c: c >= gen.produced, app, 1800, "drain")
        cpu1, hwm = cpu_seconds(pid), vm_hwm_kib(pid)
        drained = gen.produced - c0
        result.update(drain_s=round(t1 - t0, 3), drain_records=drained,
                      records_per_s=round(drained / (t1 - t0)),
                      cpu_us_per_record=round((cpu1 - cpu0) * 1e6 / drained, 2),
                      cpu_total_s=round(cpu1, 2), start_to_drained_s=round(t1 - app.started, 2),
                      peak_rss_mib=round(hwm / 1024, 1))
        app.stop()
        result["check_drain"] = check(args, app, gen)
        # 2. local state deleted
        shutil.rmtree(app.state, ignore_errors=True)
        gen.produce_one_per_partition(args.bootstrap, input_topic)
        app.start()
        t, _ = wait_for(offsets, lambda c: c >= gen.produced, app, 1800, "ready after delete")
        records, seconds, running = app.restore_figures()
        result.update(deleted_ready_s=round(t - app.started, 2), deleted_restored=records,
                      deleted_restore_s=round(seconds, 2),
                      deleted_running_s=None if running is None else round(running, 2))
        app.stop()
        # 3. unclean kill
        before = gen.produced
        gen.produce(args.bootstrap, input_topic, args.kill_chunk)
        app.start()
        wait_for(offsets, lambda c: c >= before + args.kill_chunk // 2, app, 1800,
                 "half of the chunk")
        app.stop(signal.SIGKILL)
        at_kill = None
        while at_kill is None:  # read after the process is gone: nothing commits now
            at_kill = offsets.per_partition()
        ends = offsets.ends()
        result["killed_at_committed"] = sum(at_kill)
        app.start()
        # Ready: every partition with records left has committed past where the kill left it
        # (kstage restores a partition on its first record; Kafka Streams before RUNNING).
        t = wait_progress(offsets, at_kill, ends, app, 1800)
        t_done, _ = wait_for(offsets, lambda c: c >= gen.produced, app, 1800, "drain after kill")
        records, seconds, running = app.restore_figures()
        result.update(killed_ready_s=round(t - app.started, 2), killed_restored=records,
                      killed_restore_s=round(seconds, 2),
                      killed_running_s=None if running is None else round(running, 2))
        app.stop()
        result["check_after_kill"] = check(args, app, gen)
    except Exception as e:  # a failed run is reported, never averaged in
        result["error"] = str(e)
        if app.proc and app.proc.poll() is None:
            app.stop(signal.SIGKILL)
    finally:
        offsets.close()
    result["load_average"] = open("/proc/loadavg").read().split()[:3]
    print(json.dumps(result), flush=True)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--kstage", required=True, help="target/release/kstage")
    p.add_argument("--streams-jar", required=True)
    p.add_argument("--jvm-opts", default="-Xms128m -Xmx512m")
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--kill-chunk", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--topologies", default="count,windowed-count")
    p.add_argument("--apps", default="kstage,kafka-streams",
                   help="kstage, kafka-streams, kstage-before (the --kstage-before binary)")
    p.add_argument("--kstage-before", help="an earlier kstage binary, as app kstage-before "
                   "(a before/after comparison in the same run)")
    p.add_argument("--size-ms", type=int, default=60_000)
    p.add_argument("--grace-ms", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", required=True, help="results file (JSON lines)")
    args = p.parse_args()
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    work = os.path.join(os.path.dirname(os.path.abspath(args.out)), "work")
    apps = args.apps.split(",")
    with open(args.out, "a") as out:
        for round_no in range(1, args.rounds + 1):
            for topology in args.topologies.split(","):
                order = apps if round_no % 2 else list(reversed(apps))
                for kind in order:
                    out.write(json.dumps(run_app(args, admin, kind, topology, round_no, work))
                              + "\n")
                    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
