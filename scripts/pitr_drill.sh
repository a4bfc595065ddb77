#!/usr/bin/env bash
# The quarterly point-in-time recovery drill (docs/OPERATIONS.md, "Point-in-time recovery
# drill"), on a throwaway cluster: initdb with WAL archiving on a free port, the jackpot
# schema (this checkout's `jackpot migrate`), a base backup (pg_basebackup), contributions
# through a real `jackpot serve`, a timestamp noted, more contributions, then recovery of
# the base backup to that timestamp into a second data directory from the WAL archive.
# Exactly the contributions before the timestamp must be there, and `jackpot audit` must
# find the books balanced. Uses Debian's PostgreSQL binaries (/usr/lib/postgresql/<newest>/
# bin, or PG_BIN); as root, the cluster runs as the postgres user. Bounded (every wait has a
# deadline; the whole drill takes well under a minute) and leaves nothing behind.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
head_bin="$repo/.venv/bin"
pg_bin="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}"
work="$(mktemp -d /tmp/jackpot-pitr.XXXXXX)"
server_pid=""
BEFORE=5  # contributions before the timestamp (kept)
AFTER=3   # contributions after it (must not come back)

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

stop_cluster() {
    if [ -f "$1/postmaster.pid" ]; then
        as_pg "$pg_bin/pg_ctl" -D "$1" -m immediate -w -t 30 stop > /dev/null 2>&1 || true
    fi
}

cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    stop_cluster "$work/primary"
    stop_cluster "$work/restored"
    rm -rf "$work"
}
trap cleanup EXIT

step() { echo "pitr-drill: [${SECONDS}s] $*"; }
fail() { echo "pitr-drill: FAILED: $*" >&2; exit 1; }

# Waits up to $1 tenths of a second for the command after it to succeed.
wait_for() {
    local tenths=$1
    shift
    for _ in $(seq 1 "$tenths"); do
        if "$@" > /dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

free_ports() {
    "$head_bin/python" - "$1" <<'PY'
import socket
import sys

sockets = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
for s in sockets:
    s.close()
PY
}

psql_at() {  # port, database, SQL: one value
    "$pg_bin/psql" -X -A -t -q -h 127.0.0.1 -p "$1" -U postgres -d "$2" -c "$3"
}

[ -x "$pg_bin/initdb" ] || fail "no PostgreSQL server binaries in $pg_bin (set PG_BIN)"
read -r primary_port restored_port grpc_port health_port < <(free_ports 4)
mkdir "$work/archive" "$work/logs"
if [ "$(id -u)" = 0 ]; then chown postgres "$work" "$work/archive"; fi
chmod 755 "$work"

step "initdb a throwaway cluster ($pg_bin) on 127.0.0.1:$primary_port, WAL archived"
as_pg "$pg_bin/initdb" -D "$work/primary" -U postgres -A trust --no-sync > /dev/null
cat >> "$work/primary/postgresql.conf" <<CONF
port = $primary_port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
wal_level = replica
archive_mode = on
archive_command = 'test ! -f $work/archive/%f && cp %p $work/archive/%f'
archive_timeout = 0
fsync = off
CONF
as_pg "$pg_bin/pg_ctl" -D "$work/primary" -l "$work/primary.log" -w -t 60 start > /dev/null
psql_at "$primary_port" postgres "CREATE DATABASE jackpot"
database_url="postgresql://postgres@127.0.0.1:$primary_port/jackpot"

unset JACKPOT_EMBEDDED_DB JACKPOT_MIGRATE_ON_START JACKPOT_CLIENTS_FILE JACKPOT_ADMIN_TOKEN \
    JACKPOT_TOKEN JACKPOT_BACKUP_DIR JACKPOT_GRPC_TARGET
export OTEL_SDK_DISABLED=true JACKPOT_LOG_DIR="$work/logs"
step "the jackpot schema (jackpot migrate)"
DATABASE_URL="$database_url" "$head_bin/jackpot" migrate > /dev/null

step "base backup (pg_basebackup)"
as_pg "$pg_bin/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres \
    -D "$work/base" -X stream --checkpoint=fast --no-sync

step "jackpot serve on 127.0.0.1:$grpc_port against the cluster"
DATABASE_URL="$database_url" GRPC_HOST=127.0.0.1 GRPC_PORT="$grpc_port" \
    HEALTH_HOST=127.0.0.1 HEALTH_PORT="$health_port" \
    "$head_bin/jackpot" serve --no-migrate > "$work/serve.out" 2>&1 &
server_pid=$!
target="127.0.0.1:$grpc_port"
wait_for 300 "$head_bin/jackpot" health --grpc-only --grpc-target "$target" --timeout 1 ||
    { cat "$work/serve.out" >&2; fail "jackpot serve did not come up"; }

contribute() {  # key prefix, count
    "$head_bin/python" - "$target" "$1" "$2" <<'PY'
import sys

import grpc
from jackpot.v1 import jackpot_pb2 as pb
from jackpot.v1 import jackpot_pb2_grpc

target, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with grpc.insecure_channel(target) as channel:
    stub = jackpot_pb2_grpc.JackpotServiceStub(channel)
    for n in range(count):
        request = pb.ContributeRequest(
            game_id="pitr-drill", wager_amount=1000, idempotency_key=f"{prefix}-{n}"
        )
        stub.Contribute(request, timeout=10)
PY
}

step "$BEFORE contributions, then the recovery target time, then $AFTER more"
contribute pitr-before "$BEFORE"
sleep 1
target_time="$(psql_at "$primary_port" postgres "SELECT now()")"
sleep 1
contribute pitr-after "$AFTER"
kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=""
# The segment holding the later writes goes to the archive too: recovery must see a commit
# past the target to know where to stop.
segment="$(psql_at "$primary_port" postgres "SELECT pg_walfile_name(pg_switch_wal())")"
archived() { test -f "$work/archive/$segment"; }
wait_for 300 archived || fail "WAL segment $segment was not archived"
as_pg "$pg_bin/pg_ctl" -D "$work/primary" -m fast -w -t 60 stop > /dev/null

step "recovering the base backup to $target_time into a new data directory"
cp -a "$work/base" "$work/restored"
cat >> "$work/restored/postgresql.conf" <<CONF
port = $restored_port
archive_mode = off
restore_command = 'cp $work/archive/%f %p'
recovery_target_time = '$target_time'
recovery_target_action = 'promote'
CONF
as_pg touch "$work/restored/recovery.signal"
as_pg "$pg_bin/pg_ctl" -D "$work/restored" -l "$work/restored.log" -w -t 120 start > /dev/null
promoted() { [ "$(psql_at "$restored_port" postgres "SELECT pg_is_in_recovery()")" = f ]; }
wait_for 600 promoted || { cat "$work/restored.log" >&2; fail "recovery did not finish"; }

restored_url="postgresql://postgres@127.0.0.1:$restored_port/jackpot"
kept="$(psql_at "$restored_port" jackpot \
    "SELECT count(*) FROM contributions WHERE idempotency_key LIKE 'pitr-before-%'")"
later="$(psql_at "$restored_port" jackpot \
    "SELECT count(*) FROM contributions WHERE idempotency_key LIKE 'pitr-after-%'")"
step "restored: $kept contribution(s) from before the target, $later from after"
[ "$kept" = "$BEFORE" ] && [ "$later" = 0 ] ||
    fail "expected $BEFORE before and 0 after the target time, found $kept and $later"

step "jackpot audit of the restored ledger"
DATABASE_URL="$restored_url" "$head_bin/jackpot" audit || fail "the restored books do not balance"
step "ok"
