//! Deadlines and bounds of downstream connections, so that no client (silent, slow, or one of
//! thousands) can make a listener unreachable.
//!
//! ```text
//! accept -> over max_connections?  yes: 503 written, closed, counted (never an accept loop)
//!        -> per connection: a watchdog that closes it when no request is in flight and
//!           - no request head came within head_timeout of the accept (silent, half-sent head,
//!             half-sent or idle h2c preface), or
//!           - no new request came within idle_timeout of the last response;
//!           on shutdown: at once.
//! ```
//!
//! A request is in flight from its head until its response body is sent or dropped
//! ([`Tracked`]). hyper's own timers add the head timeout of later requests on a kept-alive
//! HTTP/1.1 connection and h2 PINGs; the request body's stall timeout is the proxy's.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Deadlines and bounds of a listener's downstream connections. Defaults after Envoy's HTTP
/// connection manager where it has one, shorter where Envoy has none (a request head).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionLimits {
    /// From the accept to the end of the first request head (HTTP/1.1) or the first request
    /// (h2c); also the longest a later request head may take on HTTP/1.1 (`--head-timeout`,
    /// Envoy's `request_headers_timeout`). Default 10 s.
    pub head_timeout: Duration,
    /// How long a connection may stay open with no request in flight after a response
    /// (`--idle-timeout`, Envoy's `idle_timeout`). Default 1 h, as Envoy's.
    pub idle_timeout: Duration,
    /// How long a request body may go without sending anything (`--body-timeout`, Envoy's
    /// `stream_idle_timeout`). Default 5 min, as Envoy's.
    pub body_timeout: Duration,
    /// h2 PING interval on connections with streams; a PING unanswered for
    /// `h2_keepalive_timeout` closes the connection (`--h2-keepalive`, Envoy's
    /// `connection_keepalive`). Default 60 s and 20 s.
    pub h2_keepalive_interval: Duration,
    /// See [`h2_keepalive_interval`](ConnectionLimits::h2_keepalive_interval).
    pub h2_keepalive_timeout: Duration,
    /// Most h2 streams open at once on one connection; more are refused (`REFUSED_STREAM`)
    /// (`--h2-max-streams`, Envoy's `max_concurrent_streams`). Default 100, RFC 9113's
    /// recommended minimum: with [`h2::MAX_SEND_BUF`](super::h2::MAX_SEND_BUF) it bounds what a
    /// client that never reads can make the proxy hold.
    pub h2_max_concurrent_streams: u32,
    /// Most connections open at once; more are answered 503 and closed (`--max-connections`,
    /// Envoy's overload manager `max_active_downstream_connections`). `None`: half of the file
    /// descriptors left after [`fd_reserve`](ConnectionLimits::fd_reserve), since a proxied
    /// connection may hold an upstream one too.
    pub max_connections: Option<usize>,
    /// File descriptors kept free for the admin API, health checks, config reads and logs
    /// (`--fd-reserve`). Default 128.
    pub fd_reserve: usize,
}

impl ConnectionLimits {
    /// The proxy's defaults.
    pub const DEFAULT: ConnectionLimits = ConnectionLimits {
        head_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(3600),
        body_timeout: Duration::from_secs(300),
        h2_keepalive_interval: Duration::from_secs(60),
        h2_keepalive_timeout: Duration::from_secs(20),
        h2_max_concurrent_streams: 100,
        max_connections: None,
        fd_reserve: 128,
    };

    /// The admin API's: a small control surface, reachable without a token on loopback, so
    /// fewer connections and a short idle time.
    pub const ADMIN: ConnectionLimits = ConnectionLimits {
        idle_timeout: Duration::from_secs(60),
        max_connections: Some(64),
        ..ConnectionLimits::DEFAULT
    };

    /// The connection cap in force: [`max_connections`](ConnectionLimits::max_connections),
    /// or derived from the process's file descriptor limit.
    pub fn connection_cap(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let fds = nofile_limit().unwrap_or(1024) as usize;
            (fds.saturating_sub(self.fd_reserve) / 2).max(1)
        })
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits::DEFAULT
    }
}

/// The soft `RLIMIT_NOFILE` of the process.
pub fn nofile_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as Envoy's and most servers' start
/// scripts do); returns the limit in force after.
pub fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE to its hard limit");
        }
    }
    nofile_limit()
}

/// The HTTP/1.1 answer to a connection over the cap, written without reading the request.
pub(crate) const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 33\r\nx-weir-flags: OM\r\nconnection: close\r\n\r\nweir: too many open connections\r\n";

// === the connection gate ===

/// Counts a listener's open connections (across its worker threads) against the cap.
#[derive(Clone, Debug)]
pub(crate) struct Gate {
    open: Arc<AtomicUsize>,
    cap: usize,
}

/// One open connection; leaves the gate when dropped.
#[derive(Debug)]
pub(crate) struct Permit(Arc<AtomicUsize>);

impl Gate {
    pub(crate) fn new(cap: usize) -> Self {
        Gate {
            open: Arc::new(AtomicUsize::new(0)),
            cap,
        }
    }

    /// A permit, or `None` when the cap is reached.
    pub(crate) fn enter(&self) -> Option<Permit> {
        let mut n = self.open.load(Ordering::Relaxed);
        loop {
            if n >= self.cap {
                return None;
            }
            match self
                .open
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(Permit(Arc::clone(&self.open))),
                Err(now) => n = now,
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

// === activity of one connection ===

/// What the watchdog of one connection knows: requests in flight, when the last one ended
/// (or the connection was accepted), and when the next HTTP/1.1 head began to arrive.
#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds from `born` to the end of the last request; `u64::MAX`: none yet.
    last_end_ms: AtomicU64,
    /// Milliseconds from `born` to the first byte read with no request in flight (a head
    /// begins); `u64::MAX`: none since the last request began.
    head_start_ms: AtomicU64,
    /// The connection speaks h2 (its first bytes are the preface): bytes between streams are
    /// control frames (PINGs, SETTINGS), not the start of a head.
    h2: AtomicBool,
    born: Instant,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(u64::MAX),
            head_start_ms: AtomicU64::new(u64::MAX),
            h2: AtomicBool::new(false),
            born: Instant::now(),
        })
    }

    /// A request begins: in flight until the guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_start_ms.store(u64::MAX, Ordering::Release);
        InFlight(Arc::clone(self))
    }

    /// Whether no request is in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Milliseconds since the accept, rounded up: a deadline counted from it never falls
    /// before the full timeout.
    fn millis(&self) -> u64 {
        self.born
            .elapsed()
            .as_micros()
            .div_ceil(1000)
            .min(u64::MAX as u128 - 1) as u64
    }

    /// Bytes came in: the first ones tell the protocol; on HTTP/1.1 with no request in flight
    /// they begin the next head, which then has `head` to complete.
    pub(crate) fn read(&self, bytes: &[u8]) {
        if self.last_end_ms.load(Ordering::Relaxed) == u64::MAX
            && self.in_flight.load(Ordering::Relaxed) == 0
        {
            // Before the first request the accept's deadline holds; learn the protocol.
            if bytes.starts_with(b"PRI ") {
                self.h2.store(true, Ordering::Relaxed);
            }
            return;
        }
        if self.is_idle()
            && !self.h2.load(Ordering::Relaxed)
            && self.head_start_ms.load(Ordering::Relaxed) == u64::MAX
        {
            self.head_start_ms.store(self.millis(), Ordering::Release);
        }
    }

    /// When an idle connection must have its next request head: from the accept until the
    /// first request, `head` after the first byte of a later HTTP/1.1 head, else `idle` after
    /// the last request.
    fn idle_deadline(&self, head: Duration, idle: Duration) -> Instant {
        let at = |ms: u64| self.born + Duration::from_millis(ms);
        match (
            self.last_end_ms.load(Ordering::Acquire),
            self.head_start_ms.load(Ordering::Acquire),
        ) {
            (u64::MAX, _) => self.born + head,
            (_, started) if started != u64::MAX => at(started) + head,
            (ended, _) => at(ended) + idle,
        }
    }

    /// Resolves when the connection has been without a request for too long: `head` from the
    /// accept until the first request (and from the first byte of each later HTTP/1.1 head),
    /// `idle` after each.
    ///
    /// The watchdog is not woken by requests (that would cost a task wake-up and a timer
    /// per request): it sleeps until the deadline the state gives, at most a quarter of the
    /// shorter timeout, and looks again. A deadline only moves later while a request is
    /// served, and a head that begins after an idle period is seen within that quarter, so a
    /// connection is never closed early and at most `min(head, idle) / 4` late.
    pub(crate) async fn expired(&self, head: Duration, idle: Duration) {
        let tick = (head.min(idle) / 4).max(Duration::from_millis(1));
        loop {
            let now = Instant::now();
            let wake = if self.is_idle() {
                let deadline = self.idle_deadline(head, idle);
                if now >= deadline {
                    return;
                }
                deadline.min(now + tick)
            } else {
                now + tick
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// A request in flight on a connection, until its response body is done or dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_end_ms.store(a.millis(), Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

// === the IO, service and body wrappers ===

pin_project_lite::pin_project! {
    /// A connection's socket, telling its [`Activity`] when bytes arrive; read first: the bytes
    /// weir's own HTTP/1.1 reader read before it handed the connection to hyper (already told).
    pub(crate) struct Watched<T> {
        read: Bytes,
        #[pin]
        io: T,
        activity: Arc<Activity>,
    }
}

impl<T> Watched<T> {
    pub(crate) fn new(read: Bytes, io: T, activity: Arc<Activity>) -> Self {
        Watched { read, io, activity }
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// A connection's service, counting its requests in flight into [`Activity`].
#[derive(Debug)]
pub(crate) struct Tracked<S> {
    pub inner: S,
    pub activity: Arc<Activity>,
}

impl<S, R, B> hyper::service::Service<Request<R>> for Tracked<S>
where
    S: hyper::service::Service<Request<R>, Response = Response<B>>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: Request<R>) -> Self::Future {
        TrackedFuture {
            guard: Some(self.activity.begin()),
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Tracked`]: the request stays in flight through its body.
    pub(crate) struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<InFlight>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = std::task::ready!(this.inner.poll(cx));
        let guard = this.guard.take();
        Poll::Ready(resp.map(|r| r.map(|body| TrackedBody { inner: body, guard })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends its request's time in flight when it ends or is dropped.
    pub(crate) struct TrackedBody<B> {
        #[pin]
        inner: B,
        guard: Option<InFlight>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.guard.take();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_admits_up_to_its_cap_and_frees_on_drop() {
        let gate = Gate::new(2);
        let a = gate.enter().expect("first");
        let _b = gate.enter().expect("second");
        assert!(gate.enter().is_none(), "over the cap");
        drop(a);
        assert!(gate.enter().is_some(), "a slot was freed");
    }

    #[test]
    fn the_cap_leaves_the_reserve_and_halves_the_rest() {
        let limits = ConnectionLimits {
            max_connections: None,
            fd_reserve: 24,
            ..ConnectionLimits::DEFAULT
        };
        let fds = nofile_limit().unwrap() as usize;
        assert_eq!(limits.connection_cap(), (fds - 24) / 2);
        let fixed = ConnectionLimits {
            max_connections: Some(7),
            ..ConnectionLimits::DEFAULT
        };
        assert_eq!(fixed.connection_cap(), 7);
        let overloaded = std::str::from_utf8(OVERLOADED).unwrap();
        let (head, body) = overloaded.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{overloaded}"
        );
    }

    #[tokio::test]
    async fn a_connection_expires_at_its_head_timeout_then_at_its_idle_timeout() {
        let head = Duration::from_millis(200);
        let idle = Duration::from_millis(300);
        let activity = Activity::new();
        let start = Instant::now();
        activity.expired(head, idle).await;
        assert!(
            start.elapsed() >= head,
            "no request: the head timeout from the accept"
        );

        // A request in flight holds the connection open past both timeouts.
        let activity = Activity::new();
        let request = activity.begin();
        let watch = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move { activity.expired(head, idle).await })
        };
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!watch.is_finished(), "expired with a request in flight");
        let ended = Instant::now();
        drop(request);
        watch.await.unwrap();
        assert!(
            ended.elapsed() >= idle,
            "the idle timeout from the end of the request"
        );
    }
}
