//! Fault, retries, header edits, ports, percentages and durations of a rule.

use std::collections::BTreeMap;
use std::str::FromStr;

use http::{HeaderName, HeaderValue, StatusCode};

use super::*;
use crate::duration::parse_duration;
use crate::finding::{Code, Finding};
use crate::raw::*;
use crate::table::*;
use crate::yaml::Document;

impl Compiler<'_> {
    pub(super) fn port(
        &mut self,
        port: Option<&RawPortSelector>,
        doc: &Document,
        path: &str,
    ) -> Option<u16> {
        let number = port?.number;
        match u16::try_from(number) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    doc.location(path),
                    format!("port {number} is not 1 to 65535"),
                ));
                None
            }
        }
    }

    /// A percentage 0..=100 as millionths.
    pub(super) fn percentage(&mut self, value: f64, doc: &Document, path: &str) -> u32 {
        if !(0.0..=100.0).contains(&value) || !value.is_finite() {
            self.findings.push(Finding::error(
                Code::InvalidValue,
                doc.location(path),
                format!("percentage {value} is not between 0 and 100"),
            ));
            return 0;
        }
        (value * 10_000.0).round() as u32
    }

    pub(super) fn duration(
        &mut self,
        text: &str,
        doc: &Document,
        path: &str,
    ) -> Option<std::time::Duration> {
        match parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.findings
                    .push(Finding::error(Code::InvalidValue, doc.location(path), e));
                None
            }
        }
    }

    pub(super) fn fault(&mut self, f: &RawFault, doc: &Document, path: &str) -> Fault {
        let delay = f.delay.as_ref().and_then(|d| {
            let Some(fixed) = &d.fixed_delay else {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    doc.location(&format!("{path}.delay")),
                    "fault.delay needs fixedDelay, e.g. `fixedDelay: 2s`",
                ));
                return None;
            };
            let dur = self.duration(fixed, doc, &format!("{path}.delay.fixedDelay"))?;
            let share = match (&d.percentage, d.percent) {
                (Some(p), _) => {
                    self.percentage(p.value, doc, &format!("{path}.delay.percentage.value"))
                }
                (None, Some(p)) => {
                    self.percentage(f64::from(p), doc, &format!("{path}.delay.percent"))
                }
                (None, None) => 1_000_000,
            };
            Some((dur, share))
        });
        let abort = f.abort.as_ref().and_then(|a| {
            let Some(code) = a.http_status else {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    doc.location(&format!("{path}.abort")),
                    "fault.abort needs httpStatus, e.g. `httpStatus: 503`",
                ));
                return None;
            };
            let status = u16::try_from(code)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok());
            let Some(status) = status.filter(|s| (200..600).contains(&s.as_u16())) else {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    doc.location(&format!("{path}.abort.httpStatus")),
                    format!("httpStatus {code} is not an HTTP status from 200 to 599"),
                ));
                return None;
            };
            let share = match &a.percentage {
                Some(p) => self.percentage(p.value, doc, &format!("{path}.abort.percentage.value")),
                None => 1_000_000,
            };
            Some((status, share))
        });
        Fault { delay, abort }
    }

    pub(super) fn retries(
        &mut self,
        r: &RawRetries,
        doc: &Document,
        path: &str,
    ) -> Option<RetryPolicy> {
        if r.attempts < 0 {
            self.findings.push(Finding::error(
                Code::InvalidValue,
                doc.location(&format!("{path}.attempts")),
                format!("attempts {} is negative", r.attempts),
            ));
            return None;
        }
        if r.attempts == 0 {
            return None;
        }
        let per_try_timeout = match &r.per_try_timeout {
            Some(t) => self.duration(t, doc, &format!("{path}.perTryTimeout")),
            None => None,
        };
        let retry_on = match &r.retry_on {
            None => istio_default_retries().retry_on,
            Some(list) => {
                let mut on = RetryOn::default();
                let mut listed_codes = false;
                for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    match item {
                        "5xx" => on.server_error = true,
                        "gateway-error" => on.gateway_error = true,
                        "connect-failure" => on.connect_failure = true,
                        "reset" | "refused-stream" | "reset-before-request" => on.reset = true,
                        "retriable-4xx" => on.retriable_4xx = true,
                        "retriable-status-codes" => listed_codes = true,
                        // gRPC conditions map onto HTTP ones weir sees.
                        "unavailable" | "cancelled" | "deadline-exceeded" | "resource-exhausted"
                        | "internal" | "envoy-ratelimited" | "retriable-headers" | "http3-post-connect-failure" => {}
                        code => match code.parse::<u16>() {
                            Ok(c) if (100..600).contains(&c) => on.status_codes.push(c),
                            _ => self.findings.push(Finding::error(
                                Code::InvalidValue,
                                doc.location(&format!("{path}.retryOn")),
                                format!("retryOn condition {code:?} is unknown: use 5xx, gateway-error, connect-failure, reset, retriable-4xx, retriable-status-codes or status codes"),
                            )),
                        },
                    }
                }
                if listed_codes && on.status_codes.is_empty() {
                    on.status_codes.push(503);
                }
                on.status_codes.sort_unstable();
                on.status_codes.dedup();
                on
            }
        };
        Some(RetryPolicy {
            attempts: r.attempts as u32,
            per_try_timeout,
            retry_on,
        })
    }

    pub(super) fn header_edits(
        &mut self,
        raw: Option<&RawHeaders>,
        doc: &Document,
        path: &str,
    ) -> HeaderEdits {
        let Some(raw) = raw else {
            return HeaderEdits::default();
        };
        HeaderEdits {
            request: self.header_ops(raw.request.as_ref(), doc, &format!("{path}.request")),
            response: self.header_ops(raw.response.as_ref(), doc, &format!("{path}.response")),
        }
    }

    pub(super) fn header_ops(
        &mut self,
        raw: Option<&RawHeaderOperations>,
        doc: &Document,
        path: &str,
    ) -> HeaderOps {
        let Some(raw) = raw else {
            return HeaderOps::default();
        };
        let mut pairs = |map: &BTreeMap<String, String>, op: &str| {
            let mut out = Vec::new();
            for (k, v) in map {
                match (
                    HeaderName::from_str(&k.to_ascii_lowercase()),
                    HeaderValue::from_str(v),
                ) {
                    (Ok(n), Ok(v)) => out.push((n, v)),
                    _ => self.findings.push(Finding::error(
                        Code::InvalidValue,
                        doc.location(&format!("{path}.{op}.{k}")),
                        format!("header {k:?}: {v:?} is not a valid header name and value"),
                    )),
                }
            }
            out
        };
        let set = pairs(&raw.set, "set");
        let add = pairs(&raw.add, "add");
        let mut remove = Vec::new();
        for (i, k) in raw.remove.iter().enumerate() {
            match HeaderName::from_str(&k.to_ascii_lowercase()) {
                Ok(n) => remove.push(n),
                Err(_) => self.findings.push(Finding::error(
                    Code::InvalidValue,
                    doc.location(&format!("{path}.remove[{i}]")),
                    format!("{k:?} is not a valid header name"),
                )),
            }
        }
        HeaderOps { set, add, remove }
    }
}

/// Istio's retry policy when a rule sets none: 2 retries on connect failure, refused stream and
/// 503.
pub fn istio_default_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        per_try_timeout: None,
        retry_on: RetryOn {
            connect_failure: true,
            reset: true,
            status_codes: vec![503],
            ..RetryOn::default()
        },
    }
}
