//! Process-wide settings `tern serve` makes before it starts a thread: no transparent huge
//! pages, the open-file limit raised to the hard limit, the default `connections_max` derived
//! from it, and a descriptor table sized for the connections it will hold.

use std::os::fd::AsRawFd;

use tracing::{debug, info, warn};

/// Descriptors kept out of the derived `connections_max`: the storage engine keeps up to 900
/// table files open (fjall's descriptor cache) besides its journals; then the listeners, the
/// runtimes' pollers and wake-up descriptors (the broker's and the handshake threads'), the
/// signal pipe, standard error, files read on SIGHUP (certificates, passwords, ACLs), and the
/// socket the accept loop takes in order to refuse it once the cap is reached. A process that
/// ran out of descriptors would leave connections waiting unaccepted and could fail its store.
pub(crate) const DESCRIPTOR_RESERVE: u64 = 1024;
/// At most this many descriptor slots are reserved at start-up (2 MiB of kernel memory); past
/// it the table grows as it would have: twice at most on the way to a million connections.
const DESCRIPTOR_TABLE_PRESIZE_MAX: u64 = 1 << 18;
/// The open-file limit assumed when it cannot be read: the usual soft limit.
const DESCRIPTOR_LIMIT_UNKNOWN: u64 = 1024;

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

/// Raises the soft limit on open files to the hard limit and returns the limit now in force
/// (`None` if it cannot be read). Nothing is gained by stopping lower: the hard limit is what
/// the administrator granted, and every connection is one descriptor. An unlimited hard limit
/// stops at the kernel's ceiling for one process (`fs.nr_open`).
pub(crate) fn raise_open_file_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let wanted = hard.min(kernel_open_files_max().unwrap_or(hard));
    if soft >= wanted {
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, wanted, hard) {
        Ok(()) => Some(wanted),
        Err(error) => {
            debug!("cannot raise the open-file limit from {soft} to {wanted}: {error}");
            Some(soft)
        }
    }
}

/// The most descriptors the kernel lets one process have, where it says.
fn kernel_open_files_max() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/fs/nr_open").ok()?;
    text.trim().parse().ok()
}

/// The default `connections_max` of a process that may open `descriptor_limit` files: all of
/// them but [`DESCRIPTOR_RESERVE`], or half of them when the limit is below twice that, and
/// never 0 (which would mean no cap).
///
/// Memory is not the tighter bound: an idle connection costs the broker 0.6 to 1.6 KB
/// (BENCHMARKS.md) and the kernel a few kilobytes more for its socket, so even a million
/// connections fit in a few GiB, and the memory their messages may take has its own limit
/// (`memory_max_bytes`).
pub(crate) fn connections_max_for(descriptor_limit: u64) -> usize {
    let reserve = DESCRIPTOR_RESERVE.min(descriptor_limit / 2);
    usize::try_from(descriptor_limit - reserve)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// The `connections_max` in force: `configured` if the file sets it, else what the open-file
/// limit allows. Logs the figure and where it came from, and warns when the configured one is
/// more than the descriptors allow (or 0, no cap).
pub(crate) fn connections_max(configured: Option<usize>, descriptor_limit: Option<u64>) -> usize {
    let limit = descriptor_limit.unwrap_or_else(|| {
        warn!("cannot read the open-file limit; assuming {DESCRIPTOR_LIMIT_UNKNOWN}");
        DESCRIPTOR_LIMIT_UNKNOWN
    });
    let allowed = connections_max_for(limit);
    match configured {
        None => {
            info!(
                "connections_max {allowed}: the open-file limit ({limit}) less {} descriptors \
                 for listeners, the store and the runtime",
                limit - allowed as u64
            );
            allowed
        }
        Some(configured) if configured == 0 || configured > allowed => {
            warn!(
                "connections_max {configured} (0: no cap) is more than the open-file limit \
                 ({limit}) allows ({allowed}): past it connections wait unaccepted and the \
                 store may fail to open its files; raise the hard limit (ulimit -Hn, \
                 LimitNOFILE=) or leave connections_max unset"
            );
            configured
        }
        Some(configured) => {
            info!("connections_max {configured} (the open-file limit {limit} allows {allowed})");
            configured
        }
    }
}

/// Grows the descriptor table now, while the process has one thread, to what
/// `connections_max` (0: no cap) needs within the open-file limit, up to
/// [`DESCRIPTOR_TABLE_PRESIZE_MAX`].
///
/// The kernel grows a full descriptor table by doubling it, and in a process with more than one
/// thread each growth waits for an RCU grace period, several milliseconds on a virtual machine,
/// with the broker thread blocked in `accept`. Ten thousand connections arriving at once grew
/// it eight times: the broker sat idle for a sixth of the burst with clients waiting.
pub(crate) fn reserve_descriptors(connections_max: usize, descriptor_limit: Option<u64>) {
    let limit = descriptor_limit.unwrap_or(DESCRIPTOR_LIMIT_UNKNOWN);
    let wanted = match connections_max {
        0 => limit,
        n => (n as u64).saturating_add(DESCRIPTOR_RESERVE).min(limit),
    };
    grow_descriptor_table(wanted.min(DESCRIPTOR_TABLE_PRESIZE_MAX));
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
    fn the_default_is_every_descriptor_but_the_reserve() {
        // systemd's default hard limit, Docker's, this machine's.
        assert_eq!(connections_max_for(524_288), 523_264);
        assert_eq!(connections_max_for(1_048_576), 1_047_552);
        assert_eq!(connections_max_for(20_000), 18_976);
        assert_eq!(connections_max_for(2_048), 1_024);
        // Below twice the reserve, half for connections and half for the rest.
        assert_eq!(connections_max_for(1_024), 512);
        assert_eq!(connections_max_for(1_000), 500);
        // Never 0, which would mean no cap at all.
        assert_eq!(connections_max_for(1), 1);
        assert_eq!(connections_max_for(0), 1);
        // A configured figure wins, whatever the limit.
        assert_eq!(connections_max(Some(50), Some(20_000)), 50);
        assert_eq!(connections_max(Some(0), Some(20_000)), 0);
        assert_eq!(connections_max(None, Some(20_000)), 18_976);
    }

    #[test]
    fn the_limit_is_raised_and_the_table_sized_for_the_connections() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("limit");
        let wanted = hard.min(kernel_open_files_max().unwrap_or(hard));
        // From the soft limit a login shell gives (lowering needs no privilege).
        nix::sys::resource::setrlimit(Resource::RLIMIT_NOFILE, 1024.min(hard), hard)
            .expect("the soft limit lowered");
        assert_eq!(raise_open_file_limit(), Some(wanted));
        assert_eq!(
            getrlimit(Resource::RLIMIT_NOFILE).expect("limit"),
            (wanted, hard)
        );
        // As many connections as the hard limit leaves room for, up to a table well past
        // what a test process starts with (64 or 256 slots).
        let connections = hard.saturating_sub(DESCRIPTOR_RESERVE).min(3_000);
        assert!(connections > 0, "hard limit {hard} too low to test");
        let wanted = connections + DESCRIPTOR_RESERVE;
        assert!(descriptor_table_size() < wanted);

        reserve_descriptors(connections as usize, Some(hard));

        assert!(descriptor_table_size() >= wanted);
        // The reserving descriptor itself is closed again.
        assert!(nix::fcntl::fcntl(wanted as i32 - 1, nix::fcntl::FcntlArg::F_GETFD).is_err());
    }
}
