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

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderValue;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use weir_router::{Extension, LiveTable};

use crate::access_log;
use crate::metrics::Metrics;
use crate::server::{self, ServerOptions};

mod body;
mod clusters;
pub(crate) mod failure;
mod forward;
mod headers;
pub(crate) mod inbound;
mod mirror;
mod options;
mod outbound;
mod plain;
pub(crate) mod pool;
mod request_body;
mod service;
mod upstream;

use crate::telemetry::{self, Recorder};
use clusters::ClusterTable;
use upstream::Upstream;

pub use body::ResponseBody;
pub use inbound::Inbound;
pub use options::ProxyOptions;
pub use service::ProxyService;
pub use weir_router::telemetry::ResponseFlags;

/// The proxy: shared by every connection; [`Proxy::serve`] runs it on a listener.
pub struct Proxy {
    live: Arc<LiveTable>,
    /// This proxy's [`ClusterTable`] in every table `live` publishes.
    clusters: Extension<ClusterTable>,
    metrics: Arc<Metrics>,
    options: ProxyOptions,
    upstream: Upstream,
    mirrors: Arc<Semaphore>,
    in_flight: Arc<AtomicUsize>,
    /// The addresses of the VirtualService hosts, for captured requests to a ClusterIP.
    resolved: outbound::ResolvedHosts,
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
pub(crate) struct Downstream {
    peer: SocketAddr,
    /// Where the client meant to go, when the nat rules redirected the connection here
    /// (transparent); `None` for a client that connected to the listener itself.
    original_dst: Option<SocketAddr>,
    /// The client's IP as a header value, made once per connection for `x-forwarded-for`.
    peer_header: HeaderValue,
}

// === impl Proxy ===

impl Proxy {
    /// A proxy routing on `live`, counting into `metrics`. It registers its cluster table
    /// (parsed endpoints, load balancers, metric series) as an extension of `live`, so that
    /// every table published from now on carries it, built by the writer; dropping the proxy
    /// removes it.
    pub fn new(live: Arc<LiveTable>, metrics: Arc<Metrics>, options: ProxyOptions) -> Arc<Self> {
        let for_clusters = Arc::clone(&metrics);
        let clusters =
            live.extend(move |table, previous| ClusterTable::build(table, previous, &for_clusters));
        Arc::new(Proxy {
            live,
            clusters,
            metrics,
            mirrors: Arc::new(Semaphore::new(options.max_mirrors_in_flight)),
            upstream: Upstream::new(&options),
            options,
            in_flight: Arc::new(AtomicUsize::new(0)),
            resolved: outbound::ResolvedHosts::default(),
        })
    }

    /// The service answering the requests of one downstream connection from `peer`: mount
    /// it in any hyper or tower server.
    pub fn service(self: &Arc<Self>, peer: SocketAddr) -> ProxyService {
        ProxyService::new(Arc::clone(self), Arc::new(Downstream::new(peer, None)))
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
        let overloads = Arc::clone(&self.metrics);
        let options = ServerOptions {
            max_request_head: Some(self.options.max_request_head),
            limits: self.options.limits,
            on_overload: Some(Arc::new(move || overloads.record_overload())),
            workers: self.options.workers,
            on_worker: Some(pool::set_worker),
            on_quiet: self.options.release_memory,
            half_close: false,
            on_connection_error: Some(Arc::new(move |e| connection_error(&metrics, e))),
            ..ServerOptions::new("proxy", drain)
        };
        tracing::debug!(workload = %self.options.workload, "proxy serving");
        let listen = listener.local_addr()?;
        // One `ProxyService` per connection; its `handle` rather than its `Service` impl,
        // because hyper's `service_fn` keeps the response future unboxed, for the requests
        // hyper reads and for those weir's own HTTP/1.1 reader reads (no body). The access
        // log wraps it only when it is on.
        match self.options.access_log.clone() {
            None => {
                let outbound = outbound::OutboundListener {
                    proxy: self,
                    make: |proxy: ProxyService| {
                        hyper::service::service_fn(move |req| proxy.handle(req))
                    },
                    bodyless: |proxy: &ProxyService, req| proxy.handle(req),
                    listen,
                };
                server::serve(Arc::new(outbound), listener, shutdown, options).await
            }
            Some(log) => {
                let for_bodyless = Arc::clone(&log);
                let outbound = outbound::OutboundListener {
                    proxy: self,
                    make: move |proxy: ProxyService| {
                        let log = Arc::clone(&log);
                        hyper::service::service_fn(
                            move |req: http::Request<hyper::body::Incoming>| {
                                logged(&log, &proxy, req)
                            },
                        )
                    },
                    bodyless: move |proxy: &ProxyService, req| logged(&for_bodyless, proxy, req),
                    listen,
                };
                server::serve(Arc::new(outbound), listener, shutdown, options).await
            }
        }
    }

    /// Starts counting a request into `series` (the destination's; `None`: no destination).
    fn start(&self, series: Option<&Arc<telemetry::ClusterSeries>>) -> Recorder {
        let series = series.unwrap_or_else(|| self.metrics.unknown_series());
        Recorder::start(Arc::clone(series), Arc::clone(&self.in_flight))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.live.remove_extension(self.clusters);
    }
}

// === impl Downstream ===

impl Downstream {
    fn new(peer: SocketAddr, original_dst: Option<SocketAddr>) -> Self {
        Downstream {
            peer,
            original_dst,
            peer_header: HeaderValue::from_str(&peer.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        }
    }
}

/// `req` through the data path, its access log line written at the end of its response.
fn logged<B>(
    log: &Arc<access_log::AccessLog>,
    proxy: &ProxyService,
    req: http::Request<B>,
) -> impl Future<
    Output = Result<
        http::Response<access_log::Logged<body::ResponseBody>>,
        std::convert::Infallible,
    >,
>
+ Send
+ 'static
+ use<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<body::BoxError>,
{
    let pending = access_log::Pending::start(log, &req, None);
    let answer = proxy.handle(req);
    async move { Ok(pending.respond(answer.await?)) }
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
