"""``msmtrec monitor``: a trained run scored on labelled new data, window by window, with drift and alerts.

Exit status: 0 when no alert fired, 3 when one did (the first alert is printed as the last line, every alert
is in ``OUT/alerts.txt``), 2 for bad input, so a scheduler can tell "the model drifted" from "the job broke".
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

ALERT_EXIT = 3


def register(app: typer.Typer) -> None:
    """Add ``monitor`` to the root app."""

    @app.command("monitor")
    def monitor_cmd(
        run_dir: Path = typer.Argument(..., help="A run folder written by `msmtrec train`."),
        data: str = typer.Option(
            ..., "--data", help="New labelled rows: raw .csv/.parquet file(s) or glob read with the run's spec, "
            "or a spec name/YAML."
        ),
        by: str = typer.Option("day", "--by", help="Windows: day | week | a column name."),
        time_column: str | None = typer.Option(
            None, "--time-column", help="Time column for --by day|week (default: the spec's split.time_column)."
        ),
        out: Path = typer.Option(Path("monitor"), "--out", "-o", help="Folder for tables, plots and alerts.txt."),
        set_: list[str] | None = typer.Option(None, "--set", help="Spec override for --data SPEC (KEY=VALUE)."),
        max_calibration_error: float = typer.Option(0.2, help="Alert when |predicted/observed - 1| exceeds this."),
        min_positives: int = typer.Option(100, help="Positives a cell needs before its calibration can alert."),
        max_psi: float = typer.Option(0.2, help="Alert when a field's PSI against training exceeds this."),
        min_rows: int = typer.Option(500, help="Rows a window x scenario needs before its PSI can alert."),
        threads: int = typer.Option(1, "--threads", help="Torch intra-op threads."),
    ) -> None:
        """Score labelled new data per time window: AUC, LogLoss, calibration, OOV share and PSI drift."""
        import torch

        from msmtrec import monitoring
        from msmtrec.config import parse_set_options
        from msmtrec.data.pipeline import read_and_filter
        from msmtrec.errors import ConfigError
        from msmtrec.runs import load_run

        torch.set_num_threads(max(threads, 1))
        run = load_run(run_dir)
        pre = run.preprocessor
        if pre is None:  # load_run requires it by default; kept for type checkers
            raise ConfigError(f"{run_dir}: no preprocessor.json")
        time_column = time_column or pre.spec.split.time_column
        window_column = time_column if by in ("day", "week") else by
        spec = monitoring.new_data_spec(pre.spec, data, window_column, parse_set_options(set_))
        frame = read_and_filter(spec).frame
        windows = monitoring.window_labels(frame, by, time_column)
        rules = monitoring.AlertRules(max_calibration_error, min_positives, max_psi, min_rows)
        print(f"{len(frame):,} rows in {windows.nunique()} window(s); reading the training split for drift …",
              file=sys.stderr)
        reference = monitoring.reference_rows(pre)
        result = monitoring.monitor(run.model, pre, frame, windows, reference, rules,
                                    progress=lambda m: print(m, file=sys.stderr))
        monitoring.write_outputs(result, out)
        print(monitoring.summary(result))
        print(f"wrote {out}/cells.csv, fields.csv, alerts.txt and plots/")
        if result.alerts:
            print(f"alert: {result.alerts[0]}" + (f" (+{len(result.alerts) - 1} more)" if len(result.alerts) > 1
                                                   else ""), file=sys.stderr)
            sys.exit(ALERT_EXIT)
