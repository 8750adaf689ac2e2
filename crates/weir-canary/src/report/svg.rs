//! The report chart, written by hand: canary weight (left axis, %) and canary success rate
//! (right axis, %) over time, with the rollback or the promotion marked.

use std::fmt::Write;

use super::{Outcome, Report};
use crate::event::EventKind;

const W: f64 = 960.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 60.0;

const WEIGHT_COLOR: &str = "#2563eb";
const RATE_COLOR: &str = "#059669";
const ROLLBACK_COLOR: &str = "#dc2626";
const PROMOTE_COLOR: &str = "#16a34a";
const GATE_COLOR: &str = "#d97706";

struct Axes {
    end_ms: f64,
    rate_lo: f64,
}

impl Axes {
    fn x(&self, ms: f64) -> f64 {
        LEFT + (W - LEFT - RIGHT) * (ms / self.end_ms)
    }

    fn y_weight(&self, weight: f64) -> f64 {
        TOP + (H - TOP - BOTTOM) * (1.0 - weight / 100.0)
    }

    fn y_rate(&self, rate: f64) -> f64 {
        let span = 100.0 - self.rate_lo;
        TOP + (H - TOP - BOTTOM) * (1.0 - (rate - self.rate_lo) / span)
    }
}

pub(super) fn render(r: &Report) -> String {
    let end_ms = (r.duration_ms as f64).max(1.0);
    let gate_min = r
        .checks
        .iter()
        .flat_map(|c| &c.gates)
        .find(|g| g.name == "request-success-rate")
        .and_then(|g| g.min);
    let lowest = r
        .samples
        .iter()
        .filter_map(|s| s.success_rate)
        .chain(gate_min)
        .fold(100.0_f64, f64::min);
    // The rate axis starts a little below the lowest value, on a multiple of 5, so that a
    // 99% gate and a 97% canary are visibly apart.
    let rate_lo = (((lowest - 1.0) / 5.0).floor() * 5.0).clamp(0.0, 95.0);
    let ax = Axes { end_ms, rate_lo };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let outcome = match r.outcome {
        Outcome::Promoted => "promoted",
        Outcome::RolledBack => "rolled back",
        Outcome::NotStarted => "not started",
    };
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">canary {}.{}: {} ({})</text>"#,
        esc(&r.name),
        esc(&r.namespace),
        outcome,
        r.phase
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="44" fill="#444">{}</text>"##,
        esc(&cut(&r.reason, 130))
    );

    // Grid and axes.
    for w in [0.0, 25.0, 50.0, 75.0, 100.0] {
        let y = ax.y_weight(w);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e7eb"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="{WEIGHT_COLOR}">{w}%</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
        let rate = rate_lo + (100.0 - rate_lo) * w / 100.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" fill="{RATE_COLOR}">{rate:.1}%</text>"#,
            W - RIGHT + 6.0,
            y + 4.0
        );
    }
    for i in 0..=5 {
        let ms = end_ms * f64::from(i) / 5.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.1}s</text>"#,
            ax.x(ms),
            H - BOTTOM + 18.0,
            ms / 1000.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since start</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - BOTTOM + 38.0
    );

    // The success-rate gate.
    if let Some(min) = gate_min.filter(|m| *m >= rate_lo) {
        let y = ax.y_rate(min);
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{GATE_COLOR}" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" fill="{GATE_COLOR}">gate: success rate &gt;= {min}%</text>"#,
            W - RIGHT,
            LEFT + 6.0,
            y - 4.0
        );
    }

    // Canary weight as a step line through every change in force.
    let mut points = vec![(0.0, 0.0)];
    let mut current = 0.0;
    for e in &r.timeline {
        let w = f64::from(e.canary_weight);
        if w != current {
            points.push((e.at_ms as f64, current));
            points.push((e.at_ms as f64, w));
            current = w;
        }
    }
    points.push((end_ms, current));
    let _ = writeln!(
        s,
        r#"<polyline fill="none" stroke="{WEIGHT_COLOR}" stroke-width="2.5" points="{}"/>"#,
        points
            .iter()
            .map(|(ms, w)| format!("{:.1},{:.1}", ax.x(*ms), ax.y_weight(*w)))
            .collect::<Vec<_>>()
            .join(" ")
    );

    // Success rate of every observation with traffic; checks get a dot.
    let rates: Vec<_> = r
        .samples
        .iter()
        .filter_map(|x| x.success_rate.map(|rate| (x, rate)))
        .collect();
    if !rates.is_empty() {
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{RATE_COLOR}" stroke-width="1.5" points="{}"/>"#,
            rates
                .iter()
                .map(|(x, rate)| format!("{:.1},{:.1}", ax.x(x.at_ms as f64), ax.y_rate(*rate)))
                .collect::<Vec<_>>()
                .join(" ")
        );
        for (x, rate) in rates.iter().filter(|(x, _)| x.by == "check") {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{RATE_COLOR}"/>"#,
                ax.x(x.at_ms as f64),
                ax.y_rate(*rate)
            );
        }
    }

    // The decision.
    if let Some(rb) = &r.rollback {
        let x = ax.x(rb.detected_at_ms as f64);
        let latency = match &rb.error {
            None => format!(
                "rollback: 0% in force {:.1} ms after detection (sink {:.1} ms)",
                rb.detected_to_in_force_us as f64 / 1000.0,
                rb.sink_us.unwrap_or(0) as f64 / 1000.0
            ),
            Some(_) => "rollback FAILED".to_string(),
        };
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="{ROLLBACK_COLOR}" stroke-width="2"/><text x="{:.1}" y="{:.1}" fill="{ROLLBACK_COLOR}" text-anchor="end">{}</text>"#,
            H - BOTTOM,
            x - 6.0,
            TOP + 14.0,
            esc(&latency)
        );
    }
    if let Some(e) = r.timeline.iter().find(|e| e.kind == EventKind::Promoted) {
        let x = ax.x(e.at_ms as f64);
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="{PROMOTE_COLOR}" stroke-width="2"/><text x="{:.1}" y="{:.1}" fill="{PROMOTE_COLOR}" text-anchor="end">promoted: {} is stable</text>"#,
            H - BOTTOM,
            x - 6.0,
            TOP + 14.0,
            esc(&r.target.canary_subset)
        );
    }

    // Legend.
    let has_p99_gate = r
        .checks
        .iter()
        .flat_map(|c| &c.gates)
        .any(|g| g.name == "request-duration");
    let _ = writeln!(
        s,
        r#"<g transform="translate({LEFT},{:.1})"><rect width="14" height="4" y="-4" fill="{WEIGHT_COLOR}"/><text x="20">canary weight (left)</text><rect x="170" width="14" height="4" y="-4" fill="{RATE_COLOR}"/><text x="190">canary success rate (right){}</text></g>"#,
        TOP - 12.0,
        if has_p99_gate {
            "; p99 in report.json"
        } else {
            ""
        }
    );
    s.push_str("</svg>\n");
    s
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn cut(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_string()
    } else {
        let mut out: String = text.chars().take(n - 1).collect();
        out.push('…');
        out
    }
}
