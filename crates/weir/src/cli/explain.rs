//! `weir explain --config FILE --url URL [-H 'name: value']... [--samples N]`: how one request
//! is routed, and why.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use weir_router::{GuardOptions, HostMode, NoRoute, RequestHead, RouteTable, StickyKey};

use super::Format;
use super::validate::read_sources;

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

#[derive(Serialize)]
struct SkippedRule {
    rule_index: usize,
    rule_name: Option<String>,
    reason: String,
}

#[derive(Serialize)]
struct DestinationOut {
    host: String,
    subset: Option<String>,
    weight: u32,
    share_percent: f64,
    endpoints: Vec<String>,
}

#[derive(Serialize)]
struct Explanation {
    url: String,
    method: String,
    virtual_service: String,
    namespace: String,
    rule_index: usize,
    rule_name: Option<String>,
    skipped: Vec<SkippedRule>,
    destinations: Vec<DestinationOut>,
    sticky: Option<String>,
    /// The destination a single request goes to (with --sticky-key, the user's version).
    #[serde(skip_serializing_if = "Option::is_none")]
    chosen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    samples: Option<BTreeMap<String, u64>>,
}

pub fn run(args: ExplainArgs) -> Result<ExitCode> {
    let sources = read_sources(&args.config)?;
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
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    let Some(vs) = table.virtual_service_for_host(authority) else {
        // Not a usage error: the request has no route, as the proxy's `404 NR` says.
        eprintln!(
            "weir explain: {}: the proxy answers 404",
            table.no_route_message(&NoRoute::UnknownHost(authority.to_string()))
        );
        return Ok(ExitCode::from(1));
    };
    if let (Some(key), Some(sticky)) = (&args.sticky_key, &vs.sticky) {
        match sticky {
            StickyKey::Header(name) => {
                headers.insert(name.clone(), HeaderValue::from_str(key)?);
            }
            StickyKey::Cookie(name) => {
                headers.append(
                    http::header::COOKIE,
                    HeaderValue::from_str(&format!("{name}={key}"))?,
                );
            }
        }
    } else if args.sticky_key.is_some() {
        bail!(
            "--sticky-key given, but VirtualService {} has no weir.dev/sticky annotation",
            vs.name
        );
    }
    let head = RequestHead::new(&method, &uri, &headers);
    let explanation = table.explain(&head, 0);
    let skipped = explanation
        .skipped
        .iter()
        .map(|s| SkippedRule {
            rule_index: s.rule.index,
            rule_name: s.rule.name.clone(),
            reason: s.reason(),
        })
        .collect();
    let rule = match &explanation.decision {
        Ok(d) => d.rule,
        Err(NoRoute::NoDestination { .. }) => vs
            .rules
            .get(explanation.skipped.len())
            .ok_or_else(|| anyhow!("no rule of VirtualService {} matches", vs.name))?,
        Err(e) => bail!("{}: the proxy answers 404", table.no_route_message(e)),
    };
    let destinations = rule
        .destinations
        .iter()
        .map(|d| DestinationOut {
            host: d.host.clone(),
            subset: d.subset.clone(),
            weight: d.weight,
            share_percent: round2(rule.share_percent(d)),
            endpoints: {
                let c = table.cluster(d.cluster);
                if c.endpoints_known() {
                    c.endpoints.iter().map(|e| e.authority.clone()).collect()
                } else {
                    vec!["(unknown: Kubernetes Service, resolved by the cluster)".to_string()]
                }
            },
        })
        .collect();
    let label = |table: &RouteTable, value: u64| -> Option<String> {
        table.decide_in(vs, &head, value).ok().map(|d| {
            d.destination
                .subset
                .clone()
                .unwrap_or_else(|| d.destination.host.clone())
        })
    };
    let chosen = args.sticky_key.as_ref().and_then(|_| label(&table, 0));
    let samples = args.samples.map(|n| {
        let mut rng = match args.seed {
            Some(s) => SmallRng::seed_from_u64(s),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        let mut counts = BTreeMap::new();
        for d in &rule.destinations {
            counts.insert(d.subset.clone().unwrap_or_else(|| d.host.clone()), 0);
        }
        for _ in 0..n {
            if let Some(l) = label(&table, rng.random()) {
                *counts.entry(l).or_insert(0) += 1;
            }
        }
        counts
    });
    let out = Explanation {
        url: args.url.clone(),
        method: method.to_string(),
        virtual_service: vs.name.clone(),
        namespace: vs.namespace.clone(),
        rule_index: rule.index,
        rule_name: rule.name.clone(),
        skipped,
        destinations,
        sticky: vs.sticky.as_ref().map(|s| match s {
            StickyKey::Header(h) => format!("header:{h}"),
            StickyKey::Cookie(c) => format!("cookie:{c}"),
        }),
        chosen,
        samples,
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&out)?),
        Format::Text => print_text(&out),
    }
    Ok(if refused {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn print_text(e: &Explanation) {
    println!("{} {}", e.method, e.url);
    println!("VirtualService {}/{}", e.namespace, e.virtual_service);
    for s in &e.skipped {
        let name = s
            .rule_name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        println!("  rule {}{name}: no match: {}", s.rule_index, s.reason);
    }
    let name = e
        .rule_name
        .as_deref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    println!("  rule {}{name}: MATCH", e.rule_index);
    println!("destinations:");
    for d in &e.destinations {
        println!(
            "  {:<24} subset {:<8} weight {:>3}  {:>6.2}%  endpoints {}",
            d.host,
            d.subset.as_deref().unwrap_or("-"),
            d.weight,
            d.share_percent,
            if d.endpoints.is_empty() {
                "(none)".to_string()
            } else {
                d.endpoints.join(", ")
            }
        );
    }
    if let Some(s) = &e.sticky {
        println!("sticky: {s}");
    }
    if let Some(c) = &e.chosen {
        println!("this session goes to: {c}");
    }
    if let Some(samples) = &e.samples {
        let total: u64 = samples.values().sum();
        println!("samples: {total}");
        for (k, v) in samples {
            let pct = if total == 0 {
                0.0
            } else {
                *v as f64 * 100.0 / total as f64
            };
            println!("  {k:<8} {v:>9}  {pct:>6.2}%");
        }
    }
}
