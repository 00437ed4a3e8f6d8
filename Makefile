# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared/data

.PHONY: setup demo test lint bench-quick clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@if $(PY) -m pip list 2>/dev/null | grep -qi nvidia; then echo "error: CUDA packages were installed; check constraints.txt" >&2; exit 1; fi
	touch $@

setup: $(VENV)/.installed

demo: setup
	rm -rf runs/demo-hef
	$(VENV)/bin/msmtrec train --data hillstrom --model hef --out runs/demo-hef

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench-quick: setup
	$(VENV)/bin/msmtrec benchmark hillstrom --quick --out runs/bench-quick

clean:
	rm -rf $(VENV) runs
