//! `weir set-weights`, `weir rollback` (being written).
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct SetWeightsArgs {}
#[derive(clap::Args, Debug)]
pub struct RollbackArgs {}

pub fn set_weights(_args: SetWeightsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
pub fn rollback(_args: RollbackArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
