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

#![deny(missing_docs)]

pub mod admin;
pub mod capture;
pub mod feed;
mod metrics;
mod proxy;
mod reload;
mod server;
mod sidecar;
mod start;

pub use feed::{ConfigFeed, FeedError, FileFeed};
pub use metrics::{CONTENT_TYPE, DURATION_BUCKETS_MS, Metrics};
pub use proxy::{Proxy, ProxyOptions, ResponseFlags};
pub use reload::{ReloadError, Reloader, Trigger};
pub use sidecar::{RunError, RunningSidecar, ShutdownHandle, Sidecar, SidecarOptions, StartError};
pub use start::{start, start_with_feed};
