"""``msmtrec plot RUN_DIR``: training and validation curves of a run as PNG files.

Examples::

    msmtrec plot runs/hef                    # writes runs/hef/plots/loss.png, valid_{task}.png
    msmtrec plot runs/hef --out figures/hef
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``plot`` to the root app."""

    @app.command("plot")
    def plot_cmd(
        run_dir: Path = typer.Argument(..., help="A run folder written by `msmtrec train` (reads history.csv)."),
        out: Path | None = typer.Option(None, "--out", help="Folder for the PNGs (default RUN_DIR/plots)."),
    ) -> None:
        """Plot training loss per task (per epoch, and per step from TensorBoard files) and validation metrics
        per task and scenario."""
        from msmtrec.training.curves import plot_run

        for path in plot_run(run_dir, out):
            print(path)
