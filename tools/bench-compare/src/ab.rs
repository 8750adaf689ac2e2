//! ApacheBench `ab -k`: HTTP/1.0 requests asking for keep-alive (`Connection: Keep-Alive`),
//! the shape nginx and HAProxy keep open and a proxy that closes after every response fails
//! quietly (ab reconnects). Its `Keep-Alive requests` line says which it was.

use crate::oha::{HOST, LoadRun, LoadStats};

/// What one `ab -k` run measured: the load figures and how many responses kept the
/// connection open.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AbStats {
    /// Throughput, errors and percentiles (whole milliseconds: ab's resolution; no p99.9).
    pub load: LoadStats,
    /// Responses after which the connection stayed open.
    pub keep_alive: u64,
}

/// ab's arguments for a duration run. `-t` alone caps the run at 50,000 requests, so `-n`
/// follows it with a cap no run reaches.
pub fn args(run: &LoadRun) -> Vec<String> {
    let secs = run.duration.map_or(1, |d| d.as_secs().max(1));
    let mut a: Vec<String> = vec![
        "-k".into(),
        "-q".into(),
        "-c".into(),
        run.connections.to_string(),
        "-t".into(),
        secs.to_string(),
        "-n".into(),
        "100000000".into(),
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

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
}

/// The percentile line `  99%      3` of ab's table, ms.
fn percentile(text: &str, p: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == p).then(|| it.next()?.parse().ok())?
        })
        .unwrap_or(f64::NAN)
}

/// Reads ab's report.
pub fn parse(text: &str) -> Result<AbStats, String> {
    let num = |key: &str| -> Result<f64, String> {
        field(text, key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("ab output lacks `{key}`: `{}`", text.trim()))
    };
    let complete = num("Complete requests:")? as u64;
    let failed = num("Failed requests:")? as u64;
    let non_2xx = field(text, "Non-2xx responses:")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let keep_alive = num("Keep-Alive requests:")? as u64;
    let duration_s = num("Time taken for tests:")?;
    let ok = complete.saturating_sub(failed.max(non_2xx));
    Ok(AbStats {
        load: LoadStats {
            requests: ok,
            errors: failed + non_2xx,
            rps: if duration_s > 0.0 {
                ok as f64 / duration_s
            } else {
                0.0
            },
            p50_ms: percentile(text, "50%"),
            p99_ms: percentile(text, "99%"),
            p999_ms: f64::NAN,
            duration_s,
        },
        keep_alive,
    })
}
