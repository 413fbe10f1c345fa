//! The connections scenario: open C idle connections with keep alive, measure how fast the
//! broker accepts them and how much resident memory each costs it; optionally logging in
//! (`--username`, `--password`, `--users`), to measure password checks.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::client::Conn;
use crate::report::{self, ConnectionFigures, Report};
use crate::{BenchArgs, BenchError};

/// How long the broker's memory may take to settle once every connection is open (or, in
/// the HTTP scenarios, after each phase).
const SETTLE_MAX: Duration = Duration::from_secs(3);

pub(crate) async fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    raise_fd_limit(args.connections);
    let run = report::run_id();
    let rss_before = args.broker_pid.and_then(rss_kib);
    let cpu_start = report::cpu_time();
    let broker_cpu_start = args.broker_pid.and_then(process_cpu_time);
    let start = Instant::now();
    let next = Rc::new(Cell::new(0usize));
    let open = Rc::new(RefCell::new(Vec::with_capacity(args.connections)));
    // When the last connection completed its CONNACK: the measured window ends there, not
    // when this task next looks at the workers.
    let last_open = Rc::new(Cell::new(start));
    // CPU times (broker, generator) when the last CONNACK arrived.
    let cpu_at_last_open = Rc::new(Cell::new(None));
    let subscriptions = Rc::new(Subscriptions::default());
    let progress = report::Progress::new(crate::Scenario::Connections, args.quiet);
    let mut workers = Vec::new();
    for _ in 0..args.connect_concurrency.max(1) {
        let next = Rc::clone(&next);
        let open = Rc::clone(&open);
        let last_open = Rc::clone(&last_open);
        let cpu_at_last_open = Rc::clone(&cpu_at_last_open);
        let subscriptions = Rc::clone(&subscriptions);
        let subscribe_qos = args.subscribe_qos.and_then(tern_codec::QoS::from_u8);
        let broker_pid = args.broker_pid;
        let (host, port, total) = (args.host.clone(), args.port, args.connections);
        let (version, keep_alive, run) = (args.version(), args.keep_alive, run.clone());
        let (username, password, users) =
            (args.username.clone(), args.password.clone(), args.users);
        workers.push(tokio::task::spawn_local(async move {
            loop {
                let i = next.get();
                if i >= total {
                    return Ok::<(), BenchError>(());
                }
                next.set(i + 1);
                let id = format!("bench-{run}-c{i}");
                let user = match (&username, users) {
                    (Some(name), 1..) => Some(format!("{name}{}", i % users)),
                    (name, _) => name.clone(),
                };
                let login = user
                    .as_deref()
                    .map(|u| (u, password.as_deref().unwrap_or("")));
                let mut conn =
                    Conn::connect_as(&host, port, &id, version, keep_alive, 0, login).await?;
                // Closed with a reset when the run ends: ten thousand sockets left in
                // TIME_WAIT would slow the next run's connects (port search, reuse checks),
                // whichever broker it measures.
                let _ = conn.stream.set_zero_linger();
                // An idle connection keeps nothing but its socket.
                conn.rbuf = bytes::BytesMut::new();
                if let Some(qos) = subscribe_qos {
                    let result = conn.subscribe(&format!("bench/{run}/c{i}"), qos).await;
                    subscriptions.count(result);
                }
                conn.wbuf = bytes::BytesMut::new();
                open.borrow_mut().push(conn);
                last_open.set(Instant::now());
                if open.borrow().len() == total {
                    let broker = broker_pid.and_then(process_cpu_time);
                    cpu_at_last_open.set(Some((broker, report::cpu_time())));
                }
            }
        }));
    }
    let mut failure = None;
    while !workers.is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        progress.tick(
            start.elapsed(),
            next.get() as u64,
            open.borrow().len() as u64,
        );
        while let Some(done) = workers.iter().position(|w| w.is_finished()) {
            match workers.swap_remove(done).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => failure = Some(error),
                Err(join) => failure = Some(BenchError::Protocol(format!("worker: {join}"))),
            }
        }
        if failure.is_some() {
            break;
        }
    }
    progress.finish();
    for worker in &workers {
        worker.abort();
    }
    if let Some(error) = failure {
        return Err(error);
    }
    let connect_s = last_open.get().duration_since(start).as_secs_f64();
    let connections = open.borrow().len();
    let per_connect_us = |cpu: Duration| cpu.as_secs_f64() * 1e6 / connections.max(1) as f64;
    let (broker_cpu_end, generator_cpu_end) =
        cpu_at_last_open.get().unwrap_or((None, report::cpu_time()));
    let broker_cpu_per_connect_us = match (broker_cpu_start, broker_cpu_end) {
        (Some(before), Some(after)) => Some(per_connect_us(after.saturating_sub(before))),
        _ => None,
    };
    let generator_cpu_per_connect_us = per_connect_us(generator_cpu_end.saturating_sub(cpu_start));
    // Let the broker finish whatever each connection costs it, then read its memory.
    let rss_after = match args.broker_pid {
        Some(pid) => settled_rss(pid).await,
        None => None,
    };
    let cpu = report::cpu_time().saturating_sub(cpu_start);
    let wall = start.elapsed();
    if args.hold > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    }
    drop(open);
    let per = match (rss_before, rss_after) {
        (Some(before), Some(after)) if connections > 0 => {
            Some((after.saturating_sub(before) * 1024) as f64 / connections as f64)
        }
        _ => None,
    };
    Ok(Report::with_connections(
        args,
        ConnectionFigures {
            connections,
            connect_s,
            connect_rate: connections as f64 / connect_s.max(1e-9),
            rss_before_kib: rss_before,
            rss_after_kib: rss_after,
            rss_per_connection_bytes: per,
            broker_cpu_per_connect_us,
            generator_cpu_per_connect_us,
            subscribed: subscriptions.granted.get(),
            subscribe_failed: subscriptions.failed.get(),
            first_subscribe_failure: subscriptions.first_failure.take(),
        },
        cpu,
        wall,
    ))
}

/// What the connections' subscriptions (`--subscribe-qos`) came to: a broker that refuses
/// some, or stops answering, is what the run is there to show, so it does not end the run.
#[derive(Default)]
struct Subscriptions {
    granted: Cell<usize>,
    failed: Cell<usize>,
    first_failure: RefCell<Option<String>>,
}

impl Subscriptions {
    fn count(&self, result: Result<(), BenchError>) {
        match result {
            Ok(()) => self.granted.set(self.granted.get() + 1),
            Err(error) => {
                self.failed.set(self.failed.get() + 1);
                self.first_failure
                    .borrow_mut()
                    .get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// The broker's resident memory once it stops moving (at most [`SETTLE_MAX`]).
pub(crate) async fn settled_rss(pid: u32) -> Option<u64> {
    let settle_end = Instant::now() + SETTLE_MAX;
    let mut last = rss_kib(pid);
    while Instant::now() < settle_end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_kib(pid);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Resident memory of a process in KiB, from `/proc/<pid>/status`.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// CPU time of every thread of a process so far, from `/proc/<pid>/task/*/schedstat` (whose
/// first field is nanoseconds on a CPU; finer than the clock ticks of `/proc/<pid>/stat`).
/// Threads that ended before the call are not counted.
pub(crate) fn process_cpu_time(pid: u32) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(nanos) = stat.split_whitespace().next().and_then(|n| n.parse().ok()) {
            total += Duration::from_nanos(nanos);
        }
    }
    Some(total)
}

/// Lets this process hold `connections` sockets, as far as the hard limit allows.
pub(crate) fn raise_fd_limit(connections: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = (connections as u64 + 256).min(hard);
        if want > soft {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_resident_memory_is_readable() {
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }

    #[test]
    fn own_cpu_time_grows_with_work() {
        let pid = std::process::id();
        let before = process_cpu_time(pid).expect("readable");
        let give_up = Instant::now() + Duration::from_secs(20);
        let mut spins = 0u64;
        // Spins until the figure shows 20 ms more: it fails if the figure does not move.
        loop {
            for _ in 0..100_000 {
                spins = std::hint::black_box(spins + 1);
            }
            let after = process_cpu_time(pid).expect("readable");
            if after.saturating_sub(before) >= Duration::from_millis(20) {
                break;
            }
            assert!(Instant::now() < give_up, "CPU time stuck at {after:?}");
        }
    }
}
