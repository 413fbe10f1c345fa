//! The repeated properties, User Property and Subscription Identifier, kept in their wire form,
//! and the collector that gathers them while a property block is decoded.

use bytes::{Bytes, BytesMut};

use super::PropertyId;
use crate::error::{DecodeError, EncodeError};
use crate::string::MqttString;
use crate::wire::{Reader, Sink, VARINT_MAX};

/// Collects the wire bytes of one repeated property: a shared slice of the block when its
/// entries are adjacent, and one copy of exactly their size when other properties come between.
#[derive(Debug, Default)]
pub(super) struct RunCollector {
    /// Where the first entry starts and the last one ends.
    span: Option<(usize, usize)>,
    /// Bytes of the entries themselves.
    len: usize,
}

impl RunCollector {
    pub(super) fn push(&mut self, block: &Reader, start: usize) {
        let end = block.position();
        self.len += end - start;
        let first = self.span.map_or(start, |(first, _)| first);
        self.span = Some((first, end));
    }

    /// The entries of `id` pushed while `block` was read (without error).
    pub(super) fn finish(self, block: &Reader, id: PropertyId) -> Bytes {
        let Some((first, last)) = self.span else {
            return Bytes::new();
        };
        let run = block.slice_between(first, last);
        if run.len() == self.len {
            return run;
        }
        // Interleaved: a second pass picks this property's entries out of the run, into one
        // buffer of their exact size (growing a buffer entry by entry would over-allocate).
        let mut out = BytesMut::with_capacity(self.len);
        let mut r = Reader::new(run.clone());
        while !r.is_empty() {
            let start = r.position();
            let Some(this) = r.varint().ok().and_then(PropertyId::from_u32) else {
                break;
            };
            if this.skip_value(&mut r).is_err() {
                break;
            }
            if this == id {
                out.extend_from_slice(&run[start..r.position()]);
            }
        }
        debug_assert_eq!(out.len(), self.len);
        out.freeze()
    }
}

impl PropertyId {
    /// Steps over this property's value, whose data type table 2-4 fixes.
    pub(super) fn skip_value(self, r: &mut Reader) -> Result<(), DecodeError> {
        match self {
            Self::PayloadFormatIndicator
            | Self::RequestProblemInformation
            | Self::RequestResponseInformation
            | Self::MaximumQos
            | Self::RetainAvailable
            | Self::WildcardSubscriptionAvailable
            | Self::SubscriptionIdentifierAvailable
            | Self::SharedSubscriptionAvailable => {
                r.u8()?;
            }
            Self::ServerKeepAlive
            | Self::ReceiveMaximum
            | Self::TopicAliasMaximum
            | Self::TopicAlias => {
                r.u16()?;
            }
            Self::MessageExpiryInterval
            | Self::SessionExpiryInterval
            | Self::WillDelayInterval
            | Self::MaximumPacketSize => {
                r.u32()?;
            }
            Self::SubscriptionIdentifier => {
                r.varint()?;
            }
            Self::ContentType
            | Self::ResponseTopic
            | Self::CorrelationData
            | Self::AssignedClientIdentifier
            | Self::AuthenticationMethod
            | Self::AuthenticationData
            | Self::ResponseInformation
            | Self::ServerReference
            | Self::ReasonString => {
                r.binary()?;
            }
            Self::UserProperty => {
                r.binary()?;
                r.binary()?;
            }
        }
        Ok(())
    }
}

/// User properties (0x26) in the order they were given, held in wire form so they are forwarded
/// unaltered and decoding allocates nothing for them.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct UserProperties(pub(super) Bytes);

impl UserProperties {
    /// No user properties.
    pub const fn new() -> Self {
        Self(Bytes::new())
    }

    /// The same list in an allocation of its own (see [`MqttString::detached`]).
    pub fn detached(&self) -> Self {
        Self(Bytes::copy_from_slice(&self.0))
    }

    /// Builds the list from key/value pairs, in order.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a MqttString, &'a MqttString)>,
    ) -> Self {
        let mut buf = BytesMut::new();
        for (key, value) in pairs {
            put_pair(&mut buf, key, value);
        }
        Self(buf.freeze())
    }

    /// Appends one pair (copies the existing list; user properties are few).
    pub fn push(&mut self, key: &MqttString, value: &MqttString) {
        let mut buf = BytesMut::with_capacity(self.0.len() + 5 + key.len() + value.len());
        buf.extend_from_slice(&self.0);
        put_pair(&mut buf, key, value);
        self.0 = buf.freeze();
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// The pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut rest: &[u8] = &self.0;
        core::iter::from_fn(move || {
            let (key, after_key) = split_string(rest.get(1..)?)?;
            let (value, after_value) = split_string(after_key)?;
            rest = after_value;
            Some((key, value))
        })
    }

    /// Encoded size in bytes, identifiers included.
    pub fn wire_len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn raw(&self) -> &[u8] {
        &self.0
    }
}

impl core::fmt::Debug for UserProperties {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

fn put_pair(buf: &mut BytesMut, key: &MqttString, value: &MqttString) {
    buf.put_u8(PropertyId::UserProperty as u8);
    buf.put_string(key);
    buf.put_string(value);
}

fn split_string(buf: &[u8]) -> Option<(&str, &[u8])> {
    let len = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
    let text = buf.get(2..2 + len)?;
    Some((core::str::from_utf8(text).ok()?, &buf[2 + len..]))
}

/// Subscription Identifiers (0x0B) of a PUBLISH sent to a client: one per matching subscription
/// that has one, kept in wire form.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct SubscriptionIds(pub(super) Bytes);

impl SubscriptionIds {
    /// None.
    pub const fn new() -> Self {
        Self(Bytes::new())
    }

    /// The same list in an allocation of its own (see [`MqttString::detached`]).
    pub fn detached(&self) -> Self {
        Self(Bytes::copy_from_slice(&self.0))
    }

    /// Builds the list; each identifier must be in 1..=268,435,455.
    pub fn from_ids(ids: impl IntoIterator<Item = u32>) -> Result<Self, EncodeError> {
        let mut ids = ids.into_iter().peekable();
        // The usual case on the delivery path: no identifiers, nothing to build.
        if ids.peek().is_none() {
            return Ok(Self::default());
        }
        let mut buf = BytesMut::new();
        for id in ids {
            if id == 0 || id > VARINT_MAX {
                return Err(EncodeError::OutOfRange("subscription identifier"));
            }
            buf.put_u8(PropertyId::SubscriptionIdentifier as u8);
            buf.put_varint(id);
        }
        Ok(Self(buf.freeze()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The identifiers, in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let mut rest: &[u8] = &self.0;
        core::iter::from_fn(move || {
            let after_id = rest.get(1..)?;
            let (value, len) = crate::wire::decode_varint(after_id).ok()??;
            rest = &after_id[len..];
            Some(value)
        })
    }
}

impl core::fmt::Debug for SubscriptionIds {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
