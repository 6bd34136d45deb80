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

/// How often histogram samples recorded since the last scrape are folded into their buckets.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Builds `builder`'s Prometheus recorder, makes it the process's (if none is yet: tests build
/// several apps in one process), and returns its handle for `/metrics`.
///
/// A recorder keeps every histogram sample until something drains it; without a scraper that
/// was never, and a worker held every image's timings for as long as it ran. A thread of its own
/// drains them every few seconds, whether or not anyone scrapes.
pub fn install_prometheus(
    builder: metrics_exporter_prometheus::PrometheusBuilder,
) -> metrics_exporter_prometheus::PrometheusHandle {
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_ok() {
        let upkeep = handle.clone();
        if let Err(e) = crate::every("metrics-upkeep", METRICS_UPKEEP, move || {
            upkeep.run_upkeep()
        }) {
            tracing::warn!(error = %e, "no thread to drain metrics: histograms grow until scraped");
        }
    }
    handle
}
