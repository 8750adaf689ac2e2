//! Reading request bodies and writing answers: JSON with `Cache-Control: no-store`.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use weir_router::Findings;

use super::api::{ErrorResponse, findings};

/// Largest request body the admin API reads, in bytes.
pub(super) const MAX_BODY: usize = 1 << 20;

pub(super) type AdminResponse = Response<Full<Bytes>>;

/// A request the admin API will not act on: the status and what to tell the caller.
pub(super) struct Rejection(pub StatusCode, pub String);

impl From<Rejection> for AdminResponse {
    fn from(Rejection(status, message): Rejection) -> Self {
        error(status, &message)
    }
}

pub(super) async fn read_body(req: Request<Incoming>) -> Result<Bytes, Rejection> {
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

pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Rejection> {
    serde_json::from_slice(body).map_err(malformed)
}

pub(super) fn malformed(e: serde_json::Error) -> Rejection {
    Rejection(
        StatusCode::BAD_REQUEST,
        format!("malformed JSON request: {e}"),
    )
}

/// 409: the validator refused; nothing changed.
pub(super) fn refusal(message: &str, refused: &Findings) -> AdminResponse {
    json(
        StatusCode::CONFLICT,
        &ErrorResponse {
            error: message.to_string(),
            findings: Some(findings(refused)),
        },
    )
}

pub(super) fn error(status: StatusCode, message: &str) -> AdminResponse {
    json(
        status,
        &ErrorResponse {
            error: message.to_string(),
            findings: None,
        },
    )
}

pub(super) fn json(status: StatusCode, value: &impl Serialize) -> AdminResponse {
    let mut body = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".to_string());
    body.push('\n');
    with_type(status, "application/json", body)
}

pub(super) fn text(status: StatusCode, body: &'static str) -> AdminResponse {
    with_type(status, "text/plain; charset=utf-8", body)
}

pub(super) fn with_type(
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
