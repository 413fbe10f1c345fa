//! The properties that travel with an application message: those of PUBLISH (3.3.2.3), and
//! those of a will (3.1.3.2), which becomes one. Both keep the order they arrived in
//! ([`PropertyOrder`]), so a broker forwards them as they were sent, and share one writer.

use bytes::Bytes;

use super::order::{PropertyOrder, RankCheck, Run};
use super::repeated::RunCollector;
use super::{
    once, put_block, read_block, read_payload_format, read_subscription_id, read_topic, skip_pair,
    PayloadFormat, PropertyId, SubscriptionIds, UserProperties,
};
use crate::error::{DecodeError, EncodeError};
use crate::string::MqttString;
use crate::topic::TopicName;
use crate::wire::{decode_varint, Reader, Sink};

/// Properties of PUBLISH (3.3.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// Whether the payload is UTF-8.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// Lifetime of the message in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Topic alias standing for, or set to, the topic name; never 0.
    pub topic_alias: Option<u16>,
    /// Topic for a response.
    pub response_topic: Option<TopicName>,
    /// Correlation data for a response.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order.
    pub user_properties: UserProperties,
    /// Identifiers of the subscriptions that matched (server to client only).
    pub subscription_identifiers: SubscriptionIds,
    /// MIME-like description of the payload.
    pub content_type: Option<MqttString>,
    /// The order the properties arrived in, followed when they are encoded again.
    pub order: PropertyOrder,
}

/// Properties of a will message (3.1.3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WillProperties {
    /// Seconds to wait after the connection ends before publishing the will.
    pub will_delay_interval: Option<u32>,
    /// Whether the will payload is UTF-8.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// Lifetime of the will message in seconds.
    pub message_expiry_interval: Option<u32>,
    /// MIME-like description of the payload.
    pub content_type: Option<MqttString>,
    /// Topic for a response to the will message.
    pub response_topic: Option<TopicName>,
    /// Correlation data for a response.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order.
    pub user_properties: UserProperties,
    /// The order the properties arrived in; the will is published with them in this order.
    pub order: PropertyOrder,
}

/// A property's place in the order the writer uses: Topic Alias first (a broker puts each
/// receiver's own alias in front of a shared encoding), Will Delay Interval in the same place in
/// a will, the repeated properties last.
fn rank(id: PropertyId) -> u8 {
    match id {
        PropertyId::TopicAlias | PropertyId::WillDelayInterval => 0,
        PropertyId::PayloadFormatIndicator => 1,
        PropertyId::MessageExpiryInterval => 2,
        PropertyId::ResponseTopic => 3,
        PropertyId::CorrelationData => 4,
        PropertyId::ContentType => 5,
        PropertyId::UserProperty => 6,
        _ => 7,
    }
}

impl PublishProperties {
    /// The same properties in allocations of their own, for a message kept long after its
    /// packet (a retained message): a few bytes copied instead of a read buffer retained.
    pub fn detached(&self) -> Self {
        Self {
            response_topic: self.response_topic.as_ref().map(TopicName::detached),
            correlation_data: self
                .correlation_data
                .as_ref()
                .map(|data| Bytes::copy_from_slice(data)),
            user_properties: self.user_properties.detached(),
            subscription_identifiers: self.subscription_identifiers.detached(),
            content_type: self.content_type.as_ref().map(MqttString::detached),
            ..self.clone()
        }
    }

    /// Decodes a property block into `self`, which must be empty.
    pub(crate) fn decode_into(&mut self, r: &mut Reader) -> Result<(), DecodeError> {
        debug_assert!(self.is_empty());
        if r.peek() == Some(0) {
            // The usual case: no properties at all.
            r.u8()?;
            return Ok(());
        }
        let props = self;
        let mut users = RunCollector::default();
        let mut sub_ids = RunCollector::default();
        let mut ranks = RankCheck::default();
        let block = read_block(r, |id, block, start| {
            match id {
                PropertyId::PayloadFormatIndicator => {
                    once(
                        &mut props.payload_format_indicator,
                        read_payload_format(block)?,
                    )?;
                }
                PropertyId::MessageExpiryInterval => {
                    once(&mut props.message_expiry_interval, block.u32()?)?;
                }
                PropertyId::TopicAlias => {
                    let alias = block.u16()?;
                    if alias == 0 {
                        return Err(DecodeError::TopicAliasInvalid("topic alias of 0"));
                    }
                    once(&mut props.topic_alias, alias)?;
                }
                PropertyId::ResponseTopic => once(&mut props.response_topic, read_topic(block)?)?,
                PropertyId::CorrelationData => once(&mut props.correlation_data, block.binary()?)?,
                PropertyId::ContentType => once(&mut props.content_type, block.string()?)?,
                PropertyId::UserProperty => {
                    skip_pair(block)?;
                    users.push(block, start);
                }
                PropertyId::SubscriptionIdentifier => {
                    read_subscription_id(block)?;
                    sub_ids.push(block, start);
                }
                _ => return Err(DecodeError::Malformed("property not allowed in PUBLISH")),
            }
            ranks.see(rank(id));
            Ok(())
        })?;
        props.user_properties = UserProperties(users.finish(&block, PropertyId::UserProperty));
        props.subscription_identifiers =
            SubscriptionIds(sub_ids.finish(&block, PropertyId::SubscriptionIdentifier));
        props.order = ranks.finish(&block);
        Ok(())
    }

    /// Takes the Topic Alias out, and its place in the order: a broker forwards a message under
    /// each receiver's own alias, if any.
    pub fn take_topic_alias(&mut self) -> Option<u16> {
        self.order.without(PropertyId::TopicAlias);
        self.topic_alias.take()
    }

    /// Takes the Subscription Identifiers out, and their places in the order: a broker forwards
    /// each receiver's own.
    pub fn clear_subscription_identifiers(&mut self) {
        self.order.without(PropertyId::SubscriptionIdentifier);
        self.subscription_identifiers = SubscriptionIds::new();
    }

    /// The block as written with `alias`, `expiry` and `ids` sent in place of its own Topic
    /// Alias, Message Expiry Interval and Subscription Identifiers (what differs between the
    /// copies of one message a broker forwards).
    fn fields_as<'a>(
        &'a self,
        alias: Option<u16>,
        expiry: Option<u32>,
        ids: &'a SubscriptionIds,
    ) -> Fields<'a> {
        Fields {
            will_delay: None,
            alias,
            format: self.payload_format_indicator,
            expiry,
            response_topic: self.response_topic.as_ref(),
            correlation: self.correlation_data.as_ref(),
            content_type: self.content_type.as_ref(),
            users: self.user_properties.raw(),
            ids: &ids.0,
        }
    }

    /// Encodes the block with `alias`, `expiry` and `ids` in place of its own (see
    /// `fields_as`).
    pub(crate) fn encode_as<S: Sink>(
        &self,
        s: &mut S,
        alias: Option<u16>,
        expiry: Option<u32>,
        ids: &SubscriptionIds,
    ) -> Result<(), EncodeError> {
        let fields = self.fields_as(alias, expiry, ids);
        if fields.is_empty() {
            s.put_u8(0);
            return Ok(());
        }
        put_block(s, |s| fields.write(self.order.runs(), s))
    }

    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        self.payload_format_indicator.is_none()
            && self.message_expiry_interval.is_none()
            && self.topic_alias.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.user_properties.is_empty()
            && self.subscription_identifiers.is_empty()
            && self.content_type.is_none()
    }
}

impl WillProperties {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut props = Self::default();
        let mut users = RunCollector::default();
        let mut ranks = RankCheck::default();
        let block = read_block(r, |id, block, start| {
            match id {
                PropertyId::WillDelayInterval => {
                    once(&mut props.will_delay_interval, block.u32()?)?
                }
                PropertyId::PayloadFormatIndicator => {
                    once(
                        &mut props.payload_format_indicator,
                        read_payload_format(block)?,
                    )?;
                }
                PropertyId::MessageExpiryInterval => {
                    once(&mut props.message_expiry_interval, block.u32()?)?;
                }
                PropertyId::ContentType => once(&mut props.content_type, block.string()?)?,
                PropertyId::ResponseTopic => once(&mut props.response_topic, read_topic(block)?)?,
                PropertyId::CorrelationData => once(&mut props.correlation_data, block.binary()?)?,
                PropertyId::UserProperty => {
                    skip_pair(block)?;
                    users.push(block, start);
                }
                _ => {
                    return Err(DecodeError::Malformed(
                        "property not allowed in will properties",
                    ))
                }
            }
            ranks.see(rank(id));
            Ok(())
        })?;
        props.user_properties = UserProperties(users.finish(&block, PropertyId::UserProperty));
        props.order = ranks.finish(&block);
        Ok(props)
    }

    pub(crate) fn encode<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let fields = Fields {
            will_delay: self.will_delay_interval,
            alias: None,
            format: self.payload_format_indicator,
            expiry: self.message_expiry_interval,
            response_topic: self.response_topic.as_ref(),
            correlation: self.correlation_data.as_ref(),
            content_type: self.content_type.as_ref(),
            users: self.user_properties.raw(),
            ids: &[],
        };
        put_block(s, |s| fields.write(self.order.runs(), s))
    }

    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        self.will_delay_interval.is_none()
            && self.payload_format_indicator.is_none()
            && self.message_expiry_interval.is_none()
            && self.content_type.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.user_properties.is_empty()
    }

    /// These properties as those of the message the will becomes: the Will Delay Interval is
    /// the server's alone, everything else goes with the message in the order it came.
    pub fn to_publish(&self) -> PublishProperties {
        PublishProperties {
            payload_format_indicator: self.payload_format_indicator,
            message_expiry_interval: self.message_expiry_interval,
            topic_alias: None,
            response_topic: self.response_topic.clone(),
            correlation_data: self.correlation_data.clone(),
            user_properties: self.user_properties.clone(),
            subscription_identifiers: SubscriptionIds::new(),
            content_type: self.content_type.clone(),
            order: self.order.clone(),
        }
    }
}

/// What one block writes: the fields of either kind, with a broker's per-copy values in place.
/// Where the order has no place for the Topic Alias it goes first, and Subscription Identifiers
/// without places go last: that is where a broker puts a receiver's own.
struct Fields<'a> {
    will_delay: Option<u32>,
    alias: Option<u16>,
    format: Option<PayloadFormat>,
    expiry: Option<u32>,
    response_topic: Option<&'a TopicName>,
    correlation: Option<&'a Bytes>,
    content_type: Option<&'a MqttString>,
    /// User properties in wire form.
    users: &'a [u8],
    /// Subscription identifiers in wire form.
    ids: &'a [u8],
}

/// The single-valued properties, as bits, in the order the writer puts them without an order.
const WILL_DELAY: u8 = 1;
const ALIAS: u8 = 1 << 1;
const FORMAT: u8 = 1 << 2;
const EXPIRY: u8 = 1 << 3;
const RESPONSE_TOPIC: u8 = 1 << 4;
const CORRELATION: u8 = 1 << 5;
const CONTENT_TYPE: u8 = 1 << 6;
const SINGLES: [u8; 7] = [
    WILL_DELAY,
    ALIAS,
    FORMAT,
    EXPIRY,
    RESPONSE_TOPIC,
    CORRELATION,
    CONTENT_TYPE,
];

impl Fields<'_> {
    fn is_empty(&self) -> bool {
        self.will_delay.is_none()
            && self.alias.is_none()
            && self.format.is_none()
            && self.expiry.is_none()
            && self.response_topic.is_none()
            && self.correlation.is_none()
            && self.content_type.is_none()
            && self.users.is_empty()
            && self.ids.is_empty()
    }

    /// Writes the properties in `order` (arrival order, identifier by identifier), then
    /// whatever it did not place in the writer's own order; without an order, all of them in
    /// the writer's own order.
    fn write(&self, order: Option<&[Run]>, s: &mut dyn Sink) -> Result<(), EncodeError> {
        let mut done = 0u8;
        let mut users = self.users;
        let mut ids = self.ids;
        if let Some(order) = order {
            let alias_slot = order
                .iter()
                .any(|&(id, _)| id == PropertyId::TopicAlias as u8);
            if !alias_slot {
                self.put_single(ALIAS, s)?;
                done |= ALIAS;
            }
            for &(id, count) in order {
                let Some(id) = PropertyId::from_u32(u32::from(id)) else {
                    continue;
                };
                match id {
                    PropertyId::UserProperty => {
                        let len = (0..count).fold(0, |at, _| at + user_pair_len(&users[at..]));
                        let (run, rest) = users.split_at(len);
                        s.put_slice(run);
                        users = rest;
                    }
                    PropertyId::SubscriptionIdentifier => {
                        let len = (0..count).fold(0, |at, _| at + subscription_id_len(&ids[at..]));
                        let (run, rest) = ids.split_at(len);
                        s.put_slice(run);
                        ids = rest;
                    }
                    _ => {
                        let bit = single_bit(id);
                        if bit != 0 && done & bit == 0 {
                            self.put_single(bit, s)?;
                            done |= bit;
                        }
                    }
                }
            }
        }
        for bit in SINGLES {
            if done & bit == 0 {
                self.put_single(bit, s)?;
            }
        }
        s.put_slice(users);
        s.put_slice(ids);
        Ok(())
    }

    /// Writes the single-valued property `bit` stands for, if it is set.
    fn put_single(&self, bit: u8, s: &mut dyn Sink) -> Result<(), EncodeError> {
        match bit {
            WILL_DELAY => {
                if let Some(v) = self.will_delay {
                    s.put_u8(PropertyId::WillDelayInterval as u8);
                    s.put_u32(v);
                }
            }
            ALIAS => {
                if let Some(v) = self.alias {
                    s.put_u8(PropertyId::TopicAlias as u8);
                    s.put_u16(v);
                }
            }
            FORMAT => {
                if let Some(v) = self.format {
                    s.put_u8(PropertyId::PayloadFormatIndicator as u8);
                    s.put_u8(v as u8);
                }
            }
            EXPIRY => {
                if let Some(v) = self.expiry {
                    s.put_u8(PropertyId::MessageExpiryInterval as u8);
                    s.put_u32(v);
                }
            }
            RESPONSE_TOPIC => {
                if let Some(v) = self.response_topic {
                    s.put_u8(PropertyId::ResponseTopic as u8);
                    s.put_string(v.as_mqtt_str());
                }
            }
            CORRELATION => {
                if let Some(v) = self.correlation {
                    s.put_u8(PropertyId::CorrelationData as u8);
                    s.put_binary(v)?;
                }
            }
            CONTENT_TYPE => {
                if let Some(v) = self.content_type {
                    s.put_u8(PropertyId::ContentType as u8);
                    s.put_string(v);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The bit of a single-valued property of a message, or 0.
fn single_bit(id: PropertyId) -> u8 {
    match id {
        PropertyId::WillDelayInterval => WILL_DELAY,
        PropertyId::TopicAlias => ALIAS,
        PropertyId::PayloadFormatIndicator => FORMAT,
        PropertyId::MessageExpiryInterval => EXPIRY,
        PropertyId::ResponseTopic => RESPONSE_TOPIC,
        PropertyId::CorrelationData => CORRELATION,
        PropertyId::ContentType => CONTENT_TYPE,
        _ => 0,
    }
}

/// Bytes of the first user property (identifier, name, value) at the front of `raw`; all of
/// `raw` if it holds no complete one (it was built from whole pairs, so that does not happen).
fn user_pair_len(raw: &[u8]) -> usize {
    let string_end = |at: usize| -> Option<usize> {
        let len = u16::from_be_bytes([*raw.get(at)?, *raw.get(at + 1)?]);
        Some(at + 2 + usize::from(len))
    };
    string_end(1)
        .and_then(string_end)
        .filter(|&end| end <= raw.len())
        .unwrap_or(raw.len())
}

/// Bytes of the first subscription identifier (identifier byte and its variable byte integer)
/// at the front of `raw`; all of `raw` if it holds no complete one.
fn subscription_id_len(raw: &[u8]) -> usize {
    match raw.get(1..).map(decode_varint) {
        Some(Ok(Some((_, len)))) => 1 + len,
        _ => raw.len(),
    }
}
