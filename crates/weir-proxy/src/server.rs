//! One accept loop for every listener of the sidecar: the proxy and the admin API.
//!
//! ```text
//! listener -> accept (TCP_NODELAY; back off when accept fails) -> new_service(peer)
//!          -> one task per connection: weir's own HTTP/1.1 reader first where the listener
//!             asks for it (requests without a body, see [`h1`]), hyper for the rest
//!             (bodies, HTTP/1.0, h2c, upgrades)
//! shutdown -> stop accepting -> every connection closes gracefully -> wait up to `drain`
//! ```
//!
//! What is served on a connection is the caller's: anything that makes a hyper service for a
//! peer ([`NewService`]; a closure `Fn(SocketAddr) -> S` is one). The proxy makes one that
//! forwards, the admin API one that answers from the sidecar's state.
//!
//! With [`ServerOptions::workers`] > 0 the listener is shared by that many threads, each with
//! its own single-threaded runtime (see [`workers`]); with 0 the loop runs on the caller's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};

mod accept;
mod h1;
mod h2;
pub(crate) mod limits;
pub(crate) mod transparent;
mod workers;

pub use limits::ConnectionLimits;

/// What an accepted connection becomes once its listener has looked at it
/// ([`NewService::prepare`]).
pub(crate) enum Prepared<S> {
    /// HTTP, served on the stream by this service.
    Http(TcpStream, S),
    /// Taken over by the listener (a plain TCP passthrough); runs to its end.
    Taken(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>),
    /// Refused: the stream is closed.
    Refused,
}

/// The error type hyper accepts from services and bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Called with what a connection died of (after hyper answered what it could).
pub(crate) type ConnectionErrorHook = Arc<dyn Fn(&(dyn std::error::Error + 'static)) + Send + Sync>;

/// Makes the hyper service that serves one accepted connection.
pub(crate) trait NewService: Send + Sync + 'static {
    /// The response body.
    type Body: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static;
    /// The per-connection service.
    type Service: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Self::Body>,
            Error: Into<BoxError>,
            Future: Send + 'static,
        > + Send
        + 'static;

    /// The service for a connection from `peer`.
    fn new_service(&self, peer: SocketAddr) -> Self::Service;

    /// Runs in the connection's task before anything is served: a listener that sees more
    /// than HTTP (a transparent one, which reads the original destination and sniffs the
    /// protocol) takes the connection over here. By default: HTTP for
    /// [`new_service`](NewService::new_service).
    fn prepare(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = Prepared<Self::Service>> + Send {
        std::future::ready(Prepared::Http(stream, self.new_service(peer)))
    }

    /// Whether weir's own HTTP/1.1 reader ([`h1`]) reads this listener's connections first,
    /// serving the requests without a body through [`call_bodyless`](NewService::call_bodyless)
    /// and handing everything else to hyper. By default: hyper reads everything.
    const OWN_H1: bool = false;

    /// Answers a request without a body read by weir's own reader on a connection of
    /// `service`. Called only when [`OWN_H1`](NewService::OWN_H1) is set.
    fn call_bodyless(
        &self,
        service: &Self::Service,
        req: Request<NoBody>,
    ) -> impl Future<Output = Result<Response<Self::Body>, Infallible>> + Send + 'static {
        let _ = (service, req);
        async { unreachable!("call_bodyless is called only on a listener with OWN_H1") }
    }
}

/// The body of a request read by weir's own HTTP/1.1 reader: it has none.
pub(crate) type NoBody = http_body_util::Empty<Bytes>;

impl<F, S, B> NewService for F
where
    F: Fn(SocketAddr) -> S + Send + Sync + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<B>,
            Error: Into<BoxError>,
            Future: Send + 'static,
        > + Send
        + 'static,
    B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
{
    type Body = B;
    type Service = S;

    fn new_service(&self, peer: SocketAddr) -> S {
        self(peer)
    }
}

/// How a listener is served.
#[derive(Clone)]
pub(crate) struct ServerOptions {
    /// Which listener, for the logs (`proxy`, `admin API`).
    pub name: &'static str,
    /// Longest request head accepted, in bytes; larger is answered 431. `None`: hyper's
    /// default.
    pub max_request_head: Option<usize>,
    /// Deadlines and the connection cap.
    pub limits: ConnectionLimits,
    /// Worker threads sharing the listener; 0 serves on the caller's runtime.
    pub workers: usize,
    /// How long open connections get to finish once the shutdown began.
    pub drain: Duration,
    /// Runs first on every worker thread, with its number.
    pub on_worker: Option<fn(usize)>,
    /// Told what a connection died of; `None` logs it at debug level.
    pub on_connection_error: Option<ConnectionErrorHook>,
    /// Told of each connection refused over the cap.
    pub on_overload: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Runs on the accepting thread [`QUIET_AFTER`](accept::QUIET_AFTER) after its last
    /// connection closed (at most that often while they keep closing): gives what the closed
    /// connections freed back to the system (see [`ProxyOptions::release_memory`](crate::ProxyOptions::release_memory)).
    pub on_quiet: Option<fn()>,
    /// Whether a client that shuts down its write side after a request still gets the
    /// answer (hyper's `half_close`). The admin API: yes, so that
    /// `printf 'POST /rollback ...' | nc` is answered, and a write is never cut off half way
    /// because its client half-closed. The proxy listeners: no, as Envoy and nginx (with
    /// `proxy_ignore_client_abort off`) treat a client's end of input as the client gone.
    pub half_close: bool,
}

impl ServerOptions {
    /// A listener named `name`, on the caller's runtime, with hyper's head size limit and
    /// the admin API's connection limits ([`ConnectionLimits::ADMIN`]).
    pub(crate) fn new(name: &'static str, drain: Duration) -> Self {
        ServerOptions {
            name,
            max_request_head: None,
            limits: ConnectionLimits::ADMIN,
            workers: 0,
            drain,
            on_worker: None,
            on_connection_error: None,
            on_overload: None,
            on_quiet: None,
            half_close: true,
        }
    }
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("name", &self.name)
            .field("max_request_head", &self.max_request_head)
            .field("limits", &self.limits)
            .field("workers", &self.workers)
            .field("drain", &self.drain)
            .finish_non_exhaustive()
    }
}

/// Serves `listener` with a service from `new` per connection until `shutdown` resolves, then
/// stops accepting and waits for open connections to finish (up to `options.drain`).
pub(crate) async fn serve<N: NewService>(
    new: Arc<N>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    options: ServerOptions,
) -> std::io::Result<()> {
    // One gate for the listener, shared by its workers.
    let gate = limits::Gate::new(options.limits.connection_cap());
    if options.workers == 0 {
        accept::serve(new, listener, shutdown, &options, gate).await
    } else {
        workers::serve(new, listener, shutdown, options, gate).await
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Empty, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    use super::*;

    /// A server whose every answer takes `delay`, counting the requests it started.
    async fn slow_server(
        workers: usize,
        delay: Duration,
    ) -> (
        SocketAddr,
        Arc<AtomicUsize>,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let started = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&started);
        let new_service = move |peer: SocketAddr| {
            let count = Arc::clone(&count);
            hyper::service::service_fn(move |_req| {
                count.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                        peer.ip().to_string(),
                    ))))
                }
            })
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let options = ServerOptions {
            workers,
            ..ServerOptions::new("test", Duration::from_secs(5))
        };
        let served = tokio::spawn(serve(
            Arc::new(new_service),
            listener,
            async {
                let _ = stop_rx.await;
            },
            options,
        ));
        (addr, started, stop_tx, served)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shutdown_drains_every_request_in_flight_on_the_runtime_and_on_workers() {
        for workers in [0, 2] {
            let (addr, started, stop, served) =
                slow_server(workers, Duration::from_millis(300)).await;
            let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
            let requests: Vec<_> = (0..4)
                .map(|_| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        let resp = client
                            .get(format!("http://{addr}/").parse().unwrap())
                            .await
                            .expect("answered");
                        let status = resp.status();
                        (status, resp.into_body().collect().await.unwrap().to_bytes())
                    })
                })
                .collect();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while started.load(Ordering::SeqCst) < 4 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "requests never arrived"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stop.send(()).unwrap();
            for r in requests {
                // The service saw the peer the accept loop passed it.
                assert_eq!(
                    r.await.unwrap(),
                    (http::StatusCode::OK, Bytes::from_static(b"127.0.0.1")),
                    "workers: {workers}"
                );
            }
            tokio::time::timeout(Duration::from_secs(5), served)
                .await
                .expect("serve returns once drained")
                .unwrap()
                .unwrap();
            assert!(
                tokio::net::TcpStream::connect(addr).await.is_err(),
                "workers: {workers}: still accepting"
            );
        }
    }
}
