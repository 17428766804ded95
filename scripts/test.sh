#!/usr/bin/env bash
# Runs the whole test suite: formatting, clippy, unit, property, integration and end-to-end
# tests (real api, relay, worker and agent processes against real PostgreSQL, Redis, Temporal
# and headless Chromium). Installs and starts what is missing; stops what it started.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# pebble (+ pebble-challtestsrv): the ACME CA of the certificate tests; lego: an ACME client.
ensure_tools chromium chromium-driver pebble lego
STARTED_BEFORE=$(ls "$PIDS" 2>/dev/null || true)
cleanup() {
  # Stop only the services this run started (not ones up.sh or the machine runs).
  local f
  for f in temporal redis postgres; do
    if [ -f "$PIDS/$f.pid" ] && ! grep -qx "$f.pid" <<<"$STARTED_BEFORE"; then stop_started "$f"; fi
  done
}
trap cleanup EXIT
ensure_postgres
ensure_redis
ensure_temporal

export BURROW_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$BURROW_PG_PORT/postgres"
export BURROW_TEST_REDIS_URL="redis://127.0.0.1:$BURROW_REDIS_PORT"
export BURROW_TEST_TEMPORAL_ADDRESS="http://127.0.0.1:$BURROW_TEMPORAL_PORT"
export BURROW_TEST_CHROMEDRIVER="$(command -v chromedriver)"

cd "$ROOT"
say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "cargo build (the end-to-end suite runs the workspace's binaries)"
cargo build --workspace --bins --quiet
say "cargo test"
OUT="$LOGS/cargo-test.log"
set +e
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$OUT"
status=${PIPESTATUS[0]}
set -e
# One closing line with the totals of every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$OUT"
exit "$status"
