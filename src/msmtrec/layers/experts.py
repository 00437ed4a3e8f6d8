"""Experts, gates and scenario-specific weights: the pieces every mixture-of-experts model is built from.

* :class:`ExpertBank` runs ``n`` independent MLP experts on one input and stacks them to ``[B, n, d]``;
* :class:`ScenarioLinear` / :class:`ScenarioExpertBank` hold one set of weights per scenario and *gather*
  each row's own scenario weights (``weight[scenario]``), so a row only pays for its own scenario's
  branch and the graph has no data-dependent shapes (no boolean masks, no per-scenario Python branches);
* :class:`Gate` is a linear softmax gate; :func:`mix` takes the gate-weighted sum of expert outputs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn


class _ReluDropout(torch.autograd.Function):
    """``dropout(relu(x))`` as one mask: ``x · m`` with ``m = [x > 0] · [u ≥ p] / (1 - p)``, ``u ~ U[0, 1)``.

    One uniform draw per element (``torch.rand``) instead of CPU ``bernoulli_``, which runs ~3× slower per
    element, and one saved mask instead of ReLU's and dropout's separate graphs (backward is ``g · m``).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:  # noqa: ANN001
        keep = torch.rand_like(x).ge_(p).logical_and_(x > 0)
        mask = keep.to(x.dtype).mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def relu_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(F.relu(x), p, training)`` with one mask (see :class:`_ReluDropout`); the same distribution.

    Outside training, or with ``p == 0``, exactly ``F.relu(x)``; while a graph is captured (TorchScript,
    export) the plain composition is used so the captured graph has only standard ops.
    """
    if not training or p <= 0.0:
        return F.relu(x)
    if p >= 1.0:
        return torch.zeros_like(x)
    if _capturing_graph():
        return F.dropout(F.relu(x), p, True)
    return _ReluDropout.apply(x, p)


class ExpertBank(nn.Module):
    """``n`` independent MLP experts over the same input → ``[B, n, out_dim]``.

    The experts are evaluated together, not one small ``nn.Linear`` stack at a time: the first layer of all
    experts is one ``[in, n · h]`` matmul (they share the input), deeper layers one batched matmul over the
    expert axis. Same maths and the same initialisation as ``n`` separate ``Linear → ReLU → Dropout`` MLPs,
    with a fraction of the kernel launches (the speed-up is measured in docs/changelog.md).
    """

    def __init__(self, in_dim: int, num_experts: int, dims: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        if num_experts < 1 or not dims:
            raise ValueError("an expert bank needs at least one expert and one hidden size")
        sizes = [in_dim, *(int(d) for d in dims)]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1.0 / math.sqrt(a)  # nn.Linear's default initialisation, per expert
            self.weights.append(nn.Parameter(torch.empty(num_experts, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num_experts, b).uniform_(-bound, bound)))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.num_experts = num_experts
        self.in_dim = in_dim
        self.sizes = sizes
        self.out_dim = sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, batch = self.num_experts, x.shape[0]
        first = self.weights[0].permute(1, 0, 2).reshape(self.in_dim, -1)  # [in, n·h]
        h = torch.addmm(self.biases[0].reshape(-1), x, first).view(batch, n, -1)
        h = self.dropout(F.relu(h))
        if len(self.weights) == 1:
            return h
        h = h.transpose(0, 1)  # [n, B, h]: one batched matmul per deeper layer
        for w, b in zip(list(self.weights)[1:], list(self.biases)[1:], strict=True):
            h = self.dropout(F.relu(torch.baddbmm(b.unsqueeze(1), h, w)))
        return h.transpose(0, 1)

    def extra_flops(self) -> int:
        return sum(2 * self.num_experts * a * b for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True))


DENSE_MAX_SCENARIOS = 16
"""In traced/exported graphs, up to this many scenarios use the ``"dense"`` formulation, beyond it ``"gather"``."""

STRATEGIES = ("segment", "dense", "gather")


def _capturing_graph() -> bool:
    """True while TorchScript or torch.export/dynamo capture the model: shapes must not depend on data."""
    return bool(
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
    )


_FIXED_SCENARIO: ContextVar[int | None] = ContextVar("msmtrec_fixed_scenario", default=None)


@contextlib.contextmanager
def fixed_scenario(index: int) -> Iterator[None]:
    """Capture a graph for batches whose rows all belong to scenario ``index`` (a scoring request).

    Inside, :func:`scenario_matmul` multiplies by that scenario's weights directly, the eager one-scenario
    shortcut with the index a constant, instead of the static all-scenario form: ``1/S`` of the
    multiply-adds and no gather. A graph captured here is only valid for batches of that one scenario;
    the caller routes batches to it (see ``Scorer.use_torchscript``).
    """
    token = _FIXED_SCENARIO.set(int(index))
    try:
        yield
    finally:
        _FIXED_SCENARIO.reset(token)


def scenario_matmul(
    x: torch.Tensor, weight: torch.Tensor, scenario: torch.Tensor, strategy: str = "auto"
) -> torch.Tensor:
    """Row ``b`` times its own scenario's weight: ``x [B, n, in]``, ``weight [S, n, in, out]`` → ``[B, n, out]``.

    Three exact formulations of the same maths, chosen for speed where each is legal:

    * ``"segment"`` (eager default): sort the rows by scenario, one matmul per scenario present on its
      contiguous slice, scatter back. Exactly one branch of arithmetic per row; the fastest on CPU (about
      5× the dense form at 8 scenarios, measured with ``benchmarks/scale_throughput.py``), but the slice
      sizes depend on the data, so it is not used while a graph is being captured.
    * ``"dense"``: every scenario's output for every row in one large matmul (``[B, n, S · out]``), then
      each row picks its own block. ``S×`` the multiply-adds, static shapes: the export form for a handful of
      scenarios.
    * ``"gather"``: ``weight[scenario]`` gives each row its own ``[n, in, out]`` weights and a batched
      matmul. One branch per row but ``B · n · in · out`` memory traffic: the export form for many scenarios.

    ``"auto"`` picks segment in eager mode; while tracing or exporting, dense up to
    :data:`DENSE_MAX_SCENARIOS` scenarios and gather beyond, or only the one scenario's weights inside
    :func:`fixed_scenario`.
    """
    num_scenarios, n, in_dim, out_dim = weight.shape
    # Read the ContextVar only where fixed_scenario applies (TorchScript tracing, export): dynamo cannot trace
    # ContextVar.get, and torch.compile of a training step would break its graph at every call.
    compiling = torch.compiler.is_compiling() and not torch.compiler.is_exporting()
    fixed = _FIXED_SCENARIO.get() if strategy == "auto" and not compiling and _capturing_graph() else None
    if fixed is not None:
        return torch.einsum("bni,nio->bno", x, weight[fixed])
    if strategy == "auto":
        if not _capturing_graph():
            strategy = "segment"
        else:
            strategy = "dense" if num_scenarios <= DENSE_MAX_SCENARIOS else "gather"
    if strategy == "segment":
        return _segment_matmul(x, weight, scenario)
    if strategy == "gather":
        w = weight[scenario].reshape(-1, in_dim, out_dim)  # [B·n, in, out]
        return torch.bmm(x.reshape(-1, 1, in_dim), w).reshape(x.shape[0], n, out_dim)
    if strategy != "dense":
        raise ValueError(f"unknown scenario matmul strategy {strategy!r}; expected auto or one of {STRATEGIES}")
    stacked = weight.permute(1, 2, 0, 3).reshape(n, in_dim, num_scenarios * out_dim)  # [n, in, S·out]
    every = torch.bmm(x.transpose(0, 1), stacked).view(n, x.shape[0], num_scenarios, out_dim)  # [n, B, S, out]
    index = scenario.view(1, -1, 1, 1).expand(n, -1, 1, out_dim)
    return every.gather(2, index).squeeze(2).transpose(0, 1)


def _segment_matmul(x: torch.Tensor, weight: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
    """Rows grouped by scenario, one ``einsum`` per scenario present (see :func:`scenario_matmul`)."""
    num_scenarios = weight.shape[0]
    counts = torch.bincount(scenario, minlength=num_scenarios).tolist()
    if max(counts, default=0) == x.shape[0] and x.shape[0] > 0:
        # one scenario in the batch (every request to the scoring service): no sort, gather or scatter
        return torch.einsum("bni,nio->bno", x, weight[counts.index(x.shape[0])])
    order = torch.argsort(scenario, stable=True)
    pieces = x.index_select(0, order).split(counts)
    outputs = [
        torch.einsum("bni,nio->bno", piece, weight[s]) for s, piece in enumerate(pieces) if counts[s] > 0
    ]
    grouped = torch.cat(outputs) if outputs else x.new_zeros(0, weight.shape[1], weight.shape[3])
    return torch.empty_like(grouped).index_copy(0, order, grouped)


class ScenarioLinear(nn.Module):
    """A linear map with its own weights per scenario (and per expert): ``[B, n, in] → [B, n, out]``.

    Each row is multiplied by its own scenario's weights via :func:`scenario_matmul`, so the graph has no
    data-dependent control flow and no Python loop over scenarios.
    """

    def __init__(
        self, in_dim: int, out_dim: int, num_scenarios: int, num_experts: int = 1, strategy: str = "auto"
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.num_experts = in_dim, out_dim, num_experts
        self.strategy = strategy
        bound = 1.0 / math.sqrt(in_dim)
        shape = (num_scenarios, num_experts, in_dim, out_dim)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_scenarios, num_experts, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        return scenario_matmul(x, self.weight, scenario, self.strategy) + self.bias.index_select(0, scenario)

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """Every scenario's branch on every row: ``[B, S, n, in] → [B, S, n, out]`` (for HiNet's SAN)."""
        return torch.einsum("bsni,snio->bsno", x, self.weight) + self.bias

    def extra_flops(self) -> int:
        """One scenario's branch per row (see :func:`msmtrec.models.base.estimate_flops`)."""
        return 2 * self.num_experts * self.in_dim * self.out_dim


class ScenarioExpertBank(nn.Module):
    """``n`` MLP experts *per scenario*; each row runs only its own scenario's experts → ``[B, n, d]``."""

    def __init__(
        self, in_dim: int, num_experts: int, dims: Sequence[int], num_scenarios: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if num_experts < 1 or not dims:
            raise ValueError("a scenario expert bank needs at least one expert and one hidden size")
        sizes = [in_dim, *dims]
        self.layers = nn.ModuleList(
            ScenarioLinear(a, b, num_scenarios, num_experts) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.num_experts = num_experts
        self.num_scenarios = num_scenarios
        self.out_dim = int(dims[-1])

    def forward(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(1).expand(-1, self.num_experts, -1)
        for layer in self.layers:
            h = self.dropout(F.relu(layer(h, scenario)))
        return h

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """All scenarios' experts on every row → ``[B, S, n, d]``."""
        h = x[:, None, None, :].expand(-1, self.num_scenarios, self.num_experts, -1)
        for layer in self.layers:
            h = self.dropout(F.relu(layer.forward_all(h)))
        return h


def linear_t(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` transposed: ``[B, in]`` → ``[out, B]`` (for :func:`softmax_rows`)."""
    return torch.addmm(bias.unsqueeze(1), weight, x.t())


def softmax_rows(logits_t: torch.Tensor) -> torch.Tensor:
    """Softmax of ``[n, B]`` logits over ``n``, returned as a ``[B, n]`` view.

    Gates have a handful of outputs; a softmax over such a short last dimension runs about 9× slower on CPU
    than the same softmax over a contiguous leading dimension, and a model has dozens of gates.
    """
    return torch.softmax(logits_t, dim=0).t()


class Gate(nn.Module):
    """Softmax gate: ``[B, in] → [B, n]`` weights that sum to one."""

    def __init__(self, in_dim: int, num_experts: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return softmax_rows(linear_t(x, self.proj.weight, self.proj.bias))


def mix(weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Gate-weighted sum: ``[B, n]`` × ``[B, n, d]`` → ``[B, d]``.

    Unrolled over the (few) experts as fused multiply-adds: an ``einsum``/``bmm`` here becomes ``B`` tiny
    ``[1, n] × [n, d]`` products, about 8× slower on CPU for the 2–8 experts of a gate.
    """
    out = weights[:, 0:1] * experts[:, 0]
    for i in range(1, experts.shape[1]):
        out = torch.addcmul(out, weights[:, i : i + 1], experts[:, i])
    return out


class GateNU(nn.Module):
    """PEPNet's gate neural unit: ``γ · sigmoid(MLP(x))`` in ``(0, γ)``, γ = 2 by default.

    With γ = 2 an untrained gate (output ≈ 1) leaves what it scales unchanged, and a trained one can both
    amplify and suppress, which a plain sigmoid (at most 1) cannot.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 64, gamma: float = 2.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.sigmoid(self.net(x))
