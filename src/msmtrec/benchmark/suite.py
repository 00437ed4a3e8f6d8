"""Benchmark suites: which models, ablations and peer implementations run on which datasets, with one budget.

A suite is a YAML file (the shipped ones live in ``benchmark/suites/``)::

    name: hillstrom
    datasets:                       # spec names or paths; overrides are dotted spec keys (like --set)
      - {name: hillstrom}
      - {name: synthetic, overrides: {files.path: synthetic/*.parquet}}
    train: {batch_size: 1024, max_epochs: 50, patience: 3, lr: 0.001}   # TrainConfig, the same for all
    budget: {embed_dim: 16, dropout: 0.1}                                # forced on every model
    models:                         # our models; `name` is the variant name, `model` the registry name
      - {name: mmoe, config: {num_experts: 4, expert_dims: [64]}}
      - all                         # every other registered model, default sizes (or `models: all`)
    ablations:                      # variants of one model with one switch changed
      - hef                         # the rows HEF declares (MultiTaskModel.ablations), or written out:
      - {name: mmoe-8, model: mmoe, switch: "num_experts: 8", config: {num_experts: 8}}
    peers:                          # other libraries' implementations of one of our model entries
      - {name: rechub-mmoe, library: torch_rechub, like: mmoe}
    quick: {sample: 3000, max_epochs: 1, seeds: 1, models: [single_task, mmoe, hef]}

Why the budget is a separate section: a fair comparison needs every model to see the same embedding size
and the same training schedule, so those are set once and a model entry that tries to change them is an
error rather than a silently unfair row. Peers take their sizes from the resolved config of the model entry
they mirror (``like``), so "same sizes" holds by construction instead of by copying numbers.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from msmtrec.config import build_config
from msmtrec.errors import ConfigError
from msmtrec.models.base import model_class, registered_models
from msmtrec.shipped import resolve_yaml, shipped_names

SUITE_PACKAGE = "msmtrec.benchmark"
PEER_LIBRARIES = ("torch_rechub",)
KINDS = ("model", "ablation", "peer")
SUITE_MONITOR = "weighted_auc"
ALL_MODELS = "all"
"""``models: all`` (or ``all`` as an item of the list): every registered model, explicit entries keeping their
configs."""


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of a suite: a spec name or path plus dotted spec overrides."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    sample: int | None = None
    alias: str | None = None
    """``label:`` in the suite: the table name of a spec read with overrides (census_kdd by class_of_worker)."""

    @property
    def label(self) -> str:
        """Short name used in file names and tables (the spec file's stem for a path, unless ``label:``)."""
        if self.alias:
            return self.alias
        return Path(self.name).stem if self.name.endswith((".yaml", ".yml")) else self.name


@dataclass(frozen=True)
class ModelEntry:
    """One row of the benchmark: a variant name, what builds it, and its resolved settings."""

    name: str
    kind: str
    """``model`` (ours), ``ablation`` (ours, one switch changed) or ``peer`` (another library)."""
    model: str
    """Registry name of our model; for a peer, the name of our model it mirrors (``mmoe``, ``ple``...)."""
    config: dict[str, Any] = field(default_factory=dict)
    """Overrides passed to ``build_model`` (budget included); for a peer, the mirrored entry's config."""
    switch: str = ""
    """For ablations: a short description of which switch was changed and how."""
    library: str = ""
    """For peers: the library providing the implementation."""
    like: str = ""
    """For peers: the variant name of our entry whose sizes the peer copies."""
    options: dict[str, Any] = field(default_factory=dict)
    """For peers: adapter options (``scenario_feature``)."""
    train: dict[str, Any] = field(default_factory=dict)
    """TrainConfig overrides of this entry on top of the suite's ``train:`` (set only by the tuned mode, whose
    learning rate and weight decay are per model)."""


@dataclass
class Suite:
    """A parsed, validated suite."""

    name: str
    origin: str
    datasets: list[DatasetEntry]
    train: dict[str, Any]
    budget: dict[str, Any]
    entries: list[ModelEntry]
    quick: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def entry(self, name: str) -> ModelEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise ConfigError(f"{self.origin}: no model entry named {name!r}")

    def with_train(self, overrides: dict[str, Any]) -> Suite:
        """This suite with ``train:`` settings changed for every model (``msmtrec benchmark --set
        train.KEY=VALUE``), values typed and checked as :class:`TrainConfig` fields.

        Why only ``train.``: the schedule is the same for every model, so changing it keeps the comparison fair;
        the budget and the model sizes are the suite's, and a changed one belongs in a suite file of its own.
        The results folder records the changed schedule, so a resume under another one is refused."""
        from msmtrec.training.config import TrainConfig

        bad = sorted(k for k in overrides if not k.startswith("train."))
        if bad:
            raise ConfigError(f"benchmark --set: {bad} — only train.KEY=VALUE can be set (the same for every "
                              "model); write a suite file to change the budget or a model's sizes")
        plain = {k.removeprefix("train."): v for k, v in overrides.items()}
        typed = build_config(TrainConfig, {**self.train, **plain}, where="benchmark --set")
        train = {**self.train, **{k: getattr(typed, k) for k in plain}}
        return dataclasses.replace(self, train=train)

    def quick_version(self) -> Suite:
        """The CI-sized suite: fewer rows and epochs, one seed, and the listed models only."""
        q = dict(self.quick)
        keep = q.get("models")
        entries = self.entries if not keep else [e for e in self.entries if e.name in set(keep)]
        # a peer or ablation needs nothing else at run time, so filtering cannot break references
        train = {**self.train, "max_epochs": int(q.get("max_epochs", 1))}
        sample = q.get("sample", 3000)
        datasets = [dataclasses.replace(d, sample=sample if sample is not None else d.sample) for d in self.datasets]
        return Suite(self.name, self.origin, datasets, train, self.budget, entries, q, self.description)


def _suite_folder() -> Path:
    return Path(str(resources.files(SUITE_PACKAGE) / "suites"))


def shipped_suites() -> list[str]:
    """Names of the suites shipped as package data."""
    return shipped_names(_suite_folder())


def resolve_suite_path(suite: str | Path) -> Path:
    """A shipped suite name (``hillstrom``) or a path to a YAML file."""
    return resolve_yaml(suite, _suite_folder(), "suite", ConfigError)


def load_suite(suite: str | Path) -> Suite:
    """Read and validate a suite; every model config is built once here so typos fail before any training."""
    path = resolve_suite_path(suite)
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    known = {"name", "description", "datasets", "train", "budget", "models", "ablations", "peers", "quick"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")

    datasets = [_dataset(d, f"{where}: datasets[{i}]") for i, d in enumerate(_list(raw, "datasets", where))]
    if not datasets:
        raise ConfigError(f"{where}: datasets must list at least one dataset")
    labels = [d.label for d in datasets]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: dataset names must be unique, got {labels}")

    train = dict(raw.get("train") or {})
    # Suites select epochs on positives-weighted validation AUC unless they say otherwise (see TrainConfig.monitor).
    train.setdefault("monitor", SUITE_MONITOR)
    from msmtrec.training.config import TrainConfig

    build_config(TrainConfig, train, where=f"{where}: train")
    budget = dict(raw.get("budget") or {})
    allowed_budget = {"embed_dim", "dropout"}
    if set(budget) - allowed_budget:
        raise ConfigError(f"{where}: budget may set only {sorted(allowed_budget)}, got {sorted(budget)}")

    entries: list[ModelEntry] = []
    model_items = raw.get("models")
    model_items = [ALL_MODELS] if model_items == ALL_MODELS else _list(raw, "models", where)
    for i, item in enumerate(model_items):
        if item != ALL_MODELS:
            entries.append(_model_entry(item, "model", budget, f"{where}: models[{i}]"))
    if ALL_MODELS in model_items:
        # Every registered model not listed explicitly joins with its default sizes (plus the budget), so a new
        # model appears in the benchmark without editing the suite.
        listed = {e.model for e in entries}
        for name in registered_models():
            if name not in listed:
                entries.append(_model_entry(name, "model", budget, f"{where}: models (all: {name})"))
    for i, item in enumerate(_list(raw, "ablations", where)):
        for row in _ablation_items(item, f"{where}: ablations[{i}]"):
            entries.append(_model_entry(row, "ablation", budget, f"{where}: ablations[{i}]"))
    ours = {e.name: e for e in entries}
    for i, item in enumerate(_list(raw, "peers", where)):
        entries.append(_peer_entry(item, ours, f"{where}: peers[{i}]"))
    names = [e.name for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{where}: variant names must be unique; repeated: {dup}")
    if not entries:
        raise ConfigError(f"{where}: the suite lists no models")

    quick = dict(raw.get("quick") or {})
    bad = sorted(set(quick) - {"sample", "max_epochs", "seeds", "models"})
    if bad:
        raise ConfigError(f"{where}: quick: unknown key(s) {bad}")
    missing = sorted(set(quick.get("models") or []) - set(names))
    if missing:
        raise ConfigError(f"{where}: quick.models names unknown variant(s) {missing}")
    return Suite(
        name=str(raw.get("name") or path.stem),
        origin=where,
        datasets=datasets,
        train=train,
        budget=budget,
        entries=entries,
        quick=quick,
        description=str(raw.get("description") or "").strip(),
    )


def _list(raw: dict, key: str, where: str) -> list:
    value = raw.get(key) or []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {key} must be a list")
    return value


def _dataset(item: Any, where: str) -> DatasetEntry:
    if isinstance(item, str):
        return DatasetEntry(item)
    if not isinstance(item, dict) or "name" not in item:
        raise ConfigError(f"{where}: expected a spec name or {{name: ..., overrides: {{...}}}}")
    bad = sorted(set(item) - {"name", "overrides", "sample", "label"})
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {bad}")
    overrides = item.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: overrides must be a mapping of dotted spec keys to values")
    sample = item.get("sample")
    alias = str(item["label"]) if item.get("label") else None
    return DatasetEntry(str(item["name"]), dict(overrides), int(sample) if sample is not None else None, alias)


def _ablation_items(item: Any, where: str) -> list[dict[str, Any]]:
    """An ``ablations:`` item: a row written out (``{name, model, switch, config}``) or a model's name, which
    stands for the rows that model declares (:meth:`~msmtrec.models.base.MultiTaskModel.ablations`)."""
    if not isinstance(item, str):
        return [item]
    if item not in registered_models():
        raise ConfigError(f"{where}: unknown model {item!r}; registered models: {registered_models()}")
    rows = model_class(item).ablations()
    if not rows:
        raise ConfigError(f"{where}: model {item!r} declares no ablations; write the rows out "
                          "({name, model, switch, config})")
    return [{"name": r.name, "model": item, "switch": r.switch, "config": dict(r.config)} for r in rows]


def _model_entry(item: Any, kind: str, budget: dict[str, Any], where: str) -> ModelEntry:
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise ConfigError(f"{where}: expected {{name: ..., model: ..., config: {{...}}}}")
    bad = sorted(set(item) - {"name", "model", "config", "switch"})
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {bad}")
    name = str(item["name"])
    model = str(item.get("model") or name)
    if model not in registered_models():
        raise ConfigError(f"{where}: unknown model {model!r}; registered models: {registered_models()}")
    config = dict(item.get("config") or {})
    clash = sorted(set(config) & set(budget))
    if clash:
        raise ConfigError(f"{where}: {clash} is part of the suite budget and the same for every model")
    fields = {f.name for f in dataclasses.fields(model_class(model).Config)}
    config.update({k: v for k, v in budget.items() if k in fields})
    resolved = build_config(model_class(model).Config, config, where=f"{where} ({model})")
    if kind == "ablation" and not item.get("switch"):
        raise ConfigError(f"{where}: an ablation needs `switch:` (what it changes, for the table)")
    del resolved  # built only to validate; runs rebuild it against each dataset's schema
    return ModelEntry(name=name, kind=kind, model=model, config=config, switch=str(item.get("switch") or ""))


def _peer_entry(item: Any, ours: dict[str, ModelEntry], where: str) -> ModelEntry:
    from msmtrec.benchmark.peer import PEER_MODELS

    if not isinstance(item, dict) or "name" not in item or "like" not in item:
        raise ConfigError(f"{where}: expected {{name: ..., library: torch_rechub, like: OUR_VARIANT}}")
    bad = sorted(set(item) - {"name", "library", "like", "scenario_feature"})
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {bad}")
    library = str(item.get("library") or "torch_rechub")
    if library not in PEER_LIBRARIES:
        raise ConfigError(f"{where}: library {library!r} is not one of {list(PEER_LIBRARIES)}")
    like = str(item["like"])
    if like not in ours:
        raise ConfigError(f"{where}: like: {like!r} is not a model entry of this suite ({sorted(ours)})")
    mirrored = ours[like]
    if mirrored.model not in PEER_MODELS:
        raise ConfigError(f"{where}: {library} has no counterpart of {mirrored.model!r}; it has {sorted(PEER_MODELS)}")
    cfg = config_dict_of(mirrored)
    return ModelEntry(
        name=str(item["name"]),
        kind="peer",
        model=mirrored.model,
        config=cfg,
        library=library,
        like=like,
        options={"scenario_feature": bool(item.get("scenario_feature", True))},
    )


def config_dict_of(entry: ModelEntry) -> dict[str, Any]:
    """The fully resolved config (defaults filled in) of one of our entries, as plain data."""
    return resolved_model_config(entry.model, entry.config)


def resolved_model_config(model: str, config: dict[str, Any]) -> dict[str, Any]:
    """Every field of ``model``'s config built from ``config`` (defaults filled in), as plain data.

    Recorded next to benchmark results and tuning studies so a change of a model's *defaults* is seen on
    resume: the suite names only the settings it overrides."""
    cfg = build_config(model_class(model).Config, dict(config), where=f"model {model}")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def changed_settings(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``key: old → new`` for every key whose value differs ('' when none); values compared as JSON."""
    def norm(x: Any) -> str:
        return json.dumps(x, sort_keys=True, default=str)

    return "; ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in sorted(set(old) | set(new))
                     if norm(old.get(k)) != norm(new.get(k)))


__all__ = [
    "DatasetEntry",
    "KINDS",
    "ModelEntry",
    "Suite",
    "load_suite",
    "resolve_suite_path",
    "shipped_suites",
]
