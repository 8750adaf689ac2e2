//! `weir demo --fast`, as CI runs it: every act turns out as it should, the output tells each
//! act's outcome, and the reports are written.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_demo_tells_every_act_and_writes_its_reports() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("reports");
    let mut run = WeirRun::spawn(&["demo", "--fast", "--report", report.to_str().unwrap()]);
    let code = run.exit_code(Duration::from_secs(180)).await;
    let out = run.stdout();
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{}", run.stderr());

    // Each act, and its outcome, in order.
    let marks = [
        "Act 1: the 99/1 typo",
        "-> 409 Conflict",
        "error[WEIR004]",
        "=> OK: the typo never reached a request",
        "Act 2: dark launch",
        "0 without",
        "=> OK: v2 got exactly QA's header traffic",
        "Act 3: a healthy v2",
        "seen on /metrics: 0 -> 10 -> 50 -> 100",
        "=> OK: v2 promoted",
        "Act 4: a faulty v2",
        "v2 now fails 25%",
        "Rollback SLA, from v2's first failed request the sidecar counted: detected after",
        "v2 at 0% in force after",
        "After the rollback: 0 of",
        "=> OK: rolled back by the fast guard",
        "weir demo: every act turned out as it should",
    ];
    let mut rest = out.as_str();
    for mark in marks {
        let at = rest
            .find(mark)
            .unwrap_or_else(|| panic!("{mark:?} missing (or out of order) in:\n{out}"));
        rest = &rest[at + mark.len()..];
    }

    for file in [
        "act1-typo-refused.json",
        "act2-dark-launch.json",
        "act3-promotion/report.json",
        "act3-promotion/report.svg",
        "act4-rollback/report.json",
        "act4-rollback/report.svg",
        "summary.json",
    ] {
        assert!(report.join(file).exists(), "{file} not written");
    }
    let json = |file: &str| -> Value { serde_json::from_str(&read(report.join(file))).unwrap() };
    assert_eq!(json("summary.json")["ok"], true);
    assert_eq!(json("act3-promotion/report.json")["decision"], "promoted");
    let rollback = json("act4-rollback/report.json");
    assert_eq!(rollback["decision"], "rolled-back");
    assert_eq!(rollback["rollback"]["trigger"], "fast-guard");
    let latency = rollback["rollback"]["detected_to_in_force_us"]
        .as_u64()
        .unwrap();
    assert!(latency < 1_000_000, "in-process rollback took {latency} µs");
    // Timed from the first failed request the sidecar counted: before the detection, so the
    // SLA is at least the detection-to-0% time.
    let rb = &rollback["rollback"];
    assert_eq!(rb["gate"], "request-success-rate", "{rb}");
    let first = rb["first_failure_at_ms"].as_i64().expect("a first failure");
    assert!(first <= rb["detected_at_ms"].as_i64().unwrap(), "{rb}");
    assert!(
        rb["first_failure_to_in_force_us"].as_u64().unwrap() >= latency,
        "{rb}"
    );
    assert!(read(report.join("act3-promotion/report.svg")).starts_with("<svg"));
}
