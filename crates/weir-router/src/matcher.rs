//! Request matching: Istio's `HTTPMatchRequest`, compiled once when the table is built.
//!
//! Items of a rule's `match` list are OR-ed; the fields of one item are AND-ed. Header names are
//! case-insensitive; several values of one header are joined with `,` as Envoy does; a regex is
//! RE2 syntax and must match the whole value.

use std::borrow::Cow;

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
    /// `true` for `withoutHeaders`: the condition holds when the header does *not* match
    /// (an absent header always satisfies it).
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
#[derive(Clone, Debug, Default, PartialEq)]
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
    /// Header conditions, `headers` and `withoutHeaders` together.
    pub headers: Vec<HeaderCondition>,
    /// Query parameter conditions.
    pub query_params: Vec<QueryCondition>,
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

    /// Whether the request satisfies every condition. The hot path: no allocation unless a
    /// header has several values to join.
    #[inline]
    pub fn matches(&self, req: &RequestHead<'_>) -> bool {
        if !self.uri_matches(req.path()) {
            return false;
        }
        if let Some(m) = &self.method
            && !m.matches(req.method.as_str())
        {
            return false;
        }
        if let Some(m) = &self.scheme
            && !m.matches(req.scheme())
        {
            return false;
        }
        if let Some(m) = &self.authority
            && !m.matches(req.authority().unwrap_or(""))
        {
            return false;
        }
        for h in &self.headers {
            let hit = header_value(req, &h.name).is_some_and(|v| h.matcher.matches(&v));
            if hit == h.inverted {
                return false;
            }
        }
        self.query_params.iter().all(|q| {
            req.query_param(&q.name)
                .is_some_and(|v| q.matcher.matches(v))
        })
    }

    /// The first condition the request fails, described for humans; `None` when it matches.
    /// Agrees with [`matches`](RequestMatch::matches), which is the allocation-free form.
    pub fn first_failure(&self, req: &RequestHead<'_>) -> Option<String> {
        if let Some(m) = &self.uri {
            let path = req.path();
            if !self.uri_matches(path) {
                return Some(format!("uri {path:?} is not {}", m.describe()));
            }
        }
        if let Some(m) = &self.method {
            let method = req.method.as_str();
            if !m.matches(method) {
                return Some(format!("method {method} is not {}", m.describe()));
            }
        }
        if let Some(m) = &self.scheme {
            let scheme = req.scheme();
            if !m.matches(scheme) {
                return Some(format!("scheme {scheme} is not {}", m.describe()));
            }
        }
        if let Some(m) = &self.authority {
            let authority = req.authority().unwrap_or("");
            if !m.matches(authority) {
                return Some(format!("authority {authority:?} is not {}", m.describe()));
            }
        }
        for h in &self.headers {
            let value = header_value(req, &h.name);
            let hit = value.as_deref().is_some_and(|v| h.matcher.matches(v));
            if hit == h.inverted {
                return Some(match (h.inverted, value) {
                    (false, None) => format!("header {} is absent", h.name),
                    (false, Some(v)) => {
                        format!("header {} {v:?} is not {}", h.name, h.matcher.describe())
                    }
                    (true, v) => format!(
                        "header {} {:?} is {} (withoutHeaders)",
                        h.name,
                        v.unwrap_or_default(),
                        h.matcher.describe()
                    ),
                });
            }
        }
        for q in &self.query_params {
            match req.query_param(&q.name) {
                Some(v) if q.matcher.matches(v) => {}
                Some(v) => {
                    return Some(format!(
                        "query parameter {} {v:?} is not {}",
                        q.name,
                        q.matcher.describe()
                    ));
                }
                None => return Some(format!("query parameter {} is absent", q.name)),
            }
        }
        None
    }
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
