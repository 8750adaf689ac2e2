//! weir's metrics as the Prometheus text exposition carries them, reduced to what the gates need.
//!
//! A sidecar exports Istio's two standard series:
//!
//! ```text
//! istio_requests_total{destination_version="v2",response_code="503",...} 7
//! istio_request_duration_milliseconds_bucket{destination_version="v2",le="250",...} 42
//! ```
//!
//! [`Snapshot::parse`] keeps, per `destination_version`, the request count, the non-5xx count and
//! the cumulative duration buckets, summed over every other label. A registry in the same
//! process skips the text: it hands its counters to a [`SnapshotBuilder`], the same code the
//! parser feeds line by line. Snapshots of several sidecars
//! [add](Snapshot::add) up; two snapshots of one sidecar taken at different times
//! [subtract](Snapshot::since) to the traffic of the window between them.
//!
//! ```
//! use weir_canary::{SeriesFilter, Snapshot};
//!
//! let before = Snapshot::parse(
//!     r#"istio_requests_total{destination_version="v2",response_code="200"} 90
//! istio_requests_total{destination_version="v2",response_code="503"} 10
//! "#,
//!     &SeriesFilter::default(),
//! )?;
//! let after = Snapshot::parse(
//!     r#"istio_requests_total{destination_version="v2",response_code="200"} 189
//! istio_requests_total{destination_version="v2",response_code="503"} 11
//! "#,
//!     &SeriesFilter::default(),
//! )?;
//! let window = after.since(&before);
//! let v2 = window.version("v2").unwrap();
//! assert_eq!(v2.requests, 100.0);
//! assert_eq!(v2.success_rate(), Some(99.0));
//! # Ok::<(), weir_canary::ExpositionError>(())
//! ```

use std::cmp::Ordering;
use std::collections::BTreeMap;

use weir_proxy::{FIRST_ERROR, FIRST_SLOW};
use weir_router::telemetry::{self, label as key};
pub use weir_router::telemetry::{REQUEST_DURATION, REQUESTS_TOTAL};

/// The histogram bucket label of the Prometheus exposition format.
const LE: &str = "le";

/// Which series count: the version label is always read; these narrow the rest.
///
/// The same filter turns into PromQL label matchers for [`PrometheusSource`](crate::PrometheusSource),
/// so the scraped and the queried numbers are the same numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesFilter {
    /// `destination_service_name` to keep (e.g. `payment-svc`); `None` keeps every service.
    pub service: Option<String>,
    /// Further exact label matches, e.g. `reporter = source`.
    pub labels: BTreeMap<String, String>,
}

impl SeriesFilter {
    /// A filter on `destination_service_name`.
    pub fn service(name: impl Into<String>) -> Self {
        SeriesFilter {
            service: Some(name.into()),
            labels: BTreeMap::new(),
        }
    }

    /// Every exact label match this filter requires, `destination_service_name` included.
    pub fn matchers(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = self
            .service
            .iter()
            .map(|s| (key::DESTINATION_SERVICE_NAME, s.as_str()))
            .collect();
        out.extend(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        out
    }

    fn keeps<K: AsRef<str>, V: AsRef<str>>(&self, labels: &[(K, V)]) -> bool {
        self.service
            .iter()
            .map(|s| (key::DESTINATION_SERVICE_NAME, s.as_str()))
            .chain(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .all(|(k, v)| label(labels, k) == Some(v))
    }
}

/// A line of exposition text that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("metrics exposition line {line}: {reason}: `{text}`")]
pub struct ExpositionError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: &'static str,
    /// The line, cut to 120 characters.
    pub text: String,
}

/// The traffic of one `destination_version`: cumulative since the sidecar started, or the
/// difference over a window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VersionStats {
    /// Requests (`istio_requests_total`), every response code.
    pub requests: f64,
    /// Requests whose `response_code` does not start with `5`: what Flagger calls success.
    pub non_5xx: f64,
    /// Duration histogram buckets as (upper bound in ms, cumulative count), sorted by bound;
    /// the last bound is `+Inf` when the sidecar exported it.
    pub buckets: Vec<(f64, f64)>,
    /// Unix time in ms of the first 5xx the sidecars counted under the table in force
    /// (`weir_first_error_timestamp_milliseconds`; the earliest over sidecars). Not a
    /// counter: a window keeps the newest value.
    pub first_error_ms: Option<f64>,
    /// `(over_ms, unix ms)`: the first response slower than `over_ms` under the table in
    /// force (`weir_first_slow_timestamp_milliseconds`), sorted by `over_ms`.
    pub first_slow_ms: Vec<(f64, f64)>,
}

/// Per-version traffic read from one exposition (or summed over several).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    versions: BTreeMap<String, VersionStats>,
}

/// Gathers samples into a [`Snapshot`]: what [`Snapshot::parse`] does with every line, open to
/// a registry in the same process that holds the counters themselves. Made by
/// [`Snapshot::builder`].
///
/// Label sets are slices of `(key, value)` pairs; label sets of one version sum, as in a scrape.
#[derive(Debug)]
pub struct SnapshotBuilder<'f> {
    filter: &'f SeriesFilter,
    versions: BTreeMap<String, VersionStats>,
    /// Buckets are gathered by bound first, so that series with the same `le` but other labels
    /// (response code, source workload) sum into one bucket.
    buckets: BTreeMap<String, BTreeMap<Bound, f64>>,
}

/// A sample [`SnapshotBuilder::sample`] cannot read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SampleError(&'static str);

// === impl Snapshot ===

impl Snapshot {
    /// Reads the Istio series of an exposition, summing every label set of a version that the
    /// filter keeps. Other metric families are skipped without being parsed further.
    pub fn parse(text: &str, filter: &SeriesFilter) -> Result<Self, ExpositionError> {
        let mut snapshot = Snapshot::builder(filter);
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
            let name = &line[..name_end];
            if !SnapshotBuilder::reads(name) {
                continue;
            }
            let refuse = |reason| ExpositionError {
                line: index + 1,
                reason,
                text: line.chars().take(120).collect(),
            };
            let sample = parse_sample(line, name_end).map_err(refuse)?;
            snapshot
                .sample(name, &sample.labels, sample.value)
                .map_err(|e| refuse(e.0))?;
        }
        Ok(snapshot.finish())
    }

    /// A builder of a snapshot from samples handed over one by one (an in-process registry's
    /// counters), counting only the series `filter` keeps.
    ///
    /// ```
    /// use weir_canary::{SeriesFilter, Snapshot};
    ///
    /// let filter = SeriesFilter::service("payment-svc");
    /// let mut b = Snapshot::builder(&filter);
    /// let ok = [("destination_service_name", "payment-svc"), ("destination_version", "v2"), ("response_code", "200")];
    /// let err = [("destination_service_name", "payment-svc"), ("destination_version", "v2"), ("response_code", "503")];
    /// b.requests(&ok, 99.0);
    /// b.requests(&err, 1.0);
    /// for (le, cumulative) in [(10.0, 60.0), (50.0, 100.0), (f64::INFINITY, 100.0)] {
    ///     b.duration_bucket(&ok, le, cumulative);
    /// }
    /// let snapshot = b.finish();
    /// let v2 = snapshot.version("v2").unwrap();
    /// assert_eq!(v2.success_rate(), Some(99.0));
    /// assert_eq!(v2.p99_ms(), Some(10.0 + 40.0 * (99.0 - 60.0) / 40.0));
    /// ```
    pub fn builder(filter: &SeriesFilter) -> SnapshotBuilder<'_> {
        SnapshotBuilder {
            filter,
            versions: BTreeMap::new(),
            buckets: BTreeMap::new(),
        }
    }

    /// The stats of one version, if the exposition had any series for it.
    pub fn version(&self, version: &str) -> Option<&VersionStats> {
        self.versions.get(version)
    }

    /// Every version seen, by name.
    pub fn versions(&self) -> impl Iterator<Item = (&str, &VersionStats)> {
        self.versions.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Adds another sidecar's snapshot to this one.
    pub fn add(&mut self, other: &Snapshot) {
        for (version, stats) in &other.versions {
            self.versions.entry(version.clone()).or_default().add(stats);
        }
    }

    /// The traffic between `earlier` and `self`, both of the same sidecar.
    ///
    /// A version whose request count went down was restarted in between (a counter reset); as
    /// Prometheus' `increase()` does, its whole current count is taken as the window's traffic.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let versions = self
            .versions
            .iter()
            .map(|(version, now)| {
                let diff = match earlier.versions.get(version) {
                    Some(before) if !now.was_reset_since(before) => now.minus(before),
                    _ => now.clone(),
                };
                (version.clone(), diff)
            })
            .collect();
        Snapshot { versions }
    }
}

// === impl SnapshotBuilder ===

impl SnapshotBuilder<'_> {
    /// Whether samples of this metric name are read (every other name is skipped).
    fn reads(name: &str) -> bool {
        name == telemetry::REQUESTS_TOTAL
            || name == telemetry::REQUEST_DURATION_BUCKET
            || name == FIRST_ERROR
            || name == FIRST_SLOW
    }

    /// One sample as the exposition names it: [`REQUESTS_TOTAL`] counts requests,
    /// `istio_request_duration_milliseconds_bucket` is a cumulative bucket whose bound is its
    /// `le` label. Returns whether the sample counted: other names, series the filter drops and
    /// series without `destination_version` do not.
    pub fn sample<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        name: &str,
        labels: &[(K, V)],
        value: f64,
    ) -> Result<bool, SampleError> {
        if name == telemetry::REQUESTS_TOTAL {
            return Ok(self.requests(labels, value));
        }
        if name == FIRST_ERROR {
            return Ok(self.first_failure(labels, None, value));
        }
        if name == FIRST_SLOW {
            let over = label(labels, "over_ms")
                .and_then(parse_value)
                .ok_or(SampleError(
                    "a first-slow sample without a numeric `over_ms` label",
                ))?;
            return Ok(self.first_failure(labels, Some(over), value));
        }
        if name != telemetry::REQUEST_DURATION_BUCKET {
            return Ok(false);
        }
        let le =
            label(labels, LE).ok_or(SampleError("a histogram bucket without an `le` label"))?;
        let bound = parse_value(le)
            .filter(|b| !b.is_nan())
            .ok_or(SampleError("an `le` label that is not a number"))?;
        Ok(self.duration_bucket(labels, bound, value))
    }

    /// `value` requests of one label set of [`REQUESTS_TOTAL`]; a `response_code` starting
    /// with `5` counts as a failure. Returns whether the series counted.
    pub fn requests<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        labels: &[(K, V)],
        value: f64,
    ) -> bool {
        let Some(version) = self.version_of(labels) else {
            return false;
        };
        let failed = label(labels, key::RESPONSE_CODE).is_some_and(|c| c.starts_with('5'));
        let stats = self.versions.entry(version.to_string()).or_default();
        stats.requests += value;
        if !failed {
            stats.non_5xx += value;
        }
        true
    }

    /// One bucket of [`REQUEST_DURATION`]: `cumulative` observations of at most `le_ms` ms
    /// (`f64::INFINITY` for `+Inf`) in one label set. Returns whether the series counted.
    pub fn duration_bucket<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        labels: &[(K, V)],
        le_ms: f64,
        cumulative: f64,
    ) -> bool {
        if le_ms.is_nan() {
            return false;
        }
        let Some(version) = self.version_of(labels) else {
            return false;
        };
        *self
            .buckets
            .entry(version.to_string())
            .or_default()
            .entry(Bound(le_ms))
            .or_default() += cumulative;
        true
    }

    /// When the destination first answered with a 5xx (`over_ms` `None`) or slower than
    /// `over_ms`, as Unix ms, in one label set; the earliest of several counts. Returns
    /// whether the series counted.
    pub fn first_failure<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        labels: &[(K, V)],
        over_ms: Option<f64>,
        unix_ms: f64,
    ) -> bool {
        let Some(version) = self.version_of(labels) else {
            return false;
        };
        let stats = self.versions.entry(version.to_string()).or_default();
        match over_ms {
            None => stats.first_error_ms = earliest(stats.first_error_ms, Some(unix_ms)),
            Some(over) => merge_first(&mut stats.first_slow_ms, &[(over, unix_ms)]),
        }
        true
    }

    /// The snapshot of every sample counted.
    pub fn finish(self) -> Snapshot {
        let mut versions = self.versions;
        for (version, by_bound) in self.buckets {
            versions.entry(version).or_default().buckets =
                by_bound.into_iter().map(|(b, c)| (b.0, c)).collect();
        }
        Snapshot { versions }
    }

    /// The version of a series the filter keeps.
    fn version_of<'l, K: AsRef<str>, V: AsRef<str>>(
        &self,
        labels: &'l [(K, V)],
    ) -> Option<&'l str> {
        if !self.filter.keeps(labels) {
            return None;
        }
        label(labels, key::DESTINATION_VERSION)
    }
}

// === impl VersionStats ===

impl VersionStats {
    /// Non-5xx requests as a percentage of all requests; `None` without requests.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| self.non_5xx / self.requests * 100.0)
    }

    /// The 99th percentile of the request duration in ms, as Prometheus'
    /// `histogram_quantile(0.99, ...)` computes it; `None` without observations.
    pub fn p99_ms(&self) -> Option<f64> {
        histogram_quantile(0.99, &self.buckets)
    }

    /// The first failure a gate would count: the first 5xx (`over_ms` `None`), or the first
    /// response slower than the largest reported bound at or under `over_ms` (a response
    /// over that bound may still be under `over_ms`: the time is never later than the
    /// breach's). Unix ms.
    pub fn first_failure_ms(&self, over_ms: Option<f64>) -> Option<f64> {
        match over_ms {
            None => self.first_error_ms,
            Some(max) => self
                .first_slow_ms
                .iter()
                .rev()
                .find(|(over, _)| *over <= max)
                .map(|(_, ms)| *ms),
        }
    }

    fn add(&mut self, other: &VersionStats) {
        self.requests += other.requests;
        self.non_5xx += other.non_5xx;
        self.buckets = merge_buckets(&self.buckets, &other.buckets, |a, b| a + b);
        self.first_error_ms = earliest(self.first_error_ms, other.first_error_ms);
        merge_first(&mut self.first_slow_ms, &other.first_slow_ms);
    }

    fn minus(&self, before: &VersionStats) -> VersionStats {
        VersionStats {
            requests: self.requests - before.requests,
            non_5xx: self.non_5xx - before.non_5xx,
            buckets: merge_buckets(&self.buckets, &before.buckets, |a, b| (a - b).max(0.0)),
            first_error_ms: self.first_error_ms,
            first_slow_ms: self.first_slow_ms.clone(),
        }
    }

    fn was_reset_since(&self, before: &VersionStats) -> bool {
        self.requests < before.requests
            || self.non_5xx < before.non_5xx
            || merge_buckets(&self.buckets, &before.buckets, |a, b| a - b)
                .iter()
                .any(|(_, d)| *d < 0.0)
    }
}

fn earliest(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Merges `(over_ms, unix ms)` pairs into `into`, keeping the earliest time per bound, sorted.
fn merge_first(into: &mut Vec<(f64, f64)>, other: &[(f64, f64)]) {
    for &(over, ms) in other {
        match into.iter_mut().find(|(o, _)| *o == over) {
            Some(slot) => slot.1 = slot.1.min(ms),
            None => into.push((over, ms)),
        }
    }
    into.sort_by(|a, b| a.0.total_cmp(&b.0));
}

/// Combines two bucket lists bound by bound; a bound missing on one side counts as 0 there.
fn merge_buckets(
    a: &[(f64, f64)],
    b: &[(f64, f64)],
    op: impl Fn(f64, f64) -> f64,
) -> Vec<(f64, f64)> {
    let mut out: BTreeMap<Bound, (f64, f64)> = BTreeMap::new();
    for (le, c) in a {
        out.entry(Bound(*le)).or_default().0 = *c;
    }
    for (le, c) in b {
        out.entry(Bound(*le)).or_default().1 = *c;
    }
    out.into_iter()
        .map(|(le, (x, y))| (le.0, op(x, y)))
        .collect()
}

/// The `q` quantile of a cumulative histogram, with the semantics of Prometheus'
/// `histogram_quantile`: linear interpolation inside the bucket holding the rank, the lowest
/// bucket starting at 0, and the upper bound of the last finite bucket when the rank falls in
/// the `+Inf` bucket.
///
/// `buckets` are (upper bound, cumulative count) in any order. `None` when the quantile is
/// undefined: no `+Inf` bucket, fewer than two buckets, or no observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if q.is_nan() {
        return None;
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    let mut sorted: Vec<(f64, f64)> = buckets.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Same bound twice (from label sets that differ only elsewhere): one bucket.
    sorted.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            earlier.1 += later.1;
            true
        } else {
            false
        }
    });
    if sorted.len() < 2 || sorted.last().is_none_or(|(le, _)| *le != f64::INFINITY) {
        return None;
    }
    // Scrapes are not atomic: a later bucket can read lower than an earlier one. Prometheus
    // flattens such dips rather than fail, and so does weir.
    let mut max = f64::NEG_INFINITY;
    for (_, count) in &mut sorted {
        max = max.max(*count);
        *count = max;
    }
    let total = sorted[sorted.len() - 1].1;
    if total <= 0.0 {
        return None;
    }
    let mut rank = q * total;
    let b = sorted[..sorted.len() - 1]
        .iter()
        .position(|(_, count)| *count >= rank)
        .unwrap_or(sorted.len() - 1);
    if b == sorted.len() - 1 {
        return Some(sorted[sorted.len() - 2].0);
    }
    if b == 0 && sorted[0].0 <= 0.0 {
        return Some(sorted[0].0);
    }
    let (end, mut count) = sorted[b];
    let mut start = 0.0;
    if b > 0 {
        start = sorted[b - 1].0;
        count -= sorted[b - 1].1;
        rank -= sorted[b - 1].1;
    }
    Some(start + (end - start) * (rank / count))
}

/// A bucket bound ordered by value (`le` is never NaN once parsed).
#[derive(Clone, Copy, Debug)]
struct Bound(f64);

impl PartialEq for Bound {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bound {}
impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bound {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

// === the text format ===

type Labels = Vec<(String, String)>;

struct Sample {
    labels: Labels,
    value: f64,
}

fn label<'a, K: AsRef<str>, V: AsRef<str>>(labels: &'a [(K, V)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k.as_ref() == name)
        .map(|(_, v)| v.as_ref())
}

/// `name{a="x",b="y"} value [timestamp]`, the name already split off at `at`.
fn parse_sample(line: &str, at: usize) -> Result<Sample, &'static str> {
    let mut rest = &line[at..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(body)?;
        labels = parsed;
        rest = after;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or("a sample without a value")?;
    let value = parse_value(value).ok_or("a sample value that is not a number")?;
    Ok(Sample { labels, value })
}

/// Parses `a="x",b="y"}` and returns the labels and the text after the closing brace.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), &'static str> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or("a label without `=`")?;
        let name = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start();
        let mut chars = s
            .strip_prefix('"')
            .ok_or("a label value without quotes")?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                None => return Err("an unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("an unterminated label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        // `end` indexes the text after the opening quote.
        s = &s[1 + end + 1..];
        labels.push((name, value));
    }
}

/// A sample value or `le` bound: a float, `+Inf`, `-Inf` or `NaN`.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENVOY_BOUNDS: [&str; 20] = [
        "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
        "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf",
    ];

    /// A sidecar's exposition with `counts[i]` observations in Envoy bucket i (not cumulative).
    fn histogram(version: &str, code: &str, counts: &[u64]) -> String {
        let mut out = String::new();
        let mut cumulative = 0;
        for (i, le) in ENVOY_BOUNDS.iter().enumerate() {
            cumulative += counts.get(i).copied().unwrap_or(0);
            out.push_str(&format!(
                "istio_request_duration_milliseconds_bucket{{destination_version=\"{version}\",response_code=\"{code}\",le=\"{le}\"}} {cumulative}\n"
            ));
        }
        out
    }

    #[test]
    fn test_bounds_are_envoys() {
        let from_contract: Vec<String> = telemetry::DURATION_BUCKETS_MS
            .iter()
            .map(|b| b.to_string())
            .chain(["+Inf".to_string()])
            .collect();
        assert_eq!(from_contract, ENVOY_BOUNDS);
    }

    /// Samples as a registry holds them: (metric name, labels, value).
    type Row = (&'static str, &'static [(&'static str, &'static str)], f64);

    const ROWS: &[Row] = &[
        (
            "istio_requests_total",
            &[
                ("destination_service_name", "pay"),
                ("destination_version", "v2"),
                ("response_code", "200"),
            ],
            90.0,
        ),
        (
            "istio_requests_total",
            &[
                ("destination_service_name", "pay"),
                ("destination_version", "v2"),
                ("response_code", "503"),
            ],
            10.0,
        ),
        (
            "istio_requests_total",
            &[
                ("destination_service_name", "pay"),
                ("destination_version", "v1"),
                ("response_code", "200"),
            ],
            400.0,
        ),
        // Another service: dropped by the filter.
        (
            "istio_requests_total",
            &[
                ("destination_service_name", "other"),
                ("destination_version", "v2"),
                ("response_code", "500"),
            ],
            1000.0,
        ),
        // No version: never counted.
        (
            "istio_requests_total",
            &[
                ("destination_service_name", "pay"),
                ("response_code", "200"),
            ],
            7.0,
        ),
        // Another family: skipped.
        ("weir_route_weight", &[("destination_version", "v2")], 50.0),
        // Buckets of two response codes with the same bounds sum per bound; a quoted value.
        (
            "istio_request_duration_milliseconds_bucket",
            &[
                ("destination_service_name", "pay"),
                ("destination_version", "v2"),
                ("response_code", "200"),
                ("le", "10"),
            ],
            80.0,
        ),
        (
            "istio_request_duration_milliseconds_bucket",
            &[
                ("destination_service_name", "pay"),
                ("destination_version", "v2"),
                ("response_code", "200"),
                ("le", "+Inf"),
            ],
            90.0,
        ),
        (
            "istio_request_duration_milliseconds_bucket",
            &[
                ("destination_service_name", "pay"),
                ("destination_version", "v2"),
                ("response_code", "503"),
                ("le", "10"),
            ],
            0.0,
        ),
        (
            "istio_request_duration_milliseconds_bucket",
            &[
                ("destination_service_name", "pay"),
                ("destination_version", "v2"),
                ("response_code", "503"),
                ("le", "+Inf"),
            ],
            10.0,
        ),
        (
            "istio_request_duration_milliseconds_bucket",
            &[
                ("destination_service_name", "pay"),
                ("destination_version", "v\"3"),
                ("le", "2.5"),
            ],
            4.0,
        ),
    ];

    fn exposition_of(rows: &[Row]) -> String {
        rows.iter()
            .map(|(name, labels, value)| {
                let labels: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| {
                        format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
                    })
                    .collect();
                format!("{name}{{{}}} {value}\n", labels.join(","))
            })
            .collect()
    }

    #[test]
    fn the_builder_and_the_parser_agree() {
        for filter in [SeriesFilter::default(), SeriesFilter::service("pay")] {
            let parsed = Snapshot::parse(&exposition_of(ROWS), &filter).unwrap();

            let mut by_name = Snapshot::builder(&filter);
            let counted: Vec<bool> = ROWS
                .iter()
                .map(|(name, labels, value)| by_name.sample(name, labels, *value).unwrap())
                .collect();
            assert_eq!(by_name.finish(), parsed, "{filter:?}");
            let dropped = if filter.service.is_some() { 3 } else { 2 };
            assert_eq!(
                counted.iter().filter(|c| !**c).count(),
                dropped,
                "{filter:?}"
            );

            // The typed calls an in-process registry makes, with `le` as a number.
            let mut typed = Snapshot::builder(&filter);
            for (name, labels, value) in ROWS {
                let le = labels.iter().find(|(k, _)| *k == "le").map(|(_, v)| *v);
                let labels: Vec<(&str, &str)> =
                    labels.iter().copied().filter(|(k, _)| *k != "le").collect();
                match (*name, le) {
                    ("istio_requests_total", _) => {
                        typed.requests(&labels, *value);
                    }
                    ("istio_request_duration_milliseconds_bucket", Some(le)) => {
                        typed.duration_bucket(&labels, parse_value(le).unwrap(), *value);
                    }
                    _ => {}
                }
            }
            assert_eq!(typed.finish(), parsed, "{filter:?}");
        }
        let parsed = Snapshot::parse(&exposition_of(ROWS), &SeriesFilter::service("pay")).unwrap();
        let v2 = parsed.version("v2").unwrap();
        assert_eq!((v2.requests, v2.non_5xx), (100.0, 90.0));
        assert_eq!(v2.buckets, vec![(10.0, 80.0), (f64::INFINITY, 100.0)]);
        assert_eq!(parsed.version("v\"3").unwrap().buckets, vec![(2.5, 4.0)]);
    }

    #[test]
    fn first_failures_take_the_earliest_sidecar_and_survive_a_window() {
        let sidecar = |error: u64, slow: u64| {
            format!(
                "weir_first_error_timestamp_milliseconds{{destination_service_name=\"pay\",destination_version=\"v2\"}} {error}\n\
                 weir_first_slow_timestamp_milliseconds{{destination_service_name=\"pay\",destination_version=\"v2\",over_ms=\"250\"}} {slow}\n\
                 weir_first_slow_timestamp_milliseconds{{destination_service_name=\"pay\",destination_version=\"v2\",over_ms=\"500\"}} {}\n",
                slow + 40
            )
        };
        let filter = SeriesFilter::service("pay");
        let mut total = Snapshot::parse(&sidecar(1_000_900, 1_000_500), &filter).unwrap();
        total.add(&Snapshot::parse(&sidecar(1_000_100, 1_000_700), &filter).unwrap());
        let v2 = total.version("v2").unwrap();
        assert_eq!(v2.first_failure_ms(None), Some(1_000_100.0));
        // A 500 ms gate: the first response over 500 ms; a 400 ms gate: over 250 ms (the
        // largest bound under it), never later than the breach.
        assert_eq!(v2.first_failure_ms(Some(500.0)), Some(1_000_540.0));
        assert_eq!(v2.first_failure_ms(Some(400.0)), Some(1_000_500.0));
        assert_eq!(v2.first_failure_ms(Some(100.0)), None);
        // Timestamps are not counters: a window keeps the newest.
        let window = total.since(&Snapshot::default());
        assert_eq!(
            window.version("v2").unwrap().first_error_ms,
            Some(1_000_100.0)
        );
        let bad = "weir_first_slow_timestamp_milliseconds{destination_version=\"v2\"} 5\n";
        assert!(Snapshot::parse(bad, &SeriesFilter::default()).is_err());
    }

    #[test]
    fn unreadable_samples_are_refused() {
        let filter = SeriesFilter::default();
        let mut b = Snapshot::builder(&filter);
        let bucket = "istio_request_duration_milliseconds_bucket";
        for (labels, reason) in [
            (
                &[("destination_version", "v2")][..],
                "a histogram bucket without an `le` label",
            ),
            (
                &[("destination_version", "v2"), ("le", "ten")][..],
                "an `le` label that is not a number",
            ),
            (
                &[("destination_version", "v2"), ("le", "NaN")][..],
                "an `le` label that is not a number",
            ),
        ] {
            assert_eq!(
                b.sample(bucket, labels, 1.0),
                Err(SampleError(reason)),
                "{labels:?}"
            );
        }
        assert!(!b.duration_bucket(&[("destination_version", "v2")], f64::NAN, 1.0));
        assert_eq!(b.finish(), Snapshot::default());
    }

    const SIDECAR: &str = r#"# HELP istio_requests_total Total requests.
# TYPE istio_requests_total counter
istio_requests_total{reporter="source",destination_service_name="payment-svc",destination_version="v1",response_code="200",response_flags="-"} 900
istio_requests_total{reporter="source",destination_service_name="payment-svc",destination_version="v2",response_code="200",response_flags="-"} 95 1700000000000
istio_requests_total{reporter="source",destination_service_name="payment-svc",destination_version="v2",response_code="503",response_flags="UH"} 5
istio_requests_total{reporter="source",destination_service_name="other",destination_version="v2",response_code="500",response_flags="-"} 1000
# TYPE weir_route_weight gauge
weir_route_weight{virtual_service="payment-svc",subset="v2"} 10
"#;

    #[test]
    fn counts_requests_and_5xx_per_version() {
        let rows: [(SeriesFilter, &str, f64, Option<f64>); 4] = [
            (
                SeriesFilter::service("payment-svc"),
                "v2",
                100.0,
                Some(95.0),
            ),
            (
                SeriesFilter::service("payment-svc"),
                "v1",
                900.0,
                Some(100.0),
            ),
            // Without the service filter the other service's 5xx count too.
            (
                SeriesFilter::default(),
                "v2",
                1100.0,
                Some(95.0 / 1100.0 * 100.0),
            ),
            (SeriesFilter::service("payment-svc"), "v3", 0.0, None),
        ];
        for (filter, version, requests, rate) in rows {
            let snap = Snapshot::parse(SIDECAR, &filter).unwrap();
            let stats = snap.version(version).cloned().unwrap_or_default();
            assert_eq!(stats.requests, requests, "{version} {filter:?}");
            assert_eq!(stats.success_rate(), rate, "{version} {filter:?}");
        }
    }

    #[test]
    fn label_values_with_escapes_and_odd_spacing() {
        let text = "istio_requests_total{ destination_version = \"v\\\"2\\\\\" , response_code=\"200\", path=\"a,b}\\n\" } 3\n";
        let snap = Snapshot::parse(text, &SeriesFilter::default()).unwrap();
        assert_eq!(snap.version("v\"2\\").unwrap().requests, 3.0);
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        for (text, line) in [
            (
                "# ok\nistio_requests_total{destination_version=\"v2\"} lots\n",
                2,
            ),
            ("istio_requests_total{destination_version=\"v2} 1\n", 1),
            ("\n\nistio_requests_total{destination_version=v2} 1\n", 3),
            (
                "istio_request_duration_milliseconds_bucket{destination_version=\"v2\"} 1\n",
                1,
            ),
        ] {
            let err = Snapshot::parse(text, &SeriesFilter::default()).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
        }
        // Other families are never parsed, so their oddities do not matter.
        assert!(Snapshot::parse("some_other{{{ nonsense\n", &SeriesFilter::default()).is_ok());
    }

    #[test]
    fn p99_interpolates_like_histogram_quantile() {
        // (non-cumulative counts per Envoy bucket, expected p99 in ms)
        let rows: [(&[u64], Option<f64>); 6] = [
            // 100 requests all in (25, 50]: rank 99 -> 25 + 25 * 99/100.
            (&[0, 0, 0, 0, 0, 100], Some(49.75)),
            // 90 in (0,0.5], 10 in (250,500]: rank 99 is the 9th of 10 in (250,500].
            (&[90, 0, 0, 0, 0, 0, 0, 0, 10], Some(475.0)),
            // Everything in the lowest bucket interpolates from 0.
            (&[200], Some(0.495)),
            // Rank in the +Inf bucket: the highest finite bound.
            (
                &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],
                Some(3_600_000.0),
            ),
            // Empty histogram: undefined, never 0.
            (&[], None),
            (&[0, 0, 50, 50], Some(5.0 + 5.0 * 49.0 / 50.0)),
        ];
        for (counts, want) in rows {
            let snap =
                Snapshot::parse(&histogram("v2", "200", counts), &SeriesFilter::default()).unwrap();
            let got = snap.version("v2").and_then(VersionStats::p99_ms);
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{counts:?}: {g} != {w}"),
                _ => assert_eq!(got, want, "{counts:?}"),
            }
        }
    }

    #[test]
    fn quantile_edge_cases() {
        assert_eq!(histogram_quantile(0.99, &[(1.0, 5.0)]), None, "one bucket");
        assert_eq!(
            histogram_quantile(0.99, &[(1.0, 5.0), (2.0, 6.0)]),
            None,
            "no +Inf"
        );
        assert_eq!(
            histogram_quantile(1.5, &[(1.0, 5.0), (f64::INFINITY, 6.0)]),
            Some(f64::INFINITY)
        );
        // Out of order input and a non-monotonic dip are tolerated.
        let got = histogram_quantile(
            0.5,
            &[(f64::INFINITY, 10.0), (10.0, 10.0), (5.0, 6.0), (1.0, 7.0)],
        );
        // Monotonic fix makes (5, 7): rank 5 falls in (0,1] -> 1 * 5/7.
        assert!((got.unwrap() - 5.0 / 7.0).abs() < 1e-12, "{got:?}");
    }

    #[test]
    fn buckets_sum_across_label_sets_and_sidecars() {
        let a = histogram("v2", "200", &[0, 0, 0, 0, 0, 60]);
        let b = histogram("v2", "503", &[0, 0, 0, 0, 0, 0, 0, 0, 40]);
        let mut one = Snapshot::parse(&format!("{a}{b}"), &SeriesFilter::default()).unwrap();
        let two = Snapshot::parse(&a, &SeriesFilter::default()).unwrap();
        one.add(&two);
        let v2 = one.version("v2").unwrap();
        assert_eq!(v2.buckets.last(), Some(&(f64::INFINITY, 160.0)));
        // 160 observations, rank 158.4: in (250, 500] which holds 40 (from 120 to 160).
        let want = 250.0 + 250.0 * (158.4 - 120.0) / 40.0;
        assert!((v2.p99_ms().unwrap() - want).abs() < 1e-9);
    }

    #[test]
    fn window_difference_and_counter_reset() {
        let filter = SeriesFilter::default();
        let t0 = Snapshot::parse(
            &format!(
                "istio_requests_total{{destination_version=\"v2\",response_code=\"200\"}} 100\n{}",
                histogram("v2", "200", &[0, 0, 0, 100])
            ),
            &filter,
        )
        .unwrap();
        let t1 = Snapshot::parse(
            &format!(
                "istio_requests_total{{destination_version=\"v2\",response_code=\"200\"}} 150\n\
                 istio_requests_total{{destination_version=\"v2\",response_code=\"500\"}} 50\n{}",
                histogram("v2", "200", &[0, 0, 0, 100, 0, 0, 0, 0, 0, 100])
            ),
            &filter,
        )
        .unwrap();
        let w = t1.since(&t0);
        let v2 = w.version("v2").unwrap();
        assert_eq!((v2.requests, v2.non_5xx), (100.0, 50.0));
        assert_eq!(v2.success_rate(), Some(50.0));
        // The window holds only the 100 slow requests in (500, 1000].
        assert!((v2.p99_ms().unwrap() - (500.0 + 500.0 * 99.0 / 100.0)).abs() < 1e-9);

        // The sidecar restarted: its counters start again from a small number.
        let t2 = Snapshot::parse(
            "istio_requests_total{destination_version=\"v2\",response_code=\"200\"} 7\n",
            &filter,
        )
        .unwrap();
        assert_eq!(t2.since(&t1).version("v2").unwrap().requests, 7.0);
        // A version that appears for the first time counts from zero.
        assert_eq!(
            t0.since(&Snapshot::default())
                .version("v2")
                .unwrap()
                .requests,
            100.0
        );
    }
}
