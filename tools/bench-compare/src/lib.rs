//! weir's proxy comparison: what routing costs, side by side.
//!
//! Direct to v1 (the floor), weir, nginx, HAProxy and pingora (`tools/pingora-split`), one
//! after the other, each with the same routing (`x-canary: true` -> v2, else 90/10), against
//! the same two upstreams, in each load shape ([`shapes`]: wrk with 1, 50 and 1,000
//! connections, 1 KiB and 64 KiB bodies, 1 and 2 workers; `ab -k` for HTTP/1.0 keep-alive),
//! rounds interleaved. For each: requests/s at saturation and against nginx in the same round,
//! p50/p99/p99.9 at a fixed rate (oha), CPU per request, peak memory, errors and the split the
//! upstreams actually counted. Then the callgrind counts (h2load, a fixed request count).
//! Results go to `benches/results/<date>.{md,json}`, `latest.md`, `summary.md` and
//! `callgrind-latest.md`, and a full run regenerates README.md's performance table.
//! `--help` lists the options.
//!
//! ```text
//! cargo run --release -p bench-compare -- --duration 10s
//! cargo bench --bench compare -- --duration 10s      # the same, through the root bench target
//! ```
//!
//! The modules are public so that `tests/harness.rs` checks each piece without running a load.

pub mod ab;
pub mod args;
pub mod callgrind;
pub mod configs;
pub mod h2load;
pub mod machine;
pub mod oha;
pub mod process;
pub mod procfs;
pub mod report;
mod run;
pub mod shapes;
pub mod summary;
pub mod upstream;
pub mod wrk;

pub use run::{Entry, main};
