//! `weir canary` end to end: the real binary driving real `weir serve` sidecars (admin API
//! fan-out, the file sink) with steady traffic through them, and `weir serve --canary` driving
//! its own table.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;
use support::*;

/// Long enough for a loaded 2-core CI machine; a healthy run takes 6 to 10 s.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(30);

/// A short canary: checks every 2 s over 2 s windows, 20% then 50%, a fast guard looking every
/// second at the last 3 s. `dark` adds one dark-launch check on `x-canary: true` traffic.
fn spec_text(dark: bool) -> String {
    let dark_launch = if dark {
        "    iterations: 1\n    match:\n    - headers:\n        x-canary:\n          exact: \"true\"\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: payment-svc
  namespace: production
spec:
  analysis:
    interval: 2s
    threshold: 2
{dark_launch}    stepWeights: [20, 50]
    metrics:
    - name: request-success-rate
      thresholdRange: {{min: 99}}
      interval: 2s
    - name: request-duration
      thresholdRange: {{max: 500}}
      interval: 2s
  weir:
    rule: canary-split
    destinationService: payment-svc
    minRequests: 10
    fastGuard: {{period: 1s, window: 3s}}
"#
    )
}

fn write_spec(dir: &Path, dark: bool) -> String {
    let path = dir.join("canary.yaml");
    std::fs::write(&path, spec_text(dark)).unwrap();
    path.display().to_string()
}

/// `weir canary --spec SPEC --admin ADMIN --report DIR`.
fn canary_run(spec: &str, admin: &str, report_dir: &Path) -> WeirRun {
    WeirRun::spawn(&[
        "canary",
        "--spec",
        spec,
        "--admin",
        admin,
        "--report",
        report_dir.to_str().unwrap(),
    ])
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&read(dir.join("report.json"))).expect("report.json is JSON")
}

/// The split rule's weights in force on a sidecar, by subset, and its stable subset.
async fn routes(admin_url: &str, token: Option<&str>) -> (Vec<(String, u64)>, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    let (status, _, body) = http_request(
        "GET",
        &format!("{admin_url}/routes"),
        None,
        &headers,
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let routes: Value = serde_json::from_slice(&body).unwrap();
    let vs = &routes["virtual_services"][0];
    let rule = vs["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "canary-split")
        .expect("the canary-split rule");
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
    (
        weights,
        vs["stable_subset"].as_str().unwrap_or("").to_string(),
    )
}

fn promoted() -> Vec<(String, u64)> {
    vec![("v2".to_string(), 100)]
}

/// The shipped `config/canary.yaml` is the lesson's analysis (was a unit test of the
/// binary's `canary` module; it tests the file and weir-canary, not the CLI).
#[test]
fn the_example_spec_is_the_lessons_analysis() {
    let spec = weir_canary::CanarySpec::from_yaml(
        "config/canary.yaml",
        include_str!("../config/canary.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.plan.weights(), vec![10, 20, 30, 40, 50]);
    assert_eq!(spec.analysis.threshold, 5);
    assert_eq!(spec.analysis.interval, Duration::from_secs(300));
    assert_eq!(spec.analysis.gates.len(), 2);
    assert!(spec.analysis.webhooks.is_empty(), "no unreachable hook");
    assert_eq!(spec.target.rule.as_deref(), Some("canary-split"));
    assert!(spec.analysis.fast_guard.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_steps_through_the_weights_and_is_promoted() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start(&lesson_config(&v1, &v2, 100, 0));
    let work = tempfile::tempdir().unwrap();
    let spec = write_spec(work.path(), true);
    let report_dir = work.path().join("report");

    let traffic = SteadyTraffic::start(&[weir.proxy_url()], 3, 1, Duration::from_millis(10));
    let watch = WeightWatch::start(&weir.admin_url(), None, "canary-split", "v2");
    let mut run = canary_run(&spec, &weir.admin_url(), &report_dir);
    run.assert_exit(0, RUN_TIMEOUT).await;

    // The weights an SRE would have seen on /metrics, step by step.
    eventually(WAIT, "weir_route_weight shows v2 at 100", || async {
        watch.seen().last() == Some(&100)
    })
    .await;
    let seen = watch.seen();
    assert!(in_order(&[0, 20, 50, 100], &seen), "{seen:?}");

    let r = report(&report_dir);
    assert_eq!(r["phase"], "Succeeded", "{}", r["reason"]);
    assert_eq!(r["decision"], "promoted");
    let checked: Vec<u64> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == true)
        .map(|c| c["canary_weight"].as_u64().unwrap())
        .collect();
    assert!(
        in_order(
            &[0, 20, 50],
            &checked.iter().map(|&w| w as u32).collect::<Vec<_>>()
        ),
        "a passing dark-launch check, then one per step: {checked:?}"
    );
    assert!(work.path().join("report/report.svg").exists());
    let out = run.stdout();
    assert!(out.contains("Succeeded"), "{out}");
    assert!(out.contains("report:"), "{out}");
    // Before touching anything it says that the live split goes to 100/0 first.
    let announced = out
        .find("preflight passed: moving the live split of payment-svc to v1=100 v2=0 to start")
        .unwrap_or_else(|| panic!("no announcement:\n{out}"));
    let first_write = out
        .find("weights v1=100 v2=0 in force")
        .expect("the 100/0 write");
    assert!(announced < first_write, "{out}");

    assert_eq!(
        routes(&weir.admin_url(), None).await,
        (promoted(), "v2".into())
    );
    // The dark launch sent header traffic to v2 before any weight.
    assert!(traffic.answers().iter().any(|a| a.upstream == "v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_20_percent_is_rolled_back_within_a_guard_period() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start_with(
        "v2",
        Behavior {
            fail_every: Some(5),
            ..Behavior::default()
        },
    )
    .await;
    let weir = Weir::start(&lesson_config(&v1, &v2, 100, 0));
    let work = tempfile::tempdir().unwrap();
    let spec = write_spec(work.path(), false);
    let report_dir = work.path().join("report");

    let traffic = SteadyTraffic::start(&[weir.proxy_url()], 4, 0, Duration::from_millis(10));
    let mut run = canary_run(&spec, &weir.admin_url(), &report_dir);
    run.assert_exit(1, RUN_TIMEOUT).await;

    // Read after the sidecar confirmed the rollback: every request sent from then on was
    // routed by the rolled-back table.
    let in_force = run
        .line_seen_at("canary at 0% in force")
        .unwrap_or_else(|| panic!("no rollback line:\n{}", run.stdout()));
    eventually(WAIT, "every client answered after the rollback", || async {
        traffic.settled_since(in_force)
    })
    .await;
    // Nothing sent before the rollback is in flight any more: from here on v2 must see nothing.
    let v2_base = v2.count();
    let answered_at_base = traffic.answers().len();
    eventually(WAIT, "200 more requests answered", || async {
        traffic.answers().len() >= answered_at_base + 200
    })
    .await;
    assert_eq!(v2.count(), v2_base, "v2 got requests after the rollback");
    let after: Vec<Answer> = traffic
        .answers()
        .into_iter()
        .filter(|a| a.sent > in_force)
        .collect();
    assert!(after.len() >= 200);
    assert!(
        after.iter().all(|a| a.upstream == "v1" && a.status == 200),
        "every request sent after the rollback was answered by v1: {:?}",
        after.iter().find(|a| a.upstream != "v1" || a.status != 200)
    );

    // 0% in force, latched.
    let metrics = weir.metrics().await;
    let v2_weight = metric_sum(
        &metrics,
        "weir_route_weight",
        &[("rule", "canary-split"), ("destination_version", "v2")],
    );
    assert_eq!(v2_weight, 0.0, "{metrics}");
    let (_, routes_json) = weir.admin_json("GET", "/routes", Value::Null).await;
    assert_eq!(routes_json["virtual_services"][0]["latched"], true);

    let r = report(&report_dir);
    assert_eq!(r["phase"], "Failed");
    assert_eq!(r["decision"], "rolled-back");
    let rb = &r["rollback"];
    assert_eq!(rb["trigger"], "fast-guard", "{}", rb["reason"]);
    assert!(rb["error"].is_null(), "{}", rb["error"]);
    let latency = rb["detected_to_in_force_us"].as_u64().unwrap();
    assert!(
        latency < 2_000_000,
        "breach detected -> 0% in force took {latency} µs"
    );
    // The fast guard acted before the first 2 s check of the 20% step could.
    assert!(
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["canary_weight"] == 0),
        "{}",
        r["checks"]
    );
    // Which rule fired, and the SLA from the first 5xx the sidecar counted (its
    // weir_first_error_timestamp_milliseconds), which came before the detection.
    assert_eq!(rb["gate"], "request-success-rate", "{rb}");
    assert_eq!(rb["min_requests"], 10);
    let first = rb["first_failure_at_ms"]
        .as_i64()
        .expect("the sidecar's first 5xx");
    assert!(first <= rb["detected_at_ms"].as_i64().unwrap(), "{rb}");
    assert!(
        rb["first_failure_to_in_force_us"].as_u64().unwrap() >= latency,
        "{rb}"
    );
    let stable_seen = rb["stable_seen_after_us"].as_u64();
    assert!(
        stable_seen.is_some_and(|us| us < 2_000_000),
        "first request on v1 after the rollback: {stable_seen:?}"
    );
    let out = run.stdout();
    assert!(out.contains("rolled back"), "{out}");
    assert!(
        out.contains("from the first failed request the sidecars counted: detected after"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_fan_out_moves_two_sidecars_together() {
    const TOKEN: &str = "canary-test-token";
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let config = lesson_config(&v1, &v2, 100, 0);
    let a = Weir::start_with_args(&config, &["--admin-token", TOKEN]);
    let b = Weir::start_with_args(&config, &["--admin-token", TOKEN]);
    let work = tempfile::tempdir().unwrap();
    let spec = write_spec(work.path(), false);
    let report_dir = work.path().join("report");

    let _traffic = SteadyTraffic::start(
        &[a.proxy_url(), b.proxy_url()],
        4,
        0,
        Duration::from_millis(10),
    );
    let watch_a = WeightWatch::start(&a.admin_url(), Some(TOKEN), "canary-split", "v2");
    let watch_b = WeightWatch::start(&b.admin_url(), Some(TOKEN), "canary-split", "v2");
    let mut run = WeirRun::spawn(&[
        "canary",
        "--spec",
        &spec,
        "--admin",
        &a.admin_url(),
        "--admin",
        &b.admin_url(),
        "--token",
        TOKEN,
        "--report",
        report_dir.to_str().unwrap(),
    ]);
    run.assert_exit(0, RUN_TIMEOUT).await;

    let end_a = routes(&a.admin_url(), Some(TOKEN)).await;
    let end_b = routes(&b.admin_url(), Some(TOKEN)).await;
    assert_eq!(end_a, (promoted(), "v2".into()));
    assert_eq!(end_a, end_b, "both sidecars end at the same weights");
    for watch in [&watch_a, &watch_b] {
        eventually(WAIT, "both sidecars show v2 at 100", || async {
            watch.seen().last() == Some(&100)
        })
        .await;
        assert!(
            in_order(&[0, 20, 50, 100], &watch.seen()),
            "{:?}",
            watch.seen()
        );
    }
    let r = report(&report_dir);
    assert_eq!(r["decision"], "promoted");
    assert!(
        r["timeline"][0]["message"]
            .as_str()
            .unwrap()
            .contains("admin API of 2 sidecars"),
        "{}",
        r["timeline"][0]
    );
    // The gates summed both sidecars' traffic: each check saw more than one sidecar's share.
    assert!(
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["gates"][0]["requests"].as_u64().unwrap() >= 10)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_sink_rewrites_the_config_and_the_sidecar_reloads_it() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start(&lesson_config(&v1, &v2, 100, 0));
    let work = tempfile::tempdir().unwrap();
    let spec = write_spec(work.path(), false);
    let report_dir = work.path().join("report");
    let reloads_before = metric_sum(
        &weir.metrics().await,
        "weir_config_reloads_total",
        &[("result", "success")],
    );

    let _traffic = SteadyTraffic::start(&[weir.proxy_url()], 4, 0, Duration::from_millis(10));
    let watch = WeightWatch::start(&weir.admin_url(), None, "canary-split", "v2");
    let mut run = WeirRun::spawn(&[
        "canary",
        "--spec",
        &spec,
        "--admin",
        &weir.admin_url(),
        "--file",
        weir.config_path.to_str().unwrap(),
        "--report",
        report_dir.to_str().unwrap(),
    ]);
    run.assert_exit(0, RUN_TIMEOUT).await;

    // The file: weights and the stable subset rewritten in place, the rest byte for byte.
    let text = read(&weir.config_path);
    assert!(text.contains("weir.dev/stable-subset: v2"), "{text}");
    assert!(
        text.contains("weight: 100 # weights must sum to 100"),
        "{text}"
    );
    assert!(text.contains("weight: 0 # ALWAYS verify"), "{text}");
    assert!(text.contains("# Step 1: header-based routing for internal testing"));

    // The sidecar reloaded every change: each step, then the promotion.
    eventually(WAIT, "the sidecar serves the promoted file", || async {
        routes(&weir.admin_url(), None).await.1 == "v2"
    })
    .await;
    let (weights, _) = routes(&weir.admin_url(), None).await;
    assert_eq!(
        weights,
        vec![("v1".to_string(), 0), ("v2".to_string(), 100)]
    );
    eventually(WAIT, "weir_route_weight shows v2 at 100", || async {
        watch.seen().last() == Some(&100)
    })
    .await;
    assert!(
        in_order(&[0, 20, 50, 100], &watch.seen()),
        "{:?}",
        watch.seen()
    );
    let reloads = metric_sum(
        &weir.metrics().await,
        "weir_config_reloads_total",
        &[("result", "success")],
    );
    assert!(
        reloads >= reloads_before + 3.0,
        "{reloads_before} -> {reloads}"
    );
    let (status, headers, _) = weir.send("payment-svc", "/pay", &[]).await;
    assert_eq!(
        (status, headers["x-upstream"].to_str().unwrap()),
        (StatusCode::OK, "v2")
    );
    assert_eq!(report(&report_dir)["decision"], "promoted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_serve_runs_the_canary_in_process_and_keeps_serving() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let work = tempfile::tempdir().unwrap();
    let spec = write_spec(work.path(), false);
    let report_dir = work.path().join("report");
    let started = Instant::now();
    let weir = Weir::start_with_args(
        &lesson_config(&v1, &v2, 100, 0),
        &["--canary", &spec, "--report", report_dir.to_str().unwrap()],
    );
    let _traffic = SteadyTraffic::start(&[weir.proxy_url()], 4, 0, Duration::from_millis(10));
    let watch = WeightWatch::start(&weir.admin_url(), None, "canary-split", "v2");

    eventually(
        RUN_TIMEOUT,
        "the in-process canary writes its report",
        || async { report_dir.join("report.svg").exists() },
    )
    .await;
    let r = report(&report_dir);
    assert_eq!(
        r["decision"],
        "promoted",
        "{}\n{}",
        r["reason"],
        weir.stderr()
    );
    assert!(
        r["timeline"][0]["message"]
            .as_str()
            .unwrap()
            .contains("in-process route table")
    );
    eventually(WAIT, "weir_route_weight shows v2 at 100", || async {
        watch.seen().last() == Some(&100)
    })
    .await;
    assert!(
        in_order(&[20, 50, 100], &watch.seen()),
        "{:?}",
        watch.seen()
    );
    assert!(started.elapsed() < RUN_TIMEOUT);

    // The sidecar keeps serving, now all on v2.
    let (status, headers, _) = weir.send("payment-svc", "/pay", &[]).await;
    assert_eq!(
        (status, headers["x-upstream"].to_str().unwrap()),
        (StatusCode::OK, "v2")
    );
    assert!(weir.stderr().contains("canary payment-svc ended Succeeded"));
    // The run's phase, status and weight are on the sidecar's /metrics, as Flagger's are.
    let text = weir.metrics().await;
    let phase = |p: &str| metric_sum(&text, "weir_canary_phase", &[("phase", p)]);
    assert_eq!(
        (phase("Succeeded"), phase("Progressing")),
        (1.0, 0.0),
        "{text}"
    );
    assert_eq!(metric_sum(&text, "weir_canary_status", &[]), 1.0);
    assert_eq!(metric_sum(&text, "weir_canary_weight", &[]), 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_rolls_the_canary_back_and_writes_the_report() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start(&lesson_config(&v1, &v2, 100, 0));
    let work = tempfile::tempdir().unwrap();
    // A check every minute: only the signal can end this run soon.
    let spec = work.path().join("canary.yaml");
    std::fs::write(
        &spec,
        spec_text(false).replace("interval: 2s", "interval: 1m"),
    )
    .unwrap();
    let report_dir = work.path().join("report");
    let _traffic = SteadyTraffic::start(&[weir.proxy_url()], 2, 0, Duration::from_millis(10));
    let mut run = WeirRun::spawn(&[
        "canary",
        "--spec",
        spec.to_str().unwrap(),
        "--admin",
        &weir.admin_url(),
        "--report",
        report_dir.to_str().unwrap(),
    ]);
    eventually(WAIT, "the canary at 20%", || async {
        run.line_seen_at("weights v1=80 v2=20 in force").is_some()
    })
    .await;
    run.signal("TERM");
    run.assert_exit(1, WAIT).await;
    assert!(
        run.stderr().contains("rolled back to 0%"),
        "{}",
        run.stderr()
    );

    let (weights, _) = routes(&weir.admin_url(), None).await;
    assert_eq!(
        weights,
        vec![("v1".to_string(), 100), ("v2".to_string(), 0)]
    );
    let r = report(&report_dir);
    assert_eq!(r["decision"], "rolled-back");
    assert_eq!(r["rollback"]["trigger"], "aborted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let work = tempfile::tempdir().unwrap();
    let good = write_spec(work.path(), false);
    // No metric source and no sink.
    let mut run = WeirRun::spawn(&["canary", "--spec", &good]);
    assert_eq!(run.exit_code(WAIT).await, 2);
    assert!(run.stderr().contains("--admin"), "{}", run.stderr());
    // A spec the parser refuses: nothing is changed, every problem is listed.
    let bad = work.path().join("bad.yaml");
    std::fs::write(
        &bad,
        spec_text(false).replace(
            "stepWeights: [20, 50]",
            "stepWeights: []\n    maxWeight: 120",
        ),
    )
    .unwrap();
    let mut run = WeirRun::spawn(&[
        "canary",
        "--spec",
        bad.to_str().unwrap(),
        "--admin",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(run.exit_code(WAIT).await, 2);
    let err = run.stderr();
    assert!(
        err.contains("the canary spec is refused (2 problems)"),
        "{err}"
    );
    assert!(
        err.contains("maxWeight") && err.contains("stepWeights"),
        "{err}"
    );
    assert!(run.stdout().is_empty(), "nothing ran: {}", run.stdout());
}

/// A free port on loopback (bound, then released for the sidecar to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_restarted_mid_step_without_its_state_is_put_back_and_its_window_not_counted() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    // Fixed ports, so that the restarted sidecar is the same --admin for the canary.
    let (admin_port, proxy_port) = (free_port(), free_port());
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let proxy_addr = format!("127.0.0.1:{proxy_port}");
    let fixed = ["--admin", &admin_addr, "--listen", &proxy_addr];
    let weir = Weir::start_with_args(&lesson_config(&v1, &v2, 100, 0), &fixed);
    let work = tempfile::tempdir().unwrap();
    let spec = write_spec(work.path(), false);
    let report_dir = work.path().join("report");
    let traffic = SteadyTraffic::start(&[weir.proxy_url()], 3, 0, Duration::from_millis(10));
    let mut run = canary_run(&spec, &weir.admin_url(), &report_dir);
    eventually(WAIT, "the canary at 20%", || async {
        routes(&weir.admin_url(), None).await.0 == [("v1".to_string(), 80), ("v2".to_string(), 20)]
    })
    .await;

    // SIGKILL, and back without its state file (a lost volume): it serves the file's 100/0.
    let Weir {
        dir,
        config_path,
        run: mut sidecar,
        ..
    } = weir;
    sidecar.signal("KILL");
    sidecar.wait_exit(Duration::from_secs(10));
    let fresh = dir.path().join("fresh-state.json").display().to_string();
    let mut args = fixed.to_vec();
    args.extend(["--state", &fresh]);
    let weir = Weir::spawn(dir, config_path, &args).unwrap();
    let back = Instant::now();

    run.assert_exit(0, RUN_TIMEOUT).await;
    let out = run.stdout();
    let put_back = run
        .line_seen_at("put back on every replica")
        .unwrap_or_else(|| panic!("the drift was not put back:\n{out}"));
    // The fast guard ticks every second: the drift is seen on the first tick after the
    // restart (the bound leaves room for a loaded machine, not for a second tick's worth).
    let after = put_back.saturating_duration_since(back);
    assert!(after < Duration::from_millis(1900), "{after:?}\n{out}");
    assert!(out.contains("serves 100/0, not the step's 80/20"), "{out}");
    assert!(out.contains("restarted (new boot id)"), "{out}");
    assert!(out.contains("check not counted"), "{out}");

    let r = report(&report_dir);
    assert_eq!(r["decision"], "promoted", "{}", r["reason"]);
    assert!(r["uncounted_checks"].as_u64().unwrap() >= 1, "{r}");
    // No check passed on the restarted sidecar's 100/0: every passing check at 20% came from
    // a window in which 80/20 was in force.
    assert_eq!(
        routes(&weir.admin_url(), None).await,
        (promoted(), "v2".into())
    );
    drop(traffic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_refuses_a_non_weir_admin_and_a_wrong_subset_and_changes_nothing() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start(&lesson_config(&v1, &v2, 90, 10));
    let generation = || async {
        let (_, r) = weir.admin_json("GET", "/routes", Value::Null).await;
        r["generation"].as_u64().unwrap()
    };
    let before = generation().await;
    let work = tempfile::tempdir().unwrap();
    let report_dir = work.path().join("report");
    // An ordinary web server answering 200 to anything, next to the real sidecar.
    let web = Upstream::start("not-weir").await;
    let web_url = format!("http://127.0.0.1:{}", web.port());

    let good = write_spec(work.path(), false);
    let typo = work.path().join("typo.yaml");
    std::fs::write(
        &typo,
        spec_text(false).replace(
            "    rule: canary-split\n",
            "    rule: canary-split\n    canarySubset: v3\n",
        ),
    )
    .unwrap();
    let typo = typo.display().to_string();
    let admin = weir.admin_url();
    let cases: [(&str, Vec<&str>, &str); 2] = [
        (
            "a non-weir admin",
            vec!["--admin", &admin, "--admin", &web_url],
            "is this a weir sidecar",
        ),
        (
            "a wrong subset",
            vec!["--admin", &admin],
            "no subset \"v3\"",
        ),
    ];
    for (what, admins, why) in cases {
        let spec = if what == "a wrong subset" {
            &typo
        } else {
            &good
        };
        let (v1_before, v2_before) = (v1.count(), v2.count());
        let mut args = vec!["canary", "--spec", spec.as_str()];
        args.extend(admins);
        args.extend(["--report", report_dir.to_str().unwrap()]);
        let mut run = WeirRun::spawn(&args);
        assert_eq!(run.exit_code(WAIT).await, 3, "{what}: {}", run.stdout());
        let out = run.stdout();
        assert!(
            out.contains("could not start: nothing was changed"),
            "{what}: {out}"
        );
        assert!(out.contains(why), "{what}: {out}");
        // Untouched: the same generation and 90/10, and the dark launch still on v2.
        assert_eq!(generation().await, before, "{what}");
        assert_eq!(
            routes(&weir.admin_url(), None).await.0,
            [("v1".to_string(), 90), ("v2".to_string(), 10)],
            "{what}"
        );
        let (status, _, _) = weir
            .send("payment-svc", "/pay", &[("x-canary", "true")])
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            v2.count(),
            v2_before + 1,
            "{what}: the dark launch still reaches v2"
        );
        assert_eq!(v1.count(), v1_before, "{what}");
    }
    // The web server was asked for /routes only, never for a weight change.
    let asked: Vec<String> = web
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.uri))
        .collect();
    assert!(!asked.is_empty());
    assert!(asked.iter().all(|a| a == "GET /routes"), "{asked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_says_in_force_only_once_the_sidecar_serves_the_weights() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start(&lesson_config(&v1, &v2, 100, 0));
    let work = tempfile::tempdir().unwrap();
    let spec = write_spec(work.path(), false);
    let report_dir = work.path().join("report");
    let _traffic = SteadyTraffic::start(&[weir.proxy_url()], 4, 0, Duration::from_millis(10));
    let mut run = WeirRun::spawn(&[
        "canary",
        "--spec",
        &spec,
        "--admin",
        &weir.admin_url(),
        "--file",
        weir.config_path.to_str().unwrap(),
        "--report",
        report_dir.to_str().unwrap(),
    ]);
    eventually(RUN_TIMEOUT, "the canary confirms 80/20", || async {
        run.line_seen_at("weights v1=80 v2=20 in force").is_some()
    })
    .await;
    // The line came after the canary read it on /routes: asked now, the sidecar serves it
    // (or a later step, the weights only move forward).
    let (now, _) = routes(&weir.admin_url(), None).await;
    let weight_of_v2 = now.iter().find(|(s, _)| s == "v2").map(|(_, w)| *w);
    assert!(
        matches!(weight_of_v2, Some(20 | 50 | 100)),
        "{now:?}\n{}",
        run.stdout()
    );
    run.assert_exit(0, RUN_TIMEOUT).await;
    let out = run.stdout();
    // The sidecar polls its file: each write is announced as written first, confirmed later.
    for step in ["v1=80 v2=20", "v1=50 v2=50"] {
        let written = out
            .find(&format!("weights {step} written, not yet confirmed"))
            .unwrap_or_else(|| panic!("{step} not announced as written:\n{out}"));
        let in_force = out
            .find(&format!("weights {step} in force on every replica"))
            .unwrap_or_else(|| panic!("{step} never confirmed:\n{out}"));
        assert!(written < in_force, "{out}");
    }
    let r = report(&report_dir);
    assert_eq!(r["decision"], "promoted", "{}", r["reason"]);
    // The windows that began under weights not yet loaded were not counted.
    assert!(r["uncounted_checks"].as_u64().unwrap() >= 2, "{r}");
    assert!(
        r["timeline"][0]["message"]
            .as_str()
            .unwrap()
            .contains("confirmed on the admin API"),
        "{}",
        r["timeline"][0]
    );
    // The promotion was waited for: served as soon as the run ended.
    assert_eq!(
        routes(&weir.admin_url(), None).await,
        (
            vec![("v1".to_string(), 0), ("v2".to_string(), 100)],
            "v2".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_mode_rollback_latches_the_dark_launch_rule_too() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start_with(
        "v2",
        Behavior {
            fail_every: Some(4),
            ..Behavior::default()
        },
    )
    .await;
    let weir = Weir::start(&lesson_config(&v1, &v2, 100, 0));
    let work = tempfile::tempdir().unwrap();
    // A dark launch first: QA's x-canary traffic reaches the failing v2 through the header rule.
    let spec = write_spec(work.path(), true);
    let report_dir = work.path().join("report");
    let traffic = SteadyTraffic::start(&[weir.proxy_url()], 2, 3, Duration::from_millis(10));
    let mut run = WeirRun::spawn(&[
        "canary",
        "--spec",
        &spec,
        "--admin",
        &weir.admin_url(),
        "--file",
        weir.config_path.to_str().unwrap(),
        "--report",
        report_dir.to_str().unwrap(),
    ]);
    run.assert_exit(1, RUN_TIMEOUT).await;
    let in_force = run
        .line_seen_at("canary at 0% in force")
        .unwrap_or_else(|| panic!("no rollback line:\n{}", run.stdout()));
    eventually(WAIT, "every client answered after the rollback", || async {
        traffic.settled_since(in_force)
    })
    .await;
    drop(traffic);

    // QA's header requests, counted at the upstreams: none reaches v2 any more.
    let (v1_before, v2_before) = (v1.count(), v2.count());
    const N: u64 = 200;
    for _ in 0..N {
        let (status, headers, _) = weir
            .send("payment-svc", "/pay", &[("x-canary", "true")])
            .await;
        assert_eq!(
            (status, headers["x-upstream"].to_str().unwrap()),
            (StatusCode::OK, "v1")
        );
    }
    assert_eq!(v2.count(), v2_before, "0 of {N} x-canary requests reach v2");
    // (The steady clients may still finish a request or two after being dropped.)
    assert!(v1.count() >= v1_before + N);

    // Latched on the sidecar, and the file says 100/0 too.
    let (_, routes_json) = weir.admin_json("GET", "/routes", Value::Null).await;
    assert_eq!(routes_json["virtual_services"][0]["latched"], true);
    let text = read(&weir.config_path);
    assert!(
        text.contains("weight: 0 # weights must sum to 100"),
        "{text}"
    );
    assert!(text.contains("weight: 100 # ALWAYS verify"), "{text}");
    let r = report(&report_dir);
    assert_eq!(r["decision"], "rolled-back");
    assert!(r["rollback"]["error"].is_null(), "{}", r["rollback"]);
}
