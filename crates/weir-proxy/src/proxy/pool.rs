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
use crate::proxy::failure::Failure;

/// Idle connections to one endpoint, the most recently used on top (it is the likeliest to
/// be alive and warm): one stack per proxy worker thread, so that a connection is used by the
/// thread whose runtime drives it.
#[derive(Debug, Default)]
pub(crate) struct IdleConns {
    stacks: [Mutex<Stack>; SLOTS],
}

/// One worker's idle connections, oldest first, and whether a sweeper task is closing them
/// at their idle timeout.
#[derive(Debug, Default)]
struct Stack {
    conns: Vec<Idle>,
    sweeping: bool,
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
    /// The request body failed while it was sent: the downstream's fault
    /// ([`Failure::of_request_body`]).
    Request(Failure),
}

/// The failure a send error is answered as (the pool depends on `failure`, not the reverse).
impl From<SendError> for Failure {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Connect => Failure::Connect,
            SendError::Reset => Failure::Reset,
            SendError::Protocol => Failure::Protocol,
            SendError::Request(client) => client,
        }
    }
}

impl IdleConns {
    fn lock(&self, slot: usize) -> std::sync::MutexGuard<'_, Stack> {
        self.stacks[slot].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pop(&self, idle_timeout: Duration) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut stack = self.lock(WORKER.with(std::cell::Cell::get));
        while let Some(idle) = stack.conns.pop() {
            if idle.since.elapsed() < idle_timeout && idle.sender.is_ready() {
                return Some(idle.sender);
            }
        }
        None
    }

    /// Keeps an idle connection; the first one of an empty stack starts its sweeper.
    fn push(self: &Arc<Self>, sender: http1::SendRequest<UpstreamBody>, options: PoolOptions) {
        let slot = WORKER.with(std::cell::Cell::get);
        let mut stack = self.lock(slot);
        if stack.conns.len() < options.max_idle {
            stack.conns.push(Idle {
                sender,
                since: Instant::now(),
            });
            if !stack.sweeping {
                stack.sweeping = true;
                tokio::spawn(Arc::clone(self).sweep(slot, options.idle_timeout));
            }
        }
    }

    /// Closes (drops) the connections of one stack as they reach `idle_timeout`, waking at
    /// the oldest one's deadline; ends when the stack is empty. Without it an idle connection
    /// lived until the next request to its endpoint, however long that took.
    async fn sweep(self: Arc<Self>, slot: usize, idle_timeout: Duration) {
        loop {
            let next = {
                let mut stack = self.lock(slot);
                let now = Instant::now();
                // Oldest first: the expired ones are a prefix.
                let expired = stack
                    .conns
                    .iter()
                    .take_while(|c| now.duration_since(c.since) >= idle_timeout)
                    .count();
                stack.conns.drain(..expired);
                match stack.conns.first() {
                    Some(oldest) => oldest.since + idle_timeout,
                    None => {
                        stack.sweeping = false;
                        return;
                    }
                }
            };
            tokio::time::sleep_until(next.into()).await;
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
                        idle.push(sender, options);
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
    if let Some(client) = Failure::of_request_body(e) {
        SendError::Request(client)
    } else if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        SendError::Protocol
    } else {
        SendError::Reset
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// An idle upstream connection is closed at the pool's idle timeout, with no further
    /// request to its endpoint (it used to live until the next one).
    #[tokio::test]
    async fn idle_connections_are_closed_at_their_idle_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let upstream = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /"), "{:?}", &buf[..n]);
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            // The next read ends when the proxy closes the idle connection.
            let answered = std::time::Instant::now();
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("the idle connection was never closed")
                .unwrap();
            (n, answered.elapsed())
        });
        let idle = Arc::new(IdleConns::default());
        let options = PoolOptions {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_millis(300),
            max_idle: 4,
        };
        let req = Request::get("/")
            .header(http::header::HOST, "upstream")
            .body(UpstreamBody::Empty)
            .unwrap();
        let resp = send(&idle, &authority, req, options).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        let (n, after) = upstream.await.unwrap();
        assert_eq!(n, 0, "closed, not sent another request");
        assert!(
            after >= Duration::from_millis(250),
            "closed before its idle timeout: {after:?}"
        );
        let stack = idle.lock(0);
        assert!(stack.conns.is_empty() && !stack.sweeping, "{stack:?}");
    }
}
