//! The admin API's client, over the [`api`](super::api) types: what `weir set-weights`,
//! `weir rollback`, `weir demo` and the canary's admin sink call a sidecar with.
//!
//! Any status is an answer ([`Reply`]: a 409 is information for the caller, not an error);
//! only an exchange that produced no answer is an [`AdminClientError`]. Async, with
//! [`AdminClient::call_blocking`] for callers without a runtime (the canary controller).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::api::{ErrorResponse, ROUTES_API_VERSION, ROUTES_KIND, RoutesResponse};

/// How long a call waits for the sidecar's answer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A call to the admin API that produced no answer, or a URL that cannot be called.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminClientError {
    /// The admin URL is not one the client can call.
    #[error("--admin {url:?}: {why}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// No answer: refused, reset, unreachable.
    #[error("cannot reach the admin API at {url}: {source}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The client's error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The answer's body broke off.
    #[error("the admin API at {url}: reading the answer: {source}")]
    Answer {
        /// The URL called.
        url: String,
        /// The body's error.
        #[source]
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("the admin API at {url} did not answer within {after:?} (timed out)")]
    Timeout {
        /// The URL called.
        url: String,
        /// The timeout.
        after: Duration,
    },
    /// The request could not be built (a body that does not serialize).
    #[error("cannot build the request to {url}: {why}")]
    Request {
        /// The URL called.
        url: String,
        /// Why.
        why: String,
    },
    /// A blocking call found no runtime to run on.
    #[error("cannot start a runtime for the admin call: {0}")]
    Runtime(#[source] std::io::Error),
}

impl AdminClientError {
    /// Whether no connection could be made: the request was never sent, so the sidecar
    /// cannot have acted on it.
    pub fn is_connect(&self) -> bool {
        matches!(self, AdminClientError::Unreachable { source, .. } if source.is_connect())
    }

    /// Whether the call timed out (the sidecar may have acted on it).
    pub fn is_timeout(&self) -> bool {
        matches!(self, AdminClientError::Timeout { .. })
    }
}

/// An answer of the admin API: its status and its JSON body (a body that is not JSON becomes
/// `{"error": <its text>}`).
#[derive(Clone, Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The body as JSON.
    pub body: Value,
}

impl Reply {
    /// The body as one of the [`api`](super::api) types.
    pub fn parse<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_value(self.body.clone()).ok()
    }

    /// The error message of a failed call.
    pub fn error(&self) -> String {
        self.parse::<ErrorResponse>()
            .map_or_else(|| "no error message".to_string(), |e| e.error)
    }
}

/// `http://` added when missing, no trailing slash.
pub fn base_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// A sidecar's admin API, called over HTTP as a human or a pipeline would.
#[derive(Clone, Debug)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
    timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// A client of the admin API at `url` (`http://` added when missing), with
    /// [`DEFAULT_TIMEOUT`].
    pub fn new(url: &str, token: Option<String>) -> Result<Self, AdminClientError> {
        let base = base_url(url);
        let bad = |why: &str| AdminClientError::Url {
            url: url.to_string(),
            why: why.to_string(),
        };
        let uri: Uri = base
            .parse()
            .map_err(|_| bad("not a URL such as http://127.0.0.1:15000"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// is supported"));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(AdminClient {
            base,
            token,
            timeout: DEFAULT_TIMEOUT,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The timeout of one call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `http://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One call; failing to get an answer is a 503 with the reason as `error` (for callers
    /// that report every answer, such as `weir demo`).
    pub async fn answer(&self, method: Method, path: &str, body: Option<&impl Serialize>) -> Reply {
        self.call(method, path, body)
            .await
            .unwrap_or_else(|e| Reply {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: json!({"error": e.to_string()}),
            })
    }

    /// One call, answered whatever the status.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Reply, AdminClientError> {
        let url = format!("{}{path}", self.base);
        let request_error = |why: String| AdminClientError::Request {
            url: url.clone(),
            why,
        };
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let bytes = match body {
            Some(body) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(body).map_err(|e| request_error(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| request_error(e.to_string()))?;
        let exchange =
            async {
                let resp = self.client.request(req).await.map_err(|source| {
                    AdminClientError::Unreachable {
                        url: url.clone(),
                        source,
                    }
                })?;
                let status = resp.status();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|source| AdminClientError::Answer {
                        url: url.clone(),
                        source,
                    })?
                    .to_bytes();
                let body = serde_json::from_slice(&body).unwrap_or_else(
                    |_| json!({"error": String::from_utf8_lossy(&body).trim().to_string()}),
                );
                Ok(Reply { status, body })
            };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| AdminClientError::Timeout {
                url: url.clone(),
                after: self.timeout,
            })?
    }

    /// [`call`](Self::call) for a caller without a runtime: runs the call on a runtime of
    /// its own. Must not be called from inside an async task.
    pub fn call_blocking(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Reply, AdminClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AdminClientError::Runtime)?;
        runtime.block_on(self.call(method, path, body))
    }
}

/// What a `GET /routes` answer is, when it is not the document a weir sidecar writes.
pub fn check_routes(reply: &Reply) -> Result<RoutesResponse, String> {
    if !reply.status.is_success() {
        return Err(format!(
            "GET /routes answered {}: {}",
            reply.status,
            reply.error()
        ));
    }
    match reply.parse::<RoutesResponse>() {
        Some(r) if r.api_version == ROUTES_API_VERSION && r.kind == ROUTES_KIND => Ok(r),
        Some(r) => Err(format!(
            "GET /routes answered a document of apiVersion {:?} kind {:?}, not {ROUTES_API_VERSION} {ROUTES_KIND}: not a weir sidecar, or one too old to be checked",
            r.api_version, r.kind
        )),
        None => Err(
            "GET /routes did not answer weir's routes document: is this a weir sidecar's admin API?"
                .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_a_scheme_and_lose_the_trailing_slash() {
        assert_eq!(base_url("127.0.0.1:15000"), "http://127.0.0.1:15000");
        assert_eq!(base_url("http://a:1/"), "http://a:1");
        assert!(matches!(
            AdminClient::new("https://a:1", None),
            Err(AdminClientError::Url { .. })
        ));
    }

    #[test]
    fn a_closed_port_is_a_connect_error_and_not_a_timeout() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = AdminClient::new(&format!("127.0.0.1:{port}"), None).unwrap();
        let err = client
            .call_blocking(Method::GET, "/routes", None::<&()>)
            .unwrap_err();
        assert!(err.is_connect() && !err.is_timeout(), "{err}");
        assert!(err.to_string().contains("/routes"), "{err}");
    }

    #[test]
    fn only_weirs_routes_document_passes_the_check() {
        let reply = |status: u16, body: Value| Reply {
            status: StatusCode::from_u16(status).unwrap(),
            body,
        };
        assert!(check_routes(&reply(200, json!({"hello": "world"}))).is_err());
        assert!(check_routes(&reply(404, json!({"error": "nope"}))).is_err());
        let old = json!({"generation": 1, "virtual_services": []});
        assert!(
            check_routes(&reply(200, old))
                .unwrap_err()
                .contains("not a weir sidecar")
        );
        let ok = json!({"api_version": ROUTES_API_VERSION, "kind": ROUTES_KIND, "boot_id": "b",
            "generation": 3, "virtual_services": []});
        assert_eq!(check_routes(&reply(200, ok)).unwrap().generation, 3);
    }
}
