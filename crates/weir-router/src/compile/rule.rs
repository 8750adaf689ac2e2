//! One HTTP rule: its matches, weighted destinations, mirrors and policies.

use http::HeaderValue;

use super::*;
use crate::finding::{Code, Finding};
use crate::raw::*;
use crate::table::*;
use crate::yaml::Document;

/// A rule's policies: everything but its matches, destinations and mirrors.
struct Policy {
    fault: Option<Fault>,
    timeout: Option<std::time::Duration>,
    retries: Option<RetryPolicy>,
    headers: HeaderEdits,
    rewrite: Option<Rewrite>,
}

/// Where a rule sits: its document, its path and the namespace its short hosts resolve in.
#[derive(Clone, Copy)]
pub(super) struct RuleScope<'d> {
    pub(super) doc: &'d Document,
    pub(super) ns: &'d str,
    pub(super) policy: WeightPolicy,
}

impl Compiler<'_> {
    pub(super) fn rule(&mut self, index: usize, raw: &RawHttpRoute, scope: RuleScope<'_>) -> Rule {
        let doc = scope.doc;
        let base = format!("spec.http[{index}]");
        let mut matches = Vec::new();
        let mut broken_match = false;
        for (j, m) in raw.matches.iter().enumerate() {
            self.dropped_condition = false;
            matches.push(self.request_match(m, doc, &format!("{base}.match[{j}]")));
            broken_match |= self.dropped_condition;
        }
        if raw.route.is_empty() {
            self.findings.push(Finding::error(
                Code::InvalidValue,
                doc.location(&base),
                format!("rule {index} has no `route`: weir forwards to route destinations (redirect and directResponse are not supported)"),
            ));
        }
        let (destinations, unresolved) = self.destinations(&base, &raw.route, scope);
        let total_weight: u64 = destinations.iter().map(|d| u64::from(d.weight)).sum();
        if total_weight > u64::from(u32::MAX) {
            // Envoy refuses a weighted cluster whose total does not fit in 32 bits.
            self.findings.push(Finding::error(
                Code::InvalidValue,
                doc.location(&format!("{base}.route")),
                format!(
                    "the weights of rule {index} sum to {total_weight}, above {} (2^32 - 1), which Envoy refuses: use weights that sum to 100",
                    u32::MAX
                ),
            ));
        }
        let mirrors = self.mirrors(&base, raw, scope);
        let policy = self.policy(&base, raw, doc);
        Rule {
            index,
            name: raw.name.clone(),
            matches,
            destinations,
            total_weight,
            mirrors,
            fault: policy.fault,
            timeout: policy.timeout,
            retries: policy.retries,
            headers: policy.headers,
            rewrite: policy.rewrite,
            location: doc.location(&base),
            broken: broken_match || unresolved,
        }
    }

    /// The weighted destinations, every one of them kept (an unresolved host or subset points
    /// at a cluster without endpoints) so that the weight guard judges the weights as written.
    /// Returns whether any destination could not be resolved.
    fn destinations(
        &mut self,
        base: &str,
        route: &[RawRouteDestination],
        scope: RuleScope<'_>,
    ) -> (Vec<Destination>, bool) {
        let doc = scope.doc;
        let single = route.len() == 1;
        let mut destinations = Vec::new();
        let mut unresolved = false;
        for (j, rd) in route.iter().enumerate() {
            let path = format!("{base}.route[{j}]");
            let weight_loc = if rd.weight.is_some() {
                doc.location(&format!("{path}.weight"))
            } else {
                doc.location(&format!("{path}.destination"))
            };
            let weight = self.weight(rd, single, &weight_loc);
            let port = self.port(
                rd.destination.port.as_ref(),
                doc,
                &format!("{path}.destination.port"),
            );
            let field = if rd.destination.subset.is_some() {
                "subset"
            } else {
                "host"
            };
            let (cluster, failed) = self.cluster(
                &rd.destination.host,
                rd.destination.subset.as_deref(),
                scope.ns,
                doc.location(&format!("{path}.destination.{field}")),
            );
            unresolved |= failed;
            let headers = self.header_edits(rd.headers.as_ref(), doc, &format!("{path}.headers"));
            destinations.push(Destination {
                host: rd.destination.host.clone(),
                subset: rd.destination.subset.clone(),
                port,
                weight,
                cluster,
                headers,
                location: weight_loc,
            });
        }
        if route.len() > 1
            && route.iter().all(|rd| rd.weight.is_none())
            && scope.policy == WeightPolicy::Strict
        {
            // Reported by the weight guard as a sum of 0; say why here too.
            self.findings.push(Finding::warning(
                Code::InvalidValue,
                doc.location(&format!("{base}.route")),
                "a route with several destinations and no weights gives every destination 0: write the weights",
            ));
        }
        (destinations, unresolved)
    }

    /// A destination's weight as Envoy reads it. A lone destination takes all traffic
    /// whatever its weight, as Istio then emits a plain cluster rather than a weighted one.
    fn weight(&mut self, rd: &RawRouteDestination, single: bool, loc: &Location) -> u32 {
        match rd.weight {
            Some(w) if w < 0 => {
                self.findings.push(Finding::error(
                    Code::NegativeWeight,
                    loc.clone(),
                    format!(
                        "weight {w} of {} is negative: weights are 0 to 100",
                        subset_label(&rd.destination)
                    ),
                ));
                0
            }
            Some(w) if w > i64::from(u32::MAX) => {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    loc.clone(),
                    format!(
                        "weight {w} of {} is above {} (2^32 - 1), which Envoy refuses: weights are 0 to 100",
                        subset_label(&rd.destination),
                        u32::MAX
                    ),
                ));
                0
            }
            Some(0) if single => {
                self.findings.push(Finding::warning(
                    Code::InvalidValue,
                    loc.clone(),
                    format!(
                        "weight 0 of {}, the rule's only destination, is ignored: Istio sends a lone destination 100% of the rule's traffic. Remove the weight, or add the destination that should get the traffic",
                        subset_label(&rd.destination)
                    ),
                ));
                100
            }
            None if single => 100,
            None => 0,
            Some(w) => w as u32,
        }
    }

    /// `mirror` (+ `mirrorPercentage` / `mirrorPercent`) and `mirrors[]`, in that order.
    fn mirrors(&mut self, base: &str, raw: &RawHttpRoute, scope: RuleScope<'_>) -> Vec<Mirror> {
        let doc = scope.doc;
        let legacy = raw.mirror.as_ref().map(|m| {
            let share = match (&raw.mirror_percentage, raw.mirror_percent) {
                (Some(p), _) => Some((p.value, format!("{base}.mirrorPercentage.value"))),
                (None, Some(p)) => Some((f64::from(p), format!("{base}.mirrorPercent"))),
                (None, None) => None,
            };
            (m, share, format!("{base}.mirror"))
        });
        let listed = raw.mirrors.iter().enumerate().map(|(j, mp)| {
            let share = mp
                .percentage
                .as_ref()
                .map(|p| (p.value, format!("{base}.mirrors[{j}].percentage.value")));
            (
                &mp.destination,
                share,
                format!("{base}.mirrors[{j}].destination"),
            )
        });
        let mut mirrors = Vec::new();
        for (destination, share, path) in legacy.into_iter().chain(listed) {
            let per_million = match share {
                Some((value, at)) => self.percentage(value, doc, &at),
                None => 1_000_000,
            };
            let (cluster, _) = self.cluster(
                &destination.host,
                destination.subset.as_deref(),
                scope.ns,
                doc.location(&path),
            );
            mirrors.push(Mirror {
                cluster,
                per_million,
            });
        }
        mirrors
    }

    fn policy(&mut self, base: &str, raw: &RawHttpRoute, doc: &Document) -> Policy {
        let fault = raw
            .fault
            .as_ref()
            .map(|f| self.fault(f, doc, &format!("{base}.fault")));
        let timeout = raw
            .timeout
            .as_ref()
            .and_then(|t| self.duration(t, doc, &format!("{base}.timeout")))
            .filter(|d| !d.is_zero());
        let retries = match &raw.retries {
            Some(r) => self.retries(r, doc, &format!("{base}.retries")),
            None => Some(istio_default_retries()),
        };
        let headers = self.header_edits(raw.headers.as_ref(), doc, &format!("{base}.headers"));
        let rewrite = raw.rewrite.as_ref().map(|r| Rewrite {
            uri: r.uri.clone(),
            authority: r.authority.as_ref().and_then(|a| {
                let v = HeaderValue::from_str(a).ok();
                if v.is_none() {
                    self.findings.push(Finding::error(
                        Code::InvalidValue,
                        doc.location(&format!("{base}.rewrite.authority")),
                        format!("authority {a:?} is not a valid header value"),
                    ));
                }
                v
            }),
        });
        Policy {
            fault,
            timeout,
            retries,
            headers,
            rewrite,
        }
    }
}

fn subset_label(d: &RawDestination) -> String {
    match &d.subset {
        Some(s) => format!("subset {s}"),
        None => format!("host {}", d.host),
    }
}
