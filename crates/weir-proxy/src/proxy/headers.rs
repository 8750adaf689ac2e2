//! Header handling of a forwarding proxy: hop-by-hop headers removed in both directions,
//! `x-forwarded-for` / `x-forwarded-proto` / `x-request-id` set, upgrades recognised.

use bytes::BytesMut;
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

/// `x-request-id`.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-for`.
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-weir-flags`: the response flags of a response the proxy made or marked.
pub(crate) static X_WEIR_FLAGS: HeaderName = HeaderName::from_static("x-weir-flags");

/// Headers that belong to one connection (RFC 9110 7.6.1), plus the legacy ones proxies
/// strip. `te` is handled apart: `te: trailers` is kept (gRPC needs it). `expect` is answered
/// by the proxy itself (hyper sends `100 Continue` when the body is first read).
/// (Also spelled out in the scan of [`strip_hop_by_hop`]: keep the two lists together.)
static HOP_BY_HOP: [HeaderName; 8] = [
    header::EXPECT,
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Whether a request asks for an HTTP/1.1 protocol upgrade (WebSocket): an `Upgrade` header
/// and the `upgrade` token in `Connection`. `Upgrade: h2c` is not passed on (as in Envoy): it
/// is about this hop, and the upstream protocol is the proxy's choice.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .is_some_and(|u| !u.as_bytes().eq_ignore_ascii_case(b"h2c"))
        && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| lists_token(v, token))
}

/// Whether a comma-separated header value (`Connection`'s) lists `token`, case-insensitively.
pub(crate) fn lists_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Removes hop-by-hop headers, including those the `Connection` header names. With `upgrade`,
/// keeps `Upgrade` and sends `Connection: upgrade` on.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names first: most messages carry no hop-by-hop header at all, and
    // removing an absent name still costs a hash and a probe (eleven of them per message;
    // callgrind: 786 instructions a request before this scan).
    let any = headers.keys().any(|name| {
        // A `match` on the name compiles to a switch on its length: one compare per name.
        matches!(
            name.as_str(),
            "te" | "upgrade"
                | "expect"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "trailer"
                | "transfer-encoding"
        )
    });
    if !any {
        if upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        // Collect first: the names borrow the map. Rare (most clients send only keep-alive).
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|n| !(upgrade && n == header::UPGRADE))
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(te) = headers.get(header::TE)
        && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        headers.remove(header::TE);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Sets `x-forwarded-for` (appending the client's address), `x-forwarded-proto` (when
/// absent) and `x-request-id` (when absent).
pub(crate) fn set_forwarded(headers: &mut HeaderMap, peer: &HeaderValue) {
    // One hash and probe per header through `entry` (a lookup then an insert did two).
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Vacant(slot) => {
            slot.insert(peer.clone());
        }
        Entry::Occupied(mut slot) => {
            let existing = slot.get();
            let mut joined = Vec::with_capacity(existing.len() + 2 + peer.len());
            joined.extend_from_slice(existing.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(peer.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                slot.insert(v);
            }
        }
    }
    if let Entry::Vacant(slot) = headers.entry(&X_FORWARDED_PROTO) {
        slot.insert(HeaderValue::from_static("http"));
    }
    if let Entry::Vacant(slot) = headers.entry(&X_REQUEST_ID) {
        slot.insert(request_id());
    }
}

/// A random UUID (version 4), as Envoy generates `x-request-id`.
pub(crate) fn request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hi = weir_router::random_value();
    let lo = weir_router::random_value();
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = [0u8; 36];
    let mut j = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[j] = b'-';
            j += 1;
        }
        out[j] = HEX[usize::from(b >> 4)];
        out[j + 1] = HEX[usize::from(b & 0x0f)];
        j += 2;
    }
    // The 36 bytes go into a block shared by the ids of this thread, so that an id costs a
    // reference count instead of an allocation of its own.
    let id = ID_BLOCK.with_borrow_mut(|block| {
        if block.capacity() - block.len() < out.len() {
            *block = BytesMut::with_capacity(IDS_PER_BLOCK * out.len());
        }
        block.extend_from_slice(&out);
        block.split().freeze()
    });
    HeaderValue::from_maybe_shared(id).expect("hex and dashes are a valid header value")
}

/// Request ids sharing one allocation.
const IDS_PER_BLOCK: usize = 64;

thread_local! {
    /// The block the next request ids of this thread are written into.
    static ID_BLOCK: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// Whether a request is gRPC (`content-type: application/grpc...`): reported as
/// `request_protocol="grpc"`, forwarded over HTTP/2.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-keep"]);

        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
    }

    #[test]
    fn keeps_the_upgrade_of_an_upgrade_request() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        let mut h2c = h.clone();
        h2c.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!is_upgrade(&h2c));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn forwarded_headers() {
        let peer = HeaderValue::from_static("10.0.0.7");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &peer);
        assert_eq!(h.get(&X_FORWARDED_FOR).unwrap(), "10.0.0.7");
        assert_eq!(h.get(&X_FORWARDED_PROTO).unwrap(), "http");
        let id = h.get(&X_REQUEST_ID).unwrap().to_str().unwrap().to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");

        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR.clone(), HeaderValue::from_static("1.2.3.4"));
        h.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("abc"));
        set_forwarded(&mut h, &peer);
        assert_eq!(h.get(&X_FORWARDED_FOR).unwrap(), "1.2.3.4, 10.0.0.7");
        assert_eq!(h.get(&X_REQUEST_ID).unwrap(), "abc");
        assert_ne!(request_id(), request_id());
        // Ids share blocks: more ids than a block holds are all whole and distinct.
        let ids: std::collections::BTreeSet<HeaderValue> =
            (0..IDS_PER_BLOCK * 3).map(|_| request_id()).collect();
        assert_eq!(ids.len(), IDS_PER_BLOCK * 3);
        assert!(
            ids.iter()
                .all(|id| id.len() == 36 && id.as_bytes()[14] == b'4')
        );
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_is_left_as_is() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert("x-request-id", HeaderValue::from_static("abc"));
        let before = headers.clone();
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers, before);
        // A `te` other than trailers is still removed (the scan sees it).
        headers.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers, before);
    }

    #[test]
    fn the_scan_knows_every_hop_by_hop_header() {
        for name in HOP_BY_HOP.iter().chain([&header::TE, &header::UPGRADE]) {
            let mut headers = HeaderMap::new();
            headers.insert(name.clone(), HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut headers, false);
            assert!(headers.is_empty(), "{name} must be stripped");
        }
    }
}
