#!/usr/bin/env bash
# Coverage-guided fuzzing of weir-router on the stable toolchain (libFuzzer through
# libfuzzer-sys, SanitizerCoverage flags instead of `cargo +nightly fuzz`):
#   bash fuzz/run.sh [seconds]        # default 120
# Seeds: the lesson's config and the broken examples, each behind a request line. Crashes are
# written as crash-* files in fuzz/.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-120}
target=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
  cargo build --release --target "$target" --target-dir target/cov
corpus=corpus/config_and_request
mkdir -p "$corpus"
{ printf '/pay payment-svc x-canary true 95\n'; cat ../config/payment-svc.yaml; } > "$corpus/lesson"
for f in ../config/examples/*.yaml; do
  { printf '/ payment-svc x-a b 1\n'; cat "$f"; } > "$corpus/$(basename "$f")"
done
"target/cov/$target/release/config_and_request" "$corpus" -max_total_time="$secs" -max_len=8192
