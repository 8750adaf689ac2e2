//! The data path in process, through `ProxyService` as an embedder mounts it: no binary, no
//! proxy listener, real upstreams on port 0.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower_service::Service;
use weir_proxy::{Metrics, Proxy, ProxyOptions, ProxyService};
use weir_router::testing::ServiceFixture;

/// An upstream that answers `503` to the first `failures` requests, then echoes
/// `<method> <body length>`.
async fn upstream(failures: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let n = count.fetch_add(1, Ordering::SeqCst);
                async move {
                    let method = req.method().clone();
                    let body = req.into_body().collect().await?.to_bytes();
                    let mut resp =
                        Response::new(Full::new(Bytes::from(format!("{method} {}", body.len()))));
                    if n < failures {
                        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    }
                    Ok::<_, hyper::Error>(resp)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    (addr, seen)
}

fn service(upstream: SocketAddr, retries: &str) -> ProxyService {
    let live = ServiceFixture::new("ledger")
        .endpoints([upstream.port()], None)
        .rule(&format!(
            "{{retries: {retries}, route: [{{destination: {{host: ledger}}}}]}}"
        ))
        .live();
    let proxy = Proxy::new(
        Arc::new(live),
        Arc::new(Metrics::new("test")),
        ProxyOptions::default(),
    );
    proxy.service(SocketAddr::from(([127, 0, 0, 1], 40000)))
}

async fn text<B>(svc: &mut ProxyService, req: Request<B>) -> (StatusCode, String)
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let resp = svc.call(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A small body of known length is buffered, so the 503 is retried with the same body.
#[tokio::test]
async fn a_buffered_body_is_retried_through_the_service() {
    let (addr, seen) = upstream(1).await;
    let mut svc = service(addr, "{attempts: 2, retryOn: 5xx}");
    let req = Request::post("http://ledger/entries")
        .header("host", "ledger")
        .header("content-length", "5")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    assert_eq!(text(&mut svc, req).await, (StatusCode::OK, "POST 5".into()));
    assert_eq!(seen.load(Ordering::SeqCst), 2, "one retry");
}

/// A body of another type and unknown length streams (boxed once) and is sent once: the
/// 503 is the answer, with no retry.
#[tokio::test]
async fn a_streamed_body_of_any_type_reaches_the_upstream_once() {
    let (addr, seen) = upstream(1).await;
    let mut svc = service(addr, "{attempts: 2, retryOn: 5xx}");
    let chunks = futures_chunks(&[b"abc".as_slice(), b"defg"]);
    let req = Request::post("http://ledger/entries")
        .header("host", "ledger")
        .body(StreamBody::new(chunks))
        .unwrap();
    assert_eq!(
        text(&mut svc, req).await,
        (StatusCode::SERVICE_UNAVAILABLE, "POST 7".into())
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1, "a stream is not replayed");
    let req = Request::post("http://ledger/entries")
        .header("host", "ledger")
        .body(StreamBody::new(futures_chunks(&[b"x".as_slice(); 3])))
        .unwrap();
    assert_eq!(text(&mut svc, req).await, (StatusCode::OK, "POST 3".into()));
}

/// The service never fails: an unknown host is a 404 `NR` response whose body names the host
/// asked for and the hosts that are known (issue 9: "v2 gets 0%" starts with a wrong Host).
#[tokio::test]
async fn an_unknown_host_is_answered_404_nr() {
    let (addr, _) = upstream(0).await;
    let mut svc = service(addr, "{attempts: 0}");
    let req = Request::get("http://elsewhere/")
        .header("host", "elsewhere")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = svc.call(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["x-weir-flags"], "NR");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("\"elsewhere\""), "{body}");
    assert!(body.contains("known hosts: ledger"), "{body}");
}

/// A stream of data frames from byte strings.
fn futures_chunks(
    chunks: &[&'static [u8]],
) -> impl futures_core::Stream<Item = Result<http_body::Frame<Bytes>, Infallible>> + Send + 'static
{
    let frames: Vec<_> = chunks
        .iter()
        .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c))))
        .collect();
    Chunks(frames.into_iter())
}

struct Chunks(std::vec::IntoIter<Result<http_body::Frame<Bytes>, Infallible>>);

impl futures_core::Stream for Chunks {
    type Item = Result<http_body::Frame<Bytes>, Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}
