//! `mcpguard daemon`: logging setup and the runtime around [`crate::daemon`].
//!
//! Under systemd (stderr is the journal stream, `$JOURNAL_STREAM`) the daemon
//! logs to the journal natively, each tracing field a journal field
//! (`MCPGUARD_LAUNCH=time-3`); if the journal socket is unavailable, or
//! elsewhere, it logs text to stderr.

use std::process::ExitCode;

use tracing::{error, warn};
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

use crate::daemon::service;

pub fn main(cfg: crate::daemon::Config) -> ExitCode {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::daemon::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!(%error, "mcpguard daemon failed");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter =
        || EnvFilter::try_from_env("MCPGUARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if !service::stderr_is_journal() {
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init();
        return;
    }
    match tracing_journald::layer() {
        Ok(journal) => tracing_subscriber::registry()
            .with(filter())
            .with(
                journal
                    .with_syslog_identifier("mcpguard".into())
                    .with_field_prefix(Some("MCPGUARD".into())),
            )
            .init(),
        Err(error) => {
            // The journal adds its own timestamps, and shows no colours.
            tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .without_time()
                .init();
            warn!(%error, "cannot reach the journal socket; logging to stderr");
        }
    }
}
