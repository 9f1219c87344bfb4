# Two commands on a fresh machine: `make demo` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest

.PHONY: demo test faults lint bench bench-quick broker venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

broker:
	@.ci/ensure-broker

# Import the sample contacts through a local stand-in of the platform's job server.
demo: venv broker
	@mkdir -p demo
	@$(BIN)/bulk-import emulate --declare --store demo/profiles.sqlite -q & pid=$$!; \
	$(BIN)/bulk-import run sample_data/contacts.parquet --db 1 --declare \
	  --results demo/contacts.results.csv --summary demo/summary.json; status=$$?; \
	kill -TERM $$pid; wait $$pid; \
	echo "results file: demo/contacts.results.csv   summary: demo/summary.json"; \
	exit $$status

# Unit and integration tests (the integration tests use the RabbitMQ on 127.0.0.1).
test: venv broker
	$(PYTEST) -q -m "not faults"

# The fault suite: broker restarts, alarms, killed processes, misbehaving replies, bad input.
faults: venv broker
	$(PYTEST) -q -m faults

lint: venv
	$(BIN)/ruff check bulk_import tests benchmarks
	$(BIN)/ruff format --check bulk_import tests benchmarks
	$(BIN)/mypy

bench: $(BENCH_STAMP) broker
	$(BIN)/python benchmarks/run.py

bench-quick: $(BENCH_STAMP) broker
	$(BIN)/python benchmarks/run.py --quick

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache
