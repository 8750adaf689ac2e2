//! The Prometheus metric source against a real Prometheus (Debian's `prometheus` package,
//! installed by `scripts/install-test-deps.sh`), scraping real `weir serve` sidecars every
//! second: its observations match the traffic sent, and `weir canary --prometheus` promotes a
//! healthy canary on its numbers (built-in gates and a custom PromQL gate). Flagger's built-in
//! queries, as `weir canary --prometheus` sends them, evaluated by the same Prometheus on
//! inbound-side (`reporter="destination"`) series.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;
use support::*;
use weir_canary::{FlaggerQueries, MetricSource, Observation, PrometheusSource, SeriesFilter};

/// The lesson's config under another service name, so that two sidecars' series differ.
fn renamed(config: &str, service: &str) -> String {
    config.replace("payment-svc", service)
}

async fn observe(prometheus: &str, service: &str, version: &str, window: Duration) -> Observation {
    let (url, service, version) = (
        prometheus.to_string(),
        service.to_string(),
        version.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        PrometheusSource::new(url)
            .filter(SeriesFilter::service(service))
            .observe(&version, window, Instant::now())
            .unwrap_or_else(|e| panic!("{e}"))
    })
    .await
    .unwrap()
}

/// Sends `n` requests with `x-canary: true` (the dark-launch rule: all to v2).
async fn send_tagged(weir: &Weir, host: &str, n: usize) {
    for _ in 0..n {
        let (status, headers, _) = weir.send(host, "/pay", &[("x-canary", "true")]).await;
        assert!(status == StatusCode::OK || status == StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(headers["x-upstream"], "v2");
    }
}

fn spec_with_promql(dir: &Path) -> String {
    let text = r#"apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: payment-svc
  namespace: production
spec:
  analysis:
    interval: 4s
    threshold: 2
    stepWeights: [20, 50]
    metrics:
    - name: request-success-rate
      thresholdRange: {min: 99}
      interval: 4s
    - name: request-duration
      thresholdRange: {max: 500}
      interval: 4s
    - name: v2-5xx-per-second
      query: sum(rate(istio_requests_total{destination_service_name="payment-svc",destination_version="v2",response_code=~"5.."}[{{ interval }}])) or on() vector(0)
      thresholdRange: {max: 0.5}
      interval: 4s
  weir:
    rule: canary-split
    destinationService: payment-svc
    minRequests: 20
    fastGuard: {period: 1s, window: 4s}
"#;
    let path = dir.join("canary.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_observations_and_a_canary_run_on_a_real_prometheus() {
    // Sidecar B serves `ledger-svc` for the observation test, with every fifth v2 answer a
    // 500; sidecar A serves `payment-svc` for the canary run, healthy.
    let a1 = Upstream::start("v1").await;
    let a2 = Upstream::start("v2").await;
    let b1 = Upstream::start("v1").await;
    let b2 = Upstream::start_with(
        "v2",
        Behavior {
            fail_every: Some(5),
            ..Behavior::default()
        },
    )
    .await;
    let a = Weir::start(&lesson_config(&a1, &a2, 100, 0));
    let b = Weir::start(&renamed(&lesson_config(&b1, &b2, 100, 0), "ledger-svc"));
    let mut prometheus = Prometheus::start(&[a.admin.to_string(), b.admin.to_string()]);
    prometheus.wait_ready().await;

    // --- observations: known traffic on ledger-svc's v2 ---
    let v2_total = r#"sum(istio_requests_total{destination_service_name="ledger-svc",destination_version="v2"})"#;
    // The series must exist in Prometheus before the counted traffic: increase() cannot see
    // what a series had when it was first scraped.
    send_tagged(&b, "ledger-svc", 10).await;
    eventually(
        PROMETHEUS_WAIT,
        "Prometheus has scraped the first 10 requests",
        || async { prometheus.value(v2_total).await == Some(10.0) },
    )
    .await;
    const N: usize = 300;
    send_tagged(&b, "ledger-svc", N).await;
    eventually(
        PROMETHEUS_WAIT,
        "Prometheus has scraped all 310 requests",
        || async { prometheus.value(v2_total).await == Some(310.0) },
    )
    .await;
    // Requests 11..=310 at b2: every fifth failed, so 60 of the 300: 80% success.
    let failed: u64 = b2.answered().get(&500).copied().unwrap_or(0);
    assert_eq!((b2.count(), failed), (310, 62));
    // increase() extrapolates to the window's edges by up to half a scrape interval at the
    // series' average rate; as scrapes accumulate the excess shrinks. Wait for it to settle.
    let window = Duration::from_secs(60);
    let deadline = Instant::now() + PROMETHEUS_WAIT;
    let last = loop {
        let seen: Observation = observe(&prometheus.url, "ledger-svc", "v2", window).await;
        let requests_ok = (N as u64 * 95 / 100..=N as u64 * 120 / 100).contains(&seen.requests);
        let rate_ok = seen.success_rate.is_some_and(|r| (r - 80.0).abs() <= 2.0);
        if requests_ok && rate_ok {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never matched the traffic sent ({N} requests, 80% success): {seen:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!("sent {N} requests at 80% success; Prometheus observed {last:?}");
    let p99 = last.p99_ms.expect("a p99 from the histogram");
    assert!(p99 > 0.0 && p99 <= 250.0, "p99 {p99} ms");
    assert_eq!(last.window, window);
    // The filter keeps the other sidecar's service out, and a version without traffic is no
    // data, not a zero success rate.
    let none = observe(&prometheus.url, "payment-svc", "v3", window).await;
    assert_eq!((none.requests, none.success_rate), (0, None));

    // --- a canary run with --prometheus ---
    let work = tempfile::tempdir().unwrap();
    let spec = spec_with_promql(work.path());
    let report_dir = work.path().join("report");
    let _traffic = SteadyTraffic::start(&[a.proxy_url()], 4, 0, Duration::from_millis(10));
    let watch = WeightWatch::start(&a.admin_url(), None, "canary-split", "v2");
    let mut run = WeirRun::spawn(&[
        "canary",
        "--spec",
        &spec,
        "--admin",
        &a.admin_url(),
        "--prometheus",
        &prometheus.url,
        // These sidecars are explicit proxies with no inbound side: count the callers'
        // outbound series. Flagger's own queries are tested in tests/pod.
        "--queries",
        "versions",
        "--report",
        report_dir.to_str().unwrap(),
    ]);
    let code = run.exit_code(Duration::from_secs(120)).await;
    assert_eq!(
        code,
        0,
        "stdout:\n{}\nstderr:\n{}\nprometheus:\n{}",
        run.stdout(),
        run.stderr(),
        prometheus.log()
    );
    let report: Value = serde_json::from_str(&read(report_dir.join("report.json"))).unwrap();
    assert_eq!(report["decision"], "promoted");
    let checks = report["checks"].as_array().unwrap();
    assert!(checks.len() >= 2, "{checks:?}");
    for check in checks {
        let gates = check["gates"].as_array().unwrap();
        let gate = |name: &str| {
            gates
                .iter()
                .find(|g| g["name"] == name)
                .unwrap_or_else(|| panic!("no gate {name} in {check}"))
        };
        let rate = gate("request-success-rate");
        assert_eq!(rate["verdict"], "pass", "{check}");
        assert!(rate["requests"].as_u64().unwrap() >= 20, "{check}");
        assert_eq!(rate["value"].as_f64(), Some(100.0), "{check}");
        let promql = gate("v2-5xx-per-second");
        assert_eq!(promql["verdict"], "pass", "{check}");
        assert_eq!(promql["value"].as_f64(), Some(0.0), "{check}");
    }
    eventually(
        PROMETHEUS_WAIT,
        "weir_route_weight shows v2 at 100",
        || async { watch.seen().last() == Some(&100) },
    )
    .await;
    assert!(
        in_order(&[0, 20, 50, 100], &watch.seen()),
        "{:?}",
        watch.seen()
    );
}

/// A `/metrics` endpoint on 127.0.0.1:0 whose counters grow with time as an inbound sidecar's
/// would: `payment-svc-v2` in namespace `shop` answers 80 requests a second with 200 and 20
/// with 503, each taking 25-50 ms. Around it, series Flagger's queries must not count: the
/// callers' side of the same requests (`reporter="source"`), the same workload name in
/// another namespace, and a workload whose name only starts with `payment-svc-v2`.
fn inbound_exposition_server() -> std::net::SocketAddr {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let started = Instant::now();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let tenths = started.elapsed().as_millis() as u64 / 100;
            let (ok, failed) = (8 * tenths, 2 * tenths);
            let mut body = String::from(
                "# TYPE istio_requests_total counter\n# TYPE istio_request_duration_milliseconds histogram\n",
            );
            for (reporter, ns, workload, scale) in [
                ("destination", "shop", "payment-svc-v2", 1),
                ("source", "shop", "payment-svc-v2", 7),
                ("destination", "other", "payment-svc-v2", 5),
                ("destination", "shop", "payment-svc-v2-primary", 3),
            ] {
                let labels = format!(
                    "reporter=\"{reporter}\",destination_workload_namespace=\"{ns}\",destination_workload=\"{workload}\""
                );
                // The decoys fail everything and are slow, so that counting one shows.
                let (ok, failed) = if scale == 1 {
                    (ok, failed)
                } else {
                    (0, scale * tenths)
                };
                let all = ok + failed;
                body.push_str(&format!(
                    "istio_requests_total{{{labels},response_code=\"200\"}} {ok}\n\
                     istio_requests_total{{{labels},response_code=\"503\"}} {failed}\n"
                ));
                let (fast, slow) = if scale == 1 {
                    ("50", "+Inf")
                } else {
                    ("5000", "+Inf")
                };
                for (le, n) in [("25", 0), (fast, all), (slow, all)] {
                    body.push_str(&format!(
                        "istio_request_duration_milliseconds_bucket{{{labels},le=\"{le}\"}} {n}\n"
                    ));
                }
                body.push_str(&format!(
                    "istio_request_duration_milliseconds_count{{{labels}}} {all}\n"
                ));
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaggers_builtin_queries_on_a_real_prometheus() {
    let metrics = inbound_exposition_server();
    let mut prometheus = Prometheus::start(&[metrics.to_string()]);
    prometheus.wait_ready().await;
    let flagger = FlaggerQueries::new("shop", "payment-svc-v2");
    let window = Duration::from_secs(5);
    // Wait until the window is full of scrapes (100 requests a second over 5 s).
    eventually(PROMETHEUS_WAIT, "a window's worth of scrapes", || async {
        prometheus
            .value(&flagger.requests(window))
            .await
            .is_some_and(|n| n >= 450.0)
    })
    .await;
    // Prometheus itself answers the queries as rendered: 80% and the p99 interpolated in the
    // 25-50 ms bucket, 25 + 25 x 0.99 = 49.75 ms.
    let rate = prometheus
        .value(&flagger.request_success_rate(window))
        .await
        .unwrap();
    assert!((rate - 80.0).abs() < 1e-6, "success rate {rate}");
    let p99 = prometheus
        .value(&flagger.request_duration(window))
        .await
        .unwrap();
    assert!((p99 - 49.75).abs() < 1e-6, "p99 {p99}");

    // The same through the metric source `weir canary --prometheus` uses by default.
    let url = prometheus.url.clone();
    let seen = tokio::task::spawn_blocking(move || {
        PrometheusSource::new(url)
            .flagger(flagger, "v2")
            .observe("v2", window, Instant::now())
            .unwrap()
    })
    .await
    .unwrap();
    eprintln!("Flagger's queries on a real Prometheus: {seen:?}");
    assert_eq!(
        seen.success_rate.map(|r| (r * 1e6).round() / 1e6),
        Some(80.0)
    );
    assert_eq!(seen.p99_ms.map(|p| (p * 1e6).round() / 1e6), Some(49.75));
    // 100 requests a second over 5 s, give or take increase()'s extrapolation.
    assert!((450..=600).contains(&seen.requests), "{seen:?}");
}
