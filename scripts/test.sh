#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (Debian's prometheus,
# for the tests against a real Prometheus), then runs every test of the workspace.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo test --workspace "$@"
