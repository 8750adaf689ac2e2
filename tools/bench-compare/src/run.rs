//! A whole comparison: tools checked, weir built, every contender measured round after round,
//! the table written. [`main`] is what both entry points call.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use crate::args::{self, Contender, Options};
use crate::callgrind;
use crate::configs::Routing;
use crate::machine;
use crate::oha::{self, LoadRun, LoadStats};
use crate::process::{self, Proxy, ProxyEnv, Upstreams};
use crate::procfs;
use crate::report::{self, Report, Resources, Row, RunInfo, Split};
use crate::upstream;

/// `x-canary: true` probes sent through each proxy before the load; all must reach v2.
const HEADER_PROBES: u64 = 200;

/// How the harness was started, which decides whether it runs and how it names itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The root package's `compare` bench target: runs only under `cargo bench` (which passes
    /// `--bench`), so that `cargo test --benches` and CI's build do not start a load.
    CargoBench,
    /// The `bench-compare` binary (`cargo run --release -p bench-compare -- ...`): always runs.
    Binary,
}

impl Entry {
    /// The command that reproduces a run, as written into the results.
    fn command(self, shown: &[&str]) -> String {
        let base = match self {
            Entry::CargoBench => "cargo bench --bench compare",
            Entry::Binary => "cargo run --release -p bench-compare",
        };
        if shown.is_empty() {
            base.to_string()
        } else {
            format!("{base} -- {}", shown.join(" "))
        }
    }
}

/// Runs the harness with the arguments after the program name; the exit code is the process's.
/// `upstreams THREADS BODY` as the first arguments runs the two upstream servers instead (the
/// harness starts itself again that way).
pub fn main(argv: Vec<String>, entry: Entry) -> ExitCode {
    if argv.first().map(String::as_str) == Some("upstreams") {
        let threads = argv.get(1).and_then(|t| t.parse().ok()).unwrap_or(1);
        let body = argv.get(2).and_then(|b| b.parse().ok()).unwrap_or(1024);
        upstream::run(threads, body);
    }
    let opts = match args::parse(argv.clone()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("compare: {e}");
            return ExitCode::from(2);
        }
    };
    if opts.help {
        print!("{}", args::USAGE);
        return ExitCode::SUCCESS;
    }
    if entry == Entry::CargoBench && !opts.bench_mode {
        println!(
            "compare: not run outside `cargo bench` (try `cargo bench --bench compare`, or \
             `cargo run --release -p bench-compare`)"
        );
        return ExitCode::SUCCESS;
    }
    let shown: Vec<&str> = argv
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--bench")
        .collect();
    let command = entry.command(&shown);
    match run(&opts, command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace this crate sits in (`tools/bench-compare` -> `.`): where the lesson's config,
/// `target/` and `benches/results/` are.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tools/bench-compare sits two levels below the workspace root")
        .to_path_buf()
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure oha, taskset, nginx and haproxy are there, installing the proxies from Debian's
/// packages when allowed, or saying exactly what to install.
fn check_tools(opts: &Options) -> Result<(), String> {
    if !have("oha") {
        if !opts.install {
            return Err("the load tool is missing: cargo install oha --locked".into());
        }
        eprintln!("compare: installing the load tool (cargo install oha --locked)");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["install", "oha", "--locked"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok || !have("oha") {
            return Err(
                "could not install oha: run `cargo install oha --locked` and put \
                 ~/.cargo/bin on PATH"
                    .into(),
            );
        }
    }
    if opts.pin && !have("taskset") {
        return Err("taskset is missing: apt-get install -y util-linux (or pass --no-pin)".into());
    }
    let mut missing = Vec::new();
    if opts.contenders.contains(&Contender::Nginx) && !have("nginx") {
        missing.push("nginx-light");
    }
    if opts.contenders.contains(&Contender::Haproxy) && !have("haproxy") {
        missing.push("haproxy");
    }
    if missing.is_empty() {
        return Ok(());
    }
    let what = format!("apt-get install -y {}", missing.join(" "));
    if !opts.install {
        return Err(format!(
            "missing proxies: {what} (or leave them out with --only)"
        ));
    }
    eprintln!("compare: installing {} ({what})", missing.join(", "));
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err(format!(
            "could not install them; as root: apt-get update && {what} (or --only direct,weir)"
        ));
    }
    Ok(())
}

/// `cargo build --release -p weir`, unless a binary was given.
fn weir_binary(opts: &Options) -> Result<PathBuf, String> {
    if let Some(bin) = &opts.weir_bin {
        return Ok(bin.clone());
    }
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("compare: building weir in release");
    let ok = Command::new(cargo)
        .args(["build", "--release", "-p", "weir", "--bin", "weir"])
        .current_dir(&root)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err("cargo build --release -p weir failed".into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release").join("weir"))
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

fn versions(opts: &Options) -> Vec<(String, String)> {
    let mut v = vec![(
        "oha".to_string(),
        first_line("oha", &["--version"]).replace("oha ", ""),
    )];
    let rev = first_line(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    let dirty = !first_line(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "status",
            "--porcelain",
            "--untracked-files=no",
        ],
    )
    .is_empty();
    v.push((
        "weir".into(),
        format!("{rev}{}", if dirty { "+dirty" } else { "" }),
    ));
    if opts.contenders.contains(&Contender::Nginx) {
        v.push((
            "nginx".into(),
            first_line("nginx", &["-v"]).replace("nginx version: nginx/", ""),
        ));
    }
    if opts.contenders.contains(&Contender::Haproxy) {
        let line = first_line("haproxy", &["-v"]);
        let version = line.split_whitespace().nth(2).unwrap_or(&line).to_string();
        v.push(("haproxy".into(), version));
    }
    v
}

/// Which cores the proxy and the load get for a thread count.
struct Placement {
    proxy: Option<String>,
    load: Option<String>,
    /// Threads for oha and for the upstreams.
    load_threads: u32,
}

fn placement(opts: &Options, threads: u32, cores: usize) -> Placement {
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

fn oha(run: &LoadRun, cpus: Option<&str>) -> Result<LoadStats, String> {
    let out = process::pinned(cpus, "oha")
        .args(oha::args(run))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running oha: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "oha failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    oha::parse(&String::from_utf8_lossy(&out.stdout))
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
fn wait_for_quiet(limit: Duration) {
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

/// Busy share of the machine under which it counts as quiet, percent.
const QUIET_PERCENT: f64 = 10.0;

/// CPU counters taken around a load run, clock ticks.
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

/// Measures one contender at one thread count, from fresh processes.
fn measure(
    opts: &Options,
    contender: Contender,
    threads: u32,
    place: &Placement,
    weir: &Path,
    lesson_yaml: &str,
) -> Result<Row, String> {
    let mut upstreams =
        Upstreams::start(place.load.as_deref(), place.load_threads, opts.body_bytes)?;
    let routing = Routing {
        listen: process::free_addr()?,
        v1: upstreams.v1,
        v2: upstreams.v2,
        v1_weight: 90,
        threads,
    };
    let proxy = match contender {
        Contender::Direct => None,
        _ => Some(Proxy::start(
            contender,
            &routing,
            &ProxyEnv {
                weir,
                lesson_yaml,
                cpus: place.proxy.as_deref(),
                callgrind_out: None,
            },
        )?),
    };
    let target = proxy.as_ref().map_or(upstreams.v1, |p| p.addr);
    let load = |duration: Option<Duration>,
                requests: u64,
                rate: Option<u32>,
                headers: Vec<String>| LoadRun {
        url: format!("http://{target}/pay"),
        connections: opts.connections,
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
    let saturation = oha(&load(Some(opts.duration), 0, None, vec![]), cpus)?;
    let s1 = snap();
    let fixed = oha(&load(Some(opts.duration), 0, Some(opts.rate), vec![]), cpus)?;
    let s2 = snap();
    let counts1 = upstreams.counts()?;

    let resources = proxy_pid.map(|pid| {
        let usage = procfs::usage(pid);
        let sat_cpu_s = (s1.proxy - s0.proxy) as f64 / hz;
        let fixed_cpu_s = (s2.proxy - s1.proxy) as f64 / hz;
        Resources {
            cpu_s_per_10k: if fixed.requests > 0 {
                fixed_cpu_s * 10_000.0 / fixed.requests as f64
            } else {
                0.0
            },
            saturation_cpu_percent: if saturation.duration_s > 0.0 {
                sat_cpu_s * 100.0 / saturation.duration_s / threads as f64
            } else {
                0.0
            },
            user_us_per_request: if saturation.requests > 0 {
                (s1.proxy_user - s0.proxy_user) as f64 * 1e6 / hz / saturation.requests as f64
            } else {
                0.0
            },
            peak_rss_kib: usage.peak_rss_kib,
            processes: usage.processes,
        }
    });
    Ok(Row {
        contender,
        threads,
        saturation,
        fixed,
        resources,
        others_cpu_percent: [
            Snapshot::others_percent(&s0, &s1),
            Snapshot::others_percent(&s1, &s2),
        ],
        split: contender.routes().then_some(Split {
            v1: counts1.0 - counts0.0,
            v2: counts1.1 - counts0.1,
        }),
        header_rule_ok,
        rounds_rps: Vec::new(),
    })
}

fn run(opts: &Options, command: String) -> Result<(), String> {
    check_tools(opts)?;
    let weir = if opts.contenders.contains(&Contender::Weir) {
        weir_binary(opts)?
    } else {
        PathBuf::from("weir")
    };
    let lesson_path = workspace_root().join("config/payment-svc.yaml");
    let lesson_yaml = std::fs::read_to_string(&lesson_path)
        .map_err(|e| format!("{}: {e}", lesson_path.display()))?;

    if opts.callgrind {
        return run_callgrind(opts, &weir, &lesson_yaml);
    }
    let machine = machine::Machine::current();
    let load_before = machine::loadavg();
    if load_before[0] > 0.5 {
        eprintln!(
            "compare: load average {:.2}: something else is running, figures will be noisy",
            load_before[0]
        );
    }
    let pinning = if opts.pin && machine.cores >= 2 {
        let t: Vec<String> = opts
            .threads
            .iter()
            .map(|&t| {
                let p = placement(opts, t, machine.cores);
                match (p.proxy, p.load) {
                    (Some(proxy), Some(load)) => format!(
                        "{t} thread(s): proxy on CPU {proxy}, oha + upstreams on CPU {load}"
                    ),
                    _ => format!("{t} thread(s): all processes share every CPU"),
                }
            })
            .collect();
        format!("Pinning (taskset): {}.", t.join("; "))
    } else {
        "No pinning: all processes share every CPU.".into()
    };
    let mut report = Report {
        machine,
        run: RunInfo {
            command,
            duration_s: opts.duration.as_secs_f64(),
            connections: opts.connections,
            rate: opts.rate,
            rounds: opts.rounds,
            body_bytes: opts.body_bytes,
            pinning,
            versions: versions(opts),
            load_before,
            load_after: [0.0; 3],
        },
        rows: Vec::new(),
    };
    let mut failures = Vec::new();
    for &threads in &opts.threads {
        let place = placement(opts, threads, report.machine.cores);
        // Rounds interleave the contenders, so that a burst of noise from another process
        // lands on one round of several contenders rather than on every round of one.
        let mut rounds: Vec<Vec<Row>> = vec![Vec::new(); opts.contenders.len()];
        for round in 1..=opts.rounds {
            for (i, &contender) in opts.contenders.iter().enumerate() {
                eprintln!(
                    "compare: {} with {threads} thread(s), round {round}/{}",
                    contender.name(),
                    opts.rounds
                );
                wait_for_quiet(opts.settle);
                match measure(opts, contender, threads, &place, &weir, &lesson_yaml) {
                    Ok(row) => {
                        eprintln!(
                            "compare:   {:.0} req/s max, p99 {:.3} ms at {} req/s, split {}, \
                             others' CPU {:.0}%",
                            row.saturation.rps,
                            row.fixed.p99_ms,
                            opts.rate,
                            row.split.map_or("v1 only".into(), |s| s.render()),
                            row.others_cpu_percent[0].max(row.others_cpu_percent[1]),
                        );
                        rounds[i].push(row);
                    }
                    Err(e) => {
                        eprintln!("compare:   FAILED: {e}");
                        failures.push(format!(
                            "{} ({threads} thr, round {round}): {e}",
                            contender.name()
                        ));
                    }
                }
            }
        }
        report
            .rows
            .extend(rounds.iter().filter_map(|r| report::median_row(r)));
    }
    report.run.load_after = machine::loadavg();
    let mut md = report::render_markdown(&report);
    if !failures.is_empty() {
        md.push_str("\nNot measured:\n\n");
        for f in &failures {
            md.push_str(&format!("- {f}\n"));
        }
    }
    println!("{md}");
    if let Some(dir) = &opts.out_dir {
        let dir = if dir.is_absolute() {
            dir.clone()
        } else {
            workspace_root().join(dir)
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut json = report::render_json(&report);
        json["not_measured"] = serde_json::json!(failures);
        let date = &report.machine.date;
        let files = [
            (dir.join(format!("{date}.md")), md.clone()),
            (
                dir.join(format!("{date}.json")),
                serde_json::to_string_pretty(&json).unwrap_or_default() + "\n",
            ),
            (dir.join("latest.md"), md),
        ];
        for (path, text) in files {
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!("compare: wrote {}", path.display());
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} contender run(s) failed", failures.len()))
    }
}

/// One proxy under callgrind for `requests` requests after a warm-up: the instructions of
/// the whole process and per function.
fn callgrind_once(
    opts: &Options,
    contender: Contender,
    requests: u64,
    weir: &Path,
    lesson_yaml: &str,
    dir: &Path,
) -> Result<(u64, std::collections::BTreeMap<String, u64>), String> {
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
            weir,
            lesson_yaml,
            cpus: None,
            callgrind_out: Some(&out),
        },
    )?;
    let run = |n: u64| LoadRun {
        url: format!("http://{}/pay", proxy.addr),
        connections: 10,
        duration: None,
        requests: n,
        rate: None,
        headers: vec![],
        threads: 1,
    };
    oha(&run(1_000), None)?;
    let before = upstreams.counts()?;
    let stats = oha(&run(requests), None)?;
    let after = upstreams.counts()?;
    drop(proxy);
    let served = (after.0 + after.1) - (before.0 + before.1);
    if stats.errors > 0 || served != requests {
        return Err(format!(
            "{} under callgrind: {} errors, {served} of {requests} requests reached the upstreams",
            contender.name(),
            stats.errors
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

/// `--callgrind`: instructions per request of weir and nginx, and weir's costliest functions.
fn run_callgrind(opts: &Options, weir: &Path, lesson_yaml: &str) -> Result<(), String> {
    if !have("valgrind") || !have("callgrind_annotate") {
        return Err("valgrind is missing: apt-get install -y valgrind".into());
    }
    let dir = tempfile::Builder::new()
        .prefix("weir-callgrind-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let machine = machine::Machine::current();
    let (short, long) = callgrind::REQUESTS;
    let mut per_request: Vec<(Contender, f64)> = Vec::new();
    let mut top = Vec::new();
    let mut notes = Vec::new();
    for &contender in &opts.contenders {
        match contender {
            Contender::Direct => continue,
            Contender::Haproxy => {
                notes.push("haproxy: not measured (HAProxy 2.6 stalls under valgrind 3.19)");
                continue;
            }
            Contender::Weir | Contender::Nginx => {}
        }
        eprintln!("compare: {} under callgrind", contender.name());
        let (t1, a1) = callgrind_once(opts, contender, short, weir, lesson_yaml, dir.path())?;
        let (t2, a2) = callgrind_once(opts, contender, long, weir, lesson_yaml, dir.path())?;
        let per = t2.saturating_sub(t1) as f64 / (long - short) as f64;
        eprintln!("compare:   {per:.0} instructions per request");
        per_request.push((contender, per));
        if contender == Contender::Weir {
            top = callgrind::per_request_top(&a1, &a2, long - short, 25);
        }
    }
    let nginx = per_request
        .iter()
        .find(|(c, _)| *c == Contender::Nginx)
        .map(|(_, p)| *p);
    let mut md = format!(
        "# User-space instructions per proxied request (callgrind), {} {} UTC\n\n\
         Machine: {} cores ({}), Linux {}. Command: `cargo bench --bench compare -- \
         --callgrind`. Each proxy with one worker, run twice under valgrind --tool=callgrind \
         ({short} and {long} requests after 1000 warm-up, oha -c 10, {} B bodies); the \
         difference per request. Kernel time (most of a proxy's cost on loopback) is not \
         counted: this is the figure for before/after a hot-path change, not a ranking.\n\n\
         | proxy | instructions / request | vs nginx |\n|---|---:|---:|\n",
        machine.date,
        machine.time,
        machine.cores,
        machine.cpu_model,
        machine.kernel,
        opts.body_bytes
    );
    for (c, per) in &per_request {
        let ratio = nginx.map_or("–".to_string(), |n| format!("{:.2}x", per / n));
        md.push_str(&format!("| {} | {per:.0} | {ratio} |\n", c.name()));
    }
    for n in notes {
        md.push_str(&format!("\n{n}\n"));
    }
    if !top.is_empty() {
        let weir_total = per_request
            .iter()
            .find(|(c, _)| *c == Contender::Weir)
            .map_or(1.0, |(_, p)| *p);
        md.push_str(
            "\nweir's costliest functions, self instructions per request:\n\n\
             | instructions / request | share | function |\n|---:|---:|---|\n",
        );
        for (n, f) in &top {
            let f = f.replace('|', "\\|");
            md.push_str(&format!(
                "| {n:.0} | {:.1}% | `{f}` |\n",
                n * 100.0 / weir_total
            ));
        }
    }
    println!("{md}");
    if let Some(dir) = &opts.out_dir {
        let dir = if dir.is_absolute() {
            dir.clone()
        } else {
            workspace_root().join(dir)
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("callgrind-latest.md");
        std::fs::write(&path, &md).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("compare: wrote {}", path.display());
    }
    Ok(())
}
