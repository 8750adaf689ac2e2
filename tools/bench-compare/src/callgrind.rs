//! `--callgrind`: user-space instructions per proxied request, counted by valgrind's
//! callgrind. Unlike requests/s, the count does not move when someone else compiles on the
//! same machine, so it is the figure to put in a commit message before and after a change
//! to the hot path. It leaves out the kernel (about two thirds of a proxy's time on
//! loopback), so it complements the table, it does not replace it.
//!
//! Each proxy is run twice under callgrind, once with a small and once with a large number
//! of requests; the difference divided by the difference in requests is the cost of one
//! request, free of start-up and shut-down.

use std::collections::BTreeMap;

/// Requests of the short and the long run (after the same warm-up).
pub const REQUESTS: (u64, u64) = (1_000, 11_000);

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
