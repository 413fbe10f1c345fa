//! Adaptive busy polling: while input keeps arriving in quick succession, the broker thread
//! polls its sockets for a short window instead of sleeping between two bursts.
//!
//! Waking a sleeping thread costs tens of microseconds on a virtual machine (the idle virtual
//! CPU has halted and must be scheduled again), more than the work a small packet brings; a
//! thread that sleeps between every two connects or messages spends its time waking up. Work
//! stealing runtimes spin for the same reason before they park a worker. The spinning is
//! adaptive: it starts only when the typical quiet gap between inputs is shorter than the
//! window, so an idle or lightly loaded broker (say, a message every millisecond) sleeps at
//! once and spends nothing, and a busy one fills the gaps it would otherwise sleep through.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long each idle round of spinning pauses the CPU (with spin-loop hints, which leave the
/// core's other hardware thread its share) before polling the sockets again.
const PAUSE: Duration = Duration::from_micros(2);

/// Weight of the newest gap in the running average, as a shift: 1/8.
const GAP_AVERAGE_SHIFT: u32 = 3;

/// Input seen by the broker thread, and the spinning task that watches it.
pub(crate) struct BusyPoll {
    /// The spinning window in nanoseconds; 0 until the task runs (nothing is tracked then).
    window_nanos: Cell<u64>,
    /// Input handled so far (a counter the spinning task compares).
    activity: Cell<u64>,
    /// When input was last handled.
    last_input: Cell<Instant>,
    /// Running average of the gaps between inputs, in nanoseconds.
    average_gap: Cell<u64>,
    /// Whether the task is spinning now (then input need not wake it).
    spinning: Cell<bool>,
    /// Wakes the task once inputs come close enough together.
    wake: Notify,
}

impl Default for BusyPoll {
    fn default() -> Self {
        Self {
            window_nanos: Cell::new(0),
            activity: Cell::new(0),
            last_input: Cell::new(Instant::now()),
            average_gap: Cell::new(u64::MAX),
            spinning: Cell::new(false),
            wake: Notify::new(),
        }
    }
}

impl BusyPoll {
    /// Notes input handled on the broker thread at `now`; wakes the spinning task if inputs
    /// now come, on average, closer together than its window.
    pub(crate) fn note_activity(&self, now: Instant) {
        if self.note_activity_at(now) {
            self.wake.notify_one();
        }
    }

    /// Records input at `now`; returns whether the spinning task should start.
    fn note_activity_at(&self, now: Instant) -> bool {
        let window = self.window_nanos.get();
        if window == 0 {
            return false;
        }
        self.activity.set(self.activity.get().wrapping_add(1));
        let gap = nanos(now.saturating_duration_since(self.last_input.replace(now)));
        let average = next_average(self.average_gap.get(), gap);
        self.average_gap.set(average);
        average < window && !self.spinning.get()
    }

    /// Sets the window (what [`BusyPoll::run`] does first).
    fn arm(&self, window: Duration) {
        // Start as if inputs were far apart: no spinning until they are seen to be close.
        self.average_gap.set(nanos(window).saturating_mul(8));
        self.window_nanos.set(nanos(window).max(1));
    }

    /// Runs for ever: once woken, polls the sockets without sleeping until `window` has
    /// passed without input.
    pub(crate) async fn run(self: Rc<Self>, window: Duration) {
        self.arm(window);
        loop {
            self.wake.notified().await;
            self.spinning.set(true);
            let mut seen = self.activity.get();
            loop {
                // Deferred until the runtime has polled the sockets once, without blocking.
                tokio::task::yield_now().await;
                let activity = self.activity.get();
                if activity != seen {
                    seen = activity;
                    continue;
                }
                let now = Instant::now();
                if now - self.last_input.get() >= window {
                    break;
                }
                let pause_until = now + PAUSE;
                while Instant::now() < pause_until {
                    std::hint::spin_loop();
                }
            }
            self.spinning.set(false);
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The running average of gaps with `gap` added.
fn next_average(average: u64, gap: u64) -> u64 {
    average - (average >> GAP_AVERAGE_SHIFT) + (gap >> GAP_AVERAGE_SHIFT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_follows_the_gaps_it_is_fed() {
        let mut average = 800_000;
        for _ in 0..64 {
            average = next_average(average, 20_000);
        }
        assert!(average < 25_000, "short gaps pull it down: {average}");
        for _ in 0..64 {
            average = next_average(average, 1_000_000);
        }
        assert!(average > 950_000, "long gaps push it up: {average}");
    }

    #[test]
    fn spinning_starts_only_once_inputs_come_closer_together_than_the_window() {
        let busy = BusyPoll::default();
        let start = Instant::now();
        assert!(!busy.note_activity_at(start), "off until armed");
        busy.arm(Duration::from_micros(100));
        // A message every millisecond: never.
        let mut at = start;
        for _ in 0..1_000 {
            at += Duration::from_millis(1);
            assert!(!busy.note_activity_at(at));
        }
        // A message and its acknowledgement 50 us apart, every millisecond: still never.
        for _ in 0..1_000 {
            at += Duration::from_micros(950);
            assert!(!busy.note_activity_at(at));
            at += Duration::from_micros(50);
            assert!(!busy.note_activity_at(at));
        }
        // A burst, an input every 20 us: within a few dozen inputs.
        let woke = (0..64).position(|_| {
            at += Duration::from_micros(20);
            busy.note_activity_at(at)
        });
        assert!(woke.is_some_and(|n| n < 40), "woke after {woke:?} inputs");
        // While the task spins, input does not wake it again.
        busy.spinning.set(true);
        at += Duration::from_micros(20);
        assert!(!busy.note_activity_at(at));
    }
}
