#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, when missing. Idempotent.
#   procps      kill(1), for the signal tests
#   curl        HTTP from inside the network namespaces of tests/pod.rs (the pods' apps)
#   prometheus  /usr/bin/prometheus, for tests/prometheus.rs (the Prometheus metric source
#               against a real server); those tests fail, never skip, without it
#   iptables    iptables-{nft,legacy}-{save,restore}, for tests/capture.rs (`weir init` in
#               network namespaces the tests create)
#   iproute2    ip(8), for the same tests (network namespaces, veth pairs)
#   python3-venv  a virtualenv (.test-venv) for kubernetes-validate from PyPI, pinned in
#               scripts/k8s-validate-requirements.txt, for tests/k8s_manifests.rs (the only
#               network access: PyPI, here; the test runs it offline)
set -euo pipefail
need=()
command -v kill >/dev/null || need+=(procps)
command -v curl >/dev/null || need+=(curl)
[ -x /usr/bin/prometheus ] || need+=(prometheus)
command -v iptables-legacy-restore >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v setpriv >/dev/null || need+=(util-linux)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  # The server alone: the recommended exporters are not needed.
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# kubernetes-validate, pinned, in a virtualenv of the repository's own (gitignored).
venv="$(cd "$(dirname "$0")/.." && pwd)/.test-venv"
want="$(sed -n 's/^kubernetes-validate==//p' "$(dirname "$0")/k8s-validate-requirements.txt")"
if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
    -r "$(dirname "$0")/k8s-validate-requirements.txt"
fi
# Where an init system runs, the package also starts a system-wide Prometheus on :9090; the
# tests start their own on free ports and never use it.
echo "test dependencies present"
