# Jifen: the two commands a newcomer needs are `make up` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.synced
REPORT_STAMP := report/node_modules/.installed

.PHONY: up down status test bench lint deps clean chromium

deps: $(STAMP) $(REPORT_STAMP) chromium

# Installs uv if missing, then the locked dependencies into .venv.
$(STAMP): pyproject.toml uv.lock
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	$(PYTHON) -m uv sync --frozen --python $(PYTHON)
	@touch $(STAMP)

# The chart library `jifen report --html` inlines, pinned by report/package-lock.json, into report/node_modules.
$(REPORT_STAMP): report/package.json report/package-lock.json
	@if ! command -v npm >/dev/null 2>&1; then \
		if [ "$$(id -u)" != 0 ]; then echo "npm is needed for the report's chart library: sudo apt-get install -y npm" >&2; exit 1; fi; \
		echo "installing npm from Debian's packages (first run only)"; \
		apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm >/dev/null; \
	fi
	cd report && npm ci --no-audit --no-fund --loglevel=error
	@touch $(REPORT_STAMP)

# Debian's chromium (and its driver), for the test that opens the HTML report in a headless browser: installed when
# missing, like PostgreSQL and Prometheus (deploy/local/infra.py), with apt-get as root.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "chromium is not installed and we are not root: run \`sudo apt-get install -y chromium chromium-driver\`" >&2; \
			exit 1; \
		fi; \
		echo "installing chromium from Debian's packages (first run only)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; \
	fi

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
	$(BIN)/python -m tests.run

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
