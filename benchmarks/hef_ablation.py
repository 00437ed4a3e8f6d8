"""HEF variants × datasets × seeds, scored on the VALIDATION split only (the test split is never read).

Each run trains one HEF config with the trainer (early stopping on the validation mean AUC) and records the
best validation metrics, the epochs used and the train time as one JSON line in ``--out``; runs already
in that file are skipped, so a killed job resumes where it stopped. ``--table`` prints the ablation table
(mean ± std over seeds of the validation mean AUC per dataset, and the mean paired Δ against the
``default`` row over the seeds both have).

    PYTHONPATH=src OMP_NUM_THREADS=1 nohup nice -n 10 python benchmarks/hef_ablation.py \\
        --datasets hillstrom census_kdd census_kdd@cow synthetic --seeds 0 1 2 --variants default no-attention \\
        > runs/hef_ablation.log 2>&1 &
    python benchmarks/hef_ablation.py --table

Datasets: a spec name, or one of the aliases in :data:`DATASETS` (``census_kdd@cow``: census_kdd with
``class_of_worker`` as the 9-valued, imbalanced scenario, 60k sampled rows; ``synthetic`` (60k sampled
rows): the simulator's parquet written by
``msmtrec data synth --rows 300000 --users 20000 --items 5000 --out runs/sim/synthetic``), or
``suite:NAME`` — a shipped benchmark suite's own dataset (same spec, overrides and splits as
``msmtrec benchmark NAME``), trained with that suite's schedule and budget (its ``train:`` and
``budget:``; the suite's monitor, ``weighted_auc``, drives early stopping), so a variant's validation Δ here
is the Δ the tuned benchmark's hand-set trial would see. Each row also records ``valid_monitor``, the
monitor of the kept epoch (``--key valid_monitor``).

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/hef_ablation.py --datasets suite:synthetic \
        suite:hillstrom suite:census_kdd_worker --variants default no-attention --seeds 0 1 2 \
        --out benchmarks/results/hef_ablation_suites.jsonl --save runs/hef_models_suites
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from msmtrec.data.pipeline import prepare_dataset
from msmtrec.models import build_model
from msmtrec.models.base import config_dict
from msmtrec.training.config import TrainConfig
from msmtrec.training.trainer import Trainer, seed_everything

DATASETS: dict[str, tuple[str, dict[str, Any], int | None]] = {
    "hillstrom": ("hillstrom", {}, None),
    "census_kdd": ("census_kdd", {}, None),
    "census_kdd@cow": ("census_kdd", {"scenario.column": "class_of_worker"}, 60_000),
    "synthetic": ("synthetic", {"files.path": str(Path("runs/sim/synthetic/*.parquet").resolve())}, 60_000),
}
"""name → (spec, overrides, sample). The samples (stratified by scenario, fixed seed) keep a 3-seed sweep of
several variants within a 2-core evening; the smallest class_of_worker scenarios keep ~100 rows."""


def prepare(name: str) -> Any:
    if name.startswith(SUITE_PREFIX):
        from msmtrec.benchmark.runner import prepared

        return prepared(_suite(name).datasets[0])
    spec, overrides, sample = DATASETS.get(name, (name, {}, None))
    return prepare_dataset(spec, seed=0, sample=sample, overrides=overrides or None)


SUITE_PREFIX = "suite:"


def _suite(name: str) -> Any:
    from msmtrec.benchmark.suite import load_suite

    return load_suite(name[len(SUITE_PREFIX):])


def schedule(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TrainConfig overrides, model config base) for a dataset: a suite's ``train:`` and ``budget:``, else
    this script's own :data:`TRAIN` and embedding size 16."""
    if not name.startswith(SUITE_PREFIX):
        return dict(TRAIN), {"embed_dim": 16}
    suite = _suite(name)
    return {**suite.train, "progress": False, "num_threads": 1}, dict(suite.budget)

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "no-attention": {"attention": False},
    "attention": {"attention": True},
    "star-128-64": {"star_dims": [128, 64]},
    "no-attention-star-128-64": {"attention": False, "star_dims": [128, 64]},
    "attention-norm": {"attention_norm": True},
    "gate-balance": {"gate_balance": True},
    "no-star": {"star": False},
    "1-level": {"levels": 1},
    "no-scenario-experts": {"scenario_experts": 0},
    "no-task-experts": {"task_experts": 0},
    "uniform-mixing": {"mixing": "uniform"},
    "base-skip": {"base_skip": "concat"},
    "gated-skip": {"base_skip": "gated"},
    "no-skip": {"base_skip": "none"},
    "no-task-experts-uniform-mixing": {"task_experts": 0, "mixing": "uniform"},
    "base-skip-no-task-experts-uniform-mixing": {"base_skip": "concat", "task_experts": 0, "mixing": "uniform"},
    "no-mixing-input": {"mixing_input": False},
    "no-balance": {"balance_weight": 0.0},
    "balance-0.1": {"balance_weight": 0.1},
    "dropout-0": {"dropout": 0.0},
    "no-expert-dropout": {"expert_dropout": 0.0},
}

TRAIN = {"batch_size": 1024, "max_epochs": 30, "patience": 2, "lr": 1e-3, "progress": False, "num_threads": 1}


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``name`` from :data:`VARIANTS`, or ``name=key:value,key:value`` (values parsed as JSON where possible)."""
    if "=" not in text:
        return text, dict(VARIANTS[text])
    name, body = text.split("=", 1)
    config: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, value = item.split(":", 1)
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return name, config


def done_keys(path: Path) -> set[tuple[str, str, int]]:
    if not path.exists():
        return set()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["dataset"], r["variant"], r["seed"]) for r in rows}


def run_one(
    data: Any, config: dict[str, Any], seed: int, train: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one HEF on ``data`` and return its best validation metrics (and the model, for diagnosis)."""
    train = dict(TRAIN) if train is None else train
    seed_everything(seed)
    model = build_model("hef", data.schema, {**({"embed_dim": 16} if base is None else base), **config})
    trainer = Trainer(TrainConfig(**train), seed=seed)
    t0 = time.perf_counter()
    fit = trainer.fit(model, data.splits)
    valid = trainer.evaluate(model, data.splits["valid"])  # best epoch's weights are loaded back by fit
    return {
        "valid_mean_auc": valid.get("mean_auc"),
        "valid_monitor": fit.best_score,
        "best_epoch": fit.best_epoch + 1,
        "epochs": fit.epochs,
        "at_cap": fit.epochs >= train["max_epochs"] and fit.best_epoch + 1 >= fit.epochs,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "params": model.num_parameters(),
        "model": model,
    }


def weighted_auc(metrics: dict[str, Any]) -> float | None:
    """Scenario × task AUCs weighted by their validation positives: tiny cells cannot swing it."""
    num = den = 0.0
    for cells in metrics["by_scenario"].values():
        for cell in cells.values():
            if isinstance(cell, dict) and cell.get("auc") is not None and cell.get("positives"):
                if not math.isnan(cell["auc"]):
                    num += cell["auc"] * cell["positives"]
                    den += cell["positives"]
    return num / den if den else None


def weighted_path(path: Path) -> Path:
    return path.with_name(path.stem + ".weighted.jsonl")


def rescore(path: Path, models: Path) -> None:
    """``valid_weighted_auc`` of every run from its saved model (validation split only), into a side file
    (the running job keeps appending to ``path``)."""
    from hef_diagnose import load_model

    from msmtrec.training.trainer import Trainer as _Trainer

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    side = weighted_path(path)
    done = {(r["dataset"], r["variant"], r["seed"]) for r in _read(side)}
    cache: dict[str, Any] = {}
    for r in rows:
        key = (r["dataset"], r["variant"], r["seed"])
        saved = models / f"{r['dataset']}__{r['variant']}__{r['seed']}.pt"
        if key in done or not saved.exists():
            continue
        if r["dataset"] not in cache:
            cache[r["dataset"]] = prepare(r["dataset"])
        data = cache[r["dataset"]]
        metrics = _Trainer(TrainConfig(progress=False)).evaluate(load_model(data, saved), data.splits["valid"])
        with side.open("a") as f:
            f.write(json.dumps({"dataset": key[0], "variant": key[1], "seed": key[2],
                                "valid_weighted_auc": weighted_auc(metrics)}) + "\n")


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def table(path: Path, key: str = "valid_mean_auc") -> str:
    rows = _read(path)
    extra = {(r["dataset"], r["variant"], r["seed"]): r for r in _read(weighted_path(path))}
    for r in rows:
        r.update(extra.get((r["dataset"], r["variant"], r["seed"]), {}))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    cell: dict[tuple[str, str], list[float]] = {}
    by_seed: dict[tuple[str, str], dict[int, float]] = {}
    for r in rows:
        if r.get(key) is not None:
            cell.setdefault((r["variant"], r["dataset"]), []).append(r[key])
            by_seed.setdefault((r["variant"], r["dataset"]), {})[r["seed"]] = r[key]
    lines = ["| variant | config | " + " | ".join(datasets) + " |", "|---|---|" + "---|" * len(datasets)]
    for v in variants:
        config = next(r["config"] for r in rows if r["variant"] == v)
        parts = []
        for d in datasets:
            xs = cell.get((v, d), [])
            base = cell.get(("default", d), [])
            if not xs:
                parts.append("–")
                continue
            sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
            text = f"{statistics.mean(xs):.4f} ± {sd:.4f} (n={len(xs)})"
            if v != "default" and base:
                mine, ref = by_seed[(v, d)], by_seed[("default", d)]
                paired = [mine[k] - ref[k] for k in mine if k in ref]
                if paired:  # Δ against the default on the same seeds (same split, same initial draws)
                    text += f" Δ {statistics.mean(paired):+.4f} ({len(paired)} paired)"
            parts.append(text)
        lines.append(f"| {v} | `{json.dumps(config)}` | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["hillstrom"])
    ap.add_argument("--variants", nargs="+", default=["default"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/hef_ablation.jsonl"))
    ap.add_argument("--table", action="store_true", help="print the table of --out and exit")
    ap.add_argument("--key", default="valid_mean_auc", help="the column --table reports (valid_weighted_auc)")
    ap.add_argument("--rescore", action="store_true", help="add valid_weighted_auc from the saved models, exit")
    ap.add_argument("--order", choices=["variant", "seed"], default="variant",
                    help="variant: all seeds of a variant first; seed: every variant × dataset at seed 0 first")
    ap.add_argument("--save", type=Path, default=Path("runs/hef_models"), help="best weights of each run go here")
    args = ap.parse_args()
    if args.rescore:
        rescore(args.out, args.save)
        return
    if args.table:
        print(table(args.out, args.key))
        return
    torch.set_num_threads(1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cache: dict[str, Any] = {}
    plan = [(parse_variant(v), ds, seed) for v in args.variants for ds in args.datasets for seed in args.seeds]
    if args.order == "seed":  # every (variant, dataset) pair's first seed before any second seed
        plan.sort(key=lambda item: args.seeds.index(item[2]))
    for (name, config), ds, seed in plan:
        if (ds, name, seed) in done_keys(args.out):
            continue
        if ds not in cache:
            cache[ds] = prepare(ds)
        result = run_one(cache[ds], config, seed, *schedule(ds))
        model = result.pop("model")
        args.save.mkdir(parents=True, exist_ok=True)
        saved = args.save / f"{ds.replace(':', '_')}__{name}__{seed}.pt"
        # the resolved config too, so a later default change cannot rebuild the model differently
        torch.save({"config": config, "resolved": config_dict(model), "state": model.state_dict()}, saved)
        row = {"dataset": ds, "variant": name, "config": config, "seed": seed, **result}
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
