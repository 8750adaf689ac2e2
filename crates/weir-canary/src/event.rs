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

impl Event {
    /// One status line for a progress display: `[########------------]  30%  step 2/5
    /// Progressing  success 99.80%  p99 12.0 ms  requests 840  failed checks 0/2`, the step
    /// counted in the plan's canary `weights`.
    pub fn status_bar(&self, weights: &[u32]) -> String {
        let e = self;
        let stages = weights.len();
        const WIDTH: usize = 20;
        let filled = (e.canary_weight.min(100) as usize * WIDTH).div_ceil(100);
        let step = weights
            .iter()
            .position(|w| *w == e.canary_weight)
            .map_or_else(
                || {
                    if e.canary_weight >= 100 {
                        format!("{}/{}", stages, stages)
                    } else {
                        format!("0/{}", stages)
                    }
                },
                |i| format!("{}/{}", i + 1, stages),
            );
        format!(
            "[{}{}] {:>3}%  step {step}  {}  success {}  p99 {}  requests {}  failed checks {}/{}",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            e.canary_weight,
            e.phase,
            e.success_rate
                .map_or_else(|| "n/a".to_string(), |r| format!("{r:.2}%")),
            e.p99_ms
                .map_or_else(|| "n/a".to_string(), |p| format!("{p:.1} ms")),
            e.requests
                .map_or_else(|| "n/a".to_string(), |r| r.to_string()),
            e.failed_checks,
            e.threshold,
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_bar_counts_the_step_in_the_plan() {
        let event = Event {
            at_ms: 0,
            kind: EventKind::Check,
            phase: Phase::Progressing,
            canary_weight: 30,
            failed_checks: 1,
            threshold: 2,
            requests: Some(840),
            success_rate: Some(99.8),
            p99_ms: None,
            message: String::new(),
        };
        let bar = event.status_bar(&[10, 30, 50]);
        assert!(
            bar.starts_with("[######--------------]  30%  step 2/3  "),
            "{bar}"
        );
        assert!(
            bar.contains("success 99.80%  p99 n/a  requests 840  failed checks 1/2"),
            "{bar}"
        );
        let promoted = Event {
            canary_weight: 100,
            ..event
        };
        assert!(promoted.status_bar(&[10, 30, 50]).contains("step 3/3"));
    }
}
