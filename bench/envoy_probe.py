"""What a running Envoy shows from outside, its admin /stats and its /proc, read one way by
the benchmark (bench/harness.py) and the end-to-end tests (e2e/tests/)."""

import itertools
import re
import urllib.request
from pathlib import Path


def stats(admin, regex=""):
    """Envoy's numeric stats from its admin `/stats` (only those matching `regex`)."""
    url = f"http://{admin}/stats" + (f"?filter={regex}" if regex else "")
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        name, sep, value = line.rpartition(": ")
        if sep and re.fullmatch(r"-?\d+", value.strip()):
            out[name] = int(value)
    return out


def wasm_linear_memory_kib(pid) -> tuple[int, int]:
    """(resident KiB, size KiB) of the Wasm VMs' linear memories in process `pid`: V8 reserves
    several GiB per memory and makes the accessible part read-write, so each memory is a rw-p
    mapping directly followed by an inaccessible mapping of at least 4 GiB."""
    maps, cur = [], None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
        if m:
            cur = {"start": int(m[1], 16), "end": int(m[2], 16), "perm": m[3], "rss": 0}
            maps.append(cur)
        elif line.startswith("Rss:") and cur is not None:
            cur["rss"] = int(line.split()[1])
    rss = size = 0
    for prev, nxt in itertools.pairwise(maps):
        if (prev["perm"].startswith("rw") and nxt["perm"].startswith("---")
                and prev["end"] == nxt["start"] and nxt["end"] - nxt["start"] >= 4 << 30):
            rss += prev["rss"]
            size += (prev["end"] - prev["start"]) // 1024
    return rss, size
