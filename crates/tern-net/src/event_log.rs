//! What the broker thread logs of the core's events: one line per event, and an allowance per
//! second for the kinds a misbehaving client could flood the log with.

use std::cell::Cell;

use tern_core::{Access, CloseReason, CutReason, DropReason, Event, Throttled, Time};
use tracing::{debug, info, warn};

/// Denials (and refused connections) logged per second at most; the rest are counted and
/// summed up in one line.
const DENIALS_LOGGED_PER_SEC: u32 = 20;

/// A per-second allowance of log lines.
#[derive(Default)]
pub(crate) struct LogBudget {
    /// What the lines are about, for the summing-up line.
    what: &'static str,
    second: Cell<u64>,
    logged: Cell<u32>,
    suppressed: Cell<u64>,
}

impl LogBudget {
    pub(crate) fn new(what: &'static str) -> Self {
        Self {
            what,
            ..Self::default()
        }
    }

    /// Whether one more line may be logged at `now`.
    pub(crate) fn admit(&self, now: Time) -> bool {
        let second = now.as_millis() / 1000;
        if second != self.second.get() {
            self.second.set(second);
            self.logged.set(0);
            let suppressed = self.suppressed.replace(0);
            if suppressed > 0 {
                warn!(
                    "{suppressed} more {} not logged (limit {DENIALS_LOGGED_PER_SEC}/s)",
                    self.what
                );
            }
        }
        if self.logged.get() >= DENIALS_LOGGED_PER_SEC {
            self.suppressed.set(self.suppressed.get() + 1);
            return false;
        }
        self.logged.set(self.logged.get() + 1);
        true
    }
}

pub(crate) fn log_event(event: &Event) {
    match event {
        Event::Connected {
            connection,
            client_id,
            version,
            session_present,
        } => {
            info!(
                conn = connection.0,
                "client {client_id:?} connected ({version:?}, session present: {session_present})"
            );
        }
        Event::Refused { connection, reason } => {
            warn!(
                conn = connection.0,
                "connection refused: {}",
                describe(reason)
            );
        }
        Event::Disconnected {
            connection,
            client_id,
            reason,
            will_triggered,
        } => {
            info!(
                conn = connection.0,
                "client {client_id:?} disconnected: {} (will triggered: {will_triggered})",
                describe(reason)
            );
        }
        Event::SessionEnded { client_id } => debug!("session of {client_id:?} ended"),
        Event::Denied {
            connection,
            client_id,
            access,
            topic,
        } => {
            let what = match access {
                Access::Publish => "publish to",
                Access::Subscribe => "subscribe to",
            };
            warn!(
                conn = connection.0,
                "client {client_id:?} denied: {what} {topic:?}"
            );
        }
        Event::SessionRefused {
            connection,
            client_id,
            identity,
        } => warn!(
            conn = connection.0,
            "CONNECT as {identity} refused: the session of client {client_id:?} belongs to \
             another identity"
        ),
        // A QoS 1/2 message lost to a full session queue breaks the delivery promise the
        // publisher's acknowledgement implied; the other reasons are expected (expiry, QoS 0).
        Event::Dropped {
            client_id,
            reason: DropReason::QueueFull,
        } => warn!("QoS 1/2 message for {client_id:?} dropped: its session queue is full"),
        Event::Dropped {
            client_id,
            reason: DropReason::MailboxFull,
        } => warn!(
            "message for {client_id:?} dropped: its mailbox is full (the oldest QoS 0 message \
             goes first, then new messages are refused)"
        ),
        // QoS 0 messages go first when the broker reaches its memory limit; then the QoS 1/2
        // messages of the largest consumer.
        Event::Dropped {
            client_id,
            reason: DropReason::MemoryFull,
        } => warn!("message for {client_id:?} dropped: the broker is at its memory limit"),
        Event::Shed {
            client_id,
            bytes,
            messages,
        } => warn!(
            "client {client_id:?} cut loose at the broker's memory limit: its messages took \
             the most memory ({bytes} bytes); {messages} messages dropped"
        ),
        Event::CutLoose {
            client_id,
            reason,
            disconnected,
            queued,
            bytes,
        } => {
            let policy = match disconnected {
                true => "disconnected",
                false => "its newest messages are dropped until it catches up",
            };
            warn!(
                "subscriber {client_id:?} cut loose ({}): {policy}; {queued} messages \
                 ({bytes} bytes) were waiting for it, and its publishers are no longer held",
                describe_cut(*reason)
            );
        }
        Event::Dropped { client_id, reason } => {
            debug!("message for {client_id:?} dropped: {reason:?}")
        }
        Event::PublishRefused {
            client_id,
            topic,
            reason,
            detail,
        } => {
            warn!("publish from {client_id:?} to {topic:?} refused ({reason:?}): {detail}")
        }
        Event::FleetFlapping {
            owner,
            udid,
            connects,
        } => warn!(
            "device {owner}/{udid} is flapping: {connects} connects within a minute (flagged \
             in its status; its reconnects are not logged one by one)"
        ),
        Event::FleetChanged {
            owner,
            udid,
            change,
        } => debug!("device {owner}/{udid}: {}", change.as_str()),
        Event::FleetNotification {
            notification,
            change,
        } => info!(
            "notification {:?} of device {}/{} {change} ({})",
            notification.nid,
            notification.owner,
            notification.udid,
            notification.direction.word()
        ),
        Event::FleetNotifyRefused {
            client_id,
            udid,
            reason,
        } => warn!("notification from {client_id:?} for device {udid:?} refused: {reason}"),
        Event::RetainedCapped {
            client_id,
            filter,
            max,
        } => warn!(
            "subscription of {client_id:?} to {filter:?} gets only {max} of its retained \
             messages (limits.retained_per_subscription_max)"
        ),
    }
}

/// Why a connection ended (or was refused), in words, as the log says it.
pub fn describe(reason: &CloseReason) -> String {
    match reason {
        CloseReason::ClientDisconnect => "client sent DISCONNECT".to_owned(),
        CloseReason::ClientDisconnectWithWill => "client sent DISCONNECT with will".to_owned(),
        CloseReason::ClientError(code) => format!("client sent DISCONNECT with {code:?}"),
        CloseReason::ProtocolViolation(code, detail) => {
            format!("protocol violation ({code:?}): {detail}")
        }
        CloseReason::Malformed(error) => format!("bad packet: {error}"),
        CloseReason::KeepAliveTimeout => "keep alive timed out".to_owned(),
        CloseReason::CredentialExpired => "its credential (token) expired".to_owned(),
        CloseReason::SessionTakenOver => "session taken over by a new connection".to_owned(),
        CloseReason::ConnectTimeout => "no CONNECT in time".to_owned(),
        CloseReason::ConnectionLost => "connection lost".to_owned(),
        CloseReason::ServerShutdown => "server shutting down".to_owned(),
        CloseReason::AdministrativeAction => "closed by an operator".to_owned(),
        CloseReason::MemoryLimit => {
            "the broker reached its memory limit and this client held the most".to_owned()
        }
        CloseReason::CutLoose(reason) => {
            format!("cut loose as a subscriber ({})", describe_cut(*reason))
        }
        CloseReason::ConnectRefused(code) => format!("CONNECT refused with {code:?}"),
        CloseReason::FleetRefused(why) => format!("CONNECT refused with NotAuthorized: {why}"),
        CloseReason::AuthQueueFull => {
            "server busy: the queue of credential checks is full (limits.auth_checks_queued_max)"
                .to_owned()
        }
        CloseReason::LoginThrottled(Throttled::Address {
            address,
            retry_after_secs,
        }) => format!(
            "login throttled: too many failed logins from {address}, blocked for \
             {retry_after_secs} s more"
        ),
        CloseReason::LoginThrottled(Throttled::User { retry_after_secs }) => format!(
            "login throttled: too many failed logins for this user name, blocked for \
             {retry_after_secs} s more"
        ),
        CloseReason::ClusterUnavailable => {
            "server unavailable: this node cannot reach the cluster (NATS)".to_owned()
        }
    }
}

/// Why a subscriber was cut loose, for the log.
fn describe_cut(reason: CutReason) -> &'static str {
    match reason {
        CutReason::Stalled => {
            "it held its publishers back and made no progress for the stall timeout"
        }
        CutReason::SocketStalled => "its socket took nothing for the stall timeout",
        CutReason::OverBudget => "its queue grew past twice queued_bytes_max",
    }
}
