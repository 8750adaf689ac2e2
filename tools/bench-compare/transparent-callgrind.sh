#!/usr/bin/env bash
# Instructions per request of weir's outbound listener, explicit vs transparent, under
# valgrind's callgrind (issue 12: "the transparent path must not cost more than
# the explicit one"). Needs root, iproute2, iptables, valgrind and oha.
#
#   cargo build --release -p weir
#   sudo tools/bench-compare/transparent-callgrind.sh [REQUESTS]      (default 10000)
#
# A network namespace of its own (nothing in the root namespace): payment-svc v1 and v2
# (`weir upstream`) on loopback, `weir init` capturing outbound TCP to 15001 except uid 1337,
# and `weir serve --workers 1` as uid 1337 under callgrind with the lesson's config, started
# afresh for every count (so that one path's state never warms the other's). oha runs as
# uid 1000 and sends the same requests (GET /pay, Host: payment-svc) two ways:
#   explicit     to 127.0.0.1:15001 itself (loopback is never captured)
#   transparent  to the ClusterIP 198.51.100.200:80, redirected to 15001 by the nat rules;
#                weir reads SO_ORIGINAL_DST and sniffs the first bytes of each connection
# each over 10 keep-alive connections, then with a new connection per request (where the
# transparent listener's per-connection work shows). Per request is the difference between a
# run of 2 x REQUESTS and one of REQUESTS, divided by REQUESTS: start-up, the 1,000 requests of
# warm-up and shutdown cancel out.
# Prints a markdown table; writes it to benches/results/transparent-callgrind-latest.md.
# KEEP=DIR keeps every callgrind output there (name: PHASE-REQUESTS), for callgrind_annotate.
set -euo pipefail

n=${1:-10000}
warmup=${WARMUP:-1000}
root=$(cd "$(dirname "$0")/../.." && pwd)
weir_src=${WEIR:-$root/target/release/weir}
for tool in ip iptables-restore valgrind oha setpriv curl python3; do
  command -v "$tool" >/dev/null || { echo "transparent-callgrind: $tool is missing" >&2; exit 2; }
done
[ "$(id -u)" -eq 0 ] || { echo "transparent-callgrind: needs root (a network namespace, iptables)" >&2; exit 2; }
[ -x "$weir_src" ] || { echo "transparent-callgrind: no $weir_src: cargo build --release -p weir (or WEIR=path)" >&2; exit 2; }

ns="weir-tcg-$$"
dir=$(mktemp -d /tmp/weir-tcg.XXXXXX)
pids=()
cleanup() {
  # Everything started in the namespace (upstreams, a weir left by a failed count).
  local left
  left=$(ip netns pids "$ns" 2>/dev/null || true)
  [ -z "$left" ] || kill $left 2>/dev/null || true
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  ip netns delete "$ns" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
chmod 755 "$dir"
cp "$weir_src" "$dir/weir"
cp "$root/config/payment-svc.yaml" "$dir/payment-svc.yaml"
# What uid 1337 writes: weir's state file, callgrind's counts.
mkdir "$dir/state" "$dir/cg" && chown 1337:1337 "$dir/state" "$dir/cg"
nsx() { ip netns exec "$ns" "$@"; }

ip netns add "$ns"
nsx ip link set lo up
# The ClusterIP's network on a veth pair whose both ends stay in the namespace: the route lets
# the app's connect() start, the nat rules take it to weir before a packet leaves.
nsx ip link add v0 type veth peer name v1
nsx ip addr add 198.51.100.2/24 dev v0
nsx ip link set v1 up
nsx ip link set v0 up
nsx "$dir/weir" upstream --listen 127.0.0.1:18081 --name v1 >/dev/null 2>&1 & pids+=($!)
nsx "$dir/weir" upstream --listen 127.0.0.1:18082 --name v2 >/dev/null 2>&1 & pids+=($!)
nsx "$dir/weir" init --inbound-ports "" >/dev/null
# oha as the app (uid 1000): every answer must be a 200.
load() {
  local url=$1 requests=$2; shift 2
  local json
  json=$(nsx setpriv --reuid=1000 --regid=1000 --clear-groups \
    oha --no-tui --output-format json -n "$requests" -c 10 --host payment-svc "$@" "$url")
  python3 - "$json" "$requests" <<'PY'
import json, sys
codes = json.loads(sys.argv[1])["statusCodeDistribution"]
if codes.get("200", 0) != int(sys.argv[2]):
    sys.exit(f"transparent-callgrind: {codes} for {sys.argv[2]} requests, not all 200")
PY
}

# One weir under callgrind (uid 1337, one worker): 1,000 requests of warm-up, then `requests`
# more, SIGTERM; the instructions of the whole process.
instructions() {
  local url=$1 requests=$2; shift 2
  local out="$dir/cg/callgrind.out.$RANDOM"
  nsx setpriv --reuid=1337 --regid=1337 --clear-groups \
    valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$dir/weir" serve --config "$dir/payment-svc.yaml" --listen 0.0.0.0:15001 \
    --admin 127.0.0.1:15000 --workers 1 --reload-poll 0s --state "$dir/state/state.json" \
    >"$dir/weir.log" 2>&1 &
  # `ip netns exec` waits for its child; valgrind is the process named by its output file.
  local ip=$! vg=""
  for _ in $(seq 100); do
    vg=$(pgrep -f -- "--callgrind-out-file=$out" | head -1 || true)
    [ -n "$vg" ] && break
    sleep 0.05
  done
  [ -n "$vg" ] || { echo "transparent-callgrind: valgrind did not start" >&2; exit 1; }
  for _ in $(seq 600); do
    kill -0 "$ip" 2>/dev/null || break
    nsx curl -s -o /dev/null http://127.0.0.1:15000/readyz && break
    sleep 0.1
  done
  nsx curl -sf -o /dev/null http://127.0.0.1:15000/readyz || { cat "$dir/weir.log" >&2; exit 1; }
  load "$url" "$warmup" "$@"
  load "$url" "$requests" "$@"
  # Nothing listens on 198.51.100.200: a transparent request answered 200 went through the
  # capture. Nothing may have looped.
  if nsx curl -s http://127.0.0.1:15000/metrics | grep -q 'weir_loops_stopped_total{reason="[a-z_]*"} [1-9]'; then
    echo "transparent-callgrind: a loop was stopped: the capture is wrong" >&2; exit 1
  fi
  kill -TERM "$vg"
  wait "$ip" || true
  [ -z "${KEEP:-}" ] || cp "$out" "$KEEP/$phase-$requests"
  sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$out" | head -1
}

explicit=http://127.0.0.1:15001/pay
transparent=http://198.51.100.200/pay
# Per request: the difference between a run of 2n and a run of n requests, over n, so that
# start-up, warm-up and shutdown cancel out.
table="| path (10 connections) | instructions per request |
|---|---:|"
declare -A per
for phase in explicit-keepalive transparent-keepalive explicit-new-connection transparent-new-connection; do
  url=$explicit
  [[ $phase == transparent-* ]] && url=$transparent
  flags=()
  [[ $phase == *-new-connection ]] && flags=(--disable-keepalive)
  echo "transparent-callgrind: $phase" >&2
  short=$(instructions "$url" "$n" "${flags[@]}")
  long=$(instructions "$url" $((2 * n)) "${flags[@]}")
  per[$phase]=$(((long - short) / n))
  table+=$'\n'"| $phase | ${per[$phase]} |"
done
ka=$(python3 -c "import sys; a, b = map(int, sys.argv[1:]); print(f'{(b - a) / a * 100:+.1f}%')" "${per[explicit-keepalive]}" "${per[transparent-keepalive]}")
nc=$(python3 -c "import sys; a, b = map(int, sys.argv[1:]); print(f'{(b - a) / a * 100:+.1f}%')" "${per[explicit-new-connection]}" "${per[transparent-new-connection]}")
out="# Explicit vs transparent outbound listener, callgrind

$(date -u +%F), $(valgrind --version), weir $("$dir/weir" --version 2>/dev/null | awk '{print $2}'), one weir worker,
\`sudo tools/bench-compare/transparent-callgrind.sh $n\`.

$table

Transparent minus explicit, per request: $ka over keep-alive connections, $nc with a new
connection per request."
echo "$out"
mkdir -p "$root/benches/results"
echo "$out" > "$root/benches/results/transparent-callgrind-latest.md"
