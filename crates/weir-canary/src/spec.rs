//! The `Canary` document: Flagger's shape plus weir's own settings, validated up front.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use weir_router::parse_duration;
use weir_router::{Code, Finding, Findings};

use crate::plan::Plan;
use crate::source::promql_duration;

/// Flagger's default analysis and metric interval.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Flagger's default webhook timeout.
const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MIN_REQUESTS: u64 = 10;
const DEFAULT_GUARD_PERIOD: Duration = Duration::from_secs(1);
const DEFAULT_GUARD_WINDOW: Duration = Duration::from_secs(10);

/// A validated canary: what to move, how far, and behind which gates.
///
/// The document is Flagger's shape (`flagger.app/v1beta1`, `spec.analysis`) plus weir's own
/// settings under `spec.weir`; every field below is read, anything else under `analysis` is
/// refused rather than ignored:
///
/// ```yaml
/// apiVersion: flagger.app/v1beta1
/// kind: Canary
/// metadata:
///   name: payment-svc
///   namespace: production
/// spec:
///   analysis:
///     interval: 1m            # one check per interval
///     threshold: 5            # failed checks (counted over the run) that roll back
///     maxWeight: 50           # with stepWeight: 10, 20, ... 50, then promotion
///     stepWeight: 10          # or stepWeights: [1, 10, 50]
///     iterations: 3           # dark launch: 3 passing checks on header traffic only ...
///     match:                  # ... the requests the VirtualService's header rule sends to the canary
///       - headers:
///           x-canary:
///             exact: "true"
///     metrics:
///       - name: request-success-rate   # % non-5xx, min
///         thresholdRange: {min: 99}
///         interval: 1m
///       - name: request-duration       # p99 in ms, max
///         thresholdRange: {max: 500}
///         interval: 30s
///       - name: error-budget           # any other name needs a PromQL query
///         query: sum(rate(my_errors_total[{{ interval }}]))
///         thresholdRange: {max: 1}
///     webhooks:
///       - name: load-test              # type defaults to rollout
///         url: http://flagger-loadtester.test/
///         timeout: 5s
///   weir:
///     virtualService: payment-svc      # default: spec.service.name, spec.targetRef.name, metadata.name
///     rule: canary-split               # name of the weighted http rule; default: the first with both subsets
///     stableSubset: v1                 # default v1
///     canarySubset: v2                 # default v2
///     stableVersion: v1                # destination_version of the stable's metrics; default: the subset name
///     canaryVersion: v2                # likewise for the canary
///     destinationService: payment-svc  # destination_service_name to count; default: every service
///     minRequests: 20                  # requests a gate needs in its window (default 10); fewer fails
///     fastGuard:
///       period: 1s                     # between checks, look this often (default 1s; 0s: off)
///       window: 10s                    # over this much recent traffic (default 10s)
/// ```
///
/// Flagger's webhook types `pre-rollout`, `rollout`, `confirm-promotion`, `post-rollout` and
/// `rollback` are supported with Flagger's semantics; custom query templates may use
/// `{{ interval }}`, `{{ namespace }}`, `{{ name }}` and `{{ service }}`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CanarySpec {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (`default` when absent).
    pub namespace: String,
    /// The route whose weights the canary moves.
    pub target: Target,
    /// The analysis: interval, threshold, gates, webhooks.
    pub analysis: Analysis,
    /// The stages, computed from the analysis.
    pub plan: Plan,
}

/// The weighted route a canary moves, and the subsets on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Target {
    /// The VirtualService's `metadata.name`.
    pub virtual_service: String,
    /// The `name` of the weighted http rule; `None`: the first rule routing to both subsets.
    pub rule: Option<String>,
    /// The subset serving production now.
    pub stable_subset: String,
    /// The subset being released.
    pub canary_subset: String,
    /// `destination_version` label of the stable subset's metrics.
    pub stable_version: String,
    /// `destination_version` label of the canary subset's metrics.
    pub canary_version: String,
    /// `destination_service_name` label to count; `None` counts every service.
    pub destination_service: Option<String>,
}

/// How the canary is judged.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Analysis {
    /// Time between two checks.
    pub interval: Duration,
    /// Failed checks (counted over the whole run, as Flagger does) that roll back; >= 1.
    pub threshold: u32,
    /// The dark launch, when `iterations` and `match` are set.
    pub dark_launch: Option<DarkLaunch>,
    /// The gates of every check.
    pub gates: Vec<Gate>,
    /// The webhooks, in the order written.
    pub webhooks: Vec<Webhook>,
    /// Requests a built-in gate needs in its window; fewer is a failed check. >= 1.
    pub min_requests: u64,
    /// The fast guard between checks; `None` when turned off.
    pub fast_guard: Option<FastGuard>,
}

/// The header-only first stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DarkLaunch {
    /// Passing checks before weighted traffic starts.
    pub iterations: u32,
    /// Flagger's `match`: items OR, headers inside an item AND. The VirtualService's header
    /// rule is what routes these requests; the controller reports them and the load generator
    /// of `weir demo` sends them.
    pub matches: Vec<BTreeMap<String, StringMatch>>,
}

/// How a header value is matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StringMatch {
    /// Equal to.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// A regular expression matching the whole value (RE2 syntax).
    Regex(String),
}

/// One metric gate: a value that must stay within `[min, max]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Gate {
    /// The metric's `name`.
    pub name: String,
    /// What is measured.
    pub metric: Metric,
    /// Lowest passing value (unit of the metric: % for success rate, ms for duration).
    pub min: Option<f64>,
    /// Highest passing value.
    pub max: Option<f64>,
    /// The window the value is computed over.
    #[serde(
        serialize_with = "crate::report::ser_duration_ms",
        rename = "interval_ms"
    )]
    pub interval: Duration,
}

/// What a gate measures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// `request-success-rate`: non-5xx responses in % of all, on the canary.
    RequestSuccessRate,
    /// `request-duration`: the canary's p99 request duration in ms.
    RequestDuration,
    /// A PromQL query, template variables already filled in.
    Query(String),
}

/// A webhook, called with Flagger's payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Webhook {
    /// `name`.
    pub name: String,
    /// When it is called and what its answer means.
    pub kind: HookKind,
    /// An `http://` URL.
    pub url: String,
    /// How long to wait for an answer; a timeout is a failure.
    #[serde(
        serialize_with = "crate::report::ser_duration_ms",
        rename = "timeout_ms"
    )]
    pub timeout: Duration,
    /// Sent as the payload's `metadata`.
    pub metadata: BTreeMap<String, String>,
}

/// Flagger's webhook types that weir implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookKind {
    /// Before any traffic: a failure is a failed check and the canary does not start.
    PreRollout,
    /// Before the metric gates of every check: a failure is a failed check.
    Rollout,
    /// Before promotion: the gate stays closed (checks go on) until every one answers 2xx.
    ConfirmPromotion,
    /// After promotion or rollback: informational, a failure is only reported.
    PostRollout,
    /// Polled while progressing: a 2xx answer rolls back at once.
    Rollback,
}

/// The fast guard: between checks, evaluate the built-in gates often over a short window and
/// roll back as soon as one is breached with enough requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FastGuard {
    /// Time between two evaluations.
    #[serde(
        serialize_with = "crate::report::ser_duration_ms",
        rename = "period_ms"
    )]
    pub period: Duration,
    /// The window each evaluation looks at.
    #[serde(
        serialize_with = "crate::report::ser_duration_ms",
        rename = "window_ms"
    )]
    pub window: Duration,
}

/// A canary spec that cannot be used; nothing has been changed.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The path.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML does not parse or a field has the wrong type.
    #[error("{0}")]
    Yaml(Finding),
    /// The document parses but describes an impossible or unsupported canary; every problem
    /// found is listed, each naming its field and the fix.
    #[error("{}", Refusal(.0))]
    Invalid(Findings),
}

struct Refusal<'a>(&'a Findings);

impl fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.0.len();
        writeln!(
            f,
            "the canary spec is refused ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        write!(f, "{}", self.0)
    }
}

impl SpecError {
    /// Every finding: one for a YAML error, all of them for an invalid spec.
    pub fn findings(&self) -> Vec<&Finding> {
        match self {
            SpecError::Io { .. } => Vec::new(),
            SpecError::Yaml(f) => vec![f],
            SpecError::Invalid(all) => all.0.iter().collect(),
        }
    }
}

// === raw YAML mirror ===

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCanary {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: RawMetadata,
    #[serde(default)]
    spec: RawSpec,
}

#[derive(Default, Deserialize)]
struct RawMetadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    target_ref: Option<RawName>,
    #[serde(default)]
    service: Option<RawName>,
    #[serde(default)]
    analysis: Option<RawAnalysis>,
    #[serde(default)]
    weir: RawWeir,
}

#[derive(Default, Deserialize)]
struct RawName {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawAnalysis {
    interval: Option<String>,
    threshold: Option<u32>,
    max_weight: Option<u32>,
    step_weight: Option<u32>,
    step_weights: Option<Vec<u32>>,
    iterations: Option<u32>,
    #[serde(rename = "match")]
    matches: Option<Vec<RawMatch>>,
    #[serde(default)]
    metrics: Vec<RawMetric>,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
    // Flagger fields weir refuses with a reason rather than ignore.
    mirror: Option<bool>,
    mirror_weight: Option<u32>,
    step_weight_promotion: Option<u32>,
    session_affinity: Option<IgnoredAny>,
    // Flagger fields about Kubernetes workloads and alerting: nothing for weir to do.
    #[allow(dead_code)]
    alerts: Option<IgnoredAny>,
    #[allow(dead_code)]
    primary_ready_threshold: Option<IgnoredAny>,
    #[allow(dead_code)]
    canary_ready_threshold: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    headers: BTreeMap<String, RawStringMatch>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStringMatch {
    exact: Option<String>,
    prefix: Option<String>,
    regex: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawMetric {
    #[serde(default)]
    name: String,
    interval: Option<String>,
    threshold_range: Option<RawRange>,
    /// Flagger's older single-number form.
    threshold: Option<f64>,
    query: Option<String>,
    template_ref: Option<IgnoredAny>,
    template_variables: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    min: Option<f64>,
    max: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawWebhook {
    #[serde(default)]
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    url: String,
    timeout: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[allow(dead_code)]
    mute_alert: Option<IgnoredAny>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawWeir {
    virtual_service: Option<String>,
    rule: Option<String>,
    stable_subset: Option<String>,
    canary_subset: Option<String>,
    stable_version: Option<String>,
    canary_version: Option<String>,
    destination_service: Option<String>,
    min_requests: Option<u64>,
    fast_guard: Option<RawFastGuard>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFastGuard {
    period: Option<String>,
    window: Option<String>,
}

// === validation ===

/// Collects every problem with its field path and line, so that one run of `weir canary`
/// lists them all.
struct Problems<'a> {
    doc: &'a weir_router::yaml::Document,
    found: Vec<Finding>,
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

impl CanarySpec {
    /// Reads and validates a spec file.
    pub fn load(path: impl AsRef<Path>) -> Result<CanarySpec, SpecError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
            file: name.clone(),
            source,
        })?;
        Self::from_yaml(&name, &text)
    }

    /// Parses and validates a spec; `file` names it in errors.
    pub fn from_yaml(file: &str, text: &str) -> Result<CanarySpec, SpecError> {
        let doc = weir_router::yaml::single_document(file, text).map_err(SpecError::Yaml)?;
        let raw: RawCanary = doc.deserialize(&mut |_| {}).map_err(SpecError::Yaml)?;
        let mut p = Problems {
            doc: &doc,
            found: Vec::new(),
        };
        let spec = build(raw, &mut p);
        if p.found.is_empty() {
            Ok(spec)
        } else {
            Err(SpecError::Invalid(Findings(p.found)))
        }
    }

    /// The series filter matching this spec's `destinationService`, for building a source.
    pub fn series_filter(&self) -> crate::SeriesFilter {
        crate::SeriesFilter {
            service: self.target.destination_service.clone(),
            labels: BTreeMap::new(),
        }
    }
}

fn build(raw: RawCanary, p: &mut Problems<'_>) -> CanarySpec {
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
    let virtual_service = weir
        .virtual_service
        .or(raw.spec.service.and_then(|s| s.name))
        .or(raw.spec.target_ref.and_then(|t| t.name))
        .unwrap_or_else(|| name.clone());
    let target = Target {
        virtual_service,
        rule: weir.rule,
        stable_version: weir.stable_version.unwrap_or_else(|| stable_subset.clone()),
        canary_version: weir.canary_version.unwrap_or_else(|| canary_subset.clone()),
        stable_subset,
        canary_subset,
        destination_service: weir.destination_service,
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
    let gates = a
        .metrics
        .into_iter()
        .enumerate()
        .filter_map(|(i, m)| gate(i, m, &name, &namespace, &target.virtual_service, p))
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
        },
        plan,
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

fn gate(
    i: usize,
    m: RawMetric,
    name: &str,
    namespace: &str,
    service: &str,
    p: &mut Problems<'_>,
) -> Option<Gate> {
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
            let rendered = render_query(&q, interval, name, namespace, service);
            if rendered.contains("{{") {
                p.add(
                    &format!("{path}.query"),
                    "uses a template variable weir does not know: use {{ interval }}, {{ namespace }}, {{ name }} or {{ service }}",
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

fn render_query(q: &str, interval: Duration, name: &str, namespace: &str, service: &str) -> String {
    let mut out = q.to_string();
    for (var, value) in [
        ("interval", promql_duration(interval)),
        ("namespace", namespace.to_string()),
        ("name", name.to_string()),
        ("target", name.to_string()),
        ("service", service.to_string()),
    ] {
        out = out
            .replace(&format!("{{{{ {var} }}}}"), &value)
            .replace(&format!("{{{{{var}}}}}"), &value);
    }
    out
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

// === impl Gate ===

impl Gate {
    /// Whether `value` is within `[min, max]`.
    pub fn passes(&self, value: f64) -> bool {
        self.min.is_none_or(|m| value >= m) && self.max.is_none_or(|m| value <= m)
    }

    /// Whether the gate reads the built-in request metrics (and so needs `minRequests`).
    pub fn is_builtin(&self) -> bool {
        !matches!(self.metric, Metric::Query(_))
    }
}

impl Analysis {
    /// The webhooks of one kind, in order.
    pub fn hooks(&self, kind: HookKind) -> impl Iterator<Item = &Webhook> {
        self.webhooks.iter().filter(move |w| w.kind == kind)
    }
}

impl HookKind {
    /// Flagger's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::PreRollout => "pre-rollout",
            HookKind::Rollout => "rollout",
            HookKind::ConfirmPromotion => "confirm-promotion",
            HookKind::PostRollout => "post-rollout",
            HookKind::Rollback => "rollback",
        }
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
