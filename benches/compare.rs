//! `cargo bench --bench compare -- --duration 10s`: the proxy comparison of
//! `tools/bench-compare` (also `cargo run --release -p bench-compare -- ...`), kept under the
//! command the README and the results have always named. Without cargo's `--bench` flag
//! (`cargo test --benches`, CI) it does nothing.

use std::process::ExitCode;

fn main() -> ExitCode {
    bench_compare::main(
        std::env::args().skip(1).collect(),
        bench_compare::Entry::CargoBench,
    )
}
