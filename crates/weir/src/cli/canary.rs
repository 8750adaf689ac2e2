//! `weir canary`: drives a canary from 0% to promotion behind metric gates, or back to 0%,
//! against running sidecars.
//!
//! ```text
//! weir canary --spec config/canary.yaml --admin http://127.0.0.1:15000
//! weir canary --spec canary.yaml --admin http://10.0.0.7:15000 --admin http://10.0.0.8:15000 --token "$T"
//! weir canary --spec canary.yaml --admin http://127.0.0.1:15000 --prometheus http://127.0.0.1:9090
//! weir canary --spec canary.yaml --admin-dns checkout-admin:15000 --prometheus http://prometheus:9090
//! weir canary --spec canary.yaml --admin http://127.0.0.1:15000 --file vs.yaml   # ConfigMap-driven
//! weir canary --check canary.yaml            # lint only: exit 0 clean or warnings, 1 errors
//! weir canary --spec canary.yaml --dry-run   # print the plan, touch nothing
//! ```
//!
//! The spec is linted before anything else (unit typos such as a success-rate `min: 0.99`,
//! unknown fields, a `minRequests` the expected traffic cannot reach); an error stops the run
//! with exit 2 before any sidecar is touched, warnings are printed and the run goes on.
//!
//! Metrics come from Prometheus with `--prometheus`, else from every sidecar's `/metrics`,
//! scraped and summed. Weights go to every sidecar's admin API (all must confirm), or with
//! `--file` into the VirtualService file the sidecars watch. Exit 0 promoted, 1 rolled back,
//! 2 usage (a refused spec, no metric source, bad arguments), 3 could not start (preflight:
//! nothing was changed), 4 the rollback itself failed (the canary may still get traffic).

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use weir_canary::{
    Abort, AdminSink, CanaryRun, CanarySpec, DnsAdminSink, Event, EventKind, FileSink,
    FlaggerQueries, MetricSource, Outcome, PrometheusSource, Report, ScrapeSource, SpecError,
    WeightSink,
};

use weir_proxy::admin::client::base_url;
use weir_router::telemetry::label;

#[derive(clap::Args, Debug)]
pub struct CanaryArgs {
    /// The Canary document (Flagger's `flagger.app/v1beta1` shape plus `spec.weir`).
    #[arg(long, value_name = "FILE", required_unless_present = "check")]
    spec: Option<PathBuf>,
    /// Lint this Canary document and exit, touching no sidecar: 0 clean or only warnings,
    /// 1 errors, 2 unreadable.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["spec", "dry_run"])]
    check: Option<PathBuf>,
    /// Print the plan (stages, weights, gates, timings) and exit 0, touching nothing.
    #[arg(long)]
    dry_run: bool,
    /// A sidecar's admin API, e.g. http://127.0.0.1:15000; repeat for every replica. Weights
    /// go to all of them (unless --file) and their /metrics are summed (unless --prometheus).
    #[arg(long, value_name = "URL")]
    admin: Vec<String>,
    /// Find the sidecars by name instead: every address of this headless Service (e.g.
    /// checkout-admin.shop.svc.cluster.local:15000), resolved again on every tick. A new
    /// replica gets the current step's weights before it counts; one that is gone is dropped
    /// and reported. Their /metrics are summed unless --prometheus.
    #[arg(long, value_name = "NAME:PORT", conflicts_with_all = ["admin", "file"], value_parser = parse_name_port)]
    admin_dns: Option<(String, u16)>,
    /// The sidecars' admin token (`weir serve --admin-token`), sent as `Authorization: Bearer`.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Read the gates from this Prometheus (e.g. http://127.0.0.1:9090) instead of scraping
    /// the sidecars. Required for custom PromQL metrics.
    #[arg(long, value_name = "URL")]
    prometheus: Option<String>,
    /// The PromQL of the built-in gates with --prometheus: `flagger` sends Flagger's own Istio
    /// queries (reporter="destination", the Canary's namespace, destination_workload=~ its
    /// spec.targetRef.name), which need inbound sidecars on the canary's pods; `versions`
    /// counts the callers' outbound series (reporter="source") by destination_version.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = Queries::Flagger, requires = "prometheus")]
    queries: Queries,
    /// Write the weights into this VirtualService file (rewritten in place; the sidecars
    /// reload it) instead of calling the admin APIs. The --admin sidecars' /routes confirm
    /// each write ("in force" only once they serve it; a check window under weights not yet
    /// loaded does not count), and a rollback also latches them through their admin API (0%
    /// at once, the dark-launch rule on the stable subset).
    #[arg(long, value_name = "CONFIG", requires = "admin")]
    file: Option<PathBuf>,
    /// With --file: how long the sidecars may take to load a write before the run stops as
    /// a drift (a ConfigMap reaches the pods within the kubelet's sync period: about a
    /// minute; pass 2m there).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = weir_router::parse_duration, requires = "file")]
    confirm_within: std::time::Duration,
    /// Where report.json and report.svg go.
    #[arg(long, value_name = "DIR", default_value = "weir-report")]
    report: PathBuf,
}

/// Which PromQL the built-in gates send to Prometheus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Queries {
    /// Flagger's built-in Istio queries, verbatim.
    Flagger,
    /// weir's per-version queries over the callers' outbound series.
    Versions,
}

/// `weir canary`.
pub fn run(args: CanaryArgs) -> Result<ExitCode> {
    if let Some(path) = &args.check {
        return Ok(check(path));
    }
    let Some(spec_path) = &args.spec else {
        eprintln!("weir canary: pass --spec FILE (or --check FILE to lint one)");
        return Ok(ExitCode::from(2));
    };
    let spec = match load_spec(spec_path) {
        Ok(spec) => spec,
        Err(code) => return Ok(code),
    };
    for w in &spec.warnings.0 {
        eprintln!("{w}");
    }
    if args.dry_run {
        print!("{}", spec.describe_plan());
        return Ok(ExitCode::SUCCESS);
    }
    let admins: Vec<String> = args.admin.iter().map(|a| base_url(a)).collect();
    let dns = match &args.admin_dns {
        None => None,
        Some((host, port)) => match find_replicas(&spec, host, *port, args.token.as_deref()) {
            Some(sink) => Some(sink),
            None => return Ok(ExitCode::from(2)),
        },
    };
    let mut source: Box<dyn MetricSource> = match (&args.prometheus, admins.is_empty()) {
        (Some(url), _) => Box::new(prometheus_source(&spec, base_url(url), args.queries)),
        (None, _) if dns.is_some() => Box::new(
            ScrapeSource::following(dns.as_ref().expect("dns").replicas(), args.token.clone())
                .filter(spec.series_filter()),
        ),
        (None, true) => {
            eprintln!(
                "weir canary: no metric source: pass the sidecars' --admin URL (their /metrics are scraped) or --prometheus URL"
            );
            return Ok(ExitCode::from(2));
        }
        (None, false) => {
            let urls: Vec<String> = admins.iter().map(|a| format!("{a}/metrics")).collect();
            match &args.token {
                None => Box::new(ScrapeSource::new(urls).filter(spec.series_filter())),
                Some(token) => {
                    Box::new(ScrapeSource::with_token(urls, token).filter(spec.series_filter()))
                }
            }
        }
    };
    let admin_sink = || {
        let sink = AdminSink::new(admins.clone());
        match &args.token {
            Some(t) => sink.token(t.clone()),
            None => sink,
        }
    };
    let mut sink: Box<dyn WeightSink> = match (&args.file, dns) {
        (_, Some(dns)) => Box::new(dns),
        (Some(path), None) => Box::new(
            FileSink::new(path)
                .confirmed_by(admin_sink())
                .confirm_within(args.confirm_within),
        ),
        (None, None) if admins.is_empty() => {
            eprintln!(
                "weir canary: nowhere to set weights: pass the sidecars' --admin URL, --admin-dns NAME:PORT, or --file CONFIG"
            );
            return Ok(ExitCode::from(2));
        }
        (None, None) => Box::new(admin_sink()),
    };

    let abort = Abort::default();
    abort_on_signals(abort.clone())?;
    let mut progress = Progress::new(&spec, std::io::stdout().is_terminal());
    let report = CanaryRun::new(&spec, source.as_mut(), sink.as_mut())
        .abort_on(abort)
        .on_event(|e| progress.event(e))
        .run();
    progress.finish();
    print_summary(&report);
    match report.write_to(&args.report) {
        Ok(()) => println!(
            "report: {}, {}",
            args.report.join("report.json").display(),
            args.report.join("report.svg").display()
        ),
        Err(e) => eprintln!("weir canary: {e}"),
    }
    Ok(exit_code(&report))
}

/// `NAME:PORT`, the port after the last colon.
fn parse_name_port(text: &str) -> Result<(String, u16), String> {
    let (name, port) = text.rsplit_once(':').ok_or_else(|| {
        format!("{text:?} has no port: write NAME:PORT, e.g. checkout-admin:15000")
    })?;
    let port = port.parse().map_err(|_| {
        format!("{port:?} is not a port: write NAME:PORT, e.g. checkout-admin:15000")
    })?;
    if name.is_empty() {
        return Err(format!("{text:?} has no name: write NAME:PORT"));
    }
    Ok((
        name.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    ))
}

/// The sink over every replica of a headless Service, resolved once now: `None` (after
/// saying why) when no replica is found.
fn find_replicas(
    spec: &CanarySpec,
    host: &str,
    port: u16,
    token: Option<&str>,
) -> Option<DnsAdminSink> {
    let mut sink = DnsAdminSink::new(host, port);
    if let Some(token) = token {
        sink = sink.token(token);
    }
    for change in sink.refresh(&spec.target) {
        eprintln!("weir canary: {change}");
    }
    let found = sink.replicas().urls();
    if found.is_empty() {
        eprintln!(
            "weir canary: no sidecar found at {host}:{port}: --admin-dns needs the name of a headless Service (one address per ready pod)"
        );
        return None;
    }
    println!("replicas of {host}:{port}: {}", found.join(", "));
    Some(sink)
}

fn prometheus_source(spec: &CanarySpec, url: String, queries: Queries) -> PrometheusSource {
    let source = PrometheusSource::new(url);
    match queries {
        Queries::Flagger => source.flagger(
            FlaggerQueries::new(&spec.namespace, &spec.target.workload),
            &spec.target.canary_version,
        ),
        Queries::Versions => {
            let mut filter = spec.series_filter();
            filter
                .labels
                .insert(label::REPORTER.to_string(), "source".to_string());
            source.filter(filter)
        }
    }
}

/// Loads a spec; a refusal is printed (every finding) and becomes exit code 2.
fn load_spec(path: &Path) -> Result<CanarySpec, ExitCode> {
    CanarySpec::load(path).map_err(|e| {
        match &e {
            SpecError::Io { .. } => eprintln!("weir: {e}"),
            _ => {
                eprint!("{e}");
                if !e.to_string().ends_with('\n') {
                    eprintln!();
                }
            }
        }
        ExitCode::from(2)
    })
}

/// `--check`: every finding, then a one-line verdict. 0 clean or only warnings, 1 errors,
/// 2 the file cannot be read.
fn check(path: &Path) -> ExitCode {
    let name = path.display();
    match CanarySpec::load(path) {
        Ok(spec) => {
            for w in &spec.warnings.0 {
                println!("{w}");
            }
            let n = spec.warnings.0.len();
            if n == 0 {
                println!("{name}: ok, no findings");
            } else {
                println!(
                    "{name}: ok, {n} warning{} (the canary would run)",
                    if n == 1 { "" } else { "s" }
                );
            }
            ExitCode::SUCCESS
        }
        Err(e @ SpecError::Io { .. }) => {
            eprintln!("weir: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            let findings = e.findings();
            for f in &findings {
                println!("{f}");
            }
            let errors = findings.iter().filter(|f| f.is_error()).count();
            let warnings = findings.len() - errors;
            println!(
                "{name}: refused, {errors} error{}, {warnings} warning{} (nothing was changed)",
                if errors == 1 { "" } else { "s" },
                if warnings == 1 { "" } else { "s" }
            );
            ExitCode::from(1)
        }
    }
}

/// 0 promoted, 1 rolled back, 3 could not start (nothing was changed), 4 the rollback
/// failed (the canary may still get traffic). 2 (usage) comes before any run.
fn exit_code(report: &Report) -> ExitCode {
    match report.outcome {
        Outcome::Promoted => ExitCode::SUCCESS,
        Outcome::NotStarted => ExitCode::from(3),
        Outcome::RolledBack if report.rollback.as_ref().is_some_and(|r| r.error.is_some()) => {
            ExitCode::from(4)
        }
        Outcome::RolledBack => ExitCode::from(1),
    }
}

/// The first SIGINT or SIGTERM aborts the run (the canary is rolled back at the next guard
/// tick and the report written); a second one exits at once.
fn abort_on_signals(abort: Abort) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler")?;
    let (mut terminate, mut interrupt) = {
        let _entered = runtime.enter();
        (
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
        )
    };
    std::thread::Builder::new()
        .name("weir-signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut signals = 0;
                loop {
                    tokio::select! {
                        _ = terminate.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                    signals += 1;
                    if signals == 1 {
                        eprintln!(
                            "\nweir canary: stopping: the canary is rolled back to 0% (signal again to exit without waiting)"
                        );
                        abort.abort();
                    } else {
                        eprintln!("weir canary: exiting; the canary may still have traffic");
                        std::process::exit(130);
                    }
                }
            });
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

// === progress ===

/// Live progress: a bar redrawn in place on a terminal, one line per event otherwise (the fast
/// guard's ticks only move the bar).
struct Progress {
    tty: bool,
    stages: usize,
    weights: Vec<u32>,
    last: Option<Event>,
    drawn: bool,
}

impl Progress {
    fn new(spec: &CanarySpec, tty: bool) -> Self {
        Progress {
            tty,
            stages: spec.plan.weights().len(),
            weights: spec.plan.weights(),
            last: None,
            drawn: false,
        }
    }

    fn event(&mut self, e: &Event) {
        let mut out = std::io::stdout().lock();
        if e.kind != EventKind::Guard {
            if self.tty && self.drawn {
                let _ = write!(out, "\r\x1b[2K");
            }
            let _ = writeln!(out, "{e}");
        }
        self.last = Some(e.clone());
        if self.tty {
            let _ = write!(out, "\r\x1b[2K{}", self.bar(e));
            self.drawn = true;
        }
        let _ = out.flush();
    }

    /// `[########------------]  30%  step 2/5  Progressing  success 99.80%  p99 12.0 ms ...`
    fn bar(&self, e: &Event) -> String {
        const WIDTH: usize = 20;
        let filled = (e.canary_weight.min(100) as usize * WIDTH).div_ceil(100);
        let step = self
            .weights
            .iter()
            .position(|w| *w == e.canary_weight)
            .map_or_else(
                || {
                    if e.canary_weight >= 100 {
                        format!("{}/{}", self.stages, self.stages)
                    } else {
                        format!("0/{}", self.stages)
                    }
                },
                |i| format!("{}/{}", i + 1, self.stages),
            );
        format!(
            "[{}{}] {:>3}%  step {step}  {}  success {}  p99 {}  requests {}  failed checks {}/{}",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            e.canary_weight,
            e.phase,
            e.success_rate
                .map_or_else(|| "n/a".to_string(), |r| format!("{r:.2}%")),
            e.p99_ms
                .map_or_else(|| "n/a".to_string(), |p| format!("{p:.1} ms")),
            e.requests
                .map_or_else(|| "n/a".to_string(), |r| r.to_string()),
            e.failed_checks,
            e.threshold,
        )
    }

    fn finish(&mut self) {
        if self.tty && self.drawn {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out);
            let _ = out.flush();
        }
    }
}

fn print_summary(report: &Report) {
    println!(
        "canary {}: {} ({}) after {:.1} s: {}",
        report.name,
        report.phase,
        match report.outcome {
            Outcome::Promoted => "promoted",
            Outcome::RolledBack => "rolled back",
            Outcome::NotStarted => "not started",
        },
        report.duration_ms as f64 / 1000.0,
        report.reason
    );
    if let Some(rb) = &report.rollback {
        println!("{}", rb.describe(&report.target.stable_subset));
    }
}
