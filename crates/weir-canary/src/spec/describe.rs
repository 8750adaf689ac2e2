//! The plan of `weir canary --dry-run`, in words: what a run would do, in order, and the
//! least time a healthy run takes.

use std::fmt::Write as _;

use super::{CanarySpec, HookKind, Metric};
use crate::plan::Stage;

impl CanarySpec {
    /// The plan of `--dry-run`: what the run would do, in order, and the least time it takes.
    pub fn describe_plan(&self) -> String {
        let spec = self;
        let a = &spec.analysis;
        let t = &spec.target;
        let interval = human(a.interval);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "canary {}/{}: VirtualService {}, rule {}, stable {} -> canary {}",
            spec.namespace,
            spec.name,
            t.virtual_service,
            t.rule
                .as_deref()
                .unwrap_or("(first rule with both subsets)"),
            t.stable_subset,
            t.canary_subset
        );
        let _ = writeln!(
            out,
            "dry run: nothing is changed. A real run first moves the live split to {} 100% / {} 0%.",
            t.stable_subset, t.canary_subset
        );
        let _ = writeln!(out, "plan (one check every {interval}):");
        let mut n = 0;
        for stage in spec.plan.stages() {
            n += 1;
            match stage {
                Stage::DarkLaunch { iterations } => {
                    let _ = writeln!(
                        out,
                        "  {n}. dark launch: weight 0%, header-matched requests only, {iterations} passing check{}",
                        if *iterations == 1 { "" } else { "s" }
                    );
                }
                Stage::Weight { canary } => {
                    let _ = writeln!(
                        out,
                        "  {n}. weight {canary}% canary / {}% stable, 1 passing check",
                        100 - canary
                    );
                }
                Stage::Promote => {
                    let _ = writeln!(
                        out,
                        "  {n}. promote: {} becomes the stable subset at 100%",
                        t.canary_subset
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "gates (each needs {} requests in its window):",
            a.min_requests
        );
        if a.gates.is_empty() {
            let _ = writeln!(out, "  none: only webhooks judge the canary");
        }
        for g in &a.gates {
            let what = match &g.metric {
                Metric::RequestSuccessRate => "success rate (%)".to_string(),
                Metric::RequestDuration => "p99 duration (ms)".to_string(),
                Metric::Query(q) => format!("query {q}"),
            };
            let range = match (g.min, g.max) {
                (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
                (Some(lo), None) => format!(">= {lo}"),
                (None, Some(hi)) => format!("<= {hi}"),
                (None, None) => "any".to_string(),
            };
            let _ = writeln!(
                out,
                "  {}: {what} {range} over {}",
                g.name,
                human(g.interval)
            );
        }
        let _ = writeln!(
            out,
            "rollback: after {} failed check{} (counted over the run)",
            a.threshold,
            if a.threshold == 1 { "" } else { "s" }
        );
        match a.fast_guard {
            Some(g) => {
                let _ = writeln!(
                    out,
                    "fast guard: every {} over the last {} (needs {} canary requests to decide)",
                    human(g.period),
                    human(g.window),
                    a.min_requests
                );
            }
            None => {
                let _ = writeln!(out, "fast guard: off (only the interval checks roll back)");
            }
        }
        for kind in [
            HookKind::PreRollout,
            HookKind::Rollout,
            HookKind::ConfirmPromotion,
            HookKind::PostRollout,
            HookKind::Rollback,
        ] {
            let names: Vec<&str> = a.hooks(kind).map(|h| h.name.as_str()).collect();
            if !names.is_empty() {
                let _ = writeln!(out, "webhooks {kind}: {}", names.join(", "));
            }
        }
        let least = spec.min_healthy_duration();
        let checks = least.as_millis() / a.interval.as_millis().max(1);
        let _ = writeln!(
            out,
            "a healthy run takes at least {} ({checks} passing check{} x {interval}), more with webhooks or failed checks",
            human(least),
            if checks == 1 { "" } else { "s" },
        );
        out
    }
}

/// A duration as written in specs: `5m`, `2m30s`, `1h`, `30s`, `1.5s`, `250ms`.
pub(crate) fn human(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    if !ms.is_multiple_of(1_000) {
        return format!("{}s", d.as_secs_f64());
    }
    let s = ms / 1_000;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::human;

    #[test]
    fn durations_read_as_written_in_specs() {
        let rows = [
            (250, "250ms"),
            (1_500, "1.5s"),
            (30_000, "30s"),
            (150_000, "2m30s"),
            (3_600_000, "1h"),
        ];
        for (ms, text) in rows {
            assert_eq!(human(Duration::from_millis(ms)), text);
        }
    }
}
