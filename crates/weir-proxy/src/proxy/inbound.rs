//! The inbound side of a pod (`weir serve --inbound 0.0.0.0:15006`): connections the nat rules
//! of `weir init` redirected on their way to the app are forwarded to the app on loopback
//! (`127.0.0.1:<original port>`, from Istio's `127.0.0.6` so that the rules let them pass) and
//! counted with `reporter="destination"` and this pod's labels, the series Flagger's
//! built-in Istio queries select.
//!
//! ```text
//! accept -> SO_ORIGINAL_DST (none: refused) -> sniff -> HTTP: forward each request, count it
//!                                                     -> other: relay TCP to the app's port
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use weir_router::telemetry::ResponseFlags;

use super::body::{ResponseBody, UpstreamBody};
use super::failure::Failure;
use super::headers::is_grpc;
use super::options::ProxyOptions;
use super::plain;
use crate::access_log::{AccessLog, Logged, Pending};
use crate::capture::{INBOUND_PASSTHROUGH_V4, INBOUND_PASSTHROUGH_V6};
use crate::metrics::Metrics;
use crate::server::transparent::{self, SNIFF_WINDOW, Sniffed};
use crate::server::{self, ConnectionLimits, NewService, Prepared, ServerOptions};
use crate::telemetry::Recorder;

/// The inbound listener's data path: shared by every inbound connection.
pub struct Inbound {
    metrics: Arc<Metrics>,
    h1: Client<HttpConnector, UpstreamBody>,
    h2: Client<HttpConnector, UpstreamBody>,
    /// The source address towards the app (`127.0.0.6`), when it can be bound.
    source: Option<IpAddr>,
    connect_timeout: Duration,
    max_request_head: usize,
    limits: ConnectionLimits,
    release_memory: Option<fn()>,
    access_log: Option<Arc<AccessLog>>,
    in_flight: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("source", &self.source)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Inbound {
    /// An inbound data path counting into `metrics` (its `destination_*` labels are
    /// [`Metrics::identity`]'s), with the timeouts and limits of `options`.
    pub fn new(metrics: Arc<Metrics>, options: &ProxyOptions) -> Arc<Self> {
        let v4 = INBOUND_PASSTHROUGH_V4.parse::<Ipv4Addr>().ok();
        let v6 = INBOUND_PASSTHROUGH_V6.parse::<Ipv6Addr>().ok();
        let v4 = v4.filter(|ip| transparent::bindable(IpAddr::V4(*ip)).is_some());
        let v6 = v6.filter(|ip| transparent::bindable(IpAddr::V6(*ip)).is_some());
        if v4.is_none() {
            tracing::warn!(
                "cannot bind {INBOUND_PASSTHROUGH_V4} (is the loopback interface up?): inbound \
                 connections to the app come from the default address, which the capture rules \
                 may redirect again"
            );
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(options.connect_timeout));
        connector.enforce_http(true);
        match (v4, v6) {
            (Some(v4), Some(v6)) => connector.set_local_addresses(v4, v6),
            (Some(v4), None) => connector.set_local_address(Some(IpAddr::V4(v4))),
            (None, Some(v6)) => connector.set_local_address(Some(IpAddr::V6(v6))),
            (None, None) => {}
        }
        let client = |h2: bool| {
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(options.pool_idle_timeout)
                .timer(TokioTimer::new())
                .http2_only(h2)
                .build(connector.clone())
        };
        Arc::new(Inbound {
            metrics,
            h1: client(false),
            h2: client(true),
            source: v4.map(IpAddr::V4),
            connect_timeout: options.connect_timeout,
            max_request_head: options.max_request_head,
            limits: options.limits,
            release_memory: options.release_memory,
            access_log: options.access_log.clone(),
            in_flight: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Inbound requests in progress.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Accepts redirected connections on `listener` until `shutdown` resolves, then drains
    /// for up to `drain`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
        drain: Duration,
    ) -> std::io::Result<()> {
        let options = ServerOptions {
            max_request_head: Some(self.max_request_head),
            limits: self.limits,
            on_quiet: self.release_memory,
            half_close: false,
            ..ServerOptions::new("inbound", drain)
        };
        let listen = listener.local_addr()?;
        let accept = InboundListener {
            inbound: self,
            listen,
        };
        server::serve(Arc::new(accept), listener, shutdown, options).await
    }

    /// Forwards one request to the app at `app` and counts it.
    async fn handle(
        self: Arc<Self>,
        app: SocketAddr,
        req: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let series = Arc::clone(self.metrics.inbound_series());
        let mut rec = Recorder::start(series, Arc::clone(&self.in_flight));
        rec.grpc = is_grpc(req.headers());
        let stall = Some(self.limits.body_timeout).filter(|t| !t.is_zero());
        let clients = plain::Clients {
            h1: &self.h1,
            h2: &self.h2,
        };
        plain::forward(clients, app, req, rec, stall).await
    }
}

/// The app's address for a connection redirected on its way to `original`: loopback, same
/// port, same family.
fn app_addr(original: SocketAddr) -> SocketAddr {
    let ip = match original {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    SocketAddr::new(ip, original.port())
}

/// The inbound listener: refuses what was not redirected, sniffs, forwards.
struct InboundListener {
    inbound: Arc<Inbound>,
    listen: SocketAddr,
}

/// The service of one inbound HTTP connection.
#[derive(Clone)]
pub(crate) struct InboundService {
    inbound: Arc<Inbound>,
    /// The app's address; `None` for a connection that was not redirected.
    app: Option<SocketAddr>,
}

impl hyper::service::Service<Request<Incoming>> for InboundService {
    type Response = Response<Logged<ResponseBody>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let inbound = Arc::clone(&self.inbound);
        let app = self.app;
        let pending = inbound
            .access_log
            .as_ref()
            .map(|log| Pending::start(log, &req, app.map(|a| a.to_string())));
        Box::pin(async move {
            let resp = match app {
                Some(app) => inbound.handle(app, req).await,
                None => {
                    let series = Arc::clone(inbound.metrics.inbound_series());
                    let rec = Recorder::start(series, Arc::clone(&inbound.in_flight));
                    Failure::Connect.respond(rec, req.version(), ResponseFlags::NONE)
                }
            };
            Ok(Logged::wrap(pending, resp))
        })
    }
}

impl NewService for InboundListener {
    type Body = Logged<ResponseBody>;
    type Service = InboundService;

    fn new_service(&self, _peer: SocketAddr) -> InboundService {
        InboundService {
            inbound: Arc::clone(&self.inbound),
            app: None,
        }
    }

    fn prepare(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = Prepared<InboundService>> + Send {
        let inbound = Arc::clone(&self.inbound);
        let listen = self.listen;
        async move {
            let Some(original) = transparent::original_dst(&stream) else {
                tracing::warn!(
                    %peer,
                    "inbound: a connection that was not redirected by the capture rules is \
                     refused (the inbound listener forwards to the port the client asked for; \
                     connect to the app's port)"
                );
                return Prepared::Refused;
            };
            if original.port() == listen.port() {
                tracing::warn!(%peer, %original, "inbound: a connection to the inbound listener's own port is refused (loop)");
                return Prepared::Refused;
            }
            let app = app_addr(original);
            let http = !transparent::is_server_first(app.port())
                && transparent::sniff(&stream, SNIFF_WINDOW).await == Sniffed::Http;
            if http {
                Prepared::Http(
                    stream,
                    InboundService {
                        inbound,
                        app: Some(app),
                    },
                )
            } else {
                let source = inbound.source;
                let timeout = inbound.connect_timeout;
                Prepared::Taken(Box::pin(transparent::relay(stream, app, source, timeout)))
            }
        }
    }
}
