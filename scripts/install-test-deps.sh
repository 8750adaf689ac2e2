#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, when missing. Idempotent.
#   procps      kill(1), for the signal tests
#   curl        HTTP from inside the network namespaces of tests/pod.rs (the pods' apps)
#   prometheus  /usr/bin/prometheus, for tests/prometheus.rs (the Prometheus metric source
#               against a real server); those tests fail, never skip, without it
#   iptables    iptables-{nft,legacy}-{save,restore}, for tests/capture.rs (`weir init` in
#               network namespaces the tests create)
#   iproute2    ip(8), for the same tests (network namespaces, veth pairs)
set -euo pipefail
need=()
command -v kill >/dev/null || need+=(procps)
command -v curl >/dev/null || need+=(curl)
[ -x /usr/bin/prometheus ] || need+=(prometheus)
command -v iptables-legacy-restore >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v setpriv >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  # The server alone: the recommended exporters are not needed.
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# Where an init system runs, the package also starts a system-wide Prometheus on :9090; the
# tests start their own on free ports and never use it.
echo "test dependencies present"
