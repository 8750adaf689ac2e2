//! Starting a sidecar inside any tokio runtime: read and validate the config, bind the proxy
//! and admin listeners, serve, and on shutdown: not ready, stop accepting, drain, stop the admin
//! API.
//!
//! `weir serve` adds the command line, the ready line and the signals; `weir demo` and the
//! tests start one in-process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::feed::{ConfigFeed, FileFeed};
use crate::identity::PodIdentity;
use crate::metrics::Metrics;
use crate::proxy::{Inbound, Proxy, ProxyOptions};
use crate::reload::Reloader;
use crate::sidecar::{
    RunError, RunningSidecar, ShutdownHandle, Sidecar, SidecarOptions, StartError,
};
use crate::state::{StateFile, start_live};

/// Starts a sidecar on the config files of `options.config`, polled every
/// `options.reload_poll` (see [`start_with_feed`]), with its admin state kept in
/// `options.state` (default: `<first config>.weir-state.json`).
pub async fn start(options: SidecarOptions) -> Result<RunningSidecar, StartError> {
    if options.config.is_empty() {
        return Err(StartError::Options(
            "no config file: pass --config FILE".into(),
        ));
    }
    let feed = FileFeed::new(options.config.clone(), options.reload_poll);
    let mut options = options;
    if options.state.is_none() {
        options.state = Some(StateFile::next_to(&options.config[0]).path().to_path_buf());
    }
    start_with_feed(options, Arc::new(feed)).await
}

/// Reads and validates the config from `feed` (with the admin state of `options.state`
/// re-applied; `None` keeps none), binds both listeners and starts the proxy, the admin API
/// and the reloader watching the feed. A refused config is
/// [`StartError::Refused`]; nothing is served then.
pub async fn start_with_feed(
    options: SidecarOptions,
    feed: Arc<dyn ConfigFeed>,
) -> Result<RunningSidecar, StartError> {
    options.check()?;
    // Once, before anything serves: a blocking read is fine here.
    let sources = feed.read().map_err(StartError::Feed)?;
    let (live, findings, state) = start_live(&sources, options.state.clone().map(StateFile::new))
        .map_err(|refused| StartError::Refused {
        findings: refused.findings,
    })?;
    for w in findings.warnings() {
        tracing::warn!("config warning: {w}");
    }
    let live = Arc::new(live);
    let identity = options
        .identity
        .clone()
        .unwrap_or_else(|| PodIdentity::workload(&options.workload));
    let metrics = Arc::new(Metrics::with_identity(identity));
    let reloader = Arc::new(Reloader::new(
        Arc::clone(&feed),
        Arc::clone(&live),
        Arc::clone(&metrics),
    ));

    let bind = |addr: SocketAddr| async move {
        let listener = listen(addr)?;
        let local = listener.local_addr()?;
        Ok::<_, std::io::Error>((listener, local))
    };
    let (proxy_listener, proxy_addr) =
        bind(options.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: options.listen,
                what: "--listen",
                source,
            })?;
    let (admin_listener, admin_addr) =
        bind(options.admin)
            .await
            .map_err(|source| StartError::Bind {
                addr: options.admin,
                what: "--admin",
                source,
            })?;
    let health_listener = match options.health {
        None => None,
        Some(addr) => Some(bind(addr).await.map_err(|source| StartError::Bind {
            addr,
            what: "--health",
            source,
        })?),
    };
    let health_addr = health_listener.as_ref().map(|(_, a)| *a);

    let inbound_listener = match options.inbound {
        Some(addr) => Some(bind(addr).await.map_err(|source| StartError::Bind {
            addr,
            what: "--inbound",
            source,
        })?),
        None => None,
    };

    let sidecar = Arc::new(Sidecar::new(
        Arc::clone(&live),
        Arc::clone(&metrics),
        Arc::clone(&reloader),
        options.admin_token.clone(),
        state,
    ));
    let shutdown = ShutdownHandle::new();
    // The admin API outlives the drain, so that `/readyz` reports it; it stops after.
    let admin_stop = ShutdownHandle::new();

    let proxy_options = ProxyOptions {
        workload: options.workload.clone(),
        workers: options.workers,
        limits: options.limits,
        path_normalization: options.path_normalization,
        access_log: options.access_log.clone(),
        release_memory: options.release_memory,
        ..ProxyOptions::default()
    };
    let inbound_addr = inbound_listener.as_ref().map(|(_, addr)| *addr);
    let inbound = inbound_listener
        .map(|(listener, _)| (Inbound::new(Arc::clone(&metrics), &proxy_options), listener));
    let proxy = Proxy::new(Arc::clone(&live), Arc::clone(&metrics), proxy_options);
    let admin = tokio::spawn(crate::admin::serve(
        admin_listener,
        Arc::clone(&sidecar),
        admin_stop.signalled(),
    ));
    let health = health_listener.map(|(listener, _)| {
        tokio::spawn(crate::admin::serve_health(
            listener,
            Arc::clone(&sidecar),
            admin_stop.signalled(),
        ))
    });
    let watcher = tokio::spawn(Arc::clone(&reloader).watch(shutdown.signalled()));

    tracing::info!(
        proxy = %proxy_addr,
        admin = %admin_addr,
        inbound = ?inbound_addr,
        generation = live.generation(),
        config = %feed.describe(),
        "weir sidecar started"
    );

    let done = tokio::spawn(supervise(Supervised {
        sidecar: Arc::clone(&sidecar),
        proxy,
        proxy_listener,
        inbound,
        shutdown: shutdown.clone(),
        admin_stop,
        admin,
        health,
        watcher,
        drain: options.drain_timeout,
    }));
    Ok(RunningSidecar {
        proxy_addr,
        admin_addr,
        health_addr,
        inbound_addr,
        sidecar,
        shutdown,
        done,
    })
}

struct Supervised {
    sidecar: Arc<Sidecar>,
    proxy: Arc<Proxy>,
    proxy_listener: TcpListener,
    inbound: Option<(Arc<Inbound>, TcpListener)>,
    shutdown: ShutdownHandle,
    admin_stop: ShutdownHandle,
    admin: JoinHandle<()>,
    health: Option<JoinHandle<()>>,
    watcher: JoinHandle<()>,
    drain: Duration,
}

/// Runs the proxy until the shutdown, then: not ready, stop accepting, drain, stop the admin
/// API.
async fn supervise(s: Supervised) -> Result<(), RunError> {
    let sidecar = Arc::clone(&s.sidecar);
    let shutdown = s.shutdown.clone();
    let began = async move {
        shutdown.signalled().await;
        sidecar.begin_draining();
    };
    let proxy = Arc::clone(&s.proxy);
    let inbound = s.inbound.map(|(inbound, listener)| {
        tokio::spawn(inbound.serve(listener, s.shutdown.signalled(), s.drain))
    });
    let serving = tokio::spawn(proxy.serve(s.proxy_listener, began, s.drain));
    // The proxy bounds its own drain; the margin only guards against a drain that hangs.
    let mut serving = std::pin::pin!(serving);
    let result = tokio::select! {
        r = &mut serving => r,
        () = async {
            s.shutdown.signalled().await;
            tokio::time::sleep(s.drain + Duration::from_secs(2)).await;
        } => {
            tracing::warn!(in_flight = s.proxy.in_flight(), "the drain did not end in time; exiting");
            Ok(Ok(()))
        }
    };
    // Whether the proxy ended by a shutdown or by an error, nothing is served any more.
    s.shutdown.shutdown();
    if let Some(inbound) = inbound {
        match tokio::time::timeout(s.drain + Duration::from_secs(2), inbound).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the inbound listener failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "the inbound listener panicked"),
            Err(_) => tracing::warn!("the inbound drain did not end in time"),
            Ok(Ok(Ok(()))) => {}
        }
    }
    s.sidecar.begin_draining();
    let left = s.proxy.in_flight();
    if left > 0 {
        tracing::warn!(
            in_flight = left,
            "drain timeout reached with requests still in flight"
        );
    }
    s.admin_stop.shutdown();
    let _ = s.admin.await;
    if let Some(health) = s.health {
        let _ = health.await;
    }
    s.watcher.abort();
    match result {
        Ok(Ok(())) => {
            tracing::info!("weir sidecar stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(RunError::Proxy(e)),
        Err(e) => Err(RunError::Panicked(e)),
    }
}

/// Connections the kernel queues for accept, per listener (capped by `net.core.somaxconn`).
/// tokio's `TcpListener::bind` asks for 1,024: a burst of 1,000 or 5,000 clients connecting
/// at once overflowed it (SYNs dropped, clients retrying after a second); nginx asks for
/// 511 and relies on accepting in a loop, HAProxy for the `maxconn`.
const LISTEN_BACKLOG: u32 = 8192;

/// A listener on `addr` with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (a restart binds while
/// the previous process's connections are in `TIME_WAIT`), as `TcpListener::bind` does
/// except for the backlog.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
