//! The pod-in-a-box test bed: `scripts/pod-in-a-box.sh` builds the network (a node, two
//! checkout pods, payment-svc v1 and v2 pods, ClusterIPs, hosts files); this module starts
//! what runs in it (the apps, `weir init`, the sidecars as uid 1337, Prometheus) as the kubelet
//! would, plays the kubelet's ConfigMap update, and tears everything down when dropped.

use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::support::*;

/// The admin token of every sidecar (a Secret in the cluster).
pub const TOKEN: &str = "pod-in-a-box-token";
/// weir's uid: `weir init --proxy-uid`, the sidecar's `runAsUser`.
pub const PROXY_UID: u32 = 1337;
/// The apps' uid: anything but weir's.
pub const APP_UID: u32 = 1000;
const WAIT: Duration = Duration::from_secs(30);

/// One bed at a time: each runs about ten processes, and the machine has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A payment-svc pod: the app, and weir's inbound side in front of it.
pub struct Payment {
    pub version: String,
    /// `weir upstream`, the app.
    pub app: WeirRun,
    /// `weir serve --inbound`, as uid 1337 behind `weir init`'s inbound capture.
    pub sidecar: WeirRun,
    /// Its admin API, reachable from the node.
    pub admin: String,
}

/// A checkout pod's sidecar.
pub struct Sidecar {
    pub run: WeirRun,
    /// Its admin API, reachable from the node.
    pub admin: String,
    /// Its ConfigMap volume.
    pub volume: PathBuf,
    /// Its command line, for a restart.
    argv: Vec<String>,
}

/// The bed; everything in it is killed and deleted on drop.
pub struct Bed {
    pub prefix: String,
    pub dir: tempfile::TempDir,
    /// A copy of the weir binary that uid 1337 can run.
    pub weir: PathBuf,
    /// payment-svc's versions.
    pub payments: Vec<Payment>,
    pub checkouts: Vec<Sidecar>,
    /// Plain TCP services ([`Bed::tcp_services`]).
    pub tcp: Vec<WeirRun>,
    pub prometheus: Option<Prometheus>,
    _one: MutexGuard<'static, ()>,
}

fn script() -> PathBuf {
    root().join("scripts/pod-in-a-box.sh")
}

/// The payment-svc ConfigMap's `payment-svc.yaml`, as `config/k8s/configmap.yaml` ships it,
/// with the canary split's weights set to `v1`/`v2`.
pub fn configmap(v1: u32, v2: u32) -> String {
    let manifest = read(root().join("config/k8s/configmap.yaml"));
    let (_, block) = manifest
        .split_once("  payment-svc.yaml: |\n")
        .expect("config/k8s/configmap.yaml has payment-svc.yaml");
    let text: String = block
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let (head, split) = text
        .split_once("- name: canary-split")
        .expect("canary-split");
    let split = split
        .replacen("weight: 100", &format!("weight: {v1}"), 1)
        .replacen("weight: 0", &format!("weight: {v2}"), 1);
    format!("{head}- name: canary-split{split}\n")
}

impl Bed {
    /// Builds the network; `None` (skipped) when not root.
    pub fn up() -> Option<Bed> {
        if !privileged("the pod-in-a-box tests") {
            return None;
        }
        let one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "wp{}{}-",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let weir = dir.path().join("weir");
        std::fs::copy(weir_bin(), &weir).unwrap();
        run_ok(Command::new("bash").arg(script()).args(["up", &prefix]));
        Some(Bed {
            prefix,
            dir,
            weir,
            payments: Vec::new(),
            checkouts: Vec::new(),
            tcp: Vec::new(),
            prometheus: None,
            _one: one,
        })
    }

    /// A bed with payment-svc v1 and v2 and checkout pod 0 splitting `v1`/`v2`.
    pub fn with_split(v1: u32, v2: u32) -> Option<Bed> {
        let mut bed = Bed::up()?;
        bed.payment("v1", &[]);
        bed.payment("v2", &[]);
        bed.checkout(0, &configmap(v1, v2), &[]);
        Some(bed)
    }

    pub fn ns(&self, role: &str) -> String {
        format!("{}{role}", self.prefix)
    }

    /// A command in `role`'s namespace, as `uid` (None: root).
    pub fn command(&self, role: &str, uid: Option<u32>, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(role)]);
        if let Some(uid) = uid {
            cmd.args([
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ]);
        }
        cmd.args(argv).stdin(Stdio::null());
        cmd
    }

    pub fn exec(&self, role: &str, argv: &[&str]) -> String {
        run_ok(&mut self.command(role, None, argv))
    }

    fn weir(&self) -> &str {
        self.weir.to_str().expect("utf-8 path")
    }

    /// Starts payment-svc `version`'s pod as `config/k8s/versions.yaml` has it: the app
    /// (`weir upstream` on :8080 as uid 1000, plus `extra` arguments), the init container
    /// (`weir init` capturing inbound TCP to 8080, nothing outbound), then weir's inbound side
    /// as uid 1337, named as the Deployment with the pod's labels from a downward-API file.
    pub fn payment(&mut self, version: &str, extra: &[&str]) {
        let role = format!("payment-{version}");
        let mut argv = vec![
            self.weir(),
            "upstream",
            "--listen",
            "0.0.0.0:8080",
            "--name",
            version,
        ];
        argv.extend(extra);
        let app = WeirRun::spawn_command(self.command(&role, Some(APP_UID), &argv));
        wait_for(&app, "weir upstream: ready");
        let said = self.exec(
            &role,
            &[
                self.weir(),
                "init",
                "--outbound-ports",
                "",
                "--inbound-ports",
                "8080",
            ],
        );
        assert!(said.contains("rules installed"), "{said}");
        let files = self.pod_dir(&role);
        let labels = files.join("labels");
        std::fs::write(
            &labels,
            format!("app=\"payment-svc\"\nversion=\"{version}\"\npod-template-hash=\"7f9c\"\n"),
        )
        .unwrap();
        let config = files.join("payment-svc.yaml");
        std::fs::write(&config, configmap(100, 0)).unwrap();
        let workload = format!("payment-svc-{version}");
        let argv: Vec<String> = [
            self.weir(),
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:15001",
            "--inbound",
            "0.0.0.0:15006",
            "--admin",
            "0.0.0.0:15000",
            "--admin-token",
            TOKEN,
            "--workload",
            &workload,
            "--namespace",
            "production",
            "--pod-labels",
            labels.to_str().unwrap(),
            "--reload-poll",
            "0s",
            "--state",
            files.join("state.json").to_str().unwrap(),
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let sidecar = self.sidecar(&role, &argv);
        let addr = match version {
            "v1" => "198.51.100.20",
            _ => "198.51.100.21",
        };
        self.payments.push(Payment {
            version: version.to_string(),
            app,
            sidecar,
            admin: format!("http://{addr}:15000"),
        });
    }

    /// A directory of `role`'s pod that uid 1337 owns (the emptyDir and downward-API files).
    fn pod_dir(&self, role: &str) -> PathBuf {
        let dir = self.dir.path().join(format!("files-{role}"));
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(PROXY_UID), Some(PROXY_UID)).unwrap();
        dir
    }

    /// payment-svc `version`'s inbound sidecar's `/metrics`.
    pub fn payment_metrics(&self, version: &str) -> String {
        let admin = &self.payment_pod(version).admin;
        self.node_get(&format!("{admin}/metrics"))
    }

    fn payment_pod(&self, version: &str) -> &Payment {
        self.payments
            .iter()
            .find(|p| p.version == version)
            .unwrap_or_else(|| panic!("no payment-svc {version}"))
    }

    /// Starts plain TCP services in payment-svc v1's pod (198.51.100.20), not captured there:
    /// on MySQL's 3306 and on 7000, each greeting with its name and a newline, then echoing.
    pub fn tcp_services(&mut self) {
        for (port, name) in [(3306, "mysql-hello"), (7000, "banner-7000")] {
            let listen = format!("0.0.0.0:{port}");
            let argv = [
                self.weir(),
                "upstream",
                "--listen",
                &listen,
                "--name",
                name,
                "--tcp-greeting",
            ];
            let run = WeirRun::spawn_command(self.command("payment-v1", Some(APP_UID), &argv));
            wait_for(&run, "weir upstream: ready");
            self.tcp.push(run);
        }
    }

    /// What payment-svc `version` has served so far (`kill -USR1`): (requests, with
    /// x-canary: true, answered 500).
    pub fn served(&self, version: &str) -> (u64, u64, u64) {
        let run = &self.payment_pod(version).app;
        let before = run.stderr().matches("served ").count();
        run.signal("USR1");
        let deadline = Instant::now() + WAIT;
        loop {
            let text = run.stderr();
            if text.matches("served ").count() > before {
                let line = text.lines().rev().find(|l| l.contains("served ")).unwrap();
                let numbers: Vec<u64> = line
                    .split(|c: char| !c.is_ascii_digit())
                    .filter(|w| !w.is_empty())
                    .filter_map(|w| w.parse().ok())
                    .collect();
                // "weir upstream vN: served R requests (T with x-canary: true, E answered 500)"
                let n = numbers.len();
                return (numbers[n - 4], numbers[n - 3], numbers[n - 2]);
            }
            assert!(Instant::now() < deadline, "no served line: {text}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts checkout pod `i`: its ConfigMap volume with `config`, its state emptyDir, the init
    /// container (`weir init`, root), then the sidecar as uid 1337 with `extra` arguments.
    pub fn checkout(&mut self, i: usize, config: &str, extra: &[&str]) {
        self.checkout_with_init(i, config, &[], extra);
    }

    /// [`Bed::checkout`] with more `weir init` arguments (`--proxy-uid`).
    pub fn checkout_with_init(&mut self, i: usize, config: &str, init: &[&str], extra: &[&str]) {
        let role = format!("checkout-{i}");
        let volume = self.dir.path().join(format!("volume-{role}"));
        std::fs::create_dir(&volume).unwrap();
        std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o755)).unwrap();
        kubelet_update(&volume, config, 0);
        symlink("..data/payment-svc.yaml", volume.join("payment-svc.yaml")).unwrap();
        let mut argv = vec![self.weir(), "init", "--inbound-ports", ""];
        argv.extend(init);
        let said = self.exec(&role, &argv);
        assert!(said.contains("rules installed"), "{said}");
        let config_path = volume.join("payment-svc.yaml");
        // The admin state on an emptyDir the sidecar's uid owns (the ConfigMap volume is
        // read-only to it).
        let state_dir = self.dir.path().join(format!("state-{role}"));
        std::fs::create_dir(&state_dir).unwrap();
        std::os::unix::fs::chown(&state_dir, Some(PROXY_UID), Some(PROXY_UID)).unwrap();
        let state = state_dir.join("state.json");
        let mut argv = vec![
            self.weir(),
            "serve",
            "--config",
            config_path.to_str().unwrap(),
            "--listen",
            "0.0.0.0:15001",
            "--admin",
            "0.0.0.0:15000",
            "--admin-token",
            TOKEN,
            "--workload",
            "checkout",
            "--reload-poll",
            "100ms",
            "--state",
            state.to_str().unwrap(),
        ];
        argv.extend(extra);
        let argv: Vec<String> = argv.into_iter().map(String::from).collect();
        let run = self.sidecar(&role, &argv);
        let addr = checkout_addr(i);
        self.checkouts.push(Sidecar {
            run,
            admin: format!("http://{addr}:15000"),
            volume,
            argv,
        });
    }

    /// Starts a sidecar as uid 1337 in `role`'s pod and waits for its ready line.
    fn sidecar(&self, role: &str, argv: &[String]) -> WeirRun {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut cmd = self.command(role, Some(PROXY_UID), &argv);
        cmd.env("RUST_LOG", "info");
        let run = WeirRun::spawn_command(cmd);
        wait_for(&run, "weir: ready ");
        run
    }

    /// The kubelet restarting checkout pod `i`'s crashed sidecar container: SIGKILL, then the
    /// same command on the same volumes (the init container does not run again; the pod's nat
    /// rules stay).
    pub fn restart_sidecar(&mut self, i: usize) {
        let role = format!("checkout-{i}");
        self.checkouts[i].run.signal("KILL");
        self.checkouts[i].run.wait_exit(WAIT);
        let run = self.sidecar(&role, &self.checkouts[i].argv);
        self.checkouts[i].run = run;
    }

    /// The kubelet's ConfigMap update on checkout pod `i`'s volume: a new timestamped
    /// directory, then `..data` swapped to it in one rename.
    pub fn update_configmap(&self, i: usize, config: &str) {
        static VERSION: AtomicUsize = AtomicUsize::new(1);
        kubelet_update(
            &self.checkouts[i].volume,
            config,
            VERSION.fetch_add(1, Ordering::Relaxed),
        );
    }

    /// curl in checkout pod `i`, as the app (uid 1000): one output line per transfer.
    pub fn curl(&self, i: usize, args: &[&str]) -> String {
        let mut argv = vec!["curl", "-s", "-m", "10"];
        argv.extend(args);
        let out = self
            .command(&format!("checkout-{i}"), Some(APP_UID), &argv)
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `n` GETs of http://payment-svc/pay from checkout pod `i`'s app over one curl process
    /// (URL globbing): the status code of each, with `headers`.
    pub fn requests(&self, i: usize, n: usize, headers: &[&str]) -> Vec<String> {
        self.requests_to(i, "http://payment-svc/pay", n, headers)
    }

    /// [`Bed::requests`] to another URL.
    pub fn requests_to(&self, i: usize, url: &str, n: usize, headers: &[&str]) -> Vec<String> {
        let url = format!("{url}?n=[1-{n}]");
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}\\n", &url];
        for h in headers {
            args.extend(["-H", h]);
        }
        let out = self.curl(i, &args);
        out.lines().map(str::to_string).collect()
    }

    /// What the headless `checkout-weir` Service resolves to in the node: these checkout
    /// pods' addresses (the endpoints controller's view). The hosts file is rewritten in place:
    /// `ip netns exec` bind-mounted that very file on /etc/hosts.
    pub fn headless(&self, replicas: &[usize]) {
        let path = PathBuf::from(format!("/etc/netns/{}/hosts", self.ns("node")));
        let mut text = String::from("127.0.0.1 localhost\n");
        for i in replicas {
            text.push_str(&format!(
                "{} checkout-weir.production.svc.cluster.local\n",
                checkout_addr(*i)
            ));
        }
        std::fs::write(path, text).unwrap();
    }

    /// A GET from the node (where `weir canary` and Prometheus run) with the admin token.
    pub fn node_get(&self, url: &str) -> String {
        let auth = format!("Authorization: Bearer {TOKEN}");
        self.exec("node", &["curl", "-s", "-m", "5", "-H", &auth, url])
    }

    /// Sidecar `i`'s `/metrics`.
    pub fn metrics(&self, i: usize) -> String {
        self.node_get(&format!("{}/metrics", self.checkouts[i].admin))
    }

    /// The weight sidecar `i` has in force for `version` on the canary split.
    pub fn weight(&self, i: usize, version: &str) -> f64 {
        metric_sum(
            &self.metrics(i),
            "weir_route_weight",
            &[("rule", "canary-split"), ("destination_version", version)],
        )
    }

    /// Waits for `what` to hold, up to 30 s.
    pub fn eventually(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !check() {
            assert!(Instant::now() < deadline, "never true: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts Prometheus in the node namespace on 127.0.0.1:9090, scraping every sidecar's
    /// admin `/metrics` with the token: the checkout pods' (outbound) and the payment-svc
    /// pods' (inbound).
    pub fn prometheus(&mut self) {
        let admins = self.checkouts.iter().map(|c| &c.admin);
        let targets: Vec<String> = admins
            .chain(self.payments.iter().map(|p| &p.admin))
            .map(|a| a.trim_start_matches("http://").to_string())
            .collect();
        let ns = self.ns("node");
        let mut p = Prometheus::start_with(
            &["ip", "netns", "exec", &ns],
            "127.0.0.1:9090",
            &targets,
            Some(TOKEN),
        );
        self.eventually("Prometheus is ready", || {
            p.assert_running();
            let probe = [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://127.0.0.1:9090/-/ready",
            ];
            // Refused (curl fails) until Prometheus listens.
            let out = self.command("node", None, &probe).output().unwrap();
            out.stdout == b"200"
        });
        self.prometheus = Some(p);
    }

    /// An instant query to the bed's Prometheus: its first value.
    pub fn promql(&self, query: &str) -> Option<f64> {
        let out = self.exec(
            "node",
            &[
                "curl",
                "-s",
                "-G",
                "--data-urlencode",
                &format!("query={query}"),
                "http://127.0.0.1:9090/api/v1/query",
            ],
        );
        first_value(&out)
    }

    /// A process in checkout pod `i`'s app container: requests to http://payment-svc/pay
    /// until killed (`x-canary: false` except every tenth).
    pub fn steady_traffic(&self, i: usize) -> WeirRun {
        let script = "i=0; while true; do i=$((i+1)); \
                      if [ $((i % 10)) -eq 0 ]; then h='x-canary: true'; else h='x-canary: false'; fi; \
                      curl -s -o /dev/null -m 5 -H \"$h\" http://payment-svc/pay; sleep 0.01; done";
        WeirRun::spawn_command(self.command(
            &format!("checkout-{i}"),
            Some(APP_UID),
            &["bash", "-c", script],
        ))
    }

    /// `weir canary` in the node namespace, finding the sidecars through the headless
    /// Service's name.
    pub fn canary(&self, spec: &Path, extra: &[&str]) -> WeirRun {
        let report = self.dir.path().join("report");
        let mut argv = vec![
            self.weir(),
            "canary",
            "--spec",
            spec.to_str().unwrap(),
            "--admin-dns",
            "checkout-weir.production.svc.cluster.local:15000",
            "--token",
            TOKEN,
            "--report",
            report.to_str().unwrap(),
        ];
        argv.extend(extra);
        WeirRun::spawn_command(self.command("node", None, &argv))
    }

    /// What is left of the bed (namespaces, hosts files): nothing after a teardown.
    pub fn leftovers(prefix: &str) -> String {
        run_ok(Command::new("bash").arg(script()).args(["list", prefix]))
    }

    /// Tears the bed down now (also done on drop; idempotent).
    pub fn down(prefix: &str) {
        run_ok(Command::new("bash").arg(script()).args(["down", prefix]));
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        // Our own children first (they are in the namespaces too), then the rest.
        self.payments.clear();
        self.checkouts.clear();
        self.tcp.clear();
        self.prometheus = None;
        let _ = Command::new("bash")
            .arg(script())
            .args(["down", &self.prefix])
            .status();
    }
}

/// Checkout pod `i`'s address.
pub fn checkout_addr(i: usize) -> &'static str {
    ["198.51.100.10", "198.51.100.11", "198.51.100.12"][i]
}

/// Waits for a process's line starting with `prefix`.
fn wait_for(run: &WeirRun, prefix: &str) {
    let deadline = Instant::now() + WAIT;
    while run.line_starting(prefix).is_none() {
        assert!(
            Instant::now() < deadline,
            "no {prefix:?} line in {WAIT:?}; stdout:\n{}\nstderr:\n{}",
            run.stdout(),
            run.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the kubelet does to a ConfigMap volume: the files in a new `..<timestamp>`
/// directory, a `..data_tmp` symlink to it renamed over `..data` (atomic), the old
/// directory removed.
fn kubelet_update(volume: &Path, config: &str, version: usize) {
    let name = format!("..2026_11_25_00_00_00.{version:09}");
    let fresh = volume.join(&name);
    std::fs::create_dir(&fresh).unwrap();
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(fresh.join("payment-svc.yaml"), config).unwrap();
    let old = std::fs::read_link(volume.join("..data")).ok();
    let tmp = volume.join("..data_tmp");
    symlink(&name, &tmp).unwrap();
    std::fs::rename(&tmp, volume.join("..data")).unwrap();
    if let Some(old) = old {
        std::fs::remove_dir_all(volume.join(old)).unwrap();
    }
}
