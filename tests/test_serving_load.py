"""The load benchmark runs as a function: real server subprocess on loopback, bounded, zero errors."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_load_benchmark_smoke(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from load_serving import format_results, run_load
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from msmtrec.serving.testing import make_run_dir

    run_dir = make_run_dir(tmp_path / "run", "shared_bottom")
    results = run_load(run_dir, model="shared_bottom", candidates=(20,), concurrency=2, duration_s=1.0,
                       max_requests=40)
    assert set(results["phases"]) == {"20 rows", "20 columns"}
    for phase in results["phases"].values():
        assert phase["errors"] == 0, phase["first_errors"]
        assert 0 < phase["requests"] <= 40
        assert phase["p99_ms"] >= phase["p50_ms"] > 0
    assert "p99 ms" in format_results(results)
