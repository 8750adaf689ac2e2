//! Istio YAML -> validated [`RouteTable`]: parsing, resolution of subsets to endpoints, matcher
//! compilation, and every structural finding. Weight guards live in [`crate::guard`].

mod cluster;
mod destination_rule;
mod document;
mod names;
mod policy;
mod reachability;
mod request_match;
mod rule;
mod service_entry;
mod virtual_service;

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::finding::{Code, Finding, Findings, Location};
use crate::raw::*;
use crate::source::ConfigSource;
use crate::table::*;
use crate::yaml::{self, Document};

use destination_rule::SubsetDef;
use document::read_document;
pub(crate) use names::fqdn;
use names::{fqdn_namespace, host_keys, namespace, service_fqdn};
pub use policy::istio_default_retries;
use service_entry::{Resolution, ServiceEndpoints};

/// The API versions of `networking.istio.io` weir reads.
pub const API_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// Annotation keys weir reads on a VirtualService.
pub mod annotations {
    /// `strict` (weights sum to 100) or `relative` (weight / sum).
    pub const WEIGHT_POLICY: &str = "weir.dev/weight-policy";
    /// The stable subset's name.
    pub const STABLE_SUBSET: &str = "weir.dev/stable-subset";
    /// Largest canary increase per change, in percentage points.
    pub const MAX_STEP: &str = "weir.dev/max-step";
    /// `header:<name>` or `cookie:<name>`: session affinity across versions.
    pub const STICKY: &str = "weir.dev/sticky";
    /// `"true"`: this config deliberately gives a canary the majority (a promotion).
    pub const PROMOTION: &str = "weir.dev/promotion";
}

/// Default for `weir.dev/max-step`, in percentage points.
pub const DEFAULT_MAX_STEP: u32 = 50;

/// The result of compiling config sources: a table when the sources could be compiled at all,
/// and every finding. A table that comes with error findings must not be served.
#[derive(Debug)]
pub struct Compiled {
    /// The table, if compilation got that far.
    pub table: Option<RouteTable>,
    /// Everything found, errors and warnings.
    pub findings: Findings,
}

struct Located<T> {
    raw: RawResource<T>,
    doc: Document,
}

#[derive(Default)]
struct Resources {
    virtual_services: Vec<Located<RawVirtualService>>,
    destination_rules: Vec<Located<RawDestinationRule>>,
    service_entries: Vec<Located<RawServiceEntry>>,
}

/// How a destination host that no ServiceEntry defines is judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HostMode {
    /// Every destination host needs endpoints from a ServiceEntry: what `weir serve` and every
    /// [`LiveTable`](crate::LiveTable) need, since they must send bytes somewhere. The default.
    #[default]
    Endpoints,
    /// Cluster mode (`weir validate`, `weir explain`): a host without a ServiceEntry is a
    /// Kubernetes Service (`name`, `name.namespace`, `name.namespace.svc.cluster.local`,
    /// resolved against the VirtualService's namespace), reported as a warning at most. Its
    /// endpoints are unknown, so a table compiled in this mode is for checking, not serving.
    Cluster,
}

/// Compiles config sources into a table, reporting every structural finding. Every destination
/// host needs a ServiceEntry ([`HostMode::Endpoints`]).
pub fn compile(sources: &[ConfigSource]) -> Compiled {
    compile_with(sources, HostMode::Endpoints)
}

/// Compiles config sources, judging hosts without a ServiceEntry as `hosts` says.
pub fn compile_with(sources: &[ConfigSource], hosts: HostMode) -> Compiled {
    let mut findings = Vec::new();
    let mut resources = Resources::default();
    for source in sources {
        match yaml::parse_stream(&source.name, &source.text) {
            Ok(docs) => {
                for doc in docs {
                    read_document(doc, &mut resources, &mut findings);
                }
            }
            Err(f) => findings.push(f),
        }
    }
    let table = match over_counts(&resources, &yaml::limits()) {
        Some(f) => {
            findings.push(f);
            None
        }
        None => Compiler::new(sources, &mut findings, hosts).build(&resources),
    };
    let mut findings = Findings(findings);
    findings.sort();
    Compiled { table, findings }
}

/// The first VirtualService that takes the config over the limits on rules or hosts
/// ([`yaml::Limits`]): compiling is not attempted past them.
fn over_counts(resources: &Resources, limits: &yaml::Limits) -> Option<Finding> {
    let (mut rules, mut hosts) = (0usize, 0usize);
    let entries = resources
        .service_entries
        .iter()
        .map(|se| (se.raw.spec.hosts.len(), 0, &se.doc));
    let services = resources
        .virtual_services
        .iter()
        .map(|vs| (vs.raw.spec.hosts.len(), vs.raw.spec.http.len(), &vs.doc));
    for (h, r, doc) in entries.chain(services) {
        hosts += h;
        rules += r;
        let over = if rules > limits.max_rules {
            Some((
                format!("more than {} HTTP rules", limits.max_rules),
                "--max-config-rules",
            ))
        } else if hosts > limits.max_hosts {
            Some((
                format!("more than {} hosts", limits.max_hosts),
                "--max-config-hosts",
            ))
        } else {
            None
        };
        if let Some((what, flag)) = over {
            return Some(Finding::error(
                Code::ConfigTooLarge,
                doc.location(""),
                format!("{what} in the config: split it, or raise the limit with `{flag}`"),
            ));
        }
    }
    None
}

// === Compiler ===

struct Compiler<'a> {
    sources: &'a [ConfigSource],
    findings: &'a mut Vec<Finding>,
    /// Literal ServiceEntry host -> endpoints.
    services: HashMap<String, ServiceEndpoints>,
    /// Wildcard ServiceEntry hosts (`*.example.com` as `.example.com`) -> endpoints.
    wildcard_services: Vec<(String, ServiceEndpoints)>,
    /// FQDN -> (host-level load balancer, subset name -> definition), from DestinationRules.
    rules: HashMap<String, (LoadBalancer, BTreeMap<String, SubsetDef>)>,
    /// FQDN -> `namespace/name` of the DestinationRule that defines it, for messages.
    rule_owners: HashMap<String, String>,
    clusters: Vec<Cluster>,
    /// ServiceEntry `addresses`.
    service_addresses: Vec<ServiceAddress>,
    /// ServiceEntry ports of protocols other than HTTP and gRPC.
    opaque_ports: Vec<u16>,
    cluster_index: HashMap<(String, Option<String>), usize>,
    /// Clusters whose host or subset could not be resolved (an error was reported).
    failed: HashSet<usize>,
    /// Hosts already reported once (cluster mode, literal ServiceEntry hosts).
    reported_hosts: HashSet<String>,
    hosts: HostMode,
    /// Set when a condition of the match item being compiled was dropped for an error, so
    /// that a broken item is not mistaken for a catch-all.
    dropped_condition: bool,
    /// Whether the sources had YAML errors (then a missing VirtualService is no news).
    yaml_errors: bool,
}

impl<'a> Compiler<'a> {
    fn new(sources: &'a [ConfigSource], findings: &'a mut Vec<Finding>, hosts: HostMode) -> Self {
        let yaml_errors = findings.iter().any(|f| f.code == Code::YamlSyntax);
        Compiler {
            sources,
            findings,
            services: HashMap::new(),
            wildcard_services: Vec::new(),
            rules: HashMap::new(),
            rule_owners: HashMap::new(),
            clusters: Vec::new(),
            service_addresses: Vec::new(),
            opaque_ports: Vec::new(),
            cluster_index: HashMap::new(),
            failed: HashSet::new(),
            reported_hosts: HashSet::new(),
            hosts,
            dropped_condition: false,
            yaml_errors,
        }
    }

    fn build(mut self, res: &Resources) -> Option<RouteTable> {
        for se in &res.service_entries {
            self.service_entry(se);
        }
        for dr in &res.destination_rules {
            self.destination_rule(dr);
        }
        self.overlapping_subsets();
        if res.virtual_services.is_empty() && !self.yaml_errors {
            let file = self
                .sources
                .first()
                .map(|s| s.name.clone())
                .unwrap_or_else(|| "<no file>".into());
            self.findings.push(Finding::error(
                Code::NoVirtualService,
                Location::origin(file, ""),
                "the config holds no VirtualService, so nothing would be routed: add one",
            ));
        }
        let mut virtual_services = Vec::new();
        let mut host_index: HashMap<String, usize, HostHasher> = HashMap::default();
        let mut wildcard_hosts = Vec::new();
        // FQDN (or wildcard as written) -> the VirtualService that claimed it first.
        let mut claimed: HashMap<String, usize> = HashMap::new();
        for located in &res.virtual_services {
            let vs = self.virtual_service(located);
            let i = virtual_services.len();
            for (h, host) in vs.hosts.iter().enumerate() {
                let host = host.to_ascii_lowercase();
                let host = host.trim_end_matches('.').to_string();
                let loc = || located.doc.location(&format!("spec.hosts[{h}]"));
                // IST0109 compares hosts resolved in each VirtualService's namespace:
                // `ratings` in two namespaces are two services.
                let full = if host.starts_with('*') {
                    host.clone()
                } else {
                    service_fqdn(&host, &vs.namespace)
                };
                match claimed.get(&full) {
                    Some(&other) if other != i => {
                        let other: &VirtualService = &virtual_services[other];
                        self.findings.push(Finding::error(
                            Code::ConflictingHosts,
                            loc(),
                            format!(
                                "host {host:?} ({full}) is already served by VirtualService {}: merge the two or give them different hosts",
                                other.key()
                            ),
                        ));
                        continue;
                    }
                    Some(_) => continue,
                    None => {
                        claimed.insert(full, i);
                    }
                }
                if host == "*" {
                    wildcard_hosts.push((String::new(), i));
                    continue;
                }
                if let Some(suffix) = host.strip_prefix('*') {
                    wildcard_hosts.push((suffix.to_string(), i));
                    continue;
                }
                for key in host_keys(&host, &vs.namespace) {
                    match host_index.get(&key) {
                        Some(&other) if other != i => {
                            // A bare Host weir cannot attribute to one namespace: the first
                            // VirtualService keeps it. Not IST0109: Istio resolves the
                            // caller's namespace, which a name alone does not carry.
                            if key == host && self.reported_hosts.insert(format!("bare {key}")) {
                                let other: &VirtualService = &virtual_services[other];
                                self.findings.push(Finding::warning(
                                    Code::InvalidValue,
                                    loc(),
                                    format!(
                                        "a request with the bare Host {key:?} could mean VirtualService {} or {}/{}: weir routes it to {}. Callers should use {key}.<namespace>",
                                        other.key(),
                                        vs.namespace,
                                        vs.name,
                                        other.key()
                                    ),
                                ));
                            }
                        }
                        Some(_) => {}
                        None => {
                            host_index.insert(key, i);
                        }
                    }
                }
            }
            self.unknown_vs_hosts(&vs, located);
            virtual_services.push(vs);
        }
        // Longest wildcard suffix first, `*` last.
        wildcard_hosts.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Some(RouteTable {
            generation: 0,
            virtual_services,
            host_index: HostIndex::new(host_index),
            wildcard_hosts,
            clusters: self.clusters,
            sources: self.sources.to_vec().into(),
            service_addresses: self.service_addresses,
            opaque_ports: self.opaque_ports,
        })
    }

    /// A VirtualService host that no ServiceEntry or DestinationRule of the input names: if no
    /// Kubernetes Service has that name either, callers never reach the route (a cause of
    /// "v2 gets 0%"). Only when the input describes services at all.
    fn unknown_vs_hosts(&mut self, vs: &VirtualService, located: &Located<RawVirtualService>) {
        if self.services.is_empty() && self.rules.is_empty() && self.wildcard_services.is_empty() {
            return;
        }
        for (h, host) in vs.hosts.iter().enumerate() {
            if host.starts_with('*') {
                continue;
            }
            let full = service_fqdn(host, &vs.namespace);
            let written = host.to_ascii_lowercase();
            let known = self.services.contains_key(&full)
                || self.services.contains_key(&written)
                || self.rules.contains_key(&full)
                || self
                    .wildcard_services
                    .iter()
                    .any(|(suffix, _)| full.ends_with(suffix.as_str()));
            if !known {
                self.findings.push(Finding::warning(
                    Code::HostWithoutEndpoints,
                    located.doc.location(&format!("spec.hosts[{h}]")),
                    format!(
                        "VirtualService {} serves host {host:?} ({full}), which no ServiceEntry or DestinationRule of the input names: unless a Kubernetes Service has that name, no caller's request carries it and the route's weights apply to nothing. Check the host's spelling and namespace",
                        vs.key()
                    ),
                ));
            }
        }
    }
}
