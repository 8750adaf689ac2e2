//! # weir-proxy
//!
//! The weir data plane as a library: the sidecar that `weir serve` runs, usable from any tokio
//! program. It routes each request on a [`weir_router::LiveTable`] (Istio's VirtualService,
//! DestinationRule and ServiceEntry, split as Envoy splits weighted clusters), forwards it on
//! pooled keep-alive connections, counts it under Istio's metric names, and takes weight
//! changes and rollbacks over its admin API.

#![deny(missing_docs)]

pub mod admin;
pub mod capture;
mod metrics;
mod proxy;
mod reload;
mod server;
mod sidecar;

pub use metrics::{CONTENT_TYPE, DURATION_BUCKETS_MS, Metrics};
pub use proxy::{Proxy, ProxyOptions, ResponseFlags};
pub use reload::{ReloadError, Reloader, Snapshot, Trigger};
pub use sidecar::{
    RunError, RunningSidecar, ShutdownHandle, Sidecar, SidecarOptions, StartError, start,
};
