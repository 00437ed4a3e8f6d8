"""HEF — the flagship hierarchical expert fusion model of msmtrec, built from published parts:

* optionally (``attention``, off by default: it did not pay on validation, docs/hef.md section 5) field
  self-attention (AutoInt, Song et al., CIKM 2019) so fields interact before any routing;
* a STAR base (Sheng et al., CIKM 2021, arXiv 2101.11427): partitioned normalisation + star-topology FC
  layers conditioned on the scenario, and STAR's auxiliary scenario network whose logit is added to every
  task's logit;
* progressive layered extraction (PLE, Tang et al., RecSys 2020) with three expert groups — shared,
  scenario-specific and task-specific (as in M3oE, Zhang et al., SIGIR 2024, and HiNet, Zhou et al.,
  arXiv 2303.06095) — whose gates see ``representation ⊕ scenario embedding``;
* a learnable balanced mixing of the shared, scenario and task representations per (scenario, task)
  instead of the last level's group gate, with a regulariser (KL of each scenario's mean shared-expert
  usage to uniform, scenarios weighted equally) so large scenarios cannot monopolise the shared experts;
* a tower per task, funnel tasks composed ESMM-style (Ma et al., SIGIR 2018).

Every component is an ablation switch: ``attention``, ``star``, ``levels``, ``scenario_experts``,
``task_experts``, ``mixing`` — each removes exactly the parameters it names; ``base_skip`` adds the STAR
base's output to every tower's input.

**The default is leaner than the method as published** (docs/hef.md sections 5–7): parts that did not pay on
most shipped suites' validation splits are off — field attention, scenario experts, task experts and the
learned mixing — so the default HEF is a STAR base under a two-level extraction of shared experts whose gates
see the scenario, with the scenario-balance regulariser on those gates. Each part stays one switch away and
the suites keep measuring it as an ablation row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from msmtrec.data.schema import Batch, Schema
from msmtrec.layers import (
    AuxiliaryNetwork,
    BalancedMixing,
    FieldEmbedding,
    FieldSelfAttention,
    GateNU,
    GroupedExtractionLayer,
    StarNetwork,
    TaskHeads,
    scenario_balance_loss,
)
from msmtrec.models.base import Ablation, ModelConfig, MultiTaskModel, Param, register, require


@dataclass
class HEFConfig(ModelConfig):
    attention: bool = False
    """Field self-attention before the STAR base. **Off by default** since 2026-11-30: on the validation
    splits of the shipped suites, at HEF's hand-set config, turning it on lost on the synthetic suite (the one
    with user and item ids) and on Hillstrom and was within noise on Census by class of worker (docs/hef.md
    section 5), and the diagnosis found it uniform (a learned projection of the mean field, section 2). The
    suites keep it as the ``hef-attention`` ablation row."""
    attention_heads: int = 2
    """Attention heads; ``embed_dim`` must be divisible by it."""
    attention_layers: int = 1
    """Stacked interacting layers."""
    attention_norm: bool = False
    """LayerNorm on the field tokens before the query/key projections, so the scores are unit-scale at
    initialisation instead of ~1e-4 (uniform attention, docs/hef.md section 2). Tested option, see section 4."""
    embedding_gate: bool = False
    """EPNet's gate (PEPNet, Chang et al., KDD 2023) in front of everything: a gate unit on ``scenario
    embedding ⊕ stop_gradient(field embeddings)`` scales each field's embedding by a factor in (0, 2), so the
    scenario can re-weight the fields before the base sees them (PEPNet led both Census suites). Tested
    option (docs/hef.md section 7)."""
    embedding_gate_hidden: int = 32
    """Hidden size of the embedding gate unit."""
    star: bool = True
    """PN + scenario weights in the base, and the auxiliary scenario network (off → plain shared MLP base)."""
    star_dims: tuple[int, ...] = (128, 64)
    """Hidden sizes of the base network. ``(128, 64)`` (STAR's own hand-set depth in the suites) since
    2026-11-30: with attention off it beat ``(64,)`` on the validation splits of all three suites measured,
    by +0.005 on the synthetic suite and within ±0.0002 on the other two (docs/hef.md section 5)."""
    aux_dims: tuple[int, ...] = (16,)
    """Hidden sizes of the auxiliary scenario network."""
    scenario_dim: int = 8
    """Size of the scenario embeddings (gate context; the auxiliary network has its own)."""
    levels: int = 2
    """Extraction levels (1 = a single mixture-of-experts layer)."""
    shared_experts: int = 2
    """Shared experts per level (at least one)."""
    scenario_experts: int = 0
    """Experts per scenario per level (0 = no scenario experts). **0 by default** since 2026-11-30: in the tuned
    suites' ablation rows switching them off raised or kept HEF's validation score on all four suites
    (docs/hef.md section 6b), and in the previous round's rows they were split. The suites keep them as the
    ``hef-scenario-experts`` row (one per scenario per level), so the tables keep measuring them."""
    task_experts: int = 0
    """Experts per task per level (0 = no task experts). **0 by default** since 2026-11-30, for the same
    reason as ``scenario_experts``: they did not pay on any of the four suites' validation splits in the
    tuned ablation rows, nor in the previous round's (docs/hef.md section 6b); ``hef-task-experts`` row."""
    expert_dims: tuple[int, ...] = (64,)
    """Hidden sizes of every expert MLP."""
    expert_dropout: float | None = None
    """Dropout on the experts' hidden units (``None``: the model's ``dropout``). Kept equal to ``dropout`` by
    default: on validation (3 seeds, docs/hef.md) removing it was neutral on Hillstrom and Census
    (class_of_worker) and lost 0.003–0.007 on the synthetic data with user and item ids."""
    base_skip: Literal["none", "concat", "gated"] = "none"
    """What the towers read besides the extraction output. ``none`` (**default**): the extraction output alone
    (the method as published). ``concat``: ``extraction ⊕ STAR base``, so HEF contains STAR (towers on the
    base) as a special case. ``gated``: ``STAR base ⊕ g_t ⊙ extraction`` with a per-task gate vector ``g_t``
    that starts at zero, so training starts as STAR and the extraction levels enter only as far as their
    gradient pays. ``gated`` was the default for one day (2026-11-30, docs/hef.md section 6): it led ``none``
    on two suites of three at the hand-set config, but in the tuned ablation rows it paid on one suite of
    four (section 6b), so by the rule of issue 14 it is off again (section 7). ``hef-gated-skip`` row."""
    mixing: Literal["learned", "uniform"] = "uniform"
    """How the last level fuses (shared, scenario, task) representations per (scenario, task). ``uniform`` by
    default since 2026-11-30: the learned mixing paid on one suite of four in the tuned ablation rows
    (docs/hef.md section 6b), and with the default's shared experts only there is a single group to mix, so
    the learned table would be parameters without a gradient. ``hef-learned-mixing`` row (with scenario and
    task experts on, where it has something to weigh)."""
    mixing_input: bool = True
    """Let the base representation modulate the learned mixing logits per row."""
    balance_weight: float = 0.01
    """Weight of the scenario-balance regulariser returned by :meth:`regularization_loss`."""
    gate_balance: bool = False
    """Also pull every gate's mean weights per scenario (over all its experts: shared, scenario, task) toward
    uniform with the same term, not only the task gates' shared-expert usage; every level but the last, whose
    group weights are the learned mixing. Why: the diagnosis found first-level gates collapsing onto one
    expert (docs/hef.md section 2). Tested option, see section 4."""

    ADDED_LATER: ClassVar[dict[str, Any]] = {
        "attention_norm": False, "gate_balance": False, "expert_dropout": None, "base_skip": "none",
        "embedding_gate": False, "embedding_gate_hidden": 32,
    }
    """Runs saved before these settings existed were trained with these values (``base_skip``: no skip)."""


@register("hef")
class HEF(MultiTaskModel):
    Config = HEFConfig

    @classmethod
    def ablations(cls) -> list[Ablation]:
        """Each part of the method, switched the other way from the default (docs/hef.md section 7): the rows
        that decide, suite by suite, whether a part earns being default-on."""
        return [
            Ablation("hef-attention", "attention: on (off by default)", {"attention": True}),
            Ablation("hef-no-star", "star: off (plain shared base)", {"star": False}),
            Ablation("hef-1-level", "levels: 1", {"levels": 1}),
            Ablation("hef-scenario-experts", "scenario_experts: 1 (0 by default)", {"scenario_experts": 1}),
            Ablation("hef-task-experts", "task_experts: 1 (0 by default)", {"task_experts": 1}),
            Ablation("hef-all-experts", "the published extraction: scenario and task experts, learned mixing",
                     {"scenario_experts": 1, "task_experts": 1, "mixing": "learned"}),
            Ablation("hef-gated-skip", "base_skip: gated (towers read the STAR base and gated extraction)",
                     {"base_skip": "gated"}),
            Ablation("hef-embedding-gate", "embedding_gate: on (EPNet's per-field scales from the scenario)",
                     {"embedding_gate": True}),
        ]

    @classmethod
    def search_space(cls) -> dict[str, Param]:
        """The default space plus the sizes of the parts on by default (see :meth:`MultiTaskModel.search_space`).

        Scenario and task expert counts are not searched since they became default-off (their ablation rows
        switch them on at one expert each): a search that may switch a part back on would tune a different
        model than the default the docs describe, and each extra dimension thins a 4-trial budget."""
        return {
            **super().search_space(),
            "model.levels": Param.choice(1, 2, 3),
            "model.shared_experts": Param.choice(2, 3, 4),
            "model.expert_dims": Param.choice((64,), (96,), (128,)),
            "model.star_dims": Param.choice((64,), (128,), (128, 64)),
            "model.balance_weight": Param.real(1e-4, 0.1, log=True),
        }

    def __init__(self, schema: Schema, config: HEFConfig) -> None:
        super().__init__(schema, config)
        c = config
        require(c.levels >= 1, "hef: levels must be >= 1")
        require(c.shared_experts >= 1, "hef: shared_experts must be >= 1")
        require(c.scenario_experts >= 0 and c.task_experts >= 0, "hef: expert counts must be >= 0")
        require(
            c.mixing in ("learned", "uniform"),
            f"hef: mixing must be 'learned' or 'uniform', got {c.mixing!r}",
        )
        require(len(c.star_dims) > 0 and len(c.expert_dims) > 0, "hef: star_dims and expert_dims must be set")
        require(
            c.expert_dropout is None or 0.0 <= c.expert_dropout < 1.0,
            f"hef: expert_dropout must be in [0, 1), got {c.expert_dropout!r}",
        )
        require(
            not c.attention or c.embed_dim % c.attention_heads == 0,
            f"hef: embed_dim {c.embed_dim} not divisible by attention_heads {c.attention_heads}",
        )
        n_scen, n_tasks = schema.num_scenarios, len(self.task_names)
        in_dim = self.flat_dim
        self.embedding = FieldEmbedding(schema, c.embed_dim)
        self.attention = (
            FieldSelfAttention(
                schema.num_fields, c.embed_dim, c.attention_heads, c.attention_layers, norm=c.attention_norm
            )
            if c.attention
            else None
        )
        self.base = StarNetwork(in_dim, c.star_dims, n_scen, c.dropout, star=c.star)
        self.scenario_embedding = nn.Embedding(n_scen, c.scenario_dim)
        nn.init.normal_(self.scenario_embedding.weight, std=0.1)
        self.embedding_gate = (
            GateNU(c.scenario_dim + in_dim, schema.num_fields, c.embedding_gate_hidden) if c.embedding_gate else None
        )
        dims = tuple(c.expert_dims)
        self.extraction = nn.ModuleList(
            GroupedExtractionLayer(
                self.base.out_dim if lvl == 0 else dims[-1],
                c.scenario_dim,
                self.task_names,
                n_scen,
                c.shared_experts,
                c.scenario_experts,
                c.task_experts,
                dims,
                c.dropout if c.expert_dropout is None else c.expert_dropout,
                final=lvl == c.levels - 1,
            )
            for lvl in range(c.levels)
        )
        self.mixing = BalancedMixing(
            n_scen,
            n_tasks,
            present=(True, c.scenario_experts > 0, c.task_experts > 0),
            mode=c.mixing,
            input_dim=self.base.out_dim if c.mixing_input else 0,
        )
        self.mixes_groups = c.scenario_experts > 0 or c.task_experts > 0
        """Whether the last level has more than the shared group to mix; with shared experts alone every mixing
        weight is 1, so ``explain`` leaves the ``mixing/`` keys out rather than report a constant."""
        self.aux = AuxiliaryNetwork(in_dim, n_scen, n_tasks, c.scenario_dim, c.aux_dims, c.dropout) if c.star else None
        require(
            c.base_skip in ("none", "concat", "gated"),
            f"hef: base_skip must be 'none', 'concat' or 'gated', got {c.base_skip!r}",
        )
        tower_in = dims[-1] + (self.base.out_dim if c.base_skip != "none" else 0)
        self.skip_gate = nn.Parameter(torch.zeros(n_tasks, dims[-1])) if c.base_skip == "gated" else None
        self.heads = TaskHeads(schema, tower_in, c.tower_dims, c.dropout, c.funnel)
        self._balance: torch.Tensor | None = None

    def _run(self, batch: Batch, details: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        scenario = batch["scenario"]
        tokens = self.embedding(batch)
        info: dict[str, torch.Tensor] = {}
        raw_flat = tokens.flatten(1)
        context = self.scenario_embedding(scenario)
        if self.embedding_gate is not None:  # the gate reads the embeddings but does not reshape them
            field_gate = self.embedding_gate(torch.cat([context, raw_flat.detach()], dim=1))  # [B, F]
            tokens = tokens * field_gate.unsqueeze(-1)
            if details:
                info["epnet"] = field_gate
        if self.attention is not None:
            tokens, attn = self.attention(tokens)
            if details:
                info["attention"] = attn
        h = self.base(tokens.flatten(1), scenario)
        n_tasks = len(self.task_names)
        task_in: list[torch.Tensor] = [h] * n_tasks
        shared_in, scenario_in = h, h
        usage: list[torch.Tensor] = []
        last = len(self.extraction) - 1
        for lvl, layer in enumerate(self.extraction):
            mixing = [self.mixing(scenario, t, h) for t in range(n_tasks)] if lvl == last else None
            out = layer(task_in, shared_in, scenario_in, scenario, context, mixing)
            usage.extend(out.shared_usage)
            if self.config.gate_balance and lvl != last:  # the last level's groups come from the mixing
                usage.extend(out.gates.values())
            if details:
                info.update({f"gates/level{lvl}/{k}": v for k, v in out.gates.items()})
                if mixing is not None and self.mixes_groups:
                    info.update({f"mixing/{name}": w for name, w in zip(self.task_names, mixing, strict=True)})
            task_in = out.task
            if out.shared is not None:
                shared_in = out.shared
            if out.scenario is not None:
                scenario_in = out.scenario
        extra = self.aux(raw_flat, scenario) if self.aux is not None else None
        if self.skip_gate is not None:
            task_in = [torch.cat([h, gate * x], dim=1) for gate, x in zip(self.skip_gate, task_in, strict=True)]
        elif self.config.base_skip == "concat":
            task_in = [torch.cat([x, h], dim=1) for x in task_in]
        outputs = self.heads(task_in, extra)
        if torch.is_grad_enabled() and not (torch.jit.is_tracing() or torch.compiler.is_exporting()):
            # A Python-side cache for the trainer, computed only when gradients are on (training): scoring
            # under no_grad/inference_mode never reads it, and while tracing/exporting it is not part of the
            # served graph and would leak a traced tensor into the module. Under torch.compile it is kept
            # (dynamo replays the attribute write), so a compiled training step still has the regulariser.
            n = self.schema.num_scenarios
            self._balance = torch.stack([scenario_balance_loss(u, scenario, n) for u in usage]).mean()
        else:
            self._balance = None
        return outputs, info

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch, details=False)[0]

    def explain(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._run(batch, details=True)[1]

    def regularization_loss(self) -> torch.Tensor:
        """``balance_weight`` × the scenario-balance term of the last forward (0 before any forward)."""
        if self._balance is None:
            return super().regularization_loss()
        return self.config.balance_weight * self._balance
