//! The admin API: reads (`GET /metrics /healthz /readyz /config /routes`) and writes
//! (`PUT /weights`, `POST|DELETE /rollback`, `POST /promote`, `POST /reload`, `DELETE /state`),
//! JSON in and out. Every write that changes what is served is saved to the state file before
//! it is answered (see [`crate::state`]).
//! The bodies are the types of [`api`], shared with every client.
//!
//! Every write goes through the [`LiveTable`](weir_router::LiveTable), which runs the validator
//! and the weight guards: the admin API cannot publish a table that `weir validate` would
//! refuse. Status codes: 200 done, 400 malformed request, 401 missing or wrong token, 404
//! unknown VirtualService, 409 refused by the validator (the body lists the findings; nothing
//! changed).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;

pub mod api;
mod auth;
pub mod client;
mod reply;
mod routes;
mod writes;

use reply::{AdminResponse, error, json, read_body, text, with_type};

use crate::server::{self, ServerOptions};
use crate::sidecar::Sidecar;

/// How long open admin connections get to finish once the sidecar has drained.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves the admin API on `listener` until `shutdown` completes, then closes its connections
/// (giving them [`CLOSE_GRACE`] to finish).
pub(crate) async fn serve(
    listener: TcpListener,
    sidecar: Arc<Sidecar>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let new_service = move |_peer| {
        let sidecar = Arc::clone(&sidecar);
        service_fn(move |req| handle(Arc::clone(&sidecar), req))
    };
    let options = ServerOptions::new("admin API", CLOSE_GRACE);
    if let Err(e) = server::serve(Arc::new(new_service), listener, shutdown, options).await {
        tracing::warn!(error = %e, "admin API: serving failed");
    }
}

/// Serves the health listener (`--health`): the kubelet's probes, without the token, and
/// nothing else, until `shutdown` completes. It outlives the drain like the admin API, so that
/// the probe sees 503 while the sidecar drains.
pub(crate) async fn serve_health(
    listener: TcpListener,
    sidecar: Arc<Sidecar>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let new_service = move |_peer| {
        let sidecar = Arc::clone(&sidecar);
        service_fn(move |req: Request<Incoming>| {
            let read = req.method() == Method::GET || req.method() == Method::HEAD;
            let resp = match req.uri().path().trim_end_matches('/') {
                "/healthz/ready" if read => routes::readyz(&sidecar),
                "/healthz" if read => text(StatusCode::OK, "ok\n"),
                _ => error(
                    StatusCode::NOT_FOUND,
                    "the health port serves GET /healthz/ready and /healthz only; the rest is on the admin API",
                ),
            };
            std::future::ready(Ok::<_, Infallible>(resp))
        })
    };
    let options = ServerOptions::new("health", CLOSE_GRACE);
    if let Err(e) = server::serve(Arc::new(new_service), listener, shutdown, options).await {
        tracing::warn!(error = %e, "health listener: serving failed");
    }
}

async fn handle(
    sidecar: Arc<Sidecar>,
    req: Request<Incoming>,
) -> Result<AdminResponse, Infallible> {
    if let Some(token) = sidecar.admin_token.as_deref()
        && !auth::authorized(req.headers().get(header::AUTHORIZATION), token)
    {
        return Ok(auth::unauthorized());
    }
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let read = method == Method::GET || method == Method::HEAD;
    let resp = match (path.as_str(), &method) {
        ("/healthz", _) if read => text(StatusCode::OK, "ok\n"),
        ("/readyz", _) if read => routes::readyz(&sidecar),
        ("/metrics", _) if read => {
            let body = sidecar.metrics.encode(&sidecar.live);
            with_type(StatusCode::OK, crate::metrics::CONTENT_TYPE, body)
        }
        ("/config", _) if read => routes::config(&sidecar.live, req.uri().query()),
        ("/routes", _) if read => json(StatusCode::OK, &routes::routes(&sidecar)),
        ("/weights", &Method::PUT) => match read_body(req).await {
            Ok(body) => writes::put_weights(&sidecar, &body),
            Err(rejection) => rejection.into(),
        },
        ("/rollback", &Method::POST | &Method::DELETE) => match read_body(req).await {
            Ok(body) => writes::rollback(&sidecar, &body, method == Method::DELETE),
            Err(rejection) => rejection.into(),
        },
        ("/promote", &Method::POST) => match read_body(req).await {
            Ok(body) => writes::promote(&sidecar, &body),
            Err(rejection) => rejection.into(),
        },
        ("/reload", &Method::POST) => writes::reload(&sidecar).await,
        ("/state", &Method::DELETE) => match read_body(req).await {
            Ok(body) => writes::discard(&sidecar, &body),
            Err(rejection) => rejection.into(),
        },
        (p, _) => match auth::allowed_methods(p) {
            Some(allow) => {
                let mut resp = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!("{method} is not allowed on {p}; use {allow}"),
                );
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                resp
            }
            None => error(
                StatusCode::NOT_FOUND,
                &format!(
                    "no admin endpoint {p:?}: try GET /metrics /healthz /readyz /config /routes, PUT /weights, \
                     POST|DELETE /rollback, POST /promote, POST /reload, DELETE /state"
                ),
            ),
        },
    };
    Ok(resp)
}
