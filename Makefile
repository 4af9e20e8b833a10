# Jifen: the two commands a newcomer needs are `make up` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.synced

.PHONY: up down status test bench lint deps clean

deps: $(STAMP)

# Installs uv if missing, then the locked dependencies into .venv.
$(STAMP): pyproject.toml uv.lock
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	$(PYTHON) -m uv sync --frozen --python $(PYTHON)
	@touch $(STAMP)

## up: Kafka, PostgreSQL and the services running locally, a simulated store feed, a summary.
up: deps
	$(BIN)/jifen stack up
	$(BIN)/jifen simulate --count 2000 --rate 500

## down: stop exactly what `make up` started.
down:
	@if [ -x $(BIN)/jifen ]; then $(BIN)/jifen stack down; fi

status: deps
	$(BIN)/jifen stack status

## test: the whole suite against real Kafka and PostgreSQL (started locally when none is given).
test: deps
	$(BIN)/python -m pytest

## bench: end-to-end throughput and latency next to raw Kafka and Postgres baselines (not a test).
##        BENCH_ARGS="--mode ledger" measures the ledger alone, "--mode all" both (see README).
bench: deps
	$(BIN)/jifen stack up
	$(BIN)/jifen bench $(BENCH_ARGS)

lint: deps
	$(BIN)/ruff check .
	$(BIN)/mypy

clean: down
	rm -rf .run
