//! The event tap: what an observer edge (the HTTP bridge's `GET /v1/events`) sees of the broker
//! as it happens. Messages are copied (a pointer, not the payload) at routing time when a
//! watched filter matches their topic, events as the runtime takes them; both go to one
//! bounded queue the edge drains when the runtime tells it the tap has something
//! ([`Broker::tap_ready`]). A full queue drops the newest and counts it: an observer that falls
//! behind never holds a publisher or grows the broker's memory. Nothing is copied while
//! nobody watches.

use std::collections::VecDeque;

use tern_codec::TopicFilter;

use super::Broker;
use crate::events::Event;
use crate::types::SharedMessage;

/// Items waiting for the observer, at most.
pub const TAP_QUEUE_MAX: usize = 4096;

/// One thing the tap saw.
#[derive(Debug, Clone)]
pub enum Tapped {
    /// A message routed, whose topic a watched filter matches.
    Message(SharedMessage),
    /// A broker event.
    Event(Event),
}

/// What is watched and what waits for the observer.
#[derive(Debug, Default)]
pub(super) struct Tap {
    /// Watched filters, each with the number of watchers that asked for it.
    filters: Vec<(TopicFilter, usize)>,
    /// Watchers of events.
    event_watchers: usize,
    queue: VecDeque<Tapped>,
    /// Items dropped because the queue was full.
    dropped: u64,
}

impl Tap {
    fn offer(&mut self, item: Tapped) {
        if self.queue.len() >= TAP_QUEUE_MAX {
            self.dropped += 1;
        } else {
            self.queue.push_back(item);
        }
    }

    /// Copies `message` if a watched filter matches its topic (section 4.7 matching, so `#`
    /// does not match `$SYS/...`).
    pub(super) fn offer_message(&mut self, message: &SharedMessage) {
        if self.filters.is_empty() {
            return;
        }
        let topic = message.topic.as_str();
        if self.filters.iter().any(|(filter, _)| filter.matches(topic)) {
            self.offer(Tapped::Message(SharedMessage::clone(message)));
        }
    }
}

impl Broker {
    /// The next event for logs and observers (copied to the tap while events are watched).
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        if self.tap.event_watchers > 0 {
            self.tap.offer(Tapped::Event(event.clone()));
        }
        Some(event)
    }

    /// Starts copying messages whose topics `filter` matches to the tap (once per call: each
    /// [`Broker::tap_watch`] is undone by one [`Broker::tap_unwatch`]).
    pub fn tap_watch(&mut self, filter: &TopicFilter) {
        match self.tap.filters.iter_mut().find(|(f, _)| f == filter) {
            Some((_, count)) => *count += 1,
            None => self.tap.filters.push((filter.clone(), 1)),
        }
    }

    /// Undoes one [`Broker::tap_watch`] of `filter`.
    pub fn tap_unwatch(&mut self, filter: &TopicFilter) {
        if let Some(index) = self.tap.filters.iter().position(|(f, _)| f == filter) {
            self.tap.filters[index].1 -= 1;
            if self.tap.filters[index].1 == 0 {
                self.tap.filters.swap_remove(index);
            }
        }
    }

    /// Starts (`true`) or stops copying events to the tap, counted like filters.
    pub fn tap_events(&mut self, watch: bool) {
        if watch {
            self.tap.event_watchers += 1;
        } else {
            self.tap.event_watchers = self.tap.event_watchers.saturating_sub(1);
        }
    }

    /// Whether the tap holds something for the observer.
    pub fn tap_ready(&self) -> bool {
        !self.tap.queue.is_empty()
    }

    /// Moves what the tap holds into `out`, oldest first.
    pub fn take_tapped(&mut self, out: &mut Vec<Tapped>) {
        out.extend(self.tap.queue.drain(..));
        // A burst that filled the queue does not keep its room.
        if self.tap.queue.capacity() > 64 && self.tap.queue.is_empty() {
            self.tap.queue.shrink_to(64);
        }
    }

    /// Items dropped so far because the observer fell behind.
    pub fn tap_dropped(&self) -> u64 {
        self.tap.dropped
    }
}
