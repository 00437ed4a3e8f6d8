# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared/data

.PHONY: setup torchrec demo test lint dist bench-quick clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@if $(PY) -m pip list 2>/dev/null | grep -qi nvidia; then echo "error: CUDA packages were installed; check constraints.txt" >&2; exit 1; fi
	touch $@

setup: $(VENV)/.installed

# TorchRec for sharded embedding tables (train.embeddings=torchrec), CPU build, into $(VENV) (VENV=... for
# another one). torchrec goes in with --no-deps: its own requirements would pull the CUDA fbgemm-gpu.
# Fails if torch changed or anything CUDA came in.
torchrec: setup
	@before=$$($(PY) -c 'import torch; print(torch.__version__)'); \
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,torchrec]' && \
	$(PY) -m pip install -q -c constraints.txt --no-deps torchrec==1.8.0 && \
	after=$$($(PY) -c 'import torch; print(torch.__version__)') && \
	if [ "$$before" != "$$after" ]; then echo "error: pip replaced torch $$before with $$after" >&2; exit 1; fi && \
	if $(PY) -m pip list 2>/dev/null | grep -qi nvidia; then echo "error: CUDA packages were installed" >&2; exit 1; fi && \
	$(PY) -c 'import torchrec, fbgemm_gpu; print("torchrec", torchrec.__version__, "on torch", "'"$$after"'")'

demo: setup
	rm -rf runs/demo-hef
	$(VENV)/bin/msmtrec train --data hillstrom --model hef --out runs/demo-hef

# What CI runs (.ci/run calls exactly this): ruff, the test suite, then the two slow checks of what the
# README promises: its "Using it" commands run as written, and the wheel installs and finds its specs/suites.
test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q
	$(PY) -m pytest -q -m slow tests/test_readme.py tests/test_wheel.py

dist: setup
	$(PY) -m build --wheel --outdir dist .

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench-quick: setup
	$(VENV)/bin/msmtrec benchmark hillstrom --quick --out runs/bench-quick

clean:
	rm -rf $(VENV) runs
