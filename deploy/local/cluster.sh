#!/usr/bin/env bash
# A production-shaped deployment on this one machine: every service is its own host, in its own network
# namespace with its own working directory, and they talk only over the cluster network.
#
#   deploy/local/cluster.sh up      start (or finish starting) every host; wait until each one answers
#   deploy/local/cluster.sh smoke   seed demo receipts, launch create-batches through GraphQL, watch the sensors
#   deploy/local/cluster.sh env     export lines for a CLI on this machine (stores, provider, DAGSTER_WEBSERVER_URL)
#   deploy/local/cluster.sh down    stop what `up` started, remove the namespaces and the network
#
# Hosts (10.213.0.0/24 on the bridge re-br0, no default route, no forwarding: nothing leaves the cluster):
#   db .10 PostgreSQL 15 (Dagster's storage)     aws .11 moto (DynamoDB + S3)     chroma .12 `chroma run`
#   batchapi .13 Batch API (openai provider)     code .14 code server, runs       daemon .15 sensors, queue, retries
#   web .16 webserver + GraphQL
# This machine reaches them through the bridge's own address (.1): `env` and `smoke` are a CLI on the machine.
# Each host runs in a private mount namespace where its own directory ($CLUSTER_DIR/hosts/<host>) is the only
# one it can see, bound at the same path on every host ($CLUSTER_DIR/host, as a container image's folders
# are), the other hosts' directories hidden, the repository read-only and /tmp its own; and with its own
# hostname. Needs root (namespaces), iproute2, util-linux and PostgreSQL's server binaries (PG_BIN).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER_DIR="${CLUSTER_DIR:-$REPO/.cluster}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
BIN="$(dirname "$PYTHON")"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
NET=10.213.0
BRIDGE=re-br0
HOSTS=(db aws chroma batchapi code daemon web)
declare -A ADDR=([db]=$NET.10 [aws]=$NET.11 [chroma]=$NET.12 [batchapi]=$NET.13 [code]=$NET.14 [daemon]=$NET.15
                 [web]=$NET.16)
ADMIN="$CLUSTER_DIR/admin"   # pids and secrets: seen by this script, hidden from every host
MOUNT="$CLUSTER_DIR/host"    # where each host sees its own directory
INGEST_POOL_LIMIT="${INGEST_POOL_LIMIT:-2}"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# ---------------------------------------------------------------------------------------------------- network
network_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    if ip -4 route show | grep -q "^$NET\."; then die "$NET.0/24 is already routed on this machine; not touching it"; fi
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
  fi
  local host
  for host in "${HOSTS[@]}"; do
    ip netns list | grep -qw "re-$host" && continue
    ip netns add "re-$host"
    ip link add "re-$host" type veth peer name eth0 netns "re-$host"
    ip link set "re-$host" master "$BRIDGE" up
    ip -n "re-$host" link set lo up
    ip -n "re-$host" addr add "${ADDR[$host]}/24" dev eth0
    ip -n "re-$host" link set eth0 up
  done
}

network_down() {
  local host
  for host in "${HOSTS[@]}"; do
    ip link del "re-$host" 2>/dev/null || true
    ip netns del "re-$host" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------------- hosts
pg_password() {
  [ -s "$ADMIN/pg_password" ] || (umask 077; "$PYTHON" -c 'import secrets; print(secrets.token_hex(16))' >"$ADMIN/pg_password")
  cat "$ADMIN/pg_password"
}

# What every Dagster service reads: the instance (deploy/dagster.yaml) and its Postgres, and S3 for step logs.
dagster_env() {
  cat <<EOF
DAGSTER_HOME=$MOUNT/dagster_home
DAGSTER_PG_HOST=${ADDR[db]}
DAGSTER_PG_PORT=5432
DAGSTER_PG_USERNAME=dagster
DAGSTER_PG_PASSWORD=$(pg_password)
DAGSTER_PG_DB=dagster
DAGSTER_DISABLE_TELEMETRY=true
EOF
  aws_env
}

aws_env() {
  cat <<EOF
AWS_ENDPOINT_URL=http://${ADDR[aws]}:5000
AWS_ACCESS_KEY_ID=cluster
AWS_SECRET_ACCESS_KEY=cluster
AWS_DEFAULT_REGION=us-east-1
S3_BUCKET=receipt-requests
EOF
}

# What the pipeline reads (the code host, where runs execute, and a CLI on the machine).
pipeline_env() {
  cat <<EOF
DYNAMODB_TABLE_NAME=receipts
CHROMADB_BUCKET=receipt-chroma
EMBEDDING_PROVIDER=openai
OPENAI_API_KEY=cluster-batchapi-key
OPENAI_BASE_URL=http://${ADDR[batchapi]}:8080/v1
EMBEDDING_DIMENSIONS=256
CHROMA_HOST=${ADDR[chroma]}
CHROMA_PORT=8000
SENSOR_INTERVAL_SECONDS=${SENSOR_INTERVAL_SECONDS:-5}
MAX_REQUESTS_PER_BATCH=${MAX_REQUESTS_PER_BATCH:-150}
ANONYMIZED_TELEMETRY=False
EOF
}

host_env() {
  case "$1" in
    code) dagster_env; pipeline_env; echo "DATA_DIR=$MOUNT/scratch" ;;
    daemon|web) dagster_env ;;
    chroma) echo "ANONYMIZED_TELEMETRY=False" ;;
  esac
}

host_command() {  # sets CMD to the service of host $1
  local a="${ADDR[$1]}"
  case "$1" in
    db) CMD=(setpriv --reuid=postgres --regid=postgres --init-groups "$PG_BIN/postgres" -D "$MOUNT/pgdata") ;;
    aws) CMD=("$BIN/moto_server" -H "$a" -p 5000) ;;
    chroma) CMD=("$BIN/chroma" run --host "$a" --port 8000 --path "$MOUNT/chroma") ;;
    batchapi) CMD=("$PYTHON" "$REPO/deploy/local/batchapi.py" --host "$a" --port 8080
                   --content-delay "${BATCHAPI_CONTENT_DELAY:-0}") ;;
    code) CMD=("$BIN/dagster" code-server start -h "$a" -p 4000 -m embedding_assets.definitions
               --location-name receipt_embeddings) ;;
    daemon) CMD=("$BIN/dagster-daemon" run -w "$MOUNT/workspace.yaml") ;;
    web) CMD=("$BIN/dagster-webserver" -h "$a" -p 3000 -w "$MOUNT/workspace.yaml") ;;
  esac
}

# Run a command as host $1: its namespace, its mount view, its environment only.
on_host() {  # host, command...: replaces this process (exec), so a pid file names the service itself
  local host="$1"; shift
  local -a env=(PATH="$BIN:/usr/sbin:/usr/bin:/sbin:/bin" HOME="$MOUNT" TMPDIR=/tmp PYTHONPATH="$REPO"
                LANG=C.UTF-8 PYTHONUNBUFFERED=1)
  while IFS= read -r line; do [ -n "$line" ] && env+=("$line"); done < <(host_env "$host")
  exec ip netns exec "re-$host" unshare --mount --uts --propagation private \
    env -i "${env[@]}" /bin/sh "$REPO/deploy/local/host.sh" "$CLUSTER_DIR" "$host" "$REPO" "$@"
}

alive() { [ -s "$ADMIN/$1.pid" ] && kill -0 "$(cat "$ADMIN/$1.pid")" 2>/dev/null; }

start_host() {
  local host="$1"
  alive "$host" && return 0
  setsid "$REPO/deploy/local/cluster.sh" _host "$host" >>"$CLUSTER_DIR/hosts/$host/service.log" 2>&1 </dev/null &
  echo $! >"$ADMIN/$host.pid"
  log "$host (${ADDR[$host]}): started, pid $(cat "$ADMIN/$host.pid")"
}

wait_for() {  # host, description, command...
  local host="$1" what="$2"; shift 2
  local deadline=$((SECONDS + ${UP_TIMEOUT:-240}))
  until "$@" >/dev/null 2>&1; do
    alive "$host" || die "$host exited; see $CLUSTER_DIR/hosts/$host/service.log"
    [ $SECONDS -lt $deadline ] || die "$host: no answer from $what; see $CLUSTER_DIR/hosts/$host/service.log"
    sleep 1
  done
  log "$host answers ($what)"
}

http_ok() {  # any HTTP answer counts: the service is listening and speaking HTTP
  "$PYTHON" - "$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=3)
except urllib.error.HTTPError:
    pass
EOF
}

prepare_dirs() {
  if ! any_alive; then rm -rf "$CLUSTER_DIR/hosts" "$CLUSTER_DIR/cli"; fi  # a fresh cluster: no state left over
  mkdir -p "$ADMIN" "$MOUNT"
  chmod 700 "$ADMIN"
  local host
  for host in "${HOSTS[@]}"; do mkdir -p "$CLUSTER_DIR/hosts/$host"; done
  for host in code daemon web; do
    mkdir -p "$CLUSTER_DIR/hosts/$host/dagster_home"
    cp "$REPO/deploy/dagster.yaml" "$CLUSTER_DIR/hosts/$host/dagster_home/dagster.yaml"
  done
  for host in daemon web; do
    cat >"$CLUSTER_DIR/hosts/$host/workspace.yaml" <<EOF
load_from:
  - grpc_server:
      host: ${ADDR[code]}
      port: 4000
      location_name: receipt_embeddings
EOF
  done
  chown postgres:postgres "$CLUSTER_DIR/hosts/db"
}

init_db() {
  [ -f "$CLUSTER_DIR/hosts/db/pgdata/PG_VERSION" ] && return 0
  local pwfile="$CLUSTER_DIR/hosts/db/pwfile"
  (umask 077; pg_password >"$pwfile")
  chown postgres "$pwfile"
  (on_host db setpriv --reuid=postgres --regid=postgres --init-groups "$PG_BIN/initdb" -D "$MOUNT/pgdata" \
    -U dagster --pwfile="$MOUNT/pwfile" --auth=scram-sha-256 -E UTF8) >>"$CLUSTER_DIR/hosts/db/service.log" 2>&1
  rm -f "$pwfile"
  cat >>"$CLUSTER_DIR/hosts/db/pgdata/postgresql.conf" <<EOF
listen_addresses = '${ADDR[db]}'
unix_socket_directories = '/tmp'
max_connections = 200
EOF
  echo "host all all $NET.0/24 scram-sha-256" >>"$CLUSTER_DIR/hosts/db/pgdata/pg_hba.conf"
}

pg_ready() { "$PG_BIN/pg_isready" -h "${ADDR[db]}" -p 5432 -U dagster; }

create_db() {
  PGPASSWORD="$(pg_password)" "$PG_BIN/psql" -h "${ADDR[db]}" -U dagster -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'dagster'" | grep -q 1 && return 0
  PGPASSWORD="$(pg_password)" "$PG_BIN/createdb" -h "${ADDR[db]}" -U dagster dagster
}

# The CLI on this machine, with the environment `env` prints.
cli() { (set -a; eval "$(cli_env)"; "$BIN/receipt-embeddings" "$@"); }

cli_env() {
  pipeline_env
  aws_env
  echo "DATA_DIR=$CLUSTER_DIR/cli"
  echo "DAGSTER_HOME=$CLUSTER_DIR/cli/dagster_home"
  echo "DAGSTER_WEBSERVER_URL=http://${ADDR[web]}:3000"
}

daemons_healthy() {
  "$PYTHON" - "http://${ADDR[web]}:3000/graphql" <<'EOF'
import json, sys, urllib.request
query = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"
request = urllib.request.Request(sys.argv[1], json.dumps({"query": query}).encode(), {"Content-Type": "application/json"})
statuses = json.load(urllib.request.urlopen(request, timeout=10))["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
sys.exit(0 if all(s["healthy"] for s in statuses if s["required"]) else 1)
EOF
}

any_alive() { local h; for h in "${HOSTS[@]}"; do alive "$h" && return 0; done; return 1; }

cmd_up() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
  ip netns list >/dev/null || die "ip netns is unavailable"
  mkdir -p "$ADMIN"
  prepare_dirs
  network_up
  init_db
  start_host db
  wait_for db "postgres on ${ADDR[db]}:5432" pg_ready
  create_db
  start_host aws
  wait_for aws "moto on ${ADDR[aws]}:5000" http_ok "http://${ADDR[aws]}:5000/moto-api/"
  mkdir -p "$CLUSTER_DIR/cli"
  cli aws create-table >&2
  cli aws create-buckets >&2
  start_host chroma
  wait_for chroma "chroma on ${ADDR[chroma]}:8000" http_ok "http://${ADDR[chroma]}:8000/api/v2/heartbeat"
  start_host batchapi
  wait_for batchapi "Batch API on ${ADDR[batchapi]}:8080" http_ok "http://${ADDR[batchapi]}:8080/v1/none"
  start_host code
  wait_for code "code server on ${ADDR[code]}:4000" \
    "$BIN/dagster" api grpc-health-check -h "${ADDR[code]}" -p 4000
  if ! alive daemon; then  # the schema and the pools' limits, before any service runs against them
    (on_host daemon /bin/sh "$REPO/deploy/pools.sh" "$INGEST_POOL_LIMIT") >>"$CLUSTER_DIR/hosts/daemon/service.log" 2>&1
  fi
  start_host daemon
  start_host web
  wait_for web "webserver on ${ADDR[web]}:3000" http_ok "http://${ADDR[web]}:3000/server_info"
  wait_for daemon "daemon heartbeats" daemons_healthy
  log "up: webserver http://${ADDR[web]}:3000 (from this machine); \`$0 env\` for a CLI"
}

stop_host() {
  local host="$1" pid left
  if [ -s "$ADMIN/$host.pid" ]; then
    pid="$(cat "$ADMIN/$host.pid")"
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$ADMIN/$host.pid"
  fi
  # Whatever still runs in the host's namespace was started there by `up` (a run, a child in its own session).
  if ip netns list | grep -qw "re-$host"; then
    left="$(ip netns pids "re-$host" || true)"
    if [ -n "$left" ]; then
      # shellcheck disable=SC2086
      kill -KILL $left 2>/dev/null || true
      for _ in $(seq 1 20); do [ -z "$(ip netns pids "re-$host")" ] && break; sleep 0.25; done
    fi
  fi
  log "$host: stopped"
}

cmd_down() {
  local i
  for ((i=${#HOSTS[@]}-1; i>=0; i--)); do stop_host "${HOSTS[$i]}"; done
  network_down
  log "down: no host, namespace or bridge left"
}

cmd_env() {
  local line
  while IFS= read -r line; do printf 'export %s=%q\n' "${line%%=*}" "${line#*=}"; done < <(cli_env)
}

cmd_smoke() {
  any_alive || die "the cluster is not up: run \`$0 up\` first"
  (set -a; eval "$(cli_env)"; set +a; mkdir -p "$DATA_DIR"; cd "$CLUSTER_DIR/cli" && \
    PYTHONPATH="$REPO" "$PYTHON" "$REPO/deploy/local/smoke.py" --code-netns re-code "$@")
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  smoke) shift; cmd_smoke "$@" ;;
  _host) host_command "$2"; on_host "$2" "${CMD[@]}" ;;  # internal: what start_host runs in a new session
  *) echo "usage: $0 up|smoke|env|down" >&2; exit 2 ;;
esac
