//! Graceful shutdown of `weir serve`: SIGTERM and SIGINT stop accepting, let in-flight
//! requests finish (bounded by --drain-timeout) and exit 0.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::*;

const WAIT: Duration = Duration::from_secs(20);

fn slow(delay: Duration) -> Behavior {
    Behavior {
        delay,
        ..Behavior::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish_then_exits_0() {
    let v1 = Upstream::start_with("v1", slow(Duration::from_millis(1500))).await;
    let v2 = Upstream::start_with("v2", slow(Duration::from_millis(1500))).await;
    let mut weir = Weir::start(&lesson_config(&v1, &v2, 90, 10));
    let proxy = weir.proxy_url();

    let requests: Vec<_> = (0..8)
        .map(|_| {
            let url = format!("{proxy}/pay");
            tokio::spawn(async move {
                try_http_request("GET", &url, Some("payment-svc"), &[], Bytes::new()).await
            })
        })
        .collect();
    eventually(WAIT, "8 requests at the slow upstreams", || async {
        v1.count() + v2.count() == 8
    })
    .await;

    weir.signal("TERM");
    let admin = weir.admin_url();
    eventually(WAIT, "/readyz reports the drain", || async {
        matches!(
            try_http_request("GET", &format!("{admin}/readyz"), None, &[], Bytes::new()).await,
            Ok((StatusCode::SERVICE_UNAVAILABLE, _, _))
        )
    })
    .await;
    // New connections are no longer accepted.
    let addr = weir.proxy;
    eventually(WAIT, "the listener is closed", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;

    for request in requests {
        let (status, headers, _) = request.await.unwrap().expect("an in-flight request failed");
        assert_eq!(status, StatusCode::OK);
        assert!(headers.contains_key("x-upstream"));
    }
    let code = tokio::task::spawn_blocking(move || weir.wait_exit(WAIT))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_bounds_the_wait_for_a_hanging_upstream() {
    let hang = Behavior {
        hang: true,
        ..Behavior::default()
    };
    let v1 = Upstream::start_with("v1", hang.clone()).await;
    let v2 = Upstream::start_with("v2", hang).await;
    let mut weir = Weir::start_with_args(
        &lesson_config(&v1, &v2, 90, 10),
        &["--drain-timeout", "300ms"],
    );
    let url = format!("{}/pay", weir.proxy_url());
    let request = tokio::spawn(async move {
        try_http_request("GET", &url, Some("payment-svc"), &[], Bytes::new()).await
    });
    eventually(WAIT, "the request at the hanging upstream", || async {
        v1.count() + v2.count() == 1
    })
    .await;

    let started = Instant::now();
    weir.signal("TERM");
    let code = tokio::task::block_in_place(|| weir.wait_exit(WAIT));
    assert_eq!(code, Some(0), "stderr:\n{}", weir.stderr());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exit took {:?}",
        started.elapsed()
    );
    // The request that could not finish was cut off, not answered.
    assert!(request.await.unwrap().is_err());
    assert!(weir.stderr().contains("drain"), "{}", weir.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_on_an_idle_sidecar_exits_0() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let mut weir = Weir::start(&lesson_config(&v1, &v2, 90, 10));
    let (status, _, _) = weir.send("payment-svc", "/pay", &[]).await;
    assert_eq!(status, StatusCode::OK);
    weir.signal("INT");
    let code = tokio::task::block_in_place(|| weir.wait_exit(WAIT));
    assert_eq!(code, Some(0), "stderr:\n{}", weir.stderr());
}
