//! One request's route as a report for people and tools: what `weir explain` prints, as text
//! ([`Display`](fmt::Display)) or JSON ([`Serialize`]).

use std::collections::BTreeMap;
use std::fmt;

use http::{HeaderMap, HeaderValue, Method, Uri};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::decide::NoRoute;
use crate::request::RequestHead;
use crate::table::{RouteTable, StickyKey};

/// What to explain besides the request itself.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ReportOptions {
    /// The session key for a `weir.dev/sticky` VirtualService (set as its header or cookie).
    pub sticky_key: Option<String>,
    /// Route this many requests with random values and count where they went.
    pub samples: Option<u64>,
    /// The seed of those random values (default: random); a fixed seed gives a fixed count.
    pub seed: Option<u64>,
}

impl ReportOptions {
    /// The options: a sticky key, a sample count and a seed, each optional.
    pub fn new(sticky_key: Option<String>, samples: Option<u64>, seed: Option<u64>) -> Self {
        ReportOptions {
            sticky_key,
            samples,
            seed,
        }
    }
}

/// Why a request cannot be reported on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// No VirtualService serves the request's host: the proxy answers `404 NR` with this text.
    #[error("{0}: the proxy answers 404")]
    UnknownHost(String),
    /// The request has a VirtualService but no route in it (the `404 NR` text).
    #[error("{0}: the proxy answers 404")]
    NoRoute(String),
    /// A sticky key was given for a VirtualService without `weir.dev/sticky`.
    #[error("a sticky key was given, but VirtualService {0} has no weir.dev/sticky annotation")]
    NotSticky(String),
    /// The sticky key cannot be sent as a header value.
    #[error("the sticky key {0:?} is not a valid header value")]
    BadStickyKey(String),
}

/// A rule before the matching one, and why the request skipped it.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct SkippedRule {
    /// The rule's index in `spec.http`.
    pub rule_index: usize,
    /// The rule's `name`, if it has one.
    pub rule_name: Option<String>,
    /// The failed condition of each match item.
    pub reason: String,
}

/// A destination of the matching rule and its share of the traffic.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct DestinationShare {
    /// The destination's host.
    pub host: String,
    /// Its subset, if any.
    pub subset: Option<String>,
    /// Its weight as written.
    pub weight: u32,
    /// Its share of the rule's traffic, in percent, two decimals.
    pub share_percent: f64,
    /// The endpoints of its cluster (or a note that Kubernetes resolves them).
    pub endpoints: Vec<String>,
}

/// How one request is routed, and why.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct RouteReport {
    /// The request URL as given.
    pub url: String,
    /// The request method.
    pub method: String,
    /// The VirtualService serving the host.
    pub virtual_service: String,
    /// Its namespace.
    pub namespace: String,
    /// The index of the matching rule.
    pub rule_index: usize,
    /// Its name, if it has one.
    pub rule_name: Option<String>,
    /// The rules skipped before it.
    pub skipped: Vec<SkippedRule>,
    /// Its destinations.
    pub destinations: Vec<DestinationShare>,
    /// The VirtualService's session key (`header:NAME` or `cookie:NAME`), if sticky.
    pub sticky: Option<String>,
    /// The destination a single request goes to (with a sticky key, the session's version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
    /// With samples: how many went to each destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<BTreeMap<String, u64>>,
}

impl RouteTable {
    /// Reports how a request (`method`, `uri` with its authority, `headers`) is routed: the
    /// rules skipped and why, the matching rule's destinations and shares, and with
    /// `options` the session's destination and a sampled split. Allocates; not for the hot
    /// path. When a rule matches but has no destination, the report shows that rule.
    pub fn report(
        &self,
        method: &Method,
        uri: &Uri,
        mut headers: HeaderMap,
        options: &ReportOptions,
    ) -> Result<RouteReport, ReportError> {
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        let Some(vs) = self.virtual_service_for_host(authority) else {
            return Err(ReportError::UnknownHost(
                self.no_route_message(&NoRoute::UnknownHost(authority.to_string())),
            ));
        };
        match (&options.sticky_key, &vs.sticky) {
            (Some(key), Some(sticky)) => {
                let bad = || ReportError::BadStickyKey(key.clone());
                match sticky {
                    StickyKey::Header(name) => {
                        headers
                            .insert(name.clone(), HeaderValue::from_str(key).map_err(|_| bad())?);
                    }
                    StickyKey::Cookie(name) => {
                        let cookie =
                            HeaderValue::from_str(&format!("{name}={key}")).map_err(|_| bad())?;
                        headers.append(http::header::COOKIE, cookie);
                    }
                }
            }
            (Some(_), None) => return Err(ReportError::NotSticky(vs.name.clone())),
            (None, _) => {}
        }
        let head = RequestHead::new(method, uri, &headers);
        let explanation = self.explain(&head, 0);
        let rule = match &explanation.decision {
            Ok(d) => d.rule,
            Err(NoRoute::NoDestination { .. }) => match vs.rules.get(explanation.skipped.len()) {
                Some(rule) => rule,
                None => {
                    return Err(ReportError::NoRoute(format!(
                        "no rule of VirtualService {} matches",
                        vs.name
                    )));
                }
            },
            Err(e) => return Err(ReportError::NoRoute(self.no_route_message(e))),
        };
        let skipped = explanation
            .skipped
            .iter()
            .map(|s| SkippedRule {
                rule_index: s.rule.index,
                rule_name: s.rule.name.clone(),
                reason: s.reason(),
            })
            .collect();
        let destinations = rule
            .destinations
            .iter()
            .map(|d| {
                let cluster = self.cluster(d.cluster);
                DestinationShare {
                    host: d.host.clone(),
                    subset: d.subset.clone(),
                    weight: d.weight,
                    share_percent: (rule.share_percent(d) * 100.0).round() / 100.0,
                    endpoints: if cluster.endpoints_known() {
                        cluster
                            .endpoints
                            .iter()
                            .map(|e| e.authority.clone())
                            .collect()
                    } else {
                        vec!["(unknown: Kubernetes Service, resolved by the cluster)".to_string()]
                    },
                }
            })
            .collect();
        let label = |value: u64| -> Option<String> {
            self.decide_in(vs, &head, value).ok().map(|d| {
                d.destination
                    .subset
                    .clone()
                    .unwrap_or_else(|| d.destination.host.clone())
            })
        };
        let chosen = options.sticky_key.as_ref().and_then(|_| label(0));
        let samples = options.samples.map(|n| {
            let mut rng = match options.seed {
                Some(s) => SmallRng::seed_from_u64(s),
                None => SmallRng::from_rng(&mut rand::rng()),
            };
            let mut counts: BTreeMap<String, u64> = rule
                .destinations
                .iter()
                .map(|d| (d.subset.clone().unwrap_or_else(|| d.host.clone()), 0))
                .collect();
            for _ in 0..n {
                if let Some(l) = label(rng.random()) {
                    *counts.entry(l).or_insert(0) += 1;
                }
            }
            counts
        });
        Ok(RouteReport {
            url: uri.to_string(),
            method: method.to_string(),
            virtual_service: vs.name.clone(),
            namespace: vs.namespace.clone(),
            rule_index: rule.index,
            rule_name: rule.name.clone(),
            skipped,
            destinations,
            sticky: vs.sticky.as_ref().map(|s| match s {
                StickyKey::Header(h) => format!("header:{h}"),
                StickyKey::Cookie(c) => format!("cookie:{c}"),
            }),
            chosen,
            samples,
        })
    }
}

fn named(name: Option<&str>) -> String {
    name.map(|n| format!(" ({n})")).unwrap_or_default()
}

impl fmt::Display for RouteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {}", self.method, self.url)?;
        writeln!(
            f,
            "VirtualService {}/{}",
            self.namespace, self.virtual_service
        )?;
        for s in &self.skipped {
            let name = named(s.rule_name.as_deref());
            writeln!(f, "  rule {}{name}: no match: {}", s.rule_index, s.reason)?;
        }
        let name = named(self.rule_name.as_deref());
        writeln!(f, "  rule {}{name}: MATCH", self.rule_index)?;
        writeln!(f, "destinations:")?;
        for d in &self.destinations {
            writeln!(
                f,
                "  {:<24} subset {:<8} weight {:>3}  {:>6.2}%  endpoints {}",
                d.host,
                d.subset.as_deref().unwrap_or("-"),
                d.weight,
                d.share_percent,
                if d.endpoints.is_empty() {
                    "(none)".to_string()
                } else {
                    d.endpoints.join(", ")
                }
            )?;
        }
        if let Some(s) = &self.sticky {
            writeln!(f, "sticky: {s}")?;
        }
        if let Some(c) = &self.chosen {
            writeln!(f, "this session goes to: {c}")?;
        }
        if let Some(samples) = &self.samples {
            let total: u64 = samples.values().sum();
            writeln!(f, "samples: {total}")?;
            for (k, v) in samples {
                let pct = if total == 0 {
                    0.0
                } else {
                    *v as f64 * 100.0 / total as f64
                };
                writeln!(f, "  {k:<8} {v:>9}  {pct:>6.2}%")?;
            }
        }
        Ok(())
    }
}
