//! Failed logins, counted per source address and per user name: after too many within a
//! window, further CONNECTs from that address (or for that user) are refused at once, without
//! asking the authenticator, for a time that doubles with each block. Time is passed in.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;

use crate::types::Time;

/// Failures are counted within windows of this length.
pub const LOGIN_FAILURE_WINDOW_MILLIS: u64 = 60_000;
/// The first block lasts this long; each further block twice the one before.
pub const LOGIN_BLOCK_FIRST_MILLIS: u64 = 10_000;
/// No block lasts longer than this.
pub const LOGIN_BLOCK_MAX_MILLIS: u64 = 15 * 60_000;
/// Addresses and user names remembered at most (each); the oldest is forgotten past it.
pub const LOGIN_THROTTLE_ENTRIES_MAX: usize = 10_000;

/// Why a CONNECT was refused without checking its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// Too many failed logins from this source address (IPv6: its /64 prefix).
    Address {
        /// The address (prefix) blocked.
        address: IpAddr,
        /// Seconds until the block ends.
        retry_after_secs: u32,
    },
    /// Too many failed logins for the CONNECT's user name.
    User {
        /// Seconds until the block ends.
        retry_after_secs: u32,
    },
}

/// The failure counts of both kinds of key, with the limits that apply.
#[derive(Debug)]
pub struct LoginThrottle {
    per_address_max: u32,
    per_user_max: u32,
    addresses: Table<IpAddr>,
    users: Table<Box<str>>,
}

impl LoginThrottle {
    /// Blocks an address after `per_address_max` failures in a window and a user name after
    /// `per_user_max`; 0 turns that kind off.
    pub fn new(per_address_max: u32, per_user_max: u32) -> Self {
        Self {
            per_address_max,
            per_user_max,
            addresses: Table::default(),
            users: Table::default(),
        }
    }

    /// Whether a login from `address` as `user` is refused at `now`, and why.
    pub fn check(
        &self,
        address: Option<IpAddr>,
        user: Option<&str>,
        now: Time,
    ) -> Option<Throttled> {
        if let Some(address) = address.map(throttle_key) {
            if let Some(until) = self.addresses.blocked_until(&address, now) {
                return Some(Throttled::Address {
                    address,
                    retry_after_secs: now.secs_until(until),
                });
            }
        }
        let until = user.and_then(|user| self.users.blocked_until(user, now))?;
        Some(Throttled::User {
            retry_after_secs: now.secs_until(until),
        })
    }

    /// Records a failed login (wrong credentials) from `address` as `user` at `now`.
    pub fn failed(&mut self, address: Option<IpAddr>, user: Option<&str>, now: Time) {
        if let (Some(address), 1..) = (address, self.per_address_max) {
            self.addresses
                .fail(throttle_key(address), self.per_address_max, now);
        }
        if let (Some(user), 1..) = (user, self.per_user_max) {
            match self.users.records.get_mut(user) {
                Some(record) => record.fail(self.per_user_max, now),
                None => self.users.fail(user.into(), self.per_user_max, now),
            }
        }
    }

    /// Addresses and user names remembered now.
    pub fn len(&self) -> usize {
        self.addresses.records.len() + self.users.records.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an address is counted under: an IPv4 address itself (also when it arrives mapped into
/// IPv6), an IPv6 address by its /64 prefix, which one subscriber usually holds whole.
fn throttle_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

/// One kind of key: records in a map, forgotten oldest first past the bound.
#[derive(Debug)]
struct Table<K> {
    records: HashMap<K, Record>,
    /// Keys in the order they were first recorded.
    order: VecDeque<K>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Self {
            records: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn blocked_until<Q>(&self, key: &Q, now: Time) -> Option<Time>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let record = self.records.get(key)?;
        (now < record.blocked_until).then_some(record.blocked_until)
    }

    fn fail(&mut self, key: K, max: u32, now: Time) {
        if let Some(record) = self.records.get_mut(&key) {
            record.fail(max, now);
            return;
        }
        if self.records.len() >= LOGIN_THROTTLE_ENTRIES_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.records.remove(&oldest);
            }
        }
        let mut record = Record::new(now);
        record.fail(max, now);
        self.order.push_back(key.clone());
        self.records.insert(key, record);
    }
}

/// The failures of one key.
#[derive(Debug, Clone, Copy)]
struct Record {
    window_start: Time,
    failures: u32,
    /// Blocks in a row, each twice as long as the one before.
    blocks: u32,
    blocked_until: Time,
    last_failure: Time,
}

impl Record {
    fn new(now: Time) -> Self {
        Self {
            window_start: now,
            failures: 0,
            blocks: 0,
            blocked_until: now,
            last_failure: now,
        }
    }

    fn fail(&mut self, max: u32, now: Time) {
        // A quiet spell as long as the longest block forgives the blocks before it.
        if now >= self.last_failure.plus_millis(LOGIN_BLOCK_MAX_MILLIS) {
            self.blocks = 0;
        }
        if now >= self.window_start.plus_millis(LOGIN_FAILURE_WINDOW_MILLIS) {
            self.window_start = now;
            self.failures = 0;
        }
        self.failures += 1;
        self.last_failure = now;
        if self.failures >= max {
            let doubling = 1_u64 << self.blocks.min(16);
            let length = LOGIN_BLOCK_FIRST_MILLIS
                .saturating_mul(doubling)
                .min(LOGIN_BLOCK_MAX_MILLIS);
            self.blocks += 1;
            self.blocked_until = now.plus_millis(length);
            // The next window opens when the block ends.
            self.window_start = self.blocked_until;
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1000;

    fn at(millis: u64) -> Time {
        Time::from_millis(millis)
    }

    #[test]
    fn blocks_double_and_end() {
        let mut throttle = LoginThrottle::new(3, 0);
        let address = Some(IpAddr::from([10, 0, 0, 1]));
        throttle.failed(address, Some("a"), at(0));
        throttle.failed(address, Some("b"), at(1));
        assert_eq!(throttle.check(address, None, at(2)), None);
        throttle.failed(address, Some("c"), at(2));
        let blocked = |t: &LoginThrottle, now| t.check(address, None, at(now)).is_some();
        assert!(blocked(&throttle, 2));
        assert!(blocked(&throttle, 2 + LOGIN_BLOCK_FIRST_MILLIS - 1));
        assert!(!blocked(&throttle, 2 + LOGIN_BLOCK_FIRST_MILLIS));
        // User names are not counted with a per-user limit of 0.
        assert_eq!(throttle.users.records.len(), 0);
        // The next three failures block for twice as long.
        let start = 2 + LOGIN_BLOCK_FIRST_MILLIS;
        for n in 0..3 {
            throttle.failed(address, None, at(start + n));
        }
        assert!(blocked(
            &throttle,
            start + 2 + 2 * LOGIN_BLOCK_FIRST_MILLIS - 1
        ));
        assert!(!blocked(
            &throttle,
            start + 2 + 2 * LOGIN_BLOCK_FIRST_MILLIS
        ));
        // Failures spread wider than the window never block.
        let mut throttle = LoginThrottle::new(3, 3);
        for n in 0..10 {
            throttle.failed(address, Some("u"), at(n * LOGIN_FAILURE_WINDOW_MILLIS / 2));
            assert!(!blocked(&throttle, n * LOGIN_FAILURE_WINDOW_MILLIS / 2));
        }
    }

    #[test]
    fn blocks_are_capped_and_forgiven_after_a_quiet_spell() {
        let mut throttle = LoginThrottle::new(0, 1);
        let mut now = 0;
        for _ in 0..20 {
            throttle.failed(None, Some("u"), at(now));
            let Some(Throttled::User { retry_after_secs }) =
                throttle.check(None, Some("u"), at(now))
            else {
                panic!("blocked");
            };
            assert!(u64::from(retry_after_secs) * SECOND <= LOGIN_BLOCK_MAX_MILLIS);
            now += u64::from(retry_after_secs) * SECOND;
        }
        assert_eq!(
            throttle.check(None, Some("u"), at(now - 1)),
            Some(Throttled::User {
                retry_after_secs: 1
            })
        );
        // After a quiet spell the next block is a first block again.
        now += LOGIN_BLOCK_MAX_MILLIS;
        throttle.failed(None, Some("u"), at(now));
        let until = throttle.users.blocked_until("u", at(now));
        assert_eq!(until, Some(at(now + LOGIN_BLOCK_FIRST_MILLIS)));
        // Another user and addresses are untouched.
        assert_eq!(throttle.check(None, Some("v"), at(now)), None);
        assert_eq!(
            throttle.check(Some(IpAddr::from([1, 2, 3, 4])), None, at(now)),
            None
        );
    }

    #[test]
    fn ipv6_counts_by_prefix_and_mapped_ipv4_as_ipv4() {
        let mut throttle = LoginThrottle::new(1, 0);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap_or(IpAddr::from([0; 16]));
        let same_prefix: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap_or(one);
        let other_prefix: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(one);
        throttle.failed(Some(one), None, at(0));
        assert!(throttle.check(Some(same_prefix), None, at(1)).is_some());
        assert!(throttle.check(Some(other_prefix), None, at(1)).is_none());
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap_or(one);
        throttle.failed(Some(mapped), None, at(0));
        assert!(throttle
            .check(Some(IpAddr::from([192, 0, 2, 7])), None, at(1))
            .is_some());
    }

    #[test]
    fn memory_is_bounded() {
        let mut throttle = LoginThrottle::new(5, 5);
        for n in 0..(LOGIN_THROTTLE_ENTRIES_MAX as u32 + 100) {
            throttle.failed(
                Some(IpAddr::from(n.to_be_bytes())),
                Some(&n.to_string()),
                at(0),
            );
        }
        assert_eq!(throttle.len(), 2 * LOGIN_THROTTLE_ENTRIES_MAX);
        assert_eq!(throttle.addresses.order.len(), LOGIN_THROTTLE_ENTRIES_MAX);
        // The oldest were forgotten, the newest are kept.
        assert!(!throttle.users.records.contains_key("0"));
        assert!(throttle.users.records.contains_key("10099"));
    }
}
