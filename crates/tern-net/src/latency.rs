//! How long the store takes to make a group commit durable (one write and one sync), as a
//! histogram the store thread fills and anyone may read (the HTTP bridge's `/metrics`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (a last bucket, +Inf, takes the rest).
pub const COMMIT_BUCKETS_SECS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Commit times: counts per bucket, their sum and their number.
#[derive(Debug, Default)]
pub(crate) struct CommitLatency {
    buckets: [AtomicU64; COMMIT_BUCKETS_SECS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// A copy of the histogram: per bucket (not cumulative; the last is +Inf), the sum of the
/// times in seconds, and how many.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitLatencySnapshot {
    /// Commits per bucket of [`COMMIT_BUCKETS_SECS`], then beyond the last.
    pub buckets: Vec<u64>,
    /// Their times summed, in seconds.
    pub sum_secs: f64,
    /// How many commits.
    pub count: u64,
}

impl CommitLatency {
    /// Records one commit that took `took`.
    pub(crate) fn record(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = COMMIT_BUCKETS_SECS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(COMMIT_BUCKETS_SECS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy as it is now.
    pub(crate) fn snapshot(&self) -> CommitLatencySnapshot {
        CommitLatencySnapshot {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_secs: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_commit_goes_to_the_first_bucket_that_holds_it() {
        let latency = CommitLatency::default();
        latency.record(Duration::from_micros(300));
        latency.record(Duration::from_micros(500));
        latency.record(Duration::from_millis(3));
        latency.record(Duration::from_secs(10));
        let snapshot = latency.snapshot();
        assert_eq!(snapshot.buckets[0], 2, "0.5 ms holds 0.3 and 0.5 ms");
        assert_eq!(snapshot.buckets[3], 1, "3 ms: in the 5 ms bucket");
        assert_eq!(snapshot.buckets[COMMIT_BUCKETS_SECS.len()], 1, "+Inf");
        assert_eq!(snapshot.count, 4);
        assert!((snapshot.sum_secs - 10.0038).abs() < 1e-9);
    }
}
