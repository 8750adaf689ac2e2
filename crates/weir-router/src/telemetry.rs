//! The telemetry contract: what the data plane records and what the canary, the dashboards
//! and Flagger's queries read. One definition of the metric names, label keys, Envoy's
//! histogram buckets and Envoy's response flags, so the producer and the consumers of
//! `istio_requests_total` cannot drift apart.
//!
//! ```
//! use weir_router::telemetry::{self, ResponseFlags};
//! assert_eq!(telemetry::REQUESTS_TOTAL, "istio_requests_total");
//! assert_eq!((ResponseFlags::UF | ResponseFlags::URX).to_string(), "UF,URX");
//! assert_eq!(telemetry::DURATION_BUCKETS_US[0], 500); // 0.5 ms
//! ```

use std::fmt;

/// Istio's request counter (`_total` is added by the OpenMetrics encoder to the family name
/// [`REQUESTS`]).
pub const REQUESTS_TOTAL: &str = "istio_requests_total";
/// The family name of [`REQUESTS_TOTAL`] as registered (without `_total`).
pub const REQUESTS: &str = "istio_requests";
/// Istio's request duration histogram, in milliseconds, with [`DURATION_BUCKETS_MS`].
pub const REQUEST_DURATION: &str = "istio_request_duration_milliseconds";
/// The bucket series of [`REQUEST_DURATION`].
pub const REQUEST_DURATION_BUCKET: &str = "istio_request_duration_milliseconds_bucket";
/// weir's gauge of the weights in force, one series per destination.
pub const ROUTE_WEIGHT: &str = "weir_route_weight";
/// weir's gauge of the config generation in force.
pub const CONFIG_GENERATION: &str = "weir_config_generation";

/// Label keys of Istio's standard metrics, as weir writes them.
pub mod label {
    /// `source` on the outbound side, `destination` on the inbound side.
    pub const REPORTER: &str = "reporter";
    /// The workload that sent the request.
    pub const SOURCE_WORKLOAD: &str = "source_workload";
    /// The namespace of the workload that sent the request.
    pub const SOURCE_WORKLOAD_NAMESPACE: &str = "source_workload_namespace";
    /// The sender's `app` label.
    pub const SOURCE_APP: &str = "source_app";
    /// The sender's `version` label.
    pub const SOURCE_VERSION: &str = "source_version";
    /// The sender's canonical service.
    pub const SOURCE_CANONICAL_SERVICE: &str = "source_canonical_service";
    /// The sender's canonical revision.
    pub const SOURCE_CANONICAL_REVISION: &str = "source_canonical_revision";
    /// The answering workload's `app` label.
    pub const DESTINATION_APP: &str = "destination_app";
    /// The answering workload's canonical service.
    pub const DESTINATION_CANONICAL_SERVICE: &str = "destination_canonical_service";
    /// The answering workload's canonical revision.
    pub const DESTINATION_CANONICAL_REVISION: &str = "destination_canonical_revision";
    /// The destination's FQDN.
    pub const DESTINATION_SERVICE: &str = "destination_service";
    /// The destination's short name (Flagger's and the canary's service filter).
    pub const DESTINATION_SERVICE_NAME: &str = "destination_service_name";
    /// The destination's namespace.
    pub const DESTINATION_SERVICE_NAMESPACE: &str = "destination_service_namespace";
    /// The workload that answered.
    pub const DESTINATION_WORKLOAD: &str = "destination_workload";
    /// The namespace of the workload that answered.
    pub const DESTINATION_WORKLOAD_NAMESPACE: &str = "destination_workload_namespace";
    /// The version that answered: the canary's gates read this label.
    pub const DESTINATION_VERSION: &str = "destination_version";
    /// The HTTP status code sent downstream.
    pub const RESPONSE_CODE: &str = "response_code";
    /// Envoy's response flags ([`ResponseFlags`](super::ResponseFlags)), `-` for none.
    pub const RESPONSE_FLAGS: &str = "response_flags";
    /// `http` or `grpc`.
    pub const REQUEST_PROTOCOL: &str = "request_protocol";
}

/// Envoy's default histogram buckets, in milliseconds.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// [`DURATION_BUCKETS_MS`] in microseconds, for integer comparisons on the hot path.
pub const DURATION_BUCKETS_US: [u64; 19] = {
    let mut us = [0u64; 19];
    let mut i = 0;
    while i < 19 {
        us[i] = (DURATION_BUCKETS_MS[i] * 1000.0) as u64;
        i += 1;
    }
    us
};

// === ResponseFlags ===

/// A set of Envoy's response flags: why a request did not get the upstream's answer, or what
/// weir did to it. Reported in `response_flags` and in the `x-weir-flags` response header.
/// Copy, hashable, formatted only when a scrape or an error response needs the text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResponseFlags(u16);

/// Flag names in the order Envoy prints them.
const NAMES: [(ResponseFlags, &str); 10] = [
    (ResponseFlags::DC, "DC"),
    (ResponseFlags::DPE, "DPE"),
    (ResponseFlags::DI, "DI"),
    (ResponseFlags::FI, "FI"),
    (ResponseFlags::NR, "NR"),
    (ResponseFlags::UC, "UC"),
    (ResponseFlags::UF, "UF"),
    (ResponseFlags::UH, "UH"),
    (ResponseFlags::URX, "URX"),
    (ResponseFlags::UT, "UT"),
];

impl ResponseFlags {
    /// No flag: the upstream answered (printed `-`).
    pub const NONE: Self = Self(0);
    /// No route: no VirtualService or rule for the request.
    pub const NR: Self = Self(1 << 0);
    /// No healthy upstream: the subset has no endpoint.
    pub const UH: Self = Self(1 << 1);
    /// Upstream connection failure.
    pub const UF: Self = Self(1 << 2);
    /// Upstream request timeout.
    pub const UT: Self = Self(1 << 3);
    /// Fault injection abort.
    pub const FI: Self = Self(1 << 4);
    /// Fault injection delay.
    pub const DI: Self = Self(1 << 5);
    /// Downstream connection termination: the client went away.
    pub const DC: Self = Self(1 << 6);
    /// Upstream connection termination (reset or protocol error before or during the answer).
    pub const UC: Self = Self(1 << 7);
    /// Upstream retry limit exceeded.
    pub const URX: Self = Self(1 << 8);
    /// Downstream protocol error (a malformed or oversized request head).
    pub const DPE: Self = Self(1 << 9);

    /// Whether no flag is set.
    #[inline]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set.
    #[inline]
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ResponseFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsecond_buckets_are_the_millisecond_buckets() {
        for (ms, us) in DURATION_BUCKETS_MS.iter().zip(DURATION_BUCKETS_US) {
            assert_eq!(ms * 1000.0, us as f64);
        }
    }

    #[test]
    fn prints_like_envoy() {
        let rows = [
            (ResponseFlags::NONE, "-"),
            (ResponseFlags::NR, "NR"),
            (ResponseFlags::UF | ResponseFlags::URX, "UF,URX"),
            (ResponseFlags::DI | ResponseFlags::FI, "DI,FI"),
            (ResponseFlags::UT, "UT"),
        ];
        for (flags, text) in rows {
            assert_eq!(flags.to_string(), text);
        }
    }
}
