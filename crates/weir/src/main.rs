//! `weir`: the sidecar binary. A thin layer that wires weir-router and weir-canary to sockets,
//! files and a terminal.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin;
mod client;
mod explain;
mod metrics;
mod output;
mod proxy;
mod reload;
mod serve;
mod validate;

/// weir: safe progressive delivery on the L7 data plane.
#[derive(Parser, Debug)]
#[command(name = "weir", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate Istio YAML: weight sums, the canary direction and step guards, subsets,
    /// unreachable rules, regexes. Exit 0 clean or warnings only, 1 errors, 2 usage or I/O.
    Validate(validate::ValidateArgs),
    /// Show how a request is routed: which VirtualService and rule match, why earlier rules
    /// did not, the destinations and weights, and with --samples the observed split.
    Explain(explain::ExplainArgs),
    /// Run the sidecar: the weighted proxy, its metrics and the admin API.
    Serve(serve::ServeArgs),
    /// Change a route's weights on a running sidecar, through its validator.
    SetWeights(client::SetWeightsArgs),
    /// Roll a running sidecar's canaries back to 0% (latched), or release the latch.
    Rollback(client::RollbackArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Serve(args) => serve::run(args),
        Command::SetWeights(args) => client::set_weights(args),
        Command::Rollback(args) => client::rollback(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weir: {e:#}");
            ExitCode::from(2)
        }
    }
}
