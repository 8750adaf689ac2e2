//! The outbound listener, explicit and transparent at once. A connection the nat rules of
//! `weir init` redirected carries its original destination (`SO_ORIGINAL_DST`); one that
//! connected to the listener itself does not and is served exactly as before.
//!
//! ```text
//! accept -> original destination? no  -> HTTP, routed by Host (explicit)
//!                                  yes -> from weir's own relay, or to weir's own
//!                                         listener? -> refused (loop)
//!                                      -> non-HTTP port, or not HTTP within the sniff window
//!                                             -> TCP relay to the original destination
//!                                      -> HTTP: route by Host; else by the original
//!                                         destination (ServiceEntry `addresses`, or the
//!                                         address a VirtualService host resolves to: the
//!                                         ClusterIP case); else pass through to it
//! ```
//!
//! Every request that arrived transparently carries `x-weir-hops` on its way out; one that
//! comes back with [`MAX_HOPS`] is a loop (weir's own connections captured again) and is
//! answered 508 and counted, instead of circling. Plain TCP has no header: a captured
//! connection coming from the local port of one of weir's own relays is refused instead
//! ([`transparent::is_own_relay`]), so a TCP loop ends after one extra connection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::Entry;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use http_body::Body;
use tokio::net::TcpStream;
use weir_router::{Published, RequestHead};

use super::body::{BoxError, ResponseBody};
use super::failure::Failure;
use super::forward::route::{self, Routed};
use super::headers::is_grpc;
use super::{Downstream, Proxy, ProxyService, plain};
use crate::server::transparent::{self, SNIFF_WINDOW, Sniffed};
use crate::server::{BoxError as ServerError, NewService, NoBody, Prepared};
use crate::telemetry::Recorder;
use weir_router::telemetry::ResponseFlags;

/// The hop counter a transparently received request carries on its way out.
pub(crate) const X_WEIR_HOPS: HeaderName = HeaderName::from_static("x-weir-hops");

/// How many times a request may pass weir's transparent listener before it is a loop.
pub(crate) const MAX_HOPS: u8 = 4;

/// How long the lookup of a VirtualService host's addresses may take (the ClusterIP case).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

/// The outbound listener: makes the per-connection service with `make` (requests read by
/// hyper) and answers the requests without a body that weir's own HTTP/1.1 reader reads with
/// `bodyless`, for a downstream with or without an original destination.
pub(crate) struct OutboundListener<F, G> {
    pub proxy: Arc<Proxy>,
    pub make: F,
    pub bodyless: G,
    pub listen: SocketAddr,
}

/// The service of one outbound connection: hyper's, and the data path it calls, for the
/// requests weir's own reader reads.
pub(crate) struct OutboundConn<S> {
    hyper: S,
    proxy: ProxyService,
}

impl<S, R> hyper::service::Service<R> for OutboundConn<S>
where
    S: hyper::service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, req: R) -> S::Future {
        self.hyper.call(req)
    }
}

impl<F, G, S, B, A> NewService for OutboundListener<F, G>
where
    F: Fn(ProxyService) -> S + Send + Sync + 'static,
    S: hyper::service::Service<
            Request<hyper::body::Incoming>,
            Response = Response<B>,
            Error: Into<ServerError>,
            Future: Send + 'static,
        > + Send
        + 'static,
    B: Body<Data = Bytes, Error: Into<ServerError>> + Send + 'static,
    G: Fn(&ProxyService, Request<NoBody>) -> A + Send + Sync + 'static,
    A: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
{
    type Body = B;
    type Service = OutboundConn<S>;

    const OWN_H1: bool = true;

    fn new_service(&self, peer: SocketAddr) -> OutboundConn<S> {
        self.conn(Downstream::new(peer, None))
    }

    fn call_bodyless(
        &self,
        service: &OutboundConn<S>,
        req: Request<NoBody>,
    ) -> impl Future<Output = Result<Response<B>, Infallible>> + Send + 'static {
        (self.bodyless)(&service.proxy, req)
    }

    async fn prepare(&self, stream: TcpStream, peer: SocketAddr) -> Prepared<OutboundConn<S>> {
        let Some(original) = transparent::original_dst(&stream) else {
            return Prepared::Http(stream, self.new_service(peer));
        };
        if transparent::is_own_relay(peer) {
            tracing::warn!(%peer, %original, "a captured connection from weir's own TCP relay is refused (loop: run weir as the uid `weir init` exempts)");
            self.proxy.metrics.record_loop("own_connection");
            return Prepared::Refused;
        }
        if self.is_own_listener(original) {
            tracing::warn!(%peer, %original, "a captured connection to weir's own listener is refused (loop)");
            self.proxy.metrics.record_loop("own_listener");
            return Prepared::Refused;
        }
        let opaque = transparent::is_server_first(original.port())
            || self.proxy.live.load().is_opaque_port(original.port());
        if !opaque && transparent::sniff(&stream, SNIFF_WINDOW).await == Sniffed::Http {
            return Prepared::Http(stream, self.conn(Downstream::new(peer, Some(original))));
        }
        self.proxy.metrics.record_tcp_passthrough();
        let timeout = self.proxy.options.connect_timeout;
        Prepared::Taken(Box::pin(transparent::relay(
            stream, original, None, timeout,
        )))
    }
}

impl<F: Fn(ProxyService) -> S, G, S> OutboundListener<F, G> {
    /// The service of a connection from `down`.
    fn conn(&self, down: Downstream) -> OutboundConn<S> {
        let proxy = ProxyService::new(Arc::clone(&self.proxy), Arc::new(down));
        OutboundConn {
            hyper: (self.make)(proxy.clone()),
            proxy,
        }
    }
}

impl<F, G> OutboundListener<F, G> {
    /// Whether `original` is this listener (its port on an address of this host).
    fn is_own_listener(&self, original: SocketAddr) -> bool {
        original.port() == self.listen.port()
            && (original.ip().is_loopback()
                || original.ip() == self.listen.ip()
                || transparent::bindable(original.ip()).is_some())
    }
}

/// Counts one more pass of a transparently received request in its `x-weir-hops` header;
/// `Err` when it has passed [`MAX_HOPS`] times already.
pub(crate) fn count_hop(headers: &mut HeaderMap) -> Result<(), Failure> {
    const VALUES: [&str; MAX_HOPS as usize] = ["1", "2", "3", "4"];
    // One hash and probe (`entry`), not a lookup and an insert: this runs on every
    // transparently received request.
    match headers.entry(X_WEIR_HOPS) {
        Entry::Vacant(slot) => {
            slot.insert(HeaderValue::from_static(VALUES[0]));
            Ok(())
        }
        Entry::Occupied(mut slot) => {
            let hops = slot
                .get()
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u8>().ok())
                .unwrap_or(0);
            let next = VALUES.get(usize::from(hops)).ok_or(Failure::Loop)?;
            slot.insert(HeaderValue::from_static(next));
            Ok(())
        }
    }
}

/// Routes a transparently received request that no VirtualService claims by its Host: by
/// its original destination (a ServiceEntry `addresses` entry, else the address a
/// VirtualService host resolves to).
pub(crate) async fn by_original_dst<'t>(
    proxy: &Proxy,
    published: &'t Published,
    req: RequestHead<'_>,
    original: SocketAddr,
) -> Option<Routed<'t>> {
    let host = match published.host_for_address(original) {
        Some(host) => host.to_string(),
        None => proxy.resolved.host_for(published, original.ip()).await?,
    };
    let path = req
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = Uri::builder()
        .scheme("http")
        .authority(host.as_str())
        .path_and_query(path)
        .build()
        .ok()?;
    let head = RequestHead::new(req.method, &uri, req.headers);
    let routed = route::route(published, proxy.clusters, &head).ok()?;
    tracing::debug!(%original, %host, "routed by the original destination");
    Some(routed)
}

/// Passes a transparently received request nobody routes on to its original destination,
/// counted as Istio counts its `PassthroughCluster`.
pub(crate) async fn passthrough<B>(
    proxy: &Proxy,
    mut req: Request<B>,
    original: SocketAddr,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let host = RequestHead::of(&req)
        .authority()
        .map_or_else(|| original.to_string(), str::to_string);
    let series = proxy.metrics.passthrough_series(&host);
    let mut rec = Recorder::start(series, Arc::clone(&proxy.in_flight));
    rec.grpc = is_grpc(req.headers());
    if let Err(f) = count_hop(req.headers_mut()) {
        proxy.metrics.record_loop("hop_limit");
        return f.respond(rec, req.version(), ResponseFlags::NONE);
    }
    let stall = Some(proxy.options.limits.body_timeout).filter(|t| !t.is_zero());
    let clients = plain::Clients {
        h1: proxy.upstream.h1(),
        h2: proxy.upstream.h2(),
    };
    plain::forward(clients, original, req, rec, stall).await
}

/// Address -> the VirtualService host that resolves to it.
type AddressMap = Arc<HashMap<IpAddr, String>>;

/// The addresses the VirtualService hosts resolve to, looked up once per table generation
/// when a captured request needs them (a request to a ClusterIP with an IP in its Host).
#[derive(Debug, Default)]
pub(crate) struct ResolvedHosts {
    cache: Mutex<Option<(u64, AddressMap)>>,
    building: tokio::sync::Mutex<()>,
}

impl ResolvedHosts {
    async fn host_for(&self, published: &Published, ip: IpAddr) -> Option<String> {
        let generation = published.generation();
        let cached = |this: &Self| {
            let cache = this.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .as_ref()
                .filter(|(g, _)| *g == generation)
                .map(|(_, map)| Arc::clone(map))
        };
        if let Some(map) = cached(self) {
            return map.get(&ip).cloned();
        }
        let _building = self.building.lock().await;
        if let Some(map) = cached(self) {
            return map.get(&ip).cloned();
        }
        let mut lookups = tokio::task::JoinSet::new();
        for vs in published.virtual_services() {
            for host in vs.hosts.iter().filter(|h| !h.contains('*')) {
                let host = host.clone();
                lookups.spawn(async move {
                    let addrs: Vec<IpAddr> = {
                        let lookup = tokio::net::lookup_host((host.as_str(), 0));
                        match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                            Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                            _ => Vec::new(),
                        }
                    };
                    (host, addrs)
                });
            }
        }
        let mut map = HashMap::new();
        while let Some(Ok((host, addrs))) = lookups.join_next().await {
            for addr in addrs {
                map.entry(addr).or_insert_with(|| host.clone());
            }
        }
        tracing::debug!(
            generation,
            addresses = map.len(),
            "resolved the VirtualService hosts"
        );
        let map = Arc::new(map);
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((generation, Arc::clone(&map)));
        map.get(&ip).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hop_counter_stops_at_its_bound() {
        let mut headers = HeaderMap::new();
        for n in 1..=MAX_HOPS {
            count_hop(&mut headers).expect("under the bound");
            assert_eq!(headers[&X_WEIR_HOPS], n.to_string().as_str());
        }
        assert_eq!(count_hop(&mut headers), Err(Failure::Loop));
        // A forged or garbled counter starts again from 0 rather than failing open forever.
        headers.insert(X_WEIR_HOPS, HeaderValue::from_static("x"));
        count_hop(&mut headers).unwrap();
        assert_eq!(headers[&X_WEIR_HOPS], "1");
    }
}
