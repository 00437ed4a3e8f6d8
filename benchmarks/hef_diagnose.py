"""Diagnose trained HEF models on the VALIDATION split: routing, mixing, attention, and seed variance.

Reads the best weights that ``benchmarks/hef_ablation.py`` saved (``runs/hef_models/DATASET__VARIANT__SEED.pt``)
and, per dataset, prints

* **gates** — for every gate of every level, per scenario: mean effective weight of each expert (utilisation)
  and the mean per-row entropy of the gate, normalised to [0, 1] by ``log(n_experts)`` (0: every row
  routes to one expert; 1: every row spreads evenly). ``collapse`` flags a gate where one expert takes
  ≥ 90 % of a scenario's mean weight; ``static`` flags a gate whose per-row entropy equals the entropy of
  its scenario mean within 0.02 (the gate ignores its input and acts as a per-scenario constant).
* **mixing** — the last level's (shared, scenario, task) weights per scenario and task: mean and the
  row-to-row std (0: the input modulation does nothing).
* **attention** — per layer, the norm of the attention term relative to the residual term it is added to
  (``‖A·V‖ / ‖W_r x‖``), and the mean entropy of the attention rows normalised by ``log(fields)``
  (1: uniform attention, a field-average).
* **seed variance** — from the ablation results: each variant's std of the validation mean AUC over seeds,
  next to the default's (which component's removal cuts the std).

    PYTHONPATH=src python benchmarks/hef_diagnose.py --datasets hillstrom census_kdd@cow synthetic
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from hef_ablation import prepare  # noqa: E402  (run from the repository root: benchmarks/ is on sys.path)

from msmtrec.models import build_model
from msmtrec.models.base import complete_saved_config


def load_model(data: Any, path: Path) -> Any:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if "resolved" in saved:  # every setting as trained (settings added since then: complete_saved_config)
        model = build_model("hef", data.schema, complete_saved_config("hef", saved["resolved"]))
    else:  # files saved before the resolved config was kept: the variant's overrides on today's defaults
        model = build_model("hef", data.schema, {"embed_dim": 16, **saved["config"]})
    model.load_state_dict(saved["state"])
    return model.eval()


@torch.no_grad()
def collect(model: Any, dataset: Any, batch_size: int = 8192) -> dict[str, Any]:
    """Per scenario: sums of gate weights, gate entropies, mixing weights (and squares); attention stats."""
    n_scen = model.schema.num_scenarios
    sums: dict[str, torch.Tensor] = {}
    ent: dict[str, torch.Tensor] = {}
    sq: dict[str, torch.Tensor] = {}
    counts = torch.zeros(n_scen, dtype=torch.float64)
    attn_terms: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    hooks = []
    if model.attention is not None:
        for i, layer in enumerate(model.attention.layers):
            def hook(mod: Any, args: Any, out: Any, i: int = i) -> None:
                x = args[0]
                att, _ = mod._factored(x) if mod.factored else mod._split_heads(x)
                attn_terms[i][0] += float(att.norm())
                attn_terms[i][1] += float(mod.residual(x).norm()) if mod.residual is not None else 0.0
            hooks.append(layer.register_forward_hook(hook))
    attn_entropy, attn_rows = 0.0, 0
    try:
        for b in dataset.batches(batch_size):
            feed = {k: v for k, v in b.items() if k != "labels"}
            info = model.explain(feed)
            scen = b["scenario"]
            counts += torch.bincount(scen, minlength=n_scen).double()
            for k, v in info.items():
                v = v.double()
                if k == "attention":
                    f = v.shape[-1]
                    h = -(v.clamp_min(1e-12).log() * v).sum(-1) / math.log(f)  # [B, H, F]
                    attn_entropy += float(h.mean(dim=(1, 2)).sum())
                    attn_rows += v.shape[0]
                    continue
                sums.setdefault(k, torch.zeros(n_scen, v.shape[1], dtype=torch.float64)).index_add_(0, scen, v)
                sq.setdefault(k, torch.zeros(n_scen, v.shape[1], dtype=torch.float64)).index_add_(0, scen, v * v)
                n = v.shape[1]
                row_h = -(v.clamp_min(1e-12).log() * v).sum(1) / math.log(n) if n > 1 else torch.zeros(len(v))
                ent.setdefault(k, torch.zeros(n_scen, dtype=torch.float64)).index_add_(0, scen, row_h.double())
    finally:
        for h in hooks:
            h.remove()
    c = counts.clamp(min=1)
    mean = {k: v / c.unsqueeze(1) for k, v in sums.items()}
    std = {k: (sq[k] / c.unsqueeze(1) - mean[k] ** 2).clamp_min(0).sqrt() for k in sums}
    return {
        "counts": counts.long().tolist(),
        "mean": mean,
        "std": std,
        "entropy": {k: v / c for k, v in ent.items()},
        "attention_ratio": {i: a / max(r, 1e-12) for i, (a, r) in attn_terms.items()},
        "attention_entropy": attn_entropy / max(attn_rows, 1),
    }


def entropy_of(p: torch.Tensor) -> float:
    n = p.shape[-1]
    return float(-(p.clamp_min(1e-12).log() * p).sum() / math.log(n)) if n > 1 else 0.0


def report(name: str, model: Any, stats: dict[str, Any]) -> list[str]:
    scenarios = list(model.schema.scenarios)
    lines = [f"### {name}", "", f"validation rows per scenario: {dict(zip(scenarios, stats['counts'], strict=True))}"]
    lines += ["", "gate | scenario | utilisation (mean weight per expert) | row entropy | flags", "---|---|---|---|---"]
    flags_total: dict[str, int] = defaultdict(int)
    for k in sorted(x for x in stats["mean"] if x.startswith("gates/")):
        for s, scen in enumerate(scenarios):
            if stats["counts"][s] == 0:
                continue
            u = stats["mean"][k][s]
            h = float(stats["entropy"][k][s])
            flags = []
            if float(u.max()) >= 0.9:
                flags.append("collapse")
            if u.shape[0] > 1 and abs(h - entropy_of(u)) < 0.02:
                flags.append("static")
            for f in flags:
                flags_total[f] += 1
            util = " ".join(f"{x:.2f}" for x in u.tolist())
            lines.append(f"{k[6:]} | {scen} | {util} | {h:.2f} | {' '.join(flags)}")
    lines += ["", f"flag counts: {dict(flags_total) or 'none'}", ""]
    lines += ["mixing | scenario | shared / scenario / task (mean) | row std", "---|---|---|---"]
    for k in sorted(x for x in stats["mean"] if x.startswith("mixing/")):
        for s, scen in enumerate(scenarios):
            if stats["counts"][s] == 0:
                continue
            m = " / ".join(f"{x:.2f}" for x in stats["mean"][k][s].tolist())
            sd = " / ".join(f"{x:.3f}" for x in stats["std"][k][s].tolist())
            lines.append(f"{k[7:]} | {scen} | {m} | {sd}")
    if stats["attention_ratio"]:
        ratios = ", ".join(f"layer {i}: {r:.2f}" for i, r in stats["attention_ratio"].items())
        lines += ["", f"attention ‖A·V‖/‖W_r x‖: {ratios}; mean row entropy {stats['attention_entropy']:.2f}"]
    return lines


def seed_variance(path: Path) -> list[str]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        if r["valid_mean_auc"] is not None:
            by[(r["dataset"], r["variant"])].append(r["valid_mean_auc"])
    lines = ["dataset | variant | seeds | std of valid mean AUC | std / default's", "---|---|---|---|---"]
    for (ds, v), xs in sorted(by.items()):
        if len(xs) < 2:
            continue
        sd = statistics.stdev(xs)
        base = by.get((ds, "default"), [])
        rel = f"{sd / statistics.stdev(base):.2f}" if len(base) > 1 and statistics.stdev(base) > 0 else "–"
        lines.append(f"{ds} | {v} | {len(xs)} | {sd:.4f} | {rel}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["hillstrom"])
    ap.add_argument("--variant", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", type=Path, default=Path("runs/hef_models"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/hef_ablation.jsonl"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out: list[str] = []
    for ds in args.datasets:
        path = args.models / f"{ds}__{args.variant}__{args.seed}.pt"
        if not path.exists():
            out += [f"### {ds}", "", f"(no saved model {path}; run benchmarks/hef_ablation.py first)", ""]
            continue
        data = prepare(ds)
        model = load_model(data, path)
        out += report(f"{ds} ({args.variant}, seed {args.seed})", model, collect(model, data.splits["valid"]))
        out.append("")
    out += ["### seed variance (validation mean AUC)", "", *seed_variance(args.results)]
    print("\n".join(out))


if __name__ == "__main__":
    main()
