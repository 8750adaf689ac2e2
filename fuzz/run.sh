#!/usr/bin/env bash
# Coverage-guided fuzzing on the stable toolchain (libFuzzer through libfuzzer-sys,
# SanitizerCoverage flags instead of `cargo +nightly fuzz`), one bounded run per target:
#   bash fuzz/run.sh [seconds]          # default 120, shared by the three targets
#   bash fuzz/run.sh 60 exposition      # one target for the whole time
# Targets:
#   config_and_request  weir-router: arbitrary config, then arbitrary requests routed through it
#   exposition          weir-canary: arbitrary `/metrics` text (scraped over the network)
#   canary_spec         weir-canary: arbitrary `Canary` YAML
# Seeds: the lesson's config and the broken examples behind a request line; an Envoy-shaped
# exposition; the canary specs under config/. Crashes are written as crash-* files in fuzz/.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-120}
targets=("${@:2}")
[ ${#targets[@]} -gt 0 ] || targets=(config_and_request exposition canary_spec)
each=$(( secs / ${#targets[@]} ))
[ "$each" -ge 1 ] || each=1
target=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
  cargo build --release --target "$target" --target-dir target/cov

seed_config_and_request() {
  { printf '/pay payment-svc x-canary true 95\n'; cat ../config/payment-svc.yaml; } > "$1/lesson"
  for f in ../config/examples/*.yaml; do
    { printf '/ payment-svc x-a b 1\n'; cat "$f"; } > "$1/$(basename "$f")"
  done
}

seed_exposition() {
  {
    printf '# HELP istio_requests_total Total requests.\n# TYPE istio_requests_total counter\n'
    printf 'istio_requests_total{reporter="source",destination_service_name="payment-svc",destination_version="v2",response_code="503",response_flags="UH"} 5 1700000000000\n'
    printf 'istio_requests_total{destination_service_name="payment-svc",destination_version="v\\"1\\\\",response_code="200"} 95\n'
    for le in 0.5 1 5 10 25 50 100 250 500 1000 +Inf; do
      printf 'istio_request_duration_milliseconds_bucket{destination_service_name="payment-svc",destination_version="v2",le="%s"} 7\n' "$le"
    done
    printf 'weir_route_weight{virtual_service="payment-svc",subset="v2"} 10\n# EOF\n'
  } > "$1/sidecar"
}

seed_canary_spec() {
  cp ../config/canary.yaml "$1/canary.yaml"
  for f in $(grep -l 'kind: Canary' -r ../config ../docs 2>/dev/null | grep -E '\.ya?ml$'); do
    cp "$f" "$1/$(echo "$f" | tr '/.' '__')"
  done
}

for t in "${targets[@]}"; do
  corpus=corpus/$t
  mkdir -p "$corpus"
  "seed_$t" "$corpus"
  echo "== $t: ${each}s"
  "target/cov/$target/release/$t" "$corpus" -max_total_time="$each" -max_len=8192
done
