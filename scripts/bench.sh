#!/usr/bin/env bash
# The benchmark in one command: direct, burrow, rathole (plain TCP and Noise) and bore side by
# side on loopback. Results: target/bench/results.json ({target, test, value, unit} rows) and
# the generated table in docs/BENCHMARKS.md.
#
#   scripts/bench.sh                    # full run (about 15 minutes on 2 cores)
#   scripts/bench.sh --runs 1 --secs 2  # quicker, noisier
#   scripts/bench.sh --only bulk_up_1 --endpoints 0 --rathole-endpoints 0 --bore-endpoints 0
#   scripts/bench.sh --perf             # also perf profiles of relay and agent (target/bench/perf-*.txt)
#   scripts/bench.sh transport          # the transport experiment behind docs/transport.md
#   BURROW_BENCH_REF=<commit> scripts/bench.sh   # bench a commit's relay and agent (git archive)
#
# Installs what is missing: iperf3 and wrk (apt), rathole 0.5.0 and bore-cli 0.6.0
# (`cargo install --root ~/.cache/burrow-bench/peers`). Release builds go to a separate target
# dir (~/.cache/burrow-bench-target) so they never hold the lock of the usual debug builds;
# burrow-api (called once per agent session) is a debug build. PostgreSQL and Redis are
# reused or started as in scripts/up.sh; the run gets its own database, dropped at the end.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_TARGET="${BURROW_BENCH_TARGET_DIR:-${HOME:-/root}/.cache/burrow-bench-target}"
PEERS="${BURROW_BENCH_PEERS_DIR:-${HOME:-/root}/.cache/burrow-bench/peers}"

mode=run
if [ "${1:-}" = transport ]; then
  mode=transport
  shift
fi

missing=()
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v wrk >/dev/null || missing+=(wrk)
if [ "$mode" = run ]; then
  command -v psql >/dev/null && [ -n "$(pg_bin)" ] || missing+=(postgresql postgresql-client)
  command -v redis-server >/dev/null || missing+=(redis-server)
  for a in "$@"; do [ "$a" = --perf ] && { command -v perf >/dev/null || missing+=(linux-perf); }; done
fi
if ((${#missing[@]})); then apt_install "${missing[@]}"; fi

install_peer() { # install_peer BINARY CRATE VERSION [cargo install flags...]
  local bin="$1" crate="$2" version="$3"; shift 3
  if [ -x "$PEERS/bin/$bin" ] && "$PEERS/bin/$bin" --version 2>/dev/null | grep -q "$version"; then
    return
  fi
  say "installing $crate $version into $PEERS (cargo install; a few minutes)"
  CARGO_TARGET_DIR="$BENCH_TARGET/install" \
    cargo install --quiet --root "$PEERS" "$crate" --version "$version" "$@"
}
if [ "$mode" = run ]; then
  # rathole's own lock file pins `time` 0.3.29, which current rustc no longer compiles: resolve
  # fresh. bore's lock file builds as is.
  install_peer rathole rathole 0.5.0
  install_peer bore bore-cli 0.6.0 --locked
fi

# What to build: the work tree, or with BURROW_BENCH_REF a clean export of that commit (others
# may be editing the work tree mid-change).
SRC="$ROOT"
SOURCE="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "${BURROW_BENCH_REF:-}" ]; then
  SRC="$BENCH_TARGET/src"
  SOURCE="$(git -C "$ROOT" rev-parse --short "$BURROW_BENCH_REF")"
  say "exporting $BURROW_BENCH_REF ($SOURCE) to $SRC"
  rm -rf "$SRC" && mkdir -p "$SRC"
  git -C "$ROOT" archive "$BURROW_BENCH_REF" | tar -x -C "$SRC"
elif [ -n "$(git -C "$ROOT" status --porcelain -- common proto relay agent 2>/dev/null)" ]; then
  SOURCE="$SOURCE + uncommitted changes"
fi

# The measuring tool always comes from the work tree.
say "building burrow-bench (release)"
(cd "$ROOT" && CARGO_TARGET_DIR="$BENCH_TARGET" cargo build --release --quiet -p burrow-bench --bin burrow-bench)
BENCH="$BENCH_TARGET/release/burrow-bench"

if [ "$mode" = transport ]; then
  cd "$ROOT"
  exec "$BENCH" transport "$@"
fi

say "building burrow-relay and burrow (release, target dir $BENCH_TARGET)"
(cd "$SRC" && CARGO_TARGET_DIR="$BENCH_TARGET" cargo build --release --quiet \
  -p burrow-relay -p burrow-agent --bins)
BIN_DIR="$BENCH_TARGET/release"
if [ "$SRC" != "$ROOT" ]; then
  # Keep the exported commit's binaries apart from the work tree's.
  mkdir -p "$BENCH_TARGET/ref-bin"
  cp "$BIN_DIR/burrow-relay" "$BIN_DIR/burrow" "$BENCH_TARGET/ref-bin/"
  BIN_DIR="$BENCH_TARGET/ref-bin"
fi

# burrow-api only verifies each session's authtoken (once per session): the work tree's debug
# build, in the usual debug target dir, serves whatever relay is benched.
say "building burrow-api (debug, target dir $CARGO_TARGET_DIR)"
(cd "$ROOT" && cargo build --quiet -p burrow-api --bin burrow-api)

ensure_postgres
ensure_redis

DB="burrow_bench_$$"
PSQL=(psql -h 127.0.0.1 -p "$BURROW_PG_PORT" -U postgres -d postgres -qtA)
"${PSQL[@]}" -c "CREATE DATABASE $DB" >/dev/null
trap '"${PSQL[@]}" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true' EXIT

# Idle-endpoint tests hold many sockets: use the whole allowance.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

say "running burrow-bench (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
cd "$ROOT"
"$BENCH" run \
  --burrow-bin-dir "$BIN_DIR" \
  --api-bin "$CARGO_TARGET_DIR/debug/burrow-api" \
  --peers-bin-dir "$PEERS/bin" \
  --database-url "postgres://postgres@127.0.0.1:$BURROW_PG_PORT/$DB" \
  --redis-url "redis://127.0.0.1:$BURROW_REDIS_PORT" \
  --command "${BURROW_BENCH_REF:+BURROW_BENCH_REF=$BURROW_BENCH_REF }scripts/bench.sh${*:+ $*}" \
  --source "$SOURCE" \
  "$@"
