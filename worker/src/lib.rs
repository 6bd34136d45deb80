//! xcam's worker: loads model bundles with libtorch, explains images with Grad-CAM, and
//! (`xcam-worker run`) consumes the batch pipeline's jobs from Redis.
//!
//! - [`engine`]: the model on its device, owned by an inference thread that batches requests.
//! - [`explain`], [`mod@bench`]: the `explain` and `bench` subcommands.
//! - [`cli`]: the command line; [`config`]: its typed settings.
//! - [`health`]: liveness, readiness and metrics; [`gpu_memory`]: what its GPUs hold.
//! - [`host_allocator`]: how glibc's allocator keeps what libtorch frees.

pub mod bench;
pub mod cli;
pub mod config;
pub mod device;
pub mod engine;
pub mod explain;
pub mod gpu_memory;
pub mod health;
pub mod host_allocator;
pub mod pipeline;
