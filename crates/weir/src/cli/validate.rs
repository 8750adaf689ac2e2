//! `weir validate FILE|DIR|-... [--against FILE] [--promotion] [--strict-hosts] [--format text|json]`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
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
    let sources = read_sources(&args.files)?;
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
            let prev = read_sources(std::slice::from_ref(path))?;
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

/// Reads config files; an unreadable file is a usage/I-O error (exit 2). `-` is standard
/// input; a directory contributes its `*.yaml` and `*.yml` files, recursively, in name order.
pub fn read_sources(files: &[PathBuf]) -> Result<Vec<ConfigSource>> {
    let mut out = Vec::new();
    for f in files {
        if f.as_os_str() == "-" {
            let mut text = String::new();
            // One byte over the size limit is enough for the parser to refuse it.
            std::io::stdin()
                .take(weir_router::yaml::limits().max_bytes as u64 + 1)
                .read_to_string(&mut text)
                .context("cannot read standard input")?;
            out.push(ConfigSource::new("<stdin>", text));
        } else if f.is_dir() {
            let mut found = Vec::new();
            yaml_files(f, &mut found)
                .with_context(|| format!("cannot read directory {}", f.display()))?;
            if found.is_empty() {
                anyhow::bail!("directory {} holds no *.yaml or *.yml file", f.display());
            }
            for path in found {
                out.push(
                    ConfigSource::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                );
            }
        } else {
            out.push(
                ConfigSource::read(f).with_context(|| format!("cannot read {}", f.display()))?,
            );
        }
    }
    Ok(out)
}

/// The YAML files under a directory, recursively, sorted; hidden entries (Kubernetes'
/// `..data` ConfigMap links among them) are skipped so that a mounted ConfigMap is read once.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            yaml_files(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml")
        {
            out.push(path);
        }
    }
    Ok(())
}
