//! The sidecars' admin API, fanned out to every replica in parallel.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Confirmation, SinkError, Split, WeightSink};
use crate::spec::Target;
use crate::transport::{Client, Method, Request};

/// A [`WeightSink`] over the admin APIs of one or many sidecars, e.g.
/// `http://127.0.0.1:15000`.
///
/// Every change goes to every replica at once and counts only when every replica confirmed
/// (HTTP 200). When some did not:
/// - a weight change is undone with `POST /rollback` on every replica (a timed-out replica
///   may have applied it), so no replica is left ahead of the others;
/// - a promotion is undone with `POST /promote` of the stable subset on the replicas that
///   promoted, so that the controller's rollback that follows means the same everywhere.
pub struct AdminSink {
    replicas: Vec<String>,
    token: Option<String>,
    timeout: Duration,
    client: Client,
}

impl AdminSink {
    /// A sink over these admin base URLs, 2 s per request.
    pub fn new<I, S>(replicas: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AdminSink {
            replicas: replicas
                .into_iter()
                .map(|r| r.into().trim_end_matches('/').to_string())
                .collect(),
            token: None,
            timeout: Duration::from_secs(2),
            client: Client::new(),
        }
    }

    /// Sends `Authorization: Bearer <token>` (required by a sidecar whose admin API is not
    /// bound to loopback).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The timeout of one request to one replica.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends one request to the given replicas in parallel; one result per replica, in order.
    fn fan_out(
        &self,
        replicas: &[&str],
        method: Method,
        path: &str,
        body: &Value,
    ) -> Vec<Result<u64, SinkError>> {
        let body = body.to_string();
        std::thread::scope(|s| {
            let calls: Vec<_> = replicas
                .iter()
                .map(|base| {
                    let body = &body;
                    s.spawn(move || self.call(base, method, path, body))
                })
                .collect();
            calls
                .into_iter()
                .zip(replicas)
                .map(|(call, base)| {
                    call.join().unwrap_or_else(|_| {
                        Err(SinkError::Failed {
                            by: base.to_string(),
                            reason: "the request thread panicked".into(),
                        })
                    })
                })
                .collect()
        })
    }

    fn call(&self, base: &str, method: Method, path: &str, body: &str) -> Result<u64, SinkError> {
        let url = format!("{base}{path}");
        let request = Request {
            token: self.token.as_deref(),
            ..Request::json(method, &url, body, self.timeout)
        };
        let reply = self
            .client
            .send(&request)
            .map_err(|source| SinkError::Unreachable {
                by: url.clone(),
                source,
            })?;
        let answer: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
        match reply.status {
            200 => Ok(answer["generation"].as_u64().unwrap_or(0)),
            409 => Err(SinkError::Refused {
                by: url,
                message: answer["error"]
                    .as_str()
                    .unwrap_or("the guard refused the change")
                    .to_string(),
                findings: findings(&answer["findings"]),
            }),
            status => Err(SinkError::Failed {
                by: url,
                reason: format!(
                    "answered {status}: {}",
                    answer["error"].as_str().unwrap_or(reply.body.trim())
                ),
            }),
        }
    }

    /// Sends to every replica; on any failure while some replica confirmed, sends `undo` and
    /// returns the failures.
    fn everywhere(
        &self,
        method: Method,
        path: &str,
        body: Value,
        undo: Option<Undo>,
    ) -> Result<Confirmation, SinkError> {
        let started = Instant::now();
        let all: Vec<&str> = self.replicas.iter().map(String::as_str).collect();
        let results = self.fan_out(&all, method, path, &body);
        let took = started.elapsed();
        if results.iter().all(Result::is_ok) {
            return Ok(Confirmation {
                took,
                generations: results.into_iter().flatten().collect(),
            });
        }
        let confirmed: Vec<bool> = results.iter().map(Result::is_ok).collect();
        let failures: Vec<SinkError> = results.into_iter().filter_map(Result::err).collect();
        let mut undo_error = None;
        if let Some(undo) = undo
            && confirmed.iter().any(|c| *c)
        {
            let targets: Vec<&str> = all
                .iter()
                .zip(&confirmed)
                .filter(|(_, c)| **c || !undo.confirmed_only)
                .map(|(r, _)| *r)
                .collect();
            let errors: Vec<String> = self
                .fan_out(&targets, undo.method, undo.path, &undo.body)
                .into_iter()
                .filter_map(|r| r.err().map(|e| e.to_string()))
                .collect();
            if !errors.is_empty() {
                undo_error = Some(errors.join("; "));
            }
        }
        if self.replicas.len() == 1 && undo_error.is_none() {
            return Err(failures.into_iter().next().expect("one failure"));
        }
        Err(SinkError::Partial {
            failures,
            replicas: self.replicas.len(),
            undo_error,
        })
    }
}

/// What puts replicas back after a partial failure.
struct Undo {
    /// Only the replicas that confirmed (else every replica).
    confirmed_only: bool,
    method: Method,
    path: &'static str,
    body: Value,
}

/// One line per finding of a 409 answer: `CODE message (path)` when they are weir findings.
fn findings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|all| {
            all.iter()
                .map(|f| match (f["code"].as_str(), f["message"].as_str()) {
                    (Some(code), Some(message)) => format!("{code} {message}"),
                    (None, Some(message)) => message.to_string(),
                    _ => f.as_str().map_or_else(|| f.to_string(), str::to_string),
                })
                .collect()
        })
        .unwrap_or_default()
}

impl WeightSink for AdminSink {
    fn set_weights(&mut self, target: &Target, split: Split) -> Result<Confirmation, SinkError> {
        let body = json!({
            "virtual_service": target.virtual_service,
            "weights": {
                target.stable_subset.as_str(): split.stable,
                target.canary_subset.as_str(): split.canary,
            },
            "rule": target.rule,
            "force": false,
            "promotion": split.is_promotion(),
        });
        let rollback = json!({ "virtual_service": target.virtual_service });
        // Undo on every replica: a replica that timed out may have applied the change.
        self.everywhere(
            Method::Put,
            "/weights",
            body,
            Some(Undo {
                confirmed_only: false,
                method: Method::Post,
                path: "/rollback",
                body: rollback,
            }),
        )
    }

    fn rollback(&mut self, target: &Target) -> Result<Confirmation, SinkError> {
        let body = json!({ "virtual_service": target.virtual_service });
        self.everywhere(Method::Post, "/rollback", body, None)
    }

    fn promote(&mut self, target: &Target) -> Result<Confirmation, SinkError> {
        let body = json!({
            "virtual_service": target.virtual_service,
            "subset": target.canary_subset,
        });
        // Put the stable subset back where the promotion went through.
        let back = json!({
            "virtual_service": target.virtual_service,
            "subset": target.stable_subset,
        });
        self.everywhere(
            Method::Post,
            "/promote",
            body,
            Some(Undo {
                confirmed_only: true,
                method: Method::Post,
                path: "/promote",
                body: back,
            }),
        )
    }

    fn release(&mut self, target: &Target) -> Result<Confirmation, SinkError> {
        let body = json!({ "virtual_service": target.virtual_service });
        self.everywhere(Method::Delete, "/rollback", body, None)
    }

    fn describe(&self) -> String {
        match self.replicas.as_slice() {
            [one] => format!("admin API {one}"),
            many => format!("admin API of {} sidecars", many.len()),
        }
    }
}
