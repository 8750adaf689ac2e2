//! What a run leaves behind: `report.json` (the timeline, every check's values, the decision,
//! the rollback latency) and `report.svg` (canary weight and success rate over time).

use serde::Serialize;
use std::path::Path;

use crate::event::{Event, Phase};
use crate::plan::Stage;
use crate::spec::{CanarySpec, Gate, HookKind, Target};
use crate::units::human_micros;

mod svg;

/// The record of one canary run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The canary's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The route and subsets moved.
    pub target: Target,
    /// The weights of the plan's stages, in order.
    pub plan: Vec<Stage>,
    /// The spec's metric gates, thresholds included (the chart draws the success-rate gate
    /// even when no check ran).
    pub gates: Vec<Gate>,
    /// The final phase: `Succeeded` or `Failed`.
    pub phase: Phase,
    /// How the run ended (`decision` in `report.json`).
    #[serde(rename = "decision")]
    pub outcome: Outcome,
    /// Why, in one sentence.
    pub reason: String,
    /// Length of the run, in ms.
    pub duration_ms: u64,
    /// Every event but the fast guard's ticks, in order.
    pub timeline: Vec<Event>,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// Every observation of the canary (guard ticks and checks), for the chart.
    pub samples: Vec<Sample>,
    /// Every webhook call.
    pub hooks: Vec<HookResult>,
    /// How the rollback went, if there was one.
    pub rollback: Option<RollbackLatency>,
    /// How long the sink took to promote, in µs, if it did.
    pub promotion_took_us: Option<u64>,
    /// Checks not counted because their window saw other weights than the step's (a sidecar
    /// restarted, another writer): the timeline says which.
    pub uncounted_checks: u32,
}

/// The end of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The canary is the stable subset at 100%.
    Promoted,
    /// The canary was sent back to 0%.
    RolledBack,
    /// Refused before any weight changed.
    NotStarted,
}

/// What set off a rollback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// The fast guard saw a gate breached between checks.
    FastGuard,
    /// Failed checks reached the threshold.
    Threshold,
    /// A rollback webhook answered 2xx.
    RollbackWebhook,
    /// The run was aborted.
    Aborted,
    /// A sink refused or failed a change.
    SinkError,
    /// The run could not start (nothing was changed).
    Refused,
    /// Someone rolled the canary back by hand (`weir rollback`): a rollback latch holds it.
    ManualRollback,
    /// The weights in force drifted from the step's (a restart without its state, another
    /// writer) and could not be put back.
    Drift,
}

impl Trigger {
    /// What set a rollback off, for humans: `the fast guard`, `a manual rollback ...`.
    pub fn describe(self) -> &'static str {
        match self {
            Trigger::FastGuard => "the fast guard",
            Trigger::Threshold => "failed checks reaching the threshold",
            Trigger::RollbackWebhook => "a rollback webhook",
            Trigger::Aborted => "an abort",
            Trigger::SinkError => "a weight sink error",
            Trigger::Refused => "a refusal",
            Trigger::ManualRollback => "a manual rollback (weir rollback)",
            Trigger::Drift => "weights in force that drifted and could not be put back",
        }
    }
}

/// One check of the gates.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// When, in ms since the start.
    pub at_ms: u64,
    /// The stage it judged.
    pub stage: Stage,
    /// The canary's weight, in points of 100.
    pub canary_weight: u32,
    /// Whether every rollout webhook answered 2xx.
    pub hooks_ok: bool,
    /// Every gate's value and verdict.
    pub gates: Vec<GateResult>,
    /// Whether the check passed.
    pub passed: bool,
    /// Failed checks counted after this one.
    pub failed_checks: u32,
}

/// One gate's value in one check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateResult {
    /// The metric's name (`request-count` for the traffic check of a spec without built-ins).
    pub name: String,
    /// The value read (% for success rate, ms for duration).
    pub value: Option<f64>,
    /// The lowest passing value.
    pub min: Option<f64>,
    /// The highest passing value.
    pub max: Option<f64>,
    /// Requests in the gate's window, for the built-in gates.
    pub requests: Option<u64>,
    /// The verdict.
    pub verdict: Verdict,
}

/// A gate's verdict. Only `Pass` passes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Within range, with enough requests.
    Pass,
    /// Out of range.
    Fail,
    /// Fewer requests than `minRequests`, or no value: never a pass.
    NoData,
    /// The value could not be read.
    Error(String),
}

/// One webhook call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HookResult {
    /// When, in ms since the start.
    pub at_ms: u64,
    /// The hook's name.
    pub name: String,
    /// Its type.
    pub kind: HookKind,
    /// The HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it did not answer.
    pub error: Option<String>,
    /// Whether it answered 2xx.
    pub ok: bool,
}

/// One observation of the canary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// When, in ms since the start.
    pub at_ms: u64,
    /// `guard` or `check`.
    pub by: &'static str,
    /// The canary's weight then, in points of 100.
    pub canary_weight: u32,
    /// Requests in the window.
    pub requests: u64,
    /// Success rate in %.
    pub success_rate: Option<f64>,
    /// p99 in ms.
    pub p99_ms: Option<f64>,
}

/// The rollback, timed: first failing response the sidecars counted -> breach detected -> 0%
/// in force (sink confirmed on every replica) -> first request seen on the stable subset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RollbackLatency {
    /// What set it off.
    pub trigger: Trigger,
    /// Which rule fired: the gate the fast guard or the failed checks judged out of range
    /// (`request-success-rate`, `request-duration`, a custom metric's name), when a gate did.
    pub gate: Option<String>,
    /// The guard's sensitivity: the canary requests a window needs before a gate may fail.
    pub min_requests: u64,
    /// Why, in one sentence.
    pub reason: String,
    /// When the sidecars counted the canary's first failing response under the weights in
    /// force (the first 5xx for the success rate, the first response over the gate for the
    /// duration), in ms since the start (negative: before it); `None` when the source cannot
    /// tell (Prometheus, a custom metric) or the trigger was no gate.
    pub first_failure_at_ms: Option<i64>,
    /// First failing response to detection, in µs.
    pub first_failure_to_detected_us: Option<u64>,
    /// First failing response to 0% in force on every replica, in µs: the rollback SLA.
    pub first_failure_to_in_force_us: Option<u64>,
    /// When the breach was detected, in ms since the start.
    pub detected_at_ms: u64,
    /// When the sink confirmed 0%, in ms since the start.
    pub in_force_at_ms: u64,
    /// Detection to confirmed 0%, in µs: the rollback SLA.
    pub detected_to_in_force_us: u64,
    /// The sink's own time for the rollback call, in µs.
    pub sink_us: Option<u64>,
    /// Confirmed 0% to the first new request counted on the stable subset, in µs, when the
    /// metric source can tell (scraped or in-process metrics; not Prometheus).
    pub stable_seen_after_us: Option<u64>,
    /// Rollback calls made (retried on failure).
    pub attempts: u32,
    /// Set when every attempt failed: the canary may still get traffic.
    pub error: Option<String>,
}

impl RollbackLatency {
    /// One line on the rollback's timing, the SLA weir owns (`stable`: the stable subset's
    /// name, for the first request seen on it).
    pub fn describe(&self, stable: &str) -> String {
        if let Some(err) = &self.error {
            return format!("rollback: {err}");
        }
        let seen = match self.stable_seen_after_us {
            Some(us) => format!(", first request on {stable} {} later", human_micros(us)),
            None => String::new(),
        };
        let rule = match &self.gate {
            Some(gate) => format!(
                " on {gate} (at least minRequests {} canary requests in a window)",
                self.min_requests
            ),
            None => String::new(),
        };
        let from_failure = match (
            self.first_failure_to_detected_us,
            self.first_failure_to_in_force_us,
        ) {
            (Some(detected), Some(in_force)) => format!(
                "; from the first failed request the sidecars counted: detected after {}, 0% in force on every replica after {}",
                human_micros(detected),
                human_micros(in_force)
            ),
            _ => "; the first failed request's time is unknown (no sidecar timestamp from this metric source)".to_string(),
        };
        format!(
            "rollback set off by {}{rule}: canary at 0% in force {} after detection (sink {}){seen}{from_failure}",
            self.trigger.describe(),
            human_micros(self.detected_to_in_force_us),
            self.sink_us.map_or_else(|| "n/a".to_string(), human_micros),
        )
    }
}

/// A report file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing the report to {path}: {source}")]
pub struct ReportError {
    /// The file.
    pub path: String,
    /// Why.
    pub source: std::io::Error,
}

// === impl Report ===

impl Report {
    pub(crate) fn new(spec: &CanarySpec) -> Report {
        Report {
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            target: spec.target.clone(),
            plan: spec.plan.stages().to_vec(),
            gates: spec.analysis.gates.clone(),
            phase: Phase::Initialized,
            outcome: Outcome::NotStarted,
            reason: String::new(),
            duration_ms: 0,
            timeline: Vec::new(),
            checks: Vec::new(),
            samples: Vec::new(),
            hooks: Vec::new(),
            rollback: None,
            promotion_took_us: None,
            uncounted_checks: 0,
        }
    }

    /// Whether the canary was promoted.
    pub fn succeeded(&self) -> bool {
        self.phase == Phase::Succeeded
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes")
    }

    /// The chart of canary weight and success rate over time, as an SVG document.
    pub fn to_svg(&self) -> String {
        svg::render(self)
    }

    /// The boxes `[x0, y0, x1, y1]` (SVG units) of every label of [`Report::to_svg`]'s chart,
    /// as the renderer placed them: no two overlap.
    pub fn chart_label_boxes(&self) -> Vec<[f64; 4]> {
        svg::layout(self)
            .1
            .into_iter()
            .map(|b| [b.x0, b.y0, b.x1, b.y1])
            .collect()
    }

    /// Writes `report.json` and `report.svg` into `dir`, creating it if needed.
    pub fn write_to(&self, dir: impl AsRef<Path>) -> Result<(), ReportError> {
        let dir = dir.as_ref();
        let fail = |path: &Path| {
            let path = path.display().to_string();
            move |source| ReportError { path, source }
        };
        std::fs::create_dir_all(dir).map_err(fail(dir))?;
        let json = dir.join("report.json");
        std::fs::write(&json, self.to_json()).map_err(fail(&json))?;
        let svg = dir.join("report.svg");
        std::fs::write(&svg, self.to_svg()).map_err(fail(&svg))
    }
}

impl GateResult {
    pub(crate) fn error(name: &str, error: String) -> GateResult {
        GateResult {
            name: name.to_string(),
            value: None,
            min: None,
            max: None,
            requests: None,
            verdict: Verdict::Error(error),
        }
    }

    pub(crate) fn judged(gate: &Gate, value: Option<f64>, requests: Option<u64>) -> GateResult {
        let verdict = match value {
            None => Verdict::NoData,
            Some(v) if gate.passes(v) => Verdict::Pass,
            Some(_) => Verdict::Fail,
        };
        GateResult {
            name: gate.name.clone(),
            value,
            min: gate.min,
            max: gate.max,
            requests,
            verdict,
        }
    }
}
