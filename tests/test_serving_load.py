"""The load benchmark runs as a function: real server subprocess on loopback, bounded, zero errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_soak_benchmark_smoke() -> None:
    """Valid traffic with and without malformed bodies: every malformed body is a 4xx, /health keeps answering."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from soak_serving import format_results, run_soak
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    results = run_soak(model="shared_bottom", candidates=20, concurrency=1, abusers=1, duration_s=2.0)
    assert set(results["phases"]) == {"idle", "clean", "abuse"}
    for phase in results["phases"].values():
        assert phase["failures"] == 0, phase["first_failures"]
        assert phase["health_probes"] > 0
    abuse = results["phases"]["abuse"]
    assert abuse["malformed_requests"] > 0 and abuse["largest_error_body_bytes"] < 5_000
    assert all(400 <= int(status) < 500 for status in abuse["malformed_status"])
    assert "health p99 ms" in format_results(results)
