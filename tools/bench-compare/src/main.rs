//! `cargo run --release -p bench-compare -- [OPTIONS]` (`--help` lists them): weir against
//! direct, nginx and HAProxy. See the library's docs.

use std::process::ExitCode;

fn main() -> ExitCode {
    bench_compare::main(
        std::env::args().skip(1).collect(),
        bench_compare::Entry::Binary,
    )
}
