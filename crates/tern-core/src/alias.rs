//! Topic aliases the broker sets towards an MQTT 5 client that accepts them (3.3.2.3.4): one
//! table per connection, the first topics sent taking the aliases for the rest of it.

use rustc_hash::FxHashMap;
use tern_codec::TopicName;

/// What an alias costs in a PUBLISH: the property's identifier and its two-byte value. A topic no
/// longer than that is sent as it is.
const ALIAS_BYTES: usize = 3;

/// How a PUBLISH names its topic to a client that accepts topic aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicAlias {
    /// The topic, with the alias it stands for from now on.
    Set(u16),
    /// The alias alone, set earlier on this connection.
    Use(u16),
}

impl TopicAlias {
    /// The alias sent.
    pub fn value(self) -> u16 {
        match self {
            Self::Set(alias) | Self::Use(alias) => alias,
        }
    }

    /// Whether the topic is left out (the alias stands for it).
    pub fn omits_topic(self) -> bool {
        matches!(self, Self::Use(_))
    }
}

/// The aliases set on one connection, by topic. First come, first served: a topic gets the next
/// alias while any remain and keeps it for the life of the connection. Reassigning aliases (an
/// LRU, say) would send the topic again with every reassignment and could take an alias from a
/// topic still in use; with aliases assigned once, what a client saves is never lost again.
#[derive(Debug)]
pub struct OutboundAliases {
    max: u16,
    assigned: FxHashMap<TopicName, u16>,
}

impl OutboundAliases {
    /// A table for a client that takes aliases up to `max`.
    pub fn new(max: u16) -> Self {
        Self {
            max,
            assigned: FxHashMap::default(),
        }
    }

    /// How to send `topic`: by the alias it has, or setting the next one while any remain; the
    /// caller records a new alias once the PUBLISH that sets it is sure to be written.
    pub fn lookup(&self, topic: &TopicName) -> Option<TopicAlias> {
        if let Some(&alias) = self.assigned.get(topic) {
            return Some(TopicAlias::Use(alias));
        }
        let next = u16::try_from(self.assigned.len() + 1).ok()?;
        (topic.len() > ALIAS_BYTES && next <= self.max).then_some(TopicAlias::Set(next))
    }

    /// Records that `topic` was sent setting `alias`.
    pub fn record(&mut self, topic: &TopicName, alias: u16) {
        // A copy: the table lives as long as the connection, the topic's packet buffer need not.
        self.assigned.insert(topic.detached(), alias);
    }
}
