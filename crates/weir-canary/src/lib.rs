//! Progressive delivery for weir: a Flagger-shaped `Canary` spec, a plan of stages, metric
//! gates over weir's Istio-named metrics, and a controller that moves a canary from 0% to
//! promotion, or back to 0% within a guard period of a breach.
//!
//! The pieces plug together at [`CanaryRun`]: a [`CanarySpec`], a [`MetricSource`] (a
//! sidecar's registry in-process, scraped `/metrics`, or Prometheus), a [`WeightSink`] (the
//! in-process `LiveTable`, sidecars' admin APIs, or the VirtualService file) and, for tests, a
//! [`FakeClock`]. The run reports progress as [`Event`]s and ends with a [`Report`].
//!
//! ```
//! use weir_canary::*;
//!
//! let spec = CanarySpec::from_yaml("canary.yaml", r#"
//! apiVersion: flagger.app/v1beta1
//! kind: Canary
//! metadata: {name: payment-svc}
//! spec:
//!   analysis:
//!     interval: 1m
//!     threshold: 2
//!     stepWeights: [10, 50]
//!     metrics:
//!       - {name: request-success-rate, thresholdRange: {min: 99}, interval: 30s}
//! "#)?;
//! assert_eq!(spec.plan.weights(), vec![10, 50]);
//!
//! // The canary's metrics, as a sidecar exports them (here: a healthy v2, 100 requests a second).
//! let clock = FakeClock::new();
//! let t = clock.clone();
//! let mut source = ScrapeSource::from_text(move || {
//!     let n = t.elapsed().as_secs() * 100;
//!     format!("istio_requests_total{{destination_version=\"v2\",response_code=\"200\"}} {n}\n")
//! });
//! // Weights go to a VirtualService file.
//! let dir = std::env::temp_dir().join(format!("weir-canary-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let vs = dir.join("vs.yaml");
//! std::fs::write(&vs, "kind: VirtualService\nmetadata:\n  name: payment-svc\nspec:\n  http:\n  - route:\n    - destination: {host: p, subset: v1}\n      weight: 100\n    - destination: {host: p, subset: v2}\n      weight: 0\n")?;
//! let mut sink = FileSink::new(&vs);
//!
//! let report = CanaryRun::new(&spec, &mut source, &mut sink).clock(clock).run();
//! assert!(report.succeeded(), "{}", report.reason);
//! assert!(std::fs::read_to_string(&vs)?.contains("weir.dev/stable-subset: v2"));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod clock;
mod controller;
mod event;
mod exposition;
pub mod in_process;
mod plan;
mod replicas;
mod report;
mod sink;
mod source;
mod spec;
mod template;
mod transport;
mod units;
mod webhook;

pub use clock::{Clock, FakeClock, SystemClock};
pub use controller::{Abort, CanaryRun};
pub use event::{Event, EventKind, Phase};
pub use exposition::{
    ExpositionError, REQUEST_DURATION, REQUESTS_TOTAL, SampleError, SeriesFilter, Snapshot,
    SnapshotBuilder, VersionStats, histogram_quantile,
};
pub use plan::{Plan, Stage};
pub use replicas::{ReplicaSet, Resolve, SystemResolver};
pub use report::{
    Check, GateResult, HookResult, Outcome, Report, ReportError, RollbackLatency, Sample, Trigger,
    Verdict,
};
pub use sink::{
    AdminSink, Confirmation, DnsAdminSink, Drift, FileSink, LiveSink, ReplicaChange, SinkError,
    Split, WeightSink,
};
pub use source::{
    BuiltinQueries, MetricSource, Observation, PrometheusSource, ScrapeSource, SourceError,
};
pub use spec::{
    Analysis, CanarySpec, DarkLaunch, FastGuard, Gate, HookKind, Metric, SpecError, StringMatch,
    Target, Webhook,
};
pub use template::FlaggerQueries;
pub use transport::TransportError;
pub use units::human_micros;
pub use webhook::{HttpWebhooks, WebhookClient, WebhookError, WebhookPayload};
