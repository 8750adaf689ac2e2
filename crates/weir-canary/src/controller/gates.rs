//! Judging the canary: one check of every gate (with the rollout hooks) at the end of an
//! interval, and the fast guard's look between checks.

use std::time::Duration;

use super::{Machine, Stop};
use crate::event::EventKind;
use crate::plan::Stage;
use crate::report::{Check, GateResult, Trigger, Verdict};
use crate::source::{MetricSource, Observation};
use crate::spec::{Gate, HookKind, Metric};

impl Machine<'_> {
    /// One fast-guard look at the canary: a built-in gate out of range with at least
    /// `minRequests` requests in the window stops the run.
    pub(super) fn guard_tick(&mut self, window: Duration) -> Result<(), Stop> {
        let spec = self.spec;
        let now = self.clock.now();
        let obs = match self
            .source
            .observe(&spec.target.canary_version, window, now)
        {
            Ok(o) => o,
            Err(e) => {
                // No numbers is not a breach; the interval check counts it as a failure.
                self.emit(
                    EventKind::Warning,
                    format!("fast guard could not read metrics: {e}"),
                );
                return Ok(());
            }
        };
        self.record_sample(now, &obs, "guard");
        self.last = Some(obs.clone());
        let enough = obs.requests >= spec.analysis.min_requests;
        let breach = spec.analysis.gates.iter().filter(|_| enough).find_map(|g| {
            builtin_value(g, &obs)
                .filter(|v| !g.passes(*v))
                .map(|v| (g, v))
        });
        match breach {
            None => {
                self.emit(
                    EventKind::Guard,
                    format!(
                        "fast guard: {} requests in {:.1}s",
                        obs.requests,
                        obs.window.as_secs_f64()
                    ),
                );
                Ok(())
            }
            Some((g, v)) => {
                let reason = format!(
                    "fast guard: {} is {} over the last {:.1}s ({} canary requests, at least minRequests {} needed to judge), {}",
                    g.name,
                    fmt_value(g, v),
                    obs.window.as_secs_f64(),
                    obs.requests,
                    spec.analysis.min_requests,
                    describe_range(g)
                );
                self.emit(EventKind::Breach, reason.clone());
                Err(Stop {
                    trigger: Trigger::FastGuard,
                    detected: now,
                    reason,
                    gate: Some(Box::new(g.clone())),
                })
            }
        }
    }

    /// One check: rollout hooks, then every gate. A failure is counted (and may stop the
    /// run); `Ok(passed)` otherwise.
    pub(super) fn check(&mut self, stage: Stage) -> Result<bool, Stop> {
        let spec = self.spec;
        let hooks_ok = self.run_hooks(HookKind::Rollout);
        let now = self.clock.now();
        let version = spec.target.canary_version.clone();
        let min = spec.analysis.min_requests;
        let mut gates = Vec::new();
        // Gates with the same window share one observation.
        let mut seen: Vec<(Duration, Result<Observation, String>)> = Vec::new();
        let mut observe = |source: &mut dyn MetricSource, window: Duration| {
            if let Some((_, o)) = seen.iter().find(|(w, _)| *w == window) {
                return o.clone();
            }
            let o = source
                .observe(&version, window, now)
                .map_err(|e| e.to_string());
            seen.push((window, o.clone()));
            o
        };
        let builtin: Vec<&Gate> = spec
            .analysis
            .gates
            .iter()
            .filter(|g| g.is_builtin())
            .collect();
        if builtin.is_empty() {
            // No built-in gate: the check still needs traffic on the canary.
            let window = spec.analysis.interval;
            let result = match observe(self.source, window) {
                Err(e) => GateResult::error("request-count", e),
                Ok(o) => GateResult {
                    name: "request-count".into(),
                    value: Some(o.requests as f64),
                    min: Some(min as f64),
                    max: None,
                    requests: Some(o.requests),
                    verdict: if o.requests >= min {
                        Verdict::Pass
                    } else {
                        Verdict::NoData
                    },
                },
            };
            gates.push(result);
        }
        for g in &spec.analysis.gates {
            let result = match &g.metric {
                Metric::Query(q) => match self.source.query(q, now) {
                    Err(e) => GateResult::error(&g.name, e.to_string()),
                    Ok(None) => GateResult::judged(g, None, None),
                    Ok(Some(v)) => GateResult::judged(g, Some(v), None),
                },
                _ => match observe(self.source, g.interval) {
                    Err(e) => GateResult::error(&g.name, e),
                    Ok(o) if o.requests < min => GateResult {
                        verdict: Verdict::NoData,
                        ..GateResult::judged(g, builtin_value(g, &o), Some(o.requests))
                    },
                    Ok(o) => GateResult::judged(g, builtin_value(g, &o), Some(o.requests)),
                },
            };
            gates.push(result);
        }
        // The observation over the longest window stands for the check in progress output.
        if let Some(o) = seen
            .iter()
            .filter_map(|(w, o)| o.as_ref().ok().map(|o| (w, o)))
            .max_by_key(|(w, _)| **w)
            .map(|(_, o)| o.clone())
        {
            self.record_sample(now, &o, "check");
            self.last = Some(o);
        }
        let passed = hooks_ok && gates.iter().all(|g| g.verdict == Verdict::Pass);
        // The spec's gates out of range (the traffic check of a spec without built-ins is
        // first in `gates` and no gate of the spec's).
        let offset = gates.len() - spec.analysis.gates.len();
        let gates_failed: Vec<bool> = gates[offset..]
            .iter()
            .map(|g| g.verdict == Verdict::Fail)
            .collect();
        let summary = summarize(hooks_ok, &gates, min);
        self.report.checks.push(Check {
            at_ms: self.ms(now),
            stage,
            canary_weight: self.canary_weight,
            hooks_ok,
            gates,
            passed,
            failed_checks: self.failed_checks + u32::from(!passed),
        });
        if passed {
            self.emit(EventKind::Check, format!("check passed: {summary}"));
            return Ok(true);
        }
        // Counted before the line is printed: the line's "failed checks n/t" includes it.
        self.failed_checks += 1;
        self.failed_gate = spec
            .analysis
            .gates
            .iter()
            .zip(gates_failed)
            .find(|(_, failed)| *failed)
            .map(|(g, _)| g.clone());
        self.emit(EventKind::Check, format!("check failed: {summary}"));
        self.over_threshold(&format!("check failed: {summary}"))?;
        Ok(false)
    }
}

/// The value a built-in gate reads from an observation.
fn builtin_value(g: &Gate, o: &Observation) -> Option<f64> {
    match g.metric {
        Metric::RequestSuccessRate => o.success_rate,
        Metric::RequestDuration => o.p99_ms,
        Metric::Query(_) => None,
    }
}

fn fmt_value(g: &Gate, v: f64) -> String {
    match g.metric {
        Metric::RequestSuccessRate => format!("{v:.2}%"),
        Metric::RequestDuration => format!("{v:.1} ms"),
        Metric::Query(_) => format!("{v}"),
    }
}

fn describe_range(g: &Gate) -> String {
    match (g.min, g.max) {
        (Some(lo), Some(hi)) => format!("allowed {lo} to {hi}"),
        (Some(lo), None) => format!("min {lo}"),
        (None, Some(hi)) => format!("max {hi}"),
        (None, None) => "no range".into(),
    }
}

fn summarize(hooks_ok: bool, gates: &[GateResult], min: u64) -> String {
    let mut parts: Vec<String> = gates
        .iter()
        .map(|g| match (&g.verdict, g.value) {
            (Verdict::Error(e), _) => format!("{} unreadable ({e})", g.name),
            (Verdict::NoData, _) => format!(
                "{} no data ({} requests, {} needed)",
                g.name,
                g.requests.map_or("?".into(), |r| r.to_string()),
                min
            ),
            (v, Some(value)) => format!(
                "{} {:.2} {}",
                g.name,
                value,
                if *v == Verdict::Pass {
                    "ok"
                } else {
                    "OUT OF RANGE"
                }
            ),
            (v, None) => format!("{} {:?}", g.name, v),
        })
        .collect();
    if !hooks_ok {
        parts.insert(0, "a rollout webhook failed".into());
    }
    parts.join(", ")
}
