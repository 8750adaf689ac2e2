//! The subcommands, and what they share: the output format and the logging setup.

use std::io::IsTerminal as _;

use weir_router::yaml::Limits;

pub mod admin_client;
pub mod canary;
pub mod explain;
pub mod init;
pub mod serve;
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

/// The config parsing limits (`weir serve`, `weir validate`): defaults in
/// [`weir_router::yaml::Limits::DEFAULT`].
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct ConfigLimitsArgs {
    /// Largest config file read, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::DEFAULT.max_bytes)]
    max_config_bytes: usize,
    /// Deepest nesting of YAML mappings and sequences.
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT.max_depth)]
    max_config_depth: usize,
    /// Most YAML nodes per file, aliases counted as what they expand to.
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT.max_nodes)]
    max_config_nodes: usize,
    /// Most YAML documents per file.
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT.max_documents)]
    max_config_documents: usize,
    /// Most HTTP rules in a config.
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT.max_rules)]
    max_config_rules: usize,
    /// Most hosts in a config.
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT.max_hosts)]
    max_config_hosts: usize,
}

impl ConfigLimitsArgs {
    /// Puts the limits in force for every config this process parses.
    pub fn apply(self) {
        let mut limits = Limits::DEFAULT;
        limits.max_bytes = self.max_config_bytes;
        limits.max_depth = self.max_config_depth;
        limits.max_nodes = self.max_config_nodes;
        limits.max_documents = self.max_config_documents;
        limits.max_rules = self.max_config_rules;
        limits.max_hosts = self.max_config_hosts;
        weir_router::yaml::set_limits(limits);
    }
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
