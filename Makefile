# Every target creates the virtualenv on first use, so a fresh machine needs only Python 3.11+.
# It is installed from requirements-dev.lock (every dependency pinned, with hashes), then the
# project itself without dependencies. `make lock` regenerates the locks from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Developer mode: with no DATABASE_URL, `make run`, `make serve` and `make test` use the
# embedded PostgreSQL (.data/postgres). Only these: every operator target (backup-create,
# audit, db-migrate, ...) needs DATABASE_URL and refuses without it, never touching a
# throwaway database.
EMBEDDED_DB_TARGETS := run serve test
$(EMBEDDED_DB_TARGETS): export JACKPOT_EMBEDDED_DB ?= 1

# The lock tool lives in a virtualenv of its own (not in the locks it writes).
UV_VERSION := 0.13.8
LOCK_VENV := .venv-lock
UV := $(abspath $(LOCK_VENV))/bin/uv
# --no-config: no uv.toml or pip configuration of this machine shapes the locks; --universal:
# one lock for every platform and Python from 3.11 up.
UV_COMPILE := $(UV) pip compile --no-config --universal --python-version 3.11 \
	--generate-hashes --quiet --custom-compile-command "make lock"

.PHONY: run serve gateway test test-fast lint generate migrate bench clean lock lock-check \
	wheel-check health-check test-smoke test-post-deploy db-migrate db-migrate-dry-run \
	db-health-check backup-create performance-report config-validate db-pool-status \
	diagnostics audit dashboard prometheus-tools test-load security-audit

$(STAMP): pyproject.toml setup.py requirements-dev.lock
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r requirements-dev.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

$(UV):
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q uv==$(UV_VERSION)

# Versions already in a lock are kept (uv reads the output file): only what pyproject.toml
# changed moves. `rm requirements*.lock; make lock` takes the newest of everything. Paths are
# relative to LOCK_DIR, so the files' comments read the same wherever they were written.
LOCK_DIR ?= .

## lock: regenerate requirements.lock (runtime) and requirements-dev.lock (dev + embedded)
lock: $(UV)
	cd $(LOCK_DIR) && $(UV_COMPILE) pyproject.toml -o requirements.lock
	cd $(LOCK_DIR) && $(UV_COMPILE) pyproject.toml --extra dev --extra embedded \
		-c requirements.lock -o requirements-dev.lock

## lock-check: fail when the locks no longer match pyproject.toml (regenerated aside, compared)
lock-check: $(UV)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	cp pyproject.toml requirements.lock requirements-dev.lock "$$tmp"/ && \
	$(MAKE) --no-print-directory lock LOCK_DIR="$$tmp" && \
	diff -u requirements.lock "$$tmp"/requirements.lock && \
	diff -u requirements-dev.lock "$$tmp"/requirements-dev.lock || \
	{ echo "the locks do not match pyproject.toml: run make lock, commit them" >&2; exit 1; }

## run: migrate and serve gRPC (:50051), health/metrics (:3001) and the REST gateway (:3000);
## with no DATABASE_URL, on the embedded PostgreSQL (JACKPOT_EMBEDDED_DB, set above)
## Signs ledger checkpoints with JACKPOT_LEDGER_KEY_FILE, else a development key it makes
## under .data/ (checkpoints to .data/checkpoints.log unless JACKPOT_CHECKPOINT_LOG is set)
DEV_LEDGER_KEY := $(CURDIR)/.data/ledger-dev.key
run: $(STAMP)
	@if [ -z "$$JACKPOT_LEDGER_KEY_FILE" ] && [ ! -f "$(DEV_LEDGER_KEY)" ]; then \
		$(BIN)/jackpot ledger keygen --out "$(DEV_LEDGER_KEY)" --name jackpot-dev-ledger; fi
	JACKPOT_LEDGER_KEY_FILE="$${JACKPOT_LEDGER_KEY_FILE:-$(DEV_LEDGER_KEY)}" \
	JACKPOT_CHECKPOINT_LOG="$${JACKPOT_CHECKPOINT_LOG:-$(CURDIR)/.data/checkpoints.log}" \
		$(BIN)/jackpot run

.PHONY: run-edge
## run-edge: `make run` behind HAProxy (make edge-tools): the edge on GRPC_PORT and REST_PORT
## with per-client limits, the server and gateway on loopback ports behind it (docs/DEPLOY.md)
run-edge: $(STAMP)
	$(BIN)/jackpot run --edge

serve: $(STAMP)
	$(BIN)/jackpot serve

gateway: $(STAMP)
	$(BIN)/jackpot gateway

## test: every test (unit, integration, e2e) against real PostgreSQL
test: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

## lint: ruff, mypy --strict (the package, migrations, tests, testkit and bench: pyproject's
## [tool.mypy] files), import-linter, the test-assertion check, the generated blocking twins
## (scripts/async_to_sync.py --check: two_flights_sync.py), and the proto against the
## previous release's (scripts/proto_breaking.py: no field, rpc or enum value removed,
## renumbered or retyped; needs the previous release's commit in the clone's history)
lint: $(STAMP)
	$(BIN)/ruff check jackpot_grpc migrations tests testkit bench scripts setup.py
	$(BIN)/ruff format --check jackpot_grpc migrations tests testkit bench scripts setup.py
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/python scripts/check_test_assertions.py
	$(BIN)/python scripts/async_to_sync.py --check
	$(BIN)/python scripts/proto_breaking.py

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

.PHONY: test-tools
## test-tools: every tool the suite needs from the machine, as CI has them (apt-get, as root):
## Prometheus (above) and Debian's PgBouncer, for tests/integration/test_pgbouncer.py
test-tools: prometheus-tools
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer; }
	@PATH="$$PATH:/usr/sbin" pgbouncer --version | head -1

.PHONY: edge-tools
## edge-tools: Debian's HAProxy (2.6), the edge of `make run-edge` and tests/edge (apt-get, as root)
edge-tools:
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy; }
	@PATH="$$PATH:/usr/sbin" haproxy -v | head -1

.PHONY: failover-tools test-failover
## failover-tools: Debian's Patroni and etcd, for the real-cluster failover suite
## (tests/failover, make test-failover) on Debian's PostgreSQL 15 (apt-get, as root)
failover-tools:
	@command -v patroni >/dev/null && command -v patronictl >/dev/null && \
		command -v etcd >/dev/null || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends patroni etcd-server; }
	@patroni --version | head -1
	@etcd --version | head -1

## test-failover: a real cluster (one etcd, three PostgreSQL nodes under Patroni, synchronous
## mode) on loopback; the service under keyed load while the leader is killed, switched over,
## and while writes freeze (tests/failover, ~1.5 min; figures in .data/failover-results.json)
## On overrun, SIGINT rather than TERM: pytest still runs the teardown that kills the cluster.
test-failover: $(STAMP)
	timeout -s INT 600 $(BIN)/pytest -q -m failover tests/failover $(PYTEST_ARGS)

migrate db-migrate: $(STAMP)
	$(BIN)/jackpot migrate

db-migrate-dry-run: $(STAMP)
	$(BIN)/jackpot migrate --dry-run

bench: $(STAMP)
	$(BIN)/python -m bench.run

.PHONY: grpcjs-probe
## grpcjs-probe: the independent grpc-js probe (bench/grpcjs; needs Node.js 20 and npm): `npm ci`
## once, then a closed loop of 64 calls in flight, health Check then Contribute, against a
## server it starts on a fresh database; prints calls/s of each and Contribute / Check
grpcjs-probe: $(STAMP)
	$(BIN)/python -m bench.grpcjs_probe $(PROBE_ARGS)

audit: $(STAMP)
	$(BIN)/jackpot audit

# The runbook's npm scripts, translated (docs/OPERATIONS.md).
health-check: $(STAMP)
	$(BIN)/jackpot health

# The instance under test: TARGET (gRPC host:port; empty: JACKPOT_GRPC_TARGET, else
# localhost:GRPC_PORT) and HEALTH_URL (its health HTTP; needed when TARGET is not this host's
# GRPC_PORT). Smoke writes nothing (validate_only) unless SMOKE_ARGS=--write.
TARGET ?=
HEALTH_URL ?=
INSTANCE_ARGS = $(if $(TARGET),--grpc-target $(TARGET)) $(if $(HEALTH_URL),--health-url $(HEALTH_URL))
test-smoke: $(STAMP)
	$(BIN)/jackpot smoke $(INSTANCE_ARGS) $(SMOKE_ARGS)

test-post-deploy: $(STAMP)
	$(BIN)/jackpot health $(INSTANCE_ARGS)
	$(BIN)/jackpot smoke $(INSTANCE_ARGS) $(SMOKE_ARGS)

# The runbook's `npm run test:load -- --target=green`: TARGET (as above), REST_URL
# (optional gateway), DURATION (s), RATE (calls/s; empty: closed loop), KIND (default
# get_pools: reads only), LOAD_ARGS (e.g. KIND=contribute LOAD_ARGS=--validate-only, --allow-writes).
DURATION ?= 30
RATE ?=
KIND ?= get_pools
test-load: $(STAMP)
	$(BIN)/jackpot loadtest $(if $(TARGET),--grpc-target $(TARGET)) --duration $(DURATION) \
		--kind $(KIND) $(if $(RATE),--rate $(RATE)) $(if $(REST_URL),--rest-url $(REST_URL)) \
		$(LOAD_ARGS)

# The runbook's `npm run security:audit`: known vulnerabilities of the installed (pinned)
# dependencies; the project itself is not on PyPI, so it is skipped. --strict: a dependency
# that could not be audited (no network, say) fails the target instead of passing unaudited.
security-audit: $(STAMP)
	$(BIN)/pip-audit --skip-editable --strict

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

## wheel-check: the built wheel, installed from the runtime lock outside the checkout, migrates,
## serves and passes `jackpot smoke` (PostgreSQL on 127.0.0.1:5432)
wheel-check: $(STAMP)
	PYTHON=$(abspath $(BIN))/python scripts/wheel_check.sh

clean:
	rm -rf $(VENV) $(LOCK_VENV) .pytest_cache .mypy_cache .ruff_cache
