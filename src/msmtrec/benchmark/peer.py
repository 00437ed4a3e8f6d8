"""torch-rechub's multi-task models run side by side with ours, on the same tensors, sizes and trainer.

How the peer is fed and trained (the choices a reader needs to trust the comparison):

* **Same encoded inputs.** Our ``sparse`` codes become one ``SparseFeature`` per field with the field's
  ``vocab_size``; each ``dense`` column (already normalised by our preprocessor) a ``DenseFeature``; the
  scenario index is one more ``SparseFeature`` (rechub has no scenario notion; ``scenario_feature: false``
  in the suite leaves it out). Columns are views of our batch tensors, so no data is copied or re-encoded.
* **Same sizes.** ``embed_dim``, expert count and sizes, tower sizes and dropout come from the resolved
  config of the suite entry the peer mirrors.
* **Same training loop.** :class:`RechubModel` wraps the rechub network as a
  :class:`~msmtrec.models.base.MultiTaskModel`, and the benchmark trains it with our own
  :class:`~msmtrec.training.Trainer` — same batches (order from the seed), same optimiser, learning rate,
  gradient clipping, epochs and early stopping on validation AUC — rather than rechub's ``MTLTrainer``,
  whose per-row ``DataLoader`` collation and printing would be timed along with the model. The trainer's
  samples/s therefore measures the same loop around two different networks. Rechub's prediction layers
  apply a sigmoid; we replace them by identity so the shared BCE-with-logits loss sees logits (numerically
  the same objective as rechub's ``BCELoss`` on probabilities, without its clamping).
* **Binary tasks only.** Regression tasks are left out of the peer's schema (rechub's ESMM is binary-only
  and the comparison is about AUC and speed); the peer's rows in the results simply have no RMSE cells.
* **ESMM** needs a click → conversion funnel (a task with ``inside:``) and embeds sparse fields only:
  rechub's ESMM drops dense features (its ``EmbeddingLayer`` returns only sparse embeddings when not
  flattening), so on a dataset with dense columns it sees fewer features than ours — said in the docs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from msmtrec.data.dataset import TensorDataset
from msmtrec.data.schema import Batch, Schema
from msmtrec.errors import ConfigError
from msmtrec.models.base import ModelConfig, MultiTaskModel
from msmtrec.tasks import kind_of

PEER_MODELS = ("mmoe", "ple", "shared_bottom", "esmm", "aitm")
SCENARIO_FIELD = "__scenario__"


def rechub_available() -> bool:
    """Whether torch-rechub can be imported (it is the optional ``bench`` extra)."""
    try:
        import torch_rechub.models.multi_task  # noqa: F401
    except ImportError:
        return False
    return True


def rechub_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch-rechub")
    except PackageNotFoundError:
        return "not installed"


def binary_view(schema: Schema) -> tuple[Schema, list[int]]:
    """The schema restricted to its binary tasks, and their column indices in ``labels``."""
    idx = [i for i, t in enumerate(schema.tasks) if kind_of(t).probability]
    if not idx:
        raise ConfigError("the peer library needs at least one binary task")
    kept = {schema.tasks[i].name for i in idx}
    tasks = tuple(t if t.inside in kept or t.inside is None else dataclasses.replace(t, inside=None)
                  for t in (schema.tasks[i] for i in idx))
    return dataclasses.replace(schema, tasks=tasks), idx


def binary_splits(splits: dict[str, TensorDataset], idx: list[int]) -> dict[str, TensorDataset]:
    """The same rows with only the binary label columns (the peer is trained on binary tasks only)."""
    out = {}
    for name, ds in splits.items():
        t = dict(ds.tensors)
        t["labels"] = t["labels"][:, idx]
        out[name] = TensorDataset(t)
    return out


class RechubModel(MultiTaskModel):
    """A torch-rechub network behind our model interface: our batch in, ``{task: logit}`` out."""

    name = "rechub"
    Config = ModelConfig

    def __init__(self, schema: Schema, kind: str, config: dict[str, Any], scenario_feature: bool = True) -> None:
        super().__init__(schema, ModelConfig(embed_dim=int(config["embed_dim"]), dropout=float(config["dropout"])))
        from torch_rechub.basic.features import DenseFeature, SparseFeature
        from torch_rechub.models import multi_task as mt

        if kind not in PEER_MODELS:
            raise ConfigError(f"torch_rechub: no counterpart of {kind!r}; supported: {list(PEER_MODELS)}")
        d = int(config["embed_dim"])
        drop = float(config["dropout"])
        self.kind = kind
        self.sparse_names = [f.name for f in schema.sparse]
        self.dense_names = list(schema.dense)
        if schema.sequences:
            raise ConfigError("torch_rechub peer: sequence fields are not mapped (no dataset in the suites has them)")
        sparse = [SparseFeature(f.name, f.vocab_size, embed_dim=d) for f in schema.sparse]
        self.scenario_feature = scenario_feature
        if scenario_feature:
            sparse.append(SparseFeature(SCENARIO_FIELD, schema.num_scenarios, embed_dim=d))
        dense = [DenseFeature(n) for n in schema.dense]
        features = sparse + dense
        n_tasks = len(schema.tasks)
        tower = [{"dims": list(config.get("tower_dims") or []), "dropout": drop} for _ in range(n_tasks)]
        if kind == "mmoe":
            net = mt.MMOE(
                features, ["classification"] * n_tasks, int(config["num_experts"]),
                {"dims": list(config["expert_dims"]), "dropout": drop}, tower,
            )
        elif kind == "ple":
            net = mt.PLE(
                features, ["classification"] * n_tasks, int(config["levels"]), int(config["task_experts"]),
                int(config["shared_experts"]), {"dims": list(config["expert_dims"]), "dropout": drop}, tower,
            )
        elif kind == "aitm":
            # rechub's "bottoms" are our per-task towers (q_t); its towers after AIT are our output layers
            net = mt.AITM(
                features, n_tasks, {"dims": list(config["tower_dims"]), "dropout": drop},
                [{"dims": [], "dropout": drop} for _ in range(n_tasks)],
            )
        elif kind == "shared_bottom":
            net = mt.SharedBottom(
                features, ["classification"] * n_tasks,
                {"dims": list(config["bottom_dims"]), "dropout": drop}, tower,
            )
        else:
            funnel = [(i, schema.task_names.index(t.inside)) for i, t in enumerate(schema.tasks) if t.inside]
            if len(funnel) != 1 or n_tasks != 2:
                raise ConfigError(
                    "torch_rechub ESMM needs exactly two binary tasks forming a funnel (conversion inside click); "
                    f"this dataset has {schema.task_names}"
                )
            self.child, self.parent = funnel[0]
            towers = {"dims": list(config["tower_dims"]), "dropout": drop}
            if len(sparse) < 2:
                raise ConfigError("torch_rechub ESMM needs at least two sparse fields (user and item side)")
            # The user/item split only decides concatenation order inside rechub's ESMM; every sparse field
            # goes in (it needs a non-empty item side, so the last field plays that part).
            net = mt.ESMM(sparse[:-1], sparse[-1:], dict(towers), dict(towers))
        if hasattr(net, "predict_layers"):
            net.predict_layers = nn.ModuleList(nn.Identity() for _ in net.predict_layers)
        self.net = net

    def _inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = {n: batch["sparse"][:, i] for i, n in enumerate(self.sparse_names)}
        x.update({n: batch["dense"][:, i] for i, n in enumerate(self.dense_names)})
        if self.scenario_feature:
            x[SCENARIO_FIELD] = batch["scenario"]
        return x

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = self._inputs(batch)
        if self.training and batch["scenario"].shape[0] == 1:
            # Rechub's MLPs put BatchNorm after every linear layer, which cannot train on one row; our trainer
            # keeps the last partial batch (51,201 Hillstrom training rows leave one), so that step normalises
            # with the running statistics instead of failing.
            norms = [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            for m in norms:
                m.eval()
            try:
                out = self.net(x)
            finally:
                for m in norms:
                    m.train()
        else:
            out = self.net(x)
        if self.kind == "aitm":  # rechub's AITM applies the sigmoid itself
            return {name: torch.logit(out[:, i], eps=1e-7) for i, name in enumerate(self.task_names)}
        if self.kind == "esmm":
            # rechub returns probabilities [cvr, ctr, ctcvr]; our loss wants exposure-space logits.
            ctr, ctcvr = out[:, 1], out[:, 2]
            logits = {self.parent: torch.logit(ctr, eps=1e-7), self.child: torch.logit(ctcvr, eps=1e-7)}
            return {name: logits[i] for i, name in enumerate(self.task_names)}
        return {name: out[:, i] for i, name in enumerate(self.task_names)}

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Rechub's embedding tables, so the trainer's embedding learning-rate group covers them as for ours."""
        return [p for m in self.modules() if isinstance(m, nn.Embedding) for p in m.parameters()]


def build_peer(schema: Schema, kind: str, config: dict[str, Any], options: dict[str, Any]) -> RechubModel:
    """The peer network for ``schema`` (already restricted to binary tasks), or a clear error if missing."""
    if not rechub_available():
        raise ConfigError("torch-rechub is not installed: pip install -c constraints.txt 'msmtrec[bench]'")
    return RechubModel(schema, kind, config, scenario_feature=bool(options.get("scenario_feature", True)))
