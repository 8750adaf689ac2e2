//! One request through the proxy: route, fault, mirror, forward with timeout and retries,
//! answer. Every exit path sets the [`Recorder`]'s outcome, so every request is counted once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use weir_router::{RequestHead, RetryPolicy, Rule, StringMatcher, UpstreamProtocol, random_value};

use super::body::{Recorder, ResponseBody, UpstreamBody};
use super::clusters::hash_key;
use super::headers::{X_WEIR_FLAGS, is_grpc, is_upgrade, set_forwarded, strip_hop_by_hop};
use super::{Downstream, Proxy, mirror, pool};
use weir_router::telemetry::ResponseFlags;

/// The request body as the proxy holds it before forwarding.
pub(super) enum Payload {
    /// No body.
    Empty,
    /// Read into memory: can be sent again.
    Buffered(Bytes),
    /// Streamed once.
    Stream(Incoming),
}

/// Why a try got no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// The subset has no endpoint.
    NoHealthy,
    /// Connecting failed.
    Connect,
    /// The connection closed or was reset before the response head.
    Reset,
    /// The upstream spoke invalid HTTP.
    Protocol,
    /// The per-try timeout expired.
    TryTimeout,
    /// The route timeout expired.
    RouteTimeout,
}

/// Routes and forwards one request. Never fails: errors are responses.
pub(super) async fn handle(
    proxy: Arc<Proxy>,
    down: Arc<Downstream>,
    mut req: Request<Incoming>,
) -> Response<ResponseBody> {
    let start = Instant::now();
    let mut rec = proxy.start();
    rec.grpc = is_grpc(req.headers());
    let version = req.version();
    let table = proxy.live.load();
    let decision = match table.decide(&RequestHead::of(&req), random_value()) {
        Ok(d) => d,
        Err(no_route) => {
            tracing::debug!(%no_route, "no route");
            return local(
                rec,
                version,
                StatusCode::NOT_FOUND,
                ResponseFlags::NR,
                "no route: no VirtualService or rule matches the request\n",
            );
        }
    };
    let runtime = proxy.clusters.for_table(&table, &proxy.metrics);
    let cluster = runtime.cluster(decision.destination.cluster);
    rec.series = cluster.series.clone();
    let rule = decision.rule;
    let mut flags = ResponseFlags::NONE;

    if let Some(fault) = &rule.fault {
        if let Some((delay, share)) = fault.delay
            && chance(share)
        {
            tokio::time::sleep(delay).await;
            flags |= ResponseFlags::DI;
        }
        if let Some((status, share)) = fault.abort
            && chance(share)
        {
            return local(
                rec,
                version,
                status,
                flags | ResponseFlags::FI,
                "fault filter abort\n",
            );
        }
    }

    let upgrade = version == Version::HTTP_11 && is_upgrade(req.headers());
    let on_downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let head = RequestHead::new(&parts.method, &parts.uri, &parts.headers);
    let hash = hash_key(&cluster.load_balancer, &head, down.peer.ip());
    let path = upstream_path(rule, &head);

    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade);
    set_forwarded(headers, &down.peer_header);
    let authority = rule
        .rewrite
        .as_ref()
        .and_then(|r| r.authority.clone())
        .unwrap_or_else(|| cluster.host.clone());
    headers.insert(header::HOST, authority);
    rule.headers.request.apply(headers);
    decision.destination.headers.request.apply(headers);

    // HTTP/2 upstream when the ServiceEntry port says so (HTTP2, GRPC), as Envoy picks its
    // codec from the port; and for gRPC arriving over HTTP/2, which needs trailers end to end.
    // Everything else goes upstream over HTTP/1.1. An upgrade is HTTP/1.1 only.
    let h2 = !upgrade
        && (decision.cluster.protocol == UpstreamProtocol::Http2
            || (version == Version::HTTP_2 && rec.grpc));
    if h2 {
        // `:authority` is the endpoint's; a differing Host is not allowed beside it.
        headers.remove(header::HOST);
    }

    let policy = rule.retries.as_ref().filter(|p| p.attempts > 0);
    let deadline = rule.timeout.map(|t| start + t);
    let payload = match prepare_body(
        &proxy,
        body,
        &parts.headers,
        upgrade,
        policy.is_some() || !rule.mirrors.is_empty(),
        deadline,
    )
    .await
    {
        Ok(p) => p,
        Err(flag) => {
            let status = if flag == ResponseFlags::UT {
                StatusCode::REQUEST_TIMEOUT
            } else {
                StatusCode::BAD_REQUEST
            };
            return local(rec, version, status, flag, "request body not received\n");
        }
    };

    if !upgrade {
        for m in &rule.mirrors {
            if chance(m.per_million) {
                mirror::send(
                    &proxy,
                    runtime.cluster(m.cluster),
                    &parts.method,
                    &path,
                    &parts.headers,
                    &payload,
                    rule.timeout,
                );
            }
        }
    }

    let replayable = !matches!(payload, Payload::Stream(_)) && !upgrade;
    let max_tries = 1 + if replayable {
        policy.map_or(0, |p| p.attempts)
    } else {
        0
    };
    let (buffered, mut stream) = match payload {
        Payload::Empty => (None, None),
        Payload::Buffered(b) => (Some(b), None),
        Payload::Stream(s) => (None, Some(s)),
    };
    let client = if h2 { &proxy.h2 } else { &proxy.h1 };
    // Plain HTTP/1.1 requests go through weir's own per-endpoint pool; HTTP/2 and upgrades
    // through hyper-util's client.
    let pooled = !h2 && !upgrade;
    let mut headers = Some(parts.headers);
    let mut tries = 0;
    let outcome = loop {
        tries += 1;
        let Some((endpoint, lease)) = cluster.pick(hash) else {
            break Err(Failure::NoHealthy);
        };
        let body = match (&buffered, stream.take()) {
            (Some(b), _) => UpstreamBody::Full(Some(b.clone())),
            (None, Some(s)) => UpstreamBody::Stream(s),
            (None, None) => UpstreamBody::Empty,
        };
        let mut upstream = Request::new(body);
        *upstream.method_mut() = parts.method.clone();
        // weir's own pool sends origin-form on a connection to the endpoint; hyper-util's
        // client (HTTP/2, upgrades) needs the endpoint in an absolute URI.
        *upstream.uri_mut() = if pooled {
            Uri::from(path.clone())
        } else {
            endpoint_uri(&endpoint.authority, &path)
        };
        *upstream.version_mut() = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *upstream.headers_mut() = if tries < max_tries {
            headers.clone().unwrap_or_default()
        } else {
            headers.take().unwrap_or_default()
        };
        let try_deadline = match (deadline, policy.and_then(|p| p.per_try_timeout)) {
            (Some(d), Some(t)) => Some((d.min(Instant::now() + t), d <= Instant::now() + t)),
            (Some(d), None) => Some((d, true)),
            (None, Some(t)) => Some((Instant::now() + t, false)),
            (None, None) => None,
        };
        let sent = async {
            if pooled {
                pool::send(
                    endpoint.idle(),
                    endpoint.authority.as_str(),
                    upstream,
                    proxy.pool,
                )
                .await
                .map_err(Failure::from)
            } else {
                client.request(upstream).await.map_err(classify)
            }
        };
        let result = match try_deadline {
            None => sent.await,
            Some((at, is_route)) => match tokio::time::timeout_at(at, sent).await {
                Ok(r) => r,
                Err(_) if is_route => Err(Failure::RouteTimeout),
                Err(_) => Err(Failure::TryTimeout),
            },
        };
        let retry = tries < max_tries
            && match (&result, policy) {
                (Ok(resp), Some(p)) => retriable_status(p, resp.status()),
                (Err(f), Some(p)) => retriable_failure(p, *f),
                (_, None) => false,
            };
        if !retry {
            if tries > 1 && tries == max_tries {
                let exhausted = match (&result, policy) {
                    (Ok(resp), Some(p)) => retriable_status(p, resp.status()),
                    (Err(f), Some(p)) => retriable_failure(p, *f),
                    _ => false,
                };
                if exhausted {
                    flags |= ResponseFlags::URX;
                }
            }
            break result.map(|r| (r, lease));
        }
        drop(result);
        drop(lease);
        let pause = backoff(tries);
        if deadline.is_some_and(|d| Instant::now() + pause >= d) {
            break Err(Failure::RouteTimeout);
        }
        tokio::time::sleep(pause).await;
    };

    let (mut resp, lease) = match outcome {
        Ok(ok) => ok,
        Err(failure) => {
            let (status, flag, text) = match failure {
                Failure::NoHealthy => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ResponseFlags::UH,
                    "no healthy upstream\n",
                ),
                Failure::Connect => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ResponseFlags::UF,
                    "upstream connect error or disconnect/reset before headers. reset reason: connection failure\n",
                ),
                Failure::Reset => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ResponseFlags::UC,
                    "upstream connect error or disconnect/reset before headers. reset reason: connection termination\n",
                ),
                Failure::Protocol => (
                    StatusCode::BAD_GATEWAY,
                    ResponseFlags::UC,
                    "upstream protocol error\n",
                ),
                Failure::TryTimeout | Failure::RouteTimeout => (
                    StatusCode::GATEWAY_TIMEOUT,
                    ResponseFlags::UT,
                    "upstream request timeout\n",
                ),
            };
            return local(rec, version, status, flags | flag, text);
        }
    };

    let status = resp.status();
    let tunnel = upgrade && status == StatusCode::SWITCHING_PROTOCOLS;
    if let (true, Some(downstream)) = (tunnel, on_downstream_upgrade) {
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(downstream, upstream) {
                Ok((d, u)) => {
                    let (mut d, mut u) = (TokioIo::new(d), TokioIo::new(u));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut d, &mut u).await {
                        tracing::debug!(error = %e, "upgraded connection closed");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
    }
    let (mut rparts, rbody) = resp.into_parts();
    strip_hop_by_hop(&mut rparts.headers, tunnel);
    rule.headers.response.apply(&mut rparts.headers);
    decision
        .destination
        .headers
        .response
        .apply(&mut rparts.headers);
    if !flags.is_empty() {
        mark(&mut rparts.headers, flags);
    }
    rparts.version = version;
    rec.outcome(status, flags);
    rec.lease = Some(lease);
    Response::from_parts(rparts, ResponseBody::upstream(rbody, rec))
}

/// A response made by the proxy.
fn local(
    mut rec: Recorder,
    version: Version,
    status: StatusCode,
    flags: ResponseFlags,
    text: &'static str,
) -> Response<ResponseBody> {
    rec.outcome(status, flags);
    let grpc = rec.grpc;
    let mut resp = Response::new(ResponseBody::local(text, rec));
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if grpc {
        // gRPC clients read the status from here when there is no trailer (UNAVAILABLE).
        headers.insert("grpc-status", HeaderValue::from_static("14"));
    }
    mark(headers, flags);
    resp
}

fn mark(headers: &mut HeaderMap, flags: ResponseFlags) {
    if let Ok(v) = HeaderValue::from_str(&flags.to_string()) {
        headers.insert(X_WEIR_FLAGS.clone(), v);
    }
}

/// Whether an event with a share in millionths happens this time.
#[inline]
fn chance(per_million: u32) -> bool {
    per_million >= 1_000_000 || random_value() % 1_000_000 < u64::from(per_million)
}

/// Reads the body into memory when it may be sent more than once (retries, mirrors) and is
/// small and of known length; otherwise leaves it to stream.
async fn prepare_body(
    proxy: &Proxy,
    body: Incoming,
    headers: &HeaderMap,
    upgrade: bool,
    replay_wanted: bool,
    deadline: Option<Instant>,
) -> Result<Payload, ResponseFlags> {
    if body.is_end_stream() {
        return Ok(Payload::Empty);
    }
    let limit = proxy.options.replay_buffer_limit;
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= limit as u64);
    if upgrade || !replay_wanted || !small {
        return Ok(Payload::Stream(body));
    }
    let collect = Limited::new(body, limit).collect();
    let collected = match deadline {
        Some(at) => tokio::time::timeout_at(at, collect)
            .await
            .map_err(|_| ResponseFlags::UT)?,
        None => collect.await,
    };
    match collected {
        Ok(c) => Ok(Payload::Buffered(c.to_bytes())),
        Err(e) => {
            tracing::debug!(error = %e, "reading the request body");
            Err(ResponseFlags::DC)
        }
    }
}

/// The path and query sent upstream: the request's, with `rewrite.uri` applied. When the
/// matching item's `uri` condition is a prefix, the prefix is replaced; otherwise the whole
/// path is (Istio's semantics).
fn upstream_path(rule: &Rule, head: &RequestHead<'_>) -> PathAndQuery {
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
    let matched = rule.matches.iter().find(|m| m.matches(head));
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

/// `http://<endpoint><path>`: the pooled client connects to the URI's authority.
pub(super) fn endpoint_uri(authority: &http::uri::Authority, path: &PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(path.clone());
    Uri::from_parts(parts).expect("scheme, authority and path make a URI")
}

impl From<pool::SendError> for Failure {
    fn from(e: pool::SendError) -> Self {
        match e {
            pool::SendError::Connect => Failure::Connect,
            pool::SendError::Reset => Failure::Reset,
            pool::SendError::Protocol => Failure::Protocol,
        }
    }
}

fn classify(e: hyper_util::client::legacy::Error) -> Failure {
    if e.is_connect() {
        return Failure::Connect;
    }
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() {
                return Failure::Protocol;
            }
            return Failure::Reset;
        }
        source = s.source();
    }
    Failure::Reset
}

fn retriable_status(policy: &RetryPolicy, status: StatusCode) -> bool {
    let on = &policy.retry_on;
    let s = status.as_u16();
    (on.server_error && status.is_server_error())
        || (on.gateway_error && matches!(s, 502..=504))
        || (on.retriable_4xx && s == 409)
        || on.status_codes.contains(&s)
}

fn retriable_failure(policy: &RetryPolicy, failure: Failure) -> bool {
    let on = &policy.retry_on;
    match failure {
        Failure::Connect => on.connect_failure || on.server_error || on.gateway_error,
        Failure::Reset => on.reset || on.server_error,
        Failure::Protocol | Failure::TryTimeout => on.server_error || on.gateway_error,
        Failure::NoHealthy | Failure::RouteTimeout => false,
    }
}

/// Envoy's retry back-off: fully jittered, 25 ms doubling per retry, at most 250 ms.
fn backoff(tries: u32) -> Duration {
    let ceiling = (25u64 << tries.saturating_sub(1).min(4)).min(250);
    Duration::from_millis(random_value() % ceiling + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_router::{ConfigSource, LiveTable};

    fn rule_table(matches: &str, rewrite: &str) -> LiveTable {
        let yaml = format!(
            r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc}}
spec:
  hosts: [svc]
  ports: [{{number: 80, name: http}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: 1001}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc}}
spec:
  hosts: [svc]
  http:
  - match: {matches}
    rewrite: {rewrite}
    route:
    - destination: {{host: svc}}
"#
        );
        LiveTable::from_sources(&[ConfigSource::new("t.yaml", yaml)])
            .expect("valid")
            .0
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
                upstream_path(d.rule, &head).as_str(),
                want,
                "{matches} {rewrite} {path}"
            );
        }
    }

    #[test]
    fn retry_conditions_follow_envoy() {
        let policy = |retry_on: weir_router::RetryOn| RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            retry_on,
        };
        let five = policy(weir_router::RetryOn {
            server_error: true,
            ..Default::default()
        });
        assert!(retriable_status(&five, StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!retriable_status(&five, StatusCode::CONFLICT));
        assert!(retriable_failure(&five, Failure::Connect));
        assert!(retriable_failure(&five, Failure::TryTimeout));
        assert!(!retriable_failure(&five, Failure::RouteTimeout));
        let default = weir_router::istio_default_retries();
        assert!(retriable_status(&default, StatusCode::SERVICE_UNAVAILABLE));
        assert!(!retriable_status(
            &default,
            StatusCode::INTERNAL_SERVER_ERROR
        ));
        assert!(retriable_failure(&default, Failure::Connect));
        assert!(retriable_failure(&default, Failure::Reset));
        assert!(!retriable_failure(&default, Failure::NoHealthy));
        for tries in 1..10 {
            assert!(backoff(tries) <= Duration::from_millis(250));
        }
    }
}
