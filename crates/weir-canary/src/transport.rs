//! The one place that knows the HTTP client of the metric sources and webhooks. Plain HTTP/1.1
//! only: every peer (`/metrics`, Prometheus, webhooks) is on loopback or inside the cluster
//! network. The sidecars' admin APIs are called with weir-proxy's admin client.
//!
//! Any status is an answer ([`Reply`]); only an exchange that produced no answer is an error, a
//! [`TransportError`] that keeps the client's error as its source.

use std::io;
use std::time::Duration;

/// A blocking client that returns every status as an answer (a 409 is information for the
/// caller, not an error) and never goes through an environment proxy.
#[derive(Clone)]
pub(crate) struct Client {
    agent: ureq::Agent,
}

/// A response: its status and its body as text.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The methods weir's peers use.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Method {
    Get,
    Post,
}

/// One request to send.
pub(crate) struct Request<'a> {
    pub method: Method,
    pub url: &'a str,
    pub json: Option<&'a str>,
    pub query: &'a [(&'a str, &'a str)],
    pub token: Option<&'a str>,
    pub timeout: Duration,
}

impl<'a> Request<'a> {
    pub fn get(url: &'a str, timeout: Duration) -> Self {
        Request {
            method: Method::Get,
            url,
            json: None,
            query: &[],
            token: None,
            timeout,
        }
    }

    pub fn json(method: Method, url: &'a str, body: &'a str, timeout: Duration) -> Self {
        Request {
            method,
            url,
            json: Some(body),
            query: &[],
            token: None,
            timeout,
        }
    }
}

impl Client {
    pub fn new() -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// Sends the request; `Err` is a transport failure (refused, timed out, malformed answer).
    pub fn send(&self, req: &Request<'_>) -> Result<Reply, TransportError> {
        let result = match (req.method, req.json) {
            (Method::Get, _) => {
                let mut b = self.agent.get(req.url);
                for (k, v) in req.query {
                    b = b.query(k, v);
                }
                if let Some(t) = req.token {
                    b = b.header("authorization", format!("Bearer {t}"));
                }
                b.config().timeout_global(Some(req.timeout)).build().call()
            }
            (Method::Post, body) => {
                let mut b = self.agent.post(req.url);
                for (k, v) in req.query {
                    b = b.query(k, v);
                }
                if let Some(t) = req.token {
                    b = b.header("authorization", format!("Bearer {t}"));
                }
                b.config()
                    .timeout_global(Some(req.timeout))
                    .build()
                    .content_type("application/json")
                    .send(body.unwrap_or(""))
            }
        };
        let mut response = result.map_err(|e| TransportError::new(Stage::Request, e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| TransportError::new(Stage::Answer, e))?;
        Ok(Reply { status, body })
    }
}

/// An HTTP exchange that produced no answer: the peer could not be reached, took too long, or
/// sent something that is not an HTTP answer.
///
/// Opaque, with predicates, so that callers branch on what happened without matching the
/// client library's variants; [`source`](std::error::Error::source) is the client's own error.
/// The message is complete on its own (it names the cause), so a report line needs no chain.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub struct TransportError {
    stage: Stage,
    #[source]
    source: ureq::Error,
}

/// Which half of the exchange failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Connecting, sending, or reading the status line and headers.
    Request,
    /// Reading the body of an answer whose status had arrived.
    Answer,
}

// === impl TransportError ===

impl TransportError {
    fn new(stage: Stage, source: ureq::Error) -> Self {
        TransportError { stage, source }
    }

    /// Whether the request or the answer took longer than the timeout.
    pub fn is_timeout(&self) -> bool {
        match &self.source {
            ureq::Error::Timeout(_) => true,
            ureq::Error::Io(e) => matches!(e.kind(), io::ErrorKind::TimedOut),
            _ => false,
        }
    }

    /// Whether no connection could be made (refused, unreachable, unknown host): the request
    /// was never sent, so the peer cannot have acted on it.
    pub fn is_connect(&self) -> bool {
        match &self.source {
            ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
            ureq::Error::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::AddrNotAvailable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::HostUnreachable
            ),
            _ => false,
        }
    }

    /// Whether the status arrived but the body could not be read.
    pub fn is_answer(&self) -> bool {
        self.stage == Stage::Answer
    }

    fn describe(&self) -> String {
        let what = match &self.source {
            ureq::Error::Timeout(_) => "timed out".to_string(),
            ureq::Error::Io(io) => io.to_string(),
            other => other.to_string(),
        };
        match self.stage {
            Stage::Request => what,
            Stage::Answer => format!("reading the answer: {what}"),
        }
    }
}
