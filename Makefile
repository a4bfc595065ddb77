# Every target creates the virtualenv on first use, so a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run serve gateway test test-fast lint generate migrate bench clean \
	health-check test-smoke test-post-deploy db-migrate db-migrate-dry-run db-health-check \
	backup-create performance-report config-validate db-pool-status diagnostics audit \
	test-load security-audit

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

# The runbook's `npm run test:load -- --target=green`: TARGET (gRPC host:port), REST_URL
# (optional gateway), DURATION (s), RATE (calls/s; empty: closed loop).
TARGET ?= localhost:50051
DURATION ?= 30
RATE ?=
test-load: $(STAMP)
	$(BIN)/jackpot loadtest --grpc-target $(TARGET) --duration $(DURATION) \
		$(if $(RATE),--rate $(RATE)) $(if $(REST_URL),--rest-url $(REST_URL))

# The runbook's `npm run security:audit`: known vulnerabilities of the installed (pinned)
# dependencies; the project itself is not on PyPI, so it is skipped.
security-audit: $(STAMP)
	$(BIN)/pip-audit --skip-editable

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
