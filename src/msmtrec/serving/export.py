"""Export a trained model to ONNX or TorchScript with a flat, named input signature.

A :data:`~msmtrec.data.schema.Batch` is a dict keyed by names such as ``seq:history``, which neither ONNX
graph inputs nor a traced TorchScript signature can carry. :class:`FlatModel` therefore takes the batch as
positional tensors in a fixed order (:func:`input_names`) and returns one tensor per task in
``schema.tasks`` order, so any runtime can feed it by name without knowing msmtrec.

The exported graph returns what ``forward`` returns (exposure-space logits for binary tasks, transformed
values for regression, the kind's raw numbers otherwise) so parity with eager PyTorch can be checked to 1e-5;
mapping to user units is the caller's job: :class:`~msmtrec.serving.scorer.Scorer` applies the run's
:class:`~msmtrec.tasks.OutputMapping` on top of the runtimes below, and the signature carries that
mapping's parameters for consumers outside msmtrec. The preprocessing
artifact is copied beside the exported file because a model without its exact encoders is useless.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from msmtrec.data.preprocessor import ARTIFACT_NAME
from msmtrec.data.schema import Batch, Schema
from msmtrec.errors import MsmtrecError
from msmtrec.layers.experts import fixed_scenario
from msmtrec.models.base import MultiTaskModel
from msmtrec.tasks import kind_of

FORMATS: tuple[str, ...] = ("onnx", "torchscript")


def input_key_name(key: str) -> str:
    """Batch key → a valid ONNX / Python identifier (``seq:hist`` → ``seq__hist``)."""
    return key.replace(":", "__")


def batch_keys(schema: Schema) -> list[str]:
    """Batch keys the model reads, in the order of the exported signature."""
    return ["sparse", "dense", "scenario", *(f"seq:{s.name}" for s in schema.sequences)]


def input_names(schema: Schema) -> list[str]:
    """Names of the exported graph's inputs, in signature order."""
    return [input_key_name(k) for k in batch_keys(schema)]


def flatten_batch(batch: Batch, schema: Schema) -> tuple[torch.Tensor, ...]:
    """The model inputs of ``batch`` as a tuple in signature order (labels and ids are dropped)."""
    return tuple(batch[k] for k in batch_keys(schema))


class FlatModel(nn.Module):
    """Positional tensors in, a tuple of per-task outputs (schema task order) out."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model
        self.keys = batch_keys(model.schema)
        self.task_names = list(model.schema.task_names)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = dict(zip(self.keys, inputs, strict=True))
        out = self.model(batch)
        return tuple(out[t] for t in self.task_names)


def example_inputs(schema: Schema, batch_size: int = 4) -> tuple[torch.Tensor, ...]:
    """Valid inputs for tracing (all-OOV codes, zero dense, scenario 0); values do not matter for shape."""
    b: Batch = {
        "sparse": torch.zeros(batch_size, len(schema.sparse), dtype=torch.long),
        "dense": torch.zeros(batch_size, len(schema.dense)),
        "scenario": torch.arange(batch_size, dtype=torch.long) % max(schema.num_scenarios, 1),
    }
    for s in schema.sequences:
        b[f"seq:{s.name}"] = torch.ones(batch_size, s.max_len, dtype=torch.long)
    return flatten_batch(b, schema)


def export_onnx(model: MultiTaskModel, path: str | Path, opset: int | None = None) -> Path:
    """Write ``model`` as ONNX with a dynamic batch dimension (dynamo exporter).

    The dynamo exporter is used because the legacy TorchScript-based one specialises every shape it sees,
    baking in the example's sizes; here only the batch dimension is dynamic, sequence lengths are fixed
    by the schema anyway.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = FlatModel(model).eval()
    schema = model.schema
    inputs = example_inputs(schema)
    batch = torch.export.Dim("batch", min=1)
    shapes = (tuple({0: batch} for _ in inputs),)  # one entry: the *inputs varargs parameter
    kwargs = {} if opset is None else {"opset_version": opset}
    with warnings.catch_warnings(), _quiet("torch.onnx", "onnx_ir", "onnxscript", "torch.export"), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            flat,
            inputs,
            dynamo=True,
            input_names=input_names(schema),
            output_names=list(schema.task_names),
            dynamic_shapes=shapes,
            external_data=False,
            verbose=False,
            **kwargs,
        )
    if program is None:  # pragma: no cover - dynamo export always returns a program
        raise MsmtrecError(f"ONNX export of {model.name} produced nothing")
    program.save(str(path), external_data=False)
    return path


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Silence exporter loggers (progress chatter, optional torchvision ops) for the duration."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_torchscript(model: MultiTaskModel, path: str | Path) -> Path:
    """Write ``model`` as TorchScript (traced; control flow in models depends only on the schema)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    trace_torchscript(model).save(str(path))
    return path


def trace_torchscript(model: MultiTaskModel, scenario: int | None = None) -> torch.jit.ScriptModule:
    """``model`` traced into TorchScript through :class:`FlatModel`.

    Layers switch to their static-shape forms while tracing, so the graph holds for any batch size and any
    mix of scenarios. With ``scenario``, the graph is specialised to batches of that one scenario (see
    :func:`msmtrec.layers.experts.fixed_scenario`) and is wrong for any other row: for a server that
    routes each single-scenario request to its scenario's graph, not for export.
    """
    flat = FlatModel(model).eval()
    inputs = example_inputs(model.schema)
    special = contextlib.nullcontext() if scenario is None else fixed_scenario(scenario)
    if scenario is not None:
        inputs = tuple(torch.full_like(t, scenario) if k == "scenario" else t
                       for k, t in zip(batch_keys(model.schema), inputs, strict=True))
    with warnings.catch_warnings(), torch.no_grad(), special:
        warnings.simplefilter("ignore")
        return torch.jit.trace(flat, inputs, check_trace=False, strict=False)


def sidecar_paths(out: str | Path) -> tuple[Path, Path]:
    """Where the preprocessing artifact and the signature description go beside an exported file."""
    out = Path(out)
    return out.with_name(out.name + "." + ARTIFACT_NAME), out.with_name(out.name + ".signature.json")


def signature(model: MultiTaskModel, model_name: str, fmt: str) -> dict:
    """A description of the exported graph's inputs and outputs for consumers outside msmtrec."""
    schema = model.schema
    inputs = {
        "sparse": {"dtype": "int64", "shape": ["batch", len(schema.sparse)], "fields": [f.name for f in schema.sparse]},
        "dense": {"dtype": "float32", "shape": ["batch", len(schema.dense)], "fields": list(schema.dense)},
        "scenario": {"dtype": "int64", "shape": ["batch"], "values": list(schema.scenarios)},
    }
    for s in schema.sequences:
        inputs[input_key_name(f"seq:{s.name}")] = {"dtype": "int64", "shape": ["batch", s.max_len]}
    outputs = {}
    for t in schema.tasks:
        kind = kind_of(t)
        shape = ["batch"] if kind.output_dim == 1 else ["batch", kind.output_dim]
        outputs[t.name] = {"dtype": "float32", "shape": shape, "kind": kind.name, "meaning": kind.export_meaning,
                           "transform": t.transform, "units": kind.units}
    # the post-hoc parameters (calibrators, bias correction) a consumer applies to reach user units
    return {"format": fmt, "model": model_name, "inputs": inputs, "input_order": input_names(schema),
            "outputs": outputs, "output_order": list(schema.task_names),
            "output_mapping": model.output_mapping.to_dict()}


def export_run(run_dir: str | Path, fmt: str, out: str | Path) -> dict[str, Path]:
    """Export a run folder's model; the preprocessor and signature are written beside ``out``."""
    from msmtrec.runs import load_run

    if fmt not in FORMATS:
        raise MsmtrecError(f"unknown export format {fmt!r}; choose one of {list(FORMATS)}")
    run = load_run(run_dir)
    out = Path(out)
    try:
        if fmt == "onnx":
            export_onnx(run.model, out)
        else:
            export_torchscript(run.model, out)
    except MsmtrecError:
        raise
    except Exception as e:  # exporter failures are model limitations: say which model and why, in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MsmtrecError(f"{fmt} export of model {run.model_name!r} failed: {type(e).__name__}: {first}") from e
    pre_path, sig_path = sidecar_paths(out)
    shutil.copyfile(Path(run_dir) / ARTIFACT_NAME, pre_path)
    sig_path.write_text(json.dumps(signature(run.model, run.model_name, fmt), indent=1))
    return {"model": out, "preprocessor": pre_path, "signature": sig_path}


# ------------------------------------------------------------------------------------------- runtimes


class OnnxRunner:
    """Run an exported ONNX file with ONNX Runtime from a Batch (used by parity tests and tools)."""

    def __init__(self, path: str | Path, schema: Schema, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = threads
            # spinning workers burn the cores a co-located HTTP loop or client needs; sleep instead
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.schema = schema
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        feeds = {input_key_name(k): batch[k].numpy() for k in batch_keys(self.schema)}
        feeds = {k: v for k, v in feeds.items() if k in self.names}  # exporters drop unused inputs
        outs = self.session.run(list(self.schema.task_names), feeds)
        return {t: torch.from_numpy(o) for t, o in zip(self.schema.task_names, outs, strict=True)}


class TorchScriptRunner:
    """Run an exported TorchScript file from a Batch."""

    def __init__(self, path: str | Path, schema: Schema) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.module = torch.jit.load(str(path), map_location="cpu").eval()
        self.schema = schema

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            outs = self.module(*flatten_batch(batch, self.schema))
        return dict(zip(self.schema.task_names, outs, strict=True))
