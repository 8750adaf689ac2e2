//! The data path of `weir serve`: accept HTTP/1.1 and h2c on one port, route each request on
//! the table in force, forward it on a pooled keep-alive connection with both bodies
//! streamed, and count it under the destination's Istio labels.
//!
//! ```text
//! accept -> head -> table = live.load() -> table.decide() -> fault? -> mirrors
//!        -> pick endpoint -> forward (timeout, retries) -> response headers -> stream body
//!        -> count when the body is done
//! ```
//!
//! Every failure becomes a response with Envoy's meaning and flag (see [`ResponseFlags`]), is
//! counted, and is marked in the `x-weir-flags` response header.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderValue;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use weir_router::LiveTable;

use crate::metrics::Metrics;
use crate::server::{self, ServerOptions};

mod body;
mod clusters;
mod forward;
mod headers;
mod mirror;
mod pool;

use body::{Recorder, UpstreamBody};
use clusters::Clusters;
pub use weir_router::telemetry::ResponseFlags;

/// Settings of the data path. `workload` is required; everything else has a default.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// This sidecar's workload (`source_workload`).
    pub workload: String,
    /// Longest request head accepted, in bytes; larger is answered 431 (Envoy: 60 KiB).
    pub max_request_head: usize,
    /// Largest request body read into memory so that it can be retried or mirrored, in bytes.
    /// Larger bodies (and bodies of unknown length) are streamed: not retried, not mirrored.
    pub replay_buffer_limit: usize,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// How long an idle upstream connection stays in the pool.
    pub pool_idle_timeout: Duration,
    /// Mirrored copies in flight at most; more are dropped (and counted).
    pub max_mirrors_in_flight: usize,
    /// Timeout of a mirrored copy when its rule has none.
    pub mirror_timeout: Duration,
    /// Worker threads, each with its own single-threaded runtime accepting on the listener
    /// and its own idle upstream connections (as nginx's worker processes): a request never
    /// changes threads. 0 serves on the caller's runtime instead.
    pub workers: usize,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            workload: "weir".to_string(),
            max_request_head: 60 * 1024,
            replay_buffer_limit: 64 * 1024,
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(60),
            max_mirrors_in_flight: 256,
            mirror_timeout: Duration::from_secs(10),
            workers: 0,
        }
    }
}

/// The proxy: shared by every connection; [`Proxy::serve`] runs it on a listener.
pub struct Proxy {
    live: Arc<LiveTable>,
    metrics: Arc<Metrics>,
    options: ProxyOptions,
    /// HTTP/1.1 upstream connections (also WebSocket upgrades).
    h1: Client<HttpConnector, UpstreamBody>,
    /// HTTP/2 with prior knowledge, for gRPC arriving over h2c.
    h2: Client<HttpConnector, UpstreamBody>,
    clusters: Clusters,
    /// How weir's own HTTP/1.1 pool connects and keeps connections.
    pool: pool::PoolOptions,
    mirrors: Arc<Semaphore>,
    in_flight: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("options", &self.options)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// What the proxy knows of a downstream connection.
#[derive(Debug)]
struct Downstream {
    peer: SocketAddr,
    /// The client's IP as a header value, made once per connection for `x-forwarded-for`.
    peer_header: HeaderValue,
}

// === impl Proxy ===

impl Proxy {
    /// A proxy routing on `live`, counting into `metrics`.
    pub fn new(live: Arc<LiveTable>, metrics: Arc<Metrics>, options: ProxyOptions) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(options.connect_timeout));
        connector.enforce_http(true);
        let h1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(options.pool_idle_timeout)
            .build(connector.clone());
        let h2 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(options.pool_idle_timeout)
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(connector);
        Arc::new(Proxy {
            live,
            metrics,
            mirrors: Arc::new(Semaphore::new(options.max_mirrors_in_flight)),
            pool: pool::PoolOptions {
                connect_timeout: options.connect_timeout,
                idle_timeout: options.pool_idle_timeout,
                max_idle: 256,
            },
            options,
            h1,
            h2,
            clusters: Clusters::default(),
            in_flight: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Requests in progress: from the head read until the response body is sent.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Accepts on `listener` until `shutdown` resolves, then stops accepting and waits for
    /// in-flight requests/connections to finish (up to `drain`), then returns.
    ///
    /// With [`ProxyOptions::workers`] > 0 the listener is shared by that many worker threads,
    /// each running a single-threaded runtime (see `server::workers`).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
        drain: Duration,
    ) -> std::io::Result<()> {
        let metrics = Arc::clone(&self.metrics);
        let options = ServerOptions {
            max_request_head: Some(self.options.max_request_head),
            workers: self.options.workers,
            on_worker: Some(pool::set_worker),
            on_connection_error: Some(Arc::new(move |e| connection_error(&metrics, e))),
            ..ServerOptions::new("proxy", drain)
        };
        tracing::debug!(workload = %self.options.workload, "proxy serving");
        let new_service = move |peer: SocketAddr| {
            let downstream = Arc::new(Downstream {
                peer,
                peer_header: HeaderValue::from_str(&peer.ip().to_string())
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            });
            let proxy = Arc::clone(&self);
            hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                let downstream = downstream.clone();
                async move { Ok::<_, Infallible>(forward::handle(proxy, downstream, req).await) }
            })
        };
        server::serve(Arc::new(new_service), listener, shutdown, options).await
    }

    fn start(&self) -> Recorder {
        Recorder::start(
            self.metrics.unknown_series().clone(),
            self.in_flight.clone(),
        )
    }
}

/// Counts what a connection died of when it never reached the service: an oversized or
/// malformed request head (hyper answered it with 431 or 400).
fn connection_error(metrics: &Metrics, error: &(dyn std::error::Error + 'static)) {
    let Some(e) = error.downcast_ref::<hyper::Error>() else {
        tracing::debug!(error, "connection error");
        return;
    };
    let code = if e.is_parse_too_large() {
        431
    } else if e.is_parse() {
        400
    } else {
        tracing::debug!(error = %e, "connection error");
        return;
    };
    metrics
        .unknown_series()
        .record(code, ResponseFlags::DPE, false, Duration::ZERO);
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Empty, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::TcpListener;
    use weir_router::{ConfigSource, LiveTable, WeightChange};

    use super::{Proxy, ProxyOptions};
    use crate::metrics::Metrics;

    /// An upstream answering its name after `delay`.
    async fn upstream(name: &'static str, delay: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |_req: Request<hyper::body::Incoming>| async move {
                            tokio::time::sleep(delay).await;
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(name.as_bytes()),
                            )))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }

    fn config(v1: SocketAddr, v2: SocketAddr) -> LiveTable {
        let text = include_str!("../../../config/payment-svc.yaml")
            .replace("http: 18081", &format!("http: {}", v1.port()))
            .replace("http: 18082", &format!("http: {}", v2.port()));
        LiveTable::from_sources(&[ConfigSource::new("payment-svc.yaml", text)])
            .expect("valid")
            .0
    }

    async fn get(
        client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
        proxy: SocketAddr,
    ) -> (u16, Bytes) {
        let req = Request::get(format!("http://{proxy}/pay"))
            .header("host", "payment-svc")
            .body(Empty::new())
            .unwrap();
        let resp = client.request(req).await.expect("the proxy answers");
        let status = resp.status().as_u16();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn table_swaps_under_load_lose_no_request() {
        let v1 = upstream("v1", Duration::ZERO).await;
        let v2 = upstream("v2", Duration::ZERO).await;
        let live = Arc::new(config(v1, v2));
        let metrics = Arc::new(Metrics::new("test"));
        let proxy = Proxy::new(live.clone(), metrics, ProxyOptions::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(proxy.clone().serve(
            listener,
            async {
                let _ = stop_rx.await;
            },
            Duration::from_secs(5),
        ));
        let writer = {
            let live = live.clone();
            tokio::spawn(async move {
                for i in 0..1_000u32 {
                    let canary = if i % 2 == 0 { 50 } else { 10 };
                    let change = WeightChange {
                        virtual_service: "payment-svc".into(),
                        rule: Some("canary-split".into()),
                        weights: [("v1".to_string(), 100 - canary), ("v2".to_string(), canary)]
                            .into(),
                        force: true,
                        ..WeightChange::default()
                    };
                    live.set_weights(&change).expect("a valid change");
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
            })
        };
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut versions = std::collections::BTreeMap::new();
        let mut n = 0;
        while !writer.is_finished() || n < 500 {
            let (status, body) = get(&client, addr).await;
            assert_eq!(status, 200, "request {n} failed during table swaps");
            *versions.entry(body).or_insert(0) += 1;
            n += 1;
        }
        writer.await.unwrap();
        assert!(live.generation() > 1_000);
        assert_eq!(versions.len(), 2, "{versions:?}");
        stop_tx.send(()).unwrap();
        served.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_drains_requests_in_flight() {
        let slow = upstream("v1", Duration::from_millis(400)).await;
        let live = Arc::new(config(slow, slow));
        let proxy = Proxy::new(
            live,
            Arc::new(Metrics::new("test")),
            ProxyOptions::default(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(proxy.clone().serve(
            listener,
            async {
                let _ = stop_rx.await;
            },
            Duration::from_secs(5),
        ));
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let requests: Vec<_> = (0..5)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { get(&client, addr).await })
            })
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while proxy.in_flight() < 5 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "requests never arrived"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_tx.send(()).unwrap();
        for r in requests {
            assert_eq!(r.await.unwrap(), (200, Bytes::from_static(b"v1")));
        }
        tokio::time::timeout(Duration::from_secs(3), served)
            .await
            .expect("serve returns once drained")
            .unwrap()
            .unwrap();
        assert_eq!(proxy.in_flight(), 0);
        // No longer accepting.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
