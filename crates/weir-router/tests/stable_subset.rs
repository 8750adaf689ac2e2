//! Which subset is stable (issue 9, item 3): the annotation, else the subset holding the
//! majority in the running / `--against` config, else `primary` / `stable`, else the lowest
//! version in natural order with a warning. Never the order of the list.

use weir_router::{Code, ConfigSource, GuardOptions, HostMode, RouteTable, StableSource, validate};

/// A bare VirtualService (cluster mode: no ServiceEntry needed) with one weighted rule.
fn bare(annotations: &str, route: &[(&str, u32)]) -> String {
    let mut out = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: svc\n  namespace: prod\n  annotations: {{{annotations}}}\nspec:\n  hosts: [svc]\n  http:\n  - route:\n"
    );
    for (subset, weight) in route {
        out.push_str(&format!(
            "    - destination: {{host: svc, subset: {subset}}}\n      weight: {weight}\n"
        ));
    }
    out
}

fn options() -> GuardOptions {
    GuardOptions {
        hosts: HostMode::Cluster,
        ..GuardOptions::default()
    }
}

fn table(text: &str) -> RouteTable {
    validate(&[ConfigSource::new("running.yaml", text)], None, options())
        .table
        .expect("a table")
}

struct Row {
    name: &'static str,
    annotations: &'static str,
    route: &'static [(&'static str, u32)],
    against: Option<&'static [(&'static str, u32)]>,
    stable: &'static str,
    source: StableSource,
    refused: bool,
}

const ROWS: &[Row] = &[
    Row {
        name: "annotation wins over the lowest version",
        annotations: "weir.dev/stable-subset: v2",
        route: &[("v1", 10), ("v2", 90)],
        against: None,
        stable: "v2",
        source: StableSource::Annotation,
        refused: false,
    },
    Row {
        name: "annotation wins over the running majority (the majority may return to it)",
        annotations: "weir.dev/stable-subset: v2",
        route: &[("v1", 20), ("v2", 80)],
        against: Some(&[("v1", 90), ("v2", 10)]),
        stable: "v2",
        source: StableSource::Annotation,
        refused: false,
    },
    Row {
        name: "running majority decides without annotation",
        annotations: "",
        route: &[("v1", 5), ("v2", 95)],
        against: Some(&[("v1", 10), ("v2", 90)]),
        stable: "v2",
        source: StableSource::Running,
        refused: false,
    },
    Row {
        name: "running majority: v1 stable, the typo listed v2 first is refused",
        annotations: "",
        route: &[("v2", 99), ("v1", 1)],
        against: Some(&[("v1", 90), ("v2", 10)]),
        stable: "v1",
        source: StableSource::Running,
        refused: true,
    },
    Row {
        name: "a subset named primary",
        annotations: "",
        route: &[("canary", 10), ("primary", 90)],
        against: None,
        stable: "primary",
        source: StableSource::Name,
        refused: false,
    },
    Row {
        name: "a subset named stable",
        annotations: "",
        route: &[("stable", 60), ("next", 40)],
        against: None,
        stable: "stable",
        source: StableSource::Name,
        refused: false,
    },
    Row {
        name: "lowest natural version: v2 < v10, whatever the list order",
        annotations: "",
        route: &[("v10", 10), ("v2", 90)],
        against: None,
        stable: "v2",
        source: StableSource::LowestVersion,
        refused: false,
    },
    Row {
        name: "never list order: v2: 99 listed first, v1: 1 second is the typo",
        annotations: "",
        route: &[("v2", 99), ("v1", 1)],
        against: None,
        stable: "v1",
        source: StableSource::LowestVersion,
        refused: true,
    },
    Row {
        name: "a single subset is stable without a warning",
        annotations: "",
        route: &[("v1", 100)],
        against: None,
        stable: "v1",
        source: StableSource::Only,
        refused: false,
    },
];

#[test]
fn stable_subset_choice() {
    let mut failures = Vec::new();
    for row in ROWS {
        let previous = row.against.map(|r| table(&bare("", r)));
        let c = validate(
            &[ConfigSource::new(
                "next.yaml",
                bare(row.annotations, row.route),
            )],
            previous.as_ref(),
            options(),
        );
        let t = c.table.as_ref().expect("a table");
        let vs = &t.virtual_services()[0];
        if vs.stable_subset.as_deref() != Some(row.stable) || vs.stable_source != row.source {
            failures.push(format!(
                "{}: stable {:?} from {:?}, expected {} from {:?}",
                row.name, vs.stable_subset, vs.stable_source, row.stable, row.source
            ));
        }
        if c.findings.contains(Code::CanaryMajority) != row.refused {
            failures.push(format!(
                "{}: refused? expected {}:\n{}",
                row.name, row.refused, c.findings
            ));
        }
        let warned = c
            .findings
            .warnings()
            .any(|f| f.message.contains("names no stable subset"));
        if warned != (row.source == StableSource::LowestVersion) {
            failures.push(format!(
                "{}: lowest-version warning {warned}:\n{}",
                row.name, c.findings
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_lowest_version_warning_recommends_the_annotation() {
    let c = validate(
        &[ConfigSource::new(
            "next.yaml",
            bare("", &[("v1", 90), ("v2", 10)]),
        )],
        None,
        options(),
    );
    let w = c
        .findings
        .warnings()
        .find(|f| f.message.contains("names no stable subset"))
        .expect("a warning");
    assert!(w.message.contains("weir.dev/stable-subset: v1"), "{w}");
}
