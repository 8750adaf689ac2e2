//! The body of a response sent downstream, streamed frame by frame (data and trailers), with
//! the [`Recorder`] that counts a request once its response has been sent or abandoned. The
//! request side (`UpstreamBody`) is in `request_body`, a leaf the pool can use.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Either;

use super::pool::PooledBody;
pub(crate) use super::request_body::{BoxError, Stalled, UpstreamBody};
use crate::telemetry::Recorder;
use weir_router::telemetry::ResponseFlags;

/// The body of a response sent downstream. It carries the request's [`Recorder`]: the request
/// is counted when the body has been sent (or dropped), so the duration covers the whole
/// response, as Envoy's does.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Inner,
    recorder: Option<Recorder>,
}

/// The upstream's body (`Left`, giving its pooled connection back at its end), or the proxy's
/// own (`Right`).
type Inner = Either<PooledBody, UpstreamBody>;

impl ResponseBody {
    /// The upstream's body, streamed.
    pub(crate) fn upstream(body: impl Into<PooledBody>, recorder: Recorder) -> Self {
        ResponseBody {
            inner: Either::Left(body.into()),
            recorder: Some(recorder),
        }
    }

    /// A body made by the proxy (an error message).
    pub(crate) fn local_owned(text: String, recorder: Recorder) -> Self {
        ResponseBody {
            inner: Either::Right(UpstreamBody::Full(Some(Bytes::from(text)))),
            recorder: Some(recorder),
        }
    }

    pub(crate) fn local(text: &'static str, recorder: Recorder) -> Self {
        ResponseBody {
            inner: Either::Right(if text.is_empty() {
                UpstreamBody::Empty
            } else {
                UpstreamBody::Full(Some(Bytes::from_static(text.as_bytes())))
            }),
            recorder: Some(recorder),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                // Complete: count it now.
                this.recorder.take();
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(r) = this.recorder.as_mut() {
                    r.flags |= ResponseFlags::UC;
                }
                this.recorder.take();
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(mut r) = self.recorder.take()
            && !self.inner.is_end_stream()
        {
            // The client went away before the whole response was sent.
            r.flags |= ResponseFlags::DC;
        }
    }
}
