//! Bodies on both sides of the proxy, streamed frame by frame (data and trailers), and the
//! [`Recorder`] that counts a request once its response has been sent or abandoned.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::clusters::EndpointLease;
use crate::metrics::ClusterSeries;
use weir_router::telemetry::ResponseFlags;

/// The body of a request sent upstream.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    /// No body.
    Empty,
    /// A body read into memory beforehand, so that it can be sent again (retries, mirrors).
    Full(Option<Bytes>),
    /// The downstream body, streamed as it arrives.
    Stream(Incoming),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            UpstreamBody::Stream(incoming) => Pin::new(incoming).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Full(data) => data.is_none(),
            UpstreamBody::Stream(incoming) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            UpstreamBody::Stream(incoming) => incoming.size_hint(),
        }
    }
}

/// The body of a response sent downstream. It carries the request's [`Recorder`]: the request
/// is counted when the body has been sent (or dropped), so the duration covers the whole
/// response, as Envoy's does.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    inner: UpstreamBody,
    recorder: Option<Recorder>,
}

impl ResponseBody {
    /// The upstream's body, streamed.
    pub fn upstream(body: Incoming, recorder: Recorder) -> Self {
        ResponseBody {
            inner: UpstreamBody::Stream(body),
            recorder: Some(recorder),
        }
    }

    /// A body made by the proxy (an error message).
    pub fn local(text: &'static str, recorder: Recorder) -> Self {
        ResponseBody {
            inner: if text.is_empty() {
                UpstreamBody::Empty
            } else {
                UpstreamBody::Full(Some(Bytes::from_static(text.as_bytes())))
            },
            recorder: Some(recorder),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
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

/// Counts one request in the metrics when dropped, with what it knows by then: a request
/// dropped before a response was chosen is a client that went away (`DC`, code 0).
#[derive(Debug)]
pub(crate) struct Recorder {
    pub series: Arc<ClusterSeries>,
    pub code: u16,
    pub flags: ResponseFlags,
    pub grpc: bool,
    start: Instant,
    in_flight: Arc<AtomicUsize>,
    /// The endpoint the response comes from: counted as busy until the body is done.
    pub lease: Option<EndpointLease>,
}

impl Recorder {
    /// Starts timing a request; counts it in flight until dropped.
    pub fn start(series: Arc<ClusterSeries>, in_flight: Arc<AtomicUsize>) -> Self {
        in_flight.fetch_add(1, Ordering::AcqRel);
        Recorder {
            series,
            code: 0,
            flags: ResponseFlags::DC,
            grpc: false,
            start: Instant::now(),
            in_flight,
            lease: None,
        }
    }

    /// Sets the outcome reported when the request ends.
    pub fn outcome(&mut self, code: http::StatusCode, flags: ResponseFlags) {
        self.code = code.as_u16();
        self.flags = flags;
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.series
            .record(self.code, self.flags, self.grpc, self.start.elapsed());
        self.lease.take();
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
