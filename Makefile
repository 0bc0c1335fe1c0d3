# One command runs every check: `make check` (format, lint, types, tests). CI runs it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCES := core workers projector api tests

.PHONY: client install check format lint typecheck test test-faults-under-load bench bench-compare bench-soak demo clean

$(BIN)/python:
	$(PY) -m pip install --quiet --upgrade uv
	$(PY) -m uv venv --quiet --python $(PY) $(VENV)

# Strict editable mode installs a link tree that mypy can follow; it is rebuilt every time so
# that new modules are picked up.
install: $(BIN)/python
	$(PY) -m uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(PY) -m uv pip install --quiet --python $(BIN)/python --no-deps -e . --config-settings editable_mode=strict

format: install
	$(BIN)/ruff format $(SOURCES)

lint: install
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/ruff check $(SOURCES)

typecheck: install
	$(BIN)/mypy -p agentexec

# Two processes: most test time is spent waiting on spawned workers, backoffs and blocking
# reads, so the suite runs in about two thirds of the time even on two cores.
test: install
	$(BIN)/pytest -n 2

check: lint typecheck test

# The fault suite once more beside a CPU hog (two busy loops per core, stopped however the run
# ends): its deadlines stretch with the load (tests/support/waiting.py). CI runs it after check.
test-faults-under-load: install
	.ci/under-load $(BIN)/pytest -n 2 tests/faults

bench: install
	$(BIN)/python -m tests.bench.tasks

# Side by side with the peers, each in its own venv under .bench-venvs/ (see docs/benchmarks.md).
bench-compare: install
	$(BIN)/python -m tests.bench.compare

# Several minutes of steady traffic: Redis memory, log length and SQL size must stay flat.
bench-soak: install
	$(BIN)/python -m tests.bench.soak --minutes 4

demo: install
	$(BIN)/agentexec --log-level WARNING demo

# The TypeScript client's OpenAPI document and the types generated from it (api/client); a
# test fails when either is not what this target makes, so commit what it changes.
client: install
	$(BIN)/python -m agentexec.api.openapi > api/client/openapi.json
	cd api/client && npm ci --no-audit --no-fund --loglevel=error && npm run --silent generate

requirements.lock: pyproject.toml
	$(PY) -m uv pip compile --quiet --python-version 3.11 --extra dev pyproject.toml -o requirements.lock

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
