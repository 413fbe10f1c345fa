//! Successful password checks, remembered so that a client logging in again with the same
//! password (a fleet reconnecting after an outage) is let in at once, on the broker thread,
//! instead of waiting for argon2 again.
//!
//! An entry is a user name and a tag: HMAC-SHA256, under a key drawn at random when the cache
//! is made, of the user name, the stored hash and the password. The cache never holds a
//! password or anything computable from one without the key; a tag made with another stored
//! hash (the password was changed) never matches; tags are compared in constant time. The
//! cache is bounded: past `capacity` users, the least recently used one is forgotten (an
//! approximation: a second chance for each entry used since it was last looked at).

use std::collections::{HashMap, VecDeque};
use std::fmt;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tern_core::ConnectionId;

/// Users whose last successful login is remembered, by default.
pub const LOGIN_CACHE_ENTRIES_MAX: usize = 20_000;

type Tag = [u8; 32];

/// Remembered logins, and the tags of the checks running now (stored if they succeed).
pub struct LoginCache {
    key: [u8; 32],
    capacity: usize,
    entries: HashMap<Box<str>, Entry>,
    /// Users in the order the clock hand visits them.
    order: VecDeque<Box<str>>,
    /// Checks handed out, by connection: what to remember if the password was right.
    checking: HashMap<ConnectionId, (Box<str>, Tag)>,
    hits: u64,
    misses: u64,
}

#[derive(Debug)]
struct Entry {
    tag: Tag,
    /// Used since the clock hand last passed: spared once.
    used: bool,
}

impl LoginCache {
    /// An empty cache of at most `capacity` users (0 remembers nothing), with a fresh key.
    pub fn new(capacity: usize) -> Self {
        let mut key = [0_u8; 32];
        OsRng.fill_bytes(&mut key);
        Self {
            key,
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
            checking: HashMap::new(),
            hits: 0,
            misses: 0,
        }
    }

    /// Whether `user` logged in with `password` before against the same stored `hash`. If
    /// not, a check is about to run for `connection`: [`LoginCache::finished`] remembers it
    /// if it succeeds.
    pub fn check(
        &mut self,
        connection: ConnectionId,
        user: &str,
        hash: &str,
        password: &[u8],
    ) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let tag = self.tag(user, hash, password);
        if let Some(entry) = self.entries.get_mut(user) {
            if bool::from(entry.tag.ct_eq(&tag)) {
                entry.used = true;
                self.hits += 1;
                return true;
            }
        }
        self.misses += 1;
        self.checking.insert(connection, (user.into(), tag));
        false
    }

    /// The check for `connection` answered; a success is remembered.
    pub fn finished(&mut self, connection: ConnectionId, accepted: bool) {
        let Some((user, tag)) = self.checking.remove(&connection) else {
            return;
        };
        if accepted {
            self.insert(user, tag);
        }
    }

    /// Whether `user` logged in with `password` before against the same stored `hash`, in one
    /// step: for checks that learn the hash only off the broker thread (a user directory's),
    /// which then [`LoginCache::remember`] a success themselves.
    pub fn knows(&mut self, user: &str, hash: &str, password: &[u8]) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let tag = self.tag(user, hash, password);
        let entry = self.entries.get_mut(user);
        match entry.filter(|entry| bool::from(entry.tag.ct_eq(&tag))) {
            Some(entry) => {
                entry.used = true;
                self.hits += 1;
                true
            }
            None => {
                self.misses += 1;
                false
            }
        }
    }

    /// Remembers that `password` is `user`'s, against the stored `hash`.
    pub fn remember(&mut self, user: &str, hash: &str, password: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        let tag = self.tag(user, hash, password);
        self.insert(user.into(), tag);
    }

    /// `connection` is gone: its check, if any, is not remembered.
    pub fn forget(&mut self, connection: ConnectionId) {
        self.checking.remove(&connection);
    }

    /// Users remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no user is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Logins let in from the cache, and logins that needed a check, so far.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    fn tag(&self, user: &str, hash: &str, password: &[u8]) -> Tag {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            // HMAC takes keys of any length: unreachable.
            return [0; 32];
        };
        // Lengths first, so that no two inputs run together into the same bytes.
        for part in [user.as_bytes(), hash.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.update(password);
        mac.finalize().into_bytes().into()
    }

    fn insert(&mut self, user: Box<str>, tag: Tag) {
        if let Some(entry) = self.entries.get_mut(&user) {
            entry.tag = tag;
            entry.used = true;
            return;
        }
        while self.entries.len() >= self.capacity {
            let Some(candidate) = self.order.pop_front() else {
                break;
            };
            match self.entries.get_mut(&candidate) {
                Some(entry) if entry.used => {
                    entry.used = false;
                    self.order.push_back(candidate);
                }
                _ => {
                    self.entries.remove(&candidate);
                }
            }
        }
        self.order.push_back(user.clone());
        self.entries.insert(user, Entry { tag, used: false });
    }
}

impl fmt::Debug for LoginCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("LoginCache")
            .field("capacity", &self.capacity)
            .field("entries", &self.entries.len())
            .field("checking", &self.checking.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

    /// Checks `user`/`password` on connection 1; a miss runs a check that answers `right`.
    fn login(cache: &mut LoginCache, user: &str, password: &[u8], right: bool) -> bool {
        let hit = cache.check(ConnectionId(1), user, HASH, password);
        if !hit {
            cache.finished(ConnectionId(1), right);
        }
        hit
    }

    #[test]
    fn remembers_successes_only_and_matches_the_same_password_only() {
        let mut cache = LoginCache::new(10);
        assert!(!login(&mut cache, "alice", b"wrong", false));
        assert!(
            !login(&mut cache, "alice", b"wrong", false),
            "failures are not kept"
        );
        assert!(!login(&mut cache, "alice", b"right", true));
        assert!(login(&mut cache, "alice", b"right", true));
        assert!(!login(&mut cache, "alice", b"righT", false));
        assert!(!login(&mut cache, "bob", b"right", false), "per user");
        // Another stored hash (the password was changed) never matches the old tag.
        let changed = "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXI$aGFzaA";
        assert!(!cache.check(ConnectionId(2), "alice", changed, b"right"));
        assert_eq!(cache.hits_and_misses(), (1, 6));
        // Nothing stored is the password.
        assert!(!format!("{:?}", cache.entries).contains("right"));
    }

    #[test]
    fn a_check_whose_client_left_is_not_remembered() {
        let mut cache = LoginCache::new(10);
        assert!(!cache.check(ConnectionId(7), "alice", HASH, b"pw"));
        cache.forget(ConnectionId(7));
        cache.finished(ConnectionId(7), true);
        assert!(cache.is_empty());
        // Two caches (two reloads) never share a key.
        let other = LoginCache::new(10);
        assert_ne!(cache.tag("a", HASH, b"p"), other.tag("a", HASH, b"p"));
    }

    #[test]
    fn bounded_least_recently_used_first() {
        let mut cache = LoginCache::new(3);
        for user in ["a", "b", "c"] {
            login(&mut cache, user, b"pw", true);
        }
        // "a" is used again, so "b" is the one forgotten for "d".
        assert!(login(&mut cache, "a", b"pw", true));
        login(&mut cache, "d", b"pw", true);
        assert_eq!(cache.len(), 3);
        assert!(login(&mut cache, "a", b"pw", true));
        assert!(!cache.entries.contains_key("b"));
        for n in 0..100 {
            login(&mut cache, &format!("u{n}"), b"pw", true);
            assert!(cache.len() <= 3 && cache.order.len() <= 3);
        }
        let mut off = LoginCache::new(0);
        login(&mut off, "a", b"pw", true);
        assert!(!login(&mut off, "a", b"pw", true));
        off.remember("a", HASH, b"pw");
        assert!(off.is_empty() && !off.knows("a", HASH, b"pw"));
    }

    #[test]
    fn one_step_checks_match_the_same_password_and_hash_only() {
        let mut cache = LoginCache::new(10);
        assert!(!cache.knows("dev", HASH, b"pw"));
        cache.remember("dev", HASH, b"pw");
        assert!(cache.knows("dev", HASH, b"pw"));
        assert!(!cache.knows("dev", HASH, b"pW"));
        assert!(!cache.knows("dev2", HASH, b"pw"));
        let changed = "$2b$04$c2FsdHNhbHRzYWx0c2FsdOaGFzaGhhc2hoYXNoaGFzaGhh";
        assert!(!cache.knows("dev", changed, b"pw"), "another hash");
        assert_eq!(cache.hits_and_misses(), (1, 4));
    }
}
