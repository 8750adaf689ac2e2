//! The compiled, immutable routing table and everything a proxy needs per route, resolved once
//! when the table is built.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};

use crate::finding::Location;
use crate::matcher::RequestMatch;
pub(crate) use crate::request::strip_port;
use crate::source::ConfigSource;

/// A validated routing table: VirtualServices with their rules, and the clusters (host +
/// subset) their destinations point at. Immutable: a change builds a new table.
#[derive(Clone, Debug)]
pub struct RouteTable {
    pub(crate) generation: u64,
    pub(crate) virtual_services: Vec<VirtualService>,
    /// Lowercased host name (short, `name.namespace`, FQDN) -> index in `virtual_services`.
    pub(crate) host_index: HostIndex,
    /// Wildcard hosts (`*.example.com` stored as `.example.com`, `*` as ``) -> index.
    pub(crate) wildcard_hosts: Vec<(String, usize)>,
    pub(crate) clusters: Vec<Cluster>,
    pub(crate) sources: Arc<[ConfigSource]>,
    /// ServiceEntry `addresses` (VIPs, CIDRs) and the host they stand for.
    pub(crate) service_addresses: Vec<ServiceAddress>,
    /// ServiceEntry ports whose protocol is neither HTTP nor gRPC (`TCP`, `TLS`, `MYSQL`...).
    pub(crate) opaque_ports: Vec<u16>,
}

/// A ServiceEntry `addresses` entry: connections to it are for `host` (Istio matches a
/// transparently captured connection to a service by this address and the port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAddress {
    /// The network, e.g. `10.96.0.10` (a /32) or `240.240.0.0/16`.
    pub addr: std::net::IpAddr,
    /// The prefix length.
    pub prefix: u8,
    /// The ServiceEntry's port numbers (empty: any).
    pub ports: Vec<u16>,
    /// The ServiceEntry host (lowercase).
    pub host: String,
}

impl ServiceAddress {
    /// Whether `to` is inside this address range, on one of its ports.
    pub fn covers(&self, to: SocketAddr) -> bool {
        use std::net::IpAddr;
        let inside = match (self.addr, to.ip()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let shift = 32 - u32::from(self.prefix.min(32));
                u32::from(net).checked_shr(shift) == u32::from(ip).checked_shr(shift)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let shift = 128 - u32::from(self.prefix.min(128));
                u128::from(net).checked_shr(shift) == u128::from(ip).checked_shr(shift)
            }
            _ => false,
        };
        inside && (self.ports.is_empty() || self.ports.contains(&to.port()))
    }
}

/// Host name -> VirtualService index. Most sidecars route a handful of hosts: then a scan that
/// compares lengths first beats hashing the name (callgrind: 165 -> ~40 instructions a
/// lookup for the lesson's config). Larger tables hash.
#[derive(Clone, Debug)]
pub(crate) enum HostIndex {
    Small(Vec<(Box<str>, usize)>),
    Large(HashMap<String, usize, HostHasher>),
}

impl HostIndex {
    const SMALL: usize = 16;

    pub(crate) fn new(map: HashMap<String, usize, HostHasher>) -> Self {
        if map.len() <= Self::SMALL {
            let mut keys: Vec<(Box<str>, usize)> = map
                .into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v))
                .collect();
            // Short names first: requests through a sidecar mostly use them.
            keys.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.cmp(&b.0)));
            HostIndex::Small(keys)
        } else {
            HostIndex::Large(map)
        }
    }

    #[inline]
    pub(crate) fn get(&self, host: &str) -> Option<usize> {
        match self {
            HostIndex::Small(keys) => keys
                .iter()
                .find(|(k, _)| k.len() == host.len() && k.as_bytes() == host.as_bytes())
                .map(|(_, i)| *i),
            HostIndex::Large(map) => map.get(host).copied(),
        }
    }
}

/// The host index hashes with FNV-1a: host names are short, and SipHash's DoS resistance buys
/// nothing for a map built from the operator's own config.
pub(crate) type HostHasher = crate::hash::FnvBuildHasher;

/// How the weights of a route are read (`weir.dev/weight-policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightPolicy {
    /// The weights of a route must sum to 100 (the default).
    Strict,
    /// Istio >= 1.15: a destination gets `weight / sum of weights`.
    Relative,
}

/// Where a sticky canary reads its key (`weir.dev/sticky`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "from", content = "name")]
pub enum StickyKey {
    /// `header:x-user-id`: the value of a request header.
    #[serde(serialize_with = "ser_header_name")]
    Header(HeaderName),
    /// `cookie:session`: the value of a cookie.
    Cookie(String),
}

fn ser_header_name<S: serde::Serializer>(h: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(h.as_str())
}

/// One VirtualService, compiled.
#[derive(Clone, Debug)]
pub struct VirtualService {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (`default` when absent).
    pub namespace: String,
    /// `spec.hosts` as written.
    pub hosts: Vec<String>,
    /// The HTTP rules, in order: the first that matches wins.
    pub rules: Vec<Rule>,
    /// How weights are read.
    pub policy: WeightPolicy,
    /// The stable subset: the `weir.dev/stable-subset` annotation, else the majority in the
    /// running config, else `primary` / `stable`, else the lowest version (see
    /// [`StableSource`]). Every other subset is a canary.
    pub stable_subset: Option<String>,
    /// Where `stable_subset` came from.
    pub stable_source: StableSource,
    /// Largest increase of a canary's share that one change may make, in percentage points.
    pub max_step: u32,
    /// `weir.dev/promotion: "true"`: this config deliberately gives a canary the majority.
    pub promotion: bool,
    /// Session affinity across versions, if configured.
    pub sticky: Option<StickyKey>,
    /// Where the resource starts.
    pub location: Location,
}

/// Where a VirtualService's stable subset comes from, strongest first. Never "whichever
/// destination is listed first".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum StableSource {
    /// The `weir.dev/stable-subset` annotation.
    Annotation,
    /// The subset holding the majority in the running (or `--against`) config.
    Running,
    /// A subset named `primary` or `stable`.
    Name,
    /// The only subset the VirtualService routes to.
    Only,
    /// The lowest version in natural order (`v1` < `v2` < `v10`): a guess, warned about.
    LowestVersion,
    /// No destination has a subset.
    None,
}

/// One HTTP rule of a VirtualService, compiled.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Position in `spec.http`, from 0.
    pub index: usize,
    /// The rule's `name`, if any.
    pub name: Option<String>,
    /// The match items (OR); empty matches every request.
    pub matches: Vec<RequestMatch>,
    /// Weighted destinations in declaration order.
    pub destinations: Vec<Destination>,
    /// Sum of the destinations' weights; the modulus of Envoy's pick.
    pub total_weight: u64,
    /// Fire-and-forget copies of matching requests.
    pub mirrors: Vec<Mirror>,
    /// Injected faults.
    pub fault: Option<Fault>,
    /// Whole-request timeout (Istio: none by default).
    pub timeout: Option<Duration>,
    /// Retry policy.
    pub retries: Option<RetryPolicy>,
    /// Header edits for every destination of the rule.
    pub headers: HeaderEdits,
    /// URI and authority rewrite.
    pub rewrite: Option<Rewrite>,
    /// Where the rule is.
    pub location: Location,
    /// A condition or destination was dropped for an error: the guards skip the rule, since
    /// its weights are not what the file says. Never set in a table that is served.
    pub(crate) broken: bool,
}

/// One weighted destination of a rule.
#[derive(Clone, Debug)]
pub struct Destination {
    /// `destination.host` as written.
    pub host: String,
    /// `destination.subset`, if any.
    pub subset: Option<String>,
    /// `destination.port.number`, if any.
    pub port: Option<u16>,
    /// The weight (points under the strict policy, a relative share otherwise).
    pub weight: u32,
    /// Index of the cluster in [`RouteTable::clusters`].
    pub cluster: usize,
    /// Header edits for this destination only, applied after the rule's.
    pub headers: HeaderEdits,
    /// Where the weight is written (or the destination, when the weight is implied).
    pub location: Location,
}

/// A mirror destination with the share of requests it receives.
#[derive(Clone, Debug)]
pub struct Mirror {
    /// Index of the cluster in [`RouteTable::clusters`].
    pub cluster: usize,
    /// Share of requests mirrored, in millionths (1_000_000 = 100%).
    pub per_million: u32,
}

/// Injected faults (`fault.delay`, `fault.abort`).
#[derive(Clone, Debug, Default)]
pub struct Fault {
    /// A fixed delay and the share of requests it applies to, in millionths.
    pub delay: Option<(Duration, u32)>,
    /// An HTTP status returned instead of forwarding, and the share, in millionths.
    pub abort: Option<(StatusCode, u32)>,
}

/// What triggers a retry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// `5xx`: any 5xx response, or no response.
    pub server_error: bool,
    /// `gateway-error`: 502, 503, 504.
    pub gateway_error: bool,
    /// `connect-failure`.
    pub connect_failure: bool,
    /// `reset`: the upstream went away before answering.
    pub reset: bool,
    /// `retriable-4xx`: 409.
    pub retriable_4xx: bool,
    /// Listed status codes (`retriable-status-codes` plus numbers in the list).
    pub status_codes: Vec<u16>,
}

/// `retries` of a rule.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first try (Istio's `attempts`).
    pub attempts: u32,
    /// Timeout of each try, if set.
    pub per_try_timeout: Option<Duration>,
    /// Conditions that trigger a retry.
    pub retry_on: RetryOn,
}

/// Request and response header edits.
#[derive(Clone, Debug, Default)]
pub struct HeaderEdits {
    /// Edits to the request sent upstream.
    pub request: HeaderOps,
    /// Edits to the response sent back.
    pub response: HeaderOps,
}

/// `set`, `add`, `remove` on one header map, applied in that order: remove, set, add.
#[derive(Clone, Debug, Default)]
pub struct HeaderOps {
    /// Replace the header's values.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append a value.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Remove the header.
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the edits: remove, then set, then add.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// `rewrite` of a rule.
#[derive(Clone, Debug, Default)]
pub struct Rewrite {
    /// Replaces the matched prefix (or the whole path for other matches).
    pub uri: Option<String>,
    /// Replaces the authority / Host.
    pub authority: Option<HeaderValue>,
}

/// How an endpoint is picked inside a subset (`trafficPolicy.loadBalancer`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadBalancer {
    /// `ROUND_ROBIN`.
    RoundRobin,
    /// `LEAST_REQUEST`, power of two choices (Istio's default).
    LeastRequest,
    /// `RANDOM`.
    Random,
    /// `PASSTHROUGH`: treated as round robin over the listed endpoints.
    Passthrough,
    /// `consistentHash` on a request attribute.
    ConsistentHash(HashKey),
}

/// What a consistent hash is taken of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    /// `httpHeaderName`.
    Header(HeaderName),
    /// `httpCookie.name`.
    Cookie(String),
    /// `useSourceIp`.
    SourceIp,
    /// `httpQueryParameterName`.
    QueryParameter(String),
}

/// One endpoint of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` to connect to.
    pub authority: String,
    /// The parsed address when `authority` is an IP literal (STATIC resolution).
    pub addr: Option<SocketAddr>,
    /// The endpoint's labels.
    pub labels: BTreeMap<String, String>,
}

/// Label values a proxy reports for traffic to one cluster, under Istio's metric label names.
/// Built once with the table; a request only clones an `Arc`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterLabels {
    /// `destination_service`: the FQDN, e.g. `payment-svc.production.svc.cluster.local`.
    pub destination_service: Arc<str>,
    /// `destination_service_name`: the short name, e.g. `payment-svc`.
    pub destination_service_name: Arc<str>,
    /// `destination_service_namespace`.
    pub destination_service_namespace: Arc<str>,
    /// `destination_workload`: the endpoints' `app` label plus the version, else `host-subset`.
    pub destination_workload: Arc<str>,
    /// `destination_version`: the subset's `version` label, else its name, else `unknown`.
    pub destination_version: Arc<str>,
    /// `destination_app`: the endpoints' common `app` label, else `unknown`.
    pub destination_app: Arc<str>,
    /// `destination_canonical_service`: the endpoints' `service.istio.io/canonical-name`
    /// label, else `app`, else the short service name (Istio's defaulting).
    pub destination_canonical_service: Arc<str>,
    /// `destination_canonical_revision`: the endpoints' `service.istio.io/canonical-revision`
    /// label, else the version, else `latest`.
    pub destination_canonical_revision: Arc<str>,
}

impl ClusterLabels {
    /// Labels of a destination nothing is known of, every value `name`, as Istio writes
    /// `unknown` (the canonical revision of an unknown workload is `latest`, as Istio's).
    pub fn unknown(service: &str, service_name: &str) -> Self {
        let unknown: Arc<str> = Arc::from("unknown");
        ClusterLabels {
            destination_service: Arc::from(service),
            destination_service_name: Arc::from(service_name),
            destination_service_namespace: unknown.clone(),
            destination_workload: unknown.clone(),
            destination_version: unknown.clone(),
            destination_app: unknown.clone(),
            destination_canonical_service: unknown,
            destination_canonical_revision: Arc::from("latest"),
        }
    }
}

/// The protocol a proxy speaks to a cluster's endpoints, from the ServiceEntry port's
/// `protocol` (as Envoy picks its upstream codec from the port).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    /// `HTTP` (or unset): HTTP/1.1.
    #[default]
    Http1,
    /// `HTTP2`, `GRPC`, `GRPC-WEB`: HTTP/2 with prior knowledge (h2c).
    Http2,
}

/// A host + subset: a set of endpoints behind one load balancer.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// The destination host.
    pub host: String,
    /// The subset, if any.
    pub subset: Option<String>,
    /// The endpoints the subset selects.
    pub endpoints: Vec<Endpoint>,
    /// The subset's label selector (empty for a destination without subset).
    pub selector: BTreeMap<String, String>,
    /// How an endpoint is picked.
    pub load_balancer: LoadBalancer,
    /// The protocol spoken to the endpoints.
    pub protocol: UpstreamProtocol,
    /// Metric labels for traffic to this cluster.
    pub labels: Arc<ClusterLabels>,
    /// Whether `endpoints` is what a ServiceEntry says. `false` for a Kubernetes Service in
    /// cluster mode and for an unresolved host or subset: then the endpoints are unknown, not
    /// absent, and the table is for checking only.
    pub(crate) known: bool,
}

// === impl Cluster ===

impl Cluster {
    /// Whether the endpoints are what a ServiceEntry lists. `false` when they are unknown: a
    /// Kubernetes Service in cluster mode, or a host or subset that could not be resolved.
    pub fn endpoints_known(&self) -> bool {
        self.known
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// The ServiceEntry host a transparently captured connection to `to` is for: the first
    /// ServiceEntry `addresses` entry that covers the address and port.
    pub fn host_for_address(&self, to: SocketAddr) -> Option<&str> {
        self.service_addresses
            .iter()
            .find(|a| a.covers(to))
            .map(|a| a.host.as_str())
    }

    /// Whether a ServiceEntry declares `port` with a protocol that is not HTTP or gRPC
    /// (`TCP`, `TLS`, `MYSQL`, ...): captured connections to it are relayed as TCP, never
    /// sniffed.
    pub fn is_opaque_port(&self, port: u16) -> bool {
        self.opaque_ports.contains(&port)
    }

    /// The generation: bumped every time a [`LiveTable`](crate::LiveTable) publishes a table.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The VirtualServices, in file order.
    pub fn virtual_services(&self) -> &[VirtualService] {
        &self.virtual_services
    }

    /// The clusters; [`Destination::cluster`] and [`Mirror::cluster`] index into this.
    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    /// The cluster at an index.
    pub fn cluster(&self, index: usize) -> &Cluster {
        &self.clusters[index]
    }

    /// The sources this table was built from.
    pub fn sources(&self) -> &[ConfigSource] {
        &self.sources
    }

    /// The VirtualService serving a host (`Host` header or `:authority`, with or without port,
    /// any case): short name, `name.namespace`, FQDN, or a wildcard host.
    pub fn virtual_service_for_host(&self, authority: &str) -> Option<&VirtualService> {
        self.host_lookup(authority)
            .map(|i| &self.virtual_services[i])
    }

    /// A VirtualService by `metadata.name`, `namespace/name`, or one of its hosts.
    pub fn virtual_service(&self, name: &str) -> Option<&VirtualService> {
        let (ns, short) = match name.split_once('/') {
            Some((ns, n)) => (Some(ns), n),
            None => (None, name),
        };
        self.virtual_services
            .iter()
            .find(|vs| vs.name == short && ns.is_none_or(|ns| ns == vs.namespace))
            .or_else(|| self.virtual_service_for_host(name))
    }

    pub(crate) fn virtual_service_index(&self, name: &str) -> Option<usize> {
        let vs = self.virtual_service(name)?;
        self.virtual_services
            .iter()
            .position(|v| std::ptr::eq(v, vs))
    }

    pub(crate) fn host_lookup(&self, authority: &str) -> Option<usize> {
        let host = strip_port(authority);
        // `payment-svc.` (a fully qualified name with its root dot) is `payment-svc`.
        let host = host.strip_suffix('.').unwrap_or(host);
        if let Some(i) = self.host_index.get(host) {
            return Some(i);
        }
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            if let Some(i) = self.host_index.get(lowered.as_str()) {
                return Some(i);
            }
            lowered.as_str()
        } else {
            host
        };
        self.wildcard_hosts
            .iter()
            .find(|(suffix, _)| host.ends_with(suffix.as_str()))
            .map(|(_, i)| *i)
    }

    /// The cluster for a host and subset, if the table has one.
    pub fn find_cluster(&self, host: &str, subset: Option<&str>) -> Option<usize> {
        find_cluster(&self.clusters, host, subset)
    }
}

/// The index of the cluster for a host and subset. A free function so that writers holding
/// a virtual service mutably can still search the table's clusters.
pub(crate) fn find_cluster(
    clusters: &[Cluster],
    host: &str,
    subset: Option<&str>,
) -> Option<usize> {
    clusters
        .iter()
        .position(|c| c.host == host && c.subset.as_deref() == subset)
}

// === impl VirtualService ===

impl VirtualService {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether a subset is a canary: any subset other than the stable one.
    pub fn is_canary(&self, subset: Option<&str>) -> bool {
        match (subset, &self.stable_subset) {
            (Some(s), Some(stable)) => s != stable,
            _ => false,
        }
    }

    /// A rule by name or by index (as a decimal string).
    pub fn rule(&self, name_or_index: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.name.as_deref() == Some(name_or_index))
            .or_else(|| {
                name_or_index
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| self.rules.get(i))
            })
    }

    /// The rule a weight change addresses when none is named: the first rule that splits
    /// between two or more destinations, else the last rule.
    pub fn split_rule(&self) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.destinations.len() > 1)
            .or_else(|| self.rules.last())
    }
}

// === impl Rule ===

impl Rule {
    /// Whether the rule matches every request (no match item, or an item with no condition).
    pub fn is_catch_all(&self) -> bool {
        self.matches.is_empty() || self.matches.iter().any(RequestMatch::is_catch_all)
    }

    /// `rule 1 "name"` or `rule 1`, for messages.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("rule {} ({n})", self.index),
            None => format!("rule {}", self.index),
        }
    }

    /// The share of the rule's traffic that a destination receives, in percent.
    pub fn share_percent(&self, destination: &Destination) -> f64 {
        if self.total_weight == 0 {
            0.0
        } else {
            destination.weight as f64 * 100.0 / self.total_weight as f64
        }
    }

    /// Whether the rule is a weighted split the weight guards watch: more than one
    /// destination, or a catch-all. A rule with match conditions and a single destination
    /// (a dark launch on `x-canary: true`) routes by request, not by weight.
    pub fn is_weighted(&self) -> bool {
        self.destinations.len() > 1 || self.is_catch_all()
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn strip_port_cases() {
        let rows = [
            ("svc", "svc"),
            ("svc:80", "svc"),
            ("svc:", "svc:"),
            ("a.b.c:8080", "a.b.c"),
            ("[::1]:80", "[::1]"),
            ("[::1]", "[::1]"),
            ("::1", "::1"),
            ("127.0.0.1:15001", "127.0.0.1"),
            ("", ""),
            ("svc:8x", "svc:8x"),
        ];
        for (input, want) in rows {
            assert_eq!(strip_port(input), want, "{input}");
        }
    }
}
