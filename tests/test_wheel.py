"""Packaging: the wheel ``python -m build`` makes installs, runs ``msmtrec`` and finds every shipped spec and suite.

Built from a copy of the checkout's files (as a fresh clone would have them), installed with ``pip --target``
into a temporary folder (offline, ``--no-deps``: the dependencies are this environment's, checked against the
wheel's requirements and ``constraints.txt``'s CPU torch pin), and run from a folder with no source tree in
sight, so a spec or suite missing from the package data fails here and not on a user's machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from shipped_data import HAVE_DATA, ROOT

REPO = Path(__file__).resolve().parents[1]
# ~25 s (build + install + three interpreter start-ups): out of the quick run; `make test` runs it.
pytestmark = pytest.mark.slow

CHECK = """
import json, msmtrec
from msmtrec.data.spec import load_spec, shipped_specs
from msmtrec.benchmark.suite import load_suite, shipped_suites
specs, suites = shipped_specs(), shipped_suites()
for s in specs:
    load_spec(s)
for s in suites:
    load_suite(s)
print(json.dumps({"file": msmtrec.__file__, "specs": specs, "suites": suites}))
"""


def _checkout_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build", reason="needs the `build` package (pip install build; in the dev extra)")
    tmp = tmp_path_factory.mktemp("wheel")
    src = _checkout_copy(tmp / "src")
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp / "dist"),
                           str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheels = list((tmp / "dist").glob("msmtrec-*.whl"))
    assert len(wheels) == 1
    site = tmp / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                           "--target", str(site), str(wheels[0])], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return site


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MSMTREC_DATA")}
    return {**env, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}


def test_wheel_requirements_hold_under_the_cpu_torch_pin(installed: Path) -> None:
    from packaging.requirements import Requirement

    dist = next(metadata.distributions(path=[str(installed)], name="msmtrec"))
    pins = [Requirement(ln.split("#")[0].strip()) for ln in (REPO / "constraints.txt").read_text().splitlines()
            if ln.split("#")[0].strip()]
    base = [Requirement(r) for r in dist.requires or [] if "extra ==" not in r]
    assert "torch" in {r.name for r in base}
    for req in [*base, *pins]:
        version = metadata.version(req.name)
        assert req.specifier.contains(version, prereleases=True), f"{req} not met by installed {req.name} {version}"
    files = {str(f) for f in dist.files or []}
    assert {"msmtrec/data/specs/hillstrom.yaml", "msmtrec/benchmark/suites/hillstrom.yaml"} <= files


def test_installed_package_finds_every_shipped_spec_and_suite(installed: Path, tmp_path: Path) -> None:
    import json

    done = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, env=_env(installed), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).resolve().is_relative_to(installed.resolve())  # the wheel's copy, not the source tree
    assert sorted(got["specs"]) == sorted(p.stem for p in (REPO / "src/msmtrec/data/specs").glob("*.yaml"))
    assert sorted(got["suites"]) == sorted(p.stem for p in (REPO / "src/msmtrec/benchmark/suites").glob("*.yaml"))


def test_console_script_runs(installed: Path, tmp_path: Path) -> None:
    script = installed / "bin" / "msmtrec"
    assert script.is_file()
    done = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, env=_env(installed),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "benchmark" in done.stdout and "train" in done.stdout, done.stderr
    if HAVE_DATA:
        env = {**_env(installed), "MSMTREC_DATA": str(ROOT.resolve())}
        done = subprocess.run([sys.executable, str(script), "data", "inspect", "hillstrom"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "dataset hillstrom: 64,000 rows" in done.stdout
