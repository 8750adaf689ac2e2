//! For the tests that build network namespaces (`tests/capture.rs`, `tests/pod.rs`,
//! `tests/transparent.rs`): who may, running the commands that build them, and [`Netns`]: a
//! namespace per role (pod, remote host), a veth pair between them with addresses from the
//! documentation range 198.51.100.0/24, processes started inside (killed when the namespace
//! drops), and clients run inside as a given uid. Nothing touches the root namespace.

use std::io::{BufRead as _, BufReader};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Whether this process may create namespaces and nat rules: root. Without root, `tests`
/// (what needs it) says so and the caller skips, except under CI (`CI` set), where it fails
/// instead.
pub fn privileged(tests: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tests} need root (network namespaces, iptables); CI runs as root"
        );
        eprintln!("skipping: {tests} need root (network namespaces, iptables)");
    }
    root
}

/// Runs a command to success (stdin closed): its stdout; a failure panics with its output.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted (with every process the test started in it) on drop.
pub struct Netns {
    /// The namespace's name (`ip netns` and `/etc/netns/<name>`).
    pub name: String,
    children: Vec<Child>,
}

impl Netns {
    pub fn new(role: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "weir-t{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns {
            name,
            children: Vec::new(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(argv);
        cmd
    }

    pub fn exec(&self, argv: &[&str]) -> String {
        run_ok(&mut self.command(argv))
    }

    /// Starts `argv` in the namespace as `uid` (None: root) and waits for its first line on
    /// stdout, which must start with `ready`; returns that line. The process is killed when
    /// the namespace drops; its stderr is kept in `<tmp>/<namespace>-<n>.log` for failures.
    pub fn spawn_ready(&mut self, uid: Option<u32>, argv: &[&str], ready: &str) -> String {
        let argv = as_uid(uid, argv);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let log = std::env::temp_dir().join(format!("{}-{}.log", self.name, self.children.len()));
        let mut child = self
            .command(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("create the log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {argv:?}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the ready line");
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            line.starts_with(ready),
            "{argv:?} said {line:?}; stderr:\n{stderr}"
        );
        self.children.push(child);
        line
    }

    /// Starts `weir upstream` in the namespace, answering with `name`, and waits for its
    /// ready line; `extra` adds flags (`--tcp-greeting`).
    pub fn upstream_with(&mut self, listen: &str, name: &str, extra: &[&str]) {
        let bin = weir_bin();
        let mut argv = vec![
            bin.to_str().expect("utf-8 path"),
            "upstream",
            "--listen",
            listen,
            "--name",
            name,
        ];
        argv.extend(extra);
        self.spawn_ready(None, &argv, "weir upstream: ready");
    }

    /// Runs `weir init --iptables <backend> <extra>` in the namespace: its output.
    pub fn weir_init(&self, backend: &str, extra: &[&str]) -> String {
        let bin = weir_bin();
        let mut argv = vec![
            bin.to_str().expect("utf-8 path"),
            "init",
            "--iptables",
            backend,
        ];
        argv.extend(extra);
        self.exec(&argv)
    }

    /// [`upstream_with`](Netns::upstream_with) without extra flags.
    pub fn upstream(&mut self, listen: &str, name: &str) {
        self.upstream_with(listen, name, &[]);
    }

    /// Runs a bash `script` in the namespace as `uid`, with a 5 s limit: its stdout, or the
    /// error.
    pub fn bash(&self, uid: Option<u32>, script: &str) -> Result<String, String> {
        let argv = as_uid(uid, &["timeout", "5", "bash", "-c", script]);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = self
            .command(&argv)
            .stdin(Stdio::null())
            .output()
            .expect("run the client");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "exit {:?}: {text}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// One HTTP/1.0 request from inside the namespace, as `uid` (None: root), with bash's
    /// `/dev/tcp`: the whole answer (head and body), or the error.
    pub fn http(
        &self,
        uid: Option<u32>,
        addr: &str,
        port: u16,
        head: &str,
    ) -> Result<String, String> {
        let head = head.replace('\n', "\\r\\n");
        let script =
            format!("exec 3<>/dev/tcp/{addr}/{port} || exit 7; printf '{head}\\r\\n' >&3; cat <&3");
        self.bash(uid, &script)
    }

    /// One HTTP/1.0 GET from inside the namespace, as `uid` (None: root), with bash's
    /// `/dev/tcp`: the body that came back, or the error.
    pub fn get(&self, uid: Option<u32>, addr: &str, port: u16) -> String {
        let answer = self.http(uid, addr, port, "GET / HTTP/1.0\nHost: payment-svc\n");
        match answer.as_deref().map(|a| a.split_once("\r\n\r\n")) {
            Ok(Some((_, body))) => body.to_string(),
            _ => format!("no answer: {answer:?}"),
        }
    }
}

/// `argv` run as `uid` through `setpriv` (None: as is).
fn as_uid(uid: Option<u32>, argv: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(uid) = uid {
        out.extend(
            [
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ]
            .map(String::from),
        );
    }
    out.extend(argv.iter().map(|a| a.to_string()));
    out
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// A pod and a remote host: `pod` 198.51.100.2, `remote` 198.51.100.10 (answering `remote` on
/// :80 and `remote-8080` on :8080), and in the pod a listener on 15001 answering `captured`,
/// standing in for weir's outbound listener.
pub fn pod_and_remote() -> (Netns, Netns) {
    let (mut pod, remote) = linked_pod_and_remote();
    pod.upstream("0.0.0.0:15001", "captured");
    (pod, remote)
}

/// A pod (198.51.100.2) and a remote host (198.51.100.10, answering `remote` on :80 and
/// `remote-8080` on :8080) on a veth pair; nothing runs in the pod yet.
pub fn linked_pod_and_remote() -> (Netns, Netns) {
    let pod = Netns::new("pod");
    let mut remote = Netns::new("remote");
    // The veth is created inside the pod namespace and its peer moved to the remote one, so
    // that no interface ever appears in the root namespace.
    pod.exec(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    pod.exec(&["ip", "link", "set", "eth1", "netns", &remote.name]);
    pod.exec(&["ip", "addr", "add", "198.51.100.2/24", "dev", "eth0"]);
    pod.exec(&["ip", "link", "set", "eth0", "up"]);
    remote.exec(&["ip", "addr", "add", "198.51.100.10/24", "dev", "eth1"]);
    remote.exec(&["ip", "link", "set", "eth1", "up"]);
    remote.upstream("198.51.100.10:80", "remote");
    remote.upstream("198.51.100.10:8080", "remote-8080");
    (pod, remote)
}
