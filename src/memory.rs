//! How sortd's memory goes back to the system after a burst.
//!
//! glibc's allocator keeps freed memory for reuse, in one arena per thread
//! that ever allocated, up to 8 per core: after 50 requests of 10 MB at once,
//! sortd stayed at ~150 MiB for good, and `malloc_trim` could not give it
//! back. One arena per core (as many as tokio has workers) and a
//! `malloc_trim` once no large request is in flight bring it back to ~5 MiB
//! within a second, and keep the allocator's fast reuse while a burst
//! lasts; an
//! allocator that returns memory on every free (a low `M_MMAP_THRESHOLD`)
//! cost ~30% more CPU on 1e6-integer bodies. Measured with bench/attack.py.

/// Limits glibc to one arena per core; call before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets an allocator parameter, and runs here
        // before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Gives the allocator's free memory back to the system (glibc only; other
/// allocators return it on their own or not at all).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only rearranges the
    // allocator's own free lists; any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
