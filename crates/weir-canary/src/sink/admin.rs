//! The sidecars' admin API, fanned out to every replica in parallel, with weir-proxy's admin
//! client and wire types (the server's own).

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeMap;

use weir_proxy::admin::api::{
    DestinationView, ErrorResponse, PromoteRequest, RollbackRequest, RoutesResponse,
    VirtualServiceView, WeightChange,
};
use weir_proxy::admin::client::{AdminClient, Reply, base_url, check_routes};

use super::{Confirmation, Drift, SinkError, Split, WeightSink};
use crate::spec::Target;

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
    /// Each replica's boot id at the last look, to see restarts.
    boot_ids: BTreeMap<String, String>,
}

impl AdminSink {
    /// A sink over these admin base URLs, 2 s per request.
    pub fn new<I, S>(replicas: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AdminSink {
            replicas: replicas.into_iter().map(|r| base_url(&r.into())).collect(),
            token: None,
            timeout: Duration::from_secs(2),
            boot_ids: BTreeMap::new(),
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

    /// The replicas' admin base URLs.
    pub fn replicas(&self) -> &[String] {
        &self.replicas
    }

    /// One call to one replica, answered whatever the status.
    pub(crate) fn exchange(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, SinkError> {
        let url = format!("{base}{path}");
        let client = AdminClient::new(base, self.token.clone())
            .map_err(|e| SinkError::Failed {
                by: url.clone(),
                reason: e.to_string(),
            })?
            .with_timeout(self.timeout);
        client
            .call_blocking(method, path, body)
            .map_err(|source| SinkError::Unreachable { by: url, source })
    }

    /// Sends one request to the given replicas in parallel; one result per replica, in order.
    fn fan_out(
        &self,
        replicas: &[&str],
        method: &Method,
        path: &str,
        body: &Value,
    ) -> Vec<Result<u64, SinkError>> {
        std::thread::scope(|s| {
            let calls: Vec<_> = replicas
                .iter()
                .map(|base| s.spawn(move || self.call(base, method.clone(), path, body)))
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

    fn call(&self, base: &str, method: Method, path: &str, body: &Value) -> Result<u64, SinkError> {
        let url = format!("{base}{path}");
        let reply = self.exchange(base, method, path, Some(body))?;
        match reply.status {
            StatusCode::OK => reply
                .parse::<Generation>()
                .map(|g| g.generation)
                .ok_or_else(|| SinkError::Failed {
                    by: url,
                    reason: format!(
                        "answered 200 without a generation ({}): not a weir sidecar's admin API?",
                        reply.body
                    ),
                }),
            StatusCode::CONFLICT => {
                let refusal = reply.parse::<ErrorResponse>();
                Err(SinkError::Refused {
                    by: url,
                    message: refusal
                        .as_ref()
                        .map_or("the guard refused the change", |r| r.error.as_str())
                        .to_string(),
                    findings: refusal
                        .and_then(|r| r.findings)
                        .unwrap_or_default()
                        .iter()
                        .map(|f| format!("{} {}", f.code, f.message))
                        .collect(),
                })
            }
            status => Err(SinkError::Failed {
                by: url,
                reason: format!("answered {}: {}", status.as_u16(), reply.error()),
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
        let results = self.fan_out(&all, &method, path, &body);
        let took = started.elapsed();
        if results.iter().all(Result::is_ok) {
            return Ok(Confirmation {
                took,
                generations: results.into_iter().flatten().collect(),
                pending: Vec::new(),
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
                .fan_out(&targets, &undo.method, undo.path, &undo.body)
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

/// The destinations of `target`'s rule on one replica.
fn rule_of<'r>(
    routes: &'r RoutesResponse,
    target: &Target,
) -> Result<&'r [DestinationView], String> {
    let vs = virtual_service_of(routes, target)?;
    let rule = match &target.rule {
        Some(name) => vs.rules.iter().find(|r| r.name.as_ref() == Some(name)),
        None => vs
            .rules
            .iter()
            .find(|r| r.destinations.len() > 1)
            .or(vs.rules.last()),
    }
    .ok_or_else(|| {
        let names: Vec<&str> = vs.rules.iter().filter_map(|r| r.name.as_deref()).collect();
        format!(
            "VirtualService {} has no rule {:?} (its rules: {})",
            vs.name,
            target.rule.as_deref().unwrap_or("(split)"),
            names.join(", ")
        )
    })?;
    Ok(&rule.destinations)
}

fn virtual_service_of<'r>(
    routes: &'r RoutesResponse,
    target: &Target,
) -> Result<&'r VirtualServiceView, String> {
    routes
        .virtual_services
        .iter()
        .find(|v| {
            v.name == target.virtual_service
                || format!("{}/{}", v.namespace, v.name) == target.virtual_service
                || v.hosts.contains(&target.virtual_service)
        })
        .ok_or_else(|| format!("no VirtualService {:?}", target.virtual_service))
}

/// What one replica serves on `target`'s rule: its split and whether a latch holds it.
fn in_force(routes: &RoutesResponse, target: &Target) -> Result<(Split, bool), String> {
    let latched = virtual_service_of(routes, target)?.latched;
    let rule = rule_of(routes, target)?;
    let weight = |subset: &str| -> u32 {
        rule.iter()
            .filter(|d| d.subset.as_deref() == Some(subset))
            .map(|d| d.weight)
            .sum()
    };
    Ok((
        Split {
            stable: weight(&target.stable_subset),
            canary: weight(&target.canary_subset),
        },
        latched,
    ))
}

/// The generation every successful write answers with.
#[derive(serde::Deserialize)]
struct Generation {
    generation: u64,
}

/// What puts replicas back after a partial failure.
struct Undo {
    /// Only the replicas that confirmed (else every replica).
    confirmed_only: bool,
    method: Method,
    path: &'static str,
    body: Value,
}

/// A wire type as the JSON body of a request.
fn body(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The body naming one VirtualService (`POST|DELETE /rollback`).
fn naming(target: &Target) -> Value {
    body(&RollbackRequest {
        virtual_service: Some(target.virtual_service.clone()),
    })
}

impl WeightSink for AdminSink {
    fn set_weights(&mut self, target: &Target, split: Split) -> Result<Confirmation, SinkError> {
        let change = WeightChange {
            virtual_service: target.virtual_service.clone(),
            rule: target.rule.clone(),
            weights: [
                (target.stable_subset.clone(), split.stable),
                (target.canary_subset.clone(), split.canary),
            ]
            .into(),
            force: false,
            promotion: split.is_promotion(),
            ..WeightChange::default()
        };
        // Undo on every replica: a replica that timed out may have applied the change.
        self.everywhere(
            Method::PUT,
            "/weights",
            body(&change),
            Some(Undo {
                confirmed_only: false,
                method: Method::POST,
                path: "/rollback",
                body: naming(target),
            }),
        )
    }

    fn rollback(&mut self, target: &Target) -> Result<Confirmation, SinkError> {
        self.everywhere(Method::POST, "/rollback", naming(target), None)
    }

    fn promote(&mut self, target: &Target) -> Result<Confirmation, SinkError> {
        let promote = |subset: &str| {
            body(&PromoteRequest {
                virtual_service: target.virtual_service.clone(),
                subset: subset.to_string(),
            })
        };
        // Put the stable subset back where the promotion went through.
        self.everywhere(
            Method::POST,
            "/promote",
            promote(&target.canary_subset),
            Some(Undo {
                confirmed_only: true,
                method: Method::POST,
                path: "/promote",
                body: promote(&target.stable_subset),
            }),
        )
    }

    fn release(&mut self, target: &Target) -> Result<Confirmation, SinkError> {
        self.everywhere(Method::DELETE, "/rollback", naming(target), None)
    }

    fn preflight(&mut self, target: &Target) -> Result<(), SinkError> {
        let mut problems = Vec::new();
        let mut splits: Vec<(String, Split)> = Vec::new();
        for (replica, look) in self.look_all(PREFLIGHT_ATTEMPTS) {
            let found = look.and_then(|routes| {
                let rule = rule_of(&routes, target)?;
                for subset in [&target.stable_subset, &target.canary_subset] {
                    if !rule
                        .iter()
                        .any(|d| d.subset.as_deref() == Some(subset.as_str()))
                    {
                        let known: Vec<&str> =
                            rule.iter().filter_map(|d| d.subset.as_deref()).collect();
                        return Err(format!(
                            "the rule routes to no subset {subset:?} (its subsets: {})",
                            known.join(", ")
                        ));
                    }
                }
                match in_force(&routes, target)? {
                    (_, true) => Err(format!(
                        "a rollback latch holds {} at 0% (an earlier rollback): release it with `weir rollback --release --virtual-service {}` before a new run",
                        target.canary_subset, target.virtual_service
                    )),
                    (split, false) => Ok(split),
                }
            });
            match found {
                Ok(split) => splits.push((replica, split)),
                Err(why) => problems.push(format!("{replica}: {why}")),
            }
        }
        if let Some((first, split)) = splits.first()
            && let Some((other, theirs)) = splits.iter().find(|(_, s)| s != split)
        {
            problems.push(format!(
                "the replicas disagree on the split in force: {first} serves {split}, {other} serves {theirs}"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SinkError::Preflight { problems })
        }
    }

    fn verify(&mut self, target: &Target, expected: Split) -> Vec<Drift> {
        let looks = self.look_all(1);
        let mut drifts = Vec::new();
        for (replica, look) in looks {
            let routes = match look {
                Ok(r) => r,
                Err(why) => {
                    drifts.push(Drift::Unreadable { replica, why });
                    continue;
                }
            };
            if let Some(before) = self
                .boot_ids
                .insert(replica.clone(), routes.boot_id.clone())
                && before != routes.boot_id
            {
                drifts.push(Drift::Restarted {
                    replica: replica.clone(),
                });
            }
            match in_force(&routes, target) {
                Err(why) => drifts.push(Drift::Unreadable { replica, why }),
                Ok((_, true)) if expected.canary > 0 => drifts.push(Drift::Latched { replica }),
                Ok((split, _)) if split != expected => drifts.push(Drift::Weights {
                    replica,
                    in_force: split,
                    expected,
                }),
                Ok(_) => {}
            }
        }
        drifts
    }

    fn describe(&self) -> String {
        match self.replicas.as_slice() {
            [one] => format!("admin API {one}"),
            many => format!("admin API of {} sidecars", many.len()),
        }
    }
}

impl AdminSink {
    /// The replicas that do not serve `expected` on `target`'s rule (with `promoted`: with the
    /// canary subset as the stable subset), one line each, from one look at every `/routes`.
    pub(crate) fn not_serving(
        &self,
        target: &Target,
        expected: Split,
        promoted: bool,
    ) -> Vec<String> {
        self.look_all(1)
            .into_iter()
            .filter_map(|(replica, look)| {
                let routes = match look {
                    Ok(routes) => routes,
                    Err(why) => return Some(format!("{replica}: {why}")),
                };
                let stable = virtual_service_of(&routes, target)
                    .ok()
                    .and_then(|vs| vs.stable_subset.clone());
                match in_force(&routes, target) {
                    Err(why) => Some(format!("{replica}: {why}")),
                    Ok((split, _)) if split != expected => {
                        Some(format!("{replica} serves {split}, not {expected}"))
                    }
                    Ok(_) if promoted && stable.as_deref() != Some(&target.canary_subset) => {
                        Some(format!(
                            "{replica} still has {} as its stable subset",
                            stable.as_deref().unwrap_or("none")
                        ))
                    }
                    Ok(_) => None,
                }
            })
            .collect()
    }
}

/// How many times preflight asks a replica that gives no answer, or a 5xx.
const PREFLIGHT_ATTEMPTS: u32 = 3;

impl AdminSink {
    /// Every replica's `GET /routes`, in parallel, as weir's document; a replica that gives
    /// no answer or a 5xx is asked up to `attempts` times, with a doubling pause from 200 ms.
    fn look_all(&self, attempts: u32) -> Vec<(String, Result<RoutesResponse, String>)> {
        let look = |base: &str| {
            let mut pause = Duration::from_millis(200);
            let mut attempt = 1;
            loop {
                let reply = self.exchange(base, Method::GET, "/routes", None);
                let transient = match &reply {
                    Err(SinkError::Unreachable { .. }) => true,
                    Ok(r) => r.status.is_server_error(),
                    Err(_) => false,
                };
                if !transient || attempt >= attempts {
                    return reply
                        .map_err(|e| e.to_string())
                        .and_then(|r| check_routes(&r));
                }
                std::thread::sleep(pause);
                pause *= 2;
                attempt += 1;
            }
        };
        std::thread::scope(|s| {
            let calls: Vec<_> = self
                .replicas
                .iter()
                .map(|base| s.spawn(move || look(base)))
                .collect();
            self.replicas
                .iter()
                .cloned()
                .zip(calls.into_iter().map(|c| {
                    c.join()
                        .unwrap_or_else(|_| Err("the request thread panicked".into()))
                }))
                .collect()
        })
    }
}
