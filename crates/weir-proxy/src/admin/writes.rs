//! The writes: `PUT /weights`, `POST|DELETE /rollback`, `POST /promote`, `POST /reload`. Each
//! goes through the [`LiveTable`]'s validator and weight guards.

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use serde_json::Value;
use weir_router::LiveTable;

use super::api::{
    ChangeResponse, PromoteRequest, PromoteResponse, RollbackRequest, RollbackResponse,
    WeightChange, findings,
};
use super::reply::{AdminResponse, Rejection, error, json, malformed, parse, refusal};
use crate::reload::{ReloadError, Trigger};
use crate::sidecar::Sidecar;

/// The origin of the admin API's changes, in findings and logs.
const ORIGIN: &str = "admin API";

/// A `PUT /weights` body. `rule` may be the rule's index as a number: it is read as its
/// decimal string.
pub(super) fn weight_change(body: &[u8]) -> Result<WeightChange, Rejection> {
    let mut value: Value = parse(body)?;
    if let Some(rule) = value.get_mut("rule")
        && let Some(index) = rule.as_u64()
    {
        *rule = Value::String(index.to_string());
    }
    serde_json::from_value(value).map_err(malformed)
}

pub(super) fn put_weights(sidecar: &Sidecar, body: &[u8]) -> AdminResponse {
    let mut change = match weight_change(body) {
        Ok(c) => c,
        Err(rejection) => return rejection.into(),
    };
    if change.weights.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "`weights` is empty: name at least one subset, e.g. {\"v1\": 90, \"v2\": 10}",
        );
    }
    if let Some(rejection) = unknown_virtual_service(&sidecar.live, &change.virtual_service) {
        return rejection.into();
    }
    change.origin = ORIGIN.to_string();
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
            json(
                StatusCode::OK,
                &ChangeResponse {
                    generation: applied.generation,
                    findings: findings(&applied.findings),
                },
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

/// The VirtualService a [`RollbackRequest`] body names (`None`: an empty body or none named,
/// meaning every one), or the answer refusing the body or an unknown name.
fn target(sidecar: &Sidecar, body: &[u8]) -> Result<Option<String>, Rejection> {
    let req: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        parse(body)?
    };
    if let Some(rejection) = req
        .virtual_service
        .as_deref()
        .and_then(|name| unknown_virtual_service(&sidecar.live, name))
    {
        return Err(rejection);
    }
    Ok(req.virtual_service)
}

/// `DELETE /state`: the config is the truth again (admin weights and promotions dropped,
/// latches kept).
pub(super) fn discard(sidecar: &Sidecar, body: &[u8]) -> AdminResponse {
    let named = match target(sidecar, body) {
        Ok(named) => named,
        Err(rejection) => return rejection.into(),
    };
    let target = named.as_deref();
    match sidecar.live.discard_admin_weights(target) {
        Ok(applied) => {
            tracing::info!(
                virtual_service = target.unwrap_or("(all)"),
                generation = applied.generation,
                "admin weights discarded through the admin API: the config's weights are served"
            );
            json(
                StatusCode::OK,
                &ChangeResponse {
                    generation: applied.generation,
                    findings: findings(&applied.findings),
                },
            )
        }
        Err(refused) => refusal("refused", &refused.findings),
    }
}

pub(super) fn rollback(sidecar: &Sidecar, body: &[u8], release: bool) -> AdminResponse {
    let named = match target(sidecar, body) {
        Ok(named) => named,
        Err(rejection) => return rejection.into(),
    };
    let target = named.as_deref();
    // What a release will actually free, so that `weir rollback --release` can say when
    // nothing was latched.
    let latched_before: Vec<String> = if release {
        keys_of(&sidecar.live.load_full(), target)
            .into_iter()
            .filter(|k| sidecar.live.is_latched(k))
            .collect()
    } else {
        Vec::new()
    };
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
    let keys = keys_of(&sidecar.live.load_full(), target);
    if release {
        tracing::info!(virtual_services = ?latched_before, generation = applied.generation, "rollback latch released through the admin API");
        return json(
            StatusCode::OK,
            &RollbackResponse {
                generation: applied.generation,
                took_us: None,
                virtual_services: Some(latched_before),
            },
        );
    }
    sidecar.metrics.record_rollback();
    let took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    tracing::warn!(
        virtual_services = ?keys,
        generation = applied.generation,
        took_us,
        "ROLLBACK through the admin API: canaries at 0%, latched until DELETE /rollback"
    );
    json(
        StatusCode::OK,
        &RollbackResponse {
            generation: applied.generation,
            took_us: Some(took_us),
            virtual_services: Some(keys),
        },
    )
}

pub(super) fn promote(sidecar: &Sidecar, body: &[u8]) -> AdminResponse {
    let req: PromoteRequest = match parse(body) {
        Ok(r) => r,
        Err(rejection) => return rejection.into(),
    };
    if let Some(rejection) = unknown_virtual_service(&sidecar.live, &req.virtual_service) {
        return rejection.into();
    }
    match sidecar.live.promote(&req.virtual_service, &req.subset) {
        Ok(applied) => {
            tracing::info!(
                virtual_service = %req.virtual_service,
                subset = %req.subset,
                generation = applied.generation,
                "subset promoted through the admin API"
            );
            json(
                StatusCode::OK,
                &PromoteResponse {
                    generation: applied.generation,
                },
            )
        }
        Err(refused) => refusal("promotion refused", &refused.findings),
    }
}

pub(super) async fn reload(sidecar: &Sidecar) -> AdminResponse {
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
        Ok(applied) => json(
            StatusCode::OK,
            &ChangeResponse {
                generation: applied.generation,
                findings: findings(&applied.findings),
            },
        ),
        Err(ReloadError::Refused(refused)) => refusal(
            "refused by the validator; the running table stays",
            &refused.findings,
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn unknown_virtual_service(live: &LiveTable, name: &str) -> Option<Rejection> {
    let table = live.load();
    if table.virtual_service(name).is_some() {
        return None;
    }
    let known: Vec<String> = table.virtual_services().iter().map(|vs| vs.key()).collect();
    Some(Rejection(
        StatusCode::NOT_FOUND,
        format!(
            "no VirtualService {name:?}; this sidecar routes {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ),
    ))
}

/// The keys (`namespace/name`) of the VirtualService named, or of every one.
fn keys_of(table: &weir_router::RouteTable, target: Option<&str>) -> Vec<String> {
    match target {
        Some(name) => table
            .virtual_service(name)
            .map(|vs| vs.key())
            .into_iter()
            .collect(),
        None => table.virtual_services().iter().map(|vs| vs.key()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_is_named_or_numbered() {
        let r = weight_change(br#"{"virtual_service": "p", "rule": 1, "weights": {"v1": 100}}"#)
            .ok()
            .unwrap();
        assert_eq!(r.rule.as_deref(), Some("1"));
        let r = weight_change(
            br#"{"virtual_service": "p", "rule": "canary-split", "weights": {"v1": 100}}"#,
        )
        .ok()
        .unwrap();
        assert_eq!(r.rule.as_deref(), Some("canary-split"));
        assert!(!r.force && !r.promotion);
    }

    #[test]
    fn unknown_fields_and_negative_weights_are_malformed() {
        for body in [
            &br#"{"virtual_service": "p", "weights": {"v1": 100}, "forced": true}"#[..],
            br#"{"virtual_service": "p", "weights": {"v1": -1}}"#,
            br#"{"virtual_service": "p", "weights": {"v1": 100}, "origin": "me"}"#,
            br#"{"virtual_service": "p", "rule": -1, "weights": {"v1": 100}}"#,
        ] {
            match weight_change(body) {
                Err(Rejection(status, _)) => assert_eq!(status, StatusCode::BAD_REQUEST),
                Ok(change) => panic!("accepted {change:?}"),
            }
        }
    }
}
