//! Admission at accept: caps on connections in total and per source address, and on the rate
//! of new connections per address. A refused socket is closed before any byte is read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Connection limits applied when a socket is accepted; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Open connections, all listeners together.
    pub connections_max: usize,
    /// Open connections from one source address.
    pub connections_per_address_max: usize,
    /// New connections accepted from one source address per second.
    pub connection_rate_per_address_max: u32,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            connections_max: 10_000,
            connections_per_address_max: 1_000,
            connection_rate_per_address_max: 500,
        }
    }
}

/// Per-address bookkeeping.
#[derive(Debug)]
struct Address {
    open: usize,
    window_start: Instant,
    accepted_in_window: u32,
}

#[derive(Debug)]
struct State {
    open: usize,
    addresses: HashMap<IpAddr, Address>,
}

/// The admission state shared by every listener.
#[derive(Debug)]
pub(crate) struct Gate {
    limits: AdmissionLimits,
    state: RefCell<State>,
}

/// A connection counted against the limits until it is dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    gate: Rc<Gate>,
    address: IpAddr,
}

const RATE_WINDOW: Duration = Duration::from_secs(1);
/// Above this many tracked addresses, idle ones are forgotten.
const ADDRESSES_TRACKED_SOFT_MAX: usize = 4096;

impl Gate {
    pub(crate) fn new(limits: AdmissionLimits) -> Rc<Self> {
        Rc::new(Self {
            limits,
            state: RefCell::new(State {
                open: 0,
                addresses: HashMap::new(),
            }),
        })
    }

    /// Counts a new connection from `address`, or says why it is refused.
    pub(crate) fn admit(
        self: &Rc<Self>,
        address: IpAddr,
        now: Instant,
    ) -> Result<Admitted, String> {
        let limits = self.limits;
        let mut state = self.state.borrow_mut();
        if limits.connections_max != 0 && state.open >= limits.connections_max {
            return Err(format!(
                "connection limit reached ({} open)",
                limits.connections_max
            ));
        }
        if state.addresses.len() > ADDRESSES_TRACKED_SOFT_MAX {
            state
                .addresses
                .retain(|_, a| a.open > 0 || now.duration_since(a.window_start) < RATE_WINDOW);
        }
        let entry = state.addresses.entry(address).or_insert(Address {
            open: 0,
            window_start: now,
            accepted_in_window: 0,
        });
        if limits.connections_per_address_max != 0
            && entry.open >= limits.connections_per_address_max
        {
            return Err(format!(
                "too many connections from this address ({} open)",
                entry.open
            ));
        }
        if now.duration_since(entry.window_start) >= RATE_WINDOW {
            entry.window_start = now;
            entry.accepted_in_window = 0;
        }
        if limits.connection_rate_per_address_max != 0
            && entry.accepted_in_window >= limits.connection_rate_per_address_max
        {
            return Err(format!(
                "connection rate from this address above {} per second",
                limits.connection_rate_per_address_max
            ));
        }
        entry.accepted_in_window += 1;
        entry.open += 1;
        state.open += 1;
        Ok(Admitted {
            gate: Rc::clone(self),
            address,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut state = self.gate.state.borrow_mut();
        state.open = state.open.saturating_sub(1);
        if let Some(entry) = state.addresses.get_mut(&self.address) {
            entry.open = entry.open.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(total: usize, per_address: usize, rate: u32) -> Rc<Gate> {
        Gate::new(AdmissionLimits {
            connections_max: total,
            connections_per_address_max: per_address,
            connection_rate_per_address_max: rate,
        })
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn total_cap_counts_every_address_and_frees_on_drop() {
        let gate = gate(2, 0, 0);
        let now = Instant::now();
        let first = gate.admit(A, now);
        let _second = gate.admit(B, now);
        assert!(first.is_ok());
        assert!(gate.admit(B, now).is_err());
        drop(first);
        assert!(gate.admit(B, now).is_ok());
    }

    #[test]
    fn per_address_cap_leaves_other_addresses_alone() {
        let gate = gate(0, 1, 0);
        let now = Instant::now();
        let _a = gate.admit(A, now);
        assert!(gate.admit(A, now).is_err());
        assert!(gate.admit(B, now).is_ok());
    }

    #[test]
    fn rate_per_address_resets_after_a_second() {
        let gate = gate(0, 0, 2);
        let now = Instant::now();
        assert!(gate.admit(A, now).is_ok());
        assert!(gate.admit(A, now).is_ok());
        let refused = gate.admit(A, now + Duration::from_millis(500));
        assert!(refused.is_err_and(|reason| reason.contains("rate")));
        assert!(gate.admit(B, now).is_ok());
        assert!(gate.admit(A, now + Duration::from_millis(1000)).is_ok());
    }
}
