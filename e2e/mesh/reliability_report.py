"""Summarises e2e/.state/mesh/reliability.jsonl (one line per fault run of
tests/test_reliability.py, the ambient faults of tests/test_ambient.py and the upgrades of
tests/test_upgrades.py) as a Markdown table: per scenario the number of runs, the records
moved, losses and duplicates, and the stalls as median [min-max].

    .tools/venv/bin/python e2e/mesh/reliability_report.py [FILE]
"""

import json
import statistics
import sys
from collections import OrderedDict
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[1] / ".state" / "mesh" / "reliability.jsonl"
SPREAD = ("producer_stall_s", "consumer_stall_s", "broker_down_s", "restart_s", "sidecar_down_s",
          "waypoint_down_s", "upgrade_running_after_s", "rollback_running_after_s")
SUMS = ("records", "acked", "read_back", "lost", "duplicates", "client_disconnects", "client_errors",
        "client_link_events", "new_authentications",
        "new_connections_while_away", "authenticated_while_away", "reauthentications_after_push")


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} [{min(values):.1f}–{max(values):.1f}]"


def main(argv):
    if len(argv) > 1:
        sys.exit("usage: reliability_report.py [reliability.jsonl]")
    path = Path(argv[0]) if argv else DEFAULT
    if not path.is_file():
        sys.exit(f"reliability_report: no {path} (run e2e/mesh/run -k test_reliability first)")
    runs = OrderedDict()
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            runs.setdefault(r["scenario"], []).append(r)
    cols = [c for c in SPREAD + SUMS if any(c in r for rs in runs.values() for r in rs)]
    print("| scenario | runs | " + " | ".join(c.replace("_", " ") for c in cols) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in cols) + " |")
    for scenario, rs in runs.items():
        cells = []
        for c in cols:
            if c in SPREAD:
                cells.append(spread([r.get(c) for r in rs]))
            else:
                vals = [r[c] for r in rs if c in r]
                cells.append(str(sum(vals)) if vals else "-")
        print(f"| {scenario} | {len(rs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
