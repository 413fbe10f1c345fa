//! The fleet's live status, kept by the broker from its own connects and disconnects (not from
//! what devices say): online or offline since when, last seen, address, protocol level. Each
//! change is published as a broker event, `$events/<owner>/<udid>/online|offline` (QoS 1, JSON),
//! and, for a device that set no will of its own, as THiNX's retained status on
//! `<prefix><owner>/<udid>/status` (`{"status":"connected"}`, `{"status":"disconnected"}`),
//! so THiNX firmware and consoles work unchanged. A device that connects more than
//! `FLAPPING_CONNECTS` times within a minute is flagged as flapping, once, not logged per
//! reconnect.

use std::sync::Arc;

use bytes::Bytes;
use tern_codec::{PublishProperties, QoS, TopicName};

use super::request::RequestClient;
use super::Broker;
use crate::auth::{Identity, Method};
use crate::connection::Connection;
use crate::events::{Event, FleetChange};
use crate::fleet::{
    DeviceStatus, Registry, FLAPPING_CONNECTS, STATUS_CONNECTED, STATUS_DISCONNECTED,
};
use crate::types::{ConnectionId, Message, SessionKey, Time};

/// The window connects are counted in.
const FLAPPING_WINDOW_MILLIS: u64 = 60_000;

impl Broker {
    /// A registered device's connection `id` was accepted: it is online.
    pub(super) fn fleet_online(
        &mut self,
        id: ConnectionId,
        client_id: &str,
        own_will: bool,
        now: Time,
    ) {
        let Some(device) = self.fleet.device(client_id) else {
            return;
        };
        let (owner, udid) = (device.owner.clone(), device.udid.clone());
        let connection = self.connections.get(&id);
        let address = connection.and_then(|c| c.info.peer_address);
        let version = connection.map(|c| c.version);
        let status = self.fleet.status_mut(client_id);
        status
            .connects
            .retain(|&at| now.as_millis().saturating_sub(at.as_millis()) < FLAPPING_WINDOW_MILLIS);
        status.connects.push_back(now);
        let flapping = status.connects.len() > FLAPPING_CONNECTS;
        let began_flapping = flapping && !status.flapping;
        status.flapping = flapping;
        status.record(true, now);
        status.address = address;
        status.version = version;
        status.own_will = own_will;
        self.events.push_back(Event::FleetChanged {
            owner: owner.clone(),
            udid: udid.clone(),
            change: FleetChange::Online,
        });
        if began_flapping {
            self.events.push_back(Event::FleetFlapping {
                owner: owner.clone(),
                udid: udid.clone(),
                connects: FLAPPING_CONNECTS + 1,
            });
        }
        let protocol = version.map_or(0, |v| v.level());
        let address = address.map(|a| a.to_string()).unwrap_or_default();
        let event = format!(
            "{{\"owner\":{},\"udid\":{},\"protocol\":{protocol},\"address\":{}}}",
            quote(&owner),
            quote(&udid),
            quote(&address)
        );
        self.fleet_publish(
            &format!("$events/{owner}/{udid}/online"),
            event.into(),
            false,
            now,
        );
        if !own_will {
            let topic = self.config.fleet.status(&owner, &udid);
            self.fleet_publish(&topic, Bytes::from_static(STATUS_CONNECTED), true, now);
        }
    }

    /// A registered device's connection ended (not taken over by its next one): offline.
    pub(super) fn fleet_offline(&mut self, client_id: &str, now: Time) {
        let Some(device) = self.fleet.device(client_id) else {
            return;
        };
        let (owner, udid) = (device.owner.clone(), device.udid.clone());
        let status = self.fleet.status_mut(client_id);
        status.record(false, now);
        let own_will = status.own_will;
        self.events.push_back(Event::FleetChanged {
            owner: owner.clone(),
            udid: udid.clone(),
            change: FleetChange::Offline,
        });
        let event = format!("{{\"owner\":{},\"udid\":{}}}", quote(&owner), quote(&udid));
        self.fleet_publish(
            &format!("$events/{owner}/{udid}/offline"),
            event.into(),
            false,
            now,
        );
        if !own_will {
            let topic = self.config.fleet.status(&owner, &udid);
            self.fleet_publish(&topic, Bytes::from_static(STATUS_DISCONNECTED), true, now);
        }
    }

    /// After a restart no device is connected: a retained status that still says connected
    /// (the broker stopped without a will going out) is set to disconnected, unless a will kept
    /// with the device's session will say so itself.
    pub(super) fn fleet_restored(&mut self, now: Time) {
        let mut stale = Vec::new();
        for device in self.fleet.devices(None) {
            let topic = self.config.fleet.status(&device.owner, &device.udid);
            let says_connected = self
                .retained
                .tree()
                .get(&topic)
                .is_some_and(|m| m.payload.as_ref() == STATUS_CONNECTED);
            let will_pending = self
                .session_ids
                .get(device.udid.as_str())
                .is_some_and(|&key| self.session(key).will.is_some());
            if says_connected && !will_pending {
                stale.push(topic);
            }
        }
        for topic in stale {
            self.fleet_publish(&topic, Bytes::from_static(STATUS_DISCONNECTED), true, now);
        }
    }

    /// A signed request of the HTTP bridge came from `identity` for `client_id`: when that is
    /// a registered device speaking with its own key (`d:UDID`), it was seen now. An app key
    /// speaking for the udid is not the device.
    pub fn fleet_seen_over_http(&mut self, client_id: &str, identity: &Identity, now: Time) {
        let own_key = identity.method == Method::HttpKey
            && identity.owner.is_none()
            && identity.username.as_deref() == Some(client_id);
        if own_key && self.fleet.device(client_id).is_some() {
            let status = self.fleet.status_mut(client_id);
            status.last_seen = status.last_seen.max(now);
            status.last_seen_http = Some(now);
        }
    }

    /// The udid of the registered device a request acts as, with its own key (`d:UDID`).
    pub(super) fn request_device<'c>(&self, client: &'c RequestClient) -> Option<&'c str> {
        let udid = client.client_id.as_str();
        (client.identity.method == Method::FleetDevice && self.fleet.device(udid).is_some())
            .then_some(udid)
    }

    /// The client identifier a message was published by: the session `origin`'s, or `device`,
    /// a fleet device publishing in a request with its own key (with or without a session).
    pub(super) fn publisher_id(
        &self,
        origin: Option<SessionKey>,
        device: Option<&str>,
    ) -> Option<String> {
        match (device, origin) {
            (Some(udid), _) => Some(udid.to_owned()),
            (None, Some(key)) => Some(self.session(key).client_id.as_str().to_owned()),
            (None, None) => None,
        }
    }

    /// Counts `count` messages a device published in signed requests (`inbound`), or that its
    /// HTTP mailbox handed out to it.
    pub(super) fn fleet_count_http(&mut self, device: Option<&str>, inbound: bool, count: u64) {
        let Some(udid) = device.filter(|_| count > 0) else {
            return;
        };
        let status = self.fleet.status_mut(udid);
        match inbound {
            true => status.http_messages_in += count,
            false => status.http_messages_out += count,
        }
    }

    /// Counts a PUBLISH packet from connection `id`, if it is a device's.
    pub(super) fn fleet_count_in(&mut self, id: ConnectionId) {
        if let Some(udid) = self.connections.get(&id).and_then(|c| fleet_udid(c)) {
            self.fleet.count_message(udid, true);
        }
    }

    /// The status of a device, if it connected since the broker started.
    pub fn fleet_status(&self, udid: &str) -> Option<&DeviceStatus> {
        self.fleet.status(udid)
    }

    pub(super) fn fleet_publish(&mut self, topic: &str, payload: Bytes, retain: bool, now: Time) {
        let (qos, properties) = (QoS::AtLeastOnce, PublishProperties::default());
        self.fleet_publish_with(topic, payload, qos, retain, properties, now);
    }

    /// Publishes as the broker itself (no client's permissions apply), through the same path
    /// as any message: routed, retained, queued for sessions without a connection.
    pub(super) fn fleet_publish_with(
        &mut self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: PublishProperties,
        now: Time,
    ) {
        let Ok(topic) = topic.parse::<TopicName>() else {
            return;
        };
        let message = Message {
            id: self.next_message_id(),
            topic,
            payload,
            qos: qos.min(self.config.limits.qos_max),
            retain,
            properties,
            expires_at: None,
            origin: None,
        };
        self.accept_message(Arc::new(message), now);
    }
}

/// Counts a PUBLISH packet taken for writing to `connection`, if it is a device's.
pub(super) fn count_sent(fleet: &mut Registry, connection: &Connection) {
    if let Some(udid) = fleet_udid(connection) {
        fleet.count_message(udid, false);
    }
}

/// The udid of a connection logged in as a device of the fleet.
fn fleet_udid(connection: &Connection) -> Option<&str> {
    let identity = connection.identity.as_deref()?;
    match identity.method {
        Method::FleetDevice => identity.username.as_deref(),
        _ => None,
    }
}

/// A JSON string.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
