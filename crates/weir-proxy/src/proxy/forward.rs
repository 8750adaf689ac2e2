//! One request through the proxy, as a sequence of stages, each in its own module:
//!
//! ```text
//! sanitize -> route -> fault -> rewrite -> body -> mirrors -> retry (balance -> upstream) -> respond
//!                                                         any failure -> failure::respond
//! ```
//!
//! The stages are plain calls, monomorphized for the request body type: no boxed layers, no
//! per-request allocation beyond what a stage needs. Every exit path hands the [`Recorder`]
//! to a response, so every request is counted once.
//!
//! [`Recorder`]: crate::telemetry::Recorder

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::Body;
use tokio::time::Instant;
use weir_router::RequestHead;
use weir_router::telemetry::ResponseFlags;

use super::body::{BoxError, ResponseBody};
use super::failure::Failure;
use super::headers::{is_grpc, is_upgrade};
use super::upstream::Bound;
use super::{Downstream, Proxy, mirror, outbound};

pub(crate) mod body;

pub(crate) mod fault;
pub(crate) mod respond;
pub(crate) mod retry;
pub(crate) mod rewrite;
pub(crate) mod route;
pub(crate) mod sanitize;

/// Routes and forwards one request. Never fails: failures are responses. It owns what it
/// needs (`'static`), so that the service hands it to hyper as it is: a wrapping `async`
/// block would keep a second copy of the request and move this whole state once more.
pub(crate) async fn handle<B>(
    proxy: Arc<Proxy>,
    down: Arc<Downstream>,
    mut req: Request<B>,
) -> Result<Response<ResponseBody>, Infallible>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let start = Instant::now();
    let version = answer_version(req.version());
    let mut flags = ResponseFlags::NONE;
    // The one load of the request: routes and the proxy's clusters, same generation.
    let published = proxy.live.load();
    let routed = match sanitize::head(&mut req, proxy.options.path_normalization) {
        Ok(()) => route::route(&published, proxy.clusters, &RequestHead::of(&req)),
        Err(text) => Err((Failure::BadRequest, Some(text))),
    };
    let routed = match (routed, down.original_dst) {
        // Captured, and no VirtualService claims the Host: by the original destination,
        // else passed through to it (off the explicit path, boxed).
        (Err((Failure::NoRoute, text)), Some(original)) => match Box::pin(
            outbound::by_original_dst(&proxy, &published, RequestHead::of(&req), original),
        )
        .await
        {
            Some(r) => Ok(r),
            None => return Ok(Box::pin(outbound::passthrough(&proxy, req, original)).await),
        }
        .map_err(|()| (Failure::NoRoute, text)),
        (routed, _) => routed,
    };
    let mut rec = proxy.start(routed.as_ref().ok().map(|r| &r.cluster.series));
    rec.grpc = is_grpc(req.headers());
    let routed = match routed {
        Ok(r) => r,
        Err((f, text)) => return Ok(f.respond_saying(text, rec, version, flags)),
    };
    if down.original_dst.is_some()
        && let Err(f) = outbound::count_hop(req.headers_mut())
    {
        proxy.metrics.record_loop("hop_limit");
        return Ok(f.respond(rec, version, flags));
    }
    let rule = routed.decision.rule;
    if let Err(f) = fault::inject(rule, &mut flags).await {
        return Ok(f.respond(rec, version, flags));
    }

    let upgrade = req.version() == Version::HTTP_11 && is_upgrade(req.headers());
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let peer = Some(down.peer.ip());
    let head = rewrite::head(
        &mut parts,
        &routed,
        &down.peer_header,
        peer,
        upgrade,
        rec.grpc,
    );

    let policy = rule.retries.as_ref().filter(|p| p.attempts > 0);
    let deadline = rule.timeout.map(|t| start + t);
    let replay = body::Replay {
        wanted: policy.is_some() || !rule.mirrors.is_empty(),
        limit: proxy.options.replay_buffer_limit,
        deadline,
        stall: Some(proxy.options.limits.body_timeout).filter(|t| !t.is_zero()),
    };
    let payload = match body::prepare(body, &parts.headers, upgrade, replay).await {
        Ok(p) => p,
        Err(f) => return Ok(f.respond(rec, version, flags)),
    };
    if !upgrade {
        mirror::send_all(&proxy, &routed, &parts, &head.path, &payload);
    }

    let sender = Bound {
        upstream: &proxy.upstream,
        protocol: head.protocol,
    };
    let mut exchange = retry::Exchange {
        method: &parts.method,
        path: &head.path,
        headers: parts.headers,
        payload,
        hash: head.hash,
        replayable: !upgrade,
    };
    let cluster = routed.cluster;
    let sent = retry::send_with_retries(
        &sender,
        cluster,
        &mut exchange,
        policy,
        deadline,
        &mut flags,
    );
    Ok(match sent.await {
        Ok((resp, lease)) => {
            let d = &routed.decision;
            respond::respond(resp, d, flags, rec, lease, version, downstream_upgrade)
        }
        Err(f) => f.respond(rec, version, flags),
    })
}

/// The version the answer is marked with. An HTTP/1.0 request is answered as 1.1: hyper
/// writes `HTTP/1.0` on the wire to a 1.0 client either way, but a response marked 1.0 makes
/// it close the connection even when the request asked for `Connection: keep-alive`; marked
/// 1.1, hyper keeps such a connection open and says `Connection: keep-alive`, as nginx and
/// HAProxy do (a 1.0 request without it is still closed).
fn answer_version(request: Version) -> Version {
    if request == Version::HTTP_10 {
        Version::HTTP_11
    } else {
        request
    }
}
