//! The admin state file, through the real binary: a rollback, a promotion and admin weights
//! survive restarts (SIGKILL, as an OOM kill) and reloads; a corrupt state file is reported and
//! never re-enables a canary.

mod support;

use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};
use support::*;

async fn routes(weir: &Weir) -> Value {
    let (status, body) = weir.admin_json("GET", "/routes", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "GET /routes: {body}");
    body
}

/// How many of `n` requests each upstream answered: (v1, v2), counted by the upstreams.
async fn send(weir: &Weir, v1: &Upstream, v2: &Upstream, n: usize, header: bool) -> (u64, u64) {
    let (b1, b2) = (v1.count(), v2.count());
    let headers: &[(&str, &str)] = if header { &[("x-canary", "true")] } else { &[] };
    for _ in 0..n {
        let (status, _, _) = weir.send("payment-svc", "/pay", headers).await;
        assert_eq!(status, StatusCode::OK);
    }
    (v1.count() - b1, v2.count() - b2)
}

async fn call(weir: &Weir, method: &str, path: &str, body: Value) -> Value {
    let (status, answer) = weir.admin_json(method, path, body).await;
    assert_eq!(status, StatusCode::OK, "{method} {path}: {answer}");
    answer
}

#[tokio::test]
async fn a_rollback_holds_across_three_restarts_dark_launch_included() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let mut weir = Weir::start(&lesson_config(&v1, &v2, 90, 10));
    let (_, to_v2) = send(&weir, &v1, &v2, 200, false).await;
    assert!(to_v2 > 0, "the canary takes traffic before the rollback");
    call(
        &weir,
        "POST",
        "/rollback",
        json!({"virtual_service": "payment-svc"}),
    )
    .await;
    let state_file = weir.dir.path().join("config.yaml.weir-state.json");
    assert!(state_file.exists(), "saved before the answer");

    for restart in 1..=3 {
        weir = weir.restart("KILL");
        let (to_v1, to_v2) = send(&weir, &v1, &v2, 200, false).await;
        assert_eq!(
            (to_v1, to_v2),
            (200, 0),
            "restart {restart}: v2 got requests"
        );
        let (_, dark) = send(&weir, &v1, &v2, 20, true).await;
        assert_eq!(dark, 0, "restart {restart}: the dark launch reached v2");
        let r = routes(&weir).await;
        let vs = &r["virtual_services"][0];
        assert_eq!(vs["latched"], true, "{r}");
        assert_eq!(vs["admin_state"]["wins"], "rollback latch", "{r}");
        assert_eq!(
            r["state"]["path"].as_str().unwrap(),
            state_file.display().to_string()
        );
        assert!(r["state"]["problem"].is_null(), "{r}");
    }
}

#[tokio::test]
async fn a_promotion_survives_a_reload_and_a_restart_and_routes_says_which_wins() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, lesson_config(&v1, &v2, 90, 10)).unwrap();
    let state_path = dir.path().join("payment.json");
    let state_arg = state_path.display().to_string();
    let weir = Weir::spawn(dir, config_path, &["--state", &state_arg]).unwrap();

    call(
        &weir,
        "POST",
        "/promote",
        json!({"virtual_service": "payment-svc", "subset": "v2"}),
    )
    .await;
    assert!(state_path.exists());
    let generation = routes(&weir).await["generation"].as_u64().unwrap();
    call(&weir, "POST", "/reload", Value::Null).await;
    let r = routes(&weir).await;
    assert!(r["generation"].as_u64().unwrap() > generation);
    assert_eq!(send(&weir, &v1, &v2, 100, false).await, (0, 100));
    let vs = &r["virtual_services"][0];
    assert_eq!(vs["stable_subset"], "v2");
    let view = &vs["admin_state"];
    assert_eq!(view["wins"], "admin state", "{r}");
    assert!(
        view["file"].as_str().unwrap().contains("v1=90 v2=10"),
        "{view}"
    );
    assert!(view["admin"].as_str().unwrap().contains("v2=100"), "{view}");

    // GET /config: what is served, apart from the file as read.
    let (status, config) = weir.admin_json("GET", "/config", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    let served = &config["in_force"];
    assert_eq!(served["differs_from_file"], true, "{config}");
    let vs = &served["virtual_services"][0];
    assert_eq!(vs["source"], "admin state", "{config}");
    assert_eq!(vs["rules"][1]["destinations"][0]["subset"], "v2");
    assert_eq!(vs["rules"][1]["destinations"][0]["weight"], 100);
    assert_eq!(vs["file_rules"][1]["destinations"][0]["weight"], 90);
    assert!(
        config["file"]["sources"][0]["yaml"]
            .as_str()
            .unwrap()
            .contains("weight: 90"),
        "the file as read"
    );
    let (_, _, yaml) = weir.admin_raw("GET", "/config?format=yaml", &[], "").await;
    let yaml = String::from_utf8(yaml.to_vec()).unwrap();
    assert!(
        yaml.contains(
            "# NOT AS WRITTEN BELOW: production/payment-svc is served from the admin state: "
        ),
        "{yaml}"
    );

    let boot = r["boot_id"].clone();
    let weir = weir.restart("KILL");
    let r = routes(&weir).await;
    assert_ne!(r["boot_id"], boot, "a restart has a new boot id");
    assert_eq!(r["api_version"], "weir.dev/v1");
    assert_eq!(send(&weir, &v1, &v2, 100, false).await, (0, 100));

    // An edit of the VirtualService in the file is newer intent: the file wins.
    weir.write_config(&lesson_config(&v1, &v2, 80, 20));
    eventually(
        Duration::from_secs(20),
        "the edited file in force",
        || async { routes(&weir).await["virtual_services"][0]["admin_state"].is_null() },
    )
    .await;
    // The reload's warning is logged right after the swap.
    eventually(
        Duration::from_secs(20),
        "the reload says the config wins",
        || async { weir.stderr().contains("the config wins") },
    )
    .await;
    let (to_v1, to_v2) = send(&weir, &v1, &v2, 200, false).await;
    assert!(to_v1 > 100 && to_v2 > 0, "{to_v1}/{to_v2}");
}

#[tokio::test]
async fn admin_weights_survive_a_restart() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start(&lesson_config(&v1, &v2, 90, 10));
    call(
        &weir,
        "PUT",
        "/weights",
        json!({"virtual_service": "payment-svc", "weights": {"v1": 50, "v2": 50}}),
    )
    .await;
    // The same weights again: no new generation.
    let g = routes(&weir).await["generation"].clone();
    let again = call(
        &weir,
        "PUT",
        "/weights",
        json!({"virtual_service": "payment-svc", "weights": {"v1": 50, "v2": 50}}),
    )
    .await;
    assert_eq!(again["generation"], g);
    let weir = weir.restart("TERM");
    let rule = &routes(&weir).await["virtual_services"][0]["rules"][1];
    assert_eq!(rule["destinations"][0]["weight"], 50, "{rule}");
    assert_eq!(rule["destinations"][1]["weight"], 50, "{rule}");

    // DELETE /state: the file is the truth again, and stays so after a restart.
    call(&weir, "DELETE", "/state", Value::Null).await;
    let weir = weir.restart("KILL");
    let r = routes(&weir).await;
    let vs = &r["virtual_services"][0];
    assert!(vs["admin_state"].is_null(), "{r}");
    assert_eq!(vs["rules"][1]["destinations"][1]["weight"], 10, "{r}");
}

#[tokio::test]
async fn a_corrupt_state_file_is_reported_and_latches_every_virtual_service() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, lesson_config(&v1, &v2, 90, 10)).unwrap();
    let state_path = dir.path().join("config.yaml.weir-state.json");
    std::fs::write(
        &state_path,
        "{\"version\": 1, \"virtual_services\": {\"prod",
    )
    .unwrap();
    let weir = Weir::spawn(dir, config_path, &[]).expect("a corrupt state never stops the sidecar");

    let r = routes(&weir).await;
    let problem = r["state"]["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("corrupt"), "{r}");
    assert!(problem.contains("rolled back"), "{r}");
    assert_eq!(r["virtual_services"][0]["latched"], true);
    assert!(weir.stderr().contains("corrupt"), "{}", weir.stderr());
    assert_eq!(send(&weir, &v1, &v2, 200, false).await, (200, 0));
    assert_eq!(send(&weir, &v1, &v2, 20, true).await, (20, 0));
    // Set aside for the post-mortem; a fresh, valid state holds the latch.
    let aside = weir.dir.path().join("config.yaml.weir-state.json.corrupt");
    assert!(aside.exists());
    let fresh: Value = serde_json::from_str(&read(&state_path)).unwrap();
    assert_eq!(
        fresh["virtual_services"]["production/payment-svc"]["latched"],
        true
    );
    // The operator releases once the weights are known.
    call(&weir, "DELETE", "/rollback", Value::Null).await;
    let weir = weir.restart("KILL");
    let r = routes(&weir).await;
    assert_eq!(r["virtual_services"][0]["latched"], false);
    assert!(r["state"]["problem"].is_null(), "{r}");
}
