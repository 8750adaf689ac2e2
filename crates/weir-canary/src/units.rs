//! Durations as weir writes them: whole milliseconds in JSON reports, PromQL ranges in queries
//! and messages. A leaf module: the spec, the report and the sources all use it.

use std::time::Duration;

use serde::Serializer;

/// Serializes a duration as whole ms (`serialize_with` on `Duration` fields).
pub(crate) fn ser_duration_ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// A window as a PromQL range: whole seconds as `30s`, anything finer in `ms`. Never `0s`: a
/// zero window is written `1ms`, which PromQL accepts.
pub(crate) fn promql_duration(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// µs for humans: `850 µs`, `12.3 ms` or `1.20 s`.
pub fn human_micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_pick_a_readable_unit() {
        assert_eq!(human_micros(850), "850 µs");
        assert_eq!(human_micros(12_340), "12.3 ms");
        assert_eq!(human_micros(1_200_000), "1.20 s");
    }

    #[test]
    fn promql_ranges() {
        for (d, want) in [
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(120), "120s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_micros(10), "1ms"),
            (Duration::ZERO, "1ms"),
        ] {
            assert_eq!(promql_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn durations_serialize_as_whole_ms() {
        #[derive(serde::Serialize)]
        struct W {
            #[serde(serialize_with = "ser_duration_ms")]
            d: Duration,
        }
        let json = serde_json::to_string(&W {
            d: Duration::from_micros(2_999_999),
        })
        .unwrap();
        assert_eq!(json, r#"{"d":2999}"#);
    }
}
