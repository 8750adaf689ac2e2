//! The admin API's client, over the [`weir_proxy::admin::api`] types: `weir set-weights` and
//! `weir rollback` (exit 0 done, 1 refused by the sidecar's validator with the findings
//! printed, 2 usage or connection error), and `weir demo`'s calls.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use weir_proxy::admin::api::{
    ErrorResponse, FindingView, RollbackRequest, RollbackResponse, WeightChange,
};

use super::Format;

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
    let change = WeightChange {
        virtual_service: args.virtual_service.clone(),
        rule: args.rule.clone(),
        weights,
        force: args.force,
        promotion: args.promotion,
        ..WeightChange::default()
    };
    let reply = blocking(&args.target, |admin| async move {
        admin.call(Method::PUT, "/weights", Some(&change)).await
    })?;
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
    let reply = blocking(&args.target, |admin| async move {
        admin.call(method, "/rollback", body.as_ref()).await
    })?;
    let which = args
        .virtual_service
        .as_deref()
        .unwrap_or("every VirtualService");
    finish(&reply, args.format, |reply| {
        let Some(done) = reply.parse::<RollbackResponse>() else {
            return println!("{}", reply.body);
        };
        if args.release {
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

/// `http://` added when missing, no trailing slash.
pub fn base_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// Runs one exchange with the admin API of `target` on a runtime of its own.
fn blocking<F: Future<Output = Result<Reply>>>(
    target: &AdminTarget,
    exchange: impl FnOnce(AdminClient) -> F,
) -> Result<Reply> {
    let admin = AdminClient::new(&target.admin, target.token.clone())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(exchange(admin))
}

/// An answer of the admin API: its status and its JSON body (a body that is not JSON becomes
/// `{"error": <its text>}`).
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// The body as one of the [`weir_proxy::admin::api`] types.
    pub fn parse<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_value(self.body.clone()).ok()
    }

    /// The error message of a failed call.
    pub fn error(&self) -> String {
        self.parse::<ErrorResponse>()
            .map_or_else(|| "no error message".to_string(), |e| e.error)
    }
}

/// A sidecar's admin API, called over HTTP as a human or a pipeline would.
#[derive(Clone, Debug)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// A client of the admin API at `url` (`http://` added when missing).
    pub fn new(url: &str, token: Option<String>) -> Result<Self> {
        let base = base_url(url);
        let uri: Uri = base.parse().with_context(|| {
            format!("--admin {url:?} is not a URL such as http://127.0.0.1:15000")
        })?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "--admin {url:?}: only http:// is supported"
        );
        Ok(AdminClient {
            base,
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
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
                body: json!({"error": format!("{e:#}")}),
            })
    }

    /// One call; failing to get an answer in [`TIMEOUT`] is an error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Reply> {
        let uri = format!("{}{path}", self.base);
        let mut req = Request::builder().method(method).uri(&uri);
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let bytes = match body {
            Some(body) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(body)?)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .context("cannot build the request")?;
        let exchange = async {
            let resp = self
                .client
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
            let body = serde_json::from_slice(&body).unwrap_or_else(
                |_| json!({"error": String::from_utf8_lossy(&body).trim().to_string()}),
            );
            Ok(Reply { status, body })
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .with_context(|| {
                format!(
                    "the admin API at {uri} did not answer within {}s",
                    TIMEOUT.as_secs()
                )
            })?
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

    #[test]
    fn urls_get_a_scheme_and_lose_the_trailing_slash() {
        assert_eq!(base_url("127.0.0.1:15000"), "http://127.0.0.1:15000");
        assert_eq!(base_url("http://a:1/"), "http://a:1");
        assert!(AdminClient::new("https://a:1", None).is_err());
    }
}
