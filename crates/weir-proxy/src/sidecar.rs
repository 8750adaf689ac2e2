//! The sidecar's vocabulary: its options, the parts a running sidecar shares ([`Sidecar`]: one
//! [`LiveTable`] read by the proxy and written by the admin API and the config feed), the
//! handle that stops it, and why it did not start or stopped. [`crate::start`] assembles one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_router::{Findings, LiveTable};

use weir_router::path::Normalization;

use crate::feed::FeedError;
use crate::identity::PodIdentity;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::server::ConnectionLimits;
use crate::state::StateStatus;

/// What a sidecar needs to start.
#[derive(Clone, Debug)]
pub struct SidecarOptions {
    /// Config files, read together as one config (the [`FileFeed`](crate::FileFeed) of
    /// [`start`](crate::start); [`start_with_feed`](crate::start_with_feed) ignores it).
    pub config: Vec<PathBuf>,
    /// Proxy listener; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Admin listener; port 0 picks a free port.
    pub admin: SocketAddr,
    /// `source_workload` of the metrics.
    pub workload: String,
    /// The pod's identity (workload, namespace, app, version ...): the `source_*` labels of
    /// outbound requests and the `destination_*` ones of inbound requests. `None`: only
    /// `workload` is known.
    pub identity: Option<PodIdentity>,
    /// The inbound listener (`--inbound`, Istio's 15006); `None`: no inbound side.
    pub inbound: Option<SocketAddr>,
    /// An access log line per request, outbound and inbound; `None`: off.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// Bearer token for the admin API; required when `admin` is not a loopback address.
    pub admin_token: Option<String>,
    /// Upper bound on the drain at shutdown.
    pub drain_timeout: Duration,
    /// Config file poll interval; `None` turns polling off.
    pub reload_poll: Option<Duration>,
    /// Proxy worker threads (see [`ProxyOptions::workers`](crate::ProxyOptions::workers)); 0 serves on the caller's runtime.
    pub workers: usize,
    /// Deadlines and the connection cap of the proxy listener.
    pub limits: ConnectionLimits,
    /// How request paths are normalised (Istio's default: [`Normalization::Base`]).
    pub path_normalization: Normalization,
    /// The state file keeping admin writes across restarts (see [`crate::state`]);
    /// [`start`](crate::start) defaults it to `<first config>.weir-state.json`.
    pub state: Option<PathBuf>,
    /// A health listener for the kubelet's probes (Istio's 15021): `GET /healthz/ready` and
    /// `/healthz`, without the admin token and nothing else; `None`: none.
    pub health: Option<SocketAddr>,
    /// See [`ProxyOptions::release_memory`](crate::ProxyOptions::release_memory).
    pub release_memory: Option<fn()>,
}

impl Default for SidecarOptions {
    fn default() -> Self {
        SidecarOptions {
            config: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 15001)),
            admin: SocketAddr::from(([127, 0, 0, 1], 15000)),
            workload: "unknown".to_string(),
            identity: None,
            inbound: None,
            access_log: None,
            admin_token: None,
            drain_timeout: Duration::from_secs(30),
            reload_poll: Some(Duration::from_secs(1)),
            workers: 0,
            limits: ConnectionLimits::DEFAULT,
            path_normalization: Normalization::Base,
            state: None,
            health: None,
            release_memory: None,
        }
    }
}

impl SidecarOptions {
    /// Refuses an admin API that anyone on the network could drive.
    pub(crate) fn check(&self) -> Result<(), StartError> {
        let bad = |why: String| Err(StartError::Options(why));
        match &self.admin_token {
            Some(t) if t.is_empty() => bad("the admin token is empty".into()),
            Some(t) if t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                bad("the admin token must not contain whitespace".into())
            }
            // An HTTP header carries visible ASCII: any other token could never match.
            Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => bad(
                "the admin token must be visible ASCII (an Authorization header cannot carry other characters, so it could never match): choose another token".into(),
            ),
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
    /// The config feed could not be read.
    #[error(transparent)]
    Feed(FeedError),
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

/// What a running sidecar's parts share: the table, the metrics, the reloader and its feed.
#[derive(Debug)]
pub struct Sidecar {
    /// The table in force; every write goes through its validator.
    pub live: Arc<LiveTable>,
    /// The proxy's metrics, also served on `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// Reloads from the config feed (SIGHUP, `POST /reload`, a change the feed reports).
    pub reloader: Arc<Reloader>,
    /// The admin API's bearer token, if one is required.
    pub admin_token: Option<String>,
    /// The state file and its problems.
    pub state: Arc<StateStatus>,
    /// Changes on every start: a client that sees another boot id knows the sidecar restarted.
    pub boot_id: String,
    draining: AtomicBool,
}

impl Sidecar {
    pub(crate) fn new(
        live: Arc<LiveTable>,
        metrics: Arc<Metrics>,
        reloader: Arc<Reloader>,
        admin_token: Option<String>,
        state: Arc<StateStatus>,
    ) -> Self {
        Sidecar {
            live,
            metrics,
            reloader,
            admin_token,
            state,
            boot_id: format!("{:016x}", rand::random::<u64>()),
            draining: AtomicBool::new(false),
        }
    }

    /// Whether a shutdown has begun: `/readyz` answers 503 from then on.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// From now on `/readyz` answers 503.
    pub(crate) fn begin_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// Starts a shutdown: the proxy stops accepting and drains. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    pub(crate) fn new() -> Self {
        ShutdownHandle(Arc::new(watch::channel(false).0))
    }

    /// Begins the shutdown; calling it again does nothing.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }

    pub(crate) fn signalled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            // An error means the sender is gone: treat it as a shutdown.
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// A started sidecar.
#[derive(Debug)]
pub struct RunningSidecar {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    /// Where the health listener listens, if there is one.
    pub health_addr: Option<SocketAddr>,
    /// Where the inbound listener listens, if there is one.
    pub inbound_addr: Option<SocketAddr>,
    pub(crate) sidecar: Arc<Sidecar>,
    pub(crate) shutdown: ShutdownHandle,
    pub(crate) done: JoinHandle<Result<(), RunError>>,
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
