"""smaps.py SMAPS_FILE: where a process's resident memory is, from a /proc/<pid>/smaps copy.

Groups the mappings: glibc malloc arenas (anonymous mappings of up to 64 MiB, 64 MiB aligned,
as glibc's non-main arenas are), the main heap ([heap]), thread stacks and other anonymous
memory, the binary and libraries, and other files (redb's store files). Prints each group's
resident MiB and the largest anonymous mappings, for docs/BENCHMARKS.md ("Where the RSS goes").
benches/state/profile.py writes the smaps copies (KSTAGE_PROFILE_DIR/smaps-*.txt).
"""
import re
import sys

ARENA = 64 << 20


def mappings(path):
    cur = None
    for line in open(path):
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$", line)
        if m:
            if cur:
                yield cur
            cur = dict(start=int(m.group(1), 16), end=int(m.group(2), 16), perms=m.group(3),
                       name=m.group(4).strip(), rss=0)
        elif line.startswith("Rss:") and cur:
            cur["rss"] = int(line.split()[1]) * 1024
    if cur:
        yield cur


def main():
    maps = list(mappings(sys.argv[1]))
    groups, anon = {}, []
    for i, m in enumerate(maps):
        name = m["name"]
        if name == "[heap]":
            g = "main heap ([heap], brk)"
        elif name.startswith("[stack"):
            g = "main stack"
        elif name.startswith("/"):
            g = "binary and libraries" if (".so" in name or "kstage" in name.rsplit("/", 1)[-1]) \
                else f"file {name.rsplit('/', 1)[-1]}"
        elif name.startswith("["):
            g = "kernel ([vdso], ...)"
        else:
            size = m["end"] - m["start"]
            # A glibc arena heap: a 64 MiB-aligned reservation whose used part is read-write
            # and the rest PROT_NONE, so the rw part starts on a 64 MiB boundary.
            if m["start"] % ARENA == 0 and size <= ARENA and "rw" in m["perms"]:
                g = "malloc arenas (threads')"
            else:
                g = "other anonymous (stacks, mmap'd large blocks)"
            anon.append((m["rss"], size, g, hex(m["start"])))
        groups[g] = groups.get(g, 0) + m["rss"]
    total = sum(groups.values())
    print(f"total resident: {total / 2**20:.1f} MiB")
    for g, rss in sorted(groups.items(), key=lambda kv: -kv[1]):
        if rss >= 1 << 20:
            print(f"  {rss / 2**20:7.1f} MiB  {g}")
    print("largest anonymous mappings (resident MiB / mapped MiB, group, address):")
    for rss, size, g, start in sorted(anon, reverse=True)[:8]:
        print(f"  {rss / 2**20:7.1f} / {size / 2**20:6.1f}  {g}  {start}")


if __name__ == "__main__":
    main()
