use clap::Parser;
use xcam_worker::cli::{self, Cli};

fn main() -> anyhow::Result<()> {
    let kept = xcam_worker::host_allocator::keep_freed_memory();
    let cli = Cli::parse();
    xcam_shared::telemetry::init(&cli.telemetry);
    if !kept {
        tracing::warn!(
            "the C allocator did not take xcam's settings: libtorch's CPU memory goes back to the kernel after every batch"
        );
    }
    xcam_worker::host_allocator::release_free_memory_periodically();
    cli::run(cli)
}
