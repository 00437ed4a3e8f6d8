"""The inference core shared by batch prediction and the HTTP service.

:class:`Scorer` holds one loaded run (model in eval mode + its preprocessor) and turns raw rows into
predictions in the units a user reads (probabilities, expected values in original units) through the run's
one output mapping (:class:`msmtrec.tasks.OutputMapping`, the one ``MultiTaskModel.predict`` uses too).
Loading happens once; every call reuses the model and
runs under :func:`torch.inference_mode`, which skips autograd bookkeeping entirely.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from msmtrec.data.preprocessor import Preprocessor, TransformReport
from msmtrec.data.schema import Batch, Schema, random_batch
from msmtrec.errors import DataError, MsmtrecError
from msmtrec.runs import LoadedRun, load_run

SPECIALISE_MAX_SCENARIOS = 16
"""Up to this many scenarios, the TorchScript backend also traces one graph per scenario."""

Runner = Callable[[Batch], dict[str, torch.Tensor]]
"""A forward pass: a Batch in, raw outputs per task out (eager, TorchScript, compiled or ONNX Runtime)."""

MISSING = object()
"""Sentinel for a feature absent from a request (distinct from an explicit null, which means 'missing value')."""


def default_threads() -> int:
    """Half the cores (at least 1, at most 4).

    A page of candidates is a small batch: extra threads mostly add synchronisation, and on a shared
    machine OpenMP workers that spin while another process holds the core turn a 20 ms call into a
    second-long one. Leaving half the cores free also keeps the HTTP layer and any co-located client
    responsive.
    """
    return max(1, min((os.cpu_count() or 2) // 2, 4))


def configure_threads(threads: int | None = None) -> int:
    """Use ``threads`` intra-op threads (default :func:`default_threads`) and one inter-op thread."""
    n = threads or default_threads()
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass
    return n


def text_value(v: Any) -> str | None:
    """A raw categorical value as the reader would have stored it (3, 3.0 and "3" are one category)."""
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return None
        return str(int(v)) if v.is_integer() else str(v)
    if isinstance(v, list | tuple):
        return None if not v else "\x00".join(str(text_value(x)) for x in v)  # joined later with the spec sep
    return str(v)


@dataclass
class Scored:
    """Predictions in output units (``{task: [n]}``), the encoded batch, and the transform report."""

    predictions: dict[str, np.ndarray]
    batch: Batch
    report: TransformReport


class Scorer:
    """A loaded run ready to score raw rows."""

    def __init__(self, run: LoadedRun) -> None:
        self.run = run
        self.backend = "torch"
        self._runner: Runner | None = None  # the forward pass of a non-eager backend, once verified
        self._tmp: Any = None  # keeps a start-up ONNX export alive as long as the scorer
        self.model = run.model.eval()
        self.pre: Preprocessor = run.preprocessor
        self.schema: Schema = self.pre.schema
        spec = self.pre.spec
        self.task_names = list(self.schema.task_names)
        self.required = self.pre.required_columns(with_labels=False)
        self.sparse_columns = {f.name for f in spec.features.sparse} | {f.name for f in spec.features.sequence}
        self.sequence_sep = {f.name: f.sep for f in spec.features.sequence}
        raw = list(self.pre.scenarios)
        names = spec.scenario.names or {}
        # accept a scenario by its raw value or its display name
        self.scenario_lookup: dict[str, str] = {**{names.get(s, s): s for s in raw}, **{s: s for s in raw}}

    @classmethod
    def load(cls, run_dir: str | Path) -> Scorer:
        return cls(load_run(run_dir))

    @property
    def model_name(self) -> str:
        return self.run.model_name

    # ---------------------------------------------------------------------------------------- scoring

    def resolve_scenario(self, scenario: Any) -> str:
        """The raw scenario value for a request's scenario, or a DataError naming it and the known ones."""
        key = text_value(scenario)
        if key is None or key not in self.scenario_lookup:
            raise DataError(
                f"scenario {scenario!r} was never seen in training; the model knows {list(self.schema.scenarios)}"
            )
        return self.scenario_lookup[key]

    def use_onnx(self, path: str | Path | None = None, threads: int | None = None, atol: float = 1e-4) -> Path:
        """Run forward passes with ONNX Runtime (for deployments without PyTorch; about as fast as eager).

        ``path`` is a file written by ``msmtrec export --format onnx`` for this run; without one the model
        is exported now into a temporary folder. The exported graph is checked against eager PyTorch and
        refused if it disagrees, so a bad export can never silently change predictions.
        """
        import tempfile

        from msmtrec.serving.export import OnnxRunner, export_onnx

        if path is not None and not Path(path).is_file():
            raise DataError(f"{path}: no such ONNX file; write one with `msmtrec export RUN_DIR --format onnx`")
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="msmtrec-onnx-")
            path = export_onnx(self.model, Path(self._tmp.name) / "model.onnx")
        runner = OnnxRunner(path, self.schema, threads=threads or torch.get_num_threads())
        self._install(runner, "onnx", atol, f"{path}: ONNX outputs differ from the PyTorch model; "
                                            "is it an export of this run?", DataError)
        return Path(path)

    def use_torchscript(self, atol: float = 1e-4) -> None:
        """Run forward passes through traced, frozen and inference-optimised TorchScript graphs.

        Tracing takes seconds (no compiler needed). The graph runs without Python between operators and
        freezing folds the weights in as constants. A general graph serves any batch; with up to
        :data:`SPECIALISE_MAX_SCENARIOS` scenarios there is also one graph per scenario, and a batch of one
        scenario (every ``/v1/rank`` request) runs on its scenario's graph, which multiplies by that
        scenario's weights only (the general graph computes every scenario's and picks). Every graph is
        checked against eager PyTorch before it serves.
        """
        from msmtrec.serving.export import flatten_batch, trace_torchscript

        def build(scenario: int | None) -> torch.jit.ScriptModule:
            with torch.no_grad(), warnings.catch_warnings():
                # PyTorch marks TorchScript deprecated in favour of torch.compile, yet it is still the quickest
                # start-up to a Python-free graph; if a release drops it, --backend auto falls back to eager
                warnings.simplefilter("ignore", DeprecationWarning)
                traced = trace_torchscript(self.model, scenario)
                return torch.jit.optimize_for_inference(torch.jit.freeze(traced))

        num_scenarios = self.schema.num_scenarios
        try:
            general = build(None)
            per_scenario = ([build(s) for s in range(num_scenarios)]
                            if 1 < num_scenarios <= SPECIALISE_MAX_SCENARIOS else [])
        except Exception as e:  # noqa: BLE001 - any tracing failure is reported as one user error
            raise MsmtrecError(f"TorchScript tracing failed for {self.model_name}: {type(e).__name__}: {e}; "
                               "use --backend torch") from None
        names, schema = self.task_names, self.schema

        def run(batch: Batch) -> dict[str, torch.Tensor]:
            graph = general
            scenario = batch["scenario"]
            if per_scenario and scenario.numel():
                first = int(scenario[0])
                if bool((scenario == first).all()):
                    graph = per_scenario[first]
            return dict(zip(names, graph(*flatten_batch(batch, schema)), strict=True))

        self._install(run, "torchscript", atol, "TorchScript outputs differ from eager PyTorch; use --backend torch")

    def use_compiled(self, atol: float = 1e-4) -> None:
        """Run forward passes through ``torch.compile`` (Inductor): the model's many small elementwise ops
        are fused into generated C++ kernels: HEF's forward at 1,000 rows took 12–14 ms against 14–19 ms
        eager on this 2-core machine (TorchScript, with per-scenario graphs, 8–12 ms; docs/serving.md).

        Compiling takes one to two minutes on a 2-core machine (needs a C++ compiler; Inductor caches the
        result on disk, so later start-ups are quicker) and happens here, not on the first request. The
        graph is compiled for dynamic batch sizes; batches of one row are padded to two so the size-1
        specialisation never triggers a second compile mid-traffic.
        """
        compiled = torch.compile(self.model, dynamic=True)

        def run(batch: Batch) -> dict[str, torch.Tensor]:
            return _forward_padded(compiled, batch)

        try:
            self._install(run, "compiled", atol, "compiled outputs differ from eager PyTorch; use --backend torch")
        except MsmtrecError:
            raise
        except Exception as e:  # noqa: BLE001 - any compiler failure is reported as one user error
            raise MsmtrecError(f"torch.compile failed for {self.model_name}: {type(e).__name__}: {e}; "
                               "use --backend torch or onnx") from None

    def _install(self, runner: Runner, backend: str, atol: float, mismatch: str,
                 error: type[MsmtrecError] = MsmtrecError) -> None:
        """Make ``runner`` the forward pass, after checking it against the eager model on probe batches
        (one row, an odd size, a mix of every scenario, and each scenario alone): a backend that disagrees
        is refused.
        ``explain`` always uses the eager model (the graphs return task outputs only)."""
        gen = torch.Generator().manual_seed(0)
        worst = 0.0
        probes = [_unlabelled(random_batch(self.schema, rows, gen)) for rows in (1, 7, 64)]
        probes += _one_scenario_batches(self.schema, 16, gen, self.schema.num_scenarios)
        for probe in probes:
            with torch.inference_mode():
                got = runner(probe)
                ref = self.model(probe)
            worst = max(worst, *(float((got[t].double() - ref[t].double()).abs().max()) for t in self.task_names))
        if not worst <= atol:
            raise error(f"{mismatch} (largest difference {worst:.2e} on probe batches)")
        self._runner = runner
        self.backend = backend

    def warm_up(self, rows: Sequence[int] = (1, 100, 1000)) -> None:
        """Run the active backend on batches of these sizes, mixed and one scenario at a time (a backend may
        hold a graph per scenario), so the first requests after start-up do not pay for lazy allocations,
        kernel selection, graph profiling and the allocator's first growth."""
        gen = torch.Generator().manual_seed(0)
        for n in rows:
            batches = [_unlabelled(random_batch(self.schema, n, gen))]
            batches += _one_scenario_batches(self.schema, n, gen, min(self.schema.num_scenarios,
                                                                       SPECIALISE_MAX_SCENARIOS))
            for batch in batches:
                for _ in range(2):
                    self.outputs(batch)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Raw model outputs (logits / transformed values) from the active backend."""
        with torch.inference_mode():
            if self._runner is not None:
                return self._runner(batch)
            return self.model(batch)

    def outputs(self, batch: Batch) -> dict[str, np.ndarray]:
        """Model outputs mapped to user units by the run's output mapping, one float64 array per task."""
        raw = {name: v.double() for name, v in self.forward(batch).items()}
        return {name: v.numpy() for name, v in self.model.output_mapping.apply(raw, batch.get("scenario")).items()}

    def score_frame(self, frame: pd.DataFrame, where: Callable[[Any], str] | None = None) -> Scored:
        """Raw rows (one column per feature, plus the scenario) → predictions in output units."""
        kwargs = {"where": where} if where is not None else {}
        batch, report = self.pre.transform(frame, with_labels=False, **kwargs)
        return Scored(self.outputs(batch), batch, report)

    def explain(self, batch: Batch) -> dict[str, np.ndarray]:
        """``model.explain`` as NumPy arrays (attention maps, gate and mixing weights)."""
        with torch.inference_mode():
            weights = self.model.explain(batch)
        return {k: v.float().numpy() for k, v in weights.items()}

    # ------------------------------------------------------------------------- request values → batch

    def encode_records(
        self,
        scenario: str,
        rows: Sequence[Mapping[str, Any]],
        context: Mapping[str, Any] | None = None,
        what: str = "records",
    ) -> tuple[Batch, TransformReport]:
        """Request rows merged with shared context → the model's batch, without building a DataFrame.

        Each required feature is taken from the row if present, else from ``context``; a feature in
        neither, or a numeric feature that is not a number, is a :class:`FeatureError` naming the row and
        feature. A feature only the context has is converted and encoded once, then repeated.
        """
        ctx = context or {}
        in_rows = set().union(*rows) if ctx else set()  # keys any row has (one C-level pass over all rows)
        columns: dict[str, np.ndarray] = {}
        for col in self.required:
            shared = ctx.get(col, MISSING)
            if shared is not MISSING and col not in in_rows:
                columns[col] = self._column(col, [shared], lambda _i: ("context", None))
                continue
            values = [r.get(col, shared) for r in rows]
            if shared is MISSING:
                for i, v in enumerate(values):
                    if v is MISSING:
                        raise FeatureError(what, i, col, "missing required feature")

            def locate(i: int, col: str = col) -> tuple[str, int | None]:
                return ("context", None) if col in ctx and col not in rows[i] else (what, i)

            columns[col] = self._column(col, values, locate)
        return self.pre.encode(columns, self._scenario_code(scenario), len(rows))

    def encode_columns(
        self,
        scenario: str,
        features: Mapping[str, Sequence[Any]],
        rows: int,
        context: Mapping[str, Any] | None = None,
        what: str = "candidate_columns",
    ) -> tuple[Batch, TransformReport]:
        """Columnar request values (one list of ``rows`` values per feature) plus shared context → batch.

        A feature column wins over the context; a feature in neither, a column of the wrong length or a
        non-numeric value of a numeric feature is a :class:`FeatureError` naming the feature (and row).
        """
        ctx = context or {}
        columns: dict[str, np.ndarray] = {}
        for col in self.required:
            if col in features:
                values = features[col]
                if len(values) != rows:
                    raise FeatureError(what, None, col, f"has {len(values)} values, expected {rows}, in feature")
                columns[col] = self._column(col, list(values), lambda i: (what, i))
            elif col in ctx:
                columns[col] = self._column(col, [ctx[col]], lambda _i: ("context", None))
            else:
                raise FeatureError(what, None, col, "missing required feature")
        return self.pre.encode(columns, self._scenario_code(scenario), rows)

    def _column(self, col: str, values: list[Any], locate: Callable[[int], tuple[str, int | None]]) -> np.ndarray:
        """Raw request values of one feature → the array :meth:`Preprocessor.encode` takes."""
        if col in self.sparse_columns:
            text = [v if type(v) is str else text_value(v) for v in values]
            sep = self.sequence_sep.get(col)
            if sep is not None:
                text = [v.replace("\x00", sep) if isinstance(v, str) else v for v in text]
            out = np.empty(len(text), dtype=object)
            out[:] = text
            return out
        return _numeric(values, col, locate)

    def _scenario_code(self, scenario: str) -> np.ndarray:
        try:
            return np.array([self.pre.scenarios.index(scenario)], dtype=np.int64)
        except ValueError:
            raise DataError(f"scenario {scenario!r} was never seen in training; "
                            f"the model knows {list(self.schema.scenarios)}") from None


def _unlabelled(batch: Batch) -> Batch:
    batch.pop("labels", None)
    return batch


def _one_scenario_batches(schema: Schema, rows: int, gen: torch.Generator, count: int) -> list[Batch]:
    """Random batches of ``rows`` rows, all of scenario 0, then all of scenario 1, ... up to ``count``:
    the shape of every service request, which a backend may route to a per-scenario graph."""
    batches = []
    for s in range(count):
        batch = _unlabelled(random_batch(schema, rows, gen))
        batch["scenario"].fill_(s)
        batches.append(batch)
    return batches


def _forward_padded(model: Callable[[Batch], dict[str, torch.Tensor]], batch: Batch) -> dict[str, torch.Tensor]:
    """Call a dynamically compiled model, repeating a one-row batch to two rows (and dropping the copy):
    compilers specialise sizes 0 and 1, and a recompile in the middle of serving would stall requests."""
    rows = batch["scenario"].shape[0]
    if rows != 1:
        return model(batch)
    doubled = {k: torch.cat([v, v]) for k, v in batch.items()}
    return {k: v[:1] for k, v in model(doubled).items()}


class FeatureError(DataError):
    """A request row lacks a required feature or has a value of the wrong kind (names row and feature)."""

    def __init__(self, what: str, index: int | None, column: str, problem: str) -> None:
        self.what, self.index, self.column = what, index, column
        where = what if index is None else f"{what}[{index}]"
        super().__init__(f"{where}: {problem} {column!r}")


def _numeric(values: list[Any], col: str, locate: Callable[[int], tuple[str, int | None]]) -> np.ndarray:
    """Numbers as a float array (None → NaN, numeric strings parsed); anything else is a FeatureError
    naming where the value came from (``locate(i)`` → the request part and row, or ``None`` for context)."""
    try:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        pass
    for i, v in enumerate(values):
        if v is None or isinstance(v, bool):
            continue
        try:
            float(v)
        except (TypeError, ValueError):
            what, index = locate(i)
            raise FeatureError(what, index, col, f"expected a number, got {v!r} for feature") from None
    raise FeatureError("request", None, col, "expected numbers for feature")  # pragma: no cover - unreachable
