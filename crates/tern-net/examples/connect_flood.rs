//! A connection flood from one address, and a probe from another, for benchmarks
//! (BENCHMARKS.md, "Connections from one address"; bench/one_address.sh runs both).
//!
//! `connect_flood flood HOST:PORT SECONDS CONCURRENCY idle|churn`: CONCURRENCY sockets from
//! this host's default address (raise `ulimit -n` for many), again and again for SECONDS.
//! `idle` connects and never sends a byte, connecting again when the broker closes the socket;
//! `churn` connects and resets the connection at once. Prints the connects made and their
//! rate, and for `idle` how many the broker closed within a second (refused at accept) and
//! the most held open at once.
//!
//! `connect_flood probe SOURCE HOST:PORT SECONDS`: from SOURCE (another loopback address,
//! e.g. 127.0.0.2), every 10 ms opens a connection (CONNECT, CONNACK, reset) and sends one
//! QoS 0 message around through a subscription on a connection kept open. Prints the connects,
//! those refused, and percentiles of the connect time and of the round trip.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tern_codec::{
    Connect, ConnectProperties, Decoder, MqttString, Packet, PacketId, ProtocolVersion, Publish,
    PublishProperties, QoS, Subscribe, SubscribeProperties, Subscription, SubscriptionList,
    SubscriptionOptions, TopicFilter, TopicName,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

type Error = Box<dyn std::error::Error>;

const USAGE: &str = "usage: connect_flood flood HOST:PORT SECONDS CONCURRENCY idle|churn\n       \
                     connect_flood probe SOURCE HOST:PORT SECONDS";
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// A flood socket the broker closes sooner than this was refused at accept (the CONNECT
/// deadline is seconds).
const REFUSED_WITHIN: Duration = Duration::from_secs(1);
const VERSION: ProtocolVersion = ProtocolVersion::V311;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let deadline_in = |seconds: &str| -> Result<Instant, Error> {
        Ok(Instant::now() + Duration::from_secs_f64(seconds.parse()?))
    };
    match args.as_slice() {
        [mode, addr, seconds, concurrency, kind] if mode == "flood" => {
            let idle = match kind.as_str() {
                "idle" => true,
                "churn" => false,
                _ => return Err(USAGE.into()),
            };
            let (addr, deadline) = (addr.parse()?, deadline_in(seconds)?);
            local.block_on(&runtime, flood(addr, deadline, concurrency.parse()?, idle))
        }
        [mode, source, addr, seconds] if mode == "probe" => {
            let (source, addr, deadline) = (source.parse()?, addr.parse()?, deadline_in(seconds)?);
            local.block_on(&runtime, probe(source, addr, deadline))
        }
        _ => Err(USAGE.into()),
    }
}

#[derive(Default)]
struct FloodCounts {
    connects: Cell<u64>,
    failed: Cell<u64>,
    refused: Cell<u64>,
    held: Cell<u64>,
    held_max: Cell<u64>,
}

fn add(count: &Cell<u64>, n: i64) {
    count.set(count.get().saturating_add_signed(n));
}

async fn flood(
    addr: SocketAddr,
    deadline: Instant,
    concurrency: usize,
    idle: bool,
) -> Result<(), Error> {
    let counts = Rc::new(FloodCounts::default());
    let started = Instant::now();
    let until = tokio::time::Instant::from_std(deadline);
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let counts = Rc::clone(&counts);
        workers.push(tokio::task::spawn_local(async move {
            while Instant::now() < deadline {
                let Ok(Ok(mut stream)) =
                    tokio::time::timeout_at(until, TcpStream::connect(addr)).await
                else {
                    add(&counts.failed, 1);
                    continue;
                };
                add(&counts.connects, 1);
                // Reset, not closed: the flood's own ports are not left in TIME_WAIT.
                let _ = stream.set_zero_linger();
                if !idle {
                    continue;
                }
                let opened = Instant::now();
                add(&counts.held, 1);
                counts
                    .held_max
                    .set(counts.held_max.get().max(counts.held.get()));
                let mut byte = [0u8; 1];
                if tokio::time::timeout_at(until, stream.read(&mut byte))
                    .await
                    .is_ok()
                    && opened.elapsed() < REFUSED_WITHIN
                {
                    add(&counts.refused, 1);
                }
                add(&counts.held, -1);
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let connects = counts.connects.get();
    println!(
        "connect_flood {}: {connects} connects in {elapsed:.1} s ({:.0}/s), {} closed by the \
         broker within 1 s, {} held at most, {} failed",
        if idle { "idle" } else { "churn" },
        connects as f64 / elapsed,
        counts.refused.get(),
        counts.held_max.get(),
        counts.failed.get()
    );
    Ok(())
}

/// One connection of the probe.
struct Client {
    stream: TcpStream,
    decoder: Decoder,
    buf: BytesMut,
}

impl Client {
    /// Connects from `source` and waits for the CONNACK; `None` if the broker closed instead.
    async fn connect(source: IpAddr, addr: SocketAddr, id: &str) -> Result<Option<Self>, Error> {
        let socket = match source {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut client = Self {
            stream,
            decoder: Decoder::new(VERSION, 1 << 20),
            buf: BytesMut::new(),
        };
        client
            .send(Packet::Connect(Box::new(Connect {
                protocol_version: VERSION,
                clean_start: true,
                keep_alive: 0,
                properties: ConnectProperties::default(),
                client_id: MqttString::new(id)?,
                will: None,
                username: None,
                password: None::<Bytes>,
            })))
            .await?;
        match client.next().await {
            Ok(Packet::ConnAck(_)) => Ok(Some(client)),
            Ok(other) => Err(format!("expected CONNACK, got {other:?}").into()),
            Err(_) => Ok(None),
        }
    }

    async fn send(&mut self, packet: Packet) -> Result<(), Error> {
        let mut out = BytesMut::new();
        packet.encode(VERSION, &mut out)?;
        self.stream.write_all(&out).await?;
        Ok(())
    }

    async fn next(&mut self) -> Result<Packet, Error> {
        loop {
            if let Some(packet) = self.decoder.decode(&mut self.buf)? {
                return Ok(packet);
            }
            let read = tokio::time::timeout(PROBE_TIMEOUT, self.stream.read_buf(&mut self.buf));
            if read.await?? == 0 {
                return Err("closed".into());
            }
        }
    }
}

async fn probe(source: IpAddr, addr: SocketAddr, deadline: Instant) -> Result<(), Error> {
    let topic = "probe/round-trip";
    let mut echo = Client::connect(source, addr, "probe-echo")
        .await?
        .ok_or("the probe's own connection was refused")?;
    echo.send(Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).ok_or("packet id")?,
        properties: SubscribeProperties::default(),
        subscriptions: SubscriptionList::new([&Subscription {
            filter: TopicFilter::new(MqttString::new(topic)?)?,
            options: SubscriptionOptions::qos(QoS::AtMostOnce),
        }]),
    }))
    .await?;
    while !matches!(echo.next().await?, Packet::SubAck(_)) {}
    let (mut connects, mut round_trips, mut refused) = (Vec::new(), Vec::new(), 0u64);
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    let mut n = 0u64;
    while Instant::now() < deadline {
        tick.tick().await;
        n += 1;
        let started = Instant::now();
        match Client::connect(source, addr, &format!("probe-{n}")).await? {
            Some(client) => {
                connects.push(started.elapsed());
                client.stream.set_zero_linger()?;
            }
            None => refused += 1,
        }
        let started = Instant::now();
        echo.send(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: TopicName::new(MqttString::new(topic)?)?,
            packet_id: None,
            properties: PublishProperties::default(),
            payload: Bytes::copy_from_slice(&n.to_be_bytes()),
        }))
        .await?;
        loop {
            if let Packet::Publish(publish) = echo.next().await? {
                if publish.payload.as_ref() == n.to_be_bytes() {
                    break;
                }
            }
        }
        round_trips.push(started.elapsed());
    }
    println!(
        "connect_flood probe: {} connects ({refused} refused), connect µs {}, round trip µs {}",
        connects.len(),
        percentiles(&mut connects),
        percentiles(&mut round_trips)
    );
    Ok(())
}

/// "p50 / p99 / max" in microseconds.
fn percentiles(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "-".to_owned();
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_micros();
    format!("{} / {} / {}", at(0.5), at(0.99), at(1.0))
}
