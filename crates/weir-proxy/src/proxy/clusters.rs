//! What the proxy keeps beside each routing table: per cluster, the `Host` to send, the
//! endpoints as parsed authorities with their idle connections, the load balancer and the
//! metric series.
//!
//! A [`ClusterTable`] is a [`LiveTable`](weir_router::LiveTable) extension: the writer builds
//! it from each new table inside its critical section and publishes it with the table in one
//! store, so a request finds it in the same load as the routes, built for the same generation,
//! with no lock and no generation check. State that must outlive a table (round-robin cursors,
//! in-flight counts, idle connections) is carried over from the previous `ClusterTable`.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderValue;
use http::uri::Authority;
use weir_router::RouteTable;
use weir_router::balance::{Balancer, Lease};

use super::pool::IdleConns;
use crate::metrics::Metrics;
use crate::telemetry::ClusterSeries;

/// The proxy's side of one [`RouteTable`]: [`ClusterRuntime`] by cluster index.
#[derive(Debug)]
pub(crate) struct ClusterTable {
    clusters: Box<[ClusterRuntime]>,
}

/// One cluster as the proxy forwards to it.
#[derive(Debug)]
pub(crate) struct ClusterRuntime {
    /// The destination host and subset: what carries state over to the next table.
    key: (String, Option<String>),
    /// `Host` / `:authority` sent upstream: the destination host.
    pub host: HeaderValue,
    /// `Host` for mirrored copies: `<host>-shadow`, as Envoy names shadow traffic.
    pub shadow_host: HeaderValue,
    /// The endpoints, in the balancer's order.
    pub endpoints: Box<[EndpointRuntime]>,
    pub balancer: Balancer,
    pub series: Arc<ClusterSeries>,
}

/// One endpoint: where to connect and its idle connections.
#[derive(Debug)]
pub(crate) struct EndpointRuntime {
    pub authority: Authority,
    /// Idle HTTP/1.1 connections to the endpoint; shared by every cluster and table that has
    /// the endpoint.
    pub idle: Arc<IdleConns>,
}

// === impl ClusterTable ===

impl ClusterTable {
    /// The side table of `table`, carrying state over from `previous` (the table before's).
    /// Runs in the [`LiveTable`](weir_router::LiveTable)'s writer, never on a request.
    pub fn build(table: &RouteTable, previous: Option<&ClusterTable>, metrics: &Metrics) -> Self {
        let mut clusters_before = HashMap::new();
        let mut idle_before: HashMap<&str, &Arc<IdleConns>> = HashMap::new();
        for c in previous.map_or(&[][..], |p| &p.clusters[..]) {
            clusters_before.insert((c.key.0.as_str(), c.key.1.as_deref()), c);
            for e in c.endpoints.iter() {
                idle_before.insert(e.authority.as_str(), &e.idle);
            }
        }
        let mut idle_now: HashMap<String, Arc<IdleConns>> = HashMap::new();
        let clusters = table
            .clusters()
            .iter()
            .map(|c| {
                let endpoints: Box<[EndpointRuntime]> = c
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
                        let idle = idle_now
                            .entry(e.authority.clone())
                            .or_insert_with(|| {
                                idle_before
                                    .get(e.authority.as_str())
                                    .map_or_else(Arc::default, |i| Arc::clone(i))
                            })
                            .clone();
                        Some(EndpointRuntime { authority, idle })
                    })
                    .collect();
                let before = clusters_before
                    .get(&(c.host.as_str(), c.subset.as_deref()))
                    .map(|b| &b.balancer);
                let balancer = Balancer::new(
                    &c.load_balancer,
                    endpoints.iter().map(|e| e.authority.as_str()),
                    before,
                );
                ClusterRuntime {
                    key: (c.host.clone(), c.subset.clone()),
                    host: HeaderValue::from_str(&c.host)
                        .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
                    shadow_host: HeaderValue::from_str(&shadow(&c.host))
                        .unwrap_or_else(|_| HeaderValue::from_static("unknown-shadow")),
                    endpoints,
                    balancer,
                    series: {
                        let series = metrics.cluster_series(&c.labels);
                        series.firsts.begin(table.generation());
                        series
                    },
                }
            })
            .collect();
        ClusterTable { clusters }
    }

    /// The runtime of the cluster at `index` in the table this was built from.
    #[inline]
    pub fn cluster(&self, index: usize) -> &ClusterRuntime {
        &self.clusters[index]
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

// === impl ClusterRuntime ===

impl ClusterRuntime {
    /// Picks an endpoint for a request with the cluster's load balancer; `hash` is the
    /// request's consistent-hash key, if it has one. `None` when the subset is empty.
    #[inline]
    pub fn pick(&self, hash: Option<u64>) -> Option<(&EndpointRuntime, Lease)> {
        let pick = self.balancer.pick(hash)?;
        Some((&self.endpoints[pick.index], pick.lease))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_router::testing::ServiceFixture;
    use weir_router::{ConfigSource, LiveTable};

    fn live(lb: &str, ports: &[u16]) -> LiveTable {
        ServiceFixture::new("svc")
            .endpoints(ports.iter().copied(), Some("v1"))
            .load_balancer(lb)
            .subset("v1")
            .live()
    }

    /// The side table is published with the routes: every publish carries a table built for
    /// its own generation, round robin goes on across swaps, and an endpoint that stays
    /// keeps its idle connections.
    #[test]
    fn published_with_the_table_and_carried_over() {
        let live = live("{simple: ROUND_ROBIN}", &[1001, 1002, 1003]);
        let metrics = Arc::new(Metrics::new("t"));
        let m = metrics.clone();
        let slot = live.extend(move |t, prev| ClusterTable::build(t, prev, &m));
        let first = live.load_full();
        let c = first.extension(slot).unwrap().cluster(0);
        let picks: Vec<String> = (0..2)
            .map(|_| c.pick(None).unwrap().0.authority.to_string())
            .collect();
        assert_eq!(picks, ["127.0.0.1:1001", "127.0.0.1:1002"]);
        // A new generation: one endpoint gone, the cursor and the idle pools carried over.
        let sources: Vec<ConfigSource> = first
            .sources()
            .iter()
            .map(|s| {
                ConfigSource::new(
                    s.name.clone(),
                    s.text.replace(
                        "  - {address: 127.0.0.1, ports: {http: 1002}, labels: {version: v1}}\n",
                        "",
                    ),
                )
            })
            .collect();
        live.replace(&sources, Default::default()).expect("valid");
        let second = live.load();
        assert_eq!(second.generation(), first.generation() + 1);
        let c2 = second.extension(slot).unwrap().cluster(0);
        assert_eq!(c2.endpoints.len(), 2);
        assert!(Arc::ptr_eq(&c.endpoints[0].idle, &c2.endpoints[0].idle));
        assert!(Arc::ptr_eq(&c.series, &c2.series));
        assert_eq!(
            c2.pick(None).unwrap().0.authority.as_str(),
            "127.0.0.1:1001",
            "cursor 2 of 2 endpoints"
        );
    }

    #[test]
    fn shadow_host_like_envoy() {
        assert_eq!(shadow("payment-svc"), "payment-svc-shadow");
        assert_eq!(shadow("payment-svc:8080"), "payment-svc-shadow:8080");
    }
}
