//! Request matching: Istio's `HTTPMatchRequest`, compiled once when the table is built.
//!
//! Items of a rule's `match` list are OR-ed; the fields of one item are AND-ed. Header names are
//! case-insensitive; several values of one header are joined with `,` as Envoy does; a regex is
//! RE2 syntax and must match the whole value.

use std::borrow::Cow;
use std::fmt;

use http::HeaderName;
use regex::Regex;

use crate::request::RequestHead;

/// How one string value is matched.
#[derive(Clone, Debug)]
pub enum StringMatcher {
    /// The value equals this string.
    Exact(String),
    /// The value starts with this string.
    Prefix(String),
    /// The whole value matches this regex (anchored at both ends when compiled).
    Regex(Regex),
    /// The value is present, whatever it is (`{}` in Istio).
    Present,
}

impl PartialEq for StringMatcher {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (StringMatcher::Exact(a), StringMatcher::Exact(b)) => a == b,
            (StringMatcher::Prefix(a), StringMatcher::Prefix(b)) => a == b,
            (StringMatcher::Regex(a), StringMatcher::Regex(b)) => a.as_str() == b.as_str(),
            (StringMatcher::Present, StringMatcher::Present) => true,
            _ => false,
        }
    }
}

impl StringMatcher {
    /// Compiles a regex so that it must match the whole value, as Envoy's `safe_regex` does.
    pub fn regex(pattern: &str) -> Result<Self, regex::Error> {
        Regex::new(&format!("^(?:{pattern})$")).map(StringMatcher::Regex)
    }

    /// Whether `value` matches.
    #[inline]
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatcher::Exact(s) => value == s,
            StringMatcher::Prefix(p) => value.starts_with(p.as_str()),
            StringMatcher::Regex(r) => r.is_match(value),
            StringMatcher::Present => true,
        }
    }

    /// Whether `value` matches, ignoring ASCII case for exact and prefix (Istio's
    /// `ignoreUriCase`, which leaves regex matches case-sensitive).
    #[inline]
    pub fn matches_ignore_case(&self, value: &str) -> bool {
        match self {
            StringMatcher::Exact(s) => value.eq_ignore_ascii_case(s),
            StringMatcher::Prefix(p) => value
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
            other => other.matches(value),
        }
    }

    /// The matcher written the way Istio writes it, for explanations.
    pub fn describe(&self) -> String {
        match self {
            StringMatcher::Exact(s) => format!("exact {s:?}"),
            StringMatcher::Prefix(s) => format!("prefix {s:?}"),
            StringMatcher::Regex(r) => {
                let s = r.as_str();
                let inner = s
                    .strip_prefix("^(?:")
                    .and_then(|s| s.strip_suffix(")$"))
                    .unwrap_or(s);
                format!("regex {inner:?}")
            }
            StringMatcher::Present => "present".to_string(),
        }
    }
}

/// A header condition: the header must match (or, under `withoutHeaders`, must not).
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderCondition {
    /// The header's name, lowercased.
    pub name: HeaderName,
    /// How its value is matched.
    pub matcher: StringMatcher,
    /// `true` for `withoutHeaders`: the condition holds when the header does *not* match.
    /// As Istio configures Envoy (`treat_missing_header_as_empty`), an absent header is the
    /// empty string there, so `{regex: ".*"}` and `{exact: ""}` fail on a request without
    /// it; only `{}` (presence) holds for an absent header.
    pub inverted: bool,
}

/// A query parameter condition.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryCondition {
    /// The parameter's name, compared byte for byte (not decoded), as Envoy does.
    pub name: String,
    /// How its value is matched.
    pub matcher: StringMatcher,
}

/// One item of a rule's `match` list: every condition must hold.
///
/// Equality ignores `name`, as Istio clears it before comparing matches (IST0130).
#[derive(Clone, Debug, Default)]
pub struct RequestMatch {
    /// The match item's `name`, if any.
    pub name: Option<String>,
    /// Condition on the path (without the query string).
    pub uri: Option<StringMatcher>,
    /// Exact and prefix URI matches ignore ASCII case.
    pub ignore_uri_case: bool,
    /// Condition on the scheme (`http` when the request does not say).
    pub scheme: Option<StringMatcher>,
    /// Condition on the method.
    pub method: Option<StringMatcher>,
    /// Condition on the authority (the Host header for HTTP/1.1).
    pub authority: Option<StringMatcher>,
    /// Condition on the port the request was addressed to: the Host's port, else 80 for
    /// `http` and 443 for `https` (Istio's `port`, the service port the caller used).
    pub port: Option<u16>,
    /// Header conditions, `headers` and `withoutHeaders` together.
    pub headers: Vec<HeaderCondition>,
    /// Query parameter conditions.
    pub query_params: Vec<QueryCondition>,
}

impl PartialEq for RequestMatch {
    fn eq(&self, other: &Self) -> bool {
        self.uri == other.uri
            && self.ignore_uri_case == other.ignore_uri_case
            && self.scheme == other.scheme
            && self.method == other.method
            && self.authority == other.authority
            && self.port == other.port
            && self.headers == other.headers
            && self.query_params == other.query_params
    }
}

/// The first condition of a match item that a request fails, borrowed from the matcher and
/// the request. Its `Display` is the explanation `weir explain` prints.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Mismatch<'a> {
    /// The path does not match `uri`.
    Uri {
        /// The request's path.
        path: &'a str,
        /// The condition.
        matcher: &'a StringMatcher,
    },
    /// The method does not match.
    Method {
        /// The request's method.
        method: &'a str,
        /// The condition.
        matcher: &'a StringMatcher,
    },
    /// The scheme does not match.
    Scheme {
        /// The request's scheme.
        scheme: &'a str,
        /// The condition.
        matcher: &'a StringMatcher,
    },
    /// The authority does not match.
    Authority {
        /// The request's authority (empty when it has none).
        authority: &'a str,
        /// The condition.
        matcher: &'a StringMatcher,
    },
    /// The request was addressed to another port.
    Port {
        /// The request's port.
        port: u16,
        /// The port the match item wants.
        want: u16,
    },
    /// A header the match item needs is absent.
    HeaderAbsent {
        /// The header.
        name: &'a HeaderName,
    },
    /// A header's value does not match.
    Header {
        /// The header.
        name: &'a HeaderName,
        /// Its value (several values joined with `,`).
        value: Cow<'a, str>,
        /// The condition.
        matcher: &'a StringMatcher,
    },
    /// A `withoutHeaders` header matches (an absent header counts as the empty string).
    Without {
        /// The header.
        name: &'a HeaderName,
        /// Its value, empty when absent.
        value: Cow<'a, str>,
        /// The condition it must not meet.
        matcher: &'a StringMatcher,
    },
    /// A query parameter the match item needs is absent.
    QueryAbsent {
        /// The parameter.
        name: &'a str,
    },
    /// A query parameter's value does not match.
    Query {
        /// The parameter.
        name: &'a str,
        /// Its value.
        value: &'a str,
        /// The condition.
        matcher: &'a StringMatcher,
    },
}

impl fmt::Display for Mismatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Uri { path, matcher } => {
                write!(f, "uri {path:?} is not {}", matcher.describe())
            }
            Mismatch::Method { method, matcher } => {
                write!(f, "method {method} is not {}", matcher.describe())
            }
            Mismatch::Scheme { scheme, matcher } => {
                write!(f, "scheme {scheme} is not {}", matcher.describe())
            }
            Mismatch::Authority { authority, matcher } => {
                write!(f, "authority {authority:?} is not {}", matcher.describe())
            }
            Mismatch::Port { port, want } => write!(f, "port {port} is not {want}"),
            Mismatch::HeaderAbsent { name } => write!(f, "header {name} is absent"),
            Mismatch::Header {
                name,
                value,
                matcher,
            } => write!(f, "header {name} {value:?} is not {}", matcher.describe()),
            Mismatch::Without {
                name,
                value,
                matcher,
            } => write!(
                f,
                "header {name} {value:?} is {} (withoutHeaders)",
                matcher.describe()
            ),
            Mismatch::QueryAbsent { name } => write!(f, "query parameter {name} is absent"),
            Mismatch::Query {
                name,
                value,
                matcher,
            } => write!(
                f,
                "query parameter {name} {value:?} is not {}",
                matcher.describe()
            ),
        }
    }
}

// === impl RequestMatch ===

impl RequestMatch {
    /// Whether this item has no condition at all, and so matches every request.
    pub fn is_catch_all(&self) -> bool {
        let uri_any = match &self.uri {
            None => true,
            Some(StringMatcher::Prefix(p)) => p == "/",
            Some(StringMatcher::Present) => true,
            _ => false,
        };
        uri_any
            && self.scheme.is_none()
            && self.method.is_none()
            && self.authority.is_none()
            && self.port.is_none()
            && self.headers.is_empty()
            && self.query_params.is_empty()
    }

    /// Whether the path satisfies the `uri` condition (true when there is none).
    #[inline]
    fn uri_matches(&self, path: &str) -> bool {
        match &self.uri {
            None => true,
            Some(m) if self.ignore_uri_case => m.matches_ignore_case(path),
            Some(m) => m.matches(path),
        }
    }

    /// Whether the request satisfies every condition. The hot path: the same evaluator as
    /// [`check`](RequestMatch::check), with the explanation compiled away; no allocation
    /// unless a header has several values to join.
    #[inline]
    pub fn matches(&self, req: &RequestHead<'_>) -> bool {
        self.eval(req, |_| ()).is_ok()
    }

    /// `Ok` when the request satisfies every condition, else the first condition it fails, in
    /// the order uri, method, scheme, authority, port, headers, query parameters.
    /// Allocation-free unless a header has several values to join.
    pub fn check<'a>(&'a self, req: &RequestHead<'a>) -> Result<(), Mismatch<'a>> {
        self.eval(req, |m| m)
    }

    /// The one evaluator behind [`matches`](RequestMatch::matches) and
    /// [`check`](RequestMatch::check). `fail` turns the first failed condition into the error;
    /// `matches` discards it, and since this is inlined the `Mismatch` is never built there
    /// (callgrind: returning it from an out-of-line `check` cost ~30 instructions a decision).
    #[inline(always)]
    fn eval<'a, E>(
        &'a self,
        req: &RequestHead<'a>,
        fail: impl Fn(Mismatch<'a>) -> E,
    ) -> Result<(), E> {
        if let Some(m) = &self.uri {
            let path = req.path();
            if !self.uri_matches(path) {
                return Err(fail(Mismatch::Uri { path, matcher: m }));
            }
        }
        if let Some(m) = &self.method {
            let method = req.method.as_str();
            if !m.matches(method) {
                return Err(fail(Mismatch::Method { method, matcher: m }));
            }
        }
        if let Some(m) = &self.scheme {
            let scheme = req.scheme();
            if !m.matches(scheme) {
                return Err(fail(Mismatch::Scheme { scheme, matcher: m }));
            }
        }
        if let Some(m) = &self.authority {
            let authority = req.authority().unwrap_or("");
            if !m.matches(authority) {
                return Err(fail(Mismatch::Authority {
                    authority,
                    matcher: m,
                }));
            }
        }
        if let Some(want) = self.port {
            let port = request_port(req);
            if port != want {
                return Err(fail(Mismatch::Port { port, want }));
            }
        }
        for h in &self.headers {
            let value = header_value(req, &h.name);
            if h.inverted {
                let hit = match (&value, &h.matcher) {
                    (None, StringMatcher::Present) => false,
                    (None, m) => m.matches(""),
                    (Some(v), m) => m.matches(v),
                };
                if hit {
                    return Err(fail(Mismatch::Without {
                        name: &h.name,
                        value: value.unwrap_or(Cow::Borrowed("")),
                        matcher: &h.matcher,
                    }));
                }
            } else {
                match value {
                    None => return Err(fail(Mismatch::HeaderAbsent { name: &h.name })),
                    Some(v) if !h.matcher.matches(&v) => {
                        return Err(fail(Mismatch::Header {
                            name: &h.name,
                            value: v,
                            matcher: &h.matcher,
                        }));
                    }
                    Some(_) => {}
                }
            }
        }
        for q in &self.query_params {
            match req.query_param(&q.name) {
                Some(v) if q.matcher.matches(v) => {}
                Some(v) => {
                    return Err(fail(Mismatch::Query {
                        name: &q.name,
                        value: v,
                        matcher: &q.matcher,
                    }));
                }
                None => return Err(fail(Mismatch::QueryAbsent { name: &q.name })),
            }
        }
        Ok(())
    }
}

/// The port a request was addressed to: the authority's, else the scheme's default.
#[inline]
fn request_port(req: &RequestHead<'_>) -> u16 {
    let authority = req.authority().unwrap_or("");
    let host = crate::request::strip_port(authority);
    authority
        .get(host.len() + 1..)
        .and_then(|p| p.parse().ok())
        .unwrap_or(if req.scheme() == "https" { 443 } else { 80 })
}

/// A header's value, several values joined with `,` as Envoy joins them.
#[inline]
fn header_value<'r>(req: &RequestHead<'r>, name: &HeaderName) -> Option<Cow<'r, str>> {
    let mut values = req.headers.get_all(name).iter();
    let first = values.next()?;
    let first = first.to_str().ok()?;
    match values.next() {
        None => Some(Cow::Borrowed(first)),
        Some(second) => {
            let mut joined = String::from(first);
            joined.push(',');
            joined.push_str(second.to_str().ok()?);
            for v in values {
                joined.push(',');
                joined.push_str(v.to_str().ok()?);
            }
            Some(Cow::Owned(joined))
        }
    }
}
