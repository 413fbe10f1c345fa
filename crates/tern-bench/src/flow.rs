//! The message-flow scenarios (fan-in, fan-out, pairs, shared, latency): publishers send for the
//! measured window, subscribers count what arrives during it and the backlog after it.
//!
//! Publishers are closed-loop by default: each may be at most `--window` messages ahead of what
//! its subscribers have received, so the run measures what the broker delivers rather than how
//! much it can buffer or drop. `--rate` makes them open-loop at a fixed rate instead, and
//! `--open-loop` bounds them only by their in-flight window of unacknowledged QoS 1/2
//! publishes, as a device's client library does: the run then shows whether the broker
//! delivers everything it acknowledged, and counts what it did not as lost.

mod publisher;
mod subscriber;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tern_codec::QoS;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::client::{Conn, PublishTemplate};
use crate::ledger::Ledger;
use crate::report::{self, Report};
use crate::{BenchArgs, BenchError, Scenario};

/// How long the drain waits with nothing arriving (and nothing acknowledged) before it gives up
/// on the rest.
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
            Scenario::Latency
            | Scenario::Connections
            | Scenario::Retained
            | Scenario::HttpPublish
            | Scenario::HttpIdle => Self {
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
    open_loop: bool,
    /// `--inflight`: the open-loop publishers' window, before the broker's Receive Maximum.
    inflight_max: u64,
    /// The smallest window any publisher used.
    inflight_used: Cell<u64>,
    sent: Vec<Cell<u64>>,
    /// Signalled after each subscriber batch, for publishers waiting on their window.
    progress: Notify,
    ledger: RefCell<Ledger>,
    /// QoS 1/2 publishes sent and not yet released (PUBACK, PUBCOMP, or refused).
    acks_pending: Cell<u64>,
    subscribers_closed: Cell<u64>,
}

impl State {
    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn sent_total(&self) -> u64 {
        self.sent.iter().map(Cell::get).sum()
    }

    fn note_inflight_max(&self, max: u64) {
        self.inflight_used.set(self.inflight_used.get().min(max));
    }
}

pub(crate) async fn run(args: &BenchArgs, scenario: Scenario) -> Result<Report, BenchError> {
    let run = report::run_id();
    let plan = Plan::new(args, scenario, &run);
    let version = args.version();
    let qos = args.qos();
    let (sub_host, sub_port) = args.subscriber_address();
    let mut subscribers = Vec::new();
    for (i, (filter, _)) in plan.subscribers.iter().enumerate() {
        let mut conn = Conn::connect(
            sub_host,
            sub_port,
            &format!("bench-{run}-s{i}"),
            version,
            args.keep_alive,
            args.topic_alias_maximum,
        )
        .await?;
        conn.subscribe(filter, qos).await?;
        subscribers.push(conn);
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

    let receiver_groups: Vec<usize> = plan.subscribers.iter().map(|(_, g)| *g).collect();
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
        open_loop: args.open_loop,
        inflight_max: u64::from(args.inflight),
        inflight_used: Cell::new(u64::MAX),
        sent: (0..plan.publishers.len()).map(|_| Cell::new(0)).collect(),
        progress: Notify::new(),
        ledger: RefCell::new(Ledger::new(
            plan.publishers.len(),
            plan.groups,
            &receiver_groups,
        )),
        acks_pending: Cell::new(0),
        subscribers_closed: Cell::new(0),
    });
    let cpu_start = report::cpu_time();
    let mut tasks: Vec<JoinHandle<Result<(), BenchError>>> = Vec::new();
    for (receiver, conn) in subscribers.into_iter().enumerate() {
        tasks.push(tokio::task::spawn_local(subscriber::run(
            conn,
            receiver,
            Rc::clone(&state),
        )));
    }
    for (index, (conn, template)) in publishers.into_iter().enumerate() {
        tasks.push(tokio::task::spawn_local(publisher::run(
            conn,
            template,
            index,
            Rc::clone(&state),
        )));
    }
    let progress = report::Progress::new(scenario, args.quiet);

    // The window, then the drain: until everything owed has arrived, nothing arrives (and
    // nothing is acknowledged) for a while, or the drain time is up.
    let drain_end = state.window_end + args.drain();
    let mut last_count = (0, 0);
    let mut last_change = Instant::now();
    let mut failure = None;
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = Instant::now();
        let (delivered, answered) = {
            let ledger = state.ledger.borrow();
            let answered = ledger.acknowledged_total() + ledger.refused_total();
            (ledger.totals.unique(), answered)
        };
        progress.tick(now - start, state.sent_total(), delivered);
        if (delivered, answered) != last_count {
            last_count = (delivered, answered);
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
        let refused = state.ledger.borrow().refused_total();
        let expected = (state.sent_total() - refused) * state.fanout;
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
    let sent: Vec<u64> = state.sent.iter().map(Cell::get).collect();
    let ledger = state.ledger.borrow();
    let inflight = state.inflight_used.get();
    Ok(Report::flow(
        args,
        scenario,
        report::FlowFigures {
            publishers: plan.publishers.len(),
            subscribers: plan.subscribers.len(),
            rate: plan.rate,
            window: args.duration().as_secs_f64(),
            expected: sent.iter().sum::<u64>() * plan.fanout,
            per_publisher: ledger.figures(
                &sent,
                qos != QoS::AtMostOnce,
                args.duration().as_secs_f64(),
            ),
            undelivered_at_window_end: ledger.undelivered_at_window_end(),
            inflight_max: if qos == QoS::AtMostOnce || inflight == u64::MAX {
                0
            } else {
                inflight
            },
            subscribers_closed: state.subscribers_closed.get(),
            totals: &ledger.totals,
            cpu,
            wall,
        },
    ))
}
