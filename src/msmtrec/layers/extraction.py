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

from msmtrec.layers.experts import ExpertBank, Gate, ScenarioExpertBank, linear_t, mix, relu_dropout

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

    def linears(self) -> list[nn.Linear]:
        """Within-group linears in group order, then the selector (the order of the stacked logit rows)."""
        return [*self.within.values(), *([self.selector] if self.selector is not None else [])]

    def concatenated(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The within-group and selector linears stacked: ``[rows, in]`` weight and ``[rows]`` bias.

        Each group keeps its own Linear (an ablation removes exactly that group's parameters); they are
        evaluated as one matmul."""
        linears = [*self.within.values(), *([self.selector] if self.selector is not None else [])]
        return torch.cat([m.weight for m in linears]), torch.cat([m.bias for m in linears])

    def weights_t(
        self, logits: torch.Tensor, group_weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``[rows, B]`` logits → effective weights ``P(g) · P(e | g)`` as ``[n_total, B]`` and the
        within-group weights ``{group: [B, n_g]}``."""
        parts = logits.split(self.splits, dim=0)  # [n_g, B] each
        if group_weights is None:
            if self.selector is None:
                raise ValueError("this gate has no group selector; pass group_weights")
            group_t = torch.softmax(parts[-1].masked_fill(~self.present.unsqueeze(1), float("-inf")), dim=0)
        else:
            group_t = group_weights.t()
        flat: list[torch.Tensor] = []
        within: dict[str, torch.Tensor] = {}
        for j, g in enumerate(self.sizes):
            i = GROUPS.index(g)
            group_w = group_t[i : i + 1]  # [1, B]
            if self.sizes[g] == 1:
                # a softmax over one logit is exactly 1: skip it (a third of a HEF forward's gates have a
                # single scenario or task expert)
                within[g] = torch.ones_like(parts[j]).t()
                flat.append(group_w)
            else:
                w = torch.softmax(parts[j], dim=0)
                within[g] = w.t()
                flat.append(group_w * w)
        return (torch.cat(flat) if len(flat) > 1 else flat[0]), within

    def forward(
        self, x: torch.Tensor, experts: dict[str, torch.Tensor], group_weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """→ (mixed ``[B, d]``, effective weights over all experts ``[B, n_total]``, within-group weights).

        The gate on its own (the unfused form; :class:`GroupedExtractionLayer` runs all gates of a level
        together with the same :meth:`weights_t`)."""
        weight, bias = self.concatenated()
        flat_t, within = self.weights_t(linear_t(x, weight, bias), group_weights)
        stacked = torch.cat([experts[g] for g in self.sizes], dim=1)  # [B, n_total, d]
        out = torch.matmul(flat_t.t().unsqueeze(1), stacked).squeeze(1)
        return out, flat_t.t(), within


@dataclass
class _GatePlan:
    """Python-side part of a level's gate plan (the index tensors are buffers of the layer)."""

    keys: list[str]
    entries: list[tuple[int, int]]
    """Each gate's rows of the effective-weight tensor (its experts in group order)."""
    shared_rows: list[int]
    """Each gate's first row of its shared within-group softmax in the probability pool."""
    segments: int
    logit_rows: list[tuple[int, int]]
    needs_group_weights: bool


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
        self.num_shared, self.num_scenario, self.num_task = num_shared, num_scenario, num_task
        self.num_experts = num_shared + num_scenario + n_tasks * num_task
        self.dropout = float(dropout)
        self._plan = self._build_plan()

    gate_pad_index: torch.Tensor
    gate_within_index: torch.Tensor
    gate_group_index: torch.Tensor
    gate_column_index: torch.Tensor

    def _build_plan(self) -> _GatePlan:
        """Static index maps that let :meth:`forward` run every gate of the level as a few whole-level ops.

        Logit rows: gate after gate, each gate's within-group rows (group order) then its 3 selector rows.
        Softmax segments: every within group, and every selector restricted to the groups present (the
        same as the unfused gate's ``-inf`` mask), padded to one length with a ``-inf`` row. The pool of
        probabilities is the padded softmax, then (final level) the caller's group weights ``[T·3]``.
        Effective weights are ``pool[within] · pool[group]``; columns place them over the level's N experts
        (shared, task 0 … T-1, scenario), with a zero row for experts a gate does not see.
        """
        gates = self._gates()
        n_tasks = len(self.task_names)
        row = 0
        segments: list[list[int]] = []
        logit_rows: list[tuple[int, int]] = []
        layout: list[tuple[dict[str, list[int]], dict[str, int] | None]] = []
        for _, gate in gates:
            start = row
            within: dict[str, list[int]] = {}
            for g, n in gate.sizes.items():
                within[g] = list(range(row, row + n))
                row += n
                segments.append(within[g])
            selector = None
            if gate.selector is not None:
                selector = {g: row + GROUPS.index(g) for g in gate.sizes}
                segments.append([selector[g] for g in GROUPS if g in selector])
                row += len(GROUPS)
            layout.append((within, selector))
            logit_rows.append((start, row))
        length = max(len(seg) for seg in segments)
        pad, position = [], {}
        for k, seg in enumerate(segments):
            for j in range(length):
                if j < len(seg):
                    position[seg[j]] = k * length + j
                pad.append(seg[j] if j < len(seg) else row)  # row == the -inf row
        group_base = len(segments) * length
        within_index, group_index, columns, entries, shared_rows = [], [], [], [], []
        needs_group_weights = False
        ns, nt = self.num_shared, self.num_task
        for g, ((key, _gate), (within, selector)) in enumerate(zip(gates, layout, strict=True)):
            first = len(within_index)
            # expert layout: shared, task 0 … task T-1, scenario (shared + task experts come out of one matmul)
            offsets = {"shared": 0, "scenario": ns + n_tasks * nt}
            if key.startswith("task:"):
                offsets["task"] = ns + g * nt  # task gates come first, in task order
            else:
                offsets["task"] = ns
            column = [-1] * self.num_experts
            for grp, rows in within.items():
                if selector is not None:
                    group_row = position[selector[grp]]
                else:
                    needs_group_weights = True
                    group_row = group_base + g * len(GROUPS) + GROUPS.index(grp)
                for e, r in enumerate(rows):
                    column[offsets[grp] + e] = len(within_index)
                    within_index.append(position[r])
                    group_index.append(group_row)
            entries.append((first, len(within_index)))
            shared_rows.append(position[within["shared"][0]])
            columns.append(column)
        zero = len(within_index)
        flat_columns = [zero if c < 0 else c for column in columns for c in column]
        for name, values in [
            ("gate_pad_index", pad),
            ("gate_within_index", within_index),
            ("gate_group_index", group_index),
            ("gate_column_index", flat_columns),
        ]:
            self.register_buffer(name, torch.tensor(values, dtype=torch.long), persistent=False)
        assert n_tasks == 0 or not needs_group_weights or all(k.startswith("task:") for k, _ in gates)
        return _GatePlan(
            keys=[k for k, _ in gates],
            entries=entries,
            shared_rows=shared_rows,
            segments=len(segments),
            logit_rows=logit_rows,
            needs_group_weights=needs_group_weights,
        )

    def forward(
        self,
        task_inputs: Sequence[torch.Tensor],
        shared_input: torch.Tensor,
        scenario_input: torch.Tensor,
        scenario: torch.Tensor,
        context: torch.Tensor | None = None,
        group_weights: Sequence[torch.Tensor] | None = None,
    ) -> LevelOutput:
        """One level, fused: every expert of the level in one ``[B, N, d]`` tensor, every gate's logits from
        one matmul per distinct input, and every gate's weighted sum as one batched matmul.

        The same maths as running each expert bank and each :class:`GroupedGate` on its own (the tests
        compare values and gradients with that unfused form), in a handful of kernels instead of dozens:
        at HEF's default the unfused level costs ~60 small ops forward (and twice that backward), most of
        them per-expert multiply-adds over strided slices whose backward allocates and fills a full-size
        zero tensor per slice. Dropout draws one mask for the whole level (the same distribution as one
        mask per bank).
        """
        experts = self._experts(task_inputs, shared_input, scenario_input, scenario)  # [B, N, d]
        logits = self._gate_logits(task_inputs, shared_input, scenario_input, context)  # [R, B]
        plan = self._plan
        if group_weights is None and plan.needs_group_weights:
            raise ValueError("this level's task gates have no group selector; pass group_weights")
        # every within-group and selector softmax of the level at once: segments padded with -inf to one length
        # full_like/zeros_like take the batch size from a tensor, so a traced graph (TorchScript) keeps it dynamic
        padded = torch.cat([logits, torch.full_like(logits[:1], float("-inf"))]).index_select(0, self.gate_pad_index)
        probs = torch.softmax(padded.unflatten(0, (plan.segments, -1)), dim=1).flatten(0, 1)
        pool = [probs]
        if plan.needs_group_weights:
            assert group_weights is not None
            pool.append(torch.stack(list(group_weights), dim=1).flatten(1).t())  # [T·3, B]
        pool = torch.cat(pool) if len(pool) > 1 else pool[0]
        # effective weights P(g) · P(e | g), each gate's entries in its own group order: [entries, B]
        effective = pool.index_select(0, self.gate_within_index) * pool.index_select(0, self.gate_group_index)
        full = torch.cat([effective, torch.zeros_like(effective[:1])]).index_select(0, self.gate_column_index)
        weights = full.unflatten(0, (len(plan.keys), self.num_experts)).permute(2, 0, 1).contiguous()  # [B, G, N]
        mixed = torch.matmul(weights, experts)  # [B, G, d]: every gate's weighted sum in one call
        out = LevelOutput(task=[], shared=None, scenario=None)
        # unbind, not mixed[:, g]: its backward is one stack, where each select's allocates a full zero tensor
        for g, (key, rep) in enumerate(zip(plan.keys, mixed.unbind(1), strict=True)):
            start, stop = plan.entries[g]
            out.gates[key] = effective[start:stop].t()
            if key.startswith("task:"):
                out.task.append(rep)
                first = plan.shared_rows[g]
                out.shared_usage.append(probs[first : first + self.num_shared].t())
            elif key == "shared":
                out.shared = rep
            else:
                out.scenario = rep
        return out

    # ---------------------------------------------------------------------------------------- fused parts
    def _gates(self) -> list[tuple[str, GroupedGate]]:
        pairs = zip(self.task_names, self.task_gates, strict=True)
        gates: list[tuple[str, GroupedGate]] = [(f"task:{n}", g) for n, g in pairs]
        if self.shared_gate is not None:
            gates.append(("shared", self.shared_gate))
        if self.scenario_gate is not None:
            gates.append(("scenario", self.scenario_gate))
        return gates

    def _gate_logits(
        self,
        task_inputs: Sequence[torch.Tensor],
        shared_input: torch.Tensor,
        scenario_input: torch.Tensor,
        context: torch.Tensor | None,
    ) -> torch.Tensor:
        """Every gate's logits stacked ``[R, B]`` (gate order, each gate's within groups then its selector).

        One matmul when every gate reads the same input (the first level); otherwise the context part
        ``W_c · context`` is computed once for all gates and each gate adds its own input's part."""
        linears = [m for _, gate in self._gates() for m in gate.linears()]
        weight = torch.cat([m.weight for m in linears])  # [R, in (+ context)]
        bias = torch.cat([m.bias for m in linears])
        inputs = [*task_inputs, *([shared_input] if self.shared_gate is not None else [])]
        inputs += [scenario_input] if self.scenario_gate is not None else []
        if all(x is inputs[0] for x in inputs):
            gin = inputs[0] if context is None else torch.cat([inputs[0], context], dim=1)
            return linear_t(gin, weight, bias)
        in_dim = inputs[0].shape[1]
        base = bias.unsqueeze(1) if context is None else linear_t(context, weight[:, in_dim:], bias)  # [R, B]
        w_x = weight[:, :in_dim]
        bounds = self._plan.logit_rows
        return torch.cat(
            [torch.addmm(base[a:b], w_x[a:b], x.t()) for (a, b), x in zip(bounds, inputs, strict=True)]
        )

    def _experts(
        self,
        task_inputs: Sequence[torch.Tensor],
        shared_input: torch.Tensor,
        scenario_input: torch.Tensor,
        scenario: torch.Tensor,
    ) -> torch.Tensor:
        """All experts of the level, ``[B, N, d]`` in the order shared, task 0 … task T-1, scenario."""
        shared_bank = self.shared_experts
        task_banks = list(self.task_experts) if self.task_experts is not None else []
        banks = [shared_bank, *task_banks]
        flat = [(b.weights[0].permute(1, 0, 2).reshape(b.in_dim, -1), b.biases[0].reshape(-1)) for b in banks]
        if all(x is shared_input for x in task_inputs):
            # one input for shared and task experts (the first level): one matmul for all of them
            w = torch.cat([f[0] for f in flat], dim=1)
            b = torch.cat([f[1] for f in flat])
            st = torch.addmm(b, shared_input, w).unflatten(1, (-1, shared_bank.sizes[1]))
            parts = [st]  # kept whole: slicing it and concatenating again costs a copy and two zero-fills backward
        else:
            sh = torch.addmm(flat[0][1], shared_input, flat[0][0]).unflatten(1, (self.num_shared, -1))
            pairs = zip(flat[1:], task_inputs, strict=True) if task_banks else []
            parts = [sh, *(torch.addmm(f[1], x, f[0]).unflatten(1, (self.num_task, -1)) for f, x in pairs)]
        if self.scenario_experts is not None:
            first = self.scenario_experts.layers[0]
            parts.append(first(scenario_input.unsqueeze(1).expand(-1, self.num_scenario, -1), scenario))
        h = relu_dropout(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0], self.dropout, self.training)
        for depth in range(1, len(shared_bank.weights)):
            h = relu_dropout(self._deeper(h, depth, scenario), self.dropout, self.training)
        return h

    def _deeper(self, h: torch.Tensor, depth: int, scenario: torch.Tensor) -> torch.Tensor:
        """Layer ``depth`` (≥ 1) of every expert: one batched matmul for shared + task, per-scenario for the rest."""
        k = self.num_experts - self.num_scenario  # shared + task experts lead the layout
        banks = [self.shared_experts, *(list(self.task_experts) if self.task_experts is not None else [])]
        w = torch.cat([b.weights[depth] for b in banks])  # [K, a, b]
        bias = torch.cat([b.biases[depth] for b in banks]).unsqueeze(1)  # [K, 1, b]
        st = torch.baddbmm(bias, h[:, :k].transpose(0, 1), w).transpose(0, 1)  # [B, K, b]
        if not self.num_scenario:
            return st
        assert self.scenario_experts is not None
        sc = self.scenario_experts.layers[depth](h[:, k:], scenario)
        return torch.cat([st, sc], dim=1)
