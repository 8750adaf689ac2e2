//! Prometheus' HTTP API (`GET /api/v1/query`, instant queries) as a metric source.

use std::time::{Duration, Instant};

use serde_json::Value;
use weir_router::telemetry::{REQUEST_DURATION_BUCKET, REQUESTS_TOTAL, label};

use super::{MetricSource, Observation, SourceError};
use crate::exposition::SeriesFilter;
use crate::template::FlaggerQueries;
use crate::transport::{Client, Request};
use crate::units::promql_duration;

/// A [`MetricSource`] that asks a Prometheus server, e.g. `http://127.0.0.1:9090`.
///
/// The built-in gates send either weir's per-version PromQL ([`BuiltinQueries`], over the
/// series a [`SeriesFilter`] keeps, the default) or, after [`flagger`](Self::flagger),
/// Flagger's own Istio queries ([`FlaggerQueries`]) byte for byte. Custom metrics send their
/// query as written. Prometheus evaluates at its own "now", so the `now` passed in is not used.
pub struct PrometheusSource {
    base: String,
    client: Client,
    filter: SeriesFilter,
    flagger: Option<(FlaggerQueries, String)>,
    timeout: Duration,
}

/// The PromQL of the built-in gates for one version and window, over weir's `istio_*` series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltinQueries {
    selector: String,
    range: String,
}

// === impl PrometheusSource ===

impl PrometheusSource {
    /// A source asking the Prometheus at `base_url` (no trailing path), 5 s per query.
    pub fn new(base_url: impl Into<String>) -> Self {
        PrometheusSource {
            base: base_url.into().trim_end_matches('/').to_string(),
            client: Client::new(),
            filter: SeriesFilter::default(),
            flagger: None,
            timeout: Duration::from_secs(5),
        }
    }

    /// Judges the canary with Flagger's built-in queries: `version` (the canary's
    /// `destination_version`, the only version the controller observes) is read with
    /// `queries`, which select the canary's workload as the destination's sidecar reports it
    /// (`reporter="destination"`). Any other version is refused: these queries cannot tell
    /// versions apart.
    pub fn flagger(mut self, queries: FlaggerQueries, version: impl Into<String>) -> Self {
        self.flagger = Some((queries, version.into()));
        self
    }

    /// Counts only the series this filter keeps (e.g. one `destination_service_name`).
    pub fn filter(mut self, filter: SeriesFilter) -> Self {
        self.filter = filter;
        self
    }

    /// The timeout of one query.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs one instant query: `None` for an empty result or NaN.
    fn instant(&self, promql: &str) -> Result<Option<f64>, SourceError> {
        let url = format!("{}/api/v1/query", self.base);
        let query = [("query", promql)];
        let request = Request {
            query: &query,
            ..Request::get(&url, self.timeout)
        };
        let reply = self
            .client
            .send(&request)
            .map_err(|source| SourceError::Http {
                url: url.clone(),
                source,
            })?;
        parse_answer(&reply.body).map_err(|reason| SourceError::Query {
            query: promql.to_string(),
            reason: if reply.is_success() {
                reason
            } else {
                format!("HTTP {}: {reason}", reply.status)
            },
        })
    }
}

impl MetricSource for PrometheusSource {
    fn observe(
        &mut self,
        version: &str,
        window: Duration,
        _now: Instant,
    ) -> Result<Observation, SourceError> {
        let [requests, success, p99] = match &self.flagger {
            None => {
                let q = BuiltinQueries::new(&self.filter, version, window);
                [q.requests(), q.success_rate(), q.p99()]
            }
            Some((q, canary)) if canary == version => [
                q.requests(window),
                q.request_success_rate(window),
                q.request_duration(window),
            ],
            Some(_) => {
                return Err(SourceError::Unsupported(
                    "Flagger's built-in queries select the canary's workload only: no other version can be observed",
                ));
            }
        };
        let requests = self.instant(&requests)?.unwrap_or(0.0);
        let (success_rate, p99_ms) = if requests > 0.0 {
            // Flagger's success rate has no fallback for "no non-5xx series at all": with
            // requests in the window, an empty answer means every one of them failed.
            let rate = self.instant(&success)?;
            let rate = match (&self.flagger, rate) {
                (Some(_), None) => Some(0.0),
                (_, rate) => rate,
            };
            (rate, self.instant(&p99)?)
        } else {
            (None, None)
        };
        Ok(Observation {
            requests: requests.round().max(0.0) as u64,
            success_rate,
            p99_ms,
            window,
        })
    }

    fn query(&mut self, promql: &str, _now: Instant) -> Result<Option<f64>, SourceError> {
        self.instant(promql)
    }

    fn supports_queries(&self) -> bool {
        true
    }
}

// === impl BuiltinQueries ===

impl BuiltinQueries {
    /// The queries for the version whose `destination_version` is `version`, over `window`.
    pub fn new(filter: &SeriesFilter, version: &str, window: Duration) -> Self {
        let mut matchers = vec![format!(
            "{}=\"{}\"",
            label::DESTINATION_VERSION,
            escape(version)
        )];
        matchers.extend(
            filter
                .matchers()
                .into_iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v))),
        );
        BuiltinQueries {
            selector: matchers.join(","),
            range: promql_duration(window),
        }
    }

    /// Requests in the window: `sum(increase(istio_requests_total{...}[w]))`.
    pub fn requests(&self) -> String {
        format!(
            "sum(increase({REQUESTS_TOTAL}{{{}}}[{}]))",
            self.selector, self.range
        )
    }

    /// Non-5xx requests as a percentage of all, Flagger's `request-success-rate`.
    ///
    /// The numerator falls back to 0: when every request failed there is no non-5xx series at
    /// all, and without the fallback a 0% success rate would read as "no data".
    pub fn success_rate(&self) -> String {
        format!(
            "(sum(rate({REQUESTS_TOTAL}{{{sel},{code}!~\"5.*\"}}[{r}])) or on() vector(0)) \
             / sum(rate({REQUESTS_TOTAL}{{{sel}}}[{r}])) * 100",
            sel = self.selector,
            code = label::RESPONSE_CODE,
            r = self.range
        )
    }

    /// The 99th percentile duration in ms, Flagger's `request-duration`.
    pub fn p99(&self) -> String {
        format!(
            "histogram_quantile(0.99, sum(rate({REQUEST_DURATION_BUCKET}{{{}}}[{}])) by (le))",
            self.selector, self.range
        )
    }
}

/// Escapes a PromQL double-quoted string.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Reads `{"status":"success","data":{"resultType":"vector","result":[{"value":[t,"v"]}]}}`.
fn parse_answer(body: &str) -> Result<Option<f64>, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON ({e})"))?;
    if v["status"] != "success" {
        let kind = v["errorType"].as_str().unwrap_or("error");
        let error = v["error"].as_str().unwrap_or("no error message");
        return Err(format!("{kind}: {error}"));
    }
    let data = &v["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => {
            let result = data["result"]
                .as_array()
                .ok_or("a vector without a result list")?;
            match result.as_slice() {
                [] => return Ok(None),
                [one] => &one["value"],
                many => {
                    return Err(format!(
                        "{} series returned where one number is needed: aggregate the query, e.g. with sum()",
                        many.len()
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "result type {other:?}: write the query so that it returns one number"
            ));
        }
    };
    let text = sample[1].as_str().ok_or("a sample without a value")?;
    let value: f64 = match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => text
            .parse()
            .map_err(|_| format!("value {text:?} is not a number"))?,
    };
    Ok((!value.is_nan()).then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_promql() {
        let q = BuiltinQueries::new(
            &SeriesFilter::service("payment-svc"),
            "v2",
            Duration::from_secs(60),
        );
        assert_eq!(
            q.requests(),
            r#"sum(increase(istio_requests_total{destination_version="v2",destination_service_name="payment-svc"}[60s]))"#
        );
        assert_eq!(
            q.success_rate(),
            r#"(sum(rate(istio_requests_total{destination_version="v2",destination_service_name="payment-svc",response_code!~"5.*"}[60s])) or on() vector(0)) / sum(rate(istio_requests_total{destination_version="v2",destination_service_name="payment-svc"}[60s])) * 100"#
        );
        let q = BuiltinQueries::new(
            &SeriesFilter::default(),
            "v\"2",
            Duration::from_millis(1500),
        );
        assert_eq!(
            q.p99(),
            r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{destination_version="v\"2"}[1500ms])) by (le))"#
        );
    }

    #[test]
    fn answers() {
        let rows: [(&str, Result<Option<f64>, &str>); 7] = [
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.123,"99.5"]}]}}"#,
                Ok(Some(99.5)),
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                Ok(None),
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#,
                Ok(None),
            ),
            (
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#,
                Ok(Some(2.0)),
            ),
            (
                r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#,
                Err("bad_data: parse error at char 5"),
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}"#,
                Err("2 series returned"),
            ),
            ("<html>", Err("not JSON")),
        ];
        for (body, want) in rows {
            match (parse_answer(body), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{body}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{body}: {got}"),
                (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
            }
        }
    }
}
