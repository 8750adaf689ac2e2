//! The callgrind counts: each proxy with one worker under valgrind's callgrind, loaded by
//! h2load with a fixed number of requests over 10 keep-alive connections, twice (a short and a
//! long run); the difference per request is the cost of one request without start-up.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::args::{Contender, Options};
use crate::callgrind::{self, Counts};
use crate::configs::Routing;
use crate::h2load;
use crate::process::{self, Proxy, ProxyEnv, Upstreams};

/// h2load's connections: each one keep-alive, one request in flight.
const CONNECTIONS: u32 = 10;

/// Warm-up requests before the counted ones, in both runs.
const WARMUP: u64 = 1_000;

fn h2load(url: &str, requests: u64) -> Result<(), String> {
    let out = Command::new("h2load")
        .args(h2load::args(url, requests, CONNECTIONS))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running h2load: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (succeeded, ok) = h2load::parse(&text)?;
    if !out.status.success() || succeeded != requests || ok != requests {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said: Vec<&str> = text
            .lines()
            .chain(stderr.lines())
            .filter(|l| !l.starts_with("progress:") && !l.trim().is_empty())
            .take(6)
            .collect();
        return Err(format!(
            "h2load: {succeeded} of {requests} requests succeeded, {ok} with 2xx ({}): {}",
            out.status,
            said.join(" | ")
        ));
    }
    Ok(())
}

/// One proxy under callgrind for `requests` requests after the warm-up: the instructions of
/// the whole process and per function.
fn once(
    opts: &Options,
    env: &ProxyEnv<'_>,
    contender: Contender,
    requests: u64,
    dir: &Path,
) -> Result<(u64, BTreeMap<String, u64>), String> {
    let mut upstreams = Upstreams::start(None, 1, opts.body_bytes)?;
    let routing = Routing {
        listen: process::free_addr()?,
        v1: upstreams.v1,
        v2: upstreams.v2,
        v1_weight: 90,
        threads: 1,
    };
    let out = dir.join(format!("callgrind.{}.{requests}.out", contender.name()));
    let proxy = Proxy::start(
        contender,
        &routing,
        &ProxyEnv {
            cpus: None,
            callgrind_out: Some(&out),
            ..*env
        },
    )?;
    let url = format!("http://{}/pay", proxy.addr);
    h2load(&url, WARMUP)?;
    let before = upstreams.counts()?;
    h2load(&url, requests)?;
    let after = upstreams.counts()?;
    drop(proxy);
    let served = (after.0 + after.1) - (before.0 + before.1);
    if served != requests {
        return Err(format!(
            "{} under callgrind: {served} of {requests} requests reached the upstreams",
            contender.name()
        ));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let total = callgrind::parse_totals(&text)
        .ok_or_else(|| format!("{}: no totals line", out.display()))?;
    let annotated = Command::new("callgrind_annotate")
        .args(["--auto=no", "--threshold=100"])
        .arg(&out)
        .output()
        .map_err(|e| format!("callgrind_annotate: {e}"))?;
    Ok((
        total,
        callgrind::parse_annotate(&String::from_utf8_lossy(&annotated.stdout)),
    ))
}

/// Instructions per request of every proxy among the contenders, and weir's costliest
/// functions. A proxy that cannot be measured is a note, not the end of the run.
pub(super) fn run(opts: &Options, env: &ProxyEnv<'_>) -> Result<Counts, String> {
    if !super::tools::have("valgrind") || !super::tools::have("callgrind_annotate") {
        return Err("valgrind is missing: apt-get install -y valgrind".into());
    }
    let dir = tempfile::Builder::new()
        .prefix("weir-callgrind-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let (short, long) = callgrind::REQUESTS;
    let mut counts = Counts {
        requests: long - short,
        connections: CONNECTIONS,
        body_bytes: opts.body_bytes,
        ..Counts::default()
    };
    for &contender in opts.contenders.iter().filter(|c| c.routes()) {
        eprintln!("compare: {} under callgrind", contender.name());
        let both = once(opts, env, contender, short, dir.path()).and_then(|a| {
            let b = once(opts, env, contender, long, dir.path())?;
            Ok((a, b))
        });
        match both {
            Ok(((t1, a1), (t2, a2))) => {
                let per = t2.saturating_sub(t1) as f64 / (long - short) as f64;
                eprintln!("compare:   {per:.0} instructions per request");
                counts.per_request.push((contender, per));
                if contender == Contender::Weir {
                    counts.weir_top = callgrind::per_request_top(&a1, &a2, long - short, 25);
                }
            }
            Err(e) => {
                eprintln!("compare:   not measured: {e}");
                counts
                    .notes
                    .push(format!("{}: not measured ({e})", contender.name()));
            }
        }
    }
    Ok(counts)
}
