//! The settings of the data path.

use std::time::Duration;

use weir_router::path::Normalization;

use crate::server::ConnectionLimits;

/// Settings of the data path. `workload` is required; everything else has a default.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// This sidecar's workload (`source_workload`).
    pub workload: String,
    /// Longest request head accepted, in bytes; larger is answered 431 (Envoy: 60 KiB).
    pub max_request_head: usize,
    /// Largest request body read into memory so that it can be retried or mirrored, in bytes.
    /// Larger bodies (and bodies of unknown length) are streamed: not retried, not mirrored.
    pub replay_buffer_limit: usize,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// How long an idle upstream connection stays in the pool.
    pub pool_idle_timeout: Duration,
    /// Mirrored copies in flight at most; more are dropped (and counted).
    pub max_mirrors_in_flight: usize,
    /// Timeout of a mirrored copy when its rule has none.
    pub mirror_timeout: Duration,
    /// Worker threads, each with its own single-threaded runtime accepting on the listener
    /// and its own idle upstream connections (as nginx's worker processes): a request never
    /// changes threads. 0 serves on the caller's runtime instead.
    pub workers: usize,
    /// How request paths are normalised before matching and forwarding (Istio's default:
    /// [`Normalization::Base`]).
    pub path_normalization: Normalization,
    /// Deadlines and the connection cap of the downstream connections.
    pub limits: ConnectionLimits,
    /// An access log line per request (Envoy's format); `None`: off.
    pub access_log: Option<std::sync::Arc<crate::access_log::AccessLog>>,
    /// Runs on a worker thread a second after connections closed on it (at most once a
    /// second): gives the memory they freed back to the system. An allocator that keeps
    /// freed pages until its next allocation (mimalloc) otherwise stays at the peak of the
    /// last connection burst on an idle sidecar. weir's binary passes mimalloc's
    /// `mi_collect`; `None`: nothing.
    pub release_memory: Option<fn()>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            workload: "weir".to_string(),
            max_request_head: 60 * 1024,
            replay_buffer_limit: 64 * 1024,
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(60),
            max_mirrors_in_flight: 256,
            mirror_timeout: Duration::from_secs(10),
            workers: 0,
            path_normalization: Normalization::Base,
            limits: ConnectionLimits::DEFAULT,
            access_log: None,
            release_memory: None,
        }
    }
}
