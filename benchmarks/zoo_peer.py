"""Side by side: our AITM and torch-rechub's AITM on identical Hillstrom splits, features, sizes and trainer.

Both train on the binary tasks only (visit, conversion inside visit: rechub's AITM is binary-only) with the
same encoded tensors, embedding size, tower sizes, dropout, batches, optimiser and early stopping on the
validation mean AUC (see ``msmtrec.benchmark.peer`` for how the peer is fed). Prints validation and test
mean AUC (over scenario × task cells) per seed; the test split is only read after training.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/zoo_peer.py --seeds 0 1 2 --epochs 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from msmtrec.benchmark import peer
from msmtrec.data.pipeline import prepare_dataset
from msmtrec.models import build_model
from msmtrec.training import TrainConfig, Trainer
from msmtrec.training.trainer import seed_everything

SIZES = {"embed_dim": 16, "dropout": 0.1, "tower_dims": (64, 32)}


def run(kind: str, seed: int, epochs: int, data) -> tuple[float, float, float]:  # noqa: ANN001
    schema, idx = peer.binary_view(data.schema)
    splits = peer.binary_splits(data.splits, idx)
    seed_everything(seed)
    if kind == "ours":
        model = build_model("aitm", schema, dict(SIZES))
    else:
        model = peer.build_peer(schema, "aitm", dict(SIZES), {})
    cfg = TrainConfig(batch_size=1024, lr=1e-3, max_epochs=epochs, patience=2, progress=False, device="cpu")
    trainer = Trainer(cfg, seed=seed)
    start = time.perf_counter()
    fit = trainer.fit(model, splits)
    seconds = time.perf_counter() - start
    valid = max(r["valid/mean_auc"] for r in fit.history)
    test = trainer.evaluate(model, splits["test"])["mean_auc"]
    return valid, test, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = prepare_dataset("hillstrom", seed=0)
    results: dict[str, list[tuple[float, float, float]]] = {"ours": [], "rechub": []}
    for seed in args.seeds:
        for kind in results:  # interleaved, so machine load affects both alike
            valid, test, secs = run(kind, seed, args.epochs, data)
            results[kind].append((valid, test, secs))
            line = f"seed {seed} {kind:7s} valid mean AUC {valid:.4f}  test mean AUC {test:.4f}  ({secs:.0f} s)"
            print(line, flush=True)
    for kind, rows in results.items():
        v, t = [r[0] for r in rows], [r[1] for r in rows]
        sd = statistics.stdev(t) if len(t) > 1 else 0.0
        print(f"{kind:7s} valid {statistics.mean(v):.4f}  test {statistics.mean(t):.4f} ± {sd:.4f} over {len(t)} seeds")


if __name__ == "__main__":
    main()
