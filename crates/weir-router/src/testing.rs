//! Config fixtures for tests (feature `testing`): one service with `STATIC` endpoints on
//! loopback, an optional DestinationRule and a VirtualService, written as the Istio YAML a user
//! would write, so that tests of this crate and of the crates built on it go through the same
//! parser and validator as real configs.
//!
//! ```
//! use weir_router::testing::ServiceFixture;
//!
//! let live = ServiceFixture::new("svc")
//!     .endpoints([1001, 1002], Some("v1"))
//!     .subset("v1")
//!     .load_balancer("{simple: LEAST_REQUEST}")
//!     .live();
//! assert_eq!(live.load().clusters()[0].endpoints.len(), 2);
//! ```

use crate::{Compiled, ConfigSource, LiveTable};

/// One service (`ServiceEntry` + optional `DestinationRule` + `VirtualService`), built up and
/// written as YAML.
#[derive(Clone, Debug)]
pub struct ServiceFixture {
    host: String,
    endpoints: Vec<String>,
    load_balancer: Option<String>,
    subsets: Vec<String>,
    rules: Vec<String>,
}

impl ServiceFixture {
    /// A service named and reached as `host`, with no endpoint yet.
    pub fn new(host: &str) -> Self {
        ServiceFixture {
            host: host.to_string(),
            endpoints: Vec::new(),
            load_balancer: None,
            subsets: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// Adds endpoints `127.0.0.1:PORT`, labelled `version: V` when `version` is given.
    pub fn endpoints(
        mut self,
        ports: impl IntoIterator<Item = u16>,
        version: Option<&str>,
    ) -> Self {
        let labels = version
            .map(|v| format!(", labels: {{version: {v}}}"))
            .unwrap_or_default();
        for port in ports {
            self.endpoints.push(format!(
                "{{address: 127.0.0.1, ports: {{http: {port}}}{labels}}}"
            ));
        }
        self
    }

    /// The DestinationRule's `trafficPolicy.loadBalancer`, in flow YAML
    /// (`{simple: ROUND_ROBIN}`).
    pub fn load_balancer(mut self, lb: &str) -> Self {
        self.load_balancer = Some(lb.to_string());
        self
    }

    /// A DestinationRule subset `name` selecting `version: NAME`.
    pub fn subset(mut self, name: &str) -> Self {
        self.subsets.push(name.to_string());
        self
    }

    /// A VirtualService `http` rule in flow YAML (`{match: [...], route: [...]}`), in order.
    /// Without any, one rule routes everything to the host (its first subset, if any).
    pub fn rule(mut self, rule: &str) -> Self {
        self.rules.push(rule.to_string());
        self
    }

    /// The config as a multi-document YAML stream.
    pub fn yaml(&self) -> String {
        let host = &self.host;
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| format!("  - {e}\n"))
            .collect::<String>();
        let mut yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {host}}}\nspec:\n  hosts: [{host}]\n  ports: [{{number: 80, name: http}}]\n  resolution: STATIC\n  endpoints:\n{endpoints}"
        );
        if self.load_balancer.is_some() || !self.subsets.is_empty() {
            yaml += &format!(
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {host}}}\nspec:\n  host: {host}\n"
            );
            if let Some(lb) = &self.load_balancer {
                yaml += &format!("  trafficPolicy: {{loadBalancer: {lb}}}\n");
            }
            if !self.subsets.is_empty() {
                yaml += "  subsets:\n";
                for s in &self.subsets {
                    yaml += &format!("  - {{name: {s}, labels: {{version: {s}}}}}\n");
                }
            }
        }
        let rules = if self.rules.is_empty() {
            let subset = self
                .subsets
                .first()
                .map(|s| format!(", subset: {s}"))
                .unwrap_or_default();
            vec![format!(
                "{{route: [{{destination: {{host: {host}{subset}}}}}]}}"
            )]
        } else {
            self.rules.clone()
        };
        yaml += &format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {host}}}\nspec:\n  hosts: [{host}]\n  http:\n"
        );
        for r in rules {
            yaml += &format!("  - {r}\n");
        }
        yaml
    }

    /// The config as one source named `HOST.yaml`.
    pub fn source(&self) -> ConfigSource {
        ConfigSource::new(format!("{}.yaml", self.host), self.yaml())
    }

    /// The validated table, live. Panics with the findings when the validator refuses it.
    pub fn live(&self) -> LiveTable {
        match LiveTable::from_sources(&[self.source()]) {
            Ok((live, _)) => live,
            Err(refused) => panic!("fixture refused:\n{}\n{}", refused.findings, self.yaml()),
        }
    }

    /// Compiled without the validator (for a config the guard would refuse, such as a subset
    /// without endpoints).
    pub fn compile(&self) -> Compiled {
        crate::compile(&[self.source()])
    }
}
