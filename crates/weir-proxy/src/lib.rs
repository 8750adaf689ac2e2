//! # weir-proxy
//!
//! The weir data plane as a library: the sidecar that `weir serve` runs, usable from any tokio
//! program. It routes each request on a [`weir_router::LiveTable`] (Istio's VirtualService,
//! DestinationRule and ServiceEntry, split as Envoy splits weighted clusters), forwards it on
//! pooled keep-alive connections, counts it under Istio's metric names, and takes weight
//! changes and rollbacks over its admin API.
//!
//! [`start`] runs the whole sidecar (proxy, admin API, hot reload from a [`ConfigFeed`]) on the
//! caller's runtime; [`Proxy`] alone is the data path.
//!
//! ## Embed the data plane in your hyper server
//!
//! A [`Proxy`] is built from the [`LiveTable`](weir_router::LiveTable) it routes on, the
//! [`Metrics`] it counts into and its [`ProxyOptions`]; [`Proxy::service`] makes the
//! [`ProxyService`] for one downstream connection, a hyper and tower `Service` that routes,
//! forwards (pooled keep-alive connections, retries, timeouts, mirrors) and counts each
//! request. Here a plain hyper server mounts it in front of an upstream of its own:
//!
//! ```
//! use std::sync::Arc;
//!
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Empty, Full};
//! use hyper_util::rt::TokioIo;
//! use tokio::net::{TcpListener, TcpStream};
//! use weir_proxy::{Metrics, Proxy, ProxyOptions};
//! use weir_router::{ConfigSource, LiveTable};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An upstream answering "v1" (the payment service).
//! let upstream = TcpListener::bind("127.0.0.1:0").await?;
//! let upstream_port = upstream.local_addr()?.port();
//! tokio::spawn(async move {
//!     while let Ok((stream, _)) = upstream.accept().await {
//!         let svc = hyper::service::service_fn(|_req| async {
//!             Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from("v1"))))
//!         });
//!         tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
//!     }
//! });
//!
//! // Routes: every request for payment-svc goes to that upstream.
//! let yaml = format!(r#"
//! apiVersion: networking.istio.io/v1
//! kind: ServiceEntry
//! metadata: {{name: payment-svc}}
//! spec:
//!   hosts: [payment-svc]
//!   ports: [{{number: 80, name: http}}]
//!   resolution: STATIC
//!   endpoints: [{{address: 127.0.0.1, ports: {{http: {upstream_port}}}}}]
//! ---
//! apiVersion: networking.istio.io/v1
//! kind: VirtualService
//! metadata: {{name: payment-svc}}
//! spec:
//!   hosts: [payment-svc]
//!   http:
//!   - route: [{{destination: {{host: payment-svc}}}}]
//! "#);
//! let (live, _warnings) = LiveTable::from_sources(&[ConfigSource::new("routes.yaml", yaml)])?;
//! let metrics = Arc::new(Metrics::new("checkout"));
//! let proxy = Proxy::new(Arc::new(live), metrics, ProxyOptions::default());
//!
//! // Your server: one ProxyService per accepted connection.
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok((stream, peer)) = listener.accept().await {
//!         let svc = proxy.service(peer);
//!         tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
//!     }
//! });
//!
//! // A client of that server.
//! let (mut client, conn) = hyper::client::conn::http1::handshake(TokioIo::new(TcpStream::connect(addr).await?)).await?;
//! tokio::spawn(conn);
//! let req = http::Request::get("/pay").header("host", "payment-svc").body(Empty::<Bytes>::new())?;
//! let resp = client.send_request(req).await?;
//! assert_eq!(resp.status(), 200);
//! assert_eq!(resp.into_body().collect().await?.to_bytes(), "v1");
//!
//! // Unknown hosts get Envoy's answer: 404 with the `NR` flag.
//! let req = http::Request::get("/").header("host", "nowhere").body(Empty::<Bytes>::new())?;
//! let resp = client.send_request(req).await?;
//! assert_eq!(resp.status(), 404);
//! assert_eq!(resp.headers()["x-weir-flags"], "NR");
//! resp.into_body().collect().await?;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod capture;
pub mod feed;
mod identity;
mod metrics;
mod proxy;
mod reload;
mod server;
mod sidecar;
mod socket;
mod start;
pub mod state;
mod telemetry;

pub use feed::{ConfigFeed, FeedError, FileFeed};
pub use identity::{PodIdentity, UNKNOWN, parse_labels};
pub use metrics::{
    CONTENT_TYPE, DURATION_BUCKETS_MS, FIRST_ERROR, FIRST_SLOW, Metrics, PASSTHROUGH_CLUSTER,
};
pub use proxy::{Inbound, Proxy, ProxyOptions, ProxyService, ResponseBody, ResponseFlags};
pub use reload::{ReloadError, Reloader, Trigger};
pub use server::ConnectionLimits;
pub use server::limits::{nofile_limit, raise_nofile_limit};
pub use sidecar::{RunError, RunningSidecar, ShutdownHandle, Sidecar, SidecarOptions, StartError};
pub use start::{start, start_with_feed};
