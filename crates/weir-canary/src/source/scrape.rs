//! Scraping `/metrics` (or reading an in-process registry) and turning successive scrapes into
//! window numbers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{MetricSource, Observation, SourceError};
use crate::exposition::{SeriesFilter, Snapshot};
use crate::replicas::ReplicaSet;
use crate::transport::{Client, Request};

/// One scrape: a snapshot per target, keyed by the target's name, read with the source's
/// filter.
type Fetch = Box<dyn FnMut(&SeriesFilter) -> Result<Vec<(String, Snapshot)>, SourceError> + Send>;

/// A [`MetricSource`] over sidecars' counters: the `/metrics` of one or many sidecars, or an
/// in-process registry (its exposition text, or its counters handed over directly).
///
/// Each call scrapes every target once (calls at the same `now` share one scrape) and keeps
/// the result in a short history. A window's numbers are the newest scrape minus the newest
/// scrape at least `window` old, computed per target (so one sidecar's restart is seen as a
/// counter reset) and summed over the targets. Until the history reaches back a full window
/// the oldest scrape is used and [`Observation::window`] says how much was covered. A target
/// that was not in the older scrape (a replica that joined, see
/// [`following`](Self::following)) counts once it is in both.
///
/// Any target failing makes the whole observation fail: numbers from some replicas only would
/// silently pass or fail a gate on a fraction of the traffic.
pub struct ScrapeSource {
    fetch: Fetch,
    filter: SeriesFilter,
    history: VecDeque<Scrape>,
    /// The longest window asked so far: how much history to keep.
    keep: Duration,
}

struct Scrape {
    at: Instant,
    targets: Vec<(String, Snapshot)>,
}

// === impl ScrapeSource ===

impl ScrapeSource {
    /// Scrapes these `/metrics` URLs (e.g. `http://127.0.0.1:15000/metrics`, one per sidecar)
    /// with a 2 s timeout each.
    pub fn new<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_timeout(urls, Duration::from_secs(2))
    }

    /// As [`new`](Self::new), with the timeout of one scrape.
    pub fn with_timeout<I, S>(urls: I, timeout: Duration) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_options(urls, timeout, None)
    }

    /// As [`new`](Self::new), sending `Authorization: Bearer <token>` with every scrape: the
    /// sidecars' admin API when it runs with `--admin-token`.
    pub fn with_token<I, S>(urls: I, token: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_options(urls, Duration::from_secs(2), Some(token.into()))
    }

    fn with_options<I, S>(urls: I, timeout: Duration, token: Option<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let urls: Vec<String> = urls.into_iter().map(Into::into).collect();
        let client = Client::new();
        Self::from_fetch(Box::new(move |filter| {
            urls.iter()
                .map(|url| scrape_one(&client, url, token.as_deref(), timeout, filter))
                .collect()
        }))
    }

    /// Scrapes `/metrics` of the replicas in `replicas` at each scrape (a
    /// [`DnsAdminSink`](crate::DnsAdminSink)'s, which admits a replica only once it has the
    /// current weights), with the admin token if any. A replica counts from its second scrape
    /// on: its first one is where its window starts.
    pub fn following(replicas: ReplicaSet, token: Option<String>) -> Self {
        let client = Client::new();
        let timeout = Duration::from_secs(2);
        Self::from_fetch(Box::new(move |filter| {
            replicas
                .urls()
                .iter()
                .map(|base| {
                    let url = format!("{base}/metrics");
                    scrape_one(&client, &url, token.as_deref(), timeout, filter)
                })
                .collect()
        }))
    }

    /// Reads exposition text from a function instead of over HTTP.
    pub fn from_text<F>(mut text: F) -> Self
    where
        F: FnMut() -> String + Send + 'static,
    {
        Self::from_fetch(Box::new(move |filter| {
            let origin = "in-process registry";
            Ok(vec![(origin.into(), parse(origin, &text(), filter)?)])
        }))
    }

    /// Reads a registry in the same process without going through text: `snapshot` is called
    /// once per scrape with the source's [filter](Self::filter) and returns the counters as a
    /// [`Snapshot`], typically built with [`Snapshot::builder`] from the registry's series.
    /// This is how a controller inside `weir serve --canary` reads the sidecar it runs in.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::time::{Duration, Instant};
    /// use weir_canary::{MetricSource, ScrapeSource, Snapshot};
    ///
    /// let served = Arc::new(AtomicU64::new(0));
    /// let counter = Arc::clone(&served);
    /// let mut source = ScrapeSource::from_snapshots(move |filter| {
    ///     let mut b = Snapshot::builder(filter);
    ///     let labels = [("destination_version", "v2"), ("response_code", "200")];
    ///     b.requests(&labels, counter.load(Ordering::Relaxed) as f64);
    ///     Ok(b.finish())
    /// });
    /// let t0 = Instant::now();
    /// source.observe("v2", Duration::from_secs(1), t0)?;
    /// served.store(250, Ordering::Relaxed);
    /// let o = source.observe("v2", Duration::from_secs(1), t0 + Duration::from_secs(1))?;
    /// assert_eq!((o.requests, o.success_rate), (250, Some(100.0)));
    /// # Ok::<(), weir_canary::SourceError>(())
    /// ```
    pub fn from_snapshots<F>(mut snapshot: F) -> Self
    where
        F: FnMut(&SeriesFilter) -> Result<Snapshot, SourceError> + Send + 'static,
    {
        Self::from_fetch(Box::new(move |filter| {
            Ok(vec![("in-process registry".into(), snapshot(filter)?)])
        }))
    }

    fn from_fetch(fetch: Fetch) -> Self {
        ScrapeSource {
            fetch,
            filter: SeriesFilter::default(),
            history: VecDeque::new(),
            keep: Duration::ZERO,
        }
    }

    /// Counts only the series this filter keeps (e.g. one `destination_service_name`).
    pub fn filter(mut self, filter: SeriesFilter) -> Self {
        self.filter = filter;
        self
    }

    /// The scrape at `now`, taking it unless one was taken at this very instant.
    fn scrape(&mut self, now: Instant) -> Result<&Scrape, SourceError> {
        if self.history.back().is_none_or(|s| s.at != now) {
            let targets = (self.fetch)(&self.filter)?;
            self.history.push_back(Scrape { at: now, targets });
            self.prune(now);
        }
        Ok(self.history.back().expect("a scrape was just kept"))
    }

    /// Drops scrapes no window will ask for: everything before the newest one that is at least
    /// `keep` old.
    fn prune(&mut self, now: Instant) {
        let Some(horizon) = now.checked_sub(self.keep) else {
            return;
        };
        while self.history.len() > 2 && self.history[1].at <= horizon {
            self.history.pop_front();
        }
    }
}

/// One `/metrics` URL, keyed by itself.
fn scrape_one(
    client: &Client,
    url: &str,
    token: Option<&str>,
    timeout: Duration,
    filter: &SeriesFilter,
) -> Result<(String, Snapshot), SourceError> {
    let mut request = Request::get(url, timeout);
    request.token = token;
    let reply = client.send(&request).map_err(|source| SourceError::Http {
        url: url.to_string(),
        source,
    })?;
    if reply.status != 200 {
        return Err(SourceError::Status {
            url: url.to_string(),
            status: reply.status,
        });
    }
    Ok((url.to_string(), parse(url, &reply.body, filter)?))
}

/// One target's exposition text, read with `filter`; `origin` names it in errors.
fn parse(origin: &str, text: &str, filter: &SeriesFilter) -> Result<Snapshot, SourceError> {
    Snapshot::parse(text, filter).map_err(|source| SourceError::Exposition {
        origin: origin.to_string(),
        source,
    })
}

impl MetricSource for ScrapeSource {
    fn observe(
        &mut self,
        version: &str,
        window: Duration,
        now: Instant,
    ) -> Result<Observation, SourceError> {
        self.keep = self.keep.max(window);
        self.scrape(now)?;
        let newest = self.history.back().expect("scraped");
        // The newest scrape at least `window` old; else the oldest there is.
        let horizon = now.checked_sub(window);
        let base = self
            .history
            .iter()
            .rev()
            .skip(1)
            .find(|s| horizon.is_some_and(|h| s.at <= h))
            .or_else(|| self.history.front().filter(|s| s.at != now));
        let Some(base) = base else {
            return Ok(Observation::default());
        };
        let mut total = Snapshot::default();
        for (key, now_t) in &newest.targets {
            if let Some((_, then_t)) = base.targets.iter().find(|(k, _)| k == key) {
                total.add(&now_t.since(then_t));
            }
        }
        let stats = total.version(version).cloned().unwrap_or_default();
        Ok(Observation {
            requests: stats.requests.round().max(0.0) as u64,
            success_rate: stats.success_rate(),
            p99_ms: stats.p99_ms(),
            window: now.saturating_duration_since(base.at),
        })
    }

    fn first_failure(&mut self, version: &str, over_ms: Option<f64>) -> Option<u64> {
        let newest = self.history.back()?;
        newest
            .targets
            .iter()
            .filter_map(|(_, t)| t.version(version)?.first_failure_ms(over_ms))
            .min_by(f64::total_cmp)
            .map(|ms| ms as u64)
    }

    fn request_count(&mut self, version: &str, now: Instant) -> Result<Option<u64>, SourceError> {
        let scrape = self.scrape(now)?;
        let total: f64 = scrape
            .targets
            .iter()
            .filter_map(|(_, t)| t.version(version))
            .map(|s| s.requests)
            .sum();
        Ok(Some(total.round() as u64))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn exposition(ok: u64, errors: u64) -> String {
        format!(
            "istio_requests_total{{destination_version=\"v2\",response_code=\"200\"}} {ok}\n\
             istio_requests_total{{destination_version=\"v2\",response_code=\"503\"}} {errors}\n"
        )
    }

    #[test]
    fn windows_come_from_the_history() {
        let counters = Arc::new(Mutex::new((0u64, 0u64)));
        let c = counters.clone();
        let mut source = ScrapeSource::from_text(move || {
            let (ok, err) = *c.lock().unwrap();
            exposition(ok, err)
        });
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);

        // One scrape: no window yet, so no data, never a pass.
        let first = source
            .observe("v2", Duration::from_secs(10), at(0))
            .unwrap();
        assert_eq!((first.requests, first.success_rate), (0, None));

        // Ten seconds of 100 ok requests a second, then a second of errors.
        for s in 1..=10 {
            *counters.lock().unwrap() = (100 * s, 0);
            source
                .observe("v2", Duration::from_secs(10), at(s))
                .unwrap();
        }
        *counters.lock().unwrap() = (1000, 100);
        let long = source
            .observe("v2", Duration::from_secs(10), at(11))
            .unwrap();
        assert_eq!(long.requests, 1000);
        assert_eq!(long.window, Duration::from_secs(10));
        assert!((long.success_rate.unwrap() - 90.0).abs() < 1e-9);
        // The same instant, a short window: the same scrape, only the last second.
        let short = source
            .observe("v2", Duration::from_secs(1), at(11))
            .unwrap();
        assert_eq!((short.requests, short.success_rate), (100, Some(0.0)));
        assert_eq!(source.request_count("v2", at(11)).unwrap(), Some(1100));
        // History is pruned to what the longest window needs.
        assert!(source.history.len() <= 12, "{}", source.history.len());
    }

    #[test]
    fn snapshots_handed_over_read_like_the_text() {
        // (ok, errors) counters of v2 in service "pay", and 1000 errors a tick of "other".
        let counters = Arc::new(Mutex::new((0u64, 0u64)));
        let (a, b) = (counters.clone(), counters.clone());
        let filter = SeriesFilter::service("pay");
        let mut text = ScrapeSource::from_text(move || {
            let (ok, err) = *a.lock().unwrap();
            format!(
                "istio_requests_total{{destination_service_name=\"pay\",destination_version=\"v2\",response_code=\"200\"}} {ok}\n\
                 istio_requests_total{{destination_service_name=\"pay\",destination_version=\"v2\",response_code=\"503\"}} {err}\n\
                 istio_requests_total{{destination_service_name=\"other\",destination_version=\"v2\",response_code=\"503\"}} {}\n",
                ok * 10
            )
        })
        .filter(filter.clone());
        let seen_filter = Arc::new(Mutex::new(None));
        let seen = seen_filter.clone();
        let mut direct = ScrapeSource::from_snapshots(move |f| {
            *seen.lock().unwrap() = Some(f.clone());
            let (ok, err) = *b.lock().unwrap();
            let mut snap = Snapshot::builder(f);
            let labels = |service, code| {
                [
                    ("destination_service_name", service),
                    ("destination_version", "v2"),
                    ("response_code", code),
                ]
            };
            snap.requests(&labels("pay", "200"), ok as f64);
            snap.requests(&labels("pay", "503"), err as f64);
            snap.requests(&labels("other", "503"), (ok * 10) as f64);
            Ok(snap.finish())
        })
        .filter(filter.clone());

        let t0 = Instant::now();
        let window = Duration::from_secs(3);
        for s in 0..6u64 {
            *counters.lock().unwrap() = (100 * s, 5 * s);
            let at = t0 + Duration::from_secs(s);
            let (x, y) = (
                text.observe("v2", window, at).unwrap(),
                direct.observe("v2", window, at).unwrap(),
            );
            assert_eq!(x, y, "second {s}");
            assert_eq!(
                text.request_count("v2", at).unwrap(),
                direct.request_count("v2", at).unwrap()
            );
        }
        let last = direct
            .observe("v2", window, t0 + Duration::from_secs(5))
            .unwrap();
        assert_eq!((last.requests, last.window), (315, window));
        assert_eq!(*seen_filter.lock().unwrap(), Some(filter));
    }

    #[test]
    fn a_registry_that_cannot_be_read_fails_the_observation() {
        let mut source =
            ScrapeSource::from_snapshots(|_| Err(SourceError::Unsupported("the registry is gone")));
        let err = source
            .observe("v2", Duration::from_secs(1), Instant::now())
            .unwrap_err();
        assert!(err.to_string().contains("the registry is gone"), "{err}");
    }
}
