"""The inference core shared by batch prediction and the HTTP service.

:class:`Scorer` holds one loaded run (model in eval mode + its preprocessor) and turns raw rows into
predictions in the units a user reads: probabilities for binary tasks and original units for regression
(``log1p`` targets are mapped back with ``expm1``). Loading happens once; every call reuses the model and
runs under :func:`torch.inference_mode`, which skips autograd bookkeeping entirely.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from msmtrec.data.preprocessor import Preprocessor, TransformReport
from msmtrec.data.reader import SCENARIO_COL
from msmtrec.data.schema import Batch, Schema, random_batch
from msmtrec.errors import DataError, MsmtrecError
from msmtrec.runs import LoadedRun, load_run

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
        self._onnx: Any = None
        self._compiled: Any = None
        self._tmp: Any = None  # keeps a start-up ONNX export alive as long as the scorer
        self.model = run.model.eval()
        self.pre: Preprocessor = run.preprocessor
        self.schema: Schema = self.pre.schema
        spec = self.pre.spec
        self.task_names = list(self.schema.task_names)
        self.binary = [t.type == "binary" for t in self.schema.tasks]
        self.log1p = {t.name: t.transform == "log1p" for t in spec.tasks}
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
        """Run forward passes with ONNX Runtime (usually faster than eager PyTorch for these graphs).

        ``path`` is a file written by ``msmtrec export --format onnx`` for this run; without one the model
        is exported now into a temporary folder. The exported graph is checked against eager PyTorch on
        a few rows and refused if it disagrees, so a bad export can never silently change predictions.
        ``explain`` keeps using the PyTorch model (the exported graph returns task outputs only).
        """
        import tempfile

        from msmtrec.serving.export import OnnxRunner, export_onnx

        if path is not None and not Path(path).is_file():
            raise DataError(f"{path}: no such ONNX file; write one with `msmtrec export RUN_DIR --format onnx`")
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="msmtrec-onnx-")
            path = export_onnx(self.model, Path(self._tmp.name) / "model.onnx")
        runner = OnnxRunner(path, self.schema, threads=threads or torch.get_num_threads())
        probe = random_batch(self.schema, 16, torch.Generator().manual_seed(0))
        probe.pop("labels", None)
        with torch.inference_mode():
            ref = self.model(probe)
        got = runner(probe)
        worst = max(float((got[t].double() - ref[t].double()).abs().max()) for t in self.task_names)
        if not worst <= atol:
            raise DataError(f"{path}: ONNX outputs differ from the PyTorch model by {worst:.2e}; "
                            "is it an export of this run?")
        self._onnx = runner
        self.backend = "onnx"
        return Path(path)

    def use_compiled(self, atol: float = 1e-4) -> None:
        """Run forward passes through ``torch.compile`` (Inductor): the model's many small elementwise ops
        are fused into generated C++ kernels, about 2× faster than eager for HEF at 1,000 rows on CPU.

        Compiling takes one to two minutes on a 2-core machine (needs a C++ compiler; Inductor caches the
        result on disk, so later start-ups are quicker) and happens here, not on the first request. The
        graph is compiled for dynamic batch sizes; batches of one row are padded to two so the size-1
        specialisation never triggers a second compile mid-traffic. The compiled model is checked
        against eager PyTorch on a probe batch and refused if it disagrees.
        """
        compiled = torch.compile(self.model, dynamic=True)
        probe = random_batch(self.schema, 64, torch.Generator().manual_seed(0))
        probe.pop("labels", None)
        with torch.inference_mode():
            try:
                got = compiled(probe)
            except Exception as e:  # noqa: BLE001 - any compiler failure is reported as one user error
                raise MsmtrecError(f"torch.compile failed for {self.model_name}: {type(e).__name__}: {e}; "
                                "use --backend torch or onnx") from None
            ref = self.model(probe)
        worst = max(float((got[t].double() - ref[t].double()).abs().max()) for t in self.task_names)
        if not worst <= atol:
            raise MsmtrecError(f"compiled outputs differ from eager PyTorch by {worst:.2e}; use --backend torch")
        self._compiled = compiled
        self.backend = "compiled"

    def warm_up(self, rows: Sequence[int] = (1, 100, 1000)) -> None:
        """Run the active backend on random batches of these sizes, so the first requests after start-up do
        not pay for lazy allocations, kernel selection and the allocator's first growth."""
        gen = torch.Generator().manual_seed(0)
        for n in rows:
            batch = random_batch(self.schema, n, gen)
            batch.pop("labels", None)
            for _ in range(2):
                self.outputs(batch)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Raw model outputs (logits / transformed values) from the active backend."""
        if self._onnx is not None:
            return self._onnx(batch)
        with torch.inference_mode():
            if self._compiled is not None:
                return _forward_padded(self._compiled, batch)
            return self.model(batch)

    def outputs(self, batch: Batch) -> dict[str, np.ndarray]:
        """Model outputs mapped to output units, one float64 array per task."""
        raw = self.forward(batch)
        out: dict[str, np.ndarray] = {}
        for name, is_bin in zip(self.task_names, self.binary, strict=True):
            v = raw[name].double()
            if is_bin:
                out[name] = torch.sigmoid(v).numpy()
            else:
                x = v.numpy()
                out[name] = np.expm1(x) if self.log1p.get(name) else x
        return out

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

    # --------------------------------------------------------------------------- request → frame rows

    def records_frame(
        self,
        scenario: str,
        rows: Sequence[Mapping[str, Any]],
        context: Mapping[str, Any] | None = None,
        what: str = "records",
    ) -> pd.DataFrame:
        """Build the model's input frame column-wise from request rows merged with shared context.

        Each required feature is taken from the row if present, else from ``context``; a feature in
        neither, or a numeric feature that is not a number, is a :class:`FeatureError` naming the row and
        feature. Columns are built once as lists, which is far cheaper than a DataFrame per row.
        """
        ctx = context or {}
        n = len(rows)
        cols: dict[str, Any] = {}
        in_rows = set().union(*rows) if ctx else set()  # keys any row has (one C-level pass over all rows)
        for col in self.required:
            shared = ctx.get(col, MISSING)
            if shared is not MISSING and col not in in_rows:
                # a context-only feature: convert once, broadcast (the common case for user features)
                values = [text_value(shared) if col in self.sparse_columns else shared] * n
                if col in self.sparse_columns:
                    cols[col] = _sequence_text(values, self.sequence_sep.get(col))
                else:
                    cols[col] = pd.Series(_numeric(values, col, what, rows, True))
                continue
            values = [r.get(col, shared) for r in rows]
            if shared is MISSING:
                for i, v in enumerate(values):
                    if v is MISSING:
                        raise FeatureError(what, i, col, "missing required feature")
            if col in self.sparse_columns:
                values = [v if type(v) is str else text_value(v) for v in values]
                cols[col] = _sequence_text(values, self.sequence_sep.get(col))
            else:
                cols[col] = pd.Series(_numeric(values, col, what, rows, col in ctx))
        cols[SCENARIO_COL] = pd.Series([scenario] * n, dtype=object)
        for idc in (self.pre.spec.features.user_id, self.pre.spec.features.item_id):
            if idc and idc not in cols:
                values = [r.get(idc, ctx.get(idc)) for r in rows]
                if any(v is not None for v in values):
                    cols[idc] = pd.Series([text_value(v) for v in values], dtype=object)
        return pd.DataFrame(cols)


def _forward_padded(model: Callable[[Batch], dict[str, torch.Tensor]], batch: Batch) -> dict[str, torch.Tensor]:
    """Call a dynamically compiled model, repeating a one-row batch to two rows (and dropping the copy):
    compilers specialise sizes 0 and 1, and a recompile in the middle of serving would stall requests."""
    rows = batch["scenario"].shape[0]
    if rows != 1:
        return model(batch)
    doubled = {k: torch.cat([v, v]) for k, v in batch.items()}
    return {k: v[:1] for k, v in model(doubled).items()}


def _sequence_text(values: list[Any], sep: str | None) -> pd.Series:
    """Text values as an object Series; list-valued sequence features joined with the spec's separator."""
    if sep is not None:
        values = [v.replace("\x00", sep) if isinstance(v, str) else v for v in values]
    return pd.Series(values, dtype=object)


class FeatureError(DataError):
    """A request row lacks a required feature or has a value of the wrong kind (names row and feature)."""

    def __init__(self, what: str, index: int | None, column: str, problem: str) -> None:
        self.what, self.index, self.column = what, index, column
        where = what if index is None else f"{what}[{index}]"
        super().__init__(f"{where}: {problem} {column!r}")


def _numeric(values: list[Any], col: str, what: str, rows: Sequence[Mapping[str, Any]], in_context: bool) -> np.ndarray:
    """Numbers as a float array (None → NaN, numeric strings parsed); anything else is a FeatureError."""
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
            from_context = in_context and col not in rows[i]
            raise FeatureError("context" if from_context else what, None if from_context else i, col,
                               f"expected a number, got {v!r} for feature") from None
    raise FeatureError(what, None, col, "expected numbers for feature")  # pragma: no cover - unreachable
