//! The body of a request sent upstream (the client's, buffered or streamed, or an embedder's
//! of another type) and the stall timeout of a streamed one. A leaf: the pool sends it, and
//! `body` (the response side) builds on the pool.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;

/// The errors of bodies of any type.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a request sent upstream.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    /// No body.
    Empty,
    /// A body read into memory beforehand, so that it can be sent again (retries, mirrors).
    Full(Option<Bytes>),
    /// A hyper body (the client's request body, the upstream's response body), streamed as
    /// it arrives; a request body that stalls fails after its [`Stall`] timeout.
    Stream(Incoming, Stall),
    /// An embedder's request body of another type, streamed (boxed: only streamed bodies of
    /// types other than hyper's pay for it).
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl UpstreamBody {
    /// Streams `body`: hyper's `Incoming` as it is (failing with [`Stalled`] when nothing
    /// arrives for `stall`), any other type boxed.
    pub fn stream<B>(body: B, stall: Option<Duration>) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut slot = Some(body);
        if let Some(incoming) =
            (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<Incoming>>()
        {
            return incoming.take().map_or(UpstreamBody::Empty, |b| {
                UpstreamBody::Stream(b, Stall::after(stall))
            });
        }
        match slot {
            Some(body) => UpstreamBody::Boxed(body.map_err(Into::into).boxed_unsync()),
            None => UpstreamBody::Empty,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            UpstreamBody::Stream(incoming, stall) => {
                let polled = Pin::new(incoming)
                    .poll_frame(cx)
                    .map(|f| f.map(|f| f.map_err(Into::into)));
                stall.check(polled, cx)
            }
            UpstreamBody::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Full(data) => data.is_none(),
            UpstreamBody::Stream(incoming, _) => incoming.is_end_stream(),
            UpstreamBody::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            UpstreamBody::Stream(incoming, _) => incoming.size_hint(),
            UpstreamBody::Boxed(body) => body.size_hint(),
        }
    }
}

/// How long a streamed body may go without a frame (Envoy's `stream_idle_timeout`). The
/// timer is only made once the body has had to wait, so bodies that arrive with their head
/// cost nothing.
#[derive(Debug, Default)]
pub(crate) struct Stall {
    timeout: Option<Duration>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// A request body sent nothing for the body timeout: the client's fault (`BodyTimeout`).
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?}")]
pub(crate) struct Stalled(pub Duration);

impl Stall {
    fn after(timeout: Option<Duration>) -> Self {
        Stall {
            timeout,
            timer: None,
        }
    }

    /// Passes a poll through; a body pending past the timeout fails with [`Stalled`].
    fn check(
        &mut self,
        polled: Poll<Option<Result<Frame<Bytes>, BoxError>>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(timeout) = self.timeout else {
            return polled;
        };
        if polled.is_ready() {
            self.timer = None;
            return polled;
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timeout = None;
                Poll::Ready(Some(Err(Box::new(Stalled(timeout)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
