//! The sidecars a run reaches, when they are found by name rather than listed: a headless
//! Service's addresses, resolved again on every tick. A leaf module: the DNS sink keeps the
//! set up to date and the scrape source reads it.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::{Arc, Mutex};

/// The admin base URLs (`http://198.51.100.21:15000`) of the replicas that count now: shared
/// by the sink that maintains it and the sources that read it.
#[derive(Clone, Debug, Default)]
pub struct ReplicaSet(Arc<Mutex<Vec<String>>>);

impl ReplicaSet {
    /// The replicas now, sorted.
    pub fn urls(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set(&self, mut urls: Vec<String>) {
        urls.sort();
        urls.dedup();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = urls;
    }
}

/// Finds every address of a name: the seam between the DNS sink and the system's resolver.
pub trait Resolve: Send {
    /// Every address `host` resolves to, with `port`.
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The system's resolver (`getaddrinfo`: `/etc/hosts`, then DNS as `nsswitch.conf` says). A
/// headless Service's name resolves to one A record per ready pod.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

impl<F> Resolve for F
where
    F: Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send,
{
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self(host, port)
    }
}
