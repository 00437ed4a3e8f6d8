"""HEF attention-row entropy (fraction of ``log F``; 1 = uniform) at initialisation and after training.

On the VALIDATION split, for the ``default`` and ``attention-norm`` variants: a freshly initialised model
(``torch.manual_seed(SEED)``) against the best weights ``benchmarks/hef_ablation.py`` saved for that seed.
Shows whether the pre-norm moves attention off uniform at the start and whether training moves it further.

    PYTHONPATH=src:benchmarks python benchmarks/hef_attention_entropy.py --datasets hillstrom census_kdd@cow synthetic
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hef_ablation import VARIANTS, prepare
from hef_diagnose import collect, load_model

from msmtrec.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["hillstrom"])
    ap.add_argument("--variants", nargs="+", default=["default", "attention-norm"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", type=Path, default=Path("runs/hef_models"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    for ds in args.datasets:
        data = prepare(ds)
        row = [ds]
        for variant in args.variants:
            torch.manual_seed(args.seed)
            init = build_model("hef", data.schema, {"embed_dim": 16, **VARIANTS[variant]}).eval()
            trained = load_model(data, args.models / f"{ds}__{variant}__{args.seed}.pt")
            before = collect(init, data.splits["valid"])["attention_entropy"]
            after = collect(trained, data.splits["valid"])["attention_entropy"]
            row.append(f"{variant}: init {before:.4f} trained {after:.4f}")
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
