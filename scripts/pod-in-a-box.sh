#!/usr/bin/env bash
# The pod-in-a-box network: a Kubernetes node and its pods, made of real kernel parts, for
# tests/pod.rs. Needs root, iproute2 and iptables. Nothing is created in the root namespace.
#
#   pod-in-a-box.sh up PREFIX     create the namespaces, links, routes, ClusterIP DNAT, hosts files
#   pod-in-a-box.sh down PREFIX   kill every process in them and delete them (idempotent)
#   pod-in-a-box.sh list PREFIX   print what is left of PREFIX (nothing when torn down)
#
# Namespaces (PREFIX + role), addresses from the documentation range 198.51.100.0/24:
#   node          198.51.100.1 on every pod link; routes a /32 per pod; kube-proxy's DNAT
#   checkout-0    198.51.100.10   checkout-1  198.51.100.11   checkout-2  198.51.100.12
#   payment-v1    198.51.100.20   payment-v2  198.51.100.21
# checkout-2 is a replica the Deployment may scale up to: not in the headless Service's
# hosts lines until a test adds it.
# Pods are routed through the node (a /32 each, no bridge), so that the node's conntrack sees
# both directions of every pod-to-pod connection, as on a real node with a routed CNI.
# ClusterIPs are on no interface, DNATed in the node's PREROUTING as kube-proxy does:
#   payment-svc 198.51.100.200:80 -> v1 or v2 :8080 (half each)
#   payment-svc-v1 198.51.100.201:8080 -> 198.51.100.20:8080
#   payment-svc-v2 198.51.100.202:8080 -> 198.51.100.21:8080
# Cluster DNS names come from /etc/netns/<ns>/hosts (`ip netns exec` bind-mounts it on
# /etc/hosts); the node's lists the headless checkout-weir Service, one line per replica.
set -euo pipefail

cmd=${1:?usage: pod-in-a-box.sh up|down|list PREFIX}
prefix=${2:?usage: pod-in-a-box.sh up|down|list PREFIX}
pods=(checkout-0 checkout-1 checkout-2 payment-v1 payment-v2)
declare -A addr=([checkout-0]=198.51.100.10 [checkout-1]=198.51.100.11 [checkout-2]=198.51.100.12
                 [payment-v1]=198.51.100.20 [payment-v2]=198.51.100.21)
declare -A link=([checkout-0]=ck0 [checkout-1]=ck1 [checkout-2]=ck2 [payment-v1]=pv1 [payment-v2]=pv2)
node="${prefix}node"
suffix=production.svc.cluster.local

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

up() {
  ip netns add "$node"
  nsx "$node" ip link set lo up
  nsx "$node" sysctl -qw net.ipv4.ip_forward=1
  for pod in "${pods[@]}"; do
    local ns="$prefix$pod" a=${addr[$pod]} l=${link[$pod]}
    ip netns add "$ns"
    nsx "$ns" ip link set lo up
    # Created in the node namespace, the pod's end moved into the pod: never in the root one.
    nsx "$node" ip link add "$l" type veth peer name eth0 netns "$ns"
    nsx "$node" ip addr add 198.51.100.1/32 dev "$l"
    nsx "$node" ip link set "$l" up
    nsx "$node" ip route add "$a/32" dev "$l"
    nsx "$ns" ip addr add "$a/32" dev eth0
    nsx "$ns" ip link set eth0 up
    nsx "$ns" ip route add 198.51.100.1/32 dev eth0
    nsx "$ns" ip route add default via 198.51.100.1 dev eth0
    mkdir -p "/etc/netns/$ns"
    cat > "/etc/netns/$ns/hosts" <<HOSTS
127.0.0.1 localhost
$a $pod
198.51.100.200 payment-svc payment-svc.production payment-svc.$suffix
198.51.100.201 payment-svc-v1 payment-svc-v1.$suffix
198.51.100.202 payment-svc-v2 payment-svc-v2.$suffix
HOSTS
    # No resolver: names outside the hosts file fail at once, nothing leaves the machine.
    printf 'search %s svc.cluster.local cluster.local\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n' \
      "$suffix" > "/etc/netns/$ns/resolv.conf"
  done
  mkdir -p "/etc/netns/$node"
  cat > "/etc/netns/$node/hosts" <<HOSTS
127.0.0.1 localhost
198.51.100.10 checkout-weir.$suffix
198.51.100.11 checkout-weir.$suffix
HOSTS
  printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' > "/etc/netns/$node/resolv.conf"
  # kube-proxy (iptables mode): ClusterIP -> endpoints, in the node's PREROUTING.
  nsx "$node" iptables-restore <<NAT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A OUTPUT -j KUBE-SERVICES
-A KUBE-SERVICES -d 198.51.100.200/32 -p tcp --dport 80 -m statistic --mode random --probability 0.5 -j DNAT --to-destination 198.51.100.20:8080
-A KUBE-SERVICES -d 198.51.100.200/32 -p tcp --dport 80 -j DNAT --to-destination 198.51.100.21:8080
-A KUBE-SERVICES -d 198.51.100.201/32 -p tcp --dport 8080 -j DNAT --to-destination 198.51.100.20:8080
-A KUBE-SERVICES -d 198.51.100.202/32 -p tcp --dport 8080 -j DNAT --to-destination 198.51.100.21:8080
COMMIT
NAT
}

down() {
  local ns
  for ns in "$node" "${pods[@]/#/$prefix}"; do
    if [ -e "/run/netns/$ns" ]; then
      # Every process started in it (weir, apps, Prometheus), then the namespace and its links.
      local pids
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      if [ -n "$pids" ]; then
        kill -KILL $pids 2>/dev/null || true
        for _ in $(seq 50); do
          [ -z "$(ip netns pids "$ns" 2>/dev/null || true)" ] && break
          sleep 0.02
        done
      fi
      ip netns delete "$ns" 2>/dev/null || true
    fi
    rm -rf "/etc/netns/$ns"
  done
  rmdir /etc/netns 2>/dev/null || true
}

list() {
  local ns
  for ns in "$node" "${pods[@]/#/$prefix}"; do
    [ -e "/run/netns/$ns" ] && echo "namespace $ns"
    [ -e "/etc/netns/$ns" ] && echo "/etc/netns/$ns"
  done
  return 0
}

case $cmd in
  up) down; up ;;
  down) down ;;
  list) list ;;
  *) echo "pod-in-a-box.sh: unknown command $cmd (up, down, list)" >&2; exit 2 ;;
esac
