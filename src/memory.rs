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

/// The resident memory of this process, in bytes (`/proc/self/statm`), for
/// the `process_resident_memory_bytes` metric; `None` off Linux.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page_size = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    Some(pages * page_size)
}

/// The memory limit of this process's cgroup, in bytes: the unit's
/// `MemoryMax=` under systemd (cgroup v2's `memory.max`, or v1's
/// `memory.limit_in_bytes` on a hybrid host). `None` when there is none,
/// so that an alert can compare memory with the limit in force.
pub fn cgroup_limit_bytes() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    limit_of(&cgroups, |file| std::fs::read_to_string(file).ok())
}

/// The limit for a process with this `/proc/self/cgroup`, reading the
/// cgroup files with `read`.
fn limit_of(cgroups: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let file = match controllers {
            "" => format!("/sys/fs/cgroup{path}/memory.max"),
            v1 if v1.split(',').any(|c| c == "memory") => {
                format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
            }
            _ => return None,
        };
        // "max" (v2) or a page-rounded i64::MAX (v1) is no limit.
        let limit: u64 = read(&file)?.trim().parse().ok()?;
        (limit < 1 << 62).then_some(limit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_is_read_from_the_processs_cgroup_v2_or_v1() {
        let files = |file: &str| -> Option<String> {
            match file {
                "/sys/fs/cgroup/system.slice/sortd.service/memory.max" => {
                    Some("1073741824\n".into())
                }
                "/sys/fs/cgroup/free.slice/memory.max" => Some("max\n".into()),
                "/sys/fs/cgroup/memory/system.slice/sortd.service/memory.limit_in_bytes" => {
                    Some("536870912\n".into())
                }
                // cgroup v1's "no limit": i64::MAX rounded down to a page.
                "/sys/fs/cgroup/memory/free.slice/memory.limit_in_bytes" => {
                    Some("9223372036854771712\n".into())
                }
                _ => None,
            }
        };
        let v2 = "0::/system.slice/sortd.service\n";
        assert_eq!(limit_of(v2, files), Some(1 << 30));
        assert_eq!(limit_of("0::/free.slice\n", files), None);
        // A hybrid host: systemd's tree on v2, the memory controller on v1
        // (alone or with others), found whatever its line's place.
        let v1 = "12:pids:/x\n4:memory:/system.slice/sortd.service\n0::/elsewhere\n";
        assert_eq!(limit_of(v1, files), Some(1 << 29));
        let joined = "3:cpu,memory,cpuacct:/system.slice/sortd.service\n";
        assert_eq!(limit_of(joined, files), Some(1 << 29));
        assert_eq!(limit_of("4:memory:/free.slice\n", files), None);
        // A limit just under 2^62 still counts; other controllers' lines do not.
        let near = |_: &str| Some(((1u64 << 62) - 1).to_string());
        assert_eq!(limit_of("0::/a\n", near), Some((1 << 62) - 1));
        assert_eq!(limit_of("5:cpu:/a\n", near), None);
        let at = |_: &str| Some((1u64 << 62).to_string());
        assert_eq!(limit_of("0::/a\n", at), None);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_goes_back_to_the_system_when_released() {
        const MIB: u64 = 1024 * 1024;
        // 100 MiB in small blocks, below glibc's mmap threshold, with one
        // block allocated after them and kept, so that freeing them leaves a
        // hole the allocator keeps for reuse rather than giving back itself.
        let blocks: Vec<Vec<u8>> = (0..200_000).map(|i| vec![i as u8; 512]).collect();
        let kept = vec![1u8; 512];
        let peak = resident_bytes().unwrap();
        drop(blocks);
        release_free_memory();
        let after = resident_bytes().unwrap();
        // (Other tests may release it too, meanwhile: the peak is this one's.)
        assert!(
            after + 50 * MIB < peak,
            "{} MiB -> {} MiB",
            peak / MIB,
            after / MIB
        );
        drop(kept);
    }
}
