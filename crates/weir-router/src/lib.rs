//! # weir-router
//!
//! The embeddable core of weir: it reads Istio's own YAML (VirtualService, DestinationRule,
//! ServiceEntry), refuses the weight mistakes that cause outages, and makes the routing
//! decision exactly as Envoy splits weighted clusters. No sockets, no async runtime: any
//! service can embed it.
//!
//! ```
//! use weir_router::{LiveTable, ConfigSource, RequestHead};
//!
//! let yaml = r#"
//! apiVersion: networking.istio.io/v1
//! kind: ServiceEntry
//! metadata: {name: payment-svc}
//! spec:
//!   hosts: [payment-svc]
//!   ports: [{number: 80, name: http}]
//!   resolution: STATIC
//!   endpoints:
//!   - {address: 127.0.0.1, ports: {http: 18081}, labels: {version: v1}}
//!   - {address: 127.0.0.1, ports: {http: 18082}, labels: {version: v2}}
//! ---
//! apiVersion: networking.istio.io/v1
//! kind: DestinationRule
//! metadata: {name: payment-svc}
//! spec:
//!   host: payment-svc
//!   subsets:
//!   - {name: v1, labels: {version: v1}}
//!   - {name: v2, labels: {version: v2}}
//! ---
//! apiVersion: networking.istio.io/v1
//! kind: VirtualService
//! metadata: {name: payment-svc}
//! spec:
//!   hosts: [payment-svc]
//!   http:
//!   - route:
//!     - {destination: {host: payment-svc, subset: v1}, weight: 90}
//!     - {destination: {host: payment-svc, subset: v2}, weight: 10}
//! "#;
//! let (live, _warnings) = LiveTable::from_sources(&[ConfigSource::new("inline.yaml", yaml)])
//!     .expect("a valid config");
//!
//! let req = http::Request::get("http://payment-svc/pay").body(()).unwrap();
//! let table = live.load();
//! // value % 100 = 95 falls in v2's interval [90, 100).
//! let decision = table.decide(&RequestHead::of(&req), 95).unwrap();
//! assert_eq!(decision.destination.subset.as_deref(), Some("v2"));
//!
//! // Within the subset, the DestinationRule's load balancer picks the endpoint, as the
//! // sidecar does. A service keeps the balancers beside the table: `live.extend(Balancers::build)`
//! // (see the `balance` module), so that cursors and in-flight counts survive table swaps.
//! let balancer = weir_router::balance::Balancer::for_cluster(decision.cluster, None);
//! let pick = balancer.pick(None).expect("v2 has an endpoint");
//! assert_eq!(decision.cluster.endpoints[pick.index].authority, "127.0.0.1:18082");
//! ```
//!
//! ## Embedding in a hyper service
//!
//! A service keeps one [`LiveTable`] and routes each request on the table of the moment:
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper::{Request, Response, StatusCode};
//! use weir_router::{LiveTable, RequestHead};
//!
//! async fn handle(
//!     live: Arc<LiveTable>,
//!     req: Request<hyper::body::Incoming>,
//! ) -> Result<Response<Full<Bytes>>, Infallible> {
//!     let table = live.load(); // one atomic load, held for the request
//!     let body = match table.decide_random(&RequestHead::of(&req)) {
//!         Ok(d) => format!("version {}", d.cluster.labels.destination_version),
//!         Err(no_route) => {
//!             let mut resp = Response::new(Full::new(Bytes::from(no_route.to_string())));
//!             *resp.status_mut() = StatusCode::NOT_FOUND;
//!             return Ok(resp);
//!         }
//!     };
//!     Ok(Response::new(Full::new(Bytes::from(body))))
//! }
//! # let _ = handle; // served with hyper::server::conn::http1::Builder::serve_connection
//! ```
//!
//! The weights are integers, checked when the table is built; [`validate`] is the one entry
//! point for every caller, and the [`LiveTable`] runs it on every write.

#![deny(missing_docs)]

pub mod balance;
mod compile;
mod decide;
mod duration;
mod explain;
mod finding;
mod guard;
pub mod hash;
mod live;
mod matcher;
pub mod path;
#[allow(missing_docs)]
mod raw;
mod request;
mod source;
pub mod state;
mod table;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod yaml;

pub use compile::{
    API_VERSIONS, Compiled, DEFAULT_MAX_STEP, HostMode, annotations, compile, compile_with,
    istio_default_retries,
};
pub use decide::{Decision, NoRoute, cookie_value, pick_weighted, random_value, sticky_hash};
pub use duration::parse_duration;
pub use explain::{
    DestinationShare, Explanation, ReportError, ReportOptions, RouteReport, Skipped, SkippedRule,
};
pub use finding::{Code, Finding, Findings, Location, Severity};
pub use guard::{GuardOptions, check_weights, validate};
pub use live::{Applied, Extension, LiveTable, Published, Refused, WeightChange};
pub use matcher::{HeaderCondition, Mismatch, QueryCondition, RequestMatch, StringMatcher};
pub use request::RequestHead;
pub use source::ConfigSource;
pub use table::{
    Cluster, ClusterLabels, Destination, Endpoint, Fault, HashKey, HeaderEdits, HeaderOps,
    LoadBalancer, Mirror, RetryOn, RetryPolicy, Rewrite, RouteTable, Rule, ServiceAddress,
    StableSource, StickyKey, UpstreamProtocol, VirtualService, WeightPolicy,
};
