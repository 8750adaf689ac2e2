//! `weir set-weights` and `weir rollback`: clients of a running sidecar's admin API.
//! Exit 0 done, 1 refused by the sidecar's validator (the findings are printed), 2 usage or
//! connection error.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::output::Format;

/// How long a command waits for the sidecar's answer.
const TIMEOUT: Duration = Duration::from_secs(10);

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
    let body = json!({
        "virtual_service": args.virtual_service,
        "rule": args.rule,
        "weights": weights,
        "force": args.force,
        "promotion": args.promotion,
    });
    let (status, reply) = call(&args.target, Method::PUT, "/weights", Some(body))?;
    finish(status, &reply, args.format, |reply| {
        let weights: Vec<String> = args
            .weights
            .iter()
            .map(|(s, w)| format!("{s}={w}"))
            .collect();
        println!(
            "{}: weights set to {} (generation {})",
            args.virtual_service,
            weights.join(" "),
            reply["generation"]
        );
    })
}

/// `weir rollback`.
pub fn rollback(args: RollbackArgs) -> Result<ExitCode> {
    let body = args
        .virtual_service
        .as_ref()
        .map(|vs| json!({"virtual_service": vs}));
    let method = if args.release {
        Method::DELETE
    } else {
        Method::POST
    };
    let (status, reply) = call(&args.target, method, "/rollback", body)?;
    let which = args
        .virtual_service
        .as_deref()
        .unwrap_or("every VirtualService");
    finish(status, &reply, args.format, |reply| {
        if args.release {
            println!(
                "{which}: rollback latch released (generation {}); the canaries stay at 0% until their weights are changed",
                reply["generation"]
            );
        } else {
            let names: Vec<&str> = reply["virtual_services"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            println!(
                "rolled back {}: canaries at 0% in {} us (generation {}), latched until `weir rollback --release`",
                if names.is_empty() {
                    which.to_string()
                } else {
                    names.join(", ")
                },
                reply["took_us"],
                reply["generation"]
            );
        }
    })
}

/// Prints the reply and picks the exit code: 2xx 0, 409 (refused) 1, anything else 2.
fn finish(
    status: StatusCode,
    reply: &Value,
    format: Format,
    done: impl FnOnce(&Value),
) -> Result<ExitCode> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(reply)?);
    }
    if status.is_success() {
        if format == Format::Text {
            done(reply);
            print_findings(reply);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let message = reply["error"].as_str().unwrap_or("no error message");
    if status == StatusCode::CONFLICT {
        if format == Format::Text {
            println!("REFUSED: {message}");
            print_findings(reply);
        }
        return Ok(ExitCode::from(1));
    }
    if format == Format::Text {
        eprintln!("weir: the sidecar answered {status}: {message}");
    }
    Ok(ExitCode::from(2))
}

/// A finding as the admin API sends it.
#[derive(Deserialize)]
struct FindingView {
    code: String,
    severity: String,
    location: LocationView,
    message: String,
}

#[derive(Deserialize)]
struct LocationView {
    file: String,
    #[serde(default)]
    line: u32,
    #[serde(default)]
    column: u32,
    #[serde(default)]
    path: String,
}

fn print_findings(reply: &Value) {
    let Some(findings) = reply.get("findings") else {
        return;
    };
    let findings: Vec<FindingView> = match serde_json::from_value(findings.clone()) {
        Ok(f) => f,
        Err(_) => {
            println!("{findings}");
            return;
        }
    };
    for f in findings {
        let at = if f.location.line > 0 {
            format!(
                "{}:{}:{}",
                f.location.file, f.location.line, f.location.column
            )
        } else {
            f.location.file
        };
        println!("{at}: {}[{}] {}", f.severity, f.code, f.message);
        if !f.location.path.is_empty() {
            println!("    at {}", f.location.path);
        }
    }
}

/// Sends one request to the admin API; any failure to get an answer is an error (exit 2).
fn call(
    target: &AdminTarget,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value)> {
    let base = if target.admin.contains("://") {
        target.admin.clone()
    } else {
        format!("http://{}", target.admin)
    };
    let uri: Uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .with_context(|| {
            format!(
                "--admin {:?} is not a URL such as http://127.0.0.1:15000",
                target.admin
            )
        })?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "--admin {:?}: only http:// is supported",
        target.admin
    );
    let mut req = Request::builder().method(method).uri(&uri);
    if let Some(token) = &target.token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let bytes = match body {
        Some(body) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(serde_json::to_vec(&body)?)
        }
        None => Bytes::new(),
    };
    let req = req
        .body(Full::new(bytes))
        .context("cannot build the request")?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let exchange = async {
            let resp = client
                .request(req)
                .await
                .with_context(|| format!("cannot reach the admin API at {uri}"))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .context("the admin API's answer broke off")?
                .to_bytes();
            let reply = serde_json::from_slice(&body).unwrap_or_else(
                |_| json!({"error": String::from_utf8_lossy(&body).trim().to_string()}),
            );
            Ok((status, reply))
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .with_context(|| {
                format!(
                    "the admin API at {uri} did not answer within {}s",
                    TIMEOUT.as_secs()
                )
            })?
    })
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
