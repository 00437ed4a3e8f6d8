"""Model zoo tests: output contract on several schemas, learning a planted signal, explain(), HEF
ablation switches, config errors and export/trace.

Every test is parametrised over ``registered_models()`` (as timm's tests iterate ``list_models()``), so a
model added to the zoo is tested without editing this file. A tiny local training loop (Adam +
BCE-with-logits / MSE) keeps these tests independent of the trainer.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from msmtrec.data.planted import planted_splits
from msmtrec.data.schema import Schema, Task, random_batch, synthetic_schema
from msmtrec.errors import ConfigError
from msmtrec.models import build_model, registered_models
from msmtrec.models.base import MultiTaskModel

MODELS = registered_models()
ZOO = {
    "adaptdhm", "adasparse", "adatt", "aitm", "dbmtl", "epnet", "esmm", "hamur", "hef", "hinet", "home", "m2m",
    "m3oe", "metaheac", "mmoe", "omoe", "pepnet", "ple", "ppnet", "sarnet", "shared_bottom", "single_task", "star",
    "stem",
}
"""The models the README promises; the tests themselves run over whatever the registry holds."""
VARIANTS = [
    ("single_task", {"per_scenario": True}),
    ("single_task", {"share_embedding": True, "funnel": True}),
    ("hef", {"levels": 1, "mixing": "uniform"}),
    ("hef", {"scenario_experts": 1, "task_experts": 1, "mixing": "learned", "base_skip": "gated"}),  # 2026-11-30
    ("hef", {"levels": 3, "scenario_experts": 0, "task_experts": 0, "attention": False, "star": False}),
    ("hef", {"attention_norm": True, "attention_layers": 2}),
    ("ple", {"levels": 1}),
]

SCHEMAS: dict[str, Schema] = {
    "default": synthetic_schema(),
    "no_dense": synthetic_schema(n_dense=0),
    "sequence": synthetic_schema(seq_len=5),
    "regression": synthetic_schema(tasks=(Task("click", "binary"), Task("gmv", "regression"))),
    "one_scenario": synthetic_schema(scenarios=1),
    "three_task_funnel": synthetic_schema(
        tasks=(Task("click", "binary"), Task("cart", "binary", inside="click"), Task("buy", "binary", inside="cart"))
    ),
    "no_funnel": synthetic_schema(tasks=(Task("click", "binary"), Task("like", "binary"))),
}


def _build(name: str, schema: Schema, overrides: dict | None = None, seed: int = 0) -> MultiTaskModel:
    torch.manual_seed(seed)
    return build_model(name, schema, overrides)


def _batch(schema: Schema, rows: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    return random_batch(schema, rows, torch.Generator().manual_seed(seed))


def _auc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    """Rank-based AUC (Mann-Whitney U), ties broken by average rank."""
    order = scores.argsort()
    ranks = torch.empty_like(scores, dtype=torch.float64)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    for value in scores.unique():  # average ranks of ties
        tied = scores == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _loss(model: MultiTaskModel, out: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    total = model.regularization_loss()
    for i, task in enumerate(model.schema.tasks):
        if task.type == "binary":
            total = total + F.binary_cross_entropy_with_logits(out[task.name], labels[:, i])
        else:
            total = total + F.mse_loss(out[task.name], labels[:, i])
    return total


@pytest.mark.parametrize("schema_name", list(SCHEMAS))
@pytest.mark.parametrize(("name", "overrides"), [(m, {}) for m in MODELS] + VARIANTS)
def test_output_contract(name: str, overrides: dict, schema_name: str) -> None:
    schema = SCHEMAS[schema_name]
    model = _build(name, schema, overrides)
    batch = _batch(schema)
    out = model(batch)
    assert list(out) == schema.task_names
    for v in out.values():
        assert v.shape == (32,) and v.dtype == torch.float32 and torch.isfinite(v).all()
    _loss(model, out, batch["labels"]).backward()
    assert model.flops_per_sample() > 0
    model.eval()
    with torch.no_grad():
        again, twice = model(batch), model(batch)
        preds = model.predict(batch)
    for k in again:
        assert torch.equal(again[k], twice[k])  # deterministic in eval mode
    for t in schema.tasks:
        if t.type == "binary":
            assert ((preds[t.name] >= 0) & (preds[t.name] <= 1)).all()


def test_every_model_is_registered() -> None:
    assert set(registered_models()) >= ZOO, sorted(ZOO - set(registered_models()))


@pytest.mark.parametrize("name", MODELS)
def test_learns_planted_signal(name: str) -> None:
    schema = SCHEMAS["default"]
    splits = planted_splits(schema, rows=3000, seed=1)
    model = _build(name, schema)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(4):
        model.train()
        for batch in splits["train"].batches(256, shuffle=True, seed=0, epoch=epoch):
            loss = _loss(model, model(batch), batch["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    test = splits["test"].tensors
    with torch.no_grad():
        out = model(test)
    auc = _auc(test["labels"][:, 0], out["click"])
    assert auc > 0.8, f"{name}: click AUC {auc:.3f}"


@pytest.mark.parametrize("name", MODELS)
def test_explain_weights_are_finite_and_documented(name: str) -> None:
    schema = SCHEMAS["three_task_funnel"]
    model = _build(name, schema).eval()
    batch = _batch(schema, rows=16)
    with torch.no_grad():
        info = model.explain(batch)
    for key, w in info.items():
        assert torch.isfinite(w).all(), key
        assert w.shape[0] == 16, key
        if key.startswith(("gates/", "mixing/")):
            assert w.dim() == 2 and torch.allclose(w.sum(-1), torch.ones(16), atol=1e-5), key
            assert (w >= 0).all(), key
        if key.startswith("mixing/"):
            assert w.shape == (16, 3)
            assert key.split("/", 1)[1] in schema.task_names
        if key == "attention":
            f = schema.num_fields
            assert w.dim() == 4 and w.shape[2:] == (f, f)
            assert torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)), atol=1e-5)
    expected = {
        "hef": {"gates/level1/task:buy", "gates/level0/shared"},
        "ple": {"gates/level0/shared", "gates/level1/task:cart"},
        "mmoe": {"gates/level0/task:click"},
        "m3oe": {"mixing/buy", "gates/level0/task:buy"},
        "hinet": {"gates/level0/scenario", "gates/level1/task:click"},
        "omoe": {"gates/level0/shared"},
        "aitm": {"gates/level1/task:cart", "gates/level1/task:buy"},
        "adatt": {"gates/level0/shared", "gates/level1/task:buy"},
        "stem": {"gates/level0/task:cart"},
        "home": {"gates/level0/shared", "gates/level0/category0", "gates/level1/task:buy"},
        "metaheac": {"gates/level0/task:click", "gates/level1/task:buy"},
        "m2m": {"gates/level0/task:buy"},
        "sarnet": {"gates/level0/task:click", "scenario_attention"},
        "adaptdhm": {"gates/level0/cluster"},
        "adasparse": {"adasparse/layer0"},
        "epnet": {"epnet"},
    }.get(name, set())
    assert expected <= set(info)


def _param_shapes(model: MultiTaskModel) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.named_parameters()}


@pytest.mark.parametrize(
    ("switch", "value", "pattern"),
    [
        ("attention", False, r"^attention\."),
        ("star", False, r"^base\.norm\.|^base\.layers\.\d+\.scenario_(weight|bias)$|^aux\."),
        ("levels", 1, r"^extraction\."),
        ("scenario_experts", 0, r"\.scenario_experts\.|\.within\.scenario\.|\.scenario_gate\."),
        ("task_experts", 0, r"\.task_experts\.|\.within\.task\."),
        ("mixing", "uniform", r"^mixing\."),
        ("embedding_gate", False, r"^embedding_gate\."),
    ],
)
def test_hef_switch_removes_exactly_its_parameters(switch: str, value: object, pattern: str) -> None:
    schema = SCHEMAS["default"]
    every_part = {"attention": True, "scenario_experts": 1, "task_experts": 1, "mixing": "learned",  # default: off
                  "embedding_gate": True}
    full = _param_shapes(_build("hef", schema, every_part))
    ablated = _param_shapes(_build("hef", schema, {**every_part, switch: value}))
    removed = set(full) - set(ablated)
    assert removed, f"{switch}={value} removed nothing"
    assert not set(ablated) - set(full), "an ablation must not add parameters"
    assert all(re.search(pattern, k) for k in removed), sorted(k for k in removed if not re.search(pattern, k))
    assert all(full[k] == shape for k, shape in ablated.items()), "kept parameters must keep their shapes"
    assert not any(re.search(pattern, k) for k in ablated) or switch == "levels"


def test_hef_levels_keep_shared_experts_updated_and_regulariser_is_differentiable() -> None:
    schema = SCHEMAS["default"]
    model = _build("hef", schema, {"levels": 2, "task_experts": 1, "base_skip": "gated"})
    with torch.no_grad():  # open the zero-initialised skip gate, else no gradient reaches the extraction yet
        model.skip_gate.fill_(1.0)
    assert model.regularization_loss().item() == 0.0
    out = model(_batch(schema))
    reg = model.regularization_loss()
    assert reg.dim() == 0 and torch.isfinite(reg) and reg.requires_grad
    # the next level's shared experts read the shared gate's output, which mixes the task experts
    sum(v.sum() for v in out.values()).backward()
    task_expert = model.extraction[0].task_experts[0].weights[0]
    assert task_expert.grad is not None and task_expert.grad.abs().sum() > 0


def test_hef_gate_balance_regularises_every_gate_not_only_shared_usage() -> None:
    """Without the option the balance term only reaches the task gates' shared-expert logits; with it, every
    gate (the shared and scenario gates, and the group selectors) gets a gradient from it as well."""
    schema = SCHEMAS["default"]
    batch = _batch(schema)

    def touched(overrides: dict) -> tuple[float, set[str]]:
        model = _build("hef", schema, overrides)
        model(batch)
        reg = model.regularization_loss()
        reg.backward()
        grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        return float(reg.detach()), grads

    every_group = {"scenario_experts": 1, "task_experts": 1, "mixing": "learned"}
    plain_value, plain = touched(every_group)
    balanced_value, balanced = touched({**every_group, "gate_balance": True})
    assert plain < balanced and plain_value != balanced_value
    assert "extraction.0.scenario_gate.selector.weight" in balanced - plain
    assert not any(n.startswith("mixing.") for n in balanced - plain)  # the final level's mixing is left alone


def test_embedding_parameters_are_model_parameters() -> None:
    schema = SCHEMAS["sequence"]
    for name in MODELS:
        model = _build(name, schema)
        emb = model.embedding_parameters()
        assert emb, name
        ids = {id(p) for p in model.parameters()}
        assert all(id(p) in ids for p in emb), name


@pytest.mark.parametrize("name", MODELS)
def test_unknown_config_key_raises(name: str) -> None:
    with pytest.raises(ConfigError):
        build_model(name, SCHEMAS["default"], {"no_such_key": 1})


def test_invalid_config_values_raise() -> None:
    with pytest.raises(ConfigError):
        build_model("hef", SCHEMAS["default"], {"levels": 0})
    with pytest.raises(ConfigError):
        build_model("hef", SCHEMAS["default"], {"mixing": "bogus"})
    with pytest.raises(ConfigError):
        build_model("hef", SCHEMAS["default"], {"attention": True, "attention_heads": 3})


def test_string_overrides_are_coerced() -> None:
    model = build_model("hef", SCHEMAS["default"], {"levels": "1", "attention": "false", "expert_dims": "32,16"})
    assert model.config.levels == 1 and model.config.attention is False and model.config.expert_dims == (32, 16)


@pytest.mark.parametrize("name", MODELS)
def test_export_matches_eager(name: str) -> None:
    schema = SCHEMAS["sequence"]
    model = _build(name, schema).eval()
    batch = _batch(schema, rows=8)
    batch.pop("labels")
    with torch.no_grad():
        expected = model(batch)
    exported = torch.export.export(model, (batch,), strict=False)
    got = exported.module()(batch)
    for k, v in expected.items():
        assert torch.allclose(got[k], v, atol=1e-5), k


@pytest.mark.slow
def test_hef_compiles_with_its_regulariser_without_graph_breaks_and_twice_in_one_process() -> None:
    """torch.compile of the trainer's module (model + loss + regulariser): the same total as eager (the
    balance term included, not silently 0), no graph break (the ContextVar read in scenario_matmul used
    to break it at every call), and a second HEF compiles in the same process."""
    from torch._dynamo.utils import counters

    from msmtrec.training.loss import MultiTaskLoss
    from msmtrec.training.trainer import TrainingModule

    schema = SCHEMAS["default"]
    batch = _batch(schema, 256)
    counters.clear()
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("hef", schema, {"dropout": 0.0})
        module = TrainingModule(model, MultiTaskLoss(schema, [t.weight for t in schema.tasks])).train()
        eager, _ = module(batch)
        eager_reg = model.regularization_loss()
        assert eager_reg.item() > 0
        compiled, _ = torch.compile(module)(batch)
        assert torch.allclose(compiled, eager, atol=1e-5)
        assert torch.allclose(model.regularization_loss(), eager_reg, atol=1e-6)
        compiled.backward()
        assert model.extraction[0].task_gates[0].within.shared.weight.grad is not None
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_hef_expert_dropout_is_separate_from_dropout() -> None:
    schema = SCHEMAS["default"]
    model = build_model("hef", schema, {"dropout": 0.2, "expert_dropout": 0.0})
    assert all(level.dropout == 0.0 for level in model.extraction) and model.base.dropout == 0.2
    inherit = build_model("hef", schema, {"dropout": 0.2})  # default: the experts use the model's dropout
    assert all(level.dropout == 0.2 for level in inherit.extraction)
    with pytest.raises(ConfigError):
        build_model("hef", schema, {"expert_dropout": 1.0})


def _attention_entropy(model: MultiTaskModel, batch: dict[str, torch.Tensor]) -> float:
    """Mean attention-row entropy as a fraction of the maximum, ``log F``."""
    with torch.no_grad():
        weights = model.attention(model.embedding(batch))[1]
    ent = -(weights * weights.clamp_min(1e-12).log()).sum(-1)
    return float(ent.mean() / torch.log(torch.tensor(float(weights.shape[-1]))))


def test_hef_attention_norm_makes_attention_non_uniform_at_initialisation() -> None:
    """Embeddings start at std 0.01, so plain scores ``x M xᵀ`` are ~1e-4 and every attention row is
    uniform (the diagnosis in docs/hef.md); with the pre-norm the scores are unit-scale from the start."""
    schema = SCHEMAS["default"]
    batch = _batch(schema, rows=256)
    plain = _attention_entropy(_build("hef", schema, {"attention": True}).eval(), batch)
    normed = _attention_entropy(_build("hef", schema, {"attention": True, "attention_norm": True}).eval(), batch)
    assert plain > 0.9999
    assert normed < 0.99


def test_readme_model_table_lists_every_registered_model() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [m for m in registered_models() if f"| `{m}` |" not in readme]
    assert not missing, f"README's model table lacks {missing}"


def test_aitm_steps_follow_funnel_parents_in_any_declaration_order() -> None:
    """Children declared before their parents, and a second root: every step has a predecessor, no loop."""
    tasks = (Task("buy", "binary", inside="click"), Task("click", "binary"), Task("gmv", "regression"))
    model = _build("aitm", synthetic_schema(tasks=tasks))
    assert model.previous == {0: 1, 2: 1}
    out = model(_batch(model.schema))
    assert list(out) == ["buy", "click", "gmv"] and all(torch.isfinite(v).all() for v in out.values())


def test_hef_attention_is_off_by_default_and_explained_when_on() -> None:
    """The default follows the validation results (docs/hef.md section 5); turned on, it is still a full
    part of the model, with its weights in ``explain``."""
    schema = SCHEMAS["default"]
    assert _build("hef", schema).attention is None
    model = _build("hef", schema, {"attention": True}).eval()
    info = model.explain(_batch(schema, rows=8))
    assert info["attention"].shape[2:] == (schema.num_fields, schema.num_fields)


def test_hef_explains_its_mixing_only_when_there_is_more_than_one_group_to_mix() -> None:
    schema = SCHEMAS["default"]
    batch = _batch(schema, rows=8)
    lean = _build("hef", schema).eval().explain(batch)  # default: shared experts only, every weight would be 1
    assert not any(k.startswith("mixing/") for k in lean) and any(k.startswith("gates/") for k in lean)
    full = _build("hef", schema, {"scenario_experts": 1, "task_experts": 1, "mixing": "learned"}).eval()
    assert {f"mixing/{t}" for t in schema.task_names} <= set(full.explain(batch))


def test_hef_gated_skip_starts_as_star_and_learns_to_open() -> None:
    """``base_skip='gated'``: at initialisation the towers see the STAR base and a zero-gated extraction, so
    changing every extraction weight leaves the output unchanged; the gate still gets a gradient, so training
    can open it. ``concat`` widens the towers' input by the base's width; unknown values are refused."""
    schema = SCHEMAS["default"]
    batch = _batch(schema, rows=16)
    model = _build("hef", schema, {"base_skip": "gated"}).eval()
    with torch.no_grad():
        before = model(batch)
        for p in model.extraction.parameters():
            p.add_(torch.randn_like(p))
        after = model(batch)
    assert all(torch.allclose(before[k], after[k]) for k in before)
    out = model.train()(batch)
    sum(v.sum() for v in out.values()).backward()
    assert model.skip_gate.grad is not None and model.skip_gate.grad.abs().sum() > 0
    plain, concat = _build("hef", schema, {"base_skip": "none"}), _build("hef", schema, {"base_skip": "concat"})
    width = concat.heads.towers[0][0].net[0].in_features - plain.heads.towers[0][0].net[0].in_features
    assert width == concat.base.out_dim
    with pytest.raises(ConfigError):
        _build("hef", schema, {"base_skip": "yes"})
