//! The parts of a request that routing reads, borrowed from whatever HTTP types the caller has.

use http::{HeaderMap, Method, Uri};

/// A borrowed view of a request head: method, URI and headers.
///
/// Build it from an [`http::Request`] with [`RequestHead::of`], or from parts with
/// [`RequestHead::new`]. Nothing is copied.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request target: origin-form (`/path?q`) for HTTP/1.1, absolute for HTTP/2.
    pub uri: &'a Uri,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

impl<'a> RequestHead<'a> {
    /// A view over the given parts.
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        RequestHead {
            method,
            uri,
            headers,
        }
    }

    /// A view over a request's head.
    pub fn of<B>(req: &'a http::Request<B>) -> Self {
        RequestHead::new(req.method(), req.uri(), req.headers())
    }

    /// The authority: the URI's (HTTP/2 `:authority`) or else the `Host` header.
    pub fn authority(&self) -> Option<&'a str> {
        match self.uri.authority() {
            Some(a) => Some(a.as_str()),
            None => self
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok()),
        }
    }

    /// The scheme; `http` when the request does not carry one (HTTP/1.1 origin-form).
    pub fn scheme(&self) -> &'a str {
        self.uri.scheme_str().unwrap_or("http")
    }

    /// The path without the query string.
    pub fn path(&self) -> &'a str {
        self.uri.path()
    }

    /// The raw query string, if any.
    pub fn query(&self) -> Option<&'a str> {
        self.uri.query()
    }

    /// The first value of a query parameter; a key without `=` has the empty value. The one
    /// query-string reader: request matching and the consistent-hash key both use it.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
}

/// `host:port` -> `host`; `[::1]:80` -> `[::1]`. A hand-written scan from the end: the port
/// is a handful of digits, and this runs on every request.
#[inline]
pub(crate) fn strip_port(authority: &str) -> &str {
    let bytes = authority.as_bytes();
    let mut i = bytes.len();
    while i > 0 && bytes[i - 1].is_ascii_digit() {
        i -= 1;
    }
    // `host:` followed by digits only, and not the inside of a bare IPv6 literal.
    if i > 0 && i < bytes.len() && bytes[i - 1] == b':' {
        let host = &authority[..i - 1];
        if !host.contains(':') || host.ends_with(']') {
            return host;
        }
    }
    authority
}
