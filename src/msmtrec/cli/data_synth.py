"""``msmtrec data synth`` (simulated logs as Parquet shards) and ``msmtrec data stream-bench``.

Registered into the ``data`` group by :mod:`msmtrec.cli.data` through :func:`register`, so the simulator
and the streaming reader can be exercised from the command line without writing Python.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import typer

from msmtrec.config import parse_set_options
from msmtrec.report import format_table


def _range(text: str, option: str) -> tuple[float, float]:
    """``"0.1,0.3"`` → (0.1, 0.3), with a one-line error naming the option otherwise."""
    from msmtrec.errors import ConfigError

    parts = [p.strip() for p in text.split(",")]
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{option}: expected LO,HI (two numbers), got {text!r}") from None
    return lo, hi


def _codes(text: str | None, option: str) -> list[int] | None:
    """``"2,5"`` → [2, 5]; None stays None; a one-line error naming the option otherwise."""
    from msmtrec.errors import ConfigError

    if text is None:
        return None
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected scenario codes separated by commas (e.g. 2,5), got {text!r}") from None


def synth(
    out: Path = typer.Option(..., "--out", help="Folder for part-*.parquet and ground_truth.json."),
    rows: int = typer.Option(1_000_000, help="Rows (impressions) to write."),
    scenarios: int = typer.Option(8, help="Scenarios; sizes are geometric, largest/smallest = --imbalance."),
    users: int = typer.Option(1_000_000, help="Distinct users (drawn per row from a power law)."),
    items: int = typer.Option(200_000, help="Distinct items (drawn per row from a power law)."),
    seed: int = typer.Option(0, help="Seed of the whole generating process."),
    imbalance: float = typer.Option(1000.0, help="Share of the largest scenario over the smallest."),
    row_group_rows: int = typer.Option(131_072, help="Rows per Parquet row group (the streaming unit)."),
    rows_per_file: int = typer.Option(1_048_576, help="Rows per shard file (rounded up to whole row groups)."),
    conflict: list[int] = typer.Option(
        [1], "--conflict", help="Scenario(s) where purchase follows the negative of a click factor (repeatable)."
    ),
    overwrite: bool = typer.Option(False, help="Replace part-*.parquet files already in --out."),
    drift: float = typer.Option(0.0, help="Shift scenario mix and affinities over time (0: stationary)."),
    drift_scenarios: str | None = typer.Option(
        None, "--drift-scenarios", help="Comma-separated scenario codes the drift applies to (default: all)."
    ),
    click_rate: str = typer.Option("0.01,0.08", help="LO,HI of the per-scenario base click rates."),
    purchase_rate: str = typer.Option("0.02,0.10", help="LO,HI of the per-scenario purchase-given-click rates."),
) -> None:
    """Simulate multi-scenario click / purchase / dwell-time logs (see docs/scale.md for the process)."""
    from msmtrec.data.synth import SynthConfig, synthesize

    cfg = SynthConfig(
        rows=rows,
        scenarios=scenarios,
        users=users,
        items=items,
        seed=seed,
        imbalance=imbalance,
        row_group_rows=row_group_rows,
        rows_per_file=rows_per_file,
        conflict_scenarios=tuple(conflict),
        drift=drift,
        drift_scenarios=_codes(drift_scenarios, "--drift-scenarios"),
        click_rate=_range(click_rate, "--click-rate"),
        purchase_rate=_range(purchase_rate, "--purchase-rate"),
    )
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 5 or done == total:
            last[0] = now
            print(f"  {done:,}/{total:,} rows", file=sys.stderr)

    res = synthesize(cfg, out, overwrite=overwrite, progress=progress)
    gt = res.ground_truth
    table = [
        [
            s["name"],
            s["realised"]["rows"],
            100 * s["realised"]["click_rate"],
            100 * s["realised"]["purchase_rate"],
            s["realised"]["dwell_time_mean_s"],
            "yes" if s["conflict"] else "",
            "yes" if s.get("drifts") else "",
        ]
        for s in gt["scenarios"]
    ]
    print(format_table(["scenario", "rows", "click %", "purchase %", "dwell s", "conflict", "drifts"], table))
    print(
        f"wrote {len(res.files)} file(s), {res.rows:,} rows to {out} in {res.seconds:.1f} s "
        f"({res.rows_per_second:,.0f} rows/s); imbalance {gt['imbalance_realised']:,.0f}x; "
        f"peak RSS {_peak_rss_mb():,.0f} MB"
    )
    print(f"read it with: msmtrec data inspect synthetic --set 'files.path={out}/*.parquet'")


def stream_bench(
    spec: str = typer.Argument("synthetic", help="Spec of the Parquet data."),
    set_: list[str] = typer.Option(None, "--set", help="Override a spec key, e.g. --set files.path=DIR/*.parquet."),
    batch_size: int = typer.Option(4096, help="Batch size."),
    shuffle_buffer: int = typer.Option(200_000, help="Rows in the shuffle buffer."),
    fit_rows: int = typer.Option(500_000, help="Rows sampled to fit the encoders."),
    data_root: str = typer.Option(None, help="Directory relative data paths point into."),
) -> None:
    """Rows/s and peak memory of one shuffled epoch streamed from Parquet (no model)."""
    from msmtrec.data.reader import expand
    from msmtrec.data.spec import data_root as root_of
    from msmtrec.data.spec import load_spec
    from msmtrec.data.stream import ParquetStream, fit_preprocessor, row_groups

    sp = load_spec(spec, parse_set_options(set_))
    files = expand(sp.files.path, root_of(data_root), f"{sp.origin}: files.path")
    t0 = time.perf_counter()
    pre = fit_preprocessor(sp, files, max_rows=fit_rows)
    fit_s = time.perf_counter() - t0
    stream = ParquetStream(row_groups(files), pre, shuffle_buffer=shuffle_buffer)
    t0 = time.perf_counter()
    seen = 0
    for b in stream.batches(batch_size, shuffle=True, seed=0, epoch=0):
        seen += int(b["labels"].shape[0])
    dt = time.perf_counter() - t0
    print(
        format_table(
            ["stage", "rows", "seconds", "rows/s"],
            [
                ["fit encoders (sample)", min(fit_rows, len(stream)), fit_s, None],
                ["stream one epoch", seen, dt, seen / dt],
            ],
        )
    )
    print(f"peak RSS {_peak_rss_mb():,.0f} MB over {len(files)} file(s), {len(stream.pieces)} row groups")


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (Linux reports ru_maxrss in KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 1024 / 1024


def register(app: typer.Typer) -> None:
    """Add ``synth`` and ``stream-bench`` to the ``data`` command group."""
    app.command("synth")(synth)
    app.command("stream-bench")(stream_bench)
