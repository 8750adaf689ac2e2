//! The admin state: weights, latches and promotions kept on top of the config file, re-applied
//! on every reload and (from a saved state) on start, and saved before a write is published.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use weir_router::state::AdminState;
use weir_router::{Code, ConfigSource, GuardOptions, LiveTable, RequestHead, WeightChange};

fn lesson_with(v1: u32, v2: u32) -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/payment-svc.yaml"
    ))
    .unwrap()
    // The canary's line first: "weight: 10" is a prefix of "weight: 100".
    .replace("weight: 10 #", &format!("weight: {v2} #"))
    .replace("weight: 90 #", &format!("weight: {v1} #"))
}

fn sources(v1: u32, v2: u32) -> Vec<ConfigSource> {
    vec![ConfigSource::new("payment-svc.yaml", lesson_with(v1, v2))]
}

fn live(v1: u32, v2: u32) -> LiveTable {
    LiveTable::from_sources(&sources(v1, v2)).unwrap().0
}

fn change(v1: u32, v2: u32) -> WeightChange {
    WeightChange {
        virtual_service: "payment-svc".into(),
        rule: Some("canary-split".into()),
        weights: [("v1".to_string(), v1), ("v2".to_string(), v2)].into(),
        origin: "test".into(),
        ..WeightChange::default()
    }
}

/// The subset a request lands on for a pick value in [0, 100).
fn route(live: &LiveTable, canary_header: bool, value: u64) -> String {
    let mut req = http::Request::get("http://payment-svc/pay");
    if canary_header {
        req = req.header("x-canary", "true");
    }
    let req = req.body(()).unwrap();
    let t = live.load();
    let d = t.decide(&RequestHead::of(&req), value).unwrap();
    d.destination.subset.clone().unwrap()
}

/// How many of the pick values 0..100 land on v2.
fn v2_share(live: &LiveTable) -> usize {
    (0..100).filter(|v| route(live, false, *v) == "v2").count()
}

/// Through its JSON form, as the sidecar's state file carries it.
fn saved(live: &LiveTable) -> AdminState {
    let text = serde_json::to_string(&live.admin_state()).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn restarted(state: AdminState, v1: u32, v2: u32) -> (LiveTable, weir_router::Findings) {
    LiveTable::from_sources_with_state(&sources(v1, v2), state).unwrap()
}

#[test]
fn admin_weights_survive_a_reload_of_the_same_file_and_yield_to_an_edit() {
    let live = live(90, 10);
    live.set_weights(&change(70, 30)).unwrap();
    assert_eq!(v2_share(&live), 30);
    let state = live.admin_state();
    let entry = &state.virtual_services["production/payment-svc"];
    assert!(!entry.latched);
    assert_ne!(entry.rules, entry.file, "the file said 90/10");

    // The file still says 90/10: the admin weights win.
    let applied = live
        .replace(&sources(90, 10), GuardOptions::default())
        .unwrap();
    assert!(!applied.findings.contains(Code::AdminState));
    assert_eq!(v2_share(&live), 30);

    // An edit of the file is newer intent: the file wins, and the reload says so.
    let applied = live
        .replace(&sources(80, 20), GuardOptions::default())
        .unwrap();
    assert!(
        applied.findings.contains(Code::AdminState),
        "{}",
        applied.findings
    );
    assert_eq!(v2_share(&live), 20);
    assert!(live.admin_state().is_empty());
}

#[test]
fn a_rollback_and_its_release_survive_a_restart_dark_launch_included() {
    let live = live(90, 10);
    live.rollback(Some("payment-svc")).unwrap();
    let (after, findings) = restarted(saved(&live), 90, 10);
    assert!(!findings.has_errors());
    assert!(after.is_latched("payment-svc"));
    assert_eq!(v2_share(&after), 0);
    assert_eq!(route(&after, true, 0), "v1", "the dark launch stays on v1");
    // Three restarts in a row, each from the last one's state.
    let mut current = after;
    for _ in 0..3 {
        current = restarted(saved(&current), 90, 10).0;
        assert_eq!(v2_share(&current), 0);
        assert!(current.is_latched("payment-svc"));
    }

    // Released: not latched after a restart, and the canary still at 0% (release keeps the
    // weights) until a weight change raises it.
    current.release(Some("payment-svc")).unwrap();
    let released = restarted(saved(&current), 90, 10).0;
    assert!(!released.is_latched("payment-svc"));
    assert_eq!(v2_share(&released), 0);
    assert_eq!(route(&released, true, 0), "v1");
    released.set_weights(&change(90, 10)).unwrap();
    assert_eq!(v2_share(&released), 10);
}

#[test]
fn a_promotion_survives_a_restart_and_a_reload() {
    let live = live(90, 10);
    live.promote("payment-svc", "v2").unwrap();
    let (after, _) = restarted(saved(&live), 90, 10);
    assert_eq!(v2_share(&after), 100);
    assert_eq!(
        after.load().virtual_services()[0].stable_subset.as_deref(),
        Some("v2")
    );
    after
        .replace(&sources(90, 10), GuardOptions::default())
        .unwrap();
    assert_eq!(v2_share(&after), 100, "a reload of the 90/10 file keeps it");
}

#[test]
fn a_state_naming_a_vanished_virtual_service_is_reported_and_kept() {
    let live = live(90, 10);
    live.rollback(Some("payment-svc")).unwrap();
    let mut state = saved(&live);
    let entry = state
        .virtual_services
        .remove("production/payment-svc")
        .unwrap();
    state
        .virtual_services
        .insert("production/gone".into(), entry);
    let (after, findings) = restarted(state, 90, 10);
    let note = findings
        .0
        .iter()
        .find(|f| f.code == Code::AdminState)
        .expect("reported");
    assert!(note.message.contains("production/gone"), "{note}");
    assert_eq!(v2_share(&after), 10, "payment-svc has no state of its own");
    assert!(
        after
            .admin_state()
            .virtual_services
            .contains_key("production/gone")
    );
}

#[test]
fn state_that_no_longer_fits_the_config_serves_the_config_with_its_latch() {
    let live = live(90, 10);
    live.set_weights(&change(70, 30)).unwrap();
    live.rollback(Some("payment-svc")).unwrap();
    let mut state = saved(&live);
    // The recorded rules name a subset the config does not have.
    let entry = state
        .virtual_services
        .get_mut("production/payment-svc")
        .unwrap();
    entry.rules[1].destinations[1].subset = Some("v9".into());
    let (after, findings) = restarted(state, 90, 10);
    assert!(findings.contains(Code::AdminState), "{findings}");
    assert!(after.is_latched("payment-svc"));
    assert_eq!(v2_share(&after), 0);
}

#[test]
fn a_write_is_saved_before_it_is_published_and_an_unsaved_one_is_refused() {
    let live = Arc::new(live(90, 10));
    let me: Arc<OnceLock<Weak<LiveTable>>> = Arc::new(OnceLock::new());
    me.set(Arc::downgrade(&live)).unwrap();
    let saves: Arc<Mutex<Vec<(u64, AdminState)>>> = Arc::default();
    let fail = Arc::new(Mutex::new(false));
    {
        let (me, saves, fail) = (Arc::clone(&me), Arc::clone(&saves), Arc::clone(&fail));
        live.persist_with(Box::new(move |state| {
            let generation = me.get().unwrap().upgrade().unwrap().generation();
            saves.lock().unwrap().push((generation, state.clone()));
            if *fail.lock().unwrap() {
                return Err("disk full".into());
            }
            Ok(())
        }));
    }
    let g = live.generation();
    live.set_weights(&change(70, 30)).unwrap();
    {
        let saves = saves.lock().unwrap();
        assert_eq!(saves.len(), 1);
        assert_eq!(saves[0].0, g, "saved while the old generation was in force");
        assert_eq!(saves[0].1, live.admin_state());
    }
    // The same weights again: no new generation, nothing saved.
    let again = live.set_weights(&change(70, 30)).unwrap();
    assert_eq!(again.generation, g + 1);
    assert_eq!(live.generation(), g + 1);
    assert_eq!(saves.lock().unwrap().len(), 1);

    *fail.lock().unwrap() = true;
    let refused = live.set_weights(&change(60, 40)).unwrap_err();
    assert!(refused.findings.contains(Code::AdminState));
    assert!(refused.findings.to_string().contains("disk full"));
    assert_eq!(v2_share(&live), 30, "nothing changed");
    assert!(live.promote("payment-svc", "v2").is_err());
    assert_eq!(v2_share(&live), 30);
    // A rollback is never held back by the state file; it says it was not saved.
    let rolled = live.rollback(Some("payment-svc")).unwrap();
    assert_eq!(v2_share(&live), 0);
    assert!(rolled.findings.contains(Code::AdminState));
}

#[test]
fn discarding_the_admin_weights_serves_the_file_and_keeps_a_latch() {
    let live = live(100, 0);
    live.set_weights(&change(50, 50)).unwrap();
    live.promote("payment-svc", "v2").unwrap();
    assert_eq!(v2_share(&live), 100);
    let g = live.generation();
    let applied = live.discard_admin_weights(Some("payment-svc")).unwrap();
    assert_eq!(applied.generation, g + 1);
    assert_eq!(v2_share(&live), 0);
    assert!(live.admin_state().is_empty());
    assert_eq!(
        live.load().virtual_services()[0].stable_subset.as_deref(),
        Some("v1")
    );
    // Nothing left to discard: no new generation.
    assert_eq!(live.discard_admin_weights(None).unwrap().generation, g + 1);

    live.set_weights(&change(50, 50)).unwrap();
    live.rollback(None).unwrap();
    live.discard_admin_weights(None).unwrap();
    assert!(live.is_latched("payment-svc"), "the latch stays");
    assert_eq!(v2_share(&live), 0);
    live.release(None).unwrap();
    // Released after a discard: the file's weights (100/0), not the admin's 50/50.
    assert_eq!(v2_share(&live), 0);
}
