"""summary.py: the table of a compare.py run (results.jsonl): every run, then per topology the
median over rounds of each app and the ratios against issue 13's targets.

Usage: summary.py results.jsonl

A run with an error or a failed output check is listed with its verdict and left out of the
medians, so a figure never comes from a run that did not do the full, exact work.
"""

import json
import statistics
import sys

COLUMNS = [("records_per_s", "records/s"), ("cpu_us_per_record", "CPU µs/record"),
           ("peak_rss_mib", "peak RSS MiB"), ("deleted_ready_s", "ready after delete s"),
           ("deleted_restored", "restored records"), ("deleted_restore_s", "restore s (own)"),
           ("killed_ready_s", "ready after SIGKILL s (all partitions)"),
           ("killed_restored", "restored records"),
           ("killed_restore_s", "restore s (own)")]


def ok(r):
    return ("error" not in r and r.get("check_drain", "").startswith("exact")
            and r.get("check_after_kill", "").startswith("exact"))


def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def main(path):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    print("| topology | app | round | " + " | ".join(c[1] for c in COLUMNS) +
          " | checks | load avg |")
    print("|" + "---|" * (len(COLUMNS) + 5))
    for r in runs:
        checks = r.get("error") or f"{r.get('check_drain')}; after kill {r.get('check_after_kill')}"
        print(f"| {r['topology']} | {r['app']} | {r['round']} | " +
              " | ".join(fmt(r.get(c[0])) for c in COLUMNS) +
              f" | {checks} | {' '.join(r.get('load_average', []))} |")
    print()
    print("| topology | throughput ×KS (target ≥ 2) | CPU/record KS÷kstage | RSS kstage÷KS "
          "(target ≤ 0.25) | ready after delete KS÷kstage | ready after SIGKILL KS÷kstage "
          "(target ≥ 10) |")
    print("|---|---|---|---|---|---|")
    for topology in dict.fromkeys(r["topology"] for r in runs):
        med = {}
        for app in ("kstage", "kafka-streams", "kstage-before"):
            good = [r for r in runs if r["topology"] == topology and r["app"] == app and ok(r)]
            if good:
                med[app] = {c: statistics.median(r[c] for r in good)
                            for c in ("records_per_s", "cpu_us_per_record", "peak_rss_mib",
                                      "deleted_ready_s", "killed_ready_s")}
        if "kstage" not in med or "kafka-streams" not in med:
            print(f"| {topology} | no exact runs of both apps | | | | |")
            continue
        k, s = med["kstage"], med["kafka-streams"]
        print(f"| {topology} | {k['records_per_s'] / s['records_per_s']:.2f} | "
              f"{s['cpu_us_per_record'] / k['cpu_us_per_record']:.2f} | "
              f"{k['peak_rss_mib'] / s['peak_rss_mib']:.3f} | "
              f"{s['deleted_ready_s'] / k['deleted_ready_s']:.2f} | "
              f"{s['killed_ready_s'] / k['killed_ready_s']:.2f} |")
        if "kstage-before" in med:
            b = med["kstage-before"]
            print(f"| {topology}, kstage-before | {b['records_per_s'] / s['records_per_s']:.2f} | "
                  f"{s['cpu_us_per_record'] / b['cpu_us_per_record']:.2f} | "
                  f"{b['peak_rss_mib'] / s['peak_rss_mib']:.3f} | "
                  f"{s['deleted_ready_s'] / b['deleted_ready_s']:.2f} | "
                  f"{s['killed_ready_s'] / b['killed_ready_s']:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1])
