"""The one contract every model honours, and the registry that finds models by name.

The trainer, benchmark, export and service only ever see :class:`MultiTaskModel`: they call
``forward(batch)`` and read a ``{task: tensor}`` dict, so none of them branches on the model type.

Output convention for ``forward``: one ``[B]`` tensor per task, in ``schema.tasks`` order.
* binary task: the *logit* of P(label = 1 | exposure). For a funnel task (``inside: click``) predicted
  ESMM-style, the model computes p = p(click) * p(conversion | click) and returns ``logit(p)``, so every
  binary output trains with the same BCE-with-logits and lives in the exposure space.
* regression task: the predicted (transformed) target value.
* a task whose kind has ``output_dim > 1`` (``ziln``): a ``[B, output_dim]`` tensor (see that kind).

Mapping to user units is not the model's business: :meth:`MultiTaskModel.predict` and the service both
go through the run's :class:`~msmtrec.tasks.OutputMapping` (``model.output_mapping``), which asks each
task's kind.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from msmtrec.config import build_config
from msmtrec.data.schema import Batch, Schema
from msmtrec.errors import ConfigError
from msmtrec.tasks import OutputMapping


@dataclass
class ModelConfig:
    """Settings shared by every model. Subclasses add their own fields with documented defaults."""

    embed_dim: int = 16
    """Size of every field embedding (the same for all fields so attention can mix them)."""
    dropout: float = 0.1
    """Dropout applied inside MLPs and towers."""
    tower_dims: tuple[int, ...] = (32,)
    """Hidden sizes of each task tower."""
    funnel: bool = True
    """Predict funnel tasks ESMM-style as p(parent chain) · p(child | parent) (models whose paper predicts each
    step directly default to False)."""

    ADDED_LATER: ClassVar[dict[str, Any]] = {}
    """Settings added after runs were first saved, each with the value a run saved without it was trained
    with (not necessarily today's default): see :func:`complete_saved_config`."""


@dataclass(frozen=True)
class Ablation:
    """One declared ablation row: its variant name, the switch in words (for the table) and the config it sets."""

    name: str
    switch: str
    config: dict[str, Any]


@dataclass(frozen=True)
class Param:
    """One searchable setting of a model's search space (plain data: the tuner maps it to Optuna).

    ``kind`` is ``float`` or ``int`` (a range ``low``..``high``, log-uniform when ``log``) or ``choice``
    (one of ``choices``; tuples such as layer widths are allowed).
    """

    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    @staticmethod
    def real(low: float, high: float, log: bool = False) -> Param:
        return Param("float", low, high, log)

    @staticmethod
    def integer(low: int, high: int) -> Param:
        return Param("int", low, high)

    @staticmethod
    def choice(*choices: Any) -> Param:
        return Param("choice", choices=tuple(choices))


DEFAULT_SEARCH_SPACE: dict[str, Param] = {
    "train.lr": Param.real(3e-4, 1e-2, log=True),
    "train.weight_decay": Param.real(1e-8, 1e-4, log=True),
    "model.dropout": Param.real(0.0, 0.3),
    "model.embed_dim": Param.choice(8, 16, 32),
    "model.tower_dims": Param.choice((16,), (32,), (64,), (64, 32)),
}
"""What every model is tuned over: optimiser settings, regularisation, embedding size (capped by the
suite's budget) and the task towers. Keys are ``train.X`` (a :class:`TrainConfig` field) or ``model.X``
(a field of the model's config), the same spelling as ``--set``."""


class MultiTaskModel(nn.Module, ABC):
    """Base class: one model, many scenarios, many tasks."""

    name: ClassVar[str] = "base"
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    scenarios_interact: ClassVar[bool] = False
    """True when a row's output depends on the *set* of scenarios (e.g. attention over every scenario's
    expert), so adding a scenario at warm start shifts known scenarios' outputs a little until retrained."""

    @classmethod
    def search_space(cls) -> dict[str, Param]:
        """The settings ``msmtrec tune`` searches for this model, declared next to its config.

        Why here and not in the benchmark: the model knows which of its sizes matter (expert counts, widths,
        depths); a new model gets :data:`DEFAULT_SEARCH_SPACE` without any edit elsewhere, and overrides this
        classmethod (``{**super().search_space(), "model.num_experts": Param.choice(2, 4, 8)}``) to add its own.
        """
        return dict(DEFAULT_SEARCH_SPACE)

    @classmethod
    def ablations(cls) -> list[Ablation]:
        """The ablation rows a benchmark suite runs for this model when it lists the model's name under
        ``ablations:`` (each row: this model's default with one switch changed).

        Why here and not in each suite: the model knows its switches and which way its default sets them; five
        suites copying one list drifted the moment a default changed. Empty unless a model declares some."""
        return []

    def __init__(self, schema: Schema, config: ModelConfig) -> None:
        super().__init__()
        self.schema = schema
        self.config = config
        self.task_names: list[str] = schema.task_names
        self.output_mapping: OutputMapping = OutputMapping.identity(schema)
        """Raw outputs → user units; a loaded run sets the mapping fitted on its validation split."""

    @property
    def flat_dim(self) -> int:
        """Width of all field embeddings laid side by side (the input of an MLP over the flattened fields)."""
        return self.schema.num_fields * self.config.embed_dim

    @abstractmethod
    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Every registered model defines this: ``{task: [B] logits (binary) or values (regression)}``."""

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Weights a user wants to look at. Models with attention / gates / mixing override this.

        Documented keys (present when the model has the part):
        ``attention``            ``[B, heads, F, F]`` field-to-field self-attention of the last layer;
        ``gates/level{l}/{who}`` ``[B, n_experts]`` gate weights of extraction level ``l`` for gate ``who``
                                 (``task:{name}``, ``scenario``, ``shared``);
        ``mixing/{task}``        ``[B, 3]`` weights of (shared, scenario, task) representations.
        Model-specific extras: HiNet's ``gates/level0/san`` (``[B, n_scenarios]`` attention over the other
        scenarios) and PEPNet's ``epnet`` (``[B, F]`` per-field embedding scales in (0, 2), not a softmax).
        """
        return {}

    def regularization_loss(self) -> torch.Tensor:
        """Extra loss terms the model wants added (e.g. HEF's scenario-balance regulariser); 0 by default.

        Computed during the last ``forward`` call, so the trainer adds it right after the forward pass.
        """
        return torch.zeros((), device=next(self.parameters()).device)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Forward pass in user units (probabilities, expected values in original units): see ``output_mapping``."""
        return self.output_mapping.apply(self.forward(batch), batch.get("scenario"))

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Embedding tables of every :class:`~msmtrec.layers.FieldEmbedding` in the model.

        The trainer gives these their own learning rate / weight decay (sparse rows see few updates).
        """
        from msmtrec.layers.embedding import FieldEmbedding

        params: list[nn.Parameter] = []
        for m in self.modules():
            if isinstance(m, FieldEmbedding):
                params.extend(m.embedding_parameters())
        return params

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_sample(self) -> int:
        """Rough multiply-add count per sample, counted from Linear layers and attention (for reports)."""
        return estimate_flops(self)


def estimate_flops(model: nn.Module) -> int:
    """2 × (weights of every Linear) plus attention's F² · D products — an order-of-magnitude figure.

    Scenario- or task-specific branches are counted once each (a sample passes through one scenario's
    branch), which is why models may override :meth:`MultiTaskModel.flops_per_sample`. Layers that are not
    ``nn.Linear`` but do matmuls (scenario-gathered weights, attention) report their own per-sample count
    through an ``extra_flops()`` method.
    """
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            total += 2 * m.in_features * m.out_features
        extra = getattr(m, "extra_flops", None)
        if callable(extra) and m is not model:
            total += int(extra())
    return total


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds (config value checks)."""
    if not condition:
        raise ConfigError(message)


_REGISTRY: dict[str, type[MultiTaskModel]] = {}


def register(name: str) -> Callable[[type[MultiTaskModel]], type[MultiTaskModel]]:
    """Class decorator: make a model buildable by ``name`` from the CLI and configs."""

    def wrap(cls: type[MultiTaskModel]) -> type[MultiTaskModel]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def registered_models() -> list[str]:
    _import_zoo()
    return sorted(_REGISTRY)


def model_class(name: str) -> type[MultiTaskModel]:
    _import_zoo()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; registered models: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def build_model(name: str, schema: Schema, overrides: dict[str, Any] | None = None) -> MultiTaskModel:
    """Build a registered model from a schema and config overrides (unknown keys are an error)."""
    cls = model_class(name)
    config = build_config(cls.Config, overrides, where=f"model {name}")
    return cls(schema, config)


def complete_saved_config(name: str, saved: dict[str, Any]) -> dict[str, Any]:
    """A saved, fully resolved model config, completed with the settings added since it was written.

    Run folders store every setting (:func:`config_dict`), so a saved config that lacks only settings listed
    in ``ADDED_LATER`` predates them: it gets the values it was trained with, and the run keeps loading after
    a default changes. Anything else (a hand-written partial config) is returned unchanged and gets today's
    defaults.
    """
    cls = model_class(name).Config
    missing = {f.name for f in dataclasses.fields(cls)} - set(saved)
    if not missing or not missing <= set(cls.ADDED_LATER):
        return dict(saved)
    return {**{k: cls.ADDED_LATER[k] for k in missing}, **saved}


def config_dict(model: MultiTaskModel) -> dict[str, Any]:
    """The resolved config as plain data, for saving beside a checkpoint."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(model.config).items()}


def _import_zoo() -> None:
    # Importing the package registers every model module it lists.
    import msmtrec.models  # noqa: F401


def caches_regularizer() -> bool:
    """Whether a forward pass should cache a regulariser for :meth:`MultiTaskModel.regularization_loss`.

    Only when gradients are on (training): scoring under no_grad never reads it, and while tracing or
    exporting the cache is not part of the served graph and would leak a traced tensor into the module.
    """
    return torch.is_grad_enabled() and not capturing_graph()


def capturing_graph() -> bool:
    """True while TorchScript or torch.export/dynamo capture the model: shapes must not depend on data."""
    return bool(
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
    )
