//! weir's own pool of HTTP/1.1 upstream connections, one stack of idle connections per
//! endpoint, kept in the endpoint's state so that it survives table swaps.
//!
//! Requests without a body (the common case) are written and their responses read by the task
//! that serves the client (`inline`); requests with a body go through hyper's HTTP/1.1 client
//! connection (a task per connection), on connections of their own stack. callgrind, h2load
//! over 10 keep-alive connections, 1 KiB bodies: 30,401 user-space instructions per proxied
//! request with hyper's client for every request, 23,318 with `inline` for bodyless ones
//! (hyper's connection task, the channel to it and back, and its poll of the idle socket
//! were about 7,000 of them).
//!
//! Why not hyper-util's pooled client for this, the common case: it keys its pool by scheme
//! and authority in a SipHash map behind one mutex, and needs an absolute URI per request.
//! Here the endpoint is already picked, so a request pops a connection from that endpoint's
//! stack and sends the origin-form request on it (callgrind, user-space instructions per
//! proxied request: 41,283 with hyper-util's pool, 35,865 with this one). HTTP/2 upstreams,
//! upgrades and mirrored copies still use hyper-util's client.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::proxy::request_body::{BoxError, UpstreamBody};

mod inline;

pub(crate) use inline::{InlineBody, RequestHead};

/// Idle connections to one endpoint, the most recently used on top (it is the likeliest to
/// be alive and warm): one stack per proxy worker thread, so that a connection is used by the
/// thread whose runtime drives it.
#[derive(Debug, Default)]
pub(crate) struct IdleConns {
    stacks: [Mutex<Stack>; SLOTS],
}

/// One worker's idle connections, oldest first (hyper's, for requests with a body, and weir's
/// own, for requests without), and whether a sweeper task is closing them at their idle
/// timeout.
#[derive(Debug, Default)]
struct Stack {
    conns: Vec<Idle<http1::SendRequest<UpstreamBody>>>,
    inline: Vec<Idle<inline::Conn>>,
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
struct Idle<C> {
    conn: C,
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

/// Why a request got no response head. What it is answered as is `upstream`'s to say (the
/// pool depends on neither `failure` nor `body`, which depend on it).
#[derive(Debug)]
pub(crate) enum SendError {
    /// Connecting failed or timed out.
    Connect,
    /// The connection ended or was reset before the response head (weir's own client).
    Reset,
    /// The upstream's response head is not valid HTTP/1.1 (weir's own client).
    Protocol,
    /// hyper's error on the connection: reset, invalid HTTP, or the request body failing.
    Http(hyper::Error),
}

impl IdleConns {
    fn lock(&self, slot: usize) -> std::sync::MutexGuard<'_, Stack> {
        self.stacks[slot].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recent idle connection that is still ready (one whose upstream closed it is
    /// dropped).
    fn pop(&self, idle_timeout: Duration) -> Option<http1::SendRequest<UpstreamBody>> {
        self.take(idle_timeout, |stack| &mut stack.conns, |c| c.is_ready())
    }

    /// [`pop`](IdleConns::pop) for weir's own client: the most recent idle connection whose
    /// upstream has neither closed it nor sent anything unasked.
    fn pop_inline(&self, idle_timeout: Duration) -> Option<inline::Conn> {
        self.take(
            idle_timeout,
            |stack| &mut stack.inline,
            inline::Conn::is_usable,
        )
    }

    /// The most recent connection of this worker's `conns` that is within `idle_timeout` and
    /// `usable`; the ones above it that are not are dropped.
    fn take<C>(
        &self,
        idle_timeout: Duration,
        conns: impl FnOnce(&mut Stack) -> &mut Vec<Idle<C>>,
        usable: impl Fn(&C) -> bool,
    ) -> Option<C> {
        let mut stack = self.lock(WORKER.with(std::cell::Cell::get));
        let kept = conns(&mut stack);
        while let Some(idle) = kept.pop() {
            if idle.since.elapsed() < idle_timeout && usable(&idle.conn) {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Keeps an idle connection; the first one of an empty stack starts its sweeper.
    fn push(self: &Arc<Self>, sender: http1::SendRequest<UpstreamBody>, options: PoolOptions) {
        self.keep(options, |stack| &mut stack.conns, sender);
    }

    /// [`push`](IdleConns::push) for weir's own client.
    fn push_inline(self: &Arc<Self>, conn: inline::Conn, options: PoolOptions) {
        self.keep(options, |stack| &mut stack.inline, conn);
    }

    fn keep<C>(
        self: &Arc<Self>,
        options: PoolOptions,
        conns: impl FnOnce(&mut Stack) -> &mut Vec<Idle<C>>,
        conn: C,
    ) {
        let slot = WORKER.with(std::cell::Cell::get);
        let mut stack = self.lock(slot);
        let kept = conns(&mut stack);
        if kept.len() < options.max_idle {
            kept.push(Idle {
                conn,
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
                let oldest = [
                    expire(&mut stack.conns, now, idle_timeout),
                    expire(&mut stack.inline, now, idle_timeout),
                ];
                match oldest.into_iter().flatten().min() {
                    Some(oldest) => oldest + idle_timeout,
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

/// Drops the connections of `conns` idle for `idle_timeout` or longer; when the oldest kept
/// one became idle.
fn expire<C>(conns: &mut Vec<Idle<C>>, now: Instant, idle_timeout: Duration) -> Option<Instant> {
    // Oldest first: the expired ones are a prefix.
    let expired = conns
        .iter()
        .take_while(|c| now.duration_since(c.since) >= idle_timeout)
        .count();
    conns.drain(..expired);
    conns.first().map(|c| c.since)
}

/// A pooled connection in use: back on its endpoint's idle stack once its response has been
/// read to the end.
#[derive(Debug)]
pub(crate) struct Reuse {
    sender: http1::SendRequest<UpstreamBody>,
    idle: Arc<IdleConns>,
    options: PoolOptions,
}

impl Reuse {
    /// Back on the idle stack. When the last frame of a response is read, hyper's connection
    /// task has already made the connection ready for the next request (it reads the end
    /// of the body and turns idle in one poll), so this is a push; a connection still busy
    /// (an upstream that answered before the request body was sent) gets a task that waits
    /// for it, as every request used to.
    fn give_back(self) {
        let Reuse {
            mut sender,
            idle,
            options,
        } = self;
        if sender.is_ready() {
            idle.push(sender, options);
        } else if !sender.is_closed()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if sender.ready().await.is_ok() {
                    idle.push(sender, options);
                }
            });
        }
    }
}

/// An upstream response body. When it came on a pooled connection, the connection goes back
/// to the pool as soon as the body has ended (its last frame read, or an empty body dropped);
/// a body abandoned before its end takes the connection with it (closed, never reused with
/// a response half read).
#[derive(Debug)]
pub(crate) struct PooledBody {
    inner: Kind,
}

/// Whose client read the response.
#[derive(Debug)]
enum Kind {
    /// hyper's (requests with a body, HTTP/2, upgrades).
    Hyper {
        body: Incoming,
        reuse: Option<Reuse>,
    },
    /// weir's own (requests without a body).
    Inline(InlineBody),
}

impl PooledBody {
    pub(crate) fn new(body: Incoming, reuse: Option<Reuse>) -> Self {
        PooledBody {
            inner: Kind::Hyper { body, reuse },
        }
    }
}

impl From<Incoming> for PooledBody {
    fn from(body: Incoming) -> Self {
        PooledBody::new(body, None)
    }
}

impl From<InlineBody> for PooledBody {
    fn from(body: InlineBody) -> Self {
        PooledBody {
            inner: Kind::Inline(body),
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.inner {
            Kind::Inline(body) => body.poll_frame(cx).map_err(Into::into),
            Kind::Hyper { body, reuse } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                let ended = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    Poll::Ready(Some(Err(_))) => {
                        *reuse = None;
                        false
                    }
                    Poll::Pending => false,
                };
                if ended && let Some(reuse) = reuse.take() {
                    reuse.give_back();
                }
                polled.map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Kind::Hyper { body, .. } => body.is_end_stream(),
            Kind::Inline(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Kind::Hyper { body, .. } => body.size_hint(),
            Kind::Inline(body) => body.size_hint(),
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // An empty body (HEAD, 204, 304, `content-length: 0`) is never polled. (weir's own
        // body does this itself.)
        if let Kind::Hyper { body, reuse } = &mut self.inner
            && body.is_end_stream()
            && let Some(reuse) = reuse.take()
        {
            reuse.give_back();
        }
    }
}

/// Sends a request without a body, its head already encoded, on weir's own client (see
/// [`inline::send`]).
pub(crate) async fn send_bodyless(
    idle: &Arc<IdleConns>,
    authority: &str,
    head: RequestHead,
    options: PoolOptions,
) -> Result<Response<PooledBody>, SendError> {
    inline::send(idle, authority, head, options)
        .await
        .map(|resp| resp.map(PooledBody::from))
}

/// Sends a request (origin-form URI, `Host` set) to the endpoint at `authority` on an idle
/// hyper connection of `idle`, or on a new one. A request that an
/// idle connection could not even start to send (the upstream had closed it) is sent again
/// on a new connection, as a connection pool must; any other failure is the caller's to
/// retry or report.
pub(crate) async fn send(
    idle: &Arc<IdleConns>,
    authority: &str,
    mut req: Request<UpstreamBody>,
    options: PoolOptions,
) -> Result<Response<PooledBody>, SendError> {
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
                // The connection is free again once this response's body has been read to
                // its end: the body gives it back then (no task per request to wait for it).
                let reuse = Reuse {
                    sender,
                    idle: Arc::clone(idle),
                    options,
                };
                return Ok(resp.map(|body| PooledBody::new(body, Some(reuse))));
            }
            Err(mut e) => match e.take_message() {
                Some(unsent) if reused => req = unsent,
                _ => return Err(SendError::Http(e.into_error())),
            },
        }
    }
}

/// A new TCP connection to `authority`, without Nagle's delay.
async fn connect_tcp(authority: &str, timeout: Duration) -> Result<TcpStream, SendError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(authority))
        .await
        .map_err(|_| SendError::Connect)?
        .map_err(|_| SendError::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn connect(
    authority: &str,
    timeout: Duration,
) -> Result<http1::SendRequest<UpstreamBody>, SendError> {
    let stream = connect_tcp(authority, timeout).await?;
    let (sender, conn) = http1::Builder::new()
        .writev(false)
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What the scripted upstream does with the `n`th request head it reads (over all
    /// connections).
    #[derive(Clone, Copy)]
    pub(super) enum Act {
        /// Writes these bytes at once.
        Answer(&'static [u8]),
        /// Writes these bytes one at a time, flushing each.
        Trickle(&'static [u8]),
        /// Writes these bytes, then closes the connection.
        AnswerAndClose(&'static [u8]),
        /// Closes the connection without answering.
        Close,
    }

    /// An upstream that acts on every request head with `script(n)`; its address and how
    /// many connections it accepted so far.
    pub(super) async fn upstream(script: fn(usize) -> Act) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let requests = Arc::clone(&requests);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let written = match script(requests.fetch_add(1, Ordering::SeqCst)) {
                                Act::Answer(b) => s.write_all(b).await,
                                Act::Trickle(b) => trickle(&mut s, b).await,
                                Act::AnswerAndClose(b) => {
                                    let _ = s.write_all(b).await;
                                    return;
                                }
                                Act::Close => return,
                            };
                            if written.is_err() {
                                return;
                            }
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        (authority, accepted)
    }

    async fn trickle(s: &mut tokio::net::TcpStream, bytes: &[u8]) -> std::io::Result<()> {
        for byte in bytes {
            s.write_all(&[*byte]).await?;
            s.flush().await?;
        }
        Ok(())
    }

    fn get() -> Request<UpstreamBody> {
        Request::get("/")
            .header(http::header::HOST, "upstream")
            .body(UpstreamBody::Empty)
            .unwrap()
    }

    const OPTIONS: PoolOptions = PoolOptions {
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        max_idle: 4,
    };

    /// A connection goes back to the pool when its response ends, without a task per
    /// request: after a body read to its end (by length or chunked) and after an empty body
    /// that was never polled, the next request goes on the same connection.
    #[tokio::test]
    async fn a_connection_is_reused_once_its_response_has_ended() {
        let (authority, accepted) = upstream(|n| match n % 3 {
            0 => Act::Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
            1 => Act::Answer(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            ),
            _ => Act::Answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
        })
        .await;
        let idle = Arc::new(IdleConns::default());
        for round in 0..6 {
            let resp = send(&idle, &authority, get(), OPTIONS).await.unwrap();
            if round % 3 == 2 {
                assert_eq!(resp.status(), 204);
                drop(resp);
            } else {
                assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
            }
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A response abandoned before its end takes its connection with it: the next request
    /// goes on a new connection and gets its own answer, never the rest of the old one.
    #[tokio::test]
    async fn a_response_abandoned_half_way_is_not_reused() {
        let (authority, accepted) = upstream(|n| match n {
            // Announces 10 bytes, sends 5 now.
            0 => Act::Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nfirst"),
            _ => Act::Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond"),
        })
        .await;
        let idle = Arc::new(IdleConns::default());
        let resp = send(&idle, &authority, get(), OPTIONS).await.unwrap();
        let mut body = resp.into_body();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "first");
        drop(body);
        let resp = send(&idle, &authority, get(), OPTIONS).await.unwrap();
        assert_eq!(
            resp.into_body().collect().await.unwrap().to_bytes(),
            "second"
        );
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

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
