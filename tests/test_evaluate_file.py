"""``evaluate --data FILE`` scores the population the run was trained on: the spec's reader and filter apply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msmtrec.training.run import evaluate, train

SETS = {"train.max_epochs": 1, "train.progress": False, "model.embed_dim": 4, "model.bottom_dims": [8],
        "model.tower_dims": [4]}


def lines(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"v{rng.integers(4)},{rng.normal():.3f},s{i % 2},{int(rng.random() < 0.4)}" for i in range(n)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("filtered")
    (base / "d.csv").write_text("\n".join(["c1,x,scen,click", *lines(400, 0)]) + "\n")
    (base / "s.yaml").write_text(
        f"name: filtered\nfiles: {{path: {base}/d.csv}}\nscenario: {{column: scen}}\nfilter: 'x >= 0'\n"
        "tasks: [{name: click, label: click}]\nfeatures: {sparse: [c1], dense: [x]}\n"
    )
    train(base / "run", data=str(base / "s.yaml"), model_name="shared_bottom", sets=SETS)
    return base / "run"


def test_evaluate_on_a_raw_file_applies_the_spec_filter(run: Path, tmp_path: Path) -> None:
    new = lines(300, 1)
    (tmp_path / "new.csv").write_text("\n".join(["c1,x,scen,click", *new]) + "\n")
    kept = [ln for ln in new if float(ln.split(",")[1]) >= 0]
    (tmp_path / "kept.csv").write_text("\n".join(["c1,x,scen,click", *kept]) + "\n")
    assert 0 < len(kept) < len(new)
    on_raw = evaluate(run, data=str(tmp_path / "new.csv"))
    on_kept = evaluate(run, data=str(tmp_path / "kept.csv"))
    assert {k: v for k, v in on_raw.items() if k != "dataset"} == {k: v for k, v in on_kept.items() if k != "dataset"}


def test_evaluate_on_a_raw_file_checks_its_structure(run: Path, tmp_path: Path) -> None:
    from msmtrec.errors import DataError

    new = lines(50, 2)
    new[9] += ",1"
    (tmp_path / "bad.csv").write_text("\n".join(["c1,x,scen,click", *new]) + "\n")
    with pytest.raises(DataError, match=r"bad\.csv:11: expected 4 fields"):
        evaluate(run, data=str(tmp_path / "bad.csv"))
