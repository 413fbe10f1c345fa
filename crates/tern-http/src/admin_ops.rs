//! The operator API's side on the broker thread: each operation reads or changes the core
//! through its operator interface (`tern_core::broker::admin`) in one input, and is worded as
//! JSON there. What a token may see is chosen here too (its realm's client prefix), so
//! nothing outside it leaves the broker thread.

use serde::Serialize;
use tern_codec::{MqttString, SubscriptionIds, TopicName};
use tern_core::auth::SessionOwner;
use tern_core::broker::admin::SessionSummary;
use tern_core::broker::mailbox::MailboxMessage;
use tern_core::session::Delivery;
use tern_core::{Broker, SharedMessage, Time};
use tokio::sync::oneshot;

use crate::answers::{json, refused};
use crate::error::ApiError;
use crate::mailbox::{message, MboxMessage};
use crate::realm::Realm;
use crate::replay::Answer;

/// An operator's request on its way to the broker thread.
#[derive(Debug)]
pub(crate) struct OperatorEnvelope {
    pub(crate) op: AdminOp,
    pub(crate) reply: oneshot::Sender<Answer>,
}

/// What an operator asks of the broker. `realm` is the token's (`realm.rs`).
#[derive(Debug)]
pub(crate) enum AdminOp {
    /// Sessions (or only connected clients) in the realm.
    Sessions { realm: Realm, connected: bool },
    /// One session in detail.
    Session {
        realm: Realm,
        client_id: String,
        limit: usize,
    },
    /// Every subscription in the realm (of one client, with `client_id`).
    Subscriptions {
        realm: Realm,
        client_id: Option<String>,
    },
    /// Close a client's connection; with `discard`, end its session too.
    Kick {
        realm: Realm,
        client_id: String,
        discard: bool,
    },
    /// Retained messages matching a filter (already checked against the realm's topics).
    Retained { filter: String, limit: usize },
    /// Delete a retained message (its topic checked against the realm's topics).
    RetainedDelete { topic: String },
    /// The bans in force.
    Bans,
    /// Ban a client identifier, until a Unix time or for ever.
    Ban {
        client_id: String,
        until_unix: Option<u64>,
    },
    /// Lift a ban.
    Unban { client_id: String },
    /// Look at or change the device fleet's registry, within a realm.
    Fleet(Realm, crate::admin_fleet::FleetOp),
    /// Read the fleet as `/v1/fleet` shows it, within a realm.
    FleetQuery(Realm, crate::fleet_api::FleetQuery),
    /// Look at or change the firmware catalogue.
    Firmware(crate::admin_firmware::FirmwareOp),
    /// Publish a message as an operator (the console's publish form).
    Publish(crate::console_publish::OperatorPublish),
    /// Look at or answer the fleet's actionable notifications.
    Notify(crate::fleet_notify::NotifyOp),
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SessionView {
    client_id: String,
    /// The identity the session belongs to, as the log names it (`password:alice`,
    /// `fleet-device:acme/d1`); absent for unverified clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    /// The same identity in its parts; absent for unverified clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<IdentityView>,
    connected: bool,
    /// 3, 4 or 5 (MQTT 3.1, 3.1.1, 5).
    protocol: u8,
    /// Seconds the session outlives its connection (4294967295: for ever).
    expiry_secs: u32,
    subscriptions: usize,
    queued: usize,
    inflight: usize,
    dead: usize,
}

/// Who a session belongs to: how it was proved (`password`, `jwt`, `certificate`, `device`,
/// `http`, `fleet-device`, `fleet-owner`), the owner (a device's), and the name.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct IdentityView {
    method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    name: String,
}

impl IdentityView {
    fn of(stored: &str) -> Option<Self> {
        let (method, owner, name) = SessionOwner::parts_of(stored)?;
        Some(Self {
            method: method.to_owned(),
            owner: (!owner.is_empty()).then(|| owner.to_owned()),
            name: name.to_owned(),
        })
    }

    /// As the log words an identity (`tern_core::auth::Identity::describe`).
    fn described(&self) -> String {
        tern_core::auth::describe(&self.method, self.owner.as_deref(), &self.name)
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SubscriptionView {
    client_id: String,
    filter: String,
    qos: u8,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SessionDetailView {
    #[serde(flatten)]
    session: SessionView,
    subscription_list: Vec<SubscriptionView>,
    /// Queued messages, oldest first (`seq` their place in the mailbox).
    queue: Vec<MboxMessage>,
    /// In-flight messages (sent or handed out, not acknowledged).
    inflight_messages: Vec<MboxMessage>,
    /// Dead letters, oldest first.
    dead_letters: Vec<MboxMessage>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct BanView {
    client_id: String,
    /// When the ban ends (Unix seconds); for ever when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<u64>,
}

/// Does `op` in the core at `now` (`now_unix`: the same instant by the system clock).
pub(crate) fn apply(
    broker: &mut Broker,
    op: &AdminOp,
    edge: tern_core::ConnectionId,
    now: Time,
    now_unix: u64,
) -> Answer {
    let in_realm =
        |realm: &Realm, broker: &Broker, id: &str| realm.holds_client(broker.fleet(), id);
    let no_session = || {
        refused(&ApiError::new(
            404,
            "no_session",
            "no session of that client identifier",
        ))
    };
    match op {
        AdminOp::Sessions { realm, connected } => {
            let sessions: Vec<SessionView> = broker
                .admin_sessions(|id| in_realm(realm, broker, id))
                .into_iter()
                .filter(|s| !connected || s.connected)
                .map(view)
                .collect();
            let key = if *connected { "clients" } else { "sessions" };
            json(200, &serde_json::json!({ key: sessions }))
        }
        AdminOp::Session {
            realm,
            client_id,
            limit,
        } => {
            let detail = in_realm(realm, broker, client_id)
                .then(|| broker.admin_session(client_id, *limit))
                .flatten();
            let Some(detail) = detail else {
                return no_session();
            };
            let listed = |deliveries: &[Delivery]| -> Vec<MboxMessage> {
                deliveries.iter().map(|d| listed(d, now)).collect()
            };
            let subscription_list = detail
                .subscriptions
                .iter()
                .map(|(filter, qos)| SubscriptionView {
                    client_id: client_id.clone(),
                    filter: filter.clone(),
                    qos: *qos as u8,
                })
                .collect();
            json(
                200,
                &SessionDetailView {
                    subscription_list,
                    queue: listed(&detail.queue),
                    inflight_messages: listed(&detail.inflight),
                    dead_letters: listed(&detail.dead),
                    session: view(detail.summary),
                },
            )
        }
        AdminOp::Subscriptions { realm, client_id } => {
            let ids: Vec<String> = broker
                .admin_sessions(|id| in_realm(realm, broker, id))
                .into_iter()
                .map(|s| s.client_id)
                .filter(|id| client_id.as_ref().is_none_or(|wanted| wanted == id))
                .collect();
            let mut subscriptions = Vec::new();
            for id in ids {
                let Some(detail) = broker.admin_session(&id, 0) else {
                    continue;
                };
                for (filter, qos) in detail.subscriptions {
                    subscriptions.push(SubscriptionView {
                        client_id: id.clone(),
                        filter,
                        qos: qos as u8,
                    });
                }
            }
            json(200, &serde_json::json!({ "subscriptions": subscriptions }))
        }
        AdminOp::Kick {
            realm,
            client_id,
            discard,
        } => {
            if !in_realm(realm, broker, client_id) || !broker.admin_kick(client_id, *discard, now) {
                return no_session();
            }
            json(
                200,
                &serde_json::json!({"client_id": client_id, "discarded": discard}),
            )
        }
        AdminOp::Retained { filter, limit } => {
            let messages: Vec<MboxMessage> = broker
                .admin_retained(filter, *limit)
                .into_iter()
                .map(|m| retained(m, now))
                .collect();
            json(200, &serde_json::json!({ "retained": messages }))
        }
        AdminOp::RetainedDelete { topic } => {
            let deleted = topic
                .parse::<TopicName>()
                .is_ok_and(|name| broker.admin_retained_delete(&name));
            if !deleted {
                return refused(&ApiError::new(
                    404,
                    "no_retained",
                    "no retained message on that topic",
                ));
            }
            json(200, &serde_json::json!({"topic": topic, "deleted": true}))
        }
        AdminOp::Bans => json(200, &bans(broker, now, now_unix)),
        AdminOp::Ban {
            client_id,
            until_unix,
        } => {
            let Ok(id) = MqttString::new(client_id) else {
                return refused(&ApiError::bad_request("not a client identifier"));
            };
            if until_unix.is_some_and(|until| until <= now_unix) {
                return refused(&ApiError::bad_request("the ban would have ended already"));
            }
            // Saturating: a ban until the far future is a ban for ever, not an overflow.
            let until =
                until_unix.map(|until| now.plus_millis((until - now_unix).saturating_mul(1000)));
            broker.ban(id, until, now);
            json(200, &bans(broker, now, now_unix))
        }
        AdminOp::Unban { client_id } => {
            if !broker.unban(client_id) {
                return refused(&ApiError::new(
                    404,
                    "not_banned",
                    "that client is not banned",
                ));
            }
            json(200, &bans(broker, now, now_unix))
        }
        AdminOp::Fleet(realm, op) => crate::admin_fleet::apply(broker, realm, op, now, now_unix),
        AdminOp::FleetQuery(realm, query) => {
            crate::fleet_api::apply(broker, realm, query, now, now_unix)
        }
        AdminOp::Firmware(op) => crate::admin_firmware::apply(broker, op, now_unix),
        AdminOp::Publish(publish) => crate::console_publish::apply(broker, edge, publish, now),
        AdminOp::Notify(op) => crate::fleet_notify::apply(broker, op, now, now_unix),
    }
}

/// The bans in force, as listed (and kept in the bans file).
fn bans(broker: &mut Broker, now: Time, now_unix: u64) -> serde_json::Value {
    let bans: Vec<BanView> = broker
        .bans(now)
        .into_iter()
        .map(|(client_id, until)| BanView {
            client_id,
            until: until.map(|at| {
                now_unix + (at.as_millis().saturating_sub(now.as_millis())).div_ceil(1000)
            }),
        })
        .collect();
    serde_json::json!({ "banned": bans })
}

pub(crate) fn view(summary: SessionSummary) -> SessionView {
    let identity = summary.owner.as_deref().and_then(IdentityView::of);
    SessionView {
        client_id: summary.client_id,
        owner: identity.as_ref().map(IdentityView::described),
        identity,
        connected: summary.connected,
        protocol: summary.version.level(),
        expiry_secs: summary.expiry_secs,
        subscriptions: summary.subscriptions,
        queued: summary.queued,
        inflight: summary.inflight,
        dead: summary.dead,
    }
}

/// A delivery as listed: as a poll words it, not handed out.
fn listed(delivery: &Delivery, now: Time) -> MboxMessage {
    message(&MailboxMessage {
        expires_in: delivery.message.expires_at.map(|at| now.secs_until(at)),
        delivery: delivery.clone(),
        deliveries: 0,
    })
}

fn retained(message: SharedMessage, now: Time) -> MboxMessage {
    view_of(message, true, now)
}

/// A message as routed (for event streams), worded as a poll words it.
pub(crate) fn message_view(message: &SharedMessage, now: Time) -> MboxMessage {
    view_of(SharedMessage::clone(message), message.retain, now)
}

fn view_of(message: SharedMessage, retain: bool, now: Time) -> MboxMessage {
    let delivery = Delivery {
        seq: 0,
        qos: message.qos,
        retain,
        subscription_ids: SubscriptionIds::new(),
        charge: 0,
        message,
    };
    listed(&delivery, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_until_the_far_future_is_kept_not_an_overflow() {
        let now = Time::from_millis(1_000);
        let mut broker = Broker::new(tern_core::Config::default(), now);
        let op = AdminOp::Ban {
            client_id: "c".to_owned(),
            until_unix: Some(1 << 63),
        };
        let edge = tern_core::ConnectionId(1);
        assert_eq!(
            apply(&mut broker, &op, edge, now, 1_767_225_600).status,
            200
        );
        assert_eq!(broker.bans(now).len(), 1);
    }
}
