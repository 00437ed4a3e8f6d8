"""The README's "Using it" block runs as written on a fresh checkout, and everything it writes is git-ignored.

The commands are read from README.md itself, so the test breaks when the README and the CLI drift apart.
Each runs in a temporary working directory, as a user would from the checkout, with three size-only
additions to stay inside CI's budget: ``train`` gets ``--sample 3000 --epochs 1``, ``data bench`` gets
``--epochs 1``, and ``serve`` gets a free ``--port`` (then answers ``/health`` and is stopped).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from shipped_data import HAVE_DATA, ROOT

REPO = Path(__file__).resolve().parents[1]
SMALL = {("train",): ["--sample", "3000", "--epochs", "1"], ("data", "bench"): ["--epochs", "1"]}

# ~45 s of CPU: kept out of the quick default run; `make test` (what CI runs) runs it explicitly.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_DATA, reason="needs the shared Hillstrom data")]


def readme_commands() -> list[list[str]]:
    """The ``msmtrec ...`` lines of the first bash block under "## Using it", comments removed."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Using it"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README: no bash block under 'Using it'"
    commands = []
    for line in block.group(1).splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "msmtrec":
            commands.append(words[1:])
        else:
            assert not words or words[:2] == ["source", ".venv/bin/activate"], f"unexpected README line: {line}"
    return commands


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    port = _free_port()
    proc = subprocess.Popen([*cmd, "--port", str(port)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"serve exited: {proc.stdout.read() if proc.stdout else ''}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200 and json.loads(r.read())
                    return
            except OSError:
                time.sleep(0.5)
        pytest.fail("serve did not answer /health within 120 s")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_readme_commands_parse() -> None:
    commands = readme_commands()
    assert ["data", "sample", "hillstrom", "--rows", "100", "--out", "rows.csv"] in commands
    assert any(c[0] == "predict" and "rows.csv" in c for c in commands)


def test_readme_using_it_runs_as_written(tmp_path: Path) -> None:
    env = {**os.environ, "MSMTREC_DATA": str(ROOT.resolve()), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)}
    msmtrec = [sys.executable, "-m", "msmtrec"]
    for args in readme_commands():
        extra = next((v for k, v in SMALL.items() if tuple(args[:len(k)]) == k), [])
        if args[0] == "serve":
            _serve([*msmtrec, *args], tmp_path, env)
            continue
        done = subprocess.run([*msmtrec, *args, *extra], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"msmtrec {shlex.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"

    for path in ("prepared/hill/preprocessor.json", "runs/hef/metrics.json", "runs/hef/plots/loss.png",
                 "runs/hef/tensorboard", "rows.csv", "scores.parquet", "hef.onnx"):
        assert (tmp_path / path).exists(), path
    # every file the README's commands create would be ignored by git in the checkout
    created = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    check = subprocess.run(["git", "check-ignore", "--no-index", "--verbose", "--non-matching", "--stdin"],
                           cwd=REPO, input="\n".join(created), capture_output=True, text=True)
    not_ignored = [ln.split("\t", 1)[1] for ln in check.stdout.splitlines() if ln.startswith("::")]
    assert not not_ignored, f"README outputs git would track: {not_ignored}"
