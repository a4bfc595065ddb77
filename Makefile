# Every target creates the virtualenv on first use, so a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run serve gateway test test-fast lint generate migrate bench clean dashboard prometheus-tools \
	health-check test-smoke test-post-deploy db-migrate db-migrate-dry-run db-health-check \
	backup-create performance-report config-validate db-pool-status diagnostics audit

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

## run: migrate and serve gRPC (:50051), health/metrics (:3001) and the REST gateway (:3000)
run: $(STAMP)
	$(BIN)/jackpot run

serve: $(STAMP)
	$(BIN)/jackpot serve

gateway: $(STAMP)
	$(BIN)/jackpot gateway

## test: every test (unit, integration, e2e) against real PostgreSQL
test: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check jackpot_grpc tests bench scripts migrations
	$(BIN)/ruff format --check jackpot_grpc tests bench scripts migrations
	$(BIN)/mypy

generate: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

## dashboard: regenerate deploy/grafana/jackpot-dashboard.json from scripts/gen_dashboard.py
dashboard: $(STAMP)
	$(BIN)/python scripts/gen_dashboard.py

## prometheus-tools: Debian's prometheus and promtool, for tests/prometheus (apt-get, as root)
prometheus-tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus; }
	@promtool --version | head -1

migrate db-migrate: $(STAMP)
	$(BIN)/jackpot migrate

db-migrate-dry-run: $(STAMP)
	$(BIN)/jackpot migrate --dry-run

bench: $(STAMP)
	$(BIN)/python -m bench.run

audit: $(STAMP)
	$(BIN)/jackpot audit

# The runbook's npm scripts, translated (docs/OPERATIONS.md).
health-check: $(STAMP)
	$(BIN)/jackpot health

test-smoke: $(STAMP)
	$(BIN)/jackpot smoke

test-post-deploy: $(STAMP)
	$(BIN)/jackpot health
	$(BIN)/jackpot smoke

db-health-check: $(STAMP)
	$(BIN)/jackpot db check

backup-create: $(STAMP)
	$(BIN)/jackpot backup create

performance-report: $(STAMP)
	$(BIN)/jackpot report

config-validate: $(STAMP)
	$(BIN)/jackpot config validate $(CONFIG)

db-pool-status: $(STAMP)
	$(BIN)/jackpot db pool-status

diagnostics: $(STAMP)
	$(BIN)/jackpot diagnostics

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
