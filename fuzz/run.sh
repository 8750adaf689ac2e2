#!/usr/bin/env bash
# Coverage-guided fuzzing on the stable toolchain (libFuzzer through libfuzzer-sys,
# SanitizerCoverage flags instead of `cargo +nightly fuzz`), one bounded run per target:
#   bash fuzz/run.sh [seconds]          # default 120, shared by the three targets
#   bash fuzz/run.sh 60 exposition      # one target for the whole time
# Targets:
#   config_and_request  weir-router: arbitrary config, then arbitrary requests routed through it
#   exposition          weir-canary: arbitrary `/metrics` text (scraped over the network)
#   canary_spec         weir-canary: arbitrary `Canary` YAML
#   http_proxy          weir-proxy: arbitrary bytes as an HTTP/1.1 or h2c connection to an
#                       in-process sidecar (head, body, pipelining); never a panic, a 500 or a
#                       5xx blamed on the healthy upstream
#   admin_json          weir-proxy: arbitrary JSON to PUT /weights, POST|DELETE /rollback,
#                       POST /promote; documented statuses only, the table still routes
#   path_normalize      weir-router: Envoy-style path normalisation is total and idempotent
# Seeds: the lesson's config and the broken examples behind a request line; an Envoy-shaped
# exposition; the canary specs under config/. Crashes are written as crash-* files in fuzz/.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-120}
targets=("${@:2}")
[ ${#targets[@]} -gt 0 ] || targets=(config_and_request exposition canary_spec http_proxy admin_json path_normalize)
each=$(( secs / ${#targets[@]} ))
[ "$each" -ge 1 ] || each=1
target=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
  cargo build --release --target "$target" --target-dir target/cov $(printf -- '--bin %s ' "${targets[@]}")

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

seed_http_proxy() {
  printf 'GET /pay HTTP/1.1\r\nhost: payment-svc\r\n\r\n' > "$1/get"
  printf 'POST /pay HTTP/1.1\r\nhost: payment-svc\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n' > "$1/chunked"
  printf 'POST /pay HTTP/1.1\r\nhost: payment-svc\r\ncontent-length: 5\r\n\r\nhelloGET /x/../%%61dmin HTTP/1.1\r\nhost: payment-svc\r\n\r\n' > "$1/pipelined"
  printf 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00' > "$1/h2c-preface"
}

seed_admin_json() {
  printf '\x00{"virtual_service":"payment-svc","weights":{"v1":90,"v2":10}}' > "$1/weights"
  printf '\x01{"virtual_service":"payment-svc"}' > "$1/rollback"
  printf '\x02{}' > "$1/release"
  printf '\x03{"virtual_service":"payment-svc","subset":"v2"}' > "$1/promote"
}

seed_path_normalize() {
  for p in '/x/../admin/x' '/./admin' '/%61dmin/%2e%2E/x' '//a//b/' '/a/..;x=y/b' '/a\\..\\b'; do
    printf '%s' "$p" > "$1/$(printf '%s' "$p" | md5sum | cut -c1-8)"
  done
}

for t in "${targets[@]}"; do
  corpus=corpus/$t
  mkdir -p "$corpus"
  "seed_$t" "$corpus"
  echo "== $t: ${each}s"
  "target/cov/$target/release/$t" "$corpus" -max_total_time="$each" -max_len=8192
done
