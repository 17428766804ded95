#!/usr/bin/env bash
# Brings the whole Burrow platform up locally and shows it working:
# PostgreSQL, Redis, a Temporal dev server and a local ACME CA (Pebble with
# pebble-challtestsrv as its DNS), each reused when it already answers, then burrow-api,
# burrow-relay and burrow-worker; seeds a dev account; writes .burrow/dev.env; proves a tunnel
# end to end, and a custom domain (demo.burrow.test) verified, issued a certificate by Pebble
# over ACME and served over HTTPS. Safe to re-run. Stop with scripts/down.sh.
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
# The custom domain of the demo: verified through challtestsrv's DNS, certificate from Pebble.
DEMO_DOMAIN="${BURROW_DEMO_DOMAIN:-demo.burrow.test}"

ensure_tools pebble openssl
ensure_postgres
ensure_database "$DB_NAME"
ensure_redis
ensure_temporal
ensure_pebble_pki
ensure_challtestsrv
# Pebble validates HTTP-01 and TLS-ALPN-01 at the relay's ingress ports (below).
ensure_pebble "$BURROW_HTTP_PORT" "$BURROW_HTTPS_PORT"

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
CERT_CALLBACK_SECRET=$(secret cert-callback-secret)
# Seals certificate keys and the ACME account in PostgreSQL: 32 bytes, base64.
CERT_KEY_FILE="$BURROW_STATE_DIR/cert-encryption-key"
[ -s "$CERT_KEY_FILE" ] || (umask 077; openssl rand -base64 32 >"$CERT_KEY_FILE")
chmod 600 "$CERT_KEY_FILE"

# RelayControl (it carries certificates' private keys) runs over TLS: a local CA and a relay
# certificate for 127.0.0.1, made once; the api and the worker trust only that CA.
CONTROL_TLS="$BURROW_STATE_DIR/control-tls"
control_tls_usable() {
  [ -s "$CONTROL_TLS/ca.pem" ] && [ -s "$CONTROL_TLS/control.pem" ] && [ -s "$CONTROL_TLS/control.key" ] &&
    openssl x509 -checkend 86400 -noout -in "$CONTROL_TLS/control.pem" >/dev/null
}
if ! control_tls_usable; then
  say "making the RelayControl TLS CA and relay certificate ($CONTROL_TLS)"
  mkdir -p "$CONTROL_TLS"
  (
    umask 077
    cd "$CONTROL_TLS"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=Burrow RelayControl dev CA" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout ca.key -out ca.pem
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj "/CN=burrow-relay control" -keyout control.key -out control.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' >control.ext
    openssl x509 -req -in control.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
      -extfile control.ext -out control.pem
    rm -f control.csr control.ext
  ) >"$LOGS/control-tls.log" 2>&1 || die "making the RelayControl TLS material failed: $(cat "$LOGS/control-tls.log")"
fi

export BURROW_API_LISTEN="127.0.0.1:$BURROW_API_PORT"
export BURROW_API_GRPC_LISTEN="127.0.0.1:$BURROW_API_GRPC_PORT"
export BURROW_API_BASE_DOMAIN="$BURROW_DOMAIN"
export BURROW_API_DATABASE_URL="postgres://postgres@127.0.0.1:$BURROW_PG_PORT/$DB_NAME"
export BURROW_API_REDIS_URL="redis://127.0.0.1:$BURROW_REDIS_PORT"
export BURROW_API_TEMPORAL_ADDRESS="http://127.0.0.1:$BURROW_TEMPORAL_PORT"
export BURROW_API_INTERNAL_KEY="$INTERNAL_KEY"
export BURROW_API_RELAY_CONTROL_CA_FILE="$CONTROL_TLS/ca.pem"
export BURROW_API_WEBHOOK_SECRET="$WEBHOOK_SECRET"
export BURROW_API_RUNBOOKS_DIR="$ROOT/runbooks"
# Certificates: verifying a custom domain starts its certificate workflow; verification asks
# challtestsrv's DNS for the TXT record (set with its POST /set-txt).
export BURROW_API_ACME_ENABLED=true
export BURROW_API_DNS_RESOLVER="127.0.0.1:$BURROW_PEBBLE_DNS_PORT"
export BURROW_API_CERT_CALLBACK_SECRET="$CERT_CALLBACK_SECRET"
# A failing certificate step is retried after 5 s, 10 s, 30 s, ... locally (certmagic's
# schedule, from 1 min, in production).
export BURROW_API_CERT_RETRY_SCHEDULE="${BURROW_API_CERT_RETRY_SCHEDULE:-5s,10s,30s,1m,5m,30m,1h}"

# Re-running restarts the platform processes this script started (not the stores).
stop_started agent-smoke agent-domain worker relay api

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
BURROW_RELAY_CONTROL_TLS_CERT_FILE="$CONTROL_TLS/control.pem" \
BURROW_RELAY_CONTROL_TLS_KEY_FILE="$CONTROL_TLS/control.key" \
BURROW_RELAY_STATE_DIR="$BURROW_STATE_DIR/relay" \
BURROW_RELAY_REDIS_URL="redis://127.0.0.1:$BURROW_REDIS_PORT" \
  start relay "$BIN/burrow-relay"
wait_for relay 30 curl -fsS "http://127.0.0.1:$BURROW_RELAY_OPS_PORT/readyz"

ACME_DIRECTORY="https://127.0.0.1:$BURROW_PEBBLE_PORT/dir"

# A local Pebble has no duplicate-certificate limit and re-runs renew after every Pebble restart:
# the per-domain weekly cap (`acme_issued_per_domain_week`, 4 by default) is lifted here.
say "starting burrow-worker"
BURROW_WORKER_TEMPORAL_ADDRESS="http://127.0.0.1:$BURROW_TEMPORAL_PORT" \
BURROW_WORKER_DATABASE_URL="$BURROW_API_DATABASE_URL" \
BURROW_WORKER_OPS_LISTEN="127.0.0.1:$BURROW_WORKER_OPS_PORT" \
BURROW_WORKER_REDIS_URL="redis://127.0.0.1:$BURROW_REDIS_PORT" \
BURROW_WORKER_INTERNAL_KEY="$INTERNAL_KEY" \
BURROW_WORKER_RELAY_CONTROL_CA_FILE="$CONTROL_TLS/ca.pem" \
BURROW_WORKER_ACME_DIRECTORY_URL="$ACME_DIRECTORY" \
BURROW_WORKER_ACME_ISSUED_PER_DOMAIN_WEEK="${BURROW_WORKER_ACME_ISSUED_PER_DOMAIN_WEEK:-1000}" \
BURROW_WORKER_ACME_CA_FILE="$PEBBLE_DIR/ca.pem" \
BURROW_WORKER_CERT_ENCRYPTION_KEY="$(cat "$CERT_KEY_FILE")" \
  start worker "$BIN/burrow-worker"
wait_for worker 30 curl -fsS "http://127.0.0.1:$BURROW_WORKER_OPS_PORT/readyz"

# call METHOD PATH KEY [JSON]: one api request; sets STATUS and BODY.
call() {
  local out
  out=$(curl -sS -X "$1" -H "Authorization: Bearer $3" -H 'Content-Type: application/json' \
    ${4:+--data "$4"} -w '\n%{http_code}' "http://127.0.0.1:$BURROW_API_PORT$2") \
    || die "$1 $2: the api did not answer"
  STATUS=${out##*$'\n'} BODY=${out%$'\n'*}
}
# jget EXPR: evaluates a Python expression over BODY parsed as `d` (JSON).
jget() { printf '%s' "$BODY" | python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

say "custom domain $DEMO_DOMAIN: a pro account, the domain added and verified through challtestsrv's DNS"
DEMO_ACCOUNT=$(psql -h 127.0.0.1 -p "$BURROW_PG_PORT" -U postgres -d "$DB_NAME" -tAc \
  "SELECT id FROM accounts WHERE provider_customer_id = 'cus_demo_domain'")
if [ -z "$DEMO_ACCOUNT" ]; then
  call POST /v1/accounts "$BURROW_ADMIN_API_KEY" \
    '{"name": "demo (custom domain)", "plan": "pro", "provider_customer_id": "cus_demo_domain"}'
  [ "$STATUS" = 201 ] || die "creating the demo account: $STATUS $BODY"
  DEMO_ACCOUNT=$(jget 'd["id"]')
else
  call GET "/v1/accounts/$DEMO_ACCOUNT" "$BURROW_ADMIN_API_KEY"
  if [ "$(jget 'd["plan"]')" != pro ]; then
    call PUT "/v1/accounts/$DEMO_ACCOUNT/plan" "$BURROW_ADMIN_API_KEY" '{"plan": "pro"}'
    [ "$STATUS" = 200 ] || die "moving the demo account to pro: $STATUS $BODY"
  fi
fi
# Its authtoken: kept in the state dir while it still verifies.
DEMO_TOKEN_FILE="$BURROW_STATE_DIR/demo-authtoken"
DEMO_AUTHTOKEN=$(cat "$DEMO_TOKEN_FILE" 2>/dev/null || true)
if [ -n "$DEMO_AUTHTOKEN" ]; then
  call POST /v1/internal/authtokens/verify "$INTERNAL_KEY" "{\"token\": \"$DEMO_AUTHTOKEN\"}"
  [ "$STATUS" = 200 ] && [ "$(jget 'd["account_id"]')" = "$DEMO_ACCOUNT" ] || DEMO_AUTHTOKEN=
fi
if [ -z "$DEMO_AUTHTOKEN" ]; then
  call POST "/v1/accounts/$DEMO_ACCOUNT/authtokens" "$BURROW_ADMIN_API_KEY" '{"description": "demo custom domain (up.sh)"}'
  [ "$STATUS" = 201 ] || die "creating the demo account's authtoken: $STATUS $BODY"
  DEMO_AUTHTOKEN=$(jget 'd["token"]')
  (umask 077; printf '%s' "$DEMO_AUTHTOKEN" >"$DEMO_TOKEN_FILE")
fi
call GET "/v1/accounts/$DEMO_ACCOUNT/domains" "$BURROW_ADMIN_API_KEY"
[ "$STATUS" = 200 ] || die "listing the demo account's domains: $STATUS $BODY"
BODY=$(jget "json.dumps(next((x for x in d['domains'] if x['domain'] == '$DEMO_DOMAIN'), None))")
if [ "$BODY" = null ]; then
  call POST "/v1/accounts/$DEMO_ACCOUNT/domains" "$BURROW_ADMIN_API_KEY" "{\"domain\": \"$DEMO_DOMAIN\"}"
  [ "$STATUS" = 201 ] || die "adding $DEMO_DOMAIN to the demo account: $STATUS $BODY"
fi
if [ "$(jget 'd["status"]')" = verified ]; then
  echo "$DEMO_DOMAIN is verified already"
else
  TXT_NAME=$(jget 'd["txt_record"]["name"]') TXT_VALUE=$(jget 'd["txt_record"]["value"]')
  curl -fsS -X POST "http://127.0.0.1:$BURROW_PEBBLE_CHALLTESTSRV_PORT/set-txt" \
    --data "{\"host\": \"${TXT_NAME%.}.\", \"value\": \"$TXT_VALUE\"}" \
    || die "setting the TXT record $TXT_NAME through challtestsrv failed"
  echo "TXT $TXT_NAME = $TXT_VALUE (set through challtestsrv)"
  call POST "/v1/accounts/$DEMO_ACCOUNT/domains/$DEMO_DOMAIN/verify" "$BURROW_ADMIN_API_KEY"
  [ "$STATUS" = 200 ] || die "verifying $DEMO_DOMAIN: $STATUS $BODY"
  echo "$DEMO_DOMAIN verified: its certificate workflow starts"
fi

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
export BURROW_CERT_CALLBACK_SECRET=$CERT_CALLBACK_SECRET
export BURROW_ACME_DIRECTORY=$ACME_DIRECTORY
export BURROW_PEBBLE_CA_FILE=$PEBBLE_DIR/ca.pem
export BURROW_PEBBLE_ROOT=$PEBBLE_DIR/issuing-root.pem
export BURROW_CHALLTESTSRV_URL=http://127.0.0.1:$BURROW_PEBBLE_CHALLTESTSRV_PORT
export BURROW_DEMO_DOMAIN=$DEMO_DOMAIN
export BURROW_DEMO_AUTHTOKEN=$DEMO_AUTHTOKEN
export PATH=$BIN:\$PATH
ENV
chmod 600 "$BURROW_DIR/dev.env"

say "checking a tunnel end to end: burrow http $BURROW_API_PORT --name smoke"
trap 'stop_started agent-smoke agent-domain' EXIT
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
  # Ops list the session through the relay's RelayControl, which speaks only TLS.
  SESSIONS=$(curl -fsS -H "Authorization: Bearer $BURROW_OPS_API_KEY" "$BURROW_API_URL/v1/ops/sessions")
  grep -q '"name":"smoke"' <<<"$SESSIONS" && ! grep -q '"error"' <<<"$SESSIONS" \
    || die "GET /v1/ops/sessions did not list the smoke session over RelayControl (TLS): $SESSIONS"
  echo "GET /v1/ops/sessions lists the smoke session (api -> relay RelayControl over TLS, :$BURROW_RELAY_CONTROL_PORT)"
)
stop_started agent-smoke

CERT_WF="certificate-$DEMO_DOMAIN"
DEMO_URL="https://$DEMO_DOMAIN:$BURROW_HTTPS_PORT"
DEMO_ROOT="$PEBBLE_DIR/issuing-root.pem"
say "checking the certificate of $DEMO_DOMAIN: issued by Pebble over ACME, served by the relay"
# Pebble makes a new root on every start: fetch the current one.
curl -fsS --cacert "$PEBBLE_DIR/ca.pem" "https://127.0.0.1:$BURROW_PEBBLE_MGMT_PORT/roots/0" \
  -o "$DEMO_ROOT.tmp" || die "fetching Pebble's root from https://127.0.0.1:$BURROW_PEBBLE_MGMT_PORT/roots/0 failed"
mv "$DEMO_ROOT.tmp" "$DEMO_ROOT"
# The relay presents a certificate for the domain that verifies against Pebble's root (any HTTP
# status will do: no agent serves the domain yet).
served() { curl -sS -o /dev/null --cacert "$DEMO_ROOT" --resolve "$DEMO_DOMAIN:$BURROW_HTTPS_PORT:127.0.0.1" "$DEMO_URL/"; }
cert_run() { # sets BODY to the certificate run's workflow_runs row (or null)
  call GET "/v1/ops/workflows?kind=certificate&limit=1000" "$BURROW_OPS_API_KEY"
  BODY=$(jget "json.dumps(next((r for r in d if r['workflow_id'] == '$CERT_WF'), None))")
}
if served 2>/dev/null; then
  echo "the relay serves a certificate for $DEMO_DOMAIN issued by the running Pebble"
else
  call GET "/v1/certificates/$DEMO_DOMAIN" "$BURROW_OPS_API_KEY"
  if [ "$STATUS" = 200 ] && [ "$(jget 'len(d["versions"])')" != 0 ] \
     && [ "$(jget '(d["workflow"] or {}).get("state")')" = serving ]; then
    # Issued by an earlier Pebble, whose root is gone: ask for a new one.
    call POST "/v1/certificates/$DEMO_DOMAIN/renew" "$BURROW_OPS_API_KEY"
    [ "$STATUS" = 202 ] || die "renewing the certificate of $DEMO_DOMAIN: $STATUS $BODY"
    echo "the certificate of $DEMO_DOMAIN was issued by an earlier Pebble: renewal requested"
  fi
  deadline=$((SECONDS + 90)) replayed=0
  until served 2>/dev/null; do
    cert_run
    if [ "$BODY" != null ] && [ "$(jget 'd["parked"]')" = True ] && ((replayed == 0)); then
      # Parked (e.g. Pebble was down when the run tried): replay it once.
      echo "$CERT_WF is parked in $(jget 'd["state"]') ($(jget 'd["last_error"]')): replaying it"
      call POST "/v1/ops/dead-letters/$CERT_WF/replay" "$BURROW_OPS_API_KEY"
      replayed=1
    fi
    if ((SECONDS >= deadline)); then
      cert_run
      tail -n 20 "$LOGS/worker.log" >&2
      if [ "$BODY" = null ]; then
        die "the relay serves no certificate for $DEMO_DOMAIN from Pebble after 90s, and GET /v1/ops/workflows lists no run $CERT_WF (is acme_enabled on? log: $LOGS/api.log)"
      fi
      die "the relay serves no certificate for $DEMO_DOMAIN from Pebble after 90s; $CERT_WF is in state $(jget 'd["state"]') (attempts $(jget 'd["attempts"]'), last error: $(jget 'd["last_error"]'); logs: $LOGS/worker.log, $LOGS/pebble.log)"
    fi
    sleep 0.3
  done
  cert_run
  echo "$CERT_WF: $(jget 'd["state"]' 2>/dev/null || echo '?')"
fi
call GET "/v1/certificates/$DEMO_DOMAIN" "$BURROW_OPS_API_KEY"
echo "certificate of $DEMO_DOMAIN: version $(jget 'd["versions"][0]["version"]'), serial $(jget 'd["versions"][0]["serial"]'), valid until $(jget 'd["versions"][0]["not_after"]')"

say "checking the custom domain end to end: burrow http $BURROW_API_PORT --domain $DEMO_DOMAIN"
(
  set -a; . "$BURROW_DIR/dev.env"; set +a
  BURROW_AUTHTOKEN="$DEMO_AUTHTOKEN" start agent-domain "$BIN/burrow" http "$BURROW_API_PORT" --domain "$DEMO_DOMAIN"
  demo_curl() { curl -fsS --cacert "$DEMO_ROOT" --resolve "$DEMO_DOMAIN:$BURROW_HTTPS_PORT:127.0.0.1" "$@"; }
  wait_for agent-domain 30 demo_curl "$DEMO_URL/healthz"
  grep -h Forwarding "$LOGS/agent-domain.log" || true
  printf 'curl --cacert %s --resolve %s:%s:127.0.0.1 %s/\n  -> %s\n' "$DEMO_ROOT" "$DEMO_DOMAIN" \
    "$BURROW_HTTPS_PORT" "$DEMO_URL" \
    "$(demo_curl -o /dev/null -w 'HTTP/%{http_version} %{http_code}, redirect to %{redirect_url}' "$DEMO_URL/")"
  printf 'GET %s/healthz (certificate from Pebble) -> %s\n' "$DEMO_URL" "$(demo_curl "$DEMO_URL/healthz")"
)
stop_started agent-domain

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

A custom domain with a certificate from the local ACME CA (Pebble); \$BURROW_DEMO_AUTHTOKEN is
the pro account that verified $DEMO_DOMAIN:
  BURROW_AUTHTOKEN=\$BURROW_DEMO_AUTHTOKEN burrow http 8000 --domain \$BURROW_DEMO_DOMAIN
  curl --cacert \$BURROW_PEBBLE_ROOT --resolve \$BURROW_DEMO_DOMAIN:${BURROW_HTTPS_PORT}:127.0.0.1 https://\$BURROW_DEMO_DOMAIN:${BURROW_HTTPS_PORT}/
  curl -H "Authorization: Bearer \$BURROW_OPS_API_KEY" \$BURROW_API_URL/v1/certificates/\$BURROW_DEMO_DOMAIN
  # Pebble's root changes whenever Pebble restarts; fetch it again with:
  curl --cacert \$BURROW_PEBBLE_CA_FILE https://127.0.0.1:$BURROW_PEBBLE_MGMT_PORT/roots/0 -o \$BURROW_PEBBLE_ROOT
  # Another domain: add it (POST \$BURROW_API_URL/v1/accounts/<id>/domains), publish its TXT record with
  curl -X POST \$BURROW_CHALLTESTSRV_URL/set-txt -d '{"host": "_burrow-challenge.<domain>.", "value": "<token>"}'
  # then POST .../domains/<domain>/verify: the certificate follows within seconds.
Console: http://127.0.0.1:$BURROW_API_PORT/console (sign in with \$BURROW_OPS_API_KEY)
Logs: $LOGS    Stop: scripts/down.sh
MSG
