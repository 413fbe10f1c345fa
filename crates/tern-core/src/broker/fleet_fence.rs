//! The device fleet's namespaces are closed to every identity that is not of the fleet: a
//! client let in by another method (a password, a token, a key that is not a fleet device's,
//! or none at all) neither publishes into `<prefix><owner>/...` or `$events/<owner>/...` of a
//! registered owner nor receives anything from there, retained or live, through any filter
//! (`#`, `+/#`, `$share/g/#`, `$tree/#`), unless configured ACL rules speak for it (an
//! operator's monitoring client granted by rule): then the rules decide, as anywhere else.
//! A topic is in a fleet namespace when its owner level names a registered owner: one lookup
//! per message, whatever the number of owners, and only the matches of such a message are
//! looked at.

use rustc_hash::FxHashMap;
use tern_codec::MqttString;

use super::request::RequestClient;
use super::Broker;
use crate::auth::{Identity, Method};
use crate::authz::{Access, Permissions};
use crate::connection::Connection;
use crate::fleet::DeviceCredential;
use crate::session::Session;
use crate::tree::Match;
use crate::tree_view::Changes;
use crate::types::{ConnectionId, SessionKey};

/// Whether a client with these permissions and identity is kept out of the fleet's
/// namespaces: not a fleet identity (whose permissions follow from the registry), and no
/// configured rules speak for it.
pub(super) fn fenced(permissions: Option<&dyn Permissions>, identity: Option<&Identity>) -> bool {
    let by_rules = permissions.is_some_and(|permissions| permissions.opens_fleet());
    let fleet =
        identity.is_some_and(|i| matches!(i.method, Method::FleetDevice | Method::FleetOwner));
    !by_rules && !fleet
}

/// Whether `session` is kept out: by its connection's permissions, or, without a connection,
/// by the identity it belongs to and what the rules gave its last connection.
pub(super) fn session_fenced(
    session: &Session,
    connections: &FxHashMap<ConnectionId, Box<Connection>>,
) -> bool {
    match session.connection {
        Some(id) => connections.get(&id).is_none_or(|connection| {
            fenced(
                connection.permissions.as_deref(),
                connection.identity.as_deref(),
            )
        }),
        None => !session.owner.is_fleet() && !session.fleet_opened,
    }
}

impl Broker {
    /// Whether `topic` (a name, or a filter whose owner level is not a wildcard) lies in a
    /// registered owner's namespace.
    pub(super) fn fleet_closes(&self, topic: &str) -> bool {
        self.fleet.closes(&self.config.fleet, topic)
    }

    /// Whether connection `id` is kept out of the fleet's namespaces: not a fleet identity, and
    /// no configured rules speak for it.
    pub(super) fn fleet_fenced(&self, id: ConnectionId) -> bool {
        self.connections.get(&id).is_none_or(|connection| {
            fenced(
                connection.permissions.as_deref(),
                connection.identity.as_deref(),
            )
        })
    }

    /// Whether the session of `key` is kept out: by its connection's permissions, or, without
    /// a connection, by the identity it belongs to (an offline session keeps nothing of the
    /// fleet unless it is a fleet identity's, or rules opened the fleet to its last
    /// connection).
    pub(super) fn session_fleet_fenced(&self, key: SessionKey) -> bool {
        session_fenced(self.session(key), &self.connections)
    }

    /// Drops from a message's `matches` the subscriptions kept out of its fleet namespace, when
    /// `fleet_closes` (its topic lies in one: looked up once per message by the caller). A tree
    /// view's match stays: its delta is shared among its members, and each member kept out is
    /// sent it without the fleet's topics when it goes out ([`Broker::outside_fleet`]).
    pub(super) fn fence_matches(&self, fleet_closes: bool, matches: &mut Vec<Match<SessionKey>>) {
        if matches.is_empty() || !fleet_closes {
            return;
        }
        matches.retain(|m| m.info.tree_view.is_some() || !self.session_fleet_fenced(m.key));
    }

    /// The changes of a tree view's delta that lie outside the fleet's namespaces, when any
    /// lies inside (`None`: the delta is the same for every member).
    pub(super) fn outside_fleet(&self, changes: &Changes) -> Option<Changes> {
        if self.fleet.is_empty() || !changes.by_topic.keys().any(|t| self.fleet_closes(t)) {
            return None;
        }
        Some(changes.only(|topic| !self.fleet_closes(topic)))
    }

    /// The identity requests act as: a key of the HTTP bridge that speaks for a registered
    /// device of that credential (`d:UDID`, its name the udid) is that device, as when it logs
    /// in over MQTT with the key; with whether the device is disabled.
    pub(super) fn fleet_request_identity(
        &self,
        client_id: &MqttString,
        identity: Identity,
    ) -> (Identity, bool) {
        let device = self.fleet.device(client_id.as_str()).filter(|device| {
            identity.method == Method::HttpKey
                && identity.username.as_deref() == Some(device.udid.as_str())
                && device.credential == DeviceCredential::HttpKey
        });
        match device {
            Some(device) => {
                let fleet = Identity {
                    method: Method::FleetDevice,
                    username: Some(device.udid.clone()),
                    owner: Some(device.owner.clone()),
                    ..identity
                };
                (fleet, device.disabled)
            }
            None => (identity, false),
        }
    }

    /// [`RequestClient::allows`], with the fleet's namespaces closed to a client kept out of
    /// them: the check every request makes per topic.
    pub(super) fn request_allows(
        &self,
        client: &RequestClient,
        access: Access,
        topic: &str,
    ) -> bool {
        let inner = super::access::inner_filter(topic);
        if client.fleet_fenced() && self.fleet_closes(inner) {
            return false;
        }
        client.allows(access, topic)
    }
}
