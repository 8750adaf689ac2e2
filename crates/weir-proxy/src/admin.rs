//! The admin API: reads (`GET /metrics /healthz /readyz /config /routes`) and writes
//! (`PUT /weights`, `POST|DELETE /rollback`, `POST /promote`, `POST /reload`), JSON in and out.
//!
//! Every write goes through the [`LiveTable`], which runs the validator and the weight guards:
//! the admin API cannot publish a table that `weir validate` would refuse. Status codes:
//! 200 done, 400 malformed request, 401 missing or wrong token, 404 unknown VirtualService,
//! 409 refused by the validator (the body lists the findings; nothing changed).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use weir_router::{Findings, LiveTable, RouteTable, WeightChange};

use crate::reload::{ReloadError, Trigger};
use crate::server::{self, ServerOptions};
use crate::sidecar::Sidecar;

/// Largest request body the admin API reads, in bytes.
const MAX_BODY: usize = 1 << 20;

/// How long open admin connections get to finish once the sidecar has drained.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves the admin API on `listener` until `shutdown` completes, then closes its connections
/// (giving them [`CLOSE_GRACE`] to finish).
pub async fn serve(
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

type AdminResponse = Response<Full<Bytes>>;

async fn handle(
    sidecar: Arc<Sidecar>,
    req: Request<Incoming>,
) -> Result<AdminResponse, Infallible> {
    if let Some(token) = sidecar.admin_token.as_deref()
        && !authorized(req.headers().get(header::AUTHORIZATION), token)
    {
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            "this admin API requires `Authorization: Bearer <token>` (the --admin-token of weir serve)",
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Ok(resp);
    }
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let read = method == Method::GET || method == Method::HEAD;
    let resp = match (path.as_str(), &method) {
        ("/healthz", _) if read => text(StatusCode::OK, "ok\n"),
        ("/readyz", _) if read => readyz(&sidecar),
        ("/metrics", _) if read => {
            let body = sidecar.metrics.encode(&sidecar.live);
            with_type(StatusCode::OK, crate::metrics::CONTENT_TYPE, body)
        }
        ("/config", _) if read => config(&sidecar.live, req.uri().query()),
        ("/routes", _) if read => json_response(StatusCode::OK, &routes(&sidecar.live)),
        ("/weights", &Method::PUT) => match read_body(req).await {
            Ok(body) => put_weights(&sidecar, &body),
            Err(rejection) => rejection.into(),
        },
        ("/rollback", &Method::POST | &Method::DELETE) => match read_body(req).await {
            Ok(body) => rollback(&sidecar, &body, method == Method::DELETE),
            Err(rejection) => rejection.into(),
        },
        ("/promote", &Method::POST) => match read_body(req).await {
            Ok(body) => promote(&sidecar, &body),
            Err(rejection) => rejection.into(),
        },
        ("/reload", &Method::POST) => reload(&sidecar).await,
        (p, _) => match allowed_methods(p) {
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
                     POST|DELETE /rollback, POST /promote, POST /reload"
                ),
            ),
        },
    };
    Ok(resp)
}

fn allowed_methods(path: &str) -> Option<&'static str> {
    Some(match path {
        "/healthz" | "/readyz" | "/metrics" | "/config" | "/routes" => "GET, HEAD",
        "/weights" => "PUT",
        "/rollback" => "POST, DELETE",
        "/promote" | "/reload" => "POST",
        _ => return None,
    })
}

/// Compares the bearer token in constant time, so that response timing does not reveal how
/// much of a guess was right.
fn authorized(value: Option<&HeaderValue>, token: &str) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, given)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let (given, token) = (given.trim().as_bytes(), token.as_bytes());
    given.len() == token.len()
        && given
            .iter()
            .zip(token)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

// === reads ===

fn readyz(sidecar: &Sidecar) -> AdminResponse {
    if sidecar.is_draining() {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        text(StatusCode::OK, "ready\n")
    }
}

/// The sources in force: JSON by default, or the YAML itself with `?format=yaml`.
fn config(live: &LiveTable, query: Option<&str>) -> AdminResponse {
    let table = live.load_full();
    let yaml = query.is_some_and(|q| q.split('&').any(|kv| kv == "format=yaml"));
    if yaml {
        let mut out = format!("# generation {}\n", table.generation());
        for source in table.sources() {
            out.push_str(&format!("# source: {}\n", source.name));
            out.push_str(&source.text);
            if !source.text.ends_with('\n') {
                out.push('\n');
            }
        }
        return with_type(StatusCode::OK, "application/yaml; charset=utf-8", out);
    }
    let sources: Vec<Value> = table
        .sources()
        .iter()
        .map(|s| json!({"file": &*s.name, "yaml": &*s.text}))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"generation": table.generation(), "sources": sources}),
    )
}

/// The table in force, as `GET /routes` shows it: the weights an SRE should look at.
pub fn routes(live: &LiveTable) -> Value {
    let table = live.load_full();
    let virtual_services: Vec<Value> = table
        .virtual_services()
        .iter()
        .map(|vs| {
            json!({
                "name": vs.name,
                "namespace": vs.namespace,
                "hosts": vs.hosts,
                "stable_subset": vs.stable_subset,
                "latched": live.is_latched(&vs.key()),
                "weight_policy": vs.policy,
                "max_step": vs.max_step,
                "rules": vs.rules.iter().map(|rule| json!({
                    "index": rule.index,
                    "name": rule.name,
                    "destinations": rule.destinations.iter().map(|d| json!({
                        "host": d.host,
                        "subset": d.subset,
                        "weight": d.weight,
                        "share_percent": rule.share_percent(d),
                        "endpoints": endpoints(&table, d.cluster),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"generation": table.generation(), "virtual_services": virtual_services})
}

fn endpoints(table: &RouteTable, cluster: usize) -> Vec<&str> {
    table
        .cluster(cluster)
        .endpoints
        .iter()
        .map(|e| e.authority.as_str())
        .collect()
}

// === writes ===

/// `PUT /weights`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsRequest {
    virtual_service: String,
    #[serde(default)]
    rule: Option<RuleRef>,
    weights: BTreeMap<String, u32>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    promotion: bool,
}

/// A rule by name, or by index as a string or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum RuleRef {
    Index(usize),
    Name(String),
}

/// `POST /rollback`, `DELETE /rollback`: no body, `{}`, or one VirtualService.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    #[serde(default)]
    virtual_service: Option<String>,
}

/// `POST /promote`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteRequest {
    virtual_service: String,
    subset: String,
}

const ORIGIN: &str = "admin API";

fn put_weights(sidecar: &Sidecar, body: &[u8]) -> AdminResponse {
    let req: WeightsRequest = match parse(body) {
        Ok(r) => r,
        Err(rejection) => return rejection.into(),
    };
    if req.weights.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "`weights` is empty: name at least one subset, e.g. {\"v1\": 90, \"v2\": 10}",
        );
    }
    if let Some(resp) = unknown_virtual_service(&sidecar.live, &req.virtual_service) {
        return resp;
    }
    let change = WeightChange {
        virtual_service: req.virtual_service,
        rule: req.rule.map(|r| match r {
            RuleRef::Index(i) => i.to_string(),
            RuleRef::Name(n) => n,
        }),
        weights: req.weights,
        force: req.force,
        promotion: req.promotion,
        origin: ORIGIN.to_string(),
    };
    match sidecar.live.set_weights(&change) {
        Ok(applied) => {
            tracing::info!(
                virtual_service = %change.virtual_service,
                rule = change.rule.as_deref().unwrap_or("(split rule)"),
                weights = ?change.weights,
                force = change.force,
                promotion = change.promotion,
                generation = applied.generation,
                "weights changed through the admin API"
            );
            json_response(
                StatusCode::OK,
                &json!({"generation": applied.generation, "findings": applied.findings}),
            )
        }
        Err(refused) => {
            tracing::warn!(
                virtual_service = %change.virtual_service,
                weights = ?change.weights,
                "weight change refused by the weight guard:\n{}",
                refused.findings
            );
            refusal("refused by the weight guard", &refused.findings)
        }
    }
}

fn rollback(sidecar: &Sidecar, body: &[u8], release: bool) -> AdminResponse {
    let req: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        match parse(body) {
            Ok(r) => r,
            Err(rejection) => return rejection.into(),
        }
    };
    let target = req.virtual_service.as_deref();
    if let Some(resp) = target.and_then(|name| unknown_virtual_service(&sidecar.live, name)) {
        return resp;
    }
    let started = Instant::now();
    let result = if release {
        sidecar.live.release(target)
    } else {
        sidecar.live.rollback(target)
    };
    let took = started.elapsed();
    let applied = match result {
        Ok(applied) => applied,
        // A VirtualService removed by a reload since the check above.
        Err(refused) => return refusal("refused", &refused.findings),
    };
    let table = sidecar.live.load_full();
    let keys: Vec<String> = match target {
        Some(name) => table
            .virtual_service(name)
            .map(|vs| vs.key())
            .into_iter()
            .collect(),
        None => table.virtual_services().iter().map(|vs| vs.key()).collect(),
    };
    if release {
        tracing::info!(virtual_services = ?keys, generation = applied.generation, "rollback latch released through the admin API");
        return json_response(StatusCode::OK, &json!({"generation": applied.generation}));
    }
    sidecar.metrics.record_rollback();
    let took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    tracing::warn!(
        virtual_services = ?keys,
        generation = applied.generation,
        took_us,
        "ROLLBACK through the admin API: canaries at 0%, latched until DELETE /rollback"
    );
    json_response(
        StatusCode::OK,
        &json!({"generation": applied.generation, "took_us": took_us, "virtual_services": keys}),
    )
}

fn promote(sidecar: &Sidecar, body: &[u8]) -> AdminResponse {
    let req: PromoteRequest = match parse(body) {
        Ok(r) => r,
        Err(rejection) => return rejection.into(),
    };
    if let Some(resp) = unknown_virtual_service(&sidecar.live, &req.virtual_service) {
        return resp;
    }
    match sidecar.live.promote(&req.virtual_service, &req.subset) {
        Ok(applied) => {
            tracing::info!(
                virtual_service = %req.virtual_service,
                subset = %req.subset,
                generation = applied.generation,
                "subset promoted through the admin API"
            );
            json_response(StatusCode::OK, &json!({"generation": applied.generation}))
        }
        Err(refused) => refusal("promotion refused", &refused.findings),
    }
}

async fn reload(sidecar: &Sidecar) -> AdminResponse {
    let reloader = Arc::clone(&sidecar.reloader);
    let result = match tokio::task::spawn_blocking(move || reloader.reload(Trigger::Admin)).await {
        Ok(result) => result,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("reload failed: {e}"),
            );
        }
    };
    match result {
        Ok(applied) => json_response(
            StatusCode::OK,
            &json!({"generation": applied.generation, "findings": applied.findings}),
        ),
        Err(ReloadError::Refused(refused)) => refusal(
            "refused by the validator; the running table stays",
            &refused.findings,
        ),
        Err(e @ ReloadError::Read { .. }) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
    }
}

fn unknown_virtual_service(live: &LiveTable, name: &str) -> Option<AdminResponse> {
    let table = live.load();
    if table.virtual_service(name).is_some() {
        return None;
    }
    let known: Vec<String> = table.virtual_services().iter().map(|vs| vs.key()).collect();
    Some(error(
        StatusCode::NOT_FOUND,
        &format!(
            "no VirtualService {name:?}; this sidecar routes {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ),
    ))
}

// === bodies and responses ===

/// A request the admin API will not act on: the status and what to tell the caller.
struct Rejection(StatusCode, String);

impl From<Rejection> for AdminResponse {
    fn from(Rejection(status, message): Rejection) -> Self {
        error(status, &message)
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Rejection> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Rejection(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY} bytes"),
        )),
        Err(e) => Err(Rejection(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Rejection> {
    serde_json::from_slice(body).map_err(|e| {
        Rejection(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON request: {e}"),
        )
    })
}

fn refusal(message: &str, findings: &Findings) -> AdminResponse {
    json_response(
        StatusCode::CONFLICT,
        &json!({"error": message, "findings": findings}),
    )
}

fn error(status: StatusCode, message: &str) -> AdminResponse {
    json_response(status, &json!({"error": message}))
}

fn json_response(status: StatusCode, value: &Value) -> AdminResponse {
    let mut body = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".to_string());
    body.push('\n');
    with_type(status, "application/json", body)
}

fn text(status: StatusCode, body: &'static str) -> AdminResponse {
    with_type(status, "text/plain; charset=utf-8", body)
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> AdminResponse {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let ok = HeaderValue::from_static("Bearer s3cret");
        assert!(authorized(Some(&ok), "s3cret"));
        assert!(authorized(
            Some(&HeaderValue::from_static("bearer s3cret")),
            "s3cret"
        ));
        for bad in [
            "Bearer s3cre",
            "Bearer s3crett",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            assert!(
                !authorized(Some(&HeaderValue::from_static(bad)), "s3cret"),
                "{bad}"
            );
        }
        assert!(!authorized(None, "s3cret"));
    }

    #[test]
    fn a_rule_is_named_or_numbered() {
        let r: WeightsRequest =
            serde_json::from_str(r#"{"virtual_service": "p", "rule": 1, "weights": {"v1": 100}}"#)
                .unwrap();
        assert!(matches!(r.rule, Some(RuleRef::Index(1))));
        let r: WeightsRequest = serde_json::from_str(
            r#"{"virtual_service": "p", "rule": "canary-split", "weights": {"v1": 100}}"#,
        )
        .unwrap();
        assert!(matches!(r.rule, Some(RuleRef::Name(ref n)) if n == "canary-split"));
        assert!(!r.force && !r.promotion);
    }

    #[test]
    fn unknown_fields_and_negative_weights_are_malformed() {
        assert!(
            parse::<WeightsRequest>(
                br#"{"virtual_service": "p", "weights": {"v1": 100}, "forced": true}"#
            )
            .is_err()
        );
        assert!(
            parse::<WeightsRequest>(br#"{"virtual_service": "p", "weights": {"v1": -1}}"#).is_err()
        );
    }
}
