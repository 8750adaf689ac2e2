//! One row per (contender, threads), the checks that make a row trustworthy (split, header
//! rule, errors), the ratios against direct and nginx, and the markdown and JSON renderings.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::args::Contender;
use crate::machine::Machine;
use crate::oha::LoadStats;
use crate::shapes::Shape;

/// The split the expected routing asks for: v2's share of the weighted traffic, percent.
pub const EXPECTED_V2_PERCENT: f64 = 10.0;
/// How far a proxy's delivered split may be from it, percentage points.
pub const SPLIT_TOLERANCE_POINTS: f64 = 1.0;

/// Others' CPU above which a row is marked noisy, percent of the machine.
pub const NOISY_PERCENT: f64 = 10.0;

/// Requests each upstream served during the measured runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// Served by v1.
    pub v1: u64,
    /// Served by v2.
    pub v2: u64,
}

impl Split {
    /// v2's share, percent (0 when nothing was served).
    pub fn v2_percent(&self) -> f64 {
        let total = self.v1 + self.v2;
        if total == 0 {
            0.0
        } else {
            self.v2 as f64 * 100.0 / total as f64
        }
    }

    /// Within [`SPLIT_TOLERANCE_POINTS`] of 90/10, with traffic on both sides.
    pub fn is_within_tolerance(&self) -> bool {
        self.v1 + self.v2 > 0
            && (self.v2_percent() - EXPECTED_V2_PERCENT).abs() <= SPLIT_TOLERANCE_POINTS
    }

    /// `90.03/9.97`.
    pub fn render(&self) -> String {
        let v2 = self.v2_percent();
        format!("{:.2}/{:.2}", 100.0 - v2, v2)
    }
}

/// Everything measured for one contender at one thread count.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Who.
    pub contender: Contender,
    /// The load shape measured.
    pub shape: Shape,
    /// Worker threads (nginx: processes) it was given.
    pub threads: u32,
    /// The saturation run (no rate limit).
    pub saturation: LoadStats,
    /// The fixed-rate run, latency corrected; `None` for shapes without one.
    pub fixed: Option<LoadStats>,
    /// Share of responses after which the connection stayed open, percent (`ab -k` shapes).
    pub keep_alive_percent: Option<f64>,
    /// What the proxy's processes used; `None` for direct (no proxy).
    pub resources: Option<Resources>,
    /// CPU used by processes outside the run (other users of the machine) during the
    /// saturation and the fixed-rate run, percent of all the machine's CPU: the noise.
    pub others_cpu_percent: [f64; 2],
    /// What the upstreams saw during the measured runs; `None` for direct.
    pub split: Option<Split>,
    /// Whether every `x-canary: true` probe reached v2; `None` for direct.
    pub header_rule_ok: Option<bool>,
    /// Saturation requests/s of each round, when the row is the median of several.
    pub rounds_rps: Vec<f64>,
    /// Its saturation requests/s over nginx's in the same round, for each round both ran.
    pub rounds_vs_nginx: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn median_stats(runs: &[LoadStats]) -> LoadStats {
    let m = |f: fn(&LoadStats) -> f64| median(runs.iter().map(f).collect());
    LoadStats {
        requests: runs.iter().map(|r| r.requests).sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
        rps: m(|r| r.rps),
        p50_ms: m(|r| r.p50_ms),
        p99_ms: m(|r| r.p99_ms),
        p999_ms: m(|r| r.p999_ms),
        duration_s: runs.iter().map(|r| r.duration_s).sum(),
    }
}

/// One row from the rounds of the same contender and threads: medians of the rates,
/// latencies and CPU figures (a loopback benchmark on a shared machine has outliers: the
/// median ignores one), the largest peak memory and noise, sums of requests, errors and
/// split counts, and the header rule only if it held in every round.
pub fn median_row(rounds: &[Row]) -> Option<Row> {
    let first = rounds.first()?;
    let sat: Vec<LoadStats> = rounds.iter().map(|r| r.saturation).collect();
    let fixed: Option<Vec<LoadStats>> = rounds.iter().map(|r| r.fixed).collect();
    let keep_alive: Option<Vec<f64>> = rounds.iter().map(|r| r.keep_alive_percent).collect();
    let res: Vec<Resources> = rounds.iter().filter_map(|r| r.resources).collect();
    let resources = (!res.is_empty()).then(|| Resources {
        cpu_s_per_10k: median(res.iter().map(|r| r.cpu_s_per_10k).collect()),
        saturation_cpu_percent: median(res.iter().map(|r| r.saturation_cpu_percent).collect()),
        user_us_per_request: median(res.iter().map(|r| r.user_us_per_request).collect()),
        peak_rss_kib: res.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0),
        processes: res.iter().map(|r| r.processes).max().unwrap_or(0),
    });
    let split = first.split.map(|_| Split {
        v1: rounds.iter().filter_map(|r| r.split).map(|s| s.v1).sum(),
        v2: rounds.iter().filter_map(|r| r.split).map(|s| s.v2).sum(),
    });
    let max_of = |i: usize| {
        rounds
            .iter()
            .map(|r| r.others_cpu_percent[i])
            .fold(0.0, f64::max)
    };
    Some(Row {
        contender: first.contender,
        shape: first.shape.clone(),
        threads: first.threads,
        saturation: median_stats(&sat),
        fixed: fixed.map(|f| median_stats(&f)),
        keep_alive_percent: keep_alive.map(median),
        resources,
        others_cpu_percent: [max_of(0), max_of(1)],
        split,
        header_rule_ok: first
            .header_rule_ok
            .map(|_| rounds.iter().all(|r| r.header_rule_ok == Some(true))),
        rounds_rps: rounds.iter().map(|r| r.saturation.rps).collect(),
        rounds_vs_nginx: Vec::new(),
    })
}

/// Each contender's saturation throughput over nginx's in the same round: `rounds[i][r]` is
/// contender `i`'s row of round `r` (`None`: that run failed), `nginx` nginx's index.
pub fn ratios_by_round(rounds: &[Vec<Option<Row>>], nginx: usize) -> Vec<Vec<f64>> {
    rounds
        .iter()
        .map(|runs| {
            runs.iter()
                .zip(&rounds[nginx])
                .filter_map(|(row, base)| {
                    let (row, base) = (row.as_ref()?, base.as_ref()?);
                    (base.saturation.rps > 0.0).then(|| row.saturation.rps / base.saturation.rps)
                })
                .collect()
        })
        .collect()
}

/// `61353`, or `61353 ±4%` (half the range of the rounds, relative to the median).
fn rps_cell(row: &Row) -> String {
    let rps = row.saturation.rps;
    if row.rounds_rps.len() < 2 || rps <= 0.0 {
        return format!("{rps:.0}");
    }
    let lo = row.rounds_rps.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = row.rounds_rps.iter().copied().fold(0.0, f64::max);
    format!("{rps:.0} ±{:.0}%", (hi - lo) / 2.0 * 100.0 / rps)
}

/// What a proxy's processes used.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Resources {
    /// CPU seconds its processes spent per 10,000 requests of the fixed-rate run.
    pub cpu_s_per_10k: f64,
    /// Its CPU use during the saturation run, percent of its threads' cores (100 = it was
    /// the bottleneck; much less = something else was).
    pub saturation_cpu_percent: f64,
    /// User-space CPU microseconds per request during the saturation run: the proxy's own
    /// code, without the kernel's TCP work, whose cost per request changes from run to run
    /// on a VM (see the README).
    pub user_us_per_request: f64,
    /// Peak resident memory (VmHWM) summed over its processes, KiB.
    pub peak_rss_kib: u64,
    /// Its processes (nginx: master + workers).
    pub processes: u32,
}

impl Row {
    /// Why this row cannot be trusted as a fast result, if it cannot.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let errors = self.saturation.errors + self.fixed.map_or(0, |f| f.errors);
        if errors > 0 {
            problems.push(format!("{errors} errors"));
        }
        if self.saturation.requests == 0 || self.fixed.is_some_and(|f| f.requests == 0) {
            problems.push("no responses".into());
        }
        if let Some(split) = self.split.filter(|s| !s.is_within_tolerance()) {
            problems.push(format!("split {} is off 90/10", split.render()));
        }
        if self.header_rule_ok == Some(false) {
            problems.push("x-canary rule broken".into());
        }
        problems
    }
}

/// How the run was made, printed above the table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunInfo {
    /// The command line that made it.
    pub command: String,
    /// Seconds per measured run.
    pub duration_s: f64,
    /// Load tool connections.
    pub connections: u32,
    /// Requests/s of the fixed-rate run.
    pub rate: u32,
    /// Upstream body size, bytes.
    pub body_bytes: usize,
    /// How cores were shared, in words.
    pub pinning: String,
    /// `(tool, version)` of everything involved.
    pub versions: Vec<(String, String)>,
    /// Rounds per contender; the table holds their medians.
    pub rounds: u32,
    /// Load averages when the run started and ended.
    pub load_before: [f64; 3],
    /// See `load_before`.
    pub load_after: [f64; 3],
}

/// A whole run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Where and when.
    pub machine: Machine,
    /// How.
    pub run: RunInfo,
    /// What, in run order.
    pub rows: Vec<Row>,
}

/// A target from DESIGN.md and whether a run met it.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The target, in words.
    pub target: String,
    /// The figure measured.
    pub measured: String,
    /// `Some(met)`, or `None` when the run lacks the contenders to tell.
    pub met: Option<bool>,
}

impl Report {
    fn find(&self, contender: Contender, like: &Row) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.contender == contender && r.threads == like.threads && r.shape.name == like.shape.name
        })
    }

    /// The shapes measured, in order of first appearance.
    pub fn shapes(&self) -> Vec<&Shape> {
        let mut out: Vec<&Shape> = Vec::new();
        for r in &self.rows {
            if !out.iter().any(|s| s.name == r.shape.name) {
                out.push(&r.shape);
            }
        }
        out
    }

    /// `row`'s saturation throughput over `base`'s in the same shape and thread count.
    pub fn rps_ratio(&self, row: &Row, base: Contender) -> Option<f64> {
        let b = self.find(base, row)?;
        (b.saturation.rps > 0.0).then(|| row.saturation.rps / b.saturation.rps)
    }

    /// `row`'s fixed-rate p99 minus direct's in the same shape and thread count, ms.
    pub fn added_p99_ms(&self, row: &Row) -> Option<f64> {
        let d = self.find(Contender::Direct, row)?;
        Some(row.fixed?.p99_ms - d.fixed?.p99_ms)
    }

    /// weir against DESIGN.md's and issue 13's targets, per shape.
    pub fn verdicts(&self) -> Vec<Verdict> {
        let mut out = Vec::new();
        for weir in self.rows.iter().filter(|r| r.contender == Contender::Weir) {
            let shape = &weir.shape;
            let t = &shape.title;
            let ratio = self.rps_ratio(weir, Contender::Nginx);
            let goal = shape.goal_vs_nginx;
            out.push(Verdict {
                target: if goal > 1.0 {
                    format!("{t}: weir throughput >= {goal:.1}x nginx")
                } else {
                    format!("{t}: weir throughput >= nginx (goal 1.2x)")
                },
                measured: ratio.map_or("no nginx row".into(), |r| format!("{r:.2}x")),
                met: ratio.map(|r| r >= goal),
            });
            if shape.fixed_rate {
                let added = self.added_p99_ms(weir);
                out.push(Verdict {
                    target: format!(
                        "{t}: weir added p99 over direct <= 0.3 ms at {} rps",
                        self.run.rate
                    ),
                    measured: added.map_or("no direct row".into(), |a| format!("{a:+.3} ms")),
                    met: added.map(|a| a <= 0.3),
                });
                let rss = weir.resources.map(|r| mib(r.peak_rss_kib));
                out.push(Verdict {
                    target: format!("{t}: weir peak RSS <= 20 MB"),
                    measured: rss.map_or("not measured".into(), |m| format!("{m:.1} MB")),
                    met: rss.map(|m| m <= 20.0),
                });
            }
            if shape.rss_vs_nginx {
                let rss = |row: &Row| row.resources.map(|r| mib(r.peak_rss_kib));
                let both = rss(weir).zip(self.find(Contender::Nginx, weir).and_then(rss));
                out.push(Verdict {
                    target: format!("{t}: weir peak RSS <= nginx's"),
                    measured: both.map_or("no nginx row".into(), |(w, n)| {
                        format!("{w:.1} MB vs {n:.1} MB")
                    }),
                    met: both.map(|(w, n)| w <= n),
                });
            }
            if let Some(kept) = weir.keep_alive_percent {
                out.push(Verdict {
                    target: format!("{t}: weir keeps HTTP/1.0 keep-alive connections open"),
                    measured: format!("{kept:.1}% of responses kept the connection"),
                    met: Some(kept >= 99.0),
                });
            }
        }
        let routed: Vec<&Row> = self.rows.iter().filter(|r| r.split.is_some()).collect();
        if !routed.is_empty() {
            let off: Vec<String> = routed
                .iter()
                .filter(|r| !r.split.is_some_and(|s| s.is_within_tolerance()))
                .map(|r| format!("{} ({})", r.contender.name(), r.shape.title))
                .collect();
            out.push(Verdict {
                target: "every proxy's split within 1 point of 90/10".into(),
                measured: if off.is_empty() {
                    "all within".into()
                } else {
                    format!("off: {}", off.join(", "))
                },
                met: Some(off.is_empty()),
            });
        }
        out
    }
}

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{r:.2}x"))
}

/// `1.20x` (the ratio of the medians), or with rounds `1.20x (1.10–1.30)`: the median of the
/// same-round ratios and their range.
pub(crate) fn vs_nginx_cell(report: &Report, row: &Row) -> String {
    if row.rounds_vs_nginx.len() < 2 || row.contender == Contender::Nginx {
        return ratio_cell(report.rps_ratio(row, Contender::Nginx));
    }
    let r = &row.rounds_vs_nginx;
    let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r.iter().copied().fold(0.0, f64::max);
    format!("{:.2}x ({lo:.2}–{hi:.2})", median(r.clone()))
}

fn ms_cell(stats: Option<LoadStats>, f: fn(&LoadStats) -> f64) -> String {
    stats.map_or("–".into(), |s| format!("{:.3}", f(&s)))
}

/// One shape's table, and its keep-alive line when it has one.
fn render_table(s: &mut String, report: &Report, shape: &Shape) {
    s.push_str(
        "| contender | threads | max req/s | vs direct | vs nginx | p50 ms | p99 ms | p99.9 ms \
         | p99 added ms | CPU s / 10k req | CPU at max | user µs / req at max | peak RSS MB \
         | errors | split v1/v2 % | others' CPU % | check |\n",
    );
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    let rows: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| r.shape.name == shape.name)
        .collect();
    for row in &rows {
        let problems = row.problems();
        let res = |f: fn(&Resources) -> String| row.resources.as_ref().map_or("–".into(), f);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} \
             | {:.0}/{:.0} | {} |",
            row.contender.name(),
            row.threads,
            rps_cell(row),
            ratio_cell(report.rps_ratio(row, Contender::Direct)),
            vs_nginx_cell(report, row),
            ms_cell(row.fixed, |f| f.p50_ms),
            ms_cell(row.fixed, |f| f.p99_ms),
            ms_cell(row.fixed, |f| f.p999_ms),
            match (row.contender, report.added_p99_ms(row)) {
                (Contender::Direct, _) | (_, None) => "–".to_string(),
                (_, Some(a)) => format!("{a:+.3}"),
            },
            match row.fixed {
                Some(_) => res(|r| format!("{:.3}", r.cpu_s_per_10k)),
                None => "–".into(),
            },
            res(|r| format!("{:.0}%", r.saturation_cpu_percent)),
            res(|r| format!("{:.2}", r.user_us_per_request)),
            res(|r| format!("{:.1}", mib(r.peak_rss_kib))),
            row.saturation.errors + row.fixed.map_or(0, |f| f.errors),
            row.split.map_or("100/0 (v1 only)".into(), |sp| sp.render()),
            row.others_cpu_percent[0],
            row.others_cpu_percent[1],
            if problems.is_empty() && row.others_cpu_percent.iter().any(|&o| o > NOISY_PERCENT) {
                "ok (noisy)".to_string()
            } else if problems.is_empty() {
                "ok".to_string()
            } else {
                format!("**BROKEN**: {}", problems.join("; "))
            },
        );
    }
    let kept: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            r.keep_alive_percent
                .map(|k| format!("{} {k:.1}%", r.contender.name()))
        })
        .collect();
    if !kept.is_empty() {
        let _ = writeln!(
            s,
            "\nResponses after which the HTTP/1.0 keep-alive connection stayed open: {}.",
            kept.join(", ")
        );
    }
}

/// The markdown the harness prints and writes to `benches/results/`: the machine and the
/// run, then one table per shape.
pub fn render_markdown(report: &Report) -> String {
    let m = &report.machine;
    let run = &report.run;
    let mut s = String::new();
    let _ = writeln!(s, "# weir proxy comparison, {} {} UTC\n", m.date, m.time);
    let _ = writeln!(
        s,
        "Machine: {} cores ({}), Linux {}. Load average before: {}; after: {}.",
        m.cores,
        m.cpu_model,
        m.kernel,
        fmt_load(run.load_before),
        fmt_load(run.load_after)
    );
    let _ = writeln!(s, "Command: `{}`", run.command);
    let _ = writeln!(
        s,
        "Load: per shape (below), {:.0} s per run; saturation = no rate limit; latency (shapes \
         with it) = oha at a fixed {} req/s with latency correction; {} round(s), contenders \
         interleaved, medians shown; `vs nginx` is the ratio of the medians, with the range of \
         the same-round ratios in brackets. Upstreams: two Rust hyper servers. Routing: \
         `x-canary: true` -> v2, else 90/10. {}",
        run.duration_s,
        run.rate,
        run.rounds.max(1),
        run.pinning
    );
    if !run.versions.is_empty() {
        let v: Vec<String> = run
            .versions
            .iter()
            .map(|(tool, version)| format!("{tool} {version}"))
            .collect();
        let _ = writeln!(s, "Versions: {}.", v.join(", "));
    }
    for shape in report.shapes() {
        let _ = writeln!(
            s,
            "\n### {}\n\n{}, {} connection(s), {} B bodies{}.\n",
            shape.title,
            shape.tool.label(),
            shape.connections,
            shape.body_bytes,
            if shape.fixed_rate {
                format!("; latency: oha at {} req/s", run.rate)
            } else {
                String::new()
            }
        );
        render_table(&mut s, report, shape);
    }
    let verdicts = report.verdicts();
    if !verdicts.is_empty() {
        s.push_str("\nTargets (DESIGN.md):\n\n");
        for v in verdicts {
            let mark = match v.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not measured",
            };
            let _ = writeln!(s, "- {}: {} — {}", v.target, v.measured, mark);
        }
    }
    s.push_str(
        "\nColumns: max req/s from the saturation run; ratios are against direct and nginx in \
         the same shape; latencies from the fixed-rate run; CPU s / 10k req is the \
         contender's user+system CPU (all its processes) per 10,000 requests of the fixed-rate \
         run; CPU at max is its CPU use during the saturation run as a share of its threads \
         (near 100% = the proxy was the bottleneck); user µs / req is its user-space CPU per \
         request in that run, the cost of its own code, steadier than req/s; peak RSS is VmHWM summed over its \
         processes; split is what the upstreams counted over both runs; others' CPU is what \
         processes outside the run took of the machine during the saturation / fixed-rate run \
         (the noise: rows above 10% say `ok (noisy)`; rerun when the machine is quiet); check also sends `x-canary: true` probes that \
         must all reach v2.\n",
    );
    s
}

fn fmt_load(l: [f64; 3]) -> String {
    format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
}

fn stats_json(s: &LoadStats) -> Value {
    json!({
        "requests": s.requests,
        "errors": s.errors,
        "requests_per_second": s.rps,
        "p50_ms": s.p50_ms,
        "p99_ms": s.p99_ms,
        "p99_9_ms": s.p999_ms,
        "duration_s": s.duration_s,
    })
}

/// The JSON written beside the markdown: the same facts, machine-readable.
pub fn render_json(report: &Report) -> Value {
    let m = &report.machine;
    let run = &report.run;
    let rows: Vec<Value> = report
        .rows
        .iter()
        .map(|r| {
            json!({
                "contender": r.contender.name(),
                "shape": r.shape.name,
                "threads": r.threads,
                "connections": r.shape.connections,
                "body_bytes": r.shape.body_bytes,
                "load_tool": r.shape.tool.program(),
                "saturation": stats_json(&r.saturation),
                "fixed_rate": r.fixed.as_ref().map(stats_json),
                "rps_vs_direct": report.rps_ratio(r, Contender::Direct),
                "rps_vs_nginx": report.rps_ratio(r, Contender::Nginx),
                "p99_added_ms": if r.contender == Contender::Direct {
                    None
                } else {
                    report.added_p99_ms(r)
                },
                "cpu_s_per_10k_requests": r.resources.map(|x| x.cpu_s_per_10k),
                "saturation_cpu_percent": r.resources.map(|x| x.saturation_cpu_percent),
                "user_us_per_request_at_saturation": r.resources.map(|x| x.user_us_per_request),
                "peak_rss_kib": r.resources.map(|x| x.peak_rss_kib),
                "processes": r.resources.map(|x| x.processes),
                "others_cpu_percent": {
                    "saturation": r.others_cpu_percent[0],
                    "fixed_rate": r.others_cpu_percent[1],
                },
                "split": r.split.map(|s| json!({
                    "v1": s.v1,
                    "v2": s.v2,
                    "v2_percent": s.v2_percent(),
                    "within_tolerance": s.is_within_tolerance(),
                })),
                "header_rule_ok": r.header_rule_ok,
                "saturation_rps_by_round": r.rounds_rps,
                "rps_vs_nginx_by_round": r.rounds_vs_nginx,
                "keep_alive_percent": r.keep_alive_percent,
                "problems": r.problems(),
            })
        })
        .collect();
    let verdicts: Vec<Value> = report
        .verdicts()
        .into_iter()
        .map(|v| json!({"target": v.target, "measured": v.measured, "met": v.met}))
        .collect();
    json!({
        "date": m.date,
        "time_utc": m.time,
        "machine": {
            "cores": m.cores,
            "kernel": m.kernel,
            "cpu_model": m.cpu_model,
        },
        "run": {
            "command": run.command,
            "shapes": report.shapes().iter().map(|s| json!({
                "name": s.name,
                "title": s.title,
                "load_tool": s.tool.program(),
                "threads": s.threads,
                "connections": s.connections,
                "body_bytes": s.body_bytes,
                "fixed_rate": s.fixed_rate,
                "goal_vs_nginx": s.goal_vs_nginx,
            })).collect::<Vec<_>>(),
            "duration_s": run.duration_s,
            "connections": run.connections,
            "fixed_rate_rps": run.rate,
            "rounds": run.rounds,
            "body_bytes": run.body_bytes,
            "pinning": run.pinning,
            "versions": run.versions.iter().map(|(k, v)| json!({"tool": k, "version": v})).collect::<Vec<_>>(),
            "load_average_before": run.load_before,
            "load_average_after": run.load_after,
        },
        "rows": rows,
        "targets": verdicts,
    })
}
