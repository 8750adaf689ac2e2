//! The pod-in-a-box test bed (issue 12): what a Kubernetes pod does to weir, reproduced with real
//! kernel parts and no API server. `scripts/pod-in-a-box.sh` builds a node and four pods as
//! network namespaces (addresses from 198.51.100.0/24, none in the root namespace), ClusterIPs
//! DNATed by the node as kube-proxy does, cluster DNS names in per-namespace hosts files;
//! `tests/pod/bed.rs` runs in it what a kubelet would: `weir init` and weir as uid 1337 in two
//! checkout pods whose app calls http://payment-svc, payment-svc v1 and v2, a ConfigMap volume
//! updated by the kubelet's `..data` symlink swap, a real Prometheus scraping every sidecar.
//!
//! Needs root, iproute2, iptables, curl and prometheus (`scripts/install-test-deps.sh`). Without
//! root the tests say so and pass, except under CI (`CI` set), where they fail instead.

mod support;

#[path = "pod/bed.rs"]
mod bed;

use bed::*;
use support::*;

/// `n` answers as (status, count).
fn statuses(answers: &[String]) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for a in answers {
        *out.entry(a.clone()).or_insert(0) += 1;
    }
    out
}

#[test]
fn the_apps_calls_split_90_10_at_the_upstreams_and_x_canary_reaches_v2() {
    let Some(mut bed) = Bed::up() else { return };
    bed.payment("v1", &[]);
    bed.payment("v2", &[]);
    bed.checkout(0, &configmap(90, 10), &[]);

    // The app calls http://payment-svc like any client: captured, split by the sidecar.
    const N: usize = 1000;
    let answers = bed.requests(0, N, &["x-canary: false"]);
    assert_eq!(
        statuses(&answers),
        [("200".to_string(), N)].into(),
        "{answers:?}"
    );
    let ((v1, _, _), (v2, _, _)) = (bed.served("v1"), bed.served("v2"));
    assert_eq!(v1 + v2, N as u64);
    assert!(
        within_binomial(v2, N as u64, 0.10, 4.0),
        "v2 got {v2} of {N}, expected about 10%"
    );
    eprintln!("90/10 through the capture, counted at the upstreams: v1 {v1}, v2 {v2}");

    // QA's header: the dark-launch rule, every request to v2.
    let answers = bed.requests(0, 50, &["x-canary: true"]);
    assert_eq!(statuses(&answers), [("200".to_string(), 50)].into());
    let ((v1_after, _, _), (v2_after, tagged, _)) = (bed.served("v1"), bed.served("v2"));
    assert_eq!((v1_after, v2_after), (v1, v2 + 50));
    assert_eq!(tagged, 50);

    // The sidecar counted them (reporter="source"), and its own connections to the versions'
    // ClusterIPs were not captured again (else each would have been counted twice, or looped).
    let metrics = bed.metrics(0);
    let counted = metric_sum(&metrics, "istio_requests_total", &[("reporter", "source")]);
    assert_eq!(counted, (N + 50) as f64, "{metrics}");

    // weir's uid bypasses the capture: a request as 1337 to the payment-svc ClusterIP goes
    // straight to a version through the node's DNAT, and the sidecar sees nothing of it.
    let direct = bed
        .command(
            "checkout-0",
            Some(PROXY_UID),
            &["curl", "-s", "-m", "5", "http://payment-svc/pay"],
        )
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&direct.stdout);
    assert!(body == "v1" || body == "v2", "{body:?}");
    let metrics = bed.metrics(0);
    assert_eq!(
        metric_sum(&metrics, "istio_requests_total", &[("reporter", "source")]),
        (N + 50) as f64
    );
}

#[test]
fn a_configmap_swap_is_in_force_on_both_replicas_and_a_99_1_typo_is_refused_on_both() {
    let Some(mut bed) = Bed::up() else { return };
    bed.payment("v1", &[]);
    bed.payment("v2", &[]);
    bed.checkout(0, &configmap(90, 10), &[]);
    bed.checkout(1, &configmap(90, 10), &[]);
    let reloads = |i: usize, result: &str| {
        metric_sum(
            &bed.metrics(i),
            "weir_config_reloads_total",
            &[("result", result)],
        )
    };

    // The kubelet swaps ..data on each pod's volume: 50/50 on both replicas.
    for i in 0..2 {
        bed.update_configmap(i, &configmap(50, 50));
    }
    for i in 0..2 {
        bed.eventually(&format!("replica {i} at 50/50"), || {
            (bed.weight(i, "v1"), bed.weight(i, "v2")) == (50.0, 50.0)
        });
        assert_eq!(reloads(i, "success"), 1.0);
    }
    // In force for the apps' traffic: both versions answer each replica's app.
    for i in 0..2 {
        let before = (bed.served("v1").0, bed.served("v2").0);
        let answers = bed.requests(i, 200, &[]);
        assert_eq!(statuses(&answers), [("200".to_string(), 200)].into());
        let (v1, v2) = (bed.served("v1").0 - before.0, bed.served("v2").0 - before.1);
        assert_eq!(v1 + v2, 200);
        assert!(
            within_binomial(v2, 200, 0.5, 4.0),
            "replica {i}: v1 {v1}, v2 {v2}"
        );
    }

    // The lesson's typo, 1/99, through the same ConfigMap: each sidecar validates it and keeps
    // serving 50/50, and counts the refusal.
    for i in 0..2 {
        bed.update_configmap(i, &configmap(1, 99));
    }
    for i in 0..2 {
        bed.eventually(&format!("replica {i} refused the typo"), || {
            reloads(i, "failure") == 1.0
        });
        assert_eq!((bed.weight(i, "v1"), bed.weight(i, "v2")), (50.0, 50.0));
        let said = bed.checkouts[i].run.stderr();
        assert!(said.contains("refused") || said.contains("WEIR"), "{said}");
    }
}

/// The canary of the test bed: quick steps, a fast guard, gates any healthy v2 passes.
fn canary_spec(bed: &Bed) -> std::path::PathBuf {
    let text = r#"apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: payment-svc
  namespace: production
spec:
  targetRef: {kind: Deployment, name: payment-svc-v2}
  service: {name: payment-svc}
  analysis:
    interval: 4s
    threshold: 2
    stepWeights: [20, 50]
    metrics:
    - name: request-success-rate
      thresholdRange: {min: 95}
      interval: 4s
    - name: request-duration
      thresholdRange: {max: 500}
      interval: 4s
  weir:
    rule: canary-split
    destinationService: payment-svc
    minRequests: 10
    fastGuard: {period: 1s, window: 3s}
"#;
    let path = bed.dir.path().join("canary.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts both checkout pods at 100/0 with steady traffic from their apps, and Prometheus.
fn canary_bed(v2_args: &[&str]) -> Option<(Bed, Vec<WeirRun>)> {
    let mut bed = Bed::up()?;
    bed.payment("v1", &[]);
    bed.payment("v2", v2_args);
    bed.checkout(0, &configmap(100, 0), &[]);
    bed.checkout(1, &configmap(100, 0), &[]);
    bed.prometheus();
    let traffic = vec![bed.steady_traffic(0), bed.steady_traffic(1)];
    Some((bed, traffic))
}

/// Runs `weir canary --admin-dns ... --prometheus ...` in the node to its end: the exit code,
/// its output, the report, and each replica's (v1, v2) weights afterwards.
fn run_canary(bed: &Bed) -> (Option<i32>, String, serde_json::Value, Vec<(f64, f64)>) {
    let spec = canary_spec(bed);
    // Until the inbound side exists (reporter="destination"), the gates read the callers'
    // outbound series in Prometheus.
    let args = [
        "--prometheus",
        "http://127.0.0.1:9090",
        "--queries",
        "versions",
    ];
    let mut run = bed.canary(&spec, &args);
    let code = run.wait_exit(std::time::Duration::from_secs(120));
    let out = format!("stdout:\n{}\nstderr:\n{}", run.stdout(), run.stderr());
    // Both replicas were found through the headless Service's name.
    assert!(
        out.contains("replicas of checkout-weir.production.svc.cluster.local:15000: http://198.51.100.10:15000, http://198.51.100.11:15000"),
        "{out}"
    );
    let report = serde_json::from_str(&read(bed.dir.path().join("report/report.json"))).unwrap();
    let weights = (0..2)
        .map(|i| (bed.weight(i, "v1"), bed.weight(i, "v2")))
        .collect();
    (code, out, report, weights)
}

#[test]
fn weir_canary_with_admin_dns_promotes_a_healthy_v2_on_both_replicas() {
    let Some((bed, _traffic)) = canary_bed(&[]) else {
        return;
    };
    let (code, out, report, weights) = run_canary(&bed);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(report["decision"], "promoted");
    // Promoted on both: v2 is the stable subset at 100.
    assert_eq!(weights, [(0.0, 100.0); 2]);
    // Prometheus scraped both sidecars, and saw v2 answer on both.
    let sidecars_seen = bed.promql(
        r#"count(sum by (instance) (istio_requests_total{reporter="source",destination_version="v2"}))"#,
    );
    assert_eq!(sidecars_seen, Some(2.0));
}

#[test]
fn weir_canary_with_admin_dns_rolls_a_failing_v2_back_on_both_replicas() {
    let Some((bed, _traffic)) = canary_bed(&["--error-rate", "0.5"]) else {
        return;
    };
    let (code, out, report, weights) = run_canary(&bed);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(weights, [(100.0, 0.0); 2]);
    let rb = &report["rollback"];
    let breach_to_zero = rb["detected_to_in_force_us"]
        .as_u64()
        .expect("rollback timed");
    assert!(rb["error"].is_null(), "{rb}");
    eprintln!(
        "failing v2 on 2 replicas: breach -> 0% in force on both in {breach_to_zero} µs ({})",
        rb["trigger"]
    );
    assert!(out.contains("rollback set off by"), "{out}");
}

#[test]
fn admin_dns_follows_replicas_that_come_and_go_during_a_canary() {
    let Some((mut bed, _traffic)) = canary_bed(&[]) else {
        return;
    };
    let spec = bed.dir.path().join("canary.yaml");
    std::fs::write(
        &spec,
        read(canary_spec(&bed)).replace("stepWeights: [20, 50]", "stepWeights: [20, 40, 60, 80]"),
    )
    .unwrap();
    // Without --prometheus: the sidecars' own /metrics, scraped and summed, of whichever
    // replicas the headless Service has now.
    let mut run = bed.canary(&spec, &[]);
    bed.eventually("the first step in force", || bed.weight(0, "v2") == 20.0);

    // The Deployment scales up: a third pod starts with the ConfigMap's 100/0 and joins the
    // headless Service. It must get the current step's weights before it counts.
    bed.checkout(2, &configmap(100, 0), &[]);
    assert_eq!(bed.weight(2, "v2"), 0.0);
    bed.headless(&[0, 1, 2]);
    bed.eventually("the new replica in step", || {
        let w = bed.weight(2, "v2");
        w > 0.0 && w == bed.weight(1, "v2")
    });
    // A pod goes away: out of the endpoints first, then stopped.
    bed.headless(&[1, 2]);
    bed.eventually("the old replica dropped", || {
        run.stdout()
            .contains("replica http://198.51.100.10:15000 is gone from DNS: dropped")
    });
    bed.checkouts[0].run.signal("KILL");

    let code = run.wait_exit(std::time::Duration::from_secs(120));
    let out = format!("stdout:\n{}\nstderr:\n{}", run.stdout(), run.stderr());
    assert_eq!(code, Some(0), "{out}");
    let joined = out
        .lines()
        .find(|l| l.contains("replica http://198.51.100.12:15000 joined (weights "))
        .unwrap_or_else(|| panic!("no join reported:\n{out}"));
    eprintln!("scale-up during the canary: {}", joined.trim());
    // Promoted on every replica the Service has at the end, the newcomer included.
    for i in [1, 2] {
        assert_eq!(
            (bed.weight(i, "v1"), bed.weight(i, "v2")),
            (0.0, 100.0),
            "replica {i}"
        );
    }
}

#[test]
fn sigterm_drains_the_requests_in_flight_refuses_new_ones_and_exits_0() {
    let Some(mut bed) = Bed::up() else { return };
    bed.payment("v1", &["--latency-ms", "1500"]);
    bed.payment("v2", &["--latency-ms", "1500"]);
    bed.checkout(
        0,
        &configmap(90, 10),
        &["--drain-timeout", "10s", "--health", "0.0.0.0:15021"],
    );
    // The kubelet's readiness probe, from the node.
    let probe = |bed: &Bed| {
        let argv = [
            "curl",
            "-s",
            "-m",
            "2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://198.51.100.10:15021/healthz/ready",
        ];
        let out = bed.command("node", None, &argv).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(probe(&bed), "200");
    // Five slow requests in flight from the app.
    let script = "for i in 1 2 3 4 5; do curl -s -m 20 -o /dev/null -w '%{http_code}\\n' http://payment-svc/pay & done; wait";
    let inflight =
        WeirRun::spawn_command(bed.command("checkout-0", Some(APP_UID), &["bash", "-c", script]));
    bed.eventually("five requests at the upstreams", || {
        bed.served("v1").0 + bed.served("v2").0 == 5
    });
    bed.checkouts[0].run.signal("TERM");
    // Not ready while draining: the kubelet takes the pod out of its Services' endpoints.
    bed.eventually("the readiness probe fails while draining", || {
        probe(&bed) == "503"
    });
    // New connections are refused at once (the app's capture leads to a closed port).
    bed.eventually("new connections refused", || {
        let out = bed
            .command(
                "checkout-0",
                Some(APP_UID),
                &[
                    "curl",
                    "-s",
                    "-m",
                    "2",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "http://payment-svc/pay",
                ],
            )
            .output()
            .unwrap();
        // curl's exit 7: failed to connect.
        out.status.code() == Some(7)
    });
    let mut inflight = inflight;
    assert_eq!(
        inflight.wait_exit(std::time::Duration::from_secs(30)),
        Some(0)
    );
    let codes: Vec<String> = inflight.stdout().lines().map(str::to_string).collect();
    assert_eq!(codes, vec!["200"; 5], "{}", inflight.stderr());
    let code = bed.checkouts[0]
        .run
        .wait_exit(std::time::Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", bed.checkouts[0].run.stderr());
}

#[test]
fn a_rollback_survives_a_sidecar_restart_through_the_state_on_its_empty_dir() {
    let Some(mut bed) = Bed::up() else {
        return;
    };
    bed.payment("v1", &[]);
    bed.payment("v2", &[]);
    bed.checkout(0, &configmap(90, 10), &[]);
    let auth = format!("Authorization: Bearer {TOKEN}");
    let rollback = bed.exec(
        "node",
        &[
            "curl",
            "-s",
            "-m",
            "5",
            "-X",
            "POST",
            "-H",
            &auth,
            "-d",
            r#"{"virtual_service":"payment-svc"}"#,
            "http://198.51.100.10:15000/rollback",
        ],
    );
    assert!(rollback.contains("generation"), "{rollback}");
    assert_eq!(bed.weight(0, "v2"), 0.0);
    // The container crashes and the kubelet starts it again; the ConfigMap still says 90/10,
    // the state file on the emptyDir says rolled back: the rollback holds.
    bed.restart_sidecar(0);
    assert_eq!((bed.weight(0, "v1"), bed.weight(0, "v2")), (100.0, 0.0));
    let v2_before = bed.served("v2").0;
    let answers = bed.requests(0, 200, &["x-canary: false"]);
    assert_eq!(statuses(&answers), [("200".to_string(), 200)].into());
    assert_eq!(
        bed.served("v2").0,
        v2_before,
        "a request reached the rolled-back v2"
    );
}

#[test]
fn teardown_is_idempotent_and_leaves_nothing_behind() {
    let Some(mut bed) = Bed::up() else { return };
    bed.payment("v1", &[]);
    bed.checkout(0, &configmap(100, 0), &[]);
    let prefix = bed.prefix.clone();
    assert!(!Bed::leftovers(&prefix).is_empty());
    let sidecar_pid = bed.checkouts[0].run.pid();
    drop(bed);
    assert_eq!(Bed::leftovers(&prefix), "");
    // Again: nothing to do, no error.
    Bed::down(&prefix);
    assert_eq!(Bed::leftovers(&prefix), "");
    assert!(!std::path::Path::new(&format!("/proc/{sidecar_pid}")).exists());
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&left.stdout).contains(&prefix));
}
