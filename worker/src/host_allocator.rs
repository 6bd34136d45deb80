//! How glibc's allocator keeps what libtorch frees.
//!
//! libtorch takes every CPU tensor from `malloc`. A batch's activations are tens of megabytes,
//! each allocated and freed at every layer. With glibc's defaults those above its mmap threshold
//! are mapped and unmapped each time, and the rest are trimmed back to the kernel whenever the
//! top of a heap is free; every forward then faults in and zeroes the same pages afresh. On the
//! demo bundle (2 cores, batch 32) the engine threads spent more time in the kernel than in
//! libtorch's kernels: 9 s of system time in a 6 s `xcam-worker bench`, 1 400 images/s. Keeping
//! freed memory in the process makes it 0.3 s and 2 400 images/s, for a resident set about an
//! eighth larger and flat (it is bounded by the largest batch's working set).
//!
//! The worker's own allocations (fitted planes, maps' rows, statements' buffers) share the
//! settings. With them, glibc's allocator served the pipeline better than mimalloc, which
//! zeroed fresh huge pages for what it had returned (demo bundle, 3 000 images, two runs each:
//! 1 198 and 1 176 images/s against 1 042 and 1 077).
//!
//! The same settings can be given as `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…:
//! glibc.malloc.trim_threshold=…`; setting them here means nobody has to remember to.

/// The largest block glibc still takes from its heaps rather than mapping on its own (its
/// ceiling on 64-bit systems): a batch's largest activations fall under it.
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory a heap keeps at its top before returning it to the kernel.
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Keeps memory that libtorch frees for its next batch. Call before any thread starts.
/// Returns false if glibc refused them; elsewhere there is nothing to set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn keep_freed_memory() -> bool {
    // SAFETY: mallopt only sets allocator parameters under the allocator's own lock; it reads
    // no memory of ours and is sound to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() -> bool {
    true
}

#[cfg(test)]
mod tests {
    /// glibc refuses an mmap threshold above its ceiling; these must be within its bounds.
    #[test]
    fn glibc_takes_the_settings() {
        assert!(super::keep_freed_memory());
    }
}
