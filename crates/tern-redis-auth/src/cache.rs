//! Recent answers of the directory, by user: fresh for a while (so a fleet reconnecting at once
//! asks Redis once per user, not once per connection), and bounded (the oldest answer is
//! forgotten first). Time is passed in.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_auth::DirectoryUser;

/// One answer: the user's record, or that there is no such user.
pub(crate) type Answer = Option<Arc<DirectoryUser>>;

/// Answers by user name.
#[derive(Debug)]
pub(crate) struct Cache {
    fresh_for: Duration,
    capacity: usize,
    entries: HashMap<String, (Instant, Answer)>,
    /// Users in the order they were answered, with when: the first is forgotten first.
    order: VecDeque<(String, Instant)>,
}

impl Cache {
    /// Answers are fresh for `fresh_for`; at most `capacity` users are kept (0: none).
    pub(crate) fn new(fresh_for: Duration, capacity: usize) -> Self {
        Self {
            fresh_for,
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// `user`'s answer if it is still fresh at `now`.
    pub(crate) fn fresh(&self, user: &str, now: Instant) -> Option<Answer> {
        let (at, answer) = self.entries.get(user)?;
        (now.saturating_duration_since(*at) < self.fresh_for).then(|| answer.clone())
    }

    /// `user`'s last answer, however old.
    #[cfg(test)]
    pub(crate) fn last(&self, user: &str) -> Answer {
        self.entries
            .get(user)
            .and_then(|(_, answer)| answer.clone())
    }

    /// Keeps `answer` for `user`, answered at `now`.
    pub(crate) fn insert(&mut self, user: &str, answer: Answer, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        if self
            .entries
            .insert(user.to_owned(), (now, answer))
            .is_none()
        {
            while self.entries.len() > self.capacity {
                let Some((oldest, at)) = self.order.pop_front() else {
                    break;
                };
                // An entry answered again since is younger than its place in the queue.
                if self
                    .entries
                    .get(&oldest)
                    .is_some_and(|(when, _)| *when == at)
                {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.order.push_back((user.to_owned(), now));
        // Places left behind by users answered again: never more than one per entry.
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order
                .retain(|(user, at)| entries.get(user).is_some_and(|(when, _)| when == at));
        }
    }

    /// Users kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(hash: &str) -> Answer {
        Some(Arc::new(DirectoryUser {
            hash: hash.to_owned(),
            ..DirectoryUser::default()
        }))
    }

    #[test]
    fn nothing_is_kept_without_room() {
        let mut cache = Cache::new(Duration::from_secs(5), 0);
        cache.insert("dev1", record("h"), Instant::now());
        assert_eq!((cache.len(), cache.order.len()), (0, 0));
    }

    #[test]
    fn answers_stay_fresh_for_a_while() {
        let start = Instant::now();
        let mut cache = Cache::new(Duration::from_secs(5), 10);
        cache.insert("dev1", record("h"), start);
        cache.insert("ghost", None, start);
        let soon = start + Duration::from_secs(4);
        assert_eq!(cache.fresh("dev1", soon), Some(record("h")));
        assert_eq!(
            cache.fresh("ghost", soon),
            Some(None),
            "no such user, fresh"
        );
        assert_eq!(cache.fresh("other", soon), None, "never asked");
        let later = start + Duration::from_secs(5);
        assert_eq!(cache.fresh("dev1", later), None, "stale: ask again");
        assert_eq!(
            cache.last("dev1"),
            record("h"),
            "still what the login found"
        );
        // A new answer replaces the old one.
        cache.insert("dev1", None, later);
        assert_eq!(cache.fresh("dev1", later), Some(None));
        // Nothing is fresh without a freshness.
        let mut none = Cache::new(Duration::ZERO, 10);
        none.insert("dev1", record("h"), start);
        assert_eq!(none.fresh("dev1", start), None);
    }

    #[test]
    fn bounded_oldest_answer_first() {
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        let mut cache = Cache::new(Duration::from_secs(60), 3);
        for (n, user) in ["a", "b", "c"].iter().enumerate() {
            cache.insert(user, record(user), at(n as u64));
        }
        // "a" answered again: "b" is now the oldest answer.
        cache.insert("a", record("a2"), at(3));
        cache.insert("d", record("d"), at(4));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.last("b"), None);
        assert_eq!(cache.last("a"), record("a2"));
        for n in 0..100 {
            cache.insert(&format!("u{n}"), None, at(10 + n));
            cache.insert("a", record("a"), at(10 + n));
            assert!(cache.len() <= 3 && cache.order.len() <= 6);
        }
        assert_eq!(cache.last("a"), record("a"), "kept while answered again");
    }
}
