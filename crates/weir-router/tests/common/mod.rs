//! Config builders shared by the router's tests.
#![allow(dead_code)]

use weir_router::{Compiled, ConfigSource, GuardOptions, RouteTable};

/// ServiceEntry + DestinationRule for host `svc` with subsets v1, v2, v3 on loopback ports.
pub const SERVICE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: prod}
spec:
  hosts: [svc.prod.svc.cluster.local]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 9001}, labels: {app: svc, version: v1}}
  - {address: 127.0.0.1, ports: {http: 9002}, labels: {app: svc, version: v2}}
  - {address: 127.0.0.1, ports: {http: 9003}, labels: {app: svc, version: v3}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc, namespace: prod}
spec:
  host: svc
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"#;

/// A VirtualService for `svc` with the given annotations block (may be empty) and `http:` body
/// (indented by two spaces, list items at `  - `).
pub fn vs(annotations: &str, http: &str) -> String {
    format!(
        "{SERVICE}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: svc\n  namespace: prod\n  annotations: {{{annotations}}}\nspec:\n  hosts: [svc]\n  http:\n{http}"
    )
}

/// A split rule `v1: a, v2: b` (no match).
pub fn split(a: i64, b: i64) -> String {
    format!(
        "  - name: split\n    route:\n    - destination: {{host: svc, subset: v1}}\n      weight: {a}\n    - destination: {{host: svc, subset: v2}}\n      weight: {b}\n"
    )
}

pub fn compile(text: &str) -> Compiled {
    weir_router::validate(
        &[ConfigSource::new("test.yaml", text)],
        None,
        GuardOptions::default(),
    )
}

pub fn compile_against(text: &str, previous: &RouteTable) -> Compiled {
    weir_router::validate(
        &[ConfigSource::new("test.yaml", text)],
        Some(previous),
        GuardOptions::default(),
    )
}

/// Whether the findings are exactly the warning that recommends `weir.dev/stable-subset`
/// (a VirtualService without the annotation, whose stable subset is the lowest version).
pub fn only_stable_subset_warning(c: &Compiled) -> bool {
    c.findings.0.len() == 1
        && !c.findings.has_errors()
        && c.findings.0[0].message.contains("names no stable subset")
}

/// A table that must compile cleanly (warnings allowed).
pub fn table(text: &str) -> RouteTable {
    let c = compile(text);
    assert!(
        !c.findings.has_errors(),
        "unexpected errors:\n{}",
        c.findings
    );
    c.table.expect("a table")
}
