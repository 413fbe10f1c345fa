//! Message history: the last messages of topics that match a configured filter, kept so a
//! mailbox can be given them again (`replay`, a reset to a time; docs/http.md). Only topics an
//! operator chose are kept, and each within bounds: at most `max_messages` per topic, none
//! older than `max_age`, at most `max_topics` topics per filter. The broker keeps the history
//! in memory and hands every change to the store ([`crate::StoreOp::HistoryKeep`] and
//! [`crate::StoreOp::HistoryForget`]), so it outlives a restart.
//!
//! A kept message's time is milliseconds from the core's `Time` zero, signed: what a store
//! gives back from before this process started is negative.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tern_codec::{TopicFilter, TopicName};

use crate::types::{SharedMessage, Time};

/// One `[[history]]` entry of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Topics matching this filter are kept (the first matching entry decides).
    pub filter: TopicFilter,
    /// Messages kept per topic; older ones go.
    pub max_messages: usize,
    /// How long a message is kept, in milliseconds.
    pub max_age_millis: u64,
    /// Topics kept for this filter at most; a message of a further topic is not kept (counted).
    pub max_topics: usize,
}

/// A message kept, and when (milliseconds from `Time` zero; negative: before this process).
#[derive(Debug, Clone)]
pub struct Kept {
    /// When it was kept.
    pub at: i64,
    /// The message.
    pub message: SharedMessage,
}

/// What keeping a message did.
#[derive(Debug, Default)]
pub struct KeepOutcome {
    /// The message was kept (in an allocation of its own).
    pub kept: Option<SharedMessage>,
    /// The topic passed its filter's `max_topics`: not kept.
    pub refused: bool,
    /// Messages that went to make room or because they aged: their topics and ids.
    pub forgotten: Vec<(TopicName, u64)>,
}

/// The kept messages, by topic.
#[derive(Debug, Default)]
pub struct History {
    configs: Vec<HistoryConfig>,
    /// Per topic: the entry of `configs` that keeps it, and its messages, oldest first.
    topics: HashMap<TopicName, (usize, VecDeque<Kept>)>,
    /// Topics kept per entry of `configs`.
    topic_counts: Vec<usize>,
}

/// Milliseconds of `now` as a signed kept time.
pub fn kept_time(now: Time) -> i64 {
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

impl History {
    /// A history keeping what `configs` say.
    pub fn new(configs: Vec<HistoryConfig>) -> Self {
        let topic_counts = vec![0; configs.len()];
        Self {
            configs,
            topics: HashMap::new(),
            topic_counts,
        }
    }

    /// Whether no topic is ever kept (no configuration).
    pub fn is_off(&self) -> bool {
        self.configs.is_empty()
    }

    /// Messages kept in all.
    pub fn len(&self) -> usize {
        self.topics.values().map(|(_, kept)| kept.len()).sum()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    fn config_of(&self, topic: &str) -> Option<usize> {
        self.configs.iter().position(|c| c.filter.matches(topic))
    }

    /// Keeps `message` (kept at `at`) if a configured filter matches its topic, dropping what
    /// passes the bounds (the topic's oldest, and any older than `max_age` at `now`).
    pub fn keep(&mut self, message: &SharedMessage, at: i64, now: Time) -> KeepOutcome {
        let mut outcome = KeepOutcome::default();
        let Some(index) = self.config_of(&message.topic) else {
            return outcome;
        };
        let config = &self.configs[index];
        let (max_messages, max_age) = (config.max_messages, config.max_age_millis);
        if !self.topics.contains_key(&message.topic) {
            if self.topic_counts[index] >= config.max_topics {
                outcome.refused = true;
                return outcome;
            }
            self.topic_counts[index] += 1;
        }
        let kept = Arc::new(message.detached());
        let entry = self
            .topics
            .entry(kept.topic.clone())
            .or_insert_with(|| (index, VecDeque::new()));
        let queue = &mut entry.1;
        queue.push_back(Kept {
            at,
            message: Arc::clone(&kept),
        });
        let oldest_allowed =
            kept_time(now).saturating_sub(i64::try_from(max_age).unwrap_or(i64::MAX));
        while queue.len() > max_messages.max(1)
            || queue.front().is_some_and(|k| k.at < oldest_allowed)
        {
            if let Some(old) = queue.pop_front() {
                outcome
                    .forgotten
                    .push((old.message.topic.clone(), old.message.id));
            }
        }
        if queue.is_empty() {
            self.forget_topic(&kept.topic);
        }
        outcome.kept = Some(kept);
        outcome
    }

    /// Takes back a message the store kept, at start; returns false for one no filter keeps
    /// any more, or past the bounds (the caller forgets it in the store too).
    pub fn restore(&mut self, at: i64, message: SharedMessage, now: Time) -> bool {
        let Some(index) = self.config_of(&message.topic) else {
            return false;
        };
        let config = &self.configs[index];
        let max_age = i64::try_from(config.max_age_millis).unwrap_or(i64::MAX);
        if at < kept_time(now).saturating_sub(max_age) {
            return false;
        }
        if !self.topics.contains_key(&message.topic) {
            if self.topic_counts[index] >= config.max_topics {
                return false;
            }
            self.topic_counts[index] += 1;
        }
        let entry = self
            .topics
            .entry(message.topic.clone())
            .or_insert_with(|| (index, VecDeque::new()));
        entry.1.push_back(Kept { at, message });
        true
    }

    /// After [`History::restore`]: each topic in order, within its count; returns what went.
    pub fn settle_restored(&mut self) -> Vec<(TopicName, u64)> {
        let mut forgotten = Vec::new();
        for (index, queue) in self.topics.values_mut() {
            queue.make_contiguous().sort_by_key(|kept| kept.message.id);
            let max = self.configs[*index].max_messages.max(1);
            while queue.len() > max {
                if let Some(old) = queue.pop_front() {
                    forgotten.push((old.message.topic.clone(), old.message.id));
                }
            }
        }
        forgotten
    }

    /// Drops what aged past its filter's `max_age` at `now`; returns what went.
    pub fn prune(&mut self, now: Time) -> Vec<(TopicName, u64)> {
        let mut forgotten = Vec::new();
        let mut emptied = Vec::new();
        for (topic, (index, queue)) in &mut self.topics {
            let max_age = i64::try_from(self.configs[*index].max_age_millis).unwrap_or(i64::MAX);
            let oldest_allowed = kept_time(now).saturating_sub(max_age);
            while queue.front().is_some_and(|k| k.at < oldest_allowed) {
                if let Some(old) = queue.pop_front() {
                    forgotten.push((old.message.topic.clone(), old.message.id));
                }
            }
            if queue.is_empty() {
                emptied.push(topic.clone());
            }
        }
        for topic in emptied {
            self.forget_topic(&topic);
        }
        forgotten
    }

    /// The kept messages whose topics match `filter`, kept at or after `since` (if given),
    /// oldest first.
    pub fn matching(&self, filter: &TopicFilter, since: Option<i64>) -> Vec<Kept> {
        let mut found: Vec<Kept> = self
            .topics
            .iter()
            .filter(|(topic, _)| filter.matches(topic))
            .flat_map(|(_, (_, queue))| queue.iter())
            .filter(|kept| since.is_none_or(|since| kept.at >= since))
            .cloned()
            .collect();
        found.sort_by_key(|kept| kept.message.id);
        found
    }

    /// The last `count` kept messages whose topics match `filter`, oldest first, leaving out
    /// those past their filter's `max_age` at `now` (not pruned yet) and those expired.
    pub fn recent(&self, filter: &TopicFilter, count: usize, now: Time) -> Vec<Kept> {
        let mut found: Vec<Kept> = self
            .topics
            .iter()
            .filter(|(topic, _)| filter.matches(topic))
            .flat_map(|(_, (index, queue))| {
                let max_age = i64::try_from(self.configs[*index].max_age_millis);
                let oldest_allowed = kept_time(now).saturating_sub(max_age.unwrap_or(i64::MAX));
                queue
                    .iter()
                    .filter(move |kept| kept.at >= oldest_allowed && !kept.message.is_expired(now))
            })
            .cloned()
            .collect();
        found.sort_by_key(|kept| kept.message.id);
        let skip = found.len().saturating_sub(count);
        found.split_off(skip)
    }

    fn forget_topic(&mut self, topic: &TopicName) {
        if let Some((index, _)) = self.topics.remove(topic) {
            self.topic_counts[index] -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tern_codec::{PublishProperties, QoS};

    use super::*;
    use crate::types::Message;

    fn message(id: u64, topic: &str) -> SharedMessage {
        Arc::new(Message {
            id,
            topic: topic
                .parse()
                .unwrap_or_else(|_| unreachable!("valid topic")),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: PublishProperties::default(),
            expires_at: None,
            origin: None,
        })
    }

    fn history(max_messages: usize, max_age_millis: u64, max_topics: usize) -> History {
        History::new(vec![HistoryConfig {
            filter: "a/#"
                .parse()
                .unwrap_or_else(|_| unreachable!("valid filter")),
            max_messages,
            max_age_millis,
            max_topics,
        }])
    }

    #[test]
    fn only_configured_topics_are_kept_each_within_its_count() {
        let mut history = history(2, 10_000, 10);
        let now = Time::from_millis(0);
        assert!(history.keep(&message(1, "b"), 0, now).kept.is_none());
        for id in 1..=3 {
            history.keep(&message(id, "a/x"), 0, now);
        }
        let outcome = history.keep(&message(4, "a/y"), 0, now);
        assert!(outcome.kept.is_some() && outcome.forgotten.is_empty());
        let filter: TopicFilter = "a/#".parse().unwrap_or_else(|_| unreachable!());
        let ids: Vec<u64> = history
            .matching(&filter, None)
            .iter()
            .map(|k| k.message.id)
            .collect();
        assert_eq!(ids, [2, 3, 4]);
    }

    #[test]
    fn recent_gives_the_last_of_a_filters_topics_within_their_age() {
        let mut history = history(10, 1_000, 10);
        history.keep(&message(1, "a/x"), 0, Time::from_millis(0));
        for id in 2..=4 {
            history.keep(&message(id, "a/x/y"), 500, Time::from_millis(500));
        }
        history.keep(&message(5, "a/z"), 500, Time::from_millis(500));
        let filter: TopicFilter = "a/x/#".parse().unwrap_or_else(|_| unreachable!());
        let ids = |kept: Vec<Kept>| kept.iter().map(|k| k.message.id).collect::<Vec<_>>();
        // `a/x/#` takes `a/x` itself too; the newest last, at most `count`.
        assert_eq!(
            ids(history.recent(&filter, 10, Time::from_millis(600))),
            [1, 2, 3, 4]
        );
        assert_eq!(
            ids(history.recent(&filter, 2, Time::from_millis(600))),
            [3, 4]
        );
        // Past its age, a message not pruned yet is not given.
        assert_eq!(
            ids(history.recent(&filter, 10, Time::from_millis(1_200))),
            [2, 3, 4]
        );
    }

    #[test]
    fn old_messages_go_and_topics_past_the_limit_are_refused() {
        let mut history = history(10, 1_000, 1);
        history.keep(&message(1, "a/x"), 0, Time::from_millis(0));
        assert!(
            history
                .keep(&message(2, "a/y"), 0, Time::from_millis(0))
                .refused
        );
        let gone = history.prune(Time::from_millis(1_001));
        assert_eq!(gone.len(), 1);
        assert!(history.is_empty());
        // The topic's place is free again.
        assert!(history
            .keep(&message(3, "a/y"), 1_001, Time::from_millis(1_001))
            .kept
            .is_some());
    }
}
