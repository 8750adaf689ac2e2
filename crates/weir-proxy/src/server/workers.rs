//! Worker threads sharing one listener, each with its own single-threaded runtime.
//!
//! The kernel spreads the connections over the threads, and everything a connection does
//! (its requests, their upstream connections, timers) stays on one thread, as nginx's worker
//! processes do. With a multi-threaded runtime instead, tasks and memory move between threads:
//! on 2 cores that doubled weir's user CPU per request (8.8 vs 4.3 us).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::limits::Gate;
use super::{NewService, ServerOptions, accept};

/// How long a worker's runtime waits for tasks that outlived the drain (connections cut off
/// by the drain timeout) before the thread ends anyway.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(100);

/// Serves `listener` on `options.workers` threads until `shutdown` resolves; returns once
/// every worker has drained.
pub(super) async fn serve<N: NewService>(
    new: Arc<N>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    options: ServerOptions,
    gate: Gate,
) -> std::io::Result<()> {
    let shared = listener.into_std()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut threads = Vec::with_capacity(options.workers);
    for worker in 0..options.workers {
        let listener = shared.try_clone()?;
        let new = Arc::clone(&new);
        let options = options.clone();
        let gate = gate.clone();
        let mut stop = stop_rx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("weir-worker-{worker}"))
            .spawn(move || -> std::io::Result<()> {
                if let Some(started) = options.on_worker {
                    started(worker);
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let result = runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    let stopped = async move {
                        let _ = stop.wait_for(|s| *s).await;
                    };
                    accept::serve(new, listener, stopped, &options, gate).await
                });
                runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
                result
            })?;
        threads.push(thread);
    }
    drop(shared);
    shutdown.await;
    let _ = stop_tx.send(true);
    let name = options.name;
    tokio::task::spawn_blocking(move || {
        for thread in threads {
            match thread.join() {
                Ok(Err(e)) => tracing::warn!(server = name, error = %e, "worker failed"),
                Err(_) => tracing::error!(server = name, "worker panicked"),
                Ok(Ok(())) => {}
            }
        }
    })
    .await
    .map_err(std::io::Error::other)
}
