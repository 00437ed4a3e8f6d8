"""Train a model for one epoch over simulated Parquet shards streamed from disk; report samples/s and peak RSS.

Shows that training memory does not grow with the row count: the data never sits in memory whole
(:class:`msmtrec.data.stream.ParquetStream` reads a row group at a time through a shuffle buffer) and the
id embeddings are hashed (1M users into 2^18 rows). The loop is deliberately minimal (Adam, BCE-with-logits
for binary tasks, MSE for regression, the model's own regulariser) so the figure measures the data path
and the model, not trainer features.

Quality is tracked prequentially: for the last ``--eval-fraction`` of the epoch each batch is scored
*before* the optimizer step that uses it, so the click / purchase AUCs printed are on rows the model has
not been trained on yet (no held-out split to read).

    python benchmarks/scale_train.py --data /tmp/synth10m              # generates it first if missing
    python benchmarks/scale_train.py --data /tmp/synth10m --model ple --batch-size 4096
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from msmtrec.data.stream import ParquetStream, fit_preprocessor, row_groups
from msmtrec.data.synth import SynthConfig, synthesize
from msmtrec.models import build_model, registered_models


def peak_rss_mb() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Rank AUC (ties averaged); NaN when only one class is present."""
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    s = score[order]
    # average ranks of ties
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/tmp/msmtrec-synth-10m", help="Folder of part-*.parquet (made if missing).")
    ap.add_argument("--rows", type=int, default=10_000_000, help="Rows to simulate when --data is missing.")
    ap.add_argument("--model", default="hef")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--shuffle-buffer", type=int, default=200_000)
    ap.add_argument("--fit-rows", type=int, default=500_000, help="Rows sampled to fit the encoders.")
    ap.add_argument("--max-rows", type=int, default=None, help="Stop the epoch after this many rows.")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default).")
    ap.add_argument("--eval-fraction", type=float, default=0.05)
    ap.add_argument("--json", default=None, help="Also write the results here.")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    data = Path(args.data)
    synth_s = None
    if not list(data.glob("part-*.parquet")):
        print(f"simulating {args.rows:,} rows into {data} ...", file=sys.stderr)
        res = synthesize(SynthConfig(rows=args.rows), data)
        synth_s = res.seconds
        print(f"  {res.seconds:.1f} s ({res.rows_per_second:,.0f} rows/s)", file=sys.stderr)
    files = sorted(str(p) for p in data.glob("part-*.parquet"))

    t0 = time.perf_counter()
    pre = fit_preprocessor("synthetic", files, max_rows=args.fit_rows)
    fit_s = time.perf_counter() - t0
    stream = ParquetStream(row_groups(files), pre, shuffle_buffer=args.shuffle_buffer)
    if args.max_rows:
        stream = stream.limit(args.max_rows)
    schema = pre.schema

    model_name = args.model
    note = ""
    if model_name not in registered_models():
        note = f"model {model_name!r} is not registered; used shared_bottom"
        model_name = "shared_bottom"
    model = build_model(model_name, schema)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, fused=True)  # as the trainer builds it
    binary = torch.tensor([t.type == "binary" for t in schema.tasks])
    weights = torch.tensor([t.weight for t in schema.tasks])
    n_batches = stream.num_batches(args.batch_size)
    eval_from = int(n_batches * (1 - args.eval_fraction))
    scored: dict[str, list[np.ndarray]] = {"click": [], "purchase": [], "y_click": [], "y_purchase": []}
    rss_before = peak_rss_mb()
    print(
        f"{model_name}: {model.num_parameters():,} parameters, {len(stream):,} rows, {n_batches:,} batches "
        f"of {args.batch_size}, {len(stream.pieces)} row groups; encoders fitted in {fit_s:.1f} s",
        file=sys.stderr,
    )

    model.train()
    seen, loss_sum, t0 = 0, 0.0, time.perf_counter()
    last_print = t0
    for i, batch in enumerate(stream.batches(args.batch_size, shuffle=True, seed=0, epoch=0)):
        out = model(batch)
        y = batch["labels"]
        losses = []
        for j, name in enumerate(schema.task_names):
            if binary[j]:
                losses.append(F.binary_cross_entropy_with_logits(out[name], y[:, j]))
            else:
                losses.append(F.mse_loss(out[name], y[:, j]))
        loss = (torch.stack(losses) * weights).sum() + model.regularization_loss()
        if i >= eval_from:
            for name in ("click", "purchase"):
                scored[name].append(out[name].detach().numpy())
                scored[f"y_{name}"].append(y[:, schema.task_names.index(name)].numpy())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n = int(y.shape[0])
        seen += n
        loss_sum += float(loss.detach()) * n
        now = time.perf_counter()
        if now - last_print > 30:
            last_print = now
            print(
                f"  {seen:,} rows  {seen / (now - t0):,.0f} samples/s  loss {loss_sum / seen:.4f}  "
                f"peak RSS {peak_rss_mb():,.0f} MB",
                file=sys.stderr,
            )
    train_s = time.perf_counter() - t0
    result = {
        "model": model_name,
        "note": note,
        "rows": seen,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "shuffle_buffer": args.shuffle_buffer,
        "synth_seconds": synth_s,
        "fit_seconds": fit_s,
        "train_seconds": train_s,
        "samples_per_second": seen / train_s,
        "mean_loss": loss_sum / max(seen, 1),
        "prequential_auc": {
            name: auc(np.concatenate(scored[f"y_{name}"]), np.concatenate(scored[name]))
            for name in ("click", "purchase")
            if scored[name]
        },
        "peak_rss_mb_before_training": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "parameters": model.num_parameters(),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
