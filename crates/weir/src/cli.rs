//! The subcommands, and what they share: the output format and the logging setup.

use std::io::IsTerminal as _;

pub mod admin_client;
pub mod canary;
pub mod explain;
pub mod init;
pub mod serve;
pub mod serve_canary;
pub mod validate;

/// `--format`: text for humans, JSON for machines.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document on stdout.
    Json,
}

/// Logs to stderr through `tracing`, at `info` unless `RUST_LOG` says otherwise.
pub fn init_tracing() {
    init_tracing_at("info", std::io::stderr().is_terminal());
}

/// Logs to stderr at `default` unless `RUST_LOG` says otherwise.
pub fn init_tracing_at(default: &str, ansi: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}
