//! The Prometheus metric source against a real Prometheus (Debian's `prometheus` package,
//! installed by `scripts/install-test-deps.sh`), scraping real `weir serve` sidecars every
//! second: its observations match the traffic sent, and `weir canary --prometheus` promotes a
//! healthy canary on its numbers (built-in gates and a custom PromQL gate).

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;
use support::*;
use weir_canary::{MetricSource, Observation, PrometheusSource, SeriesFilter};

const WAIT: Duration = Duration::from_secs(60);

/// A Prometheus server on a free loopback port with its own storage; killed when dropped.
struct Prometheus {
    url: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// The binary: `$WEIR_PROMETHEUS` or Debian's `/usr/bin/prometheus`. Missing is a failure,
    /// never a skip: CI installs it.
    fn binary() -> PathBuf {
        let bin = std::env::var_os("WEIR_PROMETHEUS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
        assert!(
            bin.exists(),
            "{} is missing: these tests need a real Prometheus. Run `sudo bash scripts/install-test-deps.sh` \
             (Debian's `prometheus` package), or point WEIR_PROMETHEUS at a prometheus binary",
            bin.display()
        );
        bin
    }

    /// Starts Prometheus scraping these admin addresses' `/metrics` every second.
    fn start(targets: &[String]) -> Prometheus {
        let bin = Prometheus::binary();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n- job_name: weir\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  \
             metrics_path: /metrics\n  static_configs:\n  - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("prometheus.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok((StatusCode::OK, _, _)) = try_http_request(
                "GET",
                &format!("{}/-/ready", self.url),
                None,
                &[],
                Bytes::new(),
            )
            .await
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in {WAIT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An instant query's single value, if it returned one.
    async fn value(&self, promql: &str) -> Option<f64> {
        let url = format!("{}/api/v1/query?query={}", self.url, encode(promql));
        let (status, _, body) = try_http_request("GET", &url, None, &[], Bytes::new())
            .await
            .ok()?;
        if status != StatusCode::OK {
            return None;
        }
        let answer: Value = serde_json::from_slice(&body).ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}

/// A free loopback port: bound, read and released (Prometheus must bind it itself).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

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
        WAIT,
        "Prometheus has scraped the first 10 requests",
        || async { prometheus.value(v2_total).await == Some(10.0) },
    )
    .await;
    const N: usize = 300;
    send_tagged(&b, "ledger-svc", N).await;
    eventually(WAIT, "Prometheus has scraped all 310 requests", || async {
        prometheus.value(v2_total).await == Some(310.0)
    })
    .await;
    // Requests 11..=310 at b2: every fifth failed, so 60 of the 300: 80% success.
    let failed: u64 = b2.answered().get(&500).copied().unwrap_or(0);
    assert_eq!((b2.count(), failed), (310, 62));
    // increase() extrapolates to the window's edges by up to half a scrape interval at the
    // series' average rate; as scrapes accumulate the excess shrinks. Wait for it to settle.
    let window = Duration::from_secs(60);
    let deadline = Instant::now() + WAIT;
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
    eventually(WAIT, "weir_route_weight shows v2 at 100", || async {
        watch.seen().last() == Some(&100)
    })
    .await;
    assert!(
        in_order(&[0, 20, 50, 100], &watch.seen()),
        "{:?}",
        watch.seen()
    );
}
