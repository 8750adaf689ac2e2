//! The request body before forwarding: read into memory when it may be sent more than once
//! (retries, mirrors) and is small and of known length; otherwise streamed, once.

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use std::time::Duration;

use tokio::time::Instant;

use super::super::body::{BoxError, UpstreamBody};
use super::super::failure::Failure;

/// The request body as the proxy holds it before forwarding.
#[derive(Debug)]
pub(crate) enum Payload {
    /// No body.
    Empty,
    /// Read into memory: can be sent again.
    Buffered(Bytes),
    /// Streamed once.
    Stream(UpstreamBody),
}

/// When to read a body into memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Replay {
    /// Whether anything would send it twice (a retry policy, a mirror).
    pub wanted: bool,
    /// Largest body read into memory, in bytes.
    pub limit: usize,
    /// The route deadline: a body still arriving then is `BodyTimeout`.
    pub deadline: Option<Instant>,
    /// How long the body may send nothing (streamed), or take in all (read into memory)
    /// before it is `BodyTimeout`; `None`: no bound.
    pub stall: Option<Duration>,
}

/// Reads or wraps the body. An upgrade's body always streams (it is the tunnel's).
pub(crate) async fn prepare<B>(
    body: B,
    headers: &HeaderMap,
    upgrade: bool,
    replay: Replay,
) -> Result<Payload, Failure>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if body.is_end_stream() {
        return Ok(Payload::Empty);
    }
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= replay.limit as u64);
    if upgrade || !replay.wanted || !small {
        return Ok(Payload::Stream(UpstreamBody::stream(body, replay.stall)));
    }
    let collect = Limited::new(body, replay.limit).collect();
    let stall_end = replay.stall.map(|s| Instant::now() + s);
    let deadline = match (replay.deadline, stall_end) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let collected = match deadline {
        Some(at) => tokio::time::timeout_at(at, collect)
            .await
            .map_err(|_| Failure::BodyTimeout)?,
        None => collect.await,
    };
    match collected {
        Ok(c) => Ok(Payload::Buffered(c.to_bytes())),
        Err(e) => {
            tracing::debug!(error = %e, "reading the request body");
            Err(Failure::of_body_error(&*e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full};

    fn replay(wanted: bool) -> Replay {
        Replay {
            wanted,
            limit: 16,
            deadline: None,
            stall: None,
        }
    }

    fn length(n: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, n.into());
        h
    }

    #[tokio::test]
    async fn small_known_bodies_are_buffered_only_when_replay_is_wanted() {
        let body = || Full::new(Bytes::from_static(b"amount=10"));
        let p = prepare(body(), &length(9), false, replay(true))
            .await
            .unwrap();
        assert!(matches!(p, Payload::Buffered(b) if b == "amount=10"));
        let p = prepare(body(), &length(9), false, replay(false))
            .await
            .unwrap();
        assert!(matches!(p, Payload::Stream(UpstreamBody::Boxed(_))));
        let p = prepare(body(), &length(9), true, replay(true))
            .await
            .unwrap();
        assert!(matches!(p, Payload::Stream(_)), "an upgrade streams");
        let p = prepare(body(), &HeaderMap::new(), false, replay(true))
            .await
            .unwrap();
        assert!(matches!(p, Payload::Stream(_)), "unknown length streams");
        let big = Full::new(Bytes::from(vec![b'x'; 17]));
        let p = prepare(big, &length(17), false, replay(true))
            .await
            .unwrap();
        assert!(matches!(p, Payload::Stream(_)), "over the limit streams");
        let p = prepare(
            Empty::<Bytes>::new(),
            &HeaderMap::new(),
            false,
            replay(true),
        )
        .await
        .unwrap();
        assert!(matches!(p, Payload::Empty));
    }

    /// A body longer than its `content-length` said is cut off by the limit: `DC`, 400.
    #[tokio::test]
    async fn a_body_longer_than_announced_is_refused() {
        let lying = Full::new(Bytes::from(vec![b'x'; 40]));
        let err = prepare(lying, &length(4), false, replay(true))
            .await
            .unwrap_err();
        assert_eq!(err, Failure::BodyBroken);
    }
}
