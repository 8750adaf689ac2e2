//! Hostile clients against the real `weir serve` binary: a client's own faults (bodies that do
//! not decode, uploads abandoned half way) are the client's, never a failure of the destination
//! that could roll a healthy canary back.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client faults the issue found counted as 503 `UC` of v1/v2: bodies that fail to decode
/// and an upload abandoned beyond the 64 KiB replay buffer. Each is a raw request, `None`
/// where the client goes away instead of reading an answer.
fn malformed_requests() -> Vec<(&'static str, Vec<u8>, bool)> {
    let head = "POST /pay HTTP/1.1\r\nhost: payment-svc\r\ntransfer-encoding: chunked\r\n\r\n";
    let chunked = |body: &[u8]| [head.as_bytes(), body].concat();
    let mut long_ext = b"5;".to_vec();
    long_ext.extend(std::iter::repeat_n(b'a', 100 * 1024));
    long_ext.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
    let mut abandoned =
        b"POST /pay HTTP/1.1\r\nhost: payment-svc\r\ncontent-length: 300000\r\n\r\n".to_vec();
    abandoned.extend(std::iter::repeat_n(b'x', 100 * 1024));
    vec![
        ("bad chunk size", chunked(b"zz\r\nhello\r\n0\r\n\r\n"), true),
        (
            "overflowing chunk size",
            chunked(b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            true,
        ),
        (
            "bare LF in a chunk line",
            chunked(b"5\nhello\r\n0\r\n\r\n"),
            true,
        ),
        ("100 KB chunk extension", chunked(&long_ext), true),
        ("upload abandoned after 100 KiB", abandoned, false),
    ]
}

/// Sends one raw request; with `answer`, reads the answer's status line (and flags header).
async fn send_raw(addr: std::net::SocketAddr, bytes: &[u8], answer: bool) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    // The proxy may answer and close before it has read everything: ignore write errors.
    let _ = s.write_all(bytes).await;
    if !answer {
        return None;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

const CANARY: &str = r#"apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: payment-svc, namespace: production}
spec:
  analysis:
    interval: 2s
    threshold: 1
    stepWeights: [30, 60]
    metrics:
    - {name: request-success-rate, thresholdRange: {min: 99}, interval: 2s}
  weir:
    rule: canary-split
    destinationService: payment-svc
    minRequests: 10
    fastGuard: {period: 1s, window: 2s}
"#;

/// A healthy in-process canary under a steady stream of malformed-body requests (about 10% of
/// the traffic, no credentials needed) is promoted; the malformed requests are answered 400
/// `DPE` (or the client is gone, `DC`), and no destination has a 5xx on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_do_not_roll_back_a_healthy_canary() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let work = tempfile::tempdir().unwrap();
    let spec = work.path().join("canary.yaml");
    std::fs::write(&spec, CANARY).unwrap();
    let report_dir = work.path().join("report");
    let weir = Weir::start_with_args(
        &lesson_config(&v1, &v2, 100, 0),
        &[
            "--canary",
            spec.to_str().unwrap(),
            "--report",
            report_dir.to_str().unwrap(),
        ],
    );
    let _traffic = SteadyTraffic::start(&[weir.proxy_url()], 2, 0, Duration::from_millis(10));
    let addr = weir.proxy;
    let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = answers.clone();
    let poison = tokio::spawn(async move {
        let shapes = malformed_requests();
        for i in 0.. {
            let (name, bytes, answer) = &shapes[i % shapes.len()];
            if let Some(text) = send_raw(addr, bytes, *answer).await {
                keep.lock().unwrap().push((*name, text));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    eventually(
        Duration::from_secs(90),
        "the in-process canary writes its report",
        || async { report_dir.join("report.json").exists() },
    )
    .await;
    poison.abort();
    let report: serde_json::Value =
        serde_json::from_str(&read(report_dir.join("report.json"))).unwrap();
    assert_eq!(
        report["decision"],
        "promoted",
        "{}\n{}",
        report["reason"],
        weir.stderr()
    );

    let answers = answers.lock().unwrap().clone();
    assert!(answers.len() >= 20, "{} malformed requests", answers.len());
    for (name, text) in &answers {
        let status = text.lines().next().unwrap_or("");
        assert!(
            status.is_empty() || status.starts_with("HTTP/1.1 400"),
            "{name}: {status}"
        );
        if status.starts_with("HTTP/1.1 400") && text.contains("x-weir-flags") {
            assert!(
                text.contains("x-weir-flags: DPE") || text.contains("x-weir-flags: DC"),
                "{name}: {text}"
            );
        }
    }
    let text = weir.metrics().await;
    let server_errors: f64 = metric_samples(&text, "istio_requests_total")
        .into_iter()
        .filter(|(l, _)| l.get("response_code").is_some_and(|c| c.starts_with('5')))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(server_errors, 0.0, "{text}");
    let client_faults: f64 = ["DPE", "DC"]
        .iter()
        .map(|f| metric_sum(&text, "istio_requests_total", &[("response_flags", f)]))
        .sum();
    assert!(client_faults >= 10.0, "{text}");
}

/// Reads whatever a connection has within `wait`: `Some(bytes)` once the peer closed it (the
/// bytes it sent first), `None` while it stays open and silent.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// With 1,024 file descriptors (a real limit, set with `prlimit`), 1,100 connections that
/// send nothing cannot make weir unreachable: the loopback admin API answers while they are
/// held, connections over the cap are answered 503 and counted, and the held ones are closed
/// at the head timeout, after which the proxy answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_under_a_1024_fd_limit_never_make_weir_unreachable() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, lesson_config(&v1, &v2, 100, 0)).unwrap();
    let weir = Weir::spawn_under(
        &["prlimit", "--nofile=1024:1024"],
        dir,
        config_path,
        &["--head-timeout", "4s"],
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let attack = tokio::time::Instant::now();
    let mut held = Vec::new();
    for _ in 0..1100 {
        if let Ok(s) = TcpStream::connect(weir.proxy).await {
            held.push(s);
        }
    }
    assert!(held.len() >= 1000, "{} connections", held.len());

    // The admin API answers at once: while the proxy still holds silent connections.
    let text = weir.metrics().await;
    let mut open_after_admin = 0;
    // The first ones were accepted (under the cap); the last ones are the refused.
    for s in held.iter_mut().take(50) {
        if closed_within(s, Duration::from_millis(1)).await.is_none() {
            open_after_admin += 1;
        }
    }
    assert!(
        open_after_admin > 0,
        "every silent connection was already closed"
    );
    assert!(text.contains("weir_downstream_cx_overflow"), "{text}");
    // The connections over the cap are refused as the proxy accepts them from the backlog.
    eventually(
        Duration::from_secs(10),
        "100 connections over the cap counted",
        || async {
            metric_sum(
                &weir.metrics().await,
                "weir_downstream_cx_overflow_total",
                &[],
            ) >= 100.0
        },
    )
    .await;

    // Over the cap: a 503 written and closed, at once.
    let mut refused = 0;
    for s in held.iter_mut().rev().take(100) {
        if let Some(bytes) = closed_within(s, Duration::from_millis(200)).await {
            let text = String::from_utf8_lossy(&bytes);
            assert!(text.starts_with("HTTP/1.1 503"), "{text}");
            assert!(text.contains("x-weir-flags: OM"), "{text}");
            refused += 1;
        }
    }
    assert!(refused > 0, "no connection over the cap was refused");

    // The held ones are closed at the head timeout; then the proxy answers.
    for s in held.iter_mut().take(200) {
        let closed = closed_within(s, Duration::from_secs(15)).await;
        assert!(
            closed.is_some(),
            "a silent connection outlived the head timeout"
        );
    }
    assert!(
        attack.elapsed() >= Duration::from_millis(3900),
        "closed before the head timeout: {:?}",
        attack.elapsed()
    );
    eventually(Duration::from_secs(15), "the proxy answers 200", || async {
        matches!(
            try_http_request(
                "GET",
                &format!("{}/pay", weir.proxy_url()),
                Some("payment-svc"),
                &[],
                bytes::Bytes::new()
            )
            .await,
            Ok((http::StatusCode::OK, _, _))
        )
    })
    .await;
}

/// The spellings the issue found slipping past a `prefix: /admin` rule are normalised before
/// matching and forwarded normalised; two Host headers, or Host and an absolute-form
/// authority that differ, are answered 400 `DPE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_spellings_are_normalised_and_ambiguous_hosts_refused() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    // An admin rule in front of the lesson's: `/admin` goes to v2 only.
    let config = lesson_config(&v1, &v2, 100, 0).replacen(
        "  http:\n",
        "  http:\n  - name: admin\n    match:\n    - uri:\n        prefix: /admin\n    route:\n    - destination:\n        host: payment-svc\n        subset: v2\n",
        1,
    );
    let weir = Weir::start(&config);
    for path in [
        "/x/../admin/x",
        "/./admin/x",
        "/%61dmin/x",
        "/admin/./x",
        "/a/b/%2E%2E/../admin/x",
    ] {
        let raw = format!("GET {path} HTTP/1.1\r\nhost: payment-svc\r\nconnection: close\r\n\r\n");
        let answer = send_raw(weir.proxy, raw.as_bytes(), true).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        assert!(
            answer.contains("x-upstream: v2"),
            "{path} missed the /admin rule: {answer}"
        );
    }
    let seen: Vec<String> = v2.seen().into_iter().map(|s| s.uri).collect();
    assert!(
        !seen.is_empty() && seen.iter().all(|u| u == "/admin/x"),
        "forwarded as {seen:?}"
    );

    for (what, raw) in [
        (
            "two Host headers",
            "GET /pay HTTP/1.1\r\nhost: payment-svc\r\nhost: other\r\nconnection: close\r\n\r\n",
        ),
        (
            "Host and authority differ",
            "GET http://payment-svc/pay HTTP/1.1\r\nhost: other\r\nconnection: close\r\n\r\n",
        ),
        (
            "encoded NUL",
            "GET /a/%00/b HTTP/1.1\r\nhost: payment-svc\r\nconnection: close\r\n\r\n",
        ),
    ] {
        let answer = send_raw(weir.proxy, raw.as_bytes(), true).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
        assert!(answer.contains("x-weir-flags: DPE"), "{what}: {answer}");
    }
    assert_eq!(v1.count(), 0, "nothing ambiguous reached an upstream");
}

/// A token an `Authorization` header cannot carry is refused at start, naming the fix.
#[test]
fn a_non_ascii_admin_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, read(root().join("config/payment-svc.yaml"))).unwrap();
    let err = match Weir::spawn(dir, config_path, &["--admin-token", "sécret"]) {
        Ok(_) => panic!("started with a non-ASCII admin token"),
        Err(e) => e,
    };
    assert!(err.contains("visible ASCII"), "{err}");
}

/// Request-smuggling shapes against weir with a raw upstream that records every byte: each
/// hides `GET /smuggled` behind an ambiguous framing. weir either refuses the request (400)
/// or forwards one unambiguous request; the upstream never parses `/smuggled`, and never gets
/// both framings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http1_shapes_never_smuggle_a_request_upstream() {
    let raw = RawUpstream::start().await;
    let weir = Weir::start(&raw.lesson_config());
    let smuggled = "GET /smuggled HTTP/1.1\r\nhost: payment-svc\r\n\r\n";
    let chunk = |te: &str| {
        format!("POST /pay HTTP/1.1\r\nhost: payment-svc\r\n{te}\r\n\r\n0\r\n\r\n{smuggled}")
    };
    let shapes: Vec<(&str, String)> = vec![
        (
            "CL and TE",
            format!(
                "POST /pay HTTP/1.1\r\nhost: payment-svc\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE and CL",
            format!(
                "POST /pay HTTP/1.1\r\nhost: payment-svc\r\ntransfer-encoding: chunked\r\ncontent-length: 60\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE with a space before the colon",
            chunk("transfer-encoding : chunked"),
        ),
        (
            "TE chunked, identity",
            chunk("transfer-encoding: chunked, identity"),
        ),
        (
            "TE xchunked",
            chunk("transfer-encoding: xchunked\r\ncontent-length: 5"),
        ),
        ("TE with a tab", chunk("transfer-encoding:\tchunked")),
        (
            "two TE headers",
            chunk("transfer-encoding: identity\r\ntransfer-encoding: chunked"),
        ),
        (
            "two content-lengths",
            format!(
                "POST /pay HTTP/1.1\r\nhost: payment-svc\r\ncontent-length: 0\r\ncontent-length: 44\r\n\r\n{smuggled}"
            ),
        ),
        (
            "content-length with a sign",
            format!(
                "POST /pay HTTP/1.1\r\nhost: payment-svc\r\ncontent-length: +44\r\n\r\n{smuggled}"
            ),
        ),
        (
            "obs-fold",
            format!(
                "POST /pay HTTP/1.1\r\nhost: payment-svc\r\ntransfer-encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "bare LF line ends",
            format!(
                "POST /pay HTTP/1.1\nhost: payment-svc\ntransfer-encoding: chunked\n\n0\n\n{smuggled}"
            ),
        ),
        (
            "NUL in a header",
            format!(
                "POST /pay HTTP/1.1\r\nhost: payment-svc\r\nx-a: b\0c\r\ncontent-length: 44\r\n\r\n{smuggled}"
            ),
        ),
        (
            "chunk size with a hidden request",
            format!(
                "POST /pay HTTP/1.1\r\nhost: payment-svc\r\ntransfer-encoding: chunked\r\n\r\n2c;{smuggled}\r\n0\r\n\r\n"
            ),
        ),
    ];
    for (name, raw_request) in &shapes {
        let before = raw.paths.lock().unwrap().len();
        let answer = send_raw(weir.proxy, raw_request.as_bytes(), true)
            .await
            .unwrap_or_default();
        let status = answer.lines().next().unwrap_or("");
        assert!(
            status.is_empty()
                || status.starts_with("HTTP/1.1 200")
                || status.starts_with("HTTP/1.1 400")
                || status.starts_with("HTTP/1.1 404"),
            "{name}: {status}"
        );
        assert!(
            !answer.contains("HTTP/1.1 5"),
            "{name}: a 5xx for the client's fault: {answer}"
        );
        // Every request the upstream parsed is one weir parsed too and answered to the client
        // (a pipelined `GET /smuggled` after an unambiguous body is a request, not smuggled).
        let parsed = raw.paths.lock().unwrap()[before..].to_vec();
        let answered = answer.matches("x-upstream: raw").count();
        assert_eq!(
            parsed.len(),
            answered,
            "{name}: the upstream parsed {parsed:?}, the client got {answered} upstream answers:\n{answer}"
        );
    }
    let paths = raw.paths.lock().unwrap().clone();
    let received = raw.received.lock().unwrap().clone();
    assert!(
        !paths.iter().any(|p| p.starts_with("BOTH FRAMINGS")),
        "{paths:?}\n{}",
        String::from_utf8_lossy(&received)
    );
    assert!(!received.contains(&0), "a NUL byte was forwarded");
    assert!(!paths.is_empty(), "nothing reached the upstream at all");
}

/// h2c connections that never finish their preface, or open and then go quiet, are closed at
/// the head timeout, not held forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_and_idle_h2c_connections_are_closed_at_the_head_timeout() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start_with_args(&lesson_config(&v1, &v2, 100, 0), &["--head-timeout", "1s"]);
    let started = tokio::time::Instant::now();
    let mut partial = TcpStream::connect(weir.proxy).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut preface_only = TcpStream::connect(weir.proxy).await.unwrap();
    preface_only
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut half_head = TcpStream::connect(weir.proxy).await.unwrap();
    half_head
        .write_all(b"GET /pay HTTP/1.1\r\nhost: pay")
        .await
        .unwrap();
    for (what, s) in [
        ("partial preface", &mut partial),
        ("preface and SETTINGS, no stream", &mut preface_only),
        ("half an HTTP/1.1 head", &mut half_head),
    ] {
        assert!(
            closed_within(s, Duration::from_secs(10)).await.is_some(),
            "{what}: still open after 10 s"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the head timeout"
    );
}

/// SIGTERM closes connections with no request in flight at once (silent, half a head, an idle
/// keep-alive): the drain does not wait its 30 s for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_connections_without_a_request_at_once() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let mut weir = Weir::start_with_args(
        &lesson_config(&v1, &v2, 100, 0),
        &["--drain-timeout", "30s"],
    );
    let _silent = TcpStream::connect(weir.proxy).await.unwrap();
    let mut half = TcpStream::connect(weir.proxy).await.unwrap();
    half.write_all(b"GET /pay HTTP/1.1\r\nhost: pay")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(weir.proxy).await.unwrap();
    idle.write_all(b"GET /pay HTTP/1.1\r\nhost: payment-svc\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    weir.signal("TERM");
    let code = tokio::task::spawn_blocking(move || weir.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(
        code,
        Some(0),
        "the drain waited for connections without a request"
    );
}

/// A burst of connections costs memory while they are open; once they have closed, an idle
/// sidecar gives it back (mimalloc keeps freed pages until its next allocation work purges
/// them, and an idle process does none: before `release_memory`, RSS stayed at the burst's
/// peak, 109 MiB after 5,000 connections in `scripts/rss_burst.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_of_a_connection_burst_is_given_back_once_it_closed() {
    const CONNECTIONS: usize = 600;
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start_with_args(&lesson_config(&v1, &v2, 90, 10), &["--workers", "1"]);
    let request = b"GET /pay HTTP/1.1\r\nhost: payment-svc\r\n\r\n";
    // Warm: the pools, the metric series, the runtime's first allocations.
    for _ in 0..20 {
        let answer = send_raw(
            weir.proxy,
            b"GET /pay HTTP/1.1\r\nhost: payment-svc\r\nconnection: close\r\n\r\n",
            true,
        )
        .await;
        assert!(answer.unwrap().starts_with("HTTP/1.1 200"));
    }
    let base = proc_kib(weir.pid(), "VmRSS");
    let mut open = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut s = TcpStream::connect(weir.proxy).await.unwrap();
        s.write_all(request).await.unwrap();
        // The whole answer (a small body): the connection is idle and kept alive after it.
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(2).any(|w| w == b"v1" || w == b"v2") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before its answer: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        open.push(s);
    }
    let peak = proc_kib(weir.pid(), "VmRSS");
    let grown = peak.saturating_sub(base);
    assert!(
        grown >= 4 * 1024,
        "{CONNECTIONS} idle keep-alives grew RSS by {grown} KiB only (from {base}): the test would prove nothing"
    );
    drop(open);
    // Back to within a quarter of the growth, with nothing else happening.
    let wanted = base + grown / 4;
    let mut last = peak;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        last = proc_kib(weir.pid(), "VmRSS");
        if last <= wanted {
            return;
        }
    }
    panic!(
        "RSS {base} KiB before {CONNECTIONS} connections, {peak} KiB with them open, still {last} KiB 15 s after they closed (wanted <= {wanted})"
    );
}
