#!/usr/bin/env bash
# Coverage-guided fuzzing of one cargo-fuzz target on the stable toolchain:
#   scripts/fuzz.sh <tunnel_frame|webhook_signature|config_file|proxy_protocol|client_hello|policy_document|cert_callback|cert_chain|sealed_value|retry_schedule> [seconds]
# Builds fuzz/ with libFuzzer's coverage instrumentation (the flags cargo-fuzz passes, minus
# AddressSanitizer, which needs nightly; the workspace forbids unsafe code) and runs it.
# The corpus is kept in fuzz/corpus/<target> (seeded from fuzz/seeds/<target> when present),
# crashes in fuzz/artifacts/<target>.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${1:?usage: scripts/fuzz.sh <target> [seconds]}"
secs="${2:-60}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="${BURROW_FUZZ_TARGET_DIR:-$HOME/.cache/burrow-fuzz-target}"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
cd "$ROOT/fuzz"
# --target keeps RUSTFLAGS off build scripts, as cargo-fuzz does.
cargo build --release --target "$triple" --bin "$target"
mkdir -p "corpus/$target" "artifacts/$target"
seeds=()
[ -d "seeds/$target" ] && seeds=("seeds/$target")
"$CARGO_TARGET_DIR/$triple/release/$target" -max_total_time="$secs" \
  -artifact_prefix="artifacts/$target/" "corpus/$target" "${seeds[@]}"
