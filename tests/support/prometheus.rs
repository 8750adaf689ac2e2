//! A real Prometheus (Debian's `prometheus` package, installed by
//! `scripts/install-test-deps.sh`) scraping given targets every second, with its own storage.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

use super::try_http_request;

/// How long a test waits for Prometheus to start or to see the traffic.
pub const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);

/// A Prometheus server with its own storage; killed when dropped.
pub struct Prometheus {
    pub url: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// The binary: `$WEIR_PROMETHEUS` or Debian's `/usr/bin/prometheus`. Missing is a failure,
    /// never a skip: CI installs it.
    pub fn binary() -> PathBuf {
        let bin = std::env::var_os("WEIR_PROMETHEUS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
        assert!(
            bin.exists(),
            "{} is missing: these tests need a real Prometheus. Run `sudo bash scripts/install-test-deps.sh` \
             (Debian's `prometheus` package), or point WEIR_PROMETHEUS at a prometheus binary",
            bin.display()
        );
        bin
    }

    /// Starts Prometheus on a free loopback port, scraping these addresses' `/metrics` every
    /// second.
    pub fn start(targets: &[String]) -> Prometheus {
        Prometheus::start_with(&[], &format!("127.0.0.1:{}", free_port()), targets, None)
    }

    /// Starts Prometheus listening on `listen`, its command line prefixed with `prefix` (e.g.
    /// `ip netns exec NAME`), scraping these addresses' `/metrics` every second, with
    /// `Authorization: Bearer <token>` when given.
    pub fn start_with(
        prefix: &[&str],
        listen: &str,
        targets: &[String],
        token: Option<&str>,
    ) -> Prometheus {
        let bin = Prometheus::binary();
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let auth = token.map_or_else(String::new, |t| {
            format!("  authorization:\n    credentials: '{t}'\n")
        });
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n- job_name: weir\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  \
             metrics_path: /metrics\n{auth}  static_configs:\n  - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("prometheus.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = match prefix {
            [] => Command::new(&bin),
            [first, rest @ ..] => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(&bin);
                cmd
            }
        };
        let child = cmd
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            url: format!("http://{listen}"),
            child,
            log,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log when Prometheus has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("prometheus exited ({status}):\n{}", self.log());
        }
    }

    /// Waits for `/-/ready` (reached from this process's network namespace).
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + PROMETHEUS_WAIT;
        loop {
            if let Ok((StatusCode::OK, _, _)) = try_http_request(
                "GET",
                &format!("{}/-/ready", self.url),
                None,
                &[],
                Bytes::new(),
            )
            .await
            {
                return;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in {PROMETHEUS_WAIT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An instant query's single value, if it returned one.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let url = format!("{}/api/v1/query?query={}", self.url, encode(promql));
        let (status, _, body) = try_http_request("GET", &url, None, &[], Bytes::new())
            .await
            .ok()?;
        if status != StatusCode::OK {
            return None;
        }
        first_value(&String::from_utf8_lossy(&body))
    }
}

/// The first sample's value of a `/api/v1/query` answer.
pub fn first_value(answer: &str) -> Option<f64> {
    let answer: Value = serde_json::from_str(answer).ok()?;
    answer["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

/// A free loopback port: bound, read and released (Prometheus must bind it itself).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Percent-encodes a query parameter.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
