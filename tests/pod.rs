//! The pod-in-a-box test bed (issue 12): what a Kubernetes pod does to weir, reproduced with real
//! kernel parts and no API server. `scripts/pod-in-a-box.sh` builds a node and five pods as
//! network namespaces (addresses from 198.51.100.0/24, none in the root namespace), ClusterIPs
//! DNATed by the node as kube-proxy does, cluster DNS names in per-namespace hosts files;
//! `tests/pod/bed.rs` runs in it what a kubelet would: `weir init` and weir as uid 1337 in two
//! checkout pods whose app calls http://payment-svc, payment-svc v1 and v2 pods (the app behind
//! `weir init`'s inbound capture and weir's inbound side as uid 1337), a ConfigMap volume
//! updated by the kubelet's `..data` symlink swap, a real Prometheus scraping every sidecar.
//!
//! Needs root, iproute2, iptables, curl and prometheus (`scripts/install-test-deps.sh`). Without
//! root the tests say so and pass, except under CI (`CI` set), where they fail instead.

mod support;

#[path = "pod/bed.rs"]
mod bed;

use std::time::Duration;

use bed::*;
use support::*;
use weir_canary::FlaggerQueries;

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
    let Some(bed) = Bed::with_split(90, 10) else {
        return;
    };

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

    // On the destination side, each version's inbound sidecar counted what its app served,
    // as the Deployment Flagger's queries name.
    for p in &bed.payments {
        let ready = p.sidecar.line_starting("weir: ready ").unwrap_or_default();
        assert!(ready.contains("inbound=0.0.0.0:15006"), "{ready}");
    }
    for (version, served) in [("v1", v1_after), ("v2", v2_after)] {
        let workload = format!("payment-svc-{version}");
        let inbound = metric_sum(
            &bed.payment_metrics(version),
            "istio_requests_total",
            &[
                ("reporter", "destination"),
                ("destination_workload", &workload),
                ("destination_workload_namespace", "production"),
                ("destination_version", version),
                ("response_code", "200"),
            ],
        );
        assert_eq!(inbound, served as f64, "{version}");
    }

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
    let Some(mut bed) = Bed::with_split(90, 10) else {
        return;
    };
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
    // The gates: Flagger's built-in queries (the default with --prometheus) over the series
    // the payment-svc pods' inbound sidecars report.
    let mut run = bed.canary(&spec, &["--prometheus", "http://127.0.0.1:9090"]);
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
    // The gates' data: v2's inbound sidecar, as Flagger's queries select it.
    let inbound = bed.promql(
        r#"sum(istio_requests_total{reporter="destination",destination_workload_namespace="production",destination_workload=~"payment-svc-v2"})"#,
    );
    assert!(inbound.is_some_and(|n| n > 0.0), "{inbound:?}");
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
fn flaggers_queries_on_the_beds_prometheus_return_the_injected_success_rate_and_latency() {
    let Some(mut bed) = Bed::up() else { return };
    bed.payment("v1", &[]);
    // v2 fails one request in five (spread evenly) and takes 200 ms more than v1: far above
    // anything this busy two-core machine adds.
    bed.payment("v2", &["--error-rate", "0.2", "--latency-ms", "200"]);
    bed.checkout(0, &configmap(50, 50), &[]);
    bed.prometheus();
    let _traffic = bed.steady_traffic(0);
    // The queries exactly as `weir canary --prometheus` sends them for this Canary
    // (namespace production, targetRef payment-svc-v2), over a 20 s window.
    let window = Duration::from_secs(20);
    let v2 = FlaggerQueries::new("production", "payment-svc-v2");
    let v1 = FlaggerQueries::new("production", "payment-svc-v1");
    bed.eventually("a window of v2 traffic in Prometheus", || {
        bed.promql(&v2.requests(window)).is_some_and(|n| n >= 60.0)
    });
    let seen = |q: &FlaggerQueries| {
        let rate = bed.promql(&q.request_success_rate(window));
        let p99 = bed.promql(&q.request_duration(window));
        (rate.expect("a success rate"), p99.expect("a p99"))
    };
    let (rate, p99) = seen(&v2);
    eprintln!(
        "Flagger's queries on the bed's Prometheus, payment-svc-v2: {rate:.2}% p99 {p99:.2} ms"
    );
    // 80% give or take a request of the window's edges.
    assert!((rate - 80.0).abs() < 2.5, "v2 success rate {rate}");
    // 200 ms and a little: in Envoy's 100-250 ms bucket, interpolated as Prometheus does
    // (249 ms when every request is there), at most the next one up for a busy machine's tail.
    assert!(p99 > 100.0 && p99 <= 500.0, "v2 p99 {p99}");
    // Not one v2 request under the injected latency's bucket.
    let fast = bed.promql(&format!(
        r#"sum(increase(istio_request_duration_milliseconds_bucket{{reporter="destination",destination_workload="payment-svc-v2",le=~"100|100.0"}}[{}s]))"#,
        window.as_secs()
    ));
    assert_eq!(fast, Some(0.0));
    let (v1_rate, v1_p99) = seen(&v1);
    eprintln!("payment-svc-v1: {v1_rate:.2}% p99 {v1_p99:.2} ms");
    assert_eq!(v1_rate, 100.0);
    assert!(v1_p99 < p99, "v1 p99 {v1_p99} vs v2 {p99}");
}

#[test]
fn a_clusterip_addressed_request_is_routed_by_the_virtualservice() {
    let Some(bed) = Bed::with_split(90, 10) else {
        return;
    };
    // The app calls the ClusterIP itself: the Host is the address, no VirtualService host
    // matches it; the original destination (198.51.100.200:80, before kube-proxy's DNAT in
    // the node) is what `payment-svc` resolves to, so the VirtualService routes it: 90/10,
    // not kube-proxy's 50/50.
    const N: usize = 400;
    let clusterip = "http://198.51.100.200/pay";
    let answers = bed.requests_to(0, clusterip, N, &["x-canary: false"]);
    assert_eq!(statuses(&answers), [("200".to_string(), N)].into());
    let ((v1, _, _), (v2, _, _)) = (bed.served("v1"), bed.served("v2"));
    assert_eq!(v1 + v2, N as u64);
    assert!(
        within_binomial(v2, N as u64, 0.10, 4.0),
        "v2 got {v2} of {N}: not the VirtualService's 10%"
    );
    // QA's header rule applies too.
    let answers = bed.requests_to(0, clusterip, 20, &["x-canary: true"]);
    assert_eq!(statuses(&answers), [("200".to_string(), 20)].into());
    assert_eq!(bed.served("v2").0, v2 + 20);
    let metrics = bed.metrics(0);
    let routed = metric_sum(
        &metrics,
        "istio_requests_total",
        &[
            ("reporter", "source"),
            ("destination_service_name", "payment-svc"),
        ],
    );
    assert_eq!(routed, (N + 20) as f64, "{metrics}");
    let passed = metric_sum(
        &metrics,
        "istio_requests_total",
        &[("destination_service_name", "PassthroughCluster")],
    );
    assert_eq!(passed, 0.0, "{metrics}");
    eprintln!("ClusterIP-addressed, routed by the VirtualService: v1 {v1}, v2 {v2}");
}

/// A TCP conversation with a greeting server in checkout pod 0's app, as uid 1000: the
/// greeting and the echo of `ping`. Server-first reads before it writes; client-first
/// writes at once, before the greeting.
fn tcp_conversation(bed: &Bed, port: u16, client_first: bool) -> Result<String, String> {
    let script = if client_first {
        format!(
            "exec 3<>/dev/tcp/198.51.100.20/{port}; printf 'ping\\n' >&3; \
             read -r hello <&3; read -r echo <&3; echo \"$hello $echo\""
        )
    } else {
        format!(
            "exec 3<>/dev/tcp/198.51.100.20/{port}; read -r hello <&3; printf 'ping\\n' >&3; \
             read -r echo <&3; echo \"$hello $echo\""
        )
    };
    let out = bed
        .command(
            "checkout-0",
            Some(APP_UID),
            &["timeout", "5", "bash", "-c", &script],
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("exit {:?}: {text}", out.status.code()))
    }
}

#[test]
fn non_http_tcp_works_through_the_capture_and_weirs_relays_are_not_captured_again() {
    let Some(mut bed) = Bed::up() else { return };
    bed.checkout(0, &configmap(90, 10), &[]);
    bed.tcp_services();
    // Server-first: relayed at once on MySQL's port, after the 100 ms sniff window on 7000.
    for (port, greeting) in [(3306, "mysql-hello"), (7000, "banner-7000")] {
        assert_eq!(
            tcp_conversation(&bed, port, false).as_deref(),
            Ok(format!("{greeting} ping\n").as_str())
        );
    }
    // Client-first, not HTTP: recognised by its first bytes.
    assert_eq!(
        tcp_conversation(&bed, 7000, true).as_deref(),
        Ok("banner-7000 ping\n")
    );
    // Three connections, three relays: weir's own connections to the service (uid 1337)
    // were not captured again (that would count more, or stop as a loop).
    let metrics = bed.metrics(0);
    assert_eq!(
        metric_sum(&metrics, "weir_tcp_passthrough_connections_total", &[]),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "weir_loops_stopped_total", &[]),
        0.0,
        "{metrics}"
    );
}

#[test]
fn without_the_uid_exemption_the_loop_guard_stops_http_and_tcp_loops_not_a_storm() {
    let Some(mut bed) = Bed::up() else { return };
    bed.payment("v1", &[]);
    bed.payment("v2", &[]);
    // The init container exempts uid 4242, but weir runs as 1337: each of its upstream
    // connections is captured and comes back to it.
    bed.checkout_with_init(0, &configmap(90, 10), &["--proxy-uid", "4242"], &[]);
    bed.tcp_services();
    const N: usize = 20;
    let answers = bed.requests(0, N, &["x-canary: false"]);
    assert_eq!(statuses(&answers), [("508".to_string(), N)].into());
    assert_eq!((bed.served("v1").0, bed.served("v2").0), (0, 0));
    let metrics = bed.metrics(0);
    let stopped =
        |reason: &str| metric_sum(&metrics, "weir_loops_stopped_total", &[("reason", reason)]);
    assert_eq!(stopped("hop_limit"), N as f64, "{metrics}");
    // Bounded: each request passed the listener at most 5 times (4 hops, then the 508).
    let passes = metric_sum(&metrics, "istio_requests_total", &[("reporter", "source")]);
    assert!(passes <= (N * 5) as f64, "{passes} passes for {N} requests");
    // Plain TCP: the relay's own connection comes back and is refused; the app's connection
    // ends without the greeting after one extra connection.
    let tcp = tcp_conversation(&bed, 3306, false);
    // bash's reads find the end of the stream: nothing came back.
    assert_eq!(tcp.as_deref().map(str::trim), Ok(""), "{tcp:?}");
    let metrics = bed.metrics(0);
    assert_eq!(
        metric_sum(
            &metrics,
            "weir_loops_stopped_total",
            &[("reason", "own_connection")]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "weir_tcp_passthrough_connections_total", &[]),
        1.0,
        "{metrics}"
    );
    eprintln!(
        "without the uid exemption: {N} requests -> {N} x 508 in {passes} passes; TCP loop refused after one extra connection"
    );
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
    let Some(mut bed) = Bed::with_split(90, 10) else {
        return;
    };
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
