//! The data path of `weir serve`, end to end: the real binary between a test client and
//! upstreams started by the test. Split, dark launch, sticky canary, metrics equal to what the
//! upstreams saw, Envoy's error flags, timeouts, retries, faults, mirrors, header edits.
//!
//! Protocol-level tests (h2c, gRPC trailers, a 100 MB body, WebSocket) are in
//! `tests/proxy_protocols.rs`.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::*;

/// The lesson's config with extra lines added to the `canary-split` rule (indented as its
/// fields).
fn with_split_rule(config: &str, lines: &str) -> String {
    let marker = "  - name: canary-split\n";
    assert!(config.contains(marker));
    config.replacen(marker, &format!("{marker}{lines}"), 1)
}

/// The lesson's config with every request of the split on v1 (100/0). (`render` with 100/0
/// would turn `weight: 10` inside `weight: 100` into `weight: 00`.)
fn all_on_v1(v1_port: u16, v2_port: u16) -> String {
    render(
        &read(root().join("config/payment-svc.yaml")),
        v1_port,
        v2_port,
        90,
        10,
    )
    .replace("weight: 90 #", "weight: 100 #")
    .replace("weight: 10 #", "weight: 0 #")
}

/// A port where nothing listens.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Sends `n` requests through the proxy, `concurrency` at a time; returns the answers'
/// `(status, x-upstream or "", x-weir-flags or "")` counts.
async fn load(
    weir: &Weir,
    n: usize,
    concurrency: usize,
    headers: &'static [(&'static str, &'static str)],
) -> BTreeMap<(u16, String, String), u64> {
    let url = Arc::new(format!("{}/pay", weir.proxy_url()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let url = url.clone();
        let next = next.clone();
        tasks.spawn(async move {
            let mut seen = BTreeMap::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let (status, h, _) =
                    http_request("GET", &url, Some("payment-svc"), headers, Bytes::new()).await;
                let name = |k: &str| {
                    h.get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                *seen
                    .entry((status.as_u16(), name("x-upstream"), name("x-weir-flags")))
                    .or_insert(0) += 1;
            }
            seen
        });
    }
    let mut total = BTreeMap::new();
    while let Some(part) = tasks.join_next().await {
        for (k, v) in part.unwrap() {
            *total.entry(k).or_insert(0) += v;
        }
    }
    total
}

fn served_by(counts: &BTreeMap<(u16, String, String), u64>, upstream: &str) -> u64 {
    counts
        .iter()
        .filter(|((_, u, _), _)| u == upstream)
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_90_10_within_binomial_bounds() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start(&lesson_config(&v1, &v2, 90, 10));
    let n = 5_000;
    let counts = load(&weir, n, 32, &[]).await;
    let (a, b) = (served_by(&counts, "v1"), served_by(&counts, "v2"));
    assert_eq!(
        a + b,
        n as u64,
        "every request answered by an upstream: {counts:?}"
    );
    assert!(
        within_binomial(b, n as u64, 0.10, 4.5),
        "v2 got {b} of {n}; 10% expected within 4.5 sigma"
    );
    assert_eq!(
        (v1.count(), v2.count()),
        (a, b),
        "the upstreams saw what the client saw"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dark_launch_header_always_reaches_v2() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start(&lesson_config(&v1, &v2, 90, 10));
    let counts = load(&weir, 300, 8, &[("x-canary", "true")]).await;
    assert_eq!(served_by(&counts, "v2"), 300, "{counts:?}");
    assert_eq!(v1.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_key_keeps_each_user_on_one_version() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let config = with_annotations(
        &lesson_config(&v1, &v2, 50, 50),
        &[("weir.dev/sticky", "header:x-user-id")],
    );
    let weir = Weir::start(&config);
    let mut per_version = BTreeMap::new();
    for user in 0..60 {
        let id = format!("user-{user}");
        let mut versions = std::collections::BTreeSet::new();
        for _ in 0..8 {
            let (status, h, _) = weir
                .send("payment-svc", "/pay", &[("x-user-id", &id)])
                .await;
            assert_eq!(status, StatusCode::OK);
            versions.insert(h["x-upstream"].to_str().unwrap().to_string());
        }
        assert_eq!(
            versions.len(),
            1,
            "{id} moved between versions: {versions:?}"
        );
        *per_version
            .entry(versions.into_iter().next().unwrap())
            .or_insert(0) += 1;
    }
    assert_eq!(
        per_version.len(),
        2,
        "60 users at 50/50 use both versions: {per_version:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_what_the_upstreams_answered() {
    let v1 = Upstream::start_with(
        "v1",
        Behavior {
            fail_every: Some(7),
            ..Behavior::default()
        },
    )
    .await;
    let v2 = Upstream::start("v2").await;
    // No retries, so that every upstream answer is one client answer.
    let config = with_split_rule(
        &lesson_config(&v1, &v2, 80, 20),
        "    retries: {attempts: 0}\n",
    );
    let weir = Weir::start_with_args(&config, &["--workload", "frontend"]);
    let counts = load(&weir, 600, 16, &[]).await;
    for _ in 0..5 {
        let (status, h, _) = weir.send("nobody-home", "/", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(h["x-weir-flags"], "NR");
    }
    assert_eq!(counts.values().sum::<u64>(), 600);

    // The counters are final once every response body has been sent.
    eventually(Duration::from_secs(5), "all requests counted", || async {
        metric_sum(&weir.metrics().await, "istio_requests_total", &[]) >= 605.0
    })
    .await;
    let text = weir.metrics().await;
    let base = [("reporter", "source"), ("source_workload", "frontend")];
    for (version, upstream) in [("v1", &v1), ("v2", &v2)] {
        for (code, n) in upstream.answered() {
            let code = code.to_string();
            let mut labels = base.to_vec();
            labels.extend([
                ("destination_version", version),
                ("destination_service_name", "payment-svc"),
                (
                    "destination_workload",
                    if version == "v1" {
                        "payment-svc-v1"
                    } else {
                        "payment-svc-v2"
                    },
                ),
                ("response_code", code.as_str()),
                ("response_flags", "-"),
                ("request_protocol", "http"),
            ]);
            assert_eq!(
                metric_sum(&text, "istio_requests_total", &labels),
                n as f64,
                "{version} {code}: upstream answered {n}\n{text}"
            );
            assert_eq!(
                metric_sum(&text, "istio_request_duration_milliseconds_count", &labels),
                n as f64
            );
        }
    }
    assert!(
        v1.answered().contains_key(&500),
        "the 5xx path was exercised"
    );
    assert_eq!(
        metric_sum(
            &text,
            "istio_requests_total",
            &[
                ("destination_service_name", "unknown"),
                ("response_code", "404"),
                ("response_flags", "NR")
            ]
        ),
        5.0
    );
    // Envoy's default buckets, in order, then +Inf.
    let mut les: Vec<String> = Vec::new();
    for (labels, _) in metric_samples(&text, "istio_request_duration_milliseconds_bucket") {
        if labels.get("destination_version").map(String::as_str) == Some("v2")
            && labels["response_code"] == "200"
        {
            les.push(labels["le"].clone());
        }
    }
    let envoy = [
        0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
    ];
    let mut want: Vec<String> = envoy.iter().map(|b| format!("{b:?}")).collect();
    want.push("+Inf".into());
    assert_eq!(les, want);
    // The weights in force.
    for (version, w) in [("v1", 80.0), ("v2", 20.0)] {
        assert_eq!(
            metric_sum(
                &text,
                "weir_route_weight",
                &[
                    ("virtual_service", "payment-svc"),
                    ("rule", "canary-split"),
                    ("destination_version", version)
                ]
            ),
            w
        );
    }
    assert!(metric_sum(&text, "weir_config_generation", &[]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_503_uf_quickly_and_counted() {
    let v2 = Upstream::start("v2").await;
    let config = all_on_v1(dead_port(), v2.port());
    let weir = Weir::start(&config);
    let started = Instant::now();
    let (status, h, _) = weir.send("payment-svc", "/pay", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let flags = h["x-weir-flags"].to_str().unwrap();
    // Istio's default retry policy retries connect failures twice.
    assert_eq!(flags, "UF,URX");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    eventually(
        Duration::from_secs(5),
        "the UF response is counted",
        || async {
            let text = weir.metrics().await;
            metric_sum(
                &text,
                "istio_requests_total",
                &[
                    ("destination_version", "v1"),
                    ("response_code", "503"),
                    ("response_flags", "UF,URX"),
                ],
            ) == 1.0
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_upstream_is_504_ut_at_the_route_timeout() {
    let v1 = Upstream::start_with(
        "v1",
        Behavior {
            hang: true,
            ..Behavior::default()
        },
    )
    .await;
    let v2 = Upstream::start("v2").await;
    let config = with_split_rule(&all_on_v1(v1.port(), v2.port()), "    timeout: 400ms\n");
    let weir = Weir::start(&config);
    let started = Instant::now();
    let (status, h, _) = weir.send("payment-svc", "/pay", &[]).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(h["x-weir-flags"], "UT");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(3000),
        "took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_turn_failed_tries_into_a_success() {
    // (retries of the rule, upstream failures before it answers, expected status, tries seen)
    let rows: [(&str, u64, u16, u64); 4] = [
        // Istio's default: 2 retries on 503 (connect-failure, refused-stream, 503).
        ("", 1, 200, 2),
        ("    retries: {attempts: 3, retryOn: 5xx}\n", 3, 200, 4),
        (
            "    retries: {attempts: 1, retryOn: gateway-error}\n",
            3,
            503,
            2,
        ),
        ("    retries: {attempts: 0}\n", 1, 503, 1),
    ];
    for (retries, fail_first, want, tries) in rows {
        let v1 = Upstream::start_with(
            "v1",
            Behavior {
                fail_first,
                ..Behavior::default()
            },
        )
        .await;
        let v2 = Upstream::start("v2").await;
        let weir = Weir::start(&with_split_rule(&all_on_v1(v1.port(), v2.port()), retries));
        let (status, h, _) = weir.send("payment-svc", "/pay", &[]).await;
        assert_eq!(status.as_u16(), want, "{retries:?} failing {fail_first}");
        assert_eq!(v1.count(), tries, "{retries:?}: tries seen upstream");
        if want == 503 && tries > 1 {
            assert_eq!(
                h["x-weir-flags"], "URX",
                "retries exhausted on a retriable answer"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort_hits_its_share_and_delay_is_applied() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let abort =
        "    fault:\n      abort:\n        httpStatus: 503\n        percentage: {value: 50}\n";
    let weir = Weir::start(&with_split_rule(&all_on_v1(v1.port(), v2.port()), abort));
    let n = 1_000u64;
    let counts = load(&weir, n as usize, 16, &[]).await;
    let aborted: u64 = counts
        .iter()
        .filter(|((s, _, f), _)| *s == 503 && f == "FI")
        .map(|(_, c)| c)
        .sum();
    assert!(
        within_binomial(aborted, n, 0.5, 4.5),
        "aborted {aborted} of {n}: {counts:?}"
    );
    assert_eq!(
        v1.count(),
        n - aborted,
        "aborted requests never reach the upstream"
    );
    eventually(Duration::from_secs(5), "FI counted", || async {
        let text = weir.metrics().await;
        metric_sum(
            &text,
            "istio_requests_total",
            &[("response_flags", "FI"), ("response_code", "503")],
        ) == aborted as f64
    })
    .await;
    drop(weir);

    let delay =
        "    fault:\n      delay:\n        fixedDelay: 300ms\n        percentage: {value: 100}\n";
    let weir = Weir::start(&with_split_rule(&all_on_v1(v1.port(), v2.port()), delay));
    let started = Instant::now();
    let (status, h, _) = weir.send("payment-svc", "/pay", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(h["x-weir-flags"], "DI");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_gets_copies_and_never_slows_or_fails_the_primary() {
    let mirror_rule =
        "    mirror: {host: payment-svc, subset: v2}\n    mirrorPercentage: {value: 100}\n";
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start(&with_split_rule(
        &all_on_v1(v1.port(), v2.port()),
        mirror_rule,
    ));
    for _ in 0..20 {
        let (status, h, _) = weir.send("payment-svc", "/pay", &[]).await;
        assert_eq!(
            (status, h["x-upstream"].to_str().unwrap()),
            (StatusCode::OK, "v1")
        );
    }
    eventually(
        Duration::from_secs(5),
        "20 copies at the mirror",
        || async { v2.count() == 20 },
    )
    .await;
    let seen = v2.seen();
    assert!(
        seen.iter()
            .all(|s| s.headers["host"] == "payment-svc-shadow"),
        "{:?}",
        seen[0].headers
    );
    assert_eq!(v1.count(), 20);

    // A slow mirror: the primary answers at its own pace.
    v2.set_behavior(Behavior {
        delay: Duration::from_secs(3),
        ..Behavior::default()
    });
    let started = Instant::now();
    for _ in 0..10 {
        let (status, _, _) = weir.send("payment-svc", "/pay", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "slow mirror slowed the primary: {:?}",
        started.elapsed()
    );
    drop(weir);

    // A mirror that is down: the primary still succeeds.
    let v1 = Upstream::start("v1").await;
    let config = all_on_v1(v1.port(), dead_port());
    let weir = Weir::start(&with_split_rule(&config, mirror_rule));
    for _ in 0..10 {
        let (status, h, _) = weir.send("payment-svc", "/pay", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(h.get("x-weir-flags").is_none());
    }
    eventually(Duration::from_secs(5), "failed copies counted", || async {
        let text = weir.metrics().await;
        metric_sum(&text, "weir_mirror_requests_total", &[("result", "failed")]) == 10.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_rewrites_and_header_edits() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let edits = concat!(
        "    match: [{uri: {prefix: /api/v1}}]\n",
        "    rewrite: {uri: /v2}\n",
        "    headers:\n",
        "      request: {set: {x-route: canary-split}, remove: [x-drop-me]}\n",
        "      response: {add: {x-served-by: weir}}\n",
    );
    // The split rule now matches /api/v1 only; the dark launch still matches the header.
    let weir = Weir::start(&with_split_rule(&all_on_v1(v1.port(), v2.port()), edits));
    let (status, h, _) = weir
        .send(
            "payment-svc.production.svc.cluster.local:80",
            "/api/v1/charge?id=7",
            &[
                ("connection", "x-secret"),
                ("x-secret", "hop"),
                ("x-drop-me", "1"),
                ("x-forwarded-for", "203.0.113.9"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["x-served-by"], "weir");
    let seen = v1.seen().pop().expect("v1 saw the request");
    assert_eq!(seen.uri, "/v2/charge?id=7");
    let header = |k: &str| seen.headers.get(k).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(header("host").as_deref(), Some("payment-svc"));
    assert_eq!(header("x-route").as_deref(), Some("canary-split"));
    assert_eq!(
        header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(header("x-request-id").map(|v| v.len()), Some(36));
    assert_eq!(
        header("x-secret"),
        None,
        "a header named by Connection is hop-by-hop"
    );
    assert_eq!(header("x-drop-me"), None);

    // No rule matches /other: 404 NR.
    let (status, h, _) = weir.send("payment-svc", "/other", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(h["x-weir-flags"], "NR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_head_is_431_and_counted() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start(&lesson_config(&v1, &v2, 90, 10));
    let big = "x".repeat(100 * 1024);
    let result = try_http_request(
        "GET",
        &format!("{}/pay", weir.proxy_url()),
        Some("payment-svc"),
        &[("x-big", &big)],
        Bytes::new(),
    )
    .await;
    let (status, _, _) = result.expect("the proxy answers before closing");
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(v1.count() + v2.count(), 0);
    eventually(Duration::from_secs(5), "431 counted", || async {
        let text = weir.metrics().await;
        metric_sum(
            &text,
            "istio_requests_total",
            &[("response_code", "431"), ("response_flags", "DPE")],
        ) == 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_goes_away_is_counted_dc() {
    let v1 = Upstream::start_with(
        "v1",
        Behavior {
            hang: true,
            ..Behavior::default()
        },
    )
    .await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start(&all_on_v1(v1.port(), v2.port()));
    let proxy = weir.proxy;
    let client = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
        s.write_all(b"GET /pay HTTP/1.1\r\nhost: payment-svc\r\n\r\n")
            .await
            .unwrap();
        s
    });
    let stream = client.await.unwrap();
    eventually(Duration::from_secs(5), "the request reached v1", || async {
        v1.count() == 1
    })
    .await;
    drop(stream);
    eventually(Duration::from_secs(5), "DC counted", || async {
        let text = weir.metrics().await;
        metric_sum(
            &text,
            "istio_requests_total",
            &[("response_flags", "DC"), ("destination_version", "v1")],
        ) == 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_have_envoys_default_format_and_json_on_request() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let config = lesson_config(&v1, &v2, 100, 0);
    // [%START_TIME%] "%METHOD% %PATH% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS%
    // %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %UPSTREAM_SERVICE_TIME% "%XFF%" "%UA%"
    // "%REQUEST_ID%" "%AUTHORITY%" "%UPSTREAM_HOST%"
    let envoy = regex::Regex::new(
        r#"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "(\S+) (\S+) (HTTP/[0-9.]+)" (\d{3}) (\S+) (\d+) (\d+) (\d+) (\S+) "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)"$"#,
    )
    .unwrap();
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let log_arg = log.to_str().unwrap();
        let weir = Weir::start_with_args(
            &config,
            &["--access-log", log_arg, "--access-log-format", format],
        );
        let (status, _, _) = weir
            .send(
                "payment-svc",
                "/pay?x=1",
                &[("user-agent", "curl/8"), ("x-request-id", "rid-1")],
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = weir.send("nobody-home", "/", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let mut text = String::new();
        eventually(Duration::from_secs(5), "two access log lines", || {
            text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines = text.lines().count();
            async move { lines == 2 }
        })
        .await;
        let lines: Vec<&str> = text.lines().collect();
        if format == "json" {
            let ok: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
            assert_eq!(ok["path"], "/pay?x=1");
            assert_eq!(ok["response_code"], 200);
            assert_eq!(ok["bytes_sent"], 2, "the body `v1`");
            let nr: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
            assert_eq!(nr["response_flags"], "NR");
            continue;
        }
        let ok = envoy
            .captures(lines[0])
            .unwrap_or_else(|| panic!("{}", lines[0]));
        assert_eq!(&ok[1], "GET");
        assert_eq!(&ok[2], "/pay?x=1");
        assert_eq!(&ok[4], "200");
        assert_eq!(&ok[5], "-");
        assert_eq!(&ok[7], "2", "bytes sent: the body `v1`");
        assert_eq!(&ok[11], "curl/8");
        assert_eq!(&ok[12], "rid-1");
        assert_eq!(&ok[13], "payment-svc");
        let nr = envoy
            .captures(lines[1])
            .unwrap_or_else(|| panic!("{}", lines[1]));
        assert_eq!((&nr[4], &nr[5], &nr[13]), ("404", "NR", "nobody-home"));
    }
}
