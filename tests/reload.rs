//! Hot reload of `weir serve`'s config: file changes (ConfigMap symlink swaps included),
//! SIGHUP and `POST /reload`; refused files keep the running table.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use support::*;

const WAIT: Duration = Duration::from_secs(20);

async fn generation(weir: &Weir) -> u64 {
    let (status, body) = weir.admin_json("GET", "/routes", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    body["generation"].as_u64().unwrap()
}

/// The weights of the lesson's `canary-split` rule in force: (v1, v2).
async fn split(weir: &Weir) -> (u64, u64) {
    let (_, routes) = weir.admin_json("GET", "/routes", Value::Null).await;
    let destinations = routes["virtual_services"][0]["rules"][1]["destinations"].clone();
    let weight = |i: usize| destinations[i]["weight"].as_u64().unwrap();
    (weight(0), weight(1))
}

async fn reloads(weir: &Weir, result: &str) -> f64 {
    metric_sum(
        &weir.metrics().await,
        "weir_config_reloads_total",
        &[("result", result)],
    )
}

/// Sends `n` requests; all must succeed. Returns how many reached v2.
async fn v2_share(weir: &Weir, n: usize) -> usize {
    let mut v2 = 0;
    for _ in 0..n {
        let (status, headers, _) = weir.send("payment-svc", "/pay", &[]).await;
        assert_eq!(status, StatusCode::OK);
        v2 += usize::from(headers["x-upstream"] == "v2");
    }
    v2
}

/// A config from `config/examples/`, pointed at the test's upstreams.
fn example(name: &str, v1: &Upstream, v2: &Upstream) -> String {
    render(
        &read(root().join("config/examples").join(name)),
        v1.port(),
        v2.port(),
        90,
        10,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_to_50_50_under_load_loses_no_request() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Arc::new(Weir::start(&lesson_config(&v1, &v2, 90, 10)));

    // Clients that never stop while the file is rewritten; each records (generation seen
    // before sending, upstream or failure).
    let stop = Arc::new(AtomicBool::new(false));
    let switched = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (weir, stop, switched) = (weir.clone(), stop.clone(), switched.clone());
        clients.push(tokio::spawn(async move {
            let (mut before, mut after, mut failures) = ((0u64, 0u64), (0u64, 0u64), Vec::new());
            while !stop.load(Ordering::Acquire) {
                let reloaded = switched.load(Ordering::Acquire);
                let url = format!("{}/pay", weir.proxy_url());
                match try_http_request("GET", &url, Some("payment-svc"), &[], bytes::Bytes::new())
                    .await
                {
                    Ok((StatusCode::OK, headers, _)) => {
                        let tally = if reloaded { &mut after } else { &mut before };
                        tally.0 += 1;
                        tally.1 += u64::from(headers["x-upstream"] == "v2");
                    }
                    Ok((status, _, body)) => {
                        failures.push(format!("{status}: {}", String::from_utf8_lossy(&body)))
                    }
                    Err(e) => failures.push(e),
                }
            }
            (before, after, failures)
        }));
    }
    eventually(WAIT, "load before the reload", || async {
        v1.count() + v2.count() >= 300
    })
    .await;

    weir.write_config(&lesson_config(&v1, &v2, 50, 50));
    eventually(WAIT, "the 50/50 file in force", || async {
        split(&weir).await == (50, 50)
    })
    .await;
    switched.store(true, Ordering::Release);
    let seen = v1.count() + v2.count();
    // 1,200 at the upstreams for 1,000 on the clients' side: the requests in flight when the
    // switch was noticed are counted by the upstreams after `seen` but by their clients as
    // before the switch.
    eventually(WAIT, "load after the reload", || async {
        v1.count() + v2.count() >= seen + 1200
    })
    .await;
    stop.store(true, Ordering::Release);

    let (mut before, mut after, mut failures) = ((0, 0), (0, 0), Vec::new());
    for client in clients {
        let (b, a, f) = client.await.unwrap();
        before = (before.0 + b.0, before.1 + b.1);
        after = (after.0 + a.0, after.1 + a.1);
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(after.0 >= 1000, "{after:?}");
    assert!(
        within_binomial(after.1, after.0, 0.5, 5.0),
        "after the reload v2 got {} of {}",
        after.1,
        after.0
    );
    // Before the switch was noticed the split was 90/10 (some requests of the last polls
    // already ran on 50/50, hence the generous bound).
    assert!(
        (before.1 as f64) < before.0 as f64 * 0.3,
        "before the reload v2 got {} of {}",
        before.1,
        before.0
    );
    assert_eq!(reloads(&weir, "success").await, 1.0);
    assert_eq!(reloads(&weir, "failure").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_files_keep_the_old_split_and_are_counted() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start(&lesson_config(&v1, &v2, 90, 10));
    assert_eq!(reloads(&weir, "failure").await, 0.0);

    // Broken YAML.
    weir.write_config(&example("yaml-error.yaml", &v1, &v2));
    eventually(WAIT, "the broken file refused", || async {
        reloads(&weir, "failure").await >= 1.0
    })
    .await;
    assert_eq!(generation(&weir).await, 1);
    assert_eq!(split(&weir).await, (90, 10));
    let (status, _, _) = http_request(
        "GET",
        &format!("{}/readyz", weir.admin_url()),
        None,
        &[],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a refused reload must not make the sidecar unready"
    );
    let v2_hits = v2_share(&weir, 400).await;
    assert!(
        within_binomial(v2_hits as u64, 400, 0.1, 5.0),
        "v2 got {v2_hits} of 400"
    );

    // The 99/1 typo.
    weir.write_config(&example("typo-99-1.yaml", &v1, &v2));
    eventually(WAIT, "the typo file refused", || async {
        reloads(&weir, "failure").await >= 2.0
    })
    .await;
    // Each refused file is reported once, not on every poll.
    assert_eq!(reloads(&weir, "failure").await, 2.0);
    assert_eq!(generation(&weir).await, 1);
    assert_eq!(split(&weir).await, (90, 10));
    let v2_hits = v2_share(&weir, 400).await;
    assert!(
        within_binomial(v2_hits as u64, 400, 0.1, 5.0),
        "v2 got {v2_hits} of 400"
    );
    let log = weir.stderr();
    assert!(
        log.contains("WEIR009") && log.contains("WEIR004"),
        "the refusals are not logged with their findings:\n{log}"
    );

    // POST /reload of the same file: 409 with the findings.
    let (status, body) = weir.admin_json("POST", "/reload", Value::Null).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let codes: Vec<&str> = body["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"WEIR004"), "{body}");
    assert_eq!(reloads(&weir, "failure").await, 3.0);
    assert_eq!(reloads(&weir, "success").await, 0.0);

    // A good file is taken again.
    weir.write_config(&lesson_config(&v1, &v2, 60, 40));
    eventually(WAIT, "the good file in force", || async {
        split(&weir).await == (60, 40)
    })
    .await;
    assert_eq!(reloads(&weir, "success").await, 1.0);
}

/// Lays out a directory as the kubelet writes a ConfigMap volume:
/// `config.yaml -> ..data/config.yaml`, `..data -> ..<version>/`.
fn configmap_version(dir: &Path, version: &str, text: &str) {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("config.yaml"), text).unwrap();
    let data = dir.join("..data");
    if data.exists() {
        // The kubelet's swap: a new symlink renamed over the old one, in one step.
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
        std::fs::rename(&tmp, &data).unwrap();
    } else {
        std::os::unix::fs::symlink(format!("..{version}"), &data).unwrap();
        std::os::unix::fs::symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_triggers_a_reload() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let dir = tempfile::tempdir().unwrap();
    configmap_version(
        dir.path(),
        "2026_11_24_01",
        &lesson_config(&v1, &v2, 90, 10),
    );
    let config_path = dir.path().join("config.yaml");
    let weir = Weir::spawn(dir, config_path, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(split(&weir).await, (90, 10));

    configmap_version(
        weir.dir.path(),
        "2026_11_24_02",
        &lesson_config(&v1, &v2, 50, 50),
    );
    std::fs::remove_dir_all(weir.dir.path().join("..2026_11_24_01")).unwrap();
    eventually(WAIT, "the swapped ConfigMap in force", || async {
        split(&weir).await == (50, 50)
    })
    .await;
    let swapped = generation(&weir).await;

    // A swap to a new version with the same text still reloads: the path means another file.
    configmap_version(
        weir.dir.path(),
        "2026_11_24_03",
        &lesson_config(&v1, &v2, 50, 50),
    );
    eventually(WAIT, "the third version reloaded", || async {
        generation(&weir).await > swapped
    })
    .await;
    assert_eq!(split(&weir).await, (50, 50));
    assert_eq!(reloads(&weir, "success").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_post_reload_reload_without_polling() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    // Polling off: only SIGHUP and POST /reload can reload.
    let weir = Weir::start_with_args(&lesson_config(&v1, &v2, 90, 10), &["--reload-poll", "0"]);

    weir.write_config(&lesson_config(&v1, &v2, 50, 50));
    weir.signal("HUP");
    eventually(WAIT, "SIGHUP reloads the 50/50 file", || async {
        split(&weir).await == (50, 50)
    })
    .await;
    assert_eq!(generation(&weir).await, 2);
    assert!(weir.stderr().contains("SIGHUP"));
    let hits = v2_share(&weir, 400).await;
    assert!(
        within_binomial(hits as u64, 400, 0.5, 5.0),
        "v2 got {hits} of 400"
    );

    weir.write_config(&lesson_config(&v1, &v2, 70, 30));
    let (status, body) = weir.admin_json("POST", "/reload", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["generation"], 3);
    assert!(body["findings"].as_array().is_some(), "{body}");
    assert_eq!(split(&weir).await, (70, 30));
    assert_eq!(reloads(&weir, "success").await, 2.0);
    // Still alive after the SIGHUP: it reloaded rather than died.
    let (status, _, _) = http_request(
        "GET",
        &format!("{}/healthz", weir.admin_url()),
        None,
        &[],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}
