//! Loss accounting for the message-flow scenarios: what the broker acknowledged to each
//! publisher, what each subscriber group received, and from the two what was lost, duplicated,
//! reordered, and still owed when the measured window closed.
//!
//! A delivery is owed for every message the broker acknowledged (QoS 1/2), or for every message
//! sent (QoS 0, which has no acknowledgement), once per subscriber group its topic matches. A
//! message the broker never answered is not owed: the publisher was never told it was taken.

use crate::report::PublisherFigures;
use crate::track::{SeqSet, Totals};

/// One subscriber connection: its group, and the newest sequence number it has had from each
/// publisher (order is a promise per connection).
#[derive(Debug)]
struct Receiver {
    group: usize,
    newest: Vec<Option<u64>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    acknowledged: u64,
    acknowledged_in_window: u64,
    refused: u64,
    delivered: u64,
    delivered_in_window: u64,
    duplicated: u64,
    out_of_order: u64,
}

/// Everything a run's publishers and receivers report, kept on the generator's one thread.
#[derive(Debug)]
pub(crate) struct Ledger {
    /// Per publisher: sequence numbers the broker acknowledged.
    acked: Vec<SeqSet>,
    /// Per subscriber group, per publisher: sequence numbers that arrived.
    seen: Vec<Vec<SeqSet>>,
    receivers: Vec<Receiver>,
    counts: Vec<Counts>,
    pub(crate) totals: Totals,
    /// Deliveries owed for messages acknowledged inside the window and not made inside it.
    undelivered_at_window_end: u64,
}

impl Ledger {
    /// A ledger for `publishers`, `groups` subscriber groups (each message is owed once to
    /// every group), and one receiver per entry of `receiver_groups`, naming its group.
    pub(crate) fn new(publishers: usize, groups: usize, receiver_groups: &[usize]) -> Self {
        Self {
            acked: vec![SeqSet::default(); publishers],
            seen: vec![vec![SeqSet::default(); publishers]; groups],
            receivers: receiver_groups
                .iter()
                .map(|&group| Receiver {
                    group,
                    newest: vec![None; publishers],
                })
                .collect(),
            counts: vec![Counts::default(); publishers],
            totals: Totals::new(),
            undelivered_at_window_end: 0,
        }
    }

    pub(crate) fn publishers(&self) -> usize {
        self.counts.len()
    }

    /// The broker took on `seq` from `publisher` (PUBACK, or PUBREC at QoS 2).
    pub(crate) fn acknowledged(&mut self, publisher: usize, seq: u64, in_window: bool) {
        if !self.acked[publisher].insert(seq) {
            return;
        }
        self.counts[publisher].acknowledged += 1;
        if in_window {
            self.counts[publisher].acknowledged_in_window += 1;
            // A group may already have it: a broker can deliver before its acknowledgement
            // reaches the publisher.
            let owed = self
                .seen
                .iter()
                .filter(|group| !group[publisher].contains(seq))
                .count();
            self.undelivered_at_window_end += owed as u64;
        }
    }

    /// The broker refused a message from `publisher` (a reason code of 0x80 or above).
    pub(crate) fn refused(&mut self, publisher: usize) {
        self.counts[publisher].refused += 1;
    }

    /// `seq` from `publisher` arrived at `receiver`; returns whether it was new to the
    /// receiver's group (a repeat is counted as a duplicate and nothing else).
    pub(crate) fn delivered(
        &mut self,
        receiver: usize,
        publisher: usize,
        seq: u64,
        in_window: bool,
    ) -> bool {
        let Receiver { group, newest } = &mut self.receivers[receiver];
        let counts = &mut self.counts[publisher];
        if !self.seen[*group][publisher].insert(seq) {
            counts.duplicated += 1;
            self.totals.duplicated += 1;
            return false;
        }
        counts.delivered += 1;
        let newest = &mut newest[publisher];
        if newest.is_some_and(|newest| seq < newest) {
            counts.out_of_order += 1;
            self.totals.out_of_order += 1;
        }
        *newest = Some(newest.map_or(seq, |n| n.max(seq)));
        if in_window {
            counts.delivered_in_window += 1;
            self.totals.in_window += 1;
            // Acknowledged before it arrived, so inside the window too: it was counted as owed.
            if self.acked[publisher].contains(seq) {
                self.undelivered_at_window_end = self.undelivered_at_window_end.saturating_sub(1);
            }
        } else {
            self.totals.backlog += 1;
        }
        true
    }

    /// A message that is not from this run's publishers.
    pub(crate) fn foreign(&mut self) {
        self.totals.foreign += 1;
    }

    /// Unique deliveries of `publisher`'s messages, over every group.
    pub(crate) fn delivered_from(&self, publisher: usize) -> u64 {
        self.counts[publisher].delivered
    }

    pub(crate) fn acknowledged_total(&self) -> u64 {
        self.counts.iter().map(|c| c.acknowledged).sum()
    }

    pub(crate) fn refused_total(&self) -> u64 {
        self.counts.iter().map(|c| c.refused).sum()
    }

    pub(crate) fn undelivered_at_window_end(&self) -> u64 {
        self.undelivered_at_window_end
    }

    /// Each publisher's figures once the run is over, given what each sent and the window's
    /// length in seconds. `acknowledged` says whether deliveries are owed for acknowledged
    /// messages (QoS 1/2) or for every message sent (QoS 0).
    pub(crate) fn figures(
        &self,
        sent: &[u64],
        acknowledged: bool,
        window_s: f64,
    ) -> Vec<PublisherFigures> {
        let groups = self.seen.len() as u64;
        let per_s = |count: u64| count as f64 / window_s.max(1e-9);
        (0..self.publishers())
            .map(|p| {
                let c = self.counts[p];
                let sent = sent.get(p).copied().unwrap_or(0);
                let lost = if acknowledged {
                    self.seen
                        .iter()
                        .map(|group| self.acked[p].count_missing_from(&group[p]))
                        .sum()
                } else {
                    let unique: u64 = self.seen.iter().map(|group| group[p].len()).sum();
                    (sent * groups).saturating_sub(unique)
                };
                PublisherFigures {
                    sent,
                    acknowledged: c.acknowledged,
                    acknowledged_in_window: c.acknowledged_in_window,
                    acknowledged_per_s: per_s(c.acknowledged_in_window),
                    refused: c.refused,
                    delivered: c.delivered,
                    delivered_in_window: c.delivered_in_window,
                    delivered_per_s: per_s(c.delivered_in_window),
                    lost,
                    duplicated: c.duplicated,
                    out_of_order: c.out_of_order,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(figures: &[PublisherFigures], field: fn(&PublisherFigures) -> u64) -> u64 {
        figures.iter().map(field).sum()
    }

    #[test]
    fn acknowledged_but_never_delivered_is_lost_and_unacknowledged_is_not() {
        // Two publishers into one subscriber (fan-in).
        let mut ledger = Ledger::new(2, 1, &[0]);
        for seq in 0..10 {
            ledger.acknowledged(0, seq, true);
        }
        // Publisher 1 sent 10; the broker answered 6 of them.
        for seq in 0..6 {
            ledger.acknowledged(1, seq, true);
        }
        for seq in (0..10).filter(|s| s % 4 != 1) {
            assert!(ledger.delivered(0, 0, seq, true));
        }
        // Delivered although never acknowledged (the answer was still on its way): counts as
        // delivered, owes nothing.
        for seq in 0..8 {
            ledger.delivered(0, 1, seq, true);
        }
        let figures = ledger.figures(&[10, 10], true, 1.0);
        assert_eq!(figures[0].lost, 3, "seq 1, 5 and 9");
        assert_eq!(figures[1].lost, 0);
        assert_eq!(figures[1].acknowledged, 6);
        assert_eq!(figures[1].delivered, 8);
        assert_eq!(total(&figures, |f| f.duplicated), 0);
        assert_eq!(ledger.undelivered_at_window_end(), 3);
    }

    #[test]
    fn each_group_is_owed_every_acknowledged_message() {
        // Fan-out: one publisher, three subscribers, each its own group.
        let mut ledger = Ledger::new(1, 3, &[0, 1, 2]);
        for seq in 0..100 {
            ledger.acknowledged(0, seq, true);
            ledger.delivered(0, 0, seq, true);
            if seq < 90 {
                ledger.delivered(1, 0, seq, true);
            }
            if seq % 2 == 0 {
                ledger.delivered(2, 0, seq, seq < 80);
            }
        }
        let figures = ledger.figures(&[100], true, 1.0);
        assert_eq!(figures[0].lost, 10 + 50);
        assert_eq!(figures[0].delivered, 100 + 90 + 50);
        // Owed when the window closed: group 1's last 10, group 2's 60 (50 never, 10 later).
        assert_eq!(ledger.undelivered_at_window_end(), 10 + 60);
        assert_eq!(ledger.totals.backlog, 10);
        assert_eq!(ledger.totals.in_window, 100 + 90 + 40);
    }

    #[test]
    fn duplicates_and_reordering_are_counted_per_publisher() {
        let mut ledger = Ledger::new(2, 1, &[0]);
        for seq in 0..5 {
            ledger.acknowledged(0, seq, true);
            ledger.acknowledged(1, seq, true);
        }
        for seq in [0, 2, 1, 3, 3, 4, 0] {
            ledger.delivered(0, 0, seq, true);
        }
        for seq in 0..5 {
            ledger.delivered(0, 1, seq, true);
        }
        let figures = ledger.figures(&[5, 5], true, 1.0);
        assert_eq!((figures[0].duplicated, figures[0].out_of_order), (2, 1));
        assert_eq!((figures[1].duplicated, figures[1].out_of_order), (0, 0));
        assert_eq!(total(&figures, |f| f.lost), 0);
        assert_eq!(
            (ledger.totals.duplicated, ledger.totals.out_of_order),
            (2, 1)
        );
        assert_eq!(ledger.totals.unique(), 10);
    }

    #[test]
    fn order_is_judged_per_connection_and_loss_per_group() {
        // Shared subscription: two receivers in one group split the stream; each sees its own
        // share in order, and together they owe each message once.
        let mut ledger = Ledger::new(1, 1, &[0, 0]);
        for seq in 0..6 {
            ledger.acknowledged(0, seq, true);
        }
        for seq in [1, 3, 5] {
            ledger.delivered(0, 0, seq, true);
        }
        for seq in [0, 2] {
            ledger.delivered(1, 0, seq, true);
        }
        let figures = ledger.figures(&[6], true, 1.0);
        assert_eq!(figures[0].out_of_order, 0);
        assert_eq!(figures[0].lost, 1, "seq 4");
    }

    #[test]
    fn refused_messages_are_not_owed() {
        let mut ledger = Ledger::new(1, 1, &[0]);
        ledger.acknowledged(0, 0, true);
        ledger.refused(0);
        ledger.delivered(0, 0, 0, true);
        let figures = ledger.figures(&[2], true, 1.0);
        assert_eq!((figures[0].refused, figures[0].lost), (1, 0));
        assert_eq!(ledger.refused_total(), 1);
    }

    #[test]
    fn a_repeated_acknowledgement_counts_once() {
        let mut ledger = Ledger::new(1, 1, &[0]);
        ledger.acknowledged(0, 4, true);
        ledger.acknowledged(0, 4, true);
        assert_eq!(ledger.acknowledged_total(), 1);
        let figures = ledger.figures(&[5], true, 1.0);
        assert_eq!((figures[0].acknowledged_in_window, figures[0].lost), (1, 1));
    }

    #[test]
    fn qos0_owes_every_message_sent() {
        let mut ledger = Ledger::new(1, 2, &[0, 1]);
        for seq in 0..10 {
            ledger.delivered(0, 0, seq, true);
        }
        for seq in 0..4 {
            ledger.delivered(1, 0, seq, false);
        }
        let figures = ledger.figures(&[10], false, 1.0);
        assert_eq!(figures[0].lost, 6);
        assert_eq!(ledger.undelivered_at_window_end(), 0);
    }

    #[test]
    fn acknowledgements_after_the_window_owe_nothing_at_its_end() {
        let mut ledger = Ledger::new(1, 1, &[0]);
        ledger.acknowledged(0, 0, true);
        ledger.acknowledged(0, 1, false);
        ledger.delivered(0, 0, 1, false);
        assert_eq!(ledger.undelivered_at_window_end(), 1);
        ledger.delivered(0, 0, 0, false);
        assert_eq!(
            ledger.undelivered_at_window_end(),
            1,
            "owed when the window closed"
        );
        let figures = ledger.figures(&[2], true, 1.0);
        assert_eq!((figures[0].acknowledged_in_window, figures[0].lost), (1, 0));
    }

    #[test]
    fn each_publisher_has_its_own_rates_inside_the_window() {
        // Fan-in over a 2-second window: publisher 0 is acknowledged and delivered 8 times
        // inside it and twice after; publisher 1 is acknowledged 4 times, delivered never.
        let mut ledger = Ledger::new(2, 1, &[0]);
        for seq in 0..10 {
            ledger.acknowledged(0, seq, seq < 8);
            ledger.delivered(0, 0, seq, seq < 8);
        }
        for seq in 0..4 {
            ledger.acknowledged(1, seq, true);
        }
        let figures = ledger.figures(&[10, 6], true, 2.0);
        let rates = |f: &PublisherFigures| (f.acknowledged_per_s, f.delivered_per_s);
        assert_eq!(rates(&figures[0]), (4.0, 4.0));
        assert_eq!(rates(&figures[1]), (2.0, 0.0));
        assert_eq!(
            (
                figures[0].acknowledged_in_window,
                figures[0].delivered_in_window
            ),
            (8, 8)
        );
        assert_eq!((figures[1].lost, figures[1].acknowledged_in_window), (4, 4));
    }
}
