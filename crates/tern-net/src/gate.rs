//! Admission at accept: caps on connections in total and per source address, on the rate of
//! new connections per address, and a fair share of the free slots for connections that have
//! not sent their CONNECT yet. A refused socket is closed before any byte is read.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Connection limits applied when a socket is accepted; 0 means no limit, and the default is
/// no limit at all.
///
/// The per-address caps are a hardening choice for clients that each have an address of their
/// own: a fleet behind one carrier-grade NAT or a load balancer, and a load test from one host,
/// arrive from one address. What keeps one address from taking every slot with connections
/// that never send CONNECT is the fair share (see [`PENDING_PER_ADDRESS_FLOOR`]), which applies
/// whenever `connections_max` is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Open connections, all listeners together. `tern serve` derives its default from the
    /// process's open-file limit; a library user sets it (0: only the system's limit applies,
    /// and no fair share is kept).
    pub connections_max: usize,
    /// Open connections from one source address.
    pub connections_per_address_max: usize,
    /// New connections accepted from one source address per second.
    pub connection_rate_per_address_max: u32,
}

/// Connections from one address that have not sent their CONNECT yet may always number this
/// many; past it, an address whose waiting connections are as many as the free slots gets no
/// more until some of them send CONNECT, close or time out (`connect_timeout`). One address
/// flooding the broker with sockets that never speak can so take at most half of what was
/// free (and this floor), never every slot; clients from other addresses keep the rest. The
/// floor keeps a burst of honest clients from one address from being refused near the total
/// cap: a connection counts as waiting from its accept until its task has read its CONNECT,
/// and the accept loop takes up to 128 sockets before their tasks run.
pub const PENDING_PER_ADDRESS_FLOOR: usize = 256;

/// Per-address bookkeeping.
#[derive(Debug)]
struct Address {
    open: usize,
    /// Of `open`, those that have not sent their CONNECT yet.
    pending: usize,
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
    /// It has not sent its CONNECT yet.
    pending: Cell<bool>,
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
        let free = limits.connections_max.saturating_sub(state.open);
        if state.addresses.len() > ADDRESSES_TRACKED_SOFT_MAX {
            state
                .addresses
                .retain(|_, a| a.open > 0 || now.duration_since(a.window_start) < RATE_WINDOW);
        }
        let entry = state.addresses.entry(address).or_insert(Address {
            open: 0,
            pending: 0,
            window_start: now,
            accepted_in_window: 0,
        });
        if limits.connections_max != 0
            && entry.pending >= PENDING_PER_ADDRESS_FLOOR
            && entry.pending >= free
        {
            return Err(format!(
                "{} connections from this address have not sent CONNECT, as many as the free \
                 slots ({free} of {})",
                entry.pending, limits.connections_max
            ));
        }
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
        entry.pending += 1;
        state.open += 1;
        Ok(Admitted {
            gate: Rc::clone(self),
            address,
            pending: Cell::new(true),
        })
    }

    /// One connection from `address` has sent its CONNECT.
    fn settle_pending(&self, address: IpAddr) {
        if let Some(entry) = self.state.borrow_mut().addresses.get_mut(&address) {
            entry.pending = entry.pending.saturating_sub(1);
        }
    }
}

impl Admitted {
    /// The connection has sent its CONNECT: it no longer counts against its address's share
    /// of the free slots.
    #[inline]
    pub(crate) fn connect_received(&self) {
        if self.pending.get() {
            self.pending.set(false);
            self.gate.settle_pending(self.address);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut state = self.gate.state.borrow_mut();
        state.open = state.open.saturating_sub(1);
        if let Some(entry) = state.addresses.get_mut(&self.address) {
            entry.open = entry.open.saturating_sub(1);
            if self.pending.get() {
                entry.pending = entry.pending.saturating_sub(1);
            }
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

    /// Admits from `address` until refused; the admitted connections and the reason.
    fn fill(gate: &Rc<Gate>, address: IpAddr, now: Instant) -> (Vec<Admitted>, String) {
        let mut admitted = Vec::new();
        loop {
            match gate.admit(address, now) {
                Ok(connection) => admitted.push(connection),
                Err(reason) => return (admitted, reason),
            }
        }
    }

    #[test]
    fn the_defaults_limit_nothing_per_address() {
        let gate = Gate::new(AdmissionLimits::default());
        let now = Instant::now();
        let admitted: Vec<_> = (0..5_000).map(|_| gate.admit(A, now)).collect();
        assert!(admitted.iter().all(Result::is_ok));
    }

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

    #[test]
    fn one_address_waiting_for_connect_takes_half_of_the_free_slots() {
        let gate = gate(2_000, 0, 0);
        let now = Instant::now();
        let (flood, reason) = fill(&gate, A, now);
        assert_eq!(flood.len(), 1_000, "{reason}");
        assert!(reason.contains("have not sent CONNECT"), "{reason}");
        // Clients from another address that send their CONNECT get the other half.
        let mut others = Vec::new();
        while let Ok(connection) = gate.admit(B, now) {
            connection.connect_received();
            others.push(connection);
        }
        assert_eq!(others.len(), 1_000);
        assert!(gate
            .admit(B, now)
            .is_err_and(|reason| reason.contains("connection limit reached")));
    }

    #[test]
    fn connections_that_sent_connect_leave_the_share() {
        let gate = gate(2_000, 0, 0);
        let now = Instant::now();
        let (fleet, _) = fill(&gate, A, now);
        fleet.iter().for_each(Admitted::connect_received);
        // Calling it again changes nothing.
        fleet[0].connect_received();
        // 1,000 open and connected: half of the 1,000 free slots may wait for CONNECT.
        let (more, _) = fill(&gate, A, now);
        assert_eq!(more.len(), 500);
        // Waiting connections that close give their place back.
        drop(more);
        let (again, _) = fill(&gate, A, now);
        assert_eq!(again.len(), 500);
        drop(again);
        // Every connection from one address is accepted up to the total cap when each sends
        // its CONNECT as it comes.
        let mut connected = fleet;
        while let Ok(connection) = gate.admit(A, now) {
            connection.connect_received();
            connected.push(connection);
        }
        assert_eq!(connected.len(), 2_000);
    }

    #[test]
    fn below_the_floor_an_address_may_always_wait() {
        let gate = gate(300, 0, 0);
        let now = Instant::now();
        let (burst, reason) = fill(&gate, A, now);
        assert_eq!(burst.len(), PENDING_PER_ADDRESS_FLOOR, "{reason}");
        let (others, _) = fill(&gate, B, now);
        assert_eq!(others.len(), 300 - PENDING_PER_ADDRESS_FLOOR);
    }
}
