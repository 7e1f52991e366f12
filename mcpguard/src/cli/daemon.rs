//! `mcpguard daemon`: logging setup and the runtime around [`crate::daemon`].
//!
//! Under systemd (stderr is the journal stream, `$JOURNAL_STREAM`) the daemon
//! logs to the journal natively, each tracing field a journal field
//! (`MCPGUARD_LAUNCH=time-3`); if the journal socket is unavailable, or
//! elsewhere, it logs text to stderr.

use std::process::ExitCode;

use tracing::{error, warn};
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

use crate::{
    audit::writer::{Rotation, DEFAULT_KEEP, DEFAULT_MAX_BYTES, MIN_MAX_BYTES},
    daemon::{
        admit::{LaunchLimits, DEFAULT_LAUNCHES_PER_USER, DEFAULT_SERVERS_PER_USER},
        budget::{BudgetConfig, DEFAULT_BURST, DEFAULT_RATE},
        service,
    },
};

/// What keeps the daemon's memory and disk bounded, from its flags.
#[derive(clap::Args, Debug)]
pub struct Bounds {
    /// Rotate the audit log once it holds this many bytes (0: never; then
    /// rotate it with logrotate and SIGHUP).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BYTES,
          value_parser = |s: &str| -> Result<u64, String> {
              let n: u64 = s.parse().map_err(|e| format!("{e}"))?;
              if n != 0 && n < MIN_MAX_BYTES {
                  return Err(format!("at least {MIN_MAX_BYTES} bytes, or 0 for no rotation"));
              }
              Ok(n)
          })]
    audit_max_bytes: u64,
    /// Rotated audit logs kept (`<log>.1` is the newest); older ones are
    /// removed.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEEP)]
    audit_keep: u32,
    /// Records a second each server may write once its burst is spent;
    /// beyond it records are counted in `loss` records instead.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RATE,
          value_parser = clap::value_parser!(u32).range(1..))]
    record_rate: u32,
    /// Records each server may write in a burst.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BURST,
          value_parser = clap::value_parser!(u32).range(1..))]
    record_burst: u32,
    /// Servers one user may run at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SERVERS_PER_USER as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_servers_per_user: u32,
    /// Launches one user may have in progress at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LAUNCHES_PER_USER as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_launches_per_user: u32,
}

impl Bounds {
    pub fn rotation(&self) -> Rotation {
        Rotation {
            max_bytes: self.audit_max_bytes,
            keep: self.audit_keep,
        }
    }

    pub fn budget(&self) -> BudgetConfig {
        BudgetConfig {
            rate: self.record_rate,
            burst: self.record_burst,
        }
    }

    pub fn launch_limits(&self) -> LaunchLimits {
        LaunchLimits {
            servers_per_user: self.max_servers_per_user as usize,
            launches_per_user: self.max_launches_per_user as usize,
        }
    }
}

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
