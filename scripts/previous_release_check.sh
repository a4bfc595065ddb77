#!/usr/bin/env bash
# Expand/contract, proved: the previous release (deploy/PREVIOUS_RELEASE, or the commit in
# JACKPOT_PREVIOUS_RELEASE) keeps working against a database migrated by this checkout.
# Its source (git archive of that commit) is installed with its own requirements.lock into
# a fresh virtualenv outside the checkout; a throwaway database on 127.0.0.1:5432 is
# migrated with THIS checkout's `jackpot migrate` (head); then the previous release's
# `jackpot serve` (open mode, loopback, free ports) runs against it and its own
# `jackpot smoke` must pass. Fails if smoke fails. Everything it made (virtualenv, database,
# server) goes at exit. Needs the full git history (CI's clone has it) and this checkout's
# .venv (make .venv/.installed).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
admin_url="${JACKPOT_PREVIOUS_CHECK_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
head_bin="$repo/.venv/bin"
previous="${JACKPOT_PREVIOUS_RELEASE:-$(grep -v '^#' "$repo/deploy/PREVIOUS_RELEASE" | head -1)}"
work="$(mktemp -d)"
database="jackpot_previous_$(date +%s)_$$"
server_pid=""

cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    "$head_bin/python" - "$admin_url" "$database" <<'PY' || true
import sys

import psycopg

with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute(f"DROP DATABASE IF EXISTS {sys.argv[2]} WITH (FORCE)")
PY
    rm -rf "$work"
}
trap cleanup EXIT

step() { echo "previous-release-check: $*"; }

if ! git -C "$repo" cat-file -e "${previous}^{commit}" 2>/dev/null; then
    echo "previous release ${previous:-(none)} is not in this clone's history:" \
        "fetch it (git fetch --unshallow) or fix deploy/PREVIOUS_RELEASE" >&2
    exit 1
fi
step "previous release $(git -C "$repo" log -1 --format='%h %s' "$previous")"

step "installing it (its requirements.lock, then its source) into a fresh virtualenv"
mkdir "$work/src" "$work/run"
git -C "$repo" archive "$previous" | tar -x -C "$work/src"
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --require-hashes -r "$work/src/requirements.lock"
"$work/venv/bin/pip" install --quiet --no-deps "$work/src"
old_bin="$work/venv/bin"
cd "$work/run"  # nothing imports from the checkout

read -r grpc_port health_port < <("$head_bin/python" - <<'PY'
import socket

sockets = [socket.socket() for _ in range(2)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
for s in sockets:
    s.close()
PY
)

"$head_bin/python" - "$admin_url" "$database" <<'PY'
import sys

import psycopg

with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute(f"CREATE DATABASE {sys.argv[2]}")
PY
database_url="${admin_url%/*}/$database"
unset JACKPOT_EMBEDDED_DB JACKPOT_MIGRATE_ON_START JACKPOT_CLIENTS_FILE JACKPOT_ADMIN_TOKEN \
    JACKPOT_TOKEN JACKPOT_BACKUP_DIR DATABASE_URL JACKPOT_GRPC_TARGET
export OTEL_SDK_DISABLED=true JACKPOT_LOG_DIR="$work/logs"

step "migrating a fresh database with this checkout ($("$head_bin/python" -c \
    'from jackpot_grpc.adapters.migrations import head_revision; print(head_revision())'))"
DATABASE_URL="$database_url" "$head_bin/jackpot" migrate

step "the previous release's server on 127.0.0.1:$grpc_port (health :$health_port)"
DATABASE_URL="$database_url" GRPC_HOST=127.0.0.1 GRPC_PORT="$grpc_port" \
    HEALTH_HOST=127.0.0.1 HEALTH_PORT="$health_port" \
    "$old_bin/jackpot" serve --no-migrate > "$work/serve.out" 2>&1 &
server_pid=$!
target="127.0.0.1:$grpc_port"
up=""
for _ in $(seq 1 150); do  # at most ~30 s
    if "$old_bin/jackpot" health --grpc-only --grpc-target "$target" --timeout 1 \
        > /dev/null 2>&1; then
        up=1
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        break
    fi
    sleep 0.2
done
if [ -z "$up" ]; then
    cat "$work/serve.out" >&2
    echo "the previous release's server did not come up against the migrated database" >&2
    exit 1
fi

step "the previous release's smoke against it"
if ! "$old_bin/jackpot" smoke --grpc-target "$target" \
    --health-url "http://127.0.0.1:$health_port" --timeout 10; then
    tail -50 "$work/serve.out" >&2
    echo "the previous release FAILS against this checkout's schema: split the migration" \
        "(expand now, contract in a later release; docs/DEPLOY.md)" >&2
    exit 1
fi

step "stopping it"
kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=""
step "ok"
