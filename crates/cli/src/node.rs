//! `medfm node`: the edge node of the `medfm-node` crate (docs/node.md).

use std::path::PathBuf;

use anyhow::Result;
use medfm_node::Config;

#[derive(clap::Args)]
pub(crate) struct NodeArgs {
    /// The node's configuration (TOML; every key in docs/node.md). Without it, the defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the effective configuration (the file's keys with the defaults filled in)
    /// and exit.
    #[arg(long)]
    print_config: bool,
}

pub(crate) fn cmd_node(args: NodeArgs) -> Result<()> {
    let config = Config::load(args.config.as_deref())?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    medfm_node::run(config)
}
