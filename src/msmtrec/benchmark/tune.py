"""``msmtrec tune``: Optuna search over a model's declared space, on the validation split only.

One study per (dataset, model variant), stored in SQLite (``OUT/study.db``) so a killed study resumes: the
same command counts the finished trials (complete, pruned or failed) and runs only the missing ones; a trial
that was running when the process died is marked failed and does not count.

Protocol, the same for every model so the tuned benchmark is fair:

* the search space is the model's own :meth:`~msmtrec.models.base.MultiTaskModel.search_space` (declared next
  to its config), with ``model.embed_dim`` capped by the suite's budget;
* TPE sampler seeded with ``seed``; the first trial is the suite's hand-set config (so the tuned config is
  never worse on validation than the untuned one), the rest are sampled;
* each epoch's validation monitor (the suite's, ``weighted_auc`` by default) is reported to a median pruner,
  which stops a trial whose score is below the median of earlier trials at the same epoch;
* the trial value is the best validation monitor of the run (the epoch early stopping keeps);
* only the ``train`` and ``valid`` splits are handed to the trainer: the test split is never read.

Outputs in ``OUT``: ``study.db``, ``tune.json`` (what was tuned, against what), ``trials.csv``, ``best.yaml``
(a config ``msmtrec train --config best.yaml`` accepts), ``history.png`` and ``importances.png`` (Optuna's
matplotlib plots).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from msmtrec.benchmark.suite import (
    SUITE_MONITOR,
    DatasetEntry,
    Suite,
    changed_settings,
    load_suite,
    resolved_model_config,
)
from msmtrec.config import build_config
from msmtrec.errors import ConfigError
from msmtrec.models.base import Param, complete_saved_config, model_class, registered_models

SPEC_TRAIN = {"max_epochs": 50, "patience": 3, "monitor": SUITE_MONITOR}
"""The schedule used when tuning against a bare dataset spec (a suite brings its own ``train:``)."""
QUICK = {"sample": 3000, "max_epochs": 2}
STUDY_FILE = "study.db"
BEST_FILE = "best.yaml"


@dataclass
class TuneTarget:
    """What one study tunes: a model on a dataset, from a base config, under a training schedule."""

    dataset: DatasetEntry
    model: str
    """Registry name of the model."""
    variant: str
    """The suite's variant name (the model name when tuning against a spec)."""
    base_config: dict[str, Any]
    """Model overrides before tuning (the suite entry's config, budget included)."""
    train: dict[str, Any]
    """TrainConfig overrides before tuning (the suite's ``train:``)."""
    embed_cap: int | None = None
    """The suite budget's ``embed_dim``: the tuner searches embedding sizes up to it."""
    source: str = ""

    def space(self) -> dict[str, Param]:
        """The model's declared space, restricted to settings this model and trainer have."""
        from msmtrec.training.config import TrainConfig

        model_fields = {f.name for f in dataclasses.fields(model_class(self.model).Config)}
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        out: dict[str, Param] = {}
        for key, param in model_class(self.model).search_space().items():
            section, _, name = key.partition(".")
            if section not in ("model", "train"):
                raise ConfigError(f"{self.model}.search_space(): key {key!r} must start with model. or train.")
            if name not in (model_fields if section == "model" else train_fields):
                continue  # e.g. the default tower_dims for a model without towers
            if key == "model.embed_dim" and self.embed_cap and param.kind == "choice":
                param = Param.choice(*(c for c in param.choices if c <= self.embed_cap))
            out[key] = param
        return out

    def record(self) -> dict[str, Any]:
        """What must not change when a study resumes (else the trials are not comparable)."""
        space = {k: dataclasses.asdict(p) for k, p in self.space().items()}
        return json.loads(json.dumps({
            # ``alias`` only when set, so studies started before it existed still resume
            "dataset": {k: v for k, v in dataclasses.asdict(self.dataset).items() if k != "alias" or v},
            "model": self.model, "variant": self.variant,
            "base_config": self.base_config, "train": self.train, "space": space,
            "resolved_base": self.resolved_base(),
        }, default=str))

    def resolved_base(self) -> dict[str, Any]:
        """Every field of the model's config for the base (defaults included): the hand-set trial and every
        setting the search does not touch. Recorded so a study does not resume across a change of the
        model's defaults (its finished trials were trained with the old ones)."""
        return resolved_model_config(self.model, self.base_config)


def resolve_target(
    suite_or_spec: str | Path | Suite, model: str, quick: bool = False, dataset: str | None = None,
    sample: int | None = None,
) -> TuneTarget:
    """A suite (its dataset, schedule, budget and the entry named ``model``) or a dataset spec (defaults)."""
    suite = suite_or_spec if isinstance(suite_or_spec, Suite) else _maybe_suite(suite_or_spec)
    if suite is None:
        if model not in registered_models():
            raise ConfigError(f"--model: unknown model {model!r}; registered models: {registered_models()}")
        entry = DatasetEntry(str(suite_or_spec))
        target = TuneTarget(entry, model, model, {}, dict(SPEC_TRAIN), None, str(suite_or_spec))
    else:
        target = _suite_target(suite, model, dataset)
    if quick:
        target.dataset = dataclasses.replace(target.dataset, sample=target.dataset.sample or QUICK["sample"])
        target.train = {**target.train, "max_epochs": min(int(target.train.get("max_epochs", 50)),
                                                          QUICK["max_epochs"])}
    if sample is not None:
        target.dataset = dataclasses.replace(target.dataset, sample=sample)
    return target


def _maybe_suite(arg: str | Path) -> Suite | None:
    """The suite ``arg`` names, or None when it is a dataset spec (a suite YAML lists ``datasets:``)."""
    p = Path(str(arg))
    if p.suffix in (".yaml", ".yml") and p.is_file():
        raw = yaml.safe_load(p.read_text()) or {}
        return load_suite(p) if isinstance(raw, dict) and "datasets" in raw else None
    try:
        return load_suite(str(arg))
    except ConfigError as e:
        if "unknown suite" in str(e):
            return None
        raise


def _suite_target(suite: Suite, model: str, dataset: str | None) -> TuneTarget:
    ds = suite.datasets[0]
    if dataset is not None:
        found = [d for d in suite.datasets if d.label == dataset]
        if not found:
            raise ConfigError(f"--dataset {dataset!r}: the suite has {[d.label for d in suite.datasets]}")
        ds = found[0]
    elif len(suite.datasets) > 1:
        raise ConfigError(f"{suite.origin} lists several datasets; pick one with --dataset")
    names = {e.name: e for e in suite.entries if e.kind == "model"}
    if model in names:
        entry = names[model]
        base, reg = dict(entry.config), entry.model
    elif model in registered_models():
        fields = {f.name for f in dataclasses.fields(model_class(model).Config)}
        base, reg = {k: v for k, v in suite.budget.items() if k in fields}, model
    else:
        raise ConfigError(f"--model {model!r}: not a model entry of {suite.name} ({sorted(names)}) "
                          f"nor a registered model ({registered_models()})")
    return TuneTarget(ds, reg, model, base, dict(suite.train), suite.budget.get("embed_dim"), suite.origin)


# ------------------------------------------------------------------------------------------ the search


def _encode(value: Any) -> Any:
    """Optuna stores categorical choices as plain scalars: a tuple of widths becomes ``"128-64"``."""
    if isinstance(value, (tuple, list)):
        return "-".join(str(v) for v in value)
    return value


def suggest(trial: Any, space: dict[str, Param]) -> dict[str, Any]:
    """One value per key of ``space`` from an Optuna trial, decoded back to config values."""
    out: dict[str, Any] = {}
    for key, p in space.items():
        if p.kind == "float":
            out[key] = trial.suggest_float(key, p.low, p.high, log=p.log)
        elif p.kind == "int":
            out[key] = trial.suggest_int(key, int(p.low), int(p.high))
        elif p.kind == "choice":
            decode = {_encode(c): c for c in p.choices}
            out[key] = decode[trial.suggest_categorical(key, list(decode))]
        else:
            raise ConfigError(f"search space {key}: unknown kind {p.kind!r} (float, int or choice)")
    return out


def base_params(target: TuneTarget, space: dict[str, Param]) -> dict[str, Any]:
    """The hand-set config expressed in the space (the study's first trial); keys it cannot express are left
    to the sampler, and a real value outside the range (weight decay 0 on a log scale) is clipped."""
    from msmtrec.training.config import TrainConfig

    model_cfg = dataclasses.asdict(build_config(model_class(target.model).Config, target.base_config))
    train_cfg = dataclasses.asdict(build_config(TrainConfig, target.train))
    out: dict[str, Any] = {}
    for key, p in space.items():
        section, _, name = key.partition(".")
        value = (model_cfg if section == "model" else train_cfg).get(name)
        if p.kind == "choice":
            enc = _encode(value)
            if enc in {_encode(c) for c in p.choices}:
                out[key] = enc
        elif value is not None:
            out[key] = min(max(float(value), p.low), p.high) if p.kind == "float" else int(value)
    return out


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{"model.x": 1, "train.lr": 0.01}`` → (model overrides, train overrides)."""
    model = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("model.")}
    train = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("train.")}
    return model, train


@dataclass
class TuneResult:
    """A finished (or resumed-and-finished) study."""

    out: Path
    best_value: float
    best_params: dict[str, Any]
    model_config: dict[str, Any]
    """Model overrides of the best trial (base config updated with the tuned values)."""
    train: dict[str, Any]
    """Train overrides of the best trial."""
    trials: int
    ran: int
    """Trials run by this call (0 when the study was already complete)."""
    top: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def tune(
    target: TuneTarget, trials: int, out: Path, seed: int = 0, threads: int = 1, command: str = "",
    progress: bool = False,
) -> TuneResult:
    """Run the study until it holds ``trials`` finished trials, then write the outputs."""
    import optuna
    import torch

    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    out.mkdir(parents=True, exist_ok=True)
    record = target.record()
    rec_path = out / "tune.json"
    if rec_path.exists():
        old = json.loads(rec_path.read_text())
        for key in ("dataset", "model", "base_config", "train", "space"):
            if old.get(key) != record.get(key):
                raise ConfigError(f"{out} holds a study with a different {key!r}; use another --out or delete it")
        recorded = old.get("resolved_base")
        if recorded is not None:  # a setting added to the model since was trained with its ADDED_LATER value
            recorded = complete_saved_config(target.model, recorded)
        changed = changed_settings(recorded, record["resolved_base"]) if recorded is not None else ""
        if changed:  # studies recorded before ``resolved_base`` existed have none and resume as before
            raise ConfigError(f"{out} holds a study of {target.model} with other defaults ({changed}); its trials "
                              "trained another model: use another --out, delete it, or `benchmark --rerun`")
    rec_path.write_text(json.dumps({**record, "command": command, "seed": seed}, indent=1))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = target.space()
    n_startup = max(2, min(10, trials // 3))
    study = optuna.create_study(
        study_name=f"{target.dataset.label}-{target.variant}",
        storage=f"sqlite:///{out / STUDY_FILE}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=n_startup, n_warmup_steps=2),
    )
    _fail_stale(study)
    if not study.trials:
        study.enqueue_trial(base_params(target, space), user_attrs={"origin": "suite config"})
    remaining = trials - len(_counted(study))
    torch.set_num_threads(threads)
    ran = 0
    if remaining > 0:
        objective = _objective(target, space, seed)
        study.optimize(objective, n_trials=remaining, catch=(ConfigError,), show_progress_bar=progress)
        ran = remaining
    return _finish(study, target, out, trials, ran, seed, command)


def _counted(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [t for t in study.trials if t.state in done and not t.user_attrs.get("killed")]


def _fail_stale(study: Any) -> None:
    """Trials left RUNNING by a killed process: mark them failed (and not counted) so they are redone."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "killed", True)
        study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)


def _objective(target: TuneTarget, space: dict[str, Param], seed: int) -> Any:
    import optuna

    from msmtrec.benchmark.runner import prepared
    from msmtrec.models.base import build_model
    from msmtrec.training import TrainConfig, Trainer
    from msmtrec.training.trainer import seed_everything

    data = prepared(target.dataset)
    # Only train and valid go to the trainer: the test split is never read while tuning.
    splits = {"train": data.splits["train"], "valid": data.splits["valid"]}

    def objective(trial: optuna.Trial) -> float:
        model_over, train_over = split_params(suggest(trial, space))
        seed_everything(seed)
        model = build_model(target.model, data.schema, {**target.base_config, **model_over})
        cfg = build_config(TrainConfig, {**target.train, **train_over, "progress": False, "device": "cpu"},
                           where="train")
        trainer = Trainer(cfg, seed=seed)

        def on_epoch(epoch: int, score: float) -> None:
            if math.isfinite(score):
                trial.report(score, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch + 1}: {score:.4f} below the median")

        fit = trainer.fit(model, splits, on_epoch=on_epoch)
        trial.set_user_attr("best_epoch", fit.kept_at - 1)  # 0-based epochs, as the report reads it
        trial.set_user_attr("epochs", fit.epochs)
        trial.set_user_attr("params", model.num_parameters())
        trial.set_user_attr("train_seconds", round(fit.train_seconds, 2))
        return fit.best_score

    return objective


# ---------------------------------------------------------------------------------------------- outputs


def _finish(study: Any, target: TuneTarget, out: Path, trials: int, ran: int, seed: int, command: str) -> TuneResult:
    from optuna.trial import TrialState

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE and math.isfinite(t.value)]
    if not complete:
        raise ConfigError(f"{out}: no trial completed (every one failed or was pruned); see {out / 'trials.csv'}")
    files = [_write_trials(study, out)]
    best = max(complete, key=lambda t: t.value)
    space = target.space()
    decoded = _decode(best.params, space)
    model_over, train_over = split_params(decoded)
    model_config = {**target.base_config, **model_over}
    train = {**target.train, **train_over}
    files.append(write_best_yaml(out / BEST_FILE, target, model_config, train, best, len(complete), seed, command))
    files += write_plots(study, out)
    top = [
        {"trial": t.number, "value": t.value, "best_epoch": t.user_attrs.get("best_epoch"),
         "origin": t.user_attrs.get("origin", "sampled"), "params": _decode(t.params, space)}
        for t in sorted(complete, key=lambda t: -t.value)[:5]
    ]
    return TuneResult(out, best.value, decoded, model_config, train, len(_counted(study)), ran, top, files)


def _decode(params: dict[str, Any], space: dict[str, Param]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        p = space.get(k)
        if p is not None and p.kind == "choice":
            v = {_encode(c): c for c in p.choices}.get(v, v)
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _write_trials(study: Any, out: Path) -> Path:
    path = out / "trials.csv"
    study.trials_dataframe().to_csv(path, index=False)
    return path


def write_best_yaml(
    path: Path, target: TuneTarget, model_config: dict[str, Any], train: dict[str, Any], best: Any,
    n_complete: int, seed: int, command: str,
) -> Path:
    """The best trial as a ``msmtrec train --config`` file (fully resolved model config, tuned train keys)."""
    cfg = build_config(model_class(target.model).Config, model_config, where=f"model {target.model}")
    model = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    body = {
        "model_name": target.model,
        "data": target.dataset.name,
        "sample": target.dataset.sample,
        "seed": seed,
        "model": model,
        "train": {k: (list(v) if isinstance(v, tuple) else v) for k, v in train.items()},
    }
    notes = [
        f"Best of {n_complete} completed trials (trial {best.number}): validation {train.get('monitor', 'auto')} "
        f"{best.value:.4f}, best epoch {float(best.user_attrs.get('best_epoch', -1)) + 1:g}.",
    ]
    if command:
        notes.insert(0, f"Written by: {command}")
    if target.dataset.overrides:
        notes.append(f"The suite reads {target.dataset.name} with spec overrides {target.dataset.overrides}; "
                     "train with a spec that has them.")
    notes.append(f"Use: msmtrec train --config {path.name} --out runs/NAME")
    path.write_text("".join(f"# {n}\n" for n in notes) + yaml.safe_dump(body, sort_keys=False))
    return path


def write_plots(study: Any, out: Path) -> list[Path]:
    """Optuna's own matplotlib plots: optimisation history and parameter importances (when computable)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
        plots = (("history.png", ovm.plot_optimization_history), ("importances.png", ovm.plot_param_importances))
        for name, fn in plots:
            try:
                ax = fn(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as e:
                (out / f"{name}.txt").write_text(f"not drawn: {type(e).__name__}: {e}\n")
                continue
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.tight_layout()
            fig.savefig(out / name, dpi=110)
            plt.close(fig)
            written.append(out / name)
    return written


def format_top(result: TuneResult) -> str:
    """The best trials as a plain table for the terminal."""
    from msmtrec.report import format_table

    rows = []
    for i, t in enumerate(result.top, 1):
        params = ", ".join(f"{k.split('.', 1)[1]}={_short(v)}" for k, v in t["params"].items())
        epoch = f"{float(t['best_epoch']) + 1:g}" if t["best_epoch"] is not None else "?"
        rows.append([i, t["trial"], f"{t['value']:.4f}", epoch, t["origin"], params])
    return format_table(["rank", "trial", "valid", "epoch", "origin", "params"], rows)


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return "-".join(map(str, v))
    return str(v)


# ------------------------------------------------------------------------------------ the tuned benchmark


def tuned_suite(
    suite: Suite, out: Path, trials: int, only: list[str] | None = None, threads: int = 1,
    log: Any = None,
) -> Suite:
    """The suite with every needed model entry replaced by its tuned config (``trials`` trials each, seed 0's
    validation split), ready for :func:`~msmtrec.benchmark.runner.run_suite` to run its seeds.

    Every model gets the same number of trials. Ablations take the tuned config of the model they ablate,
    with their switch applied on top (the variant differs from the tuned model by that switch only); peers
    copy the tuned sizes and learning rate of the entry they mirror (``like``). Studies live in
    ``out/tune/VARIANT`` and resume; ``out/tuned.json`` records what each study chose.
    """
    if len(suite.datasets) != 1:
        raise ConfigError(f"{suite.origin}: the tuned mode tunes per dataset; split the suite into one per dataset")
    by_name = {e.name: e for e in suite.entries}
    wanted = list(only) if only else [e.name for e in suite.entries]
    need: set[str] = set()
    for name in wanted:
        need.add(_tuned_source(suite, by_name[name]))
    results: dict[str, TuneResult] = {}
    for e in suite.entries:
        if e.name not in need:
            continue
        if log:
            log(f"tuning {e.name} ({trials} trials)")
        target = resolve_target(suite, e.name)
        results[e.name] = tune(target, trials, out / "tune" / e.name, seed=0, threads=threads,
                               command=f"tuned benchmark of {suite.name}")
    entries = []
    for e in suite.entries:
        src = results.get(_tuned_source(suite, e))
        if src is None:
            entries.append(e)
            continue
        train = {k: v for k, v in src.train.items() if suite.train.get(k) != v}
        if e.kind == "model":
            entries.append(dataclasses.replace(e, config=src.model_config, train=train))
        elif e.kind == "ablation":
            switch = {k: v for k, v in e.config.items() if k not in suite.budget}
            entries.append(dataclasses.replace(e, config={**src.model_config, **switch}, train=train))
        else:
            from msmtrec.benchmark.suite import config_dict_of

            like = dataclasses.replace(by_name[e.like], config=src.model_config)
            entries.append(dataclasses.replace(e, config=config_dict_of(like), train=train))
    record = {
        name: {"trials": r.trials, "best_valid": r.best_value, "params": r.best_params,
               "study": str((out / "tune" / name).relative_to(out))}
        for name, r in results.items()
    }
    path = out / "tuned.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, "trials_per_model": trials, "models": {**old.get("models", {}), **record}},
                               indent=1, default=str))
    return dataclasses.replace(suite, entries=entries)


def _tuned_source(suite: Suite, entry: Any) -> str:
    """The model entry whose study configures ``entry``: itself, the model it ablates, or the one it mirrors."""
    if entry.kind == "model":
        return entry.name
    if entry.kind == "peer":
        return entry.like
    for e in suite.entries:
        if e.kind == "model" and e.model == entry.model:
            return e.name
    raise ConfigError(f"{suite.origin}: ablation {entry.name!r} has no model entry of {entry.model!r} to tune")
