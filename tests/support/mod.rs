//! The shared end-to-end harness: in-process upstream servers on 127.0.0.1:0, config files
//! rendered with their ports, the real `weir` binary spawned on port 0 and awaited through its
//! ready line, an HTTP client, and an `eventually` helper. Every process and server is stopped
//! when its handle drops.
#![allow(dead_code)]

mod http;
mod metrics;
mod netns;
mod prometheus;
mod raw_upstream;
mod traffic;
mod upstream;
mod weir;

// Every test crate uses a part of the harness.
#[allow(unused_imports)]
pub use self::{
    http::*, metrics::*, netns::*, prometheus::*, raw_upstream::*, traffic::*, upstream::*, weir::*,
};

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use ::http::{HeaderMap, Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A `/proc/PID/status` figure in KiB (`VmRSS`, `VmHWM`).
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
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

/// Reads a file into a string, for tests that check config files.
pub fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap()
}
