//! HTTP/1.0 keep-alive through the proxy, on a raw socket: a 1.0 request with
//! `Connection: keep-alive` keeps its connection open (as nginx and HAProxy do, and as
//! `ab -k` expects); a 1.0 request without it is answered and closed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_proxy::SidecarOptions;

const LESSON: &str = include_str!("../../../config/payment-svc.yaml");
/// Generous bound for anything a test waits on: a loaded 2-core machine is slow, not stuck.
const PATIENCE: Duration = Duration::from_secs(20);
const BODY: &str = "from-upstream";

/// An HTTP/1.1 upstream answering `BODY` with a content-length.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        BODY.as_bytes(),
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn sidecar(dir: &tempfile::TempDir) -> weir_proxy::RunningSidecar {
    let v1 = upstream().await;
    let config = LESSON
        .replace("http: 18081", &format!("http: {}", v1.port()))
        .replace("http: 18082", &format!("http: {}", v1.port()));
    let path = dir.path().join("payment-svc.yaml");
    std::fs::write(&path, config).unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    weir_proxy::start(SidecarOptions {
        config: vec![path],
        listen: any,
        admin: any,
        workload: "test".into(),
        drain_timeout: Duration::from_secs(5),
        reload_poll: None,
        workers: 0,
        ..SidecarOptions::default()
    })
    .await
    .expect("the lesson's config starts")
}

/// Reads one response (head and a content-length body) from `stream`: its head, lower-cased.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut byte))
            .await
            .expect("the response head in time")
            .unwrap();
        assert_eq!(n, 1, "closed before the end of the head: {buf:?}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap().to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .unwrap_or_else(|| panic!("a content-length in {head}"))
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    assert_eq!(body, BODY.as_bytes(), "{head}");
    head
}

/// Whether the proxy closed `stream` (EOF within the patience), or kept it open.
async fn closed(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut rest = [0u8; 1];
    match tokio::time::timeout(wait, stream.read(&mut rest)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!("{n} unexpected byte(s) after the response"),
        Err(_) => false,
    }
}

const REQUEST_10: &str = "GET /pay HTTP/1.0\r\nHost: payment-svc\r\n";

#[tokio::test]
async fn http_1_0_with_keep_alive_keeps_the_connection_for_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let running = sidecar(&dir).await;
    let mut stream = TcpStream::connect(running.proxy_addr).await.unwrap();
    for i in 0..3 {
        let request = format!("{REQUEST_10}Connection: keep-alive\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let head = read_response(&mut stream).await;
        assert!(head.starts_with("http/1.0 200"), "request {i}: {head}");
        assert!(
            head.contains("connection: keep-alive"),
            "request {i}: {head}"
        );
    }
    assert!(
        !closed(&mut stream, Duration::from_millis(300)).await,
        "the proxy closed a 1.0 keep-alive connection"
    );
}

#[tokio::test]
async fn http_1_0_without_keep_alive_is_closed_after_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let running = sidecar(&dir).await;
    let mut stream = TcpStream::connect(running.proxy_addr).await.unwrap();
    stream
        .write_all(format!("{REQUEST_10}\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(!head.contains("keep-alive"), "{head}");
    assert!(
        closed(&mut stream, PATIENCE).await,
        "a 1.0 connection without keep-alive stayed open"
    );
}
