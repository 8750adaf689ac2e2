//! Mirroring (Istio's `mirror`, `mirrors`): fire-and-forget copies of a request. A copy never
//! slows or fails the primary request: it is sent from its own task, bounded by a semaphore
//! (a copy that finds no permit is dropped and counted), and its response is discarded.

use std::time::Duration;

use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Version, header};
use http_body_util::BodyExt;

use super::Proxy;
use super::body::UpstreamBody;
use super::clusters::ClusterRuntime;
use super::forward::body::Payload;
use super::forward::fault::chance;
use super::forward::route::Routed;
use super::upstream::endpoint_uri;
use crate::metrics::MirrorResult;

/// Sends the copies the routed rule asks for (each with its share of requests).
pub(super) fn send_all(
    proxy: &Proxy,
    routed: &Routed<'_>,
    parts: &Parts,
    path: &PathAndQuery,
    payload: &Payload,
) {
    let rule = routed.decision.rule;
    for m in &rule.mirrors {
        if chance(m.per_million) {
            let cluster = routed.clusters.cluster(m.cluster);
            let (method, headers) = (&parts.method, &parts.headers);
            send(proxy, cluster, method, path, headers, payload, rule.timeout);
        }
    }
}

/// Sends a copy of the request to `cluster` (with `Host: <host>-shadow`), unless the body
/// streams (it can be read once only) or too many copies are in flight.
fn send(
    proxy: &Proxy,
    cluster: &ClusterRuntime,
    method: &Method,
    path: &PathAndQuery,
    headers: &HeaderMap,
    payload: &Payload,
    timeout: Option<Duration>,
) {
    let labels = cluster.series.labels();
    let body = match payload {
        Payload::Empty => UpstreamBody::Empty,
        Payload::Buffered(b) => UpstreamBody::Full(Some(b.clone())),
        Payload::Stream(_) => {
            proxy.metrics.record_mirror(labels, MirrorResult::Skipped);
            return;
        }
    };
    let Ok(permit) = proxy.mirrors.clone().try_acquire_owned() else {
        proxy.metrics.record_mirror(labels, MirrorResult::Dropped);
        return;
    };
    let Some((endpoint, lease)) = cluster.pick(None) else {
        proxy.metrics.record_mirror(labels, MirrorResult::Failed);
        return;
    };
    let mut req = Request::new(body);
    *req.method_mut() = method.clone();
    *req.uri_mut() = endpoint_uri(&endpoint.authority, path);
    *req.version_mut() = Version::HTTP_11;
    let mut copy = headers.clone();
    copy.insert(header::HOST, cluster.shadow_host.clone());
    *req.headers_mut() = copy;
    let client = proxy.upstream.h1().clone();
    let metrics = proxy.metrics.clone();
    let labels = labels.clone();
    let timeout = timeout.unwrap_or(proxy.options.mirror_timeout);
    tokio::spawn(async move {
        let _permit = permit;
        let _lease = lease;
        let exchange = async {
            let resp = client.request(req).await.ok()?;
            // Read the answer to the end so that the connection goes back to the pool.
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                frame.ok()?;
            }
            Some(())
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(Some(())) => MirrorResult::Sent,
            _ => MirrorResult::Failed,
        };
        metrics.record_mirror(&labels, result);
    });
}
