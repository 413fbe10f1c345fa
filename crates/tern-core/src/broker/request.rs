//! Requests: what a client does without a connection of its own, through an edge that speaks
//! another protocol (the HTTP bridge). A request acts for a client identifier with a verified
//! [`Identity`], and goes through the same checks, routing and store operations as a PUBLISH
//! on a connection: the authorizer's permissions for that identity, the topic limits, the
//! retained limits, one routing path. Nothing here keeps state between requests; the session
//! of the client identifier, if there is one, is its mailbox, and belongs to its identity as
//! for an MQTT client (a request never uses another identity's session).

use tern_codec::{MqttString, Publish, ReasonCode};

use super::tree_view::Outgoing;
use super::Broker;
use crate::auth::Identity;
use crate::authz::{Access, Permissions, Principal};
use crate::events::Event;
use crate::guard::{GuardKey, GuardRecord};
use crate::store::StoreOp;
use crate::types::{ConnectionId, SessionKey, Time};

/// A client acting through requests: who it is and what it may do, compiled once (by
/// [`Broker::request_client`]) for one request or for several of the same client.
#[derive(Debug)]
pub struct RequestClient {
    /// The runtime's identifier of the edge the requests come through (named in events).
    pub(super) edge: ConnectionId,
    pub(super) client_id: MqttString,
    pub(super) identity: Identity,
    /// The authorizer's permissions for this identity and client identifier (`None`: all).
    permissions: Option<Box<dyn Permissions>>,
    /// What the credential itself is limited to (a key's grants), on top of the permissions.
    restriction: Option<Box<dyn Permissions>>,
    /// Whether an operator banned its client identifier, or disabled the fleet device it is
    /// (every request is refused).
    pub(super) banned: bool,
    /// Whether it is kept out of the device fleet's namespaces (fleet_fence.rs).
    fleet_fenced: bool,
}

impl RequestClient {
    /// The client identifier the requests act for.
    pub fn client_id(&self) -> &MqttString {
        &self.client_id
    }

    /// Who the client is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The same client with the device fleet's namespaces open to it: for an operator, whose
    /// token names the topics it may publish to and which the edge checked (the ACL rules
    /// still apply).
    pub fn opened_to_fleet(mut self) -> Self {
        self.fleet_fenced = false;
        self
    }

    /// Whether it is kept out of the device fleet's namespaces: not a fleet identity, and no
    /// configured rules speak for it.
    pub fn fleet_fenced(&self) -> bool {
        self.fleet_fenced
    }

    /// Whether the client may publish to `topic` (a name) or subscribe with it (a filter):
    /// both the authorizer's rules and the credential's own restriction must allow it.
    pub fn allows(&self, access: Access, topic: &str) -> bool {
        let allowed = |permissions: &Option<Box<dyn Permissions>>| {
            permissions
                .as_ref()
                .is_none_or(|permissions| permissions.allows(access, topic))
        };
        allowed(&self.permissions) && allowed(&self.restriction)
    }
}

/// Why a request's message was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestRefusal {
    /// The rules (or the credential's restriction) do not let the client publish there.
    NotAuthorized,
    /// The client identifier names a session of another identity.
    SessionOfAnotherIdentity,
    /// The topic name is not one a client may publish to; the detail says why.
    TopicInvalid(&'static str),
    /// The QoS is above the broker's maximum.
    QosNotSupported,
    /// The broker does not keep retained messages.
    RetainNotSupported,
    /// Keeping it retained would pass a retained limit; the detail says which.
    QuotaExceeded(&'static str),
    /// Another message of an all-or-nothing batch was refused, so this one was not published.
    NotApplied,
    /// The client identifier has no session to read (subscribe first).
    NoMailbox,
    /// The client identifier's session is connected over MQTT: it is read there.
    MailboxInUse,
    /// An operator banned the client identifier.
    Banned,
    /// Not a topic filter a mailbox may subscribe with; the detail says why.
    FilterInvalid(&'static str),
}

impl RequestRefusal {
    /// The MQTT reason code that says the same.
    pub fn reason_code(self) -> ReasonCode {
        match self {
            Self::NotAuthorized | Self::SessionOfAnotherIdentity => ReasonCode::NotAuthorized,
            Self::Banned => ReasonCode::Banned,
            Self::TopicInvalid(_) => ReasonCode::TopicNameInvalid,
            Self::QosNotSupported => ReasonCode::QosNotSupported,
            Self::RetainNotSupported => ReasonCode::RetainNotSupported,
            Self::QuotaExceeded(_) => ReasonCode::QuotaExceeded,
            Self::NotApplied | Self::NoMailbox | Self::MailboxInUse => ReasonCode::UnspecifiedError,
            Self::FilterInvalid(_) => ReasonCode::TopicFilterInvalid,
        }
    }
}

/// What became of one message of a request: the subscriptions it matched (`None` when not
/// known at once: a cluster node routes a QoS 1/2 message once the cluster has replicated it),
/// or why it was refused.
pub type RequestOutcome = Result<Option<usize>, RequestRefusal>;

impl Broker {
    /// Compiles what `identity`, acting for `client_id` through the edge `edge`, may do: the
    /// authorizer's permissions, as for a connection, narrowed by `restriction` (the
    /// credential's own limits, if it has any).
    pub fn request_client(
        &mut self,
        edge: ConnectionId,
        client_id: MqttString,
        identity: Identity,
        restriction: Option<Box<dyn Permissions>>,
    ) -> RequestClient {
        let (identity, disabled) = self.fleet_request_identity(&client_id, identity);
        let principal = Principal {
            connection: edge,
            client_id: &client_id,
            identity: &identity,
            profile: 0,
        };
        let permissions = self.authorizer.permissions(&principal);
        // Bans that ended are forgotten at each CONNECT and by `Broker::bans`, which the edge
        // calls with the time before its requests.
        let banned = disabled || self.bans.holds(client_id.as_str());
        let fleet_fenced = super::fleet_fence::fenced(permissions.as_deref(), Some(&identity));
        RequestClient {
            fleet_fenced,
            banned,
            edge,
            client_id,
            identity,
            permissions,
            restriction,
        }
    }

    /// Publishes `publishes` for `client`, in order, as PUBLISH packets of a connection would
    /// be (their packet identifiers and topic aliases are ignored). With `atomic`, every
    /// message is checked first and none is published unless all may be (their retained copies
    /// counted together). Returns, per message, the subscriptions it matched or why it was
    /// refused. The store operations it causes are polled as usual, so the edge can answer
    /// only once they are durable, as a PUBACK would be.
    pub fn publish_for(
        &mut self,
        client: &RequestClient,
        publishes: Vec<Publish>,
        atomic: bool,
        now: Time,
    ) -> Vec<RequestOutcome> {
        for publish in &publishes {
            self.stats.received(publish.qos);
        }
        let origin = match self.request_session(client) {
            Ok(origin) => origin,
            Err(refusal) => return vec![Err(refusal); publishes.len()],
        };
        let device = self.request_device(client);
        let checked: Vec<Result<Publish, RequestRefusal>> = publishes
            .into_iter()
            .map(|publish| self.check_request_publish(client, publish))
            .collect();
        if !atomic {
            return checked
                .into_iter()
                .map(|publish| {
                    let publish = publish?;
                    self.within_request_retained(client, std::slice::from_ref(&publish))?;
                    self.fleet_count_http(device, true, 1);
                    Ok(self.accept_outgoing(origin, device, Outgoing::One(publish), now))
                })
                .collect();
        }
        let refused = |outcome: &Result<Publish, RequestRefusal>| outcome.is_err();
        let mut checked = checked;
        if !checked.iter().any(refused) {
            let publishes: Vec<Publish> = checked.iter().filter_map(|p| p.clone().ok()).collect();
            if let Err(refusal) = self.within_request_retained(client, &publishes) {
                // Which message passes the limit depends on the others: each is told why.
                checked = checked.into_iter().map(|_| Err(refusal)).collect();
            }
        }
        if checked.iter().any(refused) {
            return checked
                .into_iter()
                .map(|outcome| match outcome {
                    Ok(_) => Err(RequestRefusal::NotApplied),
                    Err(refusal) => Err(refusal),
                })
                .collect();
        }
        self.fleet_count_http(device, true, checked.len() as u64);
        checked
            .into_iter()
            .flatten()
            .map(|publish| Ok(self.accept_outgoing(origin, device, Outgoing::One(publish), now)))
            .collect()
    }

    /// Hands a request guard record (a nonce spent, an exactly-once answer) to the store with
    /// the operations of this input: called in the input that applies the request, the record
    /// is durable exactly when the request's effect is. Nothing without persistence.
    pub fn record_guard(&mut self, record: GuardRecord) {
        self.persist(StoreOp::GuardSet(record));
    }

    /// Lets the store forget a request guard record that expired.
    pub fn forget_guard(&mut self, key: GuardKey) {
        self.persist(StoreOp::GuardForget(key));
    }

    /// The session of the client's identifier, if it has one (the origin of its messages, for
    /// No Local); a session of another identity refuses the request.
    pub(super) fn request_session(
        &self,
        client: &RequestClient,
    ) -> Result<Option<SessionKey>, RequestRefusal> {
        if client.banned {
            return Err(RequestRefusal::Banned);
        }
        let Some(&key) = self.session_ids.get(&client.client_id) else {
            return Ok(None);
        };
        if self.session(key).owner == client.identity.session_owner() {
            Ok(Some(key))
        } else {
            Err(RequestRefusal::SessionOfAnotherIdentity)
        }
    }

    /// The checks a PUBLISH from a connection gets before it is routed, but the retained limits.
    fn check_request_publish(
        &mut self,
        client: &RequestClient,
        mut publish: Publish,
    ) -> Result<Publish, RequestRefusal> {
        publish.packet_id = None;
        publish.dup = false;
        publish.properties.topic_alias = None;
        let limits = &self.config.limits;
        if publish.qos > limits.qos_max {
            return Err(RequestRefusal::QosNotSupported);
        }
        if publish.retain && !limits.retain_available {
            return Err(RequestRefusal::RetainNotSupported);
        }
        if publish.topic.is_empty() {
            return Err(RequestRefusal::TopicInvalid("empty topic name"));
        }
        // `$` topics are the broker's (`$SYS`) or need a connection's exchange (`$tree/`).
        if publish.topic.is_dollar() {
            return Err(RequestRefusal::TopicInvalid(
                "topic names beginning with $ are reserved",
            ));
        }
        self.check_topic(&publish.topic)
            .map_err(RequestRefusal::TopicInvalid)?;
        if !self.request_allows(client, Access::Publish, &publish.topic) {
            self.stats.publish_denied += 1;
            self.events.push_back(Event::Denied {
                connection: client.edge,
                client_id: client.client_id.clone(),
                access: Access::Publish,
                topic: publish.topic.as_str().to_owned(),
            });
            return Err(RequestRefusal::NotAuthorized);
        }
        Ok(publish)
    }

    /// The retained limits for the retained copies of `publishes`, counted together.
    fn within_request_retained(
        &mut self,
        client: &RequestClient,
        publishes: &[Publish],
    ) -> Result<(), RequestRefusal> {
        let Err(limit) = self.retained_room(publishes) else {
            return Ok(());
        };
        let topic = publishes
            .iter()
            .find(|publish| publish.retain)
            .unwrap_or(&publishes[0])
            .topic
            .clone();
        self.retained_refused_for(client.client_id.clone(), topic, limit);
        Err(RequestRefusal::QuotaExceeded(limit.detail()))
    }
}
