//! What receivers saw: unique deliveries inside and after the measured window, duplicates,
//! reordering, and a latency histogram.

use hdrhistogram::Histogram;

/// Messages one subscriber group has seen from one publisher, as a bit per sequence number.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    bits: Vec<u64>,
}

impl Seen {
    /// Marks `seq`; returns whether it is new.
    pub(crate) fn mark(&mut self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        if word >= self.bits.len() {
            self.bits.resize(word + 1 + word / 2, 0);
        }
        let bit = 1u64 << (seq % 64);
        let new = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        new
    }
}

/// Totals over every receiver of a run.
#[derive(Debug)]
pub(crate) struct Totals {
    pub(crate) in_window: u64,
    pub(crate) backlog: u64,
    pub(crate) duplicated: u64,
    pub(crate) out_of_order: u64,
    /// Messages that are not from this run's publishers (left over from an earlier run).
    pub(crate) foreign: u64,
    /// Delivery latency in microseconds.
    pub(crate) latency: Histogram<u64>,
}

impl Totals {
    pub(crate) fn new() -> Self {
        Self {
            in_window: 0,
            backlog: 0,
            duplicated: 0,
            out_of_order: 0,
            foreign: 0,
            // 1 µs to 1 hour at 3 significant digits; the bounds are constants, so this holds.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
        }
    }

    pub(crate) fn unique(&self) -> u64 {
        self.in_window + self.backlog
    }

    pub(crate) fn record_latency(&mut self, micros: u64) {
        self.latency.saturating_record(micros.max(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_reports_each_sequence_number_new_once() {
        let mut seen = Seen::default();
        assert!(seen.mark(0));
        assert!(seen.mark(1000));
        assert!(!seen.mark(0));
        assert!(seen.mark(63));
        assert!(seen.mark(64));
        assert!(!seen.mark(1000));
    }
}
