//! The lesson's question: "v1: 90, v2: 10 applied, v2 gets 0%". Each other cause `weir validate`
//! reports (issue 9, item 7), one row each. Cluster mode's own verdicts: `cluster_mode.rs`.

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

fn rows() -> Vec<Row> {
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

#[test]
fn causes_of_v2_getting_nothing() {
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
        let hit = c
            .findings
            .0
            .iter()
            .filter(|f| f.code == code && f.severity == sev)
            .collect::<Vec<_>>();
        if !hit.iter().any(|f| f.message.contains(row.says)) {
            failures.push(format!(
                "{}: no {sev:?} {code:?} saying {:?}:\n{}",
                row.name, row.says, c.findings
            ));
        }
        // Cluster mode reports one Kubernetes Service once, whatever form names it.
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
