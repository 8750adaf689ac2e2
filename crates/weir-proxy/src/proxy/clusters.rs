//! What the proxy keeps beside each routing table: per cluster, the `Host` to send, the
//! endpoints as parsed authorities, the load balancer's state and the metric series.
//!
//! Built once per table generation, off the hot path, and published with one `ArcSwap`
//! store. Load-balancer state (the round-robin cursor, each endpoint's in-flight count) lives
//! in a store keyed by host + subset and by endpoint authority, so it survives table swaps: a
//! weight change does not reset round robin or forget the requests in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use http::uri::Authority;
use weir_router::{HashKey, LoadBalancer, RouteTable, random_value, sticky_hash};

use super::pool::IdleConns;
use crate::metrics::{ClusterSeries, Metrics};

/// The proxy's side of one [`RouteTable`]: [`ClusterRuntime`] by cluster index.
#[derive(Debug)]
pub(crate) struct ClusterTable {
    generation: u64,
    clusters: Vec<ClusterRuntime>,
}

/// One cluster as the proxy forwards to it.
#[derive(Debug)]
pub(crate) struct ClusterRuntime {
    /// `Host` / `:authority` sent upstream: the destination host.
    pub host: HeaderValue,
    /// `Host` for mirrored copies: `<host>-shadow`, as Envoy names shadow traffic.
    pub shadow_host: HeaderValue,
    pub endpoints: Box<[EndpointRuntime]>,
    pub load_balancer: LoadBalancer,
    cursor: Arc<AtomicUsize>,
    pub series: Arc<ClusterSeries>,
}

/// One endpoint: where to connect and its shared state.
#[derive(Debug)]
pub(crate) struct EndpointRuntime {
    pub authority: Authority,
    state: Arc<EndpointState>,
    /// Stable hash of the authority, for rendezvous hashing.
    hash: u64,
}

impl EndpointRuntime {
    /// The endpoint's idle HTTP/1.1 connections (they outlive table swaps).
    pub fn idle(&self) -> &Arc<IdleConns> {
        &self.state.idle
    }
}

#[derive(Debug, Default)]
struct EndpointState {
    in_flight: AtomicUsize,
    /// Idle HTTP/1.1 connections to the endpoint.
    idle: Arc<IdleConns>,
}

/// A request outstanding on an endpoint: counted in its in-flight gauge until dropped.
#[derive(Debug)]
pub(crate) struct EndpointLease(Arc<EndpointState>);

/// Builds and caches [`ClusterTable`]s; owns the state that outlives a table.
#[derive(Debug, Default)]
pub(crate) struct Clusters {
    current: ArcSwapOption<ClusterTable>,
    store: Mutex<Store>,
}

#[derive(Debug, Default)]
struct Store {
    cursors: HashMap<(String, Option<String>), Arc<AtomicUsize>>,
    endpoints: HashMap<String, Arc<EndpointState>>,
}

// === impl Clusters ===

impl Clusters {
    /// The side table for `table`: the cached one when the generation matches, else a new one
    /// built now and published for the next requests.
    pub fn for_table(&self, table: &RouteTable, metrics: &Metrics) -> Arc<ClusterTable> {
        if let Some(current) = self.current.load_full()
            && current.generation == table.generation()
        {
            return current;
        }
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        // Another request may have built it while this one waited.
        if let Some(current) = self.current.load_full()
            && current.generation == table.generation()
        {
            return current;
        }
        let built = Arc::new(store.build(table, metrics));
        // Never replace a newer table's side table with an older one.
        let newer = self
            .current
            .load()
            .as_ref()
            .is_some_and(|c| c.generation > built.generation);
        if !newer {
            self.current.store(Some(built.clone()));
        }
        built
    }
}

impl Store {
    fn build(&mut self, table: &RouteTable, metrics: &Metrics) -> ClusterTable {
        let mut clusters = Vec::with_capacity(table.clusters().len());
        for c in table.clusters() {
            let cursor = self
                .cursors
                .entry((c.host.clone(), c.subset.clone()))
                .or_default()
                .clone();
            let endpoints = c
                .endpoints
                .iter()
                .filter_map(|e| {
                    let authority = match Authority::try_from(e.authority.as_str()) {
                        Ok(a) => a,
                        Err(err) => {
                            tracing::warn!(endpoint = %e.authority, error = %err, "endpoint is not a valid authority; skipped");
                            return None;
                        }
                    };
                    let state = self.endpoints.entry(e.authority.clone()).or_default().clone();
                    Some(EndpointRuntime {
                        hash: sticky_hash(e.authority.as_bytes()),
                        authority,
                        state,
                    })
                })
                .collect();
            let host = HeaderValue::from_str(&c.host)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
            let shadow_host = HeaderValue::from_str(&shadow(&c.host))
                .unwrap_or_else(|_| HeaderValue::from_static("unknown-shadow"));
            clusters.push(ClusterRuntime {
                host,
                shadow_host,
                endpoints,
                load_balancer: c.load_balancer.clone(),
                cursor,
                series: metrics.cluster_series(&c.labels),
            });
        }
        // Forget state of clusters and endpoints no table serves any more.
        self.cursors
            .retain(|_, cursor| Arc::strong_count(cursor) > 1);
        self.endpoints
            .retain(|_, state| Arc::strong_count(state) > 1);
        ClusterTable {
            generation: table.generation(),
            clusters,
        }
    }
}

/// `payment-svc:8080` -> `payment-svc-shadow:8080` (Envoy's shadow host).
fn shadow(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((h, port))
            if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') =>
        {
            format!("{h}-shadow:{port}")
        }
        _ => format!("{host}-shadow"),
    }
}

// === impl ClusterTable ===

impl ClusterTable {
    /// The runtime of the cluster at `index` in the table this was built from.
    #[inline]
    pub fn cluster(&self, index: usize) -> &ClusterRuntime {
        &self.clusters[index]
    }
}

// === impl ClusterRuntime ===

impl ClusterRuntime {
    /// Picks an endpoint for a request; `hash` is the request's consistent-hash key, if the
    /// load balancer wants one and the request carries it. `None` when the subset is empty.
    pub fn pick(&self, hash: Option<u64>) -> Option<(&EndpointRuntime, EndpointLease)> {
        let n = self.endpoints.len();
        let index = match n {
            0 => return None,
            1 => 0,
            _ => match (&self.load_balancer, hash) {
                (LoadBalancer::ConsistentHash(_), Some(key)) => self.rendezvous(key),
                (LoadBalancer::RoundRobin | LoadBalancer::Passthrough, _) => {
                    self.cursor.fetch_add(1, Ordering::Relaxed) % n
                }
                (LoadBalancer::LeastRequest, _) => self.power_of_two(n),
                (LoadBalancer::Random | LoadBalancer::ConsistentHash(_), _) => random_index(n),
            },
        };
        let endpoint = &self.endpoints[index];
        endpoint.state.in_flight.fetch_add(1, Ordering::Relaxed);
        Some((endpoint, EndpointLease(endpoint.state.clone())))
    }

    /// Least request, power of two choices: two distinct endpoints at random, the one with
    /// fewer requests in flight wins.
    fn power_of_two(&self, n: usize) -> usize {
        let r = random_value();
        let a = (r as usize) % n;
        let b = (a + 1 + ((r >> 32) as usize) % (n - 1)) % n;
        let load = |i: usize| self.endpoints[i].state.in_flight.load(Ordering::Relaxed);
        if load(b) < load(a) { b } else { a }
    }

    /// Rendezvous (highest random weight) hashing: each key keeps its endpoint while that
    /// endpoint stays, and only the keys of a removed endpoint move.
    fn rendezvous(&self, key: u64) -> usize {
        let mut best = 0;
        let mut best_score = 0;
        for (i, e) in self.endpoints.iter().enumerate() {
            let score = weir_router::hash::fmix64(key ^ e.hash);
            if i == 0 || score > best_score {
                best = i;
                best_score = score;
            }
        }
        best
    }
}

fn random_index(n: usize) -> usize {
    (random_value() % n as u64) as usize
}

/// The consistent-hash key of a request, if the load balancer hashes and the request has it.
pub(crate) fn hash_key(
    lb: &LoadBalancer,
    head: &weir_router::RequestHead<'_>,
    peer: std::net::IpAddr,
) -> Option<u64> {
    let LoadBalancer::ConsistentHash(key) = lb else {
        return None;
    };
    match key {
        HashKey::Header(name) => head.headers.get(name).map(|v| sticky_hash(v.as_bytes())),
        HashKey::Cookie(name) => {
            weir_router::cookie_value(head, name).map(|v| sticky_hash(v.as_bytes()))
        }
        HashKey::SourceIp => Some(match peer {
            std::net::IpAddr::V4(ip) => sticky_hash(&ip.octets()),
            std::net::IpAddr::V6(ip) => sticky_hash(&ip.octets()),
        }),
        HashKey::QueryParameter(name) => head.query().and_then(|q| {
            q.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name).then(|| sticky_hash(v.as_bytes()))
            })
        }),
    }
}

// === impl EndpointLease ===

impl Drop for EndpointLease {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_router::{ConfigSource, LiveTable};

    fn table(lb: &str) -> LiveTable {
        let yaml = format!(
            r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc}}
spec:
  hosts: [svc]
  ports: [{{number: 80, name: http}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: 1001}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: 1002}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: 1003}}, labels: {{version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc}}
spec:
  host: svc
  trafficPolicy:
    loadBalancer: {lb}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc}}
spec:
  hosts: [svc]
  http:
  - route:
    - {{destination: {{host: svc, subset: v1}}}}
"#
        );
        LiveTable::from_sources(&[ConfigSource::new("t.yaml", yaml)])
            .expect("valid")
            .0
    }

    fn runtime(live: &LiveTable, clusters: &Clusters, metrics: &Metrics) -> Arc<ClusterTable> {
        clusters.for_table(&live.load(), metrics)
    }

    #[test]
    fn round_robin_cycles_and_survives_a_table_swap() {
        let live = table("{simple: ROUND_ROBIN}");
        let metrics = Metrics::new("t");
        let clusters = Clusters::default();
        let rt = runtime(&live, &clusters, &metrics);
        let c = rt.cluster(0);
        let picks: Vec<String> = (0..3)
            .map(|_| c.pick(None).unwrap().0.authority.to_string())
            .collect();
        assert_eq!(
            picks,
            ["127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"]
        );
        // A new generation keeps the cursor.
        let sources = live.load().sources().to_vec();
        live.replace(&sources, Default::default())
            .expect("same config");
        let rt2 = runtime(&live, &clusters, &metrics);
        assert!(!Arc::ptr_eq(&rt, &rt2));
        assert_eq!(
            rt2.cluster(0).pick(None).unwrap().0.authority.as_str(),
            "127.0.0.1:1001"
        );
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let live = table("{simple: LEAST_REQUEST}");
        let metrics = Metrics::new("t");
        let clusters = Clusters::default();
        let rt = runtime(&live, &clusters, &metrics);
        let c = rt.cluster(0);
        // Hold 50 requests on the first endpoint picked.
        let (busy, lease) = c.pick(None).unwrap();
        let busy = busy.authority.clone();
        let _held: Vec<EndpointLease> = (0..50).map(|_| EndpointLease(lease.0.clone())).collect();
        for l in &_held {
            l.0.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        for _ in 0..200 {
            let (e, _lease) = c.pick(None).unwrap();
            assert_ne!(
                e.authority, busy,
                "power of two choices never prefers the busiest of two"
            );
        }
        drop(lease);
    }

    #[test]
    fn consistent_hash_is_sticky_and_spreads() {
        let live = table("{consistentHash: {httpHeaderName: x-user}}");
        let metrics = Metrics::new("t");
        let clusters = Clusters::default();
        let rt = runtime(&live, &clusters, &metrics);
        let c = rt.cluster(0);
        let mut seen = std::collections::HashSet::new();
        for user in 0..100u32 {
            let key = sticky_hash(user.to_string().as_bytes());
            let first = c.pick(Some(key)).unwrap().0.authority.clone();
            for _ in 0..5 {
                assert_eq!(c.pick(Some(key)).unwrap().0.authority, first);
            }
            seen.insert(first);
        }
        assert_eq!(seen.len(), 3, "100 keys use all three endpoints");
    }

    #[test]
    fn random_uses_every_endpoint() {
        let live = table("{simple: RANDOM}");
        let metrics = Metrics::new("t");
        let clusters = Clusters::default();
        let rt = runtime(&live, &clusters, &metrics);
        let seen: std::collections::HashSet<_> = (0..300)
            .map(|_| rt.cluster(0).pick(None).unwrap().0.authority.clone())
            .collect();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn shadow_host_like_envoy() {
        assert_eq!(shadow("payment-svc"), "payment-svc-shadow");
        assert_eq!(shadow("payment-svc:8080"), "payment-svc-shadow:8080");
    }
}
