"""The task-kind contract: everything that depends on *what kind* of target a task predicts.

A task's stored ``type`` (``binary``, ``regression``, ``ziln``) names a :class:`TaskKind`; every layer asks the
kind instead of comparing strings, so a new kind is one module here plus one test. A kind owns:

* label checking and encoding (:meth:`TaskKind.invalid_labels`, :meth:`TaskKind.encode_labels`);
* its loss term on the model's raw output (:meth:`TaskKind.loss`) and the raw output's width
  (:attr:`TaskKind.output_dim`: a model emits ``[B]`` for width 1, ``[B, k]`` otherwise);
* the mapping of raw outputs to the units a user reads (:meth:`TaskKind.to_units`), including any
  post-hoc correction fitted on the validation split (:meth:`TaskKind.fit_params`);
* its metrics cell and headline metric with the better direction (:meth:`TaskKind.cell`);
* what it means for export (:attr:`TaskKind.export_meaning`) and ranking (:attr:`TaskKind.probability`:
  its user-unit output is a probability that may be a ranking objective or a funnel parent).

This module sits below ``data/`` and imports only numpy and torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

import numpy as np
import torch


class TaskLike(Protocol):
    """What a kind needs to know about a task (``schema.Task`` and ``spec.TaskSpec`` both qualify)."""

    name: str
    type: str
    transform: str


Params = dict[str, Any]
"""Fitted post-hoc parameters of one task (JSON-able), as stored in the run's ``output_mapping.json``."""


class TaskKind(ABC):
    """Base class; subclasses are registered with :func:`register_kind` and used as singletons."""

    name: ClassVar[str] = ""
    output_dim: ClassVar[int] = 1
    """Width of the model's raw output for this task (1: a ``[B]`` tensor)."""
    probability: ClassVar[bool] = False
    """The user-unit output is a probability (funnel parents, default ranking objectives, CPA pricing)."""
    transforms: ClassVar[tuple[str, ...]] = ("none",)
    """Target transforms the kind accepts (the first is the default)."""
    headline: ClassVar[str] = ""
    """The cell metric shown in tables and used for ``mean_<headline>``."""
    higher_is_better: ClassVar[bool] = True
    history_keys: ClassVar[tuple[str, ...]] = ()
    """Cell metrics copied into ``history.csv`` per epoch."""
    loss_scale: ClassVar[float] = 1.0
    """Factor of the uncertainty-weighted loss (Kendall et al.): 1 for discrete likelihoods, 1/2 for Gaussian."""
    export_meaning: ClassVar[str] = ""
    """What the exported graph's raw output of this task is (written into the signature)."""
    units: ClassVar[str] = ""
    """What :meth:`to_units` returns, in words (shown by the service's ``/v1/model``)."""

    # ------------------------------------------------------------------ labels
    def invalid_labels(self, x: np.ndarray, transform: str = "none") -> tuple[np.ndarray, str]:
        """A mask of label values this kind refuses, and what it expected (for a one-line error)."""
        return np.zeros(x.shape, dtype=bool), ""

    def encode_labels(self, x: np.ndarray, transform: str = "none") -> np.ndarray:
        """Labels as stored in the encoded batch (e.g. ``log1p`` of a regression target)."""
        return x

    def label_units(self, y: np.ndarray, transform: str = "none") -> np.ndarray:
        """Encoded labels back in the units :meth:`to_units` predicts (inverse of :meth:`encode_labels`)."""
        return y

    @abstractmethod
    def random_labels(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random labels of the right domain (shape tests only)."""

    @abstractmethod
    def planted_labels(self, logit: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Labels following a planted signal ``logit`` (learnable generated data)."""

    # ------------------------------------------------------------------ training
    @abstractmethod
    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-row loss ``[B]`` of raw outputs ``out`` against labels ``y`` (NaN labels already zeroed).

        Must be finite for any input: the caller masks unknown labels by weight, and a NaN/inf in a masked
        row would still poison the gradient.
        """

    # ------------------------------------------------------------------ outputs
    @abstractmethod
    def to_units(
        self, out: torch.Tensor, transform: str = "none", params: Params | None = None,
        scenario: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw outputs → ``[B]`` in user units, with the fitted ``params`` (per scenario) applied."""

    def fit_params(
        self, out: np.ndarray, y: np.ndarray, scenario: np.ndarray, num_scenarios: int, transform: str,
        calibration: str, base: Params | None = None,
    ) -> Params:
        """Post-hoc parameters fitted on validation outputs/labels (rows with a known label only).

        ``base`` holds parameters fixed before fitting (e.g. a down-sampling logit offset); the result
        includes them. The default is no correction.
        """
        return dict(base or {})

    # ------------------------------------------------------------------ metrics
    @abstractmethod
    def cell(
        self, y: np.ndarray, out: np.ndarray, units: np.ndarray, users: np.ndarray | None, transform: str
    ) -> dict[str, Any]:
        """Metrics of one scenario × task cell: encoded labels, raw outputs and user-unit predictions."""

    def __repr__(self) -> str:
        return f"<task kind {self.name}>"


_KINDS: dict[str, TaskKind] = {}


def register_kind(cls: type[TaskKind]) -> type[TaskKind]:
    """Class decorator: make ``cls`` the kind of every task whose ``type`` is ``cls.name``."""
    if not cls.name or cls.name in _KINDS:
        raise ValueError(f"task kind {cls.name!r} is unnamed or registered twice")
    _KINDS[cls.name] = cls()
    return cls


def registered_kinds() -> list[str]:
    return list(_KINDS)


def get_kind(name: str) -> TaskKind:
    if name not in _KINDS:
        raise KeyError(f"unknown task type {name!r}; known types: {list(_KINDS)}")
    return _KINDS[name]


def kind_of(task: Any) -> TaskKind:
    """The kind of a task (anything with a ``type`` attribute naming a registered kind)."""
    return get_kind(task.type)


def per_scenario(values: list[float] | float, scenario: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """A per-scenario parameter list gathered for each row (a scalar broadcasts)."""
    if isinstance(values, (int, float)):
        return torch.as_tensor(float(values), dtype=like.dtype, device=like.device)
    table = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    if scenario is None:
        raise ValueError("per-scenario parameters need the batch's scenario column")
    return table[scenario.long()]
