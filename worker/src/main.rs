use clap::Parser;
use xcam_worker::cli::{self, Cli};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    xcam_shared::telemetry::init(&cli.telemetry);
    cli::run(cli)
}
