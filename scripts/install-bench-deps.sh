#!/usr/bin/env bash
# Installs what `cargo bench --bench compare` needs, when missing. Idempotent. The harness
# installs the same by itself unless given --no-install; this script is for a machine prepared
# ahead of a run (or without the harness's root rights at run time).
#   nginx-light     the nginx contender
#   haproxy         the HAProxy contender
#   wrk             the saturation load of the standard shapes
#   apache2-utils   ab, for the HTTP/1.0 keep-alive shape (ab -k)
#   nghttp2-client  h2load, the fixed request count of the callgrind counts
#   valgrind        callgrind
#   util-linux      taskset, to pin the proxy and the load to separate cores
#   cmake           builds zlib-ng for pingora-core's flate2 (tools/pingora-split)
#   oha             (crates.io) the fixed-rate latency runs and the header probes
set -euo pipefail
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v ab >/dev/null || need+=(apache2-utils)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v valgrind >/dev/null || need+=(valgrind)
command -v taskset >/dev/null || need+=(util-linux)
command -v cmake >/dev/null || need+=(cmake)
if [ ${#need[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v oha >/dev/null || cargo install oha --locked
echo "bench dependencies present"
