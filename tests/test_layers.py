"""Unit tests of the reusable layers: PN statistics, star weights, gates, mixing, attention, extraction."""

from __future__ import annotations

import pytest
import torch

from msmtrec.layers import (
    BalancedMixing,
    CGCLayer,
    ExpertBank,
    FieldSelfAttention,
    Gate,
    GroupedExtractionLayer,
    GroupedGate,
    PartitionedNorm,
    PLEStack,
    ScenarioExpertBank,
    StarLinear,
    StarNetwork,
    funnel_logit,
    scenario_balance_loss,
)
from msmtrec.layers.experts import scenario_matmul


def _two_scenarios(rows: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenario 0 centred at +10 (std 1), scenario 1 at -5 (std 3): whole-batch stats fit neither."""
    g = torch.Generator().manual_seed(seed)
    scenario = torch.arange(rows) % 2
    x = torch.randn(rows, 4, generator=g)
    x = torch.where(scenario.unsqueeze(1) == 0, 10.0 + x, -5.0 + 3.0 * x)
    return x, scenario


def _per_scenario_moments(y: torch.Tensor, scenario: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = y[scenario == s]
    return rows.mean(0), rows.std(0, unbiased=False)


def test_pn_train_mode_normalises_each_scenario_with_its_own_batch_statistics() -> None:
    x, scenario = _two_scenarios()
    pn = PartitionedNorm(4, num_scenarios=2).train()
    y = pn(x, scenario)
    for s in (0, 1):
        mean, std = _per_scenario_moments(y, scenario, s)
        assert torch.allclose(mean, torch.zeros(4), atol=1e-4)
        assert torch.allclose(std, torch.ones(4), atol=1e-3)
    # whole-batch normalisation would leave the scenarios far apart
    assert (y[scenario == 0].mean() - y[scenario == 1].mean()).abs() < 1e-3


def test_pn_running_stats_are_per_scenario_and_used_in_eval_mode() -> None:
    pn = PartitionedNorm(4, num_scenarios=2, momentum=0.5).train()
    for seed in range(20):
        x, scenario = _two_scenarios(seed=seed)
        pn(x, scenario)
    assert torch.allclose(pn.running_mean[0], torch.full((4,), 10.0), atol=0.3)
    assert torch.allclose(pn.running_mean[1], torch.full((4,), -5.0), atol=0.6)
    assert torch.allclose(pn.running_var[1].sqrt(), torch.full((4,), 3.0), atol=0.4)
    pn.eval()
    x, scenario = _two_scenarios(seed=99)
    y = pn(x, scenario)
    for s in (0, 1):
        mean, std = _per_scenario_moments(y, scenario, s)
        assert mean.abs().max() < 0.35
        assert (std - 1).abs().max() < 0.25


def test_pn_running_stats_of_absent_scenario_do_not_move() -> None:
    pn = PartitionedNorm(3, num_scenarios=2).train()
    pn(torch.randn(16, 3), torch.zeros(16, dtype=torch.long))
    before_a = (pn.running_mean[0].clone(), pn.running_var[0].clone())
    before_b = pn.running_mean[1].clone()
    pn(torch.randn(16, 3) + 7.0, torch.ones(16, dtype=torch.long))  # only scenario B
    assert torch.equal(pn.running_mean[0], before_a[0])
    assert torch.equal(pn.running_var[0], before_a[1])
    assert not torch.equal(pn.running_mean[1], before_b)


def test_pn_scenario_scale_and_shift_apply_to_their_scenario_only() -> None:
    pn = PartitionedNorm(2, num_scenarios=2).eval()
    with torch.no_grad():
        pn.scenario_weight[1].fill_(3.0)
        pn.scenario_bias[1].fill_(1.0)
        pn.weight.fill_(2.0)
    x = torch.ones(2, 2)
    y = pn(x, torch.tensor([0, 1]))
    eps_scale = 1 / (1 + pn.eps) ** 0.5
    assert torch.allclose(y[0], torch.full((2,), 2.0 * eps_scale))
    assert torch.allclose(y[1], torch.full((2,), 6.0 * eps_scale + 1.0))


def test_star_linear_uses_shared_times_scenario_weight_per_row() -> None:
    torch.manual_seed(0)
    layer = StarLinear(5, 3, num_scenarios=3)
    with torch.no_grad():
        layer.scenario_weight.normal_()
        layer.scenario_bias.normal_()
    x, scenario = torch.randn(6, 5), torch.tensor([0, 1, 2, 2, 1, 0])
    y = layer(x, scenario)
    for i in range(6):
        s = int(scenario[i])
        w = layer.weight * layer.scenario_weight[s]
        expected = x[i] @ w + layer.bias + layer.scenario_bias[s]
        assert torch.allclose(y[i], expected, atol=1e-5)


def test_star_network_without_star_keeps_shared_weights_only() -> None:
    with_star = dict(StarNetwork(8, (4, 4), 3).named_parameters())
    without = dict(StarNetwork(8, (4, 4), 3, star=False).named_parameters())
    assert set(without) < set(with_star)
    assert all(with_star[k].shape == v.shape for k, v in without.items())
    assert all("scenario" in k or k.startswith("norm.") for k in set(with_star) - set(without))


def test_scenario_expert_bank_rows_only_depend_on_their_scenario_weights() -> None:
    torch.manual_seed(0)
    bank = ScenarioExpertBank(4, num_experts=2, dims=(3,), num_scenarios=3)
    x, scenario = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
    before = bank(x, scenario)
    assert before.shape == (8, 2, 3)
    with torch.no_grad():
        bank.layers[0].weight[1].add_(1.0)
    after = bank(x, scenario)
    assert torch.equal(before[scenario != 1], after[scenario != 1])
    assert not torch.allclose(before[scenario == 1], after[scenario == 1])
    every = bank.forward_all(x)
    assert torch.allclose(every[torch.arange(8), scenario], after, atol=1e-6)


def test_gates_and_mixing_sum_to_one() -> None:
    torch.manual_seed(0)
    x = torch.randn(10, 6)
    assert torch.allclose(Gate(6, 4)(x).sum(-1), torch.ones(10))
    experts = {"shared": torch.randn(10, 2, 3), "task": torch.randn(10, 1, 3)}
    out, flat, within = GroupedGate(6, {"shared": 2, "task": 1})(x, experts)
    assert out.shape == (10, 3) and flat.shape == (10, 3)
    assert torch.allclose(flat.sum(-1), torch.ones(10), atol=1e-6)
    assert torch.allclose(within["shared"].sum(-1), torch.ones(10), atol=1e-6)
    scenario = torch.randint(0, 3, (10,))
    mixing = BalancedMixing(3, 2, present=(True, False, True), input_dim=6)
    with torch.no_grad():
        mixing.logits.normal_()
    w = mixing(scenario, 1, x)
    assert torch.allclose(w.sum(-1), torch.ones(10), atol=1e-6)
    assert torch.all(w[:, 1] == 0)
    uniform = BalancedMixing(3, 2, mode="uniform")(scenario, 0)
    assert torch.allclose(uniform, torch.full((10, 3), 1 / 3))
    assert sum(p.numel() for p in BalancedMixing(3, 2, mode="uniform").parameters()) == 0
    with pytest.raises(ValueError):
        BalancedMixing(3, 2, mode="bogus")  # type: ignore[arg-type]


def test_learned_mixing_is_a_per_scenario_task_table() -> None:
    mixing = BalancedMixing(2, 2)
    with torch.no_grad():
        mixing.logits[1, 0, 2] = 5.0
    w = mixing(torch.tensor([0, 1]), 0)
    assert torch.allclose(w[0], torch.full((3,), 1 / 3))
    assert w[1, 2] > 0.9


def test_field_attention_returns_per_head_weights_and_keeps_dims() -> None:
    att = FieldSelfAttention(num_fields=5, embed_dim=8, heads=2, layers=2)
    out, weights = att(torch.randn(3, 5, 8))
    assert out.shape == (3, 5, 8)
    assert weights.shape == (3, 2, 5, 5)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 2, 5), atol=1e-6)
    assert att.extra_flops() > 0


def test_cgc_and_ple_gate_shapes() -> None:
    layer = CGCLayer(6, ["a", "b"], num_shared=2, num_specific=3, dims=(4,), shared_gate=True)
    x = torch.randn(5, 6)
    outs, shared, gates = layer([x, x], x)
    assert [o.shape for o in outs] == [(5, 4), (5, 4)]
    assert shared is not None and shared.shape == (5, 4)
    assert gates["task:a"].shape == (5, 5) and gates["shared"].shape == (5, 2 + 2 * 3)
    for w in gates.values():
        assert torch.allclose(w.sum(-1), torch.ones(5), atol=1e-6)


def test_ple_shared_experts_are_updated_across_levels() -> None:
    """Task b's output must depend on task a's level-0 experts — only possible through the shared gate."""
    torch.manual_seed(0)
    ple = PLEStack(6, ["a", "b"], levels=2, num_shared=1, num_specific=1, dims=(4,))
    x = torch.randn(7, 6)
    outs, gates = ple(x)
    assert "level0/shared" in gates and "level1/shared" not in gates
    outs[1].sum().backward()
    level0_a = ple.levels[0].specific[0].weights[0]
    assert level0_a.grad is not None and level0_a.grad.abs().sum() > 0


def test_grouped_extraction_levels() -> None:
    torch.manual_seed(0)
    x, scenario, ctx = torch.randn(6, 5), torch.randint(0, 3, (6,)), torch.randn(6, 2)
    first = GroupedExtractionLayer(5, 2, ["a", "b"], 3, 2, 1, 1, (4,), final=False)
    out = first([x, x], x, x, scenario, ctx)
    assert out.shared is not None and out.scenario is not None
    assert set(out.gates) == {"task:a", "task:b", "shared", "scenario"}
    assert out.gates["shared"].shape == (6, 2 + 1 + 2)
    last = GroupedExtractionLayer(4, 2, ["a", "b"], 3, 2, 1, 1, (4,), final=True)
    mixing = [torch.full((6, 3), 1 / 3)] * 2
    final = last(out.task, out.shared, out.scenario, scenario, ctx, mixing)
    assert final.shared is None and [t.shape for t in final.task] == [(6, 4), (6, 4)]
    for w in [*out.gates.values(), *final.gates.values()]:
        assert torch.allclose(w.sum(-1), torch.ones(6), atol=1e-6)


def test_scenario_balance_loss_weights_scenarios_equally() -> None:
    uniform = torch.full((4, 2), 0.5)
    scenario = torch.tensor([0, 0, 1, 1])
    assert scenario_balance_loss(uniform, scenario, 3).abs() < 1e-6
    skewed = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5], [0.5, 0.5]])
    loss = scenario_balance_loss(skewed, scenario, 3)
    assert loss > 0
    # doubling scenario 1's rows must not change the loss: scenarios count equally, not rows
    more = torch.cat([skewed, skewed[2:]])
    assert torch.allclose(scenario_balance_loss(more, torch.cat([scenario, scenario[2:]]), 3), loss)


def test_expert_bank_and_funnel_logit() -> None:
    bank = ExpertBank(3, 4, (5,))
    assert bank(torch.randn(2, 3)).shape == (2, 4, 5)
    p, c = torch.tensor([0.3, -2.0]), torch.tensor([1.0, 0.5])
    expected = torch.logit(torch.sigmoid(p) * torch.sigmoid(c))
    assert torch.allclose(funnel_logit(p, c), expected, atol=1e-5)


@pytest.mark.parametrize("num_scenarios", [1, 3, 12])
def test_scenario_matmul_strategies_agree(num_scenarios: int) -> None:
    """Segment, dense and gather formulations are the same maths, forward and backward."""
    torch.manual_seed(0)
    x = torch.randn(9, 2, 5)
    weight = torch.randn(num_scenarios, 2, 5, 3)
    scenario = torch.randint(0, num_scenarios, (9,))
    manual = torch.stack([torch.einsum("ni,nio->no", x[b], weight[scenario[b]]) for b in range(9)])
    grads = []
    for strategy in ("segment", "dense", "gather", "auto"):
        xr, wr = x.clone().requires_grad_(), weight.clone().requires_grad_()
        out = scenario_matmul(xr, wr, scenario, strategy)
        assert torch.allclose(out, manual, atol=1e-5), strategy
        (out * torch.arange(out.numel()).view_as(out)).sum().backward()
        grads.append((xr.grad, wr.grad))
    for gx, gw in grads[1:]:
        assert torch.allclose(gx, grads[0][0], atol=1e-4) and torch.allclose(gw, grads[0][1], atol=1e-4)
    with pytest.raises(ValueError):
        scenario_matmul(x, weight, scenario, "loop")


def test_expert_bank_equals_separate_mlps() -> None:
    """The fused bank computes exactly what n separate Linear→ReLU MLPs with the same weights compute."""
    torch.manual_seed(0)
    bank = ExpertBank(5, 3, (4, 6))
    x = torch.randn(7, 5)
    expected = []
    for e in range(3):
        h = x
        for w, b in zip(bank.weights, bank.biases, strict=True):
            h = torch.relu(h @ w[e] + b[e])
        expected.append(h)
    assert torch.allclose(bank(x), torch.stack(expected, dim=1), atol=1e-6)
    assert bank.extra_flops() == 2 * 3 * (5 * 4 + 4 * 6)


@pytest.mark.parametrize("fields", [3, 8, 15, 16, 21])
def test_field_softmax_matches_softmax_with_gradients(fields: int) -> None:
    from msmtrec.layers.attention import field_softmax

    torch.manual_seed(fields)
    scores = torch.randn(7, 2, fields, fields, requires_grad=True)
    probe = torch.randn(7, 2, fields, fields)
    ours = field_softmax(scores)
    ref = torch.softmax(scores, dim=-1)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-6)
    (g_ours,) = torch.autograd.grad((ours * probe).sum(), scores)
    (g_ref,) = torch.autograd.grad((ref * probe).sum(), scores)
    assert torch.allclose(g_ours, g_ref, atol=1e-6)


@pytest.mark.parametrize("sizes", [{"shared": 2, "scenario": 1, "task": 1}, {"shared": 3, "task": 2}, {"shared": 1}])
def test_grouped_gate_is_the_effective_weighted_sum_of_all_experts(sizes: dict[str, int]) -> None:
    """out = Σ_e flat_e · expert_e over the concatenated experts, whatever the group sizes (size-1 groups
    skip their softmax, which must not change the maths)."""
    torch.manual_seed(0)
    x = torch.randn(9, 5)
    experts = {g: torch.randn(9, n, 4) for g, n in sizes.items()}
    gate = GroupedGate(5, sizes)
    out, flat, within = gate(x, experts)
    stacked = torch.cat([experts[g] for g in ("shared", "scenario", "task") if g in experts], dim=1)
    assert torch.allclose(out, torch.einsum("bn,bnd->bd", flat, stacked), atol=1e-6)
    assert torch.allclose(flat.sum(-1), torch.ones(9), atol=1e-6)
    for g, n in sizes.items():
        assert within[g].shape == (9, n)
        assert torch.allclose(within[g].sum(-1), torch.ones(9), atol=1e-6)


def test_scenario_matmul_single_scenario_batch_fast_path() -> None:
    """A batch from one scenario (every service request) takes the no-sort path: same values and grads."""
    torch.manual_seed(1)
    x = torch.randn(6, 2, 5)
    weight = torch.randn(4, 2, 5, 3)
    scenario = torch.full((6,), 2)
    expected = torch.einsum("bni,nio->bno", x, weight[2])
    for strategy in ("segment", "dense", "gather"):
        wr = weight.clone().requires_grad_()
        out = scenario_matmul(x, wr, scenario, strategy)
        assert torch.allclose(out, expected, atol=1e-5), strategy
        out.sum().backward()
        assert wr.grad is not None and torch.all(wr.grad[[0, 1, 3]] == 0) and wr.grad[2].abs().sum() > 0
    empty = scenario_matmul(x[:0], weight, scenario[:0], "segment")
    assert empty.shape == (0, 2, 3)


# shapes read while tracing are static here (a TracerWarning), and torch.jit.trace is marked deprecated
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_fixed_scenario_graph_uses_that_scenarios_weights_only() -> None:
    """A graph traced inside ``fixed_scenario(s)`` multiplies by scenario s's weights whatever the input
    says (the server routes only scenario-s batches to it); outside the context tracing is unaffected."""
    from msmtrec.layers.experts import fixed_scenario

    torch.manual_seed(2)
    weight = torch.randn(3, 2, 5, 4)
    x = torch.randn(8, 2, 5)

    def fn(x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        return scenario_matmul(x, weight, scenario)

    with fixed_scenario(1):
        special = torch.jit.trace(fn, (x, torch.full((8,), 1)))
    general = torch.jit.trace(fn, (x, torch.full((8,), 1)))
    mixed = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    assert torch.allclose(special(x, torch.full((8,), 1)), torch.einsum("bni,nio->bno", x, weight[1]), atol=1e-5)
    assert torch.allclose(special(x, mixed), torch.einsum("bni,nio->bno", x, weight[1]), atol=1e-5)
    manual = torch.stack([torch.einsum("ni,nio->no", x[b], weight[mixed[b]]) for b in range(8)])
    assert torch.allclose(general(x, mixed), manual, atol=1e-5)
    assert torch.allclose(scenario_matmul(x, weight, mixed), manual, atol=1e-5)


@pytest.mark.parametrize(("fields", "heads", "residual"), [(8, 2, True), (5, 1, False), (17, 2, True)])
def test_field_attention_factored_form_equals_split_heads(fields: int, heads: int, residual: bool) -> None:
    """The factored attention (bilinear scores, value projection after the weighting) is the textbook
    split-heads attention rearranged: same outputs, weights and parameter gradients."""
    from msmtrec.layers.attention import FieldAttentionLayer

    torch.manual_seed(fields)
    layer = FieldAttentionLayer(8, heads, 8 // heads, residual=residual)
    assert layer.factored
    x = torch.randn(6, fields, 8)
    probe = torch.randn(6, fields, 8)
    results = []
    for factored in (True, False):
        layer.factored = factored
        layer.zero_grad()
        out, weights = layer(x)
        (out * probe).sum().backward()
        results.append((out, weights, [p.grad.clone() for p in layer.parameters()]))
    (out_f, w_f, g_f), (out_s, w_s, g_s) = results
    assert w_f.shape == w_s.shape == (6, heads, fields, fields)
    assert torch.allclose(out_f, out_s, atol=1e-5) and torch.allclose(w_f, w_s, atol=1e-6)
    for a, b in zip(g_f, g_s, strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    assert FieldAttentionLayer(16, 8, 2).factored
    assert not FieldAttentionLayer(64, 4, 16).factored  # wide heads: the split form does far less arithmetic


def _unfused_level(layer: GroupedExtractionLayer, task_inputs, shared_input, scenario_input, scenario, context, gw):  # noqa: ANN001, ANN202
    """The level as separate expert banks and one GroupedGate call per gate (the reference for the fused form)."""

    def gate_input(x: torch.Tensor) -> torch.Tensor:
        return x if context is None else torch.cat([x, context], dim=1)

    experts = {"shared": layer.shared_experts(shared_input)}
    if layer.scenario_experts is not None:
        experts["scenario"] = layer.scenario_experts(scenario_input, scenario)
    task_experts = [b(x) for b, x in zip(layer.task_experts, task_inputs, strict=True)] if layer.task_experts else []
    task, gates, usage = [], {}, []
    for i, (name, gate) in enumerate(zip(layer.task_names, layer.task_gates, strict=True)):
        groups = dict(experts)
        if task_experts:
            groups["task"] = task_experts[i]
        rep, flat, within = gate(gate_input(task_inputs[i]), groups, None if gw is None else gw[i])
        task.append(rep)
        gates[f"task:{name}"] = flat
        usage.append(within["shared"])
    shared = scen = None
    if layer.shared_gate is not None:
        groups = dict(experts)
        if task_experts:
            groups["task"] = torch.cat(task_experts, dim=1)
        shared, gates["shared"], _ = layer.shared_gate(gate_input(shared_input), groups)
    if layer.scenario_gate is not None:
        scen, gates["scenario"], _ = layer.scenario_gate(gate_input(scenario_input), experts)
    return task, shared, scen, gates, usage


@pytest.mark.parametrize(
    "counts, dims, final, same, context",
    [
        ((2, 1, 1), (4,), False, True, 2),
        ((2, 1, 1), (4,), True, False, 2),
        ((3, 2, 2), (6, 4), False, False, 0),
        ((1, 0, 1), (4,), False, True, 2),
        ((2, 1, 0), (5, 4), True, True, 0),
        ((2, 0, 0), (4,), False, False, 3),
    ],
)
def test_fused_extraction_level_equals_unfused_values_and_gradients(counts, dims, final, same, context) -> None:  # noqa: ANN001
    """The fused level (one expert tensor, one gate matmul per input, one batched weighted sum) is the same
    maths as each bank and each gate run on its own: outputs, gate weights, shared usage and every gradient."""
    torch.manual_seed(0)
    tasks = ["a", "b", "c"]
    layer = GroupedExtractionLayer(5, context, tasks, 3, *counts, dims, final=final)
    b = 11
    scenario = torch.randint(0, 3, (b,))
    x = torch.randn(b, 5, requires_grad=True)
    task_in = [x] * 3 if same else [torch.randn(b, 5, requires_grad=True) for _ in tasks]
    shared_in = x if same else torch.randn(b, 5, requires_grad=True)
    scen_in = x if same else torch.randn(b, 5, requires_grad=True)
    ctx = torch.randn(b, context, requires_grad=True) if context else None
    gw = [torch.softmax(torch.randn(b, 3), 1) for _ in tasks] if final else None
    if final and counts[1] == 0:
        gw = [w * torch.tensor([1.0, 0.0, 1.0]) / (w * torch.tensor([1.0, 0.0, 1.0])).sum(1, keepdim=True) for w in gw]
    fused = layer(task_in, shared_in, scen_in, scenario, ctx, gw)
    task, shared, scen, gates, usage = _unfused_level(layer, task_in, shared_in, scen_in, scenario, ctx, gw)
    probes = [torch.randn(b, dims[-1]) for _ in range(5)]

    def loss(t: list[torch.Tensor], s: torch.Tensor | None, c: torch.Tensor | None, u: list) -> torch.Tensor:
        total = sum((ti * p).sum() for ti, p in zip(t, probes, strict=False))
        total = total + sum(((ui - 0.3) ** 2).sum() for ui in u)
        if s is not None:
            total = total + (s * probes[3]).sum()
        if c is not None:
            total = total + (c * probes[4]).sum()
        return total

    for got, want in zip(fused.task, task, strict=True):
        assert torch.allclose(got, want, atol=1e-5)
    assert (fused.shared is None) == (shared is None) and (fused.scenario is None) == (scen is None)
    if shared is not None:
        assert torch.allclose(fused.shared, shared, atol=1e-5)
    if scen is not None:
        assert torch.allclose(fused.scenario, scen, atol=1e-5)
    assert set(fused.gates) == set(gates)
    for k in gates:
        assert torch.allclose(fused.gates[k], gates[k], atol=1e-6)
    for got, want in zip(fused.shared_usage, usage, strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    leaves = [x, *task_in, shared_in, scen_in, *([ctx] if ctx is not None else [])]
    inputs = list({id(t): t for t in leaves}.values())
    params = [p for p in layer.parameters()]
    g_fused = torch.autograd.grad(loss(fused.task, fused.shared, fused.scenario, fused.shared_usage),
                                  inputs + params, allow_unused=True)
    g_ref = torch.autograd.grad(loss(task, shared, scen, usage), inputs + params, allow_unused=True)
    for gf, gr in zip(g_fused, g_ref, strict=True):
        if gr is None:
            assert gf is None or gf.abs().max() == 0
        else:
            assert gf is not None and torch.allclose(gf, gr, atol=1e-5)


def test_relu_dropout_is_relu_then_inverted_dropout_with_the_same_mask_in_backward() -> None:
    from msmtrec.layers.experts import relu_dropout

    torch.manual_seed(0)
    x = torch.randn(200, 300, requires_grad=True)
    out = relu_dropout(x, 0.25, training=True)
    kept = out != 0
    assert torch.allclose(out[kept], x[kept] / 0.75)  # survivors are scaled by 1 / (1 - p)
    assert not kept[x <= 0].any()  # ReLU zeros stay zero
    rate = kept[x > 0].float().mean().item()
    assert abs(rate - 0.75) < 0.01  # keep rate 1 - p (~30k positive draws: 3 sigma ≈ 0.008)
    (g,) = torch.autograd.grad((out * 2.0).sum(), x)
    assert torch.allclose(g, kept.float() * 2.0 / 0.75)
    assert torch.equal(relu_dropout(x, 0.25, training=False), torch.relu(x))
    assert torch.equal(relu_dropout(x, 0.0, training=True), torch.relu(x))
