"""Every registered model on every shipped dataset spec (real rows: shared data or the fixtures).

The synthetic schemas in ``test_models.py`` cover corner cases; this checks the specs users start from:
their field counts, sequence fields, scenario counts and task kinds (funnels, regressions) all build and run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from shipped_data import FIXTURE_OVERRIDES, HAVE_DATA, ROOT

from msmtrec.data.pipeline import prepare_dataset
from msmtrec.data.spec import load_spec, shipped_specs
from msmtrec.data.synth import SynthConfig, synthesize
from msmtrec.models import build_model, registered_models

OVERRIDES = {"hillstrom": {}, "census_kdd": {}, **FIXTURE_OVERRIDES}


def test_every_shipped_spec_is_covered() -> None:
    assert set(shipped_specs()) == set(OVERRIDES) | {"synthetic"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = {}
    if HAVE_DATA:
        for name, over in OVERRIDES.items():
            out[name] = prepare_dataset(name, overrides=over, sample=2000 if not over else None)
    folder: Path = tmp_path_factory.mktemp("synth")
    synthesize(SynthConfig(rows=3000, users=500, items=300, seed=1), folder)
    out["synthetic"] = prepare_dataset("synthetic", overrides={"files.path": f"{folder}/*.parquet"})
    return out


@pytest.mark.parametrize("spec", sorted(set(OVERRIDES) | {"synthetic"}))
def test_every_model_runs_on_the_spec(spec: str, prepared: dict) -> None:
    if spec not in prepared:
        pytest.skip(f"shared data not found at {ROOT}")
    data = prepared[spec]
    schema = data.schema
    batch = next(iter(data.splits["train"].batches(64, shuffle=False)))
    rows = batch["labels"].shape[0]
    for name in registered_models():
        torch.manual_seed(0)
        model = build_model(name, schema)
        out = model(batch)
        assert set(out) == set(schema.task_names), (spec, name)
        for task, value in out.items():
            assert value.shape == (rows,) and value.dtype == torch.float32, (spec, name, task)
            assert torch.isfinite(value).all(), (spec, name, task)
        assert load_spec(spec).tasks
