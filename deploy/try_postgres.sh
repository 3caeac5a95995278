#!/usr/bin/env bash
# The production layout of docs/deploy.md, tried on one machine and cleaned up after:
#   PostgreSQL 15 (a throw-away cluster on 127.0.0.1:$PG_PORT) -> the Prefect server on it
#   (127.0.0.1:$PREFECT_PORT) -> the deployments of prefect.yaml and a process worker polling
#   the work pool tubetrail-process -> a simulated round ingested and reported by that worker
#   (the report fans out per district on a Dask LocalCluster) -> the runs counted in PostgreSQL.
#
# Usage (from the repository): deploy/try_postgres.sh [RESIDENTS]   (default 5000)
# Needs: /usr/lib/postgresql/15/bin (Debian's postgresql-15), the project's .venv. Run as root
# it runs PostgreSQL as the user `postgres`. Exit 0 only when every flow run completed and the
# runs are found in PostgreSQL. KEEP=1 keeps the temporary folder.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_PORT=${PG_PORT:-5433}
PREFECT_PORT=${PREFECT_PORT:-4300}
RESIDENTS=${1:-5000}
VENV=$REPO/.venv/bin
WORK=$(mktemp -d /tmp/tubetrail-pg-trial.XXXXXX)
chmod 755 "$WORK"
PG_DATA=$WORK/pgdata
PG_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
PIDS=()

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*"; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_q() { as_pg "$PG_BIN/psql" -h "$WORK" -p "$PG_PORT" -U postgres -d "${PGDB:-prefect}" -Atq -c "$1"; }

cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ -f "$PG_DATA/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
    if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT INT TERM

for port in "$PG_PORT" "$PREFECT_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port is taken" >&2; exit 2; fi
done
[ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL 15 is missing: $PG_BIN/initdb" >&2; exit 2; }

# 1. PostgreSQL: a cluster of its own, a role and a database for Prefect
log "$("$PG_BIN/postgres" --version); initdb in $PG_DATA"
mkdir "$PG_DATA"
[ "$(id -u)" = 0 ] && chown postgres: "$PG_DATA" "$WORK"
as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >"$WORK/initdb.log"
as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$WORK/postgres.log" -w \
    -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c max_connections=100" start >/dev/null
PGDB=postgres psql_q "CREATE ROLE prefect LOGIN PASSWORD '$PG_PASSWORD'"
PGDB=postgres psql_q "CREATE DATABASE prefect OWNER prefect"
log "PostgreSQL on 127.0.0.1:$PG_PORT, database prefect, role prefect"

# 2. The Prefect server on PostgreSQL
export PREFECT_HOME=$WORK/prefect-home
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_SERVER_DATABASE_CONNECTION_URL="postgresql+asyncpg://prefect:$PG_PASSWORD@127.0.0.1:$PG_PORT/prefect"
export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api
export PREFECT_LOGGING_LEVEL=WARNING
started=$(date +%s.%N)
"$VENV/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT" >"$WORK/prefect-server.log" 2>&1 &
PIDS+=($!)
until curl -fsS "$PREFECT_API_URL/health" >/dev/null 2>&1; do
    kill -0 "${PIDS[0]}" 2>/dev/null || { tail -30 "$WORK/prefect-server.log" >&2; exit 1; }
    sleep 0.5
done
ready=$(date +%s.%N)
log "Prefect $("$VENV/prefect" version 2>/dev/null | awk '/^Version/ {print $2}') on PostgreSQL answered" \
    "after $(printf '%.1f' "$(echo "$ready - $started" | bc)") s (migrations included: a fresh database)"
log "tables Prefect created in PostgreSQL: $(psql_q "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")"
unset PREFECT_SERVER_DATABASE_CONNECTION_URL   # clients and workers need only PREFECT_API_URL
# once per server: the work pool and the writer limit (before any flow, which would create it)
"$VENV/prefect" work-pool create tubetrail-process --type process >/dev/null
"$VENV/prefect" gcl create tubetrail-warehouse-writer --limit 1 >/dev/null

# 3. The city, the config, the round (flow open-round, recorded on this server)
export TUBETRAIL_ID_HASH_KEY=tubetrail-trial-key-not-for-production
export TUBETRAIL_CONFIG=$WORK/tubetrail.toml
printf '[warehouse]\npath = "%s"\nmemory_limit = "4GB"\n' "$WORK/warehouse.duckdb" >"$TUBETRAIL_CONFIG"
"$VENV/tubetrail" simulate --residents "$RESIDENTS" --out "$WORK/inbox" >/dev/null
read -r ROUND START END < <("$VENV/python" -c "import json,sys; t=json.load(open(sys.argv[1]))['round']; print(t['id'], t['start'], t['end'])" "$WORK/inbox/_truth.json")
"$VENV/tubetrail" round open --id "$ROUND" --start "$START" --end "$END" >/dev/null
log "simulated $RESIDENTS residents into $WORK/inbox; round $ROUND opened"

# 4. The deployments of prefect.yaml, a worker
(cd "$REPO" && "$VENV/prefect" --no-prompt deploy --all >"$WORK/deploy.log" 2>&1)
mkdir "$WORK/worker"
(cd "$WORK/worker" && TUBETRAIL_HOME="$REPO" exec "$VENV/prefect" worker start --pool tubetrail-process --limit 1 \
    >"$WORK/worker.log" 2>&1) &
PIDS+=($!)
log "deployments: $(psql_q "SELECT string_agg(d.name, ', ' ORDER BY d.name) FROM deployment d")"

# 5. Runs through the API, executed by the worker (what the UI's Run button does)
run() {  # run DEPLOYMENT [--param k=v ...]: start a run, wait for its end, print its state
    local t0 t1 id state
    t0=$(date +%s.%N)
    id=$("$VENV/python" - "$@" <<'EOF'
import json, sys
from prefect.deployments import run_deployment
args = sys.argv[1:]
params = dict(a.split("=", 1) for a in args[1:])
run = run_deployment(args[0], parameters={k: json.loads(v) for k, v in params.items()}, timeout=1800)
print(run.id, run.state.type.value)
EOF
)
    t1=$(date +%s.%N)
    log "$1: ${id#* } in $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s (flow run ${id% *})"
    [ "${id#* }" = COMPLETED ]
}
run ingest-inbox/ingest-inbox "inbox=\"$WORK/inbox\""
run round-report/nightly-report "out=\"$WORK/reports\""

# 6. What PostgreSQL holds
log "flow runs in PostgreSQL, by flow and state:"
psql_q "SELECT f.name || ': ' || fr.state_type || ' ' || count(*) FROM flow_run fr JOIN flow f ON f.id = fr.flow_id GROUP BY f.name, fr.state_type ORDER BY 1" | sed 's/^/    /'
flow_runs=$(psql_q "SELECT count(*) FROM flow_run")
not_done=$(psql_q "SELECT count(*) FROM flow_run WHERE state_type NOT IN ('COMPLETED', 'SCHEDULED')")
scheduled=$(psql_q "SELECT count(*) FROM flow_run WHERE state_type = 'SCHEDULED'")
task_runs=$(psql_q "SELECT count(*) FROM task_run")
packs=$(psql_q "SELECT count(*) FROM task_run WHERE name LIKE 'district pack %' AND state_type = 'COMPLETED'")
log "PostgreSQL: $flow_runs flow runs ($scheduled scheduled by the deployments' schedules, $not_done failed or unfinished), $task_runs task runs, $packs district-pack task runs completed"
log "concurrency limits in PostgreSQL: $(psql_q "SELECT string_agg(name || ' (' || \"limit\" || ')', ', ') FROM concurrency_limit_v2")"
log "district packs written: $(find "$WORK/reports" -mindepth 4 -maxdepth 4 -path '*/districts/*' -type d | wc -l)"
[ "$flow_runs" -gt 0 ] && [ "$not_done" = 0 ] && [ "$packs" -gt 0 ]
log "trial passed"
