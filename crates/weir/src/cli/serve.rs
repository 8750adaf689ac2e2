//! `weir serve`: the command line around [`weir_proxy::start`]: options, the ready line, and
//! signals for reload (SIGHUP) and graceful shutdown (SIGTERM, SIGINT).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use weir_proxy::access_log::{AccessLog, AccessLogFormat};
use weir_proxy::{ConnectionLimits, PodIdentity, SidecarOptions, StartError, Trigger};
use weir_router::path::Normalization;

use super::{ConfigLimitsArgs, init_tracing};
use weir_canary::in_process::ServeCanary;

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
    /// This workload's name (the Deployment's): `source_workload` of outbound requests,
    /// `destination_workload` of inbound ones (Flagger's `destination_workload=~"<target>"`).
    /// Default: $WEIR_WORKLOAD or $ISTIO_META_WORKLOAD_NAME (set from the downward API), else
    /// the `service.istio.io/workload-name` or `app` label of --pod-labels.
    #[arg(long, value_name = "NAME", default_value = "")]
    workload: String,
    /// The pod's namespace (`*_workload_namespace`). Default: $POD_NAMESPACE (the downward
    /// API's `metadata.namespace`), else `unknown`.
    #[arg(long, value_name = "NS", default_value = "")]
    namespace: String,
    /// The pod's labels, as a downward-API volume writes `metadata.labels` (`key="value"`
    /// lines): `app`, `version`, `service.istio.io/canonical-name` and `-revision` become
    /// the `*_app`, `*_version`, `*_canonical_service` and `*_canonical_revision` labels.
    #[arg(long, value_name = "FILE")]
    pod_labels: Option<PathBuf>,
    /// The inbound listener (Istio's 0.0.0.0:15006): connections `weir init` redirected to
    /// the app's ports are forwarded to 127.0.0.1:<port> and counted with
    /// `reporter="destination"`. Off by default.
    #[arg(long, value_name = "ADDR")]
    inbound: Option<SocketAddr>,
    /// An access log line per request (outbound and inbound), in Envoy's default format:
    /// `stdout` or a file to append to. Off by default.
    #[arg(long, value_name = "stdout|FILE")]
    access_log: Option<PathBuf>,
    /// The access log's format: `text` (Envoy's default) or `json` (one object a line).
    #[arg(long, value_name = "text|json", default_value = "text", value_parser = access_log_format, requires = "access_log")]
    access_log_format: AccessLogFormat,
    /// A bearer token every admin request must carry (`Authorization: Bearer <token>`).
    /// Visible in the process list: prefer --admin-token-file outside tests.
    #[arg(long, value_name = "TOKEN", conflicts_with = "admin_token_file")]
    admin_token: Option<String>,
    /// Reads the admin token from a file (e.g. a mounted Kubernetes Secret).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// On SIGTERM, how long in-flight requests get to finish before the process exits.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = weir_router::parse_duration)]
    drain_timeout: Duration,
    /// How often the config files are checked for changes; 0 turns polling off (SIGHUP and
    /// POST /reload still reload).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = weir_router::parse_duration)]
    reload_poll: Duration,
    /// Where admin writes (weights, rollback latches, promotions) are saved before they are
    /// acknowledged, and re-applied from on start and every reload. Default:
    /// `<first --config>.weir-state.json`. In Kubernetes, an `emptyDir` volume.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// A health listener for the kubelet's probes (Istio's port: 0.0.0.0:15021):
    /// `GET /healthz/ready` answers 200 while serving and 503 once draining; no token, and
    /// nothing else is served there.
    #[arg(long, value_name = "ADDR")]
    health: Option<SocketAddr>,
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
    /// From a connection's accept to the end of its first request head (and the longest any
    /// later head may take); a connection without a request by then is closed.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = weir_router::parse_duration)]
    head_timeout: Duration,
    /// How long a downstream connection stays open with no request in flight (Envoy's
    /// idle_timeout).
    #[arg(long, value_name = "DUR", default_value = "1h", value_parser = weir_router::parse_duration)]
    idle_timeout: Duration,
    /// How long a request body may send nothing before the request is answered 408 (Envoy's
    /// stream_idle_timeout); 0 turns it off.
    #[arg(long, value_name = "DUR", default_value = "5m", value_parser = weir_router::parse_duration)]
    body_timeout: Duration,
    /// h2 PING interval; a PING unanswered for 20 s closes the connection.
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = weir_router::parse_duration)]
    h2_keepalive: Duration,
    /// Most h2 streams open at once on one downstream connection; more are refused
    /// (REFUSED_STREAM).
    #[arg(long, value_name = "N", default_value_t = ConnectionLimits::DEFAULT.h2_max_concurrent_streams)]
    h2_max_streams: u32,
    /// Most downstream connections at once; more are answered 503 and closed. Default: half
    /// of the file descriptors left after --fd-reserve.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// File descriptors kept free for the admin API, health checks and config reads.
    #[arg(long, value_name = "N", default_value_t = weir_proxy::ConnectionLimits::DEFAULT.fd_reserve)]
    fd_reserve: usize,
    /// How request paths are normalised before matching and forwarding, as Istio's
    /// pathNormalization: base (dot segments, %-encoded unreserved characters, `\`), merge-slashes
    /// (base, then `//` -> `/`), none.
    #[arg(long, value_name = "MODE", default_value = "base")]
    path_normalization: Normalization,
    #[command(flatten)]
    limits: ConfigLimitsArgs,
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

/// The sidecar's options from the command line; reads `--admin-token-file`.
fn options(args: ServeArgs) -> Result<SidecarOptions> {
    let admin_token = match (&args.admin_token, &args.admin_token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read --admin-token-file {}", file.display()))?;
            Some(text.trim().to_string())
        }
        (None, None) => None,
    };
    let identity =
        PodIdentity::from_pod(&args.workload, &args.namespace, args.pod_labels.as_deref())
            .context("--pod-labels")?;
    let access_log = match &args.access_log {
        None => None,
        Some(to) if to.as_os_str() == "stdout" => {
            Some(Arc::new(AccessLog::stdout(args.access_log_format)))
        }
        Some(path) => Some(Arc::new(
            AccessLog::file(path, args.access_log_format).with_context(|| {
                format!("cannot open --access-log {} for appending", path.display())
            })?,
        )),
    };
    let mut limits = ConnectionLimits::DEFAULT;
    limits.head_timeout = args.head_timeout;
    limits.idle_timeout = args.idle_timeout;
    limits.body_timeout = args.body_timeout;
    limits.h2_keepalive_interval = args.h2_keepalive;
    limits.h2_max_concurrent_streams = args.h2_max_streams;
    limits.max_connections = args.max_connections;
    limits.fd_reserve = args.fd_reserve;
    Ok(SidecarOptions {
        config: args.config,
        listen: args.listen,
        admin: args.admin,
        workload: identity.workload.clone(),
        identity: Some(identity),
        inbound: args.inbound,
        access_log,
        admin_token,
        drain_timeout: args.drain_timeout,
        reload_poll: (!args.reload_poll.is_zero()).then_some(args.reload_poll),
        workers: args.workers.unwrap_or_else(default_workers).max(1),
        state: args.state,
        limits,
        path_normalization: args.path_normalization,
        health: args.health,
        release_memory: Some(crate::release_memory),
    })
}

fn access_log_format(text: &str) -> Result<AccessLogFormat, String> {
    match text {
        "text" => Ok(AccessLogFormat::Text),
        "json" => Ok(AccessLogFormat::Json),
        other => Err(format!(
            "{other:?} is not an access log format: text (Envoy's default) or json"
        )),
    }
}

/// `weir serve`.
pub fn run(args: ServeArgs) -> Result<ExitCode> {
    init_tracing();
    args.limits.apply();
    // As Envoy's start scripts do: every descriptor the hard limit allows (the connection cap
    // is derived from it).
    let fds = weir_proxy::raise_nofile_limit();
    tracing::debug!(?fds, "RLIMIT_NOFILE");
    let canary = match &args.canary {
        Some(spec) => Some(
            ServeCanary::load(spec, args.report.clone())
                .map_err(|e| anyhow::anyhow!("--canary {}: {e}", spec.display()))?,
        ),
        None => None,
    };
    let options = options(args)?;
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

async fn serve(options: SidecarOptions, canary: Option<ServeCanary>) -> Result<ExitCode> {
    // Installed before the ready line: from then on SIGHUP must reload, never kill.
    let mut hangup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;

    let running = match weir_proxy::start(options).await {
        Ok(running) => running,
        Err(e @ StartError::Refused { .. }) => {
            if let Some(findings) = e.findings() {
                eprint!("{findings}");
            }
            eprintln!("weir: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    // In-process drivers of the sidecar (the canary's `--canary FILE`) start here, on
    // `running.sidecar()`: its live table, metrics and reloader.
    let canary = match canary {
        Some(c) => Some(c.start(Arc::clone(running.sidecar()))?),
        None => None,
    };
    {
        let mut out = std::io::stdout().lock();
        let health = running
            .health_addr
            .map_or_else(String::new, |a| format!(" health={a}"));
        write!(
            out,
            "weir: ready proxy={} admin={}{health}",
            running.proxy_addr, running.admin_addr
        )?;
        if let Some(inbound) = running.inbound_addr {
            write!(out, " inbound={inbound}")?;
        }
        writeln!(out)?;
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
