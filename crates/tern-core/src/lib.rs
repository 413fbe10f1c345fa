//! Tern's broker core: MQTT 3.1.1 and 5.0 server behaviour as a deterministic state machine.
//!
//! The core owns sessions, the subscription index, retained messages, QoS flows, wills and
//! expiry. It takes packets and the current time, and gives back packets to write, connections
//! to wake and events; it never touches sockets, clocks or threads (the runtime in the `tern`
//! binary does), so every behaviour is tested by calling it directly.
//!
//! # Layout
//! - [`broker`]: the state machine and its handlers (connect, publish, subscribe, lifecycle).
//! - [`session`], [`connection`]: per-session and per-connection state; [`alias`]: the topic
//!   aliases the broker sets towards a client.
//! - [`tree`], [`retained`]: the subscription index and the retained-message trie.
//! - [`tree_view`]: `$tree/` subscriptions and publishes (JSON trees of many topics).
//! - [`auth`]: the authentication hook (CONNECT credentials, MQTT 5 AUTH exchanges).
//! - [`authz`]: the authorisation hook (who may publish or subscribe to what).
//! - [`store`]: the changes a durable store applies, and the trait it implements; [`record`]:
//!   the byte layout of what it keeps, which a cluster node also hands to another.
//! - [`guard`]: the records an edge keeps so a signed request takes effect once;
//!   [`mailbox`]: what a session read by polling keeps (leases, dead letters); [`history`]:
//!   the last messages of chosen topics, for mailboxes to replay.
//! - [`cluster`]: what a node tells the other nodes of a cluster, and hears from them.
//! - [`throttle`]: failed logins counted per address and user name, and the blocks they earn.
//! - [`config`], [`events`], [`types`]: limits, observable events and counters, value types.
#![warn(missing_docs)]

pub mod alias;
pub mod auth;
pub mod authz;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod events;
pub mod firmware;
pub mod fleet;
pub mod fleet_notify;
pub mod guard;
pub mod history;
pub mod mailbox;
pub mod record;
pub mod retained;
pub mod session;
pub mod store;
pub mod throttle;
pub mod tree;
pub mod tree_view;
pub mod types;

pub use alias::TopicAlias;
pub use auth::{
    AllowAnonymous, AuthDecision, AuthJob, AuthRequest, Authenticator, DirectoryTopics, Identity,
    Method, SessionOwner,
};
pub use authz::{Access, AllowAll, Authorizer, Permissions, Principal};
pub use broker::memory::HeldBytes;
pub use broker::request::{RequestClient, RequestOutcome, RequestRefusal};
pub use broker::retained_feed::RETAINED_CAPPED_PROPERTY;
pub use broker::sys::TrafficTotals;
pub use broker::Broker;
pub use cluster::{
    ClaimOutcome, ClusterBatch, ClusterInput, ClusterOp, ClusterPublish, InboundQos2, NodeStatus,
    OutboundQos2, OutboundStage, RemoteMessage, RetainedEntry, SessionClaim,
};
pub use config::{Config, Limits, OtherIdentity, Overload, StalledSubscriber};
pub use connection::{ConnectionInfo, OutgoingPublish, Transmit};
pub use events::{CloseReason, CutReason, DropReason, Event, FleetChange, Stats};
pub use guard::{GuardKey, GuardRecord};
pub use store::{MemoryStore, Snapshot, Store, StoreOp};
pub use throttle::Throttled;
pub use tree_view::TreeConfig;
pub use types::{ConnectionId, Message, SessionKey, SharedMessage, Time};
