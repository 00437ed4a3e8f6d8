"""The one path from raw model outputs to user units, with a run's fitted post-hoc parameters.

``MultiTaskModel.predict``, the metrics, batch prediction, the export runtimes and the service all map
outputs through :meth:`OutputMapping.apply`, which asks each task's kind (:meth:`TaskKind.to_units`).
Parameters are fitted on the validation split after training (:meth:`OutputMapping.fit`) and stored in
the run folder as ``output_mapping.json``::

    {"format": "msmtrec-output-mapping/1", "calibration": "platt",
     "tasks": {"visit": {"calibrator": {"method": "platt", "a": [per scenario], "b": [...]}},
               "spend": {"smearing": [per scenario]}}}

A run without the file (older runs) maps with the kinds' plain defaults (sigmoid, expm1), which is what
the identity mapping does.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msmtrec.tasks.base import Params, kind_of

MAPPING_FILE = "output_mapping.json"
FORMAT = "msmtrec-output-mapping/1"


class OutputMapping:
    """Per-task parameters (per scenario inside) + the schema's tasks → user-unit outputs."""

    def __init__(self, schema: Any, params: Mapping[str, Params] | None = None, calibration: str = "none") -> None:
        self.tasks = list(schema.tasks)
        self.num_scenarios = int(schema.num_scenarios)
        self.params: dict[str, Params] = {t.name: dict((params or {}).get(t.name) or {}) for t in self.tasks}
        self.calibration = calibration

    @classmethod
    def identity(cls, schema: Any) -> OutputMapping:
        return cls(schema)

    def apply(self, raw: Mapping[str, torch.Tensor], scenario: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``{task: raw output}`` → ``{task: [B] in user units}`` (probabilities, expected values)."""
        return {
            t.name: kind_of(t).to_units(raw[t.name], _transform(t), self.params.get(t.name), scenario)
            for t in self.tasks
        }

    def apply_numpy(self, raw: Mapping[str, np.ndarray], scenario: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`apply` on float64 numpy arrays (metrics of a whole split)."""
        s = torch.from_numpy(np.asarray(scenario))
        out = self.apply({k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in raw.items()}, s)
        return {k: v.numpy() for k, v in out.items()}

    @classmethod
    def fit(
        cls, schema: Any, outputs: Mapping[str, np.ndarray], labels: np.ndarray, scenario: np.ndarray,
        calibration: str = "none", base: Mapping[str, Params] | None = None,
    ) -> OutputMapping:
        """Fit every task's post-hoc parameters on validation outputs/labels (never the test split)."""
        params: dict[str, Params] = {}
        for j, t in enumerate(schema.tasks):
            y = labels[:, j]
            known = ~np.isnan(y)
            params[t.name] = kind_of(t).fit_params(
                np.asarray(outputs[t.name])[known], y[known], scenario[known], schema.num_scenarios,
                _transform(t), calibration, (base or {}).get(t.name),
            )
        return cls(schema, params, calibration)

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "calibration": self.calibration,
                "tasks": {k: v for k, v in self.params.items() if v}}

    @classmethod
    def from_dict(cls, schema: Any, d: Mapping[str, Any]) -> OutputMapping:
        if d.get("format") != FORMAT:
            raise ValueError(f"not an msmtrec output mapping (format {d.get('format')!r})")
        unknown = sorted(set(d.get("tasks") or {}) - {t.name for t in schema.tasks})
        if unknown:
            raise ValueError(f"output mapping names unknown task(s) {unknown}")
        return cls(schema, d.get("tasks") or {}, str(d.get("calibration", "none")))

    def save(self, run_dir: str | Path) -> Path:
        """Write ``run_dir/output_mapping.json`` atomically (temporary file, fsync, rename)."""
        path = Path(run_dir) / MAPPING_FILE
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(self.to_dict(), indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, run_dir: str | Path, schema: Any) -> OutputMapping:
        """The run's mapping, or the identity mapping when the run has none."""
        path = Path(run_dir) / MAPPING_FILE
        if not path.exists():
            return cls.identity(schema)
        return cls.from_dict(schema, json.loads(path.read_text()))


def _transform(task: Any) -> str:
    return getattr(task, "transform", "none") or "none"
