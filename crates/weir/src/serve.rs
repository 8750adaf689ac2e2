//! `weir serve`: the sidecar. One [`LiveTable`] shared by the proxy (reads), the admin API and
//! the reloader (writes); signals for reload (SIGHUP) and graceful shutdown (SIGTERM, SIGINT).
//!
//! [`start`] runs a sidecar inside any tokio runtime and hands back its bound addresses and a
//! shutdown handle: `weir demo` and tests start one in-process, [`run`] adds the CLI, the
//! ready line and the signals.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_router::{Findings, LiveTable};

use crate::canary::ServeCanary;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ProxyOptions};
use crate::reload::{Reloader, Snapshot, Trigger};

#[derive(clap::Args, Debug)]
// A later `--admin` or `--reload-poll` wins, so that wrappers (and tests) can override defaults.
#[command(args_override_self = true)]
pub struct ServeArgs {
    /// Istio YAML (ServiceEntry, DestinationRule, VirtualService); repeat for several files,
    /// read together as one config. Watched and hot-reloaded.
    #[arg(long, required = true, value_name = "FILE")]
    config: Vec<PathBuf>,
    /// Where the proxy listens (HTTP/1.1 and h2c).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15001")]
    listen: SocketAddr,
    /// Where the admin API listens. Off loopback it requires --admin-token.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// This workload's name: the `source_workload` of the metrics.
    #[arg(long, value_name = "NAME", default_value = "unknown")]
    workload: String,
    /// A bearer token every admin request must carry (`Authorization: Bearer <token>`).
    /// Visible in the process list: prefer --admin-token-file outside tests.
    #[arg(long, value_name = "TOKEN", conflicts_with = "admin_token_file")]
    admin_token: Option<String>,
    /// Reads the admin token from a file (e.g. a mounted Kubernetes Secret).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// On SIGTERM, how long in-flight requests get to finish before the process exits.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = duration)]
    drain_timeout: Duration,
    /// How often the config files are checked for changes; 0 turns polling off (SIGHUP and
    /// POST /reload still reload).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = duration)]
    reload_poll: Duration,
    /// Run this canary (a Flagger-shaped `Canary` document) inside the sidecar: gates read
    /// from its own metrics, weights set on its own route table. It keeps serving after.
    #[arg(long, value_name = "SPEC")]
    canary: Option<PathBuf>,
    /// Where the --canary run writes report.json and report.svg.
    #[arg(long, value_name = "DIR", requires = "canary")]
    report: Option<PathBuf>,
    /// Proxy worker threads, each with its own single-threaded runtime and upstream
    /// connections (nginx's `worker_processes`). Default: `TOKIO_WORKER_THREADS` when set,
    /// else one per CPU.
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
}

/// `TOKIO_WORKER_THREADS` when set (the benchmark harness sets it for every contender's
/// thread count), else one worker per CPU.
fn default_workers() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// How long a shutdown waits for an in-process canary run to roll back and write its report.
const CANARY_STOP_WAIT: Duration = Duration::from_secs(3);

fn duration(text: &str) -> Result<Duration, String> {
    weir_router::parse_duration(text)
}

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
    fn from_args(args: ServeArgs) -> Result<Self> {
        let admin_token = match (&args.admin_token, &args.admin_token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file).with_context(|| {
                    format!("cannot read --admin-token-file {}", file.display())
                })?;
                Some(text.trim().to_string())
            }
            (None, None) => None,
        };
        Ok(SidecarOptions {
            config: args.config,
            listen: args.listen,
            admin: args.admin,
            workload: args.workload,
            admin_token,
            drain_timeout: args.drain_timeout,
            reload_poll: (!args.reload_poll.is_zero()).then_some(args.reload_poll),
            workers: args.workers.unwrap_or_else(default_workers).max(1),
        })
    }

    /// Refuses an admin API that anyone on the network could drive.
    fn check(&self) -> Result<()> {
        anyhow::ensure!(
            !self.config.is_empty(),
            "no config file: pass --config FILE"
        );
        match &self.admin_token {
            Some(t) if t.is_empty() => anyhow::bail!("the admin token is empty"),
            Some(t) if t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                anyhow::bail!("the admin token must not contain whitespace")
            }
            Some(_) => Ok(()),
            None if self.admin.ip().is_loopback() => Ok(()),
            None => anyhow::bail!(
                "refusing to start: the admin API would listen on {}, which is not a loopback address, without a token. \
                 Anyone who can reach it could change the weights. Pass --admin-token (or --admin-token-file), \
                 or bind the admin API to 127.0.0.1",
                self.admin
            ),
        }
    }
}

/// A config that the validator refused at startup: nothing is served.
#[derive(Debug, thiserror::Error)]
#[error("the config is refused by the validator; nothing is served")]
pub struct ConfigRefused {
    /// Why, errors first.
    pub findings: Findings,
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
    done: JoinHandle<Result<()>>,
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
    pub async fn wait(self) -> Result<()> {
        self.done.await.context("the sidecar task panicked")?
    }

    /// Begins the shutdown and waits for the drain to end.
    pub async fn shutdown(self) -> Result<()> {
        self.shutdown.shutdown();
        self.wait().await
    }
}

/// Loads and validates the config, binds both listeners and starts the proxy, the admin API
/// and the config poller. A refused config is a [`ConfigRefused`] error.
pub async fn start(options: SidecarOptions) -> Result<RunningSidecar> {
    options.check()?;
    let snapshot = Snapshot::read(&options.config);
    let sources = snapshot.sources(&options.config)?;
    let (live, findings) = LiveTable::from_sources(&sources).map_err(|refused| ConfigRefused {
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

    let proxy_listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", options.listen))?;
    let admin_listener = TcpListener::bind(options.admin)
        .await
        .with_context(|| format!("cannot listen on {} (--admin)", options.admin))?;
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

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
async fn supervise(s: Supervised) -> Result<()> {
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
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("the proxy failed")),
        Err(e) => Err(anyhow::Error::new(e).context("the proxy task panicked")),
    }
}

/// `weir serve`.
pub fn run(args: ServeArgs) -> Result<ExitCode> {
    init_tracing();
    let canary = match &args.canary {
        Some(spec) => Some(ServeCanary::load(spec, args.report.clone())?),
        None => None,
    };
    let options = SidecarOptions::from_args(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(options, canary));
    // Connections cut off by the drain timeout must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

async fn serve(options: SidecarOptions, canary: Option<ServeCanary>) -> Result<ExitCode> {
    // Installed before the ready line: from then on SIGHUP must reload, never kill.
    let mut hangup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;

    let running = match start(options).await {
        Ok(running) => running,
        Err(e) => {
            if let Some(refused) = e.downcast_ref::<ConfigRefused>() {
                eprint!("{}", refused.findings);
                eprintln!("weir: {refused}");
                return Ok(ExitCode::from(1));
            }
            return Err(e);
        }
    };
    // In-process drivers of the sidecar (the canary's `--canary FILE`) start here, on
    // `running.sidecar()`: its live table, metrics and reloader.
    let canary = match canary {
        Some(c) => Some(c.start(Arc::clone(running.sidecar()))?),
        None => None,
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "weir: ready proxy={} admin={}",
            running.proxy_addr, running.admin_addr
        )?;
        out.flush()?;
    }

    let handle = running.shutdown_handle();
    let reloader = Arc::clone(&running.sidecar().reloader);
    let stopped = running.wait();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            result = &mut stopped => {
                // Stopped without a signal: the proxy failed.
                result?;
                return Ok(ExitCode::from(1));
            }
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                let reloader = Arc::clone(&reloader);
                // The outcome is logged and counted by the reloader.
                tokio::task::spawn_blocking(move || reloader.reload(Trigger::Signal));
            }
            _ = terminate.recv() => {
                tracing::info!("SIGTERM: draining in-flight requests, then exiting");
                break;
            }
            _ = interrupt.recv() => {
                tracing::info!("SIGINT: draining in-flight requests, then exiting");
                break;
            }
        }
    }
    handle.shutdown();
    // A canary run still going is rolled back (within a guard tick) and writes its report
    // while the proxy drains.
    let canary_stopped =
        canary.map(|c| tokio::task::spawn_blocking(move || c.stop(CANARY_STOP_WAIT)));
    tokio::select! {
        result = &mut stopped => {
            result?;
            if let Some(canary) = canary_stopped {
                let _ = canary.await;
            }
            Ok(ExitCode::SUCCESS)
        }
        _ = terminate.recv() => abort_drain(),
        _ = interrupt.recv() => abort_drain(),
    }
}

fn abort_drain() -> Result<ExitCode> {
    tracing::warn!("second signal: exiting without waiting for in-flight requests");
    Ok(ExitCode::from(1))
}
