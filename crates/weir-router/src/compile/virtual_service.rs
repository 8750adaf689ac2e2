//! VirtualService -> [`VirtualService`]: weir's annotations, the rules, the stable subset.

use std::str::FromStr;

use http::HeaderName;

use super::*;
use crate::finding::{Code, Finding};
use crate::raw::*;
use crate::table::*;
use crate::yaml::Document;
use rule::RuleScope;

/// weir's annotations on one VirtualService, parsed.
struct Annotations {
    policy: WeightPolicy,
    max_step: u32,
    sticky: Option<StickyKey>,
    promotion: bool,
    stable_subset: Option<String>,
}

impl Compiler<'_> {
    pub(super) fn virtual_service(
        &mut self,
        located: &Located<RawVirtualService>,
    ) -> VirtualService {
        let meta = &located.raw.metadata;
        let doc = &located.doc;
        let ns = namespace(meta);
        let ann = self.annotations(meta, doc);
        let spec = &located.raw.spec;
        if spec.hosts.is_empty() {
            self.findings.push(Finding::error(
                Code::InvalidValue,
                doc.location("spec.hosts"),
                format!(
                    "VirtualService {} has no hosts: list the hosts it serves under spec.hosts",
                    meta.name
                ),
            ));
        }
        if spec.http.is_empty() {
            self.findings.push(Finding::error(
                Code::InvalidValue,
                doc.location("spec"),
                format!(
                    "VirtualService {} has no http rules: add spec.http",
                    meta.name
                ),
            ));
        }
        self.gateways(spec, &meta.name, doc);
        let scope = RuleScope {
            doc,
            ns: &ns,
            policy: ann.policy,
        };
        let mut rules = Vec::new();
        for (i, raw) in spec.http.iter().enumerate() {
            rules.push(self.rule(i, raw, scope));
        }
        self.unreachable_rules(&rules, doc);

        let (stable_subset, stable_source) = match ann.stable_subset {
            Some(s) => {
                let used = rules
                    .iter()
                    .flat_map(|r| &r.destinations)
                    .any(|d| d.subset.as_deref() == Some(s.as_str()));
                if !used {
                    self.findings.push(Finding::error(
                        Code::InvalidValue,
                        doc.location(&format!("metadata.annotations.{}", annotations::STABLE_SUBSET)),
                        format!("stable subset {s:?} is not a destination of any rule: name one of the route's subsets"),
                    ));
                }
                (Some(s), StableSource::Annotation)
            }
            None => default_stable(&rules),
        };
        VirtualService {
            name: meta.name.clone(),
            namespace: ns,
            hosts: spec.hosts.clone(),
            rules,
            policy: ann.policy,
            stable_subset,
            stable_source,
            max_step: ann.max_step,
            promotion: ann.promotion,
            sticky: ann.sticky,
            location: doc.location(""),
        }
    }

    /// `gateways:` without `mesh`: the VirtualService applies to those gateways only, and a
    /// sidecar (weir) ignores it. weir still routes it, and says so.
    fn gateways(&mut self, spec: &RawVirtualService, name: &str, doc: &Document) {
        if spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh") {
            return;
        }
        self.findings.push(Finding::warning(
            Code::NotActedOn,
            doc.location("spec.gateways"),
            format!(
                "VirtualService {name} is bound to gateways {} only, without `mesh`: Istio's sidecars ignore it, so inside the mesh its weights route nothing. Add `mesh` to spec.gateways if the sidecars should apply it (weir applies it either way)",
                spec.gateways.join(", ")
            ),
        ));
    }

    fn annotations(&mut self, meta: &RawMetadata, doc: &Document) -> Annotations {
        let ann = &meta.annotations;
        let ann_loc = |key: &str| doc.location(&format!("metadata.annotations.{key}"));
        let policy = match ann.get(annotations::WEIGHT_POLICY).map(String::as_str) {
            None | Some("strict") => WeightPolicy::Strict,
            Some("relative") => WeightPolicy::Relative,
            Some(other) => {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    ann_loc(annotations::WEIGHT_POLICY),
                    format!("weight policy {other:?} is not `strict` or `relative`"),
                ));
                WeightPolicy::Strict
            }
        };
        let max_step = match ann.get(annotations::MAX_STEP) {
            None => DEFAULT_MAX_STEP,
            Some(v) => match v.trim().trim_end_matches('%').parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => {
                    self.findings.push(Finding::error(
                        Code::InvalidValue,
                        ann_loc(annotations::MAX_STEP),
                        format!("max-step {v:?} is not a whole number of percentage points from 1 to 100"),
                    ));
                    DEFAULT_MAX_STEP
                }
            },
        };
        let sticky = ann.get(annotations::STICKY).and_then(|v| {
            let parsed = match v.split_once(':') {
                Some(("header", name)) => HeaderName::from_str(name.trim())
                    .ok()
                    .map(StickyKey::Header),
                Some(("cookie", name)) if !name.trim().is_empty() => {
                    Some(StickyKey::Cookie(name.trim().to_string()))
                }
                _ => None,
            };
            if parsed.is_none() {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    ann_loc(annotations::STICKY),
                    format!("sticky key {v:?} is not `header:<name>` or `cookie:<name>`"),
                ));
            }
            parsed
        });
        let promotion = match ann.get(annotations::PROMOTION).map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    ann_loc(annotations::PROMOTION),
                    format!("promotion {other:?} is not \"true\" or \"false\""),
                ));
                false
            }
        };
        Annotations {
            policy,
            max_step,
            sticky,
            promotion,
            stable_subset: ann.get(annotations::STABLE_SUBSET).cloned(),
        }
    }
}

/// The stable subset when no annotation names it (the running config may still override it,
/// see [`crate::guard`]): a subset named `primary` or `stable`, else the lowest version in
/// natural order (`v1` < `v2` < `v10`). Never "whichever is listed first".
fn default_stable(rules: &[Rule]) -> (Option<String>, StableSource) {
    let mut subsets: Vec<&str> = rules
        .iter()
        .flat_map(|r| &r.destinations)
        .filter_map(|d| d.subset.as_deref())
        .collect();
    subsets.sort_by(|a, b| natural_cmp(a, b));
    subsets.dedup();
    if let Some(named) = subsets.iter().find(|s| matches!(**s, "primary" | "stable")) {
        return (Some(named.to_string()), StableSource::Name);
    }
    match subsets.as_slice() {
        [] => (None, StableSource::None),
        [only] => (Some(only.to_string()), StableSource::Only),
        [lowest, ..] => (Some(lowest.to_string()), StableSource::LowestVersion),
    }
}

/// Natural order: runs of digits compare as numbers, so `v2` < `v10`.
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let na = trim_zeros(&a[..da]);
                let nb = trim_zeros(&b[..db]);
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|c| **c == b'0').count();
    &digits[zeros.min(digits.len().saturating_sub(1))..]
}
