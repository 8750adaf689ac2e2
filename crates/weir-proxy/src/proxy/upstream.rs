//! Sending a request to a picked endpoint. [`Upstream::send`] hides the choice between weir's
//! own HTTP/1.1 pool (the common case), hyper-util's HTTP/2 client and hyper-util's HTTP/1.1
//! client for upgrades, and the URI form each wants.
//!
//! The retry stage sees only the [`Send`] trait, so that its tests can answer from a fake
//! upstream without sockets.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::UpstreamBody;
use super::clusters::EndpointRuntime;
use super::failure::Failure;
use super::options::ProxyOptions;
use super::pool::{self, PooledBody};

/// How a request travels to its endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/1.1 on weir's own per-endpoint pool, origin-form.
    Pooled,
    /// HTTP/2 with prior knowledge (h2c), for HTTP2/GRPC ports and gRPC over h2.
    Http2,
    /// HTTP/1.1 that may switch protocols (WebSocket): hyper-util's client, which hands over
    /// the connection.
    Upgrade,
}

/// One try's request, before it is addressed to an endpoint.
#[derive(Debug)]
pub(crate) struct Outgoing<'a> {
    pub method: &'a Method,
    pub path: &'a PathAndQuery,
    pub headers: HeaderMap,
    pub body: UpstreamBody,
}

/// What the retry stage sends through: [`Bound`] in the proxy, a fake in tests.
pub(crate) trait Send {
    /// The response body.
    type Body;

    /// Sends one try to `endpoint`. `Err` when no response head came back.
    fn send(
        &self,
        endpoint: &EndpointRuntime,
        request: Outgoing<'_>,
    ) -> impl Future<Output = Result<Response<Self::Body>, Failure>> + std::marker::Send;
}

/// The upstream clients of a proxy.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// HTTP/1.1 for upgrades and mirrored copies.
    h1: Client<HttpConnector, UpstreamBody>,
    /// HTTP/2 with prior knowledge.
    h2: Client<HttpConnector, UpstreamBody>,
    /// How weir's own HTTP/1.1 pool connects and keeps connections.
    pool: pool::PoolOptions,
}

/// A request with a body on weir's pool (hyper's client connection), boxed: its future is
/// four times the size of a bodyless one's, and every try's state would carry it.
type PooledSend<'e> = Pin<
    Box<
        dyn Future<Output = Result<Response<PooledBody>, pool::SendError>> + std::marker::Send + 'e,
    >,
>;

pin_project_lite::pin_project! {
    /// A try in flight: without a body on weir's own client, with one on weir's pool through
    /// hyper, or on one of hyper-util's clients.
    #[project = SendingProj]
    pub(crate) enum Sending<'e, I> {
        Bodyless { #[pin] sent: I },
        Pooled { sent: PooledSend<'e> },
        Client { sent: ResponseFuture },
    }
}

impl<I> Future for Sending<'_, I>
where
    I: Future<Output = Result<Response<PooledBody>, pool::SendError>>,
{
    type Output = Result<Response<PooledBody>, Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let pooled = match self.project() {
            SendingProj::Bodyless { sent } => sent.poll(cx),
            SendingProj::Pooled { sent } => sent.as_mut().poll(cx),
            SendingProj::Client { sent } => {
                return Pin::new(sent)
                    .poll(cx)
                    .map(|r| r.map(|resp| resp.map(PooledBody::from)))
                    .map_err(Failure::classify);
            }
        };
        pooled.map_err(|e| match e {
            pool::SendError::Connect => Failure::Connect,
            pool::SendError::Reset => Failure::Reset,
            pool::SendError::Protocol => Failure::Protocol,
            pool::SendError::Http(e) => Failure::of_connection_error(&e),
        })
    }
}

/// The upstream with the protocol of one request: a [`Send`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bound<'u> {
    pub upstream: &'u Upstream,
    pub protocol: Protocol,
}

// === impl Upstream ===

impl Upstream {
    pub fn new(options: &ProxyOptions) -> Self {
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
        Upstream {
            h1,
            h2,
            pool: pool::PoolOptions {
                connect_timeout: options.connect_timeout,
                idle_timeout: options.pool_idle_timeout,
                max_idle: 1024,
            },
        }
    }

    /// Sends `request` to `endpoint` over `protocol`. The request is made here, before the
    /// returned future exists, so the future holds only what is in flight: a try's request is
    /// never stored twice in a future's state, nor moved with it.
    pub fn send<'e>(
        &self,
        protocol: Protocol,
        endpoint: &'e EndpointRuntime,
        request: Outgoing<'_>,
    ) -> Sending<'e, impl Future<Output = Result<Response<PooledBody>, pool::SendError>> + use<'e>>
    {
        if protocol == Protocol::Pooled && matches!(request.body, UpstreamBody::Empty) {
            // weir's own client: the head is written as it is encoded here.
            let head = pool::RequestHead::encode(request.method, request.path, &request.headers);
            return Sending::Bodyless {
                sent: pool::send_bodyless(
                    &endpoint.idle,
                    endpoint.authority.as_str(),
                    head,
                    self.pool,
                ),
            };
        }
        let mut req = Request::new(request.body);
        *req.method_mut() = request.method.clone();
        *req.headers_mut() = request.headers;
        match protocol {
            Protocol::Pooled => {
                // weir's pool sends origin-form on a connection to the endpoint.
                *req.uri_mut() = Uri::from(request.path.clone());
                Sending::Pooled {
                    sent: Box::pin(pool::send(
                        &endpoint.idle,
                        endpoint.authority.as_str(),
                        req,
                        self.pool,
                    )),
                }
            }
            Protocol::Http2 | Protocol::Upgrade => {
                // hyper-util's client connects to the authority of an absolute URI.
                *req.uri_mut() = endpoint_uri(&endpoint.authority, request.path);
                let client = if protocol == Protocol::Http2 {
                    *req.version_mut() = Version::HTTP_2;
                    &self.h2
                } else {
                    &self.h1
                };
                Sending::Client {
                    sent: client.request(req),
                }
            }
        }
    }

    /// The HTTP/1.1 client of mirrored copies (a copy runs in its own task).
    pub fn h1(&self) -> &Client<HttpConnector, UpstreamBody> {
        &self.h1
    }

    /// The HTTP/2 (prior knowledge) client, for passthrough of HTTP/2 requests.
    pub fn h2(&self) -> &Client<HttpConnector, UpstreamBody> {
        &self.h2
    }
}

impl Send for Bound<'_> {
    type Body = PooledBody;

    fn send(
        &self,
        endpoint: &EndpointRuntime,
        request: Outgoing<'_>,
    ) -> impl Future<Output = Result<Response<PooledBody>, Failure>> + std::marker::Send {
        self.upstream.send(self.protocol, endpoint, request)
    }
}

/// `http://<endpoint><path>`: hyper-util's client connects to the URI's authority.
pub(crate) fn endpoint_uri(authority: &http::uri::Authority, path: &PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(path.clone());
    Uri::from_parts(parts).expect("scheme, authority and path make a URI")
}
