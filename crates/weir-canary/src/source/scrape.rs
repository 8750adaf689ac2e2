//! Scraping `/metrics` (or reading exposition text in-process) and turning successive scrapes
//! into window numbers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{MetricSource, Observation, SourceError};
use crate::exposition::{SeriesFilter, Snapshot};
use crate::transport::{Client, Request};

type Fetch = Box<dyn FnMut() -> Result<Vec<(String, String)>, SourceError> + Send>;

/// A [`MetricSource`] over exposition text: the `/metrics` of one or many sidecars, or a
/// function returning the text of an in-process registry.
///
/// Each call scrapes every target once (calls at the same `now` share one scrape) and keeps
/// the result in a short history. A window's numbers are the newest scrape minus the newest
/// scrape at least `window` old, computed per target (so one sidecar's restart is seen as a
/// counter reset) and summed over the targets. Until the history reaches back a full window
/// the oldest scrape is used and [`Observation::window`] says how much was covered.
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
    targets: Vec<Snapshot>,
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
        Self::from_fetch(Box::new(move || {
            urls.iter()
                .map(|url| {
                    let mut request = Request::get(url, timeout);
                    request.token = token.as_deref();
                    let reply = client.send(&request).map_err(|source| SourceError::Http {
                        url: url.clone(),
                        source,
                    })?;
                    if reply.status != 200 {
                        return Err(SourceError::Status {
                            url: url.clone(),
                            status: reply.status,
                        });
                    }
                    Ok((url.clone(), reply.body))
                })
                .collect()
        }))
    }

    /// Reads exposition text from a function instead of over HTTP: the sidecar's own registry
    /// when the controller runs inside `weir serve --canary`.
    pub fn from_text<F>(mut text: F) -> Self
    where
        F: FnMut() -> String + Send + 'static,
    {
        Self::from_fetch(Box::new(move || {
            Ok(vec![("in-process registry".to_string(), text())])
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
            let texts = (self.fetch)()?;
            let targets = texts
                .iter()
                .map(|(origin, text)| {
                    Snapshot::parse(text, &self.filter).map_err(|source| SourceError::Exposition {
                        origin: origin.clone(),
                        source,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
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
        for (now_t, then_t) in newest.targets.iter().zip(&base.targets) {
            total.add(&now_t.since(then_t));
        }
        let stats = total.version(version).cloned().unwrap_or_default();
        Ok(Observation {
            requests: stats.requests.round().max(0.0) as u64,
            success_rate: stats.success_rate(),
            p99_ms: stats.p99_ms(),
            window: now.saturating_duration_since(base.at),
        })
    }

    fn request_count(&mut self, version: &str, now: Instant) -> Result<Option<u64>, SourceError> {
        let scrape = self.scrape(now)?;
        let total: f64 = scrape
            .targets
            .iter()
            .filter_map(|t| t.version(version))
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
}
