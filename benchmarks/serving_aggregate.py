"""Aggregate interleaved load runs (benchmarks/results/load_{tree}_c{c}[_distinct]_r{round}.json, written by
benchmarks/serving_interleave.sh) into the markdown table of docs/serving.md: max / median of requests/s,
min / median of latencies and server CPU per request."""

from __future__ import annotations

import glob
import json
import re
import statistics
from collections import defaultdict


def main() -> None:
    runs: dict[tuple[int, bool, str], list[dict]] = defaultdict(list)
    for f in sorted(glob.glob("benchmarks/results/load_*_r*.json")):
        m = re.search(r"load_(\w+?)_c(\d)(_distinct)?_r(\d)\.json", f)
        if m is None:
            continue
        tree, c, distinct, _ = m.groups()
        phase = next(iter(json.load(open(f))["phases"].values()))
        runs[(int(c), bool(distinct), tree)].append(phase)

    def low(xs: list[float]) -> str:
        return f"{min(xs):.1f} / {statistics.median(xs):.1f}"

    def high(xs: list[float]) -> str:
        return f"{max(xs):.1f} / {statistics.median(xs):.1f}"

    print("| clients | candidate rows | code | runs | req/s (max / median) | p50 ms (min / median) "
          "| p99 ms (min / median) | model p50 ms | server CPU ms/req (min / median) | steal |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (c, distinct, tree), ps in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2] != "main")):
        rows = "distinct" if distinct else "repeating (≤ 28)"
        code = "before (main)" if tree == "main" else "after"
        print(f"| {c} | {rows} | {code} | {len(ps)} | {high([p['rps'] for p in ps])} "
              f"| {low([p['p50_ms'] for p in ps])} | {low([p['p99_ms'] for p in ps])} "
              f"| {low([p['server_model_p50_ms'] for p in ps])} | {low([p['server_cpu_ms_per_request'] for p in ps])} "
              f"| {max(p['host_steal_pct'] for p in ps):.0f} % |")


if __name__ == "__main__":
    main()
