//! One contender in one shape, from fresh processes: upstreams, the proxy, the header probes,
//! a warm-up, the saturation run with the shape's load tool, the fixed-rate run when the
//! shape has one, and what the proxy's processes used meanwhile.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::ab;
use crate::args::{Contender, Options};
use crate::configs::Routing;
use crate::oha::{self, LoadRun, LoadStats};
use crate::process::{self, Proxy, ProxyEnv, Upstreams};
use crate::procfs;
use crate::report::{Resources, Row, Split};
use crate::shapes::{LoadTool, Shape};
use crate::wrk;

/// `x-canary: true` probes sent through each proxy before the load; all must reach v2.
const HEADER_PROBES: u64 = 200;

/// Busy share of the machine under which it counts as quiet, percent.
const QUIET_PERCENT: f64 = 10.0;

/// Which cores the proxy and the load get for a thread count.
pub(super) struct Placement {
    pub(super) proxy: Option<String>,
    pub(super) load: Option<String>,
    /// Threads for the load tool and for the upstreams.
    pub(super) load_threads: u32,
}

pub(super) fn placement(opts: &Options, threads: u32, cores: usize) -> Placement {
    let cores = cores as u32;
    if opts.pin && threads < cores {
        let range = |a: u32, b: u32| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        };
        Placement {
            proxy: Some(range(0, threads - 1)),
            load: Some(range(threads, cores - 1)),
            load_threads: cores - threads,
        }
    } else {
        Placement {
            proxy: None,
            load: None,
            load_threads: cores.max(1),
        }
    }
}

/// Runs a load tool to completion; its stdout, or what it said on failure.
fn run_tool(cpus: Option<&str>, program: &str, args: Vec<String>) -> Result<String, String> {
    let out = process::pinned(cpus, program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} failed ({}): {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(super) fn oha(run: &LoadRun, cpus: Option<&str>) -> Result<LoadStats, String> {
    oha::parse(&run_tool(cpus, "oha", oha::args(run))?)
}

/// The saturation run with `tool`; for `ab -k`, also the share of responses that kept the
/// connection open, percent.
fn saturate(
    tool: LoadTool,
    run: &LoadRun,
    cpus: Option<&str>,
    wrk_script: &Path,
) -> Result<(LoadStats, Option<f64>), String> {
    match tool {
        LoadTool::Oha => Ok((oha(run, cpus)?, None)),
        LoadTool::Wrk => {
            let script = wrk_script.display().to_string();
            Ok((
                wrk::parse(&run_tool(cpus, "wrk", wrk::args(run, &script))?)?,
                None,
            ))
        }
        LoadTool::AbKeepAlive => {
            let stats = ab::parse(&run_tool(cpus, "ab", ab::args(run))?)?;
            let done = stats.load.requests + stats.load.errors;
            let kept = if done == 0 {
                0.0
            } else {
                stats.keep_alive as f64 * 100.0 / done as f64
            };
            Ok((stats.load, Some(kept)))
        }
    }
}

/// The share of the machine's CPU in use over `window`, percent.
fn machine_busy_percent(window: Duration) -> f64 {
    let (b0, t0) = procfs::machine_ticks();
    std::thread::sleep(window);
    let (b1, t1) = procfs::machine_ticks();
    if t1 <= t0 {
        0.0
    } else {
        (b1 - b0) as f64 * 100.0 / (t1 - t0) as f64
    }
}

/// Waits, up to `limit`, until the machine is quiet (under 10% busy over a second) before a
/// contender starts: on a shared machine this keeps another user's build out of most runs.
pub(super) fn wait_for_quiet(limit: Duration) {
    if limit.is_zero() {
        return;
    }
    let start = std::time::Instant::now();
    let mut busy = machine_busy_percent(Duration::from_secs(1));
    if busy < QUIET_PERCENT {
        return;
    }
    eprintln!("compare:   machine {busy:.0}% busy: waiting up to {limit:?} for it to quieten");
    while busy >= QUIET_PERCENT && start.elapsed() < limit {
        busy = machine_busy_percent(Duration::from_secs(1));
    }
    if busy >= QUIET_PERCENT {
        eprintln!("compare:   still {busy:.0}% busy: measuring anyway (see others' CPU)");
    }
}

/// CPU counters taken around a load run, clock ticks.
#[derive(Clone, Copy)]
struct Snapshot {
    machine_busy: u64,
    machine_total: u64,
    proxy: u64,
    proxy_user: u64,
    upstreams: u64,
    /// The harness and the load tool runs it has waited for.
    own: u64,
}

impl Snapshot {
    fn take(proxy: Option<u32>, upstreams: u32) -> Snapshot {
        let (machine_busy, machine_total) = procfs::machine_ticks();
        let proxy_usage = proxy.map(procfs::usage).unwrap_or_default();
        Snapshot {
            machine_busy,
            machine_total,
            proxy: proxy_usage.cpu_ticks,
            proxy_user: proxy_usage.user_ticks,
            upstreams: procfs::usage(upstreams).cpu_ticks,
            own: procfs::own_and_waited_ticks(),
        }
    }

    /// The share of the machine's CPU that processes outside the run took between `a` and
    /// `b`, percent.
    fn others_percent(a: &Snapshot, b: &Snapshot) -> f64 {
        let total = b.machine_total.saturating_sub(a.machine_total);
        let ours = (b.proxy + b.upstreams + b.own).saturating_sub(a.proxy + a.upstreams + a.own);
        let busy = b.machine_busy.saturating_sub(a.machine_busy);
        if total == 0 {
            0.0
        } else {
            busy.saturating_sub(ours) as f64 * 100.0 / total as f64
        }
    }
}

/// What every measurement of a run shares.
pub(super) struct Bench<'a> {
    pub(super) opts: &'a Options,
    pub(super) env: ProxyEnv<'a>,
    /// wrk's Lua script ([`wrk::SCRIPT`]) on disk.
    pub(super) wrk_script: &'a Path,
}

/// Measures `contender` in `shape`, from fresh processes.
pub(super) fn measure(
    bench: &Bench<'_>,
    contender: Contender,
    shape: &Shape,
    place: &Placement,
) -> Result<Row, String> {
    let opts = bench.opts;
    let mut upstreams =
        Upstreams::start(place.load.as_deref(), place.load_threads, shape.body_bytes)?;
    let routing = Routing {
        listen: process::free_addr()?,
        v1: upstreams.v1,
        v2: upstreams.v2,
        v1_weight: 90,
        threads: shape.threads,
    };
    let env = ProxyEnv {
        cpus: place.proxy.as_deref(),
        ..bench.env
    };
    let proxy = match contender {
        Contender::Direct => None,
        _ => Some(Proxy::start(contender, &routing, &env)?),
    };
    let target = proxy.as_ref().map_or(upstreams.v1, |p| p.addr);
    let load = |duration: Option<Duration>,
                requests: u64,
                rate: Option<u32>,
                headers: Vec<String>| LoadRun {
        url: format!("http://{target}/pay"),
        connections: shape.connections,
        duration,
        requests,
        rate,
        headers,
        threads: place.load_threads,
    };
    let cpus = place.load.as_deref();

    let header_rule_ok = if contender.routes() {
        let before = upstreams.counts()?;
        let probe = oha(
            &load(None, HEADER_PROBES, None, vec!["x-canary: true".into()]),
            cpus,
        )?;
        let after = upstreams.counts()?;
        Some(probe.errors == 0 && after.0 == before.0 && after.1 - before.1 == HEADER_PROBES)
    } else {
        None
    };

    oha(&load(Some(opts.warmup), 0, None, vec![]), cpus)?;

    let proxy_pid = proxy.as_ref().map(Proxy::pid);
    let upstream_pid = upstreams.pid();
    let hz = procfs::ticks_per_second() as f64;
    let snap = || Snapshot::take(proxy_pid, upstream_pid);
    let counts0 = upstreams.counts()?;
    let s0 = snap();
    let (saturation, keep_alive_percent) = saturate(
        shape.tool,
        &load(Some(opts.duration), 0, None, vec![]),
        cpus,
        bench.wrk_script,
    )?;
    let s1 = snap();
    let fixed = if shape.fixed_rate {
        Some(oha(
            &load(Some(opts.duration), 0, Some(opts.rate), vec![]),
            cpus,
        )?)
    } else {
        None
    };
    let s2 = snap();
    let counts1 = upstreams.counts()?;

    let resources = proxy_pid.map(|pid| {
        let usage = procfs::usage(pid);
        let sat_cpu_s = (s1.proxy - s0.proxy) as f64 / hz;
        let fixed_cpu_s = (s2.proxy - s1.proxy) as f64 / hz;
        let per = |x: f64, n: u64| if n > 0 { x / n as f64 } else { 0.0 };
        Resources {
            cpu_s_per_10k: per(fixed_cpu_s * 10_000.0, fixed.map_or(0, |f| f.requests)),
            saturation_cpu_percent: if saturation.duration_s > 0.0 {
                sat_cpu_s * 100.0 / saturation.duration_s / shape.threads as f64
            } else {
                0.0
            },
            user_us_per_request: per(
                (s1.proxy_user - s0.proxy_user) as f64 * 1e6 / hz,
                saturation.requests,
            ),
            peak_rss_kib: usage.peak_rss_kib,
            processes: usage.processes,
        }
    });
    Ok(Row {
        contender,
        shape: shape.clone(),
        threads: shape.threads,
        saturation,
        fixed,
        keep_alive_percent,
        resources,
        others_cpu_percent: [
            Snapshot::others_percent(&s0, &s1),
            if fixed.is_some() {
                Snapshot::others_percent(&s1, &s2)
            } else {
                0.0
            },
        ],
        split: contender.routes().then_some(Split {
            v1: counts1.0 - counts0.0,
            v2: counts1.1 - counts0.1,
        }),
        header_rule_ok,
        rounds_rps: Vec::new(),
        rounds_vs_nginx: Vec::new(),
    })
}
