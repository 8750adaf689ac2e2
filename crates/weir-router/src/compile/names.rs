//! Host names: namespaces, FQDNs and the names a request may use for a host.

use crate::raw::RawMetadata;

pub(super) fn namespace(meta: &RawMetadata) -> String {
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

pub(super) fn fqdn_namespace(fqdn: &str, ns: &str) -> String {
    match fqdn.strip_suffix(".svc.cluster.local") {
        Some(rest) => rest.split('.').nth(1).unwrap_or(ns).to_string(),
        None => ns.to_string(),
    }
}

/// Every name a request's Host may use for a VirtualService host.
pub(super) fn host_keys(host: &str, ns: &str) -> Vec<String> {
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

/// The FQDN of a Kubernetes Service named in a destination or a DestinationRule, as cluster
/// DNS resolves it from `ns`: `name`, `name.namespace`, `name.namespace.svc` and the FQDN
/// itself all name `name.namespace.svc.cluster.local`. Other names with dots are taken as
/// written; a trailing dot is dropped.
pub(crate) fn service_fqdn(host: &str, ns: &str) -> String {
    let host = host.to_ascii_lowercase();
    let host = host.trim_end_matches('.');
    let labels = host.split('.').count();
    if host.starts_with('*') {
        return host.to_string();
    }
    match labels {
        1 => format!("{host}.{ns}.svc.cluster.local"),
        2 => format!("{host}.svc.cluster.local"),
        3 if host.ends_with(".svc") => format!("{host}.cluster.local"),
        _ => host.to_string(),
    }
}
