//! Direction and step on the canaries' total (issue 9, item 4), flips, and every weight finding
//! computed whatever else is wrong (item 2).

mod common;

use common::*;
use weir_router::{Code, ConfigSource, GuardOptions, HostMode, validate};

fn three(a: u32, b: u32, c: u32) -> String {
    format!(
        "  - name: split\n    route:\n    - destination: {{host: svc, subset: v1}}\n      weight: {a}\n    - destination: {{host: svc, subset: v2}}\n      weight: {b}\n    - destination: {{host: svc, subset: v3}}\n      weight: {c}\n"
    )
}

struct Row {
    name: &'static str,
    annotations: &'static str,
    against: Option<(u32, u32, u32)>,
    next: (u32, u32, u32),
    promotion: bool,
    codes: &'static [Code],
}

const ROWS: &[Row] = &[
    Row {
        name: "40/30/30: 60% on canaries together is refused",
        annotations: "weir.dev/stable-subset: v1",
        against: None,
        next: (40, 30, 30),
        promotion: false,
        codes: &[Code::CanaryMajority],
    },
    Row {
        name: "50/25/25: the stable subset keeps half",
        annotations: "weir.dev/stable-subset: v1",
        against: None,
        next: (50, 25, 25),
        promotion: false,
        codes: &[],
    },
    Row {
        name: "40/30/30 declared as a promotion",
        annotations: "weir.dev/stable-subset: v1",
        against: None,
        next: (40, 30, 30),
        promotion: true,
        codes: &[],
    },
    Row {
        name: "step on the total: 90/5/5 -> 60/20/20 adds 30 points",
        annotations: "weir.dev/stable-subset: v1",
        against: Some((90, 5, 5)),
        next: (60, 20, 20),
        promotion: false,
        codes: &[],
    },
    Row {
        name: "step on the total: 96/2/2 -> 50/25/25 adds 46, each canary only 23",
        annotations: "weir.dev/stable-subset: v1, weir.dev/max-step: '20'",
        against: Some((96, 2, 2)),
        next: (50, 25, 25),
        promotion: false,
        codes: &[Code::StepTooLarge],
    },
    Row {
        name: "flip without annotation: the running majority moves from v1 to v2, whatever the list order",
        annotations: "",
        against: Some((90, 10, 0)),
        next: (10, 90, 0),
        promotion: false,
        codes: &[Code::CanaryMajority, Code::StepTooLarge],
    },
    Row {
        name: "flip declared as a promotion",
        annotations: "weir.dev/max-step: '100'",
        against: Some((90, 10, 0)),
        next: (10, 90, 0),
        promotion: true,
        codes: &[],
    },
    Row {
        name: "returning the majority to the annotated stable subset is a rollback, not a flip",
        annotations: "weir.dev/stable-subset: v1",
        against: Some((0, 100, 0)),
        next: (100, 0, 0),
        promotion: false,
        codes: &[],
    },
];

#[test]
fn direction_step_and_flip_on_the_canaries_total() {
    let mut failures = Vec::new();
    for row in ROWS {
        let previous = row.against.map(|(a, b, c)| {
            let c = compile(&vs(
                "weir.dev/stable-subset: v1, weir.dev/promotion: 'true'",
                &three(a, b, c),
            ));
            c.table.expect("a table")
        });
        let (a, b, c) = row.next;
        let compiled = validate(
            &[ConfigSource::new(
                "test.yaml",
                vs(row.annotations, &three(a, b, c)),
            )],
            previous.as_ref(),
            GuardOptions {
                promotion: row.promotion,
                ..GuardOptions::default()
            },
        );
        let mut got: Vec<Code> = compiled.findings.errors().map(|f| f.code).collect();
        got.sort();
        got.dedup();
        let mut want = row.codes.to_vec();
        want.sort();
        if got != want {
            failures.push(format!(
                "{}: {got:?}, expected {want:?}\n{}",
                row.name, compiled.findings
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn forty_thirty_thirty_names_both_canaries() {
    let c = compile(&vs("weir.dev/stable-subset: v1", &three(40, 30, 30)));
    let f = c
        .findings
        .errors()
        .find(|f| f.code == Code::CanaryMajority)
        .expect("WEIR004");
    for needle in ["v2 + v3", "60%", "40%", "v1: 40, v2: 30, v3: 30"] {
        assert!(f.message.contains(needle), "{needle:?} in {f}");
    }
}

/// Item 2: an unresolved subset, host or a dropped match never hides a weight finding.
#[test]
fn weight_findings_run_whatever_else_is_wrong() {
    let rows: &[(&str, String, &[Code])] = &[
        (
            "undefined subset and the typo",
            vs("", &split(1, 99)).replace("subset: v2}", "subset: v9}"),
            &[Code::UndefinedSubset, Code::CanaryMajority],
        ),
        (
            "host without endpoints (strict) and the typo",
            vs("weir.dev/stable-subset: v1", &split(1, 99))
                .replace("{host: svc, subset: v2}", "{host: other, subset: v2}"),
            &[
                Code::HostWithoutEndpoints,
                Code::UndefinedSubset,
                Code::CanaryMajority,
            ],
        ),
        (
            "bad regex in the rule and weights not summing to 100",
            vs(
                "",
                &split(50, 40).replace(
                    "  - name: split\n",
                    "  - name: split\n    match: [{uri: {regex: '('}}]\n",
                ),
            ),
            &[Code::InvalidRegex, Code::WeightSum],
        ),
    ];
    for (name, text, want) in rows {
        let c = compile(text);
        for code in *want {
            assert!(
                c.findings.contains(*code),
                "{name}: {code:?} missing:\n{}",
                c.findings
            );
        }
    }
}

#[test]
fn cluster_mode_keeps_the_weight_guard() {
    let text = vs("", &split(1, 99));
    let c = validate(
        &[ConfigSource::new(
            "t.yaml",
            text.split("---\napiVersion: networking.istio.io/v1\nkind: VirtualService")
                .nth(1)
                .map(|v| format!("apiVersion: networking.istio.io/v1\nkind: VirtualService{v}"))
                .unwrap(),
        )],
        None,
        GuardOptions {
            hosts: HostMode::Cluster,
            ..GuardOptions::default()
        },
    );
    let errors: Vec<Code> = c.findings.errors().map(|f| f.code).collect();
    assert_eq!(errors, vec![Code::CanaryMajority], "{}", c.findings);
}
