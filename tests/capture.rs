//! `weir init` against the real kernel: network namespaces the test creates (a pod and a
//! remote host on a veth pair, addresses from the documentation range 198.51.100.0/24), real
//! `iptables-restore` with both backends (nft and legacy), real TCP clients as the app's uid
//! and as the proxy's uid 1337. Nothing touches the root namespace.
//!
//! Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) and the iptables and iproute2 packages
//! (`scripts/install-test-deps.sh` installs them). Without root the tests say so and pass,
//! except under CI (`CI` set), where they fail instead.

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use support::{privileged, run_ok as run, weir_bin};

/// A network namespace, deleted (with every process the test started in it) on drop.
struct Netns {
    name: String,
    children: Vec<Child>,
}

impl Netns {
    fn new(role: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "weir-t{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns {
            name,
            children: Vec::new(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(argv);
        cmd
    }

    fn exec(&self, argv: &[&str]) -> String {
        run(&mut self.command(argv))
    }

    /// Starts `weir upstream` in the namespace, answering with `name`, and waits for its
    /// ready line.
    fn upstream(&mut self, listen: &str, name: &str) {
        let bin = weir_bin();
        let mut child = self
            .command(&[
                bin.to_str().expect("utf-8 path"),
                "upstream",
                "--listen",
                listen,
                "--name",
                name,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start weir upstream");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the ready line");
        assert!(line.starts_with("weir upstream: ready"), "{line:?}");
        self.children.push(child);
    }

    /// One HTTP/1.0 GET from inside the namespace, as `uid` (None: root), with bash's
    /// `/dev/tcp`: the body that came back, or the error.
    fn get(&self, uid: Option<u32>, addr: &str, port: u16) -> String {
        let script = format!(
            "exec 3<>/dev/tcp/{addr}/{port} || exit 7; printf 'GET / HTTP/1.0\\r\\nHost: payment-svc\\r\\n\\r\\n' >&3; cat <&3"
        );
        let mut argv: Vec<String> = Vec::new();
        if let Some(uid) = uid {
            argv.extend(
                [
                    "setpriv",
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                ]
                .map(String::from),
            );
        }
        argv.extend(["timeout", "5", "bash", "-c", &script].map(String::from));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = self
            .command(&argv)
            .stdin(Stdio::null())
            .output()
            .expect("run the client");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        match text.split_once("\r\n\r\n") {
            Some((_, body)) if out.status.success() => body.to_string(),
            _ => format!(
                "no answer (exit {:?}): {text}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
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
fn pod_and_remote() -> (Netns, Netns) {
    let mut pod = Netns::new("pod");
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
    pod.upstream("0.0.0.0:15001", "captured");
    (pod, remote)
}

fn weir_init(pod: &Netns, backend: &str, extra: &[&str]) -> String {
    let bin = weir_bin();
    let mut argv = vec![
        bin.to_str().expect("utf-8 path"),
        "init",
        "--iptables",
        backend,
    ];
    argv.extend(extra);
    pod.exec(&argv)
}

fn nat_table(pod: &Netns, backend: &str) -> String {
    pod.exec(&[&format!("iptables-{backend}-save"), "-t", "nat"])
}

fn captures_the_apps_traffic_but_not_the_proxys(backend: &str) {
    let (pod, _remote) = pod_and_remote();
    // Before: the app reaches the remote host directly.
    assert_eq!(pod.get(None, "198.51.100.10", 80), "remote");

    let said = weir_init(&pod, backend, &["--exclude-outbound-ports", "8080"]);
    assert!(said.contains("rules installed"), "{said}");
    // The app's connection to the remote host lands on the proxy's port instead.
    assert_eq!(pod.get(None, "198.51.100.10", 80), "captured");
    // The proxy's own uid is never captured: its upstream connections reach the remote.
    assert_eq!(pod.get(Some(1337), "198.51.100.10", 80), "remote");
    // Another uid (an app container running as non-root) is captured.
    assert_eq!(pod.get(Some(1000), "198.51.100.10", 80), "captured");
    // An excluded port passes.
    assert_eq!(pod.get(None, "198.51.100.10", 8080), "remote-8080");
    // The app talking to itself on loopback is not captured.
    assert_eq!(pod.get(None, "127.0.0.1", 15001), "captured");

    // Installing again replaces the rules instead of adding a second copy.
    let once = nat_table(&pod, backend);
    weir_init(&pod, backend, &["--exclude-outbound-ports", "8080"]);
    let twice = nat_table(&pod, backend);
    let weir_lines = |t: &str| t.lines().filter(|l| l.contains("WEIR_")).count();
    assert_eq!(weir_lines(&once), weir_lines(&twice));
    assert!(weir_lines(&once) > 10, "{once}");

    // --remove takes every weir rule and chain out, and is idempotent.
    weir_init(&pod, backend, &["--remove"]);
    weir_init(&pod, backend, &["--remove"]);
    assert_eq!(weir_lines(&nat_table(&pod, backend)), 0);
    assert_eq!(pod.get(None, "198.51.100.10", 80), "remote");
}

#[test]
fn weir_init_with_iptables_nft() {
    if privileged("the capture tests") {
        captures_the_apps_traffic_but_not_the_proxys("nft");
    }
}

#[test]
fn weir_init_with_iptables_legacy() {
    if privileged("the capture tests") {
        captures_the_apps_traffic_but_not_the_proxys("legacy");
    }
}

#[test]
fn weir_init_keeps_other_rules_of_the_nat_table() {
    if !privileged("the capture tests") {
        return;
    }
    let pod = Netns::new("pod");
    // A rule of someone else's (e.g. a CNI's) must survive install and remove.
    pod.exec(&[
        "iptables-nft",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-d",
        "198.51.100.99",
        "-j",
        "ACCEPT",
    ]);
    weir_init(&pod, "nft", &[]);
    assert!(nat_table(&pod, "nft").contains("-A POSTROUTING -d 198.51.100.99/32 -j ACCEPT"));
    weir_init(&pod, "nft", &["--remove"]);
    let after = nat_table(&pod, "nft");
    assert!(
        after.contains("-A POSTROUTING -d 198.51.100.99/32 -j ACCEPT"),
        "{after}"
    );
    assert!(!after.contains("WEIR_"), "{after}");
}
