"""Run a suite: every (dataset, seed, variant) trained and tested under one budget, appended to ``results.csv``.

Layout of ``results.csv`` (long format: one value per row, so adding a metric never changes the columns)::

    dataset, model, kind, base_model, seed, scenario, task, metric, value

* ``model`` is the variant name (``hef``, ``hef-attention``, ``rechub-mmoe``), ``kind`` is ``model``,
  ``ablation`` or ``peer``, ``base_model`` the registry name it builds (for a peer: the model it mirrors);
* test-split cells: ``scenario`` is a scenario name or ``all`` (every scenario pooled), ``task`` a task
  name, ``metric`` one of ``auc``, ``gauc``, ``logloss``, ``rmse``, ``mae``, ``rows``, ``positives``,
  ``pred_mean`` / ``label_mean`` (calibration: mean predicted probability against the observed rate) and
  ``auc_ci_low`` / ``auc_ci_high`` (95 % DeLong interval of that run's AUC);
* run-level values have ``scenario = task = "all"`` and ``metric`` among :data:`RUN_METRICS` (parameters,
  FLOPs, training seconds and samples/s as the trainer measures them, inference rows/s, epochs, the
  validation monitor of the kept epoch).

Each run's rows are appended (and flushed) as soon as it finishes, so an interrupted benchmark resumes by
skipping the (dataset, model, seed) triples already present. Every model sees the same prepared splits:
the split and the ``sample`` draw are fixed by the dataset spec, never by the training seed, and the test
split is only touched after training ends.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from msmtrec.benchmark.stats import cell_auc_cis
from msmtrec.benchmark.suite import DatasetEntry, ModelEntry, Suite, changed_settings, resolved_model_config
from msmtrec.data.pipeline import PreparedData, prepare_dataset
from msmtrec.errors import ConfigError
from msmtrec.models.base import complete_saved_config, registered_models
from msmtrec.tasks import kind_of

RESULT_COLUMNS = ("dataset", "model", "kind", "base_model", "seed", "scenario", "task", "metric", "value")
CELL_METRICS = ("auc", "gauc", "logloss", "rmse", "mae", "rows", "positives", "pred_mean", "label_mean")
CI_METRICS = ("auc_ci_low", "auc_ci_high")
"""95 % DeLong interval of each binary cell's test AUC (one run; the seed spread is separate)."""
RUN_METRICS = (
    "params",
    "flops_per_sample",
    "train_seconds",
    "samples_per_second",
    "inference_rows_per_second",
    "epochs",
    "valid_monitor",
    "best_epoch",
)
ALL = "all"
EXPLAIN_MODEL = "hef"
"""The model whose ``explain`` weights are averaged per scenario and plotted (the flagship)."""


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker process needs to execute one run (picklable)."""

    dataset: DatasetEntry
    entry: ModelEntry
    seed: int
    train: dict[str, Any]
    threads: int
    explain: bool

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.dataset.label, self.entry.name, self.seed)


@dataclass
class RunOutput:
    """One finished run: its ``results.csv`` rows and, for the flagship, its averaged explain weights."""

    spec: RunSpec
    rows: list[tuple]
    explain: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ data cache

_PREPARED: dict[tuple, PreparedData] = {}


def prepared(entry: DatasetEntry) -> PreparedData:
    """The dataset's splits, prepared once per process (every model and seed reuses the same tensors)."""
    key = (entry.name, json.dumps(entry.overrides, sort_keys=True, default=str), entry.sample)
    if key not in _PREPARED:
        _PREPARED[key] = prepare_dataset(entry.name, seed=0, sample=entry.sample, overrides=entry.overrides or None)
    return _PREPARED[key]


# -------------------------------------------------------------------------------------------- one run


def execute(spec: RunSpec) -> RunOutput:
    """Train, test and time one (dataset, variant, seed); the unit of work of the benchmark."""
    from msmtrec.benchmark import peer
    from msmtrec.models.base import build_model
    from msmtrec.training import TrainConfig, Trainer
    from msmtrec.training.metrics import compute_metrics
    from msmtrec.training.trainer import seed_everything

    torch.set_num_threads(spec.threads)
    data = prepared(spec.dataset)
    schema, splits = data.schema, data.splits
    entry = spec.entry
    seed_everything(spec.seed)
    if entry.kind == "peer":
        schema, idx = peer.binary_view(schema)
        splits = peer.binary_splits(splits, idx)
        model = peer.build_peer(schema, entry.model, entry.config, entry.options)
    else:
        model = build_model(entry.model, schema, entry.config)
    quiet = {"progress": False, "log_epochs": False, "device": "cpu", "num_threads": spec.threads}
    train_cfg = TrainConfig(**{**spec.train, **quiet})
    trainer = Trainer(train_cfg, seed=spec.seed)
    fit = trainer.fit(model, splits)
    preds = trainer.predict(model, splits["test"])
    metrics = compute_metrics(schema, preds, getattr(model, "output_mapping", None))
    cis = cell_auc_cis(schema, preds, ALL)
    infer = inference_rows_per_second(model, splits["test"], trainer.config.eval_batch_size)

    base = (spec.dataset.label, entry.name, entry.kind, entry.model, spec.seed)
    rows: list[tuple] = []
    sections = [*((s, metrics["by_scenario"][s]) for s in schema.scenarios), (ALL, metrics["overall"])]
    for scen, cells in sections:
        for task in schema.task_names:
            cell = cells[task]
            for m in CELL_METRICS:
                v = cell.get(m)
                if v is not None and not (isinstance(v, float) and math.isnan(v)):
                    rows.append((*base, scen, task, m, float(v)))
            if (scen, task) in cis:
                rows += [(*base, scen, task, m, v) for m, v in zip(CI_METRICS, cis[(scen, task)], strict=True)]
    run_values = {
        "params": model.num_parameters(),
        "flops_per_sample": model.flops_per_sample(),
        "train_seconds": fit.train_seconds,
        "samples_per_second": fit.samples_per_second,
        "inference_rows_per_second": infer,
        "epochs": fit.epochs,
        # The validation monitor of the kept epoch (higher is better): what early stopping and the tuner saw,
        # so an ablation's validation Δ can be read next to its test Δ (decisions are made on the former).
        "valid_monitor": fit.best_score,
        # 0-based epochs (fractional with evals_per_epoch > 1); last: done_runs() reads it as the completion marker
        "best_epoch": fit.kept_at - 1,
    }
    rows += [(*base, ALL, ALL, k, float(v)) for k, v in run_values.items()]
    explained = explain_by_scenario(model, splits["test"], trainer.config.eval_batch_size) if spec.explain else None
    return RunOutput(spec, rows, explained)


@torch.no_grad()
def inference_rows_per_second(model: torch.nn.Module, dataset: Any, batch_size: int, repeats: int = 3) -> float:
    """Test rows scored per second in eval mode (best of ``repeats`` passes after one warm-up pass).

    The best pass is reported because the machine is shared: the minimum time is the least disturbed one.
    """
    was = model.training
    model.eval()
    inputs = [{k: v for k, v in b.items() if k != "labels"} for b in dataset.batches(batch_size)]
    best = math.inf
    try:
        for i in range(repeats + 1):
            t = time.perf_counter()
            for b in inputs:
                model(b)
            if i:
                best = min(best, time.perf_counter() - t)
    finally:
        model.train(was)
    return len(dataset) / best if best > 0 else 0.0


@torch.no_grad()
def explain_by_scenario(model: Any, dataset: Any, batch_size: int) -> dict[str, Any] | None:
    """``explain`` weights averaged over the test rows of each scenario (attention: over all rows and heads).

    Sums are accumulated per scenario with ``index_add_`` batch by batch, so memory stays at one batch
    whatever the split size.
    """
    schema = model.schema
    n_scen = schema.num_scenarios
    sums: dict[str, torch.Tensor] = {}
    counts = torch.zeros(n_scen, dtype=torch.float64)
    att_sum: torch.Tensor | None = None
    rows = 0
    was = model.training
    model.eval()
    try:
        for b in dataset.batches(batch_size):
            feed = {k: v for k, v in b.items() if k != "labels"}
            out = model.explain(feed)
            if not out:
                return None
            scen = b["scenario"]
            counts += torch.bincount(scen, minlength=n_scen).double()
            for k, v in out.items():
                if k == "attention":
                    a = v.double().mean(dim=1).sum(dim=0)
                    att_sum = a if att_sum is None else att_sum + a
                    continue
                acc = sums.setdefault(k, torch.zeros(n_scen, v.shape[1], dtype=torch.float64))
                acc.index_add_(0, scen, v.double())
            rows += len(scen)
    finally:
        model.train(was)
    denom = counts.clamp(min=1).unsqueeze(1)
    return {
        "scenarios": list(schema.scenarios),
        "tasks": schema.task_names,
        "fields": schema.field_names(),
        "rows_per_scenario": counts.long().tolist(),
        "weights": {k: (v / denom).tolist() for k, v in sums.items()},
        "attention": (att_sum / max(rows, 1)).tolist() if att_sum is not None else None,
    }


# ----------------------------------------------------------------------------------------- the suite


def plan_runs(suite: Suite, seeds: Iterable[int], threads: int) -> tuple[list[RunSpec], list[str]]:
    """Every run of the suite, seed-major (so a partial benchmark holds whole seeds), plus skip notes."""
    from msmtrec.benchmark.peer import rechub_available

    notes: list[str] = []
    entries = list(suite.entries)
    if any(e.kind == "peer" for e in entries) and not rechub_available():
        skipped = [e.name for e in entries if e.kind == "peer"]
        notes.append(f"torch-rechub is not installed, so the peer rows {skipped} were not run "
                     "(pip install -c constraints.txt 'msmtrec[bench]').")
        entries = [e for e in entries if e.kind != "peer"]
    runs = []
    for ds in suite.datasets:
        for seed in seeds:
            for e in entries:
                explain = e.kind == "model" and e.model == EXPLAIN_MODEL
                runs.append(RunSpec(ds, e, seed, {**suite.train, **e.train}, threads, explain))
    return runs, notes


def peer_applicable(spec: RunSpec) -> str | None:
    """Why a peer run cannot apply to this dataset (ESMM without a funnel), or None when it can."""
    if spec.entry.kind != "peer" or spec.entry.model != "esmm":
        return None
    schema = prepared(spec.dataset).schema
    binary = [t for t in schema.tasks if kind_of(t).probability]
    if len(binary) != 2 or not any(t.inside for t in binary):
        return (f"{spec.entry.name} skipped on {spec.dataset.label}: rechub's ESMM needs a two-task click → "
                f"conversion funnel, and the binary tasks are {[t.name for t in binary]}.")
    return None


def done_runs(path: Path) -> set[tuple[str, str, int]]:
    """(dataset, model, seed) triples that finished: their ``best_epoch`` row, the last one a run writes, exists.

    A run's rows go out in one flushed write, so a run cut short by a kill is either absent or complete
    up to that marker; an incomplete run is simply redone (its partial rows are dropped by the reports).
    """
    if not path.exists():
        return set()
    out = set()
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            if r["metric"] == "best_epoch" and r["task"] == ALL:
                out.add((r["dataset"], r["model"], int(r["seed"])))
    return out


def suite_record(suite: Suite) -> dict[str, Any]:
    """What must not change between a benchmark and its resumption (budget, data, each entry's config)."""
    return {
        "name": suite.name,
        "origin": suite.origin,
        "train": suite.train,
        "budget": suite.budget,
        # ``alias`` only when set, so folders written before it existed still resume
        "datasets": [{k: v for k, v in dataclasses.asdict(d).items() if k != "alias" or v} for d in suite.datasets],
        "entries": {e.name: {**dataclasses.asdict(e), "resolved": resolved_config(e)} for e in suite.entries},
    }


def resolved_config(entry: ModelEntry) -> dict[str, Any] | None:
    """The entry's model config with defaults (:func:`~msmtrec.benchmark.suite.resolved_model_config`), so a
    changed model default is caught on resume; peers build another library's model and have none."""
    return None if entry.kind == "peer" else resolved_model_config(entry.model, entry.config)


def check_resume(out: Path, record: dict[str, Any], names: Iterable[str] | None = None) -> None:
    """Refuse to mix results produced under a different budget into one results folder.

    The schedule, budget and data must match; a variant's config must match only where that variant already
    has finished runs in the folder (``names``: the variants about to run, default all) — an entry recorded
    by an earlier command but never run may change (the tuned mode fills a folder model by model).
    """
    path = out / "suite.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    for key in ("train", "budget", "datasets"):
        if json.loads(json.dumps(old.get(key), default=str)) != json.loads(json.dumps(record[key], default=str)):
            raise ConfigError(
                f"{out} holds results of a run with a different {key!r} (quick vs full, or an edited suite); "
                "use another --out or delete that folder"
            )
    ran = {m for _, m, _ in done_runs(out / "results.csv")}
    wanted = set(record["entries"]) if names is None else set(names)
    for name, entry in record["entries"].items():
        prev = old.get("entries", {}).get(name)
        if name not in wanted or name not in ran or prev is None:
            continue
        changed = _changed_settings(prev, entry)
        if changed:
            raise ConfigError(
                f"{out}: variant {name!r} changed since its results were written ({changed}); rerun it with "
                f"--rerun {name} (drops its results) or use another --out"
            )


def _changed_settings(prev: dict[str, Any], entry: dict[str, Any]) -> str:
    """What differs between a recorded entry and the one about to run ('' when nothing).

    The resolved configs are compared when both records have one (folders written before it was recorded
    have not), so a changed model default is caught as well as a changed suite setting."""
    plain = changed_settings({k: v for k, v in prev.items() if k != "resolved"},
                             {k: v for k, v in entry.items() if k != "resolved"})
    if plain:
        return "recorded " + plain
    old, new = prev.get("resolved"), entry.get("resolved")
    if old is not None and entry.get("kind") != "peer" and entry.get("model") in registered_models():
        # a setting added to the model since (ADDED_LATER) was trained with its recorded value, not a change
        old = complete_saved_config(entry["model"], old)
    diffs = changed_settings(old, new) if old is not None and new is not None else ""
    return "model config " + diffs if diffs else ""


def forget(out: Path, names: Iterable[str]) -> int:
    """Drop every trace of the variants ``names`` from a results folder, so the next command runs (and, in
    tuned mode, tunes) them again: their rows in ``results.csv``, explain files, notes, ``suite.json``
    entries, tuning studies (``tune/NAME``) and ``tuned.json`` records. Returns the number of rows dropped.

    Why a command and not hand edits: after a model changes (a new default), its old runs must go while
    every other model's stay, and a half-edited folder (rows gone, study kept) would resume the old config.
    """
    gone = set(names)
    results = out / "results.csv"
    dropped = 0
    if results.exists():
        with results.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = list(reader)
        col = header.index("model") if header else 1
        kept = [r for r in rows if r[col] not in gone]
        dropped = len(rows) - len(kept)
        tmp = results.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            if header:
                w.writerow(header)
            w.writerows(kept)
        tmp.replace(results)
    for path in (out / "explain").glob("*__*__seed*.json"):  # DATASET__VARIANT__seedN.json
        if path.stem.split("__")[1] in gone:
            path.unlink()
    for name in gone:
        if (out / "tune" / name).is_dir():
            shutil.rmtree(out / "tune" / name)
    for file, key in (("suite.json", "entries"), ("tuned.json", "models")):
        path = out / file
        if path.exists():
            data = json.loads(path.read_text())
            data[key] = {k: v for k, v in data.get(key, {}).items() if k not in gone}
            if "order" in data:  # else the reports keep listing a variant that has no rows left
                data["order"] = [n for n in data["order"] if n not in gone]
            path.write_text(json.dumps(data, indent=1, default=str))
    notes = out / "notes.json"
    if notes.exists():
        kept_notes = [n for n in json.loads(notes.read_text()) if not any(f"/{g}/" in n for g in gone)]
        notes.write_text(json.dumps(kept_notes, indent=1))
    return dropped


def merged_record(out: Path, record: dict[str, Any], names: Iterable[str] | None = None) -> dict[str, Any]:
    """What ``suite.json`` should hold after this command: the earlier record's entries, updated with the
    entries about to run (``names``, default all), and ``order``, every variant name in suite order.

    Why: a folder can be filled by several commands (``--models`` subsets, the tuned mode model by model);
    the reports take their model list and kinds from ``suite.json``, so overwriting it with the last
    command's entries hid every other model's results, and recording entries that did not run would
    publish configs nobody trained.
    """
    path = out / "suite.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    wanted = set(record["entries"]) if names is None else set(names)
    entries = dict(old.get("entries", {}))
    entries.update({n: e for n, e in record["entries"].items() if n in wanted})
    earlier = old.get("order") or list(old.get("entries", {}))
    order = list(record["entries"]) + [n for n in earlier if n not in record["entries"]]
    return {**record, "entries": entries, "order": order}


def merged_machine(out: Path, info: dict[str, Any]) -> dict[str, Any]:
    """``info`` with ``commands``: every distinct command that wrote into ``out``, oldest first."""
    commands: list[str] = []
    path = out / "machine.json"
    if path.exists():
        old = json.loads(path.read_text())
        commands = list(old.get("commands") or ([old["command"]] if old.get("command") else []))
    if info.get("command") and info["command"] not in commands:
        commands.append(info["command"])
    return {**info, "commands": commands}


def machine_info(threads: int, jobs: int) -> dict[str, Any]:
    """Where the numbers come from, written beside them (timings mean nothing without it)."""
    from msmtrec.benchmark.peer import rechub_version

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_rechub": rechub_version(),
        "threads_per_run": threads,
        "parallel_runs": jobs,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def run_suite(
    suite: Suite,
    out: Path,
    seeds: int,
    jobs: int = 1,
    threads: int = 1,
    progress: bool = True,
    command: str = "",
    only: Iterable[str] | None = None,
) -> RunSummary:
    """Execute every pending run of ``suite`` into ``out``; a failed run is noted and the others go on.

    ``only`` restricts the runs to those variant names; ``suite.json`` still records every entry of the
    suite (and keeps those of earlier commands), so the reports show everything the folder holds.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if jobs < 1 or threads < 1:
        raise ConfigError("--jobs and --threads must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    record = suite_record(suite)
    names = list(only) if only is not None else None
    check_resume(out, record, names)
    (out / "suite.json").write_text(json.dumps(merged_record(out, record, names), indent=1, default=str))
    info = machine_info(threads, jobs)
    info["command"] = command
    info["seeds"] = seeds
    (out / "machine.json").write_text(json.dumps(merged_machine(out, info), indent=1))

    results = out / "results.csv"
    runs, notes = plan_runs(suite, range(seeds), threads)
    if names is not None:
        runs = [r for r in runs if r.entry.name in set(names)]
    finished = done_runs(results)
    notes = merged_notes(out, notes, finished)
    pending: list[RunSpec] = []
    for r in runs:
        if r.key in finished:
            continue
        why = peer_applicable(r)
        if why:
            if why not in notes:
                notes.append(why)
            continue
        pending.append(r)
    (out / "notes.json").write_text(json.dumps(notes, indent=1))
    explain_dir = out / "explain"

    if not results.exists():
        append_rows(results, [RESULT_COLUMNS])
    bar = tqdm(total=len(runs), initial=len(runs) - len(pending), disable=not progress, unit="run",
               desc=f"benchmark {suite.name}", dynamic_ncols=True)

    def record_output(res: RunOutput) -> None:
        append_rows(results, res.rows)
        if res.explain is not None:
            explain_dir.mkdir(exist_ok=True)
            ds, name, seed = res.spec.key
            (explain_dir / f"{ds}__{name}__seed{seed}.json").write_text(json.dumps(res.explain))
        auc = next((r[-1] for r in res.rows if r[5] == ALL and r[7] == "auc"), None)
        bar.set_postfix_str(f"{res.spec.dataset.label}/{res.spec.entry.name}/seed{res.spec.seed}"
                            + (f" auc={auc:.4f}" if auc is not None else ""))
        bar.update(1)

    def record_failure(spec: RunSpec, error: BaseException) -> None:
        # One broken run must not throw away the hours the others take: note it, go on, fail at the end.
        msg = f"{spec.dataset.label}/{spec.entry.name}/seed{spec.seed} failed: {type(error).__name__}: {error}"
        failures.append(msg)
        notes.append(msg)
        (out / "notes.json").write_text(json.dumps(notes, indent=1))
        tqdm.write(f"error: {msg}", file=sys.stderr)
        bar.update(1)

    failures: list[str] = []
    try:
        if jobs == 1:
            for spec in pending:
                bar.set_description(f"{spec.dataset.label}/{spec.entry.name}/seed{spec.seed}")
                try:
                    res = execute(spec)
                except Exception as e:  # noqa: BLE001 - reported in notes.json and at the end
                    record_failure(spec, e)
                    continue
                record_output(res)
        else:
            ctx = get_context("spawn")  # fork after torch started its thread pool can deadlock
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                futures = {pool.submit(execute, spec): spec for spec in pending}
                for fut in as_completed(futures):
                    try:
                        res = fut.result()
                    except Exception as e:  # noqa: BLE001 - reported in notes.json and at the end
                        record_failure(futures[fut], e)
                        continue
                    record_output(res)
    finally:
        bar.close()
    return RunSummary(results, len(pending) - len(failures), failures)


def append_rows(path: Path, rows: Iterable[Iterable[Any]]) -> None:
    """Append CSV rows to ``path`` in one ``write`` on an ``O_APPEND`` descriptor.

    Why one write: two benchmark commands may fill one results folder at once (say the slow flagship's
    seeds beside the other models'). A buffered writer flushes a run's rows in several chunks, so the other
    process's rows could land between two chunks, splitting a line. A single append is placed whole at the
    end of the file; the run's rows stay contiguous and every line intact.
    """
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    data = buf.getvalue().encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:  # a short write (disk full, signal) must not silently drop the rest
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


def merged_notes(out: Path, notes: list[str], finished: set[tuple[str, str, int]]) -> list[str]:
    """Earlier notes of ``out`` (minus failures of runs that have since finished) followed by new ones."""
    path = out / "notes.json"
    old = json.loads(path.read_text()) if path.exists() else []
    done = {f"{d}/{m}/seed{s} failed" for d, m, s in finished}
    kept = [n for n in old if not any(n.startswith(k) for k in done)]
    return kept + [n for n in notes if n not in kept]


@dataclass
class RunSummary:
    """What :func:`run_suite` did: where the results are, how many runs it added, which ones failed."""

    results: Path
    completed: int
    failures: list[str]
