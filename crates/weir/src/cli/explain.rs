//! `weir explain --config FILE --url URL [-H 'name: value']... [--samples N]`: how one request
//! is routed, and why ([`RouteTable::report`](weir_router::RouteTable::report), printed).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use weir_router::{ConfigSource, GuardOptions, HostMode, ReportError, ReportOptions};

use super::Format;

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// Config file(s).
    #[arg(long, short, required = true, value_name = "FILE")]
    config: Vec<PathBuf>,
    /// The request URL, e.g. http://payment-svc/pay?x=1. Its host picks the VirtualService.
    #[arg(long)]
    url: String,
    /// The request method.
    #[arg(long, short = 'X', default_value = "GET")]
    method: String,
    /// A request header, `name: value`; repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Route this many requests and report the split the weights produced.
    #[arg(long)]
    samples: Option<u64>,
    /// Seed for the sampled random values (default: random). Fixed seeds give fixed output.
    #[arg(long)]
    seed: Option<u64>,
    /// The session key for a `weir.dev/sticky` VirtualService (sets its header or cookie).
    #[arg(long)]
    sticky_key: Option<String>,
    /// Require a ServiceEntry with endpoints for every destination host, as `weir serve` does
    /// (default: a host without one is a Kubernetes Service).
    #[arg(long)]
    strict_hosts: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(args: ExplainArgs) -> Result<ExitCode> {
    let sources = ConfigSource::read_paths(&args.config)?;
    let options = GuardOptions {
        hosts: if args.strict_hosts {
            HostMode::Endpoints
        } else {
            HostMode::Cluster
        },
        cli: true,
        ..GuardOptions::default()
    };
    let compiled = weir_router::validate(&sources, None, options);
    let refused = compiled.findings.has_errors();
    if refused {
        eprint!("{}", compiled.findings);
        eprintln!(
            "weir explain: the config is refused by the validator (exit 1); the explanation shows how it would route anyway"
        );
    }
    let table = compiled
        .table
        .ok_or_else(|| anyhow!("the config could not be compiled:\n{}", compiled.findings))?;
    let uri: Uri = args
        .url
        .parse()
        .with_context(|| format!("--url {:?} is not a URL", args.url))?;
    if uri.authority().is_none() {
        bail!(
            "--url {:?} needs a host, e.g. http://payment-svc/pay",
            args.url
        );
    }
    let method: Method = args
        .method
        .parse()
        .with_context(|| format!("--method {:?}", args.method))?;
    let mut headers = HeaderMap::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| anyhow!("-H {h:?} is not `name: value`"))?;
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes())
                .with_context(|| format!("header name {name:?}"))?,
            HeaderValue::from_str(value.trim())
                .with_context(|| format!("header value {value:?}"))?,
        );
    }
    let wanted = ReportOptions::new(args.sticky_key, args.samples, args.seed);
    let mut report = match table.report(&method, &uri, headers, &wanted) {
        Ok(report) => report,
        // Not a usage error: the request has no route, as the proxy's `404 NR` says.
        Err(e @ ReportError::UnknownHost(_)) => {
            eprintln!("weir explain: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => bail!("{e}"),
    };
    report.url = args.url;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print!("{report}"),
    }
    Ok(if refused {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
