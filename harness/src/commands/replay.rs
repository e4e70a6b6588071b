//! `replay` (the replay itself) (being written).

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("`replay` (the replay itself) is not available yet")
}
