//! The sidecar's metrics, under Istio's names and labels, both sides as Istio's sidecar
//! reports them: outbound (`reporter="source"`, this pod in the `source_*` labels) and inbound
//! (`reporter="destination"`, this pod in the `destination_*` labels, the series Flagger's
//! built-in queries select), plus weir's own (`weir_route_weight`, ...). `docs/metrics.md`
//! says how every Istio standard label is filled.
//!
//! This module is the registry and its OpenMetrics encoding; the counters a request touches
//! are in `proxy::telemetry` (every cluster of a table gets a `ClusterSeries` when the table
//! is published, and a request that ends without a response flag finds its series in a fixed
//! slot of it).
//!
//! `istio_requests_total` and the `_count` of `istio_request_duration_milliseconds` are read from
//! the same atomic counter, so the two never disagree in a scrape.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, LabelSetEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use weir_router::{ClusterLabels, LiveTable, Published};

use crate::identity::{PodIdentity, UNKNOWN};
use crate::telemetry::{ClusterSeries, Reporter, RequestSeries, SeriesKey};

/// The content type of [`Metrics::encode`]'s output (OpenMetrics text; Prometheus reads it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub use weir_router::telemetry::DURATION_BUCKETS_MS;

/// `destination_service_name` of requests passed through to an unknown destination (Istio's
/// cluster of that name).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";

/// All of the sidecar's metrics. One per process, shared by the proxy, the admin API and the
/// reloader.
pub struct Metrics {
    registry: RwLock<Registry>,
    /// Embedders' metrics by name (see [`Metrics::extension`]).
    extensions: Mutex<HashMap<String, Box<dyn std::any::Any + Send + Sync>>>,
    identity: PodIdentity,
    /// Outbound requests (`reporter="source"`).
    requests: Arc<RequestSeries>,
    /// Inbound requests (`reporter="destination"`).
    inbound: Arc<RequestSeries>,
    /// The one destination of inbound requests: this pod.
    inbound_series: Arc<ClusterSeries>,
    reloads: Family<ResultLabel, Counter>,
    rollbacks: Counter,
    loops: Family<ReasonLabel, Counter>,
    tcp_passthrough: Counter,
    overloads: Counter,
    mirrors: Family<MirrorLabels, Counter>,
    unknown: Arc<ClusterSeries>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ReasonLabel {
    reason: &'static str,
}

impl EncodeLabelSet for ReasonLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("reason", self.reason).encode(encoder.encode_label())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ResultLabel {
    result: &'static str,
}

/// Labels of `weir_mirror_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct MirrorLabels {
    labels: Arc<ClusterLabels>,
    result: MirrorResult,
}

/// What became of a mirrored copy.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum MirrorResult {
    /// The mirror answered (any status).
    Sent,
    /// The mirror could not be reached, reset, or timed out.
    Failed,
    /// Too many copies in flight: the copy was not sent.
    Dropped,
    /// The request body streams (too large or unknown length): it cannot be copied.
    Skipped,
}

// === impl Metrics ===

impl Metrics {
    /// Metrics for a sidecar reporting as `workload` (`source_workload`), its other labels
    /// unknown.
    pub fn new(workload: &str) -> Self {
        Metrics::with_identity(PodIdentity::workload(workload))
    }

    /// Metrics for a sidecar in the pod `identity`: the `source_*` labels of its outbound
    /// requests, the `destination_*` labels of its inbound ones.
    pub fn with_identity(identity: PodIdentity) -> Self {
        let mut registry = Registry::default();
        let requests = RequestSeries::new(Reporter::Source, identity.clone());
        let inbound = RequestSeries::new(Reporter::Destination, PodIdentity::unknown());
        let inbound_series =
            RequestSeries::cluster(&inbound, &Arc::new(identity.destination_labels()));
        registry.register_collector(Box::new(RequestCollector([
            requests.clone(),
            inbound.clone(),
        ])));
        registry.register_collector(Box::new(FirstFailureCollector(requests.clone())));
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "weir_config_reloads",
            "Config reloads (file, signal, admin), by result",
            reloads.clone(),
        );
        // Both results exist from the start so that `rate()` sees the first failure.
        let _ = reloads.get_or_create(&ResultLabel { result: "success" });
        let _ = reloads.get_or_create(&ResultLabel { result: "failure" });
        let rollbacks = Counter::default();
        registry.register(
            "weir_rollbacks",
            "Rollbacks of canaries to 0%",
            rollbacks.clone(),
        );
        let overloads = Counter::default();
        registry.register(
            "weir_downstream_cx_overflow",
            "Downstream connections refused (503, closed) because the listener was at its connection cap",
            overloads.clone(),
        );
        let loops = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "weir_loops_stopped",
            "Request loops stopped: captured connections to weir's own listener (own_listener), requests at the x-weir-hops bound answered 508 (hop_limit)",
            loops.clone(),
        );
        for reason in ["own_listener", "hop_limit"] {
            let _ = loops.get_or_create(&ReasonLabel { reason });
        }
        let tcp_passthrough: Counter = Counter::default();
        registry.register(
            "weir_tcp_passthrough_connections",
            "Captured connections relayed as plain TCP to their original destination (not HTTP, or a non-HTTP port)",
            tcp_passthrough.clone(),
        );
        let mirrors = Family::<MirrorLabels, Counter>::default();
        registry.register(
            "weir_mirror_requests",
            "Mirrored (shadow) copies of requests, by mirror destination and result",
            mirrors.clone(),
        );
        let unknown = Arc::new(ClusterLabels::unknown(UNKNOWN, UNKNOWN));
        let unknown = RequestSeries::cluster(&requests, &unknown);
        Metrics {
            registry: RwLock::new(registry),
            extensions: Mutex::default(),
            identity,
            requests,
            inbound,
            inbound_series,
            reloads,
            rollbacks,
            loops,
            tcp_passthrough,
            overloads,
            mirrors,
            unknown,
        }
    }

    /// The metrics in OpenMetrics text ([`CONTENT_TYPE`]), including `weir_route_weight` and
    /// `weir_config_generation` read from the table in force now.
    pub fn encode(&self, live: &LiveTable) -> String {
        let table = live.load_full();
        let mut out = String::with_capacity(16 * 1024);
        let mut scrape = Registry::default();
        scrape.register_collector(Box::new(TableCollector(table)));
        // Writing into a String cannot fail.
        {
            let registry = self.registry.read().unwrap_or_else(|p| p.into_inner());
            let _ = encode_registry(&mut out, &registry);
        }
        let _ = encode_registry(&mut out, &scrape);
        let _ = encode_eof(&mut out);
        out
    }

    /// Counts a reload attempt (`weir_config_reloads_total{result="success"|"failure"}`).
    pub fn record_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// A metric of the embedder's (e.g. the canary gauges of `weir serve --canary`), served
    /// with the sidecar's own on `GET /metrics`. The first call registers a new `M` under
    /// `name`; later calls with the same name return a handle to that same metric, so that
    /// several users in one process share it. Off the hot path: takes the registry's lock.
    ///
    /// # Panics
    /// When `name` was first registered with another metric type.
    pub fn extension<M>(&self, name: &str, help: &str) -> M
    where
        M: prometheus_client::registry::Metric + Clone + Default + Send + Sync + 'static,
    {
        let mut extensions = self.extensions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = extensions.get(name) {
            return existing
                .downcast_ref::<M>()
                .unwrap_or_else(|| panic!("metric {name} was registered with another type"))
                .clone();
        }
        let metric = M::default();
        self.registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .register(name, help, metric.clone());
        extensions.insert(name.to_string(), Box::new(metric.clone()));
        metric
    }

    /// Every request series as plain values, for a reader in the same process (the
    /// in-process canary) that must not encode and re-parse the exposition text: the labels
    /// as `/metrics` writes them, the request count, and the duration buckets as
    /// `(upper bound in ms, cumulative count)`, the last bound `+Inf`. Off the hot path: takes
    /// the series map's lock once and copies the counters.
    pub fn for_each_request(&self, mut visit: impl FnMut(&[(&str, &str)], u64, &[(f64, u64)])) {
        for all in [&self.requests, &self.inbound] {
            let rows = all.rows();
            for (key, series) in &rows {
                let code = key.code.to_string();
                let flags = key.flags.to_string();
                let labels = request_labels(all, key, &code, &flags);
                let mut buckets = [(0.0, 0u64); 20];
                let mut cumulative = 0;
                for (i, b) in buckets.iter_mut().enumerate() {
                    cumulative += series.buckets[i].load(Ordering::Relaxed);
                    let bound = DURATION_BUCKETS_MS.get(i).copied().unwrap_or(f64::INFINITY);
                    *b = (bound, cumulative);
                }
                visit(&labels, series.count.load(Ordering::Relaxed), &buckets);
            }
        }
    }

    /// When each outbound destination first answered badly under the table in force, for a
    /// reader in the same process (the in-process canary): `visit(labels, over_ms, unix_ms)`
    /// with `over_ms` `None` for the first 5xx, `Some(b)` for the first response slower than
    /// `b` ms. The same numbers as [`FIRST_ERROR`] and [`FIRST_SLOW`] on `/metrics`.
    pub fn for_each_first_failure(&self, mut visit: impl FnMut(&[(&str, &str)], Option<f64>, u64)) {
        for (labels, over_ms, ms) in first_failures(&self.requests) {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            visit(&labels, over_ms, ms);
        }
    }

    /// Counts a connection refused over the cap (`weir_downstream_cx_overflow_total`).
    pub fn record_overload(&self) {
        self.overloads.inc();
    }

    /// Counts a rollback (`weir_rollbacks_total`).
    pub fn record_rollback(&self) {
        self.rollbacks.inc();
    }

    /// The series of a destination. Off the hot path: the proxy calls it when it first sees
    /// a table.
    pub(crate) fn cluster_series(&self, labels: &Arc<ClusterLabels>) -> Arc<ClusterSeries> {
        RequestSeries::cluster(&self.requests, labels)
    }

    /// The series of requests that reached no destination (`NR`, protocol errors).
    pub(crate) fn unknown_series(&self) -> &Arc<ClusterSeries> {
        &self.unknown
    }

    /// The series of outbound requests passed through to a destination weir has no route
    /// for, as Istio labels its `PassthroughCluster`: `destination_service` the requested
    /// host, `destination_service_name="PassthroughCluster"`. Takes a lock: passthrough
    /// requests only.
    pub(crate) fn passthrough_series(&self, host: &str) -> Arc<ClusterSeries> {
        let labels = Arc::new(ClusterLabels::unknown(host, PASSTHROUGH_CLUSTER));
        RequestSeries::cluster(&self.requests, &labels)
    }

    /// Counts a request loop stopped: `reason` is `own_listener` (a captured connection to
    /// weir's own listener, refused) or `hop_limit` (`x-weir-hops` at its bound, 508).
    pub(crate) fn record_loop(&self, reason: &'static str) {
        self.loops.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts a captured connection relayed as plain TCP to its original destination.
    pub(crate) fn record_tcp_passthrough(&self) {
        self.tcp_passthrough.inc();
    }

    /// The pod this sidecar reports for.
    pub fn identity(&self) -> &PodIdentity {
        &self.identity
    }

    /// The series of inbound requests (to this pod, `reporter="destination"`).
    pub(crate) fn inbound_series(&self) -> &Arc<ClusterSeries> {
        &self.inbound_series
    }

    /// Counts a mirrored copy.
    pub(crate) fn record_mirror(&self, labels: &Arc<ClusterLabels>, result: MirrorResult) {
        self.mirrors
            .get_or_create(&MirrorLabels {
                labels: labels.clone(),
                result,
            })
            .inc();
    }
}

/// The label set of a request series, as Istio's telemetry writes it.
struct RequestLabelSet<'a> {
    all: &'a RequestSeries,
    key: &'a SeriesKey,
}

impl EncodeLabelSet for RequestLabelSet<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        let flags = self.key.flags.to_string();
        let code = self.key.code.to_string();
        for pair in request_labels(self.all, self.key, &code, &flags) {
            pair.encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// The labels of a request series, in the order `/metrics` writes them: the one definition
/// the exposition and [`Metrics::for_each_request`] share.
fn request_labels<'a>(
    all: &'a RequestSeries,
    key: &'a SeriesKey,
    code: &'a str,
    flags: &'a str,
) -> [(&'static str, &'a str); 19] {
    use weir_router::telemetry::label;
    let l = &key.labels;
    let s = &all.source;
    [
        (label::REPORTER, all.reporter.as_str()),
        (label::SOURCE_WORKLOAD, &s.workload),
        (label::SOURCE_WORKLOAD_NAMESPACE, &s.namespace),
        (label::SOURCE_APP, &s.app),
        (label::SOURCE_VERSION, &s.version),
        (label::SOURCE_CANONICAL_SERVICE, &s.canonical_service),
        (label::SOURCE_CANONICAL_REVISION, &s.canonical_revision),
        (label::DESTINATION_SERVICE, &l.destination_service),
        (label::DESTINATION_SERVICE_NAME, &l.destination_service_name),
        (
            label::DESTINATION_SERVICE_NAMESPACE,
            &l.destination_service_namespace,
        ),
        (label::DESTINATION_WORKLOAD, &l.destination_workload),
        (
            label::DESTINATION_WORKLOAD_NAMESPACE,
            &l.destination_service_namespace,
        ),
        (label::DESTINATION_APP, &l.destination_app),
        (label::DESTINATION_VERSION, &l.destination_version),
        (
            label::DESTINATION_CANONICAL_SERVICE,
            &l.destination_canonical_service,
        ),
        (
            label::DESTINATION_CANONICAL_REVISION,
            &l.destination_canonical_revision,
        ),
        (label::RESPONSE_CODE, code),
        (label::RESPONSE_FLAGS, flags),
        (
            label::REQUEST_PROTOCOL,
            if key.grpc { "grpc" } else { "http" },
        ),
    ]
}

impl EncodeLabelSet for ResultLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("result", self.result).encode(encoder.encode_label())
    }
}

impl EncodeLabelSet for MirrorLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        let result = match self.result {
            MirrorResult::Sent => "sent",
            MirrorResult::Failed => "failed",
            MirrorResult::Dropped => "dropped",
            MirrorResult::Skipped => "skipped",
        };
        ("destination_service", &*self.labels.destination_service)
            .encode(encoder.encode_label())?;
        (
            "destination_service_name",
            &*self.labels.destination_service_name,
        )
            .encode(encoder.encode_label())?;
        ("destination_version", &*self.labels.destination_version)
            .encode(encoder.encode_label())?;
        ("result", result).encode(encoder.encode_label())
    }
}

/// Encodes the request series: `istio_requests_total` and `istio_request_duration_milliseconds`.
#[derive(Debug)]
/// Outbound, then inbound: one family each for both, as the exposition allows.
struct RequestCollector([Arc<RequestSeries>; 2]);

/// `weir_first_error_timestamp_milliseconds`: Unix time in ms of a destination's first 5xx
/// response under the table in force (since the last weight change, reload or rollback).
pub const FIRST_ERROR: &str = "weir_first_error_timestamp_milliseconds";
/// `weir_first_slow_timestamp_milliseconds{over_ms}`: Unix time in ms of a destination's first
/// response slower than `over_ms` (a duration bucket bound, 100 ms and up) under the table in
/// force.
pub const FIRST_SLOW: &str = "weir_first_slow_timestamp_milliseconds";
/// The smallest bucket bound [`FIRST_SLOW`] is reported for: faster responses are no breach
/// of any latency gate worth a rollback, and every bound is a series.
const FIRST_SLOW_FROM_MS: f64 = 100.0;

/// The outbound destinations' first failures: (labels without the response's, `None` for
/// the first 5xx or `Some(over_ms)`, Unix ms).
#[allow(clippy::type_complexity)]
fn first_failures(all: &RequestSeries) -> Vec<(Vec<(&'static str, String)>, Option<f64>, u64)> {
    let clusters: Vec<Arc<ClusterSeries>> = {
        let map = all.clusters.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    };
    let mut out = Vec::new();
    for cluster in clusters {
        let key = SeriesKey {
            labels: cluster.labels().clone(),
            code: 0,
            flags: weir_router::telemetry::ResponseFlags::NONE,
            grpc: false,
        };
        let labels: Vec<(&'static str, String)> = request_labels(all, &key, "", "")
            .iter()
            .take_while(|(k, _)| *k != weir_router::telemetry::label::RESPONSE_CODE)
            .map(|(k, v)| (*k, v.to_string()))
            .collect();
        let f = &cluster.firsts;
        let error = f.error_ms.load(Ordering::Relaxed);
        if error != 0 {
            out.push((labels.clone(), None, error));
        }
        let slots: Vec<u64> = f
            .bucket_ms
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect();
        for (i, bound) in DURATION_BUCKETS_MS.iter().enumerate() {
            if *bound < FIRST_SLOW_FROM_MS {
                continue;
            }
            // Bucket i + 1 and up hold the responses slower than bound i.
            if let Some(ms) = slots[i + 1..].iter().copied().filter(|&m| m != 0).min() {
                out.push((labels.clone(), Some(*bound), ms));
            }
        }
    }
    out.sort_by(|a, b| (&a.0, a.1.map(|o| o as u64)).cmp(&(&b.0, b.1.map(|o| o as u64))));
    out
}

#[derive(Debug)]
struct FirstFailureCollector(Arc<RequestSeries>);

impl Collector for FirstFailureCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let rows = first_failures(&self.0);
        for (name, help, slow) in [
            (
                FIRST_ERROR,
                "Unix time in ms of the destination's first 5xx under the table in force",
                false,
            ),
            (
                FIRST_SLOW,
                "Unix time in ms of the destination's first response slower than over_ms under the table in force",
                true,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, over_ms, ms) in rows.iter().filter(|r| r.1.is_some() == slow) {
                let mut labels = labels.clone();
                if let Some(over) = over_ms {
                    labels.push(("over_ms", over.to_string()));
                }
                family.encode_family(&labels)?.encode_gauge(&(*ms as i64))?;
            }
        }
        Ok(())
    }
}

impl Collector for RequestCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let rows: Vec<_> = self
            .0
            .iter()
            .map(|all| {
                let mut rows = all.rows();
                rows.sort_by(|(a, _), (b, _)| {
                    (
                        &a.labels.destination_service,
                        &a.labels.destination_version,
                        a.code,
                        a.flags,
                        a.grpc,
                    )
                        .cmp(&(
                            &b.labels.destination_service,
                            &b.labels.destination_version,
                            b.code,
                            b.flags,
                            b.grpc,
                        ))
                });
                (&**all, rows)
            })
            .collect();
        {
            let mut family = encoder.encode_descriptor(
                weir_router::telemetry::REQUESTS,
                "Requests, by destination, response code and flags (Istio's standard metric)",
                None,
                MetricType::Counter,
            )?;
            for (all, rows) in &rows {
                for (key, series) in rows {
                    let labels = RequestLabelSet { all, key };
                    let count = series.count.load(Ordering::Relaxed);
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            weir_router::telemetry::REQUEST_DURATION,
            "Request duration in milliseconds, Envoy's default buckets (Istio's standard metric)",
            None,
            MetricType::Histogram,
        )?;
        for (all, rows) in &rows {
            for (key, series) in rows {
                let labels = RequestLabelSet { all, key };
                let count = series.count.load(Ordering::Relaxed);
                let sum = series.sum_us.load(Ordering::Relaxed) as f64 / 1000.0;
                let mut buckets = [(0.0, 0u64); 20];
                for (i, b) in buckets.iter_mut().enumerate() {
                    let bound = DURATION_BUCKETS_MS.get(i).copied().unwrap_or(f64::INFINITY);
                    *b = (bound, series.buckets[i].load(Ordering::Relaxed));
                }
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        Ok(())
    }
}

/// Encodes what the table in force says: `weir_route_weight`, `weir_config_generation`.
#[derive(Debug)]
struct TableCollector(Arc<Published>);

struct WeightLabels<'a> {
    virtual_service: &'a str,
    rule: &'a str,
    service: &'a str,
    version: &'a str,
}

impl EncodeLabelSet for WeightLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("virtual_service", self.virtual_service).encode(encoder.encode_label())?;
        ("rule", self.rule).encode(encoder.encode_label())?;
        ("destination_service_name", self.service).encode(encoder.encode_label())?;
        ("destination_version", self.version).encode(encoder.encode_label())
    }
}

impl Collector for TableCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let table = &self.0;
        {
            let mut family = encoder.encode_descriptor(
                "weir_route_weight",
                "Weight of each destination of each rule in force (points; the share is weight / sum of the rule)",
                None,
                MetricType::Gauge,
            )?;
            let mut rule_label = String::new();
            for vs in table.virtual_services() {
                for rule in &vs.rules {
                    rule_label.clear();
                    match &rule.name {
                        Some(name) => rule_label.push_str(name),
                        None => {
                            let _ = write!(rule_label, "{}", rule.index);
                        }
                    }
                    for d in &rule.destinations {
                        let cluster = table.cluster(d.cluster);
                        let labels = WeightLabels {
                            virtual_service: &vs.name,
                            rule: &rule_label,
                            service: &cluster.labels.destination_service_name,
                            version: &cluster.labels.destination_version,
                        };
                        family
                            .encode_family(&labels)?
                            .encode_gauge(&i64::from(d.weight))?;
                    }
                }
            }
        }
        let generation = i64::try_from(table.generation()).unwrap_or(i64::MAX);
        encoder
            .encode_descriptor(
                "weir_config_generation",
                "Generation of the routing table in force (bumped by every accepted change)",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&generation)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::gauge::Gauge;
    use std::time::Duration;
    use weir_router::ConfigSource;
    use weir_router::telemetry::ResponseFlags;

    const CONFIG: &str = include_str!("../../../config/payment-svc.yaml");

    fn live() -> LiveTable {
        LiveTable::from_sources(&[ConfigSource::new("payment-svc.yaml", CONFIG)])
            .expect("valid")
            .0
    }

    #[test]
    fn encodes_route_weights_and_generation_from_the_table_in_force() {
        let live = live();
        let metrics = Metrics::new("frontend");
        let text = metrics.encode(&live);
        assert!(text.contains(
            r#"weir_route_weight{virtual_service="payment-svc",rule="canary-split",destination_service_name="payment-svc",destination_version="v1"} 90"#
        ), "{text}");
        assert!(text.contains(
            r#"weir_route_weight{virtual_service="payment-svc",rule="canary-split",destination_service_name="payment-svc",destination_version="v2"} 10"#
        ));
        assert!(text.contains(
            r#"weir_route_weight{virtual_service="payment-svc",rule="dark-launch",destination_service_name="payment-svc",destination_version="v2"} 100"#
        ));
        assert!(text.contains("weir_config_generation 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    /// The in-process canary reads `for_each_request`, the dashboards read `/metrics`: every
    /// series the one shows, the other shows with the same labels and numbers.
    #[test]
    fn for_each_request_hands_over_what_the_exposition_shows() {
        let live = live();
        let table = live.load();
        let metrics = Metrics::new("frontend");
        let v1 = metrics.cluster_series(&table.clusters()[0].labels);
        v1.record(200, ResponseFlags::NONE, false, Duration::from_micros(700));
        v1.record(200, ResponseFlags::NONE, false, Duration::from_millis(30));
        v1.record(503, ResponseFlags::UF, false, Duration::from_millis(3));
        let text = metrics.encode(&live);
        let mut seen = 0;
        metrics.for_each_request(|labels, count, buckets| {
            seen += 1;
            let set: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let set = set.join(",");
            assert!(
                text.contains(&format!("istio_requests_total{{{set}}} {count}\n")),
                "{set} {count} not in\n{text}"
            );
            for (le, cumulative) in buckets {
                let le = if le.is_infinite() {
                    "+Inf".to_string()
                } else {
                    format!("{le:?}")
                };
                assert!(
                    text.contains(&format!(
                        "istio_request_duration_milliseconds_bucket{{le=\"{le}\",{set}}} {cumulative}\n"
                    )),
                    "bucket {le} {cumulative} of {set} not in\n{text}"
                );
            }
            assert_eq!(buckets.last().map(|b| b.1), Some(count));
        });
        assert_eq!(seen, 2, "one series per code and flags");
    }

    #[test]
    fn counts_requests_per_destination_with_envoy_buckets() {
        let live = live();
        let table = live.load();
        let metrics = Metrics::new("frontend");
        let v1 = metrics.cluster_series(&table.clusters()[0].labels);
        for _ in 0..3 {
            v1.record(200, ResponseFlags::NONE, false, Duration::from_micros(700));
        }
        v1.record(503, ResponseFlags::UF, false, Duration::from_millis(3));
        metrics
            .unknown_series()
            .record(404, ResponseFlags::NR, false, Duration::from_micros(10));
        // A second table with equal labels counts into the same series.
        let again = metrics.cluster_series(&Arc::new((*table.clusters()[0].labels).clone()));
        again.record(200, ResponseFlags::NONE, false, Duration::from_secs(4000));

        let text = metrics.encode(&live);
        let v = &table.clusters()[0].labels.destination_version;
        let head = format!(
            r#"reporter="source",source_workload="frontend",source_workload_namespace="unknown",source_app="unknown",source_version="unknown",source_canonical_service="frontend",source_canonical_revision="latest",destination_service="payment-svc.production.svc.cluster.local",destination_service_name="payment-svc",destination_service_namespace="production",destination_workload="payment-svc-{v}",destination_workload_namespace="production",destination_app="payment-svc",destination_version="{v}",destination_canonical_service="payment-svc",destination_canonical_revision="{v}""#
        );
        assert!(
            text.contains(&format!(
                r#"istio_requests_total{{{head},response_code="200",response_flags="-",request_protocol="http"}} 4"#
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            r#"istio_requests_total{{{head},response_code="503",response_flags="UF",request_protocol="http"}} 1"#
        )));
        assert!(text.contains(r#"destination_service_name="unknown""#));
        assert!(text.contains(r#"response_code="404",response_flags="NR""#));
        // Envoy's buckets, cumulative, and +Inf.
        let bucket = |le: &str| {
            format!(
                r#"istio_request_duration_milliseconds_bucket{{le="{le}",{head},response_code="200",response_flags="-",request_protocol="http"}} "#
            )
        };
        assert!(text.contains(&(bucket("0.5") + "0\n")), "{text}");
        assert!(text.contains(&(bucket("1.0") + "3\n")));
        assert!(text.contains(&(bucket("3600000.0") + "3\n")));
        assert!(text.contains(&(bucket("+Inf") + "4\n")));
        let les: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("istio_request_duration_milliseconds_bucket")
                    && l.contains(r#"response_code="200""#)
            })
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
            .collect();
        let expected: Vec<String> = DURATION_BUCKETS_MS
            .iter()
            .map(|b| format!("{b:?}"))
            .chain(["+Inf".to_string()])
            .collect();
        assert_eq!(les, expected);
    }

    #[test]
    fn counts_reloads_and_rollbacks() {
        let live = live();
        let metrics = Metrics::new("w");
        metrics.record_reload(true);
        metrics.record_reload(false);
        metrics.record_reload(false);
        metrics.record_rollback();
        let text = metrics.encode(&live);
        assert!(
            text.contains("weir_config_reloads_total{result=\"success\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("weir_config_reloads_total{result=\"failure\"} 2\n"));
        assert!(text.contains("weir_rollbacks_total 1\n"));
        type Labels = Vec<(String, String)>;
        let extra: Family<Labels, Gauge> = metrics.extension("embedder_gauge", "An embedder's");
        extra
            .get_or_create(&vec![("k".to_string(), "v".to_string())])
            .set(7);
        // A second user of the same name gets the same family, registered once.
        let again: Family<Labels, Gauge> = metrics.extension("embedder_gauge", "An embedder's");
        again
            .get_or_create(&vec![("k".to_string(), "w".to_string())])
            .set(8);
        let text = metrics.encode(&live);
        assert!(text.contains("embedder_gauge{k=\"v\"} 7\n"), "{text}");
        assert!(text.contains("embedder_gauge{k=\"w\"} 8\n"), "{text}");
        assert_eq!(
            text.matches("# TYPE embedder_gauge gauge").count(),
            1,
            "{text}"
        );
    }
}
