use clap::Parser;
use xcam_worker::cli::{self, Cli};

// Every image allocates and frees its fitted plane, its maps' rows, its summary and its
// statement's buffers on whichever thread ran it; glibc's allocator spent about 3 % of a
// saturated node consolidating and unlinking those chunks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let kept = xcam_worker::host_allocator::keep_freed_memory();
    let cli = Cli::parse();
    xcam_shared::telemetry::init(&cli.telemetry);
    if !kept {
        tracing::warn!(
            "the C allocator did not take xcam's settings: libtorch's CPU memory goes back to the kernel after every batch"
        );
    }
    cli::run(cli)
}
