//! The weight guard: the checks that stop the mistakes that cause outages. One code path serves
//! `weir validate`, file reloads, admin writes and the canary controller.

use std::collections::BTreeMap;

use crate::compile::{Compiled, compile};
use crate::finding::{Code, Finding, Findings};
use crate::source::ConfigSource;
use crate::table::{RouteTable, Rule, VirtualService, WeightPolicy};

/// What a change declares about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardOptions {
    /// Skip the direction and step guards (never the structural checks). Must be explicit.
    pub force: bool,
    /// The change is a promotion in progress: a canary may get more than the stable subset.
    pub promotion: bool,
}

/// Compiles sources and runs every check, including the step guard against `against` (the
/// running table, or `weir validate --against`). The one entry point every caller uses.
pub fn validate(
    sources: &[ConfigSource],
    against: Option<&RouteTable>,
    options: GuardOptions,
) -> Compiled {
    let mut compiled = compile(sources);
    if let Some(table) = &compiled.table {
        let guard = check_weights(against, table, options);
        compiled.findings.0.extend(guard.0);
        compiled.findings.sort();
    }
    compiled
}

/// The weight checks on a compiled table: strict sums, zero totals, the direction guard, and
/// (with a previous table) the step guard.
pub fn check_weights(
    previous: Option<&RouteTable>,
    next: &RouteTable,
    options: GuardOptions,
) -> Findings {
    let mut out = Vec::new();
    for vs in next.virtual_services() {
        let prev_vs = previous.and_then(|p| {
            p.virtual_services()
                .iter()
                .find(|v| v.name == vs.name && v.namespace == vs.namespace)
        });
        for rule in vs.rules.iter().filter(|r| !r.broken) {
            empty_subsets(next, rule, &mut out);
            sums(vs, rule, &mut out);
            if options.force || rule.total_weight == 0 || !rule.is_weighted() {
                continue;
            }
            if !(options.promotion || vs.promotion) {
                direction(vs, rule, &mut out);
            }
            if let Some(prev_vs) = prev_vs {
                let prev_rule = match &rule.name {
                    Some(n) => prev_vs.rules.iter().find(|r| r.name.as_deref() == Some(n)),
                    None => prev_vs.rules.get(rule.index),
                };
                step(vs, rule, prev_rule, &mut out);
            }
        }
    }
    Findings(out)
}

fn weights_text(rule: &Rule) -> String {
    rule.destinations
        .iter()
        .map(|d| format!("{}: {}", d.subset.as_deref().unwrap_or(&d.host), d.weight))
        .collect::<Vec<_>>()
        .join(", ")
}

/// IST0173: a destination whose subset selects no endpoint. An error when it gets weight (its
/// share would be answered 503 `UH`), a warning at weight 0 or as a mirror. Checked here, on
/// every table, so that a weight change through the admin API cannot route to it either.
fn empty_subsets(table: &RouteTable, rule: &Rule, out: &mut Vec<Finding>) {
    let describe = |cluster: usize| {
        let c = table.cluster(cluster);
        let what = match &c.subset {
            Some(name) => {
                let labels: Vec<String> =
                    c.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("subset {name:?} (labels {})", labels.join(","))
            }
            None => "the host".to_string(),
        };
        format!(
            "{what} of host {:?} selects no endpoint: label a ServiceEntry endpoint to match, or fix the subset's labels",
            c.host
        )
    };
    for d in &rule.destinations {
        if !table.cluster(d.cluster).endpoints.is_empty() {
            continue;
        }
        let msg = describe(d.cluster);
        out.push(if d.weight > 0 {
            Finding::error(Code::SubsetWithoutEndpoints, d.location.clone(), msg)
        } else {
            Finding::warning(
                Code::SubsetWithoutEndpoints,
                d.location.clone(),
                msg + " (it gets no traffic now)",
            )
        });
    }
    for m in &rule.mirrors {
        if table.cluster(m.cluster).endpoints.is_empty() {
            out.push(Finding::warning(
                Code::SubsetWithoutEndpoints,
                rule.location.clone(),
                describe(m.cluster) + " (a mirror: its copies are dropped)",
            ));
        }
    }
}

fn sums(vs: &VirtualService, rule: &Rule, out: &mut Vec<Finding>) {
    let Some(first) = rule.destinations.first() else {
        return;
    };
    if rule.total_weight == 0 {
        out.push(Finding::error(
            Code::ZeroTotalWeight,
            first.location.clone(),
            format!(
                "every weight of {} of VirtualService {} is 0 ({}): the route would send traffic nowhere. Give the stable subset 100",
                rule.label(),
                vs.name,
                weights_text(rule)
            ),
        ));
        return;
    }
    if vs.policy == WeightPolicy::Strict && rule.total_weight != 100 {
        out.push(Finding::error(
            Code::WeightSum,
            first.location.clone(),
            format!(
                "the weights of {} of VirtualService {} sum to {} ({}), not 100: fix them so that they sum to 100, or declare `weir.dev/weight-policy: relative`",
                rule.label(),
                vs.name,
                rule.total_weight,
                weights_text(rule)
            ),
        ));
    }
}

fn stable_weight(vs: &VirtualService, rule: &Rule) -> Option<(String, u64)> {
    let stable = vs.stable_subset.as_ref()?;
    let w = rule
        .destinations
        .iter()
        .filter(|d| d.subset.as_ref() == Some(stable))
        .map(|d| u64::from(d.weight))
        .sum();
    Some((stable.clone(), w))
}

fn direction(vs: &VirtualService, rule: &Rule, out: &mut Vec<Finding>) {
    let Some((stable, stable_w)) = stable_weight(vs, rule) else {
        return;
    };
    for d in &rule.destinations {
        if !vs.is_canary(d.subset.as_deref()) || u64::from(d.weight) <= stable_w {
            continue;
        }
        let canary = d.subset.as_deref().unwrap_or("");
        let pct = |w: u64| w as f64 * 100.0 / rule.total_weight as f64;
        let stable_pct = pct(stable_w);
        let canary_pct = pct(u64::from(d.weight));
        out.push(Finding::error(
            Code::CanaryMajority,
            d.location.clone(),
            format!(
                "canary subset {canary} would get {canary_pct:.0}% of {}'s traffic and stable subset {stable} only {stable_pct:.0}% ({}) in VirtualService {}. \
                 The stable subset must carry the majority: if you meant to start a canary, swap the weights ({stable}: {}, {canary}: {}). \
                 A deliberate promotion is declared with the annotation `weir.dev/promotion: \"true\"`",
                rule.label(),
                weights_text(rule),
                vs.name,
                d.weight,
                stable_w,
            ),
        ));
    }
}

fn canary_shares(vs: &VirtualService, rule: &Rule) -> BTreeMap<String, f64> {
    let mut shares = BTreeMap::new();
    for d in &rule.destinations {
        if let Some(s) = d.subset.as_deref().filter(|s| vs.is_canary(Some(s))) {
            *shares.entry(s.to_string()).or_insert(0.0) += rule.share_percent(d);
        }
    }
    shares
}

fn step(vs: &VirtualService, rule: &Rule, prev: Option<&Rule>, out: &mut Vec<Finding>) {
    let before = match prev {
        Some(p) if p.total_weight > 0 => canary_shares(vs, p),
        _ => BTreeMap::new(),
    };
    for (canary, after) in canary_shares(vs, rule) {
        let was = before.get(&canary).copied().unwrap_or(0.0);
        let jump = after - was;
        if jump <= f64::from(vs.max_step) + 1e-9 {
            continue;
        }
        let loc = rule
            .destinations
            .iter()
            .find(|d| d.subset.as_deref() == Some(canary.as_str()))
            .map(|d| d.location.clone())
            .unwrap_or_else(|| rule.location.clone());
        out.push(Finding::error(
            Code::StepTooLarge,
            loc,
            format!(
                "canary subset {canary} would jump from {was:.0}% to {after:.0}% of {}'s traffic in VirtualService {} (+{jump:.0} points; now {}); one change may add at most {} points (weir.dev/max-step). \
                 Step up gradually (e.g. 1 -> 10 -> 50 -> 100), or let `weir canary` drive the rollout",
                rule.label(),
                vs.name,
                weights_text(rule),
                vs.max_step
            ),
        ));
    }
}
