//! `weir canary`: drives a canary from 0% to promotion behind metric gates, or back to 0%,
//! against running sidecars; and the in-process wiring `weir serve --canary` and `weir demo`
//! share.
//!
//! ```text
//! weir canary --spec config/canary.yaml --admin http://127.0.0.1:15000
//! weir canary --spec canary.yaml --admin http://10.0.0.7:15000 --admin http://10.0.0.8:15000 --token "$T"
//! weir canary --spec canary.yaml --admin http://127.0.0.1:15000 --prometheus http://127.0.0.1:9090
//! weir canary --spec canary.yaml --admin http://127.0.0.1:15000 --file vs.yaml   # ConfigMap-driven
//! ```
//!
//! Metrics come from Prometheus with `--prometheus`, else from every sidecar's `/metrics`,
//! scraped and summed. Weights go to every sidecar's admin API (all must confirm), or with
//! `--file` into the VirtualService file the sidecars watch. Exit 0 promoted, 1 rolled back
//! or failed, 2 usage (a refused spec, no metric source, bad arguments).

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use weir_canary::{
    Abort, AdminSink, CanaryRun, CanarySpec, Event, EventKind, FileSink, LiveSink, MetricSource,
    Outcome, Phase, PrometheusSource, Report, ScrapeSource, SpecError, Trigger, WeightSink,
};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use weir_proxy::{Metrics, Sidecar};

#[derive(clap::Args, Debug)]
pub struct CanaryArgs {
    /// The Canary document (Flagger's `flagger.app/v1beta1` shape plus `spec.weir`).
    #[arg(long, value_name = "FILE")]
    spec: PathBuf,
    /// A sidecar's admin API, e.g. http://127.0.0.1:15000; repeat for every replica. Weights
    /// go to all of them (unless --file) and their /metrics are summed (unless --prometheus).
    #[arg(long, value_name = "URL")]
    admin: Vec<String>,
    /// The sidecars' admin token (`weir serve --admin-token`), sent as `Authorization: Bearer`.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Read the gates from this Prometheus (e.g. http://127.0.0.1:9090) instead of scraping
    /// the sidecars. Required for custom PromQL metrics.
    #[arg(long, value_name = "URL")]
    prometheus: Option<String>,
    /// Write the weights into this VirtualService file (rewritten in place; the sidecars
    /// reload it) instead of calling the admin APIs.
    #[arg(long, value_name = "CONFIG")]
    file: Option<PathBuf>,
    /// Where report.json and report.svg go.
    #[arg(long, value_name = "DIR", default_value = "weir-report")]
    report: PathBuf,
}

/// `weir canary`.
pub fn run(args: CanaryArgs) -> Result<ExitCode> {
    let spec = match load_spec(&args.spec) {
        Ok(spec) => spec,
        Err(code) => return Ok(code),
    };
    let admins: Vec<String> = args.admin.iter().map(|a| base_url(a)).collect();
    let mut source: Box<dyn MetricSource> = match (&args.prometheus, admins.is_empty()) {
        (Some(url), _) => {
            Box::new(PrometheusSource::new(base_url(url)).filter(spec.series_filter()))
        }
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
    let mut sink: Box<dyn WeightSink> = match &args.file {
        Some(path) => Box::new(FileSink::new(path)),
        None if admins.is_empty() => {
            eprintln!(
                "weir canary: nowhere to set weights: pass the sidecars' --admin URL, or --file CONFIG"
            );
            return Ok(ExitCode::from(2));
        }
        None => {
            let sink = AdminSink::new(admins.clone());
            Box::new(match &args.token {
                Some(t) => sink.token(t.clone()),
                None => sink,
            })
        }
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

/// 0 promoted, 2 refused before anything changed, 1 otherwise.
fn exit_code(report: &Report) -> ExitCode {
    match report.outcome {
        Outcome::Promoted => ExitCode::SUCCESS,
        Outcome::NotStarted => ExitCode::from(2),
        Outcome::RolledBack => ExitCode::from(1),
    }
}

/// `http://` added when missing, no trailing slash.
fn base_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
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

// === the in-process controller ===

/// Runs a canary inside a sidecar: the sidecar's own registry is the metric source (no HTTP,
/// no scrape interval) and its live table the sink (a change is in force for the next
/// request). `weir serve --canary` and `weir demo` use it; the caller picks the thread.
pub fn run_in_process(
    spec: &CanarySpec,
    sidecar: &Sidecar,
    abort: Abort,
    mut observer: impl FnMut(&Event),
) -> Report {
    let metrics = Arc::clone(&sidecar.metrics);
    let live = Arc::clone(&sidecar.live);
    let mut source =
        ScrapeSource::from_text(move || metrics.encode(&live)).filter(spec.series_filter());
    let mut sink = LiveSink::new(Arc::clone(&sidecar.live)).origin(format!("canary {}", spec.name));
    let metrics = Arc::clone(&sidecar.metrics);
    let gauges = CanaryGauges::registered(&metrics);
    let name = spec.name.clone();
    CanaryRun::new(spec, &mut source, &mut sink)
        .abort_on(abort)
        .on_event(move |e| {
            if e.kind == EventKind::RolledBack {
                metrics.record_rollback();
            }
            gauges.record(&name, e.phase, e.canary_weight);
            observer(e);
        })
        .run()
}

type NameLabels = Vec<(String, String)>;

/// The canary's own gauges, as Flagger exports them, registered on the sidecar's metrics so
/// that `GET /metrics` serves them beside the proxy's: `weir_canary_phase{canary, phase}`
/// (one-hot over Flagger's phases), `weir_canary_status{canary}` and
/// `weir_canary_weight{canary}`.
#[derive(Clone)]
pub struct CanaryGauges {
    phase: Family<NameLabels, Gauge>,
    status: Family<NameLabels, Gauge>,
    weight: Family<NameLabels, Gauge>,
}

impl CanaryGauges {
    /// The three families on `metrics`, registered by the first run of the process and
    /// shared by later ones (`weir demo` runs two canaries on one sidecar).
    pub fn registered(metrics: &Metrics) -> Self {
        CanaryGauges {
            phase: metrics.extension(
                "weir_canary_phase",
                "Phase of each canary run in this process: 1 for the phase it is in, 0 for the others",
            ),
            status: metrics.extension(
                "weir_canary_status",
                "Canary status as Flagger's flagger_canary_status: 0 running, 1 succeeded, 2 failed",
            ),
            weight: metrics.extension(
                "weir_canary_weight",
                "Weight of the canary subset set by the canary run (points)",
            ),
        }
    }

    /// Records where a run is.
    pub fn record(&self, canary: &str, phase: Phase, weight: u32) {
        const PHASES: [Phase; 6] = [
            Phase::Initialized,
            Phase::Progressing,
            Phase::WaitingPromotion,
            Phase::Promoting,
            Phase::Succeeded,
            Phase::Failed,
        ];
        for p in PHASES {
            let labels = vec![
                ("canary".to_string(), canary.to_string()),
                ("phase".to_string(), p.to_string()),
            ];
            self.phase.get_or_create(&labels).set(i64::from(p == phase));
        }
        let status = match phase {
            Phase::Succeeded => 1,
            Phase::Failed => 2,
            _ => 0,
        };
        let name = vec![("canary".to_string(), canary.to_string())];
        self.status.get_or_create(&name).set(status);
        self.weight.get_or_create(&name).set(i64::from(weight));
    }
}

/// `weir serve --canary SPEC [--report DIR]`: a canary run inside the sidecar, on its own
/// thread, started once the sidecar serves.
pub struct ServeCanary {
    spec: CanarySpec,
    report: Option<PathBuf>,
}

/// A running in-process canary.
pub struct CanaryThread {
    abort: Abort,
    done: std::sync::mpsc::Receiver<()>,
}

impl ServeCanary {
    /// Loads and checks the spec: a refused spec stops `weir serve` before it serves.
    pub fn load(spec: &Path, report: Option<PathBuf>) -> Result<Self> {
        let spec = CanarySpec::load(spec)
            .map_err(|e| anyhow::anyhow!("--canary {}: {e}", spec.display()))?;
        Ok(ServeCanary { spec, report })
    }

    /// Starts the run on a dedicated thread: the controller sleeps and blocks between ticks,
    /// which must not happen on the proxy's runtime.
    pub fn start(self, sidecar: Arc<Sidecar>) -> Result<CanaryThread> {
        let abort = Abort::default();
        let (tx, done) = std::sync::mpsc::channel();
        let stop = abort.clone();
        std::thread::Builder::new()
            .name("weir-canary".into())
            .spawn(move || {
                let spec = &self.spec;
                tracing::info!(
                    target: "weir::canary",
                    canary = %spec.name,
                    virtual_service = %spec.target.virtual_service,
                    stages = ?spec.plan.weights(),
                    "canary started in-process"
                );
                let report = run_in_process(spec, &sidecar, stop, log_event);
                let outcome = format!(
                    "canary {} ended {}: {}",
                    report.name, report.phase, report.reason
                );
                if report.succeeded() {
                    tracing::info!(target: "weir::canary", "{outcome}");
                } else {
                    tracing::warn!(target: "weir::canary", "{outcome}");
                }
                if let Some(rb) = &report.rollback {
                    tracing::warn!(target: "weir::canary", "{}", describe_rollback(&report, rb));
                }
                if let Some(dir) = &self.report {
                    match report.write_to(dir) {
                        Ok(()) => tracing::info!(
                            target: "weir::canary",
                            "canary report written to {}",
                            dir.display()
                        ),
                        Err(e) => tracing::warn!(target: "weir::canary", "{e}"),
                    }
                }
                let _ = tx.send(());
            })
            .context("cannot start the canary thread")?;
        Ok(CanaryThread { abort, done })
    }
}

impl CanaryThread {
    /// Aborts a run still going (its canary is rolled back at the next guard tick) and waits
    /// up to `wait` for its report.
    pub fn stop(self, wait: Duration) {
        self.abort.abort();
        if self.done.recv_timeout(wait).is_err() {
            tracing::warn!(target: "weir::canary", "the canary run did not stop in {wait:?}");
        }
    }
}

/// Logs a canary event through `tracing` (`weir serve --canary`).
pub fn log_event(e: &Event) {
    match e.kind {
        EventKind::Guard => tracing::debug!(target: "weir::canary", "{e}"),
        EventKind::Breach | EventKind::Warning | EventKind::RolledBack => {
            tracing::warn!(target: "weir::canary", "{e}")
        }
        _ => tracing::info!(target: "weir::canary", "{e}"),
    }
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
        println!("{}", describe_rollback(report, rb));
    }
}

/// One line on a rollback's timing: the SLA weir owns.
pub fn describe_rollback(report: &Report, rb: &weir_canary::RollbackLatency) -> String {
    if let Some(err) = &rb.error {
        return format!("rollback: {err}");
    }
    let stable = match rb.stable_seen_after_us {
        Some(us) => format!(
            ", first request on {} {} later",
            report.target.stable_subset,
            micros(us)
        ),
        None => String::new(),
    };
    format!(
        "rollback set off by {}: canary at 0% in force {} after detection (sink {}){stable}",
        trigger_name(rb.trigger),
        micros(rb.detected_to_in_force_us),
        rb.sink_us.map_or_else(|| "n/a".to_string(), micros),
    )
}

/// What set a rollback off, for humans.
pub fn trigger_name(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::FastGuard => "the fast guard",
        Trigger::Threshold => "failed checks reaching the threshold",
        Trigger::RollbackWebhook => "a rollback webhook",
        Trigger::Aborted => "an abort",
        Trigger::SinkError => "a weight sink error",
        Trigger::Refused => "a refusal",
    }
}

/// µs as `850 µs`, `12.3 ms` or `1.20 s`.
pub fn micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_a_scheme_and_lose_the_trailing_slash() {
        assert_eq!(base_url("127.0.0.1:15000"), "http://127.0.0.1:15000");
        assert_eq!(base_url("http://a:1/"), "http://a:1");
    }

    #[test]
    fn the_example_spec_is_the_lessons_analysis() {
        let spec = CanarySpec::from_yaml(
            "config/canary.yaml",
            include_str!("../../../config/canary.yaml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.plan.weights(), vec![10, 20, 30, 40, 50]);
        assert_eq!(spec.analysis.threshold, 5);
        assert_eq!(spec.analysis.interval, Duration::from_secs(300));
        assert_eq!(spec.analysis.gates.len(), 2);
        assert!(spec.analysis.webhooks.is_empty(), "no unreachable hook");
        assert_eq!(spec.target.rule.as_deref(), Some("canary-split"));
        assert!(spec.analysis.fast_guard.is_some());
    }

    #[test]
    fn micros_pick_a_readable_unit() {
        assert_eq!(micros(850), "850 µs");
        assert_eq!(micros(12_340), "12.3 ms");
        assert_eq!(micros(1_200_000), "1.20 s");
    }
}
