//! The routing decision: which rule matches, and which destination the rule's weights pick,
//! exactly as Envoy picks a weighted cluster.

use std::cell::RefCell;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::request::RequestHead;
use crate::table::{Cluster, Destination, RouteTable, Rule, StickyKey, VirtualService};

/// The outcome of routing one request.
#[derive(Clone, Copy, Debug)]
pub struct Decision<'t> {
    /// The VirtualService that serves the request's host.
    pub virtual_service: &'t VirtualService,
    /// The first rule that matched.
    pub rule: &'t Rule,
    /// The index in `rule.matches` of the match item that hit; `None` when the rule has no
    /// match items. A proxy that rewrites a matched prefix reads it instead of re-running
    /// the matchers.
    pub matched: Option<usize>,
    /// The destination the weights picked.
    pub destination: &'t Destination,
    /// The destination's cluster: endpoints, load balancer, metric labels.
    pub cluster: &'t Cluster,
    /// The 64-bit value the pick used: the caller's random value, or the sticky key's hash.
    pub value: u64,
}

/// Why a request has no route (Envoy's response flag `NR`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoRoute {
    /// No VirtualService serves the request's host.
    #[error("no VirtualService serves host {0:?}")]
    UnknownHost(String),
    /// The VirtualService has no rule that matches the request.
    #[error("no rule of VirtualService {0} matches the request")]
    NoMatchingRule(String),
    /// The matching rule has no destination with a weight above zero.
    #[error("rule {rule} of VirtualService {virtual_service} has no destination with weight")]
    NoDestination {
        /// The VirtualService's name.
        virtual_service: String,
        /// The rule's index.
        rule: usize,
    },
}

/// Envoy's weighted-cluster pick: `value % total`, then the first destination, in declaration
/// order, whose interval `[begin, begin + weight)` holds it. Zero weights have empty intervals
/// and are never picked. Returns the index into `destinations`.
#[inline]
pub fn pick_weighted(destinations: &[Destination], total_weight: u64, value: u64) -> Option<usize> {
    if total_weight == 0 {
        return None;
    }
    if destinations.len() == 1 {
        return Some(0);
    }
    let selected = value % total_weight;
    let mut end = 0u64;
    for (i, d) in destinations.iter().enumerate() {
        end += u64::from(d.weight);
        if selected < end {
            return Some(i);
        }
    }
    None
}

/// The sticky hash of a session key: 64-bit FNV-1a over the key's bytes, then the
/// MurmurHash3 `fmix64` finalizer so that `hash % 100` is evenly spread.
///
/// This function is part of weir's contract: it is the same on every platform, in every
/// process and every release, so that all replicas put a user on the same version. Because the
/// canary is the last interval of the split, a key whose `hash % total` falls in the canary's
/// interval stays there as the canary's weight grows.
pub fn sticky_hash(key: &[u8]) -> u64 {
    crate::hash::fmix64(crate::hash::fnv1a(key))
}

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// A random 64-bit value from a fast per-thread generator.
#[inline]
pub fn random_value() -> u64 {
    RNG.with(|r| r.borrow_mut().random())
}

// === impl RouteTable ===

impl RouteTable {
    /// Routes a request with the given 64-bit value (pass a random one; tests pass fixed
    /// ones). With `weir.dev/sticky` and the key present, the key's [`sticky_hash`] replaces
    /// `random`.
    pub fn decide<'t>(
        &'t self,
        req: &RequestHead<'_>,
        random: u64,
    ) -> Result<Decision<'t>, NoRoute> {
        let authority = req.authority().unwrap_or("");
        let vs = self
            .host_lookup(authority)
            .map(|i| &self.virtual_services[i])
            .ok_or_else(|| NoRoute::UnknownHost(authority.to_string()))?;
        self.decide_in(vs, req, random)
    }

    /// Routes a request with a value from the per-thread generator.
    pub fn decide_random<'t>(&'t self, req: &RequestHead<'_>) -> Result<Decision<'t>, NoRoute> {
        self.decide(req, random_value())
    }

    /// Routes a request within a given VirtualService, whatever its host.
    pub fn decide_in<'t>(
        &'t self,
        vs: &'t VirtualService,
        req: &RequestHead<'_>,
        random: u64,
    ) -> Result<Decision<'t>, NoRoute> {
        let (rule, matched) = vs
            .rules
            .iter()
            .find_map(|r| {
                if r.matches.is_empty() {
                    return Some((r, None));
                }
                r.matches
                    .iter()
                    .position(|m| m.matches(req))
                    .map(|i| (r, Some(i)))
            })
            .ok_or_else(|| NoRoute::NoMatchingRule(vs.name.clone()))?;
        let value = match &vs.sticky {
            Some(key) => sticky_key(key, req).map_or(random, sticky_hash),
            None => random,
        };
        let i = pick_weighted(&rule.destinations, rule.total_weight, value).ok_or_else(|| {
            NoRoute::NoDestination {
                virtual_service: vs.name.clone(),
                rule: rule.index,
            }
        })?;
        let destination = &rule.destinations[i];
        Ok(Decision {
            virtual_service: vs,
            rule,
            matched,
            destination,
            cluster: &self.clusters[destination.cluster],
            value,
        })
    }
}

/// The bytes of the session key, if the request carries it.
pub(crate) fn sticky_key<'r>(key: &StickyKey, req: &RequestHead<'r>) -> Option<&'r [u8]> {
    match key {
        StickyKey::Header(name) => req.headers.get(name).map(|v| v.as_bytes()),
        StickyKey::Cookie(name) => cookie_value(req, name).map(str::as_bytes),
    }
}

/// The value of a cookie from the `Cookie` header(s).
pub fn cookie_value<'r>(req: &RequestHead<'r>, name: &str) -> Option<&'r str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}
