//! A mailbox's queue while nobody is connected to it: what it keeps and within which limits.
//! Unlike the queue of an MQTT session, a mailbox keeps QoS 0 messages too (a device that
//! polls wants its telemetry), within the limits of its client class
//! (`[[http.mailbox_class]]`, else the session limits). When it is full the oldest QoS 0
//! message goes first; past that a new message is refused. Each message that goes or is
//! refused is counted and told (`Event::Dropped`), never lost silently. QoS 0 messages are
//! kept in memory only, as QoS 0 promises no more; when the client connects over MQTT they
//! are sent to it at once, as QoS 0.

use tern_codec::QoS;

use super::publish::Feed;
use super::Broker;
use crate::events::DropReason;
use crate::session::Delivery;
use crate::store::StoreOp;
use crate::types::{SessionKey, Time};

impl Broker {
    /// Whether `key` is a mailbox waiting for its poller: not connected, and made or polled
    /// over HTTP (or owned by an HTTP key, after a restart, before its first poll).
    pub(super) fn is_waiting_mailbox(&self, key: SessionKey) -> bool {
        let session = self.session(key);
        session.connection.is_none() && (session.mailbox.is_some() || session.owner.is_http_key())
    }

    /// The queue limits of the mailbox of `key`: its client class's, else the sessions'.
    pub fn mailbox_limits_of(&self, client_id: &str) -> (usize, usize) {
        let limits = &self.config.limits;
        self.config
            .mailbox_classes
            .iter()
            .filter(|class| client_id.starts_with(&class.prefix))
            .max_by_key(|class| class.prefix.len())
            .map_or(
                (limits.queued_count_max, limits.queued_bytes_max),
                |class| (class.queued_count_max, class.queued_bytes_max),
            )
    }

    /// Queues `delivery` in the mailbox of `key`, making room by dropping its oldest QoS 0
    /// messages if it is full; returns whether it was queued (if not, it was counted as
    /// dropped).
    pub(super) fn deliver_to_mailbox(
        &mut self,
        key: SessionKey,
        delivery: Delivery,
        now: Time,
    ) -> bool {
        let (count_max, bytes_max) = self.mailbox_limits_of(&self.session(key).client_id);
        let bytes = delivery.charge;
        while self
            .session(key)
            .queue_refusal(bytes, count_max, bytes_max)
            .is_some()
        {
            let session = self.session(key);
            let oldest = session.queue.iter().find(|d| d.qos == QoS::AtMostOnce);
            let Some(seq) = oldest.map(|d| d.seq) else {
                break;
            };
            self.with_session(key, |session| session.remove_queued(seq));
            if let Some(mailbox) = self.session_mut(key).mailbox.as_mut() {
                mailbox.leases.remove(&seq);
            }
            self.dropped(key, DropReason::MailboxFull);
        }
        if !self.within_memory(key, bytes, delivery.qos, now) {
            self.dropped(key, DropReason::MemoryFull);
            return false;
        }
        let qos = delivery.qos;
        let queued = self.with_session(key, |session| {
            session.enqueue(delivery, count_max, bytes_max)
        });
        if queued.is_err() {
            self.dropped(key, DropReason::MailboxFull);
            return false;
        }
        if qos != QoS::AtMostOnce {
            if let Some(delivery) = self.session(key).queue.back().cloned() {
                self.persist_for(key, |client_id| StoreOp::DeliveryQueued {
                    client_id,
                    delivery,
                });
            }
        }
        self.note_mailbox(key);
        true
    }

    /// The client of mailbox `key` connected over MQTT: the QoS 0 messages its mailbox kept
    /// are sent now, as QoS 0 (an MQTT session's queue holds QoS 1 and 2 only).
    pub(super) fn mailbox_qos0_to_connection(&mut self, key: SessionKey, now: Time) {
        let qos0: Vec<u64> = self
            .session(key)
            .queue
            .iter()
            .filter(|delivery| delivery.qos == QoS::AtMostOnce)
            .map(|delivery| delivery.seq)
            .collect();
        for seq in qos0 {
            if let Some(delivery) = self.with_session(key, |session| session.remove_queued(seq)) {
                self.deliver(key, delivery, Feed::Broker, now);
            }
        }
    }
}
