//! Test infrastructure for the client's fault-injection suite: a TCP proxy that drops, resets
//! or blackholes connections after a random number of forwarded bytes (the launcher for
//! Debian's `mosquitto` it runs against is in `support::mosquitto`).
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to a connection when its byte budget runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Close both sides (FIN).
    Drop,
    /// Abort both sides (RST).
    Reset,
    /// Stop forwarding without closing: neither TCP end notices.
    Blackhole,
}

/// Counts of injected faults, by kind and by where they struck.
#[derive(Debug, Default)]
pub(crate) struct FaultCounts {
    pub(crate) drop: AtomicUsize,
    pub(crate) reset: AtomicUsize,
    pub(crate) blackhole: AtomicUsize,
    /// Faults before the CONNECT packet was fully forwarded.
    pub(crate) mid_connect: AtomicUsize,
    pub(crate) connections: AtomicUsize,
}

impl FaultCounts {
    pub(crate) fn total(&self) -> usize {
        self.drop.load(Ordering::Relaxed)
            + self.reset.load(Ordering::Relaxed)
            + self.blackhole.load(Ordering::Relaxed)
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "{} faults over {} connections: {} drops, {} resets, {} blackholes, {} mid-CONNECT",
            self.total(),
            self.connections.load(Ordering::Relaxed),
            self.drop.load(Ordering::Relaxed),
            self.reset.load(Ordering::Relaxed),
            self.blackhole.load(Ordering::Relaxed),
            self.mid_connect.load(Ordering::Relaxed),
        )
    }
}

/// A proxy in front of a broker, injecting one fault per connection after a random budget of
/// forwarded bytes (seeded, so a failing run can be replayed with the printed seed).
pub(crate) struct FaultProxy {
    pub(crate) port: u16,
    pub(crate) counts: Arc<FaultCounts>,
    /// Blackholed connections stay open (and unread) until the proxy is dropped.
    held: Arc<Mutex<Vec<(TcpStream, TcpStream)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Proxies to `127.0.0.1:upstream`. Budgets are uniform in `0..budget_max` bytes, or in
    /// `0..40` for one connection in six, which cuts the CONNECT or CONNACK itself.
    pub(crate) async fn start(upstream: u16, seed: u64, budget_max: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let port = listener.local_addr().expect("proxy address").port();
        let counts = Arc::new(FaultCounts::default());
        let held = Arc::new(Mutex::new(Vec::new()));
        let (task_counts, task_held) = (counts.clone(), held.clone());
        let task = tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed);
            loop {
                let Some(pair) = accept_pair(&listener, upstream).await else {
                    return;
                };
                let Some((client, broker)) = pair else {
                    continue;
                };
                let fault = match rng.u8(0..10) {
                    0..=3 => Fault::Drop,
                    4..=7 => Fault::Reset,
                    _ => Fault::Blackhole,
                };
                // One connection in six is cut within its first bytes: in the middle of
                // CONNECT or CONNACK.
                let budget = if rng.u8(0..6) == 0 {
                    rng.usize(0..40)
                } else {
                    rng.usize(0..budget_max)
                };
                task_counts.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(pipe(
                    client,
                    broker,
                    budget,
                    fault,
                    task_counts.clone(),
                    task_held.clone(),
                ));
            }
        });
        Self {
            port,
            counts,
            held,
            task,
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(mut held) = self.held.lock() {
            held.clear();
        }
    }
}

/// The next client and its own connection to the broker (Nagle off on both); `None` when the
/// listener fails, `Some(None)` when the broker refused this one.
async fn accept_pair(
    listener: &TcpListener,
    upstream: u16,
) -> Option<Option<(TcpStream, TcpStream)>> {
    let (client, _) = listener.accept().await.ok()?;
    let Ok(broker) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return Some(None);
    };
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    Some(Some((client, broker)))
}

async fn pipe(
    mut client: TcpStream,
    mut broker: TcpStream,
    budget: usize,
    fault: Fault,
    counts: Arc<FaultCounts>,
    held: Arc<Mutex<Vec<(TcpStream, TcpStream)>>>,
) {
    let mut remaining = budget;
    let mut to_broker = 0usize;
    let mut up = vec![0u8; 4096];
    let mut down = vec![0u8; 4096];
    loop {
        if remaining == 0 {
            break;
        }
        tokio::select! {
            read = client.read(&mut up) => {
                let Ok(n) = read else { return };
                if n == 0 { return }
                let k = n.min(remaining);
                if broker.write_all(&up[..k]).await.is_err() { return }
                remaining -= k;
                to_broker += k;
            }
            read = broker.read(&mut down) => {
                let Ok(n) = read else { return };
                if n == 0 { return }
                let k = n.min(remaining);
                if client.write_all(&down[..k]).await.is_err() { return }
                remaining -= k;
            }
        }
    }
    // A CONNECT from these tests is at least 30 bytes; fewer forwarded means it was cut.
    if to_broker < 30 {
        counts.mid_connect.fetch_add(1, Ordering::Relaxed);
    }
    match fault {
        Fault::Drop => {
            counts.drop.fetch_add(1, Ordering::Relaxed);
        }
        Fault::Reset => {
            counts.reset.fetch_add(1, Ordering::Relaxed);
            let _ = client.set_zero_linger();
            let _ = broker.set_zero_linger();
        }
        Fault::Blackhole => {
            counts.blackhole.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut held) = held.lock() {
                held.push((client, broker));
            }
        }
    }
}

/// What a [`LinkProxy`] does to its traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LinkState {
    /// Bytes read from either side are dropped, nothing is closed.
    blackholed: bool,
    /// Connections opened before the latest reset are aborted (RST).
    resets: u64,
}

/// A proxy for one link that forwards faithfully until told to blackhole it: then every
/// connection through it, old or new, stops carrying bytes both ways without closing, and
/// after the blackhole's duration every such connection is reset (RST) and forwarding resumes
/// for new ones: a route that goes dark and then comes back.
pub(crate) struct LinkProxy {
    pub(crate) port: u16,
    state: tokio::sync::watch::Sender<LinkState>,
    /// Bytes dropped while blackholed.
    pub(crate) dropped: Arc<AtomicUsize>,
    /// Connections accepted so far.
    pub(crate) connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl LinkProxy {
    /// Proxies to `127.0.0.1:upstream`.
    pub(crate) async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let port = listener.local_addr().expect("proxy address").port();
        let (state, _) = tokio::sync::watch::channel(LinkState {
            blackholed: false,
            resets: 0,
        });
        let dropped = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (task_state, task_dropped, task_connections) =
            (state.clone(), dropped.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Some(pair) = accept_pair(&listener, upstream).await else {
                    return;
                };
                let Some((client, broker)) = pair else {
                    continue;
                };
                task_connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(link_pipe(
                    client,
                    broker,
                    task_state.subscribe(),
                    task_dropped.clone(),
                ));
            }
        });
        Self {
            port,
            state,
            dropped,
            connections,
            task,
        }
    }

    /// Blackholes the link from now on; after `duration`, resets every connection made before
    /// and forwards again. Returns once the blackhole is in force.
    pub(crate) fn blackhole_then_reset(&self, duration: Duration) {
        self.state.send_modify(|state| state.blackholed = true);
        let state = self.state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            state.send_modify(|state| {
                state.blackholed = false;
                state.resets += 1;
            });
        });
    }

    /// Whether the link is blackholed now.
    pub(crate) fn blackholed(&self) -> bool {
        self.state.borrow().blackholed
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Every connection task ends with its link at the next reset.
        self.state.send_modify(|state| state.resets += 1);
    }
}

async fn link_pipe(
    mut client: TcpStream,
    mut broker: TcpStream,
    mut state: tokio::sync::watch::Receiver<LinkState>,
    dropped: Arc<AtomicUsize>,
) {
    let born = state.borrow().resets;
    let mut up = vec![0u8; 4096];
    let mut down = vec![0u8; 4096];
    loop {
        tokio::select! {
            read = client.read(&mut up) => {
                let Ok(n) = read else { return };
                if n == 0 { return }
                if state.borrow().blackholed {
                    dropped.fetch_add(n, Ordering::Relaxed);
                } else if broker.write_all(&up[..n]).await.is_err() {
                    return;
                }
            }
            read = broker.read(&mut down) => {
                let Ok(n) = read else { return };
                if n == 0 { return }
                if state.borrow().blackholed {
                    dropped.fetch_add(n, Ordering::Relaxed);
                } else if client.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
            changed = state.changed() => {
                if changed.is_err() || state.borrow().resets > born {
                    let _ = client.set_zero_linger();
                    let _ = broker.set_zero_linger();
                    return;
                }
            }
        }
    }
}
