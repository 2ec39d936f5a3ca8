# The two front doors: `make demo` and `make test`. Both install what they need into
# .venv first (torch==2.13.0 before anything that depends on it: a local CPU wheel).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kibotos-installed

.PHONY: demo test lint typecheck install clean

demo: $(STAMP)
	$(BIN)/kibotos demo

# KIBOTOS_TEST_NO_SKIP: make install provides every dependency, so no test may skip.
# The lint runs first: it takes a second and fails before the 30-minute suite would.
test: lint
	KIBOTOS_TEST_NO_SKIP=1 $(BIN)/python -m pytest -q --durations=30

lint: $(STAMP)
	$(BIN)/ruff check .

# mypy over the packages named in pyproject.toml; not yet clean (README: tooling)
typecheck: $(STAMP)
	$(BIN)/mypy

install: $(STAMP)

$(STAMP): pyproject.toml
	bash infra/system_deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	$(BIN)/python -m pip install -q --no-deps mediapipe==0.10.21
	touch $(STAMP)

clean:
	rm -rf $(VENV) .kibotos .pytest_cache
