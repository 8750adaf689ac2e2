//! bash fuzz/run.sh [seconds]   (stable toolchain; or `cargo +nightly fuzz run exposition`)
//!
//! Parse arbitrary `/metrics` text, as a canary scrapes it from other sidecars over the network,
//! with and without a service filter; then use every snapshot the way a guard tick does (sum,
//! difference, quantile). None of it may panic, and a parse is all-or-nothing: the filter only
//! drops series, so text refused with one filter is refused with the other.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_canary::{SeriesFilter, Snapshot};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let all = Snapshot::parse(text, &SeriesFilter::default());
    let one = Snapshot::parse(text, &SeriesFilter::service("payment-svc"));
    assert_eq!(all.is_ok(), one.is_ok(), "a filter changed whether {text:?} parses");
    let (Ok(all), Ok(one)) = (all, one) else { return };
    let mut sum = all.clone();
    sum.add(&one);
    for snapshot in [&all, &one, &sum, &sum.since(&all), &all.since(&sum)] {
        for (_, stats) in snapshot.versions() {
            let _ = (stats.success_rate(), stats.p99_ms());
        }
    }
});
