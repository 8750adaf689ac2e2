//! A request sent as it is to one address, without routes, retries or balancing: the inbound
//! side's hop to the app, and the outbound passthrough to an original destination weir has
//! no route for.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Version};
use http_body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use weir_router::telemetry::ResponseFlags;

use super::body::{BoxError, ResponseBody, UpstreamBody};
use super::failure::Failure;
use super::headers::strip_hop_by_hop;
use super::upstream::endpoint_uri;
use crate::telemetry::Recorder;

/// The clients a plain forward uses: HTTP/1.1, and HTTP/2 (prior knowledge) for requests
/// that came in over HTTP/2, as Envoy's `USE_DOWNSTREAM_PROTOCOL`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clients<'c> {
    pub h1: &'c Client<HttpConnector, UpstreamBody>,
    pub h2: &'c Client<HttpConnector, UpstreamBody>,
}

/// Sends `req` to `to` and answers with its response (hop-by-hop headers out), counted by
/// `rec`; a failure is answered with Envoy's status and flag.
pub(crate) async fn forward<B>(
    clients: Clients<'_>,
    to: SocketAddr,
    req: Request<B>,
    mut rec: Recorder,
    stall: Option<Duration>,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let version = req.version();
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let Ok(authority) = Authority::try_from(to.to_string().as_str()) else {
        return Failure::Internal.respond(rec, version, ResponseFlags::NONE);
    };
    parts.uri = endpoint_uri(&authority, &path);
    let h2 = version == Version::HTTP_2;
    parts.version = if h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let req = Request::from_parts(parts, UpstreamBody::stream(body, stall));
    let client = if h2 { clients.h2 } else { clients.h1 };
    match client.request(req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers, false);
            parts.version = version;
            rec.outcome(parts.status, ResponseFlags::NONE);
            Response::from_parts(parts, ResponseBody::upstream(body, rec))
        }
        Err(e) => {
            let failure = Failure::classify(e);
            tracing::debug!(%to, ?failure, "no answer");
            failure.respond(rec, version, ResponseFlags::NONE)
        }
    }
}
