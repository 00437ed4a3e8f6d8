"""Training throughput of HEF and PLE at a large batch, next to the machine's measured matmul peak.

For each model: samples/s of full training steps (forward, backward, Adam) on batches already in memory
(so the data path is not measured), and the achieved GFLOP/s = ``model.flops_per_sample() × 3 × samples/s``
(backward ≈ 2× forward). The peak is the best of a few timed ``torch.matmul`` of two ``n × n`` float32
matrices (``2n³`` FLOPs each), with the same thread count. The ratio says how far the model is from what
the hardware can do; recommendation models are usually far below it (small matmuls, embedding gathers,
per-scenario indexing, optimizer updates of large tables).

The schema is the shipped ``synthetic`` spec fitted on a small simulated sample, so field counts and
vocabulary sizes are those of the scale benchmark.

    python benchmarks/scale_throughput.py --models hef ple --batch-size 4096
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from msmtrec.data.stream import ParquetStream, fit_preprocessor, row_groups
from msmtrec.data.synth import SynthConfig, synthesize
from msmtrec.models import build_model, registered_models


def matmul_peak_gflops(n: int = 4096, repeats: int = 5) -> float:
    """Best observed float32 GFLOP/s of an ``n × n`` matmul (the practical peak of this machine)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)  # warm-up (thread pool, allocator)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def step_throughput(name: str, schema, batches: list[dict], steps: int, warmup: int = 2) -> dict:  # noqa: ANN001
    """Samples/s of ``steps`` training steps cycling over ``batches``."""
    torch.manual_seed(0)
    model = build_model(name, schema)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    binary = [t.type == "binary" for t in schema.tasks]
    model.train()

    def step(b: dict) -> None:
        out = model(b)
        y = b["labels"]
        loss = model.regularization_loss()
        for j, task in enumerate(schema.task_names):
            f = F.binary_cross_entropy_with_logits if binary[j] else F.mse_loss
            loss = loss + f(out[task], y[:, j])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(warmup):
        step(batches[i % len(batches)])
    t0 = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    dt = time.perf_counter() - t0
    bs = int(batches[0]["labels"].shape[0])
    sps = steps * bs / dt
    flops = model.flops_per_sample()
    return {
        "model": name,
        "parameters": model.num_parameters(),
        "flops_per_sample_forward": flops,
        "samples_per_second": sps,
        "seconds_per_step": dt / steps,
        "achieved_gflops": flops * 3 * sps / 1e9,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["hef", "ple"])
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default).")
    ap.add_argument("--matmul-n", type=int, default=4096)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        res = synthesize(SynthConfig(rows=4 * args.batch_size, users=50_000, items=20_000, seed=1), Path(tmp))
        pre = fit_preprocessor("synthetic", res.files)
        stream = ParquetStream(row_groups(res.files), pre, prefetch=0)
        batches = list(stream.batches(args.batch_size, shuffle=True, drop_last=True))
    peak = matmul_peak_gflops(args.matmul_n)
    rows = []
    for name in args.models:
        if name not in registered_models():
            print(f"model {name!r} is not registered; skipped", file=sys.stderr)
            continue
        r = step_throughput(name, pre.schema, batches, args.steps)
        r["fraction_of_peak"] = r["achieved_gflops"] / peak
        rows.append(r)
    out = {
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "matmul_peak_gflops": peak,
        "models": rows,
    }
    print(
        f"matmul peak ({args.matmul_n}x{args.matmul_n} float32, {torch.get_num_threads()} threads): {peak:,.1f} GFLOP/s"
    )
    print(f"{'model':<14}{'params':>12}{'MFLOP/sample':>14}{'samples/s':>12}{'GFLOP/s':>10}{'of peak':>9}")
    for r in rows:
        print(
            f"{r['model']:<14}{r['parameters']:>12,}{r['flops_per_sample_forward'] / 1e6:>14.2f}"
            f"{r['samples_per_second']:>12,.0f}{r['achieved_gflops']:>10.2f}{100 * r['fraction_of_peak']:>8.1f}%"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
