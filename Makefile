# The two commands of the README: `make demo` and `make test`. Each creates the virtual
# environment on first use and installs what it needs from the package's own files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench bench-full mutate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-mutate: pyproject.toml $(VENV)/.installed-test
	$(BIN)/python -m pip install -q -e '.[test,mutate]'
	touch $@

demo: $(VENV)/.installed-run
	$(BIN)/botvisor demo $(DEMO_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q -n auto --dist loadfile

# The raw figures also go to .bench/ (ignored by git): `python -m bench --render FILE`
# rewrites docs/BENCHMARKS.md from them after a change to its prose, measuring nothing.
bench: $(VENV)/.installed-test
	mkdir -p .bench
	$(BIN)/python -m bench --json .bench/quick.json

bench-full: $(VENV)/.installed-test
	mkdir -p .bench
	$(BIN)/python -m bench --full --json .bench/full.json

# Mutation testing, one core module at a time against that module's own tests; the score and
# the survivors go to docs/TESTING.md. Not part of `make test` (it takes long on 2 cores).
# `make mutate MODULES="actors/breaker.py admin/auth.py"` runs only those.
mutate: $(VENV)/.installed-mutate
	$(BIN)/python -m tests.mutate $(MODULES)

clean:
	rm -rf $(VENV) build *.egg-info .mutate
