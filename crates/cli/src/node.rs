//! `medfm node`: the edge node of the `medfm-node` crate (docs/node.md).

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::Result;
use medfm_node::{Config, Stop};

#[derive(clap::Args)]
pub(crate) struct NodeArgs {
    /// The node's configuration (TOML; every key in docs/node.md). Without it, the defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the effective configuration (the file's keys with the defaults filled in)
    /// and exit.
    #[arg(long)]
    print_config: bool,
    /// Print the token the HTTP API requires (`http_token`, or the one the node generated
    /// at its first start; generated now if there is none yet) and exit.
    #[arg(long)]
    print_token: bool,
}

pub(crate) fn cmd_node(args: NodeArgs) -> Result<()> {
    let config = Config::load(args.config.as_deref())?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    if args.print_token {
        println!("{}", medfm_node::http_token(&config)?);
        return Ok(());
    }
    let stop = STOP.get_or_init(Stop::new).clone();
    install_signal_handlers();
    Ok(medfm_node::run(config, stop)?)
}

/// The node's stop, for the signal handler (the one place a process-wide value is needed).
static STOP: OnceLock<Stop> = OnceLock::new();

#[cfg(unix)]
extern "C" fn on_signal(_: libc::c_int) {
    // A lock-free read and one atomic store: async-signal-safe.
    if let Some(stop) = STOP.get() {
        stop.stop();
    }
}

/// SIGTERM and SIGINT stop the node (it drains, then `medfm node` exits 0); SIGHUP
/// reloads the HTTPS certificate.
fn install_signal_handlers() {
    #[cfg(unix)]
    // SAFETY: the handler only reads an initialised OnceLock and stores to an atomic.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
        let reload = on_reload as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGHUP, reload);
    }
}

#[cfg(unix)]
extern "C" fn on_reload(_: libc::c_int) {
    // As on_signal: a lock-free read and one atomic store.
    if let Some(stop) = STOP.get() {
        stop.reload();
    }
}
