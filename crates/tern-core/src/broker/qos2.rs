//! The QoS 2 handshakes in both directions: an inbound PUBLISH held by its packet identifier
//! until PUBREL (exactly once, MQTT 4.3.3), and outbound deliveries through PUBREC, PUBREL and
//! PUBCOMP.

use tern_codec::{Ack, Packet, PacketId, ReasonCode};

use super::tree_view::Outgoing;
use super::Broker;
use crate::cluster::OutboundStage;
use crate::session::OutgoingState;
use crate::store::{DeliveryStage, StoreOp};
use crate::types::{ConnectionId, SessionKey, Time};

impl Broker {
    /// Takes a QoS 2 PUBLISH whose checks gave `outcome`: what is routed, or the reason code
    /// it is refused with.
    pub(super) fn receive_qos2(
        &mut self,
        id: ConnectionId,
        key: SessionKey,
        packet_id: PacketId,
        outcome: Result<Outgoing, ReasonCode>,
        now: Time,
    ) {
        let v5 = self.is_v5(id);
        if v5 && outcome.is_err() {
            // A PUBREC with an error code ends the exchange: the identifier is free for a new
            // message (MQTT-4.3.3-9), even when an earlier copy was accepted before the rules
            // changed and held it; the client will send no PUBREL for it.
            self.release_incoming_qos2(key, packet_id.get());
            let mut ack = Ack::new(packet_id);
            if let Err(code) = outcome {
                ack.reason_code = code;
            }
            self.acknowledge(id, ack, true, None, now);
            return;
        }
        let session = self.session(key);
        let ack = Ack::new(packet_id);
        if !session.incoming_qos2.contains(&packet_id.get()) {
            // Receive Maximum bounds QoS 2 exchanges the client has open (MQTT-3.3.4-7).
            // A 3.1.1 client never hears of it; its open exchanges are bounded by the
            // 65,535 packet identifiers instead.
            if v5 && self.receive_maximum_reached(id, key) {
                self.violation(
                    id,
                    ReasonCode::ReceiveMaximumExceeded,
                    "too many QoS 2 publishes in flight",
                    now,
                );
                return;
            }
            self.session_mut(key).incoming_qos2.insert(packet_id.get());
            self.persist_for(key, |client_id| StoreOp::IncomingQos2 {
                client_id,
                packet_id: packet_id.get(),
                pending: true,
            });
            // Routed once, on first receipt: a resent PUBLISH with the same identifier is
            // only acknowledged again (exactly once, 4.3.3). A refused 3.1.1 publish
            // completes the handshake but goes nowhere.
            let position = self.pending_transmits(id);
            if let Ok(outgoing) = outcome {
                self.collect_congested();
                let dup = match &outgoing {
                    Outgoing::One(publish) => publish.dup,
                    Outgoing::Spread(publishes) => publishes.iter().any(|p| p.dup),
                };
                self.receive_qos2_once(packet_id.get(), dup, |broker| {
                    broker.accept_outgoing(Some(key), None, outgoing, now);
                });
            }
            // Unless held back, the PUBREC goes ahead of what routing queued, so the
            // publisher's answer is not behind a copy delivered to its own
            // subscription. It says Success even when nobody subscribes: 0x10 is
            // allowed there, not required (3.5.2.1), and the short form saves the
            // publisher two bytes.
            self.acknowledge(id, ack, true, Some(position), now);
            return;
        }
        self.acknowledge(id, ack, true, None, now);
    }

    pub(super) fn handle_pubrec(&mut self, id: ConnectionId, key: SessionKey, ack: Ack, now: Time) {
        let session = self.session_mut(key);
        match session.find_inflight(ack.packet_id) {
            Some(index) if session.inflight[index].state == OutgoingState::AwaitPubRec => {
                session.acked_at = now;
                if ack.reason_code.is_success() {
                    session.inflight[index].state = OutgoingState::AwaitPubComp;
                    let delivery = &session.inflight[index].delivery;
                    let (seq, message_id) = (delivery.seq, delivery.message.id);
                    self.persist_for(key, |client_id| StoreOp::DeliveryStage {
                        client_id,
                        seq,
                        stage: DeliveryStage::Released(ack.packet_id),
                    });
                    let stage = OutboundStage::Released;
                    self.cluster_outbound(key, Some(id), ack.packet_id, message_id, stage);
                    self.send(id, Packet::PubRel(Ack::new(ack.packet_id)));
                } else {
                    // The client refused the message: the exchange ends here (MQTT-4.3.3-4).
                    if let Some(entry) = self.remove_inflight(key, index) {
                        self.delivery_done(key, entry.delivery.seq);
                        let (packet_id, message_id) = (entry.packet_id, entry.delivery.message.id);
                        let stage = OutboundStage::Completed;
                        self.cluster_outbound(key, None, packet_id, message_id, stage);
                    }
                    self.pump(key, now);
                }
            }
            Some(index) if session.inflight[index].state == OutgoingState::AwaitPubComp => {
                self.send(id, Packet::PubRel(Ack::new(ack.packet_id)));
            }
            _ => {
                let mut rel = Ack::new(ack.packet_id);
                rel.reason_code = ReasonCode::PacketIdentifierNotFound;
                self.send(id, Packet::PubRel(rel));
            }
        }
    }

    pub(super) fn handle_pubcomp(&mut self, key: SessionKey, ack: Ack, now: Time) {
        let session = self.session_mut(key);
        match session.find_inflight(ack.packet_id) {
            Some(index) if session.inflight[index].state == OutgoingState::AwaitPubComp => {
                session.acked_at = now;
                if let Some(entry) = self.remove_inflight(key, index) {
                    self.delivery_done(key, entry.delivery.seq);
                    let (packet_id, message_id) = (entry.packet_id, entry.delivery.message.id);
                    self.fleet_notify_acked(key, message_id, now);
                    let stage = OutboundStage::Completed;
                    self.cluster_outbound(key, None, packet_id, message_id, stage);
                }
                self.pump(key, now);
            }
            _ => {}
        }
    }

    pub(super) fn handle_pubrel(&mut self, id: ConnectionId, key: SessionKey, ack: Ack) {
        self.release_incoming_qos2(key, ack.packet_id.get());
        self.cluster_released(id, key, ack.packet_id.get());
        // Success also for an identifier no longer held: a PUBREL resent after a reconnection
        // whose PUBCOMP was lost is the usual cause, and the identifier is released either way.
        // 0x92 is allowed there, not required (3.7.2.1), and costs the client a byte.
        self.send(id, Packet::PubComp(Ack::new(ack.packet_id)));
    }

    /// Ends the inbound QoS 2 exchange `packet_id` of `key`; returns whether one was open.
    fn release_incoming_qos2(&mut self, key: SessionKey, packet_id: u16) -> bool {
        let known = self.session_mut(key).incoming_qos2.remove(&packet_id);
        if known {
            self.persist_for(key, |client_id| StoreOp::IncomingQos2 {
                client_id,
                packet_id,
                pending: false,
            });
        }
        known
    }
}
