//! The weight guard: the checks that stop the mistakes that cause outages. One code path serves
//! `weir validate`, file reloads, admin writes and the canary controller.

use crate::compile::{Compiled, HostMode, compile_with};
use crate::finding::{Code, Finding, Findings};
use crate::source::ConfigSource;
use crate::table::{RouteTable, Rule, StableSource, VirtualService, WeightPolicy};

/// What a change declares about itself, and how it is checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardOptions {
    /// Skip the direction and step guards (never the structural checks). Must be explicit.
    pub force: bool,
    /// The change is a promotion in progress: a canary may get more than the stable subset,
    /// and the majority may move to another subset.
    pub promotion: bool,
    /// How destination hosts without a ServiceEntry are judged. The default requires
    /// endpoints, as serving does; `weir validate` uses [`HostMode::Cluster`].
    pub hosts: HostMode,
    /// The caller is the `weir` CLI: messages name its flags (`--promotion`).
    pub cli: bool,
}

/// Compiles sources and runs every check, including the step guard against `against` (the
/// running table, or `weir validate --against`). The one entry point every caller uses.
///
/// Every weight finding (WEIR001-005) is computed for every weighted route, whatever else is
/// wrong with the config: an unresolved host or subset never hides the 99/1 typo.
pub fn validate(
    sources: &[ConfigSource],
    against: Option<&RouteTable>,
    options: GuardOptions,
) -> Compiled {
    validate_adjusted(sources, against, options, |_| {})
}

/// [`validate`], with `adjust` run on the compiled table once its stable subsets are decided
/// and before the weight guards: what it changes (the admin state re-applied) is guarded like
/// the file.
pub(crate) fn validate_adjusted(
    sources: &[ConfigSource],
    against: Option<&RouteTable>,
    options: GuardOptions,
    adjust: impl FnOnce(&mut RouteTable),
) -> Compiled {
    guard_compiled(
        compile_with(sources, options.hosts),
        against,
        options,
        adjust,
    )
}

/// The checks of [`validate_adjusted`] on a config already compiled: the writer of a live
/// table compiles (the expensive part) before it takes its lock, and checks against the table
/// in force under the lock.
pub(crate) fn guard_compiled(
    mut compiled: Compiled,
    against: Option<&RouteTable>,
    options: GuardOptions,
    adjust: impl FnOnce(&mut RouteTable),
) -> Compiled {
    if let Some(table) = &mut compiled.table {
        let mut extra = Vec::new();
        for vs in &mut table.virtual_services {
            let prev = against.and_then(|p| previous_of(p, vs));
            let (stable, source) = stable_subset(vs, prev);
            vs.stable_subset = stable;
            vs.stable_source = source;
            if source == StableSource::LowestVersion {
                extra.push(Finding::warning(
                    Code::InvalidValue,
                    vs.location.clone(),
                    format!(
                        "VirtualService {} names no stable subset: weir takes {:?}, the lowest version, as stable (no `--against` config says which subset holds the majority, and no subset is named `primary` or `stable`). Declare it: `metadata.annotations: {{{}: {}}}`",
                        vs.name,
                        vs.stable_subset.as_deref().unwrap_or(""),
                        crate::compile::annotations::STABLE_SUBSET,
                        vs.stable_subset.as_deref().unwrap_or("")
                    ),
                ));
            }
        }
        adjust(table);
        let guard = check_weights(against, table, options);
        compiled.findings.0.extend(extra);
        compiled.findings.0.extend(guard.0);
        compiled.findings.sort();
    }
    compiled
}

fn previous_of<'p>(previous: &'p RouteTable, vs: &VirtualService) -> Option<&'p VirtualService> {
    previous
        .virtual_services()
        .iter()
        .find(|v| v.name == vs.name && v.namespace == vs.namespace)
}

/// The stable subset, in this order: the annotation; the subset holding the majority in the
/// running config; `primary` / `stable`; the lowest version (see [`StableSource`]).
fn stable_subset(
    vs: &VirtualService,
    prev: Option<&VirtualService>,
) -> (Option<String>, StableSource) {
    if vs.stable_source == StableSource::Annotation {
        return (vs.stable_subset.clone(), vs.stable_source);
    }
    if let Some(majority) = prev.and_then(|p| p.split_rule()).and_then(majority) {
        let routed = vs
            .rules
            .iter()
            .flat_map(|r| &r.destinations)
            .any(|d| d.subset.as_deref() == Some(majority));
        if routed {
            return (Some(majority.to_string()), StableSource::Running);
        }
    }
    (vs.stable_subset.clone(), vs.stable_source)
}

/// The subset holding more than half of a rule's weight, if one does.
fn majority(rule: &Rule) -> Option<&str> {
    if rule.total_weight == 0 {
        return None;
    }
    let mut by_subset: Vec<(&str, u64)> = Vec::new();
    for d in &rule.destinations {
        let Some(s) = d.subset.as_deref() else {
            continue;
        };
        match by_subset.iter_mut().find(|(n, _)| *n == s) {
            Some((_, w)) => *w += u64::from(d.weight),
            None => by_subset.push((s, u64::from(d.weight))),
        }
    }
    by_subset
        .into_iter()
        .find(|(_, w)| w * 2 > rule.total_weight)
        .map(|(s, _)| s)
}

/// The weight checks on a compiled table: strict sums, zero totals, the direction guard, the
/// flip guard and (with a previous table) the step guard. Direction and step apply to the
/// canaries' total: every destination of the route other than the stable subset.
pub fn check_weights(
    previous: Option<&RouteTable>,
    next: &RouteTable,
    options: GuardOptions,
) -> Findings {
    let mut out = Vec::new();
    for vs in next.virtual_services() {
        let prev_vs = previous.and_then(|p| previous_of(p, vs));
        let (stable, source) = stable_subset(vs, prev_vs);
        let guard = Guard {
            vs,
            stable: stable.as_deref(),
            source,
            cli: options.cli,
        };
        for rule in &vs.rules {
            empty_subsets(next, rule, &mut out);
            guard.sums(rule, &mut out);
            if options.force || rule.total_weight == 0 || !rule.is_weighted() {
                continue;
            }
            let prev_rule = prev_vs.and_then(|p| match &rule.name {
                Some(n) => p.rules.iter().find(|r| r.name.as_deref() == Some(n)),
                None => p.rules.get(rule.index),
            });
            if !(options.promotion || vs.promotion) {
                guard.direction(rule, &mut out);
            }
            if prev_vs.is_some() {
                guard.step(rule, prev_rule, &mut out);
            }
        }
    }
    Findings(out)
}

/// One VirtualService's weight checks, with its stable subset decided.
struct Guard<'a> {
    vs: &'a VirtualService,
    stable: Option<&'a str>,
    source: StableSource,
    cli: bool,
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
        let c = table.cluster(d.cluster);
        // Unknown endpoints (a Kubernetes Service in cluster mode, an unresolved host) are
        // not absent ones; and a destination without a subset selects nothing to be empty.
        if !c.endpoints.is_empty() || !c.known || c.subset.is_none() {
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
        let c = table.cluster(m.cluster);
        if c.endpoints.is_empty() && c.known && c.subset.is_some() {
            out.push(Finding::warning(
                Code::SubsetWithoutEndpoints,
                rule.location.clone(),
                describe(m.cluster) + " (a mirror: its copies are dropped)",
            ));
        }
    }
}

// === impl Guard ===

impl Guard<'_> {
    fn promotion_hint(&self) -> String {
        let annotation = format!(
            "the annotation `{}: \"true\"`",
            crate::compile::annotations::PROMOTION
        );
        if self.cli {
            format!("`weir validate --promotion` (or {annotation})")
        } else {
            annotation
        }
    }

    fn sums(&self, rule: &Rule, out: &mut Vec<Finding>) {
        let vs = self.vs;
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

    fn is_canary(&self, subset: Option<&str>) -> bool {
        matches!((subset, self.stable), (Some(s), Some(stable)) if s != stable)
    }

    /// The stable subset's weight and the canaries' total in a rule.
    fn split(&self, rule: &Rule) -> (u64, u64) {
        let stable = self.stable.unwrap_or_default();
        rule.destinations
            .iter()
            .fold((0, 0), |(s, c), d| match d.subset.as_deref() {
                Some(x) if x == stable => (s + u64::from(d.weight), c),
                x if self.is_canary(x) => (s, c + u64::from(d.weight)),
                _ => (s, c),
            })
    }

    fn canary_names(&self, rule: &Rule) -> String {
        let mut names: Vec<&str> = rule
            .destinations
            .iter()
            .filter_map(|d| d.subset.as_deref())
            .filter(|s| self.is_canary(Some(s)))
            .collect();
        names.dedup();
        names.join(" + ")
    }

    /// The direction guard: the canaries together must not get more than the stable subset.
    ///
    /// It is also the flip guard: without an annotation the stable subset is the one holding
    /// the majority in the running config, so any change that moves the majority elsewhere,
    /// whatever the order of the list, is refused unless declared a promotion. Returning the
    /// majority to the annotated stable subset is a rollback, never a flip.
    fn direction(&self, rule: &Rule, out: &mut Vec<Finding>) {
        let Some(stable) = self.stable else {
            return;
        };
        let (stable_w, canary_w) = self.split(rule);
        if canary_w <= stable_w {
            return;
        }
        let why_stable = match self.source {
            StableSource::Annotation => "annotated",
            StableSource::Running => {
                "the majority holder in the running config; moving the majority elsewhere is a promotion"
            }
            StableSource::Name => "so named",
            StableSource::LowestVersion => "the lowest version, as no annotation names one",
            _ => "the only subset",
        };
        let pct = |w: u64| w as f64 * 100.0 / rule.total_weight as f64;
        let canaries = self.canary_names(rule);
        let several = canaries.contains(" + ");
        let loc = rule
            .destinations
            .iter()
            .filter(|d| self.is_canary(d.subset.as_deref()))
            .max_by_key(|d| d.weight)
            .map(|d| d.location.clone())
            .unwrap_or_else(|| rule.location.clone());
        let fix = if several {
            format!("give the stable subset {stable} at least as much as {canaries} together")
        } else {
            format!(
                "if you meant to start a canary, swap the weights ({stable}: {canary_w}, {canaries}: {stable_w})"
            )
        };
        out.push(Finding::error(
            Code::CanaryMajority,
            loc,
            format!(
                "canary subset{} {canaries} would get {:.0}% of {}'s traffic and stable subset {stable} ({why_stable}) only {:.0}% ({}) in VirtualService {}. \
                 The stable subset must carry the majority: {fix}. A deliberate promotion is declared with {}",
                if several { "s" } else { "" },
                pct(canary_w),
                rule.label(),
                pct(stable_w),
                weights_text(rule),
                self.vs.name,
                self.promotion_hint(),
            ),
        ));
    }

    /// The step guard on the canaries' total share.
    fn step(&self, rule: &Rule, prev: Option<&Rule>, out: &mut Vec<Finding>) {
        if self.stable.is_none() {
            return;
        }
        let share = |r: &Rule| {
            if r.total_weight == 0 {
                0.0
            } else {
                self.split(r).1 as f64 * 100.0 / r.total_weight as f64
            }
        };
        let was = prev.map(share).unwrap_or(0.0);
        let after = share(rule);
        let jump = after - was;
        if jump <= f64::from(self.vs.max_step) + 1e-9 {
            return;
        }
        let canaries = self.canary_names(rule);
        let loc = rule
            .destinations
            .iter()
            .filter(|d| self.is_canary(d.subset.as_deref()))
            .max_by_key(|d| d.weight)
            .map(|d| d.location.clone())
            .unwrap_or_else(|| rule.location.clone());
        out.push(Finding::error(
            Code::StepTooLarge,
            loc,
            format!(
                "canary subset{} {canaries} would jump from {was:.0}% to {after:.0}% of {}'s traffic in VirtualService {} (+{jump:.0} points; now {}); one change may add at most {} points (weir.dev/max-step). \
                 Step up gradually (e.g. 1 -> 10 -> 50 -> 100), or let `weir canary` drive the rollout",
                if canaries.contains(" + ") { "s" } else { "" },
                rule.label(),
                self.vs.name,
                weights_text(rule),
                self.vs.max_step
            ),
        ));
    }
}
