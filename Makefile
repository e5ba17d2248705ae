# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install checkov schemathesis demo replay ui mlflow-ui test test-live test-all lint bench bench-train bench-drift bench-sensor bench-scale bench-serving bench-lineage clean-data audit serve deploy audit-ui

# torch==2.13.0 goes in first, from the CPU wheel on disk: with it installed, nothing later can
# pull a CUDA build. constraints.txt is the resolved, known-good set (see docs/architecture.md).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	@$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') and torch.version.cuda is None else 'torch ' + v + ' is not the 2.13.0 CPU build')"
	@touch $(STAMP)

install: $(STAMP)

# checkov scans infra/ (ml_platform_tests/test_infra.py). It lives in its own venv, like pip-audit:
# it pins many packages that conflict with constraints.txt. infra/checkov-requirements.txt is its
# exact resolved set (checkov==3.3.30); a change to that file reinstalls.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
$(CHECKOV_STAMP): infra/checkov-requirements.txt
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q -r infra/checkov-requirements.txt
	@touch $(CHECKOV_STAMP)

checkov: $(CHECKOV_STAMP)  ## checkov, pinned, in .venv-checkov (the infra/ scan of make test)

# schemathesis (and openapi-spec-validator) check the live Bento's /docs.json against what it answers
# (ml_platform_tests/serving/test_api_contract.py, a live test). Its own venv, like checkov, though
# the set resolves beside constraints.txt: its pytest plugin and hypothesis stay out of the suite.
SCHEMATHESIS_VENV := .venv-schemathesis
SCHEMATHESIS_REQS := ml_platform_tests/serving/schemathesis-requirements.txt
SCHEMATHESIS_STAMP := $(SCHEMATHESIS_VENV)/.installed
$(SCHEMATHESIS_STAMP): $(SCHEMATHESIS_REQS)
	@test -x $(SCHEMATHESIS_VENV)/bin/python || $(PYTHON) -m venv $(SCHEMATHESIS_VENV)
	$(SCHEMATHESIS_VENV)/bin/python -m pip install -q -r $(SCHEMATHESIS_REQS)
	@touch $(SCHEMATHESIS_STAMP)

schemathesis: $(SCHEMATHESIS_STAMP)  ## schemathesis, pinned, in .venv-schemathesis (the API contract test of make test-live)

demo: install  ## raw -> features for 2013-01-01..2013-03-31, the weekly models, then the April replay
	$(BIN)/mlp demo

replay: install  ## replay days forward after the demo (automation + retrain sensor, tick by tick)
	$(BIN)/mlp replay

serve: install  ## serve the champion's Bento (built by delay_bento) on http://127.0.0.1:3000 until Ctrl-C
	$(BIN)/mlp serve $(SERVE_ARGS)

deploy: install  ## the deployment supervisor (mlp deploy serve): router on http://127.0.0.1:3100, canary guard, until Ctrl-C
	$(BIN)/mlp deploy serve $(DEPLOY_ARGS)

ui: install  ## Dagster UI + daemon (dagster dev) on the same instance as the demo
	$(BIN)/mlp ui

audit-ui: install  ## the Dagster UI read-only on the same instance (auditors: browse lineage and metadata, launch nothing) on :3001
	$(BIN)/mlp audit-ui

mlflow-ui: install  ## MLflow UI on the demo's tracking store: runs, registered versions, aliases
	$(BIN)/mlp mlflow-ui

# The official OpenLineage JSON Schemas (the spec's files at a fixed commit, in shared/ beside the
# checkout, in CI too): the contract test of ml_platform_tests/lineage/test_openlineage.py validates
# the exported events against them, and fails under CI=true without them.
OPENLINEAGE_SPEC_DIR ?= $(abspath ../shared/openlineage-spec)
SPEC = @test -f "$(OPENLINEAGE_SPEC_DIR)/OpenLineage.json" -a -d "$(OPENLINEAGE_SPEC_DIR)/facets" || { \
	echo "$(OPENLINEAGE_SPEC_DIR) has no OpenLineage.json and facets/: the official OpenLineage JSON" \
	"Schemas (../shared/openlineage-spec, see its README) are needed by the contract test;" \
	"set OPENLINEAGE_SPEC_DIR to a copy of the spec's spec/ folder" >&2; exit 1; }

test: install checkov  ## the suite (CI) without the live-server tests (make test-live) and heavy ones
	$(SPEC)
	OPENLINEAGE_SPEC_DIR="$(OPENLINEAGE_SPEC_DIR)" $(BIN)/python -m pytest -m "not heavy and not live" $(PYTEST_ARGS)

test-live: install schemathesis  ## the tests that start bentoml serve, the Dagster webserver or Chromium (CI runs them too)
	$(SPEC)
	OPENLINEAGE_SPEC_DIR="$(OPENLINEAGE_SPEC_DIR)" $(BIN)/python -m pytest -m "live and not heavy" $(PYTEST_ARGS)

test-all: install checkov schemathesis
	$(SPEC)
	OPENLINEAGE_SPEC_DIR="$(OPENLINEAGE_SPEC_DIR)" $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install  ## ruff on everything, mypy --strict on the pure lib code
	$(BIN)/ruff check ml_platform ml_platform_tests benchmarks
	$(BIN)/mypy

bench: install  ## full-year backfill benchmark; results go to docs/benchmarks.md by hand
	$(BIN)/python benchmarks/backfill_year.py

bench-drift: install  ## profiling + drift scoring, 1M rows x 10 columns, vs plain why.log
	$(BIN)/python benchmarks/profile_drift.py

bench-sensor: install  ## retrain-sensor tick cost as the monitoring history grows (synthetic history)
	$(BIN)/python benchmarks/sensor_tick.py --snapshot

bench-scale: install  ## per-partition inputs of docs/scaling.md: Postgres event log, pods, Delta, per-row scaling (needs the local PostgreSQL)
	$(BIN)/python benchmarks/scale_inputs.py --snapshot

bench-train: install  ## training throughput, HPO trials/min, Dagster+MLflow overhead (builds its own instance)
	$(BIN)/python benchmarks/train_throughput.py

bench-serving: install  ## delay_service (BentoML) vs a plain FastAPI app, same model: p50/p99, req/s at 1-64 clients (~3 min)
	$(BIN)/python benchmarks/serving_latency.py --snapshot $(BENCH_ARGS)

bench-lineage: install  ## trace/impact latency at 1k-10k materialization events on sqlite (~10 min, mostly seeding; BENCH_ARGS="--backends sqlite,postgres" adds the local PostgreSQL, ~21 min)
	$(BIN)/python benchmarks/lineage_query.py --snapshot $(BENCH_ARGS)

clean-data:  ## forget the embedded instance and store (the demo starts from scratch)
	rm -rf .dagster storage

# Not part of `make test`: it needs the network and the advisory data changes daily (docs/security.md).
# pip-audit lives in its own venv so the project's resolved set stays untouched. --strict: a package
# the service cannot look up fails the run instead of being skipped as "No known vulnerabilities".
audit:  ## pip-audit over constraints.txt; exits non-zero on any finding or unauditable pin
	@test -x .venv-audit/bin/pip-audit || { $(PYTHON) -m venv .venv-audit && .venv-audit/bin/python -m pip install -q pip-audit==2.10.1; }
	.venv-audit/bin/pip-audit -r constraints.txt --no-deps --disable-pip --strict --format json $(AUDIT_ARGS)
