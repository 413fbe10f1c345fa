//! Actionable notifications on the broker thread (the model: `crate::fleet_notify`). A device
//! raises one on its status channel; an answer (the operator interface, or an owner's client
//! publishing on `<prefix><owner>/<udid>/answer`) is checked against the response type and
//! published to the device at QoS 2 on its own channel through the broker's publish path, so
//! a device that is away finds it in its session (over MQTT or its HTTP mailbox); the device's
//! acknowledgement of it (PUBACK/PUBCOMP, or a mailbox ack) marks it delivered. An operator
//! may ask a device too. Every change is kept by the store and told as an event (the tap's
//! `Event::FleetNotification`, and `$events/<owner>/<udid>/notification` for the owner).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tern_codec::{Publish, PublishProperties, QoS, TopicName};

use super::Broker;
use crate::events::Event;
use crate::fleet_notify::{
    parse_device_payload, ttl_secs, DeviceSays, Direction, Notification, Notifications,
    NotifyError, NotifyState, ResponseType, NOTIFY_PENDING_PER_DEVICE_MAX, NOTIFY_TEXT_MAX,
};
use crate::store::StoreOp;
use crate::types::{Message, SessionKey, Time};

/// What an operator asks of a device.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The question.
    pub body: String,
    /// The answer it wants.
    pub response_type: ResponseType,
    /// An id of the operator's choosing (else the broker's).
    pub nid: Option<String>,
    /// Seconds it waits for the answer.
    pub ttl: Option<u32>,
}

impl Broker {
    /// The notifications kept.
    pub fn fleet_notifications(&self) -> &Notifications {
        &self.fleet.notifications
    }

    /// Loads the notifications a store kept.
    pub(super) fn fleet_notify_restore(&mut self, records: Vec<Notification>) {
        self.fleet.notifications = Notifications::from_records(records);
    }

    /// Looks at a PUBLISH the broker accepted from `origin`: a device's notification (raised,
    /// answered or withdrawn) on its status channel, or an answer on a device's answer topic.
    /// Anything else, or a payload that is not a notification, is left alone; the message is
    /// routed as any other either way.
    pub(super) fn fleet_notify_inbound(
        &mut self,
        origin: Option<SessionKey>,
        device: Option<&str>,
        publish: &Publish,
        now: Time,
    ) {
        let topic = publish.topic.as_str();
        if self.fleet.is_empty() || !(topic.ends_with("/status") || topic.ends_with("/answer")) {
            return;
        }
        let Some(client_id) = self.publisher_id(origin, device) else {
            return;
        };
        let Some((udid, by_device)) = self.notify_channel(&client_id, topic) else {
            return;
        };
        let Some(says) = parse_device_payload(&publish.payload) else {
            return;
        };
        let properties = &publish.properties;
        let outcome = says.and_then(|says| match (says, by_device) {
            (
                DeviceSays::Raise {
                    body,
                    response_type,
                    nid,
                    ttl,
                },
                true,
            ) => {
                let ask = Ask {
                    body,
                    response_type,
                    nid,
                    ttl: ttl.or(properties.message_expiry_interval),
                };
                let correlation = properties.correlation_data.clone();
                self.notify_raise(&udid, ask, correlation, now).map(drop)
            }
            (DeviceSays::Answer { nid, response }, by_device) => self
                .notify_answer(&udid, &nid, response, by_device, now)
                .map(drop),
            (DeviceSays::Cancel { nid }, true) => {
                self.notify_cancel(&udid, &nid, true, now).map(drop)
            }
            _ => Err(NotifyError::BadRequest(
                "the answer topic takes only answers".to_owned(),
            )),
        });
        if let Err(error) = outcome {
            self.events.push_back(Event::FleetNotifyRefused {
                client_id,
                udid,
                reason: error.to_string(),
            });
        }
    }

    /// The device a topic speaks of notifications for, and whether the device itself speaks:
    /// its status channel, published by itself, or its answer topic (published by anyone the
    /// rules let publish there: its owner, an operator's client).
    fn notify_channel(&self, client_id: &str, topic: &str) -> Option<(String, bool)> {
        if let Some(device) = self.fleet.device(client_id) {
            if topic == self.config.fleet.status(&device.owner, &device.udid) {
                return Some((device.udid.clone(), true));
            }
        }
        let rest = topic.strip_prefix(self.config.fleet.prefix())?;
        let (owner, rest) = rest.split_once('/')?;
        let udid = rest.strip_suffix("/answer")?;
        let device = self.fleet.device(udid).filter(|d| d.owner == owner)?;
        Some((device.udid.clone(), false))
    }

    /// Raises a notification of device `udid` (a repeat of one pending with the same id and
    /// question, as a QoS 1 resend would be, is the same notification).
    fn notify_raise(
        &mut self,
        udid: &str,
        ask: Ask,
        correlation: Option<Bytes>,
        now: Time,
    ) -> Result<Notification, NotifyError> {
        if correlation
            .as_ref()
            .is_some_and(|c| c.len() > NOTIFY_TEXT_MAX)
        {
            let why = "correlation data: at most 4096 bytes";
            return Err(NotifyError::BadRequest(why.to_owned()));
        }
        let notes = &self.fleet.notifications;
        if let Some(same) = ask
            .nid
            .as_deref()
            .and_then(|nid| notes.get(udid, nid))
            .filter(|n| n.state == NotifyState::Pending && n.direction == Direction::FromDevice)
            .filter(|n| n.body == ask.body && n.response_type == ask.response_type)
        {
            return Ok(same.clone());
        }
        let notification = self.notify_new(udid, ask, Direction::FromDevice, correlation, now)?;
        self.notify_changed(notification.clone(), "raised", now);
        Ok(notification)
    }

    /// A new pending notification of `udid` (not yet kept).
    fn notify_new(
        &mut self,
        udid: &str,
        ask: Ask,
        direction: Direction,
        correlation: Option<Bytes>,
        now: Time,
    ) -> Result<Notification, NotifyError> {
        let Some(device) = self.fleet.device(udid) else {
            return Err(NotifyError::NoDevice(udid.to_owned()));
        };
        let owner = device.owner.clone();
        let bad_nid = |nid: &String| nid.is_empty() || nid.len() > NOTIFY_TEXT_MAX;
        if ask.body.len() > NOTIFY_TEXT_MAX || ask.nid.as_ref().is_some_and(bad_nid) {
            let why = "body and nid: at most 4096 bytes, nid not empty";
            return Err(NotifyError::BadRequest(why.to_owned()));
        }
        if self.fleet.notifications.pending_of(udid) >= NOTIFY_PENDING_PER_DEVICE_MAX {
            return Err(NotifyError::TooMany(udid.to_owned()));
        }
        if let Some(key) = self.fleet.notifications.to_forget_for(udid) {
            self.fleet.notifications.remove(&key);
            let (udid, nid) = key;
            self.persist(StoreOp::FleetNotifyRemove { udid, nid });
        }
        let nid = self.fleet.notifications.id_for(udid, ask.nid);
        Ok(Notification {
            owner,
            udid: udid.to_owned(),
            nid,
            direction,
            body: ask.body,
            response_type: ask.response_type,
            correlation,
            state: NotifyState::Pending,
            response: None,
            created: now,
            expires: now.plus_secs(ttl_secs(ask.ttl)),
            finished: None,
            message_id: None,
            delivered: None,
        })
    }

    /// Answers a notification a device raised (the operator interface, the console): the
    /// answer must fit its response type, and goes to the device at QoS 2. A notification
    /// that is not pending is refused, so it is answered once.
    pub fn fleet_notify_answer(
        &mut self,
        udid: &str,
        nid: &str,
        response: Value,
        now: Time,
    ) -> Result<Notification, NotifyError> {
        self.notify_answer(udid, nid, response, false, now)
    }

    fn notify_answer(
        &mut self,
        udid: &str,
        nid: &str,
        response: Value,
        by_device: bool,
        now: Time,
    ) -> Result<Notification, NotifyError> {
        let mut notification = self.notify_pending(udid, nid, now)?;
        let asker = match by_device {
            true => Direction::ToDevice,
            false => Direction::FromDevice,
        };
        if notification.direction != asker {
            return Err(NotifyError::BadRequest(match by_device {
                true => "a device answers only what it was asked".to_owned(),
                false => "the device answers what it was asked, not the operator".to_owned(),
            }));
        }
        notification.response_type.check(&response)?;
        notification.state = NotifyState::Answered;
        notification.response = Some(response.to_string());
        notification.finished = Some(now);
        if !by_device {
            let expires = None;
            notification.message_id = Some(self.notify_send_to_device(&notification, expires, now));
        }
        self.notify_changed(notification.clone(), "answered", now);
        Ok(notification)
    }

    /// Asks device `udid` a question: it goes to the device at QoS 2 on its channel (expiring
    /// with the notification), and the device answers on its status channel.
    pub fn fleet_notify_ask(
        &mut self,
        udid: &str,
        ask: Ask,
        now: Time,
    ) -> Result<Notification, NotifyError> {
        let mut notification = self.notify_new(udid, ask, Direction::ToDevice, None, now)?;
        let expires = Some(notification.expires);
        notification.message_id = Some(self.notify_send_to_device(&notification, expires, now));
        self.notify_changed(notification.clone(), "asked", now);
        Ok(notification)
    }

    /// Withdraws a pending notification (the operator interface: either kind).
    pub fn fleet_notify_cancel(
        &mut self,
        udid: &str,
        nid: &str,
        now: Time,
    ) -> Result<Notification, NotifyError> {
        self.notify_cancel(udid, nid, false, now)
    }

    /// Withdraws a pending notification; a device withdraws only one it raised.
    fn notify_cancel(
        &mut self,
        udid: &str,
        nid: &str,
        by_device: bool,
        now: Time,
    ) -> Result<Notification, NotifyError> {
        let mut notification = self.notify_pending(udid, nid, now)?;
        if by_device && notification.direction != Direction::FromDevice {
            let why = "a device withdraws only what it raised";
            return Err(NotifyError::BadRequest(why.to_owned()));
        }
        notification.state = NotifyState::Cancelled;
        notification.finished = Some(now);
        self.notify_changed(notification.clone(), "cancelled", now);
        Ok(notification)
    }

    /// The pending notification `nid` of `udid` (one whose time ran out expires first).
    fn notify_pending(
        &mut self,
        udid: &str,
        nid: &str,
        now: Time,
    ) -> Result<Notification, NotifyError> {
        self.fleet_notify_due(now);
        let Some(notification) = self.fleet.notifications.get(udid, nid) else {
            return Err(NotifyError::NoNotification(nid.to_owned()));
        };
        if notification.state != NotifyState::Pending {
            return Err(NotifyError::Finished {
                nid: nid.to_owned(),
                state: notification.state,
            });
        }
        Ok(notification.clone())
    }

    /// Publishes what the device is owed at QoS 2 on its own channel, with the Correlation
    /// Data it raised the notification with; returns the message's id.
    fn notify_send_to_device(
        &mut self,
        notification: &Notification,
        expires_at: Option<Time>,
        now: Time,
    ) -> u64 {
        let id = self.next_message_id();
        let topic = self
            .config
            .fleet
            .device(&notification.owner, &notification.udid);
        // The owner and udid are checked topic levels: the topic is valid.
        let Ok(topic) = topic.parse::<TopicName>() else {
            return id;
        };
        let properties = PublishProperties {
            correlation_data: notification.correlation.clone(),
            ..PublishProperties::default()
        };
        let message = Message {
            id,
            topic,
            payload: notification.device_payload().into(),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties,
            expires_at,
            origin: None,
        };
        self.accept_message(Arc::new(message), now);
        id
    }

    /// A delivery of `message_id` to `key` was acknowledged (PUBACK, PUBCOMP, a mailbox ack):
    /// if it carried what a notification owed its device, to that device, it is delivered.
    pub(super) fn fleet_notify_acked(&mut self, key: SessionKey, message_id: u64, now: Time) {
        let Some((udid, nid)) = self.fleet.notifications.awaiting(message_id).cloned() else {
            return;
        };
        if self.session(key).client_id.as_str() != udid {
            return;
        }
        if let Some(notification) = self.fleet.notifications.get(&udid, &nid) {
            let mut notification = notification.clone();
            notification.delivered = Some(now);
            self.notify_changed(notification, "delivered", now);
        }
    }

    /// Expires the pending notifications whose time ran out, and forgets the finished ones
    /// kept long enough.
    pub(super) fn fleet_notify_due(&mut self, now: Time) {
        while let Some(key) = self.fleet.notifications.next_due(now) {
            let Some(notification) = self.fleet.notifications.get(&key.0, &key.1) else {
                break;
            };
            if notification.state == NotifyState::Pending {
                let mut notification = notification.clone();
                notification.state = NotifyState::Expired;
                notification.finished = Some(now);
                self.notify_changed(notification, "expired", now);
            } else {
                self.fleet.notifications.remove(&key);
                let (udid, nid) = key;
                self.persist(StoreOp::FleetNotifyRemove { udid, nid });
            }
        }
    }

    /// Forgets the notifications of a deleted device.
    pub(super) fn fleet_notify_forget(&mut self, udid: &str) {
        let keys: Vec<_> = self
            .fleet
            .notifications
            .iter()
            .filter(|n| n.udid == udid)
            .map(|n| (n.udid.clone(), n.nid.clone()))
            .collect();
        for key in keys {
            self.fleet.notifications.remove(&key);
            let (udid, nid) = key;
            self.persist(StoreOp::FleetNotifyRemove { udid, nid });
        }
    }

    /// Keeps a changed notification (in memory and the store) and tells of it.
    fn notify_changed(&mut self, notification: Notification, change: &'static str, now: Time) {
        self.fleet.notifications.put(notification.clone());
        self.persist(StoreOp::FleetNotifySet(notification.clone()));
        let topic = format!(
            "$events/{}/{}/notification",
            notification.owner, notification.udid
        );
        let mut event = notification.summary(now);
        if let Some(fields) = event.as_object_mut() {
            fields.insert("change".into(), change.into());
        }
        self.fleet_publish(&topic, event.to_string().into(), false, now);
        self.events.push_back(Event::FleetNotification {
            notification: Box::new(notification),
            change,
        });
    }
}

impl Notification {
    /// The notification as JSON, as events and the API word it (times as seconds from now).
    pub fn summary(&self, now: Time) -> Value {
        let mut value = serde_json::json!({
            "owner": self.owner,
            "udid": self.udid,
            "nid": self.nid,
            "direction": self.direction.word(),
            "body": self.body,
            "response_type": self.response_type.word(),
            "state": self.state.word(),
            "delivered": self.delivered.is_some(),
            "expires_in": now.secs_until(self.expires),
        });
        if let Some(fields) = value.as_object_mut() {
            if let ResponseType::Choice(choices) = &self.response_type {
                fields.insert("choices".into(), choices.clone().into());
            }
            if let Some(response) = self.response_value() {
                fields.insert("response".into(), response);
            }
        }
        value
    }
}
