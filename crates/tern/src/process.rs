//! Process-wide settings `tern serve` makes before it starts a thread: no transparent huge
//! pages, and an open-file limit and descriptor table sized for the connections it will hold.

use std::os::fd::AsRawFd;

use tracing::{debug, warn};

/// Descriptors kept beyond `connections_max` for listeners, the store's files and the like.
const DESCRIPTOR_HEADROOM: u64 = 1024;
/// Descriptor table reserved when the number of connections is not limited (2 MiB of kernel
/// memory); past it the table grows as it would have.
const DESCRIPTORS_UNLIMITED: u64 = 1 << 18;

/// Keeps the broker's heap in 4 KiB pages. The allocator asks for transparent huge pages, so
/// the heap grew in 2 MiB steps, each zeroed (and, on a fragmented machine, compacted) in one
/// page fault while a connection or message waited: a stall in the tail, and resident memory
/// that overstated 600 bytes per idle connection as 1,480 (see ARCHITECTURE.md).
pub(crate) fn disable_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(error) = nix::sys::prctl::set_thp_disable(true) {
        debug!("cannot turn transparent huge pages off: {error}");
    }
}

/// Raises the soft limit on open files to what `connections_max` (0: unlimited) needs, as far
/// as the hard limit allows, and grows the descriptor table to that size now, while the
/// process has one thread.
///
/// The kernel grows a full descriptor table by doubling it, and in a process with more than one
/// thread each growth waits for an RCU grace period, several milliseconds on a virtual machine,
/// with the broker thread blocked in `accept`. Ten thousand connections arriving at once grew
/// it eight times: the broker sat idle for a sixth of the burst with clients waiting.
pub(crate) fn reserve_descriptors(connections_max: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let wanted = match connections_max {
        0 => DESCRIPTORS_UNLIMITED,
        n => (n as u64).saturating_add(DESCRIPTOR_HEADROOM),
    };
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let mut limit = soft;
    if soft < wanted {
        let raised = wanted.min(hard);
        match setrlimit(Resource::RLIMIT_NOFILE, raised, hard) {
            Ok(()) => limit = raised,
            Err(error) => debug!("cannot raise the open-file limit to {raised}: {error}"),
        }
    }
    if connections_max != 0 && limit < wanted {
        warn!(
            "the open-file limit ({limit}) is below what connections_max ({connections_max}) \
             needs ({wanted}): raise it (ulimit -n, LimitNOFILE=) or connections past it will \
             be refused by the system"
        );
    }
    grow_descriptor_table(wanted.min(limit));
}

/// Makes room for `size` descriptors by duplicating one to the highest number, then closing it:
/// a descriptor table never shrinks.
fn grow_descriptor_table(size: u64) {
    use nix::fcntl::{fcntl, FcntlArg};
    let Some(top) = size.checked_sub(1).and_then(|top| i32::try_from(top).ok()) else {
        return;
    };
    let Ok(null) = std::fs::File::open("/dev/null") else {
        return;
    };
    match fcntl(null.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(top)) {
        Ok(copy) => {
            let _ = nix::unistd::close(copy);
        }
        Err(error) => debug!("cannot reserve {size} descriptors: {error}"),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

    use nix::sys::resource::{getrlimit, Resource};

    use super::*;

    /// The descriptor slots the kernel has allocated for this process (`FDSize`).
    fn descriptor_table_size() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("FDSize:"))
            .and_then(|size| size.trim().parse().ok())
            .expect("FDSize in /proc/self/status")
    }

    #[test]
    fn the_limit_and_the_table_are_sized_for_the_connections() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("limit");
        // As many connections as the hard limit leaves room for, up to a table well past
        // what a test process starts with (64 or 256 slots).
        let connections = hard.saturating_sub(DESCRIPTOR_HEADROOM).min(3_000);
        assert!(connections > 0, "hard limit {hard} too low to test");
        let wanted = connections + DESCRIPTOR_HEADROOM;
        assert!(descriptor_table_size() < wanted);

        reserve_descriptors(connections as usize);

        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("limit");
        assert!(soft >= wanted, "soft limit {soft} < {wanted}");
        assert!(descriptor_table_size() >= wanted);
        // The reserving descriptor itself is closed again.
        assert!(nix::fcntl::fcntl(wanted as i32 - 1, nix::fcntl::FcntlArg::F_GETFD).is_err());
    }
}
