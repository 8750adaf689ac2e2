//! Validation: a [`RawCanary`] becomes a [`CanarySpec`], or every problem with it is listed,
//! each with its field path, its line and the fix.

use std::collections::BTreeMap;
use std::time::Duration;

use weir_router::yaml::Document;
use weir_router::{Code, Finding, Findings, parse_duration};

use super::raw::{RawAnalysis, RawCanary, RawMetric, RawWebhook};
use super::{
    Analysis, CanarySpec, DarkLaunch, FastGuard, Gate, HookKind, Metric, StringMatch, Target,
    Webhook,
};
use crate::plan::Plan;
use crate::template::Model;
use crate::units::promql_duration;

/// Flagger's default analysis and metric interval.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// The same, as Flagger writes it into a query's `{{ interval }}`.
const DEFAULT_INTERVAL_TEXT: &str = "1m";
/// Flagger's default webhook timeout.
pub(super) const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);
pub(super) const DEFAULT_MIN_REQUESTS: u64 = 10;
const DEFAULT_GUARD_PERIOD: Duration = Duration::from_secs(1);
const DEFAULT_GUARD_WINDOW: Duration = Duration::from_secs(10);

/// Validates a parsed document: the spec, or every problem found.
pub(super) fn build(raw: RawCanary, doc: &Document) -> Result<CanarySpec, Findings> {
    let mut p = Problems {
        doc,
        found: Vec::new(),
        warnings: Vec::new(),
    };
    let mut spec = spec(raw, &mut p);
    if p.found.is_empty() {
        spec.warnings = Findings(p.warnings);
        Ok(spec)
    } else {
        // Errors first, then the warnings, as `weir validate` lists them.
        p.found.append(&mut p.warnings);
        Err(Findings(p.found))
    }
}

/// Collects every problem with its field path and line, so that one run of `weir canary`
/// lists them all.
struct Problems<'a> {
    doc: &'a Document,
    found: Vec<Finding>,
    warnings: Vec<Finding>,
}

impl Problems<'_> {
    fn add(&mut self, path: &str, message: impl Into<String>) {
        let mut location = self.doc.location(path);
        location.path = format!("Canary: {path}");
        self.found.push(Finding::error(
            Code::InvalidCanarySpec,
            location,
            format!("`{path}`: {}", message.into()),
        ));
    }

    /// A finding that does not refuse the spec.
    fn warn(&mut self, path: &str, message: impl Into<String>) {
        let mut location = self.doc.location(path);
        location.path = format!("Canary: {path}");
        self.warnings.push(Finding::warning(
            Code::InvalidCanarySpec,
            location,
            format!("`{path}`: {}", message.into()),
        ));
    }

    fn duration(&mut self, path: &str, text: Option<&str>, default: Duration) -> Duration {
        match text {
            None => default,
            Some(t) => parse_duration(t).unwrap_or_else(|e| {
                self.add(path, e);
                default
            }),
        }
    }
}

fn spec(raw: RawCanary, p: &mut Problems<'_>) -> CanarySpec {
    if raw.api_version != "flagger.app/v1beta1" {
        p.add(
            "apiVersion",
            format!(
                "is {:?}: write `apiVersion: flagger.app/v1beta1`",
                raw.api_version
            ),
        );
    }
    if raw.kind != "Canary" {
        p.add("kind", format!("is {:?}: write `kind: Canary`", raw.kind));
    }
    if raw.metadata.name.is_empty() {
        p.add("metadata.name", "is missing: name the canary");
    }
    let name = raw.metadata.name;
    let namespace = raw.metadata.namespace.unwrap_or_else(|| "default".into());
    let weir = raw.spec.weir;
    let stable_subset = weir.stable_subset.unwrap_or_else(|| "v1".into());
    let canary_subset = weir.canary_subset.unwrap_or_else(|| "v2".into());
    if stable_subset == canary_subset {
        p.add(
            "spec.weir.canarySubset",
            format!("is the stable subset {stable_subset:?} too: name the subset being released"),
        );
    }
    let workload = raw.spec.target_ref.and_then(|t| t.name);
    let virtual_service = weir
        .virtual_service
        .or(raw.spec.service.and_then(|s| s.name))
        .or(workload.clone())
        .unwrap_or_else(|| name.clone());
    let target = Target {
        virtual_service,
        rule: weir.rule,
        stable_version: weir.stable_version.unwrap_or_else(|| stable_subset.clone()),
        canary_version: weir.canary_version.unwrap_or_else(|| canary_subset.clone()),
        stable_subset,
        canary_subset,
        destination_service: weir.destination_service,
        workload: workload.unwrap_or_else(|| name.clone()),
    };

    let Some(a) = raw.spec.analysis else {
        p.add(
            "spec.analysis",
            "is missing: set at least interval, threshold and stepWeight (or stepWeights)",
        );
        return CanarySpec {
            name,
            namespace,
            target,
            analysis: empty_analysis(),
            plan: Plan::listed(0, &[]),
            warnings: Findings::default(),
        };
    };

    let interval = p.duration(
        "spec.analysis.interval",
        a.interval.as_deref(),
        DEFAULT_INTERVAL,
    );
    if interval.is_zero() {
        p.add(
            "spec.analysis.interval",
            "is 0: write the time between checks, e.g. `1m`",
        );
    }
    let threshold = match a.threshold {
        None => {
            p.add(
                "spec.analysis.threshold",
                "is missing: set how many failed checks roll back, e.g. `threshold: 5`",
            );
            1
        }
        Some(0) => {
            p.add(
                "spec.analysis.threshold",
                "is 0: the canary would roll back before its first check; set 1 or more",
            );
            1
        }
        Some(t) => t,
    };

    refuse_unsupported(&a, p);
    let dark_launch = dark_launch(&a, p);
    let plan = plan(&a, dark_launch.as_ref(), p);
    let allow_odd = weir.allow_odd_thresholds.unwrap_or(false);
    let gates = a
        .metrics
        .into_iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let model = Model {
                name: &name,
                namespace: &namespace,
                target: &target.workload,
                service: &target.virtual_service,
                interval: DEFAULT_INTERVAL_TEXT,
            };
            let g = gate(i, m, &model, p)?;
            if !allow_odd {
                odd_threshold(i, &g, p);
            }
            Some(g)
        })
        .collect::<Vec<_>>();
    for (i, g) in gates.iter().enumerate() {
        if gates[..i].iter().any(|other| other.name == g.name) {
            p.add(
                &format!("spec.analysis.metrics[{i}].name"),
                format!("{:?} is listed twice: keep one", g.name),
            );
        }
    }
    let webhooks = a
        .webhooks
        .into_iter()
        .enumerate()
        .filter_map(|(i, w)| webhook(i, w, p))
        .collect();

    let min_requests = match weir.min_requests {
        Some(0) => {
            p.add(
                "spec.weir.minRequests",
                "is 0: no data is never a pass, so at least 1 request is needed; set e.g. 20",
            );
            1
        }
        Some(n) => n,
        None => DEFAULT_MIN_REQUESTS,
    };
    let guard = weir.fast_guard.unwrap_or_default();
    let period = p.duration(
        "spec.weir.fastGuard.period",
        guard.period.as_deref(),
        DEFAULT_GUARD_PERIOD,
    );
    let window = p.duration(
        "spec.weir.fastGuard.window",
        guard.window.as_deref(),
        DEFAULT_GUARD_WINDOW,
    );
    let fast_guard = if period.is_zero() {
        None
    } else {
        if window < period {
            p.add(
                "spec.weir.fastGuard.window",
                format!(
                    "({}) is shorter than the period ({}): the guard would skip traffic; make the window at least the period",
                    promql_duration(window),
                    promql_duration(period)
                ),
            );
        }
        if period > interval {
            p.add(
                "spec.weir.fastGuard.period",
                "is longer than spec.analysis.interval: the guard would never run between checks; shorten it or set `0s` to turn it off",
            );
        }
        Some(FastGuard { period, window })
    };
    let expected_rps = match weir.expected_rps {
        Some(r) if !(r.is_finite() && r > 0.0) => {
            p.add(
                "spec.weir.expectedRps",
                format!("is {r}: write the requests per second the route receives, e.g. 50"),
            );
            None
        }
        other => other,
    };
    if let Some(rps) = expected_rps {
        reachable_min_requests(rps, min_requests, &plan, &gates, fast_guard, p);
    }

    CanarySpec {
        name,
        namespace,
        target,
        analysis: Analysis {
            interval,
            threshold,
            dark_launch,
            gates,
            webhooks,
            min_requests,
            fast_guard,
            expected_rps,
        },
        plan,
        warnings: Findings::default(),
    }
}

fn empty_analysis() -> Analysis {
    Analysis {
        interval: DEFAULT_INTERVAL,
        threshold: 1,
        dark_launch: None,
        gates: Vec::new(),
        webhooks: Vec::new(),
        min_requests: DEFAULT_MIN_REQUESTS,
        fast_guard: None,
        expected_rps: None,
    }
}

/// Thresholds that are almost certainly a unit mistake: a success-rate `min` below 1 (a
/// fraction, as Argo Rollouts writes it, where weir and Flagger mean a percentage) and a
/// request-duration `max` below 1 (seconds where milliseconds are meant). Either would let a
/// broken canary through (min 0.99 passes a 25% error rate), so both are errors unless
/// `spec.weir.allowOddThresholds: true` says they are meant.
fn odd_threshold(i: usize, g: &Gate, p: &mut Problems<'_>) {
    const OVERRIDE: &str = "if it is really meant, set `spec.weir.allowOddThresholds: true`";
    let path = format!("spec.analysis.metrics[{i}].thresholdRange");
    match g.metric {
        Metric::RequestSuccessRate => {
            if let Some(min) = g.min.filter(|m| (0.0..1.0).contains(m)) {
                let what = if min > 0.0 {
                    format!(
                        "{min} looks like a fraction: request-success-rate is a percentage, write {}",
                        trim_number(min * 100.0)
                    )
                } else {
                    "0 passes every success rate, a canary failing every request too: write the percentage that must succeed, e.g. 99".to_string()
                };
                p.add(&format!("{path}.min"), format!("{what} ({OVERRIDE})"));
            }
        }
        Metric::RequestDuration => {
            if let Some(max) = g.max.filter(|m| (0.0..1.0).contains(m)) {
                let what = if max > 0.0 {
                    format!(
                        "{max} looks like seconds: request-duration is the p99 in milliseconds, write {}",
                        trim_number(max * 1000.0)
                    )
                } else {
                    "0 ms fails every request: write the p99 limit in milliseconds, e.g. 500"
                        .to_string()
                };
                p.add(&format!("{path}.max"), format!("{what} ({OVERRIDE})"));
            }
        }
        Metric::Query(_) => {}
    }
}

/// `99.00000000000001` as `99`, `99.5` as `99.5`.
fn trim_number(v: f64) -> String {
    let rounded = (v * 1000.0).round() / 1000.0;
    format!("{rounded}")
}

/// Warns when the expected traffic cannot give a gate (or the fast guard) `minRequests` canary
/// requests in its window at some weight step: those checks would fail for lack of data, and
/// the run would roll back a healthy canary. The dark launch is not checked (its header
/// traffic is not part of `expectedRps`).
fn reachable_min_requests(
    rps: f64,
    min_requests: u64,
    plan: &Plan,
    gates: &[Gate],
    guard: Option<FastGuard>,
    p: &mut Problems<'_>,
) {
    let Some(first) = plan.weights().first().copied() else {
        return;
    };
    let share = f64::from(first) / 100.0;
    let expected = |window: Duration| rps * share * window.as_secs_f64();
    for (i, g) in gates.iter().enumerate().filter(|(_, g)| g.is_builtin()) {
        let n = expected(g.interval);
        if n < min_requests as f64 {
            p.warn(
                "spec.weir.minRequests",
                format!(
                    "({min_requests}) cannot be reached by `{}` (spec.analysis.metrics[{i}]) at the first step: {rps} req/s expected x {first}% x {} window = {} canary requests per check; those checks fail for lack of data. Lower minRequests, raise the first step or lengthen the metric's interval",
                    g.name,
                    promql_duration(g.interval),
                    trim_number(n)
                ),
            );
        }
    }
    if let Some(guard) = guard {
        let n = expected(guard.window);
        if n < min_requests as f64 {
            p.warn(
                "spec.weir.minRequests",
                format!(
                    "({min_requests}) cannot be reached by the fast guard at the first step: {rps} req/s expected x {first}% x {} window = {} canary requests; the guard cannot decide there and only the interval checks protect that step. Lengthen spec.weir.fastGuard.window or lower minRequests",
                    promql_duration(guard.window),
                    trim_number(n)
                ),
            );
        }
    }
}

fn refuse_unsupported(a: &RawAnalysis, p: &mut Problems<'_>) {
    if a.mirror == Some(true) || a.mirror_weight.is_some() {
        p.add(
            "spec.analysis.mirror",
            "traffic mirroring during the analysis is not supported by weir's controller: remove mirror/mirrorWeight (mirror with the VirtualService's `mirror` instead)",
        );
    }
    if a.step_weight_promotion.is_some() {
        p.add(
            "spec.analysis.stepWeightPromotion",
            "weir promotes in one step (the canary becomes the stable subset at 100%): remove stepWeightPromotion",
        );
    }
    if a.session_affinity.is_some() {
        p.add(
            "spec.analysis.sessionAffinity",
            "is not read by the controller: set `weir.dev/sticky` on the VirtualService instead",
        );
    }
}

fn dark_launch(a: &RawAnalysis, p: &mut Problems<'_>) -> Option<DarkLaunch> {
    let iterations = a.iterations.unwrap_or(0);
    let matches = a.matches.as_deref().unwrap_or_default();
    match (iterations, matches.is_empty()) {
        (0, true) => return None,
        (0, false) => {
            p.add(
                "spec.analysis.iterations",
                "is missing: `match` starts a dark launch, which needs `iterations` (passing checks on header traffic), e.g. `iterations: 5`",
            );
            return None;
        }
        (_, true) => {
            p.add(
                "spec.analysis.match",
                "is missing: `iterations` is a header-only dark launch, which needs the headers, e.g. `match: [{headers: {x-canary: {exact: \"true\"}}}]`",
            );
            return None;
        }
        _ => {}
    }
    let mut out = Vec::new();
    for (i, m) in matches.iter().enumerate() {
        if m.headers.is_empty() {
            p.add(
                &format!("spec.analysis.match[{i}].headers"),
                "is empty: name at least one header",
            );
        }
        let mut item = BTreeMap::new();
        for (header, sm) in &m.headers {
            let path = format!("spec.analysis.match[{i}].headers.{header}");
            let set = [
                sm.exact.clone().map(StringMatch::Exact),
                sm.prefix.clone().map(StringMatch::Prefix),
                sm.regex.clone().map(StringMatch::Regex),
            ];
            let mut set = set.into_iter().flatten();
            match (set.next(), set.next()) {
                (Some(one), None) => {
                    item.insert(header.to_ascii_lowercase(), one);
                }
                _ => p.add(&path, "needs exactly one of exact, prefix or regex"),
            }
        }
        out.push(item);
    }
    Some(DarkLaunch {
        iterations,
        matches: out,
    })
}

fn plan(a: &RawAnalysis, dark: Option<&DarkLaunch>, p: &mut Problems<'_>) -> Plan {
    let dark_iterations = dark.map_or(0, |d| d.iterations);
    if let Some(max) = a.max_weight {
        if max > 100 {
            p.add(
                "spec.analysis.maxWeight",
                format!(
                    "is {max}: a canary's weight cannot exceed 100; set maxWeight to 100 or less"
                ),
            );
        } else if max == 0 {
            p.add(
                "spec.analysis.maxWeight",
                "is 0: the canary would never get traffic; set the largest weight to reach before promotion, e.g. 50",
            );
        }
    }
    match (a.step_weight, a.step_weights.as_deref()) {
        (Some(_), Some(_)) => {
            p.add(
                "spec.analysis.stepWeights",
                "is set together with stepWeight: keep one of them",
            );
            Plan::listed(dark_iterations, &[])
        }
        (Some(0), None) => {
            p.add(
                "spec.analysis.stepWeight",
                "is 0: the weight would never grow; set the increment, e.g. 10",
            );
            Plan::listed(dark_iterations, &[])
        }
        (Some(step), None) => {
            let max = a.max_weight.unwrap_or(100).clamp(1, 100);
            if step > max {
                p.add(
                    "spec.analysis.stepWeight",
                    format!(
                        "({step}) is larger than maxWeight ({max}): make the step at most maxWeight"
                    ),
                );
            }
            Plan::stepped(dark_iterations, step, max)
        }
        (None, Some(list)) => {
            if list.is_empty() {
                p.add(
                    "spec.analysis.stepWeights",
                    "is empty: list the canary weights in order, e.g. [1, 10, 50]",
                );
            }
            for (i, w) in list.iter().enumerate() {
                let path = format!("spec.analysis.stepWeights[{i}]");
                if *w == 0 || *w > 100 {
                    p.add(&path, format!("is {w}: each weight must be 1 to 100"));
                }
                if i > 0 && *w <= list[i - 1] {
                    p.add(
                        &path,
                        format!(
                            "({w}) is not above the weight before it ({}): list weights strictly increasing",
                            list[i - 1]
                        ),
                    );
                }
                if let Some(max) = a.max_weight.filter(|m| w > m) {
                    p.add(
                        &path,
                        format!(
                            "({w}) is above maxWeight ({max}): remove the step or raise maxWeight"
                        ),
                    );
                }
            }
            Plan::listed(dark_iterations, list)
        }
        (None, None) => {
            if dark_iterations == 0 {
                p.add(
                    "spec.analysis.stepWeight",
                    "is missing and so is stepWeights: the plan has no steps; set stepWeight (with maxWeight) or stepWeights",
                );
            }
            Plan::listed(dark_iterations, &[])
        }
    }
}

/// One metric; `model` fills a custom query's template, its interval replaced by the metric's
/// own as written.
fn gate(i: usize, m: RawMetric, model: &Model<'_>, p: &mut Problems<'_>) -> Option<Gate> {
    let path = format!("spec.analysis.metrics[{i}]");
    if m.template_ref.is_some() || m.template_variables.is_some() {
        p.add(
            &format!("{path}.templateRef"),
            "MetricTemplates are not read by weir: put the PromQL in the metric's `query`",
        );
        return None;
    }
    if m.name.is_empty() {
        p.add(&format!("{path}.name"), "is missing: name the metric");
        return None;
    }
    let interval = p.duration(
        &format!("{path}.interval"),
        m.interval.as_deref(),
        DEFAULT_INTERVAL,
    );
    let metric = match (m.name.as_str(), m.query) {
        ("request-success-rate" | "request-duration", Some(_)) => {
            p.add(
                &format!("{path}.query"),
                format!(
                    "is set on the built-in `{}`: rename the metric or drop the query",
                    m.name
                ),
            );
            return None;
        }
        ("request-success-rate", None) => Metric::RequestSuccessRate,
        ("request-duration", None) => Metric::RequestDuration,
        (_, Some(q)) if !q.trim().is_empty() => {
            let model = Model {
                interval: m.interval.as_deref().unwrap_or(model.interval),
                ..model.clone()
            };
            let rendered = model.render(&q);
            if rendered.contains("{{") {
                p.add(
                    &format!("{path}.query"),
                    "uses a template variable weir does not know: use {{ interval }}, {{ namespace }}, {{ name }}, {{ target }} or {{ service }}",
                );
            }
            Metric::Query(rendered)
        }
        (other, _) => {
            p.add(
                &format!("{path}.query"),
                format!(
                    "is missing: `{other}` is not a built-in metric (request-success-rate, request-duration), so it needs a PromQL query"
                ),
            );
            return None;
        }
    };
    // Flagger's older `threshold`: a minimum for the success rate, a maximum otherwise.
    let (min, max) = match (m.threshold_range, m.threshold) {
        (Some(r), _) => (r.min, r.max),
        (None, Some(t)) if metric == Metric::RequestSuccessRate => (Some(t), None),
        (None, Some(t)) => (None, Some(t)),
        (None, None) => (None, None),
    };
    if min.is_none() && max.is_none() {
        p.add(
            &format!("{path}.thresholdRange"),
            "is empty: set min and/or max, e.g. `thresholdRange: {min: 99}` for a success rate",
        );
    }
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        p.add(
            &format!("{path}.thresholdRange"),
            format!("min ({lo}) is above max ({hi}): no value could pass; swap them"),
        );
    }
    if metric == Metric::RequestSuccessRate
        && [min, max]
            .iter()
            .flatten()
            .any(|v| !(0.0..=100.0).contains(v))
    {
        p.add(
            &format!("{path}.thresholdRange"),
            "a success rate is a percentage: use values from 0 to 100 (e.g. min: 99, not 0.99)",
        );
    }
    Some(Gate {
        name: m.name,
        metric,
        min,
        max,
        interval,
    })
}

fn webhook(i: usize, w: RawWebhook, p: &mut Problems<'_>) -> Option<Webhook> {
    let path = format!("spec.analysis.webhooks[{i}]");
    let kind = match w.kind.as_deref().unwrap_or("rollout") {
        "pre-rollout" => HookKind::PreRollout,
        "rollout" => HookKind::Rollout,
        "confirm-promotion" => HookKind::ConfirmPromotion,
        "post-rollout" => HookKind::PostRollout,
        "rollback" => HookKind::Rollback,
        other => {
            p.add(
                &format!("{path}.type"),
                format!(
                    "{other:?} is not supported: use pre-rollout, rollout, confirm-promotion, post-rollout or rollback"
                ),
            );
            return None;
        }
    };
    if w.name.is_empty() {
        p.add(&format!("{path}.name"), "is missing: name the webhook");
    }
    if !w.url.starts_with("http://") {
        p.add(
            &format!("{path}.url"),
            format!("{:?} is not an http:// URL: weir calls webhooks over plain HTTP inside the cluster", w.url),
        );
    }
    let timeout = p.duration(
        &format!("{path}.timeout"),
        w.timeout.as_deref(),
        DEFAULT_HOOK_TIMEOUT,
    );
    if timeout.is_zero() {
        p.add(
            &format!("{path}.timeout"),
            "is 0: every call would time out; set e.g. `5s`",
        );
    }
    Some(Webhook {
        name: w.name,
        kind,
        url: w.url,
        timeout,
        metadata: w.metadata,
    })
}
