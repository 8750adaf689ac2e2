//! How a request is routed, and why: the rules it skipped with the condition each failed,
//! and the decision. The same evaluator as [`RouteTable::decide`]
//! ([`RequestMatch::check`](crate::RequestMatch::check)), so the explanation cannot disagree
//! with the route.

mod report;

pub use report::{DestinationShare, ReportError, ReportOptions, RouteReport, SkippedRule};

use crate::decide::{Decision, NoRoute};
use crate::matcher::Mismatch;
use crate::request::RequestHead;
use crate::table::{RouteTable, Rule, VirtualService};

/// The explanation of one request's route.
#[derive(Debug)]
pub struct Explanation<'a> {
    /// The request's authority, as routed (empty when it has none).
    pub host: &'a str,
    /// The VirtualService serving the host, if one does.
    pub virtual_service: Option<&'a VirtualService>,
    /// The rules before the matching one, each with the first failed condition of every match
    /// item (items are OR-ed, so each had to fail).
    pub skipped: Vec<Skipped<'a>>,
    /// The decision [`RouteTable::decide`] makes for the same request and value.
    pub decision: Result<Decision<'a>, NoRoute>,
}

/// A rule the request did not match.
#[derive(Debug)]
pub struct Skipped<'a> {
    /// The rule.
    pub rule: &'a Rule,
    /// Why each match item failed, in order.
    pub mismatches: Vec<Mismatch<'a>>,
}

impl Skipped<'_> {
    /// The reasons joined for humans: `uri "/x" is not prefix "/y"; or header ...`.
    pub fn reason(&self) -> String {
        self.mismatches
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; or ")
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// Explains how `req` is routed with the 64-bit value `random` (see
    /// [`decide`](RouteTable::decide)). Allocates; not for the hot path.
    pub fn explain<'a>(&'a self, req: &RequestHead<'a>, random: u64) -> Explanation<'a> {
        let host = req.authority().unwrap_or("");
        let Some(vs) = self.virtual_service_for_host(host) else {
            return Explanation {
                host,
                virtual_service: None,
                skipped: Vec::new(),
                decision: Err(NoRoute::UnknownHost(host.to_string())),
            };
        };
        let mut skipped = Vec::new();
        for rule in &vs.rules {
            if rule.matches.is_empty() {
                break;
            }
            let mut mismatches = Vec::with_capacity(rule.matches.len());
            for m in &rule.matches {
                match m.check(req) {
                    Ok(()) => break,
                    Err(why) => mismatches.push(why),
                }
            }
            if mismatches.len() < rule.matches.len() {
                break;
            }
            skipped.push(Skipped { rule, mismatches });
        }
        Explanation {
            host,
            virtual_service: Some(vs),
            skipped,
            decision: self.decide_in(vs, req, random),
        }
    }

    /// Every host name a request may use to reach a VirtualService of this table, sorted:
    /// the hosts as written in `spec.hosts`, then their `name.namespace` and FQDN forms.
    pub fn known_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        for vs in &self.virtual_services {
            for h in &vs.hosts {
                hosts.push(h.to_ascii_lowercase());
            }
        }
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// The text of a `404` with response flag `NR`: what was asked, and what is known. For the
    /// proxy's response body and for `weir explain`.
    pub fn no_route_message(&self, why: &NoRoute) -> String {
        match why {
            NoRoute::UnknownHost(host) => {
                let known = self.known_hosts();
                let host = if host.is_empty() {
                    "(the request has no Host)".to_string()
                } else {
                    format!("{host:?}")
                };
                if known.is_empty() {
                    format!(
                        "no route (NR): no VirtualService serves host {host}; the config serves no host"
                    )
                } else {
                    format!(
                        "no route (NR): no VirtualService serves host {host}; known hosts: {} (also as name.namespace and the FQDN)",
                        known.join(", ")
                    )
                }
            }
            other => format!("no route (NR): {other}"),
        }
    }
}
