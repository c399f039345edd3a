#!/usr/bin/env python3
"""Print one table from bench JSON reports (medfm and peers): per tool, the median over
rounds of each stage's median, and medfm's ratio to each peer (below 1: medfm is faster)."""
import json
import statistics
import sys
from collections import defaultdict

reports = defaultdict(list)
for path in sys.argv[1:]:
    r = json.load(open(path))
    reports[r["tool"]].append(r)

stages = ["cold_start_ms", "encoder", "decoder", "end_to_end", "peak_rss_mib"]


def value(r, stage):
    v = r[stage]
    return v["median_ms"] if isinstance(v, dict) else v


rows = {tool: {s: statistics.median(value(r, s) for r in rs) for s in stages} for tool, rs in reports.items()}
medfm = next(t for t in rows if t == "medfm")
print(f"{'tool':<28}" + "".join(f"{s:>15}" for s in ["cold start ms", "encoder ms", "decoder ms", "end-to-end ms", "peak RSS MiB"]))
for tool, row in rows.items():
    print(f"{tool:<28}" + "".join(f"{row[s]:>15.1f}" for s in stages))
for tool, row in rows.items():
    if tool == medfm:
        continue
    print(f"{'medfm / ' + tool:<28}" + "".join(f"{rows[medfm][s] / row[s]:>14.2f}x" for s in stages))
print(f"(rounds: {', '.join(f'{t} {len(r)}' for t, r in reports.items())}; "
      f"threads {reports[medfm][0]['threads']}; mask areas {sorted({r['area'] for rs in reports.values() for r in rs})})")
