//! The `Canary` document: Flagger's shape plus weir's own settings, validated up front.
//!
//! The public, validated types live here; `spec/raw.rs` mirrors the YAML for serde and
//! `spec/build.rs` turns it into a [`CanarySpec`], collecting every problem instead of
//! stopping at the first.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use weir_router::{Finding, Findings};

use crate::exposition::SeriesFilter;
use crate::plan::Plan;

mod build;
mod describe;
mod raw;

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
///     expectedRps: 50                  # requests/s the route receives (stable + canary), optional:
///                                      # with it, `weir canary --check` warns when a step's share
///                                      # cannot reach minRequests in a gate's window
///     allowOddThresholds: false        # true accepts a success-rate min below 1 (%) and a
///                                      # request-duration max below 1 (ms), refused otherwise
/// ```
///
/// Flagger's webhook types `pre-rollout`, `rollout`, `confirm-promotion`, `post-rollout` and
/// `rollback` are supported with Flagger's semantics; custom query templates may use
/// `{{ interval }}` (the metric's interval as written, `1m` by default), `{{ namespace }}`,
/// `{{ name }}`, `{{ target }}` (`spec.targetRef.name`) and `{{ service }}`, filled in as
/// Flagger fills them.
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
    /// What the lint found that does not refuse the spec (e.g. a `minRequests` the expected
    /// traffic cannot reach); printed by `weir canary --check` and at the start of a run.
    pub warnings: Findings,
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
    /// The canary's workload, Flagger's `target`: `spec.targetRef.name` (the Deployment whose
    /// pods serve the canary subset), else `metadata.name`. Flagger's built-in queries select
    /// `destination_workload=~"<workload>"`.
    pub workload: String,
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
    /// `spec.weir.expectedRps`: the requests per second the route receives in total, if the
    /// spec says; only the lint reads it.
    pub expected_rps: Option<f64>,
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
        serialize_with = "crate::units::ser_duration_ms",
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
        serialize_with = "crate::units::ser_duration_ms",
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
    #[serde(serialize_with = "crate::units::ser_duration_ms", rename = "period_ms")]
    pub period: Duration,
    /// The window each evaluation looks at.
    #[serde(serialize_with = "crate::units::ser_duration_ms", rename = "window_ms")]
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
        let raw: raw::RawCanary = doc.deserialize(&mut |_| {}).map_err(SpecError::Yaml)?;
        build::build(raw, &doc).map_err(SpecError::Invalid)
    }

    /// The least time a healthy run takes: one analysis interval per dark-launch iteration
    /// and per weight step (each needs one passing check after a full interval), before
    /// promotion. Webhooks and failed checks only add to it.
    pub fn min_healthy_duration(&self) -> Duration {
        let checks: u32 = self
            .plan
            .stages()
            .iter()
            .map(|s| match s {
                crate::plan::Stage::DarkLaunch { iterations } => *iterations,
                crate::plan::Stage::Weight { .. } => 1,
                crate::plan::Stage::Promote => 0,
            })
            .sum();
        self.analysis.interval * checks
    }

    /// The series filter matching this spec's `destinationService`, for building a source.
    pub fn series_filter(&self) -> SeriesFilter {
        SeriesFilter {
            service: self.target.destination_service.clone(),
            labels: BTreeMap::new(),
        }
    }
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
