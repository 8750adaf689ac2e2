//! What a run reports as it goes: Flagger's [`Phase`]s and the [`Event`]s of the timeline.
//!
//! Vocabulary shared by the controller (which emits events), the report (which keeps them) and
//! the webhooks (which send the phase), so it depends on none of them.

use std::fmt;

use serde::Serialize;

/// Flagger's canary phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Phase {
    /// The canary is at 0% and nothing has been judged yet.
    Initialized,
    /// Pre-rollout hooks, dark launch and weight stages.
    Progressing,
    /// Every stage passed; confirm-promotion hooks have not all answered 2xx yet.
    WaitingPromotion,
    /// The canary is being made the stable subset.
    Promoting,
    /// Promoted.
    Succeeded,
    /// Rolled back (or never started).
    Failed,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What an [`Event`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The phase changed.
    Phase,
    /// The sink confirmed new weights.
    Weights,
    /// A webhook was called.
    Webhook,
    /// A check ran (its values are in the event).
    Check,
    /// The fast guard looked at the canary (its values are in the event). Not kept in the
    /// report's timeline (the samples hold them): one a second would drown the rest.
    Guard,
    /// Something went wrong that rolls back: a breach, the threshold, a hook, a refusal.
    Breach,
    /// The sink confirmed the canary at 0%.
    RolledBack,
    /// The sink confirmed the promotion.
    Promoted,
    /// Something failed that does not stop the run (a post-rollout hook, a metric read).
    Warning,
    /// The set of replicas the sink reaches changed (a pod of the headless Service came or
    /// went).
    Replicas,
}

/// A progress report, one per thing that happened; the CLI prints a line (or moves a bar) per
/// event, and the report keeps them as its timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// Time since the run started, in ms.
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The phase after it happened.
    pub phase: Phase,
    /// The canary's weight in force, in weight points of 100.
    pub canary_weight: u32,
    /// Failed checks so far.
    pub failed_checks: u32,
    /// The threshold they are counted against.
    pub threshold: u32,
    /// Requests in the latest observation of the canary.
    pub requests: Option<u64>,
    /// The canary's success rate in the latest observation, in %.
    pub success_rate: Option<f64>,
    /// The canary's p99 in the latest observation, in ms.
    pub p99_ms: Option<f64>,
    /// What happened, for humans.
    pub message: String,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:>8.1}s] {:<16} canary {:>3}%",
            self.at_ms as f64 / 1000.0,
            self.phase.to_string(),
            self.canary_weight
        )?;
        match self.success_rate {
            Some(r) => write!(f, "  success {r:>6.2}%")?,
            None => write!(f, "  success    n/a ")?,
        }
        match self.p99_ms {
            Some(p) => write!(f, "  p99 {p:>8.1} ms")?,
            None => write!(f, "  p99      n/a   ")?,
        }
        write!(
            f,
            "  requests {:>6}  failed checks {}/{}  {}",
            self.requests.map_or("n/a".to_string(), |r| r.to_string()),
            self.failed_checks,
            self.threshold,
            self.message
        )
    }
}
