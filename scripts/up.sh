#!/usr/bin/env bash
# Brings the whole Burrow platform up locally and shows it working:
# PostgreSQL, Redis and a Temporal dev server (reused when they already answer), then
# burrow-api, burrow-relay and burrow-worker; seeds a dev account; writes .burrow/dev.env;
# and proves a tunnel end to end. Safe to re-run. Stop with scripts/down.sh.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BURROW_API_PORT="${BURROW_API_PORT:-17080}"
BURROW_RELAY_AGENT_PORT="${BURROW_RELAY_AGENT_PORT:-17443}"
BURROW_HTTP_PORT="${BURROW_HTTP_PORT:-17081}"
BURROW_HTTPS_PORT="${BURROW_HTTPS_PORT:-17444}"
BURROW_RELAY_OPS_PORT="${BURROW_RELAY_OPS_PORT:-17082}"
BURROW_WORKER_OPS_PORT="${BURROW_WORKER_OPS_PORT:-17083}"
BURROW_RELAY_CONTROL_PORT="${BURROW_RELAY_CONTROL_PORT:-17090}"
# Relay-to-relay link (visitors forwarded from other relays; see docs/architecture.md).
BURROW_RELAY_PEER_PORT="${BURROW_RELAY_PEER_PORT:-17445}"
BURROW_API_GRPC_PORT="${BURROW_API_GRPC_PORT:-17091}"
BURROW_DOMAIN="${BURROW_DOMAIN:-burrow.localhost}"
DB_NAME="${BURROW_DB_NAME:-burrow}"

ensure_tools
ensure_postgres
ensure_database "$DB_NAME"
ensure_redis
ensure_temporal

say "building burrow (cargo build; target dir $CARGO_TARGET_DIR)"
(cd "$ROOT" && cargo build --workspace --bins --quiet)
BIN="$CARGO_TARGET_DIR/debug"

# Secrets shared between processes: generated once, kept in the state dir.
secret() {
  local f="$BURROW_STATE_DIR/$1"
  [ -s "$f" ] || { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f"; chmod 600 "$f"; }
  printf '%s%s' "${2:-}" "$(cat "$f")"
}
INTERNAL_KEY=$(secret internal-key)
WEBHOOK_SECRET=$(secret webhook-secret whsec_)

export BURROW_API_LISTEN="127.0.0.1:$BURROW_API_PORT"
export BURROW_API_GRPC_LISTEN="127.0.0.1:$BURROW_API_GRPC_PORT"
export BURROW_API_BASE_DOMAIN="$BURROW_DOMAIN"
export BURROW_API_DATABASE_URL="postgres://postgres@127.0.0.1:$BURROW_PG_PORT/$DB_NAME"
export BURROW_API_REDIS_URL="redis://127.0.0.1:$BURROW_REDIS_PORT"
export BURROW_API_TEMPORAL_ADDRESS="http://127.0.0.1:$BURROW_TEMPORAL_PORT"
export BURROW_API_INTERNAL_KEY="$INTERNAL_KEY"
export BURROW_API_WEBHOOK_SECRET="$WEBHOOK_SECRET"
export BURROW_API_RUNBOOKS_DIR="$ROOT/runbooks"

# Re-running restarts the platform processes this script started (not the stores).
stop_started agent-smoke worker relay api

start() { # start NAME BINARY [ARGS...]
  local name="$1"; shift
  setsid nohup "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

say "starting burrow-api on 127.0.0.1:$BURROW_API_PORT (RelayFeed gRPC :$BURROW_API_GRPC_PORT)"
start api "$BIN/burrow-api" serve
wait_for api 60 curl -fsS "http://127.0.0.1:$BURROW_API_PORT/readyz"

say "seeding the dev account"
CREDS=$("$BIN/burrow-api" seed-dev --file "$BURROW_DIR/dev-credentials.json")
eval "$CREDS"

say "starting burrow-relay (agents :$BURROW_RELAY_AGENT_PORT, http :$BURROW_HTTP_PORT, https/tls :$BURROW_HTTPS_PORT)"
BURROW_RELAY_AGENT_LISTEN="127.0.0.1:$BURROW_RELAY_AGENT_PORT" \
BURROW_RELAY_HTTP_LISTEN="127.0.0.1:$BURROW_HTTP_PORT" \
BURROW_RELAY_HTTPS_LISTEN="127.0.0.1:$BURROW_HTTPS_PORT" \
BURROW_RELAY_CONTROL_LISTEN="127.0.0.1:$BURROW_RELAY_CONTROL_PORT" \
BURROW_RELAY_OPS_LISTEN="127.0.0.1:$BURROW_RELAY_OPS_PORT" \
BURROW_RELAY_PEER_LISTEN="127.0.0.1:$BURROW_RELAY_PEER_PORT" \
BURROW_RELAY_DOMAIN="$BURROW_DOMAIN" \
BURROW_RELAY_API_URL="http://127.0.0.1:$BURROW_API_PORT" \
BURROW_RELAY_FEED_URL="http://127.0.0.1:$BURROW_API_GRPC_PORT" \
BURROW_RELAY_INTERNAL_KEY="$INTERNAL_KEY" \
BURROW_RELAY_STATE_DIR="$BURROW_STATE_DIR/relay" \
BURROW_RELAY_REDIS_URL="redis://127.0.0.1:$BURROW_REDIS_PORT" \
  start relay "$BIN/burrow-relay"
wait_for relay 30 curl -fsS "http://127.0.0.1:$BURROW_RELAY_OPS_PORT/readyz"

say "starting burrow-worker"
BURROW_WORKER_TEMPORAL_ADDRESS="http://127.0.0.1:$BURROW_TEMPORAL_PORT" \
BURROW_WORKER_DATABASE_URL="$BURROW_API_DATABASE_URL" \
BURROW_WORKER_OPS_LISTEN="127.0.0.1:$BURROW_WORKER_OPS_PORT" \
  start worker "$BIN/burrow-worker"
wait_for worker 30 curl -fsS "http://127.0.0.1:$BURROW_WORKER_OPS_PORT/readyz"

cat >"$BURROW_DIR/dev.env" <<ENV
# Written by scripts/up.sh. Source it: . .burrow/dev.env
export BURROW_API_URL=http://127.0.0.1:$BURROW_API_PORT
export BURROW_API_GRPC=127.0.0.1:$BURROW_API_GRPC_PORT
export BURROW_CONSOLE_URL=http://127.0.0.1:$BURROW_API_PORT/console
export BURROW_RELAY=127.0.0.1:$BURROW_RELAY_AGENT_PORT
export BURROW_HTTP_INGRESS=127.0.0.1:$BURROW_HTTP_PORT
export BURROW_HTTPS_INGRESS=127.0.0.1:$BURROW_HTTPS_PORT
export BURROW_DOMAIN=$BURROW_DOMAIN
export BURROW_AUTHTOKEN=$BURROW_AUTHTOKEN
export BURROW_OPS_API_KEY=$BURROW_OPS_API_KEY
export BURROW_ADMIN_API_KEY=$BURROW_ADMIN_API_KEY
export BURROW_CA_FILE=$BURROW_STATE_DIR/relay/ca.pem
export BURROW_WEBHOOK_SECRET=$WEBHOOK_SECRET
export PATH=$BIN:\$PATH
ENV
chmod 600 "$BURROW_DIR/dev.env"

say "checking a tunnel end to end: burrow http $BURROW_API_PORT --name smoke"
trap 'stop_started agent-smoke' EXIT
(
  set -a; . "$BURROW_DIR/dev.env"; set +a
  start agent-smoke "$BIN/burrow" http "$BURROW_API_PORT" --name smoke
  wait_for agent-smoke 30 curl -fsS -H "Host: smoke.$BURROW_DOMAIN" "http://$BURROW_HTTP_INGRESS/healthz"
  printf 'GET http://smoke.%s:%s/healthz through the tunnel -> %s\n' "$BURROW_DOMAIN" "$BURROW_HTTP_PORT" \
    "$(curl -fsS -H "Host: smoke.$BURROW_DOMAIN" "http://$BURROW_HTTP_INGRESS/healthz")"
  # HTTPS: the dev CA's certificate for *.$BURROW_DOMAIN, over HTTP/2.
  printf 'GET https://smoke.%s:%s/healthz (dev CA, %s) -> %s\n' "$BURROW_DOMAIN" "$BURROW_HTTPS_PORT" \
    "$(curl -fsS -o /dev/null -w '%{http_version}' --cacert "$BURROW_CA_FILE" \
        --resolve "smoke.$BURROW_DOMAIN:$BURROW_HTTPS_PORT:127.0.0.1" "https://smoke.$BURROW_DOMAIN:$BURROW_HTTPS_PORT/healthz" | sed 's/^/HTTP\//')" \
    "$(curl -fsS --cacert "$BURROW_CA_FILE" --resolve "smoke.$BURROW_DOMAIN:$BURROW_HTTPS_PORT:127.0.0.1" \
        "https://smoke.$BURROW_DOMAIN:$BURROW_HTTPS_PORT/healthz")"
  grep -h Forwarding "$LOGS/agent-smoke.log" || true
)
stop_started agent-smoke

echo
say "Burrow is up. Environment (.burrow/dev.env):"
cat "$BURROW_DIR/dev.env"
cat <<MSG

Try it:
  . .burrow/dev.env
  python3 -m http.server 8000 &
  burrow http 8000 --name demo          # inspector: http://127.0.0.1:4040
  curl -H "Host: demo.\$BURROW_DOMAIN" http://\$BURROW_HTTP_INGRESS/
  curl --cacert \$BURROW_CA_FILE --resolve demo.\$BURROW_DOMAIN:${BURROW_HTTPS_PORT}:127.0.0.1 https://demo.\$BURROW_DOMAIN:${BURROW_HTTPS_PORT}/
Console: http://127.0.0.1:$BURROW_API_PORT/console (sign in with \$BURROW_OPS_API_KEY)
Logs: $LOGS    Stop: scripts/down.sh
MSG
