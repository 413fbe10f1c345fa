//! Guarding the slow credential checks: the queue of checks waiting for the runtime is bounded
//! (past it a CONNECT is refused with Server busy), the check of a connection that closed
//! before its turn is dropped unrun, and failed logins are throttled per source address and per
//! user name ([`crate::throttle`]), before a CONNECT reaches the authenticator and again before
//! its queued check is handed out.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use tern_codec::{Connect, ProtocolVersion, ReasonCode};

use super::Broker;
use crate::auth::AuthJob;
use crate::connection::Phase;
use crate::events::CloseReason;
use crate::throttle::Throttled;
use crate::types::{ConnectionId, Time};

/// Checks waiting for the runtime, by connection, in the order they came.
#[derive(Debug, Default)]
pub(super) struct AuthQueue {
    jobs: FxHashMap<ConnectionId, AuthJob>,
    /// Arrival order; may name connections whose job was dropped, skipped when popped.
    order: VecDeque<ConnectionId>,
}

impl AuthQueue {
    fn len(&self) -> usize {
        self.jobs.len()
    }

    fn push(&mut self, id: ConnectionId, job: AuthJob) {
        self.jobs.insert(id, job);
        self.order.push_back(id);
    }

    fn pop(&mut self) -> Option<(ConnectionId, AuthJob)> {
        while let Some(id) = self.order.pop_front() {
            if let Some(job) = self.jobs.remove(&id) {
                return Some((id, job));
            }
        }
        None
    }

    /// Drops the waiting job of `id`; returns whether there was one.
    fn remove(&mut self, id: ConnectionId) -> bool {
        if self.jobs.remove(&id).is_none() {
            return false;
        }
        // The order keeps the id until popped; it is compacted once mostly stale, so a flood
        // of connections that close while waiting costs a bounded amount of memory.
        if self.order.len() > 2 * self.jobs.len() + 64 {
            let jobs = &self.jobs;
            self.order.retain(|id| jobs.contains_key(id));
        }
        true
    }
}

impl Broker {
    /// Parks a CONNECT whose credentials need a slow check, or refuses it with Server busy
    /// (3.1.1: 0x03 Server unavailable) when `auth_checks_queued_max` checks already wait.
    pub(super) fn queue_auth_check(
        &mut self,
        id: ConnectionId,
        connect: Connect,
        job: AuthJob,
        now: Time,
    ) {
        let version = connect.protocol_version;
        if self.auth_queue.len() >= self.config.limits.auth_checks_queued_max {
            self.stats.auth_queue_full += 1;
            let reason = CloseReason::AuthQueueFull;
            self.refuse_connect_because(id, version, ReasonCode::ServerBusy, reason, now);
            return;
        }
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        connection.version = version;
        connection.phase = Phase::Verifying;
        connection.pending_connect = Some(Box::new(connect));
        self.auth_queue.push(id, job);
    }

    /// The next slow credential check to run off the broker thread; hand its result to
    /// [`Broker::auth_finished`]. Checks whose client has been throttled since they were queued
    /// are refused here instead (Server busy), unrun.
    pub fn poll_auth_job(&mut self, now: Time) -> Option<(ConnectionId, AuthJob)> {
        while let Some((id, job)) = self.auth_queue.pop() {
            let username = self
                .connections
                .get(&id)
                .and_then(|c| c.pending_connect.as_ref())
                .and_then(|connect| connect.username.as_ref())
                .map(|name| name.as_str());
            if let Some(throttled) = self.throttle.check(self.peer_address(id), username, now) {
                drop(job);
                // The parked CONNECT set the connection's protocol level.
                let version = self
                    .connections
                    .get(&id)
                    .map_or(ProtocolVersion::V311, |c| c.version);
                self.refuse_throttled(id, version, throttled, now);
                continue;
            }
            self.stats.auth_checks_run += 1;
            return Some((id, job));
        }
        None
    }

    /// Whether a slow credential check waits to be handed out.
    pub fn has_auth_job(&self) -> bool {
        self.auth_queue.len() > 0
    }

    /// Drops the waiting check of a connection that is closing: it is never run.
    pub(super) fn drop_auth_check(&mut self, id: ConnectionId) {
        if self.auth_queue.remove(id) {
            self.stats.auth_checks_skipped += 1;
        }
    }

    /// Refuses a CONNECT at once if its address or user name is throttled; returns whether
    /// it was.
    pub(super) fn refuse_if_throttled(
        &mut self,
        id: ConnectionId,
        connect: &Connect,
        now: Time,
    ) -> bool {
        let username = connect.username.as_ref().map(|name| name.as_str());
        let Some(throttled) = self.throttle.check(self.peer_address(id), username, now) else {
            return false;
        };
        self.refuse_throttled(id, connect.protocol_version, throttled, now);
        true
    }

    /// Counts a login refused for wrong credentials against its address and user name.
    pub(super) fn login_failed(&mut self, id: ConnectionId, username: Option<&str>, now: Time) {
        let address = self.peer_address(id);
        self.throttle.failed(address, username, now);
    }

    fn refuse_throttled(
        &mut self,
        id: ConnectionId,
        version: ProtocolVersion,
        throttled: Throttled,
        now: Time,
    ) {
        self.stats.logins_throttled += 1;
        let reason = CloseReason::LoginThrottled(throttled);
        self.refuse_connect_because(id, version, ReasonCode::ServerBusy, reason, now);
    }

    fn peer_address(&self, id: ConnectionId) -> Option<std::net::IpAddr> {
        self.connections.get(&id).and_then(|c| c.info.peer_address)
    }
}
