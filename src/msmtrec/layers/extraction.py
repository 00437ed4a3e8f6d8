"""Expert extraction layers: CGC / PLE (Tang et al., RecSys 2020) and the grouped scenario-aware variant.

:class:`CGCLayer` is one *customised gate control* level: shared experts plus task-specific experts, and one
softmax gate per task over (shared + that task's experts). Non-final levels also have a *shared* gate over
all experts whose output feeds the next level's shared experts — without it a multi-level PLE degenerates
into stacked CGCs whose shared experts never see the task experts' progress. :class:`PLEStack` stacks them.

:class:`GroupedExtractionLayer` generalises CGC to three expert *groups* — shared, scenario-specific (each
row runs only its own scenario's experts) and task-specific — with every gate factorised as
``P(group) · P(expert | group)``. Any distribution over the concatenated experts can be written that way,
and the factorisation (i) lets a model replace ``P(group)`` at the last level by an explicit, regularised
mixing of the shared / scenario / task representations (HEF, M3oE) and (ii) keeps each group's parameters
separate, so switching a group off removes exactly that group's experts and gates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from msmtrec.layers.experts import ExpertBank, Gate, ScenarioExpertBank, linear_t, mix, softmax_rows

GROUPS: tuple[str, str, str] = ("shared", "scenario", "task")
"""Expert groups, in the order used by every ``[B, 3]`` group/mixing weight tensor."""


class CGCLayer(nn.Module):
    """One PLE extraction level. Returns per-task outputs, the shared output (non-final) and gate weights."""

    def __init__(
        self,
        in_dim: int,
        task_names: Sequence[str],
        num_shared: int,
        num_specific: int,
        dims: Sequence[int],
        dropout: float = 0.0,
        shared_gate: bool = False,
    ) -> None:
        super().__init__()
        if num_shared + num_specific < 1:
            raise ValueError("CGC needs at least one expert")
        self.task_names = list(task_names)
        n_tasks = len(self.task_names)
        self.shared = ExpertBank(in_dim, num_shared, dims, dropout) if num_shared else None
        self.specific = (
            nn.ModuleList(ExpertBank(in_dim, num_specific, dims, dropout) for _ in range(n_tasks))
            if num_specific
            else None
        )
        self.task_gates = nn.ModuleList(Gate(in_dim, num_shared + num_specific) for _ in range(n_tasks))
        self.shared_gate = Gate(in_dim, num_shared + n_tasks * num_specific) if shared_gate else None
        self.out_dim = int(dims[-1])

    def forward(
        self, task_inputs: Sequence[torch.Tensor], shared_input: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, dict[str, torch.Tensor]]:
        shared = [self.shared(shared_input)] if self.shared is not None else []
        specific = (
            [bank(x) for bank, x in zip(self.specific, task_inputs, strict=True)] if self.specific is not None else []
        )
        outputs: list[torch.Tensor] = []
        gates: dict[str, torch.Tensor] = {}
        for i, (name, gate, x) in enumerate(zip(self.task_names, self.task_gates, task_inputs, strict=True)):
            experts = torch.cat(shared + specific[i : i + 1], dim=1)
            w = gate(x)
            outputs.append(mix(w, experts))
            gates[f"task:{name}"] = w
        shared_out = None
        if self.shared_gate is not None:
            w = self.shared_gate(shared_input)
            shared_out = mix(w, torch.cat(shared + specific, dim=1))
            gates["shared"] = w
        return outputs, shared_out, gates


class PLEStack(nn.Module):
    """Progressive layered extraction: ``levels`` CGC layers, shared experts updated level to level."""

    def __init__(
        self,
        in_dim: int,
        task_names: Sequence[str],
        levels: int,
        num_shared: int,
        num_specific: int,
        dims: Sequence[int],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError("PLE needs at least one level")
        self.levels = nn.ModuleList(
            CGCLayer(
                in_dim if lvl == 0 else int(dims[-1]),
                task_names,
                num_shared,
                num_specific,
                dims,
                dropout,
                shared_gate=lvl < levels - 1,
            )
            for lvl in range(levels)
        )
        self.num_tasks = len(task_names)
        self.out_dim = int(dims[-1])

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """``[B, in]`` → per-task ``[B, d]`` outputs and ``{"level{l}/{who}": [B, n]}`` gate weights."""
        task_inputs: list[torch.Tensor] = [x] * self.num_tasks
        shared: torch.Tensor = x
        gates: dict[str, torch.Tensor] = {}
        for lvl, layer in enumerate(self.levels):
            task_inputs, shared_out, level_gates = layer(task_inputs, shared)
            gates.update({f"level{lvl}/{k}": v for k, v in level_gates.items()})
            if shared_out is not None:
                shared = shared_out
        return task_inputs, gates


class GroupedGate(nn.Module):
    """A gate factorised as ``P(group) · P(expert | group)`` over the groups given in ``sizes``.

    ``selector=False`` means the group weights are supplied by the caller (e.g. a mixing module). All
    logits (within-group and group selector) come from one matmul over the groups' concatenated weights.
    """

    present: torch.Tensor

    def __init__(self, in_dim: int, sizes: dict[str, int], selector: bool = True) -> None:
        super().__init__()
        self.sizes = {g: sizes[g] for g in GROUPS if sizes.get(g, 0) > 0}
        self.within = nn.ModuleDict({g: nn.Linear(in_dim, n) for g, n in self.sizes.items()})
        self.selector = nn.Linear(in_dim, len(GROUPS)) if selector else None
        self.splits = [*self.sizes.values(), *([len(GROUPS)] if selector else [])]
        self.register_buffer("present", torch.tensor([g in self.sizes for g in GROUPS]), persistent=False)

    def forward(
        self, x: torch.Tensor, experts: dict[str, torch.Tensor], group_weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """→ (mixed ``[B, d]``, effective weights over all experts ``[B, n_total]``, within-group weights)."""
        # Each group keeps its own Linear (an ablation removes exactly that group's parameters); they are
        # evaluated as one concatenated matmul.
        linears = [*self.within.values(), *([self.selector] if self.selector is not None else [])]
        weight = torch.cat([m.weight for m in linears])
        bias = torch.cat([m.bias for m in linears])
        logits = linear_t(x, weight, bias).split(self.splits, dim=0)  # [n_g, B] each
        if group_weights is None:
            if self.selector is None:
                raise ValueError("this gate has no group selector; pass group_weights")
            group_weights = softmax_rows(logits[-1].masked_fill(~self.present.unsqueeze(1), float("-inf")))
        # out = Σ_groups P(g) · Σ_e P(e | g) · expert_e, accumulated as one fused multiply-add per expert
        # with the effective weights P(g) · P(e | g) (two fewer full-width passes per group than mixing
        # each group first and scaling it after).
        out: torch.Tensor | None = None
        flat: list[torch.Tensor] = []
        within: dict[str, torch.Tensor] = {}
        for j, g in enumerate(self.sizes):
            i = GROUPS.index(g)
            group_w = group_weights[:, i : i + 1]
            if self.sizes[g] == 1:
                # a softmax over one logit is exactly 1: skip it (a third of a HEF forward's gates have a
                # single scenario or task expert)
                w = torch.ones_like(logits[j]).t()
                effective = group_w
            else:
                w = softmax_rows(logits[j])
                effective = group_w * w
            within[g] = w
            flat.append(effective)
            group_experts = experts[g]
            for e in range(group_experts.shape[1]):
                weight, expert = effective[:, e : e + 1], group_experts[:, e]
                out = weight * expert if out is None else torch.addcmul(out, weight, expert)
        assert out is not None  # "shared" is always present
        return out, torch.cat(flat, dim=1), within


@dataclass
class LevelOutput:
    """What one grouped extraction level hands to the next level and to ``explain``."""

    task: list[torch.Tensor]
    shared: torch.Tensor | None
    scenario: torch.Tensor | None
    gates: dict[str, torch.Tensor] = field(default_factory=dict)
    shared_usage: list[torch.Tensor] = field(default_factory=list)
    """Within-group weights over the shared experts of every task gate (for balance regularisers)."""


class GroupedExtractionLayer(nn.Module):
    """Shared, scenario-specific and task-specific experts with group-factorised, context-aware gates.

    Gates see ``input ⊕ context`` (e.g. a scenario embedding), so routing can depend on the scenario even
    for the shared experts. Non-final levels emit a task output per task, a shared output (gate over *all*
    experts, feeding the next level's shared experts) and, with scenario experts, a scenario output (gate
    over shared + scenario experts, feeding the next level's scenario experts). The final level emits one
    output per task, with the group weights supplied by the caller.
    """

    def __init__(
        self,
        in_dim: int,
        context_dim: int,
        task_names: Sequence[str],
        num_scenarios: int,
        num_shared: int,
        num_scenario: int,
        num_task: int,
        dims: Sequence[int],
        dropout: float = 0.0,
        final: bool = True,
    ) -> None:
        super().__init__()
        if num_shared < 1:
            raise ValueError("grouped extraction needs at least one shared expert")
        self.task_names = list(task_names)
        n_tasks = len(self.task_names)
        self.final = final
        self.shared_experts = ExpertBank(in_dim, num_shared, dims, dropout)
        self.scenario_experts = (
            ScenarioExpertBank(in_dim, num_scenario, dims, num_scenarios, dropout) if num_scenario else None
        )
        self.task_experts = (
            nn.ModuleList(ExpertBank(in_dim, num_task, dims, dropout) for _ in range(n_tasks)) if num_task else None
        )
        gin = in_dim + context_dim
        task_sizes = {"shared": num_shared, "scenario": num_scenario, "task": num_task}
        self.task_gates = nn.ModuleList(GroupedGate(gin, task_sizes, selector=not final) for _ in range(n_tasks))
        self.shared_gate = (
            None
            if final
            else GroupedGate(gin, {"shared": num_shared, "scenario": num_scenario, "task": n_tasks * num_task})
        )
        self.scenario_gate = (
            GroupedGate(gin, {"shared": num_shared, "scenario": num_scenario}) if num_scenario and not final else None
        )
        self.out_dim = int(dims[-1])

    def forward(
        self,
        task_inputs: Sequence[torch.Tensor],
        shared_input: torch.Tensor,
        scenario_input: torch.Tensor,
        scenario: torch.Tensor,
        context: torch.Tensor | None = None,
        group_weights: Sequence[torch.Tensor] | None = None,
    ) -> LevelOutput:
        def gate_input(x: torch.Tensor) -> torch.Tensor:
            return x if context is None else torch.cat([x, context], dim=1)

        experts: dict[str, torch.Tensor] = {"shared": self.shared_experts(shared_input)}
        if self.scenario_experts is not None:
            experts["scenario"] = self.scenario_experts(scenario_input, scenario)
        task_experts = (
            [bank(x) for bank, x in zip(self.task_experts, task_inputs, strict=True)]
            if self.task_experts is not None
            else []
        )
        out = LevelOutput(task=[], shared=None, scenario=None)
        for i, (name, gate) in enumerate(zip(self.task_names, self.task_gates, strict=True)):
            groups = dict(experts)
            if task_experts:
                groups["task"] = task_experts[i]
            gw = None if group_weights is None else group_weights[i]
            rep, flat, within = gate(gate_input(task_inputs[i]), groups, gw)
            out.task.append(rep)
            out.gates[f"task:{name}"] = flat
            out.shared_usage.append(within["shared"])
        if self.shared_gate is not None:
            groups = dict(experts)
            if task_experts:
                groups["task"] = torch.cat(task_experts, dim=1)
            out.shared, out.gates["shared"], _ = self.shared_gate(gate_input(shared_input), groups)
        if self.scenario_gate is not None:
            out.scenario, out.gates["scenario"], _ = self.scenario_gate(gate_input(scenario_input), experts)
        return out
