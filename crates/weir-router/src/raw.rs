//! Serde mirrors of Istio's YAML, field for field with Istio's names. Nothing outside the
//! config loader and the compiler sees these types: they are turned into the compiled
//! [`RouteTable`](crate::RouteTable) and dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `metadata` of any resource.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawMetadata {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The envelope every resource shares. `apiVersion`, `kind` and `status` are read here so that
/// they are not reported as ignored; the loader checks them on the untyped document.
#[derive(Clone, Debug, Deserialize)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
pub struct RawResource<S> {
    #[serde(default)]
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: RawMetadata,
    pub spec: S,
    /// Read so that a `status` block is not reported as a field weir ignores.
    #[serde(default)]
    pub status: Option<serde::de::IgnoredAny>,
}

// === VirtualService ===

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawVirtualService {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub http: Vec<RawHttpRoute>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawHttpRoute {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: Vec<RawHttpMatch>,
    #[serde(default)]
    pub route: Vec<RawRouteDestination>,
    #[serde(default)]
    pub rewrite: Option<RawRewrite>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retries: Option<RawRetries>,
    #[serde(default)]
    pub fault: Option<RawFault>,
    #[serde(default)]
    pub mirror: Option<RawDestination>,
    #[serde(default)]
    pub mirror_percentage: Option<RawPercent>,
    /// Deprecated integer form of `mirrorPercentage`.
    #[serde(default)]
    pub mirror_percent: Option<u32>,
    #[serde(default)]
    pub mirrors: Vec<RawMirrorPolicy>,
    #[serde(default)]
    pub headers: Option<RawHeaders>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawHttpMatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub uri: Option<RawStringMatch>,
    #[serde(default)]
    pub scheme: Option<RawStringMatch>,
    #[serde(default)]
    pub method: Option<RawStringMatch>,
    #[serde(default)]
    pub authority: Option<RawStringMatch>,
    #[serde(default)]
    pub headers: BTreeMap<String, RawStringMatch>,
    #[serde(default)]
    pub query_params: BTreeMap<String, RawStringMatch>,
    #[serde(default)]
    pub without_headers: BTreeMap<String, RawStringMatch>,
    #[serde(default)]
    pub ignore_uri_case: bool,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub source_namespace: Option<String>,
    #[serde(default)]
    pub gateways: Vec<String>,
}

/// Istio's StringMatch: one of `exact`, `prefix`, `regex`; none of them (`{}`) means "present".
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawStringMatch {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawRouteDestination {
    pub destination: RawDestination,
    /// Signed so that a negative weight can be reported rather than failing to parse.
    #[serde(default)]
    pub weight: Option<i64>,
    #[serde(default)]
    pub headers: Option<RawHeaders>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawDestination {
    pub host: String,
    #[serde(default)]
    pub subset: Option<String>,
    #[serde(default)]
    pub port: Option<RawPortSelector>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPortSelector {
    pub number: u32,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPercent {
    pub value: f64,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawMirrorPolicy {
    pub destination: RawDestination,
    #[serde(default)]
    pub percentage: Option<RawPercent>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawFault {
    #[serde(default)]
    pub delay: Option<RawDelay>,
    #[serde(default)]
    pub abort: Option<RawAbort>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawDelay {
    #[serde(default)]
    pub fixed_delay: Option<String>,
    #[serde(default)]
    pub percentage: Option<RawPercent>,
    /// Deprecated integer percent.
    #[serde(default)]
    pub percent: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawAbort {
    #[serde(default)]
    pub http_status: Option<i64>,
    #[serde(default)]
    pub percentage: Option<RawPercent>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawRetries {
    #[serde(default)]
    pub attempts: i64,
    #[serde(default)]
    pub per_try_timeout: Option<String>,
    #[serde(default)]
    pub retry_on: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawHeaders {
    #[serde(default)]
    pub request: Option<RawHeaderOperations>,
    #[serde(default)]
    pub response: Option<RawHeaderOperations>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawHeaderOperations {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawRewrite {
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub authority: Option<String>,
}

// === DestinationRule ===

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawDestinationRule {
    pub host: String,
    #[serde(default)]
    pub traffic_policy: Option<RawTrafficPolicy>,
    #[serde(default)]
    pub subsets: Vec<RawSubset>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawSubset {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub traffic_policy: Option<RawTrafficPolicy>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawTrafficPolicy {
    #[serde(default)]
    pub load_balancer: Option<RawLoadBalancer>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawLoadBalancer {
    #[serde(default)]
    pub simple: Option<String>,
    #[serde(default)]
    pub consistent_hash: Option<RawConsistentHash>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawConsistentHash {
    #[serde(default)]
    pub http_header_name: Option<String>,
    #[serde(default)]
    pub http_cookie: Option<RawHttpCookie>,
    #[serde(default)]
    pub use_source_ip: Option<bool>,
    #[serde(default)]
    pub http_query_parameter_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawHttpCookie {
    pub name: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub ttl: Option<String>,
}

// === ServiceEntry ===

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawServiceEntry {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub ports: Vec<RawPort>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub resolution: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<RawWorkloadEntry>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPort {
    pub number: u32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub target_port: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawWorkloadEntry {
    pub address: String,
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub weight: Option<u32>,
}
