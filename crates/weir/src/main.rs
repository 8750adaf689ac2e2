//! `weir`: the command line. A thin layer that wires weir-router, weir-proxy and weir-canary
//! to arguments, files and a terminal.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc (the default feature): a proxied request makes a dozen
/// short-lived allocations on one thread (hyper's buffers, the dispatch channel, headers);
/// callgrind: 1,584 fewer instructions per request (see `alloc` for how it is called).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: alloc::Mimalloc = alloc::Mimalloc;

#[cfg(feature = "mimalloc")]
mod alloc;
#[cfg(feature = "mimalloc")]
pub(crate) use alloc::release_memory;

/// Nothing to give back with the system allocator (glibc trims on free).
#[cfg(not(feature = "mimalloc"))]
pub(crate) fn release_memory() {}

mod cli;
mod demo;

use cli::{admin_client, canary, explain, init, serve, validate};

use demo::upstream;

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
    Serve(Box<serve::ServeArgs>),
    /// Install the nat rules that capture a pod's traffic for the sidecar (a pod's init
    /// container, as istio-iptables). Needs NET_ADMIN and NET_RAW.
    Init(init::InitArgs),
    /// Change a route's weights on a running sidecar, through its validator.
    SetWeights(admin_client::SetWeightsArgs),
    /// Roll a running sidecar's canaries back to 0% (latched), or release the latch.
    Rollback(admin_client::RollbackArgs),
    /// Drive a canary from 0% to promotion behind metric gates (or back to 0% on a breach)
    /// on running sidecars. Exit 0 promoted, 1 rolled back, 2 usage, 3 could not start
    /// (nothing was changed), 4 the rollback failed.
    Canary(canary::CanaryArgs),
    /// The lesson's story end to end on this machine: the 99/1 typo refused, a dark launch, a
    /// promotion and an automatic rollback. Exit 0 when every act turned out as it should.
    Demo(demo::DemoArgs),
    /// A small demo upstream answering with its version's name (for demos and benchmarks).
    #[command(hide = true)]
    Upstream(upstream::UpstreamArgs),
}

fn main() -> ExitCode {
    #[cfg(feature = "mimalloc")]
    alloc::configure();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Serve(args) => serve::run(*args),
        Command::Init(args) => init::run(args),
        Command::SetWeights(args) => admin_client::set_weights(args),
        Command::Rollback(args) => admin_client::rollback(args),
        Command::Canary(args) => canary::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Upstream(args) => upstream::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weir: {e:#}");
            ExitCode::from(2)
        }
    }
}
