//! The connection defaults at scale, against the real binary with no configuration: 20,000
//! connections from one address are all accepted (as far as the open-file limit allows), and
//! one address flooding the broker with sockets that never send CONNECT takes half of the free
//! slots and no more, while clients from another address connect and exchange messages; and a
//! burst of connects finds room in the listener's queue while the broker is not accepting.
//!
//! A test binary of its own: it holds thousands of descriptors, which would crowd out tests
//! sharing its process. Its clients bind loopback addresses of their own and ports outside
//! the system's ephemeral range (see [`SourcePorts`]), so it takes no port from tests in other
//! processes either.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tern_codec::{Connect, MqttString, Packet, ProtocolVersion, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use support::mqtt::{publish, RawClient};
use support::Tern;

/// Both tests hold thousands of descriptors in this process: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The connections a fleet behind one address must be able to make.
const FLEET: usize = 20_000;
/// Where the fleet comes from; the flood comes from 127.0.0.2, its victims from 127.0.0.1.
const FLEET_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 19, 1);
const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const BURST_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 19, 2);
/// What the broker keeps out of its default `connections_max` (crates/tern/src/process.rs).
const DESCRIPTOR_RESERVE: u64 = 1024;
/// Connection attempts in flight at once: enough to be quick, few enough to stay within the
/// listen backlog.
const CONNECTING_AT_ONCE: usize = 128;
const TIMEOUT: Duration = Duration::from_secs(30);

/// The default `connections_max` of a broker whose open-file limit is `limit`.
fn derived_connections_max(limit: u64) -> usize {
    (limit - DESCRIPTOR_RESERVE.min(limit / 2)).max(1) as usize
}

/// An MQTT 3.1.1 CONNECT with a clean session and no keep alive.
fn connect_bytes(client_id: &str) -> BytesMut {
    let connect = Connect {
        protocol_version: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 0,
        properties: Default::default(),
        client_id: MqttString::new(client_id).expect("client id"),
        will: None,
        username: None,
        password: None,
    };
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(connect))
        .encode(ProtocolVersion::V311, &mut out)
        .expect("encodes");
    out
}

/// Source ports of one loopback address, each bound explicitly, those outside the system's
/// ephemeral range first. Left to the kernel, connects from one address to one port take the
/// even ports of the range first and, once those are gone (about 14,000), scan every one of
/// them for each further connect: 19,000 connections took 11 s of mostly kernel time instead
/// of about one, and held ports that sockets of other processes draw from.
struct SourcePorts {
    address: Ipv4Addr,
    ports: Vec<u16>,
    next: AtomicUsize,
}

impl SourcePorts {
    fn new(address: Ipv4Addr) -> Self {
        let range =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
        let mut bounds = range.split_whitespace().map(str::parse::<u16>);
        let ephemeral = match (bounds.next(), bounds.next()) {
            (Some(Ok(low)), Some(Ok(high))) => low..=high,
            _ => 32_768..=60_999,
        };
        let (inside, outside): (Vec<u16>, Vec<u16>) =
            (1024..=u16::MAX).partition(|port| ephemeral.contains(port));
        Self {
            address,
            ports: outside.into_iter().chain(inside).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Connects to `broker` from the next source port no other socket holds.
    async fn connect(&self, broker: SocketAddr) -> io::Result<TcpStream> {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let port = *self
                .ports
                .get(i)
                .ok_or_else(|| io::Error::other("out of source ports"))?;
            let socket = TcpSocket::new_v4()?;
            match socket.bind(SocketAddr::from((self.address, port))) {
                Ok(()) => return socket.connect(broker).await,
                Err(error) if error.kind() == io::ErrorKind::AddrInUse => {}
                Err(error) => return Err(error),
            }
        }
    }
}

/// Connects from `source`, sends CONNECT and reads the whole CONNACK: `Ok(None)` if the
/// broker closed the connection instead.
async fn mqtt_connect(
    source: &SourcePorts,
    broker: SocketAddr,
    client_id: &str,
) -> io::Result<Option<TcpStream>> {
    let mut stream = source.connect(broker).await?;
    stream.write_all(&connect_bytes(client_id)).await?;
    let mut connack = [0u8; 4];
    match tokio::time::timeout(TIMEOUT, stream.read_exact(&mut connack)).await {
        Err(_) => Err(io::Error::other("no CONNACK and no close")),
        Ok(Ok(_)) if connack == [0x20, 0x02, 0x00, 0x00] => {
            // Reset when dropped: thousands of sockets left in TIME_WAIT would hold their
            // ports from the next run for a minute.
            stream.set_zero_linger()?;
            Ok(Some(stream))
        }
        Ok(Ok(_)) => Err(io::Error::other(format!("CONNACK {connack:?}"))),
        Ok(Err(error))
            if matches!(
                error.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ) =>
        {
            Ok(None)
        }
        Ok(Err(error)) => Err(error),
    }
}

/// Runs `count` copies of `open(i)` with [`CONNECTING_AT_ONCE`] in flight, in order of `i`
/// as far as they start; returns what they gave, in order of completion.
async fn open_many<T, F, Fut>(count: usize, open: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = T> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(open);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONNECTING_AT_ONCE.min(count) {
        let (next, open) = (Arc::clone(&next), Arc::clone(&open));
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return done;
                }
                done.push(open(i).await);
            }
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(done) = workers.join_next().await {
        all.extend(done.expect("worker"));
    }
    all
}

/// Writes `line` to standard error past the test harness's capture: how many connections a
/// test made depends on the machine, and the output says so even when the test passes.
fn say(line: String) {
    use std::io::Write;
    let _ = writeln!(io::stderr(), "{line}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Gives this process (and so the broker it starts) the open-file limit the fleet needs,
/// raising the hard limit where the system lets it; returns the limit the broker will raise
/// its own to, as it does: the hard limit, at most the kernel's ceiling (`fs.nr_open`).
fn raise_open_file_limit() -> u64 {
    let wanted = FLEET as u64 + DESCRIPTOR_RESERVE;
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(u64::MAX);
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("limit");
    if hard < wanted && setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_ok() {
        return wanted;
    }
    let limit = hard.min(ceiling);
    setrlimit(Resource::RLIMIT_NOFILE, limit, hard).expect("soft limit up to the hard one");
    limit
}

/// 20,000 connections from one address, all accepted by a broker started with no
/// configuration (and its default durable store). Where the hard open-file limit is too low
/// for 20,000 and cannot be raised (that needs `CAP_SYS_RESOURCE`; on a machine whose hard
/// limit is 20,000 the broker holds 18,976), the test opens as many as the limit allows the
/// broker, which must be exactly its default `connections_max`: every one of them accepted,
/// and the next refused. It says how many it opens.
#[test]
fn twenty_thousand_connections_from_one_address_are_accepted_by_default() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let limit = raise_open_file_limit();
    let cap = derived_connections_max(limit);
    let fleet = FLEET.min(cap);
    say(format!(
        "open-file limit {limit}: the broker may hold {cap} connections; opening {fleet} from \
         {FLEET_SOURCE}{}{}",
        if fleet < FLEET {
            format!(" (not {FLEET}: the limit allows no more)")
        } else {
            String::new()
        },
        if fleet == cap {
            ", then one more, which must be refused"
        } else {
            ""
        }
    ));
    let data = tempfile::tempdir().expect("data directory");
    let tern = Tern::start_with_data(data.path());
    let broker = SocketAddr::from(([127, 0, 0, 1], tern.port));
    let source = Arc::new(SourcePorts::new(FLEET_SOURCE));

    runtime().block_on(async {
        let from = Arc::clone(&source);
        let opened = open_many(fleet, move |i| {
            let from = Arc::clone(&from);
            async move { mqtt_connect(&from, broker, &format!("fleet-{i}")).await }
        })
        .await;
        let accepted: Vec<TcpStream> = opened
            .into_iter()
            .filter_map(|outcome| outcome.expect("connects"))
            .collect();
        assert_eq!(accepted.len(), fleet, "connections accepted of {fleet}");
        if fleet == cap {
            let next = mqtt_connect(&source, broker, "one-too-many")
                .await
                .expect("connects");
            assert!(next.is_none(), "connection {} accepted", cap + 1);
            assert!(tern.wait_for_log(&format!("connection limit reached ({cap} open)"), TIMEOUT));
        }
    });
    let line = tern
        .wait_for_log_line("connections_max ", TIMEOUT)
        .expect("the figure is logged at start-up");
    assert!(
        line.contains(&format!(
            "connections_max {cap}: the open-file limit ({limit})"
        )),
        "{line}"
    );
}

/// A broker whose open-file limit is 3,072 (so `connections_max` is 2,048 by default) is
/// flooded from 127.0.0.2 with 2,600 sockets that never send CONNECT: it keeps half of its
/// slots for them (1,024), refusing the rest at accept, and clients from 127.0.0.1 still
/// connect and exchange QoS 1 messages.
#[test]
fn a_flood_from_one_address_leaves_room_for_others() {
    const LIMIT: u64 = 3_072;
    const FLOOD: usize = 2_600;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cap = derived_connections_max(LIMIT);
    assert!(FLOOD > cap, "the flood must outnumber the slots");
    let tern = Tern::start_with_open_file_limit(LIMIT);
    let broker = SocketAddr::from(([127, 0, 0, 1], tern.port));
    let source = Arc::new(SourcePorts::new(FLOOD_SOURCE));
    let rt = runtime();
    // Held as standard sockets (non-blocking), read below without the runtime.
    let flood = rt.block_on(open_many(FLOOD, move |_| {
        let source = Arc::clone(&source);
        async move {
            let stream = source.connect(broker).await.expect("flood connects");
            stream.set_zero_linger().expect("linger");
            stream.into_std().expect("a standard socket")
        }
    }));

    // The victims connect after every flood socket is in the broker's accept queue, so the
    // broker has taken (or refused) the whole flood before the first of them.
    let mut subscriber = RawClient::connect(tern.port, "victim-sub", true, 0)
        .expect("a client from another address connects")
        .0;
    subscriber.subscribe("victims/#", QoS::AtLeastOnce).unwrap();
    let mut publishers: Vec<RawClient> = (0..8)
        .map(|n| {
            RawClient::connect(tern.port, &format!("victim-pub-{n}"), true, 0)
                .expect("a client from another address connects")
                .0
        })
        .collect();
    for (n, publisher) in publishers.iter_mut().enumerate() {
        for m in 0..10u8 {
            let id = publisher.fresh_id();
            let packet = publish(
                &format!("victims/{n}"),
                vec![m],
                QoS::AtLeastOnce,
                false,
                Some(id),
            );
            publisher.send(&packet).unwrap();
        }
    }
    assert_eq!(subscriber.receive_acked(80).unwrap().len(), 80);

    // Flood sockets the broker closed read as ended (or reset); the kept ones would block.
    let mut closed = 0;
    for mut stream in &flood {
        let mut byte = [0u8; 1];
        match io::Read::read(&mut stream, &mut byte) {
            Ok(0) => closed += 1,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => closed += 1,
            Ok(_) => panic!("the broker wrote to a socket that sent nothing"),
        }
    }
    // Far within the CONNECT deadline (10 s): none of the kept ones timed out yet.
    assert_eq!(FLOOD - closed, cap / 2, "flood sockets kept of {cap} slots");
    assert!(tern.wait_for_log("have not sent CONNECT", TIMEOUT));
    assert!(tern.wait_for_log(&format!("connections_max {cap}:"), TIMEOUT));
}

/// Sends `signal` (`STOP`, `CONT`) to the broker.
fn signal(tern: &Tern, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(tern.pid().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal}");
}

/// While the broker is stopped (`SIGSTOP`: it accepts nothing), a burst of 1,000 connects
/// completes its handshakes in the kernel: the listen queue holds them all (as many as
/// `net.core.somaxconn` allows, 4,096 by default), where a queue of 128 would leave the rest
/// retrying their SYNs second after second. Once the broker runs again, it serves them.
#[test]
fn a_burst_of_connects_waits_in_the_listen_queue() {
    const BURST: usize = 1_000;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(4_096);
    let burst = BURST.min(somaxconn);
    say(format!(
        "net.core.somaxconn {somaxconn}: {burst} connects while the broker is stopped"
    ));
    let tern = Tern::start();
    let broker = SocketAddr::from(([127, 0, 0, 1], tern.port));
    let source = Arc::new(SourcePorts::new(BURST_SOURCE));
    let rt = runtime();
    signal(&tern, "STOP");
    let queued = rt.block_on(async {
        let source = Arc::clone(&source);
        tokio::time::timeout(
            TIMEOUT,
            open_many(burst, move |_| {
                let source = Arc::clone(&source);
                async move { source.connect(broker).await }
            }),
        )
        .await
    });
    signal(&tern, "CONT");
    let queued = queued.expect("every connect of the burst completed while the broker slept");
    assert_eq!(queued.into_iter().filter(Result::is_ok).count(), burst);
    // Served once it runs: a client behind the burst connects (the burst's sockets, which
    // send nothing, wait for their CONNECT deadline).
    rt.block_on(async {
        let next = mqtt_connect(&source, broker, "after-the-burst")
            .await
            .expect("connects");
        assert!(next.is_some(), "served after the burst");
    });
}
