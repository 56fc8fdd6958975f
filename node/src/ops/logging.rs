//! Logging to standard error, as text or JSON lines, with a filter that a reload (`SIGHUP`)
//! can change while the hearth runs.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

use crate::config::{LogConfig, LogFormat};

/// The variable whose filter wins over `log.level`.
const VARIABLE: &str = "HEARTH_LOG";

/// Changes the running process's log filter.
#[derive(Clone)]
pub struct LogReload(reload::Handle<EnvFilter, Registry>);

/// The filter to use: `HEARTH_LOG` when set and valid, else `level` (else the default).
fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_env(VARIABLE)
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new(LogConfig::default().level))
}

/// Installs the process's logger (once, at start).
pub fn init(log: &LogConfig) -> LogReload {
    let (filter, handle) = reload::Layer::new(filter(&log.level));
    let registry = tracing_subscriber::registry().with(filter);
    match log.format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .init(),
    }
    LogReload(handle)
}

impl LogReload {
    /// Applies a reloaded `log.level` (unless `HEARTH_LOG` is set, which keeps winning). A
    /// filter that does not parse is refused and the current one kept.
    pub fn apply(&self, log: &LogConfig) -> Result<(), String> {
        if std::env::var_os(VARIABLE).is_some() {
            return Ok(());
        }
        let filter = EnvFilter::try_new(&log.level)
            .map_err(|e| format!("log.level {:?} is not a filter: {e}", log.level))?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}
