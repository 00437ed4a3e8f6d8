"""Training samples/s of HEF and the baselines, as a ratio to a fixed pure-PyTorch reference workload.

Each model runs the trainer's own step (``TrainingModule`` = model + ``MultiTaskLoss`` + regulariser,
``build_optimizer``'s fused Adam with its parameter groups, ``zero_grad``, ``backward``, gradient clipping at
the default 5.0, ``step``, and the per-task loss bookkeeping) on Hillstrom training batches of 1,024 rows
already in memory, so the data path is not measured. Between every timed block of every model the same
process times a *reference* workload that never changes with the code under test: one embedding table
(8 fields × 16 dims) and a 3-layer MLP (128 → 256 → 128 → 1) with BCE and Adam, on random ids. A model's
figure is ``samples/s(model) / samples/s(reference)`` measured back to back, so machine noise (other
processes on a shared VM, frequency changes) cancels; min and median over the rounds are printed, with the
absolute samples/s next to them.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --models hef star mmoe ple
    ... --set hef.dropout=0          # a model override, as msmtrec train --set takes them

One thread by default (``--threads``), the project's training default.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from msmtrec.data.sources import load_data
from msmtrec.models import build_model
from msmtrec.models.base import MultiTaskModel
from msmtrec.training.config import TrainConfig
from msmtrec.training.loss import MultiTaskLoss
from msmtrec.training.trainer import TrainingModule, build_optimizer, embedding_parameters

Step = Callable[[], None]


def reference_step(batch_size: int, seed: int = 0) -> Step:
    """The fixed yardstick: embedding (8 fields × 16) + MLP 128 → 256 → 128 → 1, BCE, Adam (fused)."""
    g = torch.Generator().manual_seed(seed)
    ids = [torch.randint(0, 10_000, (batch_size, 8), generator=g) for _ in range(8)]
    ys = [torch.randint(0, 2, (batch_size,), generator=g).float() for _ in range(8)]
    torch.manual_seed(seed)
    emb = nn.Embedding(10_000, 16)
    mlp = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 1))
    params = [*emb.parameters(), *mlp.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)
    state = {"i": 0}

    def step() -> None:
        i = state["i"] % len(ids)
        state["i"] += 1
        logit = mlp(emb(ids[i]).flatten(1)).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logit, ys[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def model_step(
    name: str, loaded: Any, batches: list[dict[str, torch.Tensor]], overrides: dict[str, Any], compile: bool = False
) -> Step:
    """The trainer's step (see ``Trainer.fit``) for a freshly built ``name``, cycling over ``batches``."""
    torch.manual_seed(0)
    schema = loaded.schema
    model = build_model(name, schema, overrides)
    cfg = TrainConfig()
    weights = cfg.task_weight_vector(schema.task_names, [t.weight for t in schema.tasks])
    module = TrainingModule(model, MultiTaskLoss(schema, weights, cfg.loss_weighting, None))
    module.train()
    optimizer = build_optimizer(module, cfg)
    forward = torch.compile(module) if compile else module
    sums = torch.zeros(len(schema.tasks) + 1, dtype=torch.float64)
    state = {"i": 0}

    def step() -> None:
        nonlocal sums
        batch = batches[state["i"] % len(batches)]
        state["i"] += 1
        total, per_task = forward(batch)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
        optimizer.step()
        sums += torch.cat([per_task.detach(), total.detach().reshape(1)]).double() * batch["labels"].shape[0]

    step.dense_params = dense_parameters(model)  # type: ignore[attr-defined]
    return step


def dense_parameters(model: MultiTaskModel) -> int:
    """Parameters outside embedding tables (the trainer's own split of them): the part a parameter budget
    compares, since every model shares the same tables."""
    return model.num_parameters() - sum(p.numel() for p in embedding_parameters(model))


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""``cpu`` counts only the time this process ran (one thread): steadier than wall time on a shared host."""


def samples_per_second(step: Step, steps: int, batch_size: int, clock: str = "wall") -> float:
    now = CLOCKS[clock]
    t0 = now()
    for _ in range(steps):
        step()
    return steps * batch_size / (now() - t0)


def parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """``model.key=value`` → ``{model: {key: value}}`` (values parsed as Python literals where possible)."""
    import ast

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, value = item.split("=", 1)
        model, key = target.split(".", 1)
        try:
            parsed: Any = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        out.setdefault(model, {})[key] = parsed
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["hef", "star", "mmoe", "ple"])
    ap.add_argument("--data", default="hillstrom")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="cpu: process CPU time (shared hosts)")
    ap.add_argument("--set", nargs="*", default=[], help="model.key=value overrides, e.g. hef.dropout=0")
    ap.add_argument("--label", nargs="*", default=None, help="display names, one per --models entry")
    ap.add_argument("--compile", nargs="*", default=[], help="labels whose forward runs under torch.compile")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_data(args.data, seed=0)
    train = loaded.splits["train"]
    batches = list(train.batches(args.batch_size, shuffle=True, seed=0, epoch=0))[:40]
    batches = [b for b in batches if b["labels"].shape[0] == args.batch_size]
    sets = parse_sets(args.set)
    labels = args.label or args.models
    steps = {
        label: model_step(m, loaded, batches, sets.get(label, sets.get(m, {})), label in args.compile)
        for label, m in zip(labels, args.models, strict=True)
    }
    ref = reference_step(args.batch_size)
    for s in [ref, *steps.values()]:  # warm-up: allocator, thread pool, first-call costs
        for _ in range(3):
            s()
    ratios: dict[str, list[float]] = {k: [] for k in steps}
    absolute: dict[str, list[float]] = {k: [] for k in [*steps, "reference"]}
    for _ in range(args.rounds):
        for label, step in steps.items():
            r0 = samples_per_second(ref, args.steps, args.batch_size, args.clock)
            m = samples_per_second(step, args.steps, args.batch_size, args.clock)
            r1 = samples_per_second(ref, args.steps, args.batch_size, args.clock)
            ratios[label].append(m / ((r0 + r1) / 2))
            absolute[label].append(m)
            absolute["reference"].extend([r0, r1])
    print(
        f"{args.data}, batch {args.batch_size}, {args.threads} thread(s), {args.rounds} rounds × {args.steps} steps,"
        f" {args.clock} clock"
    )
    print(
        f"{'model':<16} {'ratio min':>10} {'ratio med':>10} {'samples/s min':>14} {'samples/s med':>14}"
        f" {'dense params':>13}"
    )
    for label, step in steps.items():
        r, a = ratios[label], absolute[label]
        med_r, med_a = statistics.median(r), statistics.median(a)
        dense = step.dense_params  # type: ignore[attr-defined]
        print(f"{label:<16} {min(r):>10.3f} {med_r:>10.3f} {min(a):>14,.0f} {med_a:>14,.0f} {dense:>13,}")
    a = absolute["reference"]
    print(f"{'reference':<16} {1.0:>10.3f} {1.0:>10.3f} {min(a):>14,.0f} {statistics.median(a):>14,.0f}")


if __name__ == "__main__":
    main()
