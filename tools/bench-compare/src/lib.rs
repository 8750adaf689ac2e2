//! weir's proxy comparison: what routing costs, side by side.
//!
//! Direct to v1 (the floor), weir, nginx and HAProxy, one after the other, each with the same
//! routing (`x-canary: true` -> v2, else 90/10), the same worker threads (a sweep), the same
//! load tool, connections and duration, against the same two upstreams. For each: requests/s
//! at saturation, p50/p99/p99.9 at a fixed rate, CPU per 10k requests, peak memory, errors and
//! the split the upstreams actually counted. Results go to `benches/results/<date>.{md,json}`
//! and `benches/results/latest.md`. `--help` lists the options.
//!
//! ```text
//! cargo run --release -p bench-compare -- --duration 10s
//! cargo bench --bench compare -- --duration 10s      # the same, through the root bench target
//! ```
//!
//! The modules are public so that `tests/harness.rs` checks each piece without running a load.

pub mod args;
pub mod callgrind;
pub mod configs;
pub mod machine;
pub mod oha;
pub mod process;
pub mod procfs;
pub mod report;
mod run;
pub mod upstream;

pub use run::{Entry, main};
