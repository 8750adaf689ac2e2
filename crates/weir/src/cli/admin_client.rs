//! `weir set-weights` and `weir rollback` over [`weir_proxy::admin::client`] (exit 0 done, 1
//! refused by the sidecar's validator with the findings printed, 2 usage or connection
//! error).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use http::{Method, StatusCode};
use serde_json::Value;
use weir_proxy::admin::api::{FindingView, RollbackRequest, RollbackResponse, WeightChange};
use weir_proxy::admin::client::{AdminClient, AdminClientError, Reply};

use super::Format;

/// Where the sidecar's admin API is and how to authenticate.
#[derive(clap::Args, Debug)]
pub struct AdminTarget {
    /// The sidecar's admin API, e.g. http://127.0.0.1:15000.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:15000")]
    admin: String,
    /// The admin token (`weir serve --admin-token`), sent as `Authorization: Bearer`.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct SetWeightsArgs {
    #[command(flatten)]
    target: AdminTarget,
    /// The VirtualService: `name`, `namespace/name`, or one of its hosts.
    #[arg(long, value_name = "NAME")]
    virtual_service: String,
    /// The rule, by name or index; default: the first rule that splits between destinations.
    #[arg(long, value_name = "RULE")]
    rule: Option<String>,
    /// New weights, `subset=weight`, e.g. `v1=90 v2=10`.
    #[arg(required = true, value_name = "SUBSET=WEIGHT", value_parser = subset_weight)]
    weights: Vec<(String, u32)>,
    /// Skip the direction and step guards (never the structural checks).
    #[arg(long)]
    force: bool,
    /// Declare a promotion in progress: the canary may get the majority.
    #[arg(long)]
    promotion: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    #[command(flatten)]
    target: AdminTarget,
    /// Only this VirtualService; default: every VirtualService of the sidecar.
    #[arg(long, value_name = "NAME")]
    virtual_service: Option<String>,
    /// Release the rollback latch instead (the canaries stay at 0% until changed).
    #[arg(long)]
    release: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

impl AdminTarget {
    fn client(&self) -> Result<AdminClient, AdminClientError> {
        AdminClient::new(&self.admin, self.token.clone())
    }
}

fn subset_weight(text: &str) -> Result<(String, u32), String> {
    let (subset, weight) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not SUBSET=WEIGHT, e.g. v1=90"))?;
    let subset = subset.trim();
    if subset.is_empty() {
        return Err(format!("{text:?} names no subset"));
    }
    let weight = weight
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("the weight in {text:?} is not a whole number >= 0"))?;
    Ok((subset.to_string(), weight))
}

/// `weir set-weights`.
pub fn set_weights(args: SetWeightsArgs) -> Result<ExitCode> {
    let mut weights = BTreeMap::new();
    for (subset, weight) in &args.weights {
        anyhow::ensure!(
            weights.insert(subset.clone(), *weight).is_none(),
            "subset {subset} is given twice"
        );
    }
    let change = WeightChange {
        virtual_service: args.virtual_service.clone(),
        rule: args.rule.clone(),
        weights,
        force: args.force,
        promotion: args.promotion,
        ..WeightChange::default()
    };
    let reply = args
        .target
        .client()?
        .call_blocking(Method::PUT, "/weights", Some(&change))?;
    finish(&reply, args.format, |reply| {
        let weights: Vec<String> = args
            .weights
            .iter()
            .map(|(s, w)| format!("{s}={w}"))
            .collect();
        println!(
            "{}: weights set to {} (generation {})",
            args.virtual_service,
            weights.join(" "),
            reply.body["generation"]
        );
    })
}

/// `weir rollback`.
pub fn rollback(args: RollbackArgs) -> Result<ExitCode> {
    let body = args.virtual_service.clone().map(|vs| RollbackRequest {
        virtual_service: Some(vs),
    });
    let method = if args.release {
        Method::DELETE
    } else {
        Method::POST
    };
    let reply = args
        .target
        .client()?
        .call_blocking(method, "/rollback", body.as_ref())?;
    let which = args
        .virtual_service
        .as_deref()
        .unwrap_or("every VirtualService");
    finish(&reply, args.format, |reply| {
        let Some(done) = reply.parse::<RollbackResponse>() else {
            return println!("{}", reply.body);
        };
        if args.release && done.virtual_services.as_ref().is_some_and(Vec::is_empty) {
            println!(
                "{which}: nothing was latched, nothing to release (generation {}, unchanged)",
                done.generation
            );
        } else if args.release {
            println!(
                "{which}: rollback latch released (generation {}); the canaries stay at 0% until their weights are changed",
                done.generation
            );
        } else {
            let names = done.virtual_services.unwrap_or_default();
            println!(
                "rolled back {}: canaries at 0% in {} us (generation {}), latched until `weir rollback --release`",
                if names.is_empty() {
                    which.to_string()
                } else {
                    names.join(", ")
                },
                done.took_us.unwrap_or(0),
                done.generation
            );
        }
    })
}

/// Prints the reply and picks the exit code: 2xx 0, 409 (refused) 1, anything else 2.
fn finish(reply: &Reply, format: Format, done: impl FnOnce(&Reply)) -> Result<ExitCode> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&reply.body)?);
    }
    if reply.status.is_success() {
        if format == Format::Text {
            done(reply);
            print_findings(&reply.body);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let message = reply.error();
    if reply.status == StatusCode::CONFLICT {
        if format == Format::Text {
            println!("REFUSED: {message}");
            print_findings(&reply.body);
        }
        return Ok(ExitCode::from(1));
    }
    if format == Format::Text {
        eprintln!("weir: the sidecar answered {}: {message}", reply.status);
    }
    Ok(ExitCode::from(2))
}

fn print_findings(reply: &Value) {
    let Some(findings) = reply.get("findings") else {
        return;
    };
    match serde_json::from_value::<Vec<FindingView>>(findings.clone()) {
        Ok(findings) => findings.iter().for_each(|f| println!("{f}")),
        Err(_) => println!("{findings}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_subset_equals_number() {
        assert_eq!(subset_weight("v1=90"), Ok(("v1".to_string(), 90)));
        assert!(subset_weight("v1").is_err());
        assert!(subset_weight("v1=-1").is_err());
        assert!(subset_weight("=5").is_err());
        assert!(subset_weight("v1=ten").is_err());
    }
}
