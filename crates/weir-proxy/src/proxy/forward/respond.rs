//! The upstream's response on its way back: hop-by-hop headers out, the rule's and the
//! destination's response header edits, `x-weir-flags`, the body streamed with the request's
//! [`Recorder`], and the tunnel of an accepted upgrade.

use http::{Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use weir_router::Decision;
use weir_router::balance::Lease;
use weir_router::telemetry::ResponseFlags;

use super::super::body::ResponseBody;
use super::super::failure::mark;
use super::super::headers::strip_hop_by_hop;
use super::super::pool::PooledBody;
use crate::telemetry::Recorder;

/// The response to the client. `downstream_upgrade` is the client's side of an upgrade the
/// request asked for: when the upstream switches protocols, the two are joined.
pub(crate) fn respond(
    mut resp: Response<PooledBody>,
    decision: &Decision<'_>,
    flags: ResponseFlags,
    mut rec: Recorder,
    lease: Lease,
    version: Version,
    downstream_upgrade: Option<OnUpgrade>,
) -> Response<ResponseBody> {
    let status = resp.status();
    let tunnel = status == StatusCode::SWITCHING_PROTOCOLS && downstream_upgrade.is_some();
    if let (true, Some(downstream)) = (tunnel, downstream_upgrade) {
        tunnel_upgrade(downstream, hyper::upgrade::on(&mut resp));
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, tunnel);
    decision.rule.headers.response.apply(&mut parts.headers);
    decision
        .destination
        .headers
        .response
        .apply(&mut parts.headers);
    if !flags.is_empty() {
        mark(&mut parts.headers, flags);
    }
    parts.version = version;
    rec.outcome(status, flags);
    rec.lease = Some(lease);
    Response::from_parts(parts, ResponseBody::upstream(body, rec))
}

/// Copies bytes both ways between the client's and the upstream's upgraded connections.
fn tunnel_upgrade(downstream: OnUpgrade, upstream: OnUpgrade) {
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
