//! Flow control from subscribers back to publishers (docs/design/backpressure.md): a connected
//! subscriber whose queue reaches its limits is congested, and the acknowledgements of the
//! QoS 1/2 messages routed to it are held back, in order, until it drains to the low-water
//! mark, so that each publisher's own in-flight window stops it; a publisher with more held
//! than the Receive Maximum allows is no longer read. A congested subscriber that makes no
//! progress for the stall timeout, or falls further behind than its budget, is cut loose.
//!
//! Nothing here runs while nothing is congested: routing checks one list, acknowledging one map.
//! A client's own publish rate limit is here too: the one limit on how fast a client sends.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use tern_codec::{Ack, Packet, ReasonCode};

use super::Broker;
use crate::config::StalledSubscriber;
use crate::events::{CloseReason, CutReason, Event};
use crate::session::FlowState;
use crate::types::{ConnectionId, SessionKey, Time};

/// The state of flow control: who is congested, who is held.
#[derive(Debug, Default)]
pub(super) struct FlowControl {
    /// Congested subscribers, and what their stall check needs.
    congested: FxHashMap<SessionKey, Congestion>,
    /// Publishers with acknowledgements held back.
    held: FxHashMap<ConnectionId, Held>,
    /// While a client's QoS 1/2 PUBLISH is routed: the congested sessions it fed.
    fed: Vec<SessionKey>,
    /// Whether routing now collects `fed` (only for a client's QoS 1/2 PUBLISH).
    collecting: bool,
    /// Publishers whose sockets are not read now.
    paused: usize,
    /// Connections read again since the runtime last asked ([`Broker::take_resumed`]).
    resumed: Vec<ConnectionId>,
    /// Connections of subscribers cut loose, to be closed after the current input.
    to_close: Vec<(ConnectionId, CutReason)>,
    /// Finished spans of holding and of pausing, in milliseconds, summed over publishers.
    held_millis: u64,
    paused_millis: u64,
    /// The earliest time a congested subscriber may have stalled.
    next_stall_check: Option<Time>,
}

/// A congested subscriber.
#[derive(Debug)]
struct Congestion {
    /// When it became congested.
    since: Time,
    /// Publishers with acknowledgements waiting on it (each once).
    holders: Vec<ConnectionId>,
    /// Its connection's count of PUBLISH packets taken for writing, when last looked at, and
    /// when that count was last seen to move.
    taken_seen: u32,
    taken_at: Time,
}

/// A publisher's held acknowledgements, oldest first, in runs that wait on the same sessions.
#[derive(Debug)]
struct Held {
    acks: VecDeque<HeldAck>,
    /// How many of `acks` are PUBACKs: QoS 1 messages the client still counts against the
    /// Receive Maximum (its QoS 2 exchanges are counted by the session).
    pubacks: usize,
    /// (acknowledgements in the run, congested sessions they still wait on); a run is let go
    /// once its sessions, and every run before it, are clear.
    runs: VecDeque<(usize, Vec<SessionKey>)>,
    since: Time,
    /// Since when its socket is not read, if it is not.
    paused_since: Option<Time>,
}

/// A PUBACK or PUBREC held back.
#[derive(Debug)]
struct HeldAck {
    ack: Ack,
    pubrec: bool,
}

impl HeldAck {
    fn into_packet(self) -> Packet {
        match self.pubrec {
            true => Packet::PubRec(self.ack),
            false => Packet::PubAck(self.ack),
        }
    }
}

impl Broker {
    /// Whether `id`'s socket is not to be read now: it is a publisher held back further than its
    /// window allows. The runtime stops reading it (what was read and not handled stays in its
    /// buffer) until the core wakes it with the acknowledgements it lets go.
    pub fn reading_paused(&self, id: ConnectionId) -> bool {
        self.flow.paused > 0
            && self
                .flow
                .held
                .get(&id)
                .is_some_and(|held| held.paused_since.is_some())
    }

    /// Whether any connection's reading is paused: one check before [`Broker::reading_paused`].
    pub fn any_reading_paused(&self) -> bool {
        self.flow.paused > 0
    }

    /// Appends to `out` the connections whose reading was paused and may go on now (each
    /// once): the runtime wakes their tasks, whether or not they have anything to write.
    pub fn take_resumed(&mut self, out: &mut Vec<ConnectionId>) {
        if !self.flow.resumed.is_empty() {
            out.append(&mut self.flow.resumed);
        }
    }

    /// The runtime gave up on `id`: its socket took nothing of a pending write for the stall
    /// timeout. Counted and reported as a subscriber cut loose, then closed.
    pub fn socket_stalled(&mut self, id: ConnectionId, now: Time) {
        let Some(key) = self.connections.get(&id).and_then(|c| c.session()) else {
            return;
        };
        self.report_cut_loose(key, CutReason::SocketStalled, true);
        self.close(
            id,
            CloseReason::CutLoose(CutReason::SocketStalled),
            None,
            now,
        );
        self.close_oversized(now);
    }

    /// Routing from here on notes the congested sessions it feeds (a client's QoS 1/2 PUBLISH).
    pub(super) fn collect_congested(&mut self) {
        self.flow.fed.clear();
        self.flow.collecting = true;
    }

    /// After a routed delivery joined `key`'s queue: congested once the queue reaches its limits,
    /// and noted as fed by the PUBLISH being routed, for as long as it is congested (until it
    /// drains to the low-water mark, whoever feeds it waits). A `$share` member that has just
    /// become congested holds nobody yet: the group passes it over from the next message on,
    /// and only a message that found every member busy holds its publisher.
    pub(super) fn note_queue_growth(&mut self, key: SessionKey, shared: bool, now: Time) {
        let limits = &self.config.limits;
        let session = self.session(key);
        let holds = match session.flow {
            FlowState::Congested => true,
            FlowState::Clear
                if session.at_high_water(limits.queued_count_max, limits.queued_bytes_max) =>
            {
                self.congest(key, now);
                !shared
            }
            _ => false,
        };
        if holds && self.flow.collecting {
            self.flow.fed.push(key);
        }
    }

    fn congest(&mut self, key: SessionKey, now: Time) {
        let session = self.session_mut(key);
        session.flow = FlowState::Congested;
        let own = session.connection;
        let taken_seen = own
            .and_then(|id| self.connections.get(&id))
            .map_or(0, |c| c.publishes_taken);
        self.flow.congested.insert(
            key,
            Congestion {
                since: now,
                holders: Vec::new(),
                taken_seen,
                taken_at: now,
            },
        );
        let due = self.stall_deadline(key, now);
        self.flow.next_stall_check = Some(self.flow.next_stall_check.map_or(due, |at| at.min(due)));
        // Its acknowledgements are what drains it: a connection that is itself held must be
        // read again, or the two would wait on each other.
        if let Some(id) = own {
            self.resume_reading(id, now);
        }
    }

    /// After `key`'s queue shrank (or its connection ended): a congested or cut-loose session
    /// back at the low-water mark, or without a connection, is clear again and lets go of the
    /// publishers it held.
    pub(super) fn settle_flow(&mut self, key: SessionKey, now: Time) {
        let limits = &self.config.limits;
        let session = self.session(key);
        let clear = session.connection.is_none()
            || session.at_low_water(
                limits.queued_count_max,
                limits.queued_bytes_max,
                limits.overload_low_water_percent,
            );
        if clear {
            self.session_mut(key).flow = FlowState::Clear;
            self.release_holders(key, now);
        }
    }

    /// `key` holds nobody any more: each publisher waiting on it gets what is no longer held.
    fn release_holders(&mut self, key: SessionKey, now: Time) {
        let Some(congestion) = self.flow.congested.remove(&key) else {
            return;
        };
        for id in congestion.holders {
            if let Some(held) = self.flow.held.get_mut(&id) {
                for (_, waits) in &mut held.runs {
                    waits.retain(|&waiting| waiting != key);
                }
                self.release_ready(id, now);
            }
        }
    }

    /// Sends `ack` (a PUBACK, or a PUBREC with `pubrec`) for the PUBLISH just routed, or holds
    /// it back: when that PUBLISH fed a congested subscriber, or an earlier acknowledgement
    /// to `id` is held (acknowledgements go out in the order of their PUBLISH packets,
    /// MQTT-4.6.0-2/-3). `position` is where in the outbox it goes if sent now.
    pub(super) fn acknowledge(
        &mut self,
        id: ConnectionId,
        ack: Ack,
        pubrec: bool,
        position: Option<usize>,
        now: Time,
    ) {
        self.flow.collecting = false;
        let held = !self.flow.held.is_empty() && self.flow.held.contains_key(&id);
        if !held && self.flow.fed.is_empty() {
            let packet = HeldAck { ack, pubrec }.into_packet();
            match position {
                Some(position) => self.send_at(id, packet, position),
                None => self.send(id, packet),
            }
            return;
        }
        let mut fed = std::mem::take(&mut self.flow.fed);
        fed.sort_unstable();
        fed.dedup();
        // A session cut loose or gone while the message was routed holds nobody.
        fed.retain(|&key| self.flow.congested.contains_key(&key));
        if !held && fed.is_empty() {
            self.flow.fed = fed;
            self.send(id, HeldAck { ack, pubrec }.into_packet());
            return;
        }
        self.hold_ack(id, HeldAck { ack, pubrec }, &fed, now);
        fed.clear();
        self.flow.fed = fed;
    }

    /// Holds `ack` for `id` behind what is already held, until the sessions in `fed` are clear.
    fn hold_ack(&mut self, id: ConnectionId, ack: HeldAck, fed: &[SessionKey], now: Time) {
        self.stats.acks_held += 1;
        let held = self.flow.held.entry(id).or_insert_with(|| Held {
            acks: VecDeque::new(),
            pubacks: 0,
            runs: VecDeque::new(),
            since: now,
            paused_since: None,
        });
        held.pubacks += usize::from(!ack.pubrec);
        held.acks.push_back(ack);
        // An acknowledgement that waits on no more than the last run does is let go with it.
        match held.runs.back_mut() {
            Some((count, waits)) if fed.iter().all(|key| waits.contains(key)) => *count += 1,
            _ => {
                let new: Vec<SessionKey> = fed
                    .iter()
                    .copied()
                    .filter(|key| !held.runs.iter().any(|(_, waits)| waits.contains(key)))
                    .collect();
                held.runs.push_back((1, fed.to_vec()));
                for key in new {
                    if let Some(congestion) = self.flow.congested.get_mut(&key) {
                        congestion.holders.push(id);
                    }
                }
            }
        }
        // Past its window: an MQTT 5 publisher never gets here, a 3.1.1 one that keeps more
        // in flight does, and is no longer read (unless its own acknowledgements are needed to
        // drain a queue of its own).
        let window = usize::from(self.config.limits.receive_maximum);
        let Some(held) = self.flow.held.get(&id) else {
            return;
        };
        if held.paused_since.is_none() && held.acks.len() > window && !self.own_congested(id) {
            self.flow.paused += 1;
            if let Some(held) = self.flow.held.get_mut(&id) {
                held.paused_since = Some(now);
            }
        }
    }

    /// Whether `id`'s own session is congested.
    fn own_congested(&self, id: ConnectionId) -> bool {
        self.connections
            .get(&id)
            .and_then(|c| c.session())
            .is_some_and(|key| self.session(key).flow == FlowState::Congested)
    }

    /// Whether a new QoS 1/2 PUBLISH from `id` (of session `key`) would pass the Receive
    /// Maximum: its QoS 1 messages whose PUBACK is held and its open QoS 2 exchanges together
    /// (MQTT-3.3.4-7; the client counts both against the window until it has their answers).
    pub(super) fn receive_maximum_reached(&self, id: ConnectionId, key: SessionKey) -> bool {
        let held = match self.flow.held.is_empty() {
            true => 0,
            false => self.flow.held.get(&id).map_or(0, |held| held.pubacks),
        };
        held + self.session(key).incoming_qos2.len()
            >= usize::from(self.config.limits.receive_maximum)
    }

    /// Sends `id` the held acknowledgements whose runs are clear, from the oldest on.
    fn release_ready(&mut self, id: ConnectionId, now: Time) {
        let window = usize::from(self.config.limits.receive_maximum);
        let mut ready = Vec::new();
        let Some(held) = self.flow.held.get_mut(&id) else {
            return;
        };
        while let Some((count, _)) = held.runs.front().filter(|(_, waits)| waits.is_empty()) {
            let count = *count;
            held.runs.pop_front();
            ready.extend(held.acks.drain(..count));
            held.pubacks = held.acks.iter().filter(|ack| !ack.pubrec).count();
        }
        let empty = held.acks.is_empty();
        let resume = held.acks.len() <= window;
        for ack in ready {
            self.send(id, ack.into_packet());
        }
        if empty {
            self.end_hold(id, now);
        } else if resume {
            self.resume_reading(id, now);
        }
    }

    /// Reads `id`'s socket again if it was paused; keep alive counts from now.
    fn resume_reading(&mut self, id: ConnectionId, now: Time) {
        let Some(since) = self
            .flow
            .held
            .get_mut(&id)
            .and_then(|held| held.paused_since.take())
        else {
            return;
        };
        self.flow.paused -= 1;
        self.flow.paused_millis += now.as_millis().saturating_sub(since.as_millis());
        if let Some(connection) = self.connections.get_mut(&id) {
            connection.last_activity = now;
            self.flow.resumed.push(id);
        }
    }

    /// `id` has nothing held any more (all let go, or its connection is closing).
    pub(super) fn end_hold(&mut self, id: ConnectionId, now: Time) {
        if self.flow.held.is_empty() {
            return;
        }
        self.resume_reading(id, now);
        if let Some(held) = self.flow.held.remove(&id) {
            self.flow.held_millis += now.as_millis().saturating_sub(held.since.as_millis());
        }
    }

    /// Cuts `key` loose: it holds nobody from now on, is reported, and, under the default
    /// policy, its connection is closed after the current input (its session stays, per its
    /// expiry, with its queue). Under the drop policy it stays connected, and its newest
    /// messages are dropped past its queue limits until it has caught up.
    pub(super) fn cut_loose(&mut self, key: SessionKey, reason: CutReason, now: Time) {
        let disconnect = self.config.limits.stalled_subscriber == StalledSubscriber::Disconnect;
        self.report_cut_loose(key, reason, disconnect);
        self.session_mut(key).flow = FlowState::CutLoose;
        self.release_holders(key, now);
        if let (true, Some(id)) = (disconnect, self.session(key).connection) {
            self.flow.to_close.push((id, reason));
        }
    }

    fn report_cut_loose(&mut self, key: SessionKey, reason: CutReason, disconnected: bool) {
        self.stats.subscribers_cut_loose += 1;
        let session = self.session(key);
        let event = Event::CutLoose {
            client_id: session.client_id.clone(),
            reason,
            disconnected,
            queued: session.queue.len(),
            bytes: session.held_bytes(),
        };
        self.events.push_back(event);
    }

    /// Closes the connections of subscribers cut loose during the last input (MQTT 5:
    /// DISCONNECT 0x97 Quota exceeded).
    pub(super) fn close_cut_loose(&mut self, now: Time) {
        while let Some((id, reason)) = self.flow.to_close.pop() {
            self.close(
                id,
                CloseReason::CutLoose(reason),
                Some(ReasonCode::QuotaExceeded),
                now,
            );
        }
    }

    /// When `key`, congested, stalls if it makes no progress from now on.
    fn stall_deadline(&self, key: SessionKey, now: Time) -> Time {
        let progress = self.progress_at(key).unwrap_or(now);
        progress.plus_millis(self.config.limits.stall_timeout_millis)
    }

    /// The last sign of progress of congested `key`: an acknowledgement, a PUBLISH taken for
    /// writing (as last seen), or the start of its congestion.
    fn progress_at(&self, key: SessionKey) -> Option<Time> {
        let congestion = self.flow.congested.get(&key)?;
        let acked = self.session(key).acked_at;
        Some(acked.max(congestion.since).max(congestion.taken_at))
    }

    /// Cuts loose every congested subscriber that has made no progress for the stall timeout.
    /// Runs with the timers (at least every 250 ms in the runtime).
    pub(super) fn check_stalls(&mut self, now: Time) {
        if self.flow.congested.is_empty() {
            self.flow.next_stall_check = None;
            return;
        }
        let mut stalled = Vec::new();
        let mut next: Option<Time> = None;
        let keys: Vec<SessionKey> = self.flow.congested.keys().copied().collect();
        for key in keys {
            let taken = self
                .session(key)
                .connection
                .and_then(|id| self.connections.get(&id))
                .map(|c| c.publishes_taken);
            if let (Some(taken), Some(congestion)) = (taken, self.flow.congested.get_mut(&key)) {
                if taken != congestion.taken_seen {
                    congestion.taken_seen = taken;
                    congestion.taken_at = now;
                }
            }
            let due = self.stall_deadline(key, now);
            if now >= due {
                stalled.push(key);
            } else {
                next = Some(next.map_or(due, |at| at.min(due)));
            }
        }
        self.flow.next_stall_check = next;
        // In key order, so a run replays the same way.
        stalled.sort_unstable();
        for key in stalled {
            self.cut_loose(key, CutReason::Stalled, now);
        }
    }

    /// The earliest time [`Broker::handle_timeout`] may find a stalled subscriber.
    pub(super) fn next_stall_check(&self) -> Option<Time> {
        self.flow.next_stall_check
    }

    /// The flow-control gauges and totals; with `now`, spans still running count up to it.
    pub(super) fn flow_stats(&self, now: Option<Time>) -> FlowStats {
        let running =
            |since: Time| now.map_or(0, |now| now.as_millis().saturating_sub(since.as_millis()));
        let held_running: u64 = self.flow.held.values().map(|h| running(h.since)).sum();
        let paused_running: u64 = self
            .flow
            .held
            .values()
            .filter_map(|h| h.paused_since)
            .map(running)
            .sum();
        FlowStats {
            congested: self.flow.congested.len() as u64,
            held: self.flow.held.len() as u64,
            paused: self.flow.paused as u64,
            held_millis: self.flow.held_millis + held_running,
            paused_millis: self.flow.paused_millis + paused_running,
        }
    }
}

/// What flow control adds to [`crate::Stats`].
#[derive(Debug, Clone, Copy)]
pub(super) struct FlowStats {
    pub(super) congested: u64,
    pub(super) held: u64,
    pub(super) paused: u64,
    pub(super) held_millis: u64,
    pub(super) paused_millis: u64,
}

impl Broker {
    /// Counts a PUBLISH against the client's rate limit (a fixed one-second window); false once
    /// the limit is exceeded.
    pub(super) fn within_publish_rate(&mut self, id: ConnectionId, now: Time) -> bool {
        let limit = self.config.limits.publish_rate_per_client_max;
        let Some(connection) = self.connections.get_mut(&id) else {
            return true;
        };
        if limit == 0 {
            return true;
        }
        let elapsed = now
            .as_millis()
            .saturating_sub(connection.publish_window_start.as_millis());
        if elapsed >= 1000 {
            connection.publish_window_start = now;
            connection.publish_window_count = 0;
        }
        connection.publish_window_count = connection.publish_window_count.saturating_add(1);
        connection.publish_window_count <= limit
    }
}
