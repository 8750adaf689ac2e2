//! The `weir serve --canary` wiring, in process and on a fake clock: weir-router's real
//! `LiveTable` behind a [`LiveSink`], and a [`ScrapeSource::from_snapshots`] whose "registry"
//! is fed by routing simulated requests through the table in force and hands its counters over
//! without text, as the sidecar's registry does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use weir_canary::*;
use weir_router::{ConfigSource, LiveTable, RequestHead};

const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payment-svc}
spec:
  hosts: [payment-svc]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 18081}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {http: 18082}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment-svc}
spec:
  host: payment-svc
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment-svc}
spec:
  hosts: [payment-svc]
  http:
  - match: [{headers: {x-canary: {exact: "true"}}}]
    route:
    - destination: {host: payment-svc, subset: v2}
  - route:
    - {destination: {host: payment-svc, subset: v1}, weight: 100}
    - {destination: {host: payment-svc, subset: v2}, weight: 0}
"#;

const SPEC: &str = r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: payment-svc, namespace: production}
spec:
  analysis:
    interval: 10s
    threshold: 2
    iterations: 2
    match: [{headers: {x-canary: {exact: "true"}}}]
    stepWeights: [10, 50]
    metrics:
    - {name: request-success-rate, thresholdRange: {min: 99}, interval: 10s}
    - {name: request-duration, thresholdRange: {max: 500}, interval: 10s}
  weir:
    minRequests: 20
    fastGuard: {period: 1s, window: 5s}
"#;

/// Simulated traffic: every scrape first routes 200 requests (5% with `x-canary: true`)
/// through the table in force and counts them the way the sidecar's registry does.
struct Traffic {
    live: Arc<LiveTable>,
    /// Every `fail_every`-th v2 request answers 503 (0: none).
    fail_every: u64,
    /// (version, code) -> count, cumulative.
    counts: BTreeMap<(String, u16), u64>,
    n: u64,
}

impl Traffic {
    fn scrape(&mut self, filter: &SeriesFilter) -> Snapshot {
        let table = self.live.load();
        for _ in 0..200 {
            self.n += 1;
            let mut req = http::Request::get("http://payment-svc/pay");
            if self.n.is_multiple_of(20) {
                req = req.header("x-canary", "true");
            }
            let req = req.body(()).unwrap();
            // A spread-out deterministic value stands in for the random one.
            let value = self.n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7;
            let d = table.decide(&RequestHead::of(&req), value).unwrap();
            let version = d.cluster.labels.destination_version.to_string();
            let v2_count = self
                .counts
                .iter()
                .filter(|((v, _), _)| v == "v2")
                .map(|(_, c)| c)
                .sum::<u64>();
            let code = if version == "v2"
                && self.fail_every > 0
                && (v2_count + 1).is_multiple_of(self.fail_every)
            {
                503
            } else {
                200
            };
            *self.counts.entry((version, code)).or_default() += 1;
        }
        let mut snapshot = Snapshot::builder(filter);
        for ((version, code), n) in &self.counts {
            let code = code.to_string();
            let labels = [
                ("destination_service_name", "payment-svc"),
                ("destination_version", version.as_str()),
                ("response_code", code.as_str()),
            ];
            assert!(snapshot.requests(&labels, *n as f64));
            // Every request took 12 ms: all in the (10, 25] bucket.
            for (le, c) in [(10.0, 0), (25.0, *n), (f64::INFINITY, *n)] {
                assert!(snapshot.duration_bucket(&labels, le, c as f64));
            }
        }
        snapshot.finish()
    }
}

fn run(fail_every: u64) -> (Report, Arc<LiveTable>) {
    let (live, _) =
        LiveTable::from_sources(&[ConfigSource::new("payment-svc.yaml", CONFIG)]).unwrap();
    let live = Arc::new(live);
    let spec = CanarySpec::from_yaml("canary.yaml", SPEC).unwrap();
    let traffic = Arc::new(Mutex::new(Traffic {
        live: live.clone(),
        fail_every,
        counts: BTreeMap::new(),
        n: 0,
    }));
    let mut source =
        ScrapeSource::from_snapshots(move |filter| Ok(traffic.lock().unwrap().scrape(filter)))
            .filter(spec.series_filter());
    let mut sink = LiveSink::new(live.clone()).origin("weir canary");
    let report = CanaryRun::new(&spec, &mut source, &mut sink)
        .clock(FakeClock::new())
        .run();
    (report, live)
}

fn weights(live: &LiveTable) -> BTreeMap<String, u32> {
    let table = live.load();
    let vs = &table.virtual_services()[0];
    vs.rules[1]
        .destinations
        .iter()
        .map(|d| (d.subset.clone().unwrap_or_default(), d.weight))
        .collect()
}

#[test]
fn a_healthy_canary_is_promoted_in_the_live_table() {
    let (report, live) = run(0);
    assert!(
        report.succeeded(),
        "{}\n{:#?}",
        report.reason,
        report.timeline
    );
    let checked: Vec<u32> = report.checks.iter().map(|c| c.canary_weight).collect();
    assert_eq!(
        checked,
        vec![0, 0, 10, 50],
        "two dark-launch checks on header traffic, then 10% and 50%"
    );
    assert_eq!(weights(&live)["v2"], 100);
    let table = live.load();
    assert_eq!(
        table.virtual_services()[0].stable_subset.as_deref(),
        Some("v2")
    );
    // The p99 the gates saw is the histogram's: 12 ms requests in (10, 25].
    let p99 = report.checks[2].gates[1].value.unwrap();
    assert!((p99 - (10.0 + 15.0 * 0.99)).abs() < 1e-6, "{p99}");
}

#[test]
fn a_failing_canary_is_rolled_back_and_latched_within_a_guard_period() {
    // Every 5th v2 request fails: 80% success.
    let (report, live) = run(5);
    assert_eq!(report.phase, Phase::Failed);
    let rb = report.rollback.as_ref().unwrap();
    // Caught during the dark launch, on header traffic alone (10 requests a second reach v2):
    // at the first guard tick whose 5 s window holds minRequests (20), i.e. with 2 s of history
    // (the run reads the counters once at its start, so history begins at 0).
    assert_eq!(rb.trigger, Trigger::FastGuard, "{}", rb.reason);
    assert_eq!(rb.detected_at_ms, 2_000, "{}", rb.reason);
    assert!(
        report.timeline.iter().all(|e| e.canary_weight == 0),
        "never got weighted traffic"
    );
    assert_eq!(weights(&live)["v2"], 0);
    assert!(live.is_latched("payment-svc"));
    assert!(
        rb.stable_seen_after_us.is_some(),
        "the in-process registry shows stable traffic"
    );
}

#[test]
fn the_fast_guard_catches_a_weighted_canary_between_checks() {
    let (live, _) =
        LiveTable::from_sources(&[ConfigSource::new("payment-svc.yaml", CONFIG)]).unwrap();
    let live = Arc::new(live);
    // No dark launch here: straight to 10%.
    let spec = CanarySpec::from_yaml(
        "canary.yaml",
        &SPEC.replace(
            "    iterations: 2\n    match: [{headers: {x-canary: {exact: \"true\"}}}]\n",
            "",
        ),
    )
    .unwrap();
    let traffic = Arc::new(Mutex::new(Traffic {
        live: live.clone(),
        fail_every: 5,
        counts: BTreeMap::new(),
        n: 0,
    }));
    let mut source =
        ScrapeSource::from_snapshots(move |filter| Ok(traffic.lock().unwrap().scrape(filter)));
    let mut sink = LiveSink::new(live.clone());
    let report = CanaryRun::new(&spec, &mut source, &mut sink)
        .clock(FakeClock::new())
        .run();
    let rb = report.rollback.as_ref().unwrap();
    assert_eq!(rb.trigger, Trigger::FastGuard, "{}", rb.reason);
    // 10% of 200 requests a second reach v2: the first tick (1 s of history since the run's
    // first read at its start, 20 requests) acts.
    assert_eq!(rb.detected_at_ms, 1_000, "{}", rb.reason);
    assert!(
        report.checks.is_empty(),
        "caught before the first 10 s check"
    );
    assert_eq!(weights(&live)["v2"], 0);
    assert!(live.is_latched("payment-svc"));
    // The latch holds: the sink refuses to give the canary traffic until released.
    let target = spec.target.clone();
    let err = sink.set_weights(&target, Split::canary(10)).unwrap_err();
    assert!(err.is_refused(), "{err}");
    sink.release(&target).unwrap();
    sink.set_weights(&target, Split::canary(10)).unwrap();
    assert_eq!(weights(&live)["v2"], 10);
}
