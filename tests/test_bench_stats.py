"""DeLong intervals and the paired test over seeds, against independent computations."""

from __future__ import annotations

import numpy as np
import pytest

from msmtrec.benchmark.stats import delong_ci, midranks, paired_test

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_midranks_average_ties() -> None:
    assert midranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


@pytest.mark.parametrize("seed", range(2))
def test_delong_matches_sklearn_auc_and_a_bootstrap_width(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 600).astype(float)
    s = np.round(y * 0.7 + rng.normal(size=600), 1)  # rounded: ties on purpose
    auc, lo, hi = delong_ci(y, s)
    assert auc == pytest.approx(sklearn_metrics.roc_auc_score(y, s))
    boot = []
    for _ in range(250):
        i = rng.integers(0, 600, 600)
        if 0 < y[i].sum() < 600:
            boot.append(sklearn_metrics.roc_auc_score(y[i], s[i]))
    # the DeLong standard error agrees with the bootstrap's within 20 %
    assert (hi - lo) / (2 * 1.96) == pytest.approx(np.std(boot), rel=0.2)
    assert lo < auc < hi


def test_delong_needs_two_of_each_class() -> None:
    assert delong_ci(np.array([1, 0, 0, 0.0]), np.array([0.9, 0.1, 0.2, 0.3])) is None


def test_paired_test() -> None:
    a = np.array([0.71, 0.72, 0.73, 0.72, 0.74])
    b = a - np.array([0.01, 0.012, 0.009, 0.011, 0.010])
    r = paired_test(a, b)
    assert r["n"] == 5 and r["mean_diff"] == pytest.approx(0.0104)
    assert r["t_p"] < 0.001
    assert r["sign_flip_p"] == pytest.approx(2 / 32)  # every seed favours a: the smallest possible p
    same = paired_test(a, a)
    assert same["sign_flip_p"] == 1.0 and same["t_p"] == 1.0


def _results(tmp_path):  # noqa: ANN001, ANN202
    """Three seeds; hef beats ple by ~0.01 every seed; a peer beats everyone; hef over-predicts 2x."""
    import csv

    from msmtrec.benchmark import RESULT_COLUMNS

    auc = {"single_task": 0.70, "ple": 0.72, "hef": 0.73, "rechub-ple": 0.75}
    kind = {"rechub-ple": "peer"}
    rows = []
    for model, a in auc.items():
        for seed in range(3):
            base = ["d", model, kind.get(model, "model"), model.removeprefix("rechub-"), seed]
            for s in ("s0", "s1", "all"):
                v = a + 0.001 * seed + (0.02 if s == "s1" else 0.0)
                rows += [base + [s, "click", "auc", v], base + [s, "click", "auc_ci_low", v - 0.02],
                         base + [s, "click", "auc_ci_high", v + 0.02], base + [s, "click", "rows", 1000],
                         base + [s, "click", "positives", 300 if s == "s1" else 100],
                         base + [s, "click", "logloss", 0.3],
                         base + [s, "click", "label_mean", 0.1],
                         base + [s, "click", "pred_mean", 0.2 if model == "hef" else 0.1]]
            rows += [base + ["all", "all", m, 1.0] for m in ("params", "samples_per_second", "train_seconds",
                                                              "inference_rows_per_second", "epochs", "best_epoch")]
    with (tmp_path / "results.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(RESULT_COLUMNS)
        w.writerows(rows)
    return tmp_path


def test_summary_reports_cells_cis_calibration_ranks_and_paired_test(tmp_path) -> None:  # noqa: ANN001
    from msmtrec.benchmark.report import load_results, summary_md

    text = summary_md(load_results(_results(tmp_path)))
    assert "### Cells (test split)" in text and "| s0       | click | 1,000 |       100 |" in text
    assert "| hef         | 0.7310 [0.711, 0.751]" in text  # seed mean with its DeLong bounds
    # s1 (0.02 higher) holds 3/4 of the positives: weighted 0.7310 + 0.015, unweighted + 0.01
    hef_auc = next(line for line in text.split("### AUC\n")[1].splitlines() if line.startswith("| hef"))
    assert hef_auc.rstrip(" |").endswith("0.7460 ± 0.0010") and "0.7410 ± 0.0010" in hef_auc
    assert "On the positives-weighted average AUC" in text
    hef_cal = next(line for line in text.splitlines() if line.startswith("| hef") and "2.000" in line)
    assert hef_cal.rstrip(" |").endswith("1.000")  # mean abs(r-1) over the scenario cells
    assert "HEF ranks 1 of 3" in text and "HEF ranks 2 of 4" in text  # ours, then with the torch-rechub rows
    assert "HEF − best baseline (ple): Δ avg AUC +0.0100" in text and "sign-flip p = 0.25" in text


def test_cell_text_reads_on_every_colour() -> None:
    import matplotlib

    from msmtrec.benchmark.plots import text_color

    viridis, rdbu = matplotlib.colormaps["viridis"], matplotlib.colormaps["RdBu"]
    assert text_color(viridis(1.0)) == "black" and text_color(viridis(0.0)) == "white"  # yellow / dark purple
    assert text_color(rdbu(0.0)) == "white" and text_color(rdbu(0.5)) == "black"  # dark red / near-white
