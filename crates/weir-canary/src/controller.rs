//! The canary state machine: Flagger's phases and semantics, plus a fast guard between checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock};
use crate::event::{Event, EventKind, Phase};
use crate::plan::Stage;
use crate::report::{HookResult, Outcome, Report, RollbackLatency, Sample, Trigger};
use crate::sink::{Drift, Split, WeightSink};
use crate::source::{MetricSource, Observation};
use crate::spec::{CanarySpec, Gate, HookKind, Metric};
use crate::webhook::{HttpWebhooks, WebhookClient, WebhookPayload};

mod gates;

/// How often the stable subset is probed for its first request after a rollback, and for how
/// long at most.
const STABLE_PROBE_STEP: Duration = Duration::from_millis(10);
const STABLE_PROBE_LIMIT: Duration = Duration::from_secs(2);
/// A rollback is retried this many times before the run gives up and reports it failed.
const ROLLBACK_ATTEMPTS: u32 = 3;
/// The pause before the second rollback attempt (doubled before the third).
const ROLLBACK_BACKOFF: Duration = Duration::from_millis(100);
/// Without a fast guard, the wait between checks still wakes this often to see an abort or a
/// rollback hook.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Stops a run from another thread (SIGTERM, an operator): the canary is rolled back at the
/// next guard tick and the run ends Failed.
#[derive(Clone, Debug, Default)]
pub struct Abort(Arc<AtomicBool>);

impl Abort {
    /// Asks the run to stop.
    pub fn abort(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked.
    pub fn is_aborted(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// One canary run: a spec, where the numbers come from, where the weights go.
///
/// ```no_run
/// # use weir_canary::*;
/// let spec = CanarySpec::load("canary.yaml")?;
/// let mut source = ScrapeSource::new(["http://127.0.0.1:15000/metrics"]).filter(spec.series_filter());
/// let mut sink = AdminSink::new(["http://127.0.0.1:15000"]);
/// let report = CanaryRun::new(&spec, &mut source, &mut sink)
///     .on_event(|e| if e.kind != EventKind::Guard { println!("{e}") })
///     .run();
/// report.write_to("canary-report")?;
/// std::process::exit(if report.succeeded() { 0 } else { 1 });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The phases, as Flagger's:
///
/// ```text
/// Initialized -> Progressing: pre-rollout hooks (a failure is a failed check)
///             -> [dark launch: `iterations` passing checks on header traffic]
///             -> weight stages: set the weight, wait an interval, check (rollout hooks + gates)
///             -> WaitingPromotion (confirm-promotion hooks not yet 2xx; checks go on)
///             -> Promoting -> Succeeded (post-rollout hooks)
/// any time:   failed checks reach `threshold`, the fast guard sees a breach, a rollback hook
///             answers 2xx, a sink refuses, or the run is aborted
///             -> canary to 0% in one sink call -> Failed (post-rollout hooks)
/// ```
///
/// Between checks the fast guard looks at the canary every `fastGuard.period` over the last
/// `fastGuard.window` and rolls back as soon as a built-in gate (success rate, p99) is out of
/// range with at least `minRequests` requests in the window: a breach is acted on within one
/// guard period instead of up to `interval x threshold` later.
pub struct CanaryRun<'a> {
    spec: &'a CanarySpec,
    source: &'a mut dyn MetricSource,
    sink: &'a mut dyn WeightSink,
    hooks: Box<dyn WebhookClient + 'a>,
    clock: Box<dyn Clock + 'a>,
    observer: Box<dyn FnMut(&Event) + 'a>,
    abort: Abort,
}

impl<'a> CanaryRun<'a> {
    /// A run on the system clock, calling webhooks over HTTP, reporting to no one.
    pub fn new(
        spec: &'a CanarySpec,
        source: &'a mut dyn MetricSource,
        sink: &'a mut dyn WeightSink,
    ) -> Self {
        CanaryRun {
            spec,
            source,
            sink,
            hooks: Box::new(HttpWebhooks::new()),
            clock: Box::new(SystemClock),
            observer: Box::new(|_| {}),
            abort: Abort::default(),
        }
    }

    /// Uses this clock (a [`FakeClock`](crate::FakeClock) in tests).
    pub fn clock(mut self, clock: impl Clock + 'a) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Calls webhooks through this client.
    pub fn webhooks(mut self, client: impl WebhookClient + 'a) -> Self {
        self.hooks = Box::new(client);
        self
    }

    /// Calls `observer` with every event as it happens.
    pub fn on_event(mut self, observer: impl FnMut(&Event) + 'a) -> Self {
        self.observer = Box::new(observer);
        self
    }

    /// Stops when this handle is aborted.
    pub fn abort_on(mut self, abort: Abort) -> Self {
        self.abort = abort;
        self
    }

    /// Runs the canary to its end, Succeeded or Failed, and returns the report.
    pub fn run(self) -> Report {
        let started = self.clock.now();
        let started_unix_us = self.clock.unix_us();
        let mut m = Machine {
            spec: self.spec,
            source: self.source,
            sink: self.sink,
            hooks: self.hooks,
            clock: self.clock,
            observer: self.observer,
            abort: self.abort,
            started,
            phase: Phase::Initialized,
            canary_weight: 0,
            failed_checks: 0,
            tainted: false,
            unconfirmed: None,
            failed_gate: None,
            started_unix_us,
            last: None,
            report: Report::new(self.spec),
        };
        m.emit(
            EventKind::Phase,
            format!("canary {} on {}", self.spec.name, m.sink.describe()),
        );
        let end = m.drive();
        m.finish(end)
    }
}

/// Why the run stops before promotion.
struct Stop {
    trigger: Trigger,
    detected: Instant,
    reason: String,
    /// The gate out of range, when one was (boxed: a `Stop` travels in every `Err`).
    gate: Option<Box<Gate>>,
}

struct Machine<'a> {
    spec: &'a CanarySpec,
    source: &'a mut dyn MetricSource,
    sink: &'a mut dyn WeightSink,
    hooks: Box<dyn WebhookClient + 'a>,
    clock: Box<dyn Clock + 'a>,
    observer: Box<dyn FnMut(&Event) + 'a>,
    abort: Abort,
    started: Instant,
    phase: Phase,
    canary_weight: u32,
    failed_checks: u32,
    /// The current check window saw other weights than the step's: its check does not count.
    tainted: bool,
    /// Weights written that the sink has not confirmed in force yet, and when.
    unconfirmed: Option<(String, Instant)>,
    /// The first gate out of range in the latest failed check.
    failed_gate: Option<Gate>,
    /// The wall-clock time of `started`, in µs since the Unix epoch.
    started_unix_us: u64,
    last: Option<Observation>,
    report: Report,
}

/// What [`Machine::drive`] ends with.
enum End {
    Promoted,
    /// Stopped; `touched` says whether the sink was ever called (and so needs a rollback).
    Stopped {
        stop: Stop,
        touched: bool,
    },
}

impl Machine<'_> {
    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }

    fn emit(&mut self, kind: EventKind, message: String) {
        let event = Event {
            at_ms: self.ms(self.clock.now()),
            kind,
            phase: self.phase,
            canary_weight: self.canary_weight,
            failed_checks: self.failed_checks,
            threshold: self.spec.analysis.threshold,
            requests: self.last.as_ref().map(|o| o.requests),
            success_rate: self.last.as_ref().and_then(|o| o.success_rate),
            p99_ms: self.last.as_ref().and_then(|o| o.p99_ms),
            message,
        };
        (self.observer)(&event);
        if kind != EventKind::Guard {
            self.report.timeline.push(event);
        }
    }

    fn set_phase(&mut self, phase: Phase, message: impl Into<String>) {
        self.phase = phase;
        self.emit(EventKind::Phase, message.into());
    }

    fn stop(&self, trigger: Trigger, reason: impl Into<String>) -> Stop {
        Stop {
            trigger,
            detected: self.clock.now(),
            reason: reason.into(),
            gate: None,
        }
    }

    /// The whole run up to promotion or the reason to stop.
    fn drive(&mut self) -> End {
        let spec = self.spec;
        if !self.source.supports_queries()
            && let Some(g) = spec.analysis.gates.iter().find(|g| !g.is_builtin())
        {
            let stop = self.stop(
                Trigger::Refused,
                format!(
                    "metric {:?} is a PromQL query and this metric source cannot run queries: pass a Prometheus source, or remove the metric",
                    g.name
                ),
            );
            return End::Stopped {
                stop,
                touched: false,
            };
        }
        self.refresh_replicas();
        // Nothing is changed until every replica answers as weir and serves the target.
        if let Err(e) = self.sink.preflight(&spec.target) {
            let stop = self.stop(
                Trigger::Refused,
                format!("could not start: nothing was changed: {e}"),
            );
            return End::Stopped {
                stop,
                touched: false,
            };
        }
        self.emit(
            EventKind::Phase,
            format!(
                "preflight passed: moving the live split of {} to {}=100 {}=0 to start",
                spec.target.virtual_service, spec.target.stable_subset, spec.target.canary_subset
            ),
        );
        // Start from a known 0%, whatever the route said before.
        if let Err(stop) = self.apply(0) {
            return End::Stopped {
                stop,
                touched: true,
            };
        }
        // A first read now: a source that differences reads (scraped counters) then has a
        // baseline, and the guard's first look can judge instead of seeing no traffic.
        let now = self.clock.now();
        if let Err(e) = self.source.request_count(&spec.target.stable_version, now) {
            self.emit(
                EventKind::Warning,
                format!("first metrics read failed: {e}"),
            );
        }
        self.set_phase(Phase::Progressing, "starting the analysis");
        match self.progress() {
            Ok(()) => End::Promoted,
            Err(stop) => End::Stopped {
                stop,
                touched: true,
            },
        }
    }

    fn progress(&mut self) -> Result<(), Stop> {
        let spec = self.spec;
        // Pre-rollout: before any traffic; each failure is a failed check.
        while !self.run_hooks(HookKind::PreRollout) {
            self.count_failure("pre-rollout webhook failed: the canary does not start")?;
            self.wait_interval()?;
        }
        for stage in spec.plan.stages() {
            match *stage {
                Stage::DarkLaunch { iterations } => {
                    self.emit(
                        EventKind::Phase,
                        format!("dark launch: header-matched requests only, {iterations} passing checks needed"),
                    );
                    let mut passed = 0;
                    while passed < iterations {
                        self.wait_interval()?;
                        if self.window_tainted() {
                            continue;
                        }
                        if self.check(*stage)? {
                            passed += 1;
                        }
                    }
                }
                Stage::Weight { canary } => {
                    self.apply(canary)?;
                    loop {
                        self.wait_interval()?;
                        if self.window_tainted() {
                            continue;
                        }
                        if self.check(*stage)? {
                            break;
                        }
                    }
                }
                Stage::Promote => {
                    if !self.run_hooks(HookKind::ConfirmPromotion) {
                        self.set_phase(
                            Phase::WaitingPromotion,
                            "waiting for confirm-promotion webhooks",
                        );
                        loop {
                            self.wait_interval()?;
                            // Checks go on while waiting, and can still roll back.
                            if !self.window_tainted() {
                                self.check(*stage)?;
                            }
                            if self.run_hooks(HookKind::ConfirmPromotion) {
                                break;
                            }
                        }
                    }
                    self.set_phase(Phase::Promoting, "every gate passed: promoting");
                    let confirmed = self.sink.promote(&spec.target).map_err(|e| {
                        self.stop(Trigger::SinkError, format!("promotion failed: {e}"))
                    })?;
                    self.canary_weight = 100;
                    self.report.promotion_took_us = Some(confirmed.took.as_micros() as u64);
                    if !confirmed.pending.is_empty() {
                        self.emit(
                            EventKind::Warning,
                            format!(
                                "the promotion is written, not yet confirmed: {}",
                                confirmed.pending.join("; ")
                            ),
                        );
                    }
                    self.emit(
                        EventKind::Promoted,
                        format!(
                            "{} is now the stable subset at 100% (sink took {} µs)",
                            spec.target.canary_subset,
                            confirmed.took.as_micros()
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Sets the canary's weight; a sink failure stops the run.
    fn apply(&mut self, canary: u32) -> Result<(), Stop> {
        let split = Split::canary(canary);
        match self.sink.set_weights(&self.spec.target, split) {
            Ok(c) => {
                self.canary_weight = canary;
                let weights = format!(
                    "weights {}={} {}={}",
                    self.spec.target.stable_subset,
                    split.stable,
                    self.spec.target.canary_subset,
                    split.canary,
                );
                if c.pending.is_empty() {
                    self.unconfirmed = None;
                    self.emit(
                        EventKind::Weights,
                        format!("{weights} in force (sink took {} µs)", c.took.as_micros()),
                    );
                } else {
                    // Not in force yet: the window that starts now does not count.
                    self.unconfirmed = Some((weights.clone(), self.clock.now()));
                    self.tainted = true;
                    self.emit(
                        EventKind::Weights,
                        format!(
                            "{weights} written, not yet confirmed: {}",
                            c.pending.join("; ")
                        ),
                    );
                }
                // A first look at what is in force (and each replica's boot id), so that a
                // restart before the next tick is seen as one.
                for d in self.sink.verify(&self.spec.target, split) {
                    self.tainted = true;
                    if !matches!(d, Drift::Pending { .. }) {
                        self.emit(EventKind::Warning, format!("in force: {d}"));
                    }
                }
                Ok(())
            }
            Err(e) => Err(self.stop(
                Trigger::SinkError,
                format!("setting weights {split} failed: {e}"),
            )),
        }
    }

    /// Counts a failed check; reaching the threshold stops the run.
    fn count_failure(&mut self, why: &str) -> Result<(), Stop> {
        self.failed_checks += 1;
        self.over_threshold(why)
    }

    /// Stops the run when the failed checks counted so far reach the threshold.
    fn over_threshold(&mut self, why: &str) -> Result<(), Stop> {
        let (n, t) = (self.failed_checks, self.spec.analysis.threshold);
        if n >= t {
            let reason = format!("{why}; failed checks reached the threshold ({n}/{t})");
            self.emit(EventKind::Breach, reason.clone());
            return Err(Stop {
                gate: self.failed_gate.take().map(Box::new),
                ..self.stop(Trigger::Threshold, reason)
            });
        }
        Ok(())
    }

    /// Calls every hook of `kind`; true when all answered 2xx (or there are none).
    fn run_hooks(&mut self, kind: HookKind) -> bool {
        let spec = self.spec;
        let mut all_ok = true;
        for hook in spec.analysis.hooks(kind) {
            let payload = WebhookPayload {
                name: &spec.name,
                namespace: &spec.namespace,
                phase: self.phase,
                metadata: &hook.metadata,
            };
            let at = self.clock.now();
            let answer = self.hooks.call(hook, &payload);
            let ok = matches!(answer, Ok(s) if (200..300).contains(&s));
            all_ok &= ok;
            let answer_text = match &answer {
                Ok(status) => status.to_string(),
                Err(e) => e.reason.clone(),
            };
            // Rollback hooks are polled every tick: only their "yes" is worth a line.
            if kind != HookKind::Rollback || ok {
                self.emit(
                    EventKind::Webhook,
                    format!("{kind} webhook {} answered {answer_text}", hook.name),
                );
            }
            self.report.hooks.push(HookResult {
                at_ms: self.ms(at),
                name: hook.name.clone(),
                kind,
                status: answer.as_ref().ok().copied(),
                error: answer.err().map(|e| e.reason),
                ok,
            });
        }
        all_ok
    }

    /// Waits one analysis interval, running the fast guard (or just watching for an abort and
    /// rollback hooks) on the way. Tick times are counted from the start of the wait so that
    /// the time a tick takes does not push the next one later.
    fn wait_interval(&mut self) -> Result<(), Stop> {
        let interval = self.spec.analysis.interval;
        let guard = self.spec.analysis.fast_guard;
        let period = guard.map_or(IDLE_TICK, |g| g.period);
        let start = self.clock.now();
        let deadline = start + interval;
        let mut next = start;
        loop {
            next = (next + period).min(deadline);
            let now = self.clock.now();
            if next > now {
                self.clock.sleep(next - now);
            }
            if self.abort.is_aborted() {
                let reason = "aborted: rolling back".to_string();
                self.emit(EventKind::Breach, reason.clone());
                return Err(self.stop(Trigger::Aborted, reason));
            }
            // Replicas first: a newcomer is in step before the guard reads the metrics.
            self.refresh_replicas();
            self.verify_in_force()?;
            // Metrics before hooks: a slow rollback hook (up to its timeout) must not delay
            // the look at the canary.
            if let Some(g) = guard {
                self.guard_tick(g.window)?;
            }
            if self.rollback_hook_fired() {
                let reason = "a rollback webhook answered 2xx".to_string();
                self.emit(EventKind::Breach, reason.clone());
                return Err(self.stop(Trigger::RollbackWebhook, reason));
            }
            if next >= deadline {
                return Ok(());
            }
        }
    }

    /// Compares what every replica serves with the step's split. A drift taints the check
    /// window; weights that moved are put back through the guard; a manual rollback, or
    /// weights that cannot be put back, stop the run.
    fn verify_in_force(&mut self) -> Result<(), Stop> {
        let expected = Split::canary(self.canary_weight);
        let drifts = self.sink.verify(&self.spec.target, expected);
        if drifts.is_empty() {
            if let Some((weights, since)) = self.unconfirmed.take() {
                let after = self.clock.now().saturating_duration_since(since);
                self.emit(
                    EventKind::Weights,
                    format!(
                        "{weights} in force on every replica, {} ms after they were written",
                        after.as_millis()
                    ),
                );
            }
            return Ok(());
        }
        self.tainted = true;
        // A write the sidecars have not loaded yet was announced when it was written.
        for d in drifts
            .iter()
            .filter(|d| !matches!(d, Drift::Pending { .. }))
        {
            self.emit(EventKind::Warning, format!("in force: {d}"));
        }
        if drifts.iter().any(|d| matches!(d, Drift::Latched { .. })) {
            let reason =
                "the canary was rolled back by hand (weir rollback): the run stops".to_string();
            self.emit(EventKind::Breach, reason.clone());
            return Err(self.stop(Trigger::ManualRollback, reason));
        }
        if drifts.iter().any(|d| matches!(d, Drift::Weights { .. })) {
            return match self.sink.set_weights(&self.spec.target, expected) {
                Ok(c) if !c.pending.is_empty() => {
                    let reason = format!(
                        "the weights {expected} written are still not in force: {}",
                        c.pending.join("; ")
                    );
                    self.emit(EventKind::Breach, reason.clone());
                    Err(self.stop(Trigger::Drift, reason))
                }
                Ok(c) => {
                    self.emit(
                        EventKind::Weights,
                        format!(
                            "weights {expected} put back on every replica (sink took {} µs); this window's check does not count",
                            c.took.as_micros()
                        ),
                    );
                    Ok(())
                }
                Err(e) => {
                    let reason = format!(
                        "the weights in force drifted from {expected} and could not be put back: {e}"
                    );
                    self.emit(EventKind::Breach, reason.clone());
                    Err(self.stop(Trigger::Drift, reason))
                }
            };
        }
        Ok(())
    }

    /// Whether the window just waited saw a drift; the flag is cleared and the skipped check
    /// is reported.
    fn window_tainted(&mut self) -> bool {
        if !std::mem::take(&mut self.tainted) {
            return false;
        }
        self.report.uncounted_checks += 1;
        self.emit(
            EventKind::Warning,
            format!(
                "check not counted: its window saw other weights than the step's {}%",
                self.canary_weight
            ),
        );
        true
    }

    /// Lets the sink follow its replicas (a headless Service's pods) and reports the changes.
    fn refresh_replicas(&mut self) {
        for change in self.sink.refresh(&self.spec.target) {
            let kind = if change.is_problem() {
                EventKind::Warning
            } else {
                EventKind::Replicas
            };
            self.emit(kind, change.to_string());
        }
    }

    fn rollback_hook_fired(&mut self) -> bool {
        // "All answered 2xx" is true for no hooks; a rollback needs at least one yes.
        self.spec
            .analysis
            .hooks(HookKind::Rollback)
            .next()
            .is_some()
            && {
                let before = self.report.hooks.len();
                self.run_hooks(HookKind::Rollback);
                self.report.hooks[before..].iter().any(|h| h.ok)
            }
    }

    fn record_sample(&mut self, at: Instant, obs: &Observation, by: &'static str) {
        self.report.samples.push(Sample {
            at_ms: self.ms(at),
            by,
            canary_weight: self.canary_weight,
            requests: obs.requests,
            success_rate: obs.success_rate,
            p99_ms: obs.p99_ms,
        });
    }

    /// Rolls back when needed, runs post-rollout hooks, and closes the report.
    fn finish(mut self, end: End) -> Report {
        match end {
            End::Promoted => {
                self.set_phase(Phase::Succeeded, "promotion complete");
                self.report.outcome = Outcome::Promoted;
                self.report.reason = format!(
                    "{} promoted after every gate passed",
                    self.spec.target.canary_subset
                );
            }
            End::Stopped { stop, touched } => {
                if touched {
                    self.roll_back(&stop);
                    self.report.outcome = Outcome::RolledBack;
                } else {
                    self.report.outcome = Outcome::NotStarted;
                }
                self.report.reason = stop.reason.clone();
                self.set_phase(Phase::Failed, stop.reason);
            }
        }
        self.report.phase = self.phase;
        if self.report.outcome != Outcome::NotStarted && !self.run_hooks(HookKind::PostRollout) {
            self.emit(
                EventKind::Warning,
                "a post-rollout webhook failed (informational)".into(),
            );
        }
        self.report.duration_ms = self.ms(self.clock.now());
        self.report
    }

    /// The canary to 0% in one sink call (retried), timed from detection to confirmation,
    /// then to the first request seen on the stable subset when the source can tell.
    fn roll_back(&mut self, stop: &Stop) {
        let target = &self.spec.target;
        let mut attempts = 0;
        let mut result = Err(String::new());
        while attempts < ROLLBACK_ATTEMPTS && result.is_err() {
            if attempts > 0 {
                // A short doubling pause: a replica restarting comes back within it.
                self.clock.sleep(ROLLBACK_BACKOFF * 2u32.pow(attempts - 1));
            }
            attempts += 1;
            result = self.sink.rollback(target).map_err(|e| e.to_string());
        }
        let in_force = self.clock.now();
        // From the detecting read (no new request): when the sidecars counted the first
        // response that fails the gate that fired.
        let first_failure_us = stop.gate.as_ref().and_then(|g| {
            let over_ms = match g.metric {
                Metric::RequestSuccessRate => None,
                Metric::RequestDuration => Some(g.max?),
                Metric::Query(_) => return None,
            };
            self.source
                .first_failure(&self.spec.target.canary_version, over_ms)
                .map(|ms| ms as i64 * 1000 - self.started_unix_us as i64)
        });
        let since_first = |at: Instant| {
            first_failure_us.map(|f| {
                let at_us = at.saturating_duration_since(self.started).as_micros() as i64;
                (at_us - f).max(0) as u64
            })
        };
        let mut latency = RollbackLatency {
            trigger: stop.trigger,
            gate: stop.gate.as_ref().map(|g| g.name.clone()),
            min_requests: self.spec.analysis.min_requests,
            first_failure_at_ms: first_failure_us.map(|us| us.div_euclid(1000)),
            first_failure_to_detected_us: since_first(stop.detected),
            first_failure_to_in_force_us: since_first(in_force),
            reason: stop.reason.clone(),
            detected_at_ms: self.ms(stop.detected),
            in_force_at_ms: self.ms(in_force),
            detected_to_in_force_us: in_force
                .saturating_duration_since(stop.detected)
                .as_micros() as u64,
            sink_us: None,
            stable_seen_after_us: None,
            attempts,
            error: None,
        };
        match result {
            Ok(c) => {
                self.canary_weight = 0;
                latency.sink_us = Some(c.took.as_micros() as u64);
                for p in &c.pending {
                    self.emit(EventKind::Warning, format!("after the rollback: {p}"));
                }
                self.emit(
                    EventKind::RolledBack,
                    format!(
                        "canary at 0% in force {} µs after detection (sink took {} µs)",
                        latency.detected_to_in_force_us,
                        c.took.as_micros()
                    ),
                );
                latency.stable_seen_after_us = self.probe_stable(in_force);
            }
            Err(e) => {
                let message = format!(
                    "ROLLBACK FAILED after {attempts} attempts: {e}: set the canary to 0% by hand"
                );
                self.emit(EventKind::Warning, message.clone());
                latency.error = Some(message);
            }
        }
        self.report.rollback = Some(latency);
    }

    /// Polls the stable version's request count until it grows; µs after `in_force`.
    fn probe_stable(&mut self, in_force: Instant) -> Option<u64> {
        let version = self.spec.target.stable_version.clone();
        let base = self.source.request_count(&version, in_force).ok()??;
        while self.clock.now().saturating_duration_since(in_force) < STABLE_PROBE_LIMIT {
            self.clock.sleep(STABLE_PROBE_STEP);
            let now = self.clock.now();
            match self.source.request_count(&version, now) {
                Ok(Some(n)) if n > base => {
                    return Some(now.saturating_duration_since(in_force).as_micros() as u64);
                }
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
        None
    }
}
