# One command runs every check: `make check` (format, lint, types, tests). CI runs it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCES := core workers projector api tests

.PHONY: client install check format lint typecheck test test-topologies test-cluster test-faults-under-load bench bench-compare bench-soak demo clean

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
	$(BIN)/pytest -n 2 -m "not topology"

# CI only, after check: the tests that start a Redis Cluster (3 primaries, with replicas for
# failovers) or a Sentinel setup of their own, several redis-server processes each (marked
# `topology` by tests/conftest.py). Left out of `check` to keep it under 10 minutes on two cores;
# their faults (19 to 25) run in the fault suite under load.
test-topologies: install
	$(BIN)/pytest -n 2 -m topology tests/unit tests/integration

check: lint typecheck test

# CI only, after check: the task-flow, read-model, live-API and agent suites once more on a real
# 3-primary Redis Cluster with three partitions, one per primary (AGENTEXEC_TEST_TOPOLOGY=cluster,
# tests/support/topology.py). `check` runs every suite on one redis-server with one partition;
# this runs again the suites whose Redis traffic partitions change (which partition's log, queue
# and keys a task's verbs, the projector and the feeds use), on SQLite only: the SQL side does
# not depend on the Redis topology, and PostgreSQL runs in `check`. Left out: modules that start
# clusters or servers of their own (they run in `check`), and modules about one log's layout
# (its floor, trim, restore, the global feed's raw SSE ids and resets: their partitioned
# counterparts, readmodel/test_partitions.py and api/test_partitioned_feeds.py, run here and in
# `check`). docs/scaling.md, "What CI runs where", says why.
CLUSTER_SUITES := tests/integration/test_task_flow.py tests/integration/test_scheduling.py \
	tests/integration/test_trackers.py tests/integration/test_pipelines.py \
	tests/integration/test_agent_tasks.py tests/integration/test_runner.py \
	tests/integration/test_seed_agents.py tests/integration/readmodel tests/integration/api
CLUSTER_LEFT_OUT := readmodel/test_partitions_cluster.py api/test_redis_cluster_feeds.py \
	api/test_redis_cluster_partitioned_feeds.py api/test_reset.py api/test_feed_outages.py \
	readmodel/test_floor.py readmodel/test_retention.py readmodel/test_restore.py \
	api/test_trimmed_feeds.py api/test_feeds.py
test-cluster: install
	AGENTEXEC_TEST_TOPOLOGY=cluster $(BIN)/pytest -n 2 -m "not postgres" $(CLUSTER_SUITES) \
		$(addprefix --ignore tests/integration/,$(CLUSTER_LEFT_OUT))

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
