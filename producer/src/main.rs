use std::process::ExitCode;

use clap::Parser;
use xcam_producer::cli::{self, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    xcam_shared::telemetry::init(&cli.telemetry);
    cli::run(cli).await.map(ExitCode::from)
}
