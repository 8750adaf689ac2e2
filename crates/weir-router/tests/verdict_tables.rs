//! Verdict tables of the validator, one row per case, checked by one runner:
//! - cluster mode (issue 9, item 1): a destination host without a ServiceEntry is a Kubernetes
//!   Service (`name`, `name.namespace`, the FQDN, resolved in the VirtualService's namespace), a
//!   warning at most; `--strict-hosts` (HostMode::Endpoints) makes it the error `weir serve`
//!   needs;
//! - the lesson's question, "v1: 90, v2: 10 applied, v2 gets 0%": each other cause
//!   `weir validate` reports (issue 9, item 7).

use weir_router::{Code, ConfigSource, GuardOptions, HostMode, Severity, validate};

const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: svc, namespace: prod, annotations: {weir.dev/stable-subset: v1}}\nspec:\n  hosts: [svc]\n  http:\n  - route:\n    - destination: {host: svc, subset: v1}\n      weight: 90\n    - destination: {host: svc, subset: v2}\n      weight: 10\n";

fn se(labels_v2: &str, port_name: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc, namespace: prod}}\nspec:\n  hosts: [svc.prod.svc.cluster.local]\n  ports: [{{number: 80, name: http}}]\n  resolution: STATIC\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: 9001}}, labels: {{version: v1}}}}\n  - {{address: 127.0.0.1, ports: {{{port_name}: 9002}}, labels: {{{labels_v2}}}}}\n---\n"
    )
}

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

fn cluster_mode_rows() -> Vec<Row> {
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

fn causes_rows() -> Vec<Row> {
    vec![
        Row {
            name: "two subsets select the same endpoints",
            text: format!(
                "{}{}{VS}",
                se("version: v1", "http"),
                dr("prod", "version: v1")
            ),
            hosts: HostMode::Endpoints,
            want: (Code::InvalidValue, Severity::Warning),
            says: "select the same endpoints",
        },
        Row {
            name: "a VirtualService bound only to gateways (no mesh)",
            text: format!(
                "{}{}{}",
                se("version: v2", "http"),
                dr("prod", "version: v2"),
                VS.replace(
                    "  hosts: [svc]\n",
                    "  hosts: [svc]\n  gateways: [public-gw]\n"
                )
            ),
            hosts: HostMode::Endpoints,
            want: (Code::NotActedOn, Severity::Warning),
            says: "sidecars ignore it",
        },
        Row {
            name: "the DestinationRule for the host is in another namespace",
            text: format!(
                "{}{}{VS}",
                se("version: v2", "http"),
                dr("default", "version: v2")
            ),
            hosts: HostMode::Endpoints,
            want: (Code::UndefinedSubset, Severity::Error),
            says: "DestinationRule default/svc defines host svc.default.svc.cluster.local",
        },
        Row {
            name: "an endpoint whose port name matches no ServiceEntry port",
            text: format!(
                "{}{}{VS}",
                se("version: v2", "web"),
                dr("prod", "version: v2")
            ),
            hosts: HostMode::Endpoints,
            want: (Code::InvalidValue, Severity::Warning),
            says: "matches no port of the ServiceEntry",
        },
        Row {
            name: "a VirtualService host no service of the input names",
            text: format!(
                "{}{}{}",
                se("version: v2", "http"),
                dr("prod", "version: v2"),
                VS.replace("  hosts: [svc]\n", "  hosts: [svc-typo]\n")
            ),
            hosts: HostMode::Endpoints,
            want: (Code::HostWithoutEndpoints, Severity::Warning),
            says: "no ServiceEntry or DestinationRule of the input names",
        },
    ]
}

/// Every row's finding (or, where `says` is empty, its absence); all failures at once.
fn check(rows: Vec<Row>) {
    let mut failures = Vec::new();
    for row in rows {
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
fn cluster_mode_verdicts() {
    check(cluster_mode_rows());
}

#[test]
fn causes_of_v2_getting_nothing() {
    check(causes_rows());
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
