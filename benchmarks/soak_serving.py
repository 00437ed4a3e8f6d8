"""Soak benchmark for ``msmtrec serve``: valid traffic with and without a stream of expensive malformed requests.

Starts the server on 127.0.0.1 (never any other address) in a subprocess, then runs three phases of
``--duration`` seconds each:

* ``idle``: only the ``/health`` prober (the machine's own floor for that latency);
* ``clean``: ``--concurrency`` clients post valid ``/v1/rank`` requests while a prober GETs ``/health``
  every 20 ms;
* ``abuse``: the same, plus ``--abusers`` clients posting expensive malformed bodies in a loop (each under
  the body-size limit): 49,000 unknown keys and a context of 45,000 features (just under the limit on JSON
  values, so they are parsed), 300,000 unknown keys (over it), 5,000 candidates with every field of the
  wrong type, 40,000-digit integers (the exact-parser path), a body that is not UTF-8, JSON nested 100,000
  deep, a 7 MB scenario name.

``/health`` is probed from a separate process (every 20 ms), so the figure is the server's, not the load
generator's own event loop.

It prints p50/p99 of the valid requests and of ``/health`` per phase, the status codes the malformed requests
got and their largest error body, and exits non-zero if any request got a 5xx or a valid one failed.

    .venv/bin/python benchmarks/soak_serving.py --model hef --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_serving import LOOPBACK, _free_port, _wait_healthy, make_payloads  # noqa: E402

HEALTH_EVERY_S = 0.02


def malformed_bodies() -> list[tuple[str, bytes]]:
    """Expensive bodies that must all be refused with a 4xx, quickly and in a small error body."""
    context = {"recency": 3, "history": 120.5, "zip_code": "Urban", "newbie": 1, "channel": "Web"}
    base = {"scenario": "Mens E-Mail", "context": context}
    bad_candidate = {"id": [1], "is_ad": "yes", "bid": "x", "bid_type": 5, "price": "y", "features": 1}
    return [
        ("49,000 unknown keys", json.dumps({**base, **{f"k{i}": i for i in range(49_000)}}).encode()),
        ("45,000 context features", json.dumps({**base, "context": {f"f{i}": i for i in range(45_000)},
                                                "candidates": [{}]}).encode()),
        ("300,000 unknown keys", json.dumps({**base, **{f"k{i}": i for i in range(300_000)}}).encode()),
        ("5,000 wrong-typed candidates", json.dumps({**base, "candidates": [bad_candidate] * 5000}).encode()),
        ("40,000-digit integers", json.dumps({**base, "candidates": [{"id": 1}]}).encode().replace(
            b'"id": 1', b'"id": ' + b"9" * 40_000)),
        ("1 MB not UTF-8", b'{"scenario": "' + b"\xff" * 1_000_000 + b'"}'),
        ("nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000),
        ("7 MB scenario name", json.dumps({**base, "scenario": "x" * 7_000_000, "candidates": [{}]}).encode()),
    ]


async def _phase(url: str, payloads: list[bytes], concurrency: int, abusers: int, duration_s: float) -> dict:
    import httpx

    valid: list[float] = []
    health: list[float] = []
    failures: list[str] = []
    abuse_status: Counter = Counter()
    abuse_ms: list[float] = []
    largest_error = 0
    bad = malformed_bodies() if abusers else []
    headers = {"content-type": "application/json"}
    stop_at = time.perf_counter() + duration_s
    limits = httpx.Limits(max_connections=concurrency + abusers + 1)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits, trust_env=False) as client:

        async def valid_client(k: int) -> None:
            i = k
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                r = await client.post("/v1/rank", content=payloads[i % len(payloads)], headers=headers)
                valid.append(time.perf_counter() - t)
                if r.status_code != 200:
                    failures.append(f"valid request: {r.status_code} {r.text[:200]}")
                i += 1


        async def abuser(k: int) -> None:
            nonlocal largest_error
            i = k
            while time.perf_counter() < stop_at:
                name, body = bad[i % len(bad)]
                t = time.perf_counter()
                r = await client.post("/v1/rank", content=body, headers=headers)
                abuse_ms.append(time.perf_counter() - t)
                abuse_status[f"{r.status_code}"] += 1
                largest_error = max(largest_error, len(r.content))
                if r.status_code >= 500 or r.status_code < 400:
                    failures.append(f"{name}: {r.status_code} {r.text[:200]}")
                i += 1

        prober = subprocess.Popen([sys.executable, __file__, "--probe", url, str(duration_s)], stdout=subprocess.PIPE,
                                  text=True)
        await asyncio.gather(*(valid_client(k) for k in range(concurrency)), *(abuser(k) for k in range(abusers)))
        probed = json.loads(prober.communicate(timeout=120)[0])
        health += probed["latencies"]
        failures += probed["failures"]

    def pct(xs: list[float], q: float) -> float | None:
        return round(float(np.percentile(np.array(xs) * 1e3, q)), 1) if xs else None

    return {
        "valid_requests": len(valid), "valid_p50_ms": pct(valid, 50), "valid_p99_ms": pct(valid, 99),
        "health_probes": len(health), "health_p50_ms": pct(health, 50), "health_p99_ms": pct(health, 99),
        "health_max_ms": pct(health, 100),
        "malformed_requests": sum(abuse_status.values()), "malformed_status": dict(abuse_status),
        "malformed_p50_ms": pct(abuse_ms, 50), "largest_error_body_bytes": largest_error,
        "failures": len(failures), "first_failures": failures[:3],
    }


def probe_health(url: str, duration_s: float) -> dict[str, Any]:
    """GET /health every 20 ms for ``duration_s`` seconds (run in its own process by the phases)."""
    import httpx

    latencies: list[float] = []
    failures: list[str] = []
    stop_at = time.perf_counter() + duration_s
    with httpx.Client(base_url=url, timeout=60.0, trust_env=False) as client:
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            r = client.get("/health")
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                failures.append(f"/health: {r.status_code}")
            time.sleep(HEALTH_EVERY_S)
    return {"latencies": latencies, "failures": failures}


def run_soak(model: str = "hef", candidates: int = 1000, form: str = "columns", concurrency: int = 2,
             abusers: int = 2, duration_s: float = 20.0, backend: str = "auto") -> dict[str, Any]:
    """Start a server on loopback, run the clean and the abuse phase, stop it; the figures per phase."""
    from msmtrec.serving.testing import make_run_dir

    with tempfile.TemporaryDirectory(prefix="msmtrec-soak-") as tmp:
        run_dir = make_run_dir(Path(tmp) / model, model, overrides={})
        port = _free_port()
        url = f"http://{LOOPBACK}:{port}"
        cmd = [sys.executable, "-c", "from msmtrec.cli import main; main()", "serve", str(run_dir),
               "--host", LOOPBACK, "--port", str(port), "--backend", backend]
        server = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            _wait_healthy(url, server, 600.0)
            payloads = make_payloads(candidates, form=form)
            phases = {name: asyncio.run(_phase(url, payloads, clients, n, duration_s))
                      for name, clients, n in (("idle", 0, 0), ("clean", concurrency, 0),
                                               ("abuse", concurrency, abusers))}
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return {"model": model, "candidates": candidates, "form": form, "concurrency": concurrency,
            "abusers": abusers, "duration_s": duration_s, "cpu_count": os.cpu_count(), "phases": phases}


def format_results(results: dict[str, Any]) -> str:
    from msmtrec.report import format_table

    head = (f"model {results['model']}, {results['candidates']} candidates ({results['form']}), "
            f"{results['concurrency']} valid client(s), {results['abusers']} abuser(s), "
            f"{results['duration_s']} s per phase, {results['cpu_count']} CPU(s)")
    rows = [[name, p["valid_requests"], p["valid_p50_ms"], p["valid_p99_ms"], p["health_probes"],
             p["health_p50_ms"], p["health_p99_ms"], p["health_max_ms"], p["malformed_requests"],
             " ".join(f"{k}×{v}" for k, v in sorted(p["malformed_status"].items())) or "–",
             p["largest_error_body_bytes"], p["failures"]]
            for name, p in results["phases"].items()]
    headers = ["phase", "valid", "valid p50 ms", "valid p99 ms", "health", "health p50 ms", "health p99 ms",
               "health max ms", "malformed", "statuses", "largest error body", "failures"]
    return head + "\n" + format_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--probe"]:
        print(json.dumps(probe_health(argv[1], float(argv[2]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="hef")
    ap.add_argument("--candidates", type=int, default=1000)
    ap.add_argument("--format", default="columns", choices=["rows", "columns"], dest="form")
    ap.add_argument("--concurrency", type=int, default=2, help="Clients sending valid requests.")
    ap.add_argument("--abusers", type=int, default=2, help="Clients sending malformed requests (abuse phase).")
    ap.add_argument("--duration", type=float, default=20.0, help="Seconds per phase.")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--json", help="Also write the results here.")
    args = ap.parse_args(argv)
    results = run_soak(args.model, args.candidates, args.form, args.concurrency, args.abusers, args.duration,
                       args.backend)
    print(format_results(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    for p in results["phases"].values():
        for f in p["first_failures"]:
            print("failure:", f)
    return 1 if any(p["failures"] for p in results["phases"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
