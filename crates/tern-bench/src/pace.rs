//! Waiting for a publisher's next send time with microsecond precision.
//!
//! tokio's timer rounds every deadline up to a whole millisecond and its driver sleeps in whole
//! milliseconds, so a publisher paced by it at 1,000 msg/s wakes about every 2 ms and sends two
//! messages at once. A fixed-rate scenario should send evenly; on Linux a timerfd (a kernel
//! high-resolution timer the runtime's poller watches like a socket) gives that.

use std::time::Instant;

#[cfg(target_os = "linux")]
mod imp {
    use std::os::fd::{AsFd, AsRawFd, RawFd};
    use std::time::Instant;

    use nix::errno::Errno;
    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    use tokio::io::unix::AsyncFd;

    /// A timerfd, owned; tokio's `AsyncFd` asks for `AsRawFd`.
    struct Timer(TimerFd);

    impl AsRawFd for Timer {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_fd().as_raw_fd()
        }
    }

    pub(super) struct Precise(AsyncFd<Timer>);

    impl Precise {
        pub(super) fn new() -> std::io::Result<Self> {
            let timer = TimerFd::new(
                ClockId::CLOCK_MONOTONIC,
                TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
            )?;
            // `AsyncFd::new` is deprecated because an arbitrary `AsRawFd` may hand out a
            // descriptor it does not own; `Timer` owns its descriptor for as long as the
            // registration lives, and the safe constructor's replacement is `unsafe`.
            #[allow(deprecated)]
            let registered = AsyncFd::new(Timer(timer))?;
            Ok(Self(registered))
        }

        /// Arms the timer for `deadline` and waits for it. Dropping the future early leaves
        /// the timer armed; the next call re-arms it, and a stale expiry only ends a later wait
        /// early, which the caller's loop treats like any other wake-up.
        pub(super) async fn sleep_until(&self, deadline: Instant) -> std::io::Result<()> {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            self.0.get_ref().0.set(
                Expiration::OneShot(TimeSpec::from_duration(left)),
                TimerSetTimeFlags::empty(),
            )?;
            loop {
                let mut ready = self.0.readable().await?;
                match ready.try_io(|timer| expired(&timer.get_ref().0)) {
                    Ok(result) => return result,
                    Err(_would_block) => continue,
                }
            }
        }
    }

    /// Reads the expiry count, so the descriptor stops being readable.
    fn expired(timer: &TimerFd) -> std::io::Result<()> {
        let mut count = [0u8; 8];
        match nix::unistd::read(timer.as_fd().as_raw_fd(), &mut count) {
            Ok(_) => Ok(()),
            Err(Errno::EAGAIN) => Err(std::io::ErrorKind::WouldBlock.into()),
            Err(errno) => Err(errno.into()),
        }
    }
}

/// Sleeps until an instant: with a timerfd where there is one, else with tokio's timer.
pub(crate) struct Pacer {
    #[cfg(target_os = "linux")]
    precise: Option<imp::Precise>,
}

impl Pacer {
    pub(crate) fn new() -> Self {
        Self {
            // Without a timerfd (descriptor limit reached) pacing falls back to milliseconds.
            #[cfg(target_os = "linux")]
            precise: imp::Precise::new().ok(),
        }
    }

    pub(crate) async fn sleep_until(&self, deadline: Instant) {
        #[cfg(target_os = "linux")]
        if let Some(precise) = &self.precise {
            if precise.sleep_until(deadline).await.is_ok() {
                return;
            }
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Pacer;

    #[tokio::test]
    async fn never_wakes_before_the_deadline() {
        let pacer = Pacer::new();
        for micros in [50, 300, 1_500] {
            let deadline = Instant::now() + Duration::from_micros(micros);
            pacer.sleep_until(deadline).await;
            assert!(
                Instant::now() >= deadline,
                "woke before a {micros} µs deadline"
            );
        }
    }

    #[tokio::test]
    async fn a_passed_deadline_returns_at_once_and_leaves_the_timer_usable() {
        let pacer = Pacer::new();
        pacer.sleep_until(Instant::now()).await;
        // An abandoned wait leaves the timer armed; the next wait still honours its own deadline.
        let abandoned = pacer.sleep_until(Instant::now() + Duration::from_secs(60));
        let raced = tokio::time::timeout(Duration::from_millis(1), abandoned).await;
        assert!(raced.is_err(), "a 60 s wait ended within 1 ms");
        let deadline = Instant::now() + Duration::from_micros(200);
        pacer.sleep_until(deadline).await;
        assert!(Instant::now() >= deadline);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_pacing_uses_a_timerfd() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let pacer = runtime.block_on(async { Pacer::new() });
        assert!(pacer.precise.is_some());
    }
}
