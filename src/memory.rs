//! Giving memory back to the system when a deployment unloads.
//!
//! glibc keeps freed memory in its arenas. `malloc_trim` returns the free pages inside every arena,
//! but not the free space at the top of a thread's arena: that shrinks only on a `free` that leaves
//! more than the trim threshold there, and glibc raises that threshold up to 64 MiB as a process
//! frees large blocks. Measured with the default model: ~40 MiB of ~250 MiB stayed resident after an
//! unload, none of it in use. So the unload lowers the threshold while it frees the weights.
//!
//! (One arena for the whole process would also do it, but cost 17% of single-stream decode speed:
//! BENCHMARKS.md.)

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    /// What glibc's dynamic threshold grows to at most (2 x the 32 MiB mmap threshold ceiling on
    /// 64-bit), restored after an unload so that serving trims no more often than by default.
    const SERVING_TRIM_THRESHOLD: i32 = 64 << 20;
    const UNLOADING_TRIM_THRESHOLD: i32 = 128 << 10;

    pub fn release(free: impl FnOnce()) {
        // SAFETY: mallopt and malloc_trim only tune the allocator and release memory it holds free.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, UNLOADING_TRIM_THRESHOLD);
        }
        free();
        unsafe {
            libc::malloc_trim(0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, SERVING_TRIM_THRESHOLD);
        }
    }
}

/// Runs `free` (which drops a deployment's weights) so that what it frees goes back to the system.
/// Blocking.
pub fn release(free: impl FnOnce()) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::release(free);
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    free();
}
