//! Hot-path counters: the per-destination request series a request is counted into when it
//! ends, and the [`Recorder`] that does it. Lock-free for requests that end without a
//! response flag (one `OnceLock` slot per status code and protocol); series with a flag
//! (errors) go through a map behind a mutex, a path taken by failures only. The registry and
//! the OpenMetrics encoding are `crate::metrics`'.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use weir_router::ClusterLabels;
use weir_router::balance::Lease;
use weir_router::telemetry::{DURATION_BUCKETS_US, ResponseFlags};

/// Status codes with a lock-free slot: 100..=599, times two protocols.
const FIRST_CODE: u16 = 100;
const LAST_CODE: u16 = 599;
const SLOTS: usize = (LAST_CODE - FIRST_CODE + 1) as usize * 2;

/// One request series: a response code, response flags and protocol for one destination.
#[derive(Debug, Default)]
pub(crate) struct Series {
    pub(crate) count: AtomicU64,
    pub(crate) sum_us: AtomicU64,
    /// Per bucket (not cumulative); the last one is `+Inf`.
    pub(crate) buckets: [AtomicU64; 20],
}

/// The request series of one destination (cluster labels). Shared by every table whose cluster
/// has the same labels, so a reload keeps counting into the same series.
pub(crate) struct ClusterSeries {
    labels: Arc<ClusterLabels>,
    /// Flag-less series by `(code - 100) * 2 + grpc`.
    slots: Box<[OnceLock<Arc<Series>>]>,
    all: Arc<RequestSeries>,
    /// When this destination first answered badly under the table in force.
    pub(crate) firsts: FirstFailures,
}

/// When a destination first answered with a 5xx, and first answered in each duration bucket,
/// since the table in force was published (a weight change, a reload, a rollback): what a
/// canary's rollback SLA is measured from. Unix time in ms; 0 is "not yet".
///
/// A slot is written once per table, by the first request that finds it 0: on the hot path
/// that is one relaxed load per request (two for a 5xx). A request that ends while a new
/// table is published may land in either table's slots.
#[derive(Debug, Default)]
pub(crate) struct FirstFailures {
    generation: AtomicU64,
    pub(crate) error_ms: AtomicU64,
    /// By duration bucket, as [`Series::buckets`].
    pub(crate) bucket_ms: [AtomicU64; 20],
}

impl std::fmt::Debug for ClusterSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSeries")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct SeriesKey {
    pub(crate) labels: Arc<ClusterLabels>,
    pub(crate) code: u16,
    pub(crate) flags: ResponseFlags,
    pub(crate) grpc: bool,
}

/// Which side of a request a sidecar reports: Istio's `reporter` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reporter {
    /// The client's sidecar (outbound): `reporter="source"`.
    Source,
    /// The server's sidecar (inbound): `reporter="destination"`.
    Destination,
}

impl Reporter {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

pub(crate) struct RequestSeries {
    pub(crate) reporter: Reporter,
    /// The `source_*` labels: this pod on the outbound side, an unknown peer inbound.
    pub(crate) source: Arc<crate::identity::PodIdentity>,
    pub(crate) series: Mutex<HashMap<SeriesKey, Arc<Series>>>,
    pub(crate) clusters: Mutex<HashMap<Arc<ClusterLabels>, Arc<ClusterSeries>>>,
}

// === impl RequestSeries ===

impl RequestSeries {
    pub(crate) fn new(reporter: Reporter, source: crate::identity::PodIdentity) -> Arc<Self> {
        Arc::new(RequestSeries {
            reporter,
            source: Arc::new(source),
            series: Mutex::new(HashMap::new()),
            clusters: Mutex::new(HashMap::new()),
        })
    }

    /// Every series and its key, copied out of the map so that readers (a scrape, the
    /// in-process canary) hold the lock only for the copy.
    pub(crate) fn rows(&self) -> Vec<(SeriesKey, Arc<Series>)> {
        let map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, s)| (k.clone(), s.clone())).collect()
    }

    pub(crate) fn cluster(this: &Arc<Self>, labels: &Arc<ClusterLabels>) -> Arc<ClusterSeries> {
        let mut clusters = this.clusters.lock().unwrap_or_else(|p| p.into_inner());
        clusters
            .entry(labels.clone())
            .or_insert_with(|| {
                Arc::new(ClusterSeries {
                    labels: labels.clone(),
                    slots: (0..SLOTS).map(|_| OnceLock::new()).collect(),
                    all: this.clone(),
                    firsts: FirstFailures::default(),
                })
            })
            .clone()
    }

    fn series(&self, key: SeriesKey) -> Arc<Series> {
        let mut map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key).or_default().clone()
    }
}

// === impl ClusterSeries ===

impl ClusterSeries {
    /// Counts one request that ended with `code` (0 when no response was sent) after
    /// `elapsed`.
    pub(crate) fn record(&self, code: u16, flags: ResponseFlags, grpc: bool, elapsed: Duration) {
        let series = if flags.is_empty() && (FIRST_CODE..=LAST_CODE).contains(&code) {
            let slot = usize::from(code - FIRST_CODE) * 2 + usize::from(grpc);
            self.slots[slot].get_or_init(|| self.slow(code, flags, grpc))
        } else {
            &self.slow(code, flags, grpc)
        };
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = DURATION_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(DURATION_BUCKETS_US.len());
        series.observe(bucket, us);
        self.firsts.note(bucket, (500..600).contains(&code));
    }

    fn slow(&self, code: u16, flags: ResponseFlags, grpc: bool) -> Arc<Series> {
        self.all.series(SeriesKey {
            labels: self.labels.clone(),
            code,
            flags,
            grpc,
        })
    }

    /// The labels of this destination.
    pub(crate) fn labels(&self) -> &Arc<ClusterLabels> {
        &self.labels
    }
}

// === impl Series ===

impl Series {
    #[inline]
    fn observe(&self, bucket: usize, us: u64) {
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

// === impl FirstFailures ===

impl FirstFailures {
    /// Starts over for the table of `generation` (once per generation, however many proxies
    /// publish their side of it).
    pub(crate) fn begin(&self, generation: u64) {
        if self.generation.swap(generation, Ordering::Relaxed) != generation {
            self.error_ms.store(0, Ordering::Relaxed);
            for slot in &self.bucket_ms {
                slot.store(0, Ordering::Relaxed);
            }
        }
    }

    #[inline]
    fn note(&self, bucket: usize, error: bool) {
        first(&self.bucket_ms[bucket]);
        if error {
            first(&self.error_ms);
        }
    }
}

/// Writes the time now into `slot` if it holds none.
#[inline]
fn first(slot: &AtomicU64) {
    if slot.load(Ordering::Relaxed) == 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let _ = slot.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }
}

// === impl SeriesKey ===

impl PartialEq for SeriesKey {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code
            && self.flags == other.flags
            && self.grpc == other.grpc
            && (Arc::ptr_eq(&self.labels, &other.labels) || self.labels == other.labels)
    }
}

impl Eq for SeriesKey {}

impl Hash for SeriesKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.labels.hash(state);
        self.code.hash(state);
        self.flags.hash(state);
        self.grpc.hash(state);
    }
}

impl std::fmt::Debug for RequestSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSeries").finish_non_exhaustive()
    }
}

/// Counts one request in the metrics when dropped, with what it knows by then: a request
/// dropped before a response was chosen is a client that went away (`DC`, code 0).
#[derive(Debug)]
pub(crate) struct Recorder {
    pub series: Arc<ClusterSeries>,
    pub code: u16,
    pub flags: ResponseFlags,
    pub grpc: bool,
    start: Instant,
    in_flight: Arc<AtomicUsize>,
    /// The endpoint the response comes from: counted as busy until the body is done.
    pub lease: Option<Lease>,
}

impl Recorder {
    /// Starts timing a request; counts it in flight until dropped.
    pub fn start(series: Arc<ClusterSeries>, in_flight: Arc<AtomicUsize>) -> Self {
        in_flight.fetch_add(1, Ordering::AcqRel);
        Recorder {
            series,
            code: 0,
            flags: ResponseFlags::DC,
            grpc: false,
            start: Instant::now(),
            in_flight,
            lease: None,
        }
    }

    /// Sets the outcome reported when the request ends.
    pub fn outcome(&mut self, code: http::StatusCode, flags: ResponseFlags) {
        self.code = code.as_u16();
        self.flags = flags;
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.series
            .record(self.code, self.flags, self.grpc, self.start.elapsed());
        self.lease.take();
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_failures_are_written_once_per_table_and_start_over_with_the_next() {
        let f = FirstFailures::default();
        f.begin(7);
        f.note(3, false);
        assert_eq!(f.error_ms.load(Ordering::Relaxed), 0, "a 2xx is no error");
        let fast = f.bucket_ms[3].load(Ordering::Relaxed);
        assert!(fast > 0);
        f.note(9, true);
        let (error, slow) = (
            f.error_ms.load(Ordering::Relaxed),
            f.bucket_ms[9].load(Ordering::Relaxed),
        );
        assert!(error >= fast && slow == error, "{fast} {error} {slow}");
        std::thread::sleep(Duration::from_millis(2));
        f.note(9, true);
        assert_eq!(f.error_ms.load(Ordering::Relaxed), error, "the first stays");
        // Another proxy publishing its side of the same table: nothing starts over.
        f.begin(7);
        assert_eq!(f.error_ms.load(Ordering::Relaxed), error);
        // The next table: every slot starts over.
        f.begin(8);
        assert_eq!(f.error_ms.load(Ordering::Relaxed), 0);
        assert!(f.bucket_ms.iter().all(|s| s.load(Ordering::Relaxed) == 0));
    }
}
