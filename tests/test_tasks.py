"""Task kinds: the registry contract, each kind's loss / output mapping / metrics, bias correction (smearing),
ZILN, post-hoc calibration, down-sampling re-calibration and learning-rate schedules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from msmtrec.data.planted import planted_splits
from msmtrec.data.schema import Task, random_batch, synthetic_schema
from msmtrec.errors import ConfigError
from msmtrec.models import build_model, registered_models
from msmtrec.tasks import MAPPING_FILE, OutputMapping, get_kind, kind_of, registered_kinds
from msmtrec.tasks.scores import expected_calibration_error, fit_isotonic, fit_platt
from msmtrec.training import TrainConfig, Trainer
from msmtrec.training.loss import MultiTaskLoss, sampling_logit_offset
from msmtrec.training.metrics import compute_metrics, format_table, predict_split
from msmtrec.training.trainer import seed_everything

SMALL = {"embed_dim": 8, "tower_dims": (16,)}


# ------------------------------------------------------------------------------------------ the contract


@pytest.mark.parametrize("name", registered_kinds())
def test_every_kind_honours_the_contract(name: str) -> None:
    """Shapes, finiteness of the loss on extreme outputs, and a user-unit output per row — for every kind."""
    kind = get_kind(name)
    assert kind.name == name and kind.headline and kind.units and kind.export_meaning
    n, g = 64, torch.Generator().manual_seed(0)
    y = kind.random_labels(n, g)
    assert y.shape == (n,)
    bad, _ = kind.invalid_labels(y.numpy())
    assert not bad.any()
    shape = (n,) if kind.output_dim == 1 else (n, kind.output_dim)
    out = (torch.randn(shape, generator=g) * 50).requires_grad_()
    loss = kind.loss(out, y)
    assert loss.shape == (n,) and torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(out.grad).all()
    units = kind.to_units(out.detach(), kind.transforms[0])
    assert units.shape == (n,) and torch.isfinite(units).all()
    cell = kind.cell(y.numpy(), out.detach().numpy(), units.numpy(), None, kind.transforms[0])
    assert cell["rows"] == n and kind.headline in cell


def test_kind_of_reads_the_stored_type() -> None:
    assert kind_of(Task("a", "binary")).probability and not kind_of(Task("b", "regression")).probability
    with pytest.raises(KeyError, match="unknown task type 'poisson'"):
        kind_of(Task("c", "poisson"))


def test_loss_is_unchanged_for_binary_and_regression() -> None:
    """The per-kind loss equals the former single formula (stacked BCE / MSE) bit for bit."""
    schema = synthetic_schema(tasks=(Task("c", "binary"), Task("v", "regression")))
    g = torch.Generator().manual_seed(3)
    out = {"c": torch.randn(50, generator=g), "v": torch.randn(50, generator=g)}
    labels = torch.stack([torch.randint(0, 2, (50,), generator=g).float(), torch.randn(50, generator=g)], 1)
    labels[:5, 1] = float("nan")
    total, per_task = MultiTaskLoss(schema, [1.0, 0.5])(out, labels, torch.zeros(50, dtype=torch.long))
    is_bin = torch.tensor([True, False])
    pred = torch.stack([out["c"], out["v"]], 1)
    y = torch.nan_to_num(labels, nan=0.0)
    old = torch.where(is_bin, F.binary_cross_entropy_with_logits(pred, y * is_bin, reduction="none"), (pred - y) ** 2)
    known = ~torch.isnan(labels)
    old_task = (old * known).sum(0) / known.sum(0)
    assert torch.equal(per_task, old_task)
    assert torch.equal(total, (torch.tensor([1.0, 0.5]) * old_task).sum())


# ------------------------------------------------------------------------------------------ regression bias


def _lognormal_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outputs f = E[log1p y | x] of a spend-like target (mostly zero) and labels y, two scenarios."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    scen = rng.integers(0, 2, n)
    buy = rng.random(n) < 0.1 + 0.05 * scen
    amount = np.exp(3.0 + 0.5 * x + rng.normal(scale=0.8, size=n))
    y = np.where(buy, amount, 0.0)
    z = np.log1p(y)
    # the best predictor of z in each (x-bin, scenario): the conditional mean, as MSE training would learn
    f = np.zeros(n)
    bins = np.digitize(x, np.linspace(-2, 2, 9))
    for b in np.unique(bins):
        for s in (0, 1):
            m = (bins == b) & (scen == s)
            f[m] = z[m].mean() if m.any() else 0.0
    return f, y, scen


def test_log1p_regression_outputs_are_expected_values_after_smearing() -> None:
    """expm1(E[log1p y]) is far below E[y]; the fitted smearing factor makes the mean match (bug of issue 15)."""
    schema = synthetic_schema(tasks=(Task("spend", "regression", transform="log1p"),), scenarios=2)
    f, y, scen = _lognormal_data(20000, 0)
    raw = {"spend": f}
    plain = OutputMapping.identity(schema).apply_numpy(raw, scen)["spend"]
    assert plain.mean() < 0.5 * y.mean()  # the bias of issue 15
    fitted = OutputMapping.fit(schema, raw, np.log1p(y)[:, None], scen)
    corrected = fitted.apply_numpy(raw, scen)["spend"]
    for s in (0, 1):  # exact on the data it was fitted on, per scenario
        assert corrected[scen == s].mean() == pytest.approx(y[scen == s].mean(), rel=1e-9)
    f2, y2, scen2 = _lognormal_data(20000, 1)  # and close on fresh data
    assert fitted.apply_numpy({"spend": f2}, scen2)["spend"].mean() == pytest.approx(y2.mean(), rel=0.1)
    assert len(fitted.params["spend"]["smearing"]) == 2


def test_regression_metrics_report_the_mean_ratio_in_original_units() -> None:
    schema = synthetic_schema(tasks=(Task("spend", "regression", transform="log1p"),), scenarios=2)
    f, y, scen = _lognormal_data(4000, 2)
    from msmtrec.training.metrics import Predictions

    preds = Predictions({"spend": f.astype(np.float32)}, np.log1p(y)[:, None].astype(np.float32), scen)
    before = compute_metrics(schema, preds)["by_scenario"]["s0"]["spend"]
    mapping = OutputMapping.fit(schema, preds.outputs, preds.labels, scen)
    after = compute_metrics(schema, preds, mapping)["by_scenario"]["s0"]["spend"]
    assert before["mean_ratio"] < 0.5 and after["mean_ratio"] == pytest.approx(1.0, abs=1e-4)
    assert after["label_mean_units"] == pytest.approx(y[scen == 0].mean(), rel=1e-5)
    assert "spend ratio" in format_table(schema, compute_metrics(schema, preds, mapping))



def test_mean_ratio_interval_covers_what_a_calibrated_model_shows_on_other_test_sets() -> None:
    """A sparse spend-like target: 1 % buyers, log-normal amounts, predictions = the true expected value.

    The ratio's 95 % interval on one test set of 5,000 rows must match the spread of the ratio over many
    such test sets (so a reader can tell an unlucky split from a biased model), and hold 1.0 about 95 % of
    the time."""
    from msmtrec.tasks.regression import units_cell

    rng = np.random.default_rng(0)
    mu, sigma, rate = 3.0, 1.0, 0.01
    expected = rate * math.exp(mu + sigma**2 / 2)
    ratios, covered, widths = [], 0, []
    for _ in range(400):
        buy = rng.random(5000) < rate
        y = np.where(buy, rng.lognormal(mu, sigma, 5000), 0.0)
        cell = units_cell(y, np.full(5000, expected))
        ratios.append(cell["mean_ratio"])
        widths.append(cell["mean_ratio_high"] - cell["mean_ratio_low"])
        covered += cell["mean_ratio_low"] <= 1.0 <= cell["mean_ratio_high"]
    lo, hi = np.quantile(ratios, [0.025, 0.975])
    assert 0.9 <= covered / 400 <= 0.99
    assert np.median(widths) == pytest.approx(hi - lo, rel=0.35)
    assert units_cell(np.zeros(3), np.ones(3))["mean_ratio_low"] is None  # no label mass: no ratio


def test_metrics_table_shows_the_ratio_interval() -> None:
    schema = synthetic_schema(tasks=(Task("spend", "regression"),), scenarios=1)
    from msmtrec.training.metrics import Predictions

    y = np.array([0.0, 0.0, 10.0, 0.0, 20.0, 0.0], dtype=np.float32)
    preds = Predictions({"spend": np.full(6, 5.0, dtype=np.float32)}, y[:, None], np.zeros(6, dtype=np.int64))
    table = format_table(schema, compute_metrics(schema, preds))
    assert "spend ratio 95% CI" in table and "–" in table

# ------------------------------------------------------------------------------------------ ZILN


def test_ziln_loss_and_mean_follow_the_paper() -> None:
    kind = get_kind("ziln")
    out = torch.tensor([[0.3, 1.2, 0.4], [-1.0, 0.5, -0.2]], dtype=torch.float64)
    y = torch.tensor([0.0, 4.0], dtype=torch.float64)
    sigma = F.softplus(out[:, 2]) + 1e-3
    p = torch.sigmoid(out[:, 0])
    expected_mean = p * torch.exp(out[:, 1] + sigma**2 / 2)
    assert torch.allclose(kind.to_units(out), expected_mean)
    nll = torch.distributions.LogNormal(out[1, 1], sigma[1]).log_prob(y[1])
    loss = kind.loss(out, y)
    assert loss[0] == pytest.approx(float(F.softplus(out[0, 0])))  # -log(1 - p): BCE on "no purchase"
    assert loss[1] == pytest.approx(float(F.softplus(-out[1, 0]) - nll))


@pytest.mark.parametrize("model_name", registered_models())
def test_every_model_emits_three_numbers_for_a_ziln_task(model_name: str) -> None:
    schema = synthetic_schema(tasks=(Task("click", "binary"), Task("buy", "binary", inside="click"),
                                     Task("ltv", "ziln")))
    model = build_model(model_name, schema, {"embed_dim": 8})
    batch = random_batch(schema, 16, torch.Generator().manual_seed(0))
    out = model(batch)
    assert out["ltv"].shape == (16, 3) and out["click"].shape == (16,)
    total, _ = MultiTaskLoss(schema, [1.0, 1.0, 1.0])(out, batch["labels"], batch["scenario"])
    total.backward()
    model.eval()
    assert model.predict(batch)["ltv"].shape == (16,)


def test_ziln_trains_to_a_calibrated_mean() -> None:
    schema = synthetic_schema(tasks=(Task("ltv", "ziln"),), scenarios=2)
    splits = planted_splits(schema, 6000)
    seed_everything(0)
    model = build_model("shared_bottom", schema, {"embed_dim": 8, "bottom_dims": (32,), "tower_dims": (16,)})
    cfg = TrainConfig(batch_size=128, lr=1e-2, max_epochs=4, progress=False)
    Trainer(cfg).fit(model, {"train": splits["train"], "valid": splits["valid"]})
    m = compute_metrics(schema, predict_split(model, splits["test"]))
    cell = m["overall"]["ltv"]
    assert cell["buy_auc"] > 0.75
    assert cell["mean_ratio"] == pytest.approx(1.0, abs=0.2)


# ------------------------------------------------------------------------------------------ calibration


def _miscalibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scen = rng.integers(0, 2, n)
    true_logit = rng.normal(size=n) - 1.0 + scen
    y = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(np.float64)
    logits = 2.5 * true_logit + 1.0 - 2.0 * scen  # over-confident, shifted differently per scenario
    return logits, y, scen


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibrators_fit_per_scenario_and_reduce_ece(method: str, tmp_path: Path) -> None:
    schema = synthetic_schema(tasks=(Task("click", "binary"),), scenarios=2)
    logits, y, scen = _miscalibrated(20000, 0)
    mapping = OutputMapping.fit(schema, {"click": logits}, y[:, None], scen, calibration=method)
    test_logits, test_y, test_scen = _miscalibrated(20000, 1)
    raw = OutputMapping.identity(schema).apply_numpy({"click": test_logits}, test_scen)["click"]
    cal = mapping.apply_numpy({"click": test_logits}, test_scen)["click"]
    for s in (0, 1):
        m = test_scen == s
        assert expected_calibration_error(test_y[m], cal[m]) < 0.03
        assert expected_calibration_error(test_y[m], raw[m]) > 0.06
        assert cal[m].mean() == pytest.approx(test_y[m].mean(), rel=0.05)
    mapping.save(tmp_path)
    loaded = OutputMapping.load(tmp_path, schema)
    assert json.loads((tmp_path / MAPPING_FILE).read_text())["calibration"] == method
    assert np.allclose(loaded.apply_numpy({"click": test_logits}, test_scen)["click"], cal)
    m = compute_metrics(schema, _preds(test_logits, test_y, test_scen), loaded)["by_scenario"]["s1"]["click"]
    assert m["ece"] < 0.03 and m["calibration"] == pytest.approx(1.0, abs=0.05)


def _preds(logits: np.ndarray, y: np.ndarray, scen: np.ndarray):  # noqa: ANN202
    from msmtrec.training.metrics import Predictions

    return Predictions({"click": logits.astype(np.float32)}, y[:, None].astype(np.float32), scen)


def test_platt_recovers_a_known_affine_map() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=50000)
    y = (rng.random(x.size) < 1 / (1 + np.exp(-(0.5 * x - 1.0)))).astype(float)
    a, b = fit_platt(x, y)
    assert a == pytest.approx(0.5, abs=0.05) and b == pytest.approx(-1.0, abs=0.05)
    kx, ky = fit_isotonic(x, y)
    assert np.all(np.diff(ky) >= 0) and len(kx) <= 200


def test_identity_mapping_is_sigmoid_and_expm1() -> None:
    schema = synthetic_schema(tasks=(Task("c", "binary"), Task("v", "regression", transform="log1p")))
    raw = {"c": torch.tensor([0.0, 2.0]), "v": torch.tensor([0.0, 1.0])}
    out = OutputMapping.identity(schema).apply(raw, torch.zeros(2, dtype=torch.long))
    assert torch.equal(out["c"], torch.sigmoid(raw["c"])) and torch.equal(out["v"], torch.expm1(raw["v"]))


# ------------------------------------------------------------------------------------------ sampling, weights


def test_sampling_offset_is_the_exact_recalibration() -> None:
    q, r = 0.3, 0.1
    p = q / (q + (1 - q) / r)
    logit = math.log(q / (1 - q)) + sampling_logit_offset(1.0, r)
    assert 1 / (1 + math.exp(-logit)) == pytest.approx(p)
    assert sampling_logit_offset(4.0, 1.0) == pytest.approx(-math.log(4.0))


def test_negative_down_sampling_trains_calibrated_probabilities() -> None:
    """With 10 % of negatives kept the raw rate is inflated ~10×; the stored offset brings it back."""
    schema = synthetic_schema(tasks=(Task("click", "binary"),), scenarios=2)
    splits = planted_splits(schema, 6000)
    seed_everything(0)
    model = build_model("shared_bottom", schema, {"embed_dim": 8, "bottom_dims": (32,), "tower_dims": (16,)})
    cfg = TrainConfig(batch_size=128, lr=1e-2, max_epochs=3, progress=False, negative_sampling={"click": 0.1})
    Trainer(cfg).fit(model, {"train": splits["train"], "valid": splits["valid"]})
    preds = predict_split(model, splits["test"])
    raw = compute_metrics(schema, preds)["overall"]["click"]
    fixed = compute_metrics(schema, preds, model.output_mapping)["overall"]["click"]
    assert raw["calibration"] > 1.5
    assert fixed["calibration"] == pytest.approx(1.0, abs=0.2)
    assert model.output_mapping.params["click"]["logit_offset"] == pytest.approx(math.log(0.1))


def test_positive_weight_and_sampling_refuse_non_binary_tasks() -> None:
    schema = synthetic_schema(tasks=(Task("c", "binary"), Task("v", "regression")))
    with pytest.raises(ConfigError, match="not binary tasks"):
        TrainConfig(positive_weight={"v": 2.0}).check_sampling(list(schema.tasks))
    with pytest.raises(ConfigError, match="keep rate must be in"):
        TrainConfig(negative_sampling="c:0")
    assert TrainConfig(positive_weight="c:3").positive_weight == {"c": 3.0}


def test_positive_weight_scales_positive_rows() -> None:
    schema = synthetic_schema(tasks=(Task("c", "binary"),))
    out = {"c": torch.zeros(4)}
    labels = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    scen = torch.zeros(4, dtype=torch.long)
    plain = MultiTaskLoss(schema, [1.0])(out, labels, scen)[1]
    weighted = MultiTaskLoss(schema, [1.0], positive_weight={"c": 3.0})(out, labels, scen)[1]
    assert weighted.item() == pytest.approx(plain.item() * (3 + 1) / 2)


# ------------------------------------------------------------------------------------------ schedules


def test_lr_schedules() -> None:
    warm = TrainConfig(warmup_steps=4)
    assert [warm.lr_factor(s, 10) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    cos = TrainConfig(lr_schedule="cosine", max_epochs=2, min_lr_ratio=0.1)
    assert cos.lr_factor(0, 10) == pytest.approx(1.0)
    assert cos.lr_factor(10, 10) == pytest.approx(0.55)
    assert cos.lr_factor(19, 10) == pytest.approx(0.1, abs=0.01)
    step = TrainConfig(lr_schedule="step", lr_step_epochs=2, lr_gamma=0.1)
    assert [step.lr_factor(s, 5) for s in (0, 9, 10, 20)] == pytest.approx([1.0, 1.0, 0.1, 0.01])
    with pytest.raises(ConfigError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")


def test_trainer_applies_the_schedule() -> None:
    schema = synthetic_schema(tasks=(Task("click", "binary"),))
    splits = planted_splits(schema, 600)
    seen: list[float] = []
    model = build_model("shared_bottom", schema, {"embed_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)})
    cfg = TrainConfig(batch_size=100, lr=0.1, max_epochs=2, patience=5, progress=False, lr_schedule="step",
                      lr_gamma=0.5, warmup_steps=2)
    from msmtrec.training import trainer as trainer_module

    build = trainer_module.build_optimizer

    def spying_build(module, config):  # noqa: ANN001, ANN202 - whatever optimiser the trainer builds
        optimizer = build(module, config)
        step = optimizer.step

        def spy(*a, **k):  # noqa: ANN002, ANN003, ANN202
            seen.append(optimizer.param_groups[0]["lr"])
            return step(*a, **k)

        optimizer.step = spy
        return optimizer

    trainer_module.build_optimizer = spying_build
    try:
        Trainer(cfg).fit(model, {"train": splits["train"], "valid": splits["valid"]})
    finally:
        trainer_module.build_optimizer = build
    per_epoch = len(seen) // 2
    assert seen[0] == pytest.approx(0.05) and seen[1] == pytest.approx(0.1)
    assert seen[per_epoch] == pytest.approx(0.05)  # second epoch: × gamma


# ------------------------------------------------------------------------------------------ one output path


def test_predict_scorer_and_export_runtime_share_the_runs_output_mapping(tmp_path: Path) -> None:
    """A run's fitted mapping (calibrator + smearing) reaches model.predict, the eager Scorer and the
    TorchScript-backed Scorer alike (before, predict returned log1p values and the Scorer bare expm1)."""
    from msmtrec.runs import load_run
    from msmtrec.serving.scorer import Scorer
    from msmtrec.serving.testing import make_run_dir, prepared_hillstrom

    run = make_run_dir(tmp_path / "run", "shared_bottom")
    schema = prepared_hillstrom().schema
    smearing = [30.0, 40.0, 50.0]
    mapping = OutputMapping(schema, {
        "visit": {"calibrator": {"method": "platt", "a": [0.5, 1.0, 2.0], "b": [0.1, 0.0, -0.1]}},
        "spend": {"smearing": smearing},
    }, "platt")
    mapping.save(run)
    batch = {k: v[:64] for k, v in prepared_hillstrom().splits["test"].tensors.items() if k != "labels"}
    loaded = load_run(run)
    with torch.no_grad():
        raw = loaded.model(batch)
        via_predict = loaded.model.predict(batch)
    scorer = Scorer(loaded)
    eager = scorer.outputs(batch)
    scen = batch["scenario"]
    a = torch.tensor([0.5, 1.0, 2.0])[scen]
    b = torch.tensor([0.1, 0.0, -0.1])[scen]
    expected_visit = torch.sigmoid(a * raw["visit"] + b)
    expected_spend = torch.exp(raw["spend"]) * torch.tensor(smearing)[scen] - 1
    for out in (via_predict, {k: torch.from_numpy(v) for k, v in eager.items()}):
        torch.testing.assert_close(out["visit"].double(), expected_visit.double(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out["spend"].double(), expected_spend.double(), rtol=1e-5, atol=1e-5)
    scorer.use_torchscript()
    traced = scorer.outputs(batch)
    np.testing.assert_allclose(traced["spend"], eager["spend"], rtol=1e-4)
    np.testing.assert_allclose(traced["visit"], eager["visit"], rtol=1e-4)


def test_train_fits_the_mapping_on_validation_and_evaluate_reuses_it(tmp_path: Path) -> None:
    from msmtrec.training.run import evaluate, train

    out = tmp_path / "run"
    metrics = train(out, data="planted:1500", model_name="shared_bottom",
                    sets={"train.calibration": "platt", "train.max_epochs": 2, "train.progress": False,
                          "train.batch_size": 128, "model.embed_dim": 8})
    stored = json.loads((out / MAPPING_FILE).read_text())
    assert stored["calibration"] == "platt"
    assert set(stored["tasks"]) == {"click", "buy"}  # binary tasks get a calibrator; plain regression needs none
    assert len(stored["tasks"]["click"]["calibrator"]["a"]) == 3
    again = evaluate(out)
    for task in ("click", "buy"):
        assert again["overall"][task]["ece"] == pytest.approx(metrics["overall"][task]["ece"], abs=1e-6)
        assert again["overall"][task]["calibration"] == pytest.approx(metrics["overall"][task]["calibration"])


def test_a_ziln_task_exports_with_its_three_outputs(tmp_path: Path) -> None:
    from msmtrec.serving.export import TorchScriptRunner, export_torchscript, signature

    schema = synthetic_schema(tasks=(Task("click", "binary"), Task("ltv", "ziln")))
    model = build_model("shared_bottom", schema, {"embed_dim": 8}).eval()
    batch = random_batch(schema, 16, torch.Generator().manual_seed(0))
    export_torchscript(model, tmp_path / "m.pt")
    out = TorchScriptRunner(tmp_path / "m.pt", schema)(batch)
    with torch.no_grad():
        torch.testing.assert_close(out["ltv"], model(batch)["ltv"])
    sig = signature(model, "shared_bottom", "torchscript")["outputs"]
    assert sig["ltv"]["shape"] == ["batch", 3] and sig["ltv"]["kind"] == "ziln" and sig["click"]["meaning"] == "logit"


# ------------------------------------------------------------------------------------------ specs and labels


def _ziln_spec(tmp_path: Path, task: str) -> Path:
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 200
    pd.DataFrame({"scen": rng.integers(0, 2, n), "c1": rng.integers(0, 5, n), "y": rng.normal(size=n),
                  "spend": np.where(rng.random(n) < 0.2, rng.exponential(30, n), 0.0)}).assign(
        spend=lambda f: f["spend"].where(f.index != 7, -1.0)).to_csv(tmp_path / "d.csv", index=False)
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"name: tiny\nfiles:\n  path: {tmp_path}/d.csv\nscenario: {{column: scen}}\n"
        f"tasks:\n  - {task}\n"
        "features:\n  sparse:\n    - {name: c1}\n  dense:\n    - {name: y}\nsplit: {seed: 1}\n"
    )
    return spec


def test_specs_name_registered_kinds_and_their_transforms(tmp_path: Path) -> None:
    from msmtrec.data.spec import load_spec
    from msmtrec.errors import SpecError

    with pytest.raises(SpecError, match=r"type 'poisson' is not one of \['binary', 'regression', 'ziln'\]"):
        load_spec(_ziln_spec(tmp_path, "{name: spend, label: spend, type: poisson}"))
    with pytest.raises(SpecError, match=r"a ziln task takes transform \['none'\], got 'log1p'"):
        load_spec(_ziln_spec(tmp_path, "{name: spend, label: spend, type: ziln, transform: log1p}"))


def test_ziln_labels_are_checked_with_file_and_line(tmp_path: Path) -> None:
    from msmtrec.data.pipeline import prepare_dataset
    from msmtrec.errors import DataError

    spec = _ziln_spec(tmp_path, "{name: spend, label: spend, type: ziln}")
    with pytest.raises(DataError, match=r"d\.csv:9: label 'spend' of ziln task 'spend' must be a finite number >= 0"):
        prepare_dataset(spec, data_root=tmp_path)
