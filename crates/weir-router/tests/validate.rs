//! One test per validation finding, the lesson's 99/1 typo both on its own and as a change.

mod common;

use common::*;
use weir_router::{Code, Severity};

fn codes(text: &str) -> Vec<Code> {
    compile(text).findings.errors().map(|f| f.code).collect()
}

fn only_error(text: &str, code: Code) -> weir_router::Finding {
    let c = compile(text);
    let errors: Vec<_> = c.findings.errors().cloned().collect();
    assert_eq!(
        errors.len(),
        1,
        "expected exactly one error {code}, got:\n{}",
        c.findings
    );
    assert_eq!(errors[0].code, code, "{}", c.findings);
    errors[0].clone()
}

#[test]
fn the_lessons_config_is_valid() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/payment-svc.yaml"
    ))
    .unwrap();
    let c = compile(&text);
    assert!(c.findings.0.is_empty(), "{}", c.findings);
}

#[test]
fn typo_99_1_refused_on_its_own_by_the_direction_guard() {
    let f = only_error(&vs("", &split(1, 99)), Code::CanaryMajority);
    for needle in ["v1", "v2", "99%", "1%", "v1: 1, v2: 99"] {
        assert!(
            f.message.contains(needle),
            "message should name {needle}: {}",
            f.message
        );
    }
    assert_eq!(f.location.path, "spec.http[0].route[1].weight");
    assert!(f.location.line > 0 && f.location.column > 0);
}

#[test]
fn typo_99_1_refused_as_a_change_from_100_0_and_90_10_by_the_step_guard() {
    for (a, b) in [(100, 0), (90, 10)] {
        let prev = table(&vs("", &split(a, b)));
        let c = compile_against(&vs("", &split(1, 99)), &prev);
        let step: Vec<_> = c
            .findings
            .errors()
            .filter(|f| f.code == Code::StepTooLarge)
            .collect();
        assert_eq!(step.len(), 1, "from {a}/{b}:\n{}", c.findings);
        assert!(
            step[0].message.contains(&format!("from {b}% to 99%")),
            "{}",
            step[0].message
        );
    }
}

#[test]
fn step_guard_allows_a_step_within_max_step_and_any_decrease() {
    let prev = table(&vs("", &split(90, 10)));
    for (a, b) in [(50, 50), (99, 1), (100, 0)] {
        let c = compile_against(&vs("", &split(a, b)), &prev);
        assert!(!c.findings.has_errors(), "{a}/{b}:\n{}", c.findings);
    }
    // A tighter max-step refuses 10 -> 50.
    let c = compile_against(&vs("weir.dev/max-step: '20'", &split(50, 50)), &prev);
    assert!(c.findings.contains(Code::StepTooLarge), "{}", c.findings);
}

#[test]
fn a_new_split_rule_is_stepped_from_zero() {
    let prev = table(&vs(
        "",
        "  - route: [{destination: {host: svc, subset: v1}}]\n",
    ));
    let c = compile_against(
        &vs("", &split(20, 80).replace("name: split", "name: new")),
        &prev,
    );
    assert!(c.findings.contains(Code::StepTooLarge), "{}", c.findings);
}

#[test]
fn weights_must_sum_to_100_under_strict_policy() {
    let f = only_error(&vs("", &split(91, 10)), Code::WeightSum);
    assert!(f.message.contains("sum to 101"), "{}", f.message);
    // Relative policy: 3:1 is fine and means 75/25.
    let c = compile(&vs("weir.dev/weight-policy: relative", &split(3, 1)));
    assert!(!c.findings.has_errors(), "{}", c.findings);
    let t = c.table.unwrap();
    assert_eq!(t.virtual_services()[0].rules[0].total_weight, 4);
}

#[test]
fn negative_weight() {
    let c = compile(&vs("weir.dev/weight-policy: relative", &split(10, -5)));
    assert_eq!(
        codes(&vs("weir.dev/weight-policy: relative", &split(10, -5))),
        vec![Code::NegativeWeight],
        "{}",
        c.findings
    );
}

#[test]
fn total_weight_zero() {
    only_error(
        &vs("weir.dev/weight-policy: relative", &split(0, 0)),
        Code::ZeroTotalWeight,
    );
}

#[test]
fn canary_majority_allowed_with_declared_promotion() {
    let c = compile(&vs("weir.dev/promotion: 'true'", &split(0, 100)));
    assert!(!c.findings.has_errors(), "{}", c.findings);
    // 50/50 is not a majority.
    assert!(!compile(&vs("", &split(50, 50))).findings.has_errors());
}

#[test]
fn stable_subset_annotation_decides_the_direction() {
    // With v2 declared stable, 10/90 is v2 carrying the majority: fine.
    let c = compile(&vs("weir.dev/stable-subset: v2", &split(10, 90)));
    assert!(!c.findings.has_errors(), "{}", c.findings);
    let c = compile(&vs("weir.dev/stable-subset: v2", &split(90, 10)));
    assert!(c.findings.contains(Code::CanaryMajority), "{}", c.findings);
}

#[test]
fn dark_launch_rule_is_not_a_canary_majority() {
    let http = format!(
        "  - match: [{{headers: {{x-canary: {{exact: 'true'}}}}}}]\n    route: [{{destination: {{host: svc, subset: v2}}}}]\n{}",
        split(90, 10)
    );
    let c = compile(&vs("", &http));
    assert!(common::only_stable_subset_warning(&c), "{}", c.findings);
}

#[test]
fn undefined_subset_is_ist0101() {
    let f = only_error(
        &vs("", &split(90, 10).replace("subset: v2", "subset: v9")),
        Code::UndefinedSubset,
    );
    assert_eq!(f.code.as_str(), "IST0101");
    assert!(
        f.message.contains("v9") && f.message.contains("v1, v2, v3"),
        "{}",
        f.message
    );
}

#[test]
fn subset_without_endpoints_is_ist0173() {
    let text = vs("", &split(90, 10)).replace(
        "{name: v2, labels: {version: v2}}",
        "{name: v2, labels: {version: v2x}}",
    );
    let f = only_error(&text, Code::SubsetWithoutEndpoints);
    assert_eq!(f.code.as_str(), "IST0173");
    assert!(f.message.contains("version=v2x"), "{}", f.message);
    // At weight 0 it is only a warning.
    let c = compile(&vs("", &split(100, 0)).replace(
        "{name: v2, labels: {version: v2}}",
        "{name: v2, labels: {version: v2x}}",
    ));
    assert!(!c.findings.has_errors(), "{}", c.findings);
    assert!(
        c.findings
            .warnings()
            .any(|f| f.code == Code::SubsetWithoutEndpoints)
    );
}

#[test]
fn host_without_endpoints() {
    let f = only_error(
        &vs("", "  - route: [{destination: {host: ghost}}]\n"),
        Code::HostWithoutEndpoints,
    );
    assert!(
        f.message.contains("ghost") && f.message.contains("ServiceEntry"),
        "{}",
        f.message
    );
}

#[test]
fn duplicate_subsets() {
    let text = vs("", &split(90, 10)).replace(
        "  - {name: v3, labels: {version: v3}}",
        "  - {name: v2, labels: {version: v3}}",
    );
    let f = only_error(&text, Code::DuplicateSubset);
    assert!(f.message.contains("\"v2\""), "{}", f.message);
}

#[test]
fn rule_after_catch_all_is_unreachable_ist0130() {
    let http = format!(
        "{}  - match: [{{uri: {{prefix: /api}}}}]\n    route: [{{destination: {{host: svc, subset: v1}}}}]\n",
        split(90, 10)
    );
    let f = only_error(&vs("", &http), Code::UnreachableRule);
    assert_eq!(f.code.as_str(), "IST0130");
    assert_eq!(f.location.path, "spec.http[1]");
}

#[test]
fn rule_repeating_an_earlier_match_is_unreachable() {
    let rule =
        "  - match: [{uri: {prefix: /api}}]\n    route: [{destination: {host: svc, subset: v1}}]\n";
    let http = format!("{rule}{rule}{}", split(90, 10));
    only_error(&vs("", &http), Code::UnreachableRule);
}

#[test]
fn invalid_regex() {
    let http = format!(
        "  - match: [{{uri: {{regex: '(unclosed'}}}}]\n    route: [{{destination: {{host: svc, subset: v1}}}}]\n{}",
        split(90, 10)
    );
    let f = only_error(&vs("", &http), Code::InvalidRegex);
    assert_eq!(f.location.path, "spec.http[0].match[0].uri.regex");
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let text = vs("", &split(90, 10)).replace("hosts: [svc]\n  http:", "hosts: [svc\n  http:");
    let f = only_error(&text, Code::YamlSyntax);
    let line = text
        .lines()
        .position(|l| l.contains("hosts: [svc") && !l.contains(']'))
        .unwrap() as u32
        + 1;
    assert!(f.location.line >= line, "{f}");
    assert!(f.location.column > 0, "{f}");
    assert_eq!(&*f.location.file, "test.yaml");
}

#[test]
fn wrong_type_points_at_the_field() {
    let text = vs("", &split(90, 10)).replace("weight: 10", "weight: ten");
    let f = only_error(&text, Code::YamlSyntax);
    let line = text
        .lines()
        .position(|l| l.contains("weight: ten"))
        .unwrap() as u32
        + 1;
    assert_eq!(f.location.line, line, "{f}");
    assert!(f.message.contains("spec.http[0].route[1].weight"), "{f}");
}

#[test]
fn fields_not_acted_on_are_warnings_with_locations() {
    let text = vs("", &split(90, 10)).replace(
        "  - name: split\n",
        "  - name: split\n    corsPolicy: {allowOrigins: [{exact: '*'}]}\n",
    );
    let c = compile(&text);
    assert!(!c.findings.has_errors(), "{}", c.findings);
    let w: Vec<_> = c
        .findings
        .warnings()
        .filter(|f| f.code == Code::NotActedOn)
        .collect();
    assert_eq!(w.len(), 1, "{}", c.findings);
    assert_eq!(w[0].location.path, "spec.http[0].corsPolicy");
    assert_eq!(w[0].severity, Severity::Warning);
    assert!(w[0].location.line > 0);
}

#[test]
fn unknown_kinds_are_warnings() {
    let text = format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n",
        vs("", &split(90, 10))
    );
    let c = compile(&text);
    assert!(!c.findings.has_errors());
    assert!(c.findings.contains(Code::UnknownKind));
}

#[test]
fn kind_list_is_read() {
    let docs: Vec<String> = vs("", &split(90, 10))
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            d.lines()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
                .replacen("  ", "- ", 1)
        })
        .collect();
    let list = format!("apiVersion: v1\nkind: List\nitems:\n{}\n", docs.join("\n"));
    let c = compile(&list);
    assert!(!c.findings.has_errors(), "{}\n{list}", c.findings);
    assert_eq!(c.table.unwrap().virtual_services().len(), 1);
    // Errors inside a List point into the List.
    let c = compile(&list.replace("weight: 10", "weight: 11"));
    let f = c.findings.errors().next().unwrap();
    assert_eq!(f.code, Code::WeightSum);
    assert!(f.location.line > 3, "{f}");
}

#[test]
fn all_api_versions_are_accepted() {
    for v in ["v1", "v1beta1", "v1alpha3"] {
        let text = vs("", &split(90, 10)).replace(
            "networking.istio.io/v1\n",
            &format!("networking.istio.io/{v}\n"),
        );
        let c = compile(&text);
        assert!(
            common::only_stable_subset_warning(&c),
            "{v}: {}",
            c.findings
        );
    }
}

#[test]
fn conflicting_hosts_ist0109() {
    let second = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: other, namespace: prod}\nspec:\n  hosts: [svc]\n  http:\n  - route: [{destination: {host: svc, subset: v1}}]\n";
    let text = format!("{}{second}", vs("", &split(90, 10)));
    assert!(codes(&text).contains(&Code::ConflictingHosts));
}

#[test]
fn bad_annotations_and_values_are_invalid_value() {
    let rows = [
        vs("weir.dev/weight-policy: loose", &split(90, 10)),
        vs("weir.dev/max-step: 'lots'", &split(90, 10)),
        vs("weir.dev/sticky: 'ip'", &split(90, 10)),
        vs("", &split(90, 10).replace("  - name: split\n", "  - name: split\n    timeout: 5 seconds\n")),
        vs("", &split(90, 10).replace("  - name: split\n", "  - name: split\n    fault: {abort: {httpStatus: 999}}\n")),
        vs("", &split(90, 10).replace("  - name: split\n", "  - name: split\n    mirror: {host: svc, subset: v3}\n    mirrorPercentage: {value: 120}\n")),
        vs("", &split(90, 10).replace("  - name: split\n", "  - name: split\n    retries: {attempts: 2, retryOn: 'sometimes'}\n")),
    ];
    for text in rows {
        assert_eq!(
            codes(&text),
            vec![Code::InvalidValue],
            "{}\n{text}",
            compile(&text).findings
        );
    }
}

#[test]
fn every_route_field_is_compiled() {
    let http = r#"  - name: full
    match: [{uri: {prefix: /api}}]
    rewrite: {uri: /v2, authority: backend}
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,connect-failure,retriable-status-codes,409"}
    fault:
      delay: {fixedDelay: 2s, percentage: {value: 12.5}}
      abort: {httpStatus: 503, percentage: {value: 1}}
    mirror: {host: svc, subset: v3}
    mirrorPercentage: {value: 50}
    mirrors:
    - destination: {host: svc, subset: v2}
    headers:
      request: {set: {x-a: "1"}, add: {x-b: "2"}, remove: [x-c]}
      response: {set: {x-d: "4"}}
    route:
    - destination: {host: svc, subset: v1, port: {number: 80}}
      weight: 100
      headers: {request: {set: {x-dest: v1}}}
"#;
    let t = table(&vs("", &format!("{http}{}", split(90, 10))));
    let r = &t.virtual_services()[0].rules[0];
    assert_eq!(r.timeout, Some(std::time::Duration::from_millis(1500)));
    let retries = r.retries.as_ref().unwrap();
    assert_eq!(retries.attempts, 3);
    assert_eq!(
        retries.per_try_timeout,
        Some(std::time::Duration::from_millis(500))
    );
    assert!(retries.retry_on.server_error && retries.retry_on.connect_failure);
    assert_eq!(retries.retry_on.status_codes, vec![409]);
    let fault = r.fault.as_ref().unwrap();
    assert_eq!(
        fault.delay,
        Some((std::time::Duration::from_secs(2), 125_000))
    );
    assert_eq!(
        fault.abort.map(|(s, p)| (s.as_u16(), p)),
        Some((503, 10_000))
    );
    assert_eq!(r.mirrors.len(), 2);
    assert_eq!(r.mirrors[0].per_million, 500_000);
    assert_eq!(r.mirrors[1].per_million, 1_000_000);
    assert_eq!(
        t.cluster(r.mirrors[0].cluster).subset.as_deref(),
        Some("v3")
    );
    assert_eq!(r.headers.request.set.len(), 1);
    assert_eq!(r.headers.request.add.len(), 1);
    assert_eq!(r.headers.request.remove.len(), 1);
    assert_eq!(r.headers.response.set.len(), 1);
    let rw = r.rewrite.as_ref().unwrap();
    assert_eq!(rw.uri.as_deref(), Some("/v2"));
    assert_eq!(rw.authority.as_ref().unwrap(), "backend");
    let d = &r.destinations[0];
    assert_eq!(d.port, Some(80));
    assert_eq!(d.headers.request.set[0].0.as_str(), "x-dest");
    let c = t.cluster(d.cluster);
    assert_eq!(c.endpoints[0].authority, "127.0.0.1:9001");
    assert_eq!(&*c.labels.destination_version, "v1");
    assert_eq!(&*c.labels.destination_workload, "svc-v1");
    assert_eq!(&*c.labels.destination_service, "svc.prod.svc.cluster.local");
    assert_eq!(&*c.labels.destination_service_name, "svc");
    // Istio's default retries apply when a rule sets none.
    let split_rule = &t.virtual_services()[0].rules[1];
    assert_eq!(split_rule.retries.as_ref().map(|r| r.attempts), Some(2));
}

#[test]
fn findings_serialize_to_json_with_codes() {
    let c = compile(&vs("", &split(1, 99)));
    let json = serde_json::to_value(&c.findings).unwrap();
    assert_eq!(json[0]["code"], "WEIR004");
    assert_eq!(json[0]["severity"], "error");
    assert_eq!(json[0]["location"]["file"], "test.yaml");
}

#[test]
fn empty_subset_with_weight_in_any_rule_is_an_error() {
    // Rule 0 names v2 at weight 0 (a warning), rule 1 gives it traffic (an error): the first
    // use must not hide the second.
    let http = format!(
        "  - match: [{{uri: {{prefix: /a}}}}]\n    route:\n    - destination: {{host: svc, subset: v1}}\n      weight: 100\n    - destination: {{host: svc, subset: v2}}\n      weight: 0\n{}",
        split(90, 10)
    );
    let text = vs("", &http).replace(
        "{name: v2, labels: {version: v2}}",
        "{name: v2, labels: {version: none}}",
    );
    let c = compile(&text);
    let errors: Vec<_> = c.findings.errors().collect();
    assert_eq!(errors.len(), 1, "{}", c.findings);
    assert_eq!(errors[0].code, Code::SubsetWithoutEndpoints);
    assert_eq!(errors[0].location.path, "spec.http[1].route[1].weight");
    assert!(
        c.findings
            .warnings()
            .any(|f| f.code == Code::SubsetWithoutEndpoints)
    );
}
