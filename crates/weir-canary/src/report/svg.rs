//! The report chart, written by hand so that an SRE cannot misread it:
//!
//! - one vertical scale, 0 to 100 on both sides, the same in every run: canary weight in %
//!   (left, blue) and canary success rate in % (right, green), so the gate line sits at the same
//!   height in every report;
//! - the success-rate gate as a dashed, labelled line;
//! - the weight as a step line, each step labelled with its weight (a 1% step is invisible at
//!   this scale, its label is not), reaching 100 on promotion and 0 on rollback;
//! - markers for the fault's start (the first failing response the sidecars counted, when
//!   the metric source can tell), detection, 0% in force, promotion and sidecar restarts or
//!   other drifts of the weights in force; the dark-launch phase and the windows of failed,
//!   no-data and uncounted checks shaded;
//! - every label placed by [`Labels`], which moves a label until its box meets no other.

use std::fmt::Write;

use super::{Outcome, Report, Verdict};
use crate::event::EventKind;
use crate::plan::Stage;
use crate::spec::Metric;

const W: f64 = 960.0;
const H: f64 = 500.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 64.0;
const TOP: f64 = 112.0;
const BOTTOM: f64 = 56.0;

/// Width of one character of 12 px sans-serif, on the generous side (DejaVu Sans averages
/// about 6.6 px), and the height of a line: what label boxes are computed with.
pub(super) const CHAR_W: f64 = 7.0;
const LINE_H: f64 = 15.0;

const WEIGHT_COLOR: &str = "#1d4ed8";
const RATE_COLOR: &str = "#047857";
const ROLLBACK_COLOR: &str = "#b91c1c";
const DETECT_COLOR: &str = "#c2410c";
const PROMOTE_COLOR: &str = "#111827";
const GATE_COLOR: &str = "#b45309";
const DARK_FILL: &str = "#ede9fe";
const FAILED_FILL: &str = "#fecaca";
const NODATA_FILL: &str = "#e5e7eb";
const UNCOUNTED_FILL: &str = "#fef3c7";
const FAULT_COLOR: &str = "#9d174d";
const DRIFT_COLOR: &str = "#6b21a8";

struct Axes {
    end_ms: f64,
}

impl Axes {
    fn x(&self, ms: f64) -> f64 {
        LEFT + (W - LEFT - RIGHT) * (ms / self.end_ms)
    }

    /// Both series are percentages on the same fixed 0..100 scale.
    fn y(&self, percent: f64) -> f64 {
        TOP + (H - TOP - BOTTOM) * (1.0 - percent.clamp(0.0, 100.0) / 100.0)
    }
}

/// A label's box: `x0 <= x1`, `y0 <= y1`, in SVG units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct LabelBox {
    pub(super) x0: f64,
    pub(super) y0: f64,
    pub(super) x1: f64,
    pub(super) y1: f64,
}

impl LabelBox {
    /// The box of `text` drawn at (x, baseline y) with `anchor` (`start`, `middle`, `end`) in
    /// a font of `size` px.
    pub(super) fn of(x: f64, y: f64, anchor: &str, text: &str, size: f64) -> LabelBox {
        let w = text.chars().count() as f64 * CHAR_W * size / 12.0;
        let x0 = match anchor {
            "end" => x - w,
            "middle" => x - w / 2.0,
            _ => x,
        };
        LabelBox {
            x0,
            y0: y - size * 0.85,
            x1: x0 + w,
            y1: y + size * 0.25,
        }
    }

    pub(super) fn overlaps(&self, o: &LabelBox) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }
}

/// Every label of the chart, placed so that no two boxes meet.
#[derive(Default)]
pub(super) struct Labels {
    pub(super) boxes: Vec<LabelBox>,
    svg: String,
}

impl Labels {
    /// Places `text` at (x, y), or moved by `step` px vertically (down first when `step` is
    /// positive), as little as needed to meet no other label; `y` stays within `[lo, hi]`.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        x: f64,
        y: f64,
        anchor: &str,
        text: &str,
        attrs: &str,
        step: f64,
        (lo, hi): (f64, f64),
    ) -> f64 {
        let mut chosen = None;
        for i in 0..60 {
            // 0, +1, -1, +2, -2, ... steps, preferring the direction of `step`.
            let k = f64::from((i + 1) / 2) * if i % 2 == 1 { 1.0 } else { -1.0 };
            let cand = y + k * step;
            if cand < lo || cand > hi {
                continue;
            }
            let b = LabelBox::of(x, cand, anchor, text, 12.0);
            if !self.boxes.iter().any(|o| o.overlaps(&b)) {
                chosen = Some((cand, b));
                break;
            }
        }
        // Nowhere free within the bounds: below everything else (never on top of another).
        let (y, b) = chosen.unwrap_or_else(|| {
            let below = self.boxes.iter().map(|b| b.y1).fold(y, f64::max) + LINE_H;
            (below, LabelBox::of(x, below, anchor, text, 12.0))
        });
        self.boxes.push(b);
        let _ = writeln!(
            self.svg,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" {attrs}>{}</text>"#,
            esc(text)
        );
        y
    }

    /// A label that stays where it is; the chart is laid out so that these never meet.
    fn fixed(&mut self, x: f64, y: f64, anchor: &str, text: &str, attrs: &str) {
        self.place(x, y, anchor, text, attrs, LINE_H, (y, y));
    }
}

/// The chart and the boxes of its labels.
pub(super) fn render(r: &Report) -> String {
    layout(r).0
}

pub(super) fn layout(r: &Report) -> (String, Vec<LabelBox>) {
    let run_ms = (r.duration_ms as f64).max(1.0);
    // Room after the end, so that the weight in force at the end (100 after a promotion, 0
    // after a rollback) is a visible segment, not a cliff at the frame.
    let end_ms = run_ms * 1.08;
    let ax = Axes { end_ms };
    let (x_lo, x_hi) = (LEFT, W - RIGHT);
    let (y_top, y_bottom) = (TOP, H - BOTTOM);
    let mut s = String::new();
    let mut labels = Labels::default();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);

    // Title and reason.
    let outcome = match r.outcome {
        Outcome::Promoted => "promoted",
        Outcome::RolledBack => "rolled back",
        Outcome::NotStarted => "not started",
    };
    let title = format!(
        "canary {}.{}: {} ({})",
        r.name, r.namespace, outcome, r.phase
    );
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        esc(&title)
    );
    labels
        .boxes
        .push(LabelBox::of(LEFT, 24.0, "start", &title, 16.0));
    let reason = cut(&r.reason, ((W - 2.0 * LEFT) / CHAR_W) as usize);
    labels.fixed(LEFT, 44.0, "start", &reason, r##"fill="#374151""##);

    // Shading under everything else: the dark launch, then failed and no-data checks.
    let dark = dark_launch_span(r);
    let shades = check_shades(r);
    if let Some((from, to)) = dark {
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{y_top}" width="{:.1}" height="{:.1}" fill="{DARK_FILL}"/>"#,
            ax.x(from),
            (ax.x(to) - ax.x(from)).max(1.0),
            y_bottom - y_top
        );
    }
    let uncounted = uncounted_windows(r);
    for (from, to) in &uncounted {
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{y_top}" width="{:.1}" height="{:.1}" fill="{UNCOUNTED_FILL}"/>"#,
            ax.x(*from),
            (ax.x(*to) - ax.x(*from)).max(2.0),
            y_bottom - y_top
        );
    }
    for (from, to, failed) in &shades {
        let fill = if *failed { FAILED_FILL } else { NODATA_FILL };
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{y_top}" width="{:.1}" height="{:.1}" fill="{fill}" fill-opacity="0.8"/>"#,
            ax.x(*from),
            (ax.x(*to) - ax.x(*from)).max(2.0),
            y_bottom - y_top
        );
    }

    // Legend: one row of swatches, only for what is drawn.
    let mut legend: Vec<(String, String)> = vec![
        (
            format!(r#"<rect width="16" height="3" y="-5" fill="{WEIGHT_COLOR}"/>"#),
            "canary weight % (left)".into(),
        ),
        (
            format!(r#"<rect width="16" height="2" y="-5" fill="{RATE_COLOR}"/>"#),
            "canary success rate % (right)".into(),
        ),
    ];
    let gate_min = r
        .gates
        .iter()
        .find(|g| g.metric == Metric::RequestSuccessRate)
        .and_then(|g| g.min);
    if gate_min.is_some() {
        legend.push((
            format!(
                r#"<line x1="0" x2="16" y1="-4" y2="-4" stroke="{GATE_COLOR}" stroke-width="1.5" stroke-dasharray="4 3"/>"#
            ),
            "gate".into(),
        ));
    }
    if dark.is_some() {
        legend.push((
            format!(r#"<rect width="12" height="12" y="-10" fill="{DARK_FILL}"/>"#),
            "dark launch (header traffic only)".into(),
        ));
    }
    if shades.iter().any(|(_, _, failed)| *failed) {
        legend.push((
            format!(r#"<rect width="12" height="12" y="-10" fill="{FAILED_FILL}"/>"#),
            "failed check".into(),
        ));
    }
    if !uncounted.is_empty() {
        legend.push((
            format!(r#"<rect width="12" height="12" y="-10" fill="{UNCOUNTED_FILL}"/>"#),
            "window not counted".into(),
        ));
    }
    if shades.iter().any(|(_, _, failed)| !*failed) {
        legend.push((
            format!(r#"<rect width="12" height="12" y="-10" fill="{NODATA_FILL}"/>"#),
            "no-data check".into(),
        ));
    }
    let mut lx = LEFT;
    let mut ly = 70.0;
    for (swatch, text) in &legend {
        let w = 22.0 + text.chars().count() as f64 * CHAR_W + 18.0;
        if lx + w > W - RIGHT {
            lx = LEFT;
            ly += LINE_H + 3.0;
        }
        let _ = writeln!(
            s,
            r#"<g transform="translate({lx:.1},{ly:.1})">{swatch}</g>"#
        );
        labels.fixed(lx + 22.0, ly, "start", text, "");
        lx += w;
    }

    // Frame, grid and the two 0..100 axes.
    for p in [0.0, 25.0, 50.0, 75.0, 100.0] {
        let y = ax.y(p);
        let _ = writeln!(
            s,
            r##"<line x1="{x_lo}" y1="{y:.1}" x2="{x_hi}" y2="{y:.1}" stroke="#d1d5db" stroke-width="{}"/>"##,
            if p == 0.0 { 1.5 } else { 0.8 }
        );
        labels.fixed(
            x_lo - 6.0,
            y + 4.0,
            "end",
            &format!("{p}%"),
            &format!(r#"fill="{WEIGHT_COLOR}""#),
        );
        labels.fixed(
            x_hi + 6.0,
            y + 4.0,
            "start",
            &format!("{p}%"),
            &format!(r#"fill="{RATE_COLOR}""#),
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{x_lo}" y1="{y_top}" x2="{x_lo}" y2="{y_bottom}" stroke="#9ca3af"/><line x1="{x_hi}" y1="{y_top}" x2="{x_hi}" y2="{y_bottom}" stroke="#9ca3af"/>"##
    );
    labels.fixed(
        x_lo - 40.0,
        y_top - 10.0,
        "start",
        "weight",
        &format!(r#"fill="{WEIGHT_COLOR}" font-weight="bold""#),
    );
    labels.fixed(
        x_hi + 40.0,
        y_top - 10.0,
        "end",
        "success",
        &format!(r#"fill="{RATE_COLOR}" font-weight="bold""#),
    );
    let step_ms = tick_step(run_ms);
    let mut t = 0.0;
    while t <= run_ms {
        let x = ax.x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{y_bottom}" x2="{x:.1}" y2="{:.1}" stroke="#9ca3af"/>"##,
            y_bottom + 4.0
        );
        labels.fixed(x, y_bottom + 18.0, "middle", &clock(t), "");
        t += step_ms;
    }
    labels.fixed(
        (x_lo + x_hi) / 2.0,
        y_bottom + 40.0,
        "middle",
        "time since the start of the run",
        r##"fill="#374151""##,
    );

    // The success-rate gate.
    if let Some(min) = gate_min {
        let y = ax.y(min);
        let _ = writeln!(
            s,
            r#"<line x1="{x_lo}" y1="{y:.1}" x2="{x_hi}" y2="{y:.1}" stroke="{GATE_COLOR}" stroke-width="1.5" stroke-dasharray="6 4"/>"#
        );
        labels.place(
            x_lo + 8.0,
            y + 16.0,
            "start",
            &format!("gate: success rate >= {min}%"),
            &format!(r#"fill="{GATE_COLOR}" font-weight="bold""#),
            LINE_H,
            (y + 14.0, y_bottom - 4.0),
        );
    }

    // Canary weight: a step line through every change in force, to the end of the axis.
    let mut changes = Vec::new();
    let mut current = 0;
    for e in &r.timeline {
        if e.canary_weight != current {
            changes.push((e.at_ms as f64, e.canary_weight));
            current = e.canary_weight;
        }
    }
    let mut points = vec![(0.0, 0)];
    let mut w_now = 0;
    for &(ms, w) in &changes {
        points.push((ms, w_now));
        points.push((ms, w));
        w_now = w;
    }
    points.push((end_ms, w_now));
    let _ = writeln!(
        s,
        r#"<polyline fill="none" stroke="{WEIGHT_COLOR}" stroke-width="2.5" stroke-linejoin="round" points="{}"/>"#,
        points
            .iter()
            .map(|(ms, w)| format!("{:.1},{:.1}", ax.x(*ms), ax.y(f64::from(*w))))
            .collect::<Vec<_>>()
            .join(" ")
    );

    // Canary success rate of every observation with traffic; checks get a dot, red if failed.
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
                .map(|(x, rate)| format!("{:.1},{:.1}", ax.x(x.at_ms as f64), ax.y(*rate)))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    // Observations below the gate get a small red dot: a single one would be no line at all.
    for (x, rate) in rates
        .iter()
        .filter(|(_, rate)| gate_min.is_some_and(|m| *rate < m))
    {
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="2" fill="{ROLLBACK_COLOR}"/>"#,
            ax.x(x.at_ms as f64),
            ax.y(*rate)
        );
    }
    for c in &r.checks {
        let rate = c
            .gates
            .iter()
            .find(|g| g.name == "request-success-rate")
            .and_then(|g| g.value);
        if let Some(rate) = rate {
            let fill = if c.passed { RATE_COLOR } else { ROLLBACK_COLOR };
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{fill}" stroke="white"/>"#,
                ax.x(c.at_ms as f64),
                ax.y(rate)
            );
        }
    }
    // The lowest rate seen, named: on a 0..100 scale 97% and 99% are 6 px apart.
    if let Some((x, rate)) = rates
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|(_, rate)| gate_min.is_some_and(|m| *rate < m))
    {
        let px = ax.x(x.at_ms as f64);
        let anchor = if px > (x_lo + x_hi) / 2.0 {
            "end"
        } else {
            "start"
        };
        let dx = if anchor == "end" { -6.0 } else { 6.0 };
        labels.place(
            px + dx,
            ax.y(*rate) + 16.0,
            anchor,
            &format!("lowest: {rate:.1}% success"),
            &format!(r#"fill="{ROLLBACK_COLOR}""#),
            LINE_H,
            (y_top + 12.0, y_bottom - 4.0),
        );
    }

    // Step labels: the weight of every change, next to its step.
    for &(ms, w) in &changes {
        let x = ax.x(ms);
        let y = ax.y(f64::from(w));
        let text = if w == 100 && r.outcome == Outcome::Promoted {
            "100% (promoted)".to_string()
        } else {
            format!("{w}%")
        };
        labels.place(
            x + 4.0,
            y - 6.0,
            "start",
            &text,
            &format!(r#"fill="{WEIGHT_COLOR}" font-weight="bold""#),
            -LINE_H,
            (y_top + 10.0, y_bottom - 4.0),
        );
    }

    // Markers: a vertical line each; labels stacked at the top, right-aligned to their line
    // when there is room on the left.
    let mut markers: Vec<(f64, &str, String, bool)> = Vec::new();
    if let Some(rb) = &r.rollback
        && let (Some(at), Some(us)) = (rb.first_failure_at_ms, rb.first_failure_to_in_force_us)
    {
        let at = at.max(0) as u64;
        markers.push((
            at as f64,
            FAULT_COLOR,
            format!(
                "first failed request at {}: 0% in force {} later",
                instant(at),
                latency(us)
            ),
            true,
        ));
    }
    for (at, text) in drifts(r) {
        markers.push((at as f64, DRIFT_COLOR, text, true));
    }
    if let Some(rb) = &r.rollback {
        let breach = r
            .timeline
            .iter()
            .rfind(|e| e.kind == EventKind::Breach && e.at_ms <= rb.detected_at_ms)
            .map_or(rb.detected_at_ms, |e| e.at_ms);
        markers.push((
            breach as f64,
            DETECT_COLOR,
            format!(
                "detected at {} ({})",
                instant(breach),
                trigger_name(rb.trigger)
            ),
            true,
        ));
        let text = match &rb.error {
            None => format!(
                "rollback: 0% in force {} after detection",
                latency(rb.detected_to_in_force_us)
            ),
            Some(_) => "rollback FAILED: the canary may still get traffic".to_string(),
        };
        markers.push((rb.in_force_at_ms as f64, ROLLBACK_COLOR, text, false));
    }
    if let Some(e) = r.timeline.iter().find(|e| e.kind == EventKind::Promoted) {
        markers.push((
            e.at_ms as f64,
            PROMOTE_COLOR,
            format!("promoted: {} is stable", r.target.canary_subset),
            false,
        ));
    }
    for (ms, color, text, dashed) in &markers {
        let x = ax.x(*ms);
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{y_top}" x2="{x:.1}" y2="{y_bottom}" stroke="{color}" stroke-width="2"{}/>"#,
            if *dashed {
                r#" stroke-dasharray="3 3""#
            } else {
                ""
            }
        );
        let width = text.chars().count() as f64 * CHAR_W;
        let (lx, anchor) = if x - 6.0 - width >= x_lo {
            (x - 6.0, "end")
        } else {
            (x + 6.0, "start")
        };
        labels.place(
            lx,
            y_top + 40.0,
            anchor,
            text,
            &format!(r#"fill="{color}" font-weight="bold""#),
            LINE_H,
            (y_top + 12.0, y_bottom - 4.0),
        );
    }
    if let Some((from, to)) = dark {
        let text = "dark launch";
        let x = (ax.x(from) + ax.x(to)) / 2.0;
        if ax.x(to) - ax.x(from) > text.chars().count() as f64 * CHAR_W {
            labels.place(
                x,
                y_bottom - 10.0,
                "middle",
                text,
                r##"fill="#5b21b6""##,
                -LINE_H,
                (y_top + 12.0, y_bottom - 4.0),
            );
        }
    }

    s.push_str(&labels.svg);
    s.push_str("</svg>\n");
    (s, labels.boxes)
}

/// From the start of the dark launch to the first weighted traffic (or the end).
fn dark_launch_span(r: &Report) -> Option<(f64, f64)> {
    if !r.plan.iter().any(|s| matches!(s, Stage::DarkLaunch { .. })) {
        return None;
    }
    let from = r
        .timeline
        .iter()
        .find(|e| e.message.starts_with("dark launch"))
        .map_or(0, |e| e.at_ms);
    let to = r
        .timeline
        .iter()
        .find(|e| e.canary_weight > 0)
        .map_or(r.duration_ms, |e| e.at_ms);
    (to > from).then_some((from as f64, to as f64))
}

/// Sidecar restarts and other drifts of the weights in force, one marker per look that saw
/// them: (ms, label).
fn drifts(r: &Report) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = Vec::new();
    for e in &r.timeline {
        if e.kind != EventKind::Warning || !e.message.starts_with("in force: ") {
            continue;
        }
        let text = if e.message.contains("restarted (new boot id)") {
            format!("sidecar restarted at {}", instant(e.at_ms))
        } else {
            format!("weights in force drifted at {}", instant(e.at_ms))
        };
        match out.last_mut() {
            // A restart and the weights it lost are seen by one look: one marker.
            Some((at, last)) if *at == e.at_ms => {
                if text.starts_with("sidecar") {
                    *last = text;
                }
            }
            _ => out.push((e.at_ms, text)),
        }
    }
    out
}

/// The windows whose check did not count (other weights than the step's were in force):
/// from the check or weight change before to the skipped check.
fn uncounted_windows(r: &Report) -> Vec<(f64, f64)> {
    let starts: Vec<u64> = r
        .timeline
        .iter()
        .filter(|e| e.kind == EventKind::Weights || e.kind == EventKind::Check)
        .map(|e| e.at_ms)
        .chain(std::iter::once(0))
        .collect();
    r.timeline
        .iter()
        .filter(|e| e.kind == EventKind::Warning && e.message.starts_with("check not counted"))
        .map(|e| {
            let from = starts
                .iter()
                .copied()
                .filter(|&t| t < e.at_ms && !is_put_back(r, t))
                .max()
                .unwrap_or(0);
            (from as f64, e.at_ms as f64)
        })
        .collect()
}

/// Whether the weights event at `at` put drifted weights back (not a new step).
fn is_put_back(r: &Report, at: u64) -> bool {
    r.timeline
        .iter()
        .any(|e| e.at_ms == at && e.kind == EventKind::Weights && e.message.contains("put back"))
}

/// The window each failed check judged: from the check (or weight change) before it to it;
/// `true` when a gate failed or errored, `false` when it only lacked data.
fn check_shades(r: &Report) -> Vec<(f64, f64, bool)> {
    let mut out = Vec::new();
    let mut since = 0u64;
    let changes: Vec<u64> = {
        let mut current = 0;
        r.timeline
            .iter()
            .filter(|e| {
                let changed = e.canary_weight != current;
                current = e.canary_weight;
                changed
            })
            .map(|e| e.at_ms)
            .collect()
    };
    for c in &r.checks {
        let start = changes
            .iter()
            .copied()
            .filter(|&t| t <= c.at_ms)
            .fold(since, u64::max);
        if !c.passed {
            let failed = !c.hooks_ok
                || c.gates
                    .iter()
                    .any(|g| matches!(g.verdict, Verdict::Fail | Verdict::Error(_)));
            out.push((start as f64, c.at_ms as f64, failed));
        }
        since = c.at_ms;
    }
    out
}

/// A tick every 1, 2, 5, 10, 15, 30 s, 1, 2, 5, 10, 15, 30 min ..., at most 10 of them.
fn tick_step(run_ms: f64) -> f64 {
    const STEPS: [f64; 16] = [
        0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
        3600.0,
    ];
    STEPS
        .iter()
        .map(|s| s * 1000.0)
        .find(|s| run_ms / s <= 10.0)
        .unwrap_or(run_ms / 10.0)
}

/// `0s`, `45s`, `2m`, `2m30s`, `1h5m`; below 10 s with a tenth: `1.5s`.
fn clock(ms: f64) -> String {
    let total = (ms / 1000.0).round() as u64;
    if ms < 10_000.0 && (ms / 100.0).round() % 10.0 != 0.0 {
        return format!("{:.1}s", ms / 1000.0);
    }
    let (h, m, sec) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m, sec) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// A marker's time, to the tenth of a second when it has one: `11.1s`, `2m10s`, `2m10.4s`.
fn instant(ms: u64) -> String {
    let tenths = ms.div_ceil(100) % 10;
    if tenths == 0 {
        return clock(ms as f64);
    }
    let whole = clock((ms / 1000 * 1000) as f64);
    format!("{}.{tenths}s", whole.trim_end_matches('s'))
}

fn latency(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

fn trigger_name(t: super::Trigger) -> &'static str {
    use super::Trigger;
    match t {
        Trigger::FastGuard => "fast guard",
        Trigger::Threshold => "failed checks reached the threshold",
        Trigger::RollbackWebhook => "rollback webhook",
        Trigger::Aborted => "aborted",
        Trigger::SinkError => "weight sink error",
        Trigger::Refused => "refused",
        Trigger::ManualRollback => "rolled back by hand",
        Trigger::Drift => "weights in force drifted",
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_written_in_specs() {
        for (ms, want) in [
            (0.0, "0s"),
            (1_500.0, "1.5s"),
            (45_000.0, "45s"),
            (120_000.0, "2m"),
            (150_000.0, "2m30s"),
            (3_900_000.0, "1h5m"),
        ] {
            assert_eq!(clock(ms), want, "{ms}");
        }
        for (ms, want) in [
            (11_100, "11.1s"),
            (130_000, "2m10s"),
            (130_400, "2m10.4s"),
            (900, "0.9s"),
        ] {
            assert_eq!(instant(ms), want, "{ms}");
        }
    }

    #[test]
    fn labels_move_until_they_meet_no_other() {
        let mut labels = Labels::default();
        let bounds = (0.0, 500.0);
        let first = labels.place(
            100.0,
            100.0,
            "start",
            "rollback: 0% in force",
            "",
            LINE_H,
            bounds,
        );
        let second = labels.place(100.0, 100.0, "start", "detected", "", LINE_H, bounds);
        let third = labels.place(90.0, 100.0, "end", "lowest", "", LINE_H, bounds);
        assert_eq!(first, 100.0);
        assert_eq!(second, 100.0 + LINE_H, "moved down one line");
        assert_eq!(third, 100.0, "no overlap to its left");
        assert!(!labels.boxes[0].overlaps(&labels.boxes[1]));
    }
}
