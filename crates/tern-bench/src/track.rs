//! What receivers saw: sets of sequence numbers, unique deliveries inside and after the
//! measured window, duplicates, reordering, and a latency histogram.

use hdrhistogram::Histogram;

/// A set of sequence numbers from one publisher, one bit each: what a subscriber group has
/// received, or what the broker has acknowledged.
#[derive(Debug, Default, Clone)]
pub(crate) struct SeqSet {
    bits: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// Adds `seq`; returns whether it is new.
    pub(crate) fn insert(&mut self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        if word >= self.bits.len() {
            self.bits.resize(word + 1 + word / 2, 0);
        }
        let bit = 1u64 << (seq % 64);
        let new = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        self.len += u64::from(new);
        new
    }

    pub(crate) fn contains(&self, seq: u64) -> bool {
        self.bits
            .get((seq / 64) as usize)
            .is_some_and(|word| word & (1u64 << (seq % 64)) != 0)
    }

    /// How many sequence numbers the set holds.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// How many members of this set `other` lacks.
    pub(crate) fn count_missing_from(&self, other: &Self) -> u64 {
        self.bits
            .iter()
            .enumerate()
            .map(|(i, word)| {
                let theirs = other.bits.get(i).copied().unwrap_or(0);
                u64::from((word & !theirs).count_ones())
            })
            .sum()
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
    fn a_sequence_number_is_new_once() {
        let mut seen = SeqSet::default();
        assert!(seen.insert(0));
        assert!(seen.insert(1000));
        assert!(!seen.insert(0));
        assert!(seen.insert(63));
        assert!(seen.insert(64));
        assert!(!seen.insert(1000));
        assert_eq!(seen.len(), 4);
        assert!(seen.contains(63) && seen.contains(1000));
        assert!(!seen.contains(62) && !seen.contains(1 << 40));
    }

    #[test]
    fn missing_counts_members_the_other_set_lacks() {
        let mut acked = SeqSet::default();
        let mut seen = SeqSet::default();
        for seq in 0..200 {
            acked.insert(seq);
        }
        for seq in (0..200).filter(|s| s % 3 != 0) {
            seen.insert(seq);
        }
        // Received but never acknowledged: not missing from anything acknowledged.
        seen.insert(5000);
        assert_eq!(acked.count_missing_from(&seen), 67);
        assert_eq!(seen.count_missing_from(&acked), 1);
        assert_eq!(acked.count_missing_from(&SeqSet::default()), 200);
    }
}
