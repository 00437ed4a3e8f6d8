"""``msmtrec tune SUITE_OR_SPEC --model M --trials N``: Optuna search on the validation split.

Examples::

    msmtrec tune hillstrom --model mmoe --trials 30                 # the suite's budget and schedule
    msmtrec tune hillstrom --model hef --trials 2 --quick           # CI-sized (3,000 rows, 2 epochs)
    msmtrec tune my_spec.yaml --model ple --trials 20 --out runs/tune-ple
    msmtrec train --config runs/tune-ple/best.yaml --out runs/ple-tuned

Re-running the same command after a kill resumes the study (SQLite in OUT/study.db) and runs only the
missing trials. The test split is never read.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``tune`` to the root app."""

    @app.command("tune")
    def tune_cmd(
        target: str = typer.Argument(..., help="Shipped suite (hillstrom, census_kdd...), suite YAML or dataset spec."),
        model: str = typer.Option(..., "--model", help="Suite variant or registered model name."),
        trials: int = typer.Option(20, "--trials", help="Finished trials the study should hold."),
        quick: bool = typer.Option(False, "--quick", help="3,000 rows and at most 2 epochs per trial (CI)."),
        out: Path | None = typer.Option(None, "--out", help="Study folder (default runs/tune/TARGET-MODEL)."),
        dataset: str | None = typer.Option(None, "--dataset", help="For a suite with several datasets."),
        sample: int | None = typer.Option(None, "--sample", help="Keep this many rows (stratified)."),
        seed: int = typer.Option(0, "--seed", help="Training seed of every trial and the sampler's seed."),
        threads: int = typer.Option(1, "--threads", help="Torch threads."),
        progress: bool = typer.Option(False, "--progress/--no-progress", help="Optuna's bar over trials."),
    ) -> None:
        """Tune a model's declared search space; print the best trials, write best.yaml and Optuna plots."""
        from msmtrec.benchmark.tune import format_top, resolve_target, tune

        spec = resolve_target(target, model, quick=quick, dataset=dataset, sample=sample)
        folder = out or Path("runs") / "tune" / f"{Path(target).stem}-{model}{'-quick' if quick else ''}"
        args = [target, "--model", model, "--trials", str(trials), *(["--quick"] if quick else [])]
        args += ["--out", str(folder)] + (["--sample", str(sample)] if sample is not None else [])
        args += (["--dataset", dataset] if dataset else []) + (["--seed", str(seed)] if seed else [])
        command = "msmtrec tune " + " ".join(shlex.quote(a) for a in args)
        result = tune(spec, trials, folder, seed=seed, threads=threads, command=command, progress=progress)
        monitor = result.train.get("monitor", "auto")
        typer.echo(f"{spec.variant} on {spec.dataset.label}: {result.trials} trials in the study "
                   f"({result.ran} run now); validation {monitor}, best first:")
        typer.echo(format_top(result))
        typer.echo(f"best config: {folder / 'best.yaml'} (msmtrec train --config {folder / 'best.yaml'} --out DIR)")
        typer.echo("wrote " + ", ".join(p.name for p in result.files) + f" to {folder}")
