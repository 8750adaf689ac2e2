//! `weir init` against the real kernel: network namespaces the test creates (a pod and a
//! remote host on a veth pair, addresses from the documentation range 198.51.100.0/24), real
//! `iptables-restore` with both backends (nft and legacy), real TCP clients as the app's uid
//! and as the proxy's uid 1337. Nothing touches the root namespace.
//!
//! Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) and the iptables and iproute2 packages
//! (`scripts/install-test-deps.sh` installs them). Without root the tests say so and pass,
//! except under CI (`CI` set), where they fail instead.

mod support;

use support::{Netns, pod_and_remote, privileged};

fn weir_init(pod: &Netns, backend: &str, extra: &[&str]) -> String {
    pod.weir_init(backend, extra)
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
