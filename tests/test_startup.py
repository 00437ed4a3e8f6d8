"""Start-up: ``msmtrec --help`` and each command import only what they use (issue 17: start-up is fixed cost)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from msmtrec.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print("LOADED", sorted(m for m in {heavy!r} if m in sys.modules))
"""


def _loaded(argv: list[str], heavy: tuple[str, ...]) -> list[str]:
    code = PROBE.format(argv=argv, heavy=heavy)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("LOADED"))
    return eval(line[len("LOADED "):])  # a printed list of str


HEAVY = ("torch", "numpy", "pandas", "pyarrow", "matplotlib", "onnx", "onnxruntime", "fastapi", "uvicorn",
         "optuna", "mlflow", "tensorboard")


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["data", "--help"], ["serve", "--help"],
                                  ["plot", "--help"], ["monitor", "--help"], ["benchmark", "--help"]])
def test_help_imports_no_heavy_module(argv: list[str]) -> None:
    assert _loaded(argv, HEAVY) == []


def test_in_memory_training_path_does_not_import_pandas() -> None:
    code = ("import sys\nimport msmtrec.training.run, msmtrec.runs, msmtrec.training.trainer\n"
            "print([m for m in ('pandas', 'pyarrow', 'mlflow', 'matplotlib', 'onnx') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
