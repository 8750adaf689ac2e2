//! The shared end-to-end harness: in-process upstream servers on 127.0.0.1:0, config files
//! rendered with their ports, the real `weir` binary spawned on port 0 and awaited through its
//! ready line, an HTTP client, and an `eventually` helper. Every process and server is stopped
//! when its handle drops.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

// === upstreams ===

/// What a test upstream does with a request. Change it at run time through
/// [`Upstream::behavior`].
#[derive(Clone, Debug)]
pub struct Behavior {
    /// Status of normal answers.
    pub status: u16,
    /// Delay before answering.
    pub delay: Duration,
    /// Answer the first N requests with 503, then normally.
    pub fail_first: u64,
    /// Every request whose sequence number (from 1) is divisible by this fails with 500:
    /// `Some(5)` = 20% 5xx.
    pub fail_every: Option<u64>,
    /// Never answer (the connection stays open).
    pub hang: bool,
    /// Answer with the request body instead of the upstream's name.
    pub echo: bool,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            status: 200,
            delay: Duration::ZERO,
            fail_first: 0,
            fail_every: None,
            hang: false,
            echo: false,
        }
    }
}

/// One request an upstream saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

struct UpstreamState {
    name: String,
    behavior: Mutex<Behavior>,
    count: AtomicU64,
    /// Answers by status code.
    answered: Mutex<BTreeMap<u16, u64>>,
    seen: Mutex<Vec<Seen>>,
}

/// An HTTP/1.1 + h2c server on 127.0.0.1:0 that answers with its name in the body and in the
/// `x-upstream` header, counts what it serves, and follows a scriptable [`Behavior`].
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts an upstream on the current tokio runtime.
    pub async fn start(name: &str) -> Upstream {
        Upstream::start_with(name, Behavior::default()).await
    }

    /// Starts an upstream with a behavior.
    pub async fn start_with(name: &str, behavior: Behavior) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState {
            name: name.to_string(),
            behavior: Mutex::new(behavior),
            count: AtomicU64::new(0),
            answered: Mutex::new(BTreeMap::new()),
            seen: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req| serve_upstream(st.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, state, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests received so far.
    pub fn count(&self) -> u64 {
        self.state.count.load(Ordering::SeqCst)
    }

    /// Answers given so far, by status code.
    pub fn answered(&self) -> BTreeMap<u16, u64> {
        self.state.answered.lock().unwrap().clone()
    }

    /// The requests received so far (the last 10,000).
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Changes the behavior from now on.
    pub fn set_behavior(&self, behavior: Behavior) {
        *self.state.behavior.lock().unwrap() = behavior;
    }
}

async fn serve_upstream(
    st: Arc<UpstreamState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = st.count.fetch_add(1, Ordering::SeqCst) + 1;
    let behavior = st.behavior.lock().unwrap().clone();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    {
        let mut seen = st.seen.lock().unwrap();
        if seen.len() >= 10_000 {
            seen.remove(0);
        }
        seen.push(Seen {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts.headers.clone(),
            body_len: body.len(),
        });
    }
    if behavior.hang {
        std::future::pending::<()>().await;
    }
    if !behavior.delay.is_zero() {
        tokio::time::sleep(behavior.delay).await;
    }
    let status = if n <= behavior.fail_first {
        503
    } else if behavior
        .fail_every
        .is_some_and(|k| k > 0 && n.is_multiple_of(k))
    {
        500
    } else {
        behavior.status
    };
    *st.answered.lock().unwrap().entry(status).or_insert(0) += 1;
    let payload = if behavior.echo {
        body
    } else {
        Bytes::from(st.name.clone())
    };
    let resp = Response::builder()
        .status(status)
        .header("x-upstream", st.name.as_str())
        .body(Full::new(payload))
        .unwrap();
    Ok(resp)
}

// === configs ===

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `config/payment-svc.yaml` with its endpoint ports replaced by the given upstreams' and the
/// split set to `v1_weight` / `v2_weight`.
pub fn lesson_config(v1: &Upstream, v2: &Upstream, v1_weight: u32, v2_weight: u32) -> String {
    let text = std::fs::read_to_string(root().join("config/payment-svc.yaml")).unwrap();
    render(&text, v1.port(), v2.port(), v1_weight, v2_weight)
}

/// Replaces the lesson's ports (18081, 18082) and weights (90, 10) in a config text. The
/// weights are matched with the comment that follows them, so that a new weight (100) is never
/// matched again by the next replacement.
pub fn render(text: &str, v1_port: u16, v2_port: u16, v1_weight: u32, v2_weight: u32) -> String {
    text.replace("http: 18081", &format!("http: {v1_port}"))
        .replace("http: 18082", &format!("http: {v2_port}"))
        .replace("weight: 90 #", &format!("weight: {v1_weight} #"))
        .replace("weight: 10 #", &format!("weight: {v2_weight} #"))
}

/// Adds annotations to the lesson's VirtualService (after `weir.dev/max-step`).
pub fn with_annotations(config: &str, annotations: &[(&str, &str)]) -> String {
    let extra: String = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    config.replacen(
        "    weir.dev/max-step: \"50\"\n",
        &format!("    weir.dev/max-step: \"50\"\n{extra}"),
        1,
    )
}

// === the weir binary ===

static BUILD: Once = Once::new();

/// The `weir` binary, built (once per test process) so that tests never run a stale one.
/// `WEIR_BIN` overrides it.
pub fn weir_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("WEIR_BIN") {
        return PathBuf::from(bin);
    }
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "weir", "--bin", "weir"])
            .current_dir(root())
            .status()
            .expect("run cargo build -p weir");
        assert!(status.success(), "cargo build -p weir failed");
    });
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    target.join("debug").join("weir")
}

/// A `weir` command with stdin closed.
pub fn weir_command() -> Command {
    let mut cmd = Command::new(weir_bin());
    cmd.stdin(Stdio::null());
    cmd
}

/// A running `weir serve` child with its config in a temporary directory.
pub struct Weir {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// The process, its output kept; killed when dropped.
    pub run: WeirRun,
}

impl Weir {
    /// Writes `config` to `<tmp>/config.yaml` and starts `weir serve` on port 0.
    pub fn start(config: &str) -> Weir {
        Weir::start_with_args(config, &[])
    }

    /// Same, with extra `weir serve` arguments.
    pub fn start_with_args(config: &str, extra: &[&str]) -> Weir {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config).unwrap();
        Weir::spawn(dir, config_path, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `weir serve --config <path>` (the file must exist); returns the error output if
    /// it exits before it is ready.
    pub fn spawn(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        extra: &[&str],
    ) -> Result<Weir, String> {
        let mut cmd = weir_command();
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--reload-poll",
                "100ms",
            ])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        let mut run = WeirRun::spawn_command(cmd);
        let deadline = Instant::now() + Duration::from_secs(60);
        let ready = loop {
            if let Some(line) = run.line_starting("weir: ready ") {
                break line;
            }
            if let Some(status) = run.try_exit() {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return Err(format!(
                    "weir serve exited before it was ready ({status}); stderr:\n{}",
                    run.stderr()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "weir serve did not become ready in 60 s; stderr:\n{}",
                    run.stderr()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut proxy = None;
        let mut admin = None;
        for part in ready.split_whitespace() {
            if let Some(a) = part.strip_prefix("proxy=") {
                proxy = a.parse().ok();
            } else if let Some(a) = part.strip_prefix("admin=") {
                admin = a.parse().ok();
            }
        }
        Ok(Weir {
            proxy: proxy.expect("ready line has proxy="),
            admin: admin.expect("ready line has admin="),
            dir,
            config_path,
            run,
        })
    }

    /// Everything the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.run.stderr()
    }

    pub fn pid(&self) -> u32 {
        self.run.pid()
    }

    /// Sends a signal by name (`TERM`, `HUP`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        self.run.signal(name);
    }

    /// Waits for the process to exit, up to `timeout`; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        self.run.wait_exit(timeout)
    }

    /// Rewrites the config file atomically (temp file + rename), as an editor or a deploy
    /// tool would.
    pub fn write_config(&self, text: &str) {
        let tmp = self.dir.path().join(".config.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    /// The proxy's base URL.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy)
    }

    /// The admin API's base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// `GET /metrics` text.
    pub async fn metrics(&self) -> String {
        let (status, _, body) = http_request(
            "GET",
            &format!("{}/metrics", self.admin_url()),
            None,
            &[],
            Bytes::new(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "GET /metrics");
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// An admin request with a JSON body; returns the status and the parsed JSON answer
    /// (`Null` when the answer is not JSON).
    pub async fn admin_json(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        let payload = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        let (status, _, body) = http_request(
            method,
            &format!("{}{path}", self.admin_url()),
            None,
            &[("content-type", "application/json")],
            payload,
        )
        .await;
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// A request through the proxy with the given Host header.
    pub async fn send(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        http_request(
            "GET",
            &format!("{}{path}", self.proxy_url()),
            Some(host),
            headers,
            Bytes::new(),
        )
        .await
    }
}

// === HTTP client ===

fn client() -> &'static Client<HttpConnector, Full<Bytes>> {
    static CLIENT: std::sync::OnceLock<Client<HttpConnector, Full<Bytes>>> =
        std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(5))
            .build(connector)
    })
}

/// One HTTP/1.1 request; the body is collected. Panics on connection errors (with the URL).
pub async fn http_request(
    method: &str,
    url: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes) {
    try_http_request(method, url, host, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// One HTTP/1.1 request; connection errors are returned.
pub async fn try_http_request(
    method: &str,
    url: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let mut builder = Request::builder().method(method).uri(url);
    if let Some(h) = host {
        builder = builder.header(http::header::HOST, h);
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = client().request(req).await.map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts.status, parts.headers, body))
}

// === waiting ===

/// Polls `check` every 20 ms until it returns true; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === metrics ===

/// Sums the samples of a metric whose labels include every given pair. `name` is the full
/// sample name (e.g. `istio_requests_total`, `istio_request_duration_milliseconds_bucket`).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_samples(text, name)
        .into_iter()
        .filter(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Every sample of a metric: its labels and value.
pub fn metric_samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (metric, labels) = match head.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (head, ""),
        };
        if metric != name {
            continue;
        }
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        out.push((parse_labels(labels), value));
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        let Some(after) = after.strip_prefix('"') else {
            break;
        };
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        map.insert(key, value);
        rest = &after[end..];
    }
    map
}

/// Binomial bounds: whether `observed` out of `n` is within `sigmas` standard deviations of
/// share `p`.
pub fn within_binomial(observed: u64, n: u64, p: f64, sigmas: f64) -> bool {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (observed as f64 - mean).abs() <= sigmas * sd.max(1.0)
}

/// Reads a file into a string, for tests that check config files.
pub fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap()
}

// === steady traffic, weight watching and the canary CLI (canary.rs, prometheus.rs) ===

/// One request of [`SteadyTraffic`]: which client sent it, when, and who answered.
#[derive(Clone, Debug)]
pub struct Answer {
    pub client: usize,
    pub sent: Instant,
    /// The `x-upstream` header (`v1`, `v2`); empty without an answer.
    pub upstream: String,
    /// 0 without an answer.
    pub status: u16,
}

/// Steady traffic through weir proxies: each client sends `GET /pay` with `Host: payment-svc`
/// in sequence, pausing between requests; clients go round the proxies. Every request is
/// recorded. Stops when dropped.
pub struct SteadyTraffic {
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for SteadyTraffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl SteadyTraffic {
    /// `plain` clients without headers and `tagged` clients sending `x-canary: true`, each
    /// pausing `pause` between requests.
    pub fn start(proxies: &[String], plain: usize, tagged: usize, pause: Duration) -> Self {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..plain + tagged)
            .map(|client| {
                let url = format!("{}/pay", proxies[client % proxies.len()]);
                let headers: &'static [(&'static str, &'static str)] = if client >= plain {
                    &[("x-canary", "true")]
                } else {
                    &[]
                };
                let (answers, stop) = (answers.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let sent = Instant::now();
                        let result = tokio::time::timeout(
                            Duration::from_secs(10),
                            try_http_request(
                                "GET",
                                &url,
                                Some("payment-svc"),
                                headers,
                                Bytes::new(),
                            ),
                        )
                        .await;
                        let (status, upstream) = match result {
                            Ok(Ok((status, h, _))) => (
                                status.as_u16(),
                                h.get("x-upstream")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_string(),
                            ),
                            _ => (0, String::new()),
                        };
                        answers.lock().unwrap().push(Answer {
                            client,
                            sent,
                            upstream,
                            status,
                        });
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        SteadyTraffic {
            answers,
            stop,
            tasks,
        }
    }

    /// Every request so far.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }

    /// Whether every client has had an answer to a request sent after `t`: nothing sent
    /// before `t` is still in flight.
    pub fn settled_since(&self, t: Instant) -> bool {
        let answers = self.answers.lock().unwrap();
        (0..self.tasks.len()).all(|c| answers.iter().any(|a| a.client == c && a.sent > t))
    }
}

/// Polls a sidecar's `/metrics` every 50 ms and keeps each distinct value of
/// `weir_route_weight` for one version on one rule, in order.
pub struct WeightWatch {
    seen: Arc<Mutex<Vec<u32>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WeightWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WeightWatch {
    /// Watches `admin_url` (with a bearer `token` if given).
    pub fn start(admin_url: &str, token: Option<&str>, rule: &str, version: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let url = format!("{admin_url}/metrics");
        let auth = token.map(|t| format!("Bearer {t}"));
        let (rule, version, keep) = (rule.to_string(), version.to_string(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let headers: Vec<(&str, &str)> = auth
                    .as_deref()
                    .map(|a| ("authorization", a))
                    .into_iter()
                    .collect();
                if let Ok((StatusCode::OK, _, body)) =
                    try_http_request("GET", &url, None, &headers, Bytes::new()).await
                {
                    let text = String::from_utf8_lossy(&body);
                    let weight = metric_samples(&text, "weir_route_weight")
                        .into_iter()
                        .find(|(l, _)| {
                            l.get("rule") == Some(&rule)
                                && l.get("destination_version") == Some(&version)
                        })
                        .map(|(_, v)| v.round() as u32);
                    if let Some(w) = weight {
                        let mut seen = keep.lock().unwrap();
                        if seen.last() != Some(&w) {
                            seen.push(w);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        WeightWatch { seen, task }
    }

    /// The distinct weights seen so far, in order.
    pub fn seen(&self) -> Vec<u32> {
        self.seen.lock().unwrap().clone()
    }
}

/// Whether `wanted` appears in `seen` in order, other values allowed between.
pub fn in_order(wanted: &[u32], seen: &[u32]) -> bool {
    let mut seen = seen.iter();
    wanted.iter().all(|w| seen.any(|s| s == w))
}

/// A `weir` child (e.g. `weir canary`) whose output lines are kept with the instant each
/// was read. Killed when dropped.
pub struct WeirRun {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    stderr: Arc<Mutex<String>>,
}

impl Drop for WeirRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl WeirRun {
    /// Starts `weir <args>`.
    pub fn spawn(args: &[&str]) -> WeirRun {
        let mut cmd = weir_command();
        cmd.args(args);
        WeirRun::spawn_command(cmd)
    }

    /// Starts a prepared `weir` command with its output piped and kept.
    pub fn spawn_command(mut cmd: Command) -> WeirRun {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weir");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                keep.lock().unwrap().push((Instant::now(), line));
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let keep = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = keep.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        WeirRun {
            child: Some(child),
            lines,
            stderr,
        }
    }

    /// Waits (without blocking the async runtime) for the exit, up to `timeout`; panics with
    /// the output when it does not exit in time.
    pub async fn exit_code(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                // Let the reader threads take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                panic!(
                    "weir did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the exit and asserts its code, showing the output when it differs.
    pub async fn assert_exit(&mut self, want: i32, timeout: Duration) {
        let code = self.exit_code(timeout).await;
        assert_eq!(
            code,
            want,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
    }

    /// The exit status, if the process has exited (without waiting).
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits for the exit, up to `timeout`, blocking the thread; returns the exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                self.child = None;
                return status.code();
            }
            if self.child.is_none() || Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the process is running").id()
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// The rest of the first stdout line that starts with `prefix`.
    pub fn line_starting(&self, prefix: &str) -> Option<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find_map(|(_, l)| l.strip_prefix(prefix).map(str::to_string))
    }

    /// When the first line containing `text` was read.
    pub fn line_seen_at(&self, text: &str) -> Option<Instant> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l.contains(text))
            .map(|(at, _)| *at)
    }

    /// Everything written on stdout so far.
    pub fn stdout(&self) -> String {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| format!("{l}\n"))
            .collect()
    }

    /// Everything written on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}
