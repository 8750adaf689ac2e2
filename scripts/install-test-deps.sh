#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, when missing. Idempotent.
set -euo pipefail
need=()
command -v kill >/dev/null || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi
echo "test dependencies present"
