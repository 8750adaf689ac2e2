//! Endpoint choice inside a cluster, as Envoy's load balancers make it: round robin, least
//! request (power of two choices), random, and consistent hash (rendezvous over the endpoints,
//! keyed by [`hash_key`]). No sockets and no runtime: a router-only embedder picks what the
//! sidecar would pick.
//!
//! A [`Balancer`] holds one cluster's state (its round-robin cursor, each endpoint's requests
//! in flight). State that must survive a table swap is carried over from the previous table's
//! balancer when the new one is built, which [`Balancers`] does for a whole table as a
//! [`LiveTable`](crate::LiveTable) extension:
//!
//! ```
//! use weir_router::balance::{Balancers, hash_key};
//! use weir_router::{ConfigSource, LiveTable, RequestHead};
//! # let yaml = include_str!("../../../config/payment-svc.yaml");
//! let (live, _warnings) = LiveTable::from_sources(&[ConfigSource::new("p.yaml", yaml)]).unwrap();
//! let balancers = live.extend(Balancers::build);
//!
//! let req = http::Request::get("http://payment-svc/pay").body(()).unwrap();
//! let head = RequestHead::of(&req);
//! let published = live.load(); // one load: the table and its balancers, same generation
//! let decision = published.decide_random(&head).unwrap();
//! let balancer = published.extension(balancers).unwrap().cluster(decision.destination.cluster);
//! let hash = hash_key(balancer.policy(), &head, None);
//! let pick = balancer.pick(hash).expect("the subset has endpoints");
//! let endpoint = &decision.cluster.endpoints[pick.index];
//! assert!(endpoint.authority.starts_with("127.0.0.1:"));
//! // `pick.lease` counts the request in the endpoint's in-flight gauge until dropped.
//! assert_eq!(balancer.in_flight(pick.index), 1);
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::decide::{cookie_value, random_value, sticky_hash};
use crate::request::RequestHead;
use crate::table::{Cluster, HashKey, LoadBalancer, RouteTable};

/// One cluster's load balancer: its policy, its endpoints' state and its cursor.
#[derive(Debug)]
pub struct Balancer {
    policy: LoadBalancer,
    /// Shared with the balancers of later tables for the same cluster.
    cursor: Arc<AtomicUsize>,
    endpoints: Box<[EndpointLoad]>,
}

#[derive(Debug)]
struct EndpointLoad {
    authority: Box<str>,
    /// Stable hash of the authority, for rendezvous hashing.
    hash: u64,
    /// Requests in flight on the endpoint; shared with later tables' balancers.
    in_flight: Arc<AtomicUsize>,
}

/// A picked endpoint: its index in the endpoint list the balancer was built from, and the
/// lease that counts the request as in flight on it.
#[derive(Debug)]
#[must_use = "dropping the lease ends the request's in-flight count"]
pub struct Pick {
    /// Index into the endpoints the balancer was built from (for [`Balancer::for_cluster`],
    /// into [`Cluster::endpoints`]).
    pub index: usize,
    /// Counts the request in the endpoint's in-flight gauge until dropped.
    pub lease: Lease,
}

/// A request outstanding on an endpoint: counted in flight (least request reads it) until
/// dropped.
#[derive(Debug)]
pub struct Lease(Arc<AtomicUsize>);

// === impl Balancer ===

impl Balancer {
    /// A balancer over `authorities` (`host:port`, in the order picks index), carrying the
    /// round-robin cursor and the in-flight counts of endpoints it still has over from
    /// `previous` (the same cluster's balancer in the table before).
    pub fn new<'a>(
        policy: &LoadBalancer,
        authorities: impl IntoIterator<Item = &'a str>,
        previous: Option<&Balancer>,
    ) -> Self {
        let carried: HashMap<&str, &Arc<AtomicUsize>> = previous
            .map(|p| {
                p.endpoints
                    .iter()
                    .map(|e| (&*e.authority, &e.in_flight))
                    .collect()
            })
            .unwrap_or_default();
        let endpoints = authorities
            .into_iter()
            .map(|authority| EndpointLoad {
                authority: authority.into(),
                hash: sticky_hash(authority.as_bytes()),
                in_flight: carried
                    .get(authority)
                    .map_or_else(Arc::default, |c| Arc::clone(c)),
            })
            .collect();
        Balancer {
            policy: policy.clone(),
            cursor: previous.map_or_else(Arc::default, |p| Arc::clone(&p.cursor)),
            endpoints,
        }
    }

    /// A balancer over all of a cluster's endpoints; [`Pick::index`] indexes
    /// [`Cluster::endpoints`].
    pub fn for_cluster(cluster: &Cluster, previous: Option<&Balancer>) -> Self {
        Balancer::new(
            &cluster.load_balancer,
            cluster.endpoints.iter().map(|e| e.authority.as_str()),
            previous,
        )
    }

    /// The policy: `trafficPolicy.loadBalancer` of the cluster.
    pub fn policy(&self) -> &LoadBalancer {
        &self.policy
    }

    /// Endpoints to pick from.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether there is no endpoint (the subset selects none: Envoy's `UH`).
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Requests in flight on the endpoint at `index`.
    pub fn in_flight(&self, index: usize) -> usize {
        self.endpoints[index].in_flight.load(Ordering::Relaxed)
    }

    /// Picks an endpoint. `hash` is the request's consistent-hash key ([`hash_key`]); a
    /// consistent-hash balancer without one picks at random, as Envoy does. `None` when there
    /// is no endpoint.
    pub fn pick(&self, hash: Option<u64>) -> Option<Pick> {
        let n = self.endpoints.len();
        let index = match n {
            0 => return None,
            1 => 0,
            _ => match (&self.policy, hash) {
                (LoadBalancer::ConsistentHash(_), Some(key)) => self.rendezvous(key),
                (LoadBalancer::RoundRobin | LoadBalancer::Passthrough, _) => {
                    self.cursor.fetch_add(1, Ordering::Relaxed) % n
                }
                (LoadBalancer::LeastRequest, _) => self.power_of_two(n),
                (LoadBalancer::Random | LoadBalancer::ConsistentHash(_), _) => random_index(n),
            },
        };
        let in_flight = &self.endpoints[index].in_flight;
        in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Pick {
            index,
            lease: Lease(Arc::clone(in_flight)),
        })
    }

    /// Least request, power of two choices: two distinct endpoints at random, the one with
    /// fewer requests in flight wins.
    fn power_of_two(&self, n: usize) -> usize {
        let r = random_value();
        let a = (r as usize) % n;
        let b = (a + 1 + ((r >> 32) as usize) % (n - 1)) % n;
        if self.in_flight(b) < self.in_flight(a) {
            b
        } else {
            a
        }
    }

    /// Rendezvous (highest random weight) hashing: each key keeps its endpoint while that
    /// endpoint stays, and only the keys of a removed endpoint move.
    fn rendezvous(&self, key: u64) -> usize {
        let mut best = 0;
        let mut best_score = 0;
        for (i, e) in self.endpoints.iter().enumerate() {
            let score = crate::hash::fmix64(key ^ e.hash);
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

/// The consistent-hash key of a request, if the policy hashes and the request carries the
/// attribute (`peer` is the downstream address, for `useSourceIp`).
pub fn hash_key(
    policy: &LoadBalancer,
    head: &RequestHead<'_>,
    peer: Option<IpAddr>,
) -> Option<u64> {
    let LoadBalancer::ConsistentHash(key) = policy else {
        return None;
    };
    match key {
        HashKey::Header(name) => head.headers.get(name).map(|v| sticky_hash(v.as_bytes())),
        HashKey::Cookie(name) => cookie_value(head, name).map(|v| sticky_hash(v.as_bytes())),
        HashKey::SourceIp => peer.map(|ip| match ip {
            IpAddr::V4(ip) => sticky_hash(&ip.octets()),
            IpAddr::V6(ip) => sticky_hash(&ip.octets()),
        }),
        HashKey::QueryParameter(name) => head.query_param(name).map(|v| sticky_hash(v.as_bytes())),
    }
}

// === impl Lease ===

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The balancers of every cluster of a table, by cluster index: a [`LiveTable`](crate::LiveTable)
/// extension (`live.extend(Balancers::build)`), carried over cluster by cluster (same host
/// and subset) from one table to the next.
#[derive(Debug)]
pub struct Balancers {
    clusters: Box<[Balancer]>,
    keys: Box<[(String, Option<String>)]>,
}

impl Balancers {
    /// The balancers of `table`, carrying state over from `previous` (the table before's).
    pub fn build(table: &RouteTable, previous: Option<&Balancers>) -> Self {
        let carried: HashMap<(&str, Option<&str>), &Balancer> = previous
            .map(|p| {
                p.keys
                    .iter()
                    .zip(p.clusters.iter())
                    .map(|((h, s), b)| ((h.as_str(), s.as_deref()), b))
                    .collect()
            })
            .unwrap_or_default();
        let clusters = table
            .clusters()
            .iter()
            .map(|c| {
                let previous = carried
                    .get(&(c.host.as_str(), c.subset.as_deref()))
                    .copied();
                Balancer::for_cluster(c, previous)
            })
            .collect();
        let keys = table
            .clusters()
            .iter()
            .map(|c| (c.host.clone(), c.subset.clone()))
            .collect();
        Balancers { clusters, keys }
    }

    /// The balancer of the cluster at `index` ([`Destination::cluster`](crate::Destination::cluster)).
    #[inline]
    pub fn cluster(&self, index: usize) -> &Balancer {
        &self.clusters[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LiveTable;
    use crate::testing::ServiceFixture;

    fn table(lb: &str) -> LiveTable {
        ServiceFixture::new("svc")
            .endpoints([1001, 1002, 1003], Some("v1"))
            .load_balancer(lb)
            .subset("v1")
            .live()
    }

    fn authority(live: &LiveTable, pick: &Pick) -> String {
        live.load().clusters()[0].endpoints[pick.index]
            .authority
            .clone()
    }

    #[test]
    fn round_robin_cycles_and_survives_a_table_swap() {
        let live = table("{simple: ROUND_ROBIN}");
        let slot = live.extend(Balancers::build);
        let picks: Vec<String> = (0..3)
            .map(|_| {
                let p = live.load();
                let pick = p.extension(slot).unwrap().cluster(0).pick(None).unwrap();
                authority(&live, &pick)
            })
            .collect();
        assert_eq!(
            picks,
            ["127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"]
        );
        let before = live.load_full();
        let sources = before.sources().to_vec();
        live.replace(&sources, Default::default())
            .expect("same config");
        let after = live.load();
        assert!(!std::ptr::eq(
            before.extension(slot).unwrap(),
            after.extension(slot).unwrap()
        ));
        // The new table's balancer goes on where the old one stopped.
        let pick = after
            .extension(slot)
            .unwrap()
            .cluster(0)
            .pick(None)
            .unwrap();
        assert_eq!(authority(&live, &pick), "127.0.0.1:1001");
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint_across_a_swap() {
        let endpoints = ["127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"];
        // 50 requests in flight on the first endpoint, picked by another table's balancer.
        let before = Balancer::new(&LoadBalancer::RoundRobin, [endpoints[0]], None);
        let held: Vec<Pick> = (0..50).map(|_| before.pick(None).unwrap()).collect();
        // Two swaps later the counts are still there.
        let next = Balancer::new(&LoadBalancer::LeastRequest, endpoints, Some(&before));
        let balancer = Balancer::new(&LoadBalancer::LeastRequest, endpoints, Some(&next));
        assert_eq!(balancer.in_flight(0), 50);
        for _ in 0..200 {
            let p = balancer.pick(None).unwrap();
            assert_ne!(
                p.index, 0,
                "power of two choices never prefers the busiest of two"
            );
        }
        drop(held);
        assert_eq!(balancer.in_flight(0), 0);
        assert_eq!(balancer.in_flight(1) + balancer.in_flight(2), 0);
    }

    #[test]
    fn consistent_hash_is_sticky_and_spreads() {
        let live = table("{consistentHash: {httpHeaderName: x-user}}");
        let balancer = Balancer::for_cluster(&live.load().clusters()[0], None);
        let mut seen = std::collections::HashSet::new();
        for user in 0..100u32 {
            let req = http::Request::get("http://svc/")
                .header("x-user", user.to_string())
                .body(())
                .unwrap();
            let key = hash_key(balancer.policy(), &RequestHead::of(&req), None);
            assert!(key.is_some());
            let first = balancer.pick(key).unwrap().index;
            for _ in 0..5 {
                assert_eq!(balancer.pick(key).unwrap().index, first);
            }
            seen.insert(first);
        }
        assert_eq!(seen.len(), 3, "100 keys use all three endpoints");
    }

    #[test]
    fn rendezvous_moves_only_the_keys_of_a_removed_endpoint() {
        let policy = LoadBalancer::ConsistentHash(HashKey::SourceIp);
        let three = Balancer::new(&policy, ["a:1", "b:1", "c:1"], None);
        let two = Balancer::new(&policy, ["a:1", "c:1"], Some(&three));
        for key in 0..500u64 {
            let before = three
                .pick(Some(sticky_hash(&key.to_le_bytes())))
                .unwrap()
                .index;
            let after = two
                .pick(Some(sticky_hash(&key.to_le_bytes())))
                .unwrap()
                .index;
            match before {
                0 => assert_eq!(after, 0),
                2 => assert_eq!(after, 1),
                _ => {}
            }
        }
    }

    #[test]
    fn random_uses_every_endpoint() {
        let live = table("{simple: RANDOM}");
        let balancer = Balancer::for_cluster(&live.load().clusters()[0], None);
        let seen: std::collections::HashSet<_> = (0..300)
            .map(|_| balancer.pick(None).unwrap().index)
            .collect();
        assert_eq!(seen.len(), 3);
        assert!(
            Balancer::new(&LoadBalancer::Random, [], None)
                .pick(None)
                .is_none()
        );
    }

    #[test]
    fn hash_keys_by_attribute() {
        let req = http::Request::get("http://svc/p?a=1&user=ann&b")
            .header("cookie", "x=1; session=s1")
            .header("x-user", "ann")
            .body(())
            .unwrap();
        let head = RequestHead::of(&req);
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let rows: [(HashKey, Option<u64>); 6] = [
            (
                HashKey::Header("x-user".parse().unwrap()),
                Some(sticky_hash(b"ann")),
            ),
            (HashKey::Header("x-other".parse().unwrap()), None),
            (HashKey::Cookie("session".into()), Some(sticky_hash(b"s1"))),
            (
                HashKey::QueryParameter("user".into()),
                Some(sticky_hash(b"ann")),
            ),
            (HashKey::QueryParameter("b".into()), Some(sticky_hash(b""))),
            (HashKey::SourceIp, Some(sticky_hash(&[10, 0, 0, 7]))),
        ];
        for (key, want) in rows {
            let policy = LoadBalancer::ConsistentHash(key.clone());
            assert_eq!(hash_key(&policy, &head, Some(ip)), want, "{key:?}");
        }
        assert_eq!(hash_key(&LoadBalancer::RoundRobin, &head, Some(ip)), None);
        assert_eq!(
            hash_key(
                &LoadBalancer::ConsistentHash(HashKey::SourceIp),
                &head,
                None
            ),
            None
        );
    }
}
