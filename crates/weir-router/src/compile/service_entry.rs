//! ServiceEntry -> endpoints, by host. A ServiceEntry's `hosts` are literal, as in Istio.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use super::*;
use crate::finding::{Code, Finding};
use crate::raw::*;
use crate::table::*;

impl Compiler<'_> {
    /// The ServiceEntry's `addresses` (for transparently captured connections) and its ports
    /// of protocols that are not HTTP.
    fn addresses(&mut self, se: &Located<RawServiceEntry>) {
        let spec = &se.raw.spec;
        let ports: Vec<u16> = spec
            .ports
            .iter()
            .filter_map(|p| u16::try_from(p.number).ok())
            .collect();
        for p in &spec.ports {
            let protocol = p.protocol.as_deref().unwrap_or("HTTP").to_ascii_uppercase();
            if !matches!(protocol.as_str(), "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB")
                && let Ok(port) = u16::try_from(p.number)
            {
                self.opaque_ports.push(port);
            }
        }
        let Some(host) = spec.hosts.first() else {
            return;
        };
        let host = host.to_ascii_lowercase().trim_end_matches('.').to_string();
        for (i, text) in spec.addresses.iter().enumerate() {
            let (addr, prefix) = match text.split_once('/') {
                Some((a, p)) => (a, p.parse::<u8>().ok()),
                None => (text.as_str(), None),
            };
            let Ok(addr) = IpAddr::from_str(addr) else {
                self.findings.push(Finding::error(
                    Code::InvalidValue,
                    se.doc.location(&format!("spec.addresses[{i}]")),
                    format!("address {text:?} is not an IP address or CIDR (e.g. 10.96.0.10 or 240.240.0.0/16)"),
                ));
                continue;
            };
            let max = if addr.is_ipv4() { 32 } else { 128 };
            self.service_addresses.push(ServiceAddress {
                addr,
                prefix: prefix.unwrap_or(max).min(max),
                ports: ports.clone(),
                host: host.clone(),
            });
        }
    }
}

/// What the ServiceEntries say about one host.
#[derive(Clone)]
pub(super) struct ServiceEndpoints {
    pub(super) endpoints: Vec<Endpoint>,
    pub(super) protocol: UpstreamProtocol,
    pub(super) resolution: Resolution,
    /// The first port's target (or number), for DNS hosts without endpoints.
    pub(super) port: Option<u16>,
    /// The ServiceEntry's namespace.
    pub(super) namespace: String,
}

/// A ServiceEntry's `resolution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Resolution {
    /// `STATIC` (or unset): the listed endpoints.
    Static,
    /// `DNS`, `DNS_ROUND_ROBIN`: the endpoints' names, or the host itself, resolved by DNS.
    Dns,
    /// `NONE`: the original destination address of the connection.
    None,
}

impl Compiler<'_> {
    pub(super) fn service_entry(&mut self, se: &Located<RawServiceEntry>) {
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
            if !ep.ports.is_empty()
                && !spec.ports.is_empty()
                && !ep
                    .ports
                    .keys()
                    .any(|name| spec.ports.iter().any(|p| p.name.as_deref() == Some(name)))
            {
                let names: Vec<&str> = ep.ports.keys().map(String::as_str).collect();
                let known: Vec<&str> = spec
                    .ports
                    .iter()
                    .filter_map(|p| p.name.as_deref())
                    .collect();
                self.findings.push(Finding::warning(
                    Code::InvalidValue,
                    se.doc.location(&format!("spec.endpoints[{i}].ports")),
                    format!(
                        "endpoint {}'s port name {} matches no port of the ServiceEntry ({}): Istio then sends to port {port}, the ServiceEntry's, not the endpoint's. Name the endpoint's port {}",
                        ep.address,
                        names.join(", "),
                        if known.is_empty() { "unnamed".to_string() } else { known.join(", ") },
                        known.first().copied().unwrap_or("as the ServiceEntry's port")
                    ),
                ));
            }
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
        let resolution = match spec.resolution.as_deref() {
            Some("DNS" | "DNS_ROUND_ROBIN") => Resolution::Dns,
            Some("NONE") => Resolution::None,
            _ => Resolution::Static,
        };
        let service_port = spec
            .ports
            .first()
            .and_then(|p| u16::try_from(p.target_port.unwrap_or(p.number)).ok());
        self.addresses(se);
        for host in &spec.hosts {
            // Istio takes a ServiceEntry's hosts literally: `payment-svc` is not expanded to
            // `payment-svc.<namespace>.svc.cluster.local` (istio/istio#36864).
            let host = host.to_ascii_lowercase().trim_end_matches('.').to_string();
            if let Some(suffix) = host.strip_prefix('*') {
                self.wildcard_services.push((
                    suffix.to_string(),
                    ServiceEndpoints {
                        endpoints: endpoints.clone(),
                        protocol,
                        resolution,
                        port: service_port,
                        namespace: ns.clone(),
                    },
                ));
                continue;
            }
            let mut own = endpoints.clone();
            if own.is_empty()
                && resolution == Resolution::Dns
                && let Some(port) = service_port
            {
                // DNS without endpoints: Envoy resolves the host itself.
                own.push(Endpoint {
                    authority: format!("{host}:{port}"),
                    addr: None,
                    labels: BTreeMap::new(),
                });
            }
            let entry = self
                .services
                .entry(host)
                .or_insert_with(|| ServiceEndpoints {
                    endpoints: Vec::new(),
                    protocol,
                    resolution,
                    port: service_port,
                    namespace: ns.clone(),
                });
            entry.endpoints.extend(own);
        }
    }
}

fn endpoint_port(ports: &[RawPort], ep: &RawWorkloadEntry) -> Option<u16> {
    for p in ports {
        if let Some(name) = &p.name
            && let Some(n) = ep.ports.get(name)
        {
            return u16::try_from(*n).ok();
        }
    }
    // As Istio: an endpoint port whose name matches no ServiceEntry port is not used; the
    // ServiceEntry's port is. Without ServiceEntry ports, the endpoint's own is all there is.
    if ports.is_empty()
        && let Some(n) = ep.ports.values().next()
    {
        return u16::try_from(*n).ok();
    }
    ports
        .first()
        .and_then(|p| u16::try_from(p.target_port.unwrap_or(p.number)).ok())
}
