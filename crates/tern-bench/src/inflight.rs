//! A publisher's QoS 1/2 publishes awaiting the broker's answer, by packet identifier: which
//! sequence number each carries, and whether the broker has taken it on yet.
//!
//! A message counts as acknowledged when the broker takes ownership of it: PUBACK at QoS 1,
//! PUBREC at QoS 2 (MQTT 3.1.1 §4.3.3, MQTT 5 §4.3.3: the receiver sends PUBREC "having
//! accepted ownership"; PUBREL and PUBCOMP only release the packet identifier). Its place in
//! the in-flight window is given back at PUBACK or PUBCOMP, as the broker's Receive Maximum
//! counts it. A reason code of 0x80 or above (MQTT 5) refuses the message: it is not owed.

use tern_codec::ReasonCode;

/// What an answer from the broker meant for the message it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The broker took on the message with this sequence number.
    Acknowledged(u64),
    /// The broker refused the message with this sequence number.
    Refused(u64),
    /// A PUBREC for a message already acknowledged (the broker sent it again): answer it with
    /// PUBREL again, count nothing.
    Repeated,
    /// The packet identifier names nothing awaiting this answer.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Free,
    /// Sent, no answer yet.
    Sent(u64),
    /// QoS 2: PUBREC received (acknowledged), PUBCOMP awaited.
    Received,
}

/// The publishes one publisher has in flight.
#[derive(Debug)]
pub(crate) struct Inflight {
    /// Indexed by packet identifier.
    slots: Vec<Slot>,
    count: u64,
}

impl Inflight {
    pub(crate) fn new() -> Self {
        Self {
            slots: vec![Slot::Free; usize::from(u16::MAX) + 1],
            count: 0,
        }
    }

    /// Publishes that hold a place in the window (sent, not yet PUBACK or PUBCOMP).
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Records that `seq` went out with packet identifier `id`. The caller never reuses an
    /// identifier still in flight (its window is below the 65,535 identifiers).
    pub(crate) fn sent(&mut self, id: u16, seq: u64) {
        let slot = &mut self.slots[usize::from(id)];
        if *slot == Slot::Free {
            self.count += 1;
        }
        *slot = Slot::Sent(seq);
    }

    /// A PUBACK: the QoS 1 exchange ends either way.
    pub(crate) fn puback(&mut self, id: u16, reason: ReasonCode) -> Answer {
        match self.slots[usize::from(id)] {
            Slot::Sent(seq) => {
                self.free(id);
                if reason.is_success() {
                    Answer::Acknowledged(seq)
                } else {
                    Answer::Refused(seq)
                }
            }
            Slot::Free | Slot::Received => Answer::Unknown,
        }
    }

    /// A PUBREC: success keeps the place until PUBCOMP; a refusal ends the exchange (no
    /// PUBREL follows one, MQTT 5 §4.3.3).
    pub(crate) fn pubrec(&mut self, id: u16, reason: ReasonCode) -> Answer {
        match self.slots[usize::from(id)] {
            Slot::Sent(seq) if reason.is_success() => {
                self.slots[usize::from(id)] = Slot::Received;
                Answer::Acknowledged(seq)
            }
            Slot::Sent(seq) => {
                self.free(id);
                Answer::Refused(seq)
            }
            Slot::Received => Answer::Repeated,
            Slot::Free => Answer::Unknown,
        }
    }

    /// A PUBCOMP: the QoS 2 exchange is over. Returns whether it closed one.
    pub(crate) fn pubcomp(&mut self, id: u16) -> bool {
        if self.slots[usize::from(id)] == Slot::Received {
            self.free(id);
            true
        } else {
            false
        }
    }

    fn free(&mut self, id: u16) {
        self.slots[usize::from(id)] = Slot::Free;
        self.count -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos1_is_acknowledged_and_released_by_puback() {
        let mut inflight = Inflight::new();
        inflight.sent(1, 10);
        inflight.sent(2, 11);
        assert_eq!(inflight.count(), 2);
        assert_eq!(
            inflight.puback(2, ReasonCode::Success),
            Answer::Acknowledged(11)
        );
        // "No matching subscribers" is still a success: the broker took the message.
        assert_eq!(
            inflight.puback(1, ReasonCode::NoMatchingSubscribers),
            Answer::Acknowledged(10)
        );
        assert_eq!(inflight.count(), 0);
        // Repeated or stray: counted once only.
        assert_eq!(inflight.puback(1, ReasonCode::Success), Answer::Unknown);
        assert_eq!(inflight.puback(9, ReasonCode::Success), Answer::Unknown);
    }

    #[test]
    fn qos2_is_acknowledged_at_pubrec_and_released_at_pubcomp() {
        let mut inflight = Inflight::new();
        inflight.sent(7, 3);
        assert!(!inflight.pubcomp(7), "PUBCOMP before PUBREC closes nothing");
        assert_eq!(
            inflight.pubrec(7, ReasonCode::Success),
            Answer::Acknowledged(3)
        );
        assert_eq!(inflight.count(), 1, "the place is held until PUBCOMP");
        assert_eq!(inflight.pubrec(7, ReasonCode::Success), Answer::Repeated);
        assert!(inflight.pubcomp(7));
        assert_eq!(inflight.count(), 0);
        assert!(!inflight.pubcomp(7));
    }

    #[test]
    fn refusals_are_not_acknowledgements_and_free_the_place() {
        let mut inflight = Inflight::new();
        inflight.sent(1, 0);
        inflight.sent(2, 1);
        assert_eq!(
            inflight.puback(1, ReasonCode::QuotaExceeded),
            Answer::Refused(0)
        );
        assert_eq!(
            inflight.pubrec(2, ReasonCode::NotAuthorized),
            Answer::Refused(1)
        );
        assert_eq!(inflight.count(), 0);
    }
}
