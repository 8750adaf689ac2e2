//! Where the gates' numbers come from: one trait, [`MetricSource`], and three implementations.
//!
//! - [`ScrapeSource::new`]: one or many sidecars' `/metrics`, scraped and summed; rates come
//!   from the difference between the newest scrape and an older one kept in a short history.
//! - [`ScrapeSource::from_snapshots`]: the same over a function returning the counters of a
//!   registry in the same process as a [`Snapshot`](crate::Snapshot), which is how a controller
//!   inside `weir serve --canary` reads the sidecar it runs in;
//!   [`ScrapeSource::from_text`] takes exposition text instead.
//! - [`PrometheusSource`]: instant queries against Prometheus' HTTP API, the built-in gates
//!   written as PromQL over the same `istio_*` series.

use std::time::{Duration, Instant};

use crate::exposition::ExpositionError;
use crate::transport::TransportError;

mod prometheus;
mod scrape;

pub use prometheus::{BuiltinQueries, PrometheusSource};
pub use scrape::ScrapeSource;

/// One version's traffic over a window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// Requests answered in the window (rounded: Prometheus' `increase()` extrapolates).
    pub requests: u64,
    /// Non-5xx responses as a percentage of all requests, 0–100; `None` without requests.
    pub success_rate: Option<f64>,
    /// 99th percentile of the request duration in ms; `None` without observations.
    pub p99_ms: Option<f64>,
    /// The window the numbers really cover: shorter than asked right after a start, when the
    /// history does not reach back far enough yet.
    pub window: Duration,
}

/// Reads traffic numbers for the gates.
///
/// Every method takes the caller's `now` instead of reading a clock, so that a controller on a
/// fake clock and a source keeping a history agree on what time it is.
pub trait MetricSource {
    /// The traffic of the version whose `destination_version` label is `version`, over the
    /// `window` that ends at `now`.
    ///
    /// No traffic is not an error: it is an observation with `requests == 0`; the controller
    /// decides that no data never passes a gate. An error means the numbers could not be read
    /// at all (a sidecar down, Prometheus unreachable, a malformed answer).
    fn observe(
        &mut self,
        version: &str,
        window: Duration,
        now: Instant,
    ) -> Result<Observation, SourceError>;

    /// Evaluates a PromQL expression to one number, for custom metrics. `Ok(None)` when the
    /// query returns no sample (or NaN): no data.
    fn query(&mut self, promql: &str, now: Instant) -> Result<Option<f64>, SourceError> {
        let _ = (promql, now);
        Err(SourceError::Unsupported(
            "this metric source cannot evaluate PromQL: use a Prometheus source for custom queries",
        ))
    }

    /// Whether [`query`](Self::query) works. A spec with custom queries is refused up front,
    /// before any weight changes, when it does not.
    fn supports_queries(&self) -> bool {
        false
    }

    /// The version's cumulative request count now, when the source can read it cheaply and
    /// fresh (a scrape, not Prometheus' scrape interval). The controller polls it after a
    /// rollback to time the first request seen on the stable version. `Ok(None)`: cannot tell.
    fn request_count(&mut self, version: &str, now: Instant) -> Result<Option<u64>, SourceError> {
        let _ = (version, now);
        Ok(None)
    }

    /// When the sidecars counted the version's first failing response under the weights in
    /// force, from the newest read (no new request): the first 5xx with `over_ms` `None`, else
    /// the first response slower than `over_ms`. Unix ms; `None` when the source cannot tell
    /// (Prometheus) or saw none. The controller asks it on a breach, to time the rollback
    /// from the first failed request rather than from its detection.
    fn first_failure(&mut self, version: &str, over_ms: Option<f64>) -> Option<u64> {
        let _ = (version, over_ms);
        None
    }
}

/// Why a source could not produce numbers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// An HTTP request produced no answer (refused, timed out, cut short).
    #[error("{url}: {source}")]
    Http {
        /// The URL asked.
        url: String,
        /// What went wrong, with the client's error as its source.
        #[source]
        source: TransportError,
    },
    /// A scrape was answered with a status other than 200.
    #[error("{url}: answered {status}")]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// A sidecar's exposition text does not parse.
    #[error("{origin}: {source}")]
    Exposition {
        /// Where the text came from.
        origin: String,
        /// The parse error.
        #[source]
        source: ExpositionError,
    },
    /// Prometheus answered, but not with what a query should return.
    #[error("Prometheus query `{query}`: {reason}")]
    Query {
        /// The PromQL sent.
        query: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// The source cannot do what was asked.
    #[error("{0}")]
    Unsupported(&'static str),
}
