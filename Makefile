# stream-risk: every target creates the virtualenv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help venv browser test test-brokers soak lint typecheck unit demo serve schemas bench clean

help:
	@echo "make demo     run the engine on an embedded broker with a simulated market"
	@echo "              (dashboard on http://127.0.0.1:8080/; DEMO_ARGS=\"--duration 60\" etc.)"
	@echo "make test     lint, type-check and run every test (starts its own broker)"
	@echo "make test-brokers  the broker-facing tests again on librdkafka's mock cluster"
	@echo "              (a second Kafka implementation; docs/design.md D18)"
	@echo "make soak     fault-tolerance soak tests (~6 min, starts its own brokers)"
	@echo "make bench    benchmarks, each beside its baseline -> bench/results.md"
	@echo "make schemas  regenerate JSON Schemas in schemas/ from the pydantic models"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check stream_risk tests bench
	$(BIN)/ruff format --check stream_risk tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy stream_risk tests

# The dashboard's browser test drives Debian's chromium headless: install it where missing
# (apt-get as root, else sudo). Other systems: put chromium, chromium-browser or
# google-chrome on PATH first.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || command -v google-chrome >/dev/null 2>&1 || { \
	    echo "installing chromium for the dashboard's browser test (apt-get)"; \
	    SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: lint typecheck browser
	$(BIN)/python -m pytest -q

# The broker-facing tests on a second implementation, librdkafka's mock cluster (D18):
# tests/kafka and the fault tests that run on one broker; what the mock cannot run is
# deselected by its `not_on_mock` marker and listed with the reason at the end.
BROKER_TESTS ?= tests/kafka tests/faults/test_bad_input.py tests/faults/test_clock_and_order.py \
	tests/faults/test_crash.py tests/faults/test_exactly_once.py
test-brokers: $(STAMP)
	STREAM_RISK_TEST_BROKER=mock $(BIN)/python -m pytest -q $(BROKER_TESTS)

soak: $(STAMP)
	$(BIN)/python -m pytest -q -m soak tests/faults -rA

unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not broker"

schemas: $(STAMP)
	$(BIN)/python -m stream_risk.schemas_gen schemas

serve: $(STAMP)
	$(BIN)/stream-risk serve

# make demo DEMO_ARGS="--duration 60 --http-port 8081 --assets 8 --positions 40"
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/stream-risk demo $(DEMO_ARGS)

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
