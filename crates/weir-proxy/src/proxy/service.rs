//! [`ProxyService`]: the whole data path as a `Service`, for a Rust program that runs its own
//! hyper, tower or axum server and wants its requests routed, forwarded, retried, mirrored and
//! counted exactly as the sidecar does it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;

use super::body::{BoxError, ResponseBody};
use super::{Downstream, Proxy, forward};

/// The data path for the requests of one downstream connection, made by
/// [`Proxy::service`]. It implements [`hyper::service::Service`] and
/// [`tower_service::Service`] for requests with any body of [`Bytes`] (hyper's `Incoming`,
/// axum's `Body`, `Full`, ...), and never fails: routing and upstream failures are
/// responses with Envoy's status and flag (`x-weir-flags`).
///
/// Cloning is two reference-count increments. The `Service` impls box the response future
/// (a `Service` must name its future type); [`ProxyService::handle`] returns it unboxed for
/// servers that take a closure, such as hyper's `service_fn`.
#[derive(Clone, Debug)]
pub struct ProxyService {
    proxy: Arc<Proxy>,
    downstream: Arc<Downstream>,
}

/// The response future of [`ProxyService`]'s `Service` impls.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

// === impl ProxyService ===

impl ProxyService {
    pub(super) fn new(proxy: Arc<Proxy>, downstream: Arc<Downstream>) -> Self {
        ProxyService { proxy, downstream }
    }

    /// Routes and forwards one request; the future owns what it needs (`'static`) and never
    /// fails. It is the pipeline's own future: wrapping it in another `async` block would keep
    /// the request twice and move the whole pipeline state once more per request.
    pub fn handle<B>(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static + use<B>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        forward::handle(Arc::clone(&self.proxy), Arc::clone(&self.downstream), req)
    }
}

impl<B> hyper::service::Service<Request<B>> for ProxyService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, req: Request<B>) -> Self::Future {
        Box::pin(self.handle(req))
    }
}

impl<B> tower_service::Service<Request<B>> for ProxyService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    /// Always ready: back-pressure is the upstream pools' and the semaphores'.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        hyper::service::Service::call(self, req)
    }
}
