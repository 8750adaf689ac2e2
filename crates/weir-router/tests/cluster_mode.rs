//! Cluster mode (issue 9, item 1): a destination host without a ServiceEntry is a Kubernetes
//! Service (`name`, `name.namespace`, the FQDN, resolved in the VirtualService's namespace), a
//! warning at most; `--strict-hosts` (HostMode::Endpoints) makes it the error `weir serve` needs.

use weir_router::{Code, ConfigSource, GuardOptions, HostMode, Severity, validate};

const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: svc, namespace: prod, annotations: {weir.dev/stable-subset: v1}}\nspec:\n  hosts: [svc]\n  http:\n  - route:\n    - destination: {host: svc, subset: v1}\n      weight: 90\n    - destination: {host: svc, subset: v2}\n      weight: 10\n";

fn dr(ns: &str, v2_labels: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc, namespace: {ns}}}\nspec:\n  host: svc\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{{v2_labels}}}}}\n---\n"
    )
}

struct Row {
    name: &'static str,
    text: String,
    hosts: HostMode,
    want: (Code, Severity),
    says: &'static str,
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "cluster mode: a host without ServiceEntry is a Kubernetes Service (warning)",
            text: VS.to_string(),
            hosts: HostMode::Cluster,
            want: (Code::HostWithoutEndpoints, Severity::Warning),
            says: "Kubernetes Service svc.prod.svc.cluster.local",
        },
        Row {
            name: "cluster mode, --strict-hosts: the same host is an error",
            text: VS.to_string(),
            hosts: HostMode::Endpoints,
            want: (Code::HostWithoutEndpoints, Severity::Error),
            says: "weir serve sends traffic only to endpoints a ServiceEntry lists",
        },
        Row {
            name: "cluster mode still checks subsets against the DestinationRules in the input",
            text: format!(
                "{}{}",
                dr("prod", "version: v2").replace("name: v2", "name: v3"),
                VS
            ),
            hosts: HostMode::Cluster,
            want: (Code::UndefinedSubset, Severity::Error),
            says: "defined subsets are v1, v3",
        },
        Row {
            name: "cluster mode: name.namespace and the FQDN name the same Service",
            text: VS
                .replace("{host: svc, subset: v2}", "{host: svc.prod, subset: v2}")
                .replace(
                    "{host: svc, subset: v1}",
                    "{host: svc.prod.svc.cluster.local, subset: v1}",
                ),
            hosts: HostMode::Cluster,
            want: (Code::HostWithoutEndpoints, Severity::Warning),
            says: "svc.prod.svc.cluster.local",
        },
        Row {
            name: "cluster mode: a DestinationRule for the host silences the host warning",
            text: format!("{}{VS}", dr("prod", "version: v2")),
            hosts: HostMode::Cluster,
            want: (Code::HostWithoutEndpoints, Severity::Warning),
            says: "",
        },
    ]
}

#[test]
fn cluster_mode_verdicts() {
    let mut failures = Vec::new();
    for row in rows() {
        let c = validate(
            &[ConfigSource::new("t.yaml", row.text.as_str())],
            None,
            GuardOptions {
                hosts: row.hosts,
                ..GuardOptions::default()
            },
        );
        let (code, sev) = row.want;
        let hit: Vec<_> = c
            .findings
            .0
            .iter()
            .filter(|f| f.code == code && f.severity == sev)
            .collect();
        if row.says.is_empty() {
            // The silent case: no such finding at all.
            if !hit.is_empty() {
                failures.push(format!(
                    "{}: unexpected {code:?}:\n{}",
                    row.name, c.findings
                ));
            }
            continue;
        }
        if !hit.iter().any(|f| f.message.contains(row.says)) {
            failures.push(format!(
                "{}: no {sev:?} {code:?} saying {:?}:\n{}",
                row.name, row.says, c.findings
            ));
        }
        // One Kubernetes Service is reported once, whatever form names it.
        if row.hosts == HostMode::Cluster && code == Code::HostWithoutEndpoints && hit.len() != 1 {
            failures.push(format!(
                "{}: {} host warnings:\n{}",
                row.name,
                hit.len(),
                c.findings
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_cluster_mode_table_is_never_served() {
    // The same config that validates in cluster mode is refused where bytes must be sent.
    let c = validate(
        &[ConfigSource::new("t.yaml", VS)],
        None,
        GuardOptions {
            hosts: HostMode::Cluster,
            ..GuardOptions::default()
        },
    );
    assert!(!c.findings.has_errors(), "{}", c.findings);
    let refused =
        weir_router::LiveTable::from_sources(&[ConfigSource::new("t.yaml", VS)]).unwrap_err();
    assert!(
        refused.findings.contains(Code::HostWithoutEndpoints),
        "{}",
        refused.findings
    );
}
