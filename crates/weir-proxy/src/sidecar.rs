//! The sidecar: one [`LiveTable`] shared by the proxy (reads), the admin API and the config
//! feed (writes), started inside any tokio runtime with [`start`], stopped with a drain.
//!
//! `weir serve` adds the command line, the ready line and the signals; `weir demo` and the
//! tests start one in-process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_router::{Findings, LiveTable};

use crate::metrics::Metrics;
use crate::proxy::{Proxy, ProxyOptions};
use crate::reload::{ReloadError, Reloader, Snapshot};

/// What a sidecar needs to start.
#[derive(Clone, Debug)]
pub struct SidecarOptions {
    /// Config files, read together as one config.
    pub config: Vec<PathBuf>,
    /// Proxy listener; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Admin listener; port 0 picks a free port.
    pub admin: SocketAddr,
    /// `source_workload` of the metrics.
    pub workload: String,
    /// Bearer token for the admin API; required when `admin` is not a loopback address.
    pub admin_token: Option<String>,
    /// Upper bound on the drain at shutdown.
    pub drain_timeout: Duration,
    /// Config poll interval; `None` turns polling off.
    pub reload_poll: Option<Duration>,
    /// Proxy worker threads (see [`ProxyOptions::workers`]); 0 serves on the caller's runtime.
    pub workers: usize,
}

impl Default for SidecarOptions {
    fn default() -> Self {
        SidecarOptions {
            config: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 15001)),
            admin: SocketAddr::from(([127, 0, 0, 1], 15000)),
            workload: "unknown".to_string(),
            admin_token: None,
            drain_timeout: Duration::from_secs(30),
            reload_poll: Some(Duration::from_secs(1)),
            workers: 0,
        }
    }
}

impl SidecarOptions {
    /// Refuses an admin API that anyone on the network could drive.
    fn check(&self) -> Result<(), StartError> {
        let bad = |why: String| Err(StartError::Options(why));
        if self.config.is_empty() {
            return bad("no config file: pass --config FILE".into());
        }
        match &self.admin_token {
            Some(t) if t.is_empty() => bad("the admin token is empty".into()),
            Some(t) if t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                bad("the admin token must not contain whitespace".into())
            }
            Some(_) => Ok(()),
            None if self.admin.ip().is_loopback() => Ok(()),
            None => bad(format!(
                "refusing to start: the admin API would listen on {}, which is not a loopback address, without a token. \
                 Anyone who can reach it could change the weights. Pass --admin-token (or --admin-token-file), \
                 or bind the admin API to 127.0.0.1",
                self.admin
            )),
        }
    }
}

/// Why a sidecar did not start. Nothing is served in any case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The options cannot work (no config file, an admin API open to the network without a
    /// token, ...); the message says which option to change.
    #[error("{0}")]
    Options(String),
    /// A config file could not be read.
    #[error(transparent)]
    Read(ReloadError),
    /// The validator refused the config.
    #[error("the config is refused by the validator; nothing is served")]
    Refused {
        /// Why, errors first.
        findings: Findings,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Which listener, by its command-line flag (`--listen`, `--admin`).
        what: &'static str,
        /// The socket error.
        source: std::io::Error,
    },
}

impl StartError {
    /// The validator's findings, when the config was refused.
    pub fn findings(&self) -> Option<&Findings> {
        match self {
            StartError::Refused { findings } => Some(findings),
            StartError::Read(ReloadError::Refused(refused)) => Some(&refused.findings),
            _ => None,
        }
    }
}

/// Why a running sidecar stopped without being asked to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The proxy's accept loop failed.
    #[error("the proxy failed: {0}")]
    Proxy(#[source] std::io::Error),
    /// A sidecar task panicked.
    #[error("a sidecar task panicked: {0}")]
    Panicked(#[source] tokio::task::JoinError),
}

/// What a running sidecar's parts share: the table, the metrics, the reloader.
pub struct Sidecar {
    /// The table in force; every write goes through its validator.
    pub live: Arc<LiveTable>,
    /// The proxy's metrics, also served on `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// Reloads the config files (SIGHUP, `POST /reload`, the poller).
    pub reloader: Arc<Reloader>,
    /// The admin API's bearer token, if one is required.
    pub admin_token: Option<String>,
    draining: AtomicBool,
}

impl Sidecar {
    /// Whether a shutdown has begun: `/readyz` answers 503 from then on.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Starts a shutdown: the proxy stops accepting and drains. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    /// Begins the shutdown; calling it again does nothing.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }

    fn signalled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            // An error means the sender is gone: treat it as a shutdown.
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// A started sidecar.
pub struct RunningSidecar {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    sidecar: Arc<Sidecar>,
    shutdown: ShutdownHandle,
    done: JoinHandle<Result<(), RunError>>,
}

impl RunningSidecar {
    /// The shared parts: the live table, the metrics, the reloader.
    pub fn sidecar(&self) -> &Arc<Sidecar> {
        &self.sidecar
    }

    /// A handle that begins the shutdown from anywhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Completes when the sidecar has stopped: after a shutdown and its drain, or when the
    /// proxy failed.
    pub async fn wait(self) -> Result<(), RunError> {
        self.done.await.map_err(RunError::Panicked)?
    }

    /// Begins the shutdown and waits for the drain to end.
    pub async fn shutdown(self) -> Result<(), RunError> {
        self.shutdown.shutdown();
        self.wait().await
    }
}

/// Loads and validates the config, binds both listeners and starts the proxy, the admin API
/// and the config poller. A refused config is [`StartError::Refused`].
pub async fn start(options: SidecarOptions) -> Result<RunningSidecar, StartError> {
    options.check()?;
    let snapshot = Snapshot::read(&options.config);
    let sources = snapshot
        .sources(&options.config)
        .map_err(StartError::Read)?;
    let (live, findings) =
        LiveTable::from_sources(&sources).map_err(|refused| StartError::Refused {
            findings: refused.findings,
        })?;
    for w in findings.warnings() {
        tracing::warn!("config warning: {w}");
    }
    let live = Arc::new(live);
    let metrics = Arc::new(Metrics::new(&options.workload));
    let reloader = Arc::new(Reloader::new(
        options.config.clone(),
        snapshot,
        Arc::clone(&live),
        Arc::clone(&metrics),
    ));

    let bind = |addr: SocketAddr| async move {
        let listener = TcpListener::bind(addr).await?;
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

    let sidecar = Arc::new(Sidecar {
        live: Arc::clone(&live),
        metrics: Arc::clone(&metrics),
        reloader: Arc::clone(&reloader),
        admin_token: options.admin_token.clone(),
        draining: AtomicBool::new(false),
    });
    let shutdown = ShutdownHandle(Arc::new(watch::channel(false).0));
    // The admin API outlives the drain, so that `/readyz` reports it; it stops after.
    let admin_stop = ShutdownHandle(Arc::new(watch::channel(false).0));

    let proxy = Proxy::new(
        Arc::clone(&live),
        Arc::clone(&metrics),
        ProxyOptions {
            workload: options.workload.clone(),
            workers: options.workers,
            ..ProxyOptions::default()
        },
    );
    let admin = tokio::spawn(crate::admin::serve(
        admin_listener,
        Arc::clone(&sidecar),
        admin_stop.signalled(),
    ));
    let poller = options
        .reload_poll
        .map(|every| tokio::spawn(Arc::clone(&reloader).watch(every, shutdown.signalled())));

    tracing::info!(
        proxy = %proxy_addr,
        admin = %admin_addr,
        generation = live.generation(),
        config = ?options.config,
        reload_poll = ?options.reload_poll,
        "weir sidecar started"
    );

    let done = tokio::spawn(supervise(Supervised {
        sidecar: Arc::clone(&sidecar),
        proxy,
        proxy_listener,
        shutdown: shutdown.clone(),
        admin_stop,
        admin,
        poller,
        drain: options.drain_timeout,
    }));
    Ok(RunningSidecar {
        proxy_addr,
        admin_addr,
        sidecar,
        shutdown,
        done,
    })
}

struct Supervised {
    sidecar: Arc<Sidecar>,
    proxy: Arc<Proxy>,
    proxy_listener: TcpListener,
    shutdown: ShutdownHandle,
    admin_stop: ShutdownHandle,
    admin: JoinHandle<()>,
    poller: Option<JoinHandle<()>>,
    drain: Duration,
}

/// Runs the proxy until the shutdown, then: not ready, stop accepting, drain, stop the admin
/// API.
async fn supervise(s: Supervised) -> Result<(), RunError> {
    let sidecar = Arc::clone(&s.sidecar);
    let shutdown = s.shutdown.clone();
    let began = async move {
        shutdown.signalled().await;
        sidecar.draining.store(true, Ordering::Release);
    };
    let proxy = Arc::clone(&s.proxy);
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
    s.sidecar.draining.store(true, Ordering::Release);
    let left = s.proxy.in_flight();
    if left > 0 {
        tracing::warn!(
            in_flight = left,
            "drain timeout reached with requests still in flight"
        );
    }
    s.admin_stop.shutdown();
    let _ = s.admin.await;
    if let Some(poller) = s.poller {
        poller.abort();
    }
    match result {
        Ok(Ok(())) => {
            tracing::info!("weir sidecar stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(RunError::Proxy(e)),
        Err(e) => Err(RunError::Panicked(e)),
    }
}
