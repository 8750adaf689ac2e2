//! Istio YAML -> validated [`RouteTable`]: parsing, resolution of subsets to endpoints, matcher
//! compilation, and every structural finding. Weight guards live in [`crate::guard`].

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};

use crate::duration::parse_duration;
use crate::finding::{Code, Finding, Findings, Location};
use crate::matcher::{HeaderCondition, QueryCondition, RequestMatch, StringMatcher};
use crate::raw::*;
use crate::source::ConfigSource;
use crate::table::*;
use crate::yaml::{self, Document};

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

/// Compiles config sources into a table, reporting every structural finding.
pub fn compile(sources: &[ConfigSource]) -> Compiled {
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
    let table = Compiler::new(sources, &mut findings).build(&resources);
    let mut findings = Findings(findings);
    findings.sort();
    Compiled { table, findings }
}

fn read_document(doc: Document, out: &mut Resources, findings: &mut Vec<Finding>) {
    let kind = doc.str_field("kind").unwrap_or("").to_string();
    if kind == "List" || kind.ends_with("List") {
        for item in doc.list_items() {
            read_document(item, out, findings);
        }
        return;
    }
    let api = doc.str_field("apiVersion").unwrap_or("");
    let known = matches!(
        kind.as_str(),
        "VirtualService" | "DestinationRule" | "ServiceEntry"
    );
    if !known {
        let what = if kind.is_empty() {
            "a document without `kind`".to_string()
        } else {
            format!("kind {kind:?} ({api})")
        };
        findings.push(Finding::warning(
            Code::UnknownKind,
            doc.location("kind"),
            format!(
                "{what} is ignored: weir reads VirtualService, DestinationRule and ServiceEntry"
            ),
        ));
        return;
    }
    if !API_VERSIONS.contains(&api) {
        findings.push(Finding::warning(
            Code::InvalidValue,
            doc.location("apiVersion"),
            format!(
                "apiVersion {api:?} is not one weir knows; read as networking.istio.io/v1 (use one of {})",
                API_VERSIONS.join(", ")
            ),
        ));
    }
    let mut ignored = Vec::new();
    macro_rules! read {
        ($list:ident) => {
            match doc.deserialize(&mut |p| ignored.push(p)) {
                Ok(raw) => out.$list.push(Located {
                    raw,
                    doc: doc.clone(),
                }),
                Err(f) => findings.push(f),
            }
        };
    }
    match kind.as_str() {
        "VirtualService" => read!(virtual_services),
        "DestinationRule" => read!(destination_rules),
        _ => read!(service_entries),
    }
    for path in ignored {
        findings.push(Finding::warning(
            Code::NotActedOn,
            doc.location(&path),
            format!("`{path}` is read but weir does not act on it; traffic is routed as if it were absent"),
        ));
    }
}

// === Compiler ===

struct ServiceEndpoints {
    endpoints: Vec<Endpoint>,
    protocol: UpstreamProtocol,
}

struct SubsetDef {
    labels: BTreeMap<String, String>,
    load_balancer: LoadBalancer,
}

struct Compiler<'a> {
    sources: &'a [ConfigSource],
    findings: &'a mut Vec<Finding>,
    /// FQDN -> endpoints, from ServiceEntries.
    services: HashMap<String, ServiceEndpoints>,
    /// FQDN -> (host-level load balancer, subset name -> definition), from DestinationRules.
    rules: HashMap<String, (LoadBalancer, BTreeMap<String, SubsetDef>)>,
    clusters: Vec<Cluster>,
    cluster_index: HashMap<(String, Option<String>), usize>,
    /// Set when a condition of the match item being compiled was dropped for an error, so
    /// that a broken item is not mistaken for a catch-all.
    dropped_condition: bool,
    /// Whether the sources had YAML errors (then a missing VirtualService is no news).
    yaml_errors: bool,
}

impl<'a> Compiler<'a> {
    fn new(sources: &'a [ConfigSource], findings: &'a mut Vec<Finding>) -> Self {
        let yaml_errors = findings.iter().any(|f| f.code == Code::YamlSyntax);
        Compiler {
            sources,
            findings,
            services: HashMap::new(),
            rules: HashMap::new(),
            clusters: Vec::new(),
            cluster_index: HashMap::new(),
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
        for located in &res.virtual_services {
            let vs = self.virtual_service(located);
            let i = virtual_services.len();
            for (h, host) in vs.hosts.iter().enumerate() {
                let host = host.to_ascii_lowercase();
                if host == "*" {
                    wildcard_hosts.push((String::new(), i));
                    continue;
                }
                if let Some(suffix) = host.strip_prefix('*') {
                    wildcard_hosts.push((suffix.to_string(), i));
                    continue;
                }
                for key in host_keys(&host, &vs.namespace) {
                    let explicit = key == host;
                    match host_index.get(&key) {
                        Some(&other) if other != i && explicit => {
                            let other: &VirtualService = &virtual_services[other];
                            self.findings.push(Finding::error(
                                Code::ConflictingHosts,
                                located.doc.location(&format!("spec.hosts[{h}]")),
                                format!(
                                    "host {host:?} is already served by VirtualService {}: merge the two or give them different hosts",
                                    other.name
                                ),
                            ));
                        }
                        Some(_) => {}
                        None => {
                            host_index.insert(key, i);
                        }
                    }
                }
            }
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
        })
    }

    fn service_entry(&mut self, se: &Located<RawServiceEntry>) {
        let ns = namespace(&se.raw.metadata);
        let spec = &se.raw.spec;
        if let Some(res) = &spec.resolution
            && !matches!(res.as_str(), "STATIC" | "DNS" | "NONE" | "DNS_ROUND_ROBIN")
        {
            self.findings.push(Finding::error(
                Code::InvalidValue,
                se.doc.location("spec.resolution"),
                format!("resolution {res:?} is not STATIC, DNS, DNS_ROUND_ROBIN or NONE"),
            ));
        }
        let mut endpoints = Vec::new();
        for (i, ep) in spec.endpoints.iter().enumerate() {
            let port = endpoint_port(&spec.ports, ep);
            let Some(port) = port else {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    se.doc.location(&format!("spec.endpoints[{i}]")),
                    format!(
                        "endpoint {} has no port: give the ServiceEntry `ports` or the endpoint `ports: {{http: 8080}}`",
                        ep.address
                    ),
                ));
                continue;
            };
            let addr = IpAddr::from_str(&ep.address)
                .ok()
                .map(|ip| SocketAddr::new(ip, port));
            let authority = match addr {
                Some(a) => a.to_string(),
                None => format!("{}:{port}", ep.address),
            };
            endpoints.push(Endpoint {
                authority,
                addr,
                labels: ep.labels.clone(),
            });
        }
        let protocol = match spec
            .ports
            .iter()
            .find_map(|p| p.protocol.as_deref())
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("HTTP2" | "GRPC" | "GRPC-WEB") => UpstreamProtocol::Http2,
            _ => UpstreamProtocol::Http1,
        };
        for host in &spec.hosts {
            let entry = self
                .services
                .entry(fqdn(host, &ns))
                .or_insert_with(|| ServiceEndpoints {
                    endpoints: Vec::new(),
                    protocol,
                });
            entry.endpoints.extend(endpoints.iter().cloned());
        }
    }

    fn destination_rule(&mut self, dr: &Located<RawDestinationRule>) {
        let ns = namespace(&dr.raw.metadata);
        let spec = &dr.raw.spec;
        let host_lb = self.load_balancer(
            spec.traffic_policy.as_ref(),
            &dr.doc,
            "spec.trafficPolicy.loadBalancer",
        );
        let mut subsets = BTreeMap::new();
        for (i, s) in spec.subsets.iter().enumerate() {
            let lb = match &s.traffic_policy {
                Some(tp) if tp.load_balancer.is_some() => self.load_balancer(
                    Some(tp),
                    &dr.doc,
                    &format!("spec.subsets[{i}].trafficPolicy.loadBalancer"),
                ),
                _ => host_lb.clone(),
            };
            let def = SubsetDef {
                labels: s.labels.clone(),
                load_balancer: lb,
            };
            if subsets.insert(s.name.clone(), def).is_some() {
                self.findings.push(Finding::error(
                    Code::DuplicateSubset,
                    dr.doc.location(&format!("spec.subsets[{i}].name")),
                    format!(
                        "subset {:?} is defined twice in DestinationRule {}: rename or remove one",
                        s.name, dr.raw.metadata.name
                    ),
                ));
            }
        }
        let key = fqdn(&spec.host, &ns);
        if let Some((_, existing)) = self.rules.get_mut(&key) {
            for (name, def) in subsets {
                match existing.entry(name) {
                    std::collections::btree_map::Entry::Occupied(taken) => {
                        self.findings.push(Finding::error(
                            Code::DuplicateSubset,
                            dr.doc.location("spec.subsets"),
                            format!(
                                "subset {:?} of host {} is defined by two DestinationRules: keep one",
                                taken.key(),
                                spec.host
                            ),
                        ));
                    }
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(def);
                    }
                }
            }
        } else {
            self.rules.insert(key, (host_lb, subsets));
        }
    }

    fn load_balancer(
        &mut self,
        tp: Option<&RawTrafficPolicy>,
        doc: &Document,
        path: &str,
    ) -> LoadBalancer {
        let Some(lb) = tp.and_then(|tp| tp.load_balancer.as_ref()) else {
            return LoadBalancer::LeastRequest;
        };
        if let Some(ch) = &lb.consistent_hash {
            let key = if let Some(h) = &ch.http_header_name {
                match HeaderName::from_str(h) {
                    Ok(name) => Some(HashKey::Header(name)),
                    Err(_) => None,
                }
            } else if let Some(c) = &ch.http_cookie {
                Some(HashKey::Cookie(c.name.clone()))
            } else if ch.use_source_ip == Some(true) {
                Some(HashKey::SourceIp)
            } else {
                ch.http_query_parameter_name
                    .as_ref()
                    .map(|q| HashKey::QueryParameter(q.clone()))
            };
            return match key {
                Some(k) => LoadBalancer::ConsistentHash(k),
                None => {
                    self.findings.push(Finding::error(
                        Code::InvalidValue,
                        doc.location(&format!("{path}.consistentHash")),
                        "consistentHash needs httpHeaderName (a valid header name), httpCookie, useSourceIp or httpQueryParameterName",
                    ));
                    LoadBalancer::LeastRequest
                }
            };
        }
        match lb.simple.as_deref() {
            None | Some("LEAST_REQUEST") | Some("LEAST_CONN") | Some("UNSPECIFIED") => {
                LoadBalancer::LeastRequest
            }
            Some("ROUND_ROBIN") => LoadBalancer::RoundRobin,
            Some("RANDOM") => LoadBalancer::Random,
            Some("PASSTHROUGH") => LoadBalancer::Passthrough,
            Some(other) => {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    doc.location(&format!("{path}.simple")),
                    format!(
                        "load balancer {other:?} is not ROUND_ROBIN, LEAST_REQUEST, RANDOM or PASSTHROUGH"
                    ),
                ));
                LoadBalancer::LeastRequest
            }
        }
    }

    /// The cluster for a host and subset, created on first use; `None` (with a finding) when
    /// the host or the subset cannot be resolved.
    fn cluster(
        &mut self,
        host: &str,
        subset: Option<&str>,
        ns: &str,
        loc: Location,
    ) -> Option<usize> {
        let key = (fqdn(host, ns), subset.map(str::to_string));
        if let Some(&i) = self.cluster_index.get(&key) {
            return Some(i);
        }
        let Some(service) = self.services.get(&key.0) else {
            self.findings.push(Finding::error(
                Code::HostWithoutEndpoints,
                loc,
                format!(
                    "host {host:?} has no endpoints: add a ServiceEntry for it with `endpoints` (address, ports, labels)"
                ),
            ));
            return None;
        };
        let (host_lb, subsets) = match self.rules.get(&key.0) {
            Some((lb, s)) => (lb.clone(), Some(s)),
            None => (LoadBalancer::LeastRequest, None),
        };
        let (endpoints, lb, version, selector) = match subset {
            None => (service.endpoints.clone(), host_lb, None, BTreeMap::new()),
            Some(name) => {
                let Some(def) = subsets.and_then(|s| s.get(name)) else {
                    let known: Vec<&str> = subsets
                        .map(|s| s.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    let hint = if known.is_empty() {
                        format!("no DestinationRule for host {host:?} defines subsets: add one")
                    } else {
                        format!("defined subsets are {}", known.join(", "))
                    };
                    self.findings.push(Finding::error(
                        Code::UndefinedSubset,
                        loc,
                        format!("subset {name:?} of host {host:?} is not defined: {hint}"),
                    ));
                    return None;
                };
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
        };
        let short = host.split('.').next().unwrap_or(host).to_string();
        let version_label: Arc<str> = version.clone().unwrap_or_else(|| "unknown".into()).into();
        let app = common_label(&endpoints, "app");
        let workload: Arc<str> = match (&app, &version) {
            (Some(app), Some(v)) => format!("{app}-{v}").into(),
            (Some(app), None) => app.clone().into(),
            (None, Some(_)) => format!("{short}-{}", subset.unwrap_or("")).into(),
            (None, None) => short.clone().into(),
        };
        let labels = ClusterLabels {
            destination_service: key.0.clone().into(),
            destination_service_name: short.into(),
            destination_service_namespace: fqdn_namespace(&key.0, ns).into(),
            destination_workload: workload,
            destination_version: version_label,
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
        });
        self.cluster_index.insert(key, i);
        Some(i)
    }

    fn virtual_service(&mut self, located: &Located<RawVirtualService>) -> VirtualService {
        let meta = &located.raw.metadata;
        let doc = &located.doc;
        let ns = namespace(meta);
        let ann = &meta.annotations;
        let ann_loc = |key: &str| doc.location(&format!("metadata.annotations.{key}"));

        let policy = match ann.get(annotations::WEIGHT_POLICY).map(String::as_str) {
            None | Some("strict") => WeightPolicy::Strict,
            Some("relative") => WeightPolicy::Relative,
            Some(other) => {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    ann_loc(annotations::WEIGHT_POLICY),
                    format!("weight policy {other:?} is not `strict` or `relative`"),
                ));
                WeightPolicy::Strict
            }
        };
        let max_step = match ann.get(annotations::MAX_STEP) {
            None => DEFAULT_MAX_STEP,
            Some(v) => match v.trim().trim_end_matches('%').parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => {
                    self.findings.push(Finding::error(
                        Code::InvalidValue,
                        ann_loc(annotations::MAX_STEP),
                        format!("max-step {v:?} is not a whole number of percentage points from 1 to 100"),
                    ));
                    DEFAULT_MAX_STEP
                }
            },
        };
        let sticky = ann.get(annotations::STICKY).and_then(|v| {
            let parsed = match v.split_once(':') {
                Some(("header", name)) => HeaderName::from_str(name.trim())
                    .ok()
                    .map(StickyKey::Header),
                Some(("cookie", name)) if !name.trim().is_empty() => {
                    Some(StickyKey::Cookie(name.trim().to_string()))
                }
                _ => None,
            };
            if parsed.is_none() {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    ann_loc(annotations::STICKY),
                    format!("sticky key {v:?} is not `header:<name>` or `cookie:<name>`"),
                ));
            }
            parsed
        });
        let promotion = match ann.get(annotations::PROMOTION).map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    ann_loc(annotations::PROMOTION),
                    format!("promotion {other:?} is not \"true\" or \"false\""),
                ));
                false
            }
        };

        let spec = &located.raw.spec;
        if spec.hosts.is_empty() {
            self.findings.push(Finding::error(
                Code::InvalidValue,
                doc.location("spec.hosts"),
                format!(
                    "VirtualService {} has no hosts: list the hosts it serves under spec.hosts",
                    meta.name
                ),
            ));
        }
        if spec.http.is_empty() {
            self.findings.push(Finding::error(
                Code::InvalidValue,
                doc.location("spec"),
                format!(
                    "VirtualService {} has no http rules: add spec.http",
                    meta.name
                ),
            ));
        }
        let mut rules = Vec::new();
        for (i, raw) in spec.http.iter().enumerate() {
            rules.push(self.rule(i, raw, doc, &ns, policy));
        }
        self.unreachable_rules(&rules, doc);

        let stable_subset = match ann.get(annotations::STABLE_SUBSET) {
            Some(s) => {
                let used = rules
                    .iter()
                    .flat_map(|r| &r.destinations)
                    .any(|d| d.subset.as_deref() == Some(s.as_str()));
                if !used {
                    self.findings.push(Finding::error(
                        Code::InvalidValue,
                        ann_loc(annotations::STABLE_SUBSET),
                        format!("stable subset {s:?} is not a destination of any rule: name one of the route's subsets"),
                    ));
                }
                Some(s.clone())
            }
            None => rules
                .iter()
                .find(|r| r.destinations.len() > 1)
                .or_else(|| rules.last())
                .and_then(|r| r.destinations.first())
                .and_then(|d| d.subset.clone()),
        };
        VirtualService {
            name: meta.name.clone(),
            namespace: ns,
            hosts: spec.hosts.clone(),
            rules,
            policy,
            stable_subset,
            max_step,
            promotion,
            sticky,
            location: doc.location(""),
        }
    }

    fn rule(
        &mut self,
        index: usize,
        raw: &RawHttpRoute,
        doc: &Document,
        ns: &str,
        policy: WeightPolicy,
    ) -> Rule {
        let base = format!("spec.http[{index}]");
        let mut matches = Vec::new();
        let mut broken_match = false;
        for (j, m) in raw.matches.iter().enumerate() {
            self.dropped_condition = false;
            matches.push(self.request_match(m, doc, &format!("{base}.match[{j}]")));
            broken_match |= self.dropped_condition;
        }
        if raw.route.is_empty() {
            self.findings.push(Finding::error(
                Code::InvalidValue,
                doc.location(&base),
                format!("rule {index} has no `route`: weir forwards to route destinations (redirect and directResponse are not supported)"),
            ));
        }
        let single = raw.route.len() == 1;
        let mut destinations = Vec::new();
        let mut weights_written = Vec::new();
        let mut unresolved = false;
        for (j, rd) in raw.route.iter().enumerate() {
            let path = format!("{base}.route[{j}]");
            let weight_loc = if rd.weight.is_some() {
                doc.location(&format!("{path}.weight"))
            } else {
                doc.location(&format!("{path}.destination"))
            };
            let weight = match rd.weight {
                None if single => 100,
                None => 0,
                Some(w) if w < 0 => {
                    self.findings.push(Finding::error(
                        Code::NegativeWeight,
                        weight_loc.clone(),
                        format!(
                            "weight {w} of {} is negative: weights are 0 to 100",
                            subset_label(&rd.destination)
                        ),
                    ));
                    0
                }
                Some(w) if w > i64::from(u32::MAX) => {
                    self.findings.push(Finding::error(
                        Code::InvalidValue,
                        weight_loc.clone(),
                        format!("weight {w} is too large"),
                    ));
                    0
                }
                Some(w) => w as u32,
            };
            weights_written.push(rd.weight);
            let port = self.port(
                rd.destination.port.as_ref(),
                doc,
                &format!("{path}.destination.port"),
            );
            let cluster = self.cluster(
                &rd.destination.host,
                rd.destination.subset.as_deref(),
                ns,
                doc.location(&format!(
                    "{path}.destination.{}",
                    if rd.destination.subset.is_some() {
                        "subset"
                    } else {
                        "host"
                    }
                )),
            );
            let headers = self.header_edits(rd.headers.as_ref(), doc, &format!("{path}.headers"));
            if cluster.is_none() {
                unresolved = true;
            }
            if let Some(cluster) = cluster {
                destinations.push(Destination {
                    host: rd.destination.host.clone(),
                    subset: rd.destination.subset.clone(),
                    port,
                    weight,
                    cluster,
                    headers,
                    location: weight_loc,
                });
            }
        }
        if raw.route.len() > 1
            && weights_written.iter().all(Option::is_none)
            && policy == WeightPolicy::Strict
        {
            // Reported by the weight guard as a sum of 0; say why here too.
            self.findings.push(Finding::warning(
                Code::InvalidValue,
                doc.location(&format!("{base}.route")),
                "a route with several destinations and no weights gives every destination 0: write the weights",
            ));
        }
        let total_weight = destinations.iter().map(|d| u64::from(d.weight)).sum();

        let mut mirrors = Vec::new();
        if let Some(m) = &raw.mirror {
            let per_million = match (&raw.mirror_percentage, raw.mirror_percent) {
                (Some(p), _) => {
                    self.percentage(p.value, doc, &format!("{base}.mirrorPercentage.value"))
                }
                (None, Some(p)) => {
                    self.percentage(f64::from(p), doc, &format!("{base}.mirrorPercent"))
                }
                (None, None) => 1_000_000,
            };
            let loc = doc.location(&format!("{base}.mirror"));
            if let Some(c) = self.cluster(&m.host, m.subset.as_deref(), ns, loc) {
                mirrors.push(Mirror {
                    cluster: c,
                    per_million,
                });
            }
        }
        for (j, mp) in raw.mirrors.iter().enumerate() {
            let per_million = match &mp.percentage {
                Some(p) => self.percentage(
                    p.value,
                    doc,
                    &format!("{base}.mirrors[{j}].percentage.value"),
                ),
                None => 1_000_000,
            };
            let loc = doc.location(&format!("{base}.mirrors[{j}].destination"));
            if let Some(c) = self.cluster(
                &mp.destination.host,
                mp.destination.subset.as_deref(),
                ns,
                loc,
            ) {
                mirrors.push(Mirror {
                    cluster: c,
                    per_million,
                });
            }
        }

        let fault = raw
            .fault
            .as_ref()
            .map(|f| self.fault(f, doc, &format!("{base}.fault")));
        let timeout = raw
            .timeout
            .as_ref()
            .and_then(|t| self.duration(t, doc, &format!("{base}.timeout")))
            .filter(|d| !d.is_zero());
        let retries = match &raw.retries {
            Some(r) => self.retries(r, doc, &format!("{base}.retries")),
            None => Some(istio_default_retries()),
        };
        let headers = self.header_edits(raw.headers.as_ref(), doc, &format!("{base}.headers"));
        let rewrite = raw.rewrite.as_ref().map(|r| Rewrite {
            uri: r.uri.clone(),
            authority: r.authority.as_ref().and_then(|a| {
                let v = HeaderValue::from_str(a).ok();
                if v.is_none() {
                    self.findings.push(Finding::error(
                        Code::InvalidValue,
                        doc.location(&format!("{base}.rewrite.authority")),
                        format!("authority {a:?} is not a valid header value"),
                    ));
                }
                v
            }),
        });
        Rule {
            index,
            name: raw.name.clone(),
            matches,
            destinations,
            total_weight,
            mirrors,
            fault,
            timeout,
            retries,
            headers,
            rewrite,
            location: doc.location(&base),
            broken: broken_match || unresolved,
        }
    }

    fn request_match(&mut self, m: &RawHttpMatch, doc: &Document, path: &str) -> RequestMatch {
        let mut sm = |raw: &Option<RawStringMatch>, field: &str| {
            raw.as_ref()
                .and_then(|r| self.string_match(r, doc, &format!("{path}.{field}")))
        };
        let uri = sm(&m.uri, "uri");
        let scheme = sm(&m.scheme, "scheme");
        let method = sm(&m.method, "method");
        let authority = sm(&m.authority, "authority");
        let mut headers = Vec::new();
        for (field, map, inverted) in [
            ("headers", &m.headers, false),
            ("withoutHeaders", &m.without_headers, true),
        ] {
            for (name, raw) in map {
                let loc = doc.location(&format!("{path}.{field}.{name}"));
                let Ok(header) = HeaderName::from_str(&name.to_ascii_lowercase()) else {
                    self.findings.push(Finding::error(
                        Code::InvalidValue,
                        loc,
                        format!("{name:?} is not a valid header name"),
                    ));
                    self.dropped_condition = true;
                    continue;
                };
                if let Some(matcher) =
                    self.string_match(raw, doc, &format!("{path}.{field}.{name}"))
                {
                    headers.push(HeaderCondition {
                        name: header,
                        matcher,
                        inverted,
                    });
                }
            }
        }
        let mut query_params = Vec::new();
        for (name, raw) in &m.query_params {
            if let Some(matcher) =
                self.string_match(raw, doc, &format!("{path}.queryParams.{name}"))
            {
                query_params.push(QueryCondition {
                    name: name.clone(),
                    matcher,
                });
            }
        }
        RequestMatch {
            name: m.name.clone(),
            uri,
            ignore_uri_case: m.ignore_uri_case,
            scheme,
            method,
            authority,
            headers,
            query_params,
        }
    }

    fn string_match(
        &mut self,
        raw: &RawStringMatch,
        doc: &Document,
        path: &str,
    ) -> Option<StringMatcher> {
        let set = [
            raw.exact.is_some(),
            raw.prefix.is_some(),
            raw.regex.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set > 1 {
            self.findings.push(Finding::error(
                Code::InvalidValue,
                doc.location(path),
                "a string match takes one of exact, prefix or regex, not several: keep one",
            ));
            self.dropped_condition = true;
            return None;
        }
        if let Some(e) = &raw.exact {
            return Some(StringMatcher::Exact(e.clone()));
        }
        if let Some(p) = &raw.prefix {
            // Istio turns an empty prefix into a presence match.
            return Some(if p.is_empty() {
                StringMatcher::Present
            } else {
                StringMatcher::Prefix(p.clone())
            });
        }
        if let Some(r) = &raw.regex {
            return match StringMatcher::regex(r) {
                Ok(m) => Some(m),
                Err(e) => {
                    self.findings.push(Finding::error(
                        Code::InvalidRegex,
                        doc.location(&format!("{path}.regex")),
                        format!(
                            "regex {r:?} does not compile (RE2 syntax): {}",
                            first_line(&e.to_string())
                        ),
                    ));
                    self.dropped_condition = true;
                    None
                }
            };
        }
        Some(StringMatcher::Present)
    }

    fn unreachable_rules(&mut self, rules: &[Rule], doc: &Document) {
        let mut catch_all: Option<usize> = None;
        let mut seen: Vec<(usize, &RequestMatch)> = Vec::new();
        for rule in rules {
            let loc = || doc.location(&format!("spec.http[{}]", rule.index));
            if let Some(c) = catch_all {
                self.findings.push(Finding::error(
                    Code::UnreachableRule,
                    loc(),
                    format!(
                        "{} can never match: rule {c} before it matches every request. Move {} above rule {c}, or give rule {c} a match",
                        rule.label(),
                        rule.label()
                    ),
                ));
                continue;
            }
            let dupes: Vec<usize> = rule
                .matches
                .iter()
                .filter_map(|m| seen.iter().find(|(_, s)| *s == m).map(|(i, _)| *i))
                .collect();
            if !rule.matches.is_empty() && dupes.len() == rule.matches.len() {
                self.findings.push(Finding::error(
                    Code::UnreachableRule,
                    loc(),
                    format!(
                        "{} can never match: every match of it repeats a match of rule {} before it. Remove it or change its match",
                        rule.label(),
                        dupes[0]
                    ),
                ));
            } else if let Some(d) = dupes.first() {
                self.findings.push(Finding::warning(
                    Code::UnreachableRule,
                    loc(),
                    format!(
                        "a match of {} repeats a match of rule {d} and is never used",
                        rule.label()
                    ),
                ));
            }
            for m in &rule.matches {
                seen.push((rule.index, m));
            }
            if rule.is_catch_all() && !rule.broken {
                catch_all = Some(rule.index);
            }
        }
    }

    fn port(&mut self, port: Option<&RawPortSelector>, doc: &Document, path: &str) -> Option<u16> {
        let number = port?.number;
        match u16::try_from(number) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    doc.location(path),
                    format!("port {number} is not 1 to 65535"),
                ));
                None
            }
        }
    }

    /// A percentage 0..=100 as millionths.
    fn percentage(&mut self, value: f64, doc: &Document, path: &str) -> u32 {
        if !(0.0..=100.0).contains(&value) || !value.is_finite() {
            self.findings.push(Finding::error(
                Code::InvalidValue,
                doc.location(path),
                format!("percentage {value} is not between 0 and 100"),
            ));
            return 0;
        }
        (value * 10_000.0).round() as u32
    }

    fn duration(&mut self, text: &str, doc: &Document, path: &str) -> Option<std::time::Duration> {
        match parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.findings
                    .push(Finding::error(Code::InvalidValue, doc.location(path), e));
                None
            }
        }
    }

    fn fault(&mut self, f: &RawFault, doc: &Document, path: &str) -> Fault {
        let delay = f.delay.as_ref().and_then(|d| {
            let Some(fixed) = &d.fixed_delay else {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    doc.location(&format!("{path}.delay")),
                    "fault.delay needs fixedDelay, e.g. `fixedDelay: 2s`",
                ));
                return None;
            };
            let dur = self.duration(fixed, doc, &format!("{path}.delay.fixedDelay"))?;
            let share = match (&d.percentage, d.percent) {
                (Some(p), _) => {
                    self.percentage(p.value, doc, &format!("{path}.delay.percentage.value"))
                }
                (None, Some(p)) => {
                    self.percentage(f64::from(p), doc, &format!("{path}.delay.percent"))
                }
                (None, None) => 1_000_000,
            };
            Some((dur, share))
        });
        let abort = f.abort.as_ref().and_then(|a| {
            let Some(code) = a.http_status else {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    doc.location(&format!("{path}.abort")),
                    "fault.abort needs httpStatus, e.g. `httpStatus: 503`",
                ));
                return None;
            };
            let status = u16::try_from(code)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok());
            let Some(status) = status.filter(|s| (200..600).contains(&s.as_u16())) else {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    doc.location(&format!("{path}.abort.httpStatus")),
                    format!("httpStatus {code} is not an HTTP status from 200 to 599"),
                ));
                return None;
            };
            let share = match &a.percentage {
                Some(p) => self.percentage(p.value, doc, &format!("{path}.abort.percentage.value")),
                None => 1_000_000,
            };
            Some((status, share))
        });
        Fault { delay, abort }
    }

    fn retries(&mut self, r: &RawRetries, doc: &Document, path: &str) -> Option<RetryPolicy> {
        if r.attempts < 0 {
            self.findings.push(Finding::error(
                Code::InvalidValue,
                doc.location(&format!("{path}.attempts")),
                format!("attempts {} is negative", r.attempts),
            ));
            return None;
        }
        if r.attempts == 0 {
            return None;
        }
        let per_try_timeout = match &r.per_try_timeout {
            Some(t) => self.duration(t, doc, &format!("{path}.perTryTimeout")),
            None => None,
        };
        let retry_on = match &r.retry_on {
            None => istio_default_retries().retry_on,
            Some(list) => {
                let mut on = RetryOn::default();
                let mut listed_codes = false;
                for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    match item {
                        "5xx" => on.server_error = true,
                        "gateway-error" => on.gateway_error = true,
                        "connect-failure" => on.connect_failure = true,
                        "reset" | "refused-stream" | "reset-before-request" => on.reset = true,
                        "retriable-4xx" => on.retriable_4xx = true,
                        "retriable-status-codes" => listed_codes = true,
                        // gRPC conditions map onto HTTP ones weir sees.
                        "unavailable" | "cancelled" | "deadline-exceeded" | "resource-exhausted"
                        | "internal" | "envoy-ratelimited" | "retriable-headers" | "http3-post-connect-failure" => {}
                        code => match code.parse::<u16>() {
                            Ok(c) if (100..600).contains(&c) => on.status_codes.push(c),
                            _ => self.findings.push(Finding::error(
                                Code::InvalidValue,
                                doc.location(&format!("{path}.retryOn")),
                                format!("retryOn condition {code:?} is unknown: use 5xx, gateway-error, connect-failure, reset, retriable-4xx, retriable-status-codes or status codes"),
                            )),
                        },
                    }
                }
                if listed_codes && on.status_codes.is_empty() {
                    on.status_codes.push(503);
                }
                on.status_codes.sort_unstable();
                on.status_codes.dedup();
                on
            }
        };
        Some(RetryPolicy {
            attempts: r.attempts as u32,
            per_try_timeout,
            retry_on,
        })
    }

    fn header_edits(
        &mut self,
        raw: Option<&RawHeaders>,
        doc: &Document,
        path: &str,
    ) -> HeaderEdits {
        let Some(raw) = raw else {
            return HeaderEdits::default();
        };
        HeaderEdits {
            request: self.header_ops(raw.request.as_ref(), doc, &format!("{path}.request")),
            response: self.header_ops(raw.response.as_ref(), doc, &format!("{path}.response")),
        }
    }

    fn header_ops(
        &mut self,
        raw: Option<&RawHeaderOperations>,
        doc: &Document,
        path: &str,
    ) -> HeaderOps {
        let Some(raw) = raw else {
            return HeaderOps::default();
        };
        let mut pairs = |map: &BTreeMap<String, String>, op: &str| {
            let mut out = Vec::new();
            for (k, v) in map {
                match (
                    HeaderName::from_str(&k.to_ascii_lowercase()),
                    HeaderValue::from_str(v),
                ) {
                    (Ok(n), Ok(v)) => out.push((n, v)),
                    _ => self.findings.push(Finding::error(
                        Code::InvalidValue,
                        doc.location(&format!("{path}.{op}.{k}")),
                        format!("header {k:?}: {v:?} is not a valid header name and value"),
                    )),
                }
            }
            out
        };
        let set = pairs(&raw.set, "set");
        let add = pairs(&raw.add, "add");
        let mut remove = Vec::new();
        for (i, k) in raw.remove.iter().enumerate() {
            match HeaderName::from_str(&k.to_ascii_lowercase()) {
                Ok(n) => remove.push(n),
                Err(_) => self.findings.push(Finding::error(
                    Code::InvalidValue,
                    doc.location(&format!("{path}.remove[{i}]")),
                    format!("{k:?} is not a valid header name"),
                )),
            }
        }
        HeaderOps { set, add, remove }
    }
}

/// Istio's retry policy when a rule sets none: 2 retries on connect failure, refused stream and
/// 503.
pub fn istio_default_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        per_try_timeout: None,
        retry_on: RetryOn {
            connect_failure: true,
            reset: true,
            status_codes: vec![503],
            ..RetryOn::default()
        },
    }
}

fn namespace(meta: &RawMetadata) -> String {
    meta.namespace
        .clone()
        .unwrap_or_else(|| "default".to_string())
}

/// The FQDN a host stands for, seen from a namespace: `payment-svc` in `production` is
/// `payment-svc.production.svc.cluster.local`; a name with dots is taken as written.
pub(crate) fn fqdn(host: &str, ns: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host.contains('.') {
        host
    } else {
        format!("{host}.{ns}.svc.cluster.local")
    }
}

fn fqdn_namespace(fqdn: &str, ns: &str) -> String {
    match fqdn.strip_suffix(".svc.cluster.local") {
        Some(rest) => rest.split('.').nth(1).unwrap_or(ns).to_string(),
        None => ns.to_string(),
    }
}

/// Every name a request's Host may use for a VirtualService host.
fn host_keys(host: &str, ns: &str) -> Vec<String> {
    if let Some(rest) = host.strip_suffix(".svc.cluster.local") {
        let mut keys = vec![host.to_string(), format!("{rest}.svc")];
        keys.push(rest.to_string());
        if let Some((name, _)) = rest.split_once('.') {
            keys.push(name.to_string());
        }
        return keys;
    }
    if host.contains('.') {
        return vec![host.to_string()];
    }
    vec![
        host.to_string(),
        format!("{host}.{ns}"),
        format!("{host}.{ns}.svc"),
        format!("{host}.{ns}.svc.cluster.local"),
    ]
}

fn endpoint_port(ports: &[RawPort], ep: &RawWorkloadEntry) -> Option<u16> {
    for p in ports {
        if let Some(name) = &p.name
            && let Some(n) = ep.ports.get(name)
        {
            return u16::try_from(*n).ok();
        }
    }
    if let Some(n) = ep.ports.values().next() {
        return u16::try_from(*n).ok();
    }
    ports
        .first()
        .and_then(|p| u16::try_from(p.target_port.unwrap_or(p.number)).ok())
}

fn common_label(endpoints: &[Endpoint], key: &str) -> Option<String> {
    let first = endpoints.first()?.labels.get(key)?;
    endpoints
        .iter()
        .all(|e| e.labels.get(key) == Some(first))
        .then(|| first.clone())
}

fn subset_label(d: &RawDestination) -> String {
    match &d.subset {
        Some(s) => format!("subset {s}"),
        None => format!("host {}", d.host),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().last().unwrap_or(s).trim()
}
