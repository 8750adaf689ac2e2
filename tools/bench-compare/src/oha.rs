//! The load tool: `oha` (crates.io), the same binary, connections and duration for every
//! contender. This module builds its command lines and reads its `--output-format json`.

use std::time::Duration;

use serde_json::Value;

/// What one oha run measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadStats {
    /// Responses with a 2xx status.
    pub requests: u64,
    /// Transport errors plus responses with any other status.
    pub errors: u64,
    /// 2xx responses per second of the run's wall time.
    pub rps: f64,
    /// Median latency, ms (latency-corrected on fixed-rate runs).
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// The run's wall time, seconds.
    pub duration_s: f64,
}

/// One load run to make.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadRun {
    /// `http://127.0.0.1:PORT/path`.
    pub url: String,
    /// Concurrent connections.
    pub connections: u32,
    /// How long; `None` = `requests` requests.
    pub duration: Option<Duration>,
    /// Request count when `duration` is `None`.
    pub requests: u64,
    /// Requests/s; `None` = as fast as it goes.
    pub rate: Option<u32>,
    /// Extra request headers, `name: value`.
    pub headers: Vec<String>,
    /// The load tool's own runtime threads.
    pub threads: u32,
}

/// The `Host` every request carries: the lesson's VirtualService host.
pub const HOST: &str = "payment-svc";

/// oha's arguments for `run`. Duration runs wait for requests in flight at the deadline
/// (`-w`), so that the cut-off is never counted as an error; fixed-rate runs correct for
/// coordinated omission, so a stall shows in the percentiles instead of hiding in them.
pub fn args(run: &LoadRun) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--no-tui".into(),
        "--output-format".into(),
        "json".into(),
        "--worker-threads".into(),
        run.threads.to_string(),
        "-c".into(),
        run.connections.to_string(),
        "--host".into(),
        HOST.into(),
    ];
    match run.duration {
        Some(d) => {
            a.push("-z".into());
            a.push(format!("{}ms", d.as_millis()));
            a.push("-w".into());
        }
        None => {
            a.push("-n".into());
            a.push(run.requests.to_string());
        }
    }
    if let Some(rate) = run.rate {
        a.push("-q".into());
        a.push(rate.to_string());
        a.push("--latency-correction".into());
    }
    for h in &run.headers {
        a.push("-H".into());
        a.push(h.clone());
    }
    a.push(run.url.clone());
    a
}

fn seconds_to_ms(v: &Value) -> f64 {
    v.as_f64().map_or(f64::NAN, |s| s * 1000.0)
}

/// Reads oha's JSON report.
pub fn parse(json: &str) -> Result<LoadStats, String> {
    let v: Value =
        serde_json::from_str(json).map_err(|e| format!("oha output is not JSON: {e}"))?;
    let total_s = v["summary"]["total"]
        .as_f64()
        .ok_or("oha output has no summary.total")?;
    let mut ok = 0u64;
    let mut errors = 0u64;
    if let Some(codes) = v["statusCodeDistribution"].as_object() {
        for (code, n) in codes {
            let n = n.as_u64().unwrap_or(0);
            if code.starts_with('2') {
                ok += n;
            } else {
                errors += n;
            }
        }
    }
    if let Some(errs) = v["errorDistribution"].as_object() {
        errors += errs.values().filter_map(Value::as_u64).sum::<u64>();
    }
    let p = &v["latencyPercentiles"];
    Ok(LoadStats {
        requests: ok,
        errors,
        rps: if total_s > 0.0 {
            ok as f64 / total_s
        } else {
            0.0
        },
        p50_ms: seconds_to_ms(&p["p50"]),
        p99_ms: seconds_to_ms(&p["p99"]),
        p999_ms: seconds_to_ms(&p["p99.9"]),
        duration_s: total_s,
    })
}
