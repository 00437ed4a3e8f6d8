"""``msmtrec train`` and ``msmtrec evaluate``.

Configuration layers, later wins: model/trainer defaults → ``--config FILE`` (YAML with ``model:`` and
``train:`` sections and optional top-level ``model_name``/``data``/``seed``/``sample``; a run's own
``config.yaml`` works) → ``--set`` → the convenience flags ``--epochs``/``--device``/``--batch-size``/``--threads``.

``--set`` keys: ``model.KEY=VALUE`` sets a model setting, ``train.KEY=VALUE`` a trainer setting; a bare
``KEY=VALUE`` is accepted when exactly one of the two has that key. Unknown keys are errors.

Examples::

    msmtrec train --data hillstrom --model shared_bottom --out runs/sb
    msmtrec train --data hillstrom --model mmoe --set model.embed_dim=8 --set train.lr=3e-3 --out runs/m
    msmtrec train --resume runs/sb                      # after a crash or kill -9
    torchrun --nproc_per_node=2 $(which msmtrec) train --data hillstrom --model ple --out runs/ddp
    msmtrec evaluate runs/sb --split valid
"""

from __future__ import annotations

from pathlib import Path

import typer

from msmtrec.cli.options import threads_option, use_threads
from msmtrec.config import parse_set_options
from msmtrec.errors import ConfigError


def zoo_names() -> list[str]:
    """Registered model names for ``--help``, read from the zoo's ``@register("...")`` lines.

    Reading the sources keeps ``msmtrec --help`` from importing torch; a test checks the list equals
    :func:`msmtrec.models.registered_models`.
    """
    import re

    import msmtrec

    models = Path(msmtrec.__file__).parent / "models"
    return sorted(n for f in models.glob("*.py") for n in re.findall(r'^@register\("([\w-]+)"\)', f.read_text(), re.M))


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``evaluate`` to the root app."""

    @app.command("train")
    def train_cmd(
        data: str | None = typer.Option(
            None, "--data", help="Dataset: shipped name (hillstrom), spec YAML, prepared dir, or planted[:ROWS]."
        ),
        model: str | None = typer.Option(None, "--model", help=f"Registered model: {', '.join(zoo_names())}."),
        config: Path | None = typer.Option(None, "--config", help="YAML with model: and train: sections."),
        set_: list[str] | None = typer.Option(
            None, "--set", help="Override a setting: model.KEY=VALUE or train.KEY=VALUE (repeatable)."
        ),
        out: Path | None = typer.Option(None, "--out", help="Run directory to create."),
        resume: Path | None = typer.Option(None, "--resume", help="Continue the run in this directory."),
        seed: int | None = typer.Option(None, "--seed", help="Seed for initialisation, shuffling, dropout."),
        epochs: int | None = typer.Option(None, "--epochs", help="Shortcut for --set train.max_epochs=N."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Shortcut for train.batch_size."),
        device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda (train.device)."),
        sample: int | None = typer.Option(None, "--sample", help="Keep only this many rows (quick runs)."),
        stream: bool = typer.Option(
            False, "--stream", help="Stream the training split from the spec's Parquet files (larger than memory)."
        ),
        threads: int | None = threads_option(
            None, "Intra-op torch threads per process (train.num_threads; default 1)."
        ),
        tracking: str | None = typer.Option(
            None, "--tracking", help="Also record to an experiment tracker: mlflow (train.tracking; TensorBoard "
            "event files are always written to RUN_DIR/tensorboard)."
        ),
        init_from: Path | None = typer.Option(
            None, "--init-from", help="Warm start from a finished run: extend its encoders with --data, carry its "
            "weights over, record the lineage."
        ),
        warm_dense: str = typer.Option(
            "keep", "--warm-dense", help="With --init-from: keep the parent's dense statistics or update them."
        ),
        new_scenario: str = typer.Option(
            "mean", "--new-scenario", help="With --init-from: a new scenario starts as the mean of the known "
            "ones (mean) or freshly initialised (fresh)."
        ),
    ) -> None:
        """Train a model; writes config, preprocessor, best checkpoint, history and test metrics to --out."""
        from msmtrec.training import run

        sets = parse_set_options(set_)
        shortcuts = (("train.max_epochs", epochs), ("train.batch_size", batch_size), ("train.device", device),
                     ("train.num_threads", threads), ("train.tracking", tracking))
        for key, value in shortcuts:
            if value is not None:
                sets[key] = str(value)
        if resume is not None:
            if out is not None and Path(out) != Path(resume):
                raise ConfigError("use either --resume RUN_DIR or --out RUN_DIR, not both")
            run.train(resume, resume=True, data=data, model_name=model, config_file=config, sets=sets,
                      seed=seed, sample=sample, stream=stream)
            return
        if out is None:
            raise ConfigError("missing --out RUN_DIR (or --resume RUN_DIR)")
        run.train(
            out, data=data, model_name=model, config_file=config, sets=sets, seed=seed, sample=sample, stream=stream,
            init_from=init_from, warm_dense=warm_dense, new_scenario=new_scenario,
        )

    @app.command("evaluate")
    def evaluate_cmd(
        run_dir: Path = typer.Argument(..., help="A run directory written by msmtrec train."),
        data: str | None = typer.Option(
            None, "--data", help="Spec or raw data file (default: the run's own data, re-prepared)."
        ),
        split: str = typer.Option("test", "--split", help="train | valid | test."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
        output: Path | None = typer.Option(None, "--output", help="Also write the metrics JSON here."),
        threads: int = threads_option(),
    ) -> None:
        """Recompute metrics of a trained run and print the scenario × task table."""
        from msmtrec.training import io, run
        from msmtrec.training.metrics import format_table

        use_threads(threads)
        metrics = run.evaluate(run_dir, data=data, split=split, device=device)
        model, _, _ = run.load_run_model(run_dir)
        print(f"{metrics['model']} on {metrics['dataset']} — {metrics['split']} split:")
        print(format_table(model.schema, metrics))
        if output is not None:
            io.save_json(metrics, output)
