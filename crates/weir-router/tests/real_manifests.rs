//! Real manifests (issue 9, item 6): `kubectl get -o yaml` Lists and multi-doc streams with
//! server-filled fields validate without noise; a misspelled field says "did you mean"; a tab
//! in the indentation says so.

use weir_router::{Code, ConfigSource, GuardOptions, HostMode, validate};

const VS_ITEM: &str = "- apiVersion: networking.istio.io/v1\n  kind: VirtualService\n  metadata:\n    name: svc\n    namespace: prod\n    uid: 1f0c\n    resourceVersion: '42'\n    generation: 3\n    creationTimestamp: '2026-11-25T09:00:00Z'\n    managedFields: [{manager: kubectl, operation: Update}]\n    annotations: {weir.dev/stable-subset: v1, kubectl.kubernetes.io/last-applied-configuration: '{}'}\n  spec:\n    hosts: [svc]\n    http:\n    - route:\n      - destination: {host: svc, subset: v1}\n        WEIGHT_V1\n      - destination: {host: svc, subset: v2}\n        weight: 10\n  status: {observedGeneration: 3, conditions: [{type: Reconciled, status: 'True'}]}\n";

struct Row {
    name: &'static str,
    text: String,
    /// A message fragment that must be present ("" = the input must have no finding at all).
    says: &'static str,
    code: Option<Code>,
}

fn rows() -> Vec<Row> {
    let list = |w: &str| {
        format!(
            "apiVersion: v1\nkind: List\nmetadata: {{resourceVersion: ''}}\nitems:\n{}",
            VS_ITEM.replace("WEIGHT_V1", w)
        )
    };
    let multi = |w: &str| {
        VS_ITEM
            .replace("WEIGHT_V1", w)
            .lines()
            .map(|l| l.get(2..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    vec![
        Row {
            name: "a kubectl List: server-filled metadata and status are silent",
            text: list("weight: 90"),
            says: "",
            code: None,
        },
        Row {
            name: "one kubectl document: the same, silent",
            text: multi("weight: 90"),
            says: "",
            code: None,
        },
        Row {
            name: "weigth: did you mean weight",
            text: list("weigth: 90"),
            says: "did you mean `weight`?",
            code: Some(Code::NotActedOn),
        },
        Row {
            name: "subsett: did you mean subset",
            text: list("weight: 90").replace("subset: v2}", "subsett: v2}"),
            says: "did you mean `subset`?",
            code: Some(Code::NotActedOn),
        },
        Row {
            name: "a tab in the indentation",
            text: list("weight: 90").replace("\n    http:", "\n\thttp:"),
            says: "tabs are not allowed in YAML indentation",
            code: Some(Code::YamlSyntax),
        },
        Row {
            name: "the typo in a List is still refused",
            text: list("weight: 1").replace("weight: 10", "weight: 99"),
            says: "(v1: 1, v2: 99)",
            code: Some(Code::CanaryMajority),
        },
    ]
}

#[test]
fn real_manifests() {
    let mut failures = Vec::new();
    for row in rows() {
        let c = validate(
            &[ConfigSource::new("kubectl.yaml", row.text.as_str())],
            None,
            GuardOptions {
                hosts: HostMode::Cluster,
                ..GuardOptions::default()
            },
        );
        // Cluster mode says once that `svc` is taken as a Kubernetes Service; that is no noise
        // from the manifest itself.
        let others: Vec<_> = c
            .findings
            .0
            .iter()
            .filter(|f| f.code != Code::HostWithoutEndpoints)
            .collect();
        if row.says.is_empty() {
            if !others.is_empty() {
                failures.push(format!("{}: noise:\n{}", row.name, c.findings));
            }
            continue;
        }
        let hit = others
            .iter()
            .any(|f| f.message.contains(row.says) && row.code.is_none_or(|code| f.code == code));
        if !hit {
            failures.push(format!(
                "{}: nothing says {:?}:\n{}",
                row.name, row.says, c.findings
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
