"""``msmtrec data sample``: raw rows of a dataset in its input layout, to try ``predict`` and the service on.

Registered into the ``data`` group by :mod:`msmtrec.cli.data` through :func:`register`.

Examples::

    msmtrec data sample hillstrom --rows 100 --out rows.csv               # training split, with labels
    msmtrec data sample hillstrom --rows 100 --no-labels --out req.parquet
    msmtrec data sample my_spec.yaml --rows 1000 --split valid --out valid_rows.csv.gz
"""

from __future__ import annotations

from pathlib import Path

import typer

from msmtrec.config import parse_set_options

SPEC_HELP = "A shipped spec name (hillstrom, census_kdd, aliexpress, ali_ccp, kuairand) or a YAML path."


def sample(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    rows: int = typer.Option(100, "--rows", help="Rows to write (all of the split if it has fewer)."),
    out: Path = typer.Option(..., "--out", help="File to write: .csv, .csv.gz or .parquet."),
    split: str = typer.Option("train", "--split", help="train (default) | valid | test: test only when you ask."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random choice of rows."),
    labels: bool = typer.Option(True, "--labels/--no-labels", help="Keep the label columns (drop them to mimic "
                                "requests)."),
    set_: list[str] = typer.Option(None, "--set", help="Override a spec key (repeatable), as in data inspect."),
    data_root: str = typer.Option(None, help="Directory relative data paths point into."),
) -> None:
    """Write random raw rows of one split, with the columns the spec reads, for predict / evaluate / serve."""
    from msmtrec.data.sample import sample_rows, write_rows

    frame = sample_rows(spec, rows, split=split, seed=seed, labels=labels, data_root=data_root,
                        overrides=parse_set_options(set_))
    path = write_rows(frame, out)
    print(f"wrote {len(frame):,} {split} rows x {frame.shape[1]} columns to {path}")


def register(app: typer.Typer) -> None:
    """Add ``sample`` to the ``data`` group."""
    app.command("sample")(sample)
