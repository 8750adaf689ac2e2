//! The request head as it goes upstream: hop-by-hop headers out, `x-forwarded-*` in, `Host`
//! (or `:authority`) of the destination or the rule's `rewrite.authority`, the rule's and the
//! destination's header edits, `rewrite.uri`, and the upstream protocol.

use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Version, header};
use weir_router::{RequestHead, Rule, StringMatcher, UpstreamProtocol};

use super::super::headers::{set_forwarded, strip_hop_by_hop};
use super::super::upstream::Protocol;
use super::route::Routed;

/// What the rewrite decided besides the edited headers.
#[derive(Debug)]
pub(crate) struct Rewritten {
    /// Path and query sent upstream.
    pub path: PathAndQuery,
    /// How the request travels.
    pub protocol: Protocol,
    /// The consistent-hash key, read before the headers are edited.
    pub hash: Option<u64>,
}

/// Rewrites `parts` in place for the upstream. `peer` is the client's address as a header
/// value (`x-forwarded-for`); `grpc` whether the request is gRPC.
pub(crate) fn head(
    parts: &mut Parts,
    routed: &Routed<'_>,
    peer: &http::HeaderValue,
    peer_ip: Option<std::net::IpAddr>,
    upgrade: bool,
    grpc: bool,
) -> Rewritten {
    let rule = routed.decision.rule;
    let request = RequestHead::new(&parts.method, &parts.uri, &parts.headers);
    let hash = weir_router::balance::hash_key(routed.cluster.balancer.policy(), &request, peer_ip);
    let path = upstream_path(rule, routed.decision.matched, &request);

    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade);
    set_forwarded(headers, peer);
    let authority = rule
        .rewrite
        .as_ref()
        .and_then(|r| r.authority.clone())
        .unwrap_or_else(|| routed.cluster.host.clone());
    headers.insert(header::HOST, authority);
    rule.headers.request.apply(headers);
    routed.decision.destination.headers.request.apply(headers);

    // HTTP/2 upstream when the ServiceEntry port says so (HTTP2, GRPC), as Envoy picks its
    // codec from the port; and for gRPC arriving over HTTP/2, which needs trailers end to end.
    // Everything else goes upstream over HTTP/1.1. An upgrade is HTTP/1.1 only.
    let protocol = if upgrade {
        Protocol::Upgrade
    } else if routed.decision.cluster.protocol == UpstreamProtocol::Http2
        || (parts.version == Version::HTTP_2 && grpc)
    {
        // `:authority` is the endpoint's; a differing Host is not allowed beside it.
        headers.remove(header::HOST);
        Protocol::Http2
    } else {
        Protocol::Pooled
    };
    Rewritten {
        path,
        protocol,
        hash,
    }
}

/// The path and query sent upstream: the request's, with `rewrite.uri` applied. When the
/// matching item's `uri` condition is a prefix, the prefix is replaced; otherwise the whole
/// path is (Istio's semantics).
pub(crate) fn upstream_path(
    rule: &Rule,
    matched: Option<usize>,
    head: &RequestHead<'_>,
) -> PathAndQuery {
    let original = || {
        head.uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"))
    };
    let Some(new) = rule.rewrite.as_ref().and_then(|r| r.uri.as_deref()) else {
        return original();
    };
    let path = head.path();
    // The match item the router found (no second run of the matchers).
    let matched = matched.and_then(|i| rule.matches.get(i));
    let rest = match matched.and_then(|m| m.uri.as_ref()) {
        Some(StringMatcher::Prefix(p)) => path.get(p.len()..).unwrap_or(""),
        _ => "",
    };
    let mut rewritten =
        String::with_capacity(new.len() + rest.len() + head.query().map_or(0, |q| q.len() + 1));
    rewritten.push_str(new);
    if rewritten.ends_with('/') && rest.starts_with('/') {
        rewritten.push_str(&rest[1..]);
    } else {
        rewritten.push_str(rest);
    }
    if rewritten.is_empty() {
        rewritten.push('/');
    }
    if let Some(q) = head.query() {
        rewritten.push('?');
        rewritten.push_str(q);
    }
    PathAndQuery::try_from(rewritten).unwrap_or_else(|_| original())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use weir_router::LiveTable;
    use weir_router::testing::ServiceFixture;

    fn rule_table(matches: &str, rewrite: &str) -> LiveTable {
        ServiceFixture::new("svc")
            .endpoints([1001], None)
            .rule(&format!(
                "{{match: {matches}, rewrite: {rewrite}, route: [{{destination: {{host: svc}}}}]}}"
            ))
            .live()
    }

    #[test]
    fn uri_rewrite_replaces_the_matched_prefix_or_the_whole_path() {
        let rows = [
            (
                "[{uri: {prefix: /api/v1}}]",
                "{uri: /v2}",
                "/api/v1/users?x=1",
                "/v2/users?x=1",
            ),
            (
                "[{uri: {prefix: /api/}}]",
                "{uri: /}",
                "/api/users",
                "/users",
            ),
            ("[{uri: {exact: /old}}]", "{uri: /new}", "/old?q", "/new?q"),
            ("[{uri: {regex: /o.*}}]", "{uri: /new}", "/old/x", "/new"),
            (
                "[{headers: {x-a: {exact: '1'}}}, {uri: {prefix: /p}}]",
                "{uri: /q}",
                "/p/z",
                "/q/z",
            ),
        ];
        for (matches, rewrite, path, want) in rows {
            let live = rule_table(matches, rewrite);
            let table = live.load();
            let req = Request::get(format!("http://svc{path}")).body(()).unwrap();
            let head = RequestHead::of(&req);
            let d = table.decide(&head, 0).expect("routes");
            assert_eq!(
                upstream_path(d.rule, d.matched, &head).as_str(),
                want,
                "{matches} {rewrite} {path}"
            );
        }
    }
}
