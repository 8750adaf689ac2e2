//! The live table: guarded weight changes, the rollback latch, promotion, and readers that
//! never see half a table.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use weir_router::{Code, ConfigSource, GuardOptions, LiveTable, RequestHead, WeightChange};

fn live(text: &str) -> LiveTable {
    LiveTable::from_sources(&[ConfigSource::new("test.yaml", text)])
        .expect("valid")
        .0
}

fn weights(live: &LiveTable) -> Vec<(String, u32)> {
    let t = live.load();
    t.virtual_services()[0]
        .split_rule()
        .unwrap()
        .destinations
        .iter()
        .map(|d| (d.subset.clone().unwrap(), d.weight))
        .collect()
}

fn change(w1: u32, w2: u32) -> WeightChange {
    WeightChange {
        virtual_service: "svc".into(),
        weights: [("v1".to_string(), w1), ("v2".to_string(), w2)].into(),
        origin: "test".into(),
        ..WeightChange::default()
    }
}

fn lesson() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/payment-svc.yaml"
    ))
    .unwrap()
}

fn route(live: &LiveTable, headers: &[(&str, &str)], value: u64) -> String {
    let mut req = http::Request::get("http://payment-svc/pay");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(()).unwrap();
    let t = live.load();
    t.decide(&RequestHead::of(&req), value)
        .unwrap()
        .destination
        .subset
        .clone()
        .unwrap()
}

#[test]
fn set_weights_goes_through_the_guards() {
    let live = live(&vs("", &split(90, 10)));
    let g0 = live.generation();
    let applied = live.set_weights(&change(50, 50)).unwrap();
    assert_eq!(applied.generation, g0 + 1);
    assert_eq!(weights(&live), vec![("v1".into(), 50), ("v2".into(), 50)]);
    // The typo as an admin write: direction and step guard, and the table stays.
    let refused = live.set_weights(&change(1, 99)).unwrap_err();
    assert!(refused.findings.contains(Code::CanaryMajority));
    assert!(
        refused.findings.contains(Code::StepTooLarge)
            || refused.findings.contains(Code::CanaryMajority)
    );
    assert_eq!(weights(&live), vec![("v1".into(), 50), ("v2".into(), 50)]);
    // Sum must stay 100.
    assert!(
        live.set_weights(&change(60, 50))
            .unwrap_err()
            .findings
            .contains(Code::WeightSum)
    );
    // Unknown subset.
    let mut bad = change(90, 10);
    bad.weights.insert("v7".into(), 0);
    assert!(
        live.set_weights(&bad)
            .unwrap_err()
            .findings
            .contains(Code::UndefinedSubset)
    );
    // force skips direction/step (never the sum).
    let mut forced = change(1, 99);
    forced.force = true;
    assert!(live.set_weights(&forced).is_ok());
    // A promotion may give the canary the majority, within max-step.
    let live2 = self::live(&vs("", &split(50, 50)));
    let mut promo = change(40, 60);
    assert!(live2.set_weights(&promo).is_err());
    promo.promotion = true;
    assert!(live2.set_weights(&promo).is_ok());
}

#[test]
fn rollback_latches_until_released() {
    let live = live(&lesson());
    // Value 95 lands in v2's interval [90, 100).
    assert_eq!(route(&live, &[], 95), "v2");
    assert_eq!(route(&live, &[("x-canary", "true")], 0), "v2");
    live.rollback(Some("payment-svc")).unwrap();
    assert!(live.is_latched("payment-svc"));
    for v in [0u64, 89, 90, 95, 99] {
        assert_eq!(route(&live, &[], v), "v1", "value {v} after rollback");
    }
    assert_eq!(
        route(&live, &[("x-canary", "true")], 0),
        "v1",
        "dark launch is rolled back too"
    );
    // A reload of a file that still says 90/10 does not undo the latch.
    live.replace(
        &[ConfigSource::new("reload.yaml", lesson())],
        GuardOptions::default(),
    )
    .unwrap();
    assert_eq!(route(&live, &[], 95), "v1");
    // Weight changes that raise the canary are refused while latched.
    let mut c = change(90, 10);
    c.virtual_service = "payment-svc".into();
    let refused = live.set_weights(&c).unwrap_err();
    assert!(refused.findings.contains(Code::RollbackLatched));
    // Released: weights stay at 0 until changed.
    live.release(Some("payment-svc")).unwrap();
    assert!(!live.is_latched("payment-svc"));
    assert_eq!(route(&live, &[], 95), "v1");
    live.set_weights(&c).unwrap();
    assert_eq!(route(&live, &[], 95), "v2");
}

#[test]
fn replace_refuses_bad_configs_and_keeps_the_running_table() {
    let live = live(&vs("", &split(90, 10)));
    let g = live.generation();
    for bad in [
        vs("", &split(1, 99)),
        vs("", &split(91, 10)),
        "a: [\n".to_string(),
    ] {
        let refused = live.replace(
            &[ConfigSource::new("bad.yaml", bad)],
            GuardOptions::default(),
        );
        assert!(refused.is_err());
        assert_eq!(live.generation(), g);
        assert_eq!(weights(&live), vec![("v1".into(), 90), ("v2".into(), 10)]);
    }
    let ok = live
        .replace(
            &[ConfigSource::new("good.yaml", vs("", &split(50, 50)))],
            GuardOptions::default(),
        )
        .unwrap();
    assert_eq!(ok.generation, g + 1);
    assert_eq!(weights(&live), vec![("v1".into(), 50), ("v2".into(), 50)]);
}

#[test]
fn promote_makes_the_canary_stable_at_100() {
    let live = live(&lesson());
    live.promote("payment-svc", "v2").unwrap();
    let t = live.load();
    let vs = &t.virtual_services()[0];
    assert_eq!(vs.stable_subset.as_deref(), Some("v2"));
    let split = vs.rule("canary-split").unwrap();
    assert_eq!(split.destinations.len(), 1);
    assert_eq!(split.destinations[0].subset.as_deref(), Some("v2"));
    assert_eq!(split.destinations[0].weight, 100);
    drop(t);
    for v in [0u64, 50, 99] {
        assert_eq!(route(&live, &[], v), "v2");
    }
}

/// Readers deciding in a loop while a writer swaps tables: every decision is consistent with
/// exactly one generation. Odd generations send everything to v2, even ones to v1 (the
/// writer alternates forced 0/100 and 100/0).
#[test]
fn readers_never_see_half_a_table() {
    let live = Arc::new(live(&vs("weir.dev/promotion: 'true'", &split(100, 0))));
    let stop = Arc::new(AtomicBool::new(false));
    // Generation changes the readers observed: the writer keeps swapping until they have seen
    // plenty, however the threads are scheduled.
    let observed = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let live = live.clone();
        let stop = stop.clone();
        let observed = observed.clone();
        readers.push(std::thread::spawn(move || {
            let req = http::Request::get("http://svc/").body(()).unwrap();
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = live.load();
                let rule = t.virtual_services()[0].split_rule().unwrap();
                let expect = if rule.destinations[0].weight == 100 {
                    "v1"
                } else {
                    "v2"
                };
                for v in [0u64, 1, 50, 99, u64::MAX] {
                    let d = t.decide(&RequestHead::of(&req), v).unwrap();
                    assert_eq!(
                        d.destination.subset.as_deref(),
                        Some(expect),
                        "generation {}",
                        t.generation()
                    );
                    // The decision's rule belongs to the same table.
                    assert!(std::ptr::eq(d.rule, rule));
                }
                if t.generation() != last {
                    last = t.generation();
                    observed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut swaps = 0u64;
    while observed.load(Ordering::Relaxed) < 300 && swaps < 5_000_000 {
        let (a, b) = if swaps.is_multiple_of(2) {
            (0, 100)
        } else {
            (100, 0)
        };
        let mut c = change(a, b);
        c.force = true;
        live.set_weights(&c).unwrap();
        swaps += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader saw an inconsistent decision");
    }
    assert!(
        observed.load(Ordering::Relaxed) >= 300,
        "readers observed the swaps"
    );
    assert_eq!(live.generation(), 1 + swaps);
}

/// IST0173 is checked on every table, so a weight change cannot route to a subset that
/// selects no endpoint either (it would answer 503 `UH`).
#[test]
fn weight_change_to_an_empty_subset_is_refused() {
    let text = vs("", &split(100, 0)).replace(
        "{name: v2, labels: {version: v2}}",
        "{name: v2, labels: {version: v2-not-deployed}}",
    );
    let live = live(&text);
    let refused = live.set_weights(&change(90, 10)).unwrap_err();
    assert!(
        refused.findings.contains(Code::SubsetWithoutEndpoints),
        "{refused}"
    );
    assert_eq!(weights(&live), vec![("v1".into(), 100), ("v2".into(), 0)]);
}

/// An emergency rollback never waits behind a config parse: a reload of a large file is
/// parsed and compiled before the writer lock is taken, so rollbacks made while it is parsed
/// are published (lower generations) before the reload's table, and the reload then keeps
/// their latch.
#[test]
fn a_rollback_never_waits_behind_a_reload_being_parsed() {
    let live = Arc::new(live(&lesson()));
    // The lesson plus a document of 150,000 nodes (under the node limit): a slow parse.
    let filler = vec!["x"; 150_000].join(", ");
    let big = format!(
        "{}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: filler}}\ndata:\n  items: [{filler}]\n",
        lesson()
    );
    let source = ConfigSource::new("big.yaml", big);
    let started = Arc::new(AtomicBool::new(false));
    let reloading = Arc::new(AtomicBool::new(true));
    let reload = std::thread::spawn({
        let (live, started, reloading) = (live.clone(), started.clone(), reloading.clone());
        move || {
            started.store(true, Ordering::SeqCst);
            let applied = live.replace(&[source], GuardOptions::default());
            reloading.store(false, Ordering::SeqCst);
            applied
        }
    });
    while !started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let mut rollbacks = Vec::new();
    while reloading.load(Ordering::SeqCst) {
        rollbacks.push(live.rollback(None).expect("rollback").generation);
    }
    let reloaded = reload
        .join()
        .unwrap()
        .expect("the large file is a valid config");
    let before = rollbacks
        .iter()
        .filter(|g| **g < reloaded.generation)
        .count();
    assert!(
        before >= 100,
        "only {before} of {} rollbacks were published before the reload (generation {})",
        rollbacks.len(),
        reloaded.generation
    );
    assert!(live.is_latched("payment-svc"));
    assert!(
        weights(&live).iter().all(|(s, w)| s != "v2" || *w == 0),
        "{:?}",
        weights(&live)
    );
}
