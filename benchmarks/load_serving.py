"""Load benchmark for ``msmtrec serve``: real HTTP over loopback, concurrent clients, bounded in time.

Starts the server in a subprocess on 127.0.0.1 (never any other address), waits for ``/health``, then
runs ``concurrency`` async httpx clients posting ``/v1/rank`` requests with 100 and 1,000 candidates
built from real Hillstrom rows, sent as candidate objects and as candidate columns. Each phase stops
after ``duration_s`` seconds or ``max_requests`` requests, whichever comes first, and the server is
always shut down. Reports p50/p99 latency, requests/s and errors per phase.

    .venv/bin/python benchmarks/load_serving.py --model hef --duration 20 --concurrency 2

or from Python: ``from benchmarks.load_serving import run_load; run_load(model="hef")``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

LOOPBACK = "127.0.0.1"
WARMUP_REQUESTS = 10
"""Requests sent before each phase's clock starts (not in the latency figures)."""
CONTEXT_COLUMNS = ("recency", "history", "zip_code", "newbie", "channel")
ITEM_COLUMNS = ("history_segment", "mens", "womens")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


FORMATS = ("rows", "columns")
"""How candidates travel: ``rows`` = one object per candidate (``candidates``), ``columns`` = one list per
field (``candidate_columns``). The same requests either way."""


DISTINCT_COLUMNS = ("recency", "history")
"""With ``distinct=True`` candidates also carry these (the user's in Hillstrom) from their own row, so almost
every candidate row differs: three item features alone give at most 28 distinct rows, which the service
scores once each."""


def make_payloads(
    n_candidates: int, count: int = 20, seed: int = 0, ads: int = 3, form: str = "rows", distinct: bool = False
) -> list[bytes]:
    """``count`` distinct rank requests (pre-serialised, so the client spends no time encoding)."""
    if form not in FORMATS:
        raise ValueError(f"form must be one of {FORMATS}, got {form!r}")
    from msmtrec.serving.testing import raw_rows

    rows = raw_rows(max(n_candidates, 1000), seed=seed)
    rng = np.random.default_rng(seed)
    records = rows.to_dict("records")
    out = []
    for _ in range(count):
        user = records[int(rng.integers(len(records)))]
        pick = rng.choice(len(records), size=n_candidates, replace=len(records) < n_candidates)
        cands = []
        for j, i in enumerate(pick):
            c: dict[str, Any] = {
                "id": f"sku{i}",
                "features": {k: records[i][k] for k in ITEM_COLUMNS + (DISTINCT_COLUMNS if distinct else ())},
                "price": float(rng.uniform(5, 200)),
            }
            if j < ads:
                c.update(is_ad=True, bid=float(rng.uniform(0.1, 2.0)))
            cands.append(c)
        body = {
            "scenario": user["segment"],
            "context": {k: user[k] for k in CONTEXT_COLUMNS},
            "candidates": cands,
            "objective": {"weights": {"visit": 1.0, "conversion": 20.0, "spend": 0.1}},
            "slots": {"positions": 20, "max_ads": 2, "ad_positions": [2, 5, 9]},
        }
        if form == "columns":
            body["candidate_columns"] = as_columns(body.pop("candidates"))
        out.append(json.dumps(body).encode())
    return out


def as_columns(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """Candidate objects → ``candidate_columns`` (defaults filled in where only some candidates set a field)."""
    defaults = {"id": None, "is_ad": False, "bid": None, "bid_type": "cpc", "price": None}
    cols: dict[str, Any] = {key: [c.get(key, default) for c in candidates] for key, default in defaults.items()
                            if any(key in c for c in candidates)}
    names = dict.fromkeys(k for c in candidates for k in c.get("features", {}))
    cols["features"] = {k: [c["features"][k] for c in candidates] for k in names}
    return cols


async def _phase(
    url: str,
    payloads: list[bytes],
    concurrency: int,
    duration_s: float,
    max_requests: int,
    warmup: int = WARMUP_REQUESTS,
) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    model_ms: list[float] = []
    handler_ms: list[float] = []
    errors: list[str] = []
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=10.0, limits=limits, trust_env=False) as client:
        for i in range(warmup):
            await client.post("/v1/rank", content=payloads[i % len(payloads)], headers=headers)
        stop_at = time.perf_counter() + duration_s
        counter = iter(range(max_requests))

        async def worker(k: int) -> None:
            for i in counter:
                if time.perf_counter() >= stop_at:
                    return
                body = payloads[(i + k) % len(payloads)]
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/rank", content=body, headers=headers)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code}: {r.text[:200]}")
                    else:
                        timing = _server_timing(r.headers.get("server-timing", ""))
                        model_ms.append(timing.get("model", np.nan))
                        handler_ms.append(sum(timing.values()))
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1e3
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": round(elapsed, 2),
        "rps": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
        "mean_ms": round(float(lat.mean()), 2) if len(lat) else None,
        "server_model_p50_ms": round(float(np.nanpercentile(model_ms, 50)), 2) if model_ms else None,
        "server_handler_p50_ms": round(float(np.nanpercentile(handler_ms, 50)), 2) if handler_ms else None,
    }


def _server_timing(header: str) -> dict[str, float]:
    """``features;dur=1.2, model;dur=8.0`` → ``{"features": 1.2, "model": 8.0}``."""
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name and dur:
            out[name] = float(dur)
    return out


def run_load(
    run_dir: str | Path | None = None,
    model: str = "hef",
    candidates: tuple[int, ...] = (100, 1000),
    concurrency: int = 2,
    duration_s: float = 15.0,
    max_requests: int = 20_000,
    threads: int | None = None,
    backend: str = "auto",
    startup_timeout_s: float = 600.0,
    forms: tuple[str, ...] = FORMATS,
    distinct: bool = False,
) -> dict[str, Any]:
    """Start a server on loopback, load it phase by phase, stop it; returns the figures per phase.

    A phase is one (candidate count, request form) pair, keyed ``"1000 rows"`` / ``"1000 columns"``.
    """
    tmp = None
    if run_dir is None:
        from msmtrec.serving.testing import make_run_dir

        tmp = tempfile.TemporaryDirectory(prefix="msmtrec-load-")
        run_dir = make_run_dir(Path(tmp.name) / model, model, overrides={})  # the model's default config
    port = _free_port()
    url = f"http://{LOOPBACK}:{port}"
    cmd = [
        sys.executable,
        "-c",
        "from msmtrec.cli import main; main()",
        "serve",
        str(run_dir),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    ]
    if threads:
        cmd += ["--threads", str(threads)]
    cmd += ["--backend", backend]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results: dict[str, Any] = {
        "model": model,
        "backend": backend,
        "run_dir": str(run_dir),
        "concurrency": concurrency,
        "distinct": distinct,
        "duration_s": duration_s,
        "cpu_count": os.cpu_count(),
        "phases": {},
    }
    try:
        _wait_healthy(url, server, startup_timeout_s)
        import httpx

        info = httpx.get(f"{url}/v1/model", trust_env=False).json()
        results["model"], results["backend"] = info["model"], info["backend"]  # what auto resolved to
        for n, form in ((n, form) for n in candidates for form in forms):
            payloads = make_payloads(n, form=form, distinct=distinct)
            cpu0, host0 = _process_cpu_s(server.pid), _host_cpu_ticks()
            phase = asyncio.run(_phase(url, payloads, concurrency, duration_s, max_requests))
            cpu1, host1 = _process_cpu_s(server.pid), _host_cpu_ticks()
            if cpu0 is not None and cpu1 is not None and phase["requests"]:
                # CPU time the server process itself used per request, warm-up requests counted too: unlike
                # latency, it does not grow when the host steals time
                served = phase["requests"] + WARMUP_REQUESTS
                phase["server_cpu_ms_per_request"] = round(1e3 * (cpu1 - cpu0) / served, 2)
            if host0 is not None and host1 is not None:
                busy = (host1[0] - host0[0]) or 1
                phase["host_steal_pct"] = round(100.0 * (host1[1] - host0[1]) / busy, 1)
            phase.update(candidates=n, form=form)
            results["phases"][f"{n} {form}"] = phase
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if tmp is not None:
            tmp.cleanup()
    return results


def _process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _host_cpu_ticks() -> tuple[int, int] | None:
    """(all non-idle ticks including steal, steal ticks) from ``/proc/stat``; None where unavailable.

    Steal is CPU time the hypervisor gave to other guests while this VM wanted it: on a shared cloud VM it
    is what makes latency figures swing between runs, so the benchmark reports it beside them.
    """
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal, steal


def _wait_healthy(url: str, server: subprocess.Popen, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            out = server.stdout.read() if server.stdout else ""
            raise RuntimeError(f"server exited with {server.returncode}: {out[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server did not become healthy within {timeout_s} s")


def format_results(results: dict[str, Any]) -> str:
    from msmtrec.report import format_table

    def ms(v: float | None) -> str:
        return "–" if v is None else f"{v:.1f}"

    rows = [
        [r["candidates"], r["form"], r["requests"], r["errors"], f"{r['rps']:.1f}",
         ms(r["p50_ms"]), ms(r["p99_ms"]), ms(r["mean_ms"]),
         ms(r["server_handler_p50_ms"]), ms(r["server_model_p50_ms"]), ms(r.get("server_cpu_ms_per_request")),
         "–" if r.get("host_steal_pct") is None else f"{r['host_steal_pct']:.0f} %"]
        for r in results["phases"].values()
    ]
    head = (
        f"model {results['model']} ({results['backend']}), {results['concurrency']} concurrent client(s), "
        f"{'distinct' if results.get('distinct') else 'repeating'} candidate rows, "
        f"{results['duration_s']} s per phase, {results['cpu_count']} CPU(s)"
    )
    headers = ["candidates", "form", "requests", "errors", "req/s", "p50 ms", "p99 ms", "mean ms", "server p50 ms",
               "model p50 ms", "server CPU ms/req", "host steal"]
    return head + "\n" + format_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", help="A trained run folder (default: a fresh untrained run of --model).")
    ap.add_argument("--model", default="hef")
    ap.add_argument("--candidates", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--duration", type=float, default=15.0, help="Seconds per phase.")
    ap.add_argument("--max-requests", type=int, default=20_000, help="Requests per phase at most.")
    ap.add_argument("--threads", type=int, default=0, help="Server inference threads (0: server default).")
    ap.add_argument("--backend", default="auto", choices=["auto", "torchscript", "torch", "compiled", "onnx"],
                    help="Server inference backend (default: the server's default, auto).")
    ap.add_argument("--format", nargs="+", default=list(FORMATS), choices=FORMATS, dest="forms",
                    help="Candidate request forms to load (default: both, one phase each).")
    ap.add_argument("--distinct", action="store_true",
                    help="Candidates also carry recency and history, so (almost) every candidate row is distinct.")
    ap.add_argument("--json", help="Also write the results here.")
    args = ap.parse_args(argv)
    results = run_load(
        args.run_dir,
        args.model,
        tuple(args.candidates),
        args.concurrency,
        args.duration,
        args.max_requests,
        args.threads or None,
        args.backend,
        forms=tuple(args.forms),
        distinct=args.distinct,
    )
    print(format_results(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 1 if any(r["errors"] for r in results["phases"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
