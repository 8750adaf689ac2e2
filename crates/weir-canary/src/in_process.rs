//! A canary run inside a [`weir_proxy::Sidecar`] (`weir serve --canary SPEC`, `weir demo`, or
//! any program embedding both crates): the sidecar's own metrics are the source, its live
//! table the sink, and the canary's gauges are registered on its `/metrics`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use weir_proxy::{Metrics, Sidecar};

use crate::controller::{Abort, CanaryRun};
use crate::event::{Event, EventKind, Phase};
use crate::exposition::Snapshot;
use crate::report::Report;
use crate::sink::LiveSink;
use crate::source::ScrapeSource;
use crate::spec::{CanarySpec, SpecError};

/// Runs a canary inside a sidecar: the sidecar's own registry is the metric source (no HTTP,
/// no scrape interval) and its live table the sink (a change is in force for the next
/// request). `weir serve --canary` and `weir demo` use it; the caller picks the thread.
pub fn run(
    spec: &CanarySpec,
    sidecar: &Sidecar,
    abort: Abort,
    mut observer: impl FnMut(&Event),
) -> Report {
    // The sidecar's counters handed over as values each tick: no exposition text written
    // and parsed again.
    let metrics = Arc::clone(&sidecar.metrics);
    let mut source = ScrapeSource::from_snapshots(move |filter| {
        let mut snapshot = Snapshot::builder(filter);
        metrics.for_each_request(|labels, count, buckets| {
            snapshot.requests(labels, count as f64);
            for &(le_ms, cumulative) in buckets {
                snapshot.duration_bucket(labels, le_ms, cumulative as f64);
            }
        });
        metrics.for_each_first_failure(|labels, over_ms, unix_ms| {
            snapshot.first_failure(labels, over_ms, unix_ms as f64);
        });
        Ok(snapshot.finish())
    })
    .filter(spec.series_filter());
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

/// A canary run inside the sidecar on its own thread, started once the sidecar serves
/// (`weir serve --canary SPEC [--report DIR]`).
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
    /// Loads and checks the spec (a refused spec should stop the sidecar before it serves);
    /// the report goes to `report` when the run ends.
    pub fn load(spec: &Path, report: Option<PathBuf>) -> Result<Self, SpecError> {
        Ok(ServeCanary {
            spec: CanarySpec::load(spec)?,
            report,
        })
    }

    /// Starts the run on a dedicated thread: the controller sleeps and blocks between ticks,
    /// which must not happen on the proxy's runtime.
    pub fn start(self, sidecar: Arc<Sidecar>) -> std::io::Result<CanaryThread> {
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
                let report = run(spec, &sidecar, stop, log_event);
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
                    let stable = &report.target.stable_subset;
                    tracing::warn!(target: "weir::canary", "{}", rb.describe(stable));
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
            })?;
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

/// Logs a canary event through `tracing` (target `weir::canary`).
pub fn log_event(e: &Event) {
    match e.kind {
        EventKind::Guard => tracing::debug!(target: "weir::canary", "{e}"),
        EventKind::Breach | EventKind::Warning | EventKind::RolledBack => {
            tracing::warn!(target: "weir::canary", "{e}")
        }
        _ => tracing::info!(target: "weir::canary", "{e}"),
    }
}
