//! The state machine on a fake clock, with a scripted metric source, a recording sink and
//! scripted webhooks. Every run is deterministic and takes microseconds.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use weir_canary::*;

// === harness ===

/// What the scripted world knows when asked for numbers.
#[derive(Clone, Copy, Debug)]
struct Now {
    /// Time since the run started.
    elapsed: Duration,
    /// The canary weight in force.
    weight: u32,
}

/// The canary's behaviour: requests per second and health, given the time and weight.
type Health = Box<dyn Fn(Now) -> (f64, f64, f64)>;

#[derive(Default)]
struct World {
    weight: u32,
    stable_requests: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Set(u32, u32),
    Rollback,
    Promote,
}

struct Sim {
    world: Rc<RefCell<World>>,
    clock: FakeClock,
    /// (rps, success rate %, p99 ms) of the canary.
    health: Health,
    queries: BTreeMap<String, Option<f64>>,
    supports_queries: bool,
    /// What the sidecars would say of the canary's first failure, ms since the start, and
    /// the `over_ms` each question asked.
    first_failure: Option<u64>,
    asked_first: Rc<RefCell<Vec<Option<f64>>>>,
}

impl MetricSource for Sim {
    fn first_failure(&mut self, version: &str, over_ms: Option<f64>) -> Option<u64> {
        assert_eq!(version, "v2");
        self.asked_first.borrow_mut().push(over_ms);
        self.first_failure
            .map(|ms| FakeClock::UNIX_START_US / 1000 + ms)
    }

    fn observe(
        &mut self,
        version: &str,
        window: Duration,
        now: Instant,
    ) -> Result<Observation, SourceError> {
        assert_eq!(version, "v2", "the controller observes the canary version");
        let at = Now {
            elapsed: now - self.clock.start(),
            weight: self.world.borrow().weight,
        };
        let (rps, rate, p99) = (self.health)(at);
        let requests = (rps * window.as_secs_f64()).round() as u64;
        Ok(Observation {
            requests,
            success_rate: (requests > 0).then_some(rate),
            p99_ms: (requests > 0).then_some(p99),
            window,
        })
    }

    fn query(&mut self, promql: &str, _now: Instant) -> Result<Option<f64>, SourceError> {
        Ok(self.queries.get(promql).copied().flatten())
    }

    fn supports_queries(&self) -> bool {
        self.supports_queries
    }

    fn request_count(&mut self, version: &str, _now: Instant) -> Result<Option<u64>, SourceError> {
        assert_eq!(version, "v1");
        // Stable traffic keeps flowing: one more request each time it is looked at.
        let mut w = self.world.borrow_mut();
        w.stable_requests += 1;
        Ok(Some(w.stable_requests))
    }
}

struct Recorder {
    world: Rc<RefCell<World>>,
    ops: Rc<RefCell<Vec<Op>>>,
    /// Refuse setting this canary weight.
    refuse_weight: Option<u32>,
    /// Refresh calls so far; on the 3rd a replica joins, on the 6th one leaves.
    refreshes: u32,
    /// How many ops had been made at the first refresh.
    ops_at_first_refresh: Option<usize>,
    clock: FakeClock,
    /// The replica restarts (without its state: it serves 100/0) at the first look after this.
    restart_at: Option<Duration>,
}

impl WeightSink for Recorder {
    fn set_weights(&mut self, target: &Target, split: Split) -> Result<Confirmation, SinkError> {
        assert_eq!(target.virtual_service, "payment-svc");
        assert_eq!(split.stable + split.canary, 100);
        if Some(split.canary) == self.refuse_weight {
            return Err(SinkError::Refused {
                by: "test".into(),
                message: "step too large".into(),
                findings: vec!["WEIR005 canary step too large".into()],
            });
        }
        self.ops
            .borrow_mut()
            .push(Op::Set(split.stable, split.canary));
        self.world.borrow_mut().weight = split.canary;
        Ok(Confirmation::default())
    }

    fn rollback(&mut self, _: &Target) -> Result<Confirmation, SinkError> {
        self.ops.borrow_mut().push(Op::Rollback);
        self.world.borrow_mut().weight = 0;
        Ok(Confirmation {
            took: Duration::from_micros(35),
            generations: vec![8],
            pending: Vec::new(),
        })
    }

    fn promote(&mut self, _: &Target) -> Result<Confirmation, SinkError> {
        self.ops.borrow_mut().push(Op::Promote);
        self.world.borrow_mut().weight = 100;
        Ok(Confirmation::default())
    }

    fn release(&mut self, _: &Target) -> Result<Confirmation, SinkError> {
        Ok(Confirmation::default())
    }

    fn describe(&self) -> String {
        "recorder".into()
    }

    fn verify(&mut self, _: &Target, expected: Split) -> Vec<Drift> {
        let replica = "http://198.51.100.7:15000".to_string();
        match self.restart_at {
            Some(at) if self.clock.elapsed() >= at => {
                self.restart_at = None;
                self.world.borrow_mut().weight = 0;
                vec![
                    Drift::Restarted {
                        replica: replica.clone(),
                    },
                    Drift::Weights {
                        replica,
                        in_force: Split::canary(0),
                        expected,
                    },
                ]
            }
            _ => Vec::new(),
        }
    }

    fn refresh(&mut self, _: &Target) -> Vec<ReplicaChange> {
        self.refreshes += 1;
        self.ops_at_first_refresh
            .get_or_insert_with(|| self.ops.borrow().len());
        let replica = "http://198.51.100.23:15000".to_string();
        match self.refreshes {
            3 => vec![ReplicaChange::Joined {
                replica,
                applied: "weights 90/10".into(),
            }],
            6 => vec![ReplicaChange::Left { replica }],
            _ => Vec::new(),
        }
    }
}

/// Webhooks answering from a script per hook name: each call takes the next status, the last
/// one repeats. Records (name, phase, elapsed) of every call.
struct Hooks {
    script: BTreeMap<String, VecDeque<u16>>,
    calls: Rc<RefCell<Vec<(String, Phase, Duration)>>>,
    clock: FakeClock,
    /// Answer the named hook 200 from this time on (else 404).
    yes_after: Option<(String, Duration)>,
}

impl WebhookClient for Hooks {
    fn call(&mut self, hook: &Webhook, payload: &WebhookPayload<'_>) -> Result<u16, WebhookError> {
        assert_eq!(
            (payload.name, payload.namespace),
            ("payment-svc", "production")
        );
        let elapsed = self.clock.elapsed();
        self.calls
            .borrow_mut()
            .push((hook.name.clone(), payload.phase, elapsed));
        if let Some((name, after)) = &self.yes_after
            && *name == hook.name
        {
            return Ok(if elapsed >= *after { 200 } else { 404 });
        }
        let script = self.script.get_mut(&hook.name).expect("a scripted hook");
        let status = if script.len() > 1 {
            script.pop_front().unwrap()
        } else {
            script[0]
        };
        if status == 0 {
            return Err(WebhookError {
                name: hook.name.clone(),
                url: hook.url.clone(),
                reason: "timed out".into(),
            });
        }
        Ok(status)
    }
}

/// A spec with the lesson's gates; `analysis` and `weir` add lines.
fn spec(analysis: &str, weir: &str) -> CanarySpec {
    let indent = |s: &str, n: usize| {
        s.lines()
            .map(|l| format!("{}{l}\n", " ".repeat(n)))
            .collect::<String>()
    };
    // The lesson's two gates, unless the analysis lists its own metrics.
    let metrics = if analysis.contains("metrics:") {
        ""
    } else {
        "metrics:
- name: request-success-rate
  thresholdRange: {min: 99}
  interval: 1m
- name: request-duration
  thresholdRange: {max: 500}
  interval: 30s
"
    };
    let text = format!(
        "apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: payment-svc
  namespace: production
spec:
  analysis:
    interval: 1m
{}{}  weir:
    minRequests: 100
{}",
        indent(metrics, 4),
        indent(analysis, 4),
        indent(weir, 4)
    );
    CanarySpec::from_yaml("canary.yaml", &text).unwrap_or_else(|e| panic!("{e}"))
}

struct Run {
    report: Report,
    ops: Vec<Op>,
    calls: Vec<(String, Phase, Duration)>,
    events: Vec<Event>,
    /// The `over_ms` of every first-failure question the run asked its source.
    asked_first: Vec<Option<f64>>,
    /// The sink's refresh calls, and how many ops had been made at the first one.
    refreshes: (u32, Option<usize>),
}

struct Setup {
    spec: CanarySpec,
    health: Health,
    hooks: BTreeMap<String, VecDeque<u16>>,
    yes_after: Option<(String, Duration)>,
    refuse_weight: Option<u32>,
    queries: BTreeMap<String, Option<f64>>,
    supports_queries: bool,
    abort_after_events: Option<usize>,
    first_failure: Option<u64>,
    restart_at: Option<Duration>,
}

fn healthy() -> Health {
    Box::new(|_| (50.0, 99.9, 120.0))
}

impl Setup {
    fn new(spec: CanarySpec) -> Self {
        Setup {
            spec,
            health: healthy(),
            hooks: BTreeMap::new(),
            yes_after: None,
            refuse_weight: None,
            queries: BTreeMap::new(),
            supports_queries: true,
            abort_after_events: None,
            first_failure: None,
            restart_at: None,
        }
    }

    /// The sink's replica restarts without its state at the first look after `at`.
    fn restart_at(mut self, at: Duration) -> Self {
        self.restart_at = Some(at);
        self
    }

    /// The sidecars counted the canary's first failing response `ms` after the start.
    fn first_failure_at(mut self, ms: u64) -> Self {
        self.first_failure = Some(ms);
        self
    }

    fn health(mut self, f: impl Fn(Now) -> (f64, f64, f64) + 'static) -> Self {
        self.health = Box::new(f);
        self
    }

    fn hook(mut self, name: &str, statuses: &[u16]) -> Self {
        self.hooks
            .insert(name.into(), statuses.iter().copied().collect());
        self
    }

    fn run(self) -> Run {
        let clock = FakeClock::new();
        let world = Rc::new(RefCell::new(World::default()));
        let ops = Rc::new(RefCell::new(Vec::new()));
        let calls = Rc::new(RefCell::new(Vec::new()));
        let asked_first = Rc::new(RefCell::new(Vec::new()));
        let mut source = Sim {
            world: world.clone(),
            clock: clock.clone(),
            health: self.health,
            queries: self.queries,
            supports_queries: self.supports_queries,
            first_failure: self.first_failure,
            asked_first: asked_first.clone(),
        };
        let mut sink = Recorder {
            world,
            ops: ops.clone(),
            refuse_weight: self.refuse_weight,
            refreshes: 0,
            ops_at_first_refresh: None,
            clock: clock.clone(),
            restart_at: self.restart_at,
        };
        let hooks = Hooks {
            script: self.hooks,
            calls: calls.clone(),
            clock: clock.clone(),
            yes_after: self.yes_after,
        };
        let abort = Abort::default();
        let stop = abort.clone();
        let mut events = Vec::new();
        let report = CanaryRun::new(&self.spec, &mut source, &mut sink)
            .clock(clock)
            .webhooks(hooks)
            .abort_on(abort)
            .on_event(|e| {
                events.push(e.clone());
                if Some(events.len()) == self.abort_after_events {
                    stop.abort();
                }
            })
            .run();
        let ops = ops.borrow().clone();
        let calls = calls.borrow().clone();
        let asked_first = asked_first.borrow().clone();
        Run {
            report,
            ops,
            calls,
            events,
            asked_first,
            refreshes: (sink.refreshes, sink.ops_at_first_refresh),
        }
    }
}

impl Run {
    fn phases(&self) -> Vec<Phase> {
        let mut out: Vec<Phase> = Vec::new();
        for e in &self.report.timeline {
            if out.last() != Some(&e.phase) {
                out.push(e.phase);
            }
        }
        out
    }

    fn canary_weights(&self) -> Vec<u32> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Set(_, c) => Some(*c),
                _ => None,
            })
            .collect()
    }
}

const MIN: u64 = 60_000;

// === tests ===

#[test]
fn healthy_runs_step_and_promote() {
    // (analysis, canary weights set in order, checks)
    let rows: [(&str, Vec<u32>); 4] = [
        (
            "threshold: 2\nmaxWeight: 50\nstepWeight: 10",
            vec![0, 10, 20, 30, 40, 50],
        ),
        (
            "threshold: 2\nstepWeights: [1, 10, 50, 100]",
            vec![0, 1, 10, 50, 100],
        ),
        (
            "threshold: 2\nmaxWeight: 50\nstepWeight: 20",
            vec![0, 20, 40, 50],
        ),
        ("threshold: 2\nstepWeight: 50", vec![0, 50, 100]),
    ];
    for (analysis, weights) in rows {
        let run = Setup::new(spec(analysis, "")).run();
        let r = &run.report;
        assert!(r.succeeded(), "{analysis}: {}", r.reason);
        assert_eq!(r.outcome, Outcome::Promoted);
        assert_eq!(run.canary_weights(), weights, "{analysis}");
        assert_eq!(run.ops.last(), Some(&Op::Promote), "{analysis}");
        assert_eq!(
            run.phases(),
            vec![
                Phase::Initialized,
                Phase::Progressing,
                Phase::Promoting,
                Phase::Succeeded
            ],
            "{analysis}"
        );
        // One passing check per weight stage, one interval apart.
        let steps = weights.len() as u64 - 1;
        assert_eq!(r.checks.len() as u64, steps, "{analysis}");
        assert!(r.checks.iter().all(|c| c.passed && c.failed_checks == 0));
        assert_eq!(r.duration_ms, steps * MIN, "{analysis}");
        assert!(r.rollback.is_none());
        // The weight in force at each check is the stage's.
        let checked: Vec<u32> = r.checks.iter().map(|c| c.canary_weight).collect();
        assert_eq!(checked, weights[1..].to_vec(), "{analysis}");
    }
}

#[test]
fn failed_checks_count_toward_the_threshold_over_the_whole_run() {
    // The canary degrades at the check only (the fast guard is off): each check fails.
    let run = Setup::new(spec(
        "threshold: 3\nmaxWeight: 50\nstepWeight: 10",
        "fastGuard: {period: 0s}",
    ))
    .health(|_| (50.0, 98.0, 120.0))
    .run();
    let r = &run.report;
    assert_eq!(r.phase, Phase::Failed);
    assert_eq!(
        r.checks.iter().map(|c| c.failed_checks).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        run.ops,
        vec![Op::Set(100, 0), Op::Set(90, 10), Op::Rollback],
        "never advanced past 10%"
    );
    let rb = r.rollback.as_ref().unwrap();
    assert_eq!(rb.trigger, Trigger::Threshold);
    assert_eq!(
        rb.detected_at_ms,
        3 * MIN,
        "rolled back at the third failed check, not later"
    );
    let gate = &r.checks[0].gates[0];
    assert_eq!(
        (gate.name.as_str(), gate.value, &gate.verdict),
        ("request-success-rate", Some(98.0), &Verdict::Fail)
    );

    // Failures are not reset by a passing check, as in Flagger: fail, pass, fail = 2 failures.
    let run = Setup::new(spec(
        "threshold: 2\nmaxWeight: 50\nstepWeight: 10",
        "fastGuard: {period: 0s}",
    ))
    .health(|now| {
        let minute = now.elapsed.as_secs() / 60;
        (50.0, if minute == 2 { 99.5 } else { 90.0 }, 100.0)
    })
    .run();
    let passed: Vec<bool> = run.report.checks.iter().map(|c| c.passed).collect();
    assert_eq!(passed, vec![false, true, false]);
    assert_eq!(run.canary_weights(), vec![0, 10, 20]);
    assert_eq!(
        run.report.rollback.as_ref().unwrap().trigger,
        Trigger::Threshold
    );
}

#[test]
fn no_data_is_never_a_pass() {
    // (requests per second, success rate): below minRequests (100 a minute), or none at all.
    for rps in [0.0, 1.0] {
        let run = Setup::new(spec(
            "threshold: 2\nstepWeight: 50",
            "fastGuard: {period: 0s}",
        ))
        .health(move |_| (rps, 100.0, 1.0))
        .run();
        let r = &run.report;
        assert_eq!(r.outcome, Outcome::RolledBack, "{rps} rps");
        for check in &r.checks {
            assert!(!check.passed);
            assert!(
                check.gates.iter().all(|g| g.verdict == Verdict::NoData),
                "{:?}",
                check.gates
            );
        }
        assert_eq!(r.checks.len(), 2, "two failed checks reach threshold 2");
        assert!(
            r.timeline.iter().any(|e| e.message.contains("no data")),
            "{rps}"
        );
    }
    // Enough requests for the 1m window but not for the 30s one: the p99 gate has no data.
    let run = Setup::new(spec(
        "threshold: 1\nstepWeight: 50",
        "fastGuard: {period: 0s}",
    ))
    .health(|_| (2.5, 100.0, 1.0))
    .run();
    let gates = &run.report.checks[0].gates;
    assert_eq!(gates[0].verdict, Verdict::Pass, "150 requests in 1m");
    assert_eq!(gates[1].verdict, Verdict::NoData, "75 requests in 30s");
    assert_eq!(gates[1].requests, Some(75));
}

#[test]
fn pre_rollout_failures_are_failed_checks_and_hold_the_start() {
    let hook = "webhooks: [{name: smoke, type: pre-rollout, url: 'http://smoke.test/'}]";
    // Fails twice (a 500, then no answer), then 200: starts late, with 2 failed checks.
    let run = Setup::new(spec(&format!("threshold: 3\nstepWeight: 50\n{hook}"), ""))
        .hook("smoke", &[500, 0, 200])
        .run();
    let r = &run.report;
    assert!(r.succeeded(), "{}", r.reason);
    assert_eq!(run.calls.iter().filter(|c| c.0 == "smoke").count(), 3);
    let first_weight = r.timeline.iter().find(|e| e.canary_weight > 0).unwrap();
    assert_eq!(
        first_weight.at_ms,
        2 * MIN,
        "no traffic before the pre-rollout hook passes"
    );
    assert_eq!(r.timeline.last().unwrap().failed_checks, 2);

    // Always failing: the canary never gets traffic, and the run fails.
    let run = Setup::new(spec(&format!("threshold: 2\nstepWeight: 50\n{hook}"), ""))
        .hook("smoke", &[503])
        .run();
    assert_eq!(run.report.phase, Phase::Failed);
    assert_eq!(run.ops, vec![Op::Set(100, 0), Op::Rollback]);
    assert!(run.report.checks.is_empty());
}

#[test]
fn rollout_hooks_run_before_every_check_and_their_failure_fails_it() {
    let run = Setup::new(spec(
        "threshold: 2\nstepWeights: [10, 50]\nwebhooks: [{name: load-test, url: 'http://lt.test/'}]",
        "",
    ))
    .hook("load-test", &[200, 500, 200])
    .run();
    let r = &run.report;
    assert!(r.succeeded(), "{}", r.reason);
    let hooks_ok: Vec<bool> = r.checks.iter().map(|c| c.hooks_ok).collect();
    assert_eq!(hooks_ok, vec![true, false, true]);
    assert!(!r.checks[1].passed, "metrics were fine, the hook failed");
    assert_eq!(run.canary_weights(), vec![0, 10, 50]);
    assert!(run.calls.iter().all(|c| c.1 == Phase::Progressing));
}

#[test]
fn confirm_promotion_keeps_the_gate_closed_while_checks_go_on() {
    let run = Setup::new(spec(
        "threshold: 2\nstepWeight: 50\nwebhooks:\n- {name: approve, type: confirm-promotion, url: 'http://gate.test/'}\n- {name: notify, type: post-rollout, url: 'http://n.test/'}",
        "",
    ))
    .hook("approve", &[403, 403, 403, 200])
    .hook("notify", &[500])
    .run();
    let r = &run.report;
    assert!(
        r.succeeded(),
        "a failing post-rollout hook changes nothing: {}",
        r.reason
    );
    assert_eq!(
        run.phases(),
        vec![
            Phase::Initialized,
            Phase::Progressing,
            Phase::WaitingPromotion,
            Phase::Promoting,
            Phase::Succeeded
        ]
    );
    // Two weight stages, then three more checks while waiting (one per refusal after the first).
    assert_eq!(r.checks.len(), 2 + 3);
    assert_eq!(run.ops.iter().filter(|o| **o == Op::Promote).count(), 1);
    let approve: Vec<Phase> = run
        .calls
        .iter()
        .filter(|c| c.0 == "approve")
        .map(|c| c.1)
        .collect();
    assert_eq!(approve[0], Phase::Progressing);
    assert!(approve[1..].iter().all(|p| *p == Phase::WaitingPromotion));
    let notify: Vec<&(String, Phase, Duration)> =
        run.calls.iter().filter(|c| c.0 == "notify").collect();
    assert_eq!(notify.len(), 1);
    assert_eq!(
        notify[0].1,
        Phase::Succeeded,
        "post-rollout comes after the promotion"
    );
    assert!(
        r.timeline
            .iter()
            .any(|e| e.kind == EventKind::Warning && e.message.contains("post-rollout"))
    );

    // A breach while waiting still rolls back.
    let run = Setup::new(spec(
        "threshold: 1\nstepWeight: 50\nwebhooks: [{name: approve, type: confirm-promotion, url: 'http://gate.test/'}]",
        "fastGuard: {period: 0s}",
    ))
    .hook("approve", &[403])
    .health(|now| (50.0, if now.elapsed.as_secs() > 150 { 50.0 } else { 100.0 }, 1.0))
    .run();
    assert_eq!(run.report.phase, Phase::Failed);
    assert!(run.phases().contains(&Phase::WaitingPromotion));
    assert!(!run.ops.contains(&Op::Promote));
}

#[test]
fn a_rollback_hook_answering_2xx_rolls_back_at_once() {
    let mut setup = Setup::new(spec(
        "threshold: 5\nmaxWeight: 50\nstepWeight: 10\nwebhooks: [{name: manual, type: rollback, url: 'http://rb.test/'}]",
        "",
    ));
    setup.yes_after = Some(("manual".into(), Duration::from_millis(150_500)));
    let run = setup.run();
    let r = &run.report;
    assert_eq!(r.phase, Phase::Failed);
    let rb = r.rollback.as_ref().unwrap();
    assert_eq!(rb.trigger, Trigger::RollbackWebhook);
    // Polled every guard period (1s): acted on at the first tick after it said yes.
    assert_eq!(rb.detected_at_ms, 151_000);
    assert_eq!(run.ops.last(), Some(&Op::Rollback));
    assert_eq!(run.canary_weights(), vec![0, 10, 20, 30]);
}

#[test]
fn the_fast_guard_rolls_back_within_one_period_of_a_breach() {
    // (breach at ms, success rate after, p99 after, guard period ms, the gate that fires)
    let rows: [(u64, f64, f64, u64, &str); 4] = [
        (90_250, 80.0, 100.0, 1000, "request-success-rate"),
        (90_250, 100.0, 900.0, 1000, "request-duration"),
        (30_001, 0.0, 1.0, 250, "request-success-rate"),
        (119_999, 95.0, 1.0, 500, "request-success-rate"),
    ];
    for (breach, rate, p99, period, gate) in rows {
        let spec = spec(
            "threshold: 5\nmaxWeight: 50\nstepWeight: 10",
            &format!("fastGuard: {{period: {period}ms, window: 5s}}"),
        );
        let run = Setup::new(spec)
            .health(move |now| {
                if now.elapsed >= Duration::from_millis(breach) {
                    (50.0, rate, p99)
                } else {
                    (50.0, 100.0, 10.0)
                }
            })
            .first_failure_at(breach)
            .run();
        let r = &run.report;
        let rb = r.rollback.as_ref().expect("rolled back");
        assert_eq!(rb.trigger, Trigger::FastGuard, "{breach}");
        // Which rule fired, and the SLA timed from the first failed request the sidecars
        // counted: for the duration gate, the first response over its max (500 ms).
        assert_eq!(rb.gate.as_deref(), Some(gate));
        assert_eq!(rb.min_requests, 100);
        let over = (gate == "request-duration").then_some(500.0);
        assert_eq!(
            run.asked_first,
            vec![over],
            "asked once, for the gate that fired"
        );
        assert_eq!(rb.first_failure_at_ms, Some(breach as i64));
        assert_eq!(
            rb.first_failure_to_detected_us,
            Some((rb.detected_at_ms - breach) * 1000)
        );
        assert_eq!(
            rb.first_failure_to_in_force_us,
            Some((rb.in_force_at_ms - breach) * 1000)
        );
        assert!(
            rb.reason
                .contains("at least minRequests 100 needed to judge"),
            "{}",
            rb.reason
        );
        assert!(
            rb.detected_at_ms >= breach && rb.detected_at_ms - breach <= period,
            "breach at {breach} ms, detected at {} ms, period {period} ms",
            rb.detected_at_ms
        );
        assert_eq!(run.ops.last(), Some(&Op::Rollback));
        assert_eq!(
            run.ops.iter().filter(|o| **o == Op::Rollback).count(),
            1,
            "one sink call"
        );
        assert_eq!(rb.sink_us, Some(35));
        assert!(
            rb.stable_seen_after_us.is_some(),
            "the source counts stable requests"
        );
        // No failed check was needed.
        assert!(r.checks.iter().all(|c| c.passed), "{breach}");
    }
}

#[test]
fn the_fast_guard_waits_for_min_requests() {
    // A breach with 1 request a second (5 in the guard window, 100 needed): the guard holds
    // still, and the interval check judges it (no data at 60 requests a minute).
    let run = Setup::new(spec(
        "threshold: 1\nstepWeight: 50",
        "fastGuard: {period: 1s, window: 5s}",
    ))
    .health(|now| {
        (
            1.0,
            if now.elapsed.as_secs() >= 10 {
                0.0
            } else {
                100.0
            },
            1.0,
        )
    })
    .run();
    let rb = run.report.rollback.as_ref().unwrap();
    assert_eq!(rb.trigger, Trigger::Threshold);
    assert_eq!(rb.detected_at_ms, MIN);
    assert!(
        run.report
            .samples
            .iter()
            .filter(|s| s.by == "guard")
            .count()
            >= 59
    );
}

#[test]
fn dark_launch_checks_header_traffic_before_any_weight() {
    let run = Setup::new(spec(
        "threshold: 2\niterations: 3\nmatch: [{headers: {x-canary: {exact: 'true'}}}]\nstepWeights: [10, 50]",
        "",
    ))
    .health(|now| (if now.weight == 0 { 5.0 } else { 50.0 }, 100.0, 5.0))
    .run();
    let r = &run.report;
    assert!(r.succeeded(), "{}", r.reason);
    let stages: Vec<(Stage, u32)> = r
        .checks
        .iter()
        .map(|c| (c.stage, c.canary_weight))
        .collect();
    let dark = Stage::DarkLaunch { iterations: 3 };
    assert_eq!(
        stages,
        vec![
            (dark, 0),
            (dark, 0),
            (dark, 0),
            (Stage::Weight { canary: 10 }, 10),
            (Stage::Weight { canary: 50 }, 50)
        ]
    );
    assert_eq!(run.canary_weights(), vec![0, 10, 50]);
    // Dark launch without enough header traffic fails like any check.
    let run = Setup::new(spec(
        "threshold: 2\niterations: 3\nmatch: [{headers: {x-canary: {exact: 'true'}}}]\nstepWeights: [10, 50]",
        "",
    ))
    .health(|now| (if now.weight == 0 { 0.5 } else { 50.0 }, 100.0, 5.0))
    .run();
    assert_eq!(run.report.phase, Phase::Failed);
    assert_eq!(
        run.canary_weights(),
        vec![0],
        "never reached weighted traffic"
    );
}

#[test]
fn a_refused_step_rolls_back() {
    let mut setup = Setup::new(spec("threshold: 5\nmaxWeight: 50\nstepWeight: 10", ""));
    setup.refuse_weight = Some(30);
    let run = setup.run();
    let r = &run.report;
    assert_eq!(r.phase, Phase::Failed);
    assert_eq!(r.rollback.as_ref().unwrap().trigger, Trigger::SinkError);
    assert!(r.reason.contains("WEIR005"), "{}", r.reason);
    assert_eq!(
        run.ops,
        vec![
            Op::Set(100, 0),
            Op::Set(90, 10),
            Op::Set(80, 20),
            Op::Rollback
        ]
    );
}

#[test]
fn custom_queries_need_a_source_that_runs_them() {
    let analysis = "threshold: 1\nstepWeight: 50\nmetrics:\n- {name: request-success-rate, thresholdRange: {min: 99}}\n- {name: errors, query: 'sum(errors)', thresholdRange: {max: 1}}";
    // A scrape-only source cannot run the query: refused before anything changes.
    let mut setup = Setup::new(spec(analysis, ""));
    setup.supports_queries = false;
    let run = setup.run();
    assert_eq!(run.report.outcome, Outcome::NotStarted);
    assert!(run.ops.is_empty(), "nothing changed");
    assert!(
        run.report.reason.contains("errors"),
        "{}",
        run.report.reason
    );

    // With a source that answers, the query is a gate like any other.
    for (value, passes) in [(Some(0.5), true), (Some(3.0), false), (None, false)] {
        let mut setup = Setup::new(spec(analysis, ""));
        setup.queries.insert("sum(errors)".into(), value);
        let run = setup.run();
        let gate = run.report.checks[0]
            .gates
            .iter()
            .find(|g| g.name == "errors")
            .unwrap();
        assert_eq!(gate.verdict == Verdict::Pass, passes, "{value:?}");
        assert_eq!(run.report.succeeded(), passes, "{value:?}");
    }
}

#[test]
fn abort_rolls_back_at_the_next_tick() {
    let mut setup = Setup::new(spec("threshold: 5\nmaxWeight: 50\nstepWeight: 10", ""));
    setup.abort_after_events = Some(10);
    let run = setup.run();
    let rb = run.report.rollback.as_ref().unwrap();
    assert_eq!(rb.trigger, Trigger::Aborted);
    let aborted_at = run.events[9].at_ms;
    assert!(
        rb.detected_at_ms - aborted_at <= 1000,
        "{} vs {aborted_at}",
        rb.detected_at_ms
    );
    assert_eq!(run.ops.last(), Some(&Op::Rollback));
}

/// Regression: the "check failed" line showed the count from before its own failure ("failed
/// checks 0/3" on the first failed check), one behind the report's checks.
#[test]
fn a_failed_check_line_counts_its_own_failure() {
    let run = Setup::new(spec(
        "threshold: 3\nmaxWeight: 50\nstepWeight: 10",
        "fastGuard: {period: 0s}",
    ))
    .health(|_| (50.0, 98.0, 120.0))
    .run();
    let lines: Vec<&Event> = run
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Check)
        .collect();
    assert_eq!(
        lines.iter().map(|e| e.failed_checks).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        lines.iter().map(|e| e.failed_checks).collect::<Vec<_>>(),
        run.report
            .checks
            .iter()
            .map(|c| c.failed_checks)
            .collect::<Vec<_>>(),
        "the lines and the report agree"
    );
    let first = lines[0].to_string();
    assert!(
        first.contains("check failed") && first.contains("failed checks 1/3"),
        "{first}"
    );
}

#[test]
fn events_carry_progress_for_the_cli() {
    let run = Setup::new(spec("threshold: 2\nstepWeights: [10, 50]", "")).run();
    let checks: Vec<&Event> = run
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Check)
        .collect();
    assert_eq!(checks.len(), 2);
    let e = checks[0];
    assert_eq!(
        (e.phase, e.canary_weight, e.failed_checks, e.threshold),
        (Phase::Progressing, 10, 0, 2)
    );
    assert_eq!(e.requests, Some(3000), "50 rps over the 1m window");
    assert_eq!((e.success_rate, e.p99_ms), (Some(99.9), Some(120.0)));
    let line = e.to_string();
    for part in [
        "Progressing",
        "canary  10%",
        "99.90%",
        "120.0 ms",
        "3000",
        "failed checks 0/2",
    ] {
        assert!(line.contains(part), "{line:?} lacks {part:?}");
    }
    // Guard ticks reach the observer but not the report's timeline.
    assert!(run.events.iter().any(|e| e.kind == EventKind::Guard));
    assert!(
        run.report
            .timeline
            .iter()
            .all(|e| e.kind != EventKind::Guard)
    );
    assert!(run.events.len() > run.report.timeline.len());
}

#[test]
fn the_sinks_replicas_are_refreshed_every_tick_and_changes_reported() {
    let run = Setup::new(spec("threshold: 2\nstepWeights: [10, 50]", "")).run();
    // Once before the first weight change (no op made yet), then on every tick: as many as
    // the fast guard's looks.
    let ticks = run
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Guard)
        .count() as u32;
    assert_eq!(run.refreshes, (1 + ticks, Some(0)));
    let replicas: Vec<&str> = run
        .report
        .timeline
        .iter()
        .filter(|e| e.kind == EventKind::Replicas)
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        replicas,
        [
            "replica http://198.51.100.23:15000 joined (weights 90/10)",
            "replica http://198.51.100.23:15000 is gone from DNS: dropped"
        ]
    );
    assert_eq!(run.report.outcome, Outcome::Promoted);
}

#[test]
fn the_report_is_written_as_json_and_svg() {
    let run = Setup::new(spec("threshold: 5\nmaxWeight: 50\nstepWeight: 10", ""))
        .health(|now| {
            (
                50.0,
                if now.elapsed.as_secs() >= 130 {
                    70.0
                } else {
                    99.9
                },
                10.0,
            )
        })
        .run();
    let dir = std::env::temp_dir().join(format!("weir-canary-report-{}", std::process::id()));
    run.report.write_to(&dir).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["decision"], "rolled-back");
    assert_eq!(json["phase"], "Failed");
    assert_eq!(json["rollback"]["trigger"], "fast-guard");
    assert_eq!(json["rollback"]["detected_at_ms"], 130_000);
    assert!(json["rollback"]["detected_to_in_force_us"].is_u64());
    assert_eq!(json["checks"].as_array().unwrap().len(), 2);
    assert_eq!(json["checks"][0]["gates"][0]["verdict"], "pass");
    assert!(
        json["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "rolled-back")
    );
    let svg = std::fs::read_to_string(dir.join("report.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains("rollback: 0% in force"),
        "the rollback is marked"
    );
    assert!(svg.contains("gate: success rate &gt;= 99%"));
    assert_eq!(
        svg.matches("<polyline").count(),
        2,
        "weight and success rate"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let promoted = Setup::new(spec("threshold: 1\nstepWeight: 50", "")).run();
    assert!(promoted.report.to_svg().contains("promoted: v2 is stable"));
}

// === the report chart ===

/// A promoted run with a dark launch, a 1% first step and one failed check on the way (the
/// fast guard off, threshold 2), and a run rolled back by the fast guard at 70% success.
fn chart_runs() -> [(&'static str, Run); 3] {
    let promoted = Setup::new(spec(
        "threshold: 2\niterations: 2\nmatch: [{headers: {x-canary: {exact: 'true'}}}]\nstepWeights: [1, 5, 10, 25, 50]",
        "fastGuard: {period: 0s}",
    ))
    .health(|now| {
        let s = now.elapsed.as_secs();
        (if now.weight == 0 { 5.0 } else { 50.0 }, if (290..=310).contains(&s) { 97.0 } else { 99.9 }, 40.0)
    })
    .run();
    assert!(promoted.report.succeeded(), "{}", promoted.report.reason);
    assert_eq!(
        promoted.report.checks.iter().filter(|c| !c.passed).count(),
        1,
        "one failed check to shade"
    );
    let rolled_back = Setup::new(spec("threshold: 5\nmaxWeight: 50\nstepWeight: 10", ""))
        .health(|now| {
            (
                50.0,
                if now.elapsed.as_secs() >= 130 {
                    70.0
                } else {
                    99.9
                },
                10.0,
            )
        })
        // The sidecars counted the first 5xx 129.6 s in; the guard's look at 130 s saw it.
        .first_failure_at(129_600)
        .run();
    assert_eq!(rolled_back.report.outcome, Outcome::RolledBack);
    // A sidecar restarted without its state 90.5 s in (the 20% step): it served 100/0 until
    // the next look put 80/20 back, and that window's check did not count.
    let restarted = Setup::new(spec(
        "threshold: 2\nstepWeights: [10, 20, 50]",
        "fastGuard: {period: 1s, window: 10s}",
    ))
    .restart_at(Duration::from_millis(90_500))
    .run();
    assert!(restarted.report.succeeded(), "{}", restarted.report.reason);
    assert_eq!(restarted.report.uncounted_checks, 1);
    [
        ("promoted", promoted),
        ("rolled-back", rolled_back),
        ("sidecar-restart", restarted),
    ]
}

/// The charts of both runs, compared byte for byte with `tests/golden/chart-*.svg`;
/// `WEIR_BLESS=1 cargo test -p weir-canary --test controller charts` rewrites them.
#[test]
fn charts_match_their_golden_svgs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("WEIR_BLESS").is_some();
    for (name, run) in chart_runs() {
        let svg = run.report.to_svg();
        let path = dir.join(format!("chart-{name}.svg"));
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &svg).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with WEIR_BLESS=1 to create it",
                path.display()
            )
        });
        assert!(
            golden == svg,
            "{name}: the chart differs from {}; look at it, then bless with WEIR_BLESS=1",
            path.display()
        );
    }
}

#[test]
fn chart_labels_never_overlap_and_stay_on_the_canvas() {
    // Crowded on purpose: 18 steps a minute apart, promoted; a rollback 1 s into the first
    // step (markers at the left edge, next to the axis labels).
    let many_steps = Setup::new(spec(
        "threshold: 1\nstepWeights: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 30, 40, 50, 60, 70, 80, 90]",
        "",
    ))
    .run();
    assert!(many_steps.report.succeeded());
    let early = Setup::new(spec("threshold: 1\nstepWeight: 50", ""))
        .health(|now| {
            (
                50.0,
                if now.elapsed.as_secs() >= 1 {
                    0.0
                } else {
                    100.0
                },
                1.0,
            )
        })
        .run();
    assert_eq!(early.report.outcome, Outcome::RolledBack);
    let runs = chart_runs()
        .into_iter()
        .chain([("many-steps", many_steps), ("early-rollback", early)]);
    for (name, run) in runs {
        // WEIR_CHART_DIR=DIR writes every chart there, to look at.
        if let Some(dir) = std::env::var_os("WEIR_CHART_DIR") {
            let path = std::path::Path::new(&dir).join(format!("chart-{name}.svg"));
            std::fs::write(path, run.report.to_svg()).unwrap();
        }
        let boxes = run.report.chart_label_boxes();
        assert!(boxes.len() > 15, "{name}: {} labels", boxes.len());
        for (i, a) in boxes.iter().enumerate() {
            assert!(
                a[0] >= 0.0 && a[2] <= 960.0 && a[1] >= 0.0 && a[3] <= 500.0,
                "{name}: label {i} {a:?} leaves the canvas"
            );
            for (j, b) in boxes.iter().enumerate().skip(i + 1) {
                let overlap = a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
                assert!(!overlap, "{name}: labels {i} {a:?} and {j} {b:?} overlap");
            }
        }
    }
}

#[test]
fn charts_have_fixed_axes_a_labelled_gate_and_the_markers() {
    let [(_, promoted), (_, rolled_back), (_, restarted)] = chart_runs();
    for run in [&promoted, &rolled_back] {
        let svg = run.report.to_svg();
        // Both scales 0..100 on the left and on the right, in every run.
        for p in ["0%", "25%", "50%", "75%", "100%"] {
            for side in [
                r##"text-anchor="end" fill="#1d4ed8">"##,
                r##"text-anchor="start" fill="#047857">"##,
            ] {
                assert_eq!(svg.matches(&format!("{side}{p}</text>")).count(), 1, "{p}");
            }
        }
        assert!(svg.contains("gate: success rate &gt;= 99%"));
    }
    let svg = promoted.report.to_svg();
    assert!(svg.contains("promoted: v2 is stable"));
    assert!(
        svg.contains(">100% (promoted)</text>"),
        "the step line reaches 100"
    );
    assert!(svg.contains(">1%</text>"), "a 1% step is labelled");
    assert!(svg.contains("dark launch (header traffic only)"));
    assert!(svg.contains("failed check"));
    let svg = rolled_back.report.to_svg();
    assert!(svg.contains("detected at 2m10s (fast guard)"), "{svg}");
    assert!(svg.contains("rollback: 0% in force"));
    assert!(svg.contains("lowest: 70.0% success"));
    assert!(!svg.contains("dark launch"), "no dark launch in this plan");
    assert!(
        svg.contains("first failed request at 2m9.6s: 0% in force 400.0 ms later"),
        "{svg}"
    );
    let svg = restarted.report.to_svg();
    assert!(svg.contains("sidecar restarted at 1m31s"), "{svg}");
    assert!(svg.contains(">window not counted</text>"), "{svg}");
    assert!(svg.contains(">100% (promoted)</text>"));

    // 1 request a second, 100 needed: every check lacks data, and its window is shaded as such.
    let starved = Setup::new(spec("threshold: 2\nstepWeight: 50", ""))
        .health(|_| (1.0, 100.0, 1.0))
        .run();
    assert_eq!(starved.report.outcome, Outcome::RolledBack);
    let svg = starved.report.to_svg();
    assert!(svg.contains(">no-data check</text>"), "{svg}");
    assert_eq!(
        svg.matches(r##"fill="#e5e7eb" fill-opacity"##).count(),
        2,
        "two no-data windows"
    );
    assert!(!svg.contains(">failed check</text>"));
}
