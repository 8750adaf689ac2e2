//! Webhooks with Flagger's payload: `POST` of `{"name", "namespace", "phase", "metadata"}`;
//! a 2xx answer is "yes", anything else (another status, a timeout, a refused connection) "no".
//! What "yes" means depends on the hook's [`HookKind`](crate::HookKind).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::event::Phase;
use crate::spec::Webhook;
use crate::transport::{Client, Method, Request};

/// The JSON body of a webhook call, as Flagger sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WebhookPayload<'a> {
    /// The canary's `metadata.name`.
    pub name: &'a str,
    /// The canary's `metadata.namespace`.
    pub namespace: &'a str,
    /// The phase the canary is in when calling.
    pub phase: Phase,
    /// The hook's `metadata`, as written in the spec.
    pub metadata: &'a BTreeMap<String, String>,
}

/// Calls webhooks. The controller only needs the status, so tests script answers without HTTP.
pub trait WebhookClient {
    /// Calls `hook` with `payload` and returns the HTTP status; `Err` when no answer came
    /// (refused, timed out). The controller counts only 2xx as success.
    fn call(&mut self, hook: &Webhook, payload: &WebhookPayload<'_>) -> Result<u16, WebhookError>;
}

/// A webhook that could not be reached.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("webhook {name} ({url}): {reason}")]
pub struct WebhookError {
    /// The hook's name.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// What went wrong.
    pub reason: String,
}

/// The real client: a JSON `POST` with the hook's timeout.
#[derive(Clone)]
pub struct HttpWebhooks {
    client: Client,
}

impl HttpWebhooks {
    /// A client with no proxy.
    pub fn new() -> Self {
        HttpWebhooks {
            client: Client::new(),
        }
    }
}

impl Default for HttpWebhooks {
    fn default() -> Self {
        Self::new()
    }
}

impl WebhookClient for HttpWebhooks {
    fn call(&mut self, hook: &Webhook, payload: &WebhookPayload<'_>) -> Result<u16, WebhookError> {
        let body = serde_json::to_string(payload).expect("a payload of strings serializes");
        self.client
            .send(&Request::json(Method::Post, &hook.url, &body, hook.timeout))
            .map(|reply| reply.status)
            .map_err(|e| WebhookError {
                name: hook.name.clone(),
                url: hook.url.clone(),
                reason: e.to_string(),
            })
    }
}
