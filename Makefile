# Everything a fresh machine needs: `make demo` runs the demo, `make test` runs the test suite.
# torch==2.13.0 is installed before the package so pip uses the local CPU wheel, never a CUDA build.
# The ray extra is installed so the test of `mlkd bench --executor ray` runs against a real local Ray.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Benchmark data (MULAN); CI and a checkout with ../shared beside it find it here.
MLKD_DATA ?= $(abspath ../shared/datasets/mulan)
export MLKD_DATA

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,ray]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/mlkd demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(VENV)/.installed
	$(PY) benchmarks/protocol_table.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
