"""profile.py BIN TOPOLOGY RECORDS KEYS [perf]: one kstage drain of a fresh input, measured.

Prints records/s, CPU us per record and VmHWM as one JSON line, then checks the output against
the truth (compare.check). With `perf`, records the stage with `perf record -e cpu-clock -g`.
For instruction counts give benches/state/profile-wrap.sh as BIN with WRAP_BIN=<kstage> and
WRAP_VG=1 (callgrind). Needs KSTAGE_TEST_BOOTSTRAP (a running broker); writes into
KSTAGE_PROFILE_DIR (default /tmp/kstage-profile): smaps, perf data, the stage's work dir.
"""
import os, sys, time, signal, subprocess, json, types
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare, data
from confluent_kafka.admin import AdminClient, NewTopic
binary, topology, records, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
mode = sys.argv[5] if len(sys.argv) > 5 else ""
boot = os.environ["KSTAGE_TEST_BOOTSTRAP"]
OUT = os.environ.get("KSTAGE_PROFILE_DIR", "/tmp/kstage-profile")
os.makedirs(OUT, exist_ok=True)
args = types.SimpleNamespace(bootstrap=boot, kstage=binary, kstage_before=binary, size_ms=60000,
                             grace_ms=10000, partitions=6)
admin = AdminClient({"bootstrap.servers": boot})
tag = f"prof-{topology}-{os.getpid()}-{int(time.time())}"
inp, app_id = f"{tag}-in", tag
for f in admin.create_topics([NewTopic(inp, 6, 1), NewTopic(f"{app_id}-out", 6, 1)]).values():
    f.result()
gen = data.Generator(records, keys, 6, 7)
gen.produce(boot, inp, records)
work = f"{OUT}/work-{tag}"
app = compare.App(args, "kstage", topology, app_id, inp, work)
time.sleep(3)
offsets = compare.Offsets(boot, app_id, inp, 6)
pid = app.start()
t0, c0 = compare.wait_for(offsets, lambda c: c > 0, app, 300, "first commit")
cpu0 = compare.cpu_seconds(pid)
perf = None
if mode == "perf":
    perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-p", str(pid), "-o",
                             f"{OUT}/perf-{topology}.data"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
t1, _ = compare.wait_for(offsets, lambda c: c >= gen.produced, app, 1800, "drain")
cpu1, hwm = compare.cpu_seconds(pid), compare.vm_hwm_kib(pid)
if perf:
    perf.send_signal(signal.SIGINT); perf.wait()
status = {l.split(":")[0]: l.split(":")[1].strip() for l in open(f"/proc/{pid}/status") if l.startswith(("VmHWM", "VmRSS", "RssAnon", "RssFile", "Threads"))}
smaps = open(f"/proc/{pid}/smaps").read()
open(f"{OUT}/smaps-{topology}-{int(time.time())}.txt", "w").write(smaps)
drained = gen.produced - c0
print(json.dumps(dict(binary=binary, topology=topology, records_per_s=round(drained/(t1-t0)),
      cpu_us=round((cpu1-cpu0)*1e6/drained, 2), hwm_mib=round(hwm/1024, 1), status=status,
      load=open("/proc/loadavg").read().split()[:3])))
app.stop()
print(compare.check(args, app, gen))
offsets.close()
