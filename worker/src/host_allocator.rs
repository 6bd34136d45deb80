//! How glibc's allocator keeps what libtorch frees.
//!
//! libtorch takes every CPU tensor from `malloc`. A batch's activations are tens of megabytes,
//! each allocated and freed at every layer. With glibc's defaults those above its mmap threshold
//! are mapped and unmapped each time, and the rest are trimmed back to the kernel whenever the
//! top of a heap is free; every forward then faults in and zeroes the same pages afresh. On the
//! demo bundle (2 cores, batch 32) the engine threads spent more time in the kernel than in
//! libtorch's kernels: 9 s of system time in a 6 s `xcam-worker bench`, 1 400 images/s. Keeping
//! freed memory in the process makes it 0.3 s and 2 400 images/s, for a resident set about an
//! eighth larger.
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

/// How often the free memory the allocator kept goes back to the kernel.
const RELEASE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Hands the free memory kept by [`keep_freed_memory`] back to the kernel every few seconds, on
/// a thread of its own.
///
/// What the allocator keeps is not all reused: between releases a worker's resident set climbs
/// while the memory it holds stays level (heaptrack: 79 MiB live throughout 20 000 images). The
/// climb is free memory in glibc's heaps, below the trim threshold, that later allocations land
/// beside rather than in: released once a minute, the resident set rose 541 → 652 MiB over
/// 85 000 images and fell 70 MiB at the release; every 5 s, two runs of 100 000 stayed within
/// 536–598 and 568–628 MiB, the second still creeping (+3 MiB per 10 000 images, a third of the
/// minute's). Each release costs the next batch one round of page faults; the pipeline's
/// throughput did not move (alternating runs, 0.41–0.43 of the engine either way).
pub fn release_free_memory_periodically() {
    if let Err(e) = xcam_shared::every("malloc-trim", RELEASE_EVERY, release_free_memory) {
        tracing::warn!(error = %e, "no thread to hand free memory back: the resident set may creep up");
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own arenas under their locks and advises
    // the kernel about pages no allocation holds; it touches no memory of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// What the allocator's heaps hold for the process and what they keep free, for `/metrics`, read
/// as each scrape comes: a resident set that climbs while the memory held stays level is free
/// memory the allocator keeps (fragmentation), not memory the worker keeps.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn record_heap() {
    // SAFETY: mallinfo2 reads the allocator's own counters under its arena locks and returns a
    // plain struct; it touches no memory of ours.
    let info = unsafe { libc::mallinfo2() };
    metrics::gauge!("xcam_worker_heap_in_use_bytes").set((info.uordblks + info.hblkhd) as f64);
    metrics::gauge!("xcam_worker_heap_free_bytes").set(info.fordblks as f64);
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn record_heap() {}

#[cfg(test)]
mod tests {
    /// glibc refuses an mmap threshold above its ceiling; these must be within its bounds.
    #[test]
    fn glibc_takes_the_settings() {
        assert!(super::keep_freed_memory());
    }
}
