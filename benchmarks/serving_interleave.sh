#!/bin/bash
# Interleaved before/after load runs: BEFORE_SRC=/path/to/other/tree/src benchmarks/serving_interleave.sh ROUND
# (one JSON per run under benchmarks/results/; then python benchmarks/serving_aggregate.py)
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
round=$1
for distinct in "" "--distinct"; do
  for c in 1 4; do
    for tree in main serving; do
      if [ $tree = main ]; then src=${BEFORE_SRC:?set BEFORE_SRC to the src/ of the tree to compare with}; else src=$PWD/src; fi
      tag=${tree}_c${c}${distinct:+_distinct}_r${round}
      PYTHONPATH=$src timeout 300 ${PYTHON:-.venv/bin/python} benchmarks/load_serving.py --model hef \
        --concurrency $c --duration 20 --candidates 1000 --format columns $distinct \
        --json benchmarks/results/load_$tag.json > benchmarks/results/load_$tag.txt 2>&1
      echo "$tag rc=$? $(date -u +%H:%M:%S)"
    done
  done
done
