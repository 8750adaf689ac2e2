//! Host + subset -> [`Cluster`]: endpoints, load balancer and metric labels.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::finding::{Code, Finding, Location};
use crate::table::*;

impl Compiler<'_> {
    /// The cluster for a host and subset, created on first use. Always returns a cluster, so
    /// that the rule keeps every destination for the weight guard; the flag says that the host
    /// or the subset could not be resolved (an error was reported, and the cluster has no
    /// endpoints).
    pub(super) fn cluster(
        &mut self,
        host: &str,
        subset: Option<&str>,
        ns: &str,
        loc: Location,
    ) -> (usize, bool) {
        let service_key = service_fqdn(host, ns);
        let key = (service_key.clone(), subset.map(str::to_string));
        if let Some(&i) = self.cluster_index.get(&key) {
            return (i, self.failed.contains(&i));
        }
        let service = self.service_for(host, &service_key, ns, &loc);
        let known = service.is_some();
        let mut failed = false;
        let service = match service {
            Some(s) => s,
            None if self.hosts == HostMode::Cluster => {
                self.kubernetes_service(host, &service_key, ns, loc.clone());
                ServiceEndpoints {
                    endpoints: Vec::new(),
                    protocol: UpstreamProtocol::Http1,
                    resolution: Resolution::Static,
                    port: None,
                    namespace: ns.to_string(),
                }
            }
            None => {
                self.findings.push(Finding::error(
                    Code::HostWithoutEndpoints,
                    loc.clone(),
                    format!(
                        "host {host:?} ({service_key}) has no endpoints: weir serve sends traffic only to endpoints a ServiceEntry lists. Add a ServiceEntry with `hosts: [{service_key}]` and `endpoints` (address, ports, labels); `weir validate` without --strict-hosts takes it as a Kubernetes Service"
                    ),
                ));
                failed = true;
                ServiceEndpoints {
                    endpoints: Vec::new(),
                    protocol: UpstreamProtocol::Http1,
                    resolution: Resolution::Static,
                    port: None,
                    namespace: ns.to_string(),
                }
            }
        };
        if known && subset.is_none() && service.endpoints.is_empty() {
            failed |= self.host_without_endpoints(host, &service, loc.clone());
        }
        let (host_lb, subsets) = match self.rules.get(&service_key) {
            Some((lb, s)) => (lb.clone(), Some(s)),
            None => (LoadBalancer::LeastRequest, None),
        };
        let (endpoints, lb, version, selector) = match subset {
            None => (service.endpoints.clone(), host_lb, None, BTreeMap::new()),
            Some(name) => match subsets.and_then(|s| s.get(name)) {
                Some(def) => {
                    let eps: Vec<Endpoint> = service
                        .endpoints
                        .iter()
                        .filter(|e| def.labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
                        .cloned()
                        .collect();
                    let version = def
                        .labels
                        .get("version")
                        .cloned()
                        .unwrap_or(name.to_string());
                    (
                        eps,
                        def.load_balancer.clone(),
                        Some(version),
                        def.labels.clone(),
                    )
                }
                // Cluster mode without any DestinationRule for the host in the input: the
                // subsets live in the cluster, and the host's warning says they are unchecked.
                None if !known && subsets.is_none() && self.hosts == HostMode::Cluster => {
                    (Vec::new(), host_lb, Some(name.to_string()), BTreeMap::new())
                }
                None => {
                    let known_subsets: Vec<String> = subsets
                        .map(|s| s.keys().cloned().collect())
                        .unwrap_or_default();
                    let hint = if known_subsets.is_empty() {
                        self.missing_rule_hint(host, &service_key)
                    } else {
                        format!("defined subsets are {}", known_subsets.join(", "))
                    };
                    self.findings.push(Finding::error(
                        Code::UndefinedSubset,
                        loc,
                        format!("subset {name:?} of host {host:?} is not defined: {hint}"),
                    ));
                    failed = true;
                    (Vec::new(), host_lb, Some(name.to_string()), BTreeMap::new())
                }
            },
        };
        let key_fqdn = fqdn(host, ns);
        let short = host.split('.').next().unwrap_or(host).to_string();
        let version_label: Arc<str> = version.clone().unwrap_or_else(|| "unknown".into()).into();
        let app = common_label(&endpoints, "app");
        let canonical_service: Arc<str> = common_label(&endpoints, CANONICAL_NAME)
            .or_else(|| app.clone())
            .unwrap_or_else(|| short.clone())
            .into();
        let canonical_revision: Arc<str> = common_label(&endpoints, CANONICAL_REVISION)
            .or_else(|| version.clone())
            .unwrap_or_else(|| "latest".into())
            .into();
        let named_workload = common_label(&endpoints, WORKLOAD_NAME);
        let workload: Arc<str> = match (named_workload, &app, &version) {
            (Some(name), _, _) => name.into(),
            (None, Some(app), Some(v)) => format!("{app}-{v}").into(),
            (None, Some(app), None) => app.clone().into(),
            (None, None, Some(_)) => format!("{short}-{}", subset.unwrap_or("")).into(),
            (None, None, None) => short.clone().into(),
        };
        let labels = ClusterLabels {
            destination_service: key_fqdn.clone().into(),
            destination_service_name: short.into(),
            destination_service_namespace: fqdn_namespace(&key_fqdn, ns).into(),
            destination_workload: workload,
            destination_version: version_label,
            destination_app: app.unwrap_or_else(|| "unknown".into()).into(),
            destination_canonical_service: canonical_service,
            destination_canonical_revision: canonical_revision,
        };
        let i = self.clusters.len();
        self.clusters.push(Cluster {
            host: host.to_string(),
            subset: subset.map(str::to_string),
            endpoints,
            selector,
            load_balancer: lb,
            protocol: service.protocol,
            labels: Arc::new(labels),
            known: known && !failed,
        });
        self.cluster_index.insert(key, i);
        if failed {
            self.failed.insert(i);
        }
        (i, failed)
    }

    /// What the ServiceEntries say about a destination host: its FQDN, then the name as
    /// written (weir's leniency, with a warning: Istio takes ServiceEntry hosts literally and
    /// would not find a short name), then the longest wildcard host that covers it.
    fn service_for(
        &mut self,
        host: &str,
        service_key: &str,
        ns: &str,
        loc: &Location,
    ) -> Option<ServiceEndpoints> {
        if let Some(s) = self.services.get(service_key) {
            return Some(s.clone());
        }
        let written = host.to_ascii_lowercase().trim_end_matches('.').to_string();
        if let Some(s) = self.services.get(&written) {
            let s = s.clone();
            if written != service_key && self.reported_hosts.insert(format!("literal {written}")) {
                self.findings.push(Finding::warning(
                    Code::HostWithoutEndpoints,
                    loc.clone(),
                    format!(
                        "ServiceEntry host {written:?} (namespace {}) is literal in Istio: a destination {host:?} in namespace {ns} means {service_key}, which Istio would not find (istio/istio#36864). weir routes it; write `{service_key}` in the ServiceEntry's hosts to match Istio",
                        s.namespace
                    ),
                ));
            }
            return Some(s);
        }
        let mut best: Option<&(String, ServiceEndpoints)> = None;
        for entry in &self.wildcard_services {
            let covers =
                service_key.ends_with(entry.0.as_str()) || written.ends_with(entry.0.as_str());
            if covers && best.is_none_or(|b| entry.0.len() > b.0.len()) {
                best = Some(entry);
            }
        }
        let (_, service) = best?;
        let mut service = service.clone();
        if service.endpoints.is_empty()
            && service.resolution == Resolution::Dns
            && let Some(port) = service.port
        {
            service.endpoints.push(Endpoint {
                authority: format!("{written}:{port}"),
                addr: None,
                labels: BTreeMap::new(),
            });
        }
        Some(service)
    }

    /// A ServiceEntry host without endpoints, routed to without a subset. Not IST0173 (a
    /// subset code): Istio forwards `resolution: NONE` to the caller's original destination and
    /// resolves a DNS host itself. weir serve can do neither without an address, so serving
    /// refuses it; cluster mode only says so. Returns whether it refused.
    fn host_without_endpoints(
        &mut self,
        host: &str,
        service: &ServiceEndpoints,
        loc: Location,
    ) -> bool {
        let why = match service.resolution {
            Resolution::None => {
                "its ServiceEntry has `resolution: NONE` (Istio forwards to the caller's original destination address, which weir serve does not see)"
            }
            Resolution::Dns => "its DNS ServiceEntry has no port to resolve the host on",
            Resolution::Static => "its ServiceEntry is STATIC and lists no endpoints",
        };
        let message = format!(
            "host {host:?} has no endpoint weir serve can send to: {why}. List `endpoints` (address, ports) in the ServiceEntry"
        );
        if self.hosts == HostMode::Cluster {
            self.findings
                .push(Finding::warning(Code::HostWithoutEndpoints, loc, message));
            false
        } else {
            self.findings
                .push(Finding::error(Code::HostWithoutEndpoints, loc, message));
            true
        }
    }

    /// Cluster mode: a host no ServiceEntry defines is a Kubernetes Service. Reported once per
    /// host, and only when the input does not describe it with a DestinationRule either.
    fn kubernetes_service(&mut self, host: &str, service_key: &str, ns: &str, loc: Location) {
        if self.rules.contains_key(service_key)
            || !self.reported_hosts.insert(service_key.to_string())
        {
            return;
        }
        let hint = self.missing_rule_hint(host, service_key);
        self.findings.push(Finding::warning(
            Code::HostWithoutEndpoints,
            loc,
            format!(
                "host {host:?} is taken as the Kubernetes Service {service_key} (no ServiceEntry in the input; cluster mode, as seen from namespace {ns}); its subsets are not checked: {hint}. `weir serve` needs a ServiceEntry with endpoints; --strict-hosts makes this an error"
            ),
        ));
    }

    /// Why no DestinationRule defines a host's subsets, naming one in another namespace if the
    /// input has it.
    fn missing_rule_hint(&self, host: &str, service_key: &str) -> String {
        let short = service_key.split('.').next().unwrap_or(service_key);
        let elsewhere = self
            .rule_owners
            .iter()
            .filter(|(k, _)| k.as_str() != service_key && k.split('.').next() == Some(short))
            .map(|(k, owner)| (k.clone(), owner.clone()))
            .min();
        match elsewhere {
            Some((other, owner)) => format!(
                "DestinationRule {owner} defines host {other}, not {service_key}: a short host in a DestinationRule is resolved in the DestinationRule's own namespace. Move it to this namespace or write `host: {service_key}`"
            ),
            None => format!(
                "no DestinationRule for host {host:?} is in the input: add one with its subsets"
            ),
        }
    }
}

/// Istio's workload-name label: the Deployment (or other owner) an endpoint belongs to, what
/// its peer metadata would report as `destination_workload`.
const WORKLOAD_NAME: &str = "service.istio.io/workload-name";
/// Istio's canonical service label.
const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
/// Istio's canonical revision label.
const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

fn common_label(endpoints: &[Endpoint], key: &str) -> Option<String> {
    let first = endpoints.first()?.labels.get(key)?;
    endpoints
        .iter()
        .all(|e| e.labels.get(key) == Some(first))
        .then(|| first.clone())
}
