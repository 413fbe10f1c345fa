//! The authorisation hook. When a client is let in, an [`Authorizer`] compiles what it may do
//! into [`Permissions`] kept with the connection; the core asks them for every PUBLISH topic,
//! every SUBSCRIBE filter and the will topic at CONNECT. Compiling once per connection keeps
//! the per-message check free of string formatting.

use std::fmt;

use tern_codec::MqttString;

use crate::auth::Identity;
use crate::types::ConnectionId;

/// What a client asks to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Publish to a topic name (PUBLISH, the will).
    Publish,
    /// Subscribe with a topic filter.
    Subscribe,
}

/// The client an authorizer compiles rules for.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    /// The connection.
    pub connection: ConnectionId,
    /// Its client identifier (assigned, if it sent none): `%c` in rules.
    pub client_id: &'a MqttString,
    /// Who the authenticator found it to be.
    pub identity: &'a Identity,
    /// The authentication profile of its listener.
    pub profile: usize,
}

/// What one connection may do, compiled when it connects.
pub trait Permissions: fmt::Debug {
    /// Whether the client may publish to `topic` (a topic name), or subscribe with `topic` (a
    /// topic filter, without any `$share/group/` prefix).
    fn allows(&self, access: Access, topic: &str) -> bool;

    /// Whether these permissions may open the device fleet's namespaces to a client that is
    /// not of the fleet: true for rules an operator configured, which then decide as anywhere
    /// else; false for permissions that only narrow an open broker (a credential's own topic
    /// restriction), under which the fleet's namespaces stay closed to such a client.
    fn opens_fleet(&self) -> bool {
        true
    }
}

/// Compiles a connection's [`Permissions`].
pub trait Authorizer: fmt::Debug {
    /// The client was authenticated: what may it do? `None` means everything.
    fn permissions(&mut self, principal: &Principal<'_>) -> Option<Box<dyn Permissions>>;
}

/// Allows everything: the default until rules are configured.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn permissions(&mut self, _principal: &Principal<'_>) -> Option<Box<dyn Permissions>> {
        None
    }
}
