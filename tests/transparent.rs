//! weir as a transparent sidecar against the real kernel: a pod namespace with `weir init`'s
//! nat rules (real `iptables-restore`), weir serving there, and a remote host on a veth pair
//! (addresses from the documentation range 198.51.100.0/24). Nothing touches the root
//! namespace.
//!
//! Needs root and the iptables and iproute2 packages (`scripts/install-test-deps.sh`).
//! Without root the tests say so and pass, except under CI (`CI` set), where they fail.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use support::weir_bin;
use support::{Netns, linked_pod_and_remote, privileged};

/// A directory every uid can read (weir runs as 1337), with the lesson's config and a
/// downward-API labels file.
fn pod_files(labels: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = std::fs::read_to_string(support::root().join("config/payment-svc.yaml")).unwrap();
    std::fs::write(dir.path().join("payment-svc.yaml"), config).unwrap();
    std::fs::write(dir.path().join("labels"), labels).unwrap();
    dir
}

/// Starts `weir serve` in `pod` as uid 1337 with `extra` flags; returns the ready line.
fn serve(pod: &mut Netns, dir: &Path, extra: &[&str]) -> String {
    let bin = weir_bin();
    let config = dir.join("payment-svc.yaml");
    let mut argv = vec![
        bin.to_str().expect("utf-8 path"),
        "serve",
        "--config",
        config.to_str().expect("utf-8 path"),
        "--listen",
        "0.0.0.0:15001",
        "--admin",
        "127.0.0.1:15000",
        "--reload-poll",
        "0s",
        "--workers",
        "1",
    ];
    argv.extend(extra);
    pod.spawn_ready(Some(1337), &argv, "weir: ready")
}

/// The sidecar's `/metrics`, read inside the pod.
fn metrics(pod: &Netns) -> String {
    pod.http(None, "127.0.0.1", 15000, "GET /metrics HTTP/1.0\n")
        .expect("the admin API answers")
}

/// The value of the `istio_requests_total` series with all of `labels`, if there is one.
fn requests_total(text: &str, labels: &[&str]) -> Option<u64> {
    text.lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Server-first TCP through the capture, from `client` to `addr`: the greeting arrives
/// (relayed at once on MySQL's 3306, after the short sniff window on the unknown 7000), then
/// the echo.
fn server_first_tcp_works(client: &Netns, addr: &str) {
    for (port, greeting) in [(3306, "mysql-hello"), (7000, "banner-7000")] {
        let script = format!(
            "exec 3<>/dev/tcp/{addr}/{port}; read -r hello <&3; printf 'ping\\n' >&3; \
             read -r echo <&3; echo \"$hello $echo\""
        );
        assert_eq!(
            client.bash(None, &script).expect("the TCP service answers"),
            format!("{greeting} ping\n")
        );
    }
}

/// The body of an HTTP answer.
fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[test]
fn inbound_connections_reach_the_app_and_are_counted_as_reporter_destination() {
    if !privileged("the transparent capture tests") {
        return;
    }
    let (mut pod, remote) = linked_pod_and_remote();
    // The app (HTTP on 8080), a server-first TCP service on MySQL's port and one on a port
    // nobody knows, all listening on every address as apps do.
    pod.upstream("0.0.0.0:8080", "payment-v2");
    pod.upstream_with("0.0.0.0:3306", "mysql-hello", &["--tcp-greeting"]);
    pod.upstream_with("0.0.0.0:7000", "banner-7000", &["--tcp-greeting"]);
    let said = pod.weir_init("nft", &[]);
    assert!(said.contains("rules installed"), "{said}");
    let dir = pod_files("app=\"payment-svc\"\nversion=\"v2\"\npod-template-hash=\"5d9c\"\n");
    let labels = dir.path().join("labels");
    let ready = serve(
        &mut pod,
        dir.path(),
        &[
            "--inbound",
            "0.0.0.0:15006",
            "--workload",
            "payment-svc-canary",
            "--namespace",
            "production",
            "--pod-labels",
            labels.to_str().unwrap(),
        ],
    );
    assert!(ready.contains("inbound=0.0.0.0:15006"), "{ready}");

    // HTTP from another host to the app's port: captured, forwarded to 127.0.0.1:8080.
    for _ in 0..5 {
        let answer = remote
            .http(
                None,
                "198.51.100.2",
                8080,
                "GET /pay HTTP/1.0\nHost: payment-svc\n",
            )
            .expect("the app answers through the inbound listener");
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
        assert_eq!(body(&answer), "payment-v2");
    }
    // Server-first TCP: the greeting arrives (relayed at once on 3306, after the sniff
    // window elsewhere), then the echo.
    server_first_tcp_works(&remote, "198.51.100.2");
    // A connection to the inbound listener itself was not redirected: refused, no loop.
    // (Closed unanswered; with the request unread the kernel resets it.)
    let direct = pod.http(None, "127.0.0.1", 15006, "GET / HTTP/1.0\n");
    assert!(
        direct.as_ref().is_err() || direct.as_ref().is_ok_and(String::is_empty),
        "a direct connection must be closed unanswered: {direct:?}"
    );

    // The series Flagger's built-in queries select.
    let text = metrics(&pod);
    let count = requests_total(
        &text,
        &[
            r#"reporter="destination""#,
            r#"source_workload="unknown""#,
            r#"destination_service="payment-svc.production.svc.cluster.local""#,
            r#"destination_service_name="payment-svc""#,
            r#"destination_workload="payment-svc-canary""#,
            r#"destination_workload_namespace="production""#,
            r#"destination_app="payment-svc""#,
            r#"destination_version="v2""#,
            r#"destination_canonical_service="payment-svc""#,
            r#"destination_canonical_revision="v2""#,
            r#"response_code="200""#,
        ],
    );
    assert_eq!(count, Some(5), "{text}");
    assert!(
        text.contains(
            r#"istio_request_duration_milliseconds_bucket{le="+Inf",reporter="destination""#
        ),
        "{text}"
    );
}

/// payment-svc as a ServiceEntry with a virtual address (a ClusterIP on no interface) and one
/// endpoint, the remote host's :8080.
const TRANSPARENT_CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payment-svc, namespace: production}
spec:
  hosts: [payment-svc.production.svc.cluster.local]
  addresses: [198.51.100.200]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 198.51.100.10, ports: {http: 8080}, labels: {app: payment-svc, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment-svc, namespace: production}
spec:
  hosts: [payment-svc]
  http:
  - route: [{destination: {host: payment-svc}}]
"#;

/// A pod with `weir init --proxy-uid <proxy_uid>` and weir serving as uid 1337 on
/// [`TRANSPARENT_CONFIG`], next to a remote host that also speaks server-first TCP on 3306
/// and 7000.
fn transparent_pod(proxy_uid: &str) -> (Netns, Netns, tempfile::TempDir) {
    let (mut pod, mut remote) = linked_pod_and_remote();
    remote.upstream_with("198.51.100.10:3306", "mysql-hello", &["--tcp-greeting"]);
    remote.upstream_with("198.51.100.10:7000", "banner-7000", &["--tcp-greeting"]);
    let said = pod.weir_init("nft", &["--proxy-uid", proxy_uid]);
    assert!(said.contains("rules installed"), "{said}");
    let dir = pod_files("");
    std::fs::write(dir.path().join("payment-svc.yaml"), TRANSPARENT_CONFIG).unwrap();
    serve(
        &mut pod,
        dir.path(),
        &["--workload", "checkout", "--namespace", "shop"],
    );
    (pod, remote, dir)
}

#[test]
fn captured_connections_are_routed_by_host_then_address_else_passed_through() {
    if !privileged("the transparent capture tests") {
        return;
    }
    let (pod, _remote, _dir) = transparent_pod("1337");
    let get = |addr: &str, port: u16, host: &str| {
        pod.http(None, addr, port, &format!("GET / HTTP/1.0\nHost: {host}\n"))
            .unwrap_or_else(|e| panic!("GET {host} via {addr}:{port}: {e}"))
    };
    // The app calls the service by name, with no proxy settings: routed by Host to the
    // endpoint (the remote's :8080), whatever address the connection went to.
    let answer = get("198.51.100.200", 80, "payment-svc");
    assert_eq!(body(&answer), "remote-8080", "{answer}");
    // The ClusterIP case: the Host is the address; routed by the original destination (the
    // ServiceEntry's `addresses`).
    let answer = get("198.51.100.200", 80, "198.51.100.200");
    assert_eq!(body(&answer), "remote-8080", "{answer}");
    // Nobody routes this host: passed through to the original destination, as Envoy's
    // PassthroughCluster, not answered 404.
    let answer = get("198.51.100.10", 80, "example.test");
    assert_eq!(body(&answer), "remote", "{answer}");
    assert!(!answer.contains("x-weir-flags"), "{answer}");
    // Server-first TCP: the greeting arrives (relayed at once on 3306, after the short sniff
    // window on an unknown port), then the echo.
    server_first_tcp_works(&pod, "198.51.100.10");

    let text = metrics(&pod);
    let routed = requests_total(
        &text,
        &[
            r#"reporter="source""#,
            r#"source_workload="checkout""#,
            r#"source_workload_namespace="shop""#,
            r#"destination_service_name="payment-svc""#,
            r#"destination_app="payment-svc""#,
            r#"response_code="200""#,
        ],
    );
    assert_eq!(routed, Some(2), "{text}");
    let passed = requests_total(
        &text,
        &[
            r#"reporter="source""#,
            r#"destination_service="example.test""#,
            r#"destination_service_name="PassthroughCluster""#,
            r#"destination_workload="unknown""#,
            r#"response_code="200""#,
        ],
    );
    assert_eq!(passed, Some(1), "{text}");
    assert!(
        text.contains("weir_tcp_passthrough_connections_total 2\n"),
        "{text}"
    );
}

#[test]
fn without_the_uid_exemption_a_loop_ends_in_508_or_a_closed_connection_not_a_storm() {
    if !privileged("the transparent capture tests") {
        return;
    }
    // The rules exempt uid 4242, but weir runs as 1337: its own upstream connections are
    // captured and come back to it.
    let (pod, _remote, _dir) = transparent_pod("4242");
    for (addr, host) in [
        ("198.51.100.10", "example.test"),
        ("198.51.100.200", "payment-svc"),
    ] {
        let answer = pod
            .http(None, addr, 80, &format!("GET / HTTP/1.0\nHost: {host}\n"))
            .expect("weir answers");
        assert!(answer.starts_with("HTTP/1.0 508"), "{host}: {answer}");
        assert!(answer.contains("x-weir-hops"), "{host}: {answer}");
    }
    // Plain TCP has no header to count hops in: the relay's own connection comes back from
    // its registered port and is refused, so the client's connection ends after one extra
    // connection (server-first: at once on 3306, after the sniff window on 7000), without the
    // greeting, instead of circling until the descriptors run out.
    for port in [3306, 7000] {
        let script = format!("exec 3<>/dev/tcp/198.51.100.10/{port}; cat <&3");
        let answer = pod.bash(None, &script);
        assert_eq!(answer.as_deref(), Ok(""), "port {port}");
    }
    let text = metrics(&pod);
    assert!(
        text.contains("weir_loops_stopped_total{reason=\"hop_limit\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("weir_loops_stopped_total{reason=\"own_connection\"} 2\n"),
        "{text}"
    );
    // Two relays, one per client connection: the captured copies were refused, not relayed.
    assert!(
        text.contains("weir_tcp_passthrough_connections_total 2\n"),
        "{text}"
    );
}
