//! DestinationRule -> subsets and load balancers, by host.

use std::collections::BTreeMap;
use std::str::FromStr;

use http::HeaderName;

use super::*;
use crate::finding::{Code, Finding, Location};
use crate::raw::*;
use crate::table::*;
use crate::yaml::Document;

pub(super) struct SubsetDef {
    pub(super) labels: BTreeMap<String, String>,
    pub(super) load_balancer: LoadBalancer,
    /// Where the subset is defined.
    pub(super) location: Location,
}

impl Compiler<'_> {
    pub(super) fn destination_rule(&mut self, dr: &Located<RawDestinationRule>) {
        let ns = namespace(&dr.raw.metadata);
        let spec = &dr.raw.spec;
        let host_lb = self.load_balancer(
            spec.traffic_policy.as_ref(),
            &dr.doc,
            "spec.trafficPolicy.loadBalancer",
        );
        let mut subsets = BTreeMap::new();
        for (i, s) in spec.subsets.iter().enumerate() {
            let lb = match &s.traffic_policy {
                Some(tp) if tp.load_balancer.is_some() => self.load_balancer(
                    Some(tp),
                    &dr.doc,
                    &format!("spec.subsets[{i}].trafficPolicy.loadBalancer"),
                ),
                _ => host_lb.clone(),
            };
            let def = SubsetDef {
                labels: s.labels.clone(),
                load_balancer: lb,
                location: dr.doc.location(&format!("spec.subsets[{i}]")),
            };
            if subsets.insert(s.name.clone(), def).is_some() {
                self.findings.push(Finding::error(
                    Code::DuplicateSubset,
                    dr.doc.location(&format!("spec.subsets[{i}].name")),
                    format!(
                        "subset {:?} is defined twice in DestinationRule {}: rename or remove one",
                        s.name, dr.raw.metadata.name
                    ),
                ));
            }
        }
        let key = service_fqdn(&spec.host, &ns);
        self.rule_owners
            .entry(key.clone())
            .or_insert_with(|| format!("{ns}/{}", dr.raw.metadata.name));
        if let Some((_, existing)) = self.rules.get_mut(&key) {
            for (name, def) in subsets {
                match existing.entry(name) {
                    std::collections::btree_map::Entry::Occupied(taken) => {
                        self.findings.push(Finding::error(
                            Code::DuplicateSubset,
                            dr.doc.location("spec.subsets"),
                            format!(
                                "subset {:?} of host {} is defined by two DestinationRules: keep one",
                                taken.key(),
                                spec.host
                            ),
                        ));
                    }
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(def);
                    }
                }
            }
        } else {
            self.rules.insert(key, (host_lb, subsets));
        }
    }

    pub(super) fn load_balancer(
        &mut self,
        tp: Option<&RawTrafficPolicy>,
        doc: &Document,
        path: &str,
    ) -> LoadBalancer {
        let Some(lb) = tp.and_then(|tp| tp.load_balancer.as_ref()) else {
            return LoadBalancer::LeastRequest;
        };
        if let Some(ch) = &lb.consistent_hash {
            let key = if let Some(h) = &ch.http_header_name {
                match HeaderName::from_str(h) {
                    Ok(name) => Some(HashKey::Header(name)),
                    Err(_) => None,
                }
            } else if let Some(c) = &ch.http_cookie {
                Some(HashKey::Cookie(c.name.clone()))
            } else if ch.use_source_ip == Some(true) {
                Some(HashKey::SourceIp)
            } else {
                ch.http_query_parameter_name
                    .as_ref()
                    .map(|q| HashKey::QueryParameter(q.clone()))
            };
            return match key {
                Some(k) => LoadBalancer::ConsistentHash(k),
                None => {
                    self.findings.push(Finding::error(
                        Code::InvalidValue,
                        doc.location(&format!("{path}.consistentHash")),
                        "consistentHash needs httpHeaderName (a valid header name), httpCookie, useSourceIp or httpQueryParameterName",
                    ));
                    LoadBalancer::LeastRequest
                }
            };
        }
        match lb.simple.as_deref() {
            None | Some("LEAST_REQUEST") | Some("LEAST_CONN") | Some("UNSPECIFIED") => {
                LoadBalancer::LeastRequest
            }
            Some("ROUND_ROBIN") => LoadBalancer::RoundRobin,
            Some("RANDOM") => LoadBalancer::Random,
            Some("PASSTHROUGH") => LoadBalancer::Passthrough,
            Some(other) => {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    doc.location(&format!("{path}.simple")),
                    format!(
                        "load balancer {other:?} is not ROUND_ROBIN, LEAST_REQUEST, RANDOM or PASSTHROUGH"
                    ),
                ));
                LoadBalancer::LeastRequest
            }
        }
    }

    /// Two subsets of one host that select the same endpoints: a split between them changes
    /// nothing (one of the lesson's causes of "v2 gets 0%").
    pub(super) fn overlapping_subsets(&mut self) {
        let mut found = Vec::new();
        for (host, (_, subsets)) in &self.rules {
            let Some(service) = self.services.get(host) else {
                continue;
            };
            let selected: Vec<(&String, &SubsetDef, Vec<&str>)> = subsets
                .iter()
                .map(|(name, def)| {
                    let eps = service
                        .endpoints
                        .iter()
                        .filter(|e| def.labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
                        .map(|e| e.authority.as_str())
                        .collect();
                    (name, def, eps)
                })
                .collect();
            for (i, (a, _, eps_a)) in selected.iter().enumerate() {
                for (b, def_b, eps_b) in &selected[i + 1..] {
                    if !eps_a.is_empty() && eps_a == eps_b {
                        found.push(Finding::warning(
                            Code::InvalidValue,
                            def_b.location.clone(),
                            format!(
                                "subsets {a:?} and {b:?} of host {host} select the same endpoints ({}): a split between them sends all traffic to the same pods. Give each subset the labels of its own version (e.g. `version: {b}`)",
                                eps_a.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        found.sort_by(|x, y| x.message.cmp(&y.message));
        self.findings.extend(found);
    }
}
