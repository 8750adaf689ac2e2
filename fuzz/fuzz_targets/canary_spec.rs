//! bash fuzz/run.sh [seconds]   (stable toolchain; or `cargo +nightly fuzz run canary_spec`)
//!
//! Read arbitrary text as a Flagger `Canary`. It may be refused, never panic; a spec that is
//! accepted keeps the invariants the controller relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_canary::{CanarySpec, Stage};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let spec = match CanarySpec::from_yaml("fuzz.yaml", text) {
        Ok(spec) => spec,
        Err(e) => {
            // A refusal names what is wrong.
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let a = &spec.analysis;
    assert!(a.threshold >= 1, "threshold 0 accepted");
    assert!(!a.interval.is_zero(), "interval 0 accepted");
    assert!(a.min_requests >= 1, "minRequests 0 accepted");
    assert_ne!(spec.target.stable_subset, spec.target.canary_subset);
    let weights = spec.plan.weights();
    assert!(weights.iter().all(|w| (1..=100).contains(w)), "weights {weights:?}");
    assert!(weights.windows(2).all(|w| w[0] < w[1]), "weights {weights:?} not increasing");
    assert!(matches!(spec.plan.stages().last(), Some(Stage::Promote)), "{:?}", spec.plan.stages());
    for g in &a.gates {
        if let (Some(lo), Some(hi)) = (g.min, g.max) {
            assert!(lo <= hi, "{g:?}");
        }
    }
    if let Some(guard) = a.fast_guard {
        assert!(guard.window >= guard.period && guard.period <= a.interval, "{guard:?}");
    }
});
