//! `--callgrind`: user-space instructions per proxied request, counted by valgrind's
//! callgrind. Unlike requests/s, the count does not move when someone else compiles on the
//! same machine, so it is the figure to put in a commit message before and after a change
//! to the hot path. It leaves out the kernel (about two thirds of a proxy's time on
//! loopback), so it complements the table, it does not replace it.
//!
//! Each proxy is run twice under callgrind, loaded by h2load with a fixed request count over
//! 10 keep-alive connections, once with a small and once with a large number of requests; the
//! difference divided by the difference in requests (20,000) is the cost of one request, free
//! of start-up and shut-down.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::args::Contender;
use crate::machine::Machine;

/// Requests of the short and the long run (after the same warm-up): 20,000 apart.
pub const REQUESTS: (u64, u64) = (1_000, 21_000);

/// The counts of one callgrind run over the proxies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// User-space instructions per request, per proxy, in run order.
    pub per_request: Vec<(Contender, f64)>,
    /// weir's costliest functions: (self instructions per request, function).
    pub weir_top: Vec<(f64, String)>,
    /// Proxies that could not be measured, and why.
    pub notes: Vec<String>,
    /// Requests the per-request figure is taken over (long run minus short run).
    pub requests: u64,
    /// h2load's keep-alive connections.
    pub connections: u32,
    /// Upstream body, bytes.
    pub body_bytes: usize,
}

impl Counts {
    /// `contender`'s instructions per request, when measured.
    pub fn of(&self, contender: Contender) -> Option<f64> {
        self.per_request
            .iter()
            .find(|(c, _)| *c == contender)
            .map(|(_, p)| *p)
    }
}

/// `benches/results/callgrind-latest.md`.
pub fn render_markdown(counts: &Counts, machine: &Machine, command: &str) -> String {
    let (short, long) = REQUESTS;
    let mut md = format!(
        "# User-space instructions per proxied request (callgrind), {} {} UTC\n\n\
         Machine: {} cores ({}), Linux {}. Command: `{command}`. Each proxy with one worker, \
         run twice under valgrind --tool=callgrind, loaded by h2load over HTTP/1.1 ({} \
         keep-alive connections, one request in flight on each; {short} and {long} requests \
         after the same warm-up, {} B bodies); the difference over {} requests. Kernel time \
         (most of a proxy's cost on loopback) is not counted: this is the figure for \
         before/after a hot-path change, not a ranking.\n\n\
         | proxy | instructions / request | vs nginx |\n|---|---:|---:|\n",
        machine.date,
        machine.time,
        machine.cores,
        machine.cpu_model,
        machine.kernel,
        counts.connections,
        counts.body_bytes,
        counts.requests,
    );
    let nginx = counts.of(Contender::Nginx);
    for (c, per) in &counts.per_request {
        let ratio = nginx.map_or("–".to_string(), |n| format!("{:.2}x", per / n));
        let _ = writeln!(md, "| {} | {per:.0} | {ratio} |", c.name());
    }
    for n in &counts.notes {
        let _ = write!(md, "\n{n}\n");
    }
    if !counts.weir_top.is_empty() {
        let weir_total = counts.of(Contender::Weir).unwrap_or(1.0);
        md.push_str(
            "\nweir's costliest functions, self instructions per request:\n\n\
             | instructions / request | share | function |\n|---:|---:|---|\n",
        );
        for (n, f) in &counts.weir_top {
            let f = f.replace('|', "\\|");
            let _ = writeln!(md, "| {n:.0} | {:.1}% | `{f}` |", n * 100.0 / weir_total);
        }
    }
    md
}

/// The `totals:` (or `summary:`) line of a callgrind output file: instructions executed.
pub fn parse_totals(callgrind_out: &str) -> Option<u64> {
    callgrind_out
        .lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Per-function instruction counts from `callgrind_annotate --auto=no` output
/// (`1,234 ( 5.00%)  file:function [object]`), keyed by function name.
pub fn parse_annotate(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some((count, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(n) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix('(') else {
            continue;
        };
        let Some((_, name)) = rest.split_once(')') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || name.starts_with("PROGRAM TOTALS") || name == "events annotated" {
            continue;
        }
        // `file:function [object]`: keep the function. Inlined code is listed under the
        // file it came from, sometimes without the object: one key per function adds it up.
        let location = match name.rfind(" [") {
            Some(i) => &name[..i],
            None => name,
        };
        let key = split_file(location).to_string();
        *out.entry(key).or_insert(0) += n;
    }
    out
}

/// `path/file.rs:fn::name` -> `fn::name`; `???:fn` -> `fn`; a bare `fn::name` stays.
fn split_file(location: &str) -> &str {
    let bytes = location.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b':' {
            if bytes.get(i + 1) == Some(&b':') {
                i += 2;
                continue;
            }
            return &location[i + 1..];
        }
        i += 1;
    }
    location
}

/// The functions whose cost grew most from the short to the long run, per request:
/// `(instructions per request, function)`, largest first.
pub fn per_request_top(
    short: &BTreeMap<String, u64>,
    long: &BTreeMap<String, u64>,
    requests: u64,
    top: usize,
) -> Vec<(f64, String)> {
    let mut rows: Vec<(f64, String)> = long
        .iter()
        .map(|(k, &v)| {
            let before = short.get(k).copied().unwrap_or(0);
            (v.saturating_sub(before) as f64 / requests as f64, k.clone())
        })
        .filter(|(v, _)| *v > 0.0)
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    rows.truncate(top);
    rows
}
