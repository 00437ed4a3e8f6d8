"""Side by side: our scenario models and Scenario-Wise-Rec's on identical Hillstrom splits, sizes and trainer.

Scenario-Wise-Rec (github.com/Xiaopengli1/Scenario-Wise-Rec, not on PyPI) is imported at run time from the
folder given by ``--swr`` (a checkout holding the ``scenario_wise_rec`` package); none of its code is copied.
Its multi-domain models are single-task, so both sides train on one binary task (``visit``) with the
scenario (``segment``) as Scenario-Wise-Rec's ``domain_indicator``. How their networks are fed:

* one ``SparseFeature`` per sparse field of our schema (our vocabulary size, embedding size 16) and one
  ``DenseFeature`` per dense column (our normalised values; their ``EmbeddingLayer`` appends them to the
  flattened embeddings), all views of our batch tensors;
* models with a scenario-feature slot (AdaSparse and EPNet ``sce_features``, PPNet ``id_features``, M2M
  ``domain_feature``) get the scenario index as a ``SparseFeature`` of size 16 there; Sarnet and HamurSmall
  route on ``domain_indicator`` only; AdaptDHM routes by learned clusters, so, as in Scenario-Wise-Rec's own
  examples, the scenario embedding is one more of its input fields;
* M2M embeds only ``features`` in its ``EmbeddingLayer``, so the scenario is also one of its fields (as in its
  examples), and it gets no dense columns: its ``nn.Transformer(d_model=Σ embed_dim, nhead=4)`` needs a width
  divisible by 4 (7 fields × 16 = 112 is; + 2 dense columns = 114 is not). Its transformer also receives the
  2-D ``[batch, features]`` matrix, which PyTorch reads as one unbatched sequence of ``batch`` tokens, so it
  attends across the rows of a batch: we keep that as shipped; both sides therefore evaluate with batches of
  1,024 rows, like training.

Their networks end in a sigmoid; the wrapper turns the probability back into a logit (clamped to
[1e-7, 1 - 1e-7]) so our BCE-with-logits loss and metrics apply. Both sides train through our
:class:`~msmtrec.training.Trainer`: batches of 1,024 in the seed's order, Adam, lr 1e-3, gradient clipping 5,
early stopping on the validation mean AUC (mean over scenarios of ``visit``; patience 3, at most 50 epochs),
best epoch restored. The test split is read once, after training. Results go to a JSON-lines file, one row
per (model, side, seed), so an interrupted run resumes where it stopped.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python benchmarks/swr_peer.py --swr /work/swr \\
        --models adasparse,sarnet,m2m,adaptdhm,epnet,ppnet,hamur --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from msmtrec.benchmark import peer
from msmtrec.data.dataset import TensorDataset
from msmtrec.data.pipeline import prepare_dataset
from msmtrec.data.schema import Batch, Schema
from msmtrec.models import build_model
from msmtrec.models.base import ModelConfig, MultiTaskModel
from msmtrec.training import TrainConfig, Trainer
from msmtrec.training.trainer import seed_everything

TASK = "visit"
EMBED = 16
DROPOUT = 0.1
DOMAIN = "domain_indicator"
EPS = 1e-7

# Our side: each model's defaults, with the shared embedding size and dropout. The hidden sizes these resolve
# to are restated next to Scenario-Wise-Rec's in SIZES_DOC (and in docs/benchmarks.md).
OURS: dict[str, dict[str, Any]] = {name: {"embed_dim": EMBED, "dropout": DROPOUT} for name in
                                   ("adasparse", "sarnet", "m2m", "adaptdhm", "epnet", "ppnet", "hamur")}

SIZES_DOC = {
    "adasparse": "ours MLP (128, 64), tower (32,), dropout 0.1 | theirs MLP [128, 64], dropout 0.1, Fusion pruners",
    "sarnet": "ours 2 shared + 1 per-scenario experts (64), tower (32,) | theirs 2 shared + 1 per-scenario "
              "experts (fixed 16 wide), final MLP [32, 32] (fixed), no dropout",
    "m2m": "ours 4 experts (64), tower (32,) | theirs 4 experts (16 wide, default), 2+2-layer transformer "
           "(ff 16) over the 6 fields + scenario, output MLP [64, 32], no dropout, no dense columns",
    "adaptdhm": "ours bottom (64,), 4 clusters (64,), tower (32,) | theirs 4 clusters, FCN [64], "
                "centre momentum β=0.9, no dropout",
    "epnet": "ours towers (64, 32), gates on (field embeddings) | theirs MLP [64, 32], no dropout",
    "ppnet": "ours towers (64, 32), gates on (hidden units) | theirs towers [64, 32] per scenario, no dropout",
    "hamur": "ours MLP (128, 64), adapter 16, core 8, hyper (32,), tower (32,) | theirs per-scenario MLP [128, 64], "
             "adapter 32 (fixed), k=8, hyper [32], no dropout",
}


class SwrModel(MultiTaskModel):
    """A Scenario-Wise-Rec single-task network behind our model interface: our batch in, ``{task: logit}`` out."""

    name = "swr"
    Config = ModelConfig

    def __init__(self, schema: Schema, net: nn.Module, use_dense: bool = True) -> None:
        super().__init__(schema, ModelConfig(embed_dim=EMBED, dropout=DROPOUT))
        self.net = net
        self.sparse_names = [f.name for f in schema.sparse]
        self.dense_names = list(schema.dense) if use_dense else []

    def _inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = {n: batch["sparse"][:, i] for i, n in enumerate(self.sparse_names)}
        x.update({n: batch["dense"][:, i] for i, n in enumerate(self.dense_names)})
        x[DOMAIN] = batch["scenario"]
        return x

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = self._inputs(batch)
        n = batch["scenario"].shape[0]
        if n == 1:
            # Our trainer keeps the last partial batch (51,201 training rows leave one row). Their networks
            # ``.squeeze()`` away the batch axis and put BatchNorm / batch softmax on it, which fails on one row;
            # the row is doubled (same loss) and the first output kept.
            x = {k: v.repeat(2) for k, v in x.items()}
        prob = self.net(x).reshape(-1)[:n]
        return {TASK: torch.logit(prob.clamp(EPS, 1 - EPS))}

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Their embedding tables, so the trainer's embedding learning-rate group covers them as for ours."""
        return [p for m in self.modules() if isinstance(m, nn.Embedding) for p in m.parameters()]


def swr_builders(schema: Schema) -> dict[str, Callable[[], SwrModel]]:
    """How each Scenario-Wise-Rec class is constructed from our schema (sizes as in SIZES_DOC)."""
    from scenario_wise_rec.basic.features import DenseFeature, SparseFeature
    from scenario_wise_rec.models import multi_domain as md

    def agn(dense: bool = True) -> list:
        feats = [SparseFeature(f.name, f.vocab_size, embed_dim=EMBED) for f in schema.sparse]
        return feats + ([DenseFeature(n) for n in schema.dense] if dense else [])

    def dom() -> list:
        return [SparseFeature(DOMAIN, schema.num_scenarios, embed_dim=EMBED)]

    k = schema.num_scenarios
    return {
        "adasparse": lambda: SwrModel(schema, md.AdaSparse(
            dom(), agn(), {"dims": [128, 64], "activation": "relu", "dropout": DROPOUT})),
        "sarnet": lambda: SwrModel(schema, md.Sarnet(agn(), k, domain_shared_expert_num=2,
                                                     domain_specific_expert_num=1)),
        "m2m": lambda: SwrModel(schema, md.M2M(agn(dense=False) + dom(), dom(), k, num_experts=4), use_dense=False),
        "adaptdhm": lambda: SwrModel(schema, md.AdaptDHM(agn() + dom(), [64], 4, 0.9, "cpu")),
        "epnet": lambda: SwrModel(schema, md.EPNet(dom(), agn(), [64, 32])),
        "ppnet": lambda: SwrModel(schema, md.PPNet(dom(), agn(), k, [64, 32])),
        "hamur": lambda: SwrModel(schema, md.HamurSmall(agn(), k, [128, 64], [32], 8)),
    }


def one_task(data) -> tuple[Schema, dict[str, TensorDataset]]:  # noqa: ANN001
    """Our schema and splits restricted to ``visit`` (same rows, same encoding), as peer.binary_view does."""
    i = data.schema.task_names.index(TASK)
    task = dataclasses.replace(data.schema.tasks[i], inside=None)
    return dataclasses.replace(data.schema, tasks=(task,)), peer.binary_splits(data.splits, [i])


def train(model: MultiTaskModel, splits: dict[str, TensorDataset], seed: int, max_epochs: int) -> dict[str, Any]:
    cfg = TrainConfig(batch_size=1024, eval_batch_size=1024, lr=1e-3, max_epochs=max_epochs, patience=3,
                      monitor="mean_auc", progress=False, log_epochs=False, device="cpu", num_threads=1)
    trainer = Trainer(cfg, seed=seed)
    start = time.perf_counter()
    fit = trainer.fit(model, splits)
    seconds = time.perf_counter() - start
    valid = max(r["valid/mean_auc"] for r in fit.history)
    test = trainer.evaluate(model, splits["test"])
    return {"valid_auc": valid, "test_auc": test["mean_auc"], "epochs": len(fit.history), "seconds": seconds,
            "params": sum(p.numel() for p in model.parameters())}


def summarise(rows: list[dict[str, Any]], models: list[str]) -> None:
    print("\n| model | side | valid mean AUC | test mean AUC | seeds | params | epochs | s/run | ours vs theirs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m in models:
        stats = {}
        for side in ("ours", "swr"):
            r = [x for x in rows if x["model"] == m and x["side"] == side]
            if not r:
                continue
            t = [x["test_auc"] for x in r]
            v = [x["valid_auc"] for x in r]
            stats[side] = (statistics.mean(t), statistics.stdev(t) if len(t) > 1 else math.nan, len(t))
            verdict = ""
            if side == "swr" and "ours" in stats:
                (mo, so, no), (mt, st, nt) = stats["ours"], stats["swr"]
                d = mo - mt
                se = math.sqrt(so**2 / no + st**2 / nt) if no > 1 and nt > 1 else math.nan
                if math.isnan(se):
                    verdict = f"Δ {d:+.4f} (one seed: no noise estimate)"
                else:
                    word = "better" if d > 2 * se else "worse" if d < -2 * se else "within noise"
                    verdict = f"Δ {d:+.4f}, 2·SE {2 * se:.4f}: {word}"
            sd_v = statistics.stdev(v) if len(v) > 1 else math.nan
            print(f"| {m} | {side} | {statistics.mean(v):.4f} ± {sd_v:.4f} | {stats[side][0]:.4f} ± "
                  f"{stats[side][1]:.4f} | {len(t)} | {r[0]['params']:,} | "
                  f"{statistics.mean(x['epochs'] for x in r):.1f} | {statistics.mean(x['seconds'] for x in r):.0f} "
                  f"| {verdict} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swr", type=Path, required=True, help="folder holding the scenario_wise_rec package")
    parser.add_argument("--models", default=",".join(OURS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/swr_peer.jsonl"))
    parser.add_argument("--summary", action="store_true", help="only print the table from --out")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(OURS))
    if unknown:
        parser.error(f"no Scenario-Wise-Rec counterpart for {unknown}; choose from {sorted(OURS)}")
    if not (args.swr / "scenario_wise_rec").is_dir():
        parser.error(f"--swr {args.swr}: no scenario_wise_rec package there")
    rows = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else []
    if not args.summary:
        sys.path.insert(0, str(args.swr.resolve()))
        torch.set_num_threads(1)
        schema, splits = one_task(prepare_dataset("hillstrom", seed=0))
        builders = swr_builders(schema)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            for m in models:
                for side in ("ours", "swr"):  # interleaved, so machine load affects both alike
                    if any(r["model"] == m and r["side"] == side and r["seed"] == seed for r in rows):
                        continue
                    seed_everything(seed)
                    model = build_model(m, schema, dict(OURS[m])) if side == "ours" else builders[m]()
                    row = {"model": m, "side": side, "seed": seed, **train(model, splits, seed, args.max_epochs)}
                    rows.append(row)
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(f"seed {seed} {m:9s} {side:4s} valid {row['valid_auc']:.4f} test {row['test_auc']:.4f} "
                          f"params {row['params']:,} epochs {row['epochs']} ({row['seconds']:.0f} s)", flush=True)
    for m in models:
        print(f"sizes {m}: {SIZES_DOC[m]}")
    summarise(rows, models)


if __name__ == "__main__":
    main()
