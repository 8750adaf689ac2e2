//! Where the config comes from: a [`ConfigFeed`] reads the current sources and says when they
//! changed. The sidecar validates what it reads and publishes it on its [`LiveTable`]
//! (through the [`Reloader`]); a feed never touches the table.
//!
//! [`FileFeed`] is today's feed: config files, with Kubernetes ConfigMap updates seen through
//! their `..data` symlink swap. A watch of the Kubernetes API would be one more implementation
//! (`feed/kubernetes.rs`) handed to [`crate::start_with_feed`]; nothing else changes.
//!
//! [`LiveTable`]: weir_router::LiveTable
//! [`Reloader`]: crate::Reloader

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use weir_router::ConfigSource;

mod file;

pub use file::FileFeed;

/// A future returned by [`ConfigFeed::changed`].
pub type Changed<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A source of config: what is in force now, and when that changes.
pub trait ConfigFeed: Send + Sync + 'static {
    /// What the feed reads, for logs (e.g. `config/payment-svc.yaml`).
    fn describe(&self) -> String;

    /// Reads the current sources. Blocking (file reads, a request to an API server): call it
    /// from a blocking context. A successful read is what the feed compares later changes
    /// with, whether or not the validator accepts it, so that a refused config is not tried
    /// again until it changes.
    fn read(&self) -> Result<Vec<ConfigSource>, FeedError>;

    /// Completes when the sources differ from the last [`read`](ConfigFeed::read) and are
    /// worth reading (settled: not caught half-written). Never completes for a feed that
    /// is not watched. Cancel-safe: dropping the future loses no change.
    fn changed(&self) -> Changed<'_>;
}

/// Why a feed could not read the config. The running table stays.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// A config file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path as given on the command line.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}
