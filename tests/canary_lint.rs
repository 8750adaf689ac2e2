//! `weir canary --check` and `--dry-run` through the real binary: the spec lint's exit codes
//! and messages, the plan printed without touching anything, and a run refused by the lint
//! leaving a live sidecar's weights and generation as they were.

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use support::*;

/// A canary with a dark launch, three steps and both built-in gates; `extra_weir` goes under
/// `spec.weir`, `sr_min` and `p99_max` are the thresholds.
fn spec(sr_min: &str, p99_max: &str, extra_weir: &str) -> String {
    format!(
        r#"apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: payment-svc
  namespace: production
spec:
  analysis:
    interval: 30s
    threshold: 3
    iterations: 2
    match:
    - headers:
        x-canary:
          exact: "true"
    stepWeights: [1, 10, 50]
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: {sr_min}
      interval: 1m
    - name: request-duration
      thresholdRange:
        max: {p99_max}
      interval: 30s
  weir:
    rule: canary-split
    minRequests: 20
    fastGuard: {{period: 1s, window: 10s}}
{extra_weir}"#
    )
}

fn write(dir: &Path, text: &str) -> String {
    let path = dir.join("canary.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn weir(args: &[&str]) -> Output {
    weir_command().args(args).output().expect("run weir")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn check_exits_0_on_a_clean_spec_and_names_no_finding() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &spec("99", "500", ""));
    let out = weir(&["canary", "--check", &path]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("ok, no findings"), "{all}");
    assert!(!all.contains("warning"), "{all}");
}

#[test]
fn check_refuses_unit_typos_with_position_meaning_and_override() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &spec("0.99", "0.5", ""));
    let out = weir(&["canary", "--check", &path]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    // The `min:` key is on line 19, column 9; `max:` on line 23, column 9.
    for want in [
        format!("{path}:19:9: error[WEIR015]"),
        "0.99 looks like a fraction: request-success-rate is a percentage, write 99".to_string(),
        format!("{path}:23:9: error[WEIR015]"),
        "0.5 looks like seconds: request-duration is the p99 in milliseconds, write 500"
            .to_string(),
        "spec.weir.allowOddThresholds: true".to_string(),
        "refused, 2 errors, 0 warnings".to_string(),
    ] {
        assert!(all.contains(&want), "wants {want:?} in:\n{all}");
    }
}

#[test]
fn check_accepts_odd_thresholds_when_the_spec_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        &spec("0.99", "0.5", "    allowOddThresholds: true\n"),
    );
    let out = weir(&["canary", "--check", &path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn check_warns_with_the_arithmetic_and_still_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    // 20 req/s x 1% x 30 s = 6 < 20 for request-duration, x 1 m = 12 for the success rate,
    // x 10 s = 2 for the guard.
    let path = write(dir.path(), &spec("99", "500", "    expectedRps: 20\n"));
    let out = weir(&["canary", "--check", &path]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    for want in [
        "warning[WEIR015]",
        "20 req/s expected x 1% x 60s window = 12 canary requests per check",
        "20 req/s expected x 1% x 30s window = 6 canary requests per check",
        "cannot be reached by the fast guard at the first step: 20 req/s expected x 1% x 10s window = 2 canary requests",
        "ok, 3 warnings",
    ] {
        assert!(all.contains(want), "wants {want:?} in:\n{all}");
    }
}

#[test]
fn check_refuses_an_unknown_weir_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &spec("99", "500", "    expectedRPS: 20\n"));
    let out = weir(&["canary", "--check", &path]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains(&format!("{path}:29:5: error")), "{all}");
    assert!(all.contains("unknown field `expectedRPS`"), "{all}");
    assert!(
        all.contains("`expectedRps`"),
        "the known fields are listed: {all}"
    );
}

#[test]
fn check_of_a_missing_file_exits_2() {
    let out = weir(&["canary", "--check", "/nonexistent/canary.yaml"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("/nonexistent/canary.yaml"), "{all}");
}

#[test]
fn dry_run_prints_the_plan_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &spec("99", "500", ""));
    // An --admin that nobody listens on: the dry run must not call it.
    let out = weir(&[
        "canary",
        "--spec",
        &path,
        "--dry-run",
        "--admin",
        "http://127.0.0.1:9",
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    for want in [
        "dry run: nothing is changed",
        "plan (one check every 30s):",
        "1. dark launch: weight 0%, header-matched requests only, 2 passing checks",
        "2. weight 1% canary / 99% stable, 1 passing check",
        "3. weight 10% canary / 90% stable",
        "4. weight 50% canary / 50% stable",
        "5. promote: v2 becomes the stable subset at 100%",
        "request-success-rate: success rate (%) >= 99 over 1m",
        "request-duration: p99 duration (ms) <= 500 over 30s",
        "rollback: after 3 failed checks",
        "fast guard: every 1s over the last 10s (needs 20 canary requests to decide)",
        "a healthy run takes at least 2m30s (5 passing checks x 30s)",
    ] {
        assert!(all.contains(want), "wants {want:?} in:\n{all}");
    }
    assert!(!dir.path().join("weir-report").exists());
}

#[test]
fn dry_run_of_a_refused_spec_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &spec("0.99", "500", ""));
    let out = weir(&["canary", "--spec", &path, "--dry-run"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("write 99"), "{all}");
    assert!(!all.contains("plan ("), "{all}");
}

/// The split rule's weights and the table's generation on a live sidecar.
async fn in_force(admin_url: &str) -> (Vec<(String, u64)>, u64) {
    let (status, _, body) = http_request(
        "GET",
        &format!("{admin_url}/routes"),
        None,
        &[],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(status, http::StatusCode::OK);
    let routes: Value = serde_json::from_slice(&body).unwrap();
    let rule = routes["virtual_services"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "canary-split")
        .expect("the canary-split rule")
        .clone();
    let weights = rule["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["subset"].as_str().unwrap().to_string(),
                d["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    (weights, routes["generation"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_refused_by_the_lint_exits_2_and_leaves_the_sidecar_alone() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let sidecar = Weir::start(&lesson_config(&v1, &v2, 90, 10));
    let before = in_force(&sidecar.admin_url()).await;
    assert_eq!(
        before.0,
        vec![("v1".to_string(), 90), ("v2".to_string(), 10)]
    );

    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &spec("0.99", "500", ""));
    let report = dir.path().join("report");
    let admin = sidecar.admin_url();
    let out = tokio::task::spawn_blocking(move || {
        weir(&[
            "canary",
            "--spec",
            &path,
            "--admin",
            &admin,
            "--report",
            report.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("looks like a fraction"), "{all}");
    assert_eq!(in_force(&sidecar.admin_url()).await, before, "{all}");
    assert!(
        !dir.path().join("report").exists(),
        "no report of a run that never started"
    );
}
