//! The message-flow scenarios (fan-in, fan-out, pairs, shared, latency): publishers send for the
//! measured window, subscribers count what arrives during it and the backlog after it.
//!
//! Publishers are closed-loop by default: each may be at most `--window` messages ahead of what
//! its subscribers have received, so the run measures what the broker delivers rather than how
//! much it can buffer or drop. `--rate` makes them open-loop at a fixed rate instead.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tern_codec::{Packet, QoS};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::client::{ack, next_packet_id, packet_id, Conn, PublishTemplate};
use crate::pace::Pacer;
use crate::payload::{self, Stamp};
use crate::report::{self, Report};
use crate::track::{Seen, Totals};
use crate::{BenchArgs, BenchError, Scenario};

/// Messages one publisher encodes before it writes them out.
const PUBLISH_BATCH_MAX: u64 = 256;
/// How long the drain waits with nothing arriving before it gives up on the rest.
const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// Who publishes where and who subscribes to what.
struct Plan {
    publishers: Vec<String>,
    /// (filter, group): subscribers in one group share one stream of messages.
    subscribers: Vec<(String, usize)>,
    groups: usize,
    /// Deliveries each message should make (one per group that matches its topic).
    fanout: u64,
    /// Messages per second per publisher; 0 is closed-loop.
    rate: f64,
}

impl Plan {
    fn new(args: &BenchArgs, scenario: Scenario, run: &str) -> Self {
        let rate = args.rate.unwrap_or(0.0).max(0.0);
        let root = format!("bench/{run}");
        match scenario {
            Scenario::FanIn => Self {
                publishers: (0..args.publishers)
                    .map(|p| format!("{root}/in/{p}"))
                    .collect(),
                subscribers: vec![(format!("{root}/in/#"), 0)],
                groups: 1,
                fanout: 1,
                rate,
            },
            Scenario::FanOut => Self {
                publishers: vec![format!("{root}/out")],
                subscribers: (0..args.subscribers)
                    .map(|s| (format!("{root}/out"), s))
                    .collect(),
                groups: args.subscribers,
                fanout: args.subscribers as u64,
                rate,
            },
            Scenario::Pairs => Self {
                publishers: (0..args.pairs)
                    .map(|p| format!("{root}/pair/{p}"))
                    .collect(),
                // Every subscriber sees one publisher; one group suffices for the bookkeeping.
                subscribers: (0..args.pairs)
                    .map(|p| (format!("{root}/pair/{p}"), 0))
                    .collect(),
                groups: 1,
                fanout: 1,
                rate,
            },
            Scenario::Shared => Self {
                publishers: (0..args.publishers)
                    .map(|p| format!("{root}/shared/{p}"))
                    .collect(),
                subscribers: (0..args.subscribers)
                    .map(|_| (format!("$share/bench/{root}/shared/#"), 0))
                    .collect(),
                groups: 1,
                fanout: 1,
                rate,
            },
            Scenario::Latency | Scenario::Connections | Scenario::Retained => Self {
                publishers: vec![format!("{root}/latency")],
                subscribers: vec![(format!("{root}/latency"), 0)],
                groups: 1,
                fanout: 1,
                rate: args.rate.unwrap_or(1000.0).max(0.0),
            },
        }
    }
}

/// State every task of a run shares (one thread, so `Cell`s suffice).
struct State {
    epoch: Instant,
    start: Instant,
    window_end: Instant,
    qos: QoS,
    fanout: u64,
    window: u64,
    rate: f64,
    sent: Vec<Cell<u64>>,
    delivered: Vec<Cell<u64>>,
    /// Signalled after each subscriber batch, for publishers waiting on their window.
    progress: Notify,
    seen: Vec<RefCell<Vec<Seen>>>,
    totals: RefCell<Totals>,
    acks_pending: Cell<u64>,
}

impl State {
    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn sent_total(&self) -> u64 {
        self.sent.iter().map(Cell::get).sum()
    }

    fn delivered_total(&self) -> u64 {
        self.delivered.iter().map(Cell::get).sum()
    }
}

pub(crate) async fn run(args: &BenchArgs, scenario: Scenario) -> Result<Report, BenchError> {
    let run = report::run_id();
    let plan = Plan::new(args, scenario, &run);
    let version = args.version();
    let qos = args.qos();
    let mut subscribers = Vec::new();
    for (i, (filter, group)) in plan.subscribers.iter().enumerate() {
        let mut conn = Conn::connect(
            &args.host,
            args.port,
            &format!("bench-{run}-s{i}"),
            version,
            args.keep_alive,
            args.topic_alias_maximum,
        )
        .await?;
        conn.subscribe(filter, qos).await?;
        subscribers.push((conn, *group));
    }
    let mut publishers = Vec::new();
    for (i, topic) in plan.publishers.iter().enumerate() {
        let conn = Conn::connect(
            &args.host,
            args.port,
            &format!("bench-{run}-p{i}"),
            version,
            args.keep_alive,
            0,
        )
        .await?;
        let template = PublishTemplate::new(topic, qos, false, args.payload, version)?;
        publishers.push((conn, template));
    }

    let epoch = Instant::now();
    let start = Instant::now();
    let state = Rc::new(State {
        epoch,
        start,
        window_end: start + args.duration(),
        qos,
        fanout: plan.fanout,
        window: args.window,
        rate: plan.rate,
        sent: (0..plan.publishers.len()).map(|_| Cell::new(0)).collect(),
        delivered: (0..plan.publishers.len()).map(|_| Cell::new(0)).collect(),
        progress: Notify::new(),
        seen: (0..plan.groups)
            .map(|_| {
                RefCell::new(
                    (0..plan.publishers.len())
                        .map(|_| Seen::default())
                        .collect(),
                )
            })
            .collect(),
        totals: RefCell::new(Totals::new()),
        acks_pending: Cell::new(0),
    });
    let cpu_start = report::cpu_time();
    let mut tasks: Vec<JoinHandle<Result<(), BenchError>>> = Vec::new();
    for (conn, group) in subscribers {
        tasks.push(tokio::task::spawn_local(subscriber(
            conn,
            group,
            Rc::clone(&state),
        )));
    }
    for (index, (conn, template)) in publishers.into_iter().enumerate() {
        tasks.push(tokio::task::spawn_local(publisher(
            conn,
            template,
            index,
            Rc::clone(&state),
        )));
    }
    let progress = report::Progress::new(scenario, args.quiet);

    // The window, then the drain: until everything sent has arrived, nothing arrives for a
    // while, or the drain time is up.
    let drain_end = state.window_end + args.drain();
    let mut last_count = 0;
    let mut last_change = Instant::now();
    let mut failure = None;
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = Instant::now();
        let delivered = state.delivered_total();
        progress.tick(now - start, state.sent_total(), delivered);
        if delivered != last_count {
            last_count = delivered;
            last_change = now;
        }
        if let Some(done) = tasks.iter().position(JoinHandle::is_finished) {
            let task = tasks.swap_remove(done);
            if let Ok(Err(error)) = task.await {
                failure = Some(error);
                break;
            }
        }
        if now < state.window_end {
            continue;
        }
        let expected = state.sent_total() * state.fanout;
        if delivered >= expected && state.acks_pending.get() == 0 {
            break;
        }
        if now >= drain_end || now - last_change >= DRAIN_IDLE {
            break;
        }
    }
    let wall = start.elapsed();
    let cpu = report::cpu_time().saturating_sub(cpu_start);
    progress.finish();
    for task in &tasks {
        task.abort();
    }
    if let Some(error) = failure {
        return Err(error);
    }
    let sent = state.sent_total();
    let totals = state.totals.borrow();
    Ok(Report::flow(
        args,
        scenario,
        report::FlowFigures {
            publishers: plan.publishers.len(),
            subscribers: plan.subscribers.len(),
            rate: plan.rate,
            window: args.duration().as_secs_f64(),
            sent,
            expected: sent * plan.fanout,
            totals: &totals,
            cpu,
            wall,
        },
    ))
}

async fn publisher(
    mut conn: Conn,
    template: PublishTemplate,
    index: usize,
    state: Rc<State>,
) -> Result<(), BenchError> {
    let qos = state.qos;
    let inflight_max = u64::from(conn.receive_maximum.min(u16::MAX / 2));
    let mut inflight: u64 = 0;
    let mut next_id: u16 = 0;
    let sent = &state.sent[index];
    let delivered = &state.delivered[index];
    let window = state.window * state.fanout;
    let pacer = Pacer::new();
    loop {
        let now = Instant::now();
        let stopped = now >= state.window_end;
        let mut allowed = if stopped {
            0
        } else {
            let ahead = sent.get() * state.fanout - delivered.get().min(sent.get() * state.fanout);
            window.saturating_sub(ahead) / state.fanout
        };
        if qos != QoS::AtMostOnce {
            allowed = allowed.min(inflight_max.saturating_sub(inflight));
        }
        let mut next_due = None;
        if state.rate > 0.0 && allowed > 0 {
            let elapsed = now.duration_since(state.start).as_secs_f64();
            let due = (elapsed * state.rate) as u64 + 1;
            allowed = allowed.min(due.saturating_sub(sent.get()));
            let next = (sent.get() + allowed) as f64 / state.rate;
            next_due = Some(state.start + Duration::from_secs_f64(next));
        }
        let allowed = allowed.min(PUBLISH_BATCH_MAX);
        if allowed > 0 {
            let stamp_nanos = state.nanos_since_epoch(now);
            for _ in 0..allowed {
                let id = if qos == QoS::AtMostOnce {
                    None
                } else {
                    next_id = next_packet_id(next_id);
                    inflight += 1;
                    Some(packet_id(next_id))
                };
                let stamp = Stamp {
                    publisher: index as u32,
                    seq: sent.get(),
                    sent_nanos: stamp_nanos,
                };
                template.put(&mut conn.wbuf, id, stamp);
                sent.set(sent.get() + 1);
            }
            if qos != QoS::AtMostOnce {
                state.acks_pending.set(state.acks_pending.get() + allowed);
            }
            conn.flush().await?;
        }
        // Take whatever acknowledgements have arrived, without waiting for them.
        loop {
            if conn.rbuf.capacity() - conn.rbuf.len() < 1024 {
                conn.rbuf.reserve(16 * 1024);
            }
            match conn.stream.try_read_buf(&mut conn.rbuf) {
                Ok(0) => return Err(BenchError::Protocol("broker closed a publisher".into())),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(BenchError::io("reading acknowledgements", e)),
            }
        }
        let before = inflight;
        while let Some(packet) = conn.decode()? {
            match packet {
                Packet::PubAck(_) | Packet::PubComp(_) => inflight = inflight.saturating_sub(1),
                Packet::PubRec(rec) => conn.send(&Packet::PubRel(ack(rec.packet_id)))?,
                Packet::PingResp => {}
                other => {
                    return Err(BenchError::Protocol(format!(
                        "publisher got {:?}",
                        other.packet_type()
                    )))
                }
            }
        }
        state
            .acks_pending
            .set(state.acks_pending.get() - (before - inflight));
        conn.flush().await?;
        if allowed == 0 {
            if stopped && inflight == 0 {
                return Ok(());
            }
            let wake_at = match next_due {
                Some(due) if !stopped => due.min(state.window_end),
                _ if !stopped => state.window_end,
                _ => Instant::now() + Duration::from_secs(1),
            };
            tokio::select! {
                ready = conn.stream.readable() => ready.map_err(|e| BenchError::io("waiting", e))?,
                () = state.progress.notified() => {}
                () = pacer.sleep_until(wake_at) => {}
            }
        }
    }
}

async fn subscriber(mut conn: Conn, group: usize, state: Rc<State>) -> Result<(), BenchError> {
    let mut last_seq: Vec<Option<u64>> = vec![None; state.sent.len()];
    loop {
        conn.read().await?;
        take_batch(&mut conn, group, &state, &mut last_seq)?;
        state.progress.notify_waiters();
        conn.flush().await?;
    }
}

/// Counts every message in the read buffer and queues the acknowledgements they need.
fn take_batch(
    conn: &mut Conn,
    group: usize,
    state: &State,
    last_seq: &mut [Option<u64>],
) -> Result<(), BenchError> {
    let publishers = state.sent.len();
    // One clock reading per read batch: cheaper than per message, and as precise as the read.
    let now = Instant::now();
    let in_window = now <= state.window_end;
    let now_nanos = state.nanos_since_epoch(now);
    let mut seen = state.seen[group].borrow_mut();
    let mut totals = state.totals.borrow_mut();
    while let Some(packet) = conn.decode()? {
        let publish = match packet {
            Packet::Publish(publish) => publish,
            Packet::PubRel(rel) => {
                conn.send(&Packet::PubComp(ack(rel.packet_id)))?;
                continue;
            }
            Packet::PingResp => continue,
            other => {
                return Err(BenchError::Protocol(format!(
                    "subscriber got {:?}",
                    other.packet_type()
                )))
            }
        };
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => conn.send(&Packet::PubAck(ack(id)))?,
            (QoS::ExactlyOnce, Some(id)) => conn.send(&Packet::PubRec(ack(id)))?,
            _ => {}
        }
        let Some(stamp) =
            payload::read(&publish.payload).filter(|s| (s.publisher as usize) < publishers)
        else {
            totals.foreign += 1;
            continue;
        };
        let p = stamp.publisher as usize;
        if !seen[p].mark(stamp.seq) {
            totals.duplicated += 1;
            continue;
        }
        if last_seq[p].is_some_and(|last| stamp.seq < last) {
            totals.out_of_order += 1;
        }
        last_seq[p] = Some(last_seq[p].map_or(stamp.seq, |last| last.max(stamp.seq)));
        state.delivered[p].set(state.delivered[p].get() + 1);
        if in_window {
            totals.in_window += 1;
        } else {
            totals.backlog += 1;
        }
        totals.record_latency(now_nanos.saturating_sub(stamp.sent_nanos) / 1000);
    }
    Ok(())
}
