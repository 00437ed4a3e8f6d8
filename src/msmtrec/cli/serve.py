"""``msmtrec export``, ``msmtrec predict`` and ``msmtrec serve``: using a trained run outside training."""

from __future__ import annotations

import gc
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from msmtrec.errors import MsmtrecError

if TYPE_CHECKING:
    from msmtrec.serving.scorer import Scorer

RUN_HELP = "A run folder written by `msmtrec train` (config.yaml, model.pt, preprocessor.json)."


def export(
    run_dir: Path = typer.Argument(..., help=RUN_HELP),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),
    out: Path = typer.Option(..., "--out", "-o", help="File to write (e.g. model.onnx)."),
) -> None:
    """Export the model with a flat named input signature; the preprocessor is copied beside it."""
    from msmtrec.serving.export import export_run

    paths = export_run(run_dir, format.lower(), out)
    for what, p in paths.items():
        print(f"{what:>12}: {p}")


def predict(
    run_dir: Path = typer.Argument(..., help=RUN_HELP),
    input: Path = typer.Option(..., "--input", "-i", help="Raw rows: .csv, .csv.gz or .parquet."),
    output: Path = typer.Option(..., "--output", "-o", help="Predictions: .csv, .csv.gz or .parquet."),
    chunk_rows: int = typer.Option(50_000, "--chunk-rows", help="Rows per chunk (bounds memory)."),
    keep: list[str] = typer.Option(None, "--keep", help="Extra input column to copy to the output (repeatable); "
                                 "one named like a task (its label) is written as NAME_label."),
    threads: int = typer.Option(0, "--threads", help="Torch threads (0: half the cores, at most 4)."),
) -> None:
    """Score a file chunk by chunk: one column per task (probabilities, or values in original units)."""
    from msmtrec.serving.predict import predict_file
    from msmtrec.serving.scorer import configure_threads

    configure_threads(threads or None)
    report = predict_file(run_dir, input, output, chunk_rows=chunk_rows, keep=list(keep or []))
    print(report.summary())


def serve(
    run_dir: Path = typer.Argument(..., help=RUN_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    max_candidates: int = typer.Option(5000, "--max-candidates", help="More candidates in one request: 413."),
    max_records: int = typer.Option(10000, "--max-records", help="More records in one score request: 413."),
    max_body_mb: float = typer.Option(8.0, "--max-body-mb", help="Larger request bodies: 413."),
    threads: int = typer.Option(0, "--threads", help="Inference threads (0: half the cores, at most 4)."),
    backend: str = typer.Option(
        "auto", "--backend",
        help="auto (torchscript, else torch), torchscript (traced + frozen graphs, HEF forward ~1.7x faster "
             "than eager, seconds to start), torch (eager), compiled (torch.compile, ~1.3x, 1-2 min to start) "
             "or onnx (ONNX Runtime). See docs/serving.md.",
    ),
    onnx_file: Path = typer.Option(None, "--onnx-file", help="With --backend onnx: a file from `msmtrec export`."),
    access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="Log every request."),
) -> None:
    """Serve /v1/score, /v1/rank, /v1/model and /health over HTTP (OpenAPI at /docs)."""
    try:
        import uvicorn

        from msmtrec.serving.app import Limits, create_app
        from msmtrec.serving.scorer import Scorer, configure_threads
    except ModuleNotFoundError as e:
        raise MsmtrecError(f"serving needs the 'serve' extra ({e.name} is missing): pip install 'msmtrec[serve]'") \
            from None
    if not 0 < port < 65536:
        raise MsmtrecError(f"--port must be in 1..65535, got {port}")
    _warn_if_public(host)
    configure_threads(threads or None)
    scorer = Scorer.load(run_dir)
    _use_backend(scorer, backend, onnx_file)
    limits = Limits(max_body_bytes=int(max_body_mb * 1024 * 1024), max_candidates=max_candidates,
                    max_records=max_records)
    app = create_app(scorer, limits)
    scorer.warm_up()
    # Everything loaded so far (torch, pandas, the model, the app) lives as long as the process: move it
    # out of the garbage collector's generations, so a full collection triggered by request garbage scans
    # only request objects (a full scan of the start-up heap is a long pause, straight into p99).
    gc.collect()
    gc.freeze()
    print(f"serving {scorer.model_name} ({scorer.backend}) from {run_dir} on http://{host}:{port} (docs at /docs)",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=access_log)


BACKENDS = ("auto", "torchscript", "torch", "compiled", "onnx")


def _use_backend(scorer: Scorer, backend: str, onnx_file: Path | None) -> None:
    """Switch ``scorer`` to ``backend``; ``auto`` tries TorchScript and says why if it stays eager."""
    if backend not in BACKENDS:
        raise MsmtrecError(f"--backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if onnx_file is not None and backend != "onnx":
        raise MsmtrecError("--onnx-file needs --backend onnx")
    if backend == "auto":
        try:
            scorer.use_torchscript()
        except MsmtrecError as e:
            print(f"note: serving with eager PyTorch: {e}", flush=True)
    elif backend == "torchscript":
        scorer.use_torchscript()
    elif backend == "compiled":
        print("compiling the model with torch.compile (1-2 minutes on 2 cores, less with a warm cache)...",
              flush=True)
        scorer.use_compiled()
    elif backend == "onnx":
        print("preparing the ONNX Runtime backend (exporting the model)..." if onnx_file is None else
              f"loading {onnx_file}", flush=True)
        scorer.use_onnx(onnx_file)


def _warn_if_public(host: str) -> None:
    """Binding beyond loopback exposes an unauthenticated service; allow it, but say so."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        print(f"warning: binding {host}: the service has no authentication; anyone who can reach it can use it")


def register(app: typer.Typer) -> None:
    """Add ``export``, ``predict`` and ``serve`` as root commands."""
    app.command("export")(export)
    app.command("predict")(predict)
    app.command("serve")(serve)
