//! weir's own pool of HTTP/1.1 upstream connections, one stack of idle connections per
//! endpoint, kept in the endpoint's state so that it survives table swaps.
//!
//! Why not hyper-util's pooled client for this, the common case: it keys its pool by scheme
//! and authority in a SipHash map behind one mutex, and needs an absolute URI per request.
//! Here the endpoint is already picked, so a request pops a connection from that endpoint's
//! stack and sends the origin-form request on it (callgrind, user-space instructions per
//! proxied request: 41,283 with hyper-util's pool, 35,865 with this one). HTTP/2 upstreams,
//! upgrades and mirrored copies still use hyper-util's client.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::proxy::body::UpstreamBody;

/// Idle connections to one endpoint, the most recently used on top (it is the likeliest to
/// be alive and warm): one stack per proxy worker thread, so that a connection is used by the
/// thread whose runtime drives it.
#[derive(Debug, Default)]
pub(crate) struct IdleConns {
    stacks: [Mutex<Vec<Idle>>; SLOTS],
}

/// Stacks per endpoint; workers beyond this share (correct, a little slower).
const SLOTS: usize = 16;

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as proxy worker `worker` (its idle-connection stack).
pub(crate) fn set_worker(worker: usize) {
    WORKER.with(|w| w.set(worker % SLOTS));
}

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

/// How the pool connects and keeps connections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolOptions {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint at most.
    pub max_idle: usize,
}

/// Why a request got no response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendError {
    /// Connecting failed or timed out.
    Connect,
    /// The connection closed or was reset before the response head.
    Reset,
    /// The upstream spoke invalid HTTP.
    Protocol,
}

impl IdleConns {
    fn slot(&self) -> &Mutex<Vec<Idle>> {
        &self.stacks[WORKER.with(std::cell::Cell::get)]
    }

    fn pop(&self, idle_timeout: Duration) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut stack = self.slot().lock().unwrap_or_else(|p| p.into_inner());
        while let Some(idle) = stack.pop() {
            if idle.since.elapsed() < idle_timeout && idle.sender.is_ready() {
                return Some(idle.sender);
            }
        }
        None
    }

    fn push(&self, sender: http1::SendRequest<UpstreamBody>, max_idle: usize) {
        let mut stack = self.slot().lock().unwrap_or_else(|p| p.into_inner());
        if stack.len() < max_idle {
            stack.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// Sends a request (origin-form URI, `Host` set) to the endpoint at `authority` on an idle
/// connection of `idle`, or on a new one. A request that an idle connection could not even
/// start to send (the upstream had closed it) is sent again on a new connection, as a
/// connection pool must; any other failure is the caller's to retry or report.
pub(crate) async fn send(
    idle: &Arc<IdleConns>,
    authority: &str,
    mut req: Request<UpstreamBody>,
    options: PoolOptions,
) -> Result<Response<Incoming>, SendError> {
    loop {
        let (mut sender, reused) = match idle.pop(options.idle_timeout) {
            Some(s) => (s, true),
            // Boxed: connecting is rare on keep-alive connections, and its future would
            // otherwise make every request's state larger (it is moved with the request).
            None => (
                Box::pin(connect(authority, options.connect_timeout)).await?,
                false,
            ),
        };
        match sender.try_send_request(req).await {
            Ok(resp) => {
                // The connection is free again once this response's body has been read; the
                // task puts it back then (or drops it if the upstream closes it).
                let idle = Arc::clone(idle);
                tokio::spawn(async move {
                    if sender.ready().await.is_ok() {
                        idle.push(sender, options.max_idle);
                    }
                });
                return Ok(resp);
            }
            Err(mut e) => match e.take_message() {
                Some(unsent) if reused => req = unsent,
                _ => return Err(classify(e.error())),
            },
        }
    }
}

async fn connect(
    authority: &str,
    timeout: Duration,
) -> Result<http1::SendRequest<UpstreamBody>, SendError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(authority))
        .await
        .map_err(|_| SendError::Connect)?
        .map_err(|_| SendError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|_| SendError::Connect)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection closed");
        }
    });
    Ok(sender)
}

fn classify(e: &hyper::Error) -> SendError {
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        SendError::Protocol
    } else {
        SendError::Reset
    }
}
