use super::build::{DEFAULT_HOOK_TIMEOUT, DEFAULT_MIN_REQUESTS};
use super::*;
use crate::plan::Stage;

/// The Flagger Canary of the lesson, as written there.
const LESSON: &str = r#"# Flagger Canary resource -- automated progressive delivery
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: payment-svc
  namespace: production
spec:
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: payment-svc
  progressDeadlineSeconds: 600
  service:
    port: 8080
    targetPort: 8080
  analysis:
    interval: 5m # check metrics every 5 minutes
    threshold: 5 # fail after 5 consecutive bad metric readings
    maxWeight: 50 # max canary weight during analysis (50%)
    stepWeight: 10 # increment by 10% each step
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99 # must have >= 99% success rate
      interval: 1m
    - name: request-duration
      thresholdRange:
        max: 500 # P99 must be < 500ms
      interval: 30s
    webhooks:
    - name: load-test # run load test during analysis
      url: http://flagger-loadtester.test/
      timeout: 5s
"#;

#[test]
fn the_lessons_canary_parses() {
    let spec = CanarySpec::from_yaml("canary.yaml", LESSON).unwrap();
    assert_eq!(
        (spec.name.as_str(), spec.namespace.as_str()),
        ("payment-svc", "production")
    );
    let a = &spec.analysis;
    assert_eq!(a.interval, Duration::from_secs(300));
    assert_eq!(a.threshold, 5);
    assert_eq!(spec.plan.weights(), vec![10, 20, 30, 40, 50]);
    assert_eq!(spec.plan.stages().last(), Some(&Stage::Promote));
    assert_eq!(a.gates.len(), 2);
    assert_eq!(a.gates[0].metric, Metric::RequestSuccessRate);
    assert_eq!((a.gates[0].min, a.gates[0].max), (Some(99.0), None));
    assert_eq!(a.gates[0].interval, Duration::from_secs(60));
    assert_eq!(a.gates[1].metric, Metric::RequestDuration);
    assert_eq!((a.gates[1].min, a.gates[1].max), (None, Some(500.0)));
    assert_eq!(a.gates[1].interval, Duration::from_secs(30));
    assert_eq!(a.webhooks.len(), 1);
    let hook = &a.webhooks[0];
    assert_eq!(hook.kind, HookKind::Rollout, "no type is Flagger's rollout");
    assert_eq!(hook.timeout, Duration::from_secs(5));
    assert_eq!(hook.url, "http://flagger-loadtester.test/");
    // weir's defaults where the Flagger document says nothing.
    assert_eq!(spec.target.virtual_service, "payment-svc");
    assert_eq!(
        (
            spec.target.stable_subset.as_str(),
            spec.target.canary_subset.as_str()
        ),
        ("v1", "v2")
    );
    assert_eq!(a.min_requests, DEFAULT_MIN_REQUESTS);
    assert_eq!(
        a.fast_guard,
        Some(FastGuard {
            period: Duration::from_secs(1),
            window: Duration::from_secs(10)
        })
    );
    assert!(a.dark_launch.is_none());
}

#[test]
fn weir_section_dark_launch_and_custom_query() {
    let text = r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: checkout}
spec:
  analysis:
    interval: 1.5s
    threshold: 2
    stepWeights: [1, 10, 50]
    iterations: 3
    match:
      - headers:
          X-Canary: {exact: "true"}
    metrics:
      - name: errors
        query: sum(rate(errors_total{namespace="{{ namespace }}"}[{{interval}}]))
        interval: 500ms
        threshold: 3
    webhooks:
      - {name: gate, type: confirm-promotion, url: "http://gate.test/approve"}
  weir:
    virtualService: checkout-vs
    rule: split
    stableSubset: blue
    canarySubset: green
    canaryVersion: "2.0"
    destinationService: checkout
    minRequests: 50
    fastGuard: {period: 0s}
"#;
    let spec = CanarySpec::from_yaml("c.yaml", text).unwrap();
    assert_eq!(spec.namespace, "default");
    assert_eq!(spec.analysis.interval, Duration::from_millis(1500));
    assert_eq!(
        spec.plan.stages(),
        &[
            Stage::DarkLaunch { iterations: 3 },
            Stage::Weight { canary: 1 },
            Stage::Weight { canary: 10 },
            Stage::Weight { canary: 50 },
            Stage::Promote
        ]
    );
    let dark = spec.analysis.dark_launch.as_ref().unwrap();
    assert_eq!(
        dark.matches[0]["x-canary"],
        StringMatch::Exact("true".into())
    );
    let gate = &spec.analysis.gates[0];
    assert_eq!(
        gate.metric,
        Metric::Query(r#"sum(rate(errors_total{namespace="default"}[500ms]))"#.into())
    );
    assert_eq!(
        (gate.min, gate.max),
        (None, Some(3.0)),
        "old `threshold` is a max for queries"
    );
    assert_eq!(spec.analysis.webhooks[0].timeout, DEFAULT_HOOK_TIMEOUT);
    let t = &spec.target;
    assert_eq!(t.virtual_service, "checkout-vs");
    assert_eq!(t.rule.as_deref(), Some("split"));
    assert_eq!(
        (t.stable_version.as_str(), t.canary_version.as_str()),
        ("blue", "2.0")
    );
    assert_eq!(spec.series_filter().service.as_deref(), Some("checkout"));
    assert_eq!(spec.analysis.min_requests, 50);
    assert_eq!(
        spec.analysis.fast_guard, None,
        "period 0s turns the guard off"
    );
}

/// A valid analysis block with one line replaced, for the refusal table.
fn with_analysis(analysis: &str) -> String {
    format!(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: c}}\nspec:\n  analysis:\n{}",
        analysis
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    )
}

#[test]
fn impossible_plans_are_refused_naming_the_field_and_the_fix() {
    let ok_metrics = "metrics: [{name: request-success-rate, thresholdRange: {min: 99}}]";
    // (analysis lines, field named, words of the fix)
    let rows: [(String, &str, &str); 17] = [
        (format!("interval: 1m\nthreshold: 5\nmaxWeight: 150\nstepWeight: 10\n{ok_metrics}"), "spec.analysis.maxWeight", "100 or less"),
        (format!("interval: 1m\nthreshold: 5\n{ok_metrics}"), "spec.analysis.stepWeight", "no steps"),
        (format!("interval: 1m\nthreshold: 5\nstepWeights: []\n{ok_metrics}"), "spec.analysis.stepWeights", "is empty"),
        (format!("interval: 1m\nthreshold: 5\nstepWeights: [10, 5, 50]\n{ok_metrics}"), "spec.analysis.stepWeights[1]", "strictly increasing"),
        (format!("interval: 1m\nthreshold: 5\nstepWeights: [10, 10]\n{ok_metrics}"), "spec.analysis.stepWeights[1]", "strictly increasing"),
        (format!("interval: 1m\nthreshold: 5\nmaxWeight: 30\nstepWeights: [10, 50]\n{ok_metrics}"), "spec.analysis.stepWeights[1]", "raise maxWeight"),
        (format!("interval: 1m\nthreshold: 0\nstepWeight: 10\n{ok_metrics}"), "spec.analysis.threshold", "set 1 or more"),
        (format!("interval: 1m\nstepWeight: 10\n{ok_metrics}"), "spec.analysis.threshold", "threshold: 5"),
        (format!("interval: 1m\nthreshold: 5\nstepWeight: 0\n{ok_metrics}"), "spec.analysis.stepWeight", "increment"),
        (format!("interval: 1m\nthreshold: 5\nstepWeight: 60\nmaxWeight: 50\n{ok_metrics}"), "spec.analysis.stepWeight", "at most maxWeight"),
        ("interval: 1m\nthreshold: 5\nstepWeight: 10\nmetrics: [{name: error-rate, thresholdRange: {max: 1}}]".into(), "spec.analysis.metrics[0].query", "needs a PromQL query"),
        ("interval: 1m\nthreshold: 5\nstepWeight: 10\nmetrics: [{name: request-success-rate, thresholdRange: {}}]".into(), "spec.analysis.metrics[0].thresholdRange", "set min and/or max"),
        ("interval: 1m\nthreshold: 5\nstepWeight: 10\nmetrics: [{name: request-success-rate}]".into(), "spec.analysis.metrics[0].thresholdRange", "set min and/or max"),
        ("interval: 1m\nthreshold: 5\nstepWeight: 10\nmetrics: [{name: request-duration, thresholdRange: {min: 500, max: 100}}]".into(), "spec.analysis.metrics[0].thresholdRange", "swap them"),
        ("interval: 1m\nthreshold: 5\nstepWeight: 10\nmetrics: [{name: request-success-rate, thresholdRange: {min: 0.99, max: 120}}]".into(), "spec.analysis.metrics[0].thresholdRange", "0 to 100"),
        (format!("interval: soon\nthreshold: 5\nstepWeight: 10\n{ok_metrics}"), "spec.analysis.interval", "duration"),
        (format!("interval: 1m\nthreshold: 5\nstepWeight: 10\niterations: 5\n{ok_metrics}"), "spec.analysis.match", "headers"),
    ];
    for (analysis, field, fix) in rows {
        let text = with_analysis(&analysis);
        let err = CanarySpec::from_yaml("canary.yaml", &text).unwrap_err();
        let SpecError::Invalid(findings) = &err else {
            panic!("{analysis}: expected a refusal, got {err}");
        };
        let hit = findings
            .0
            .iter()
            .find(|f| f.location.path == format!("Canary: {field}"))
            .unwrap_or_else(|| panic!("{analysis}: no finding at {field}:\n{err}"));
        assert!(hit.message.contains(fix), "{analysis}: {hit}");
        assert_eq!(hit.code.as_str(), "WEIR015", "{hit}");
        assert!(hit.location.line > 0, "the finding has a line: {hit}");
        assert!(
            err.to_string().contains(field),
            "the message names the field: {err}"
        );
    }
}

#[test]
fn webhooks_and_weir_fields_are_checked() {
    let base = "interval: 1m\nthreshold: 5\nstepWeight: 10\n";
    let rows: [(&str, &str); 4] = [
        (
            "webhooks: [{name: a, type: confirm-rollout, url: 'http://x/'}]",
            "spec.analysis.webhooks[0].type",
        ),
        (
            "webhooks: [{name: a, url: 'https://x/'}]",
            "spec.analysis.webhooks[0].url",
        ),
        (
            "webhooks: [{name: a, url: 'http://x/', timeout: 0s}]",
            "spec.analysis.webhooks[0].timeout",
        ),
        ("mirror: true", "spec.analysis.mirror"),
    ];
    for (extra, field) in rows {
        let err =
            CanarySpec::from_yaml("c.yaml", &with_analysis(&format!("{base}{extra}"))).unwrap_err();
        assert!(err.to_string().contains(field), "{extra}: {err}");
    }
    let weir_rows: [(&str, &str); 3] = [
        ("minRequests: 0", "spec.weir.minRequests"),
        (
            "fastGuard: {period: 2s, window: 1s}",
            "spec.weir.fastGuard.window",
        ),
        ("canarySubset: v1", "spec.weir.canarySubset"),
    ];
    for (weir, field) in weir_rows {
        let text = format!("{}  weir:\n    {weir}\n", with_analysis(base));
        let err = CanarySpec::from_yaml("c.yaml", &text).unwrap_err();
        assert!(err.to_string().contains(field), "{weir}: {err}");
    }
}

#[test]
fn yaml_errors_and_typos_are_refused() {
    // A typo in the analysis is not silently ignored.
    let err = CanarySpec::from_yaml(
        "c.yaml",
        &with_analysis("interval: 1m\nthreshold: 5\nstepweight: 10"),
    )
    .unwrap_err();
    assert!(matches!(err, SpecError::Yaml(_)), "{err}");
    assert!(err.to_string().contains("stepweight"), "{err}");
    // A header match can only match headers: the dark launch is header-only.
    let err = CanarySpec::from_yaml(
        "c.yaml",
        &with_analysis("interval: 1m\nthreshold: 5\niterations: 2\nmatch: [{uri: {prefix: /}}]"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("uri"), "{err}");
    let err = CanarySpec::from_yaml("c.yaml", "kind: [").unwrap_err();
    assert!(matches!(err, SpecError::Yaml(_)), "{err}");
    let err = CanarySpec::from_yaml(
        "c.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    )
    .unwrap_err();
    for field in ["apiVersion", "kind", "spec.analysis"] {
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn gates_pass_within_their_range() {
    let spec = CanarySpec::from_yaml("canary.yaml", LESSON).unwrap();
    let [rate, p99] = &spec.analysis.gates[..] else {
        panic!()
    };
    assert!(rate.passes(99.0) && rate.passes(100.0) && !rate.passes(98.9));
    assert!(p99.passes(500.0) && !p99.passes(500.1));
    assert!(rate.is_builtin());
}

/// The lint's table: each spec (analysis lines, weir lines) with the findings it must give,
/// as (severity is error, field path, words of the message), and nothing else.
#[test]
fn lint_findings_table() {
    type Row = (
        &'static str,
        &'static str,
        Vec<(bool, &'static str, &'static str)>,
    );
    let metrics = |sr: &str, dur: &str| {
        format!(
            "metrics:\n- name: request-success-rate\n  thresholdRange: {{min: {sr}}}\n- name: request-duration\n  thresholdRange: {{max: {dur}}}\n"
        )
    };
    let base = "interval: 1m\nthreshold: 5\nstepWeights: [1, 10, 50]\n";
    let rows: Vec<(String, Row)> = vec![
        // Clean: percentages and milliseconds, no expected rate.
        (metrics("99", "500"), ("", "clean", vec![])),
        (
            metrics("0.99", "500"),
            (
                "",
                "a fraction for a percentage",
                vec![(
                    true,
                    "spec.analysis.metrics[0].thresholdRange.min",
                    "0.99 looks like a fraction: request-success-rate is a percentage, write 99",
                )],
            ),
        ),
        (
            metrics("0.995", "0.5"),
            (
                "",
                "both unit typos",
                vec![
                    (
                        true,
                        "spec.analysis.metrics[0].thresholdRange.min",
                        "write 99.5",
                    ),
                    (
                        true,
                        "spec.analysis.metrics[1].thresholdRange.max",
                        "0.5 looks like seconds: request-duration is the p99 in milliseconds, write 500",
                    ),
                ],
            ),
        ),
        (
            metrics("0", "500"),
            (
                "",
                "min 0 passes everything",
                vec![(
                    true,
                    "spec.analysis.metrics[0].thresholdRange.min",
                    "0 passes every success rate",
                )],
            ),
        ),
        (
            metrics("0.99", "0.5"),
            ("allowOddThresholds: true\n", "the override", vec![]),
        ),
        (
            metrics("0.99", "500"),
            (
                "allowOddThresholds: false\n",
                "an explicit false",
                vec![(
                    true,
                    "spec.analysis.metrics[0].thresholdRange.min",
                    "allowOddThresholds: true",
                )],
            ),
        ),
        // 1 is an odd but legal success-rate minimum; 1 ms an odd but legal p99 maximum.
        (metrics("1", "1"), ("", "1 is not below 1", vec![])),
        // 50 req/s x 1% x 60 s = 30 >= 20, and x 10 s = 5 < 20 for the guard.
        (
            metrics("99", "500"),
            (
                "expectedRps: 50\nminRequests: 20\n",
                "the guard cannot decide at 1%",
                vec![(
                    false,
                    "spec.weir.minRequests",
                    "cannot be reached by the fast guard at the first step: 50 req/s expected x 1% x 10s window = 5 canary requests",
                )],
            ),
        ),
        (
            metrics("99", "500"),
            (
                "expectedRps: 5\nminRequests: 20\nfastGuard: {period: 0s}\n",
                "5 req/s x 1% x 60s = 3 < 20",
                vec![
                    (
                        false,
                        "spec.weir.minRequests",
                        "cannot be reached by `request-success-rate` (spec.analysis.metrics[0]) at the first step: 5 req/s expected x 1% x 60s window = 3 canary requests per check",
                    ),
                    (
                        false,
                        "spec.weir.minRequests",
                        "`request-duration` (spec.analysis.metrics[1]) at the first step: 5 req/s expected x 1% x 60s window = 3 canary requests",
                    ),
                ],
            ),
        ),
        (
            metrics("99", "500"),
            (
                "expectedRps: 1000\nminRequests: 20\n",
                "plenty of traffic",
                vec![],
            ),
        ),
        (
            metrics("99", "500"),
            (
                "expectedRps: 0\n",
                "a zero rate",
                vec![(true, "spec.weir.expectedRps", "requests per second")],
            ),
        ),
    ];
    for (analysis_metrics, (weir, what, want)) in rows {
        let mut text = with_analysis(&format!("{base}{analysis_metrics}"));
        if !weir.is_empty() {
            text.push_str("  weir:\n");
            for l in weir.lines() {
                text.push_str(&format!("    {l}\n"));
            }
        }
        let found: Vec<Finding> = match CanarySpec::from_yaml("canary.yaml", &text) {
            Ok(spec) => spec.warnings.0,
            Err(SpecError::Invalid(all)) => all.0,
            Err(e) => panic!("{what}: {e}"),
        };
        assert_eq!(
            found.len(),
            want.len(),
            "{what}: findings {found:#?}\nin\n{text}"
        );
        for (f, (error, field, words)) in found.iter().zip(&want) {
            assert_eq!(f.is_error(), *error, "{what}: {f}");
            assert_eq!(f.location.path, format!("Canary: {field}"), "{what}: {f}");
            assert!(f.message.contains(words), "{what}: {f}\nwants {words:?}");
            assert_eq!(f.code.as_str(), "WEIR015", "{what}: {f}");
            assert!(f.location.line > 0 && f.location.column > 0, "{what}: {f}");
        }
    }
}

#[test]
fn unknown_weir_fields_are_refused_with_the_known_ones_listed() {
    let text = format!(
        "{}  weir:\n    allowOddThreshold: true\n",
        with_analysis(
            "interval: 1m\nthreshold: 5\nstepWeight: 10\nmetrics: [{name: request-success-rate, thresholdRange: {min: 99}}]"
        )
    );
    let err = CanarySpec::from_yaml("canary.yaml", &text).unwrap_err();
    let SpecError::Yaml(f) = &err else {
        panic!("expected a YAML refusal, got {err}");
    };
    assert!(
        f.message.contains("unknown field `allowOddThreshold`"),
        "{f}"
    );
    assert!(f.message.contains("`allowOddThresholds`"), "{f}");
    assert_eq!((f.location.line, f.location.column), (11, 5), "{f}");
}

#[test]
fn a_healthy_run_takes_one_interval_per_check() {
    let text = with_analysis(
        "interval: 10s\nthreshold: 5\niterations: 2\nmatch: [{headers: {x-canary: {exact: \"true\"}}}]\nstepWeights: [1, 10, 50]\nmetrics: [{name: request-success-rate, thresholdRange: {min: 99}}]",
    );
    let spec = CanarySpec::from_yaml("canary.yaml", &text).unwrap();
    assert_eq!(spec.min_healthy_duration(), Duration::from_secs(50));
}

#[test]
fn templates_are_filled_in_as_flagger_fills_them() {
    let text = r#"apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: payment, namespace: shop}
spec:
  targetRef: {kind: Deployment, name: payment-svc-v2}
  service: {name: payment-svc}
  analysis:
    interval: 1m
    threshold: 1
    stepWeight: 10
    metrics:
    - name: errors
      query: x{ns="{{ namespace }}",w=~"{{ target }}",n="{{ name }}",s="{{service}}"}[{{ interval }}]
      thresholdRange: {max: 1}
    - name: errors-own-interval
      query: y[{{ interval }}]
      thresholdRange: {max: 1}
      interval: 90s
    - name: errors-flaggers-default
      query: z[{{ interval }}]
      thresholdRange: {max: 1}
"#;
    let spec = CanarySpec::from_yaml("c.yaml", text).unwrap();
    // Flagger's `target` is spec.targetRef.name; the VirtualService comes from spec.service.
    assert_eq!(spec.target.workload, "payment-svc-v2");
    assert_eq!(spec.target.virtual_service, "payment-svc");
    let queries: Vec<&Metric> = spec.analysis.gates.iter().map(|g| &g.metric).collect();
    assert_eq!(
        queries,
        [
            &Metric::Query(
                r#"x{ns="shop",w=~"payment-svc-v2",n="payment",s="payment-svc"}[1m]"#.into()
            ),
            &Metric::Query("y[90s]".into()),
            &Metric::Query("z[1m]".into()),
        ]
    );
    // Without a targetRef the workload is the Canary's name.
    let bare = CanarySpec::from_yaml(
        "c.yaml",
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: payment-svc}\nspec:\n  analysis: {interval: 1m, threshold: 1, stepWeight: 10}\n",
    )
    .unwrap();
    assert_eq!(bare.target.workload, "payment-svc");
}
