//! Logging: human-readable tracing to stderr (stdout belongs to `--json` output).
//! `RUST_LOG` picks the level (default `warn`, or `info` with `-v`).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub fn init(verbose: bool) {
    let default = if verbose { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
