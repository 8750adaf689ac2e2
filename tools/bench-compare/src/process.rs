//! Starting and stopping the processes of a run: the upstreams child, each proxy in the
//! foreground with its config in a temp dir, on loopback ports chosen free, pinned with
//! `taskset` when asked. Every process is stopped when its handle drops.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::args::Contender;
use crate::configs::{self, Routing};
use crate::procfs;

/// A command run under `taskset -c CPUS` when `cpus` is given. taskset execs, so the child's
/// pid is the program's own.
pub fn pinned(cpus: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A loopback address nobody listens on right now (bound to port 0, then released).
pub fn free_addr() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// Sends `signal` to `pid` with kill(1): the suite forbids `unsafe`, so no libc.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Stops a process tree: SIGTERM to the root, up to 20 s to exit (nginx's master stops its
/// workers; callgrind writes its counts), then SIGKILL to whatever of the tree is left.
fn stop_tree(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pids = procfs::tree(child.id());
    signal(child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in pids.iter().rev() {
        if Path::new(&format!("/proc/{pid}")).exists() {
            signal(*pid, "KILL");
        }
    }
    let _ = child.wait();
}

// === upstreams ===

/// The v1 and v2 upstream servers, in their own child process.
pub struct Upstreams {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// v1's address.
    pub v1: SocketAddr,
    /// v2's address.
    pub v2: SocketAddr,
}

impl Upstreams {
    /// Starts this bench binary again as `upstreams`.
    pub fn start(cpus: Option<&str>, threads: u32, body_bytes: usize) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
        let mut child = pinned(cpus, exe)
            .args(["upstreams", &threads.to_string(), &body_bytes.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting upstreams: {e}"))?;
        let stdin = child.stdin.take().ok_or("upstreams stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("upstreams stdout")?);
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let (v1, v2) = crate::upstream::parse_ready(&line)
            .ok_or_else(|| format!("upstreams did not start: `{}`", line.trim()))?;
        Ok(Upstreams {
            child,
            stdin,
            stdout,
            v1,
            v2,
        })
    }

    /// Requests served so far by (v1, v2).
    pub fn counts(&mut self) -> Result<(u64, u64), String> {
        writeln!(self.stdin, "counts").map_err(|e| format!("upstreams: {e}"))?;
        self.stdin.flush().map_err(|e| format!("upstreams: {e}"))?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("upstreams: {e}"))?;
        crate::upstream::parse_counts(&line)
            .ok_or_else(|| format!("upstreams answered `{}`", line.trim()))
    }

    /// The upstream process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        stop_tree(&mut self.child);
    }
}

// === proxies ===

/// A running proxy.
pub struct Proxy {
    child: Child,
    /// Where to send the load.
    pub addr: SocketAddr,
    /// Keeps the config and logs until the proxy is gone.
    _dir: tempfile::TempDir,
}

/// How to start the proxies.
pub struct ProxyEnv<'a> {
    /// The weir binary.
    pub weir: &'a Path,
    /// The `pingora-split` binary (`tools/pingora-split`).
    pub pingora: &'a Path,
    /// The lesson's `config/payment-svc.yaml`.
    pub lesson_yaml: &'a str,
    /// Cores for the proxy, `taskset -c` syntax.
    pub cpus: Option<&'a str>,
    /// Run the proxy under `valgrind --tool=callgrind`, writing its counts here (nginx then
    /// runs as one process, without a master).
    pub callgrind_out: Option<&'a Path>,
}

impl ProxyEnv<'_> {
    /// The command that starts `program`: pinned, and under callgrind when asked.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self.callgrind_out {
            Some(out) => {
                let mut c = pinned(self.cpus, "valgrind");
                c.arg("--tool=callgrind")
                    .arg(format!("--callgrind-out-file={}", out.display()))
                    .arg(program);
                c
            }
            None => pinned(self.cpus, program),
        }
    }
}

impl Proxy {
    /// The root pid of the proxy's process tree.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `contender` (not direct) for `routing` and waits until it serves.
    pub fn start(
        contender: Contender,
        routing: &Routing,
        env: &ProxyEnv<'_>,
    ) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("weir-compare-{}-", contender.name()))
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let log = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let write = |name: &str, text: &str| -> Result<PathBuf, String> {
            let p = dir.path().join(name);
            std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok(p)
        };
        let (child, addr) = match contender {
            Contender::Direct => return Err("direct has no proxy".into()),
            Contender::Weir => {
                let config = write(
                    "payment-svc.yaml",
                    &configs::weir_config(env.lesson_yaml, routing)?,
                )?;
                let mut child = env
                    .command(env.weir)
                    .arg("serve")
                    .arg("--config")
                    .arg(&config)
                    .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
                    .env("TOKIO_WORKER_THREADS", routing.threads.to_string())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(stderr)
                    .spawn()
                    .map_err(|e| format!("starting {}: {e}", env.weir.display()))?;
                let addr = weir_ready(&mut child, &log)?;
                (child, addr)
            }
            Contender::Nginx => {
                let mut text = configs::nginx_config(routing, dir.path());
                if env.callgrind_out.is_some() {
                    text = text.replace("master_process on;", "master_process off;");
                }
                let conf = write("nginx.conf", &text)?;
                let child = env
                    .command("nginx")
                    .arg("-p")
                    .arg(dir.path())
                    .arg("-c")
                    .arg(&conf)
                    .arg("-e")
                    .arg(dir.path().join("error.log"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(stderr)
                    .spawn()
                    .map_err(|e| format!("starting nginx: {e}"))?;
                (child, routing.listen)
            }
            Contender::Haproxy => {
                let conf = write("haproxy.cfg", &configs::haproxy_config(routing))?;
                let child = env
                    .command("haproxy")
                    .arg("-db")
                    .arg("-f")
                    .arg(&conf)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(stderr)
                    .spawn()
                    .map_err(|e| format!("starting haproxy: {e}"))?;
                (child, routing.listen)
            }
            Contender::Pingora => {
                let child = env
                    .command(env.pingora)
                    .args(configs::pingora_args(routing, dir.path()))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(stderr)
                    .spawn()
                    .map_err(|e| format!("starting {}: {e}", env.pingora.display()))?;
                (child, routing.listen)
            }
        };
        let mut proxy = Proxy {
            child,
            addr,
            _dir: dir,
        };
        // Under callgrind start-up is some 50 times slower (HAProxy: seconds of OpenSSL set-up).
        let patience = Duration::from_secs(if env.callgrind_out.is_some() { 180 } else { 30 });
        proxy.wait_listening(&log, patience)?;
        Ok(proxy)
    }

    fn wait_listening(&mut self, log: &Path, patience: Duration) -> Result<(), String> {
        let deadline = Instant::now() + patience;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {}", tail(log)));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not listening on {} after {patience:?}: {}",
                    self.addr,
                    tail(log)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        stop_tree(&mut self.child);
    }
}

/// The last lines of a log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(5);
    let t = lines[from..].join(" | ");
    if t.is_empty() { "no output".into() } else { t }
}

/// Parses weir's `weir: ready proxy=<addr> admin=<addr>` line: the proxy address.
pub fn parse_weir_ready(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix("weir: ready ")?
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("proxy="))?
        .parse()
        .ok()
}

/// Waits up to 30 s for weir's ready line; afterwards its stdout is drained by a thread so that
/// a chatty weir never blocks on a full pipe.
fn weir_ready(child: &mut Child, log: &Path) -> Result<SocketAddr, String> {
    let stdout = child.stdout.take().ok_or("weir stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let ready = if sent { None } else { parse_weir_ready(&line) };
            if let Some(addr) = ready {
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(addr) => Ok(addr),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("no ready line within 30 s: {}", tail(log)))
        }
    }
}
