//! The HTTP scenarios: signed publishes over keep-alive connections, every one checked
//! delivered to an MQTT subscriber (`http-publish`), and idle long polls, the broker's
//! resident memory per waiting mailbox (`http-idle`).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tern_codec::{Packet, QoS};

use crate::client::{self, Conn};
use crate::connections::{process_cpu_time, raise_fd_limit, settled_rss};
use crate::http::{parse_secret, Device, HttpConn};
use crate::report::{self, Report};
use crate::{payload, BenchArgs, BenchError, Scenario};

/// A long poll's wait, the longest the bridge allows: none ends while it is measured.
const POLL_WAIT_SECS: u32 = 60;

/// What the publish scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct HttpPublishFigures {
    /// HTTP connections, each a device with one request in flight at a time.
    pub connections: usize,
    /// Messages per signed request (1: `POST /v1/pub/{topic}`; more: a `POST /v1/pub` batch).
    pub messages_per_request: usize,
    /// Signed requests answered 200 inside the window, per second.
    pub requests_per_s: f64,
    /// Messages (publishes) answered 200 inside the window.
    pub published_in_window: u64,
    /// `published_in_window` per second of window.
    pub published_per_s: f64,
    /// Publishes answered 200 (the broker owes their delivery).
    pub acknowledged: u64,
    /// Publishes refused (any other status).
    pub refused: u64,
    /// The first refusal's status and body, if any.
    pub first_refusal: Option<String>,
    /// Of the acknowledged, delivered to the MQTT subscriber.
    pub delivered: u64,
    /// Acknowledged and never delivered, even after the drain.
    pub lost: u64,
    /// Extra copies the subscriber received.
    pub duplicated: u64,
    /// Broker CPU time (all threads) per acknowledged message over the window, microseconds
    /// (with `--broker-pid`).
    pub broker_cpu_per_publish_us: Option<f64>,
    /// The same per signed request.
    pub broker_cpu_per_request_us: Option<f64>,
}

/// What the idle long-poll scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct HttpIdleFigures {
    /// Devices: connections, mailboxes and long polls.
    pub polls: usize,
    /// Broker resident memory before any of them, KiB.
    pub rss_before_kib: Option<u64>,
    /// With every device's mailbox made and its connection open, idle, KiB.
    pub rss_mailboxes_kib: Option<u64>,
    /// With every long poll waiting, KiB.
    pub rss_waiting_kib: Option<u64>,
    /// Resident bytes per waiting long poll: waiting minus mailboxes, over the polls.
    pub per_poll_bytes: Option<f64>,
    /// Resident bytes per device all told (connection, mailbox, poll): waiting minus before.
    pub per_device_bytes: Option<f64>,
    /// Polls answered before they were measured (they should all be waiting).
    pub answered_early: usize,
}

fn group_secret(args: &BenchArgs) -> Result<[u8; 32], BenchError> {
    let secret = args.http_secret.as_deref().ok_or_else(|| {
        BenchError::Options(
            "HTTP scenarios need --http-secret: the secret of a group key whose --prefix the \
             devices' client identifiers start with (--http-prefix)"
                .into(),
        )
    })?;
    parse_secret(secret)
}

/// Signed publishes, each connection waiting for one answer before its next request.
pub(crate) async fn publish(args: &BenchArgs) -> Result<Report, BenchError> {
    let secret = group_secret(args)?;
    let run = report::run_id();
    let qos = args.qos;
    let mut subscriber = Conn::connect(
        &args.host,
        args.port,
        &format!("bench-{run}-sub"),
        args.version(),
        args.keep_alive,
        0,
    )
    .await?;
    let sub_qos = if qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    subscriber
        .subscribe(&format!("bench/{run}/http/#"), sub_qos)
        .await?;
    let received = Rc::new(RefCell::new((HashSet::new(), 0u64)));
    let receiving = tokio::task::spawn_local(receive(subscriber, Rc::clone(&received)));

    let connections = args.publishers.max(1);
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let device = Device::of_group(&secret, &format!("{}{run}-h{i}", args.http_prefix));
        conns.push((HttpConn::connect(&args.host, args.http_port).await?, device));
    }
    let cpu_start = report::cpu_time();
    let broker_cpu_start = args.broker_pid.and_then(process_cpu_time);
    let start = Instant::now();
    let end = start + args.duration();
    let sent = Rc::new(Cell::new(0u64));
    let mut tasks = Vec::new();
    let batch = usize::from(args.http_batch);
    for (i, (mut conn, mut device)) in conns.into_iter().enumerate() {
        let (run, size, sent) = (run.clone(), args.payload, Rc::clone(&sent));
        tasks.push(tokio::task::spawn_local(async move {
            let topic = format!("bench/{run}/http/{i}");
            let (path, query) = if batch == 1 {
                (format!("/v1/pub/{topic}"), format!("qos={qos}"))
            } else {
                ("/v1/pub".to_owned(), String::new())
            };
            let target = if query.is_empty() {
                path.clone()
            } else {
                format!("{path}?{query}")
            };
            let mut outcome = Outcome::default();
            let mut payload = vec![b'.'; size];
            let mut body = Vec::new();
            let mut seq = 0u64;
            while Instant::now() < end {
                let first = seq + 1;
                body.clear();
                for _ in 0..batch {
                    seq += 1;
                    let stamp = payload::Stamp {
                        publisher: i as u32,
                        seq,
                        sent_nanos: 0,
                    };
                    payload::write(&mut payload, stamp);
                    if batch == 1 {
                        body.extend_from_slice(&payload);
                    } else {
                        batch_item(&mut body, &topic, qos, &payload);
                    }
                }
                if batch > 1 {
                    body.push(b']');
                }
                let headers = device.sign("POST", &path, &query, &body);
                let (status, answer) = conn.request("POST", &target, &headers, &body).await?;
                sent.set(sent.get() + batch as u64);
                if status == 200 {
                    outcome.acknowledged.extend(first..=seq);
                    if Instant::now() <= end {
                        outcome.in_window += batch as u64;
                    }
                } else {
                    outcome.refused += batch as u64;
                    outcome.first_refusal.get_or_insert_with(|| {
                        format!("{status} {}", String::from_utf8_lossy(&answer))
                    });
                }
            }
            Ok::<Outcome, BenchError>(outcome)
        }));
    }
    let progress = report::Progress::new(Scenario::HttpPublish, args.quiet);
    while tasks.iter().any(|t| !t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        progress.tick(
            start.elapsed(),
            sent.get(),
            received.borrow().0.len() as u64,
        );
    }
    let broker_cpu = match (broker_cpu_start, args.broker_pid.and_then(process_cpu_time)) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let window = start.elapsed().min(args.duration()).as_secs_f64();
    let mut owed = HashSet::new();
    let (mut in_window, mut refused, mut first_refusal) = (0u64, 0u64, None);
    for (i, task) in tasks.into_iter().enumerate() {
        let outcome = task
            .await
            .map_err(|e| BenchError::Protocol(format!("HTTP publisher: {e}")))??;
        in_window += outcome.in_window;
        refused += outcome.refused;
        first_refusal = first_refusal.or(outcome.first_refusal);
        owed.extend(outcome.acknowledged.into_iter().map(|seq| (i as u32, seq)));
    }
    // QoS 0 promises nothing; at 1 and 2 every acknowledged publish is owed.
    let drain_end = Instant::now() + args.drain();
    while Instant::now() < drain_end && !owed.is_subset(&received.borrow().0) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        progress.tick(
            start.elapsed(),
            sent.get(),
            received.borrow().0.len() as u64,
        );
    }
    progress.finish();
    receiving.abort();
    let (delivered_set, duplicated) = &*received.borrow();
    let delivered = owed.intersection(delivered_set).count() as u64;
    let acknowledged = owed.len() as u64;
    let requests_in_window = in_window / batch as u64;
    let figures = HttpPublishFigures {
        connections,
        messages_per_request: batch,
        requests_per_s: requests_in_window as f64 / window.max(1e-9),
        published_in_window: in_window,
        published_per_s: in_window as f64 / window.max(1e-9),
        acknowledged,
        refused,
        first_refusal,
        delivered,
        lost: if qos == 0 {
            0
        } else {
            acknowledged - delivered
        },
        duplicated: *duplicated,
        broker_cpu_per_publish_us: broker_cpu
            .map(|cpu| cpu.as_secs_f64() * 1e6 / in_window.max(1) as f64),
        broker_cpu_per_request_us: broker_cpu
            .map(|cpu| cpu.as_secs_f64() * 1e6 / requests_in_window.max(1) as f64),
    };
    let cpu = report::cpu_time().saturating_sub(cpu_start);
    Ok(Report::with_http_publish(
        args,
        figures,
        window,
        cpu,
        start.elapsed(),
    ))
}

/// Appends one message to a `POST /v1/pub` batch (a JSON array, opened by the first item).
fn batch_item(body: &mut Vec<u8>, topic: &str, qos: u8, payload: &[u8]) {
    use base64::Engine;
    body.push(if body.is_empty() { b'[' } else { b',' });
    body.extend_from_slice(
        format!("{{\"topic\":\"{topic}\",\"qos\":{qos},\"payload_b64\":\"").as_bytes(),
    );
    body.extend_from_slice(
        base64::engine::general_purpose::STANDARD
            .encode(payload)
            .as_bytes(),
    );
    body.extend_from_slice(b"\"}");
}

/// One publisher connection's outcome.
#[derive(Debug, Default)]
struct Outcome {
    acknowledged: Vec<u64>,
    in_window: u64,
    refused: u64,
    first_refusal: Option<String>,
}

/// What the subscriber received: each (publisher, sequence number) once, and the extra copies.
type Received = (HashSet<(u32, u64)>, u64);

/// The MQTT subscriber: records every message's stamp, counts copies, acknowledges.
async fn receive(mut conn: Conn, received: Rc<RefCell<Received>>) -> Result<(), BenchError> {
    loop {
        while let Some(packet) = conn.decode()? {
            if let Packet::Publish(publish) = packet {
                if let Some(stamp) = payload::read(&publish.payload) {
                    let mut received = received.borrow_mut();
                    if !received.0.insert((stamp.publisher, stamp.seq)) {
                        received.1 += 1;
                    }
                }
                if let Some(id) = publish.packet_id {
                    conn.send(&Packet::PubAck(client::ack(id)))?;
                }
            }
        }
        conn.flush().await?;
        conn.read().await?;
    }
}

/// Idle long polls: the broker's memory per waiting mailbox.
pub(crate) async fn idle(args: &BenchArgs) -> Result<Report, BenchError> {
    let secret = group_secret(args)?;
    raise_fd_limit(args.connections);
    let run = report::run_id();
    let total = args.connections;
    let rss_before = match args.broker_pid {
        Some(pid) => settled_rss(pid).await,
        None => None,
    };
    let cpu_start = report::cpu_time();
    let start = Instant::now();
    let progress = report::Progress::new(Scenario::HttpIdle, args.quiet);
    // Every device makes its mailbox (one subscription) over a connection it keeps open.
    let next = Rc::new(Cell::new(0usize));
    let open = Rc::new(RefCell::new(Vec::with_capacity(total)));
    let mut workers = Vec::new();
    for _ in 0..args.connect_concurrency.max(1) {
        let (next, open, run) = (Rc::clone(&next), Rc::clone(&open), run.clone());
        let (host, port, prefix) = (args.host.clone(), args.http_port, args.http_prefix.clone());
        workers.push(tokio::task::spawn_local(async move {
            loop {
                let i = next.get();
                if i >= total {
                    return Ok::<(), BenchError>(());
                }
                next.set(i + 1);
                let mut device = Device::of_group(&secret, &format!("{prefix}{run}-h{i}"));
                let mut conn = HttpConn::connect(&host, port).await?;
                let path = format!("/v1/mbox/subs/bench/{run}/idle/{i}");
                let headers = device.sign("PUT", &path, "retained=0", b"");
                let target = format!("{path}?retained=0");
                let (status, body) = conn.request("PUT", &target, &headers, b"").await?;
                if status != 200 {
                    return Err(BenchError::Protocol(format!(
                        "subscribing a mailbox: {status} {}",
                        String::from_utf8_lossy(&body)
                    )));
                }
                let _ = conn.stream.set_zero_linger();
                open.borrow_mut().push((conn, device));
            }
        }));
    }
    for worker in workers {
        loop {
            if worker.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            progress.tick(
                start.elapsed(),
                next.get() as u64,
                open.borrow().len() as u64,
            );
        }
        worker
            .await
            .map_err(|e| BenchError::Protocol(format!("HTTP worker: {e}")))??;
    }
    let rss_mailboxes = match args.broker_pid {
        Some(pid) => settled_rss(pid).await,
        None => None,
    };
    // Every device long-polls its empty mailbox; nothing will arrive.
    let query = format!("wait={POLL_WAIT_SECS}");
    let target = format!("/v1/mbox?{query}");
    let mut open = open.take();
    for (conn, device) in &mut open {
        let headers = device.sign("GET", "/v1/mbox", &query, b"");
        conn.send("GET", &target, &headers, b"").await?;
    }
    let rss_waiting = match args.broker_pid {
        Some(pid) => settled_rss(pid).await,
        None => None,
    };
    progress.finish();
    let mut answered_early = 0;
    let mut byte = [0u8; 1];
    for (conn, _) in &open {
        if conn.stream.try_read(&mut byte).is_ok() {
            answered_early += 1;
        }
    }
    let wall = start.elapsed();
    if args.hold > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    }
    drop(open);
    let per = |from: Option<u64>, to: Option<u64>| match (from, to) {
        (Some(from), Some(to)) if total > 0 => {
            Some(to.saturating_sub(from) as f64 * 1024.0 / total as f64)
        }
        _ => None,
    };
    let figures = HttpIdleFigures {
        polls: total,
        rss_before_kib: rss_before,
        rss_mailboxes_kib: rss_mailboxes,
        rss_waiting_kib: rss_waiting,
        per_poll_bytes: per(rss_mailboxes, rss_waiting),
        per_device_bytes: per(rss_before, rss_waiting),
        answered_early,
    };
    let cpu = report::cpu_time().saturating_sub(cpu_start);
    Ok(Report::with_http_idle(args, figures, cpu, wall))
}
