//! `weir validate FILE... [--against FILE] [--format text|json]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use weir_router::{ConfigSource, GuardOptions, Severity};

use crate::output::Format;

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// Config files: multi-document YAML streams or `kind: List`, read together as one config.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The config in force: check the step guard (weir.dev/max-step) against it.
    #[arg(long, value_name = "FILE")]
    against: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(args: ValidateArgs) -> Result<ExitCode> {
    let sources = read_sources(&args.files)?;
    let against = match &args.against {
        Some(path) => {
            let prev = read_sources(std::slice::from_ref(path))?;
            let compiled = weir_router::validate(&prev, None, GuardOptions::default());
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
    let compiled = weir_router::validate(&sources, against.as_ref(), GuardOptions::default());
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

/// Reads config files; an unreadable file is a usage/I-O error (exit 2).
pub fn read_sources(files: &[PathBuf]) -> Result<Vec<ConfigSource>> {
    files
        .iter()
        .map(|f| ConfigSource::read(f).with_context(|| format!("cannot read {}", f.display())))
        .collect()
}
