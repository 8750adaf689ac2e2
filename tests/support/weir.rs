//! The real `weir` binary: built once, spawned on port 0, awaited through its ready line, and
//! stopped when its handle drops.

use super::*;

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
    /// The extra `weir serve` arguments it was started with.
    extra: Vec<String>,
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
        Weir::spawn_under(&[], dir, config_path, extra)
    }

    /// [`Weir::spawn`] run by a wrapper command (`["prlimit", "--nofile=1024:1024"]`), which
    /// must exec the `weir` binary it is given.
    pub fn spawn_under(
        wrapper: &[&str],
        dir: tempfile::TempDir,
        config_path: PathBuf,
        extra: &[&str],
    ) -> Result<Weir, String> {
        let mut cmd = match wrapper.split_first() {
            None => weir_command(),
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(weir_bin()).stdin(Stdio::null());
                cmd
            }
        };
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
            extra: extra.iter().map(|a| a.to_string()).collect(),
        })
    }

    /// Stops the process with `signal` (`KILL` is an OOM kill), waits for it, and starts
    /// `weir serve` again on the same directory, config and arguments (new ports).
    pub fn restart(mut self, signal: &str) -> Weir {
        self.signal(signal);
        assert!(
            self.wait_exit(Duration::from_secs(20)).is_some() || signal == "KILL",
            "weir serve did not exit on SIG{signal}"
        );
        let Weir {
            dir,
            config_path,
            extra,
            ..
        } = self;
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        Weir::spawn(dir, config_path, &extra).unwrap_or_else(|e| panic!("{e}"))
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

    /// One request to the admin API, answered whatever the status.
    pub async fn admin_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let url = format!("{}{path}", self.admin_url());
        let body = Bytes::from(body.to_string());
        http_request(method, &url, None, headers, body).await
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
