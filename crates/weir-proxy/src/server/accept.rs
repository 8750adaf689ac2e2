//! The accept loop on the current runtime, and the graceful drain of its connections.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::h1;
use super::limits::{Activity, Gate, OVERLOADED, Tracked, Watched};
use super::{NewService, Prepared, ServerOptions};

/// How long the loop waits after a failed accept (out of file descriptors and the like)
/// before trying again, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// How long after a connection closed the loop runs [`ServerOptions::on_quiet`]. A burst of
/// closes gets one call, and a steady stream of them one call per period.
pub(crate) const QUIET_AFTER: Duration = Duration::from_secs(1);

/// HTTP/1.1 and h2c on one port, with the options' limits.
fn http(options: &ServerOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let mut http1 = builder.http1();
    http1
        .timer(TokioTimer::new())
        // The connection's watchdog times heads (from the accept, and from the first byte of
        // each later head); hyper's own timer would also close idle keep-alives at the head
        // timeout.
        .header_read_timeout(None)
        .keep_alive(true)
        .half_close(options.half_close);
    if let Some(max) = options.max_request_head {
        http1.max_buf_size(max.max(8192));
    }
    let mut http2 = builder.http2();
    http2.timer(TokioTimer::new());
    super::h2::configure(&mut http2, &options.limits, options.max_request_head);
    builder
}

/// Accepts on `listener` until `shutdown` resolves, then drains (see [`super::serve`]).
pub(super) async fn serve<N: NewService>(
    new: Arc<N>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    options: &ServerOptions,
    gate: Gate,
) -> std::io::Result<()> {
    let name = options.name;
    let limits = options.limits;
    let builder = http(options);
    tracing::debug!(server = name, addr = ?listener.local_addr().ok(), "serving");
    // Every connection task holds a sender: when all are dropped, every connection is closed.
    let (open_tx, mut open_rx) = mpsc::channel::<Infallible>(1);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Told by each connection that ends, when there is an `on_quiet` hook. One timer for
    // the loop's life, reset when a close arms it (a branch's future is built on every turn
    // of `select!`, disabled or not: a new one per accept would cost a clock read).
    let closed = options.on_quiet.map(|_| Arc::new(Notify::new()));
    let quiet = tokio::time::sleep(Duration::ZERO);
    let mut armed = false;
    tokio::pin!(shutdown, quiet);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(server = name, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = async { closed.as_ref().expect("armed with a hook").notified().await },
                if closed.is_some() && !armed => {
                quiet.as_mut().reset(Instant::now() + QUIET_AFTER);
                armed = true;
                continue;
            }
            () = &mut quiet, if armed => {
                armed = false;
                if let Some(hook) = options.on_quiet {
                    hook();
                }
                continue;
            }
        };
        let Some(permit) = gate.enter() else {
            // Over the cap: answered and closed at once, from the reserve of descriptors.
            // A plain write (tokio's `try_write` would wait for a first readiness event).
            if let Ok(std) = stream.into_std() {
                let _ = std::io::Write::write(&mut &std, OVERLOADED);
            }
            if let Some(hook) = &options.on_overload {
                hook();
            }
            tracing::debug!(server = name, %peer, "over the connection cap: 503");
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(server = name, error = %e, "TCP_NODELAY");
        }
        let activity = Activity::new();
        let new = Arc::clone(&new);
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        let open = open_tx.clone();
        let on_error = options.on_connection_error.clone();
        let closed = closed.clone();
        tokio::spawn(async move {
            // Dropped last, however the task ends.
            let _open = (open, permit);
            let _closed = ClosedGuard(closed);
            let (stream, mut inner) = match new.prepare(stream, peer).await {
                Prepared::Http(stream, service) => (stream, service),
                Prepared::Taken(connection) => return connection.await,
                Prepared::Refused => return,
            };
            let mut read = Bytes::new();
            if N::OWN_H1 {
                let own = tokio::select! {
                    biased;
                    end = h1::serve(&*new, inner, &stream, &activity, &mut stop) => end,
                    () = activity.expired(limits.head_timeout, limits.idle_timeout) => {
                        tracing::debug!(server = name, %peer, "closing a connection without a request in time");
                        h1::End::Closed(Ok(()))
                    }
                };
                match own {
                    h1::End::HandOver(bytes, service) => (read, inner) = (bytes, service),
                    h1::End::Closed(result) => {
                        if let Err(e) = result {
                            report(on_error.as_ref(), name, &*e);
                        }
                        return;
                    }
                }
            }
            let service = Tracked {
                inner,
                activity: Arc::clone(&activity),
            };
            let io = TokioIo::new(Watched::new(read, stream, Arc::clone(&activity)));
            let conn = builder.serve_connection_with_upgrades(io, service);
            tokio::pin!(conn);
            let result = tokio::select! {
                biased;
                r = conn.as_mut() => r,
                () = activity.expired(limits.head_timeout, limits.idle_timeout) => {
                    tracing::debug!(server = name, %peer, "closing a connection without a request in time");
                    Ok(())
                }
                () = async { drop(stop.wait_for(|s| *s).await) } => {
                    if activity.is_idle() {
                        // Nothing in flight (an idle keep-alive, a silent or half-sent
                        // connection): closed at once, not after the drain.
                        Ok(())
                    } else {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                }
            };
            if let Err(e) = result {
                report(on_error.as_ref(), name, &*e);
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(open_tx);
    if tokio::time::timeout(options.drain, open_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            server = name,
            drain = ?options.drain,
            "drain timeout: closing the connections still open"
        );
    }
    Ok(())
}

/// Hands what a connection died of to the listener's hook, or to the debug log.
fn report(
    on_error: Option<&super::ConnectionErrorHook>,
    name: &str,
    e: &(dyn std::error::Error + 'static),
) {
    match on_error {
        Some(hook) => hook(e),
        None => tracing::debug!(server = name, error = %e, "connection error"),
    }
}

/// Tells the accept loop that its connection ended, however it ended.
struct ClosedGuard(Option<Arc<Notify>>);

impl Drop for ClosedGuard {
    fn drop(&mut self) {
        if let Some(closed) = &self.0 {
            closed.notify_one();
        }
    }
}
