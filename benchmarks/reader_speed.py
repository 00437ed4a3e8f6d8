"""Reading speed of ``read_dataset`` for shipped specs, interleaved between two source trees.

Usage: python benchmarks/reader_speed.py --trees /work/main/src src --specs hillstrom census_kdd --repeats 5

Each repeat runs one fresh process per tree (in turn, so machine noise hits both alike) that times
``read_dataset`` once after a warm-up read; it prints min and median seconds per tree and spec.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CHILD = """
import time
from msmtrec.data.reader import read_dataset
from msmtrec.data.spec import load_spec
spec = load_spec({spec!r})
read_dataset(spec)
t0 = time.perf_counter()
raw = read_dataset(spec)
print(time.perf_counter() - t0, len(raw.frame))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trees", nargs="+", required=True, help="src folders to compare")
    ap.add_argument("--specs", nargs="+", default=["hillstrom", "census_kdd"])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for spec in args.specs:
            for tree in args.trees:
                env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
                out = subprocess.run(
                    [sys.executable, "-c", CHILD.format(spec=spec)], env=env, capture_output=True, text=True, check=True
                ).stdout.split()
                times.setdefault((spec, tree), []).append(float(out[0]))
    print(f"{'spec':<12} {'tree':<28} {'min s':>8} {'median s':>9}")
    for (spec, tree), ts in times.items():
        print(f"{spec:<12} {tree:<28} {min(ts):8.3f} {statistics.median(ts):9.3f}")


if __name__ == "__main__":
    main()
