//! `weir upstream`: a small, fast HTTP server standing in for one version of a service, for
//! `weir demo`, for trying the sidecar by hand, and for benchmarks.
//!
//! ```text
//! weir upstream --listen 127.0.0.1:18081 --name v1
//! weir upstream --listen 127.0.0.1:18082 --name v2 --error-rate 0.2 --latency-ms 5
//! ```
//!
//! Every answer carries the version's name in the `x-upstream` header (and, by default, as the
//! body). Failures are spread evenly and deterministically: with `--error-rate 0.2` exactly
//! one request in five answers 500, so a canary gate sees the same rate in every window.
//! Requests carrying `x-canary: true` (the dark launch's QA traffic) are counted apart, which
//! is how `weir demo` shows that only they reached the canary. SIGUSR1 prints what it has served
//! so far on stderr and goes on serving; SIGTERM prints it and exits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Parts per million in one: error rates are kept as integers so that they can be changed
/// atomically while serving.
const PPM: u64 = 1_000_000;

#[derive(clap::Args, Debug)]
pub struct UpstreamArgs {
    /// Where to listen.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:18081")]
    listen: SocketAddr,
    /// The version's name: the `x-upstream` header and the default body.
    #[arg(long, value_name = "NAME", default_value = "v1")]
    name: String,
    /// Share of requests answered with 500, from 0 to 1 (0.2 = every fifth request).
    #[arg(long, value_name = "RATE", default_value = "0", value_parser = error_rate)]
    error_rate: f64,
    /// Delay before every answer, in ms.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency_ms: u64,
    /// Answer with a body of this many bytes instead of the name.
    #[arg(long, value_name = "N")]
    body_bytes: Option<usize>,
    /// Plain TCP instead of HTTP, the server speaking first as MySQL or SMTP do: every
    /// connection gets `<name>` and a newline, then its own bytes echoed back.
    #[arg(long)]
    tcp_greeting: bool,
}

/// The `--tcp-greeting` server: the name and a newline on every connection, then an echo.
async fn greet(listener: TcpListener, name: String) {
    use tokio::io::AsyncWriteExt as _;
    let greeting = Bytes::from(format!("{name}\n"));
    while let Ok((mut stream, _)) = listener.accept().await {
        let greeting = greeting.clone();
        tokio::spawn(async move {
            if stream.write_all(&greeting).await.is_ok() {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            }
        });
    }
}

fn error_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number between 0 and 1"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!(
            "{text} is not between 0 and 1 (0.2 = 20% of requests fail)"
        ))
    }
}

/// How a demo upstream answers. Everything but the body can change while it serves.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// The version's name.
    pub name: String,
    /// Share of requests answered 500, 0 to 1.
    pub error_rate: f64,
    /// Delay before every answer.
    pub latency: Duration,
    /// Body size in bytes; `None` answers with the name.
    pub body_bytes: Option<usize>,
}

impl UpstreamSettings {
    /// A healthy, instant version answering with its name.
    pub fn named(name: &str) -> Self {
        UpstreamSettings {
            name: name.to_string(),
            error_rate: 0.0,
            latency: Duration::ZERO,
            body_bytes: None,
        }
    }
}

/// What an upstream has served so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// Every request.
    pub requests: u64,
    /// Requests carrying `x-canary: true`.
    pub tagged: u64,
    /// Answers with status 500.
    pub errors: u64,
}

impl Served {
    /// Requests without `x-canary: true`.
    pub fn untagged(&self) -> u64 {
        self.requests - self.tagged
    }
}

struct State {
    name: HeaderValue,
    body: Bytes,
    error_ppm: AtomicU32,
    latency_us: AtomicU64,
    requests: AtomicU64,
    tagged: AtomicU64,
    errors: AtomicU64,
}

/// A running upstream on the current tokio runtime; it stops accepting when dropped.
pub struct DemoUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Drop for DemoUpstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl DemoUpstream {
    /// Binds `addr` (port 0 picks a free port) and starts serving.
    pub async fn start(addr: SocketAddr, settings: UpstreamSettings) -> Result<DemoUpstream> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let name = HeaderValue::from_str(&settings.name)
            .with_context(|| format!("{:?} cannot be a header value", settings.name))?;
        let body = match settings.body_bytes {
            None => Bytes::from(settings.name.clone()),
            Some(n) => Bytes::from(vec![b'x'; n]),
        };
        let state = Arc::new(State {
            name,
            body,
            error_ppm: AtomicU32::new(0),
            latency_us: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            tagged: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        });
        let upstream = DemoUpstream {
            addr,
            state: Arc::clone(&state),
            accept: tokio::spawn(accept(listener, state)),
        };
        upstream.set_error_rate(settings.error_rate);
        upstream.set_latency(settings.latency);
        Ok(upstream)
    }

    /// Answers this share of requests (0 to 1) with 500 from now on.
    pub fn set_error_rate(&self, rate: f64) {
        let ppm = (rate.clamp(0.0, 1.0) * PPM as f64).round() as u32;
        self.state.error_ppm.store(ppm, Ordering::Relaxed);
    }

    /// Delays every answer by this much from now on.
    pub fn set_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.state.latency_us.store(us, Ordering::Relaxed);
    }

    /// What it has served so far.
    pub fn served(&self) -> Served {
        // `tagged` and `errors` are counted after `requests`: read them first so that a
        // snapshot never shows more tagged requests than requests.
        let tagged = self.state.tagged.load(Ordering::SeqCst);
        let errors = self.state.errors.load(Ordering::SeqCst);
        let requests = self.state.requests.load(Ordering::SeqCst);
        Served {
            requests: requests.max(tagged),
            tagged,
            errors,
        }
    }
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "upstream: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let conn = builder
            .serve_connection(
                TokioIo::new(stream),
                service_fn(move |req| answer(Arc::clone(&state), req)),
            )
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

async fn answer(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    if req
        .headers()
        .get("x-canary")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
    {
        state.tagged.fetch_add(1, Ordering::SeqCst);
    }
    let latency = state.latency_us.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_micros(latency)).await;
    }
    let status = if fails(n, u64::from(state.error_ppm.load(Ordering::Relaxed))) {
        state.errors.fetch_add(1, Ordering::SeqCst);
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let mut resp = Response::new(Full::new(state.body.clone()));
    *resp.status_mut() = status;
    resp.headers_mut().insert("x-upstream", state.name.clone());
    Ok(resp)
}

/// Whether the `n`-th request (from 1) fails at `ppm` failures per million: when the running
/// count of failures owed, n x rate, steps up. Failures land evenly, exactly `rate` of any long
/// enough run.
fn fails(n: u64, ppm: u64) -> bool {
    n * ppm / PPM != (n - 1) * ppm / PPM
}

/// `weir upstream`.
pub fn run(args: UpstreamArgs) -> Result<ExitCode> {
    crate::cli::init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir-upstream")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let settings = UpstreamSettings {
            name: args.name.clone(),
            error_rate: args.error_rate,
            latency: Duration::from_millis(args.latency_ms),
            body_bytes: args.body_bytes,
        };
        if args.tcp_greeting {
            let listener = TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            println!(
                "weir upstream: ready addr={} name={} tcp",
                listener.local_addr()?,
                args.name
            );
            tokio::select! {
                () = greet(listener, args.name.clone()) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return Ok(ExitCode::SUCCESS);
        }
        let upstream = DemoUpstream::start(args.listen, settings).await?;
        println!(
            "weir upstream: ready addr={} name={}",
            upstream.addr, args.name
        );
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate =
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        let mut report =
            signal(SignalKind::user_defined1()).context("cannot install the SIGUSR1 handler")?;
        let say = |served: Served| {
            eprintln!(
                "weir upstream {}: served {} requests ({} with x-canary: true, {} answered 500)",
                args.name, served.requests, served.tagged, served.errors
            );
        };
        loop {
            tokio::select! {
                _ = terminate.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                // `kill -USR1`: what it has served so far, and go on serving (as dd(1) does).
                _ = report.recv() => say(upstream.served()),
            }
        }
        say(upstream.served());
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_spread_evenly() {
        for (ppm, n, expected) in [
            (200_000u64, 100u64, 20u64),
            (250_000, 100, 25),
            (0, 100, 0),
            (PPM, 7, 7),
        ] {
            let failed = (1..=n).filter(|&i| fails(i, ppm)).count();
            assert_eq!(failed as u64, expected, "rate {ppm} ppm over {n}");
        }
        // Every fifth request, not the first ones.
        let failed: Vec<u64> = (1..=10).filter(|&i| fails(i, 200_000)).collect();
        assert_eq!(failed, vec![5, 10]);
    }

    #[test]
    fn error_rates_are_between_0_and_1() {
        assert_eq!(error_rate("0.2"), Ok(0.2));
        assert!(error_rate("1.5").is_err());
        assert!(error_rate("-0.1").is_err());
        assert!(error_rate("lots").is_err());
    }
}
