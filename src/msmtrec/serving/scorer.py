"""The inference core shared by batch prediction and the HTTP service.

:class:`Scorer` holds one loaded run (model in eval mode + its preprocessor) and turns raw rows into
predictions in the units a user reads (probabilities, expected values in original units) through the run's
one output mapping (:class:`msmtrec.tasks.OutputMapping`, the one ``MultiTaskModel.predict`` uses too).
Loading happens once; every call reuses the model and
runs under :func:`torch.inference_mode`, which skips autograd bookkeeping entirely.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from msmtrec.data.preprocessor import Preprocessor, TransformReport
from msmtrec.data.records import RecordEncoder
from msmtrec.data.schema import Batch, Schema, random_batch
from msmtrec.errors import DataError, MsmtrecError
from msmtrec.runs import LoadedRun, load_run

SPECIALISE_MAX_SCENARIOS = 16
"""Up to this many scenarios, the TorchScript backend also traces one graph per scenario."""

Runner = Callable[[Batch], dict[str, torch.Tensor]]
"""A forward pass: a Batch in, raw outputs per task out (eager, TorchScript, compiled or ONNX Runtime)."""


def default_threads() -> int:
    """Half the cores (at least 1, at most 4).

    A page of candidates is a small batch: extra threads mostly add synchronisation, and on a shared
    machine OpenMP workers that spin while another process holds the core turn a short call into a very
    long one. Leaving half the cores free also keeps the HTTP layer and any co-located client
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
        self.task_names = list(self.schema.task_names)
        self.encoder = RecordEncoder(self.pre)  # request values → batch, the same encoding training uses
        self.required = self.encoder.required  # feature columns every input needs (batch prediction checks them)

    @classmethod
    def load(cls, run_dir: str | Path) -> Scorer:
        return cls(load_run(run_dir))

    @property
    def model_name(self) -> str:
        return self.run.model_name

    # ---------------------------------------------------------------------------------------- scoring

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
        are fused into generated C++ kernels (how it compares with eager and TorchScript: docs/serving.md).

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
