"""``msmtrec benchmark SUITE``: models × datasets × seeds under one budget, then the reports.

Examples::

    msmtrec benchmark hillstrom --quick                         # CI smoke test (one seed, 3,000 rows, 1 epoch)
    msmtrec benchmark hillstrom --seeds 5 --out bench/hillstrom  # the published run (resumable)
    msmtrec benchmark my_suite.yaml --report-only --out bench/x  # rebuild tables and plots from results.csv
    msmtrec benchmark hillstrom --tuned --trials 20 --seeds 5    # tune each model (same N), then 5 seeds each

Runs already in ``OUT/results.csv`` are skipped, so re-running the same command after an interruption
continues where it stopped. Each run uses ``--threads`` torch threads (default 1): on a small shared CPU,
several multi-threaded runs oversubscribe the cores and a run can slow down tenfold, which would make the
speed columns meaningless; ``--jobs`` runs that many single-threaded runs side by side instead.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer

from msmtrec.cli.options import threads_option
from msmtrec.config import parse_set_options
from msmtrec.errors import ConfigError, MsmtrecError


def register(app: typer.Typer) -> None:
    """Add ``benchmark`` to the root app."""

    @app.command("benchmark")
    def benchmark_cmd(
        suite: str = typer.Argument(..., help="Shipped suite name (hillstrom, census_kdd, synthetic) or a YAML path."),
        seeds: int | None = typer.Option(None, "--seeds", help="Seeds 0..N-1 per model (default 5; 1 with --quick)."),
        quick: bool = typer.Option(False, "--quick", help="Small sample, one epoch, the suite's quick model list."),
        out: Path | None = typer.Option(None, "--out", help="Results folder (default benchmarks/results/SUITE)."),
        jobs: int = typer.Option(1, "--jobs", help="Runs executed in parallel (separate processes)."),
        threads: int = threads_option(help="Intra-op torch threads per run (default 1)."),
        models: str | None = typer.Option(None, "--models", help="Comma-separated variant names to run (subset)."),
        report_only: bool = typer.Option(False, "--report-only", help="Only rebuild reports from OUT/results.csv."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar over runs."),
        tuned: bool = typer.Option(
            False, "--tuned", help="Tune every model first (--trials each, seed 0's validation split), then run seeds."
        ),
        trials: int = typer.Option(20, "--trials", help="With --tuned: Optuna trials per model (the same for all)."),
        rerun: str | None = typer.Option(
            None, "--rerun", help="Comma-separated variants whose results (and tuning studies) in OUT are dropped "
            "first, so they run again (after a change to the model); the other variants' results are kept."
        ),
        set_: list[str] | None = typer.Option(
            None, "--set", help="Change the suite's schedule for every model: train.KEY=VALUE (repeatable), e.g. "
            "--set train.evals_per_epoch=4 --set train.patience=4; recorded in OUT, so use a fresh --out."
        ),
    ) -> None:
        """Run a benchmark suite and write results.csv, summary/seesaw/ablation/cost Markdown and PNG plots."""
        from msmtrec.benchmark import load_suite, run_suite, write_reports

        spec = load_suite(suite)
        if quick:
            spec = spec.quick_version()
        if set_:
            spec = spec.with_train(parse_set_options(set_))
        keep: list[str] | None = None
        if models:
            keep = [m.strip() for m in models.split(",") if m.strip()]
            unknown = sorted(set(keep) - {e.name for e in spec.entries})
            if unknown:
                raise ConfigError(f"--models: unknown variant(s) {unknown}; suite has {[e.name for e in spec.entries]}")
        n_seeds = seeds if seeds is not None else (int(spec.quick.get("seeds", 1)) if quick else 5)
        target = out or Path("benchmarks") / "results" / (spec.name + ("-tuned" if tuned else "") +
                                                          ("-quick" if quick else ""))
        if rerun:
            from msmtrec.benchmark.runner import forget

            again = [m.strip() for m in rerun.split(",") if m.strip()]
            recorded = target / "suite.json"  # a variant the suite no longer lists can still be dropped
            known = {e.name for e in spec.entries} | (
                set(json.loads(recorded.read_text()).get("entries", {})) if recorded.exists() else set())
            unknown = sorted(set(again) - known)
            if unknown:
                raise ConfigError(f"--rerun: unknown variant(s) {unknown}; suite and {target} have {sorted(known)}")
            if report_only:
                raise ConfigError("--rerun drops results to run them again; it cannot go with --report-only")
            dropped = forget(target, again)
            typer.echo(f"--rerun: dropped {dropped} result rows of {', '.join(again)} from {target}", err=True)
        failures: list[str] = []
        if report_only:
            if not (target / "results.csv").exists():
                raise ConfigError(f"--report-only: {target}/results.csv does not exist")
        else:
            args = [suite, "--seeds", str(n_seeds), *(["--quick"] if quick else []), "--out", str(target)]
            args += (["--jobs", str(jobs)] if jobs != 1 else []) + (["--threads", str(threads)] if threads != 1 else [])
            args += ["--models", models] if models else []
            args += ["--tuned", "--trials", str(trials)] if tuned else []
            args += [a for item in set_ or [] for a in ("--set", item)]
            command = "msmtrec benchmark " + " ".join(shlex.quote(a) for a in args)
            if tuned:
                from msmtrec.benchmark.tune import tuned_suite

                say = (lambda m: typer.echo(m, err=True)) if progress else None
                spec = tuned_suite(spec, target, trials, only=keep, threads=threads, log=say)
            summary = run_suite(spec, target, n_seeds, jobs=jobs, threads=threads, progress=progress, command=command,
                                only=keep)
            failures = summary.failures
        try:
            written = write_reports(target)
        except ValueError as e:
            raise MsmtrecError(str(e)) from None
        typer.echo(f"wrote {len(written)} report files to {target}")
        if failures:
            raise MsmtrecError(f"{len(failures)} run(s) failed (listed in {target}/notes.json): " + "; ".join(failures))

