//! wrk (Debian's `wrk`): the saturation load of the standard shapes. Its summary is printed
//! by a Lua `done` hook as one `WRK {json}` line, so nothing depends on wrk's human output.

use serde_json::Value;

use crate::oha::{HOST, LoadRun, LoadStats};

/// The Lua script wrk runs (`-s`): at the end, one line with the counts and percentiles.
/// Latencies are microseconds; `status` counts responses with a status above 399.
pub const SCRIPT: &str = r#"done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK {\"requests\":%.0f,\"duration_us\":%.0f,\"connect\":%.0f,\"read\":%.0f," ..
    "\"write\":%.0f,\"status\":%.0f,\"timeout\":%.0f,\"p50_us\":%.0f,\"p99_us\":%.0f," ..
    "\"p999_us\":%.0f}\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#;

/// wrk's arguments for a duration run of `run` with the script at `script`. wrk wants at
/// least one connection per thread, so it gets no more threads than connections.
pub fn args(run: &LoadRun, script: &str) -> Vec<String> {
    let secs = run.duration.map_or(1, |d| d.as_secs().max(1));
    let mut a: Vec<String> = vec![
        "-t".into(),
        run.threads.min(run.connections).max(1).to_string(),
        "-c".into(),
        run.connections.to_string(),
        "-d".into(),
        format!("{secs}s"),
        "--timeout".into(),
        "10s".into(),
        "-s".into(),
        script.into(),
        "-H".into(),
        format!("Host: {HOST}"),
    ];
    for h in &run.headers {
        a.push("-H".into());
        a.push(h.clone());
    }
    a.push(run.url.clone());
    a
}

/// Reads the `WRK {json}` line of wrk's output. Errors are responses with a status above 399
/// plus connect, read, write and timeout errors (a proxy that resets kept-alive connections
/// shows as read errors).
pub fn parse(stdout: &str) -> Result<LoadStats, String> {
    let line = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("WRK "))
        .ok_or_else(|| format!("wrk printed no summary line: `{}`", stdout.trim()))?;
    let v: Value = serde_json::from_str(line).map_err(|e| format!("wrk summary: {e}"))?;
    let n = |k: &str| v[k].as_f64().ok_or(format!("wrk summary lacks `{k}`"));
    let total = n("requests")? as u64;
    let status = n("status")? as u64;
    let errors = ["connect", "read", "write", "timeout"]
        .iter()
        .map(|k| n(k).map(|x| x as u64))
        .sum::<Result<u64, String>>()?
        + status;
    let duration_s = n("duration_us")? / 1e6;
    let ok = total.saturating_sub(status);
    Ok(LoadStats {
        requests: ok,
        errors,
        rps: if duration_s > 0.0 {
            ok as f64 / duration_s
        } else {
            0.0
        },
        p50_ms: n("p50_us")? / 1000.0,
        p99_ms: n("p99_us")? / 1000.0,
        p999_ms: n("p999_us")? / 1000.0,
        duration_s,
    })
}
