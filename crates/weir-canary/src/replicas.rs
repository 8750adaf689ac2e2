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
/// `NAME:PORT` (`--admin-dns`), the port after the last colon; an IPv6 name may be in
/// brackets.
pub fn parse_name_port(text: &str) -> Result<(String, u16), String> {
    let (name, port) = text.rsplit_once(':').ok_or_else(|| {
        format!("{text:?} has no port: write NAME:PORT, e.g. checkout-admin:15000")
    })?;
    let port = port.parse().map_err(|_| {
        format!("{port:?} is not a port: write NAME:PORT, e.g. checkout-admin:15000")
    })?;
    if name.is_empty() {
        return Err(format!("{text:?} has no name: write NAME:PORT"));
    }
    Ok((
        name.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    ))
}

#[cfg(test)]
mod name_port_tests {
    use super::parse_name_port;

    #[test]
    fn names_and_ports() {
        assert_eq!(
            parse_name_port("checkout-admin:15000"),
            Ok(("checkout-admin".to_string(), 15000))
        );
        assert_eq!(
            parse_name_port("[::1]:15000"),
            Ok(("::1".to_string(), 15000))
        );
        assert!(parse_name_port("checkout-admin").is_err());
        assert!(parse_name_port(":15000").is_err());
        assert!(parse_name_port("x:port").is_err());
    }
}
