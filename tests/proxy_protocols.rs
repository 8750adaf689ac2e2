//! The proxy at the protocol level, end to end with the real binary: h2c downstream, gRPC-style
//! HTTP/2 trailers, a 100 MB body streamed both ways with bounded memory, a WebSocket upgrade.

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The lesson's config with the split at 100/0 on v1, v1 at `v1_port`.
fn on_v1(v1_port: u16) -> String {
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    render(
        &read(root().join("config/payment-svc.yaml")),
        v1_port,
        unused,
        90,
        10,
    )
    .replace("weight: 90 #", "weight: 100 #")
    .replace("weight: 10 #", "weight: 0 #")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_request_is_routed_by_authority() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start(&lesson_config(&v1, &v2, 90, 10));
    let stream = TcpStream::connect(weir.proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c prior knowledge");
    tokio::spawn(conn);
    for (canary, want) in [(false, None), (true, Some("v2"))] {
        let mut req = Request::get("http://payment-svc.production/pay")
            .version(http::Version::HTTP_2)
            .body(Empty::<Bytes>::new())
            .unwrap();
        if canary {
            req.headers_mut()
                .insert("x-canary", HeaderValue::from_static("true"));
        }
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let upstream = resp.headers()["x-upstream"].to_str().unwrap().to_string();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, upstream.as_bytes());
        if let Some(want) = want {
            assert_eq!(upstream, want);
        }
    }
    // The upstream saw an HTTP/1.1 request with the service's Host.
    let seen = v1.seen().into_iter().chain(v2.seen()).next().unwrap();
    assert_eq!(seen.headers["host"], "payment-svc");
}

/// A body: one data frame, then trailers.
struct WithTrailers {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for WithTrailers {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(d) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// An HTTP/2-only upstream answering like a gRPC server: a message, then `grpc-status` in
/// the trailers. It echoes the request's `te` in `x-te`.
async fn grpc_upstream() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let te = req.headers().get("te").cloned();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    trailers.insert("grpc-message", HeaderValue::from_static("ok"));
                    let mut resp = Response::new(WithTrailers {
                        data: Some(body),
                        trailers: Some(trailers),
                    });
                    resp.headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/grpc"));
                    if let Some(te) = te {
                        resp.headers_mut().insert("x-te", te);
                    }
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_h2c_keeps_trailers_and_is_counted_as_grpc() {
    let (port, _server) = grpc_upstream().await;
    let weir = Weir::start(&on_v1(port));
    let stream = TcpStream::connect(weir.proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let message = Bytes::from_static(b"\0\0\0\0\x05hello");
    let req = Request::post("http://payment-svc/pay.Payments/Charge")
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(message.clone()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["x-te"],
        "trailers",
        "te: trailers reaches a gRPC upstream"
    );
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers arrive through the proxy");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    assert_eq!(collected.to_bytes(), message);
    eventually(Duration::from_secs(5), "counted as grpc", || async {
        let text = weir.metrics().await;
        metric_sum(
            &text,
            "istio_requests_total",
            &[
                ("request_protocol", "grpc"),
                ("destination_version", "v1"),
                ("response_code", "200"),
            ],
        ) == 1.0
    })
    .await;
}

/// A request body of `remaining` bytes sent in 1 MiB frames that share one buffer.
struct Generated {
    chunk: Bytes,
    remaining: usize,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = this.remaining.min(this.chunk.len());
        this.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(this.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining as u64)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_of_100_mb_streams_both_ways_with_bounded_memory() {
    const SIZE: usize = 100 * 1024 * 1024;
    let echo = Upstream::start_with(
        "v1",
        Behavior {
            echo: true,
            ..Behavior::default()
        },
    )
    .await;
    let weir = Weir::start(&on_v1(echo.port()));
    let (status, _, _) = weir.send("payment-svc", "/warm-up", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let rss_before = proc_kib(weir.pid(), "VmRSS");

    let stream = TcpStream::connect(weir.proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/upload")
        .header("host", "payment-svc")
        .body(Generated {
            chunk: Bytes::from(vec![7u8; 1024 * 1024]),
            remaining: SIZE,
        })
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            assert!(data.iter().all(|b| *b == 7));
            received += data.len();
        }
    }
    assert_eq!(received, SIZE, "the echo came back whole");
    assert_eq!(
        echo.seen().last().unwrap().body_len,
        SIZE,
        "the upstream got the whole body"
    );
    let peak = proc_kib(weir.pid(), "VmHWM");
    let growth_mib = peak.saturating_sub(rss_before) / 1024;
    eprintln!(
        "100 MiB each way: proxy RSS before {rss_before} KiB, peak {peak} KiB, growth {growth_mib} MiB"
    );
    assert!(
        growth_mib < 20,
        "the proxy's peak memory grew by {growth_mib} MiB for a 100 MiB body (RSS before {rss_before} KiB, peak {peak} KiB)"
    );
}

/// A WebSocket-speaking upstream at the byte level: answers the handshake with 101, then
/// echoes every byte.
async fn websocket_upstream() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                assert!(
                    head.to_ascii_lowercase().contains("upgrade: websocket"),
                    "{head}"
                );
                stream
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
                          sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                    )
                    .await
                    .unwrap();
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (port, task)
}

/// Reads an HTTP head up to the blank line.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert_eq!(
            n,
            1,
            "connection closed in the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_frames_both_ways() {
    let (port, _server) = websocket_upstream().await;
    let weir = Weir::start(&on_v1(port));
    let mut stream = TcpStream::connect(weir.proxy).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: payment-svc\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
              sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut stream))
        .await
        .expect("handshake answered");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    // A masked text frame "hello" (RFC 6455 5.7), twice: both must come back.
    let frame: &[u8] = &[
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    for _ in 0..2 {
        stream.write_all(frame).await.unwrap();
        let mut back = vec![0u8; frame.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(back, frame);
    }
    eventually(Duration::from_secs(5), "101 counted", || async {
        let text = weir.metrics().await;
        metric_sum(&text, "istio_requests_total", &[("response_code", "101")]) == 1.0
    })
    .await;
}

/// The ServiceEntry port's protocol picks the upstream codec, as in Envoy: an HTTP/1.1 client
/// reaches an HTTP/2-only upstream when the port says `HTTP2`, and cannot when it says `HTTP`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_entry_port_protocol_picks_http2_upstream() {
    let (port, _server) = grpc_upstream().await;
    let h2 = on_v1(port).replacen("protocol: HTTP\n", "protocol: HTTP2\n", 1);
    assert!(h2.contains("protocol: HTTP2"));
    let weir = Weir::start(&h2);
    let (status, _, body) = weir.send("payment-svc", "/pay", &[]).await;
    assert_eq!(status, StatusCode::OK, "HTTP/1.1 in, HTTP/2 out");
    assert_eq!(&body[..], b"");

    let weir = Weir::start(&on_v1(port));
    let (status, _, _) = weir.send("payment-svc", "/pay", &[]).await;
    assert!(
        status.is_server_error(),
        "HTTP/1.1 to an h2-only upstream fails: {status}"
    );
}
