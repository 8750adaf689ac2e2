//! `weir validate FILE|DIR|-... [--against FILE] [--promotion] [--strict-hosts] [--format text|json]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use weir_router::{ConfigSource, GuardOptions, HostMode, Severity};

use super::{ConfigLimitsArgs, Format};

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// Config files: multi-document YAML streams or `kind: List` (`kubectl get -o yaml`), read
    /// together as one config. A directory is read recursively (`*.yaml`, `*.yml`); `-` reads
    /// standard input.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The config in force: check the step guard (weir.dev/max-step) against it, and take its
    /// majority subset as stable when no annotation names one.
    #[arg(long, value_name = "FILE")]
    against: Option<PathBuf>,
    /// This change is a promotion: a canary may get the majority (as `weir.dev/promotion`).
    #[arg(long)]
    promotion: bool,
    /// Require a ServiceEntry with endpoints for every destination host, as `weir serve` does.
    /// Default (cluster mode): a host without a ServiceEntry is a Kubernetes Service.
    #[arg(long)]
    strict_hosts: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    limits: ConfigLimitsArgs,
}

pub fn run(args: ValidateArgs) -> Result<ExitCode> {
    args.limits.apply();
    let sources = ConfigSource::read_paths(&args.files)?;
    let hosts = if args.strict_hosts {
        HostMode::Endpoints
    } else {
        HostMode::Cluster
    };
    let options = GuardOptions {
        promotion: args.promotion,
        hosts,
        cli: true,
        ..GuardOptions::default()
    };
    let against = match &args.against {
        Some(path) => {
            let prev = ConfigSource::read_paths(std::slice::from_ref(path))?;
            let compiled = weir_router::validate(
                &prev,
                None,
                GuardOptions {
                    hosts,
                    cli: true,
                    ..GuardOptions::default()
                },
            );
            match compiled.table {
                Some(t) if !compiled.findings.has_errors() => Some(t),
                _ => anyhow::bail!(
                    "--against {} is not a valid config itself:\n{}",
                    path.display(),
                    compiled.findings
                ),
            }
        }
        None => None,
    };
    let compiled = weir_router::validate(&sources, against.as_ref(), options);
    let findings = compiled.findings;
    let errors = findings.errors().count();
    let warnings = findings.warnings().count();
    match args.format {
        Format::Json => {
            let doc = serde_json::json!({
                "files": args.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                "against": args.against.as_ref().map(|f| f.display().to_string()),
                "valid": errors == 0,
                "errors": errors,
                "warnings": warnings,
                "findings": findings.0,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Text => {
            for f in &findings.0 {
                println!("{f}");
            }
            let names: Vec<String> = args.files.iter().map(|f| f.display().to_string()).collect();
            let verdict = if errors == 0 { "valid" } else { "REFUSED" };
            println!(
                "{}: {verdict} ({errors} error{}, {warnings} warning{})",
                names.join(", "),
                plural(errors),
                plural(warnings)
            );
        }
    }
    debug_assert!(findings.0.iter().all(|f| f.severity <= Severity::Error));
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
