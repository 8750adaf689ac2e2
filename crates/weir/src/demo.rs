//! `weir demo`: the lesson's story, end to end, on this machine, in about a minute.
//!
//! Two demo upstreams (v1 and v2 of `payment-svc`), the sidecar with the lesson's
//! `config/payment-svc.yaml` in front of them (all in this process, on free loopback ports),
//! and steady traffic: a few clients at a fixed rate, one of them QA's `x-canary: true`. Then,
//! act by act:
//!
//! 1. the 99/1 typo is sent to the admin API and through the validator: refused;
//! 2. dark launch: only `x-canary: true` reaches v2 (counted at the upstreams);
//! 3. a healthy v2 is stepped up behind the gates and promoted (seen in `weir_route_weight`);
//! 4. a faulty v2 is rolled back by the fast guard, with the rollback latency measured and no
//!    request reaching v2 after it.
//!
//! Exit 0 only when every act turned out as it should. Reports go to `--report DIR`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use weir_canary::{
    Abort, CanarySpec, Event, EventKind, Report, human_micros as micros, in_process,
};
use weir_proxy::admin::api::WeightChange;
use weir_proxy::{RunningSidecar, Sidecar, SidecarOptions};
use weir_router::{Code, ConfigSource, GuardOptions, LiveTable};

use weir_proxy::admin::client::{AdminClient, Reply};

mod traffic;
pub mod upstream;

use traffic::{ClientPlan, Traffic, WeightWatch};
use upstream::{DemoUpstream, Served, UpstreamSettings};

/// The lesson's payment-svc: ServiceEntry (v1 on 18081, v2 on 18082), DestinationRule, and the
/// VirtualService with the dark-launch rule and the 90/10 split.
const PAYMENT_SVC: &str = include_str!("../../../config/payment-svc.yaml");
/// The incident's VirtualService: v1: 1, v2: 99.
const TYPO: &str = include_str!("../../../config/examples/typo-99-1.yaml");
const TYPO_NAME: &str = "config/examples/typo-99-1.yaml";
/// The canary spec, with INTERVAL and STEPS to fill in.
const SPEC: &str = include_str!("demo/canary.yaml");

const VIRTUAL_SERVICE: &str = "payment-svc";
const DARK_LAUNCH: &str = "dark launch: only x-canary: true reached v2";
const SPLIT_RULE: &str = "canary-split";
/// Share of v2's answers that fail in act 4.
const FAULT_RATE: f64 = 0.25;
/// Generous bound for anything the demo waits on: a loaded CI machine is slow, not stuck.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Shorter checks (2 s instead of 5 s, two steps instead of three): about 20 seconds.
    #[arg(long)]
    fast: bool,
    /// Where the reports go (one folder per canary run).
    #[arg(long, value_name = "DIR", default_value = "weir-demo-report")]
    report: PathBuf,
}

/// How fast the demo goes.
#[derive(Clone, Copy, Debug)]
struct Pace {
    interval: &'static str,
    steps: &'static str,
    /// How long act 4 keeps watching v2 after the rollback.
    watch_after: Duration,
}

impl Pace {
    fn new(fast: bool) -> Pace {
        if fast {
            Pace {
                interval: "2s",
                steps: "[10, 50]",
                watch_after: Duration::from_secs(2),
            }
        } else {
            Pace {
                interval: "5s",
                steps: "[1, 10, 50]",
                watch_after: Duration::from_secs(3),
            }
        }
    }

    fn spec(&self) -> Result<CanarySpec> {
        let text = SPEC
            .replace("INTERVAL", self.interval)
            .replace("STEPS", self.steps);
        CanarySpec::from_yaml("weir demo canary.yaml", &text)
            .map_err(|e| anyhow::anyhow!("the demo's canary spec is refused: {e}"))
    }
}

/// The demo's traffic: four clients at 50 requests a second, and QA's two at 25 with the
/// header: the canary sees 50 requests a second in the dark launch, 20 times `minRequests`
/// (20) over a 2 s check, room enough for a loaded machine.
const CLIENTS: [ClientPlan; 6] = [
    ClientPlan::new(50, false),
    ClientPlan::new(50, false),
    ClientPlan::new(50, false),
    ClientPlan::new(50, false),
    ClientPlan::new(25, true),
    ClientPlan::new(25, true),
];

/// `weir demo`.
pub fn run(args: DemoArgs) -> Result<ExitCode> {
    // The demo prints for humans; the sidecar's own logs would repeat it (RUST_LOG turns
    // them back on).
    crate::cli::init_tracing_at("error", false);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("weir-demo")
        .build()
        .context("cannot start the async runtime")?;
    let ok = runtime.block_on(demo(&args))?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One act's outcome, for the summary.
struct Outcome {
    title: &'static str,
    ok: bool,
    detail: String,
}

impl Outcome {
    fn new(title: &'static str, ok: bool, detail: impl Into<String>) -> Outcome {
        let detail = detail.into();
        Outcome { title, ok, detail }
    }
}

async fn demo(args: &DemoArgs) -> Result<bool> {
    let pace = Pace::new(args.fast);
    let spec = pace.spec()?;
    std::fs::create_dir_all(&args.report)
        .with_context(|| format!("cannot create {}", args.report.display()))?;

    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let v1 = Arc::new(DemoUpstream::start(any, UpstreamSettings::named("v1")).await?);
    let v2 = Arc::new(DemoUpstream::start(any, UpstreamSettings::named("v2")).await?);
    // A private directory holding the demo's config file, removed at the end.
    let config_dir = tempfile::Builder::new()
        .prefix("weir-demo-")
        .tempdir()
        .context("cannot create the demo's config directory")?;
    let config = config_dir.path().join("payment-svc.yaml");
    std::fs::write(&config, render_config(v1.addr.port(), v2.addr.port())?)
        .with_context(|| format!("cannot write {}", config.display()))?;
    let running = weir_proxy::start(SidecarOptions {
        config: vec![config],
        listen: any,
        admin: any,
        workload: "demo-client".into(),
        admin_token: None,
        drain_timeout: Duration::from_secs(2),
        // The demo changes the table through the admin API only.
        reload_poll: None,
        // The proxy as `weir serve` runs it: its own worker thread.
        workers: 1,
        state: None,
        ..SidecarOptions::default()
    })
    .await?;
    let sidecar = Arc::clone(running.sidecar());
    let admin = AdminClient::new(&running.admin_addr.to_string(), None)?;

    println!(
        "weir demo: the lesson's payment-svc, end to end ({})",
        if args.fast {
            "--fast: a check every 2 s"
        } else {
            "a check every 5 s; --fast for a shorter run"
        }
    );
    println!();
    println!("  v1 (stable)   http://{}", v1.addr);
    println!("  v2 (canary)   http://{}", v2.addr);
    println!(
        "  weir sidecar  proxy http://{}  admin http://{}",
        running.proxy_addr, running.admin_addr
    );
    println!("  config        config/payment-svc.yaml: dark-launch rule (x-canary: true -> v2),");
    println!("                canary-split v1 100 / v2 0; weir.dev/max-step 50");
    let rate = |tagged: bool| -> u32 {
        CLIENTS
            .iter()
            .filter(|c| c.tagged == tagged)
            .map(|c| c.rate)
            .sum()
    };
    println!(
        "  traffic       GET http://payment-svc/pay: {} req/s, and QA's x-canary: true at {} req/s",
        rate(false),
        rate(true)
    );

    let traffic = Traffic::start(running.proxy_addr, &CLIENTS);
    let warm = wait_for(PATIENCE, || traffic.totals().v1 >= 20).await;

    let mut outcomes = Vec::new();
    outcomes.push(if warm {
        act1(&admin, &sidecar, &v2, &args.report).await
    } else {
        println!("\nno traffic got through the sidecar within {PATIENCE:?}");
        Outcome::new("the 99/1 typo refused by the guard", false, "no traffic")
    });
    let (act2, act3) = act2_and_3(&spec, &sidecar, &admin, &v1, &v2, &args.report).await;
    outcomes.push(act2);
    outcomes.push(act3);
    outcomes.push(act4(&spec, &sidecar, &admin, &v2, &traffic, pace, &args.report).await);

    drop(traffic);
    let all_ok = summary(&outcomes, &args.report);
    shut_down(running).await;
    Ok(all_ok)
}

async fn shut_down(running: RunningSidecar) {
    if tokio::time::timeout(Duration::from_secs(5), running.shutdown())
        .await
        .is_err()
    {
        eprintln!("weir demo: the sidecar did not stop in 5 s");
    }
}

// === act 1 ===

async fn act1(admin: &AdminClient, sidecar: &Sidecar, v2: &DemoUpstream, dir: &Path) -> Outcome {
    let title = "the 99/1 typo refused by the guard";
    println!("\nAct 1: the 99/1 typo");
    println!("  In the incident, `v1: 1, v2: 99` was applied where `v1: 90, v2: 10` was meant.");
    let body = WeightChange {
        virtual_service: VIRTUAL_SERVICE.into(),
        weights: [("v1".into(), 1), ("v2".into(), 99)].into(),
        ..WeightChange::default()
    };
    println!(
        "  $ curl -X PUT {}/weights -d '{}'",
        admin.base(),
        json!(body)
    );
    let Reply {
        status,
        body: answer,
    } = admin.answer(Method::PUT, "/weights", Some(&body)).await;
    let codes: Vec<String> = answer["findings"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|f| f["code"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "  -> {status}: {}",
        answer["error"].as_str().unwrap_or("(no error message)")
    );
    for f in answer["findings"].as_array().into_iter().flatten() {
        println!(
            "     {} {}",
            f["code"].as_str().unwrap_or("?"),
            first_sentence(f["message"].as_str().unwrap_or(""))
        );
    }

    let running = sidecar.live.load_full();
    let compiled = weir_router::validate(
        &[ConfigSource::new(TYPO_NAME, TYPO)],
        Some(&running),
        GuardOptions::default(),
    );
    println!("  $ weir validate {TYPO_NAME} --against <the config in force>");
    for f in compiled.findings.errors() {
        println!(
            "     {}: error[{}] {}",
            f.location,
            f.code,
            first_sentence(&f.message)
        );
    }
    let validator_refused = compiled
        .findings
        .errors()
        .any(|f| f.code == Code::CanaryMajority);
    let in_force = split(&sidecar.live);
    let v2_untagged = v2.served().untagged();
    println!(
        "  In force: v1 {} / v2 {}; v2 has served {v2_untagged} requests without x-canary: true.",
        in_force.get("v1").copied().unwrap_or(0),
        in_force.get("v2").copied().unwrap_or(0),
    );
    let ok = status == StatusCode::CONFLICT
        && codes.iter().any(|c| c == "WEIR004")
        && validator_refused
        && in_force.get("v2") == Some(&0)
        && v2_untagged == 0;
    verdict(
        ok,
        "the typo never reached a request",
        "the typo was not refused",
    );
    let record = json!({
        "put_weights": {"status": status.as_u16(), "answer": answer},
        "validate": {"file": TYPO_NAME, "findings": compiled.findings},
        "weights_in_force": in_force,
        "ok": ok,
    });
    write_json(&dir.join("act1-typo-refused.json"), &record);
    let detail = format!("PUT /weights -> {}, {}", status.as_u16(), codes.join(" + "));
    Outcome::new(title, ok, detail)
}

// === acts 2 and 3: one canary run, dark launch first ===

/// What the observer of the promotion run saw.
#[derive(Default)]
struct PromotionSeen {
    /// (v1, v2) served at the last dark-launch check, while the canary had no weight.
    dark_launch: Option<(Served, Served)>,
    act3_started: bool,
}

async fn act2_and_3(
    spec: &CanarySpec,
    sidecar: &Arc<Sidecar>,
    admin: &AdminClient,
    v1: &Arc<DemoUpstream>,
    v2: &Arc<DemoUpstream>,
    dir: &Path,
) -> (Outcome, Outcome) {
    println!("\nAct 2: dark launch: only QA's x-canary: true reaches v2");
    println!(
        "  `weir canary` in the sidecar: {} passing checks on header traffic before any weight.",
        spec.analysis
            .dark_launch
            .as_ref()
            .map_or(0, |d| d.iterations)
    );
    let watch = WeightWatch::start(admin.base(), SPLIT_RULE, "v2", Duration::from_millis(50));
    let _ = sidecar.live.release(Some(VIRTUAL_SERVICE));
    let seen = Arc::new(Mutex::new(PromotionSeen::default()));
    let report = {
        let (v1, v2, seen) = (Arc::clone(v1), Arc::clone(v2), Arc::clone(&seen));
        run_canary(spec, sidecar, move |e| {
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if e.kind == EventKind::Check && e.canary_weight == 0 {
                seen.dark_launch = Some((v1.served(), v2.served()));
            }
            if e.kind == EventKind::Weights && e.canary_weight > 0 && !seen.act3_started {
                seen.act3_started = true;
                print_dark_launch(seen.dark_launch);
                println!("\nAct 3: a healthy v2, stepped up behind the gates and promoted");
            }
            print_event(e);
        })
        .await
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            return (
                Outcome::new("dark launch", false, e.clone()),
                Outcome::new("promotion", false, e),
            );
        }
    };
    let (dark_launch, act3_started) = {
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        (seen.dark_launch, seen.act3_started)
    };
    if !act3_started {
        print_dark_launch(dark_launch);
    }
    let act2 = match dark_launch {
        Some((s1, s2)) => Outcome::new(
            DARK_LAUNCH,
            dark_launch_ok(s1, s2),
            format!(
                "v2 served {} requests, {} with the header",
                s2.requests, s2.tagged
            ),
        ),
        None => Outcome::new(DARK_LAUNCH, false, "no dark-launch check ran"),
    };
    if let Some((s1, s2)) = dark_launch {
        write_json(
            &dir.join("act2-dark-launch.json"),
            &json!({
                "v1": {"requests": s1.requests, "with_x_canary": s1.tagged},
                "v2": {"requests": s2.requests, "with_x_canary": s2.tagged},
                "ok": act2.ok,
            }),
        );
    }

    // The watcher polls every 50 ms: give it one more look at the promoted table.
    let _ = wait_for(Duration::from_secs(5), || watch.seen().last() == Some(&100)).await;
    let weights = watch.seen();
    println!(
        "  weir_route_weight{{rule=\"{SPLIT_RULE}\",destination_version=\"v2\"}} seen on /metrics: {}",
        arrows(&weights)
    );
    let in_force = split(&sidecar.live);
    let stable = sidecar
        .live
        .load_full()
        .virtual_service(VIRTUAL_SERVICE)
        .and_then(|vs| vs.stable_subset.clone());
    let expected: Vec<u32> = spec
        .plan
        .weights()
        .into_iter()
        .chain(std::iter::once(100))
        .collect();
    let ok = report.succeeded()
        && is_subsequence(&expected, &weights)
        && stable.as_deref() == Some("v2")
        && in_force.get("v2") == Some(&100);
    let saved = save_report(&report, &dir.join("act3-promotion"));
    println!(
        "  In force: {}; stable subset {}.",
        describe_split(&in_force),
        stable.as_deref().unwrap_or("?")
    );
    verdict(
        ok,
        "v2 promoted: every gate passed at every step",
        &format!("not promoted: {}", report.reason),
    );
    println!("  report: {saved}");
    let detail = format!("weights seen {}", arrows(&weights));
    let act3 = Outcome::new("healthy v2 stepped up and promoted", ok, detail);
    (act2, act3)
}

fn dark_launch_ok(v1: Served, v2: Served) -> bool {
    v2.tagged > 0 && v2.untagged() == 0 && v1.tagged == 0
}

fn print_dark_launch(seen: Option<(Served, Served)>) {
    let Some((v1, v2)) = seen else {
        println!("  No dark-launch check ran.");
        verdict(false, "", "the dark launch was not checked");
        return;
    };
    println!(
        "  At the upstreams: v2 served {} requests, {} of them with x-canary: true, {} without;",
        v2.requests,
        v2.tagged,
        v2.untagged()
    );
    println!(
        "  v1 served {} requests, {} with the header.",
        v1.requests, v1.tagged
    );
    verdict(
        dark_launch_ok(v1, v2),
        "v2 got exactly QA's header traffic, production stayed on v1",
        "header routing leaked",
    );
}

// === act 4 ===

async fn act4(
    spec: &CanarySpec,
    sidecar: &Arc<Sidecar>,
    admin: &AdminClient,
    v2: &Arc<DemoUpstream>,
    traffic: &Traffic,
    pace: Pace,
    dir: &Path,
) -> Outcome {
    let title = "faulty v2 rolled back by the fast guard";
    println!("\nAct 4: a faulty v2, rolled back automatically");
    // Back to the lesson's starting point: v1 stable, v2 at 0%, then a new v2 build.
    // The promotion is kept over the file (and would survive a reload or a restart): drop it.
    let status = admin
        .answer(Method::DELETE, "/state", None::<&()>)
        .await
        .status;
    let _ = sidecar.live.release(Some(VIRTUAL_SERVICE));
    println!(
        "  $ curl -X DELETE {}/state   -> {status}: the config's weights again, v1 stable, {}",
        admin.base(),
        describe_split(&split(&sidecar.live))
    );
    println!(
        "  A new v2 build: it answers {:.0}% of its requests with 500 as soon as it takes production traffic.",
        FAULT_RATE * 100.0
    );
    let watch = WeightWatch::start(admin.base(), SPLIT_RULE, "v2", Duration::from_millis(50));
    let marker = traffic.marker();
    let report = {
        let v2 = Arc::clone(v2);
        let mut faulty = false;
        run_canary(spec, sidecar, move |e| {
            print_event(e);
            if e.kind == EventKind::Weights && e.canary_weight > 0 && !faulty {
                faulty = true;
                v2.set_error_rate(FAULT_RATE);
                println!(
                    "  !! v2 now fails {:.0}% of its requests",
                    FAULT_RATE * 100.0
                );
            }
            if e.kind == EventKind::RolledBack {
                marker.mark();
            }
        })
        .await
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => return Outcome::new(title, false, e),
    };
    v2.set_error_rate(0.0);

    // Requests sent before the rollback may still be in flight: wait for every client to have
    // an answer to a request sent after it, then count what reaches v2 from there on.
    let settled = wait_for(PATIENCE, || traffic.settled_since_mark()).await;
    let v2_base = v2.served().requests;
    let before = traffic.totals();
    tokio::time::sleep(pace.watch_after).await;
    let after = traffic.totals();
    let v2_at_door = v2.served().requests - v2_base;
    let sent_after = after.after_mark_v1 + after.after_mark_v2;
    let weights = watch.seen();

    let rollback = report.rollback.as_ref();
    if let Some(rb) = rollback {
        let unknown = || "unknown".to_string();
        println!(
            "  Rollback SLA, from v2's first failed request the sidecar counted: detected after {} ({} on {}, at least {} canary requests per window),",
            rb.first_failure_to_detected_us.map_or_else(unknown, micros),
            rb.trigger.describe(),
            rb.gate.as_deref().unwrap_or("no gate"),
            rb.min_requests
        );
        println!(
            "                    v2 at 0% in force after {} (detection -> 0%: {}, the table swap: {}),",
            rb.first_failure_to_in_force_us.map_or_else(unknown, micros),
            micros(rb.detected_to_in_force_us),
            rb.sink_us.map_or_else(|| "n/a".into(), micros)
        );
        println!(
            "                    then the first request counted on v1 {} later.",
            rb.stable_seen_after_us
                .map_or_else(|| "not seen".into(), micros)
        );
    }
    println!(
        "  weir_route_weight{{rule=\"{SPLIT_RULE}\",destination_version=\"v2\"}} seen on /metrics: {}",
        arrows(&weights)
    );
    println!(
        "  After the rollback: {} of {sent_after} requests sent reached v2 (QA's x-canary: true included:",
        after.after_mark_v2
    );
    println!(
        "  the latch points the dark-launch rule at v1 too); v2 itself saw {v2_at_door} new requests in {:?}.",
        pace.watch_after
    );
    let in_force = split(&sidecar.live);
    let latched = sidecar.live.is_latched(VIRTUAL_SERVICE);
    println!(
        "  In force: {}; rollback latch {}.",
        describe_split(&in_force),
        if latched { "held" } else { "NOT held" }
    );
    let ok = report.outcome == weir_canary::Outcome::RolledBack
        && rollback.is_some_and(|rb| rb.error.is_none())
        && settled
        && after.after_mark_v2 == 0
        && v2_at_door == 0
        && after.sent > before.sent
        && in_force.get("v2").copied().unwrap_or(0) == 0
        && latched;
    let by = rollback.map_or("nothing", |rb| rb.trigger.describe());
    let saved = save_report(&report, &dir.join("act4-rollback"));
    verdict(
        ok,
        &format!("rolled back by {by}; no request reached v2 after it"),
        "the faulty canary was not contained",
    );
    println!("  report: {saved}");
    let detail = match rollback {
        Some(rb) => format!(
            "by {by}, {} from the first failed request to 0%, {} requests on v2 after",
            rb.first_failure_to_in_force_us
                .map_or_else(|| "?".to_string(), micros),
            after.after_mark_v2
        ),
        None => format!("not rolled back: {}", report.reason),
    };
    Outcome::new(title, ok, detail)
}

/// Runs the demo's canary inside the sidecar on a blocking thread (the controller sleeps
/// between ticks); `Err` says why it did not finish.
async fn run_canary(
    spec: &CanarySpec,
    sidecar: &Arc<Sidecar>,
    observer: impl FnMut(&Event) + Send + 'static,
) -> Result<Report, String> {
    let (spec, sidecar) = (spec.clone(), Arc::clone(sidecar));
    tokio::task::spawn_blocking(move || {
        in_process::run(&spec, &sidecar, Abort::default(), observer)
    })
    .await
    .map_err(|e| format!("the canary run panicked: {e}"))
}

// === output ===

fn print_event(e: &Event) {
    if e.kind == EventKind::Guard {
        return;
    }
    let mut line = format!(
        "  [{:>5.1}s] {:<16} v2 {:>3}%",
        e.at_ms as f64 / 1000.0,
        e.phase.to_string(),
        e.canary_weight
    );
    if e.kind == EventKind::Check
        && let Some(r) = e.requests
    {
        line.push_str(&format!("  {r:>5} req"));
    }
    line.push_str("  ");
    line.push_str(&e.message);
    println!("{line}");
}

fn verdict(ok: bool, good: &str, bad: &str) {
    if ok {
        println!("  => OK: {good}");
    } else {
        println!("  => FAILED: {bad}");
    }
}

fn summary(outcomes: &[Outcome], dir: &Path) -> bool {
    println!("\nSummary");
    for (i, o) in outcomes.iter().enumerate() {
        println!(
            "  act {}  {:<44} {:<6} {}",
            i + 1,
            o.title,
            if o.ok { "OK" } else { "FAILED" },
            o.detail
        );
    }
    let all_ok = outcomes.iter().all(|o| o.ok);
    write_json(
        &dir.join("summary.json"),
        &json!({
            "ok": all_ok,
            "acts": outcomes.iter().map(|o| json!({"title": o.title, "ok": o.ok, "detail": o.detail})).collect::<Vec<_>>(),
        }),
    );
    println!("  reports in {}", dir.display());
    if all_ok {
        println!("weir demo: every act turned out as it should");
    } else {
        println!("weir demo: FAILED: some act did not turn out as it should");
    }
    all_ok
}

fn save_report(report: &Report, dir: &Path) -> String {
    match report.write_to(dir) {
        Ok(()) => format!(
            "{} (chart: {})",
            dir.join("report.json").display(),
            dir.join("report.svg").display()
        ),
        Err(e) => format!("not written: {e}"),
    }
}

fn write_json(path: &Path, value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    if let Err(e) = std::fs::write(path, text + "\n") {
        eprintln!("weir demo: cannot write {}: {e}", path.display());
    }
}

fn first_sentence(message: &str) -> &str {
    match message.find(". ") {
        Some(i) => &message[..=i],
        None => message,
    }
}

fn arrows(weights: &[u32]) -> String {
    if weights.is_empty() {
        return "(nothing)".into();
    }
    weights
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn describe_split(split: &BTreeMap<String, u32>) -> String {
    split
        .iter()
        .map(|(s, w)| format!("{s} {w}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Whether `wanted` appears in `seen` in order (other values may come between).
fn is_subsequence(wanted: &[u32], seen: &[u32]) -> bool {
    let mut seen = seen.iter();
    wanted.iter().all(|w| seen.any(|s| s == w))
}

// === the sidecar and its config ===

/// The weights of the split rule in force, by subset.
fn split(live: &LiveTable) -> BTreeMap<String, u32> {
    let table = live.load_full();
    table
        .virtual_service(VIRTUAL_SERVICE)
        .and_then(|vs| {
            vs.rules
                .iter()
                .find(|r| r.name.as_deref() == Some(SPLIT_RULE))
        })
        .map(|rule| {
            rule.destinations
                .iter()
                .filter_map(|d| Some((d.subset.clone()?, d.weight)))
                .collect()
        })
        .unwrap_or_default()
}

/// `config/payment-svc.yaml` pointed at the demo's upstreams, with the split at v1 100 / v2 0
/// so that v2 starts dark.
fn render_config(v1_port: u16, v2_port: u16) -> Result<String> {
    let edits = [
        ("http: 18081", format!("http: {v1_port}")),
        ("http: 18082", format!("http: {v2_port}")),
        // The canary's line first: "weight: 10" is a prefix of "weight: 100".
        ("weight: 10 #", "weight: 0 #".to_string()),
        ("weight: 90 #", "weight: 100 #".to_string()),
    ];
    let mut text = PAYMENT_SVC.to_string();
    for (from, to) in edits {
        anyhow::ensure!(
            text.matches(from).count() == 1,
            "config/payment-svc.yaml changed: the demo expects one `{from}` in it"
        );
        text = text.replacen(from, &to, 1);
    }
    Ok(text)
}

/// Polls `check` every 20 ms until it holds or `timeout` passes.
async fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_starts_v2_dark_on_the_given_ports() {
        let text = render_config(40001, 40002).unwrap();
        assert!(text.contains("http: 40001") && text.contains("http: 40002"));
        let (live, findings) =
            LiveTable::from_sources(&[ConfigSource::new("demo.yaml", text)]).unwrap();
        assert!(!findings.has_errors(), "{findings}");
        assert_eq!(
            split(&live),
            BTreeMap::from([("v1".to_string(), 100), ("v2".to_string(), 0)])
        );
    }

    #[test]
    fn both_paces_make_a_valid_spec() {
        for fast in [true, false] {
            let spec = Pace::new(fast).spec().unwrap();
            assert!(spec.analysis.dark_launch.is_some());
            assert_eq!(spec.target.rule.as_deref(), Some(SPLIT_RULE));
        }
        assert_eq!(Pace::new(true).spec().unwrap().plan.weights(), vec![10, 50]);
    }

    #[test]
    fn weights_seen_in_order_with_others_between() {
        assert!(is_subsequence(&[10, 50, 100], &[0, 10, 50, 100]));
        assert!(is_subsequence(&[10, 50, 100], &[0, 10, 0, 50, 100]));
        assert!(!is_subsequence(&[10, 50, 100], &[0, 50, 10, 100]));
    }
}
