"""End-to-end speed against torch-rechub's own pipeline: ``msmtrec train`` vs rechub's DataGenerator + MTLTrainer.

Issue 17 target 2: every model ≥ 2× the peer *end to end*, fixed cost included. Both sides run as fresh
processes (so import and start-up count), on the same Hillstrom rows, the same two binary tasks (visit,
conversion inside visit), the same architecture and sizes (the shipped hillstrom suite's entry), batch 1024,
Adam at 1e-3, a fixed number of epochs with a validation pass after each (early stopping never triggers),
one torch thread each. The peer runs the way its examples do: pandas + scikit-learn label encoding and
min-max scaling, ``DataGenerator(...).generate_dataloader`` and ``MTLTrainer.fit`` then ``evaluate``.

Runs are interleaved (ours, peer, ours, peer …) so machine noise hits both alike; the script prints the wall
seconds of each side (min / median over ``--repeats``) and the ratio peer / ours of the medians and of the
minima, then the same for CPU seconds (user + system of the child process), which a busy shared machine
disturbs far less than wall time (the load average is printed before and after)::

    python benchmarks/peer_pipeline.py --models mmoe ple shared_bottom esmm --epochs 3 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPARSE = ["history_segment", "mens", "womens", "zip_code", "newbie", "channel"]
DENSE = ["recency", "history"]
TASKS = ["visit", "conversion"]


def suite_config(model: str) -> dict:
    """The model's sizes in the shipped hillstrom suite (the ones the benchmark tables use)."""
    suite = yaml.safe_load((ROOT / "src/msmtrec/benchmark/suites/hillstrom.yaml").read_text())
    budget = suite.get("budget") or {}
    for entry in suite["models"]:
        if isinstance(entry, dict) and entry.get("name") == model:
            return {**(entry.get("config") or {}), **budget}
    defaults = {"mmoe": {"num_experts": 4, "expert_dims": [128, 64], "tower_dims": [32]},
                "ple": {"levels": 2, "shared_experts": 2, "task_experts": 1, "expert_dims": [96], "tower_dims": [32]},
                "shared_bottom": {"bottom_dims": [384, 128], "tower_dims": [32]},
                "esmm": {"tower_dims": [192, 64]}}
    return {**defaults[model], "embed_dim": 16, "dropout": 0.1}


def binary_spec(tmp: Path) -> Path:
    """The hillstrom spec with its two binary tasks only (the peer has no regression task here)."""
    spec = yaml.safe_load((ROOT / "src/msmtrec/data/specs/hillstrom.yaml").read_text())
    spec["tasks"] = [t for t in spec["tasks"] if t["name"] in TASKS]
    data = Path(os.environ.get("MSMTREC_DATA", ROOT.parent / "shared" / "data")).resolve()
    spec["files"]["path"] = str(data / spec["files"]["path"])
    path = tmp / "hillstrom_binary.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_ours(model: str, epochs: int, tmp: Path) -> tuple[float, float]:
    cfg = tmp / f"{model}.yaml"
    cfg.write_text(yaml.safe_dump({"model": suite_config(model)}))
    out = tmp / f"ours-{model}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "msmtrec", "train", "--data", str(binary_spec(tmp)), "--model", model,
           "--config", str(cfg), "--epochs", str(epochs), "--out", str(out),
           "--set", f"train.patience={epochs + 1}", "--set", "train.num_threads=1", "--set", "train.progress=false"]
    return _timed(cmd)


def run_peer(model: str, epochs: int, tmp: Path) -> tuple[float, float]:
    cmd = [sys.executable, __file__, "--peer-run", model, "--epochs", str(epochs), "--tmp", str(tmp)]
    return _timed(cmd)


def _timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one fresh process running ``cmd``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} … failed:\n{done.stderr[-2000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def peer_main(model: str, epochs: int, tmp: Path) -> None:
    """torch-rechub's own pipeline, as in its examples (runs in its own process)."""
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.preprocessing import LabelEncoder, MinMaxScaler
    from torch_rechub.basic.features import DenseFeature, SparseFeature
    from torch_rechub.models import multi_task as mt
    from torch_rechub.trainers import MTLTrainer
    from torch_rechub.utils.data import DataGenerator

    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = Path(os.environ.get("MSMTREC_DATA", ROOT.parent / "shared" / "data")).resolve()
    df = pd.read_csv(data / "hillstrom" / "hillstrom.csv")
    sparse = [*SPARSE, "segment"]  # rechub has no scenario notion: the segment is one more sparse feature
    for c in sparse:
        df[c] = LabelEncoder().fit_transform(df[c].astype(str))
    df[DENSE] = MinMaxScaler().fit_transform(df[DENSE])
    c = suite_config(model)
    d, drop = int(c["embed_dim"]), float(c["dropout"])
    sf = [SparseFeature(n, vocab_size=int(df[n].max()) + 1, embed_dim=d) for n in sparse]
    features = sf + [DenseFeature(n) for n in DENSE]
    x = {n: df[n].to_numpy() for n in sparse + DENSE}
    y = df[TASKS].to_numpy(dtype=np.float32)
    train_dl, val_dl, test_dl = DataGenerator(x, y).generate_dataloader(split_ratio=[0.8, 0.1], batch_size=1024)
    types = ["classification"] * 2
    tower = [{"dims": list(c.get("tower_dims") or []), "dropout": drop} for _ in TASKS]
    if model == "mmoe":
        net = mt.MMOE(features, types, int(c["num_experts"]), {"dims": list(c["expert_dims"]), "dropout": drop}, tower)
    elif model == "ple":
        net = mt.PLE(features, types, int(c["levels"]), int(c["task_experts"]), int(c["shared_experts"]),
                     {"dims": list(c["expert_dims"]), "dropout": drop}, tower)
    elif model == "shared_bottom":
        net = mt.SharedBottom(features, types, {"dims": list(c["bottom_dims"]), "dropout": drop}, tower)
    else:
        towers = {"dims": list(c["tower_dims"]), "dropout": drop}
        net = mt.ESMM(sf[:-1], sf[-1:], dict(towers), dict(towers))
        x = {n: df[n].to_numpy() for n in sparse}
        train_dl, val_dl, test_dl = DataGenerator(x, y).generate_dataloader(split_ratio=[0.8, 0.1], batch_size=1024)
    trainer = MTLTrainer(net, task_types=types, optimizer_params={"lr": 1e-3, "weight_decay": 0.0}, n_epoch=epochs,
                         earlystop_patience=epochs + 1, device="cpu", model_path=str(tmp))
    trainer.fit(train_dl, val_dl)
    trainer.evaluate(trainer.model, test_dl)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["mmoe", "ple", "shared_bottom", "esmm"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer-run", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer_run:
        peer_main(args.peer_run, args.epochs, Path(args.tmp))
        return
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for r in range(args.repeats):
            for model in args.models:
                for side, fn in (("msmtrec", run_ours), ("torch-rechub", run_peer)):
                    wall, cpu = fn(model, args.epochs, tmp)
                    times.setdefault((model, side), []).append((wall, cpu))
                    print(f"repeat {r + 1} {model:>13} {side:>12}: {wall:6.1f} s wall {cpu:6.2f} s CPU", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\nend to end, {args.epochs} epochs of Hillstrom (51k training rows), 1 thread, {args.repeats} repeats")
    for what, k in (("wall", 0), ("CPU", 1)):
        print(f"{'model':>13}  {what + ' msmtrec min/med s':>22}  {what + ' rechub min/med s':>21}  "
              f"{'ratio (med)':>11}  {'ratio (min)':>11}")
        for model in args.models:
            ours = [t[k] for t in times[(model, "msmtrec")]]
            peer = [t[k] for t in times[(model, "torch-rechub")]]
            med_o, med_p = statistics.median(ours), statistics.median(peer)
            print(f"{model:>13}  {min(ours):10.2f}/{med_o:<11.2f}  {min(peer):9.2f}/{med_p:<11.2f}"
                  f"  {med_p / med_o:10.2f}x  {min(peer) / min(ours):10.2f}x")


if __name__ == "__main__":
    main()
