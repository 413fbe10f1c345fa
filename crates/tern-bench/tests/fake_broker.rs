//! The open-loop mode against a broker that misbehaves on purpose, by sequence number: it
//! acknowledges and drops some messages, delivers some twice, delivers some out of order,
//! refuses some and never answers some. The report must count each kind exactly, for every
//! publisher and every subscriber group, at QoS 1 and QoS 2 (acknowledged at PUBREC); and the
//! same broker delivering everything once, in order, must be reported as losing nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::BytesMut;
use clap::Parser;
use tern_bench::{BenchArgs, Report, Scenario};
use tern_codec::{
    Ack, ConnAck, ConnAckProperties, Decoder, Packet, PacketId, ProtocolVersion, Publish, QoS,
    ReasonCode, SubAck,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the broker does with a message, by its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Deliver,
    /// Acknowledged, never delivered: lost.
    Drop,
    /// Acknowledged, delivered twice.
    Twice,
    /// Refused (reason 0x97): not owed.
    Refuse,
    /// Delivered, never answered: not owed, so not lost either.
    Unanswered,
    /// Acknowledged, held until the next message has been delivered: out of order.
    Hold,
}

/// What the misbehaving broker does with each message.
fn fate(seq: u64) -> Fate {
    match seq % 10 {
        3 => Fate::Drop,
        5 => Fate::Twice,
        6 => Fate::Unanswered,
        7 => Fate::Refuse,
        8 => Fate::Hold,
        _ => Fate::Deliver,
    }
}

fn seq_of(publish: &Publish) -> u64 {
    u64::from_be_bytes(publish.payload[4..12].try_into().unwrap())
}

type Subscribers = Rc<RefCell<Vec<mpsc::UnboundedSender<Publish>>>>;

/// Serves one connection (a publisher, a subscriber, or both), deciding each message's `fate`.
async fn serve(mut stream: TcpStream, subscribers: Subscribers, fate: fn(u64) -> Fate) {
    let version = ProtocolVersion::V5;
    let mut decoder = Decoder::new(version, u32::MAX);
    let mut rbuf = BytesMut::new();
    let (to_me, mut for_me) = mpsc::unbounded_channel::<Publish>();
    let mut held: Option<Publish> = None;
    let mut next_id: u16 = 0;
    loop {
        let mut out = BytesMut::new();
        let mut send = |packet: Packet| packet.encode(version, &mut out).unwrap();
        tokio::select! {
            read = stream.read_buf(&mut rbuf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
                while let Some(packet) = decoder.decode(&mut rbuf).unwrap() {
                    match packet {
                        Packet::Connect(_) => send(Packet::ConnAck(Box::new(ConnAck {
                            session_present: false,
                            reason_code: ReasonCode::Success,
                            properties: ConnAckProperties::default(),
                        }))),
                        Packet::Subscribe(s) => {
                            subscribers.borrow_mut().push(to_me.clone());
                            send(Packet::SubAck(SubAck {
                                packet_id: s.packet_id,
                                properties: Default::default(),
                                reason_codes: vec![ReasonCode::GrantedQos1],
                            }));
                        }
                        Packet::Publish(p) => {
                            let id = p.packet_id.unwrap();
                            let fate = fate(seq_of(&p));
                            let reason = if fate == Fate::Refuse {
                                ReasonCode::QuotaExceeded
                            } else {
                                ReasonCode::Success
                            };
                            let mut answer = Ack::new(id);
                            answer.reason_code = reason;
                            match (fate, p.qos) {
                                (Fate::Unanswered, _) => {}
                                (_, QoS::ExactlyOnce) => send(Packet::PubRec(answer)),
                                _ => send(Packet::PubAck(answer)),
                            }
                            let copies = match fate {
                                Fate::Drop | Fate::Refuse => 0,
                                Fate::Twice => 2,
                                Fate::Hold => {
                                    held = Some(p);
                                    continue;
                                }
                                Fate::Deliver | Fate::Unanswered => 1,
                            };
                            for subscriber in subscribers.borrow().iter() {
                                for _ in 0..copies {
                                    let _ = subscriber.send(p.clone());
                                }
                                if let Some(earlier) = held.clone() {
                                    let _ = subscriber.send(earlier);
                                }
                            }
                            held = None;
                        }
                        Packet::PubRel(rel) => send(Packet::PubComp(Ack::new(rel.packet_id))),
                        // A subscriber's acknowledgements, keep-alive pings: nothing to do.
                        _ => {}
                    }
                }
            }
            Some(mut publish) = for_me.recv() => {
                next_id = next_id.checked_add(1).unwrap_or(1);
                publish.qos = QoS::AtLeastOnce;
                publish.packet_id = PacketId::new(next_id);
                send(Packet::Publish(publish));
            }
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Starts the broker on its own thread; returns its port.
fn start_broker(fate: fn(u64) -> Fate) -> u16 {
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            port_tx.send(listener.local_addr().unwrap().port()).unwrap();
            let subscribers = Subscribers::default();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::task::spawn_local(serve(stream, Rc::clone(&subscribers), fate));
            }
        });
    });
    port_rx.recv().unwrap()
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

/// What a report must say about one publisher that sent `sent` messages to `groups` subscriber
/// groups: acknowledged, refused, delivered, lost, duplicated, out of order.
fn expected(sent: u64, groups: u64) -> [u64; 6] {
    let count = |f: Fate| (0..sent).filter(|&s| fate(s) == f).count() as u64;
    // A held message whose successor was never sent stays held: acknowledged, never delivered.
    let held_at_end = u64::from(sent > 0 && fate(sent - 1) == Fate::Hold);
    let refused = count(Fate::Refuse);
    let lost = count(Fate::Drop) + held_at_end;
    [
        sent - refused - count(Fate::Unanswered),
        refused,
        groups * (sent - refused - lost),
        groups * lost,
        groups * count(Fate::Twice),
        groups * (count(Fate::Hold) - held_at_end),
    ]
}

fn check(report: &Report, groups: u64) {
    assert_eq!(report.per_publisher.len(), report.publishers);
    let mut unanswered = 0;
    for p in &report.per_publisher {
        assert!(p.sent >= 20, "too few messages to meet every fate: {p:?}");
        let got = [
            p.acknowledged,
            p.refused,
            p.delivered,
            p.lost,
            p.duplicated,
            p.out_of_order,
        ];
        assert_eq!(got, expected(p.sent, groups), "{p:?}");
        unanswered += (0..p.sent).filter(|&s| fate(s) == Fate::Unanswered).count() as u64;
    }
    let lost: u64 = report.per_publisher.iter().map(|p| p.lost).sum();
    assert_eq!(report.lost, lost);
    assert!(report.lost > 0);
    assert_eq!(report.unacknowledged, unanswered);
    assert_eq!(report.subscribers_closed, 0);
}

fn run(fate: fn(u64) -> Fate, args: &[&str]) -> Report {
    let port = start_broker(fate).to_string();
    let cli = Cli::parse_from(
        [
            &[
                "bench",
                "--port",
                &port,
                "--mqtt",
                "5",
                "--open-loop",
                "--quiet",
            ][..],
            args,
        ]
        .concat(),
    );
    tern_bench::run(&cli.args, cli.args.scenarios[0]).unwrap()
}

// 2,000 messages a second for a quarter of a second: about 500 per publisher, so the 50 or so
// never answered stay well inside the 100-message window.
const PACE: [&str; 4] = ["--rate", "2000", "--duration", "0.25"];

#[test]
fn qos1_fan_in_counts_every_fate_per_publisher() {
    let args = [&["fan-in", "--qos", "1", "--publishers", "2"][..], &PACE].concat();
    let report = run(fate, &args);
    assert_eq!(report.scenario, Scenario::FanIn);
    check(&report, 1);
}

#[test]
fn qos2_fan_out_counts_every_fate_per_group() {
    let args = [&["fan-out", "--qos", "2", "--subscribers", "2"][..], &PACE].concat();
    let report = run(fate, &args);
    check(&report, 2);
}

#[test]
fn a_broker_that_delivers_everything_loses_nothing() {
    let args = [&["fan-in", "--qos", "2", "--publishers", "3"][..], &PACE].concat();
    let report = run(|_| Fate::Deliver, &args);
    assert_eq!(report.per_publisher.len(), 3);
    for p in &report.per_publisher {
        assert!(p.sent >= 20, "{p:?}");
        // Every message acknowledged and delivered once, in the order it was sent.
        let got = [
            p.acknowledged,
            p.delivered,
            p.lost,
            p.duplicated,
            p.out_of_order,
        ];
        assert_eq!(got, [p.sent, p.sent, 0, 0, 0], "{p:?}");
    }
    let totals = [report.lost, report.duplicated, report.out_of_order];
    assert_eq!(totals, [0, 0, 0], "{report:?}");
    assert_eq!((report.unacknowledged, report.refused), (0, 0));
}
