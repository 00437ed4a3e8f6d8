"""``msmtrec data``: inspect a dataset, prepare encoded splits, and measure data throughput."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from msmtrec.config import parse_set_options
from msmtrec.report import format_table

app = typer.Typer(help="Inspect and prepare datasets.", no_args_is_help=True)

SPEC_HELP = "A shipped spec name (hillstrom, census_kdd, aliexpress, ali_ccp, kuairand) or a YAML path."
SET_HELP = "Override a spec key, e.g. --set files.path=fixtures/ali_ccp_sample.csv (repeatable)."
ROOT_HELP = "Directory relative data paths point into (default: $MSMTREC_DATA, ./shared/data or ../shared/data)."


def _prepare(spec: str, overrides: list[str] | None, data_root: str | None, sample: int | None = None):  # noqa: ANN202
    from msmtrec.data.pipeline import prepare_dataset

    return prepare_dataset(spec, sample=sample, data_root=data_root, overrides=parse_set_options(overrides))


@app.command()
def inspect(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    set_: list[str] = typer.Option(None, "--set", help=SET_HELP),
    data_root: str = typer.Option(None, help=ROOT_HELP),
) -> None:
    """Rows per scenario and split, label rates per task and scenario, vocabularies and missing values."""
    p = _prepare(spec, set_, data_root)
    print(inspect_report(p))


def inspect_report(p) -> str:  # noqa: ANN001 - PreparedData
    """The text ``data inspect`` prints (also used by tests)."""
    import numpy as np  # here, so `msmtrec --help` imports neither numpy nor torch

    from msmtrec.tasks import kind_of

    schema = p.schema
    scen_names = list(schema.scenarios)
    out = [f"dataset {p.name}: {sum(p.report['rows'].values()):,} rows from {len(p.report['files'])} file(s)"]
    for reason, n in p.report["dropped"].items():
        out.append(f"  dropped on purpose ({reason}): {n:,} rows")
    # rows per scenario x split
    rows = []
    for s_idx, s in enumerate(scen_names):
        counts = [int((p.splits[k].tensors["scenario"] == s_idx).sum()) for k in ("train", "valid", "test")]
        rows.append([s, *counts, sum(counts)])
    totals = [len(p.splits[k]) for k in ("train", "valid", "test")]
    rows.append(["all", *totals, sum(totals)])
    out += ["", "Rows per scenario and split", format_table(["scenario", "train", "valid", "test", "total"], rows)]
    # label rate / mean per task per scenario (all splits, original units)
    labels = np.concatenate([p.raw_labels[k] for k in ("train", "valid", "test")])
    scen = np.concatenate([p.splits[k].tensors["scenario"].numpy() for k in ("train", "valid", "test")])
    headers = ["scenario"] + [f"{t.name} {'rate %' if kind_of(t).probability else 'mean'}" for t in schema.tasks]
    rows = []
    for s_idx, s in enumerate([*scen_names, "all"]):
        mask = scen == s_idx if s != "all" else np.ones(len(scen), bool)
        vals = []
        for j, t in enumerate(schema.tasks):
            m = float(labels[mask, j].mean()) if mask.any() else None
            vals.append(None if m is None else (100 * m if kind_of(t).probability else m))
        rows.append([s, *vals])
    out += ["", "Label rate (binary, %) or mean (regression, original units) per scenario", format_table(headers, rows)]
    if any(p.report["funnel_violations"].values()):
        out.append(f"warning: funnel rows positive outside their parent task: {p.report['funnel_violations']}")
    # vocabularies
    rows = [[f.name, f.source, f.vocab_size, p.report["oov"]["test"].get(f.name, 0)] for f in schema.sparse]
    rows += [[s.name, "sequence", s.vocab_size, p.report["oov"]["test"].get(s.name, 0)] for s in schema.sequences]
    out += [
        "",
        "Sparse fields (vocabulary fitted on train; OOV = test values mapped to the unknown bucket, or for hashed "
        "fields test values never seen in training: the cold-start share)",
        format_table(["field", "kind", "vocab", "test OOV"], rows),
    ]
    missing = {k: v for k, v in p.report["missing"].items() if v}
    non_finite = p.report.get("non_finite", {})
    if missing or non_finite:
        rows = [[c, missing.get(c, 0), non_finite.get(c, 0)] for c in sorted({*missing, *non_finite})]
        out += [
            "",
            "Missing and non-finite values (imputed for dense fields, OOV bucket for sparse fields)",
            format_table(["column", "missing", "non-finite (inf)"], rows),
        ]
    else:
        out.append("\nMissing values: none")
    return "\n".join(out)


@app.command()
def prepare(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    out: Path = typer.Option(..., "--out", help="Folder for preprocessor.json, {train,valid,test}.npz, report.json."),
    set_: list[str] = typer.Option(None, "--set", help=SET_HELP),
    data_root: str = typer.Option(None, help=ROOT_HELP),
) -> None:
    """Fit encoders on the training split and write the encoded splits and the preprocessing artifact."""
    from msmtrec.data.pipeline import save_prepared

    t0 = time.perf_counter()
    p = _prepare(spec, set_, data_root)
    save_prepared(p, out)
    n = sum(p.report["rows"].values())
    dt = time.perf_counter() - t0
    print(
        f"wrote {out}: {', '.join(f'{k} {v:,}' for k, v in p.report['rows'].items())} rows "
        f"({n / dt:,.0f} rows/s including reading)"
    )
    from msmtrec.data.pipeline import data_notes

    for note in data_notes(p.report):
        print(note)


@app.command()
def bench(
    spec: str = typer.Argument("hillstrom", help=SPEC_HELP),
    batch_size: int = typer.Option(2048, help="Batch size for the iteration benchmark."),
    epochs: int = typer.Option(20, help="Shuffled epochs to iterate."),
    set_: list[str] = typer.Option(None, "--set", help=SET_HELP),
    data_root: str = typer.Option(None, help=ROOT_HELP),
) -> None:
    """Rows/s for preparing a dataset and for iterating shuffled batches over it."""
    import msmtrec.data.pipeline  # noqa: F401 - import time is not preparation time

    t0 = time.perf_counter()
    p = _prepare(spec, set_, data_root)
    prep = time.perf_counter() - t0
    n = sum(p.report["rows"].values())
    train = p.splits["train"]
    t0 = time.perf_counter()
    seen = 0
    for e in range(epochs):
        for b in train.batches(batch_size, shuffle=True, seed=0, epoch=e):
            seen += b["labels"].shape[0]
    it = time.perf_counter() - t0
    print(
        format_table(
            ["stage", "rows", "seconds", "rows/s"],
            [
                ["prepare (read + fit + encode)", n, prep, n / prep],
                [f"iterate (batch {batch_size}, shuffled)", seen, it, seen / it],
            ],
        )
    )


def _register_more() -> None:
    """Commands that live in their own modules (``data synth``, ``data stream-bench``, ``data sample``) join."""
    from msmtrec.cli import data_sample, data_synth

    data_synth.register(app)
    data_sample.register(app)


_register_more()
