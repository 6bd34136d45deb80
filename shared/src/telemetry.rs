//! One tracing set-up for every binary: `RUST_LOG` filtering, text or JSON lines on stderr.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::TelemetryArgs;

const DEFAULT_FILTER: &str =
    "info,sqlx=warn,tower_http=info,apalis=warn,apalis_core=warn,apalis_redis=warn";

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored),
/// which keeps tests that build several apps in one process simple.
pub fn init(args: &TelemetryArgs) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if args.log_format == "json" {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .compact()
                    // Colour codes only for a person at a terminal, never into a log file.
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
}
