//! Verdicts held against Istio's analyzers and Envoy's route matching (issue 9, item 5), one
//! row per case, each named after the case it pins. Cases written for weir from the situations
//! Istio's analyzer test data and Envoy's matching docs describe; no file is copied.

use http::{HeaderMap, Method, Uri};
use weir_router::{Code, ConfigSource, GuardOptions, HostMode, RequestHead, Severity, validate};

const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: svc, namespace: prod}\nspec:\n  hosts: [svc.prod.svc.cluster.local]\n  ports: [{number: 80, name: http}]\n  resolution: STATIC\n  endpoints:\n  - {address: 127.0.0.1, ports: {http: 9001}, labels: {version: v1}}\n  - {address: 127.0.0.1, ports: {http: 9002}, labels: {version: v2}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: svc, namespace: prod}\nspec:\n  host: svc\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n---\n";

fn vs(ns: &str, name: &str, hosts: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}, annotations: {{weir.dev/stable-subset: v1}}}}\nspec:\n  hosts: {hosts}\n  http:\n{http}"
    )
}

const TO_V1: &str = "  - route:\n    - destination: {host: svc, subset: v1}\n";

struct Row {
    name: &'static str,
    text: String,
    /// (code, severity) that must be present.
    has: Vec<(Code, Severity)>,
    /// Codes that must be absent.
    lacks: Vec<Code>,
}

fn rows() -> Vec<Row> {
    let matched = |m: &str| {
        format!(
            "  - match: [{m}]\n    route:\n    - destination: {{host: svc, subset: v2}}\n{TO_V1}"
        )
    };
    vec![
        Row {
            name: "prefix '' in headers is refused, as Istio refuses it",
            text: format!("{SE}{}", vs("prod", "svc", "[svc]", &matched("{headers: {x-a: {prefix: ''}}}"))),
            has: vec![(Code::InvalidValue, Severity::Error)],
            lacks: vec![],
        },
        Row {
            name: "prefix '' in withoutHeaders is refused",
            text: format!("{SE}{}", vs("prod", "svc", "[svc]", &matched("{withoutHeaders: {x-a: {prefix: ''}}}"))),
            has: vec![(Code::InvalidValue, Severity::Error)],
            lacks: vec![],
        },
        Row {
            name: "prefix '' in queryParams is refused",
            text: format!("{SE}{}", vs("prod", "svc", "[svc]", &matched("{queryParams: {a: {prefix: ''}}}"))),
            has: vec![(Code::InvalidValue, Severity::Error)],
            lacks: vec![],
        },
        Row {
            name: "sourceLabels makes the rule an error, never a catch-all (no IST0130 after it)",
            text: format!("{SE}{}", vs("prod", "svc", "[svc]", &matched("{sourceLabels: {app: web}}"))),
            has: vec![(Code::InvalidValue, Severity::Error)],
            lacks: vec![Code::UnreachableRule],
        },
        Row {
            name: "sourceNamespace makes the rule an error",
            text: format!("{SE}{}", vs("prod", "svc", "[svc]", &matched("{sourceNamespace: web}"))),
            has: vec![(Code::InvalidValue, Severity::Error)],
            lacks: vec![Code::UnreachableRule],
        },
        Row {
            name: "match gateways without mesh makes the rule an error",
            text: format!("{SE}{}", vs("prod", "svc", "[svc]", &matched("{gateways: [public-gw]}"))),
            has: vec![(Code::InvalidValue, Severity::Error)],
            lacks: vec![],
        },
        Row {
            name: "match gateways with mesh is evaluable",
            text: format!("{SE}{}", vs("prod", "svc", "[svc]", &matched("{gateways: [mesh], uri: {prefix: /a}}"))),
            has: vec![],
            lacks: vec![Code::InvalidValue],
        },
        Row {
            name: "IST0109: `ratings` in two namespaces are two services",
            text: format!("{SE}{}---\n{}", vs("prod", "a", "[ratings]", TO_V1), vs("test", "b", "[ratings]", TO_V1)),
            has: vec![(Code::InvalidValue, Severity::Warning)],
            lacks: vec![Code::ConflictingHosts],
        },
        Row {
            name: "IST0109: the same short host in one namespace conflicts",
            text: format!("{SE}{}---\n{}", vs("prod", "a", "[ratings]", TO_V1), vs("prod", "b", "[ratings.prod.svc.cluster.local]", TO_V1)),
            has: vec![(Code::ConflictingHosts, Severity::Error)],
            lacks: vec![],
        },
        Row {
            name: "IST0109: a wildcard host twice conflicts",
            text: format!("{SE}{}---\n{}", vs("prod", "a", "['*.example.com']", TO_V1), vs("prod", "b", "['*.example.com']", TO_V1)),
            has: vec![(Code::ConflictingHosts, Severity::Error)],
            lacks: vec![],
        },
        Row {
            name: "IST0130 ignores the match item's name",
            text: format!("{SE}{}", vs("prod", "svc", "[svc]", &format!(
                "  - match: [{{name: a, uri: {{prefix: /x}}}}]\n    route: [{{destination: {{host: svc, subset: v1}}}}]\n  - match: [{{name: b, uri: {{prefix: /x}}}}]\n    route: [{{destination: {{host: svc, subset: v1}}}}]\n{TO_V1}"
            ))),
            has: vec![(Code::UnreachableRule, Severity::Error)],
            lacks: vec![],
        },
        Row {
            name: "a lone destination with weight 0 takes 100%, with a warning",
            text: format!("{SE}{}", vs("prod", "svc", "[svc]", "  - route:\n    - destination: {host: svc, subset: v1}\n      weight: 0\n")),
            has: vec![(Code::InvalidValue, Severity::Warning)],
            lacks: vec![Code::ZeroTotalWeight],
        },
        Row {
            name: "a total above u32::MAX is refused as Envoy refuses it",
            text: format!("{SE}{}", vs("prod", "svc", "[svc]", "  - route:\n    - destination: {host: svc, subset: v1}\n      weight: 4294967295\n    - destination: {host: svc, subset: v2}\n      weight: 1\n")).replace("annotations: {weir.dev/stable-subset: v1}", "annotations: {weir.dev/stable-subset: v1, weir.dev/weight-policy: relative}"),
            has: vec![(Code::InvalidValue, Severity::Error)],
            lacks: vec![],
        },
        Row {
            name: "ServiceEntry hosts are literal: a short SE host does not define the FQDN (istio/istio#36864)",
            text: format!("{}{}", SE.replace("[svc.prod.svc.cluster.local]", "[svc]"), vs("prod", "svc", "[svc]", "  - route:\n    - destination: {host: svc.prod.svc.cluster.local, subset: v1}\n")),
            has: vec![(Code::HostWithoutEndpoints, Severity::Error)],
            lacks: vec![],
        },
        Row {
            name: "a DNS ServiceEntry without endpoints is no IST0173 for a destination without subset",
            text: format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext, namespace: prod}}\nspec:\n  hosts: [api.example.com]\n  ports: [{{number: 443, name: https}}]\n  resolution: DNS\n---\n{}", vs("prod", "ext", "[api.example.com]", "  - route:\n    - destination: {host: api.example.com}\n")),
            has: vec![],
            lacks: vec![Code::SubsetWithoutEndpoints, Code::HostWithoutEndpoints],
        },
        Row {
            name: "a NONE ServiceEntry without endpoints: no IST0173 without a subset, but weir serve has no address (WEIR006)",
            text: format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext, namespace: prod}}\nspec:\n  hosts: [api.example.com]\n  ports: [{{number: 80, name: http}}]\n  resolution: NONE\n---\n{}", vs("prod", "ext", "[api.example.com]", "  - route:\n    - destination: {host: api.example.com}\n")),
            has: vec![(Code::HostWithoutEndpoints, Severity::Error)],
            lacks: vec![Code::SubsetWithoutEndpoints],
        },
        Row {
            name: "a destination covered by a wildcard ServiceEntry host has endpoints",
            text: format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext, namespace: prod}}\nspec:\n  hosts: ['*.example.com']\n  ports: [{{number: 80, name: http}}]\n  resolution: DNS\n---\n{}", vs("prod", "ext", "[api.example.com]", "  - route:\n    - destination: {host: api.example.com}\n")),
            has: vec![],
            lacks: vec![Code::SubsetWithoutEndpoints, Code::HostWithoutEndpoints],
        },
    ]
}

#[test]
fn istio_and_envoy_semantics() {
    let mut failures = Vec::new();
    for row in rows() {
        let c = validate(
            &[ConfigSource::new("t.yaml", row.text.as_str())],
            None,
            GuardOptions::default(),
        );
        for (code, sev) in &row.has {
            if !c
                .findings
                .0
                .iter()
                .any(|f| f.code == *code && f.severity == *sev)
            {
                failures.push(format!(
                    "{}: no {sev:?} {code:?}:\n{}",
                    row.name, c.findings
                ));
            }
        }
        for code in &row.lacks {
            if c.findings.contains(*code) {
                failures.push(format!(
                    "{}: unexpected {code:?}:\n{}",
                    row.name, c.findings
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn ist0109_message_names_the_other_virtual_service_as_namespace_name() {
    let text = format!(
        "{SE}{}---\n{}",
        vs("prod", "a", "[ratings]", TO_V1),
        vs("prod", "b", "[ratings]", TO_V1)
    );
    let c = validate(
        &[ConfigSource::new("t.yaml", text)],
        None,
        GuardOptions::default(),
    );
    let f = c
        .findings
        .errors()
        .find(|f| f.code == Code::ConflictingHosts)
        .expect("IST0109");
    assert!(f.message.contains("prod/a"), "{f}");
}

fn route(text: &str, url: &str) -> Option<String> {
    let c = validate(
        &[ConfigSource::new("t.yaml", text)],
        None,
        GuardOptions {
            hosts: HostMode::Endpoints,
            ..GuardOptions::default()
        },
    );
    assert!(!c.findings.has_errors(), "{}", c.findings);
    let table = c.table.unwrap();
    let uri: Uri = url.parse().unwrap();
    let headers = HeaderMap::new();
    let head = RequestHead::new(&Method::GET, &uri, &headers);
    table
        .decide(&head, 0)
        .ok()
        .map(|d| d.cluster.endpoints[0].authority.clone())
}

#[test]
fn a_host_with_a_trailing_dot_routes() {
    let text = format!("{SE}{}", vs("prod", "svc", "[svc]", TO_V1));
    assert_eq!(
        route(&text, "http://svc.prod.svc.cluster.local./pay").as_deref(),
        Some("127.0.0.1:9001")
    );
    assert_eq!(
        route(&text, "http://svc./pay").as_deref(),
        Some("127.0.0.1:9001")
    );
}

#[test]
fn a_lone_destination_with_weight_0_takes_all_traffic() {
    let text = format!(
        "{SE}{}",
        vs(
            "prod",
            "svc",
            "[svc]",
            "  - route:\n    - destination: {host: svc, subset: v2}\n      weight: 0\n"
        )
        .replace("weir.dev/stable-subset: v1", "weir.dev/stable-subset: v2")
    );
    for value in [0, 1, 99, u64::MAX] {
        let c = validate(
            &[ConfigSource::new("t.yaml", text.as_str())],
            None,
            GuardOptions::default(),
        );
        let table = c.table.unwrap();
        let uri: Uri = "http://svc/".parse().unwrap();
        let headers = HeaderMap::new();
        let d = table
            .decide(&RequestHead::new(&Method::GET, &uri, &headers), value)
            .expect("routed");
        assert_eq!(d.destination.subset.as_deref(), Some("v2"));
    }
}

#[test]
fn a_dns_service_entry_without_endpoints_routes_to_the_host_itself() {
    let text = format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext, namespace: prod}}\nspec:\n  hosts: ['*.example.com']\n  ports: [{{number: 80, name: http}}]\n  resolution: DNS\n---\n{}", vs("prod", "ext", "[api.example.com]", "  - route:\n    - destination: {host: api.example.com}\n")).replace(", annotations: {weir.dev/stable-subset: v1}", "");
    assert_eq!(
        route(&text, "http://api.example.com/").as_deref(),
        Some("api.example.com:80")
    );
}
